//! Per-capsule networking: a netns, a veth pair, addresses from a slot, NAT and an egress policy.
//!
//! Slot `n` (1..=max) owns netns `wrenn-ns-<n>`, host-side link `wrenn-veth-<n>` with
//! `10.12.0.0 + 2n` and, inside the netns, `eth0` with `10.12.0.0 + 2n + 1` (a /31 pair) and a
//! default route via the host side. runsc (`--network=sandbox`) adopts `eth0` with its address and
//! routes. Link names are limited to 15 bytes (IFNAMSIZ), so slots stop at 9999.
//!
//! Filtering lives in one nftables table, `inet wrenn`, whose rules never change per capsule:
//! capsule→capsule forwarding is dropped; traffic entering from a capsule veth is dropped unless
//! the veth is in the `internet` set (default deny: a failed update leaves a capsule offline, not
//! open); replies to host-initiated connections are always accepted, so the agent reaches envd
//! of an offline capsule; egress is masqueraded.
//!
//! Why the `ip` and `nft` commands rather than netlink crates: nftables has no well-kept Rust
//! netlink library, while `nft -f` applies a whole table in one atomic transaction; `ip netns`
//! creates the `/run/netns` bind mounts that runsc and operators expect. Setup is three `ip`
//! processes (a few ms, small next to the ~150 ms sandbox start), and every failure maps to a
//! [`NetworkError`] carrying the command and its stderr. Switching to rtnetlink later only
//! touches this module.

use crate::command::{self, CommandError};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

pub const NAME_PREFIX: &str = "wrenn-";
const NETNS_PREFIX: &str = "wrenn-ns-";
const VETH_PREFIX: &str = "wrenn-veth-";
/// The interface name inside the capsule.
pub const CAPSULE_IFNAME: &str = "eth0";
const NFT_TABLE: &str = "wrenn";
const NETNS_DIR: &str = "/run/netns";
/// Highest slot whose veth name fits IFNAMSIZ (15 bytes): `wrenn-veth-9999`.
pub const MAX_SLOTS: u32 = 9999;
const SUBNET_BASE: Ipv4Addr = Ipv4Addr::new(10, 12, 0, 0);
const SUBNET_PREFIX: u8 = 16;
const LINK_PREFIX: u8 = 31;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("all {0} network slots are in use")]
    SlotsExhausted(u32),
    #[error("max_slots must be 1..={MAX_SLOTS}, got {0}")]
    InvalidMaxSlots(u32),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Picks free slots in 1..=max. Reconstructible: [`Network`] marks slots found on the host.
#[derive(Debug, Clone)]
pub struct SlotAllocator {
    max: u32,
    used: BTreeSet<u32>,
    /// Where the next search starts, so a just-released slot is not reused at once (its netns may
    /// still be held by a sandbox that is exiting).
    next: u32,
}

impl SlotAllocator {
    pub fn new(max: u32) -> Result<Self, NetworkError> {
        if max == 0 || max > MAX_SLOTS {
            return Err(NetworkError::InvalidMaxSlots(max));
        }
        Ok(Self {
            max,
            used: BTreeSet::new(),
            next: 1,
        })
    }

    pub fn allocate(&mut self) -> Option<u32> {
        let candidate = (self.next..=self.max)
            .chain(1..self.next)
            .find(|slot| !self.used.contains(slot))?;
        self.used.insert(candidate);
        self.next = if candidate == self.max {
            1
        } else {
            candidate + 1
        };
        Some(candidate)
    }

    /// Takes one particular slot if it is free (a resumed capsule asking for its old slot).
    pub fn claim(&mut self, slot: u32) -> bool {
        (1..=self.max).contains(&slot) && self.used.insert(slot)
    }

    /// Records a slot taken elsewhere (found on the host, or owned by another process).
    pub fn mark_used(&mut self, slot: u32) {
        if (1..=self.max).contains(&slot) {
            self.used.insert(slot);
        }
    }

    pub fn release(&mut self, slot: u32) {
        self.used.remove(&slot);
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    pub fn max(&self) -> u32 {
        self.max
    }
}

/// Names and addresses of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotAddressing {
    pub slot: u32,
    pub netns: String,
    pub host_ifname: String,
    pub host_ip: Ipv4Addr,
    pub capsule_ip: Ipv4Addr,
    pub prefix_len: u8,
}

impl SlotAddressing {
    pub fn new(slot: u32) -> Self {
        let host = u32::from(SUBNET_BASE) + 2 * slot;
        Self {
            slot,
            netns: format!("{NETNS_PREFIX}{slot}"),
            host_ifname: format!("{VETH_PREFIX}{slot}"),
            host_ip: Ipv4Addr::from(host),
            capsule_ip: Ipv4Addr::from(host + 1),
            prefix_len: LINK_PREFIX,
        }
    }

    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.netns)
    }
}

/// The network of one capsule, as set up by [`Network::setup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsuleNetwork {
    pub addressing: SlotAddressing,
    pub internet: bool,
}

impl CapsuleNetwork {
    pub fn slot(&self) -> u32 {
        self.addressing.slot
    }

    pub fn capsule_ip(&self) -> Ipv4Addr {
        self.addressing.capsule_ip
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        self.addressing.host_ip
    }

    pub fn netns_path(&self) -> PathBuf {
        self.addressing.netns_path()
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    pub netns: usize,
    pub links: usize,
    pub nft_table: bool,
}

pub struct Network {
    slots: Mutex<SlotAllocator>,
}

impl Network {
    /// Enables forwarding, installs the `wrenn` nftables table if missing and marks slots whose
    /// netns already exists as used.
    pub async fn new(max_slots: u32) -> Result<Self, NetworkError> {
        let mut slots = SlotAllocator::new(max_slots)?;
        for name in list_netns()? {
            if let Some(slot) = parse_slot(&name, NETNS_PREFIX) {
                slots.mark_used(slot);
            }
        }
        enable_forwarding()?;
        ensure_nft_table().await?;
        Ok(Self {
            slots: Mutex::new(slots),
        })
    }

    /// Creates the netns, veth pair, addresses and route of a new capsule.
    pub async fn setup(&self, internet: bool) -> Result<CapsuleNetwork, NetworkError> {
        let addressing = self.claim_slot().await?;
        let network = CapsuleNetwork {
            addressing,
            internet,
        };
        if let Err(e) = configure(&network).await {
            self.teardown(&network).await.ok();
            return Err(e);
        }
        tracing::debug!(slot = network.slot(), ip = %network.capsule_ip(), internet, "network ready");
        Ok(network)
    }

    /// Like [`Network::setup`], but takes `preferred` when it is free, so a resumed capsule keeps
    /// its address when it can; otherwise any free slot (the capsule's IP then changes).
    pub async fn setup_preferring(
        &self,
        internet: bool,
        preferred: u32,
    ) -> Result<CapsuleNetwork, NetworkError> {
        if !self.lock_slots().claim(preferred) {
            return self.setup(internet).await;
        }
        let addressing = SlotAddressing::new(preferred);
        if let Err(e) = command::run("ip", ["netns", "add", &addressing.netns], None).await {
            // Someone else's netns (or a leftover): leave the slot marked used, take another.
            tracing::warn!(netns = %addressing.netns, error = %e, "preferred slot unavailable");
            return self.setup(internet).await;
        }
        let network = CapsuleNetwork {
            addressing,
            internet,
        };
        if let Err(e) = configure(&network).await {
            self.teardown(&network).await.ok();
            return Err(e);
        }
        Ok(network)
    }

    /// Removes everything of a capsule's network; safe to repeat.
    pub async fn teardown(&self, network: &CapsuleNetwork) -> Result<(), NetworkError> {
        let a = &network.addressing;
        // Deleting one end of a veth deletes both.
        ignore_missing(command::run("ip", ["link", "del", &a.host_ifname], None).await)?;
        ignore_missing(command::run("ip", ["netns", "del", &a.netns], None).await)?;
        ignore_missing(
            command::run(
                "nft",
                [
                    "delete",
                    "element",
                    "inet",
                    NFT_TABLE,
                    "internet",
                    &format!("{{ \"{}\" }}", a.host_ifname),
                ],
                None,
            )
            .await,
        )?;
        self.lock_slots().release(a.slot);
        Ok(())
    }

    /// Marks the slot of a capsule adopted after an agent restart as used.
    pub fn adopt(&self, slot: u32) {
        self.lock_slots().mark_used(slot);
    }

    /// Removes `wrenn-` netns, links and nft set elements whose slot is not in `owned` (a
    /// restarted agent's cleanup: the capsules it re-adopted keep theirs). Returns what it removed.
    pub async fn reclaim_orphans(
        &self,
        owned: &std::collections::HashSet<u32>,
    ) -> Result<ReclaimReport, NetworkError> {
        let mut report = ReclaimReport::default();
        let mut orphans = std::collections::BTreeSet::new();
        for link in list_links().await? {
            match parse_slot(&link, VETH_PREFIX) {
                Some(slot) if owned.contains(&slot) => {}
                Some(slot) => {
                    orphans.insert(slot);
                    report.links += 1;
                }
                None if link.starts_with(NAME_PREFIX) => {
                    ignore_missing(command::run("ip", ["link", "del", &link], None).await)?;
                    report.links += 1;
                }
                None => {}
            }
        }
        for name in list_netns()? {
            match parse_slot(&name, NETNS_PREFIX) {
                Some(slot) if owned.contains(&slot) => {}
                Some(slot) => {
                    orphans.insert(slot);
                    report.netns += 1;
                }
                None if name.starts_with(NAME_PREFIX) => {
                    ignore_missing(command::run("ip", ["netns", "del", &name], None).await)?;
                    report.netns += 1;
                }
                None => {}
            }
        }
        if let Ok(set) =
            command::run("nft", ["list", "set", "inet", NFT_TABLE, "internet"], None).await
        {
            let text = String::from_utf8_lossy(&set);
            for slot in parse_set_slots(&text) {
                if !owned.contains(&slot) {
                    orphans.insert(slot);
                }
            }
        }
        for slot in orphans {
            let network = CapsuleNetwork {
                addressing: SlotAddressing::new(slot),
                internet: true,
            };
            self.teardown(&network).await?;
        }
        if report != ReclaimReport::default() {
            tracing::info!(?report, "reclaimed network state no capsule owns");
        }
        Ok(report)
    }

    /// Slots currently held by this process.
    pub fn slots_in_use(&self) -> usize {
        self.lock_slots().in_use()
    }

    /// Allocates a slot and creates its netns; a netns that already exists (another agent, a
    /// leftover) marks the slot used and the search moves on.
    async fn claim_slot(&self) -> Result<SlotAddressing, NetworkError> {
        loop {
            let slot = {
                let mut slots = self.lock_slots();
                slots
                    .allocate()
                    .ok_or(NetworkError::SlotsExhausted(slots.max()))?
            };
            let addressing = SlotAddressing::new(slot);
            match command::run("ip", ["netns", "add", &addressing.netns], None).await {
                Ok(_) => return Ok(addressing),
                Err(e) if e.stderr().contains("File exists") => {
                    tracing::warn!(netns = %addressing.netns, "netns exists already; skipping slot");
                }
                Err(e) => {
                    self.lock_slots().release(slot);
                    return Err(e.into());
                }
            }
        }
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, SlotAllocator> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes every `wrenn-` netns, link and the `wrenn` nft table (after a crash, before
    /// [`Network::new`]).
    pub async fn reclaim() -> Result<ReclaimReport, NetworkError> {
        let mut report = ReclaimReport::default();
        for link in list_links().await? {
            if link.starts_with(NAME_PREFIX) {
                ignore_missing(command::run("ip", ["link", "del", &link], None).await)?;
                report.links += 1;
            }
        }
        for name in list_netns()? {
            if name.starts_with(NAME_PREFIX) {
                ignore_missing(command::run("ip", ["netns", "del", &name], None).await)?;
                report.netns += 1;
            }
        }
        match command::run("nft", ["delete", "table", "inet", NFT_TABLE], None).await {
            Ok(_) => report.nft_table = true,
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(e.into()),
        }
        if report != ReclaimReport::default() {
            tracing::info!(?report, "reclaimed leftover network state");
        }
        Ok(report)
    }
}

async fn configure(network: &CapsuleNetwork) -> Result<(), NetworkError> {
    let a = &network.addressing;
    let host_side = format!(
        "link add {veth} type veth peer name {CAPSULE_IFNAME} netns {ns}\n\
         addr add {host}/{len} dev {veth}\n\
         link set {veth} up\n",
        veth = a.host_ifname,
        ns = a.netns,
        host = a.host_ip,
        len = a.prefix_len,
    );
    command::run("ip", ["-batch", "-"], Some(host_side.as_bytes())).await?;
    let capsule_side = format!(
        "link set lo up\n\
         addr add {ip}/{len} dev {CAPSULE_IFNAME}\n\
         link set {CAPSULE_IFNAME} up\n\
         route add default via {gw} dev {CAPSULE_IFNAME}\n",
        ip = a.capsule_ip,
        len = a.prefix_len,
        gw = a.host_ip,
    );
    command::run(
        "ip",
        ["-n", &a.netns, "-batch", "-"],
        Some(capsule_side.as_bytes()),
    )
    .await?;
    if network.internet {
        command::run(
            "nft",
            [
                "add",
                "element",
                "inet",
                NFT_TABLE,
                "internet",
                &format!("{{ \"{}\" }}", a.host_ifname),
            ],
            None,
        )
        .await?;
    }
    Ok(())
}

/// The `inet wrenn` table (see the module docs for the policy).
pub fn nft_ruleset() -> String {
    let subnet = format!("{SUBNET_BASE}/{SUBNET_PREFIX}");
    format!(
        r#"table inet {NFT_TABLE} {{
    set internet {{
        type ifname
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{VETH_PREFIX}*" oifname "{VETH_PREFIX}*" drop
        iifname "{VETH_PREFIX}*" iifname != @internet drop
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{VETH_PREFIX}*" ct state established,related accept
        iifname "{VETH_PREFIX}*" iifname != @internet drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} oifname != "{VETH_PREFIX}*" masquerade
    }}
}}
"#
    )
}

async fn ensure_nft_table() -> Result<(), NetworkError> {
    // Re-creating an existing table would duplicate its rules; an existing one is ours.
    if command::run("nft", ["list", "table", "inet", NFT_TABLE], None)
        .await
        .is_ok()
    {
        return Ok(());
    }
    command::run("nft", ["-f", "-"], Some(nft_ruleset().as_bytes())).await?;
    Ok(())
}

/// NAT egress needs IPv4 forwarding; this is host-wide, which the module docs accept.
fn enable_forwarding() -> Result<(), NetworkError> {
    let path = PathBuf::from("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(&path, "1").map_err(|source| NetworkError::Io {
        action: "enabling forwarding in",
        path,
        source,
    })
}

fn list_netns() -> Result<Vec<String>, NetworkError> {
    match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(NetworkError::Io {
            action: "listing",
            path: PathBuf::from(NETNS_DIR),
            source,
        }),
    }
}

async fn list_links() -> Result<Vec<String>, NetworkError> {
    let stdout = command::run("ip", ["-o", "link", "show"], None).await?;
    Ok(parse_link_names(&String::from_utf8_lossy(&stdout)))
}

/// Names from `ip -o link show` lines such as `5: wrenn-veth-1@if2: <…>`.
fn parse_link_names(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| {
            let name = line.split(": ").nth(1)?;
            Some(name.split('@').next()?.to_owned())
        })
        .collect()
}

/// Slots of the `wrenn-veth-<n>` names in `nft list set` output.
fn parse_set_slots(text: &str) -> Vec<u32> {
    text.split(VETH_PREFIX)
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

fn parse_slot(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.parse().ok()
}

fn is_missing(error: &CommandError) -> bool {
    let stderr = error.stderr();
    stderr.contains("No such file or directory")
        || stderr.contains("Cannot find device")
        || stderr.contains("does not exist")
}

fn ignore_missing(result: Result<Vec<u8>, CommandError>) -> Result<(), NetworkError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The host's nameservers a capsule can use (loopback resolvers are unreachable from it).
pub fn capsule_resolv_conf(host_resolv_conf: &str) -> String {
    let mut out = String::from("# Written by the Wrenn agent from the host's resolvers.\n");
    for line in host_resolv_conf.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("nameserver"), Some(addr)) => {
                let loopback = addr
                    .parse::<std::net::IpAddr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(true);
                if !loopback {
                    out.push_str(&format!("nameserver {addr}\n"));
                }
            }
            (Some("search" | "options"), Some(_)) => {
                out.push_str(line.trim());
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_hands_out_each_slot_once() {
        let mut slots = SlotAllocator::new(3).unwrap();
        let got: Vec<_> = (0..3).map(|_| slots.allocate().unwrap()).collect();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(slots.allocate(), None);
        slots.release(2);
        assert_eq!(slots.allocate(), Some(2));
        assert_eq!(slots.allocate(), None);
    }

    #[test]
    fn allocator_claims_a_particular_free_slot() {
        let mut slots = SlotAllocator::new(3).unwrap();
        assert!(slots.claim(2));
        assert!(!slots.claim(2));
        assert!(!slots.claim(0) && !slots.claim(4));
        assert_eq!(slots.allocate(), Some(1));
        assert_eq!(slots.allocate(), Some(3));
        slots.release(2);
        assert!(slots.claim(2));
    }

    #[test]
    fn allocator_does_not_reuse_a_released_slot_at_once() {
        let mut slots = SlotAllocator::new(5).unwrap();
        assert_eq!(slots.allocate(), Some(1));
        slots.release(1);
        assert_eq!(slots.allocate(), Some(2));
        slots.mark_used(3);
        assert_eq!(slots.allocate(), Some(4));
        assert_eq!(slots.allocate(), Some(5));
        assert_eq!(slots.allocate(), Some(1));
        assert_eq!(slots.in_use(), 5);
        assert_eq!(slots.allocate(), None);
    }

    #[test]
    fn allocator_no_collisions_up_to_max() {
        let mut slots = SlotAllocator::new(MAX_SLOTS).unwrap();
        let mut seen = BTreeSet::new();
        while let Some(slot) = slots.allocate() {
            assert!(seen.insert(slot), "slot {slot} handed out twice");
        }
        assert_eq!(seen.len(), MAX_SLOTS as usize);
        assert!(SlotAllocator::new(0).is_err());
        assert!(SlotAllocator::new(MAX_SLOTS + 1).is_err());
    }

    #[test]
    fn addressing_is_a_31_pair_with_short_names() {
        let a = SlotAddressing::new(1);
        assert_eq!(a.host_ip, Ipv4Addr::new(10, 12, 0, 2));
        assert_eq!(a.capsule_ip, Ipv4Addr::new(10, 12, 0, 3));
        assert_eq!(a.netns, "wrenn-ns-1");
        assert_eq!(a.netns_path(), PathBuf::from("/run/netns/wrenn-ns-1"));
        let last = SlotAddressing::new(MAX_SLOTS);
        assert_eq!(last.host_ifname, "wrenn-veth-9999");
        assert!(last.host_ifname.len() <= 15);
        assert_eq!(last.capsule_ip, Ipv4Addr::new(10, 12, 78, 31));
        let mut all = BTreeSet::new();
        for slot in 1..=MAX_SLOTS {
            let a = SlotAddressing::new(slot);
            assert!(all.insert(a.host_ip) && all.insert(a.capsule_ip));
        }
    }

    #[test]
    fn parses_link_names_and_slots() {
        let out = "1: lo: <LOOPBACK,UP> mtu 65536\n7: wrenn-veth-12@if2: <BROADCAST> mtu 1500\n";
        assert_eq!(parse_link_names(out), ["lo", "wrenn-veth-12"]);
        assert_eq!(parse_slot("wrenn-ns-42", NETNS_PREFIX), Some(42));
        assert_eq!(parse_slot("wrenn-ns-x", NETNS_PREFIX), None);
        assert_eq!(parse_slot("other", NETNS_PREFIX), None);
    }

    #[test]
    fn parses_internet_set_elements() {
        let out = "table inet wrenn {\n\tset internet {\n\t\ttype ifname\n\t\telements = { \"wrenn-veth-3\",\n\t\t\t     \"wrenn-veth-17\" }\n\t}\n}\n";
        assert_eq!(parse_set_slots(out), [3, 17]);
        assert!(parse_set_slots("table inet wrenn { set internet { type ifname } }").is_empty());
    }

    #[test]
    fn resolv_conf_drops_loopback_resolvers() {
        let host = "nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example.org\n# c\n";
        let out = capsule_resolv_conf(host);
        assert!(out.contains("nameserver 192.0.2.53\n"));
        assert!(!out.contains("127.0.0.53"));
        assert!(out.contains("search example.org\n"));
    }

    #[test]
    fn ruleset_isolates_capsules_and_defaults_to_offline() {
        let rules = nft_ruleset();
        assert!(rules.contains(r#"iifname "wrenn-veth-*" oifname "wrenn-veth-*" drop"#));
        assert!(rules.contains(r#"iifname "wrenn-veth-*" iifname != @internet drop"#));
        assert!(rules.contains("masquerade"));
    }
}
