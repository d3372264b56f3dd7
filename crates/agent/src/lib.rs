//! Wrenn host agent: everything that runs capsules on one host.
//!
//! The modules each have one job: [`runtime`] isolates a capsule (gVisor today, Firecracker
//! later), [`network`] gives it a namespace, addresses and an egress policy, [`disk`] caps its writable
//! layer, [`image`] builds the
//! templates capsules start from, and [`capsule`] combines them into create/destroy with rollback.

pub mod capsule;
pub mod command;
pub mod disk;
pub mod envd;
pub mod id;
pub mod image;
pub mod layout;
pub mod metrics;
pub mod network;
pub mod proxy;
pub mod reaper;
pub mod runtime;
pub mod service;
pub mod snapshot;
pub mod ttl;

pub use capsule::{Capsule, CapsuleError, CapsuleRequest, Capsules};
pub use id::CapsuleId;
pub use layout::DataDir;
