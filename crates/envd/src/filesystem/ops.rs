//! The unary filesystem operations, as blocking functions. They run on the
//! blocking pool with the caller's filesystem credentials (see `creds`), so
//! the kernel enforces the user's permissions and new entries are theirs.

use super::entry::{self, Names};
use super::error::{FsError, Kind};
use std::fs;
use std::io;
use std::path::Path;
use wrenn_proto::filesystem::EntryInfo;

pub fn stat(path: &Path) -> Result<EntryInfo, FsError> {
    entry::build(path, &mut Names::default()).map_err(FsError::at("stat", path))
}

/// Creates `path` and any missing parents. An existing directory is
/// `AlreadyExists`; an existing non-directory is `InvalidArgument`.
pub fn make_dir(path: &Path) -> Result<EntryInfo, FsError> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(FsError::new(
                Kind::AlreadyExists,
                format!("directory {} already exists", path.display()),
            ));
        }
        Ok(_) => {
            return Err(FsError::invalid(format!(
                "{} exists and is not a directory",
                path.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(creating("stat", path, e)),
    }
    fs::create_dir_all(path).map_err(|e| creating("mkdir", path, e))?;
    stat(path)
}

/// Renames `source` to `destination`, creating the destination's parents.
pub fn rename(source: &Path, destination: &Path) -> Result<EntryInfo, FsError> {
    fs::symlink_metadata(source).map_err(FsError::at("stat", source))?;
    if let Some(parent) = destination.parent() {
        fs::create_dir_all(parent).map_err(|e| creating("mkdir", parent, e))?;
    }
    fs::rename(source, destination)
        .map_err(|e| creating(&format!("rename {} to", source.display()), destination, e))?;
    stat(destination)
}

/// Lists `path` (a directory, or a symlink to one) down to `depth` levels
/// (0 counts as 1). The root is not listed; symlinked directories below it are
/// listed but not descended into. Entries are reported under `path` as given.
pub fn list_dir(path: &Path, depth: u32) -> Result<Vec<EntryInfo>, FsError> {
    let meta = fs::metadata(path).map_err(FsError::at("stat", path))?;
    if !meta.is_dir() {
        return Err(FsError::invalid(format!(
            "{} is not a directory",
            path.display()
        )));
    }
    let real = fs::canonicalize(path).map_err(FsError::at("resolve", path))?;
    let mut out = Vec::new();
    let mut names = Names::default();
    walk(&real, path, 1, depth.max(1), &mut names, &mut out)
        .map_err(FsError::at("read directory", path))?;
    Ok(out)
}

fn walk(
    real: &Path,
    reported: &Path,
    level: u32,
    depth: u32,
    names: &mut Names,
    out: &mut Vec<EntryInfo>,
) -> io::Result<()> {
    let mut children: Vec<_> = fs::read_dir(real)?.filter_map(Result::ok).collect();
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let name = child.file_name();
        let real_child = real.join(&name);
        let meta = match fs::symlink_metadata(&real_child) {
            Ok(m) => m,
            // Removed since it was read: skip it.
            Err(_) => continue,
        };
        let reported_child = reported.join(&name);
        out.push(entry::from_metadata(&reported_child, &meta, names));
        // An unreadable subdirectory is listed but not descended into.
        if level < depth
            && meta.is_dir()
            && let Err(e) = walk(&real_child, &reported_child, level + 1, depth, names, out)
        {
            tracing::debug!(path = %real_child.display(), error = %e, "not descending");
        }
    }
    Ok(())
}

/// Removes a file, symlink or directory tree. The filesystem root is refused.
pub fn remove(path: &Path) -> Result<(), FsError> {
    if path == Path::new("/") {
        return Err(FsError::invalid("refusing to remove /"));
    }
    let meta = fs::symlink_metadata(path).map_err(FsError::at("stat", path))?;
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(FsError::at("remove", path))
    } else {
        fs::remove_file(path).map_err(FsError::at("remove", path))
    }
}

/// Creates the parents of `path` (with the caller's credentials, so they are
/// the caller's).
pub fn create_parents(path: &Path) -> Result<(), FsError> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(|e| creating("mkdir", parent, e)),
        None => Ok(()),
    }
}

/// An error while creating or renaming: "a component is not a directory" (or
/// the target is in the way) is a bad request rather than a missing path.
pub fn creating(op: &str, path: &Path, e: io::Error) -> FsError {
    let in_the_way = matches!(
        e.raw_os_error(),
        Some(libc::ENOTDIR | libc::EEXIST | libc::EISDIR | libc::ENOTEMPTY)
    );
    let err = FsError::io(op, path, e);
    if in_the_way {
        FsError::invalid(err.message())
    } else {
        err
    }
}
