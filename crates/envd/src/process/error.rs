//! Errors of the process service and their Connect codes (spec §D.2).

use connectrpc::ConnectError;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ProcessError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<ProcessError> for ConnectError {
    fn from(e: ProcessError) -> Self {
        let msg = e.to_string();
        match e {
            ProcessError::InvalidArgument(_) => ConnectError::invalid_argument(msg),
            ProcessError::NotFound(_) => ConnectError::not_found(msg),
            ProcessError::FailedPrecondition(_) => ConnectError::failed_precondition(msg),
            ProcessError::PermissionDenied(_) => ConnectError::permission_denied(msg),
            ProcessError::Io { .. } => ConnectError::internal(msg),
        }
    }
}
