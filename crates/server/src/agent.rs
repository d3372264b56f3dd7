//! Talking to host agents: a pool of Connect clients keyed by host address, the plain-HTTP base
//! URL of an agent's port proxy, and the mapping of agent (Connect) errors to API errors.
//!
//! Usage: `state.agents().client(&host.address)?` → `Arc<AgentClient>`, then call any
//! `hostagent.v1.HostAgentService` method on it (`client.exec(ExecRequest { .. }).await`).
//! Convert failures with `ApiError::from(connect_error)` (or `?`), which follows spec §B.0's
//! agent-error mapping (NotFound → 404 `not_found`, …).
//!
//! Addresses are what the `hosts.address` column holds: `host:port` (plain HTTP is assumed) or a
//! full `http://host:port` URL. The agent is unauthenticated over plain HTTP for now (mTLS is a
//! later step); one shared hyper connection pool serves every agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{StatusCode, Uri};
use connectrpc::client::{ClientConfig, HttpClient};
use connectrpc::{ConnectError, ErrorCode};
use wrenn_proto::hostagent::v1::HostAgentServiceClient;

use crate::error::ApiError;

/// The generated Connect client of the host agent.
pub type AgentClient = HostAgentServiceClient<HttpClient>;

/// Largest single response message accepted from an agent. Foreground exec returns all output
/// in one message; the default 4 MiB would turn a chatty command into an error.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
#[error("invalid host agent address {0:?}")]
pub struct InvalidAgentAddress(pub String);

impl From<InvalidAgentAddress> for ApiError {
    fn from(e: InvalidAgentAddress) -> Self {
        ApiError::internal(e)
    }
}

/// Connect clients per agent address, created on first use and shared afterwards.
pub struct Agents {
    http: HttpClient,
    clients: Mutex<HashMap<String, Arc<AgentClient>>>,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.clients.lock().map(|c| c.len()).unwrap_or_default();
        f.debug_struct("Agents").field("clients", &n).finish()
    }
}

impl Default for Agents {
    fn default() -> Self {
        Self::new()
    }
}

impl Agents {
    pub fn new() -> Self {
        Self {
            http: HttpClient::builder()
                .connect_timeout(Duration::from_secs(5))
                .plaintext(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for the agent at `address` (`host:port` or `http://host:port`).
    pub fn client(&self, address: &str) -> Result<Arc<AgentClient>, InvalidAgentAddress> {
        let base = base_url(address)?;
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&base) {
            return Ok(client.clone());
        }
        let uri: Uri = base
            .parse()
            .map_err(|_| InvalidAgentAddress(address.to_owned()))?;
        let config = ClientConfig::new(uri).with_default_max_message_size(MAX_MESSAGE_BYTES);
        let client = Arc::new(HostAgentServiceClient::new(self.http.clone(), config));
        clients.insert(base, client.clone());
        Ok(client)
    }

    /// Drops the cached client of `address` (e.g. after the host re-registered elsewhere).
    pub fn forget(&self, address: &str) {
        if let Ok(base) = base_url(address) {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            clients.remove(&base);
        }
    }
}

/// `http://host:port` (no trailing slash) for an agent address: the Connect base URL and the
/// prefix of its port proxy (`{base}/proxy/{capsule_id}/{port}/…`).
pub fn base_url(address: &str) -> Result<String, InvalidAgentAddress> {
    let address = address.trim();
    let url = if address.starts_with("http://") || address.starts_with("https://") {
        address.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", address.trim_end_matches('/'))
    };
    // Must be an absolute URL with a host and no path.
    match url.parse::<Uri>() {
        Ok(uri)
            if uri.host().is_some_and(|h| !h.is_empty())
                && matches!(uri.path(), "" | "/")
                && uri.query().is_none() =>
        {
            Ok(url)
        }
        _ => Err(InvalidAgentAddress(address.to_owned())),
    }
}

/// Spec §B.0's mapping of agent errors; the message is the agent's text (it never carries
/// secrets: it describes the guest operation that failed).
impl From<ConnectError> for ApiError {
    fn from(e: ConnectError) -> Self {
        let message = e
            .message
            .clone()
            .unwrap_or_else(|| e.code.as_str().to_owned());
        match e.code {
            ErrorCode::NotFound => ApiError::not_found(message),
            ErrorCode::InvalidArgument | ErrorCode::OutOfRange => ApiError::invalid(message),
            ErrorCode::FailedPrecondition | ErrorCode::AlreadyExists => ApiError::conflict(message),
            ErrorCode::PermissionDenied => ApiError::forbidden(message),
            ErrorCode::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "host_unavailable", message)
            }
            ErrorCode::DeadlineExceeded => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
            }
            ErrorCode::Unimplemented => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "agent_error", message)
            }
            _ => {
                tracing::warn!(code = e.code.as_str(), %message, "host agent error");
                ApiError::new(StatusCode::BAD_GATEWAY, "agent_error", message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            base_url("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            base_url("http://10.0.0.2:50051/").unwrap(),
            "http://10.0.0.2:50051"
        );
        assert_eq!(base_url("[::1]:50051").unwrap(), "http://[::1]:50051");
        assert!(base_url("").is_err());
        assert!(base_url("http://h:1/x").is_err());
        assert!(base_url("a b").is_err());
    }

    #[test]
    fn pool_shares_clients() {
        let agents = Agents::new();
        let a = agents.client("127.0.0.1:1").unwrap();
        let b = agents.client("http://127.0.0.1:1").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        agents.forget("127.0.0.1:1");
        let c = agents.client("127.0.0.1:1").unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
