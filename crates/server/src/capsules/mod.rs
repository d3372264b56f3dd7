//! Capsule plumbing shared by route modules: [`access`] resolves a capsule id from a request to
//! its row, host and agent client, with the team scoping and status checks of spec §B.2.

pub mod access;

pub use access::{CapsuleHandle, CapsuleRef, HostLink, any_status, running};
