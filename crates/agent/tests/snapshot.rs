//! Pause/resume and snapshot templates on gVisor: a counter process keeps counting across pause
//! → resume and into three concurrent clones of a snapshot template, files survive, a user HTTP
//! server answers from the host after resume, every clone has its own `WRENN_SANDBOX_ID`, and
//! nothing is left afterwards.
//!
//! Needs root, runsc and debootstrap like tests/gvisor.rs (same data dir and lock).

mod common;

use common::{assert_no_leftovers, fixture, request, runtime, serial, setup};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use wrenn_agent::capsule::{Capsule, CapsuleStatus, Capsules};
use wrenn_agent::envd;
use wrenn_agent::runtime::Runtime;
use wrenn_agent::runtime::gvisor::GvisorRuntime;
use wrenn_agent::snapshot::{CloneRequest, ResumeOptions, SnapshotError};
use wrenn_agent::{CapsuleId, DataDir};

const MAX_SLOTS: u32 = 64;
const TEMPLATE: &str = "snaptest";
const COUNTER: &str = "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count.tmp; mv /tmp/count.tmp /tmp/count; sleep 0.2; done' >/dev/null 2>&1 < /dev/null &";
const HTTP_SERVER: &str =
    "cd /root && setsid python3 -m http.server 8000 >/dev/null 2>&1 < /dev/null &";

/// Combined output of `sh -c script` run through envd. Never `runsc exec`: a process it
/// started and still alive at checkpoint makes the image unrestorable.
async fn exec(capsule: &Capsule, script: &str) -> String {
    common::envd_sh(capsule, script).await.1
}

/// The counter's current value (0 when unreadable).
async fn count(capsule: &Capsule) -> u64 {
    let out = exec(capsule, "cat /tmp/count").await;
    out.trim().parse().unwrap_or(0)
}

/// Waits until the counter exceeds `above`, returning its value.
async fn count_above(capsule: &Capsule, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = count(capsule).await;
        if value > above {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "counter of {} stuck at {value} (≤ {above})",
            capsule.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /` from the host; the HTTP status code.
fn http_get(addr: SocketAddr) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

/// Polls the capsule's user HTTP server from the host until it answers 200.
async fn http_ok(capsule: &Capsule) {
    let addr = SocketAddr::from((capsule.network.capsule_ip(), 8000));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::task::spawn_blocking(move || http_get(addr))
            .await
            .unwrap();
        if matches!(got, Ok(200)) {
            return;
        }
        assert!(Instant::now() < deadline, "{addr}: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn clean_template(data_dir: &DataDir) {
    let _ = std::fs::remove_dir_all(data_dir.template(TEMPLATE).unwrap());
    let _ = std::fs::remove_dir_all(data_dir.snapshots());
}

fn netns_exists(capsule: &Capsule) -> bool {
    capsule.network.netns_path().exists()
}

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

async fn assert_all_gone(data_dir: &DataDir, capsules: &Capsules<GvisorRuntime>) {
    let _ = capsules;
    assert_no_leftovers(data_dir).await;
    let snapshots = entries(&data_dir.snapshots());
    assert!(snapshots.is_empty(), "snapshots left: {snapshots:?}");
    assert!(!data_dir.template(TEMPLATE).unwrap().exists());
    let staging: Vec<_> = entries(&data_dir.images())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".snaptest."))
        .collect();
    assert!(staging.is_empty(), "template staging left: {staging:?}");
}

#[tokio::test]
async fn pause_resume_and_snapshot_template_clones() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    clean_template(&data_dir);
    let capsules = setup(&data_dir, MAX_SLOTS).await;

    let capsule = capsules.create(request(true)).await.expect("create");
    let started = exec(
        &capsule,
        &format!("{COUNTER} {HTTP_SERVER} echo persisted > /root/file.txt; echo ok"),
    )
    .await;
    assert_eq!(started.trim(), "ok");
    count_above(&capsule, 3).await;
    // An inbound request leaves TCP state (TIME_WAIT) behind: the checkpoint must cope.
    http_ok(&capsule).await;

    // Pause: the sandbox and the network are released, the state is on disk.
    let before = count(&capsule).await;
    let report = capsules.pause(&capsule.id).await.expect("pause");
    eprintln!(
        "pause: {:?}, image {} KiB",
        report.elapsed,
        report.image_bytes / 1024
    );
    assert_eq!(
        capsules.runtime().state(&capsule.id).await.unwrap(),
        None,
        "runsc container still exists after pause"
    );
    assert!(!netns_exists(&capsule), "netns kept after pause");
    assert_eq!(capsules.network().slots_in_use(), 0);
    let paused = capsules.get(&capsule.id).expect("paused capsule known");
    assert_eq!(paused.state.status, CapsuleStatus::Paused);
    assert!(matches!(
        capsules.pause(&capsule.id).await,
        Err(SnapshotError::Capsule(_))
    ));

    // Resume: same processes (the counter goes on from where it was), same files.
    let resume_started = Instant::now();
    let resumed = capsules
        .resume(&capsule.id, ResumeOptions::default())
        .await
        .expect("resume");
    eprintln!(
        "resume: {:?} at {}",
        resume_started.elapsed(),
        resumed.network.capsule_ip()
    );
    assert_eq!(resumed.state.status, CapsuleStatus::Running);
    assert!(matches!(
        capsules.resume(&capsule.id, ResumeOptions::default()).await,
        Err(SnapshotError::NotPaused(_))
    ));
    let after = count(&resumed).await;
    assert!(
        after >= before,
        "counter restarted: {after} after resume, {before} before pause"
    );
    count_above(&resumed, after).await;
    assert_eq!(exec(&resumed, "cat /root/file.txt").await, "persisted\n");
    http_ok(&resumed).await;

    // Snapshot template from the running capsule: it is paused, copied and resumed.
    let template = capsules
        .snapshot_template(&capsule.id, TEMPLATE)
        .await
        .expect("snapshot template");
    eprintln!("template: {:?}", template.meta);
    let source = template.source;
    assert_eq!(source.state.status, CapsuleStatus::Running);
    let source_count = count_above(&source, count(&source).await).await;
    assert!(matches!(
        capsules.snapshot_template(&capsule.id, TEMPLATE).await,
        Err(SnapshotError::TemplateExists(_))
    ));

    // Three clones at once, each with the counter alive and its own identity.
    let ids: Vec<CapsuleId> = (0..3).map(|_| CapsuleId::random().unwrap()).collect();
    let clone_started = Instant::now();
    let clones = futures::future::join_all(
        ids.iter()
            .map(|id| capsules.create_from_template(CloneRequest::new(id.clone(), TEMPLATE))),
    )
    .await;
    eprintln!("3 clones in {:?}", clone_started.elapsed());
    let clones: Vec<Capsule> = clones.into_iter().map(|c| c.expect("clone")).collect();
    let mut seen = std::collections::HashSet::new();
    let mut seen_random = std::collections::HashSet::new();
    for clone in &clones {
        let value = count(clone).await;
        assert!(value > 0, "clone {} has no counter", clone.id);
        count_above(clone, value).await;
        let identity = exec(
            clone,
            "cat /run/wrenn/.WRENN_SANDBOX_ID; echo; echo $WRENN_SANDBOX_ID; cat /root/file.txt",
        )
        .await;
        assert_eq!(
            identity,
            format!("{id}\n{id}\npersisted\n", id = clone.id),
            "clone identity"
        );
        assert!(seen.insert(clone.id.clone()));
        // Kernel randomness is drawn from the host at call time, not replayed from the image.
        let random = exec(clone, "od -An -tx1 -N16 /dev/urandom").await;
        assert!(
            seen_random.insert(random.clone()),
            "clones share randomness: {random}"
        );
        http_ok(clone).await;
    }
    // The source was not disturbed by its clones.
    count_above(&source, source_count).await;

    // The template is needed while its clones live.
    assert!(matches!(
        capsules.delete_template(TEMPLATE).await,
        Err(SnapshotError::TemplateInUse { .. })
    ));
    for clone in &clones {
        capsules.destroy(&clone.id).await.expect("destroy clone");
    }
    capsules.destroy(&capsule.id).await.expect("destroy source");
    capsules.delete_template(TEMPLATE).await.expect("delete");
    assert!(matches!(
        capsules.delete_template(TEMPLATE).await,
        Err(SnapshotError::TemplateNotFound(_))
    ));
    assert_all_gone(&data_dir, &capsules).await;
}

#[tokio::test]
async fn paused_capsule_is_destroyed_without_touching_its_old_slot() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    clean_template(&data_dir);
    let capsules = setup(&data_dir, 1).await;
    let first = capsules.create(request(true)).await.expect("create");
    capsules.pause(&first.id).await.expect("pause");
    // The only slot is free again: another capsule takes it …
    let second = capsules.create(request(true)).await.expect("second");
    assert_eq!(second.network.slot(), first.network.slot());
    // … and destroying the paused one leaves the second's network alone.
    capsules.destroy(&first.id).await.expect("destroy paused");
    envd::wait_healthy(second.envd_addr(), Duration::from_secs(5))
        .await
        .expect("second capsule unaffected");
    assert!(!data_dir.snapshot(&first.id).exists());
    capsules.destroy(&second.id).await.unwrap();
    assert_all_gone(&data_dir, &capsules).await;
}

/// The CPUs a capsule's sandbox is confined to (its cgroup's cpuset), or `None` without one.
fn pinned_cpus(id: &CapsuleId) -> Option<Vec<u32>> {
    let cpuset = wrenn_agent::metrics::CgroupLayout::detect().capsules_cpuset()?;
    let text = std::fs::read_to_string(cpuset.cpus(id.as_str())).ok()?;
    wrenn_agent::runtime::cpu_placement::parse_cpu_list(&text)
}

#[tokio::test]
async fn capsules_are_pinned_to_their_own_cpus_across_pause_and_resume() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if host_cpus < 2 {
        eprintln!("skipping: one CPU, nothing to place");
        return;
    }
    let _lock = serial().await;
    clean_template(&data_dir);
    let capsules = setup(&data_dir, MAX_SLOTS).await;
    let a = capsules.create(request(true)).await.expect("create a");
    let b = capsules.create(request(true)).await.expect("create b");
    let (Some(on_a), Some(on_b)) = (pinned_cpus(&a.id), pinned_cpus(&b.id)) else {
        eprintln!("skipping: no cpuset cgroup hierarchy on this host");
        capsules.destroy(&a.id).await.unwrap();
        capsules.destroy(&b.id).await.unwrap();
        return;
    };
    assert_eq!(on_a.len(), 1, "a 1-vCPU capsule gets one CPU: {on_a:?}");
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    assert_ne!(on_a, on_b, "two capsules share a CPU while another is free");
    // Pinned after boot: the sandbox is still sized by its quota (runsc: at least 2 CPUs).
    assert_eq!(exec(&a, "nproc").await.trim(), "2");

    exec(&a, &format!("{COUNTER} echo ok")).await;
    let before = count_above(&a, 1).await;
    capsules.pause(&a.id).await.expect("pause");
    assert_eq!(pinned_cpus(&a.id), None, "a paused capsule holds no CPU");
    let a = capsules
        .resume(&a.id, ResumeOptions::default())
        .await
        .expect("resume");
    let resumed_on = pinned_cpus(&a.id).expect("pinned again after resume");
    assert_eq!(resumed_on.len(), 1);
    assert_ne!(resumed_on, on_b, "resume picks the CPU b does not use");
    assert!(count_above(&a, before).await > before);

    // A capsule with as many vCPUs as the host has CPUs keeps them all.
    let mut wide = request(true);
    wide.vcpus = (host_cpus as u32).min(wrenn_agent::capsule::MAX_VCPUS);
    let wide = capsules.create(wide).await.expect("create wide");
    if host_cpus as u32 <= wrenn_agent::capsule::MAX_VCPUS {
        assert_eq!(
            pinned_cpus(&wide.id).map(|c| c.len()),
            Some(host_cpus),
            "a whole-host capsule is not pinned"
        );
    }
    for id in [&a.id, &b.id, &wide.id] {
        capsules.destroy(id).await.unwrap();
    }
    assert_all_gone(&data_dir, &capsules).await;
}

#[tokio::test]
async fn resume_takes_another_slot_when_its_own_is_taken() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    clean_template(&data_dir);
    let capsules = setup(&data_dir, MAX_SLOTS).await;
    let first = capsules.create(request(true)).await.expect("create");
    exec(&first, &format!("{COUNTER} echo ok")).await;
    let before = count_above(&first, 1).await;
    capsules.pause(&first.id).await.expect("pause");
    let blocker = capsules
        .network()
        .setup_preferring(true, first.network.slot())
        .await
        .unwrap();
    let resumed = capsules
        .resume(&first.id, ResumeOptions::default())
        .await
        .expect("resume");
    assert_ne!(resumed.network.slot(), first.network.slot());
    assert!(count_above(&resumed, before).await > before);
    capsules.network().teardown(&blocker).await.unwrap();
    capsules.destroy(&first.id).await.unwrap();
    assert_all_gone(&data_dir, &capsules).await;
}

#[tokio::test]
async fn paused_capsule_survives_an_agent_restart() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    clean_template(&data_dir);
    let capsules = setup(&data_dir, MAX_SLOTS).await;
    let capsule = capsules.create(request(true)).await.expect("create");
    exec(&capsule, &format!("{COUNTER} echo ok")).await;
    let before = count_above(&capsule, 1).await;
    capsules.pause(&capsule.id).await.expect("pause");
    // The "restart": a new agent core that knows only what is on disk.
    drop(capsules);
    let runtime = runtime(&data_dir).await;
    let network = wrenn_agent::network::Network::new(MAX_SLOTS)
        .await
        .expect("network");
    let capsules = Capsules::new(data_dir.clone(), network, runtime);
    let report = capsules.recover().await.expect("recover");
    assert_eq!(report.paused, vec![capsule.id.clone()], "{report:?}");
    let resumed = capsules
        .resume(&capsule.id, ResumeOptions::default())
        .await
        .expect("resume after restart");
    assert!(count_above(&resumed, before).await > before);
    capsules.destroy(&capsule.id).await.unwrap();
    assert_all_gone(&data_dir, &capsules).await;
}

/// Busy shell loops competing with the sandboxes for the CPU until dropped (separate processes:
/// they reproduced the restore crash below far more reliably than busy threads in this process).
struct CpuLoad(Vec<std::process::Child>);

impl CpuLoad {
    fn start(loops: usize) -> Self {
        CpuLoad(
            (0..loops)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Many pause/resume cycles with a process started through envd before each pause (its pipes
/// and the agent's connection are closed shortly before the checkpoint), while the host's CPUs
/// are busy. gVisor replays events of such deleted epoll interests after a restore; before envd
/// dropped them, envd (PID 1) crashed right after a restore within about ten cycles here (3 of
/// 3 runs), losing the capsule (see envd's `epoll_tokens`).
#[tokio::test]
async fn many_pause_resume_cycles_with_process_churn() {
    const CYCLES: u64 = 50;
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    let _load = CpuLoad::start(2);
    clean_template(&data_dir);
    let capsules = setup(&data_dir, MAX_SLOTS).await;
    let capsule = capsules.create(request(true)).await.expect("create");
    exec(&capsule, &format!("{COUNTER} echo ok")).await;
    let mut last = count_above(&capsule, 0).await;
    for cycle in 1..=CYCLES {
        capsules
            .pause(&capsule.id)
            .await
            .unwrap_or_else(|e| panic!("pause {cycle}: {e}"));
        let resumed = capsules
            .resume(&capsule.id, ResumeOptions::default())
            .await
            .unwrap_or_else(|e| panic!("resume {cycle} of {CYCLES}: {e}"));
        // A short-lived process with stdout and stderr pipes, right before the next pause.
        let now = count(&resumed).await;
        assert!(
            now >= last,
            "cycle {cycle}: counter went back from {last} to {now}"
        );
        last = now;
    }
    assert!(count_above(&capsule, last).await > last);
    capsules.destroy(&capsule.id).await.unwrap();
    assert_all_gone(&data_dir, &capsules).await;
}

/// Runs a command to completion through the agent's reaper-aware spawn (the runtime made this
/// process a subreaper that reaps unregistered children).
async fn run_timed(cmd: &mut tokio::process::Command) -> Duration {
    let started = Instant::now();
    // Files, not pipes: a detached runsc hands its stdio to the sandbox.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/tmp/wrenn-snapshot-measure.log")
        .unwrap();
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut child = wrenn_agent::command::spawn(cmd).unwrap();
    let status = wrenn_agent::command::wait(&mut child).await.unwrap();
    assert!(
        status.success(),
        "{cmd:?} failed (see /tmp/wrenn-snapshot-measure.log)"
    );
    started.elapsed()
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Not a pass/fail test: raw `runsc checkpoint`/`restore` of an idle capsule against the
/// agent's pause/resume, in the same run on the same image.
/// `cargo test --release -p wrenn-agent --test snapshot measure -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn measure_pause_resume_against_raw_runsc() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    clean_template(&data_dir);
    let capsules = setup(&data_dir, MAX_SLOTS).await;
    let capsule = capsules.create(request(true)).await.expect("create");
    let rounds = 7;
    let root = data_dir.runsc_root();
    let image = data_dir.root().join("measure-image");
    let a = &capsule.network.addressing;
    let (mut ckpt, mut delete, mut restore, mut restore_health) = (vec![], vec![], vec![], vec![]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..rounds {
        let _ = std::fs::remove_dir_all(&image);
        std::fs::create_dir_all(&image).unwrap();
        ckpt.push(
            run_timed(
                tokio::process::Command::new("runsc")
                    .arg("--root")
                    .arg(&root)
                    .arg("checkpoint")
                    .arg("--image-path")
                    .arg(&image)
                    .arg(capsule.id.as_str()),
            )
            .await,
        );
        delete.push(
            run_timed(
                tokio::process::Command::new("runsc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", capsule.id.as_str()]),
            )
            .await,
        );
        // runsc took the address when it adopted eth0; a restore into this netns needs it back.
        run_timed(tokio::process::Command::new("ip").args([
            "-n",
            &a.netns,
            "addr",
            "add",
            &format!("{}/{}", a.capsule_ip, a.prefix_len),
            "dev",
            "eth0",
        ]))
        .await;
        run_timed(tokio::process::Command::new("ip").args([
            "-n",
            &a.netns,
            "route",
            "replace",
            "default",
            "via",
            &a.host_ip.to_string(),
        ]))
        .await;
        let runsc = format!(
            "mount -t tmpfs -o ro,size=4k tmpfs /proc/sys/net && exec runsc --root {root} --platform=systrap --network=sandbox --net-disconnect-ok --overlay2 root:dir={dir}/overlay --cpu-num-from-quota restore --detach --bundle {dir}/bundle --image-path {image} {id}",
            root = root.display(),
            dir = capsule.dir.display(),
            image = image.display(),
            id = capsule.id,
        );
        let started = Instant::now();
        // /proc/sys/net hidden: runsc 20240729 misdetects the netns on Linux ≥ 6 otherwise.
        restore.push(
            run_timed(tokio::process::Command::new("unshare").args(["-m", "sh", "-c", &runsc]))
                .await,
        );
        envd::wait_healthy(capsule.envd_addr(), Duration::from_secs(10))
            .await
            .expect("envd after raw restore");
        restore_health.push(started.elapsed());
    }
    let image_kib = std::fs::read_dir(&image)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum::<u64>()
        / 1024;
    std::fs::remove_dir_all(&image).unwrap();

    let (mut pause, mut resume) = (vec![], vec![]);
    for _ in 0..rounds {
        let started = Instant::now();
        capsules.pause(&capsule.id).await.expect("pause");
        pause.push(started.elapsed());
        let started = Instant::now();
        capsules
            .resume(&capsule.id, ResumeOptions::default())
            .await
            .expect("resume");
        resume.push(started.elapsed());
    }
    let raw_ckpt = p50(ckpt);
    let raw_delete = p50(delete);
    let raw_restore = p50(restore);
    let raw_health = p50(restore_health);
    let (pause, resume) = (p50(pause), p50(resume));
    eprintln!("idle capsule, {rounds} rounds, p50; image {image_kib} KiB");
    eprintln!(
        "raw: runsc checkpoint {raw_ckpt:?}, delete {raw_delete:?}, runsc restore --detach {raw_restore:?} (to envd /health {raw_health:?})"
    );
    eprintln!("agent: pause {pause:?}, resume (to /health + /init) {resume:?}");
    eprintln!(
        "ratio (pause+resume)/(checkpoint+restore) = {:.2}; vs raw incl. delete and /health = {:.2}",
        (pause + resume).as_secs_f64() / (raw_ckpt + raw_restore).as_secs_f64(),
        (pause + resume).as_secs_f64() / (raw_ckpt + raw_delete + raw_health).as_secs_f64()
    );
    capsules.destroy(&capsule.id).await.unwrap();
    assert_all_gone(&data_dir, &capsules).await;
}

#[tokio::test]
async fn failed_checkpoint_reports_a_lost_capsule_and_cleans_up() {
    let Some(data_dir) = fixture().await else {
        return;
    };
    let _lock = serial().await;
    clean_template(&data_dir);
    let capsules = setup(&data_dir, MAX_SLOTS).await;
    let capsule = capsules.create(request(true)).await.expect("create");
    // A full disk: a 64 KiB tmpfs where the checkpoint image goes.
    let snapshots = data_dir.snapshots();
    std::fs::create_dir_all(&snapshots).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&snapshots)
        .status()
        .unwrap();
    assert!(mounted.success());
    let result = capsules.pause(&capsule.id).await;
    let unmounted = std::process::Command::new("umount")
        .arg(&snapshots)
        .status()
        .unwrap();
    assert!(unmounted.success());
    let err = result.expect_err("checkpoint onto a full disk succeeded");
    eprintln!("failed pause: {err}");
    assert!(matches!(err, SnapshotError::Lost { .. }), "{err}");
    assert!(capsules.get(&capsule.id).is_none());
    assert_eq!(capsules.runtime().state(&capsule.id).await.unwrap(), None);
    assert_all_gone(&data_dir, &capsules).await;
}
