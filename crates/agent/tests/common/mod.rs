//! Shared by the agent's integration tests (and `crates/cli/tests/agent_rpc.rs`, which includes
//! this file by path): the `minimal` image fixture, a host-wide test lock and leftover checks.
//!
//! Needs root, runsc and debootstrap (scripts/install-runsc.sh). As root a missing tool fails the
//! tests; as another user they are skipped with a printed reason. The `minimal` image is built
//! once into `<target>/tmp/wrenn-agent-data` and reused; envd comes from `WRENN_ENVD_BIN` or is
//! built statically into `<target>/envd-static`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use wrenn_agent::capsule::{CapsuleRequest, Capsules};
use wrenn_agent::image::{self, BuildOptions};
use wrenn_agent::network::Network;
use wrenn_agent::runtime::gvisor::{GvisorConfig, GvisorRuntime};
use wrenn_agent::{CapsuleId, DataDir};

static FIXTURE: OnceCell<Option<DataDir>> = OnceCell::const_new();

pub fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_owned()
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The data dir with `minimal` built, or `None` when the tests must be skipped.
pub async fn fixture() -> Option<DataDir> {
    FIXTURE
        .get_or_init(|| async {
            let root = nix::unistd::geteuid().is_root();
            let missing: Vec<_> = ["runsc", "debootstrap", "ip", "nft"]
                .into_iter()
                .filter(|p| !have(p))
                .collect();
            if !root {
                eprintln!(
                    "SKIP gvisor tests: not root (capsules need netns and runsc as root); missing tools: {missing:?}"
                );
                return None;
            }
            assert!(
                missing.is_empty(),
                "missing {missing:?}: run scripts/install-runsc.sh"
            );
            let data_dir = DataDir::new(target_dir().join("tmp/wrenn-agent-data"));
            let report = image::build(BuildOptions {
                data_dir: data_dir.clone(),
                name: image::MINIMAL.into(),
                envd_bin: envd_binary(),
                mirror: None,
                progress: false,
            })
            .await
            .expect("building the minimal image");
            eprintln!(
                "minimal image: base_built={} envd_installed={} in {:?}",
                report.base_built, report.envd_installed, report.elapsed
            );
            Some(data_dir)
        })
        .await
        .clone()
}

pub fn envd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WRENN_ENVD_BIN") {
        return PathBuf::from(path);
    }
    let static_target = target_dir().join("envd-static");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-p",
            "envd",
        ])
        .current_dir(&workspace)
        // Its own target dir: no lock contention with the cargo running this test.
        .env("CARGO_TARGET_DIR", &static_target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .expect("running cargo build for envd");
    assert!(status.success(), "building a static envd failed");
    static_target.join("x86_64-unknown-linux-gnu/release/envd")
}

/// The host-wide lock every capsule test, bench and experiment takes. It lives outside any target
/// dir because what it guards is host-wide: an agent that starts reclaims every `wrenn-` netns it
/// does not own, whichever checkout or target dir it was built in.
pub const HOST_LOCK: &str = "/run/lock/wrenn-capsules.lock";

/// Serializes every capsule test across threads and processes: they share host-wide state (the
/// `wrenn` nft table, `wrenn-` names).
pub async fn serial() -> nix::fcntl::Flock<std::fs::File> {
    let path = std::path::PathBuf::from(HOST_LOCK);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    tokio::task::spawn_blocking(move || {
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("flock")
    })
    .await
    .unwrap()
}

/// Processes whose command line mentions our runsc root.
pub fn runsc_processes(root: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains(root) && cmdline.contains("runsc") {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Runs a read-only command. In-process agent tests make this process a child subreaper whose
/// reaper thread may collect the child before std does (ECHILD); the command ran, so retry.
pub fn output(command: &mut Command) -> std::process::Output {
    let mut last = None;
    for _ in 0..5 {
        match command.output() {
            Ok(out) => return out,
            Err(e) => last = Some(e),
        }
    }
    panic!("running {command:?}: {last:?}")
}

/// `wrenn-` netns and links on the host.
pub fn wrenn_netns_and_links() -> (Vec<String>, Vec<String>) {
    let netns: Vec<_> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("wrenn-"))
                .collect()
        })
        .unwrap_or_default();
    // /sys/class/net instead of `ip link`: no child process (see `output`).
    let links = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("wrenn-"))
                .collect()
        })
        .unwrap_or_default();
    (netns, links)
}

/// Everything a capsule could leave behind on the host, checked without the agent's help: no
/// runsc processes or containers under `data_dir`'s runsc root, no `wrenn-` netns or links, no
/// elements in the nft `internet` set, no capsule directories.
pub async fn assert_no_leftovers(data_dir: &DataDir) {
    // Sandbox processes exit asynchronously after `delete`; give them a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let root = data_dir.runsc_root().to_string_lossy().into_owned();
    loop {
        let procs = runsc_processes(&root);
        if procs.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "runsc processes left: {procs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mounts = wrenn_agent::disk::mounts_under(data_dir.root());
    assert!(
        mounts.is_empty(),
        "mounts left under the data dir: {mounts:?}"
    );
    let loops = output(Command::new("losetup").args(["--list", "--noheadings", "-O", "BACK-FILE"]));
    let data_root = data_dir.root().to_string_lossy().into_owned();
    let loops: Vec<String> = String::from_utf8_lossy(&loops.stdout)
        .lines()
        .filter(|l| l.contains(&data_root))
        .map(str::to_owned)
        .collect();
    assert!(loops.is_empty(), "loop devices left: {loops:?}");
    let (netns, links) = wrenn_netns_and_links();
    assert!(netns.is_empty(), "netns left: {netns:?}");
    assert!(links.is_empty(), "links left: {links:?}");
    let set = output(Command::new("nft").args(["list", "set", "inet", "wrenn", "internet"]));
    let set_text = String::from_utf8_lossy(&set.stdout);
    assert!(
        !set_text.contains("elements"),
        "nft set still has elements: {set_text}"
    );
    let list = output(
        Command::new("runsc")
            .arg("--root")
            .arg(data_dir.runsc_root())
            .args(["list", "--quiet"]),
    );
    let containers = String::from_utf8_lossy(&list.stdout);
    assert!(
        containers.trim().is_empty(),
        "runsc containers left: {containers}"
    );
    let dirs: Vec<_> = std::fs::read_dir(data_dir.capsules())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(dirs.is_empty(), "capsule dirs left: {dirs:?}");
}

/// The gVisor runtime rooted in `data_dir`.
pub async fn runtime(data_dir: &DataDir) -> GvisorRuntime {
    let mut config = GvisorConfig::new(data_dir.runsc_root());
    config.disk_spares_dir = Some(data_dir.root().join("disks"));
    GvisorRuntime::new(config).await.expect("runsc ready")
}

/// Reclaims leftovers of earlier runs, then builds a fresh agent core.
pub async fn setup(data_dir: &DataDir, max_slots: u32) -> Capsules<GvisorRuntime> {
    let runtime = runtime(data_dir).await;
    wrenn_agent::capsule::reclaim(data_dir, &runtime)
        .await
        .expect("reclaim");
    let network = Network::new(max_slots).await.expect("network");
    Capsules::new(data_dir.clone(), network, runtime).with_health_timeout(Duration::from_secs(20))
}

pub fn request(internet: bool) -> CapsuleRequest {
    let mut request = CapsuleRequest::new(CapsuleId::random().unwrap(), image::MINIMAL);
    request.internet = internet;
    request
}

/// Runs `sh -c script` through envd; returns (exit code, stdout+stderr).
pub async fn envd_sh(capsule: &wrenn_agent::capsule::Capsule, script: &str) -> (i32, String) {
    let client = wrenn_proto::process::ProcessClient::new(
        connectrpc::client::HttpClient::plaintext(),
        connectrpc::client::ClientConfig::new(capsule.envd_url().parse().unwrap()),
    );
    let request = wrenn_proto::process::StartRequest {
        process: wrenn_proto::process::ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    let mut stream = client.start(request).await.expect("envd start");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(remaining, stream.message())
            .await
            .expect("exec timed out")
            .expect("exec stream")
            .expect("exec stream closed without an end event");
        match message
            .to_owned_message()
            .event
            .into_option()
            .and_then(|e| e.event)
        {
            Some(wrenn_proto::process::process_event::Event::Data(data)) => {
                if let Some(
                    wrenn_proto::process::process_event::data_event::Output::Stdout(b)
                    | wrenn_proto::process::process_event::data_event::Output::Stderr(b),
                ) = data.output
                {
                    out.extend_from_slice(&b);
                }
            }
            Some(wrenn_proto::process::process_event::Event::End(end)) => {
                return (end.exit_code, String::from_utf8_lossy(&out).into_owned());
            }
            _ => {}
        }
    }
}
