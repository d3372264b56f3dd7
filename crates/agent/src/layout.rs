//! Where the agent keeps things under its data directory (spec §E "On-disk layout").
//!
//! ```text
//! DIR/images/<template>/rootfs      template root filesystem (never written by capsules)
//! DIR/capsules/<capsule id>/        everything one capsule owns: bundle, logs, CoW layer, etc files
//! DIR/snapshots/<capsule id>/image/ a paused capsule's checkpoint image
//! DIR/images/<name>/image/          a snapshot template's checkpoint (+ template.json, rootfs)
//! DIR/runsc/                        runsc's --root (container state)
//! ```

use crate::id::CapsuleId;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid template name {0:?}: use 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
)]
pub struct InvalidTemplateName(pub String);

impl DataDir {
    pub const DEFAULT: &'static str = "/var/lib/wrenn";

    /// A relative `root` is made absolute now: runsc and OCI bundles need absolute paths.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            root: std::path::absolute(&root).unwrap_or(root),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The directory of a template; the name is validated so it cannot escape `images/`.
    pub fn template(&self, name: &str) -> Result<PathBuf, InvalidTemplateName> {
        validate_template_name(name)?;
        Ok(self.images().join(name))
    }

    pub fn template_rootfs(&self, name: &str) -> Result<PathBuf, InvalidTemplateName> {
        Ok(self.template(name)?.join("rootfs"))
    }

    pub fn capsules(&self) -> PathBuf {
        self.root.join("capsules")
    }

    pub fn capsule(&self, id: &CapsuleId) -> PathBuf {
        self.capsules().join(id.as_str())
    }

    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// A paused capsule's checkpoint (everything needed to resume it besides its state.json).
    pub fn snapshot(&self, id: &CapsuleId) -> PathBuf {
        self.snapshots().join(id.as_str())
    }

    pub fn runsc_root(&self) -> PathBuf {
        self.root.join("runsc")
    }
}

pub fn validate_template_name(name: &str) -> Result<(), InvalidTemplateName> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(InvalidTemplateName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names() {
        let dir = DataDir::new("/d");
        assert_eq!(
            dir.template_rootfs("minimal").unwrap(),
            PathBuf::from("/d/images/minimal/rootfs")
        );
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "x..y",
            "Minimal",
            &"a".repeat(65),
        ] {
            assert!(dir.template(bad).is_err(), "{bad:?} accepted");
        }
    }
}
