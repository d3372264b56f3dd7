//! Per-capsule resource metrics: CPU %, memory and disk bytes sampled every second into ring
//! buffers (spec §B.2 metrics, §E `GetSandboxMetrics` / `FlushSandboxMetrics`).
//!
//! Tiers: 10 min of raw 1-s samples (600), 2 h of 30-s averages (240), 24 h of 5-min averages
//! (288). Averages are bucketed on wall-clock boundaries (`timestamp / width`), stamped with the
//! bucket's start; the bucket still filling is returned too (as the newest point), so a capsule
//! younger than 30 s still shows up in the `2h` range and a flush loses nothing.
//!
//! What is measured (all cheap file reads; measured under runsc 2024-07-29, systrap):
//! - **CPU**: the capsule cgroup's CPU time (v2 `cpu.stat` `usage_usec`, v1 `cpuacct.usage`)
//!   delta over the wall-clock delta, as a percentage of the capsule's vCPUs (0–100, the spec's
//!   "normalised to vCPUs"): one busy thread in a 1-vCPU capsule reads ~100, in a 2-vCPU capsule
//!   ~50. It includes gVisor's own overhead (sentry, gofer), which is what the host pays.
//! - **Memory**: the cgroup's "working set": usage (v2 `memory.current`, v1
//!   `memory.usage_in_bytes`) minus inactive file cache (`memory.stat`). Raw usage is wrong under
//!   runsc: the host page cache of the overlay filestore is charged to the cgroup, so writing
//!   50 MB to disk shows up as +50 MB of "memory". Guest tmpfs (`/tmp`, `/dev/shm`) is real
//!   sentry memory and is counted. `runsc events --stats` reports only the sentry's application
//!   memory (no overhead) and costs a process spawn (~50 ms) per capsule per second; not used.
//! - **Disk**: allocated bytes (`st_blocks × 512`, not the sparse 1 GiB size) of the capsule's
//!   overlay upper layer. runsc (`--overlay2=root:dir=<capsule>/overlay`) creates
//!   `<overlay>/runsc-filestore-<n>` and unlinks it at once; the sandbox process keeps it open,
//!   so it is found via `/proc/<pid>/fd` of the cgroup's processes (the fd is cached after the
//!   first hit). Regular files still linked in the overlay dir are counted too.

//!
//! Wiring (service): one [`Metrics`] and [`Metrics::spawn`] at startup;
//! `track(id, metrics.gvisor_source(&id, &capsule.dir, vcpus))` after create, resume and
//! re-adoption; [`Metrics::stop`] before a pause (points stay for `FlushSandboxMetrics`);
//! [`Metrics::untrack`] on destroy. `GetSandboxMetrics`: `range.parse::<Range>()` (error →
//! invalid_argument) then [`Metrics::query`] (`None` → not_found); `FlushSandboxMetrics`:
//! [`Metrics::flush`]. After a resume the working set starts higher than before the pause
//! (measured ~30 → ~110 MB, mostly anonymous memory: runsc restore loads the image into
//! sentry memory); that is the host's real cost then (how fast it falls was not measured).

use crate::id::CapsuleId;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Sampling period of the raw tier.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
const RAW_CAPACITY: usize = 600;
const MID_WIDTH_SECS: i64 = 30;
const MID_CAPACITY: usize = 240;
const LONG_WIDTH_SECS: i64 = 300;
const LONG_CAPACITY: usize = 288;
/// Prefix of the (unlinked) overlay filestore file runsc creates in the overlay dir.
const FILESTORE_PREFIX: &str = "runsc-filestore-";
/// Parent cgroup of every capsule; must match `cgroups_path` in `runtime/gvisor.rs`.
const CGROUP_PARENT: &str = "wrenn";

/// One point of the wire `MetricPoint` (spec §E): field for field.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MetricPoint {
    pub timestamp_unix: i64,
    /// 0–100, relative to the capsule's vCPUs.
    pub cpu_pct: f64,
    pub mem_bytes: i64,
    pub disk_bytes: i64,
}

/// The three tiers, returned by a flush (`FlushSandboxMetrics`: points_10m, points_2h, points_24h).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flushed {
    pub points_10m: Vec<MetricPoint>,
    pub points_2h: Vec<MetricPoint>,
    pub points_24h: Vec<MetricPoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Raw 1-s samples, 10 minutes.
    Raw,
    /// 30-s averages, 2 hours.
    Mid,
    /// 5-min averages, 24 hours.
    Long,
}

/// A query range: which tier to read and how far back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub tier: Tier,
    pub window: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid metrics range {0:?}: expected 5m, 10m, 1h, 2h, 6h, 12h or 24h")]
pub struct InvalidRange(pub String);

impl FromStr for Range {
    type Err = InvalidRange;

    /// The spec's ranges (§B.2): `10m`/`2h`/`24h` are the tiers; `5m`, `1h`, `6h`, `12h` read
    /// the matching tier with a shorter cutoff. Empty means the default `10m`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tier, secs) = match s {
            "" | "10m" => (Tier::Raw, 600),
            "5m" => (Tier::Raw, 300),
            "1h" => (Tier::Mid, 3600),
            "2h" => (Tier::Mid, 7200),
            "6h" => (Tier::Long, 6 * 3600),
            "12h" => (Tier::Long, 12 * 3600),
            "24h" => (Tier::Long, 24 * 3600),
            other => return Err(InvalidRange(other.to_owned())),
        };
        Ok(Self {
            tier,
            window: Duration::from_secs(secs),
        })
    }
}

impl Default for Range {
    /// `10m`, the spec's default.
    fn default() -> Self {
        Self {
            tier: Tier::Raw,
            window: Duration::from_secs(600),
        }
    }
}

/// One measurement, before it is stamped.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    pub cpu_pct: f64,
    pub mem_bytes: u64,
    pub disk_bytes: u64,
}

/// Running sum of the samples that fall into one bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: i64,
    count: u32,
    cpu: f64,
    mem: u128,
    disk: u128,
}

impl Bucket {
    fn new(start: i64) -> Self {
        Self {
            start,
            count: 0,
            cpu: 0.0,
            mem: 0,
            disk: 0,
        }
    }

    fn add(&mut self, s: &Sample) {
        self.count += 1;
        self.cpu += s.cpu_pct;
        self.mem += u128::from(s.mem_bytes);
        self.disk += u128::from(s.disk_bytes);
    }

    fn average(&self) -> MetricPoint {
        let n = u128::from(self.count.max(1));
        MetricPoint {
            timestamp_unix: self.start,
            cpu_pct: self.cpu / f64::from(self.count.max(1)),
            mem_bytes: clamp_i64(self.mem / n),
            disk_bytes: clamp_i64(self.disk / n),
        }
    }
}

fn clamp_i64(v: u128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A fixed-capacity ring of averaged points plus the bucket being filled.
#[derive(Debug, Clone)]
struct AvgRing {
    width: i64,
    capacity: usize,
    done: VecDeque<MetricPoint>,
    current: Option<Bucket>,
}

impl AvgRing {
    fn new(width: i64, capacity: usize) -> Self {
        Self {
            width,
            capacity,
            done: VecDeque::with_capacity(capacity),
            current: None,
        }
    }

    fn push(&mut self, ts: i64, sample: &Sample) {
        let start = ts.div_euclid(self.width) * self.width;
        match &mut self.current {
            Some(bucket) if bucket.start == start => bucket.add(sample),
            // A clock step backwards lands in an older bucket: fold it into the current one
            // rather than reordering history.
            Some(bucket) if start < bucket.start => bucket.add(sample),
            current => {
                if let Some(finished) = current.take() {
                    push_bounded(&mut self.done, self.capacity, finished.average());
                }
                let mut bucket = Bucket::new(start);
                bucket.add(sample);
                *current = Some(bucket);
            }
        }
    }

    /// Finished points plus the partial bucket, oldest first.
    fn points(&self) -> Vec<MetricPoint> {
        let mut out: Vec<MetricPoint> = self.done.iter().copied().collect();
        out.extend(self.current.map(|b| b.average()));
        if out.len() > self.capacity {
            out.remove(0);
        }
        out
    }
}

fn push_bounded(ring: &mut VecDeque<MetricPoint>, capacity: usize, point: MetricPoint) {
    if ring.len() == capacity {
        ring.pop_front();
    }
    ring.push_back(point);
}

/// The three tiers of one capsule. Pure data: time comes from the caller.
#[derive(Debug, Clone)]
pub struct Series {
    raw: VecDeque<MetricPoint>,
    mid: AvgRing,
    long: AvgRing,
}

impl Default for Series {
    fn default() -> Self {
        Self::new()
    }
}

impl Series {
    pub fn new() -> Self {
        Self {
            raw: VecDeque::with_capacity(RAW_CAPACITY),
            mid: AvgRing::new(MID_WIDTH_SECS, MID_CAPACITY),
            long: AvgRing::new(LONG_WIDTH_SECS, LONG_CAPACITY),
        }
    }

    /// Records a sample taken at `timestamp_unix` into all three tiers.
    pub fn push(&mut self, timestamp_unix: i64, sample: Sample) {
        let point = MetricPoint {
            timestamp_unix,
            cpu_pct: sample.cpu_pct,
            mem_bytes: clamp_i64(u128::from(sample.mem_bytes)),
            disk_bytes: clamp_i64(u128::from(sample.disk_bytes)),
        };
        push_bounded(&mut self.raw, RAW_CAPACITY, point);
        self.mid.push(timestamp_unix, &sample);
        self.long.push(timestamp_unix, &sample);
    }

    pub fn tier(&self, tier: Tier) -> Vec<MetricPoint> {
        match tier {
            Tier::Raw => self.raw.iter().copied().collect(),
            Tier::Mid => self.mid.points(),
            Tier::Long => self.long.points(),
        }
    }

    /// Points of the range's tier not older than `now - window`, oldest first.
    pub fn query(&self, range: Range, now_unix: i64) -> Vec<MetricPoint> {
        let window = i64::try_from(range.window.as_secs()).unwrap_or(i64::MAX);
        let cutoff = now_unix.saturating_sub(window);
        self.tier(range.tier)
            .into_iter()
            .filter(|p| p.timestamp_unix >= cutoff)
            .collect()
    }

    pub fn flush(&mut self) -> Flushed {
        let flushed = Flushed {
            points_10m: self.tier(Tier::Raw),
            points_2h: self.tier(Tier::Mid),
            points_24h: self.tier(Tier::Long),
        };
        *self = Self::new();
        flushed
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty() && self.mid.current.is_none() && self.long.current.is_none()
    }
}

/// Which cgroup hierarchy the host uses for the capsule cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v2: one tree at `root`.
    Unified { root: PathBuf },
    /// cgroup v1 (or hybrid): per-controller mount points.
    Legacy {
        cpuacct: PathBuf,
        memory: PathBuf,
        cpuset: Option<PathBuf>,
    },
}

impl CgroupLayout {
    /// Reads `/proc/self/mounts`. A v1 `memory` hierarchy wins over a controller-less v2 mount
    /// (hybrid hosts mount v2 at `/sys/fs/cgroup/unified` with no controllers; runsc then uses
    /// v1).
    pub fn detect() -> Self {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        Self::from_mounts(&mounts)
    }

    pub fn from_mounts(mounts: &str) -> Self {
        let mut unified = None;
        let mut cpuacct = None;
        let mut memory = None;
        let mut cpuset = None;
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, target, fstype, options, ..] = fields[..] else {
                continue;
            };
            let target = PathBuf::from(unescape_mount_path(target));
            match fstype {
                "cgroup2" => {
                    unified.get_or_insert(target);
                }
                "cgroup" => {
                    let opts: Vec<&str> = options.split(',').collect();
                    if opts.contains(&"cpuacct") {
                        cpuacct.get_or_insert(target.clone());
                    }
                    if opts.contains(&"cpuset") {
                        cpuset.get_or_insert(target.clone());
                    }
                    if opts.contains(&"memory") {
                        memory.get_or_insert(target);
                    }
                }
                _ => {}
            }
        }
        match (cpuacct, memory, unified) {
            (Some(cpuacct), Some(memory), _) => Self::Legacy {
                cpuacct,
                memory,
                cpuset,
            },
            (_, _, Some(root)) => Self::Unified { root },
            _ => Self::Unified {
                root: PathBuf::from("/sys/fs/cgroup"),
            },
        }
    }

    /// Files of the cgroup at `relative` (e.g. `/wrenn/<id>`).
    pub fn paths(&self, relative: &Path) -> CgroupPaths {
        let rel = relative.strip_prefix("/").unwrap_or(relative);
        match self {
            Self::Unified { root } => {
                let dir = root.join(rel);
                CgroupPaths {
                    cpu: CpuFile::UsageUsecInStat(dir.join("cpu.stat")),
                    memory_usage: dir.join("memory.current"),
                    memory_stat: dir.join("memory.stat"),
                    procs: dir.join("cgroup.procs"),
                }
            }
            Self::Legacy {
                cpuacct, memory, ..
            } => {
                let mem = memory.join(rel);
                CgroupPaths {
                    cpu: CpuFile::UsageNanos(cpuacct.join(rel).join("cpuacct.usage")),
                    memory_usage: mem.join("memory.usage_in_bytes"),
                    memory_stat: mem.join("memory.stat"),
                    procs: mem.join("cgroup.procs"),
                }
            }
        }
    }

    /// Files of a gVisor capsule's cgroup (`/wrenn/<id>`, see `runtime/gvisor.rs`).
    pub fn capsule(&self, id: &CapsuleId) -> CgroupPaths {
        self.paths(&Path::new("/").join(CGROUP_PARENT).join(id.as_str()))
    }

    /// The cpuset directory holding every capsule's cgroup (`…/wrenn`), if the host has a
    /// cpuset hierarchy (v1 mounts it on its own; v2 has one tree).
    pub fn capsules_cpuset(&self) -> Option<CpusetDir> {
        match self {
            Self::Unified { root } => Some(CpusetDir {
                dir: root.join(CGROUP_PARENT),
                unified: true,
            }),
            Self::Legacy { cpuset, .. } => cpuset.as_ref().map(|mount| CpusetDir {
                dir: mount.join(CGROUP_PARENT),
                unified: false,
            }),
        }
    }
}

/// A cpuset cgroup directory; v1 and v2 name the effective CPU list differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpusetDir {
    pub dir: PathBuf,
    pub unified: bool,
}

impl CpusetDir {
    /// The CPUs granted (writable) in cgroup `name` below this directory.
    pub fn cpus(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("cpuset.cpus")
    }

    /// The CPUs this directory's cgroups may use at all.
    pub fn effective(&self) -> PathBuf {
        self.dir.join(if self.unified {
            "cpuset.cpus.effective"
        } else {
            "cpuset.effective_cpus"
        })
    }
}

/// `/proc/mounts` escapes spaces and friends as octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuFile {
    /// v2 `cpu.stat`, line `usage_usec N`.
    UsageUsecInStat(PathBuf),
    /// v1 `cpuacct.usage`, nanoseconds.
    UsageNanos(PathBuf),
}

/// The files read for one capsule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPaths {
    pub cpu: CpuFile,
    pub memory_usage: PathBuf,
    pub memory_stat: PathBuf,
    /// The processes (sandbox, gofer) whose fds may hold the overlay filestore.
    pub procs: PathBuf,
}

impl CgroupPaths {
    /// Total CPU time in nanoseconds.
    pub fn cpu_nanos(&self) -> std::io::Result<u64> {
        match &self.cpu {
            CpuFile::UsageNanos(path) => parse_u64(&std::fs::read_to_string(path)?),
            CpuFile::UsageUsecInStat(path) => {
                let text = std::fs::read_to_string(path)?;
                let usec = stat_field(&text, "usage_usec").ok_or_else(|| invalid(path))?;
                Ok(usec.saturating_mul(1000))
            }
        }
    }

    /// Usage minus inactive file cache (the working set).
    pub fn memory_bytes(&self) -> std::io::Result<u64> {
        let usage = parse_u64(&std::fs::read_to_string(&self.memory_usage)?)?;
        let stat = std::fs::read_to_string(&self.memory_stat).unwrap_or_default();
        // v1 reports the hierarchical figure as total_*; v2 only has the plain name.
        let inactive = stat_field(&stat, "total_inactive_file")
            .or_else(|| stat_field(&stat, "inactive_file"))
            .unwrap_or(0);
        Ok(usage.saturating_sub(inactive))
    }

    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(&self.procs)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

fn invalid(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("unexpected content in {}", path.display()),
    )
}

fn parse_u64(text: &str) -> std::io::Result<u64> {
    text.trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// What the sampler reads for one capsule.
#[derive(Debug, Clone)]
pub struct MetricSource {
    pub cgroup: CgroupPaths,
    /// The runtime's overlay directory (`<capsule dir>/overlay` for gVisor).
    pub overlay_dir: PathBuf,
    /// Normalises CPU %: 100 = all vCPUs busy.
    pub vcpus: u32,
}

/// Where the unlinked filestore was last found: `/proc/<pid>/fd/<fd>`.
#[derive(Debug, Clone)]
struct DiskProbe {
    fd_path: Option<PathBuf>,
}

impl DiskProbe {
    fn measure(&mut self, source: &MetricSource) -> u64 {
        linked_bytes(&source.overlay_dir) + self.unlinked_bytes(source)
    }

    fn unlinked_bytes(&mut self, source: &MetricSource) -> u64 {
        if let Some(path) = &self.fd_path {
            if is_filestore(path, &source.overlay_dir)
                && let Ok(meta) = std::fs::metadata(path)
            {
                return allocated(&meta);
            }
            self.fd_path = None;
        }
        for pid in source.cgroup.pids() {
            let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
            let Ok(entries) = std::fs::read_dir(&fd_dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if is_filestore(&path, &source.overlay_dir)
                    && let Ok(meta) = std::fs::metadata(&path)
                {
                    self.fd_path = Some(path);
                    return allocated(&meta);
                }
            }
        }
        0
    }
}

fn is_filestore(fd_path: &Path, overlay_dir: &Path) -> bool {
    std::fs::read_link(fd_path).is_ok_and(|target| {
        // With the capsule's disk mounted on the overlay dir (crate::disk), the sandbox (which
        // pivoted away from the host's root) sees the file at that filesystem's root.
        (target.parent() == Some(overlay_dir) || target.parent() == Some(Path::new("/")))
            && target
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(FILESTORE_PREFIX) && n.ends_with(" (deleted)"))
    })
}

fn allocated(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks().saturating_mul(512)
}

/// Regular files still linked in the overlay dir (not recursive: runsc keeps one flat dir).
fn linked_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| allocated(&m))
        .sum()
}

struct Tracked {
    /// `None` once sampling stopped (capsule paused) while its points await a flush.
    source: Option<MetricSource>,
    disk: DiskProbe,
    /// CPU time and when it was read, for the next delta.
    last_cpu: Option<(u64, Instant)>,
    series: Series,
    /// Logged once per capsule, not once a second.
    warned: bool,
}

impl Tracked {
    fn sample(&mut self) -> Option<Sample> {
        let source = self.source.as_ref()?;
        let now = Instant::now();
        let cpu = source.cgroup.cpu_nanos();
        let mem = source.cgroup.memory_bytes();
        let (cpu, mem) = match (cpu, mem) {
            (Ok(cpu), Ok(mem)) => (cpu, mem),
            (Err(e), _) | (_, Err(e)) => {
                // The cgroup disappears when the sandbox stops before untrack; not an error.
                if !self.warned {
                    tracing::debug!(error = %e, "metrics: cgroup not readable");
                    self.warned = true;
                }
                self.last_cpu = None;
                return None;
            }
        };
        let previous = self.last_cpu.replace((cpu, now));
        // The first reading only sets the baseline: a % needs two.
        let (prev_cpu, prev_at) = previous?;
        let elapsed = now.duration_since(prev_at).as_secs_f64();
        let vcpus = f64::from(source.vcpus.max(1));
        let cpu_pct = if elapsed > 0.0 {
            (cpu.saturating_sub(prev_cpu) as f64 / 1e9 / elapsed / vcpus * 100.0).clamp(0.0, 100.0)
        } else {
            0.0
        };
        let disk_bytes = self.disk.measure(source);
        Some(Sample {
            cpu_pct,
            mem_bytes: mem,
            disk_bytes,
        })
    }
}

/// The sampler's shared state; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    layout: Arc<CgroupLayout>,
    capsules: Arc<Mutex<HashMap<CapsuleId, Tracked>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Detects the host's cgroup layout.
    pub fn new() -> Self {
        Self::with_layout(CgroupLayout::detect())
    }

    pub fn with_layout(layout: CgroupLayout) -> Self {
        Self {
            layout: Arc::new(layout),
            capsules: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// The source of a gVisor capsule: cgroup `/wrenn/<id>` and `<capsule dir>/overlay`.
    pub fn gvisor_source(&self, id: &CapsuleId, capsule_dir: &Path, vcpus: u32) -> MetricSource {
        MetricSource {
            cgroup: self.layout.capsule(id),
            overlay_dir: capsule_dir.join("overlay"),
            vcpus,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CapsuleId, Tracked>> {
        self.capsules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts (or, after a resume, restarts) sampling a capsule. Points kept since a
    /// [`Metrics::stop`] and not yet flushed continue in the same series.
    pub fn track(&self, id: CapsuleId, source: MetricSource) {
        // Baseline now, so the first tick already yields a CPU %.
        let last_cpu = source.cgroup.cpu_nanos().ok().map(|n| (n, Instant::now()));
        let mut capsules = self.lock();
        let series = capsules.remove(&id).map(|t| t.series).unwrap_or_default();
        capsules.insert(
            id,
            Tracked {
                source: Some(source),
                disk: DiskProbe { fd_path: None },
                last_cpu,
                series,
                warned: false,
            },
        );
    }

    /// Stops sampling (pause) but keeps the points until [`Metrics::flush`] or a new
    /// [`Metrics::track`] (resume). Returns whether the capsule was tracked.
    pub fn stop(&self, id: &CapsuleId) -> bool {
        match self.lock().get_mut(id) {
            Some(t) => {
                t.source = None;
                t.last_cpu = None;
                true
            }
            None => false,
        }
    }

    /// Stops sampling and returns everything recorded (destroy).
    pub fn untrack(&self, id: &CapsuleId) -> Option<Flushed> {
        self.lock().remove(id).map(|mut t| t.series.flush())
    }

    /// `FlushSandboxMetrics`: returns all three tiers and clears them. A running capsule keeps
    /// being sampled; a stopped one is forgotten. `None` when the capsule is unknown.
    pub fn flush(&self, id: &CapsuleId) -> Option<Flushed> {
        let mut capsules = self.lock();
        let tracked = capsules.get_mut(id)?;
        let flushed = tracked.series.flush();
        if tracked.source.is_none() {
            capsules.remove(id);
        }
        Some(flushed)
    }

    /// `GetSandboxMetrics`: the range's points, oldest first. `None` when the capsule is unknown.
    pub fn query(&self, id: &CapsuleId, range: Range) -> Option<Vec<MetricPoint>> {
        self.query_at(id, range, unix_now())
    }

    pub fn query_at(
        &self,
        id: &CapsuleId,
        range: Range,
        now_unix: i64,
    ) -> Option<Vec<MetricPoint>> {
        self.lock().get(id).map(|t| t.series.query(range, now_unix))
    }

    pub fn is_tracked(&self, id: &CapsuleId) -> bool {
        self.lock().get(id).is_some_and(|t| t.source.is_some())
    }

    /// One sampling round over every tracked capsule. Blocking file I/O: call from
    /// `spawn_blocking` (the sampler task does).
    pub fn sample_once(&self) {
        let ts = unix_now();
        // Read outside the lock would need cloning sources; the reads are a few small sysfs
        // files per capsule (~µs), so holding the lock is cheaper than the bookkeeping.
        let mut capsules = self.lock();
        for tracked in capsules.values_mut() {
            if let Some(sample) = tracked.sample() {
                tracked.series.push(ts, sample);
            }
        }
    }

    /// Starts the sampler task (every [`SAMPLE_INTERVAL`]). Dropping the handle stops it.
    pub fn spawn(&self) -> SamplerHandle {
        self.spawn_every(SAMPLE_INTERVAL)
    }

    pub fn spawn_every(&self, interval: Duration) -> SamplerHandle {
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let metrics = self.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            // After a stall, sample once rather than a burst of catch-up ticks.
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = ticker.tick() => {}
                }
                let round = metrics.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || round.sample_once()).await {
                    tracing::warn!(error = %e, "metrics sampling round panicked");
                }
            }
        });
        SamplerHandle {
            stop: Some(stop_tx),
            task: Some(task),
        }
    }
}

/// Cancel handle of the sampler task.
pub struct SamplerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SamplerHandle {
    /// Stops the task and waits for the round in progress to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SamplerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(cpu: f64, mem: u64, disk: u64) -> Sample {
        Sample {
            cpu_pct: cpu,
            mem_bytes: mem,
            disk_bytes: disk,
        }
    }

    #[test]
    fn parses_ranges() {
        assert_eq!("10m".parse::<Range>().unwrap().tier, Tier::Raw);
        assert_eq!(
            "".parse::<Range>().unwrap().window,
            Duration::from_secs(600)
        );
        assert_eq!(
            "5m".parse::<Range>().unwrap().window,
            Duration::from_secs(300)
        );
        assert_eq!("2h".parse::<Range>().unwrap().tier, Tier::Mid);
        assert_eq!("1h".parse::<Range>().unwrap().tier, Tier::Mid);
        assert_eq!("24h".parse::<Range>().unwrap().tier, Tier::Long);
        assert_eq!("12h".parse::<Range>().unwrap().tier, Tier::Long);
        assert!("30d".parse::<Range>().is_err());
        assert!("10M".parse::<Range>().is_err());
    }

    #[test]
    fn raw_tier_keeps_the_last_600_seconds() {
        let mut series = Series::new();
        let t0 = 1_700_000_000;
        for i in 0..1000 {
            series.push(t0 + i, s(i as f64 % 100.0, i as u64, 0));
        }
        let raw = series.tier(Tier::Raw);
        assert_eq!(raw.len(), 600);
        assert_eq!(raw[0].timestamp_unix, t0 + 400);
        assert_eq!(raw[599].timestamp_unix, t0 + 999);
        let now = t0 + 999;
        let last5m = series.query("5m".parse().unwrap(), now);
        assert_eq!(last5m.len(), 301);
        assert!(
            last5m
                .windows(2)
                .all(|w| w[0].timestamp_unix < w[1].timestamp_unix)
        );
    }

    #[test]
    fn averages_by_aligned_buckets() {
        let mut series = Series::new();
        // Start mid-bucket: 10 s into a 30-s bucket.
        let t0: i64 = 1_700_000_110;
        assert_eq!(t0 % 30, 10);
        for i in 0..50 {
            series.push(
                t0 + i,
                s(if i < 20 { 10.0 } else { 40.0 }, 100 * (i as u64), 7),
            );
        }
        let mid = series.tier(Tier::Mid);
        // Bucket [t0-10, t0+20) has samples i=0..20 (all 10 %), then [t0+20, t0+50) i=20..50.
        assert_eq!(mid.len(), 2);
        assert_eq!(mid[0].timestamp_unix, t0 - 10);
        assert!((mid[0].cpu_pct - 10.0).abs() < 1e-9);
        assert_eq!(mid[0].mem_bytes, 100 * (0..20).sum::<i64>() / 20);
        assert_eq!(mid[1].timestamp_unix, t0 + 20);
        assert!((mid[1].cpu_pct - 40.0).abs() < 1e-9);
        assert_eq!(mid[1].disk_bytes, 7);
        // The long tier has one (partial) 5-min bucket.
        let long = series.tier(Tier::Long);
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].timestamp_unix, t0 - t0 % 300);
        assert!((long[0].cpu_pct - (20.0 * 10.0 + 30.0 * 40.0) / 50.0).abs() < 1e-9);
    }

    #[test]
    fn long_tiers_are_bounded() {
        let mut series = Series::new();
        // A multiple of 300: bucket boundaries line up.
        let t0: i64 = 1_800_000_000;
        assert_eq!(t0 % 300, 0);
        // 30 hours at one sample per 10 s.
        for i in 0..(30 * 360) {
            series.push(t0 + i * 10, s(1.0, 1, 1));
        }
        assert_eq!(series.tier(Tier::Mid).len(), MID_CAPACITY);
        assert_eq!(series.tier(Tier::Long).len(), LONG_CAPACITY);
        let now = t0 + 30 * 3600;
        // 24 h window of 5-min buckets: all 288 are inside it.
        assert_eq!(
            series.query("24h".parse().unwrap(), now).len(),
            LONG_CAPACITY
        );
        // 6 h → 72 buckets (+1 for the boundary bucket).
        let six = series.query("6h".parse().unwrap(), now).len();
        assert!((72..=73).contains(&six), "{six}");
        let mid = series.tier(Tier::Mid);
        assert!(
            mid.windows(2)
                .all(|w| w[1].timestamp_unix - w[0].timestamp_unix == 30)
        );
    }

    #[test]
    fn gaps_do_not_merge_buckets_and_flush_clears() {
        let mut series = Series::new();
        let t0: i64 = 1_700_000_100;
        assert_eq!(t0 % 300, 0);
        series.push(t0, s(50.0, 10, 1));
        series.push(t0 + 1, s(70.0, 30, 1));
        // A 20-minute gap (capsule paused, sampler stalled).
        series.push(t0 + 1200, s(0.0, 5, 2));
        let mid = series.tier(Tier::Mid);
        assert_eq!(mid.len(), 2);
        assert!((mid[0].cpu_pct - 60.0).abs() < 1e-9);
        assert_eq!(mid[0].mem_bytes, 20);
        assert_eq!(mid[1].timestamp_unix, t0 + 1200);
        let flushed = series.flush();
        assert_eq!(flushed.points_10m.len(), 3);
        assert_eq!(flushed.points_2h.len(), 2);
        assert_eq!(flushed.points_24h.len(), 2);
        assert!(series.is_empty());
        assert_eq!(series.flush(), Flushed::default());
    }

    #[test]
    fn clock_going_back_stays_in_the_current_bucket() {
        let mut series = Series::new();
        let t0: i64 = 1_700_000_100;
        assert_eq!(t0 % 300, 0);
        series.push(t0 + 40, s(10.0, 1, 1));
        series.push(t0 + 5, s(30.0, 1, 1));
        let mid = series.tier(Tier::Mid);
        assert_eq!(mid.len(), 1);
        assert!((mid[0].cpu_pct - 20.0).abs() < 1e-9);
    }

    #[test]
    fn detects_legacy_hybrid_and_unified_layouts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
            cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
            cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0\n\
            cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0\n\
            cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
            cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        let layout = CgroupLayout::from_mounts(hybrid);
        let id = CapsuleId::from_u128(9);
        let cpuset = layout.capsules_cpuset().unwrap();
        assert_eq!(
            cpuset.cpus(id.as_str()),
            PathBuf::from(format!("/sys/fs/cgroup/cpuset/wrenn/{id}/cpuset.cpus"))
        );
        assert_eq!(
            cpuset.effective(),
            PathBuf::from("/sys/fs/cgroup/cpuset/wrenn/cpuset.effective_cpus")
        );
        let paths = layout.capsule(&id);
        assert_eq!(
            paths.cpu,
            CpuFile::UsageNanos(PathBuf::from(format!(
                "/sys/fs/cgroup/cpuacct/wrenn/{id}/cpuacct.usage"
            )))
        );
        assert_eq!(
            paths.memory_usage,
            PathBuf::from(format!(
                "/sys/fs/cgroup/memory/wrenn/{id}/memory.usage_in_bytes"
            ))
        );
        let comounted = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
            cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        assert_eq!(
            CgroupLayout::from_mounts(comounted),
            CgroupLayout::Legacy {
                cpuacct: PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                memory: PathBuf::from("/sys/fs/cgroup/memory"),
                cpuset: None,
            }
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            CgroupLayout::from_mounts(unified)
                .capsules_cpuset()
                .unwrap()
                .effective(),
            PathBuf::from("/sys/fs/cgroup/wrenn/cpuset.cpus.effective")
        );
        let paths = CgroupLayout::from_mounts(unified).capsule(&id);
        assert_eq!(
            paths.cpu,
            CpuFile::UsageUsecInStat(PathBuf::from(format!("/sys/fs/cgroup/wrenn/{id}/cpu.stat")))
        );
        assert_eq!(
            paths.memory_usage,
            PathBuf::from(format!("/sys/fs/cgroup/wrenn/{id}/memory.current"))
        );
        assert_eq!(unescape_mount_path(r"/a\040b"), "/a b");
    }

    #[test]
    fn reads_fake_cgroup_files() {
        let dir = std::env::temp_dir().join(format!("wrenn-metrics-{}", std::process::id()));
        let cg = dir.join("wrenn/cg");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("cpu.stat"), "usage_usec 2500000\nuser_usec 1\n").unwrap();
        std::fs::write(cg.join("memory.current"), "1000000\n").unwrap();
        std::fs::write(cg.join("memory.stat"), "anon 5\ninactive_file 250000\n").unwrap();
        let layout = CgroupLayout::Unified { root: dir.clone() };
        let paths = layout.paths(Path::new("/wrenn/cg"));
        assert_eq!(paths.cpu_nanos().unwrap(), 2_500_000_000);
        assert_eq!(paths.memory_bytes().unwrap(), 750_000);

        let overlay = dir.join("overlay");
        std::fs::create_dir_all(&overlay).unwrap();
        std::fs::write(overlay.join("upper"), vec![1u8; 64 * 1024]).unwrap();
        assert!(linked_bytes(&overlay) >= 64 * 1024);

        let metrics = Metrics::with_layout(layout.clone());
        let id = CapsuleId::from_u128(5);
        metrics.track(
            id.clone(),
            MetricSource {
                cgroup: paths,
                overlay_dir: overlay,
                vcpus: 2,
            },
        );
        std::fs::write(cg.join("cpu.stat"), "usage_usec 2600000\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        metrics.sample_once();
        let points = metrics.query(&id, Range::from_str("10m").unwrap()).unwrap();
        assert_eq!(points.len(), 1);
        // 0.1 s of CPU over ≥0.1 s on 2 vCPUs: at most 50 %.
        assert!(
            points[0].cpu_pct > 0.0 && points[0].cpu_pct <= 50.0,
            "{points:?}"
        );
        assert_eq!(points[0].mem_bytes, 750_000);
        assert!(points[0].disk_bytes >= 64 * 1024);

        // Pause: sampling stops, points stay until flushed; then the capsule is forgotten.
        assert!(metrics.stop(&id));
        metrics.sample_once();
        assert_eq!(
            metrics
                .query(&id, Range::from_str("10m").unwrap())
                .unwrap()
                .len(),
            1
        );
        let flushed = metrics.flush(&id).unwrap();
        assert_eq!(flushed.points_10m.len(), 1);
        assert!(
            metrics
                .query(&id, Range::from_str("10m").unwrap())
                .is_none()
        );
        // A vanished cgroup yields no points and no panic.
        metrics.track(
            id.clone(),
            MetricSource {
                cgroup: layout.paths(Path::new("/wrenn/gone")),
                overlay_dir: dir.join("nope"),
                vcpus: 1,
            },
        );
        metrics.sample_once();
        assert_eq!(metrics.untrack(&id).unwrap(), Flushed::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
