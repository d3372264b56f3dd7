//! System figures for `GET /metrics`: CPU (from `/proc/stat`), memory (from
//! `/proc/meminfo`) and disk (statvfs of `/`).

use std::sync::atomic::{AtomicU32, Ordering};

/// Cumulative CPU jiffies from the aggregate `cpu` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub total: u64,
    pub idle: u64,
}

/// Parses the aggregate line of `/proc/stat`. `guest`/`guest_nice` are left
/// out: the kernel already counts them in `user`/`nice`.
pub fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        total: v.iter().sum(),
        idle,
    })
}

/// Number of `cpuN` lines in `/proc/stat`.
pub fn parse_cpu_count(stat: &str) -> u32 {
    let n = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Busy share between two samples, in percent rounded to 2 decimals.
pub fn used_pct(prev: CpuTimes, now: CpuTimes) -> f32 {
    let total = now.total.saturating_sub(prev.total);
    if total == 0 {
        return 0.0;
    }
    let busy = total.saturating_sub(now.idle.saturating_sub(prev.idle));
    let pct = busy as f64 * 100.0 / total as f64;
    ((pct * 100.0).round() / 100.0) as f32
}

pub fn read_cpu_times() -> Option<CpuTimes> {
    parse_cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)
}

pub fn cpu_count() -> u32 {
    let n = std::fs::read_to_string("/proc/stat")
        .map(|s| parse_cpu_count(&s))
        .unwrap_or(0);
    if n > 0 {
        return n;
    }
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// Latest CPU usage, written by the sampler once a second.
#[derive(Default)]
pub struct CpuGauge(AtomicU32);

impl CpuGauge {
    pub fn get(&self) -> f32 {
        f32::from_bits(self.0.load(Ordering::Relaxed))
    }
    pub fn set(&self, pct: f32) {
        self.0.store(pct.to_bits(), Ordering::Relaxed);
    }
}

/// Memory in bytes: total and used (= total - available).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub used: u64,
}

pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    };
    let total = kib("MemTotal:")? * 1024;
    let available = kib("MemAvailable:")? * 1024;
    Some(Memory {
        total,
        used: total.saturating_sub(available),
    })
}

pub fn read_memory() -> Option<Memory> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// Disk of the root filesystem in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    pub total: u64,
    pub used: u64,
}

pub fn read_disk() -> Option<Disk> {
    let st = nix::sys::statvfs::statvfs("/").ok()?;
    let frsize = st.fragment_size() as u64;
    let blocks = st.blocks() as u64;
    let free = st.blocks_free() as u64;
    Some(Disk {
        total: blocks * frsize,
        used: blocks.saturating_sub(free) * frsize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0
cpu1 1335278 44564 531436 13519200 2934 0 3009 0 25678 0
intr 1462898 0 0
ctxt 2210012
";

    #[test]
    fn parses_cpu_line_and_count() {
        let t = parse_cpu_times(STAT).unwrap();
        assert_eq!(t.idle, 46828483 + 16683);
        assert_eq!(
            t.total,
            10132153 + 290696 + 3084719 + 46828483 + 16683 + 25195
        );
        assert_eq!(parse_cpu_count(STAT), 2);
        assert_eq!(parse_cpu_times("intr 1\n"), None);
    }

    #[test]
    fn usage_percent_is_rounded() {
        let a = CpuTimes {
            total: 1000,
            idle: 900,
        };
        let b = CpuTimes {
            total: 1300,
            idle: 1100,
        };
        assert_eq!(used_pct(a, b), 33.33);
        assert_eq!(used_pct(a, a), 0.0);
    }

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:        2048000 kB\nMemFree:  100 kB\nMemAvailable:    1024000 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.total, 2048000 * 1024);
        assert_eq!(m.used, 1024000 * 1024);
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn reads_real_system() {
        assert!(cpu_count() >= 1);
        let m = read_memory().unwrap();
        assert!(m.total > 0 && m.used <= m.total);
        let d = read_disk().unwrap();
        assert!(d.total > 0 && d.used <= d.total);
    }
}
