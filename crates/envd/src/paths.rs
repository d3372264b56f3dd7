//! Path resolution shared by process cwd and every file operation.
//!
//! Rules: empty → default workdir or the user's home; `~` and `~/x` → home;
//! `~user` is rejected; relative → joined to home; absolute kept as given.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path '{0}': '~user' expansion is not supported, use an absolute path")]
    TildeUser(String),
    #[error("path contains a NUL byte")]
    Nul,
}

pub fn resolve(
    path: &str,
    home: &Path,
    default_workdir: Option<&str>,
) -> Result<PathBuf, PathError> {
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if path.is_empty() {
        return Ok(match default_workdir {
            Some(w) if !w.is_empty() => PathBuf::from(w),
            _ => home.to_path_buf(),
        });
    }
    let joined = if path == "~" {
        home.to_path_buf()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else if path.starts_with('~') {
        return Err(PathError::TildeUser(path.to_owned()));
    } else if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        home.join(path)
    };
    Ok(normalize(&joined))
}

/// Lexically removes `.` and `..` so the reported path is the one acted on.
/// (`..` above `/` stays at `/`, as the kernel does.)
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: &str) -> Result<PathBuf, PathError> {
        resolve(p, Path::new("/home/user"), None)
    }

    #[test]
    fn resolves_home_relative_and_absolute() {
        assert_eq!(r("").unwrap(), PathBuf::from("/home/user"));
        assert_eq!(r("~").unwrap(), PathBuf::from("/home/user"));
        assert_eq!(r("~/a/b").unwrap(), PathBuf::from("/home/user/a/b"));
        assert_eq!(r("a/./b/../c").unwrap(), PathBuf::from("/home/user/a/c"));
        assert_eq!(r("/etc/../tmp").unwrap(), PathBuf::from("/tmp"));
        assert_eq!(r("/../..").unwrap(), PathBuf::from("/"));
    }

    #[test]
    fn empty_uses_default_workdir() {
        let p = resolve("", Path::new("/root"), Some("/work")).unwrap();
        assert_eq!(p, PathBuf::from("/work"));
    }

    #[test]
    fn rejects_tilde_user_and_nul() {
        assert!(matches!(r("~bob/x"), Err(PathError::TildeUser(_))));
        assert_eq!(r("a\0b"), Err(PathError::Nul));
    }
}
