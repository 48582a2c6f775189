//! Names of functions, projects and buckets: `[a-z0-9][a-z0-9-]{0,62}`.

use crate::Error;

pub const DEFAULT_PROJECT: &str = "default";

/// Validates a name; `what` names the field in the error.
pub fn validate_name(what: &str, name: &str) -> Result<(), Error> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            format!(
                "'{}' is not a valid name: use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit",
                name.chars().take(80).collect::<String>()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for good in ["a", "hello", "9lives", "a-b-c", &"x".repeat(63)] {
            assert!(validate_name("name", good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "a/b", &"x".repeat(64), "é"] {
            let err = validate_name("name", bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid name"), "{err}");
        }
    }
}
