//! Pins each capsule to its own host CPUs (as many as its vCPUs, the ones the fewest other
//! capsules are pinned to) by writing its cgroup's `cpuset.cpus` once it has booted.
//!
//! Why: under systrap every syscall and page fault of a capsule is a hand-off between one of its
//! threads and a sentry goroutine. Spread over several host CPUs, an idle capsule wakes a halted
//! CPU for each hand-off; on one CPU the hand-off is a plain context switch. Measured on a
//! 2-vCPU VM, a 1-vCPU capsule idle before each command: `/bin/true` 18–22 → 13 ms,
//! `python3 -c pass` 74–76 → 52–56 ms, `sh -c 'ls /usr/bin | wc -l'` 122–129 → 66 ms. The cost:
//! a long syscall-bound loop loses the sentry's spinning fast path on a second CPU (`dd bs=1`
//! 0.21–0.32 → 0.38–0.42 s). Agents mostly run short commands, so pinning is the default;
//! `wrenn agent --cpu-pinning false` turns it off.
//!
//! Why after boot and not through the OCI spec's cpuset: runsc sizes the sandbox by that cpuset
//! (the sandbox then sees one CPU), and such a capsule ran `/bin/true` in 28 ms instead of 13.
//!
//! The placement is read back from the cgroups themselves (every capsule's cgroup lives under
//! one `wrenn` parent), so it needs no bookkeeping: it survives agent restarts, and a destroyed
//! or paused capsule frees its CPUs when runsc removes its cgroup.

use super::RuntimeError;
use crate::id::CapsuleId;
use crate::metrics::{CgroupLayout, CpusetDir};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct CpuPlacement {
    cpuset: CpusetDir,
    /// Held from reading the other capsules' CPUs to writing ours, so two boots at once do not
    /// pick the same least-used CPU.
    choosing: Mutex<()>,
}

impl CpuPlacement {
    /// Placement under the host's cgroup cpuset hierarchy, if it has one.
    pub fn detect() -> Option<Self> {
        let cpuset = CgroupLayout::detect().capsules_cpuset()?;
        Some(Self {
            cpuset,
            choosing: Mutex::new(()),
        })
    }

    /// Pins capsule `id` to `vcpus` host CPUs; returns them, or `None` when it keeps every CPU
    /// (it asked for as many as the host has).
    pub fn place(&self, id: &CapsuleId, vcpus: u32) -> Result<Option<Vec<u32>>, RuntimeError> {
        let _choosing = self.choosing.lock().unwrap_or_else(|e| e.into_inner());
        let host = self.host_cpus()?;
        if vcpus as usize >= host.len() {
            return Ok(None);
        }
        let load = self.load(id, &host);
        let chosen = least_used(&host, &load, vcpus as usize);
        let path = self.cpus_file(id)?;
        std::fs::write(&path, format_cpu_list(&chosen)).map_err(|source| RuntimeError::Io {
            action: "writing",
            path,
            source,
        })?;
        Ok(Some(chosen))
    }

    /// The CPUs capsule cgroups may use (the `wrenn` parent's effective set).
    fn host_cpus(&self) -> Result<Vec<u32>, RuntimeError> {
        let path = self.cpuset.effective();
        let online = Path::new("/sys/devices/system/cpu/online");
        let text = std::fs::read_to_string(&path)
            .or_else(|_| std::fs::read_to_string(online))
            .map_err(|source| RuntimeError::Io {
                action: "reading",
                path: path.clone(),
                source,
            })?;
        parse_cpu_list(&text)
            .filter(|cpus| !cpus.is_empty())
            .ok_or_else(|| RuntimeError::Parse(format!("CPU list {text:?} in {}", path.display())))
    }

    /// How many other pinned capsules use each CPU (a capsule on every CPU is not pinned).
    fn load(&self, id: &CapsuleId, host: &[u32]) -> HashMap<u32, u32> {
        let mut load = HashMap::new();
        let Ok(entries) = std::fs::read_dir(&self.cpuset.dir) else {
            return load;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == id.as_str() || name.parse::<CapsuleId>().is_err() {
                continue;
            }
            let Some(cpus) = std::fs::read_to_string(self.cpuset.cpus(&name))
                .ok()
                .and_then(|t| parse_cpu_list(&t))
            else {
                continue;
            };
            if !cpus.is_empty() && cpus.len() < host.len() {
                for cpu in cpus {
                    *load.entry(cpu).or_default() += 1;
                }
            }
        }
        load
    }

    /// The capsule's `cpuset.cpus`. On cgroup v2 the file exists only once the `wrenn` parent
    /// delegates the cpuset controller, so that is enabled the first time it is missing.
    fn cpus_file(&self, id: &CapsuleId) -> Result<PathBuf, RuntimeError> {
        let path = self.cpuset.cpus(id.as_str());
        if path.exists() || !self.cpuset.unified {
            return Ok(path);
        }
        let control = self.cpuset.dir.join("cgroup.subtree_control");
        std::fs::write(&control, "+cpuset").map_err(|source| RuntimeError::Io {
            action: "enabling cpuset in",
            path: control,
            source,
        })?;
        Ok(path)
    }
}

/// The `n` CPUs with the least load, lowest numbers first among equals; sorted.
fn least_used(host: &[u32], load: &HashMap<u32, u32>, n: usize) -> Vec<u32> {
    let mut by_load: Vec<u32> = host.to_vec();
    by_load.sort_by_key(|cpu| (load.get(cpu).copied().unwrap_or(0), *cpu));
    let mut chosen: Vec<u32> = by_load.into_iter().take(n).collect();
    chosen.sort_unstable();
    chosen
}

/// Parses the kernel's CPU list format (`0-3,8,10-11`); `None` if malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Some(cpus);
    }
    for part in text.split(',') {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (u32, u32) = (first.parse().ok()?, last.parse().ok()?);
                if first > last {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

pub fn format_cpu_list(cpus: &[u32]) -> String {
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_format() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("\n"), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(format_cpu_list(&[0, 2, 5]), "0,2,5");
    }

    #[test]
    fn least_used_cpus_win_then_lowest() {
        let host = [0, 1, 2, 3];
        let load = HashMap::from([(0, 2), (1, 1), (3, 1)]);
        assert_eq!(least_used(&host, &load, 1), vec![2]);
        assert_eq!(least_used(&host, &load, 2), vec![1, 2]);
        assert_eq!(least_used(&host, &HashMap::new(), 2), vec![0, 1]);
    }

    #[test]
    fn placement_spreads_capsules_and_skips_whole_host_ones() {
        let root = std::env::temp_dir().join(format!("wrenn-cpuset-{}", std::process::id()));
        let dir = root.join("wrenn");
        let ids: Vec<CapsuleId> = (1..=4).map(CapsuleId::from_u128).collect();
        for id in &ids {
            std::fs::create_dir_all(dir.join(id.as_str())).unwrap();
            std::fs::write(dir.join(id.as_str()).join("cpuset.cpus"), "0-1\n").unwrap();
        }
        std::fs::write(dir.join("cpuset.effective_cpus"), "0-1\n").unwrap();
        let placement = CpuPlacement {
            cpuset: CpusetDir {
                dir: dir.clone(),
                unified: false,
            },
            choosing: Mutex::new(()),
        };
        assert_eq!(placement.place(&ids[0], 1).unwrap(), Some(vec![0]));
        assert_eq!(placement.place(&ids[1], 1).unwrap(), Some(vec![1]));
        assert_eq!(placement.place(&ids[2], 1).unwrap(), Some(vec![0]));
        let read =
            |id: &CapsuleId| std::fs::read_to_string(dir.join(id.as_str()).join("cpuset.cpus"));
        assert_eq!(read(&ids[2]).unwrap(), "0");
        // A 2-vCPU capsule on a 2-CPU host keeps both (and does not count as load).
        assert_eq!(placement.place(&ids[3], 2).unwrap(), None);
        assert_eq!(read(&ids[3]).unwrap(), "0-1\n");
        // The first capsule is gone: CPU 0 now carries one, CPU 1 one → 0 again.
        std::fs::remove_dir_all(dir.join(ids[0].as_str())).unwrap();
        std::fs::remove_dir_all(dir.join(ids[2].as_str())).unwrap();
        let fresh = CapsuleId::from_u128(5);
        std::fs::create_dir_all(dir.join(fresh.as_str())).unwrap();
        assert_eq!(placement.place(&fresh, 1).unwrap(), Some(vec![0]));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
