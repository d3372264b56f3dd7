//! `wrenn agent` end to end: the real binary on a scratch data dir (reusing the `minimal` image
//! of the agent tests), driven over Connect with the generated client and with raw JSON.
//!
//! Needs root, runsc and debootstrap like crates/agent/tests/gvisor.rs (skipped otherwise), and
//! takes the same host-wide test lock.

#[path = "../../agent/tests/common/mod.rs"]
mod common;

use connectrpc::ErrorCode;
use connectrpc::client::{ClientConfig, HttpClient};
use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wrenn_agent::DataDir;
use wrenn_proto::hostagent::v1::*;

type Client = HostAgentServiceClient<HttpClient>;

const STEP: Duration = Duration::from_secs(30);

/// The agent's scratch data dir: its own runsc root, capsules and snapshots; `images` links to
/// the fixture's so the image is built once.
fn scratch(fixture: &DataDir) -> DataDir {
    let root = common::target_dir().join("tmp/wrenn-agent-rpc-data");
    std::fs::create_dir_all(&root).unwrap();
    let images = root.join("images");
    if std::fs::symlink_metadata(&images).is_err() {
        std::os::unix::fs::symlink(fixture.images(), &images).unwrap();
    }
    DataDir::new(root)
}

struct Agent {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Agent {
    fn start(data_dir: &DataDir, extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = data_dir.root().join("agent.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wrenn"))
            .arg("agent")
            .arg("--data-dir")
            .arg(data_dir.root())
            .arg("--listen")
            .arg(addr.to_string())
            .args(extra)
            .env("RUST_LOG", "wrenn_agent=debug,wrenn=info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawning wrenn agent");
        let mut agent = Self {
            child: Some(child),
            addr,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = agent.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited with {status}: {}", agent.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "agent not listening: {}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn client(&self) -> Client {
        HostAgentServiceClient::new(
            HttpClient::plaintext(),
            ClientConfig::new(format!("http://{}", self.addr).parse().unwrap()),
        )
    }

    fn url(&self, method: &str) -> String {
        format!(
            "http://{}/hostagent.v1.HostAgentService/{method}",
            self.addr
        )
    }

    fn signal(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            let _ = child.wait();
        }
    }

    fn kill9(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
    }

    fn stop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn new_id() -> String {
    wrenn_agent::CapsuleId::random().unwrap().to_string()
}

/// Destroys whatever an earlier failed run left in the scratch data dir.
async fn destroy_all(client: &Client) {
    let list = client
        .list_sandboxes(ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_owned();
    for sandbox in list.sandboxes {
        destroy(client, &sandbox.sandbox_id).await;
    }
}

async fn create(client: &Client, id: &str) -> CreateSandboxResponse {
    client
        .create_sandbox(CreateSandboxRequest {
            sandbox_id: id.to_owned(),
            template: "minimal".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create {id}: {e}"))
        .into_owned()
}

async fn destroy(client: &Client, id: &str) {
    client
        .destroy_sandbox(DestroySandboxRequest {
            sandbox_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("destroy {id}: {e}"));
}

async fn sh(client: &Client, id: &str, script: &str) -> ExecResponse {
    client
        .exec(ExecRequest {
            sandbox_id: id.to_owned(),
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("exec {script:?} in {id}: {e}"))
        .into_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Deterministic incompressible-ish bytes (xorshift), every byte value included.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn write_stream(client: &Client, id: &str, path: &str, data: &[u8]) {
    let mut messages = vec![WriteFileStreamRequest {
        content: Some(write_file_stream_request::Content::Meta(Box::new(
            WriteFileStreamMeta {
                sandbox_id: id.to_owned(),
                path: path.to_owned(),
                ..Default::default()
            },
        ))),
        ..Default::default()
    }];
    messages.extend(data.chunks(64 * 1024).map(|c| WriteFileStreamRequest {
        content: Some(write_file_stream_request::Content::Chunk(c.to_vec())),
        ..Default::default()
    }));
    client
        .write_file_stream(futures::stream::iter(messages))
        .await
        .unwrap_or_else(|e| panic!("write stream {path}: {e}"));
}

async fn read_stream(client: &Client, id: &str, path: &str) -> Vec<u8> {
    let mut stream = client
        .read_file_stream(ReadFileStreamRequest {
            sandbox_id: id.to_owned(),
            path: path.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        let chunk = message.to_owned_message().chunk;
        assert!(chunk.len() <= 64 * 1024, "chunk of {} bytes", chunk.len());
        out.extend_from_slice(&chunk);
    }
    out
}

/// Moves a server stream's messages into a channel (ends on stream end or error).
macro_rules! pump {
    ($stream:expr) => {{
        let mut stream = $stream;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                if tx.send(message.to_owned_message()).is_err() {
                    break;
                }
            }
        });
        rx
    }};
}

type Events<T> = tokio::sync::mpsc::UnboundedReceiver<T>;

async fn next<T>(rx: &mut Events<T>, what: &str) -> Option<T> {
    tokio::time::timeout(STEP, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Reads PTY events until `want` appears in the output (or the process exits).
async fn pty_until(rx: &mut Events<PtyAttachResponse>, want: &str) -> String {
    let mut seen = String::new();
    loop {
        let Some(message) = next(rx, want).await else {
            panic!("PTY stream ended before {want:?}: {seen:?}");
        };
        match message.event {
            Some(pty_attach_response::Event::Output(o)) => seen.push_str(&text(&o.data)),
            Some(pty_attach_response::Event::Exited(e)) => {
                seen.push_str(&format!("<exited {}>", e.exit_code))
            }
            _ => {}
        }
        if seen.contains(want) {
            return seen;
        }
    }
}

/// Exec-style events until the end event: (stdout+stderr, exit code, error).
async fn exec_until_end(rx: &mut Events<ConnectProcessResponse>) -> (String, i32, String) {
    let mut out = String::new();
    loop {
        let Some(message) = next(rx, "process end").await else {
            panic!("process stream ended without an end event: {out:?}");
        };
        match message.event {
            Some(connect_process_response::Event::Data(d)) => match d.output {
                Some(exec_stream_data::Output::Stdout(b) | exec_stream_data::Output::Stderr(b)) => {
                    out.push_str(&text(&b))
                }
                None => {}
            },
            Some(connect_process_response::Event::End(end)) => {
                return (out, end.exit_code, end.error);
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn agent_rpc_end_to_end() {
    let Some(fixture) = common::fixture().await else {
        return;
    };
    let _lock = common::serial().await;
    let data_dir = scratch(&fixture);
    let mut agent = Agent::start(&data_dir, &[]);
    let client = agent.client();
    destroy_all(&client).await;

    // Create with the JSON codec, snake_case field names as in the contract's curl example.
    let id = new_id();
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "sandbox_id": id,
        "template": "minimal",
        "default_env": {"GREETING": "hello"},
    });
    let reply = http
        .post(agent.url("CreateSandbox"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = reply.status();
    let reply: serde_json::Value = serde_json::from_str(&reply.text().await.unwrap()).unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["sandboxId"], id.as_str(), "{reply}");
    assert_eq!(reply["status"], "running", "{reply}");
    let host_ip = reply["hostIp"].as_str().unwrap().to_owned();
    assert!(host_ip.parse::<std::net::Ipv4Addr>().is_ok(), "{reply}");

    // Durable state is on disk.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data_dir.capsules().join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["status"], "running");
    assert_eq!(state["default_env"]["GREETING"], "hello");

    // Exec: output, exit code, stderr, defaults from /init, cwd/env/user.
    let hi = sh(&client, &id, "echo hi").await;
    assert_eq!((text(&hi.stdout).as_str(), hi.exit_code), ("hi\n", 0));
    let mut took: Vec<Duration> = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let out = client
            .exec(ExecRequest {
                sandbox_id: id.clone(),
                cmd: "true".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_owned();
        took.push(started.elapsed());
        assert_eq!(out.exit_code, 0);
    }
    took.sort();
    eprintln!("exec `true` through the agent: p50 {:?}", took[10]);
    let fail = sh(&client, &id, "echo oops >&2; exit 3").await;
    assert_eq!((text(&fail.stderr).as_str(), fail.exit_code), ("oops\n", 3));
    let ids = sh(&client, &id, "echo $GREETING $WRENN_SANDBOX_ID").await;
    assert_eq!(text(&ids.stdout), format!("hello {id}\n"));
    let who = client
        .exec(ExecRequest {
            sandbox_id: id.clone(),
            cmd: "id -un; pwd; echo $FOO".into(),
            envs: [("FOO".to_owned(), "bar".to_owned())].into_iter().collect(),
            cwd: "/tmp".into(),
            user: "user".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned();
    assert_eq!(
        text(&who.stdout),
        "user\n/tmp\nbar\n",
        "{}",
        text(&who.stderr)
    );

    // Timeout: the process is killed and the call fails with DeadlineExceeded.
    let started = Instant::now();
    let err = client
        .exec(ExecRequest {
            sandbox_id: id.clone(),
            cmd: "/bin/sleep".into(),
            args: vec!["300".into()],
            timeout_sec: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let left = sh(&client, &id, "pgrep -x sleep || echo none").await;
    assert_eq!(
        text(&left.stdout),
        "none\n",
        "timed-out process still running"
    );

    // ExecStream.
    let stream = client
        .exec_stream(ExecStreamRequest {
            sandbox_id: id.clone(),
            cmd: "for i in 1 2 3; do echo $i; done".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut rx = pump!(stream);
    let mut out = String::new();
    let mut saw_start = false;
    loop {
        let message: ExecStreamResponse = next(&mut rx, "exec stream").await.expect("end event");
        match message.event {
            Some(exec_stream_response::Event::Start(s)) => saw_start = s.pid > 0,
            Some(exec_stream_response::Event::Data(d)) => {
                if let Some(exec_stream_data::Output::Stdout(b)) = d.output {
                    out.push_str(&text(&b));
                }
            }
            Some(exec_stream_response::Event::End(end)) => {
                assert_eq!(end.exit_code, 0);
                break;
            }
            None => {}
        }
    }
    assert!(saw_start);
    assert_eq!(out, "1\n2\n3\n");

    // Files: binary-safe unary round trip.
    let binary: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    client
        .write_file(WriteFileRequest {
            sandbox_id: id.clone(),
            path: "/tmp/bin.dat".into(),
            content: binary.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let back = client
        .read_file(ReadFileRequest {
            sandbox_id: id.clone(),
            path: "/tmp/bin.dat".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned();
    assert!(back.content == binary, "unary round trip differs");

    // 20 MiB streamed both ways, several times: the agent must not buffer whole files.
    let big = pattern(20 << 20, 7);
    write_stream(&client, &id, "/root/big.bin", &big).await;
    assert!(read_stream(&client, &id, "/root/big.bin").await == big);
    let rss_before = vm_rss_kib(agent.pid());
    for round in 0..3u64 {
        let data = pattern(20 << 20, round + 11);
        write_stream(&client, &id, "/root/big.bin", &data).await;
        assert!(
            read_stream(&client, &id, "/root/big.bin").await == data,
            "round {round}"
        );
    }
    let rss_after = vm_rss_kib(agent.pid());
    eprintln!("agent RSS {rss_before} KiB -> {rss_after} KiB over 3×(20 MiB up + 20 MiB down)");
    assert!(
        rss_after < rss_before + 20 * 1024,
        "agent RSS grew {} KiB over 120 MiB of transfers",
        rss_after.saturating_sub(rss_before)
    );
    let size = sh(&client, &id, "stat -c %s /root/big.bin").await;
    assert_eq!(text(&size.stdout).trim(), (20u64 << 20).to_string());

    // Directories.
    let made = client
        .make_dir(MakeDirRequest {
            sandbox_id: id.clone(),
            path: "/tmp/dtest".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned();
    assert_eq!(
        made.entry.as_option().map(|e| e.r#type.as_str()),
        Some("directory")
    );
    client
        .write_file(WriteFileRequest {
            sandbox_id: id.clone(),
            path: "/tmp/dtest/a.txt".into(),
            content: b"abc".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let list = client
        .list_dir(ListDirRequest {
            sandbox_id: id.clone(),
            path: "/tmp/dtest".into(),
            depth: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned();
    let entries: Vec<_> = list
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.r#type.as_str(), e.size))
        .collect();
    assert_eq!(entries, [("a.txt", "file", 3)]);
    client
        .remove_path(RemovePathRequest {
            sandbox_id: id.clone(),
            path: "/tmp/dtest".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let gone = client
        .list_dir(ListDirRequest {
            sandbox_id: id.clone(),
            path: "/tmp/dtest".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code, ErrorCode::NotFound, "{gone}");
    let missing = client
        .read_file(ReadFileRequest {
            sandbox_id: id.clone(),
            path: "/nope/missing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound, "{missing}");

    // PTY: start, resize, `stty size`, detach, reattach by tag, kill.
    let stream = client
        .pty_attach(PtyAttachRequest {
            sandbox_id: id.clone(),
            tag: "term".into(),
            cmd: "/bin/bash".into(),
            cols: 80,
            rows: 24,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut pty = pump!(stream);
    match next(&mut pty, "pty start").await.and_then(|m| m.event) {
        Some(pty_attach_response::Event::Started(s)) => {
            assert!(s.pid > 0);
            assert_eq!(s.tag, "term");
        }
        other => panic!("expected started, got {other:?}"),
    }
    client
        .pty_resize(PtyResizeRequest {
            sandbox_id: id.clone(),
            tag: "term".into(),
            cols: 123,
            rows: 45,
            ..Default::default()
        })
        .await
        .unwrap();
    let input = |data: &str| PtySendInputRequest {
        sandbox_id: id.clone(),
        tag: "term".into(),
        data: data.as_bytes().to_vec(),
        ..Default::default()
    };
    client.pty_send_input(input("stty size\n")).await.unwrap();
    pty_until(&mut pty, "45 123").await;
    drop(pty);
    let stream = client
        .pty_attach(PtyAttachRequest {
            sandbox_id: id.clone(),
            tag: "term".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut pty = pump!(stream);
    client
        .pty_send_input(input("echo re-$((40+2))\n"))
        .await
        .unwrap();
    pty_until(&mut pty, "re-42").await;
    client
        .pty_kill(PtyKillRequest {
            sandbox_id: id.clone(),
            tag: "term".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    pty_until(&mut pty, "<exited").await;

    // Background process: start, list, reattach, kill.
    let bg = client
        .start_background(StartBackgroundRequest {
            sandbox_id: id.clone(),
            cmd: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "i=0; while :; do echo tick$i; i=$((i+1)); sleep 0.2; done".into(),
            ],
            tag: "ticker".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned();
    assert!(bg.pid > 0);
    assert_eq!(bg.tag, "ticker");
    let procs = client
        .list_processes(ListProcessesRequest {
            sandbox_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned();
    let ticker = procs
        .processes
        .iter()
        .find(|p| p.tag == "ticker")
        .unwrap_or_else(|| panic!("ticker not listed: {:?}", procs.processes));
    assert_eq!((ticker.pid, ticker.cmd.as_str()), (bg.pid, "/bin/sh"));
    let stream = client
        .connect_process(ConnectProcessRequest {
            sandbox_id: id.clone(),
            selector: Some(connect_process_request::Selector::Tag("ticker".into())),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ticks = pump!(stream);
    let mut seen = String::new();
    while !seen.contains("tick") {
        match next(&mut ticks, "ticks").await.and_then(|m| m.event) {
            Some(connect_process_response::Event::Data(d)) => {
                if let Some(exec_stream_data::Output::Stdout(b)) = d.output {
                    seen.push_str(&text(&b));
                }
            }
            Some(_) => {}
            None => panic!("ticker stream ended: {seen}"),
        }
    }
    client
        .kill_process(KillProcessRequest {
            sandbox_id: id.clone(),
            selector: Some(kill_process_request::Selector::Tag("ticker".into())),
            signal: "SIGTERM".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, code, _) = exec_until_end(&mut ticks).await;
    assert_ne!(code, 0, "a killed process does not exit 0");

    // Ping, list, destroy; then the capsule is gone.
    client
        .ping_sandbox(PingSandboxRequest {
            sandbox_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let list = client
        .list_sandboxes(ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_owned();
    assert_eq!(list.sandboxes.len(), 1);
    assert_eq!(list.sandboxes[0].sandbox_id, id);
    assert_eq!(list.sandboxes[0].status, "running");
    assert_eq!(list.sandboxes[0].host_ip, host_ip);
    destroy(&client, &id).await;
    let err = client
        .exec(ExecRequest {
            sandbox_id: id.clone(),
            cmd: "true".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");
    agent.stop();
    common::assert_no_leftovers(&data_dir).await;
}

#[tokio::test]
async fn agent_rejects_bad_input_without_leaking() {
    let Some(fixture) = common::fixture().await else {
        return;
    };
    let _lock = common::serial().await;
    let data_dir = scratch(&fixture);
    // One slot, so exhaustion is cheap to reach.
    let mut agent = Agent::start(&data_dir, &["--max-capsules", "1"]);
    let client = agent.client();
    destroy_all(&client).await;

    let create_err = |request: CreateSandboxRequest| {
        let client = &client;
        async move {
            client
                .create_sandbox(request)
                .await
                .map(|_| ())
                .unwrap_err()
        }
    };
    let base = |template: &str| CreateSandboxRequest {
        sandbox_id: new_id(),
        template: template.into(),
        ..Default::default()
    };

    let err = create_err(base("nope")).await;
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");
    assert!(
        err.message
            .unwrap_or_default()
            .contains("wrenn image build nope")
    );
    for template in ["../x", "a/b", "../../etc"] {
        let err = create_err(base(template)).await;
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{template}: {err}");
    }
    for id in [
        "",
        "cl-short",
        "CL-0000000000000000000000000",
        "cl-../../../../../../etc/pas",
        "sb-0000000000000000000000000",
    ] {
        let mut request = base("minimal");
        request.sandbox_id = id.into();
        let err = create_err(request).await;
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{id:?}: {err}");
    }
    type Change = fn(&mut CreateSandboxRequest);
    let bounds: [(&str, Change); 7] = [
        ("vcpus 9", |r| r.vcpus = 9),
        ("vcpus -1", |r| r.vcpus = -1),
        ("memory 64", |r| r.memory_mb = 64),
        ("memory 20000", |r| r.memory_mb = 20_000),
        ("disk 100", |r| r.disk_size_mb = 100),
        ("disk 200000", |r| r.disk_size_mb = 200_000),
        ("timeout -5", |r| r.timeout_sec = -5),
    ];
    for (what, change) in bounds {
        let mut request = base("minimal");
        change(&mut request);
        let err = create_err(request).await;
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{what}: {err}");
    }
    let unknown = client
        .exec(ExecRequest {
            sandbox_id: new_id(),
            cmd: "true".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code, ErrorCode::NotFound, "{unknown}");
    let bad = client
        .exec(ExecRequest {
            sandbox_id: "../etc".into(),
            cmd: "true".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code, ErrorCode::InvalidArgument, "{bad}");
    let err = client
        .destroy_sandbox(DestroySandboxRequest {
            sandbox_id: new_id(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");

    // Connect error JSON with the code, over the JSON codec.
    let reply = reqwest::Client::new()
        .post(agent.url("CreateSandbox"))
        .header("content-type", "application/json")
        .body(r#"{"sandbox_id":"../x","template":"minimal"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    let body: serde_json::Value = serde_json::from_str(&reply.text().await.unwrap()).unwrap();
    assert_eq!(body["code"], "invalid_argument", "{body}");

    // Slots exhausted; a duplicate id; exec options out of range; then one create works.
    let first = new_id();
    create(&client, &first).await;
    let err = create_err(base("minimal")).await;
    assert_eq!(err.code, ErrorCode::ResourceExhausted, "{err}");
    let mut dup = base("minimal");
    dup.sandbox_id = first.clone();
    let err = create_err(dup).await;
    assert_eq!(err.code, ErrorCode::AlreadyExists, "{err}");
    let err = client
        .exec(ExecRequest {
            sandbox_id: first.clone(),
            cmd: "true".into(),
            timeout_sec: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    let err = client
        .exec(ExecRequest {
            sandbox_id: first.clone(),
            cmd: "true".into(),
            cwd: "/does/not/exist".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    // Terminate destroys every capsule and the agent exits by itself.
    client.terminate(TerminateRequest::default()).await.unwrap();
    let mut child = agent.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "agent still running after Terminate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "agent exited with {status}");
    common::assert_no_leftovers(&data_dir).await;
}

#[tokio::test]
async fn agent_survives_kill_9_and_readopts_capsules() {
    let Some(fixture) = common::fixture().await else {
        return;
    };
    let _lock = common::serial().await;
    let data_dir = scratch(&fixture);
    let mut agent = Agent::start(&data_dir, &[]);
    let client = agent.client();
    destroy_all(&client).await;

    let ids: Vec<String> = (0..10).map(|_| new_id()).collect();
    for id in &ids {
        create(&client, id).await;
    }
    // One more whose sandbox dies while the agent is down: it must be cleaned up, not adopted.
    let doomed = new_id();
    let doomed_ip = create(&client, &doomed).await.host_ip;
    let (netns_before, _) = common::wrenn_netns_and_links();
    assert_eq!(netns_before.len(), 11, "{netns_before:?}");

    agent.kill9();
    let out = Command::new("runsc")
        .arg("--root")
        .arg(data_dir.runsc_root())
        .args(["delete", "--force", &doomed])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut agent = Agent::start(&data_dir, &[]);
    let client = agent.client();
    let list = client
        .list_sandboxes(ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_owned();
    let listed: HashSet<_> = list
        .sandboxes
        .iter()
        .map(|s| s.sandbox_id.clone())
        .collect();
    assert_eq!(
        listed,
        ids.iter().cloned().collect::<HashSet<_>>(),
        "{}",
        agent.log_text()
    );
    assert!(list.sandboxes.iter().all(|s| s.status == "running"));
    assert!(
        list.sandboxes
            .iter()
            .all(|s| s.host_ip != doomed_ip || s.sandbox_id == doomed)
    );
    assert!(
        !data_dir.capsules().join(&doomed).exists(),
        "doomed capsule dir kept"
    );
    let (netns_after, links_after) = common::wrenn_netns_and_links();
    assert_eq!(netns_after.len(), 10, "{netns_after:?}");
    assert_eq!(links_after.len(), 10, "{links_after:?}");
    // The nft internet set names exactly the adopted capsules' veths.
    let set = Command::new("nft")
        .args(["list", "set", "inet", "wrenn", "internet"])
        .output()
        .unwrap();
    let set = text(&set.stdout);
    let mut in_set: Vec<String> = set
        .split('"')
        .filter(|s| s.starts_with("wrenn-veth-"))
        .map(str::to_owned)
        .collect();
    in_set.sort();
    let mut veths: Vec<String> = links_after.clone();
    veths.sort();
    assert_eq!(in_set, veths, "{set}");
    for id in &ids {
        let out = sh(&client, id, "echo $WRENN_SANDBOX_ID").await;
        assert_eq!(text(&out.stdout), format!("{id}\n"));
    }
    // A new capsule does not collide with the adopted ones.
    let extra = new_id();
    create(&client, &extra).await;
    assert_eq!(text(&sh(&client, &extra, "echo ok").await.stdout), "ok\n");
    for id in ids.iter().chain([&extra]) {
        destroy(&client, id).await;
    }
    agent.stop();
    common::assert_no_leftovers(&data_dir).await;
}

/// The contract with pause/resume (snapshot.rs): `state.json` status `paused` plus a checkpoint in
/// `snapshots/<id>/` survives a restart as a paused capsule; exec is refused with
/// FailedPrecondition; destroy removes the checkpoint. Pause itself is simulated here.
#[tokio::test]
async fn paused_capsule_survives_restart_and_refuses_exec() {
    let Some(fixture) = common::fixture().await else {
        return;
    };
    let _lock = common::serial().await;
    let data_dir = scratch(&fixture);
    let mut agent = Agent::start(&data_dir, &[]);
    let client = agent.client();
    destroy_all(&client).await;
    let id = new_id();
    create(&client, &id).await;
    agent.kill9();

    // "Pause" behind the agent's back: sandbox gone, checkpoint on disk, state says paused.
    let out = Command::new("runsc")
        .arg("--root")
        .arg(data_dir.runsc_root())
        .args(["delete", "--force", &id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let snapshot = data_dir.root().join("snapshots").join(&id);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(snapshot.join("checkpoint.img"), b"stand-in").unwrap();
    let state_path = data_dir.capsules().join(&id).join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["status"] = "paused".into();
    std::fs::write(&state_path, state.to_string()).unwrap();

    let mut agent = Agent::start(&data_dir, &[]);
    let client = agent.client();
    let list = client
        .list_sandboxes(ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_owned();
    assert_eq!(list.sandboxes.len(), 1, "{}", agent.log_text());
    assert_eq!(
        (
            list.sandboxes[0].sandbox_id.as_str(),
            list.sandboxes[0].status.as_str()
        ),
        (id.as_str(), "paused")
    );
    // Its released network was reclaimed as unowned.
    assert_eq!(common::wrenn_netns_and_links(), (vec![], vec![]));
    let err = client
        .exec(ExecRequest {
            sandbox_id: id.clone(),
            cmd: "true".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");
    let err = client
        .read_file(ReadFileRequest {
            sandbox_id: id.clone(),
            path: "/etc/hostname".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");
    destroy(&client, &id).await;
    assert!(!snapshot.exists(), "checkpoint kept after destroy");
    agent.stop();
    common::assert_no_leftovers(&data_dir).await;
}
