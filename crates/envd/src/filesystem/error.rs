//! Errors of file operations and their Connect / HTTP classification.

use crate::paths::PathError;
use crate::users::UserError;
use connectrpc::ConnectError;
use std::io;
use std::path::Path;

/// What went wrong, in the terms both the RPC and the HTTP API answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotFound,
    InvalidArgument,
    AlreadyExists,
    PermissionDenied,
    /// No space left on the device (or quota exceeded).
    NoSpace,
    /// The requested user does not exist.
    UnknownUser,
    FailedPrecondition,
    Internal,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FsError {
    kind: Kind,
    message: String,
}

impl FsError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }

    /// An I/O error of `op` on `path`, classified by its errno.
    pub fn io(op: &str, path: &Path, err: io::Error) -> Self {
        Self::new(classify(&err), format!("{op} {}: {err}", path.display()))
    }

    /// Closure form of [`FsError::io`] for `map_err`.
    pub fn at<'a>(op: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |err| Self::io(op, path, err)
    }
}

/// Classifies an errno. A path through a non-directory does not exist.
pub fn classify(err: &io::Error) -> Kind {
    match err.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => Kind::NotFound,
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => Kind::PermissionDenied,
        Some(libc::EEXIST) => Kind::AlreadyExists,
        Some(libc::ENOSPC | libc::EDQUOT) => Kind::NoSpace,
        Some(libc::EISDIR | libc::EINVAL | libc::ENAMETOOLONG | libc::ELOOP | libc::ENOTEMPTY) => {
            Kind::InvalidArgument
        }
        // EOPNOTSUPP: e.g. no user xattrs on this filesystem.
        Some(libc::EXDEV | libc::EBUSY | libc::ETXTBSY | libc::EOPNOTSUPP) => {
            Kind::FailedPrecondition
        }
        _ => match err.kind() {
            io::ErrorKind::NotFound => Kind::NotFound,
            io::ErrorKind::PermissionDenied => Kind::PermissionDenied,
            io::ErrorKind::AlreadyExists => Kind::AlreadyExists,
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => Kind::InvalidArgument,
            _ => Kind::Internal,
        },
    }
}

impl From<io::Error> for FsError {
    fn from(err: io::Error) -> Self {
        Self::new(classify(&err), err.to_string())
    }
}

impl From<PathError> for FsError {
    fn from(err: PathError) -> Self {
        Self::invalid(err.to_string())
    }
}

impl From<UserError> for FsError {
    fn from(err: UserError) -> Self {
        match err {
            UserError::Unknown(_) => Self::new(Kind::UnknownUser, err.to_string()),
            UserError::Lookup(..) => Self::internal(err.to_string()),
        }
    }
}

impl From<FsError> for ConnectError {
    fn from(err: FsError) -> Self {
        let message = err.message;
        match err.kind {
            Kind::NotFound => ConnectError::not_found(message),
            Kind::InvalidArgument => ConnectError::invalid_argument(message),
            Kind::AlreadyExists => ConnectError::already_exists(message),
            Kind::PermissionDenied => ConnectError::permission_denied(message),
            Kind::NoSpace => ConnectError::resource_exhausted(message),
            Kind::UnknownUser => ConnectError::unauthenticated(message),
            Kind::FailedPrecondition => ConnectError::failed_precondition(message),
            Kind::Internal => ConnectError::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errnos() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(classify(&e(libc::ENOENT)), Kind::NotFound);
        assert_eq!(classify(&e(libc::ENOTDIR)), Kind::NotFound);
        assert_eq!(classify(&e(libc::EACCES)), Kind::PermissionDenied);
        assert_eq!(classify(&e(libc::ENOSPC)), Kind::NoSpace);
        assert_eq!(classify(&e(libc::EEXIST)), Kind::AlreadyExists);
        assert_eq!(classify(&e(libc::EISDIR)), Kind::InvalidArgument);
        assert_eq!(classify(&e(libc::EIO)), Kind::Internal);
    }
}
