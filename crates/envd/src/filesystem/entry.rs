//! Building `EntryInfo` for a path.
//!
//! The entry describes the path itself (`lstat`): size, permission string,
//! owner, group and modification time are the link's for a symlink. A symlink
//! is flagged `is_symlink`, carries its canonical target in `symlink_target`,
//! and reports the *target's* type and permission bits in `type`/`mode` (what
//! E2B clients expect); a dangling symlink reports `FILE_TYPE_SYMLINK` and the
//! target it names, made absolute.

use super::xattr;
use crate::paths;
use crate::users::Account;
use buffa_types::google::protobuf::Timestamp;
use nix::unistd::{Gid, Uid};
use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use wrenn_proto::filesystem::{EntryInfo, FileType};

/// Owner/group name lookups memoised for the duration of one request.
#[derive(Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| Account::user_name(Uid::from_raw(uid)))
            .clone()
    }

    fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| Account::group_name(Gid::from_raw(gid)))
            .clone()
    }
}

/// The entry for `path`, reported under `path`.
pub fn build(path: &Path, names: &mut Names) -> io::Result<EntryInfo> {
    let meta = fs::symlink_metadata(path)?;
    Ok(from_metadata(path, &meta, names))
}

/// The entry for `path` given its `lstat` metadata.
pub fn from_metadata(path: &Path, meta: &Metadata, names: &mut Names) -> EntryInfo {
    let mode_bits = meta.mode();
    let mut entry = EntryInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".to_owned()),
        path: path.to_string_lossy().into_owned(),
        size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
        mode: mode_bits & 0o777,
        permissions: permission_string(mode_bits),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        modified_time: Timestamp {
            seconds: meta.mtime(),
            nanos: i32::try_from(meta.mtime_nsec()).unwrap_or(0),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    if meta.file_type().is_symlink() {
        entry.is_symlink = true;
        match fs::canonicalize(path).and_then(|t| fs::metadata(&t).map(|m| (t, m))) {
            Ok((target, target_meta)) => {
                entry.r#type = file_type(&target_meta).into();
                entry.mode = target_meta.permissions().mode() & 0o777;
                entry.symlink_target = Some(target.to_string_lossy().into_owned());
                entry.metadata = xattr::read(&target).into_iter().collect();
            }
            Err(_) => {
                entry.r#type = FileType::FILE_TYPE_SYMLINK.into();
                entry.symlink_target = fs::read_link(path).ok().map(|link| {
                    let parent = path.parent().unwrap_or(Path::new("/"));
                    paths::normalize(&parent.join(link))
                        .to_string_lossy()
                        .into_owned()
                });
            }
        }
    } else {
        entry.r#type = file_type(meta).into();
        entry.metadata = xattr::read(path).into_iter().collect();
    }
    entry
}

fn file_type(meta: &Metadata) -> FileType {
    let ft = meta.file_type();
    if ft.is_dir() {
        FileType::FILE_TYPE_DIRECTORY
    } else if ft.is_file() {
        FileType::FILE_TYPE_FILE
    } else if ft.is_symlink() {
        FileType::FILE_TYPE_SYMLINK
    } else {
        FileType::FILE_TYPE_UNSPECIFIED
    }
}

/// `ls -l` style mode string, e.g. `-rw-r--r--`, `drwxr-xr-x`, `drwxrwxrwt`.
pub fn permission_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    // (read bit shift, special bit, char when special+x, char when special only)
    let triplets = [
        (6, libc::S_ISUID, 's', 'S'),
        (3, libc::S_ISGID, 's', 'S'),
        (0, libc::S_ISVTX, 't', 'T'),
    ];
    for (shift, special, with_x, without_x) in triplets {
        let bits = (mode >> shift) & 0o7;
        s.push(if bits & 0o4 != 0 { 'r' } else { '-' });
        s.push(if bits & 0o2 != 0 { 'w' } else { '-' });
        let x = bits & 0o1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => with_x,
            (true, false) => without_x,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_strings() {
        assert_eq!(permission_string(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(permission_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(permission_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(permission_string(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
        assert_eq!(permission_string(libc::S_IFREG | 0o2640), "-rw-r-S---");
        assert_eq!(permission_string(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn symlink_reports_target_type_and_canonical_target() {
        let dir = tempdir();
        let file = dir.join("real.txt");
        fs::write(&file, "hello").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink("real.txt", &link).unwrap();
        let e = build(&link, &mut Names::default()).unwrap();
        assert!(e.is_symlink);
        assert_eq!(e.r#type, FileType::FILE_TYPE_FILE);
        assert_eq!(
            e.symlink_target.as_deref(),
            Some(fs::canonicalize(&file).unwrap().to_str().unwrap())
        );
        assert_eq!(e.name, "link");

        let dangling = dir.join("dangling");
        std::os::unix::fs::symlink("nope", &dangling).unwrap();
        let e = build(&dangling, &mut Names::default()).unwrap();
        assert!(e.is_symlink);
        assert_eq!(e.r#type, FileType::FILE_TYPE_SYMLINK);
        assert_eq!(
            e.symlink_target.as_deref(),
            Some(dir.join("nope").to_str().unwrap())
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "envd-entry-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }
}
