//! envd-bench: starts a release envd on loopback and measures, in one run,
//! the performance targets:
//! - `Process.Start("/bin/true")` round trip (call → stream end) p50/p99 vs a
//!   plain spawn+wait of `/bin/true` from Rust, and their ratio;
//! - 1 MiB file write+read round trip through `POST`/`GET /files`;
//! - envd's idle RSS (VmRSS) and the release binary's size.
//!
//! Exits 1 when a target fails: Start p50 ≤ 3× baseline p50, idle RSS ≤ 16 MiB,
//! binary ≤ 20 MiB.
//!
//! Usage: envd-bench [ENVD_PATH] [-n ITERATIONS]

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use wrenn_proto::process::process_event::Event;
use wrenn_proto::process::{ProcessClient, ProcessConfig, StartRequest};

const MIB: f64 = 1024.0 * 1024.0;
const START_RATIO_MAX: f64 = 3.0;
const IDLE_RSS_MAX_MIB: f64 = 16.0;
const BINARY_MAX_MIB: f64 = 20.0;
const FILE_ROUNDS: usize = 30;
const IDLE_WAIT: Duration = Duration::from_secs(3);

struct Args {
    envd: PathBuf,
    iterations: usize,
}

fn parse_args() -> Result<Args> {
    let mut envd = None;
    let mut iterations = 300;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-n" | "--iterations" => {
                iterations = it
                    .next()
                    .context("-n needs a value")?
                    .parse()
                    .context("-n must be a positive integer")?;
            }
            "-h" | "--help" => {
                println!("usage: envd-bench [ENVD_PATH] [-n ITERATIONS]");
                std::process::exit(0);
            }
            path => envd = Some(PathBuf::from(path)),
        }
    }
    if iterations == 0 {
        bail!("-n must be positive");
    }
    let envd = match envd {
        Some(p) => p,
        None => [
            PathBuf::from("target/release/envd"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/envd"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .context("no envd binary given and none at target/release/envd")?,
    };
    Ok(Args { envd, iterations })
}

/// The envd under test; killed on drop.
struct Envd {
    child: Child,
    port: u16,
    // Held so envd's stdout stays a live pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Envd {
    fn start(path: &Path, run_dir: &Path) -> Result<Self> {
        let mut child = Command::new(path)
            .args(["--port", "0", "--port-forward", "off", "--run-dir"])
            .arg(run_dir)
            .env("RUST_LOG", "envd=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().context("envd stdout")?);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .context("reading envd's listen line")?;
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("unexpected envd output {line:?}"))?;
        Ok(Self {
            child,
            port,
            _stdout: stdout,
        })
    }

    fn rss_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS in /proc/<pid>/status")?;
        Ok(kib / 1024.0)
    }
}

impl Drop for Envd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

type Client = ProcessClient<connectrpc::client::HttpClient>;

/// One Start round trip: the call until the stream's clean end, requiring an
/// end event with exit code 0.
async fn start_true(client: &Client) -> Result<()> {
    let req = StartRequest {
        process: ProcessConfig {
            cmd: "/bin/true".into(),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    let mut stream = client.start(req).await.context("Start")?;
    let mut exit = None;
    while let Some(msg) = stream.message().await.context("Start stream")? {
        let resp = msg.to_owned_message();
        if let Some(Event::End(end)) = resp.event.as_option().and_then(|e| e.event.as_ref()) {
            exit = Some(end.exit_code);
        }
    }
    match exit {
        Some(0) => Ok(()),
        Some(code) => bail!("/bin/true exited {code}"),
        None => bail!("Start stream ended without an end event"),
    }
}

async fn measure_start(client: &Client, n: usize) -> Result<Vec<Duration>> {
    for _ in 0..20.min(n) {
        start_true(client).await?;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        start_true(client).await?;
        out.push(t.elapsed());
    }
    out.sort();
    Ok(out)
}

fn measure_spawn(n: usize) -> Result<Vec<Duration>> {
    let run = || -> Result<()> {
        let status = Command::new("/bin/true").status()?;
        if !status.success() {
            bail!("/bin/true failed: {status}");
        }
        Ok(())
    };
    for _ in 0..20.min(n) {
        run()?;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        run()?;
        out.push(t.elapsed());
    }
    out.sort();
    Ok(out)
}

/// Round trips of 1 MiB through POST /files (octet-stream) and GET /files;
/// returns the sorted round-trip times.
async fn measure_files(base: &str, dir: &Path) -> Result<Vec<Duration>> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let data: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let path = dir.join("roundtrip.bin");
    let path = path.to_str().context("temp path is not UTF-8")?;
    let url = format!("{base}/files");
    let mut out = Vec::with_capacity(FILE_ROUNDS);
    for round in 0..FILE_ROUNDS + 3 {
        let t = Instant::now();
        let resp = http
            .post(&url)
            .query(&[("path", path)])
            .header("content-type", "application/octet-stream")
            .body(data.clone())
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("POST /files: {} {}", resp.status(), resp.text().await?);
        }
        let resp = http.get(&url).query(&[("path", path)]).send().await?;
        if !resp.status().is_success() {
            bail!("GET /files: {} {}", resp.status(), resp.text().await?);
        }
        let body = resp.bytes().await?;
        let elapsed = t.elapsed();
        if body.as_ref() != data.as_slice() {
            bail!(
                "GET /files returned {} bytes that differ from the upload",
                body.len()
            );
        }
        // The first rounds warm up connections and caches.
        if round >= 3 {
            out.push(elapsed);
        }
    }
    out.sort();
    Ok(out)
}

struct Row {
    name: String,
    value: String,
    target: String,
    ok: Option<bool>,
}

fn row(name: &str, value: String, target: &str, ok: Option<bool>) -> Row {
    Row {
        name: name.to_owned(),
        value,
        target: target.to_owned(),
        ok,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let n = args.iterations;
    let binary_mib = std::fs::metadata(&args.envd)
        .with_context(|| format!("stat {}", args.envd.display()))?
        .len() as f64
        / MIB;

    let tmp = std::env::temp_dir().join(format!("envd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = run(&args, n, binary_mib, &tmp).await;
    let _ = std::fs::remove_dir_all(&tmp);
    let rows = result?;

    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let v = rows.iter().map(|r| r.value.len()).max().unwrap_or(0);
    let t = rows.iter().map(|r| r.target.len()).max().unwrap_or(0);
    println!("envd-bench ({}, N={n})", args.envd.display());
    for r in &rows {
        let verdict = match r.ok {
            Some(true) => "ok",
            Some(false) => "FAIL",
            None => "",
        };
        println!(
            "  {:<w$}  {:>v$}  {:<t$}  {verdict}",
            r.name, r.value, r.target
        );
    }
    if rows.iter().any(|r| r.ok == Some(false)) {
        println!("envd-bench: targets NOT met");
        std::process::exit(1);
    }
    println!("envd-bench: all targets met");
    Ok(())
}

async fn run(args: &Args, n: usize, binary_mib: f64, tmp: &Path) -> Result<Vec<Row>> {
    let envd = Envd::start(&args.envd, &tmp.join("run"))?;
    let base = format!("http://127.0.0.1:{}", envd.port);

    // Idle right after start-up, before any request.
    tokio::time::sleep(IDLE_WAIT).await;
    let idle_rss = envd.rss_mib()?;

    let uri: http::Uri = base.parse()?;
    let client = ProcessClient::new(
        connectrpc::client::HttpClient::plaintext(),
        connectrpc::client::ClientConfig::new(uri),
    );
    let start = measure_start(&client, n).await?;
    let spawn = tokio::task::spawn_blocking(move || measure_spawn(n)).await??;
    let files = measure_files(&base, tmp).await?;

    // Idle again after the workload: what a long-lived capsule keeps.
    drop(client);
    tokio::time::sleep(IDLE_WAIT).await;
    let after_rss = envd.rss_mib()?;

    let (s50, s99) = (percentile(&start, 50.0), percentile(&start, 99.0));
    let (b50, b99) = (percentile(&spawn, 50.0), percentile(&spawn, 99.0));
    let ratio = ms(s50) / ms(b50);
    let files_total: f64 = files.iter().map(Duration::as_secs_f64).sum();
    let mib_s = files.len() as f64 / files_total;
    Ok(vec![
        row(
            "Start(/bin/true) p50",
            format!("{:.3} ms", ms(s50)),
            "",
            None,
        ),
        row(
            "Start(/bin/true) p99",
            format!("{:.3} ms", ms(s99)),
            "",
            None,
        ),
        row(
            "spawn+wait /bin/true p50",
            format!("{:.3} ms", ms(b50)),
            "",
            None,
        ),
        row(
            "spawn+wait /bin/true p99",
            format!("{:.3} ms", ms(b99)),
            "",
            None,
        ),
        row(
            "Start p50 / spawn p50",
            format!("{ratio:.2}x"),
            "<= 3x",
            Some(ratio <= START_RATIO_MAX),
        ),
        row(
            "/files 1 MiB write+read",
            format!("{mib_s:.1} MiB/s"),
            "",
            None,
        ),
        row(
            "/files round trip p50",
            format!("{:.2} ms", ms(percentile(&files, 50.0))),
            "",
            None,
        ),
        row(
            "idle RSS (fresh)",
            format!("{idle_rss:.1} MiB"),
            "<= 16 MiB",
            Some(idle_rss <= IDLE_RSS_MAX_MIB),
        ),
        row(
            "idle RSS (after workload)",
            format!("{after_rss:.1} MiB"),
            "",
            None,
        ),
        row(
            "release binary (stripped)",
            format!("{binary_mib:.1} MiB"),
            "<= 20 MiB",
            Some(binary_mib <= BINARY_MAX_MIB),
        ),
    ])
}
