//! Shared by the CLI's capsule tests (`client_cli.rs`, `template_build.rs`): scratch dirs, the
//! `minimal` image and `wrenn up` on a scratch data dir holding the host-wide capsule lock.
#![allow(dead_code)]

#[path = "../../../agent/tests/common/mod.rs"]
pub mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A fresh, empty directory under the temp dir, unique per process and call.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The `minimal` image: `WRENN_TEST_MINIMAL_IMAGE`, else the agent tests' fixture (built once,
/// locked and cached, shared with them). `None` (skip) only when not root.
pub fn capsules_possible() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WRENN_TEST_MINIMAL_IMAGE") {
        return Some(PathBuf::from(path));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime
        .block_on(common::fixture())
        .map(|data| data.images().join("minimal"))
}

/// `wrenn up` on a scratch data dir (the image linked in); SIGTERM and cleanup on drop.
pub struct Up {
    pub child: std::process::Child,
    pub url: String,
    pub key: String,
    pub data: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Up {
    /// Takes the host-wide capsule lock, starts `wrenn up` and waits for its `export` lines
    /// (printed once the API answers).
    pub fn start(image: &Path, prefix: &str) -> Up {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(common::HOST_LOCK)
            .expect("open host lock");
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("flock");
        let data = scratch_dir(prefix);
        std::fs::create_dir_all(data.join("images")).expect("images dir");
        std::os::unix::fs::symlink(image, data.join("images/minimal")).expect("symlink");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wrenn"))
            .args(["up", "--data-dir"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("WRENN_API_KEY")
            .env_remove("WRENN_BASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wrenn up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let (mut url, mut key) = (String::new(), String::new());
        let deadline = Instant::now() + Duration::from_secs(300);
        while url.is_empty() || key.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("wrenn up did not print its exports");
            if let Some(v) = line.strip_prefix("export WRENN_BASE_URL=") {
                url = v.to_owned();
            } else if let Some(v) = line.strip_prefix("export WRENN_API_KEY=") {
                key = v.to_owned();
            }
        }
        Up {
            child,
            url,
            key,
            data,
            _lock: lock,
        }
    }

    /// Capsule directories the agent holds (build capsules have no database row).
    pub fn capsule_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.data.join("capsules"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.data.join("images/minimal"));
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
