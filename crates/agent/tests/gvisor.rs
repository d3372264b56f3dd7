//! Real capsules on gVisor: create → envd healthy → exec → networking policy → destroy with zero
//! leftovers, plus failure paths and crash reclamation.
//!
//! Needs root, runsc and debootstrap; the image fixture, the host-wide lock and the leftover
//! checks live in `tests/common` (shared with the other capsule tests).
//!
//! The tests share host-wide state (the `wrenn` nft table, `wrenn-` names), so each holds a file
//! lock for its whole run and starts by reclaiming what an earlier failed run may have left.
//! Test traffic goes only to namespaces these tests create.

use connectrpc::ErrorCode;
use connectrpc::client::{ClientConfig, HttpClient};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};
use wrenn_agent::capsule::{self, Capsule, CapsuleError, Capsules};
use wrenn_agent::envd;
use wrenn_agent::image;
use wrenn_agent::runtime::gvisor::GvisorRuntime;
use wrenn_agent::runtime::{Runtime, RuntimeError};
use wrenn_proto::process::process_event::Event;
use wrenn_proto::process::process_event::data_event::Output;
use wrenn_proto::process::{ProcessClient, ProcessConfig, StartRequest};

mod common;

use common::{assert_no_leftovers, fixture, request, runsc_processes, runtime, serial, setup};

const MAX_SLOTS: u32 = 64;

struct ExecResult {
    exit_code: i32,
    stdout: String,
}

/// Runs `sh -c script` in the capsule through envd's process service. Falls back to `runsc exec`
/// only while envd answers Unimplemented (its process service not yet registered).
async fn exec(capsules: &Capsules<GvisorRuntime>, capsule: &Capsule, script: &str) -> ExecResult {
    let client = ProcessClient::new(
        HttpClient::plaintext(),
        ClientConfig::new(capsule.envd_url().parse().unwrap()),
    );
    let request = StartRequest {
        process: ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    let mut stream = match client.start(request).await {
        Ok(stream) => stream,
        Err(e) if e.code == ErrorCode::Unimplemented => {
            eprintln!("NOTE envd process service unavailable; using runsc exec");
            return runsc_exec(capsules, capsule, script).await;
        }
        Err(e) => panic!("envd start: {e}"),
    };
    let mut stdout = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(remaining, stream.message())
            .await
            .expect("exec timed out")
            .expect("exec stream");
        let Some(message) = message else {
            panic!("exec stream closed without an end event");
        };
        let event = message
            .to_owned_message()
            .event
            .into_option()
            .and_then(|e| e.event);
        match event {
            Some(Event::Data(data)) => {
                if let Some(Output::Stdout(bytes) | Output::Stderr(bytes)) = data.output {
                    stdout.extend_from_slice(&bytes);
                }
            }
            Some(Event::End(end)) => {
                return ExecResult {
                    exit_code: end.exit_code,
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                };
            }
            _ => {}
        }
    }
}

async fn runsc_exec(
    capsules: &Capsules<GvisorRuntime>,
    capsule: &Capsule,
    script: &str,
) -> ExecResult {
    let out = capsules
        .runtime()
        .runsc()
        .args(["exec", capsule.id.as_str(), "/bin/sh", "-c", script])
        .output()
        .await
        .expect("runsc exec");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    ExecResult {
        exit_code: out.status.code().unwrap_or(-1),
        stdout: text,
    }
}

/// A capsule-side TCP client: prints the first line the server sends, exits 1 on failure.
fn connect_script(ip: IpAddr, port: u16) -> String {
    format!(
        "python3 -c 'import socket; s=socket.create_connection((\"{ip}\", {port}), timeout=3); print(s.recv(64).decode().strip())'"
    )
}

/// Serves `greeting` to up to `count` connections on `listener`, recording peers.
fn serve(
    listener: TcpListener,
    greeting: &'static str,
    count: usize,
) -> std::sync::mpsc::Receiver<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().take(count).flatten() {
            use std::io::Write;
            let _ = tx.send(stream.peer_addr().unwrap());
            let _ = stream.write_all(greeting.as_bytes());
        }
    });
    rx
}

fn host_cmd(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace standing in for "the internet": `<subnet>.1` behind a veth, with a TCP
/// server inside. The /24 is one that no host address or route touches (checked, and the route
/// to it verified before any traffic), so test traffic can only reach this namespace. Removed on
/// drop.
struct ExternalNetns {
    name: &'static str,
    ip: Ipv4Addr,
    host_ip: Ipv4Addr,
}

/// Documentation/benchmark ranges; the first one unused on this host is taken.
const EXTERNAL_CANDIDATES: [[u8; 3]; 4] =
    [[198, 18, 77], [198, 51, 100], [203, 0, 113], [198, 19, 77]];

/// Whether any host route (other than the default) or address overlaps `net`/24.
fn subnet_in_use(net: [u8; 3]) -> bool {
    let base = u32::from(Ipv4Addr::new(net[0], net[1], net[2], 0));
    let overlaps = |prefix: &str| {
        let (addr, len) = prefix.split_once('/').unwrap_or((prefix, "32"));
        let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
            return false;
        };
        let len = len.min(24);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        (u32::from(addr) & mask) == (base & mask)
    };
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .unwrap();
    let addrs = Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    routes
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .chain(addrs.lines().filter_map(|l| l.split_whitespace().nth(3)))
        .filter(|prefix| *prefix != "default")
        .any(overlaps)
}

impl ExternalNetns {
    fn create() -> Self {
        let name = "wtest-ext";
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        let _ = Command::new("ip")
            .args(["link", "del", "wtest-ext0"])
            .output();
        let net = EXTERNAL_CANDIDATES
            .into_iter()
            .find(|net| !subnet_in_use(*net))
            .expect("no unused test subnet on this host");
        let ip = Ipv4Addr::new(net[0], net[1], net[2], 1);
        let host_ip = Ipv4Addr::new(net[0], net[1], net[2], 2);
        host_cmd(&["ip", "netns", "add", name]);
        let ext = Self { name, ip, host_ip };
        host_cmd(&[
            "ip",
            "link",
            "add",
            "wtest-ext0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            name,
        ]);
        host_cmd(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            "wtest-ext0",
        ]);
        host_cmd(&["ip", "link", "set", "wtest-ext0", "up"]);
        host_cmd(&[
            "ip",
            "-n",
            name,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        host_cmd(&["ip", "-n", name, "link", "set", "eth0", "up"]);
        host_cmd(&["ip", "-n", name, "link", "set", "lo", "up"]);
        let route = Command::new("ip")
            .args(["route", "get", &ip.to_string()])
            .output()
            .unwrap();
        let route = String::from_utf8_lossy(&route.stdout);
        assert!(
            route.contains("dev wtest-ext0"),
            "{ip} is not routed to the test netns: {route}"
        );
        ext
    }

    /// Binds a listener inside the namespace (from a thread that enters it).
    fn listen(&self) -> TcpListener {
        let path = format!("/run/netns/{}", self.name);
        let ip = self.ip;
        std::thread::spawn(move || {
            let ns = std::fs::File::open(path).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpListener::bind((ip, 0)).unwrap()
        })
        .join()
        .unwrap()
    }
}

impl Drop for ExternalNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", self.name])
            .output();
    }
}

#[tokio::test]
async fn capsule_runs_envd_and_destroy_leaves_nothing() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    let capsules = setup(&data_dir, MAX_SLOTS).await;

    let capsule = capsules.create(request(true)).await.expect("create");
    eprintln!(
        "capsule {} booted in {:?} at {}",
        capsule.id,
        capsule.boot_time,
        capsule.envd_addr()
    );
    envd::wait_healthy(capsule.envd_addr(), Duration::from_secs(5))
        .await
        .expect("envd healthy from the host");

    let hi = exec(&capsules, &capsule, "echo hi").await;
    assert_eq!((hi.exit_code, hi.stdout.as_str()), (0, "hi\n"));

    // Hostname, DNS config and the default user come from the agent and the image.
    let info = exec(
        &capsules,
        &capsule,
        "hostname; cat /etc/resolv.conf; id -u user; sudo -n -u user true && echo sudo-ok",
    )
    .await;
    assert_eq!(info.exit_code, 0, "{}", info.stdout);
    let expected_resolv = std::fs::read_to_string(capsule.dir.join("etc/resolv.conf")).unwrap();
    assert!(info.stdout.starts_with("capsule\n"), "{}", info.stdout);
    assert!(info.stdout.contains(&expected_resolv), "{}", info.stdout);
    assert!(info.stdout.contains("1000\nsudo-ok"), "{}", info.stdout);

    // Writes land in the capsule's copy-on-write layer, never in the template.
    let write = exec(
        &capsules,
        &capsule,
        "echo data > /root/wrenn-probe && cat /root/wrenn-probe",
    )
    .await;
    assert_eq!(write.stdout, "data\n");
    let template = data_dir.template_rootfs(image::MINIMAL).unwrap();
    assert!(
        !template.join("root/wrenn-probe").exists(),
        "write reached the template"
    );
    // They go to an (unlinked) filestore in the capsule's own overlay dir (its disk, mounted
    // there), held by the sandbox.
    let pid = capsules
        .runtime()
        .state(&capsule.id)
        .await
        .unwrap()
        .and_then(|info| info.pid)
        .expect("sandbox pid");
    let overlay = capsule.dir.join("overlay");
    let holds_filestore = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("/runsc-filestore-"))
        });
    assert_eq!(
        wrenn_agent::disk::mounts_under(&capsule.dir),
        std::slice::from_ref(&overlay)
    );
    assert!(
        holds_filestore,
        "sandbox {pid} has no filestore in {}",
        overlay.display()
    );

    // Limits reach the sandbox: memory total inside follows the 512 MiB limit.
    let mem = exec(
        &capsules,
        &capsule,
        "awk '/MemTotal/ {print $2}' /proc/meminfo",
    )
    .await;
    let mem_kib: u64 = mem.stdout.trim().parse().unwrap_or(0);
    assert!(
        mem_kib > 0 && mem_kib <= 512 * 1024,
        "MemTotal {mem_kib} KiB"
    );

    let started = Instant::now();
    capsules.destroy(&capsule.id).await.expect("destroy");
    eprintln!("destroy took {:?}", started.elapsed());
    assert_no_leftovers(&data_dir).await;
    assert!(matches!(
        capsules.destroy(&capsule.id).await,
        Err(CapsuleError::NotFound(_))
    ));
}

#[tokio::test]
async fn disk_size_caps_writes_and_the_capsule_survives() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    let capsules = setup(&data_dir, MAX_SLOTS).await;
    let mut req = request(false);
    req.disk_mb = wrenn_agent::capsule::MIN_DISK_MB;
    let capsule = capsules.create(req).await.expect("create");
    // The capsule's writable layer is its own filesystem of the requested size.
    let mounts = wrenn_agent::disk::mounts_under(&capsule.dir);
    assert_eq!(mounts, [capsule.dir.join("overlay")], "{mounts:?}");

    // 100 MiB fits; 600 MiB more does not fit in 512 MiB: ENOSPC inside, nothing killed.
    let small = exec(
        &capsules,
        &capsule,
        "dd if=/dev/zero of=/root/small bs=1M count=100 2>&1 && echo small-ok",
    )
    .await;
    assert!(small.stdout.contains("small-ok"), "{}", small.stdout);
    let big = exec(
        &capsules,
        &capsule,
        "dd if=/dev/zero of=/root/big bs=1M count=600 2>&1; echo exit=$?",
    )
    .await;
    assert!(
        big.stdout.contains("No space left on device") && !big.stdout.contains("exit=0"),
        "{}",
        big.stdout
    );
    let alive = exec(
        &capsules,
        &capsule,
        "rm -f /root/big; cat /root/small | wc -c",
    )
    .await;
    assert_eq!(alive.stdout.trim(), "104857600", "{}", alive.stdout);

    capsules.destroy(&capsule.id).await.expect("destroy");
    assert_no_leftovers(&data_dir).await;
}

#[tokio::test]
async fn egress_is_natted_and_dropped_when_internet_is_off() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    let capsules = setup(&data_dir, MAX_SLOTS).await;
    let external = ExternalNetns::create();
    let ext_listener = external.listen();
    let ext_port = ext_listener.local_addr().unwrap().port();
    let ext_peers = serve(ext_listener, "ext-ok\n", 2);

    let online = capsules.create(request(true)).await.expect("create online");
    let offline = capsules
        .create(request(false))
        .await
        .expect("create offline");

    // Online: reaches a host-side server on its veth host address …
    let host_listener = TcpListener::bind((online.network.host_ip(), 0)).unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    let _host_peers = serve(host_listener, "host-ok\n", 1);
    let to_host = exec(
        &capsules,
        &online,
        &connect_script(online.network.host_ip().into(), host_port),
    )
    .await;
    assert_eq!((to_host.exit_code, to_host.stdout.trim()), (0, "host-ok"));

    // … and the "internet", masqueraded behind the host's address on that link.
    let to_ext = exec(
        &capsules,
        &online,
        &connect_script(external.ip.into(), ext_port),
    )
    .await;
    assert_eq!(
        (to_ext.exit_code, to_ext.stdout.trim()),
        (0, "ext-ok"),
        "{}",
        to_ext.stdout
    );
    let peer = ext_peers.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(
        peer.ip(),
        IpAddr::from(external.host_ip),
        "egress not masqueraded"
    );

    // Offline: egress and new connections to the host are dropped …
    let blocked = exec(
        &capsules,
        &offline,
        &connect_script(external.ip.into(), ext_port),
    )
    .await;
    assert_ne!(
        blocked.exit_code, 0,
        "offline capsule reached the internet: {}",
        blocked.stdout
    );
    assert!(ext_peers.try_recv().is_err());
    let offline_host = TcpListener::bind((offline.network.host_ip(), 0)).unwrap();
    let offline_port = offline_host.local_addr().unwrap().port();
    let offline_peers = serve(offline_host, "host-ok\n", 1);
    let blocked = exec(
        &capsules,
        &offline,
        &connect_script(offline.network.host_ip().into(), offline_port),
    )
    .await;
    assert_ne!(
        blocked.exit_code, 0,
        "offline capsule reached the host: {}",
        blocked.stdout
    );
    assert!(offline_peers.try_recv().is_err());
    // … while the host still reaches its envd.
    envd::wait_healthy(offline.envd_addr(), Duration::from_secs(5))
        .await
        .expect("host reaches an offline capsule's envd");

    capsules.destroy(&online.id).await.unwrap();
    capsules.destroy(&offline.id).await.unwrap();
    drop(external);
    assert_no_leftovers(&data_dir).await;
}

#[tokio::test]
async fn capsules_cannot_reach_each_other() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    let capsules = setup(&data_dir, MAX_SLOTS).await;
    let a = capsules.create(request(true)).await.expect("create a");
    let b = capsules.create(request(true)).await.expect("create b");

    let probe = |ip: Ipv4Addr| {
        format!(
            "python3 -c 'import socket; socket.create_connection((\"{ip}\", {}), timeout=3); print(\"connected\")'",
            envd::ENVD_PORT
        )
    };
    // Control: a capsule reaches its own envd by its own address.
    let own = exec(&capsules, &a, &probe(a.network.capsule_ip())).await;
    assert_eq!((own.exit_code, own.stdout.trim()), (0, "connected"));
    let across = exec(&capsules, &a, &probe(b.network.capsule_ip())).await;
    assert_ne!(
        across.exit_code, 0,
        "capsule a reached b: {}",
        across.stdout
    );
    let back = exec(&capsules, &b, &probe(a.network.capsule_ip())).await;
    assert_ne!(back.exit_code, 0, "capsule b reached a: {}", back.stdout);

    capsules.destroy(&a.id).await.unwrap();
    capsules.destroy(&b.id).await.unwrap();
    assert_no_leftovers(&data_dir).await;
}

#[tokio::test]
async fn failed_creates_leave_nothing_behind() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    let capsules = setup(&data_dir, 1).await;

    let mut missing = request(true);
    missing.template = "nope".into();
    let err = capsules.create(missing).await.unwrap_err();
    assert!(matches!(err, CapsuleError::TemplateMissing { .. }), "{err}");
    assert!(err.to_string().contains("wrenn image build nope"), "{err}");

    let mut traversal = request(true);
    traversal.template = "../x".into();
    assert!(matches!(
        capsules.create(traversal).await,
        Err(CapsuleError::InvalidTemplate(_))
    ));

    let mut too_big = request(true);
    too_big.vcpus = 0;
    assert!(matches!(
        capsules.create(too_big).await,
        Err(CapsuleError::InvalidRequest(_))
    ));

    // A template whose envd cannot execute: runsc fails mid-create.
    let broken = data_dir.template_rootfs("broken").unwrap();
    std::fs::create_dir_all(broken.join("usr/local/bin")).unwrap();
    std::fs::write(broken.join("usr/local/bin/envd"), b"not a program").unwrap();
    std::fs::set_permissions(
        broken.join("usr/local/bin/envd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut bad = request(true);
    bad.template = "broken".into();
    let err = capsules.create(bad).await.unwrap_err();
    eprintln!("broken template: {err}");
    assert!(
        matches!(
            err,
            CapsuleError::Runtime(RuntimeError::StartFailed { .. })
                | CapsuleError::EnvdUnhealthy { .. }
        ),
        "{err}"
    );
    assert_no_leftovers(&data_dir).await;
    std::fs::remove_dir_all(data_dir.template("broken").unwrap()).unwrap();

    // A template whose envd starts and exits at once: reported as soon as the sandbox is gone,
    // not after the whole health timeout.
    let exits = data_dir.template_rootfs("exits").unwrap();
    std::fs::create_dir_all(exits.parent().unwrap()).unwrap();
    let minimal = data_dir.template_rootfs("minimal").unwrap();
    common::output(
        std::process::Command::new("cp")
            .arg("-al")
            .arg(&minimal)
            .arg(&exits),
    );
    // A new file, not a write through the hard link into the shared template.
    let envd = exits.join("usr/local/bin/envd");
    std::fs::remove_file(&envd).unwrap();
    std::fs::write(
        &envd,
        b"#!/bin/sh\necho 'envd stand-in exiting' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&envd, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut exiting = request(true);
    exiting.template = "exits".into();
    let started = std::time::Instant::now();
    let err = capsules.create(exiting).await.unwrap_err();
    let waited = started.elapsed();
    eprintln!("exiting envd after {waited:?}: {err}");
    assert!(matches!(err, CapsuleError::EnvdUnhealthy { .. }), "{err}");
    assert!(
        err.to_string().contains("exited before envd answered"),
        "{err}"
    );
    assert!(err.to_string().contains("envd stand-in exiting"), "{err}");
    assert!(waited < Duration::from_secs(15), "took {waited:?}");
    assert_no_leftovers(&data_dir).await;
    std::fs::remove_dir_all(data_dir.template("exits").unwrap()).unwrap();

    // One slot: the second capsule is refused cleanly; a duplicate id too.
    let first = capsules.create(request(true)).await.expect("first");
    let err = capsules.create(request(true)).await.unwrap_err();
    assert!(err.to_string().contains("slots are in use"), "{err}");
    let mut duplicate = request(true);
    duplicate.id = first.id.clone();
    assert!(matches!(
        capsules.create(duplicate).await,
        Err(CapsuleError::AlreadyExists(_))
    ));
    capsules.destroy(&first.id).await.unwrap();
    assert_no_leftovers(&data_dir).await;
}

#[tokio::test]
async fn reclaim_removes_what_a_crashed_agent_left() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    let capsules = setup(&data_dir, MAX_SLOTS).await;
    capsules.create(request(true)).await.expect("create");
    capsules.create(request(false)).await.expect("create");
    // The "crash": the agent's state is gone, sandboxes and network state stay.
    drop(capsules);

    let runtime = runtime(&data_dir).await;
    let report = capsule::reclaim(&data_dir, &runtime)
        .await
        .expect("reclaim");
    eprintln!("reclaim: {report:?}");
    assert_eq!(report.sandboxes, 2);
    assert_eq!(report.network.netns, 2);
    assert!(report.network.nft_table);
    assert_eq!(report.capsule_dirs, 2);
    assert_no_leftovers(&data_dir).await;
    let table = Command::new("nft")
        .args(["list", "table", "inet", "wrenn"])
        .output()
        .unwrap();
    assert!(!table.status.success(), "nft table survived reclaim");
}

/// Proportional set size (KiB; shared pages such as runsc's text split among the processes
/// mapping them) and CPU ticks of every process under our runsc root.
fn sandbox_footprint(root: &str) -> (u64, u64) {
    let mut pss_kib = 0;
    let mut ticks = 0;
    for pid in runsc_processes(root) {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            pss_kib += status
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // utime and stime are fields 14 and 15; skip past the parenthesised comm first.
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            ticks += fields
                .get(11)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            ticks += fields
                .get(12)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (pss_kib, ticks)
}

/// Not a pass/fail test: prints create latency and idle footprint.
/// `cargo test --release -p wrenn-agent --test gvisor measure -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn measure_create_latency_and_idle_footprint() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    let capsules = setup(&data_dir, MAX_SLOTS).await;
    let count = 10;
    let mut creates = Vec::new();
    let mut boots = Vec::new();
    let mut live = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        let capsule = capsules.create(request(true)).await.expect("create");
        creates.push(started.elapsed());
        boots.push(capsule.boot_time);
        live.push(capsule);
    }
    creates.sort();
    boots.sort();
    eprintln!(
        "create (slot+netns+runsc run+envd /health): p50 {:?} min {:?} max {:?}; runtime start→health p50 {:?}",
        creates[count / 2],
        creates[0],
        creates[count - 1],
        boots[count / 2]
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let root = data_dir.runsc_root().to_string_lossy().into_owned();
    let (pss_kib, ticks_before) = sandbox_footprint(&root);
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let (_, ticks_after) = sandbox_footprint(&root);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_pct = (ticks_after - ticks_before) as f64 / hz / window.as_secs_f64() * 100.0;
    eprintln!(
        "{count} idle capsules: PSS {:.1} MiB per capsule (sandbox+gofer), idle CPU {:.1}% of one core in total",
        pss_kib as f64 / 1024.0 / count as f64,
        cpu_pct
    );
    let started = Instant::now();
    for capsule in &live {
        capsules.destroy(&capsule.id).await.unwrap();
    }
    eprintln!(
        "destroy: {:?} per capsule",
        started.elapsed() / count as u32
    );
    assert_no_leftovers(&data_dir).await;
}
