//! The client commands (`wrenn login|logout|capsule|snapshot|key`): the real `wrenn` binary
//! against a real control plane.
//!
//! Most tests need no capsules: the control plane runs in-process (its own thread and runtime)
//! on 127.0.0.1:0 over a temp SQLite database, with a bootstrapped admin (password + API key),
//! and no host agent. `capsule_end_to_end` boots real capsules through `wrenn up`: it needs root,
//! runsc and the `minimal` image of the agent tests' fixture (skipped when not root) and holds
//! the host-wide capsule lock.

mod up;

use up::{Up, capsules_possible, scratch_dir};

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const EMAIL: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery";
const MISSING_CAPSULE: &str = "cl-0000000000000000000000001";

/// A control plane in its own thread; stopped and deleted on drop.
struct ControlPlane {
    url: String,
    api_key: String,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlPlane {
    fn start() -> ControlPlane {
        let dir = scratch_dir("wrenn-cli-cp");
        let data = dir.join("data");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let config = wrenn_server::Config::new(&data);
                let state = wrenn_server::open_state(&config).await.expect("open state");
                let boot =
                    wrenn_server::bootstrap_admin(state.db(), EMAIL, "Admin", Some(PASSWORD))
                        .await
                        .expect("bootstrap admin");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                ready_tx.send((addr, boot.api_key)).expect("ready");
                wrenn_server::serve_on(listener, state, async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("serve");
            });
        });
        let (addr, api_key) = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("control plane did not start");
        ControlPlane {
            url: format!("http://{addr}"),
            api_key,
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A user of the CLI: their own HOME and XDG_CONFIG_HOME, no WRENN_* from the test's
/// environment.
struct User {
    home: PathBuf,
}

impl User {
    fn new() -> User {
        User {
            home: scratch_dir("wrenn-cli-home"),
        }
    }

    fn config_home(&self) -> PathBuf {
        self.home.join("xdg")
    }

    fn credentials(&self) -> PathBuf {
        self.config_home().join("wrenn/credentials.json")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wrenn"));
        cmd.args(args)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.config_home())
            .env_remove("RUST_LOG");
        for (k, _) in std::env::vars() {
            if k.starts_with("WRENN_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    fn run_with(&self, args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn wrenn");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait wrenn");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!("$ wrenn {} → {}\n{}", args.join(" "), run.code, run.stderr);
        run
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[], None)
    }

    /// Runs and asserts the exit code.
    fn expect(&self, code: i32, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, code, "wrenn {args:?}: {run:?}");
        run
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

#[test]
fn password_login_and_api_keys() {
    let cp = ControlPlane::start();
    let user = User::new();

    // Password on stdin (not a terminal): one line.
    let login = user.run_with(
        &["login", "--url", &cp.url, "--email", EMAIL],
        &[],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(login.code, 0, "{login:?}");
    let meta = std::fs::metadata(user.credentials()).expect("credentials file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(user.credentials()).unwrap()).unwrap();
    assert_eq!(saved["url"], cp.url.as_str());
    assert!(saved["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(saved.get("api_key").is_none());

    // Saved URL and JWT are used without flags.
    let created = user.expect(0, &["key", "create", "--name", "ci"]);
    let key = created.stdout.trim().to_owned();
    assert!(key.starts_with("wrn_"), "{created:?}");

    let listed = user.expect(0, &["key", "ls", "--json"]).json();
    let ci = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .expect("key ci listed")
        .clone();
    let id = ci["id"].as_str().unwrap().to_owned();
    assert!(ci.get("key").is_none(), "listing never shows keys");
    let table = user.expect(0, &["key", "ls"]);
    assert!(table.stdout.starts_with("ID"), "{table:?}");
    assert!(table.stdout.contains(&id));

    // The new key works; the JWT works for capsule routes too.
    let templates = user
        .expect(0, &["snapshot", "ls", "--json", "--api-key", &key])
        .json();
    assert!(
        templates
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "minimal")
    );
    user.expect(0, &["capsule", "ls"]);

    user.expect(0, &["key", "rm", &id]);
    user.expect(4, &["key", "rm", &id]);
    let revoked = user.expect(3, &["capsule", "ls", "--api-key", &key]);
    assert!(revoked.stderr.contains("invalid API key"), "{revoked:?}");

    // Wrong password: auth error, credentials untouched.
    let wrong = user.run_with(
        &["login", "--email", EMAIL],
        &[("WRENN_PASSWORD", "not the password")],
        None,
    );
    assert_eq!(wrong.code, 3, "{wrong:?}");
    user.expect(0, &["key", "ls"]);

    user.expect(0, &["logout"]);
    assert!(!user.credentials().exists());
    let none = user.expect(3, &["key", "ls", "--url", &cp.url]);
    assert!(none.stderr.contains("wrenn login"), "{none:?}");
}

#[test]
fn api_key_login_and_exit_codes() {
    let cp = ControlPlane::start();
    let user = User::new();

    user.expect(
        3,
        &[
            "login",
            "--url",
            &cp.url,
            "--api-key",
            "wrn_0123456789abcdef0123456789abcdef",
        ],
    );
    assert!(!user.credentials().exists());
    user.expect(0, &["login", "--url", &cp.url, "--api-key", &cp.api_key]);
    let meta = std::fs::metadata(user.credentials()).expect("credentials file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let ls = user.expect(0, &["capsule", "ls"]);
    assert!(ls.stdout.starts_with("ID"), "{ls:?}");
    assert_eq!(
        user.expect(0, &["capsule", "ls", "--json"]).json(),
        Value::Array(vec![])
    );

    // API keys cannot manage API keys: say so, exit 3.
    let keys = user.expect(3, &["key", "ls"]);
    assert!(keys.stderr.contains("user login (JWT)"), "{keys:?}");

    // Not found, bad input, wrong state, no hosts.
    let missing = user.expect(4, &["capsule", "get", MISSING_CAPSULE]);
    assert!(missing.stderr.contains("not_found"), "{missing:?}");
    user.expect(4, &["capsule", "pause", MISSING_CAPSULE]);
    user.expect(4, &["capsule", "exec", MISSING_CAPSULE, "--", "true"]);
    user.expect(4, &["capsule", "shell", MISSING_CAPSULE]);
    user.expect(4, &["snapshot", "rm", "no-such-template"]);
    user.expect(2, &["capsule", "get", "not-an-id"]);
    user.expect(3, &["snapshot", "rm", "minimal"]); // platform template: 403
    let create = user.expect(6, &["capsule", "create"]);
    assert!(create.stderr.contains("no_hosts_available"), "{create:?}");

    // Usage errors: clap's and ours.
    user.expect(2, &["capsule"]);
    user.expect(2, &["capsule", "exec", MISSING_CAPSULE]);
    user.expect(2, &["capsule", "create", "--label", "no-equals-sign"]);
    user.expect(2, &["login", "--api-key", ""]);

    // Network: nothing listens on port 1. Saved credentials are for another URL, so the flag
    // is needed, and without it the error is "no credentials".
    let down = user.expect(
        6,
        &[
            "capsule",
            "ls",
            "--url",
            "http://127.0.0.1:1",
            "--api-key",
            &cp.api_key,
        ],
    );
    assert!(down.stderr.contains("cannot reach"), "{down:?}");
    let other = user.expect(3, &["capsule", "ls", "--url", "http://127.0.0.1:1"]);
    assert!(other.stderr.contains("no credentials"), "{other:?}");

    // Environment overrides the file.
    let env = user.run_with(
        &["capsule", "ls"],
        &[("WRENN_API_KEY", "wrn_0123456789abcdef0123456789abcdef")],
        None,
    );
    assert_eq!(env.code, 3, "{env:?}");
    let env = user.run_with(
        &["capsule", "ls"],
        &[("WRENN_BASE_URL", "http://127.0.0.1:1")],
        None,
    );
    assert_eq!(env.code, 3, "{env:?}"); // other URL: saved key not sent

    // JSON output of a template list, human table with the header.
    let table = user.expect(0, &["snapshot", "ls", "--type", "base"]);
    assert!(table.stdout.starts_with("NAME"), "{table:?}");
    assert!(table.stdout.contains("minimal"));
}

#[test]
fn credentials_default_to_home_config() {
    let cp = ControlPlane::start();
    let user = User::new();
    let run = user
        .command(&["login", "--url", &cp.url, "--api-key", &cp.api_key])
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .expect("run");
    assert!(run.status.success(), "{run:?}");
    let path = user.home.join(".config/wrenn/credentials.json");
    assert_eq!(
        std::fs::metadata(&path).expect("file").permissions().mode() & 0o777,
        0o600
    );
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
}

// ---- with real capsules ----

#[test]
fn capsule_end_to_end() {
    let Some(image) = capsules_possible() else {
        return;
    };
    let up = Up::start(&image, "wrenn-cli-up");
    let user = User::new();
    user.expect(0, &["login", "--url", &up.url, "--api-key", &up.key]);

    let id = user.expect(0, &["capsule", "create", "--label", "suite=cli"]);
    let id = id.stdout.trim().to_owned();
    assert!(id.starts_with("cl-"), "{id}");
    let result = std::panic::catch_unwind(|| {
        let got = user.expect(0, &["capsule", "get", &id, "--json"]).json();
        assert_eq!(got["status"], "running");
        assert_eq!(got["metadata"]["suite"], "cli");

        let hello = user.expect(0, &["capsule", "exec", &id, "--", "echo", "hello", "world"]);
        assert_eq!(hello.stdout, "hello world\n");
        let status = user.run(&[
            "capsule",
            "exec",
            &id,
            "--sh",
            "--",
            "echo oops >&2; exit 7",
        ]);
        assert_eq!(status.code, 7, "{status:?}");
        assert!(status.stderr.contains("oops"));
        let env = user.expect(
            0,
            &[
                "capsule",
                "exec",
                &id,
                "-e",
                "GREETING=hi",
                "--cwd",
                "/tmp",
                "--sh",
                "--",
                "echo $GREETING; pwd",
            ],
        );
        assert_eq!(env.stdout, "hi\n/tmp\n");
        let json = user
            .expect(0, &["capsule", "exec", &id, "--json", "--", "true"])
            .json();
        assert_eq!(json["exit_code"], 0);

        let ls = user.expect(0, &["capsule", "ls"]);
        assert!(
            ls.stdout
                .lines()
                .any(|l| l.starts_with(&id) && l.contains("running")),
            "{ls:?}"
        );

        // The PTY: stdin is a pipe here, so no raw mode; the shell's exit code comes back.
        let shell = user.run_with(
            &["capsule", "shell", &id, "--", "/bin/sh"],
            &[],
            Some("echo from-the-pty\nexit 3\n"),
        );
        assert_eq!(shell.code, 3, "{shell:?}");
        assert!(shell.stdout.contains("from-the-pty"), "{shell:?}");

        let paused = user.expect(0, &["capsule", "pause", &id]);
        assert!(paused.stdout.contains("paused"), "{paused:?}");
        user.expect(5, &["capsule", "exec", &id, "--", "true"]);
        user.expect(5, &["capsule", "shell", &id]);
        let resumed = user.expect(0, &["capsule", "resume", &id, "--json"]).json();
        assert_eq!(resumed["status"], "running");
        let after = user.expect(0, &["capsule", "exec", &id, "--", "echo", "back"]);
        assert_eq!(after.stdout, "back\n");
    });
    let rm = user.run(&["capsule", "rm", &id]);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(rm.code, 0, "{rm:?}");
    assert_eq!(rm.stdout.trim(), format!("{id} stopped"));
    let gone = user.expect(0, &["capsule", "get", &id, "--json"]).json();
    assert_eq!(gone["status"], "stopped");
    assert!(!user.expect(0, &["capsule", "ls"]).stdout.contains(&id));
}
