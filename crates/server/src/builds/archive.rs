//! Build archives (spec §G): tar, tar.gz or zip, told apart by magic bytes, checked before a
//! build is accepted: every entry must stay inside the extraction directory (no absolute
//! paths, no `..`, hard links likewise). The entry list also lets the API reject a COPY of a
//! source the archive does not hold.

use std::io::Read;

/// Largest accepted archive (spec §B.13).
pub const MAX_ARCHIVE_BYTES: usize = 100 << 20;
/// Largest total size a tar.gz may inflate to while it is checked.
const MAX_INFLATED_BYTES: u64 = 4 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Tar,
    TarGz,
    Zip,
}

impl ArchiveKind {
    /// By magic bytes: gzip `1f 8b`, zip `PK\x03\x04` (or an empty zip's `PK\x05\x06`), ustar
    /// at offset 257; anything else is taken as tar.gz (and fails its check if it is not).
    pub fn detect(data: &[u8]) -> ArchiveKind {
        if data.starts_with(&[0x1f, 0x8b]) {
            ArchiveKind::TarGz
        } else if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
            ArchiveKind::Zip
        } else if data.len() >= 262 && &data[257..262] == b"ustar" {
            ArchiveKind::Tar
        } else {
            ArchiveKind::TarGz
        }
    }

    /// File name extension used inside the build capsule.
    pub fn ext(self) -> &'static str {
        match self {
            ArchiveKind::Tar => "tar",
            ArchiveKind::TarGz => "tar.gz",
            ArchiveKind::Zip => "zip",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive entry {0:?} escapes the extraction directory (absolute path or `..`)")]
    Traversal(String),
    #[error("archive is not a valid {kind}: {reason}")]
    Malformed { kind: &'static str, reason: String },
    #[error("archive is larger than {} MiB", MAX_ARCHIVE_BYTES >> 20)]
    TooLarge,
}

/// The checked contents of an archive: its kind and entry paths (normalized: no `./`, no
/// trailing `/`).
#[derive(Debug, Clone)]
pub struct Listing {
    pub kind: ArchiveKind,
    pub entries: Vec<String>,
}

impl Listing {
    /// Whether `src` (normalized) names an entry or a directory holding entries; `""` is the
    /// archive root.
    pub fn has(&self, src: &str) -> bool {
        src.is_empty()
            || self
                .entries
                .iter()
                .any(|e| e == src || e.starts_with(&format!("{src}/")))
    }
}

/// Detects, lists and checks an archive.
pub fn inspect(data: &[u8]) -> Result<Listing, ArchiveError> {
    if data.len() > MAX_ARCHIVE_BYTES {
        return Err(ArchiveError::TooLarge);
    }
    let kind = ArchiveKind::detect(data);
    let raw = match kind {
        ArchiveKind::Tar => tar_entries(data, "tar")?,
        ArchiveKind::TarGz => {
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(data)
                .take(MAX_INFLATED_BYTES)
                .read_to_end(&mut inflated)
                .map_err(|e| ArchiveError::Malformed {
                    kind: "tar.gz",
                    reason: e.to_string(),
                })?;
            tar_entries(&inflated, "tar.gz")?
        }
        ArchiveKind::Zip => zip_entries(data)?,
    };
    let mut entries = Vec::with_capacity(raw.len());
    for name in raw {
        entries.push(check_entry(&name)?);
    }
    Ok(Listing { kind, entries })
}

/// Rejects absolute paths and `..` components; returns the normalized relative path.
fn check_entry(name: &str) -> Result<String, ArchiveError> {
    let escapes = name.starts_with('/')
        || name.starts_with('\\')
        || name.split(['/', '\\']).any(|c| c == "..");
    if escapes {
        return Err(ArchiveError::Traversal(name.to_owned()));
    }
    Ok(super::recipe::normalize_source(name))
}

fn malformed(kind: &'static str, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Malformed {
        kind,
        reason: reason.into(),
    }
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn octal(field: &[u8]) -> Option<u64> {
    // GNU base-256 for huge sizes.
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s = cstr(field);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Entry names of a tar stream, including hard-link targets (which must stay inside too).
/// Honours GNU long names (`L`/`K`) and PAX `path`/`linkpath` records.
fn tar_entries(data: &[u8], kind: &'static str) -> Result<Vec<String>, ArchiveError> {
    let mut names = Vec::new();
    let mut pos = 0usize;
    let mut long_name: Option<String> = None;
    let mut long_link: Option<String> = None;
    while pos + 512 <= data.len() {
        let h = &data[pos..pos + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let stored: u64 = octal(&h[148..156]).ok_or_else(|| malformed(kind, "bad checksum"))?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if sum != stored {
            return Err(malformed(
                kind,
                format!("header checksum mismatch at {pos}"),
            ));
        }
        let size = octal(&h[124..136]).ok_or_else(|| malformed(kind, "bad size field"))?;
        let size = usize::try_from(size).map_err(|_| malformed(kind, "entry too large"))?;
        let body_start = pos + 512;
        let body_end = body_start
            .checked_add(size)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| malformed(kind, "truncated entry"))?;
        let body = &data[body_start..body_end];
        let typeflag = h[156];
        match typeflag {
            b'L' => long_name = Some(cstr(body)),
            b'K' => long_link = Some(cstr(body)),
            b'x' => {
                for (k, v) in pax_records(body) {
                    match k.as_str() {
                        "path" => long_name = Some(v),
                        "linkpath" => long_link = Some(v),
                        _ => {}
                    }
                }
            }
            b'g' => {}
            _ => {
                let mut name = cstr(&h[0..100]);
                if &h[257..262] == b"ustar" {
                    let prefix = cstr(&h[345..500]);
                    if !prefix.is_empty() {
                        name = format!("{prefix}/{name}");
                    }
                }
                let name = long_name.take().unwrap_or(name);
                let link = long_link.take().unwrap_or_else(|| cstr(&h[157..257]));
                if typeflag == b'1' {
                    // A hard link to a file outside would copy that file in.
                    check_entry(&link)?;
                }
                names.push(name);
            }
        }
        pos = body_start + size.div_ceil(512) * 512;
    }
    Ok(names)
}

fn pax_records(body: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let text = String::from_utf8_lossy(body);
    let mut rest: &str = &text;
    while let Some((len, _)) = rest.split_once(' ') {
        let Ok(n) = len.parse::<usize>() else { break };
        if n == 0 || n > rest.len() {
            break;
        }
        let record = &rest[len.len() + 1..n];
        if let Some((k, v)) = record.trim_end_matches('\n').split_once('=') {
            out.push((k.to_owned(), v.to_owned()));
        }
        rest = &rest[n..];
    }
    out
}

fn le16(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn le32(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// Entry names from a zip's central directory.
fn zip_entries(data: &[u8]) -> Result<Vec<String>, ArchiveError> {
    let bad = |r: &str| malformed("zip", r);
    // End of central directory: 22 bytes + comment (≤ 64 KiB), searched from the end.
    let min = data.len().saturating_sub(22 + 65_535);
    let eocd = (min..=data.len().saturating_sub(22))
        .rev()
        .find(|&i| data[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| bad("no end of central directory"))?;
    let count = le16(data, eocd + 10).ok_or_else(|| bad("truncated"))?;
    let offset = le32(data, eocd + 16).ok_or_else(|| bad("truncated"))?;
    if count == 0xffff || offset == 0xffff_ffff {
        return Err(bad("zip64 archives are not supported"));
    }
    let mut names = Vec::with_capacity(count);
    let mut pos = offset;
    for _ in 0..count {
        if !data
            .get(pos..)
            .is_some_and(|d| d.starts_with(b"PK\x01\x02"))
        {
            return Err(bad("bad central directory entry"));
        }
        let name_len = le16(data, pos + 28).ok_or_else(|| bad("truncated"))?;
        let extra_len = le16(data, pos + 30).ok_or_else(|| bad("truncated"))?;
        let comment_len = le16(data, pos + 32).ok_or_else(|| bad("truncated"))?;
        let name = data
            .get(pos + 46..pos + 46 + name_len)
            .ok_or_else(|| bad("truncated"))?;
        names.push(String::from_utf8_lossy(name).into_owned());
        pos += 46 + name_len + extra_len + comment_len;
    }
    Ok(names)
}

/// Test and CLI helper: a ustar archive of `(path, contents)` files (mode 0644) and
/// directories (`contents == None`, mode 0755). Names longer than 100 bytes are not supported.
pub fn write_tar(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, contents) in entries {
        let mut h = [0u8; 512];
        let nb = name.as_bytes();
        let n = nb.len().min(100);
        h[..n].copy_from_slice(&nb[..n]);
        let (mode, size, flag) = match contents {
            Some(c) => ("0000644", c.len(), b'0'),
            None => ("0000755", 0, b'5'),
        };
        h[100..107].copy_from_slice(mode.as_bytes());
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = flag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        if let Some(c) = contents {
            out.extend_from_slice(c);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    /// A minimal stored zip with the given names (empty contents).
    fn zip(names: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for name in names {
            let offset = out.len() as u32;
            out.extend_from_slice(b"PK\x03\x04");
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&[0; 12]);
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            central.extend_from_slice(b"PK\x01\x02");
            central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(b"PK\x05\x06");
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(names.len() as u16).to_le_bytes());
        out.extend_from_slice(&(names.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn detects_and_lists_every_kind() {
        let tar = write_tar(&[("app", None), ("app/main.py", Some(b"print(1)\n"))]);
        let l = inspect(&tar).expect("tar");
        assert_eq!(l.kind, ArchiveKind::Tar);
        assert_eq!(l.entries, vec!["app", "app/main.py"]);
        assert!(l.has("app") && l.has("app/main.py") && l.has("") && !l.has("ap"));

        let l = inspect(&gz(&tar)).expect("tar.gz");
        assert_eq!(l.kind, ArchiveKind::TarGz);
        assert_eq!(l.entries.len(), 2);

        let l = inspect(&zip(&["a/", "a/b.txt"])).expect("zip");
        assert_eq!(l.kind, ArchiveKind::Zip);
        assert_eq!(l.entries, vec!["a", "a/b.txt"]);
    }

    #[test]
    fn rejects_traversal() {
        for bad in ["../evil", "a/../../evil", "/etc/passwd"] {
            let tar = write_tar(&[(bad, Some(b"x"))]);
            assert_eq!(
                inspect(&tar).unwrap_err(),
                ArchiveError::Traversal(bad.into())
            );
            assert!(matches!(
                inspect(&gz(&tar)).unwrap_err(),
                ArchiveError::Traversal(_)
            ));
            assert!(matches!(
                inspect(&zip(&[bad])).unwrap_err(),
                ArchiveError::Traversal(_)
            ));
        }
        assert_eq!(
            ArchiveError::Traversal("../x".into()).to_string(),
            "archive entry \"../x\" escapes the extraction directory (absolute path or `..`)"
        );
    }

    #[test]
    fn rejects_garbage_and_size() {
        assert!(matches!(
            inspect(b"not an archive at all").unwrap_err(),
            ArchiveError::Malformed { kind: "tar.gz", .. }
        ));
        let mut tar = write_tar(&[("a", Some(b"x"))]);
        tar[0] = b'b'; // breaks the checksum
        assert!(matches!(
            inspect(&tar).unwrap_err(),
            ArchiveError::Malformed { kind: "tar", .. }
        ));
        assert_eq!(
            inspect(&vec![0u8; MAX_ARCHIVE_BYTES + 1]).unwrap_err(),
            ArchiveError::TooLarge
        );
    }
}
