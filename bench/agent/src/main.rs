//! agent-bench: the host agent's performance targets (issue 3, "Benchmarks"), measured in one run
//! against raw `runsc` on the same image, so that the noise of a shared 2-core machine hits both
//! arms alike (arms are interleaved, warm-up rounds dropped).
//!
//! Arms (agent = `wrenn agent` over Connect; raw = `runsc` run by this process with the agent's
//! own bundle: `envd_sandbox_spec` + `GvisorRuntime::write_bundle`/`sandbox_command`, pinned to
//! CPUs by the runtime's own placement once it runs, as the agent's sandboxes are):
//! 1. create: `CreateSandbox` round trip (netns, state, runsc run, envd /health, /init) vs
//!    `runsc run --detach` → first envd `/health` (netns and bundle prepared untimed).
//! 2. clone: `CreateSandbox` from a snapshot template vs `runsc restore --detach` of the same
//!    template image → `/health`.
//! 3. exec: `Exec /bin/true` vs `runsc exec <id> /bin/true` (on a throwaway raw sandbox; 4×`-n`
//!    rounds, cheap and the noisiest p50).
//! 4. pause+resume: `PauseSandbox`+`ResumeSandbox` vs `runsc checkpoint` + `runsc delete
//!    --force` (both arms leave no container behind) + `runsc restore --detach` → `/health`.
//!    The raw arm re-creates its netns untimed between the two (runsc strips the address).
//! 5. platforms: a sample (20) of idle capsules on systrap and on ptrace (idle CPU, PSS, create,
//!    exec, a syscall-heavy `dd`); then density: N idle capsules on `--density-platform`
//!    (default ptrace: on 2 cores, 100 idle systrap sandboxes saturate the host and creates
//!    climb from 0.2 s to 10-50 s), PSS of all runsc processes per capsule, create p50 of the
//!    last 10 vs the first 10, idle CPU of all runsc processes. A create slower than 15 s stops
//!    the phase (reported as a failure) so the run stays bounded.
//!
//! RPCs the agent does not implement yet (`unimplemented`) fall back to the library
//! (`Capsules::pause`/`resume`/`snapshot_template`/`create_from_template`), said in the output.
//! Everything is destroyed at the end, also on failure or Ctrl-C, and leftovers are checked.
//! Exits 1 when a target fails or leftovers remain.
//!
//! Usage: agent-bench --wrenn BIN --data-dir DIR [-n N] [--warmup W] [--density N]
//!        [--platform-sample N] [--density-platform ptrace|systrap] [--lock FILE]
//!        (DIR/images/minimal must be built)

use anyhow::{Context, Result, anyhow, bail};
use connectrpc::client::{ClientConfig, HttpClient};
use connectrpc::{ConnectError, ErrorCode};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wrenn_agent::capsule::{self, CapsuleRequest, Capsules};
use wrenn_agent::network::{CapsuleNetwork, Network, SlotAddressing};
use wrenn_agent::runtime::gvisor::{GvisorConfig, GvisorRuntime, Platform};
use wrenn_agent::runtime::{Limits, SandboxSpec};
use wrenn_agent::snapshot::{CloneRequest, ResumeOptions};
use wrenn_agent::{CapsuleId, DataDir, envd};
use wrenn_proto::hostagent::v1::*;
use wrenn_proto::process::process_event::Event;
use wrenn_proto::process::{ProcessClient, ProcessConfig, StartRequest};

type Client = HostAgentServiceClient<HttpClient>;

const CREATE_MAX: f64 = 1.3;
const CLONE_MAX: f64 = 1.3;
const EXEC_MAX: f64 = 0.5;
const PAUSE_RESUME_MAX: f64 = 1.3;
const DENSITY_CREATE_MAX: f64 = 1.5;
/// The agent's slots; the bench's own netns take slots above them (no collisions).
const AGENT_SLOTS: u32 = 256;
const RPC_TIMEOUT: Duration = Duration::from_secs(120);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(3);
const TEMPLATE: &str = "bench-snap";
const MARKER: &str = "/root/.agent-bench-marker";
/// A create slower than this means the host is saturated: the density phase stops there.
const DENSITY_CREATE_LIMIT: Duration = Duration::from_secs(15);
const DD_ARGS: [&str; 4] = ["if=/dev/zero", "of=/dev/null", "bs=1", "count=20000"];
/// The exec arm takes this many times `-n` samples per arm: a round costs ~40 ms, and its
/// p50 otherwise moves by ±0.05× between runs on a noisy 2-core host.
const EXEC_SAMPLES_FACTOR: usize = 4;

struct Args {
    wrenn: PathBuf,
    data_dir: PathBuf,
    n: usize,
    warmup: usize,
    density: usize,
    platform_sample: usize,
    density_platform: Platform,
    lock: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        wrenn: PathBuf::new(),
        data_dir: PathBuf::new(),
        n: 30,
        warmup: 3,
        density: 100,
        platform_sample: 20,
        density_platform: Platform::Ptrace,
        lock: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--wrenn" => args.wrenn = value()?.into(),
            "--data-dir" => args.data_dir = value()?.into(),
            "-n" => args.n = value()?.parse().context("-n")?,
            "--warmup" => args.warmup = value()?.parse().context("--warmup")?,
            "--density" => args.density = value()?.parse().context("--density")?,
            "--platform-sample" => {
                args.platform_sample = value()?.parse().context("--platform-sample")?
            }
            "--density-platform" => {
                args.density_platform = value()?.parse().map_err(|e: String| anyhow!(e))?
            }
            "--lock" => args.lock = Some(value()?.into()),
            "-h" | "--help" => {
                println!(
                    "usage: agent-bench --wrenn BIN --data-dir DIR [-n N] [--warmup W] [--density N] [--platform-sample N] [--density-platform P] [--lock FILE]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    anyhow::ensure!(args.wrenn.is_file(), "--wrenn BIN is required");
    anyhow::ensure!(
        args.data_dir
            .join("images/minimal/rootfs/usr/local/bin/envd")
            .is_file(),
        "--data-dir DIR must hold a built images/minimal"
    );
    anyhow::ensure!(args.n >= 2 && args.density >= 20, "-n ≥ 2, --density ≥ 20");
    args.platform_sample = args.platform_sample.min(args.density);
    args.data_dir = std::path::absolute(&args.data_dir)?;
    Ok(args)
}

// ---------------------------------------------------------------- statistics and output

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v
    }
    fn p50(&self) -> Duration {
        percentile(&self.sorted(), 50.0)
    }
    fn p99(&self) -> Duration {
        percentile(&self.sorted(), 99.0)
    }
    fn show(&self) -> String {
        format!(
            "p50 {:7.1} ms  p99 {:7.1} ms",
            ms(self.p50()),
            ms(self.p99())
        )
    }
}

struct Row {
    name: String,
    value: String,
    target: String,
    ok: Option<bool>,
}

#[derive(Default)]
struct Report {
    rows: Mutex<Vec<Row>>,
    notes: Mutex<Vec<String>>,
}

impl Report {
    fn row(&self, name: impl Into<String>, value: impl Into<String>) {
        self.push(name.into(), value.into(), String::new(), None);
    }
    fn target(&self, name: &str, ratio: f64, max: f64) {
        self.push(
            name.to_owned(),
            format!("{ratio:.2}x"),
            format!("<= {max}x"),
            Some(ratio <= max),
        );
    }
    fn push(&self, name: String, value: String, target: String, ok: Option<bool>) {
        println!("  .. {name}: {value} {target}");
        lock(&self.rows).push(Row {
            name,
            value,
            target,
            ok,
        });
    }
    fn note(&self, note: impl Into<String>) {
        let note = note.into();
        println!("  .. note: {note}");
        lock(&self.notes).push(note);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------- the agent under test

struct Agent {
    child: Option<std::process::Child>,
    pid: u32,
    client: Client,
    data_dir: DataDir,
    log: PathBuf,
}

impl Agent {
    async fn start(wrenn: &Path, data_dir: DataDir, platform: Platform) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        std::fs::create_dir_all(data_dir.root())?;
        let log = data_dir.root().join("agent.log");
        let out = std::fs::File::create(&log)?;
        let child = std::process::Command::new(wrenn)
            .arg("agent")
            .arg("--data-dir")
            .arg(data_dir.root())
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--platform")
            .arg(platform.as_str())
            .arg("--max-capsules")
            .arg(AGENT_SLOTS.to_string())
            .env("RUST_LOG", "wrenn_agent=info,wrenn=info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawning {}", wrenn.display()))?;
        let pid = child.id();
        let client = HostAgentServiceClient::new(
            HttpClient::plaintext(),
            ClientConfig::new(format!("http://{addr}").parse()?),
        );
        let mut agent = Self {
            child: Some(child),
            pid,
            client,
            data_dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            // The bench is a subreaper (the raw arm's runtime); its reaper may take the exit.
            let exited = agent
                .child
                .as_mut()
                .map(|c| !matches!(c.try_wait(), Ok(None)));
            if exited == Some(true) || Instant::now() > deadline {
                bail!("agent not serving: {}", agent.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(agent)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `Terminate` destroys every capsule and stops the agent.
    async fn terminate(&mut self) -> Result<()> {
        let result = rpc(
            "Terminate",
            self.client.terminate(TerminateRequest::default()),
        )
        .await;
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        result.map(|_| ())
    }

    /// Returns the capsule's IP.
    async fn create(&self, id: &CapsuleId, template: &str) -> Result<String> {
        let reply = rpc(
            "CreateSandbox",
            self.client.create_sandbox(CreateSandboxRequest {
                sandbox_id: id.to_string(),
                template: template.to_owned(),
                ..Default::default()
            }),
        )
        .await?;
        Ok(reply.into_owned().host_ip)
    }

    async fn destroy(&self, id: &CapsuleId) -> Result<()> {
        rpc(
            "DestroySandbox",
            self.client.destroy_sandbox(DestroySandboxRequest {
                sandbox_id: id.to_string(),
                ..Default::default()
            }),
        )
        .await?;
        Ok(())
    }

    async fn exec(&self, id: &CapsuleId, cmd: &str, args: &[&str]) -> Result<i32> {
        let out = rpc(
            "Exec",
            self.client.exec(ExecRequest {
                sandbox_id: id.to_string(),
                cmd: cmd.to_owned(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                ..Default::default()
            }),
        )
        .await?;
        Ok(out.into_owned().exit_code)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An RPC with a deadline; `Err` carries the Connect error (so callers can spot
/// `unimplemented`) or a timeout as `internal`.
async fn rpc<T>(what: &str, call: impl Future<Output = Result<T, ConnectError>>) -> Result<T> {
    match tokio::time::timeout(RPC_TIMEOUT, call).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(anyhow!(RpcFailed(e.code)).context(format!("{what}: {e}"))),
        Err(_) => bail!("{what}: no reply within {RPC_TIMEOUT:?}"),
    }
}

#[derive(Debug)]
struct RpcFailed(ErrorCode);

impl std::fmt::Display for RpcFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connect error {:?}", self.0)
    }
}

impl std::error::Error for RpcFailed {}

fn is_unimplemented(e: &anyhow::Error) -> bool {
    e.downcast_ref::<RpcFailed>()
        .is_some_and(|r| r.0 == ErrorCode::Unimplemented)
}

/// envd's `Process.Start(/bin/true)` straight from the host: time to the start event (fork +
/// exec done, pid known) and to the stream's end (exit reaped, pipes drained).
async fn envd_start_true(client: &ProcessClient<HttpClient>) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    let req = StartRequest {
        process: ProcessConfig {
            cmd: "/bin/true".into(),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    let mut stream = client
        .start(req)
        .await
        .map_err(|e| anyhow!("envd Start: {e}"))?;
    let mut started = None;
    while let Some(msg) = stream
        .message()
        .await
        .map_err(|e| anyhow!("envd Start stream: {e}"))?
    {
        let event = msg.to_owned_message().event.into_option();
        if started.is_none() && matches!(event.and_then(|e| e.event), Some(Event::Start(_))) {
            started = Some(t.elapsed());
        }
    }
    let total = t.elapsed();
    Ok((started.unwrap_or(total), total))
}

// ---------------------------------------------------------------- raw runsc arm

/// A sandbox the bench runs with `runsc` itself, from the agent's own spec and bundle.
struct RawBox {
    id: CapsuleId,
    dir: PathBuf,
    rootfs: PathBuf,
    net: CapsuleNetwork,
    spec: SandboxSpec,
    bundle: PathBuf,
}

struct Raw {
    rt: GvisorRuntime,
    boxes: PathBuf,
    limits: Limits,
}

impl Raw {
    /// Untimed: netns + veth (the agent's `Network`), `/etc` files, `config.json`, overlay dir.
    async fn prepare(&self, net: &Network, rootfs: &Path) -> Result<RawBox> {
        let id = CapsuleId::random()?;
        let dir = self.boxes.join(id.as_str());
        std::fs::create_dir_all(&dir)?;
        let network = net.setup(true).await?;
        let spec = capsule::envd_sandbox_spec(&id, rootfs.to_owned(), &dir, &network, self.limits)?;
        let bundle = self.rt.write_bundle(&spec)?;
        Ok(RawBox {
            id,
            dir,
            rootfs: rootfs.to_owned(),
            net: network,
            spec,
            bundle,
        })
    }

    /// Timed: `runsc run|restore --detach` with the agent's flags until envd answers `/health`.
    async fn launch(&self, b: &RawBox, image: Option<&Path>) -> Result<Duration> {
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(b.dir.join("console.log"))?;
        let started = Instant::now();
        let mut cmd = self.rt.sandbox_command(&b.spec);
        match image {
            Some(image) => cmd.arg("restore").arg("--image-path").arg(image),
            None => cmd.arg("run"),
        };
        cmd.arg("--detach")
            .arg("--bundle")
            .arg(&b.bundle)
            .arg(b.id.as_str())
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console);
        let mut child = wrenn_agent::command::spawn(&mut cmd)?;
        let status = wrenn_agent::command::wait(&mut child).await?;
        if !status.success() {
            let log = std::fs::read_to_string(b.dir.join("console.log")).unwrap_or_default();
            bail!("raw runsc {status}: {log}");
        }
        // What the agent's runtime does to every sandbox it starts (its CPU placement).
        self.rt.place_cpus(&b.spec);
        envd::wait_healthy(envd::envd_addr(b.net.capsule_ip()), HEALTH_TIMEOUT).await?;
        Ok(started.elapsed())
    }

    /// `runsc --root R <args>` with output to a file (never a pipe the sandbox could inherit).
    async fn runsc(&self, b: &RawBox, args: &[&OsStr]) -> Result<()> {
        let out_path = b.dir.join("runsc-cmd.out");
        let out = std::fs::File::create(&out_path)?;
        let mut cmd = self.rt.runsc();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let mut child = wrenn_agent::command::spawn(&mut cmd)?;
        let status = wrenn_agent::command::wait(&mut child).await?;
        if !status.success() {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            bail!("runsc {args:?}: {status}: {text}");
        }
        Ok(())
    }

    async fn delete(&self, b: &RawBox) -> Result<()> {
        self.runsc(
            b,
            &[
                "delete".as_ref(),
                "--force".as_ref(),
                b.id.as_str().as_ref(),
            ],
        )
        .await
    }

    /// A fresh netns for a restore (runsc removed the old one's address), bundle rewritten.
    async fn renet(&self, net: &Network, b: &mut RawBox) -> Result<()> {
        net.teardown(&b.net).await?;
        b.net = net.setup(true).await?;
        b.spec = capsule::envd_sandbox_spec(&b.id, b.rootfs.clone(), &b.dir, &b.net, self.limits)?;
        b.bundle = self.rt.write_bundle(&b.spec)?;
        Ok(())
    }

    async fn release(&self, net: &Network, b: RawBox) -> Result<()> {
        let deleted = self.delete(&b).await;
        net.teardown(&b.net).await?;
        let _ = std::fs::remove_dir_all(&b.dir);
        deleted
    }
}

// ---------------------------------------------------------------- /proc sampling

/// Pids of runsc processes whose command line mentions `root` (a runsc `--root`).
fn runsc_pids(root: &Path) -> Vec<u32> {
    let root = root.to_string_lossy();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("runsc") && cmdline.contains(root.as_ref())).then_some(pid)
        })
        .collect()
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn pss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU of `pids` over `window`, as % of one core.
async fn cpu_percent(pids: &[u32], window: Duration) -> f64 {
    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let before: Vec<(u32, u64)> = pids
        .iter()
        .filter_map(|&p| Some((p, cpu_ticks(p)?)))
        .collect();
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = t.elapsed().as_secs_f64();
    let ticks: u64 = before
        .iter()
        .filter_map(|&(p, b)| Some(cpu_ticks(p)?.saturating_sub(b)))
        .sum();
    ticks as f64 / tck / elapsed * 100.0
}

struct Idle {
    runsc_pct: f64,
    agent_pct: f64,
    pss_mib_per_capsule: f64,
    processes: usize,
}

async fn measure_idle(agent: &Agent, capsules: usize) -> Idle {
    tokio::time::sleep(SETTLE).await;
    let pids = runsc_pids(&agent.data_dir.runsc_root());
    let pss: u64 = pids.iter().filter_map(|&p| pss_kib(p)).sum();
    let agent_pid = [agent.pid];
    let (runsc_pct, agent_pct) = tokio::join!(
        cpu_percent(&pids, IDLE_WINDOW),
        cpu_percent(&agent_pid, IDLE_WINDOW)
    );
    Idle {
        runsc_pct,
        agent_pct,
        pss_mib_per_capsule: pss as f64 / 1024.0 / capsules as f64,
        processes: pids.len(),
    }
}

// ---------------------------------------------------------------- the run

struct Bench {
    args: Args,
    work: PathBuf,
    report: Report,
    agent: tokio::sync::Mutex<Option<Agent>>,
    lib: Capsules<GvisorRuntime>,
    raw: Raw,
    /// Ids of library capsules (fallback arms), for cleanup.
    lib_templates: Mutex<Vec<String>>,
}

/// A data dir whose `images/` is real (snapshot templates land there) with `minimal` linked in.
fn scratch_data_dir(root: PathBuf, images: &Path) -> Result<DataDir> {
    let dir = root.join("images");
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("minimal");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(images.join("minimal"), &link)?;
    }
    Ok(DataDir::new(root))
}

fn new_id() -> Result<CapsuleId> {
    Ok(CapsuleId::random()?)
}

impl Bench {
    fn minimal_rootfs(&self) -> PathBuf {
        self.args.data_dir.join("images/minimal/rootfs")
    }

    fn warm(&self) -> usize {
        self.args.warmup
    }

    async fn run(&self) -> Result<()> {
        let data = scratch_data_dir(self.work.join("agent"), &self.args.data_dir.join("images"))?;
        *self.agent.lock().await =
            Some(Agent::start(&self.args.wrenn, data, Platform::Systrap).await?);
        self.create_arm().await?;
        self.exec_arm().await?;
        self.pause_resume_arm().await?;
        self.clone_arm().await?;
        println!(
            "[5/5] platforms ({} capsules each), density {} on {}",
            self.args.platform_sample,
            self.args.density,
            self.args.density_platform.as_str()
        );
        self.platform_sample(Platform::Systrap).await?;
        self.restart_agent(Platform::Ptrace).await?;
        self.platform_sample(Platform::Ptrace).await?;
        if self.args.density_platform != Platform::Ptrace {
            self.restart_agent(self.args.density_platform).await?;
        }
        self.density().await?;
        Ok(())
    }

    async fn with_agent<T>(&self, f: impl AsyncFnOnce(&Agent) -> Result<T>) -> Result<T> {
        let guard = self.agent.lock().await;
        let agent = guard.as_ref().context("no agent running")?;
        f(agent).await
    }

    /// 1: CreateSandbox vs runsc run → /health, interleaved (order alternating).
    async fn create_arm(&self) -> Result<()> {
        println!("[1/5] create → envd ready");
        let (mut agent_t, mut raw_t) = (Samples::default(), Samples::default());
        let rootfs = self.minimal_rootfs();
        for i in 0..self.warm() + self.args.n {
            for arm in [i % 2, 1 - i % 2] {
                let took = if arm == 0 {
                    self.with_agent(async |a| {
                        let id = new_id()?;
                        let t = Instant::now();
                        a.create(&id, "minimal").await?;
                        let took = t.elapsed();
                        a.destroy(&id).await?;
                        Ok(took)
                    })
                    .await?
                } else {
                    let b = self.raw.prepare(self.lib.network(), &rootfs).await?;
                    let took = self.raw.launch(&b, None).await;
                    self.raw.release(self.lib.network(), b).await?;
                    took?
                };
                if i >= self.warm() {
                    [&mut agent_t, &mut raw_t][arm].push(took);
                }
            }
        }
        let ratio = ms(agent_t.p50()) / ms(raw_t.p50());
        self.report
            .row("create→envd ready: agent CreateSandbox", agent_t.show());
        self.report
            .row("create→envd ready: raw runsc run", raw_t.show());
        self.report
            .target("create p50 agent/raw", ratio, CREATE_MAX);
        Ok(())
    }

    /// 3: Exec /bin/true vs runsc exec /bin/true.
    async fn exec_arm(&self) -> Result<()> {
        println!("[2/5] exec /bin/true");
        let id = new_id()?;
        let ip = self
            .with_agent(async |a| a.create(&id, "minimal").await)
            .await?;
        let envd_addr = envd::envd_addr(ip.parse()?);
        let process = ProcessClient::new(
            HttpClient::plaintext(),
            ClientConfig::new(format!("http://{envd_addr}").parse()?),
        );
        let b = self
            .raw
            .prepare(self.lib.network(), &self.minimal_rootfs())
            .await?;
        let result = async {
            self.raw.launch(&b, None).await?;
            let (mut agent_t, mut raw_t) = (Samples::default(), Samples::default());
            let (mut direct_t, mut health_t) = (Samples::default(), Samples::default());
            let mut start_t = Samples::default();
            // The arms first, alone: the breakdown probes below leave work behind in envd
            // (connections closing, streams dropped mid-body) that would land on the next
            // agent Exec and not on the raw sandbox.
            for i in 0..self.warm() + self.args.n * EXEC_SAMPLES_FACTOR {
                let t = Instant::now();
                let code = self
                    .with_agent(async |a| a.exec(&id, "/bin/true", &[]).await)
                    .await?;
                let agent_took = t.elapsed();
                anyhow::ensure!(code == 0, "agent exec /bin/true exited {code}");
                let t = Instant::now();
                self.raw
                    .runsc(
                        &b,
                        &[
                            "exec".as_ref(),
                            b.id.as_str().as_ref(),
                            "/bin/true".as_ref(),
                        ],
                    )
                    .await?;
                let raw_took = t.elapsed();
                if i >= self.warm() {
                    agent_t.push(agent_took);
                    raw_t.push(raw_took);
                }
            }
            // Breakdown: envd's own Start and a /health round trip, bypassing the agent.
            for i in 0..self.warm() + self.args.n {
                let (to_start, direct) = envd_start_true(&process).await?;
                let t = Instant::now();
                envd::wait_healthy(envd_addr, HEALTH_TIMEOUT).await?;
                let health = t.elapsed();
                if i >= self.warm() {
                    direct_t.push(direct);
                    start_t.push(to_start);
                    health_t.push(health);
                }
            }
            Ok::<_, anyhow::Error>((agent_t, raw_t, direct_t, start_t, health_t))
        }
        .await;
        drop(process);
        let released = self.raw.release(self.lib.network(), b).await;
        self.with_agent(async |a| a.destroy(&id).await).await?;
        let (agent_t, raw_t, direct_t, start_t, health_t) = result?;
        released?;
        self.report.row(
            "  breakdown: envd Start → start event (spawned)",
            start_t.show(),
        );
        self.report
            .row("  breakdown: envd Start(/bin/true) direct", direct_t.show());
        self.report.row(
            "  breakdown: envd GET /health (new TCP conn)",
            health_t.show(),
        );
        self.report
            .row("exec /bin/true: agent Exec", agent_t.show());
        self.report
            .row("exec /bin/true: raw runsc exec", raw_t.show());
        self.report.target(
            "exec p50 agent/raw",
            ms(agent_t.p50()) / ms(raw_t.p50()),
            EXEC_MAX,
        );
        Ok(())
    }

    /// 4: Pause+Resume of an idle capsule vs checkpoint+delete+restore → /health.
    async fn pause_resume_arm(&self) -> Result<()> {
        println!("[3/5] pause + resume (idle)");
        // RPC if the agent has it, else the library on a library capsule.
        let id = new_id()?;
        self.with_agent(async |a| a.create(&id, "minimal").await)
            .await?;
        let via_rpc = match self.agent_pause(&id).await {
            Ok(()) => {
                self.agent_resume(&id).await?;
                true
            }
            Err(e) if is_unimplemented(&e) => {
                self.with_agent(async |a| a.destroy(&id).await).await?;
                self.lib
                    .create(CapsuleRequest::new(id.clone(), "minimal"))
                    .await?;
                self.report.note(
                    "pause/resume: PauseSandbox/ResumeSandbox unimplemented in this agent build; \
                     measured the library (Capsules::pause/resume) in the bench process",
                );
                false
            }
            Err(e) => return Err(e),
        };
        let mut b = self
            .raw
            .prepare(self.lib.network(), &self.minimal_rootfs())
            .await?;
        let result = async {
            self.raw.launch(&b, None).await?;
            let mut t_agent = [Samples::default(), Samples::default(), Samples::default()];
            let mut t_raw: [Samples; 4] = Default::default();
            for i in 0..self.warm() + self.args.n {
                // agent: pause, resume
                let t = Instant::now();
                if via_rpc {
                    self.agent_pause(&id).await?;
                } else {
                    self.lib.pause(&id).await?;
                }
                let paused = t.elapsed();
                let t = Instant::now();
                if via_rpc {
                    self.agent_resume(&id).await?;
                } else {
                    self.lib.resume(&id, ResumeOptions::default()).await?;
                }
                let resumed = t.elapsed();
                // raw: checkpoint + delete, [new netns untimed], restore → /health
                let image = b.dir.join("ckpt");
                let _ = std::fs::remove_dir_all(&image);
                std::fs::create_dir_all(&image)?;
                let t = Instant::now();
                self.raw
                    .runsc(
                        &b,
                        &[
                            "checkpoint".as_ref(),
                            "--image-path".as_ref(),
                            image.as_os_str(),
                            b.id.as_str().as_ref(),
                        ],
                    )
                    .await?;
                let checkpointed = t.elapsed();
                self.raw.delete(&b).await?;
                let raw_paused = t.elapsed();
                self.raw.renet(self.lib.network(), &mut b).await?;
                let raw_resumed = self.raw.launch(&b, Some(&image)).await?;
                if i >= self.warm() {
                    for (s, d) in t_agent.iter_mut().zip([paused, resumed, paused + resumed]) {
                        s.push(d);
                    }
                    for (s, d) in t_raw.iter_mut().zip([
                        raw_paused,
                        raw_resumed,
                        raw_paused + raw_resumed,
                        checkpointed,
                    ]) {
                        s.push(d);
                    }
                }
            }
            Ok::<_, anyhow::Error>((t_agent, t_raw))
        }
        .await;
        let released = self.raw.release(self.lib.network(), b).await;
        if via_rpc {
            self.with_agent(async |a| a.destroy(&id).await).await?;
        } else {
            self.lib.destroy(&id).await?;
        }
        let (a, r) = result?;
        released?;
        let how = if via_rpc { "RPC" } else { "library" };
        self.report.row(format!("pause ({how})"), a[0].show());
        self.report.row(format!("resume ({how})"), a[1].show());
        self.report
            .row(format!("pause+resume ({how})"), a[2].show());
        self.report.row("raw checkpoint alone", r[3].show());
        self.report
            .row("raw checkpoint+delete --force", r[0].show());
        self.report.row("raw restore → /health", r[1].show());
        self.report
            .row("raw checkpoint+delete+restore", r[2].show());
        self.report.target(
            "pause+resume p50 agent/raw",
            ms(a[2].p50()) / ms(r[2].p50()),
            PAUSE_RESUME_MAX,
        );
        Ok(())
    }

    async fn agent_pause(&self, id: &CapsuleId) -> Result<()> {
        self.with_agent(async |a| {
            rpc(
                "PauseSandbox",
                a.client.pause_sandbox(PauseSandboxRequest {
                    sandbox_id: id.to_string(),
                    ..Default::default()
                }),
            )
            .await
            .map(|_| ())
        })
        .await
    }

    async fn agent_resume(&self, id: &CapsuleId) -> Result<()> {
        self.with_agent(async |a| {
            rpc(
                "ResumeSandbox",
                a.client.resume_sandbox(ResumeSandboxRequest {
                    sandbox_id: id.to_string(),
                    ..Default::default()
                }),
            )
            .await
            .map(|_| ())
        })
        .await
    }

    /// 2: CreateSandbox from a snapshot template vs runsc restore of its image → /health.
    async fn clone_arm(&self) -> Result<()> {
        println!("[4/5] create from snapshot template");
        let src = new_id()?;
        // The source writes a marker into its overlay: only a real restore has it.
        let via_rpc = self
            .with_agent(async |a| {
                a.create(&src, "minimal").await?;
                let code = a
                    .exec(&src, "/bin/sh", &["-c", &format!("echo x > {MARKER}")])
                    .await?;
                anyhow::ensure!(code == 0, "writing the marker exited {code}");
                let made = rpc(
                    "CreateSnapshot",
                    a.client.create_snapshot(CreateSnapshotRequest {
                        sandbox_id: src.to_string(),
                        name: TEMPLATE.to_owned(),
                        ..Default::default()
                    }),
                )
                .await;
                a.destroy(&src).await?;
                match made {
                    Ok(_) => Ok(true),
                    Err(e) if is_unimplemented(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await?;
        let template_dir = if via_rpc {
            self.with_agent(async |a| Ok(a.data_dir.template(TEMPLATE)?))
                .await?
        } else {
            self.report.note(
                "clone: CreateSnapshot unimplemented in this agent build; measured the library \
                 (Capsules::snapshot_template + create_from_template) in the bench process",
            );
            self.lib
                .create(CapsuleRequest::new(src.clone(), "minimal"))
                .await?;
            lock(&self.lib_templates).push(TEMPLATE.to_owned());
            let made = self.lib.snapshot_template(&src, TEMPLATE).await;
            self.lib.destroy(&src).await?;
            made?;
            self.lib.data_dir().template(TEMPLATE)?
        };
        let result = async {
            let (mut agent_t, mut raw_t) = (Samples::default(), Samples::default());
            for i in 0..self.warm() + self.args.n {
                for arm in [i % 2, 1 - i % 2] {
                    let took = if arm == 0 {
                        let id = new_id()?;
                        if via_rpc {
                            self.with_agent(async |a| {
                                let t = Instant::now();
                                a.create(&id, TEMPLATE).await?;
                                let took = t.elapsed();
                                if i == 0 {
                                    let code = a.exec(&id, "/bin/test", &["-f", MARKER]).await?;
                                    if code != 0 {
                                        a.destroy(&id).await?;
                                        bail!(
                                            "CreateSandbox from {TEMPLATE} cold-booted: the snapshot's marker file is missing"
                                        );
                                    }
                                }
                                a.destroy(&id).await?;
                                Ok(took)
                            })
                            .await?
                        } else {
                            let t = Instant::now();
                            self.lib
                                .create_from_template(CloneRequest::new(id.clone(), TEMPLATE))
                                .await?;
                            let took = t.elapsed();
                            self.lib.destroy(&id).await?;
                            took
                        }
                    } else {
                        let b = self
                            .raw
                            .prepare(self.lib.network(), &template_dir.join("rootfs"))
                            .await?;
                        let took = self.raw.launch(&b, Some(&template_dir.join("image"))).await;
                        self.raw.release(self.lib.network(), b).await?;
                        took?
                    };
                    if i >= self.warm() {
                        [&mut agent_t, &mut raw_t][arm].push(took);
                    }
                }
            }
            Ok::<_, anyhow::Error>((agent_t, raw_t))
        }
        .await;
        // The template goes either way.
        if via_rpc {
            self.with_agent(async |a| {
                rpc(
                    "DeleteSnapshot",
                    a.client.delete_snapshot(DeleteSnapshotRequest {
                        name: TEMPLATE.to_owned(),
                        ..Default::default()
                    }),
                )
                .await
                .map(|_| ())
            })
            .await?;
        } else {
            self.lib.delete_template(TEMPLATE).await?;
            lock(&self.lib_templates).clear();
        }
        let (agent_t, raw_t) = result?;
        let how = if via_rpc {
            "agent CreateSandbox(template)"
        } else {
            "library create_from_template"
        };
        self.report
            .row(format!("clone→envd ready: {how}"), agent_t.show());
        self.report
            .row("clone→envd ready: raw runsc restore", raw_t.show());
        self.report.target(
            "clone p50 agent/raw",
            ms(agent_t.p50()) / ms(raw_t.p50()),
            CLONE_MAX,
        );
        Ok(())
    }

    /// Replaces the running agent by a fresh one on `platform` (own data dir).
    async fn restart_agent(&self, platform: Platform) -> Result<()> {
        if let Some(mut a) = self.agent.lock().await.take() {
            a.terminate().await?;
        }
        let data = scratch_data_dir(
            self.work.join(format!("agent-{}", platform.as_str())),
            &self.args.data_dir.join("images"),
        )?;
        *self.agent.lock().await = Some(Agent::start(&self.args.wrenn, data, platform).await?);
        Ok(())
    }

    /// `count` capsules in a row: their create times (stops early when one exceeds
    /// DENSITY_CREATE_LIMIT: a saturated host), then `measure` while they idle, then destroys
    /// them all.
    async fn fleet<T>(
        &self,
        agent: &Agent,
        count: usize,
        measure: impl AsyncFnOnce(&[CapsuleId]) -> Result<T>,
    ) -> Result<(Vec<Duration>, T)> {
        let mut creates = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        let result = async {
            for _ in 0..count {
                let id = new_id()?;
                let t = Instant::now();
                agent.create(&id, "minimal").await?;
                creates.push(t.elapsed());
                ids.push(id);
                if t.elapsed() > DENSITY_CREATE_LIMIT {
                    bail!(
                        "create #{} took {:.1} s: host saturated, stopping",
                        ids.len(),
                        t.elapsed().as_secs_f64()
                    );
                }
            }
            measure(&ids).await
        }
        .await;
        for id in &ids {
            if let Err(e) = agent.destroy(id).await {
                eprintln!("destroy {id}: {e:#}");
            }
        }
        Ok((creates, result?))
    }

    /// 5a: `--platform-sample` capsules on one platform: create, spawn and syscall-heavy exec,
    /// idle CPU and memory.
    async fn platform_sample(&self, platform: Platform) -> Result<()> {
        let sample = self.args.platform_sample;
        let name = platform.as_str();
        let guard = self.agent.lock().await;
        let agent = guard.as_ref().context("no agent")?;
        let (creates, (idle, exec, syscalls)) = self
            .fleet(agent, sample, async |ids: &[CapsuleId]| {
                let mut exec = Samples::default();
                let mut syscalls = Samples::default();
                for i in 0..6 {
                    let t = Instant::now();
                    let code = agent.exec(&ids[0], "/bin/true", &[]).await?;
                    anyhow::ensure!(code == 0, "exec /bin/true exited {code}");
                    if i > 0 {
                        exec.push(t.elapsed());
                    }
                }
                // ~40k read/write syscalls: where the platforms differ most.
                for i in 0..3 {
                    let t = Instant::now();
                    let code = agent.exec(&ids[0], "/bin/dd", &DD_ARGS).await?;
                    anyhow::ensure!(code == 0, "dd exited {code}");
                    if i > 0 {
                        syscalls.push(t.elapsed());
                    }
                }
                Ok((measure_idle(agent, ids.len()).await, exec, syscalls))
            })
            .await?;
        let creates = Samples(creates);
        self.report.row(
            format!("{name}: idle CPU of {sample} capsules"),
            format!(
                "{:.1}% of one core ({:.2}%/capsule), {:.1} MiB/capsule",
                idle.runsc_pct,
                idle.runsc_pct / sample as f64,
                idle.pss_mib_per_capsule
            ),
        );
        self.report
            .row(format!("{name}: create ({sample})"), creates.show());
        self.report
            .row(format!("{name}: Exec /bin/true"), exec.show());
        self.report.row(
            format!("{name}: Exec dd bs=1 count=20000 (syscalls)"),
            syscalls.show(),
        );
        Ok(())
    }

    /// 5b: N idle capsules on the density platform.
    async fn density(&self) -> Result<()> {
        let n = self.args.density;
        let name = self.args.density_platform.as_str();
        let guard = self.agent.lock().await;
        let agent = guard.as_ref().context("no agent")?;
        let fleet = self
            .fleet(agent, n, async |ids: &[CapsuleId]| {
                Ok(measure_idle(agent, ids.len()).await)
            })
            .await;
        let (creates, idle) = match fleet {
            Ok(ok) => ok,
            Err(e) => {
                self.report.push(
                    format!("density ({n} capsules, {name})"),
                    format!("{e:#}"),
                    "all created".into(),
                    Some(false),
                );
                return Ok(());
            }
        };
        let first = Samples(creates[..10].to_vec());
        let last = Samples(creates[n - 10..].to_vec());
        self.report
            .row(format!("density ({name}): create, first 10"), first.show());
        self.report
            .row(format!("density ({name}): create, last 10"), last.show());
        self.report.target(
            &format!("density create p50 last10/first10 ({n}, {name})"),
            ms(last.p50()) / ms(first.p50()),
            DENSITY_CREATE_MAX,
        );
        self.report.row(
            format!("density ({name}): memory per idle capsule (PSS)"),
            format!(
                "{:.1} MiB ({} runsc processes)",
                idle.pss_mib_per_capsule, idle.processes
            ),
        );
        self.report.row(
            format!("density ({name}): idle CPU of {n} capsules"),
            format!(
                "{:.1}% of one core (agent itself {:.1}%)",
                idle.runsc_pct, idle.agent_pct
            ),
        );
        Ok(())
    }

    /// Destroys everything this run may have left, whatever happened.
    async fn cleanup(&self, baseline_netns: &BTreeSet<String>) {
        if let Some(mut a) = self.agent.lock().await.take()
            && let Err(e) = a.terminate().await
        {
            eprintln!("cleanup: terminating the agent: {e:#}");
        }
        for c in self.lib.list() {
            if let Err(e) = self.lib.destroy(&c.id).await {
                eprintln!("cleanup: library capsule {}: {e}", c.id);
            }
        }
        for t in lock(&self.lib_templates).drain(..).collect::<Vec<_>>() {
            let _ = std::fs::remove_dir_all(self.lib.data_dir().images().join(t));
        }
        // Any container left under our runsc roots, then any wrenn- netns born during the run.
        for root in runsc_roots(&self.work) {
            let ids = runsc_list(&root).await;
            for id in ids {
                let _ = tokio::process::Command::new("runsc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", &id])
                    .output()
                    .await;
            }
        }
        for ns in wrenn_netns().difference(baseline_netns) {
            if let Some(slot) = ns.strip_prefix("wrenn-ns-").and_then(|s| s.parse().ok()) {
                let net = CapsuleNetwork {
                    addressing: SlotAddressing::new(slot),
                    internet: true,
                };
                if let Err(e) = self.lib.network().teardown(&net).await {
                    eprintln!("cleanup: netns {ns}: {e}");
                }
            }
        }
    }

    /// What is still there after cleanup (empty = clean).
    async fn leftovers(&self, baseline_netns: &BTreeSet<String>) -> Vec<String> {
        let mut left = Vec::new();
        // Sandbox processes exit asynchronously after delete.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = runsc_pids(&self.work);
            if procs.is_empty() || Instant::now() > deadline {
                if !procs.is_empty() {
                    left.push(format!("runsc processes {procs:?}"));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for root in runsc_roots(&self.work) {
            let ids = runsc_list(&root).await;
            if !ids.is_empty() {
                left.push(format!("containers in {}: {ids:?}", root.display()));
            }
        }
        let netns: Vec<_> = wrenn_netns().difference(baseline_netns).cloned().collect();
        if !netns.is_empty() {
            left.push(format!("netns {netns:?}"));
        }
        for dir in ["agent", "agent-ptrace", "agent-systrap", "lib"] {
            let capsules = self.work.join(dir).join("capsules");
            if let Ok(d) = std::fs::read_dir(&capsules)
                && d.count() > 0
            {
                left.push(format!("capsule dirs in {}", capsules.display()));
            }
        }
        left
    }
}

fn runsc_roots(work: &Path) -> Vec<PathBuf> {
    ["agent", "agent-ptrace", "agent-systrap", "lib", "raw"]
        .iter()
        .map(|d| work.join(d).join("runsc"))
        .filter(|p| p.is_dir())
        .collect()
}

async fn runsc_list(root: &Path) -> Vec<String> {
    let out = tokio::process::Command::new("runsc")
        .arg("--root")
        .arg(root)
        .args(["list", "--quiet"])
        .stdin(Stdio::null())
        .output()
        .await;
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

fn wrenn_netns() -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("wrenn-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The host-wide capsule test lock (crates/agent/tests/common): other agents on this host
/// reclaim `wrenn-` network state they do not own when they start.
async fn take_lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((file, _)) => {
            println!("waiting for {} (capsule tests running)…", path.display());
            tokio::task::spawn_blocking(move || {
                Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e)
            })
            .await?
            .context("flock")
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let _lock = match &args.lock {
        Some(path) => Some(take_lock(path).await?),
        None => None,
    };
    let started = Instant::now();
    let work = args.data_dir.join(format!("bench-{}", std::process::id()));
    let images = args.data_dir.join("images");
    let baseline = wrenn_netns();

    // The library (fallback arms) and the raw arm share one `Network` above the agent's slots.
    let lib_data = scratch_data_dir(work.join("lib"), &images)?;
    let platform = Platform::Systrap;
    let mut lib_cfg = GvisorConfig::new(lib_data.runsc_root());
    lib_cfg.platform = platform;
    lib_cfg.disk_spares_dir = Some(lib_data.root().join("disks"));
    let network = Network::new(9999).await?;
    for slot in 1..=AGENT_SLOTS {
        network.adopt(slot);
    }
    let lib = Capsules::new(lib_data, network, GvisorRuntime::new(lib_cfg).await?);
    let mut raw_cfg = GvisorConfig::new(work.join("raw/runsc"));
    raw_cfg.platform = platform;
    let raw = Raw {
        rt: GvisorRuntime::new(raw_cfg).await?,
        boxes: work.join("raw/boxes"),
        limits: Limits {
            vcpus: capsule::DEFAULT_VCPUS,
            memory_mb: capsule::DEFAULT_MEMORY_MB,
            disk_mb: capsule::DEFAULT_DISK_MB,
        },
    };
    println!(
        "agent-bench: runsc {} (platform {}), N={} (+{} warm-up) per arm, density {}",
        raw.rt.version().raw,
        platform.as_str(),
        args.n,
        args.warmup,
        args.density
    );
    let bench = Bench {
        args,
        work: work.clone(),
        report: Report::default(),
        agent: tokio::sync::Mutex::new(None),
        lib,
        raw,
        lib_templates: Mutex::new(Vec::new()),
    };

    let outcome = tokio::select! {
        r = bench.run() => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Err(e) = &outcome {
        eprintln!("agent-bench: run failed: {e:#}");
        if let Some(a) = bench.agent.lock().await.as_ref() {
            eprintln!("agent log tail:\n{}", a.log_tail());
        }
    }
    bench.cleanup(&baseline).await;
    let leftovers = bench.leftovers(&baseline).await;
    if leftovers.is_empty() {
        // AGENT_BENCH_KEEP=1 keeps the work dir (the agents' logs) for diagnosis.
        if std::env::var_os("AGENT_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&work);
        } else {
            eprintln!("agent-bench: kept {}", work.display());
        }
    }

    let rows = lock(&bench.report.rows);
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let v = rows.iter().map(|r| r.value.len()).max().unwrap_or(0);
    let t = rows.iter().map(|r| r.target.len()).max().unwrap_or(0);
    println!(
        "\nagent-bench results ({:.0} s; ratios are agent/raw runsc p50, same run)",
        started.elapsed().as_secs_f64()
    );
    for r in rows.iter() {
        let verdict = match r.ok {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "",
        };
        println!(
            "  {:<w$}  {:<v$}  {:<t$}  {verdict}",
            r.name, r.value, r.target
        );
    }
    for n in lock(&bench.report.notes).iter() {
        println!("  note: {n}");
    }
    for r in rows.iter().filter(|r| r.ok.is_some()) {
        println!(
            "{}: {} = {} (target {})",
            if r.ok == Some(true) { "PASS" } else { "FAIL" },
            r.name,
            r.value,
            r.target
        );
    }
    if leftovers.is_empty() {
        println!("leftovers: none");
    } else {
        println!("LEFTOVERS: {}", leftovers.join("; "));
    }
    let failed = rows.iter().any(|r| r.ok == Some(false));
    if outcome.is_err() || failed || !leftovers.is_empty() {
        println!("agent-bench: targets NOT met");
        std::process::exit(1);
    }
    println!("agent-bench: all targets met");
    Ok(())
}
