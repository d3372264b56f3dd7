//! envd: the guest daemon inside every capsule. It serves E2B's envd protocol
//! (Connect services `process.Process` and `filesystem.Filesystem` plus a small
//! HTTP API) on one port. See ARCHITECTURE.md for the module map.

pub mod auth;
pub mod conntrack;
pub mod epoll_tokens;
pub mod filesystem;
pub mod http;
pub mod lifecycle;
pub mod paths;
pub mod ports;
pub mod process;
pub mod server;
pub mod state;
pub mod sysstat;
pub mod users;

/// Reported by `GET /health`. E2B clients gate features on envd ≥ 0.6.4 (RPC
/// field sets, octet-stream uploads), so the protocol level we speak is stated here.
pub const VERSION: &str = "0.6.4";
/// Default listening port of envd, fixed by the protocol.
pub const DEFAULT_PORT: u16 = 49983;
