//! User metadata of files, kept as `user.e2b.<key>` extended attributes (the
//! E2B SDK's `metadata` on uploads and on `EntryInfo`).

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub const PREFIX: &str = "user.e2b.";

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Calls a "size query, then fill" xattr function until the buffer fits.
fn read_sized(mut call: impl FnMut(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size as usize];
        let got = call(buf.as_mut_ptr().cast(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        // The attribute grew between the two calls: ask again.
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
    }
}

/// The `user.e2b.*` attributes of `path` (following symlinks), prefix
/// stripped. Filesystems without xattr support, and unreadable attributes,
/// simply yield nothing.
pub fn read(path: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Ok(c) = c_path(path) else {
        return out;
    };
    // SAFETY: `c` is a valid C string; the buffer pointer/len pair is valid.
    let Ok(names) = read_sized(|buf, len| unsafe { libc::listxattr(c.as_ptr(), buf.cast(), len) })
    else {
        return out;
    };
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Some(key) = name.strip_prefix(PREFIX.as_bytes()) else {
            continue;
        };
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        // SAFETY: as above.
        let value =
            read_sized(|buf, len| unsafe { libc::getxattr(c.as_ptr(), cname.as_ptr(), buf, len) });
        if let Ok(value) = value {
            out.insert(
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            );
        }
    }
    out
}

/// Sets `user.e2b.<key>` = value for each pair (keys lowercased).
pub fn write(path: &Path, metadata: &[(String, String)]) -> io::Result<()> {
    let c = c_path(path)?;
    for (key, value) in metadata {
        let name = format!("{PREFIX}{}", key.to_ascii_lowercase());
        let cname = CString::new(OsStr::new(&name).as_bytes()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "metadata key contains NUL")
        })?;
        // SAFETY: valid C strings and a valid value buffer.
        let rc = unsafe {
            libc::setxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
