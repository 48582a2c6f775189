//! Ids are UUIDv7: unique across processes and machines, and sortable by
//! creation time, so "newest first" is an index scan.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id(Uuid);

/// The one place ids are generated.
pub fn new_id() -> Id {
    Id(Uuid::now_v7())
}

impl Id {
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
    pub fn from_uuid(u: Uuid) -> Self {
        Id(u)
    }
    pub fn to_bytes(&self) -> [u8; 16] {
        *self.0.as_bytes()
    }
    /// The smallest id made at `ms` (ms since the epoch) or later: ids
    /// are UUIDv7, ordered by the time they were made.
    pub fn first_at(ms: i64) -> Self {
        let ms = ms.clamp(0, (1 << 48) - 1) as u64;
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        b[6] = 0x70;
        b[8] = 0x80;
        Id::from_bytes(b)
    }

    pub fn from_bytes(b: [u8; 16]) -> Self {
        Id(Uuid::from_bytes(b))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for Id {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Id).map_err(|_| crate::Error::invalid("id", format!("'{s}' is not a valid id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_and_round_trip() {
        let a = new_id();
        let b = new_id();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<Id>().unwrap(), a);
        assert!("nope".parse::<Id>().is_err());
    }
}
