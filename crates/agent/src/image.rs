//! Builds the base template `minimal`: Debian 12 via debootstrap plus a static envd.
//!
//! Two cached layers, tracked by `images/minimal/image.json`:
//! - the base system (debootstrap + user setup), rebuilt only when [`BASE_RECIPE`] changes;
//! - envd at `/usr/local/bin/envd`, replaced whenever the given binary's SHA-256 differs;
//! - the host's locally added CA certificates (`/usr/local/share/ca-certificates`), copied in
//!   and `update-ca-certificates`-ed whenever they change: a host behind a TLS-inspecting proxy
//!   trusts that proxy's CA, and its capsules (apt, pip, curl in a template build) must too.
//!
//! A build takes an exclusive lock on the template directory, so concurrent builders (parallel
//! test processes, two CLI invocations) wait for each other and then find the cache warm. The
//! base is assembled in `rootfs.building` and renamed into place, so an interrupted build never
//! leaves a half-made `rootfs`.

use crate::command::{self, CommandError};
use crate::envd::ENVD_PATH;
use crate::layout::{DataDir, InvalidTemplateName};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

pub const MINIMAL: &str = "minimal";
pub const SUITE: &str = "bookworm";
pub const PACKAGES: &[&str] = &[
    "ca-certificates",
    "curl",
    "wget",
    "sudo",
    "git",
    "procps",
    "iproute2",
    "python3",
    "python3-venv",
    "socat",
];
/// Bump when the base recipe (suite, packages, configuration) changes, to force a rebuild.
pub const BASE_RECIPE: u32 = 1;
/// The unprivileged user E2B's SDK runs commands as by default.
pub const DEFAULT_USER: &str = "user";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const MARKER: &str = "image.json";
/// Where Debian keeps locally added CAs, on the host and in the image alike.
const LOCAL_CA_DIR: &str = "usr/local/share/ca-certificates";
/// System-wide pip configuration in the image.
const PIP_CONF: &str = "etc/pip.conf";
const STEPS: u64 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("unknown image {0:?}: only `minimal` can be built")]
    UnknownImage(String),
    #[error(transparent)]
    InvalidName(#[from] InvalidTemplateName),
    #[error("envd binary {path}: {reason}")]
    BadEnvd { path: PathBuf, reason: String },
    #[error(
        "debootstrap is not installed (apt-get install debootstrap, or run scripts/install-runsc.sh)"
    )]
    NoDebootstrap,
    #[error("debootstrap failed ({status}); see {log}: {tail}")]
    Debootstrap {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image marker {path}: {reason}")]
    Marker { path: PathBuf, reason: String },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_owned();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub data_dir: DataDir,
    pub name: String,
    /// A statically linked envd for x86_64 Linux.
    pub envd_bin: PathBuf,
    /// Debian mirror; `None` uses the host's own apt mirror.
    pub mirror: Option<String>,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct BuildReport {
    pub rootfs: PathBuf,
    pub base_built: bool,
    pub envd_installed: bool,
    pub envd_sha256: String,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Marker {
    base_recipe: u32,
    suite: String,
    packages: Vec<String>,
    envd_sha256: Option<String>,
    /// Digest of the host CAs last copied in (absent: none copied yet).
    #[serde(default)]
    host_cas_sha256: Option<String>,
}

impl Marker {
    fn base_current(&self) -> bool {
        self.base_recipe == BASE_RECIPE
            && self.suite == SUITE
            && self
                .packages
                .iter()
                .map(String::as_str)
                .eq(PACKAGES.iter().copied())
    }
}

/// Builds (or finds cached) the template named in `options`.
pub async fn build(options: BuildOptions) -> Result<BuildReport, ImageError> {
    if options.name != MINIMAL {
        return Err(ImageError::UnknownImage(options.name));
    }
    let start = Instant::now();
    let template_dir = options.data_dir.template(&options.name)?;
    // Before anything is created: a bad envd should cost nothing.
    let envd_sha256 = check_envd(&options.envd_bin)?;
    std::fs::create_dir_all(&template_dir).map_err(io_error("creating", &template_dir))?;

    let _lock = lock_dir(&template_dir).await?;
    let rootfs = template_dir.join("rootfs");
    let marker_path = template_dir.join(MARKER);
    let mut marker = read_marker(&marker_path)?;

    let bar = progress_bar(options.progress);
    let base_built = if marker.base_current() && rootfs.is_dir() {
        bar.inc(2);
        false
    } else {
        bar.set_message("debootstrap");
        let mirror = options
            .mirror
            .clone()
            .or_else(host_debian_mirror)
            .unwrap_or_else(|| DEFAULT_MIRROR.to_owned());
        build_base(&template_dir, &rootfs, &mirror, &bar).await?;
        marker = Marker {
            base_recipe: BASE_RECIPE,
            suite: SUITE.to_owned(),
            packages: PACKAGES.iter().map(|p| (*p).to_owned()).collect(),
            envd_sha256: None,
            host_cas_sha256: None,
        };
        write_marker(&marker_path, &marker)?;
        true
    };

    let envd_installed = marker.envd_sha256.as_deref() != Some(envd_sha256.as_str())
        || !rootfs.join(ENVD_PATH.trim_start_matches('/')).is_file();
    if envd_installed {
        bar.set_message("installing envd");
        install_envd(&rootfs, &options.envd_bin)?;
        marker.envd_sha256 = Some(envd_sha256.clone());
        write_marker(&marker_path, &marker)?;
    }
    let host_cas = local_cas(Path::new("/").join(LOCAL_CA_DIR).as_path())?;
    let host_cas_sha256 = cas_digest(&host_cas);
    if marker.host_cas_sha256.as_deref() != Some(host_cas_sha256.as_str()) {
        bar.set_message("installing host CA certificates");
        install_cas(&rootfs, &host_cas).await?;
        marker.host_cas_sha256 = Some(host_cas_sha256);
        write_marker(&marker_path, &marker)?;
        tracing::info!(
            count = host_cas.len(),
            "host CA certificates installed in the image"
        );
    }
    bar.inc(1);
    bar.finish_with_message(if base_built || envd_installed {
        "built"
    } else {
        "cached"
    });
    let report = BuildReport {
        rootfs,
        base_built,
        envd_installed,
        envd_sha256,
        elapsed: start.elapsed(),
    };
    tracing::info!(
        rootfs = %report.rootfs.display(),
        base_built,
        envd_installed,
        elapsed = ?report.elapsed,
        "image ready"
    );
    Ok(report)
}

fn progress_bar(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(STEPS);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:20} {pos}/{len} {wide_msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Holds an exclusive `flock` on `<dir>/.build.lock` until dropped.
async fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, ImageError> {
    let path = dir.join(".build.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error("opening", &path))?;
    let lock = tokio::task::spawn_blocking(move || {
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| std::io::Error::from(errno))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
    .and_then(|r| r)
    .map_err(io_error("locking", &path))?;
    Ok(lock)
}

fn read_marker(path: &Path) -> Result<Marker, ImageError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::Marker {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Marker::default()),
        Err(source) => Err(ImageError::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_marker(path: &Path, marker: &Marker) -> Result<(), ImageError> {
    let json = serde_json::to_vec_pretty(marker).map_err(|e| ImageError::Marker {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(io_error("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error("renaming", &tmp))
}

/// Hashes envd after checking it is a static x86_64 ELF (a dynamic one would depend on the
/// template's libc and break in images built from other distributions).
fn check_envd(path: &Path) -> Result<String, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| ImageError::BadEnvd {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    match elf_is_static(&bytes) {
        Ok(true) => {}
        Ok(false) => {
            return Err(ImageError::BadEnvd {
                path: path.to_owned(),
                reason:
                    "dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static' \
                         cargo build --release --target x86_64-unknown-linux-gnu -p envd"
                        .to_owned(),
            });
        }
        Err(reason) => {
            return Err(ImageError::BadEnvd {
                path: path.to_owned(),
                reason,
            });
        }
    }
    Ok(hex(&Sha256::digest(&bytes)))
}

/// Whether an x86_64 ELF executable has no program interpreter (`PT_INTERP`).
pub fn elf_is_static(bytes: &[u8]) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    const EM_X86_64: u16 = 62;
    let u16_at = |off: usize| {
        bytes
            .get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |off: usize| {
        bytes
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |off: usize| {
        bytes
            .get(off..off + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".to_owned());
    }
    if u16_at(0x12) != Some(EM_X86_64) {
        return Err("not an x86_64 executable".to_owned());
    }
    let truncated = || "truncated ELF header".to_owned();
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(truncated)?).map_err(|e| e.to_string())?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(truncated)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(truncated)?);
    for index in 0..phnum {
        let p_type = u32_at(phoff + index * phentsize).ok_or_else(truncated)?;
        if p_type == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn install_envd(rootfs: &Path, envd_bin: &Path) -> Result<(), ImageError> {
    let target = rootfs.join(ENVD_PATH.trim_start_matches('/'));
    let dir = target.parent().unwrap_or(rootfs);
    std::fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
    let tmp = target.with_extension("new");
    std::fs::copy(envd_bin, &tmp).map_err(io_error("copying envd to", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(io_error("chmod", &tmp))?;
    std::fs::rename(&tmp, &target).map_err(io_error("renaming", &tmp))
}

/// A local CA certificate: its path below the CA dir and its bytes.
struct LocalCa {
    relative: PathBuf,
    pem: Vec<u8>,
}

/// The `*.crt` files below `dir` (where update-ca-certificates looks), sorted; none if `dir`
/// does not exist.
fn local_cas(dir: &Path) -> Result<Vec<LocalCa>, ImageError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("listing", &current)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io_error("listing", &current))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "crt") {
                let pem = std::fs::read(&path).map_err(io_error("reading", &path))?;
                let relative = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                found.push(LocalCa { relative, pem });
            }
        }
    }
    found.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(found)
}

fn cas_digest(cas: &[LocalCa]) -> String {
    let mut hash = Sha256::new();
    for ca in cas {
        hash.update(ca.relative.as_os_str().as_encoded_bytes());
        hash.update([0]);
        hash.update((ca.pem.len() as u64).to_le_bytes());
        hash.update(&ca.pem);
    }
    hex(&hash.finalize())
}

/// Replaces the image's local CAs with `cas` and rebuilds its trust store.
async fn install_cas(rootfs: &Path, cas: &[LocalCa]) -> Result<(), ImageError> {
    let dir = rootfs.join(LOCAL_CA_DIR);
    remove_tree(&dir)?;
    std::fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
    for ca in cas {
        let target = dir.join(&ca.relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_error("creating", parent))?;
        }
        std::fs::write(&target, &ca.pem).map_err(io_error("writing", &target))?;
    }
    let root = rootfs.to_string_lossy();
    command::run(
        "chroot",
        [root.as_ref(), "update-ca-certificates", "--fresh"],
        None,
    )
    .await?;
    // pip (also in venvs) verifies against its own certifi bundle unless told otherwise.
    let pip_conf = rootfs.join(PIP_CONF);
    if cas.is_empty() {
        match std::fs::remove_file(&pip_conf) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error("removing", &pip_conf)(e));
            }
            _ => {}
        }
    } else {
        std::fs::write(
            &pip_conf,
            "# Written by `wrenn image build`: trust the system store, which holds the host's CAs.\n\
             [global]\ncert = /etc/ssl/certs/ca-certificates.crt\n",
        )
        .map_err(io_error("writing", &pip_conf))?;
    }
    Ok(())
}

async fn build_base(
    template_dir: &Path,
    rootfs: &Path,
    mirror: &str,
    bar: &ProgressBar,
) -> Result<(), ImageError> {
    if which("debootstrap").is_none() {
        return Err(ImageError::NoDebootstrap);
    }
    let staging = template_dir.join("rootfs.building");
    remove_tree(&staging)?;
    let log = template_dir.join("build.log");
    debootstrap(&staging, mirror, &log, bar).await?;
    bar.inc(1);
    bar.set_message("configuring");
    configure_base(&staging).await?;
    remove_tree(rootfs)?;
    std::fs::rename(&staging, rootfs).map_err(io_error("renaming", &staging))?;
    bar.inc(1);
    Ok(())
}

async fn debootstrap(
    target: &Path,
    mirror: &str,
    log_path: &Path,
    bar: &ProgressBar,
) -> Result<(), ImageError> {
    let mut log = std::fs::File::create(log_path).map_err(io_error("creating", log_path))?;
    // One pipe for stdout and stderr: debootstrap reports progress ("I: …") on stderr.
    let (reader, writer) = nix::unistd::pipe().map_err(|e| ImageError::Io {
        action: "creating a pipe for",
        path: log_path.to_owned(),
        source: e.into(),
    })?;
    let writer_err = writer
        .try_clone()
        .map_err(io_error("duplicating", log_path))?;
    let mut cmd = tokio::process::Command::new("debootstrap");
    cmd.args(["--variant=minbase", "--components=main"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(target)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer_err))
        .kill_on_drop(true);
    let line = command::CommandLine(&cmd).to_string();
    tracing::info!(command = %line, "building base image");
    let mut child = command::spawn(&mut cmd).map_err(|source| CommandError::Spawn {
        command: line.clone(),
        source,
    })?;
    // Our copies of the write end must close, or the reader never sees EOF.
    drop(cmd);

    let mut lines =
        tokio::io::BufReader::new(tokio::fs::File::from_std(std::fs::File::from(reader))).lines();
    let mut tail: Vec<String> = Vec::new();
    while let Ok(Some(text)) = lines.next_line().await {
        let _ = writeln!(log, "{text}");
        if let Some(info) = text.strip_prefix("I: ") {
            bar.set_message(format!("debootstrap: {info}"));
        }
        tail.push(text);
        if tail.len() > 20 {
            tail.remove(0);
        }
    }
    let status = command::wait(&mut child)
        .await
        .map_err(|source| CommandError::Spawn {
            command: line,
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::Debootstrap {
            status: status.to_string(),
            log: log_path.to_owned(),
            tail: tail.join("\n"),
        })
    }
}

/// User, sudo, hostname and cleanup inside the fresh root filesystem.
async fn configure_base(rootfs: &Path) -> Result<(), ImageError> {
    let root = rootfs.to_string_lossy();
    let has_user = std::fs::read_to_string(rootfs.join("etc/passwd"))
        .map(|p| {
            p.lines()
                .any(|l| l.starts_with(&format!("{DEFAULT_USER}:")))
        })
        .unwrap_or(false);
    if !has_user {
        command::run(
            "chroot",
            [
                root.as_ref(),
                "useradd",
                "--create-home",
                "--shell",
                "/bin/bash",
                "--groups",
                "sudo",
                DEFAULT_USER,
            ],
            None,
        )
        .await?;
    }
    let sudoers = rootfs.join("etc/sudoers.d/wrenn-user");
    std::fs::write(
        &sudoers,
        format!("{DEFAULT_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"),
    )
    .map_err(io_error("writing", &sudoers))?;
    std::fs::set_permissions(&sudoers, std::fs::Permissions::from_mode(0o440))
        .map_err(io_error("chmod", &sudoers))?;

    // Capsules get these bind-mounted per capsule; the files must exist as mount targets.
    for (file, content) in [
        ("etc/hostname", "capsule\n"),
        ("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
        ("etc/resolv.conf", ""),
    ] {
        let path = rootfs.join(file);
        std::fs::write(&path, content).map_err(io_error("writing", &path))?;
    }
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let path = rootfs.join(dir);
        if let Ok(entries) = std::fs::read_dir(&path) {
            for entry in entries.flatten().filter(|e| e.path().is_file()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

fn remove_tree(path: &Path) -> Result<(), ImageError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ImageError::Io {
            action: "removing",
            path: path.to_owned(),
            source,
        }),
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The host's Debian mirror from its apt sources (deb822 `.sources` first, then one-line lists).
pub fn host_debian_mirror() -> Option<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.push(PathBuf::from("/etc/apt/sources.list"));
    files.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => mirror_from_deb822(&text),
            Some("list") => mirror_from_one_line(&text),
            _ => None,
        }
    })
}

/// First URI of a stanza whose suites include a plain release (not `-security`/`-updates`).
pub fn mirror_from_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let uri = field("URIs")?.split_whitespace().next()?;
        let release = field("Suites")?
            .split_whitespace()
            .any(|s| !s.contains('-'));
        (release && uri.contains("debian") && !uri.contains("security")).then(|| uri.to_owned())
    })
}

pub fn mirror_from_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "deb" {
            return None;
        }
        let mut uri = words.next()?;
        if uri.starts_with('[') {
            // Skip options such as `[arch=amd64 signed-by=…]`.
            uri = words.find(|w| !w.starts_with('[') && !w.ends_with(']'))?;
        }
        let suite = words.next()?;
        (uri.contains("debian") && !uri.contains("security") && !suite.contains('-'))
            .then(|| uri.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_cas_are_found_recursively_and_their_digest_follows_content() {
        let root = std::env::temp_dir().join(format!("wrenn-local-cas-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("mkdir");
        struct Dir(PathBuf);
        impl Dir {
            fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = Dir(root);
        assert!(
            local_cas(&dir.path().join("absent"))
                .expect("absent dir")
                .is_empty()
        );
        std::fs::create_dir_all(dir.path().join("corp")).expect("mkdir");
        std::fs::write(dir.path().join("corp/proxy.crt"), "PEM-1").expect("write");
        std::fs::write(dir.path().join("a.crt"), "PEM-2").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a cert").expect("write");
        let cas = local_cas(dir.path()).expect("list");
        let names: Vec<_> = cas.iter().map(|c| c.relative.clone()).collect();
        assert_eq!(
            names,
            [PathBuf::from("a.crt"), PathBuf::from("corp/proxy.crt")]
        );
        let before = cas_digest(&cas);
        std::fs::write(dir.path().join("a.crt"), "PEM-3").expect("write");
        assert_ne!(cas_digest(&local_cas(dir.path()).expect("list")), before);
        assert_ne!(cas_digest(&[]), before);
    }

    #[test]
    fn finds_mirror_in_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n\n\
                      Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            mirror_from_deb822(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let list = "# c\ndeb http://security.debian.org/debian-security bookworm-security main\n\
                    deb [arch=amd64] http://ftp.example/debian bookworm main\n";
        assert_eq!(
            mirror_from_one_line(list).as_deref(),
            Some("http://ftp.example/debian")
        );
        assert_eq!(
            mirror_from_one_line("deb-src http://x/debian bookworm main"),
            None
        );
    }

    #[test]
    fn detects_static_and_dynamic_elf() {
        // The test binary itself is dynamically linked.
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(elf_is_static(&me), Ok(false));
        let mut fake = vec![0u8; 0x40 + 56];
        fake[..4].copy_from_slice(b"\x7fELF");
        fake[4] = 2;
        fake[5] = 1;
        fake[0x12..0x14].copy_from_slice(&62u16.to_le_bytes());
        fake[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        fake[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        fake[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        fake[0x40..0x44].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        assert_eq!(elf_is_static(&fake), Ok(true));
        fake[0x40..0x44].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        assert_eq!(elf_is_static(&fake), Ok(false));
        assert!(elf_is_static(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn marker_tracks_the_recipe() {
        let current = Marker {
            base_recipe: BASE_RECIPE,
            suite: SUITE.to_owned(),
            packages: PACKAGES.iter().map(|p| (*p).to_owned()).collect(),
            envd_sha256: None,
            host_cas_sha256: None,
        };
        assert!(current.base_current());
        let mut fewer = current.clone();
        fewer.packages.pop();
        assert!(!fewer.base_current());
        assert!(!Marker::default().base_current());
    }

    #[tokio::test]
    async fn rejects_unknown_images_and_bad_envd() {
        let dir = std::env::temp_dir().join(format!("wrenn-image-test-{}", std::process::id()));
        let options = BuildOptions {
            data_dir: DataDir::new(&dir),
            name: "ubuntu".into(),
            envd_bin: PathBuf::from("/nonexistent/envd"),
            mirror: None,
            progress: false,
        };
        assert!(matches!(
            build(options.clone()).await,
            Err(ImageError::UnknownImage(_))
        ));
        let options = BuildOptions {
            name: MINIMAL.into(),
            ..options
        };
        assert!(matches!(
            build(options).await,
            Err(ImageError::BadEnvd { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
