//! `process.Process` against a real envd, through the generated Rust Connect
//! client: output and end events, stream termination, exit codes, signals,
//! stdin, PTY, tags and reattach, List, errors, high volume, JSON codec,
//! users, keepalives, the boot command, reaping and shutdown.

mod common;

use base64::Engine;
use common::EnvdProcess;
use connectrpc::client::{CallOptions, ClientConfig, ClientTransport, HttpClient, ServerStream};
use connectrpc::{ConnectError, ErrorCode};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use wrenn_proto::process::process_event::data_event::Output;
use wrenn_proto::process::process_event::{EndEvent, Event};
use wrenn_proto::process::process_input::Input;
use wrenn_proto::process::process_selector::Selector;
use wrenn_proto::process::*;

type Client = ProcessClient<HttpClient>;
type Body = <HttpClient as ClientTransport>::ResponseBody;

const TIMEOUT: Duration = Duration::from_secs(30);

fn client_for(base_url: &str) -> Client {
    let uri = base_url.parse().expect("base url");
    ProcessClient::new(HttpClient::plaintext(), ClientConfig::new(uri))
}

fn client(envd: &EnvdProcess) -> Client {
    client_for(&envd.base_url())
}

fn cfg(cmd: &str, args: &[&str]) -> ProcessConfig {
    ProcessConfig {
        cmd: cmd.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        ..Default::default()
    }
}

fn start_req(cmd: &str, args: &[&str]) -> StartRequest {
    StartRequest {
        process: cfg(cmd, args).into(),
        ..Default::default()
    }
}

fn sh(script: &str) -> StartRequest {
    start_req("/bin/sh", &["-c", script])
}

fn by_pid(pid: u32) -> ProcessSelector {
    ProcessSelector {
        selector: Some(Selector::Pid(pid)),
        ..Default::default()
    }
}

fn by_tag(tag: &str) -> ProcessSelector {
    ProcessSelector {
        selector: Some(Selector::Tag(tag.to_owned())),
        ..Default::default()
    }
}

fn as_user(user: &str) -> CallOptions {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
    CallOptions::default().with_header("authorization", format!("Basic {token}"))
}

fn stdin_input(data: &[u8]) -> ProcessInput {
    ProcessInput {
        input: Some(Input::Stdin(data.to_vec())),
        ..Default::default()
    }
}

fn pty_input(data: &[u8]) -> ProcessInput {
    ProcessInput {
        input: Some(Input::Pty(data.to_vec())),
        ..Default::default()
    }
}

fn pty_of(cols: u32, rows: u32) -> PTY {
    PTY {
        size: pty::Size {
            cols,
            rows,
            ..Default::default()
        }
        .into(),
        ..Default::default()
    }
}

/// Either kind of process event stream.
enum Events {
    Start(ServerStream<Body, StartResponseView<'static>>),
    Connect(ServerStream<Body, ConnectResponseView<'static>>),
}

impl Events {
    async fn next(&mut self) -> Result<Option<ProcessEvent>, ConnectError> {
        let event = match self {
            Events::Start(s) => s.message().await?.map(|m| m.to_owned_message().event),
            Events::Connect(s) => s.message().await?.map(|m| m.to_owned_message().event),
        };
        Ok(event.map(|e| e.into_option().expect("response carries an event")))
    }

    async fn next_timeout(&mut self) -> Result<Option<ProcessEvent>, ConnectError> {
        tokio::time::timeout(TIMEOUT, self.next())
            .await
            .expect("timed out waiting for a process event")
    }
}

async fn start(c: &Client, req: StartRequest) -> Events {
    start_with(c, req, CallOptions::default()).await
}

async fn start_with(c: &Client, req: StartRequest, opts: CallOptions) -> Events {
    Events::Start(c.start_with_options(req, opts).await.expect("start"))
}

async fn connect(c: &Client, sel: ProcessSelector) -> Events {
    let req = ConnectRequest {
        process: sel.into(),
        ..Default::default()
    };
    Events::Connect(c.connect(req).await.expect("connect"))
}

/// Reads the start event and returns the pid.
async fn started(events: &mut Events) -> u32 {
    match events
        .next_timeout()
        .await
        .expect("stream error")
        .map(|e| e.event)
    {
        Some(Some(Event::Start(s))) => {
            assert!(s.pid > 0);
            s.pid
        }
        other => panic!("expected a start event first, got {other:?}"),
    }
}

#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    pty: Vec<u8>,
    keepalives: usize,
    end: Option<EndEvent>,
}

impl Outcome {
    fn end(&self) -> &EndEvent {
        self.end.as_ref().expect("end event")
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Reads events after the start event until the stream closes, checking that
/// nothing follows the end event and that the stream does close.
async fn drain(events: &mut Events, pid: u32) -> Outcome {
    let mut out = Outcome::default();
    loop {
        let event = events.next_timeout().await.expect("stream error");
        let Some(event) = event else {
            assert!(
                out.end.is_some(),
                "pid {pid}: stream closed without an end event"
            );
            return out;
        };
        assert!(
            out.end.is_none(),
            "pid {pid}: event after the end event: {event:?}"
        );
        match event.event {
            Some(Event::Data(d)) => match d.output {
                Some(Output::Stdout(b)) => out.stdout.extend_from_slice(&b),
                Some(Output::Stderr(b)) => out.stderr.extend_from_slice(&b),
                Some(Output::Pty(b)) => out.pty.extend_from_slice(&b),
                None => panic!("empty data event"),
            },
            Some(Event::End(e)) => out.end = Some(*e),
            Some(Event::Keepalive(_)) => out.keepalives += 1,
            other => panic!("unexpected event {other:?}"),
        }
    }
}

async fn run(c: &Client, req: StartRequest) -> Outcome {
    let mut events = start(c, req).await;
    let pid = started(&mut events).await;
    drain(&mut events, pid).await
}

/// Forwards a stream's events to a channel so a test can talk to the
/// process while reading it.
fn spawn_reader(mut events: Events) -> mpsc::UnboundedReceiver<ProcessEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(e)) = events.next().await {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    rx
}

/// Accumulates output bytes (any stream) until `needle` shows up.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<ProcessEvent>,
    seen: &mut Vec<u8>,
    needle: &str,
) {
    let deadline = Instant::now() + TIMEOUT;
    while !String::from_utf8_lossy(seen).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} in output: {:?}",
                    String::from_utf8_lossy(seen)
                )
            })
            .unwrap_or_else(|| {
                panic!(
                    "stream ended before {needle:?}: {:?}",
                    String::from_utf8_lossy(seen)
                )
            });
        if let Some(Event::Data(d)) = event.event {
            match d.output {
                Some(Output::Stdout(b) | Output::Stderr(b) | Output::Pty(b)) => {
                    seen.extend_from_slice(&b)
                }
                None => {}
            }
        }
    }
}

async fn wait_for_end(rx: &mut mpsc::UnboundedReceiver<ProcessEvent>) -> EndEvent {
    loop {
        let event = tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .expect("timed out waiting for the end event")
            .expect("stream ended without an end event");
        if let Some(Event::End(e)) = event.event {
            return *e;
        }
    }
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, ConnectError>, code: ErrorCode) {
    match result {
        Err(e) => assert_eq!(e.code, code, "unexpected error: {e:?}"),
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
    }
}

/// A server-stream error may surface on the call or on the first message.
async fn assert_stream_code(events: Result<Events, ConnectError>, code: ErrorCode) {
    match events {
        Err(e) => assert_eq!(e.code, code, "unexpected error: {e:?}"),
        Ok(mut ev) => assert_code(ev.next().await, code),
    }
}

async fn send_signal(c: &Client, sel: ProcessSelector, signal: Signal) -> Result<(), ConnectError> {
    c.send_signal(SendSignalRequest {
        process: sel.into(),
        signal: buffa::EnumValue::Known(signal),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

async fn send_input(
    c: &Client,
    sel: ProcessSelector,
    input: ProcessInput,
) -> Result<(), ConnectError> {
    c.send_input(SendInputRequest {
        process: sel.into(),
        input: input.into(),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

async fn close_stdin(c: &Client, sel: ProcessSelector) -> Result<(), ConnectError> {
    c.close_stdin(CloseStdinRequest {
        process: sel.into(),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

async fn resize(
    c: &Client,
    sel: ProcessSelector,
    cols: u32,
    rows: u32,
) -> Result<(), ConnectError> {
    c.update(UpdateRequest {
        process: sel.into(),
        pty: pty_of(cols, rows).into(),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

async fn list(c: &Client) -> Vec<ProcessInfo> {
    c.list(ListRequest::default())
        .await
        .expect("list")
        .into_owned()
        .processes
}

fn is_root() -> bool {
    // SAFETY: trivial syscall.
    unsafe { libc::geteuid() == 0 }
}

/// Creates the `wrenn-test` account once (root only).
fn ensure_test_user() -> bool {
    static CREATED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CREATED.get_or_init(|| {
        let exists = |name: &str| {
            Command::new("id")
                .arg(name)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !exists("wrenn-test") {
            let _ = Command::new("useradd")
                .args(["--create-home", "--shell", "/bin/sh", "wrenn-test"])
                .status();
        }
        exists("wrenn-test")
    })
}

fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[tokio::test]
async fn echo_streams_start_data_end_and_closes() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    // `echo` is found through the process's PATH, not an absolute path.
    let out = run(&c, start_req("echo", &["hello", "world"])).await;
    assert_eq!(out.stdout(), "hello world\n");
    let end = out.end();
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (0, true, "exit status 0")
    );
    assert_eq!(end.error, None);

    let out = run(&c, sh("echo out; echo err >&2")).await;
    assert_eq!(out.stdout(), "out\n");
    assert_eq!(out.stderr, b"err\n");

    // With a call timeout, as the e2b SDK always sends one.
    let opts = CallOptions::default().with_timeout(Duration::from_secs(60));
    let mut events = start_with(&c, start_req("echo", &["timed"]), opts).await;
    let pid = started(&mut events).await;
    let out = drain(&mut events, pid).await;
    assert_eq!((out.stdout().as_str(), out.end().exit_code), ("timed\n", 0));
}

#[tokio::test]
async fn children_inherit_only_stdio() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    // fd 3 is the directory `ls` itself opens; nothing of envd's leaks.
    let out = run(&c, start_req("ls", &["/proc/self/fd"])).await;
    assert_eq!(out.stdout(), "0\n1\n2\n3\n");
    let mut req = start_req("ls", &["/proc/self/fd"]);
    req.pty = pty_of(80, 24).into();
    let out = run(&c, req).await;
    assert_eq!(
        String::from_utf8_lossy(&out.pty)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
}

/// Exercises the reaper under concurrency: every status reaches its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_processes_all_end() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let runs = (0..100).map(|i| {
        let c = c.clone();
        async move {
            run(&c, sh(&format!("exit {}", i % 7)))
                .await
                .end()
                .exit_code
        }
    });
    let codes = futures::future::join_all(runs).await;
    assert_eq!(codes, (0..100).map(|i| i % 7).collect::<Vec<_>>());
}

#[tokio::test]
async fn exit_code_is_reported() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let out = run(&c, sh("exit 7")).await;
    let end = out.end();
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (7, true, "exit status 7")
    );
}

#[tokio::test]
async fn background_child_does_not_keep_the_stream_open() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let t = Instant::now();
    // The backgrounded sleep inherits stdout and stderr and outlives sh.
    let out = run(&c, sh("sleep 5 & echo started")).await;
    assert_eq!(out.stdout(), "started\n");
    assert_eq!(out.end().exit_code, 0);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stream took {:?} to end",
        t.elapsed()
    );
}

#[tokio::test]
async fn signals_end_processes_with_exited_false() {
    let envd = EnvdProcess::start();
    let c = client(&envd);

    let mut events = start(&c, start_req("sleep", &["30"])).await;
    let pid = started(&mut events).await;
    send_signal(&c, by_pid(pid), Signal::SIGNAL_SIGKILL)
        .await
        .expect("kill");
    let out = drain(&mut events, pid).await;
    let end = out.end();
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (-1, false, "signal: killed")
    );
    // Gone now: signalling it again is NotFound (the e2b SDK reads that as "already dead").
    assert_code(
        send_signal(&c, by_pid(pid), Signal::SIGNAL_SIGKILL).await,
        ErrorCode::NotFound,
    );

    let mut req = start_req("sleep", &["30"]);
    req.tag = Some("term-me".into());
    let mut events = start(&c, req).await;
    let pid = started(&mut events).await;
    send_signal(&c, by_tag("term-me"), Signal::SIGNAL_SIGTERM)
        .await
        .expect("term");
    let out = drain(&mut events, pid).await;
    assert_eq!(out.end().status, "signal: terminated");
    assert!(!out.end().exited);

    let mut events = start(&c, start_req("sleep", &["30"])).await;
    let pid = started(&mut events).await;
    assert_code(
        send_signal(&c, by_pid(pid), Signal::SIGNAL_UNSPECIFIED).await,
        ErrorCode::InvalidArgument,
    );
    send_signal(&c, by_pid(pid), Signal::SIGNAL_SIGKILL)
        .await
        .expect("kill");
    drain(&mut events, pid).await;
}

#[tokio::test]
async fn stdin_streams_and_closes() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    // `stdin` absent means enabled.
    let mut events = start(&c, start_req("cat", &[])).await;
    let pid = started(&mut events).await;
    let reader = tokio::spawn(async move { drain(&mut events, pid).await });

    let msgs = vec![
        StreamInputRequest {
            event: Some(stream_input_request::Event::Start(Box::new(
                stream_input_request::StartEvent {
                    process: by_pid(pid).into(),
                    ..Default::default()
                },
            ))),
            ..Default::default()
        },
        StreamInputRequest {
            event: Some(stream_input_request::Event::Data(Box::new(
                stream_input_request::DataEvent {
                    input: stdin_input(b"abc").into(),
                    ..Default::default()
                },
            ))),
            ..Default::default()
        },
        StreamInputRequest {
            event: Some(stream_input_request::Event::Keepalive(Box::default())),
            ..Default::default()
        },
        StreamInputRequest {
            event: Some(stream_input_request::Event::Data(Box::new(
                stream_input_request::DataEvent {
                    input: stdin_input(b"def").into(),
                    ..Default::default()
                },
            ))),
            ..Default::default()
        },
    ];
    c.stream_input(futures::stream::iter(msgs))
        .await
        .expect("stream input");
    send_input(&c, by_pid(pid), stdin_input(b"ghi"))
        .await
        .expect("send input");
    close_stdin(&c, by_pid(pid)).await.expect("close stdin");
    let out = reader.await.expect("reader");
    assert_eq!(out.stdout(), "abcdefghi");
    assert_eq!(out.end().exit_code, 0);
}

#[tokio::test]
async fn stdin_disabled_is_dev_null() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let mut req = start_req("cat", &[]);
    req.stdin = Some(false);
    let out = run(&c, req).await;
    assert_eq!((out.stdout.len(), out.end().exit_code), (0, 0));

    let mut req = start_req("sleep", &["30"]);
    req.stdin = Some(false);
    let mut events = start(&c, req).await;
    let pid = started(&mut events).await;
    assert_code(
        send_input(&c, by_pid(pid), stdin_input(b"x")).await,
        ErrorCode::FailedPrecondition,
    );
    assert_code(
        close_stdin(&c, by_pid(pid)).await,
        ErrorCode::FailedPrecondition,
    );
    send_signal(&c, by_pid(pid), Signal::SIGNAL_SIGKILL)
        .await
        .expect("kill");
    drain(&mut events, pid).await;
}

#[tokio::test]
async fn pty_output_resize_and_input() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let mut req = start_req("/bin/sh", &[]);
    req.pty = pty_of(80, 24).into();
    let mut events = start(&c, req).await;
    let pid = started(&mut events).await;
    let mut rx = spawn_reader(events);
    let mut seen = Vec::new();

    send_input(&c, by_pid(pid), pty_input(b"stty size\n"))
        .await
        .expect("input");
    wait_for(&mut rx, &mut seen, "24 80").await;

    resize(&c, by_pid(pid), 100, 30).await.expect("resize");
    seen.clear();
    send_input(&c, by_pid(pid), pty_input(b"stty size\n"))
        .await
        .expect("input");
    wait_for(&mut rx, &mut seen, "30 100").await;

    // /dev/tty opens only with a controlling terminal; $((…)) keeps the echoed
    // command line from matching.
    seen.clear();
    send_input(
        &c,
        by_pid(pid),
        pty_input(b"sh -c 'exec 3</dev/tty && echo ctty-$((40+2))'\n"),
    )
    .await
    .expect("input");
    wait_for(&mut rx, &mut seen, "ctty-42").await;

    assert_code(
        close_stdin(&c, by_pid(pid)).await,
        ErrorCode::FailedPrecondition,
    );
    // Stdin-kind input goes to the terminal too.
    send_input(&c, by_pid(pid), stdin_input(b"exit 3\n"))
        .await
        .expect("input");
    let end = wait_for_end(&mut rx).await;
    assert_eq!((end.exit_code, end.exited), (3, true));
}

#[tokio::test]
async fn pty_output_is_tagged_pty() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let mut req = sh("printf 'tty:'; tty");
    req.pty = pty_of(0, 0).into(); // unset size → 80x24
    let out = run(&c, req).await;
    let text = String::from_utf8_lossy(&out.pty);
    assert!(text.starts_with("tty:/dev/pts/"), "pty output: {text:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    assert_eq!(out.end().exit_code, 0);
}

#[tokio::test]
async fn tags_and_connect_reattach_to_running_and_finished() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let mut req = start_req("cat", &[]);
    req.tag = Some("reattach".into());
    let mut events = start(&c, req).await;
    let pid = started(&mut events).await;
    // Dropping the Start stream does not stop the process.
    drop(events);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(list(&c).await.iter().any(|p| p.pid == pid));

    let mut by_tag_events = connect(&c, by_tag("reattach")).await;
    assert_eq!(started(&mut by_tag_events).await, pid);
    let mut by_pid_events = connect(&c, by_pid(pid)).await;
    assert_eq!(started(&mut by_pid_events).await, pid);
    let (mut a, mut b) = (spawn_reader(by_tag_events), spawn_reader(by_pid_events));

    send_input(&c, by_pid(pid), stdin_input(b"ping\n"))
        .await
        .expect("input");
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    wait_for(&mut a, &mut seen_a, "ping\n").await;
    wait_for(&mut b, &mut seen_b, "ping\n").await;

    close_stdin(&c, by_tag("reattach"))
        .await
        .expect("close stdin");
    assert_eq!(wait_for_end(&mut a).await.exit_code, 0);
    assert_eq!(wait_for_end(&mut b).await.exit_code, 0);
    // Both streams close after the end.
    assert!(
        tokio::time::timeout(TIMEOUT, a.recv())
            .await
            .expect("closed")
            .is_none()
    );
    assert!(
        tokio::time::timeout(TIMEOUT, b.recv())
            .await
            .expect("closed")
            .is_none()
    );

    // Finished: only start and the cached end, then the stream closes.
    for sel in [by_tag("reattach"), by_pid(pid)] {
        let mut events = connect(&c, sel).await;
        assert_eq!(started(&mut events).await, pid);
        let out = drain(&mut events, pid).await;
        assert!(out.stdout.is_empty());
        assert_eq!(
            (out.end().exit_code, out.end().status.as_str()),
            (0, "exit status 0")
        );
    }
    assert!(!list(&c).await.iter().any(|p| p.pid == pid));
}

#[tokio::test]
async fn list_reports_config_and_tag() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let mut req = start_req("sleep", &["30"]);
    req.tag = Some("lister".into());
    let mut config = cfg("sleep", &["30"]);
    config.envs.insert("A".into(), "1".into());
    config.cwd = Some("/tmp".into());
    req.process = config.into();
    let mut events = start(&c, req).await;
    let pid = started(&mut events).await;

    let procs = list(&c).await;
    let info = procs.iter().find(|p| p.pid == pid).expect("listed");
    assert_eq!(info.tag.as_deref(), Some("lister"));
    let config = info.config.as_option().expect("config");
    assert_eq!(config.cmd, "sleep");
    assert_eq!(config.args, vec!["30".to_owned()]);
    assert_eq!(config.envs.get("A").map(String::as_str), Some("1"));
    assert_eq!(config.cwd.as_deref(), Some("/tmp"));

    send_signal(&c, by_pid(pid), Signal::SIGNAL_SIGKILL)
        .await
        .expect("kill");
    drain(&mut events, pid).await;
    assert!(!list(&c).await.iter().any(|p| p.pid == pid));
}

#[tokio::test]
async fn errors_map_to_connect_codes() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let missing = 0x7fff_fff0;

    let connect_req = |sel: ProcessSelector| ConnectRequest {
        process: sel.into(),
        ..Default::default()
    };
    assert_stream_code(
        c.connect(connect_req(by_pid(missing)))
            .await
            .map(Events::Connect),
        ErrorCode::NotFound,
    )
    .await;
    assert_stream_code(
        c.connect(connect_req(by_tag("nope")))
            .await
            .map(Events::Connect),
        ErrorCode::NotFound,
    )
    .await;
    assert_code(
        send_signal(&c, by_pid(missing), Signal::SIGNAL_SIGKILL).await,
        ErrorCode::NotFound,
    );
    assert_code(
        send_input(&c, by_tag("nope"), stdin_input(b"x")).await,
        ErrorCode::NotFound,
    );
    assert_code(close_stdin(&c, by_pid(missing)).await, ErrorCode::NotFound);
    assert_code(
        resize(&c, by_pid(missing), 10, 10).await,
        ErrorCode::NotFound,
    );
    let start_unknown = StreamInputRequest {
        event: Some(stream_input_request::Event::Start(Box::new(
            stream_input_request::StartEvent {
                process: by_pid(missing).into(),
                ..Default::default()
            },
        ))),
        ..Default::default()
    };
    assert_code(
        c.stream_input(futures::stream::iter(vec![start_unknown]))
            .await,
        ErrorCode::NotFound,
    );
    let data_first = StreamInputRequest {
        event: Some(stream_input_request::Event::Data(Box::new(
            stream_input_request::DataEvent {
                input: stdin_input(b"x").into(),
                ..Default::default()
            },
        ))),
        ..Default::default()
    };
    assert_code(
        c.stream_input(futures::stream::iter(vec![data_first]))
            .await,
        ErrorCode::InvalidArgument,
    );

    // Bad start requests.
    let start_err = |req: StartRequest, opts: CallOptions| {
        let c = &c;
        async move { c.start_with_options(req, opts).await.map(Events::Start) }
    };
    let mut req = start_req("pwd", &[]);
    req.process.get_or_insert_default().cwd = Some("/does/not/exist".into());
    assert_stream_code(
        start_err(req, CallOptions::default()).await,
        ErrorCode::InvalidArgument,
    )
    .await;
    assert_stream_code(
        start_err(start_req("", &[]), CallOptions::default()).await,
        ErrorCode::InvalidArgument,
    )
    .await;
    assert_stream_code(
        start_err(start_req("/no/such/program", &[]), CallOptions::default()).await,
        ErrorCode::InvalidArgument,
    )
    .await;
    assert_stream_code(
        start_err(start_req("true", &[]), as_user("no-such-user-xyz")).await,
        ErrorCode::InvalidArgument,
    )
    .await;

    // PTY-only operations on a pipe process.
    let mut events = start(&c, start_req("sleep", &["30"])).await;
    let pid = started(&mut events).await;
    assert_code(
        send_input(&c, by_pid(pid), pty_input(b"x")).await,
        ErrorCode::FailedPrecondition,
    );
    assert_code(
        resize(&c, by_pid(pid), 100, 30).await,
        ErrorCode::FailedPrecondition,
    );
    send_signal(&c, by_pid(pid), Signal::SIGNAL_SIGKILL)
        .await
        .expect("kill");
    drain(&mut events, pid).await;
}

/// `yes | head -c 50M` must arrive complete and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_arrive_complete_and_in_order() {
    const TOTAL: usize = 50 * 1024 * 1024;
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let mut events = start(&c, sh(&format!("yes | head -c {TOTAL}"))).await;
    let pid = started(&mut events).await;
    let mut offset = 0usize;
    let mut end = None;
    while let Some(event) = events.next_timeout().await.expect("stream error") {
        match event.event {
            Some(Event::Data(d)) => {
                let Some(Output::Stdout(bytes)) = d.output else {
                    panic!("unexpected output kind");
                };
                for (i, b) in bytes.iter().enumerate() {
                    let want = if (offset + i).is_multiple_of(2) {
                        b'y'
                    } else {
                        b'\n'
                    };
                    assert_eq!(*b, want, "byte {} out of order", offset + i);
                }
                offset += bytes.len();
            }
            Some(Event::End(e)) => end = Some(*e),
            Some(Event::Keepalive(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(offset, TOTAL, "pid {pid}: bytes received");
    assert_eq!(end.expect("end event").exit_code, 0);
}

/// A reader slower than the process still gets every byte.
#[tokio::test]
async fn slow_reader_loses_nothing() {
    const TOTAL: usize = 4 * 1024 * 1024;
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let mut events = start(&c, sh(&format!("head -c {TOTAL} /dev/zero"))).await;
    let pid = started(&mut events).await;
    let mut got = 0usize;
    while let Some(event) = events.next_timeout().await.expect("stream error") {
        if let Some(Event::Data(d)) = event.event
            && let Some(Output::Stdout(b)) = d.output
        {
            got += b.len();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(got, TOTAL, "pid {pid}");
}

#[tokio::test]
async fn json_codec_works() {
    let envd = EnvdProcess::start();
    let uri = envd.base_url().parse().expect("uri");
    let json = ProcessClient::new(HttpClient::plaintext(), ClientConfig::new(uri).json());
    let out = run(&json, start_req("echo", &["json"])).await;
    assert_eq!(out.stdout(), "json\n");
    assert_eq!(out.end().exit_code, 0);

    let c = client(&envd);
    let mut req = start_req("sleep", &["30"]);
    req.tag = Some("json-list".into());
    let mut events = start(&c, req).await;
    let pid = started(&mut events).await;

    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest");
    let resp = http
        .post(format!("{}/process.Process/List", envd.base_url()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("POST List");
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value =
        serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    let procs = body["processes"].as_array().expect("processes array");
    let p = procs.iter().find(|p| p["pid"] == pid).expect("listed");
    assert_eq!(p["tag"], "json-list");
    assert_eq!(p["config"]["cmd"], "sleep");

    // Errors come back as Connect JSON errors with the right HTTP status.
    let resp = http
        .post(format!("{}/process.Process/SendSignal", envd.base_url()))
        .header("content-type", "application/json")
        .body(r#"{"process":{"pid":2147483632},"signal":"SIGNAL_SIGKILL"}"#)
        .send()
        .await
        .expect("POST SendSignal");
    assert_eq!(resp.status().as_u16(), 404);
    let body: serde_json::Value =
        serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(body["code"], "not_found");

    let resp = http
        .post(format!("{}/process.Process/SendSignal", envd.base_url()))
        .header("content-type", "application/json")
        .body(r#"{"process":{"tag":"json-list"},"signal":"SIGNAL_SIGKILL"}"#)
        .send()
        .await
        .expect("POST SendSignal");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(drain(&mut events, pid).await.end().status, "signal: killed");

    // Malformed JSON is a clean error, not a hang or a crash.
    let resp = http
        .post(format!("{}/process.Process/List", envd.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST List");
    assert!(resp.status().is_client_error(), "status {}", resp.status());
}

#[tokio::test]
async fn runs_as_requested_user_with_clean_env_and_cwd() {
    if !is_root() {
        eprintln!("skipping: switching users needs envd to run as root");
        return;
    }
    assert!(ensure_test_user(), "could not create user wrenn-test");
    let envd = EnvdProcess::start();
    let c = client(&envd);

    let mut req = start_req("env", &[]);
    req.process
        .get_or_insert_default()
        .envs
        .insert("FOO".into(), "bar".into());
    req.process
        .get_or_insert_default()
        .envs
        .insert("USER".into(), "overridden".into());
    let mut events = start_with(&c, req, as_user("wrenn-test")).await;
    let pid = started(&mut events).await;
    let out = drain(&mut events, pid).await;
    let env: HashMap<String, String> = out
        .stdout()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let mut keys: Vec<&str> = env.keys().map(String::as_str).collect();
    keys.sort_unstable();
    // envd passes on only its own locale (the agent starts it with LANG=C.UTF-8).
    let lang = std::env::var("LANG").ok();
    let mut expected = vec!["FOO", "HOME", "LOGNAME", "PATH", "SHELL", "USER"];
    if lang.is_some() {
        expected.push("LANG");
        expected.sort_unstable();
    }
    assert_eq!(keys, expected, "env: {env:?}");
    assert_eq!(env.get("LANG"), lang.as_ref());
    assert_eq!(env["HOME"], "/home/wrenn-test");
    assert_eq!(env["LOGNAME"], "wrenn-test");
    assert_eq!(env["USER"], "overridden", "request envs win");
    assert_eq!(env["FOO"], "bar");

    // uid, gid and supplementary groups match the account; cwd defaults to home.
    let expected_groups = String::from_utf8(
        Command::new("id")
            .args(["-G", "wrenn-test"])
            .output()
            .expect("id")
            .stdout,
    )
    .expect("utf-8");
    let mut events = start_with(&c, sh("id -u; id -g; id -G; pwd"), as_user("wrenn-test")).await;
    let pid = started(&mut events).await;
    let out = drain(&mut events, pid).await;
    let lines: Vec<String> = out.stdout().lines().map(str::to_owned).collect();
    let uid = String::from_utf8(
        Command::new("id")
            .args(["-u", "wrenn-test"])
            .output()
            .expect("id")
            .stdout,
    )
    .expect("utf-8");
    assert_eq!(lines[0], uid.trim());
    assert_eq!(lines[2], expected_groups.trim());
    assert_eq!(lines[3], "/home/wrenn-test");

    // `~` and relative cwds resolve against the user's home.
    std::fs::create_dir_all("/home/wrenn-test/sub").expect("mkdir");
    for (cwd, want) in [
        ("~", "/home/wrenn-test"),
        ("sub", "/home/wrenn-test/sub"),
        ("~/sub", "/home/wrenn-test/sub"),
    ] {
        let mut req = start_req("pwd", &[]);
        req.process.get_or_insert_default().cwd = Some(cwd.into());
        let mut events = start_with(&c, req, as_user("wrenn-test")).await;
        let pid = started(&mut events).await;
        assert_eq!(
            drain(&mut events, pid).await.stdout().trim(),
            want,
            "cwd {cwd}"
        );
    }
    // A directory the user cannot enter is refused.
    let private = std::env::temp_dir().join(format!("wrenn-test-private-{}", std::process::id()));
    std::fs::create_dir_all(&private).expect("mkdir");
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let mut req = start_req("pwd", &[]);
    req.process.get_or_insert_default().cwd = Some(private.to_string_lossy().into_owned());
    assert_stream_code(
        c.start_with_options(req, as_user("wrenn-test"))
            .await
            .map(Events::Start),
        ErrorCode::PermissionDenied,
    )
    .await;
    let _ = std::fs::remove_dir(&private);

    // No user named: the default user (root).
    let out = run(&c, start_req("id", &["-un"])).await;
    assert_eq!(out.stdout().trim(), "root");
}

/// envd started unprivileged (as `nobody`): processes run as envd's own user,
/// and asking for another user is PermissionDenied.
#[tokio::test]
async fn unprivileged_envd_cannot_switch_users() {
    if !is_root() {
        eprintln!("skipping: needs root to start envd as another user");
        return;
    }
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_envd"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn setpriv envd");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listen line");
    let _guard = Kill(child);
    let port = line.trim().rsplit(':').next().expect("port").to_owned();
    let c = client_for(&format!("http://127.0.0.1:{port}"));

    let out = run(&c, start_req("id", &["-u"])).await;
    assert_eq!(out.stdout().trim(), "65534");
    assert_stream_code(
        c.start_with_options(start_req("id", &[]), as_user("root"))
            .await
            .map(Events::Start),
        ErrorCode::PermissionDenied,
    )
    .await;
    // Naming envd's own user is fine.
    let nobody = String::from_utf8(
        Command::new("id")
            .args(["-un", "65534"])
            .output()
            .expect("id")
            .stdout,
    )
    .expect("utf-8");
    let mut events = start_with(&c, start_req("id", &["-u"]), as_user(nobody.trim())).await;
    let pid = started(&mut events).await;
    assert_eq!(drain(&mut events, pid).await.stdout().trim(), "65534");
}

/// E2B semantics: the Start call's timeout is the process's lifetime.
#[tokio::test]
async fn start_timeout_kills_the_process() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let mut req = start_req("sleep", &["30"]);
    req.tag = Some("deadline".into());
    let opts = CallOptions::default().with_timeout(Duration::from_secs(1));
    let mut events = start_with(&c, req, opts).await;
    let pid = started(&mut events).await;
    drop(events);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut events = connect(&c, by_tag("deadline")).await;
    assert_eq!(started(&mut events).await, pid);
    let out = drain(&mut events, pid).await;
    assert_eq!(out.end().status, "signal: killed");
}

#[tokio::test]
async fn keepalives_flow_on_idle_streams() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let opts = CallOptions::default().with_header("keepalive-ping-interval", "1");
    let mut events = start_with(&c, start_req("sleep", &["2.5"]), opts).await;
    let pid = started(&mut events).await;
    let out = drain(&mut events, pid).await;
    assert!(out.keepalives >= 1, "got {} keepalives", out.keepalives);
    assert_eq!(out.end().exit_code, 0);
}

#[tokio::test]
async fn init_cmd_runs_tagged() {
    let envd = EnvdProcess::start_with(&["--cmd", "echo booted; exec sleep 30"]);
    let c = client(&envd);
    let procs = list(&c).await;
    let init = procs
        .iter()
        .find(|p| p.tag.as_deref() == Some("init-cmd"))
        .expect("init-cmd listed");
    assert_eq!(init.config.as_option().expect("config").cmd, "/bin/sh");
    let mut events = connect(&c, by_tag("init-cmd")).await;
    assert_eq!(started(&mut events).await, init.pid);
    send_signal(&c, by_tag("init-cmd"), Signal::SIGNAL_SIGKILL)
        .await
        .expect("kill");
    let out = drain(&mut events, init.pid).await;
    assert_eq!(out.end().status, "signal: killed");
}

#[tokio::test]
async fn orphans_are_reaped() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    // The backgrounded sleep is orphaned when sh exits and comes back to envd
    // (child subreaper), which must reap it.
    let out = run(&c, sh("sleep 0.3 >/dev/null 2>&1 & echo $!")).await;
    let orphan: u32 = out.stdout().trim().parse().expect("orphan pid");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match proc_state(orphan) {
            None => break,
            Some((state, ppid)) => {
                if state != 'Z' {
                    assert_eq!(ppid, envd.pid(), "orphan should be reparented to envd");
                }
                assert!(
                    Instant::now() < deadline,
                    "orphan {orphan} not reaped (state {state})"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// envd as PID 1 of a fresh PID namespace (as in a container): orphans are
/// reaped and SIGTERM is forwarded to processes before envd exits.
#[tokio::test]
async fn pid1_reaps_orphans_and_forwards_sigterm() {
    if !is_root() {
        eprintln!("skipping: a PID namespace needs root");
        return;
    }
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(env!("CARGO_BIN_EXE_envd"))
        // Port forwarding defaults to on for PID 1; keep the host's ports alone.
        .args(["--port", "0", "--port-forward", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn unshare");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listen line");
    let Some(port) = line
        .trim()
        .rsplit(':')
        .next()
        .filter(|p| p.parse::<u16>().is_ok())
    else {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("skipping: envd did not start in a PID namespace ({line:?})");
        return;
    };
    let c = client_for(&format!("http://127.0.0.1:{port}"));

    let out = run(&c, sh("cat /proc/1/comm")).await;
    assert_eq!(out.stdout().trim(), "envd");

    // The orphaned sleep is reparented to envd (PID 1) and must be reaped.
    let out = run(&c, sh("sleep 0.2 >/dev/null 2>&1 & echo $!")).await;
    let orphan = out.stdout().trim().to_owned();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = run(
        &c,
        sh(&format!("cat /proc/{orphan}/stat 2>/dev/null || echo gone")),
    )
    .await;
    assert_eq!(out.stdout().trim(), "gone", "orphan {orphan} not reaped");

    // SIGTERM to envd (from outside the namespace) reaches its processes.
    let mut events = start(&c, start_req("sleep", &["60"])).await;
    started(&mut events).await;
    let mut rx = spawn_reader(events);
    let unshare_pid = child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children"))
            .expect("children of unshare");
    let envd_pid: i32 = children
        .split_whitespace()
        .next()
        .expect("envd pid")
        .parse()
        .expect("pid");
    // SAFETY: plain kill(2).
    assert_eq!(unsafe { libc::kill(envd_pid, libc::SIGTERM) }, 0);
    assert_eq!(wait_for_end(&mut rx).await.status, "signal: terminated");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "envd (PID 1) did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_stops_processes_and_envd() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let mut events = start(&c, start_req("sleep", &["60"])).await;
    let pid = started(&mut events).await;
    let mut rx = spawn_reader(events);
    // SAFETY: plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(envd.pid() as i32, libc::SIGTERM) }, 0);
    let end = wait_for_end(&mut rx).await;
    assert_eq!(end.status, "signal: terminated");
    let deadline = Instant::now() + Duration::from_secs(10);
    // envd exits (a zombie until the harness reaps it) and so does the sleep.
    while matches!(proc_state(envd.pid()), Some((s, _)) if s != 'Z') {
        assert!(
            Instant::now() < deadline,
            "envd still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proc_state(pid).is_none_or(|(s, _)| s == 'Z'),
        "sleep survived"
    );
}
