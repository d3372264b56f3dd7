//! Port forwarding: a service inside the capsule that listens only on
//! 127.0.0.1 / ::1 becomes reachable on the capsule's external IPv4
//! address(es) on the same port, so the host agent's proxy can reach it.
//!
//! Every second the scanner reads `/proc/net/tcp{,6}` (this network namespace's
//! sockets), plans which `(external ip, port)` pairs need a forwarder, and
//! starts or stops forwarders to match. Bytes are relayed in-process
//! (`copy_bidirectional`). Stopping (on `/snapshot/prepare`) cancels every
//! listener and relayed connection and waits until their sockets are closed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// `TCP_LISTEN` in the kernel's `st` column.
const TCP_LISTEN: u8 = 0x0A;

/// Parses the text of `/proc/net/tcp` or `/proc/net/tcp6` into the local
/// addresses of sockets in LISTEN state. Malformed lines are skipped.
pub fn parse_listening(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .skip(1)
        .filter_map(parse_line)
        .filter(|(_, state)| *state == TCP_LISTEN)
        .map(|(addr, _)| addr)
        .collect()
}

/// One table row: `sl local_address rem_address st ...`.
fn parse_line(line: &str) -> Option<(SocketAddr, u8)> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = fields.next()?;
    let _remote = fields.next()?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    let (ip_hex, port_hex) = local.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    Some((SocketAddr::new(parse_hex_ip(ip_hex)?, port), state))
}

/// The kernel prints addresses as 32-bit words in host byte order (`%08X`),
/// so each word's native bytes are the address bytes in network order.
fn parse_hex_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Treats `::ffff:a.b.c.d` (a v4 socket in the tcp6 table) as the v4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn is_loopback_bind(ip: IpAddr) -> bool {
    matches!(canonical(ip), IpAddr::V4(v4) if v4 == Ipv4Addr::LOCALHOST)
        || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
}

/// Ports that need forwarding, each with the loopback address to relay to:
/// listening on 127.0.0.1 or ::1 only (a port also bound on 0.0.0.0 / :: is
/// already reachable), excluding envd's own port.
pub fn plan(listening: &[SocketAddr], own_port: u16) -> BTreeMap<u16, SocketAddr> {
    let wildcard: HashSet<u16> = listening
        .iter()
        .filter(|a| canonical(a.ip()).is_unspecified())
        .map(|a| a.port())
        .collect();
    let mut out: BTreeMap<u16, SocketAddr> = BTreeMap::new();
    for a in listening {
        let port = a.port();
        if port == own_port || wildcard.contains(&port) || !is_loopback_bind(a.ip()) {
            continue;
        }
        let target = SocketAddr::new(canonical(a.ip()), port);
        // Prefer the IPv4 loopback when a service binds both.
        out.entry(port)
            .and_modify(|t| {
                if target.is_ipv4() {
                    *t = target;
                }
            })
            .or_insert(target);
    }
    out
}

/// Non-loopback IPv4 addresses of the interfaces that are up.
pub fn external_ipv4() -> Vec<Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<Ipv4Addr> = addrs
        .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn read_listening() -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        // tcp6 is absent when IPv6 is disabled.
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(parse_listening(&text));
        }
    }
    out
}

struct Running {
    /// Handle on the forwarder task, which it owns the listener for.
    task: JoinHandle<()>,
    token: CancellationToken,
}

/// Starts and stops the scanner; cheap to clone.
#[derive(Clone, Default)]
pub struct PortForwarder {
    running: Arc<Mutex<Option<Running>>>,
}

impl PortForwarder {
    /// Starts scanning (no-op when already running).
    pub fn start(&self, own_port: u16) {
        let mut guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_some() {
            return;
        }
        let token = CancellationToken::new();
        let task = tokio::spawn(scan_loop(own_port, token.clone()));
        *guard = Some(Running { task, token });
        tracing::debug!("port forwarding started");
    }

    /// Stops scanning and closes all forwarding listeners and relayed
    /// connections; returns once their sockets are closed.
    pub async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = running {
            r.token.cancel();
            let _ = r.task.await;
            tracing::debug!("port forwarding stopped");
        }
    }

    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

struct Forward {
    target: SocketAddr,
    token: CancellationToken,
    task: JoinHandle<()>,
}

async fn scan_loop(own_port: u16, stop: CancellationToken) {
    let mut active: HashMap<SocketAddr, Forward> = HashMap::new();
    // Binds that failed, so a persistent conflict is logged once, not every second.
    let mut failed: HashSet<SocketAddr> = HashSet::new();
    let mut tick = tokio::time::interval(SCAN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let wanted = plan(&read_listening(), own_port);
        let ips = if wanted.is_empty() {
            Vec::new()
        } else {
            external_ipv4()
        };
        let mut desired: HashMap<SocketAddr, SocketAddr> = HashMap::new();
        for (&port, &target) in &wanted {
            for &ip in &ips {
                desired.insert(SocketAddr::new(IpAddr::V4(ip), port), target);
            }
        }
        active.retain(|bind, f| {
            let keep = desired.get(bind) == Some(&f.target) && !f.task.is_finished();
            if !keep {
                tracing::info!(%bind, target = %f.target, "port forward stopped");
                f.token.cancel();
            }
            keep
        });
        failed.retain(|b| desired.contains_key(b));
        for (bind, target) in desired {
            if active.contains_key(&bind) {
                continue;
            }
            match TcpListener::bind(bind).await {
                Ok(listener) => {
                    failed.remove(&bind);
                    tracing::info!(%bind, %target, "port forward started");
                    let token = stop.child_token();
                    let task = tokio::spawn(forward(listener, target, token.clone()));
                    active.insert(
                        bind,
                        Forward {
                            target,
                            token,
                            task,
                        },
                    );
                }
                Err(e) => {
                    if failed.insert(bind) {
                        tracing::warn!(%bind, error = %e, "port forward bind failed");
                    }
                }
            }
        }
    }
    // Child tokens are already cancelled; wait until every socket is closed.
    for (_, f) in active {
        let _ = f.task.await;
    }
}

async fn forward(listener: TcpListener, target: SocketAddr, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((inbound, peer)) => {
                    conns.spawn(relay(inbound, peer, target));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "port forward accept");
                    // Back off on e.g. EMFILE instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    // Aborts the relays and waits until their sockets are dropped.
    conns.shutdown().await;
}

async fn relay(mut inbound: TcpStream, peer: SocketAddr, target: SocketAddr) {
    let mut outbound = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%peer, %target, error = %e, "port forward connect");
            return;
        }
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
        tracing::debug!(%peer, %target, error = %e, "port forward relay ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines from a Linux x86_64 host (little-endian word order).
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 100 0 0 10 0
   2: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 34567 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:D2C4 01 00000000:00000000 00:00000000 00000000     0        0 45678 1 0000000000000000 20 4 30 10 -1
   4: 0F02000A:0016 0202000A:E0F2 01 00000000:00000000 02:0009A1C5 00000000     0        0 56789 4 0000000000000000 20 4 31 10 20
   5: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 67890 1 0000000000000000 100 0 0 10 0
   6: 0100007F:C2CF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78901 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1538 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11111 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:C2CF 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22222 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 33333 1 0000000000000000 100 0 0 10 0
   3: 00000000000000000000000001000000:1538 00000000000000000000000001000000:9C40 01 00000000:00000000 00:00000000 00000000     0        0 44444 1 0000000000000000 20 4 0 10 -1
";

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_ipv4_listen_rows_only() {
        let got = parse_listening(TCP);
        let want: Vec<SocketAddr> = [
            "127.0.0.1:8080",
            "0.0.0.0:22",
            "127.0.0.1:3306",
            "127.0.0.1:22",
            "127.0.0.1:49871",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(got, want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_ipv6_rows_including_v4_mapped() {
        let got = parse_listening(TCP6);
        let want: Vec<SocketAddr> = ["[::1]:5432", "[::]:49871", "[::ffff:127.0.0.1]:9090"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn plan_skips_wildcard_own_port_and_prefers_ipv4() {
        let mut all = parse_listening(TCP);
        all.extend(parse_listening(TCP6));
        all.push("[::1]:8080".parse().unwrap());
        let got = plan(&all, 3306);
        let want: BTreeMap<u16, SocketAddr> = [
            (8080, "127.0.0.1:8080"),
            (5432, "[::1]:5432"),
            (9090, "127.0.0.1:9090"),
        ]
        .into_iter()
        .map(|(p, a)| (p, a.parse().unwrap()))
        .collect();
        // 22 and 49871 are also bound on a wildcard; 3306 is "envd's own".
        assert_eq!(got, want);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text =
            "header\n  0: zz:1F90 00000000:0000 0A\n  1: 0100007F:XYZ 0 0A\n  2: 0100007F\n\n";
        assert!(parse_listening(text).is_empty());
    }

    #[tokio::test]
    async fn stop_without_start_is_noop_and_start_is_idempotent() {
        let pf = PortForwarder::default();
        pf.stop().await;
        pf.start(1);
        pf.start(1);
        assert!(pf.is_running());
        pf.stop().await;
        assert!(!pf.is_running());
    }
}
