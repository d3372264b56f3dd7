//! `process.Process` Connect service (spec §D.2): starting processes as a
//! user, with pipes or a PTY, streaming their output, input, signals, and
//! reattaching by pid or tag.
//!
//! Module map: `service` (RPC glue), `manager` (process table, boot command,
//! shutdown), `spawn` (fork+exec), `pty`, `supervisor` (output pumps, end
//! event), `output` (fan-out to attached streams), `events` (the event stream
//! with keepalives), `registry` (running + recently finished), `reaper`
//! (the only waiter on children; PID 1 duty), `identity` (who runs it).

mod error;
mod events;
mod identity;
mod launch;
mod manager;
mod output;
mod pty;
mod reaper;
mod registry;
mod service;
mod spawn;
mod supervisor;

pub use error::ProcessError;
pub use manager::{Manager, shutdown_on_signal, start_init_cmd};
pub use service::ProcessService;
