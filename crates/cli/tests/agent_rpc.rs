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

// ---- Pause/resume, snapshot templates, port proxy, TTL auto-pause, metrics (issue 3 §5–9) ----

async fn list(client: &Client) -> ListSandboxesResponse {
    client
        .list_sandboxes(ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_owned()
}

fn status_of(list: &ListSandboxesResponse, id: &str) -> Option<String> {
    list.sandboxes
        .iter()
        .find(|s| s.sandbox_id == id)
        .map(|s| s.status.clone())
}

async fn pause(client: &Client, id: &str) {
    let started = Instant::now();
    client
        .pause_sandbox(PauseSandboxRequest {
            sandbox_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pause {id}: {e}"));
    eprintln!("pause {id}: {:?}", started.elapsed());
}

async fn resume(client: &Client, id: &str) -> ResumeSandboxResponse {
    let started = Instant::now();
    let out = client
        .resume_sandbox(ResumeSandboxRequest {
            sandbox_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("resume {id}: {e}"))
        .into_owned();
    eprintln!("resume {id}: {:?}", started.elapsed());
    out
}

async fn start_bg(client: &Client, id: &str, tag: &str, script: &str) {
    client
        .start_background(StartBackgroundRequest {
            sandbox_id: id.to_owned(),
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            tag: tag.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("start {tag} in {id}: {e}"));
}

const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.2; done";

/// The counter's current value (0 before its first write).
async fn count(client: &Client, id: &str) -> u64 {
    let out = sh(client, id, "cat /tmp/count 2>/dev/null || echo 0").await;
    text(&out.stdout).trim().parse().unwrap_or(0)
}

/// Waits until the counter exceeds `above` (it is alive and counting).
async fn counter_passes(client: &Client, id: &str, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = count(client, id).await;
        if now > above {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: counter stuck at {now} (want > {above})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn tags(client: &Client, id: &str) -> Vec<String> {
    client
        .list_processes(ListProcessesRequest {
            sandbox_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("list processes {id}: {e}"))
        .into_owned()
        .processes
        .into_iter()
        .map(|p| p.tag)
        .collect()
}

/// Pause → resume keeps processes and files; a snapshot template starts 3 clones at once, each
/// running the snapshotted counter under its own id; the template is refused for deletion while
/// clones exist.
#[tokio::test]
async fn lifecycle_flow() {
    let Some(fixture) = common::fixture().await else {
        return;
    };
    let _lock = common::serial().await;
    let test_started = Instant::now();
    let data_dir = scratch(&fixture);
    let mut agent = Agent::start(&data_dir, &[]);
    let client = agent.client();
    destroy_all(&client).await;

    let id = new_id();
    create(&client, &id).await;
    assert_eq!(text(&sh(&client, &id, "echo hi").await.stdout), "hi\n");
    start_bg(&client, &id, "counter", COUNTER).await;
    let note = pattern(256 * 1024, 7);
    client
        .write_file(WriteFileRequest {
            sandbox_id: id.clone(),
            path: "/root/note.bin".into(),
            content: note.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = counter_passes(&client, &id, 3).await;

    pause(&client, &id).await;
    assert_eq!(
        status_of(&list(&client).await, &id).as_deref(),
        Some("paused")
    );
    let err = client
        .exec(ExecRequest {
            sandbox_id: id.clone(),
            cmd: "true".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");
    // Pausing twice is a precondition failure too.
    let err = client
        .pause_sandbox(PauseSandboxRequest {
            sandbox_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");

    let resumed = resume(&client, &id).await;
    assert_eq!(resumed.status, "running");
    assert!(!resumed.host_ip.is_empty());
    let after = count(&client, &id).await;
    assert!(
        after >= before && after < before + 100,
        "counter restarted or jumped: {before} before pause, {after} after resume"
    );
    counter_passes(&client, &id, after).await;
    let back = client
        .read_file(ReadFileRequest {
            sandbox_id: id.clone(),
            path: "/root/note.bin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned()
        .content;
    assert!(back == note, "file changed across pause/resume");

    // Snapshot template from the running capsule; it keeps running afterwards.
    let snap = format!("snap-{}", &new_id()[3..13]);
    let started = Instant::now();
    let made = client
        .create_snapshot(CreateSnapshotRequest {
            sandbox_id: id.clone(),
            name: snap.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("snapshot: {e}"))
        .into_owned();
    eprintln!(
        "snapshot: {:?}, {} bytes",
        started.elapsed(),
        made.size_bytes
    );
    assert_eq!(made.name, snap);
    assert!(made.size_bytes > 0);
    let source_count = count(&client, &id).await;
    counter_passes(&client, &id, source_count).await;
    let err = client
        .create_snapshot(CreateSnapshotRequest {
            sandbox_id: id.clone(),
            name: snap.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists, "{err}");
    let size = client
        .get_template_size(GetTemplateSizeRequest::default())
        .await
        .unwrap()
        .into_owned()
        .size_bytes;
    assert!(size > 50 << 20, "minimal template size {size}");

    // Three clones at once.
    let clones: Vec<String> = (0..3).map(|_| new_id()).collect();
    let started = Instant::now();
    let created = futures::future::join_all(clones.iter().map(|c| {
        let client = client.clone();
        let snap = snap.clone();
        async move {
            client
                .create_sandbox(CreateSandboxRequest {
                    sandbox_id: c.clone(),
                    template: snap,
                    // Ignored: a snapshot template's limits win.
                    vcpus: 2,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_owned())
        }
    }))
    .await;
    eprintln!("3 clones: {:?}", started.elapsed());
    for (c, result) in clones.iter().zip(created) {
        let response = result.unwrap_or_else(|e| panic!("clone {c}: {e}"));
        assert_eq!(response.status, "running");
    }
    let listed = list(&client).await;
    let mut ips = HashSet::new();
    for c in &clones {
        let info = listed
            .sandboxes
            .iter()
            .find(|s| &s.sandbox_id == c)
            .unwrap();
        assert_eq!(info.vcpus, 1, "template vcpus win");
        assert!(ips.insert(info.host_ip.clone()), "duplicate ip");
        assert!(
            tags(&client, c).await.iter().any(|t| t == "counter"),
            "{c}: counter process missing"
        );
        let start = count(&client, c).await;
        assert!(start >= before, "{c}: counter {start} < {before}");
        counter_passes(&client, c, start).await;
        let ident = sh(
            &client,
            c,
            "cat /run/wrenn/.WRENN_SANDBOX_ID; echo; echo $WRENN_SANDBOX_ID",
        )
        .await;
        assert_eq!(text(&ident.stdout), format!("{c}\n{c}\n"));
        let note_back = client
            .read_file(ReadFileRequest {
                sandbox_id: c.clone(),
                path: "/root/note.bin".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_owned()
            .content;
        assert!(note_back == note, "{c}: file differs from the snapshot");
    }

    let err = client
        .delete_snapshot(DeleteSnapshotRequest {
            name: snap.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");
    for c in clones.iter().chain([&id]) {
        destroy(&client, c).await;
    }
    client
        .delete_snapshot(DeleteSnapshotRequest {
            name: snap.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("delete snapshot: {e}"));
    assert!(
        !data_dir.images().join(&snap).exists(),
        "template files left"
    );
    let err = client
        .delete_snapshot(DeleteSnapshotRequest {
            name: snap.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");
    agent.stop();
    common::assert_no_leftovers(&data_dir).await;
    eprintln!("lifecycle_flow: {:?}", test_started.elapsed());
}

/// A stdlib-only WebSocket echo server (the minimal image has no websockets package).
const WS_ECHO: &str = r#"
import base64, hashlib, socket, struct, threading
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b
def handle(c):
    try:
        req = b""
        while b"\r\n\r\n" not in req:
            d = c.recv(4096)
            if not d:
                return
            req += d
        key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n")
               if l.lower().startswith(b"sec-websocket-key:")][0]
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while True:
            b0, b1 = exact(c, 2)
            op, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", exact(c, 2))[0]
            elif n == 127:
                n = struct.unpack(">Q", exact(c, 8))[0]
            mask = exact(c, 4) if b1 & 0x80 else b"\0\0\0\0"
            data = bytes(x ^ mask[i % 4] for i, x in enumerate(exact(c, n)))
            if op == 8:
                c.sendall(b"\x88\x00")
                return
            if op == 9:
                op = 10
            elif op not in (1, 2):
                continue
            head = bytes([0x80 | op])
            if n < 126:
                head += bytes([n])
            elif n < 65536:
                head += bytes([126]) + struct.pack(">H", n)
            else:
                head += bytes([127]) + struct.pack(">Q", n)
            c.sendall(head + data)
    except Exception:
        pass
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8765))
s.listen(16)
while True:
    conn, _ = s.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"#;

/// GETs through the proxy until the status is `want` (services take a moment to listen).
async fn proxied_until(http: &reqwest::Client, url: &str, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let last = match http.get(url).send().await {
            Ok(r) if r.status().as_u16() == want => return r.text().await.unwrap_or_default(),
            Ok(r) => format!("{}", r.status()),
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "{url}: want {want}, got {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `python3 -m http.server` and a WebSocket echo server answer through `/proxy/{id}/{port}/`,
/// 503 while paused, again after resume; non-canonical ports are 400.
#[tokio::test]
async fn proxy_flow() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let Some(fixture) = common::fixture().await else {
        return;
    };
    let _lock = common::serial().await;
    let test_started = Instant::now();
    let data_dir = scratch(&fixture);
    let mut agent = Agent::start(&data_dir, &[]);
    let client = agent.client();
    destroy_all(&client).await;
    let http = reqwest::Client::new();

    let id = new_id();
    create(&client, &id).await;
    sh(
        &client,
        &id,
        "mkdir -p /srv/www && echo hello > /srv/www/hello-proxy.txt",
    )
    .await;
    client
        .start_background(StartBackgroundRequest {
            sandbox_id: id.clone(),
            cmd: "python3".into(),
            args: vec!["-m".into(), "http.server".into(), "8000".into()],
            tag: "web".into(),
            cwd: "/srv/www".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .write_file(WriteFileRequest {
            sandbox_id: id.clone(),
            path: "/srv/ws_echo.py".into(),
            content: WS_ECHO.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    start_bg(&client, &id, "ws", "exec python3 /srv/ws_echo.py").await;

    let base = format!("http://{}/proxy/{id}", agent.addr);
    let listing = proxied_until(&http, &format!("{base}/8000/"), 200).await;
    assert!(listing.contains("hello-proxy.txt"), "{listing}");
    let file = proxied_until(&http, &format!("{base}/8000/hello-proxy.txt"), 200).await;
    assert_eq!(file, "hello\n");
    for bad in ["08000", "+80", "80abc"] {
        let status = http
            .get(format!("{base}/{bad}/"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 400, "port {bad}");
    }
    let unknown = http
        .get(format!("http://{}/proxy/{}/8000/", agent.addr, new_id()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(unknown.as_u16(), 404);

    let ws_url = format!("ws://{}/proxy/{id}/8765/", agent.addr);
    let echo = async |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        let (mut ws, _) = loop {
            match tokio_tungstenite::connect_async(ws_url.as_str()).await {
                Ok(ok) => break ok,
                Err(e) => {
                    assert!(Instant::now() < deadline, "websocket connect: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        ws.send(Message::text(what)).await.unwrap();
        let reply = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("websocket echo timed out")
            .expect("websocket closed")
            .expect("websocket error");
        assert_eq!(reply.into_text().unwrap().as_str(), what);
        let _ = ws.close(None).await;
    };
    echo("hello over the proxy").await;

    pause(&client, &id).await;
    let status = http
        .get(format!("{base}/8000/"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 503, "proxy while paused");
    resume(&client, &id).await;
    let listing = proxied_until(&http, &format!("{base}/8000/"), 200).await;
    assert!(listing.contains("hello-proxy.txt"), "{listing}");
    echo("hello after resume").await;

    destroy(&client, &id).await;
    let gone = http
        .get(format!("{base}/8000/"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(gone.as_u16(), 404);
    agent.stop();
    common::assert_no_leftovers(&data_dir).await;
    eprintln!("proxy_flow: {:?}", test_started.elapsed());
}

/// An idle capsule with `timeout_sec` 3 is auto-paused and reported once; one pinged every
/// second keeps running.
#[tokio::test]
async fn ttl_autopause() {
    let Some(fixture) = common::fixture().await else {
        return;
    };
    let _lock = common::serial().await;
    let test_started = Instant::now();
    let data_dir = scratch(&fixture);
    let mut agent = Agent::start(&data_dir, &[]);
    let client = agent.client();
    destroy_all(&client).await;

    let (idle, busy) = (new_id(), new_id());
    for id in [&idle, &busy] {
        client
            .create_sandbox(CreateSandboxRequest {
                sandbox_id: id.clone(),
                template: "minimal".into(),
                timeout_sec: 3,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("create {id}: {e}"));
    }
    let mut auto_paused = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        client
            .ping_sandbox(PingSandboxRequest {
                sandbox_id: busy.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let listed = list(&client).await;
        auto_paused.extend(listed.auto_paused_sandbox_ids.iter().cloned());
        if auto_paused.contains(&idle) && status_of(&listed, &idle).as_deref() == Some("paused") {
            assert_eq!(status_of(&listed, &busy).as_deref(), Some("running"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not auto-paused: {listed:?}\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("auto-paused after {:?}", test_started.elapsed());
    assert!(!auto_paused.contains(&busy), "pinged capsule was paused");
    // Reported once (drained on read).
    let again = list(&client).await;
    assert!(!again.auto_paused_sandbox_ids.contains(&idle), "{again:?}");
    // Still active a few more seconds later; a resume puts the idle one back to work.
    for _ in 0..4 {
        client
            .ping_sandbox(PingSandboxRequest {
                sandbox_id: busy.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        status_of(&list(&client).await, &busy).as_deref(),
        Some("running")
    );
    resume(&client, &idle).await;
    assert_eq!(
        text(&sh(&client, &idle, "echo back").await.stdout),
        "back\n"
    );
    for id in [&idle, &busy] {
        destroy(&client, id).await;
    }
    agent.stop();
    common::assert_no_leftovers(&data_dir).await;
    eprintln!("ttl_autopause: {:?}", test_started.elapsed());
}

/// GetSandboxMetrics returns plausible 1-s points; FlushSandboxMetrics returns and clears them.
#[tokio::test]
async fn metrics_rpc() {
    let Some(fixture) = common::fixture().await else {
        return;
    };
    let _lock = common::serial().await;
    let test_started = Instant::now();
    let data_dir = scratch(&fixture);
    let mut agent = Agent::start(&data_dir, &[]);
    let client = agent.client();
    destroy_all(&client).await;

    let id = new_id();
    create(&client, &id).await;
    // Some disk and CPU to see.
    sh(
        &client,
        &id,
        "head -c 8000000 /dev/urandom > /root/blob; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let get = |range: &str| {
        client.get_sandbox_metrics(GetSandboxMetricsRequest {
            sandbox_id: id.clone(),
            range: range.into(),
            ..Default::default()
        })
    };
    let points = get("10m").await.unwrap().into_owned().points;
    eprintln!("metrics: {points:?}");
    assert!(points.len() >= 2, "{points:?}");
    let now = wrenn_agent::capsule::unix_now();
    for (i, p) in points.iter().enumerate() {
        assert!((now - 30..=now + 1).contains(&p.timestamp_unix), "{p:?}");
        assert!((0.0..=100.5).contains(&p.cpu_pct), "{p:?}");
        assert!(
            (1 << 20..4 << 30).contains(&p.mem_bytes),
            "implausible memory {p:?}"
        );
        assert!(p.disk_bytes >= 0, "{p:?}");
        if i > 0 {
            assert!(p.timestamp_unix > points[i - 1].timestamp_unix);
        }
    }
    assert!(
        points.iter().any(|p| p.disk_bytes >= 4_000_000),
        "8 MB written but disk never above 4 MB: {points:?}"
    );
    assert!(!get("2h").await.unwrap().into_owned().points.is_empty());
    let err = get("7m").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    let err = client
        .get_sandbox_metrics(GetSandboxMetricsRequest {
            sandbox_id: new_id(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");

    let flushed = client
        .flush_sandbox_metrics(FlushSandboxMetricsRequest {
            sandbox_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned();
    assert!(flushed.points_10m.len() >= points.len(), "{flushed:?}");
    assert!(!flushed.points_2h.is_empty() && !flushed.points_24h.is_empty());
    let after = get("10m").await.unwrap().into_owned().points;
    assert!(after.len() <= 1, "not cleared by the flush: {after:?}");
    destroy(&client, &id).await;
    agent.stop();
    common::assert_no_leftovers(&data_dir).await;
    eprintln!("metrics_rpc: {:?}", test_started.elapsed());
}
