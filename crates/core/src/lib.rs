//! Stratus domain core: ids, names, functions, invocations, the clock, and the
//! state machine that decides what happens when an attempt ends.
//!
//! Nothing in this crate performs IO. The scheduler, the workers and the HTTP
//! API all speak in these types, and the decisions that matter for
//! correctness (retry or finish, backoff, which state an outcome maps to) are
//! pure functions here so they can be tested without a database or a runtime.

pub mod api;
pub mod change;
pub mod clock;
pub mod error;
pub mod events;
pub mod human;
pub mod ids;
pub mod job;
pub mod machine;
pub mod model;
pub mod names;
#[cfg(feature = "openapi")]
mod openapi;
pub mod pyenv;
pub mod schedule;
pub mod settings;
pub mod trust;
pub mod url;
pub mod wire;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use ids::{Id, new_id};
pub use model::*;
pub use names::{DEFAULT_PROJECT, validate_name, validate_tag, validate_tags};
