//! The Stratus control plane: the HTTP API, the scheduler and its durable
//! in-process queue, and [`node`], the one place where backends are chosen
//! and the roles of a process (API, local worker slots) are switched on.

pub mod api;
pub mod error;
pub mod events;
pub mod front;
pub mod health;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod scheduler;
pub mod settings;
pub mod ui;

pub use node::{Node, NodeConfig, NodeError};
