//! Port forwarding end to end, inside a network namespace this test creates:
//! envd and a 127.0.0.1-only echo service run in the namespace; the test
//! connects from the host side of a veth pair to the namespace's address.
//! Needs root (skips otherwise); the namespace and veth are removed on drop.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace joined to the host by a veth pair; removed on drop.
struct TestNetns {
    name: String,
    host_if: String,
    ns_ip: Ipv4Addr,
}

impl TestNetns {
    fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tag = (pid ^ nanos) % 100_000;
        let net = u8::try_from(1 + (pid ^ (nanos >> 8)) % 250).unwrap_or(1);
        let ns = Self {
            name: format!("wrenn-test-pf{tag}"),
            host_if: format!("wpf{tag}h"),
            ns_ip: Ipv4Addr::new(10, 250, net, 2),
        };
        // From here on, Drop cleans up whatever part was made.
        let peer = format!("wpf{tag}n");
        ip(&["netns", "add", &ns.name])?;
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("10.250.{net}.1/30"),
            "dev",
            &ns.host_if,
        ])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}/30", ns.ns_ip),
            "dev",
            &peer,
        ])?;
        ip(&["-n", &ns.name, "link", "set", &peer, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Binds a TCP listener inside the namespace (from a thread that joins it;
    /// the socket stays in the namespace wherever it is used afterwards).
    fn listen(&self, addr: SocketAddr) -> std::net::TcpListener {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let l = std::net::TcpListener::bind(addr).expect("bind in netns");
            l.set_nonblocking(true).expect("nonblocking");
            l
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Deleting one end removes the pair; the namespace goes with its mount.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

struct NetnsEnvd {
    child: Child,
    port: u16,
}

impl NetnsEnvd {
    fn start(ns: &TestNetns) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_envd")])
            .args(["--port", "0", "--port-forward", "on"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn envd in netns");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listen line");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected envd first line: {line:?}"));
        Self { child, port }
    }
}

impl Drop for NetnsEnvd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Echoes every connection until the task is aborted.
fn spawn_echo(listener: std::net::TcpListener) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    })
}

/// Connects and round-trips a message; Err if anything fails.
async fn echo_once(addr: SocketAddr, msg: &[u8]) -> Result<TcpStream, String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timeout".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(msg).await.map_err(|e| format!("write: {e}"))?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
        .await
        .map_err(|_| "read timeout".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    if buf != msg {
        return Err(format!("echo mismatch: {buf:?}"));
    }
    Ok(s)
}

async fn eventually_echoes(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        match echo_once(addr, b"ping through forwarder").await {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("{addr} never forwarded: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn eventually_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(8);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "{addr} still forwarded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect envd");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: envd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("response timeout")
        .expect("read");
    out
}

#[tokio::test]
async fn forwards_loopback_service_and_stops_on_prepare() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("SKIP forwards_loopback_service_and_stops_on_prepare: needs root for ip netns");
        return;
    }
    let ns = match TestNetns::create() {
        Ok(ns) => ns,
        Err(e) => {
            println!("SKIP forwards_loopback_service_and_stops_on_prepare: {e}");
            return;
        }
    };
    let envd = NetnsEnvd::start(&ns);
    let envd_addr = SocketAddr::from((ns.ns_ip, envd.port));

    let svc = ns.listen("127.0.0.1:0".parse().expect("addr"));
    let svc_port = svc.local_addr().expect("addr").port();
    let _echo = spawn_echo(svc);
    let forwarded = SocketAddr::from((ns.ns_ip, svc_port));

    // A second service that goes away while forwarded.
    let gone = ns.listen("127.0.0.1:0".parse().expect("addr"));
    let gone_port = gone.local_addr().expect("addr").port();
    let gone_echo = spawn_echo(gone);
    let gone_addr = SocketAddr::from((ns.ns_ip, gone_port));

    let mut live = eventually_echoes(forwarded).await;
    eventually_echoes(gone_addr).await;

    gone_echo.abort();
    eventually_refused(gone_addr).await;
    // The other forward is unaffected.
    echo_once(forwarded, b"still here")
        .await
        .expect("still forwarded");

    // Quiesce: forwarders and relayed connections close.
    let resp = http(envd_addr, "POST", "/snapshot/prepare").await;
    assert!(resp.starts_with("HTTP/1.1 204"), "{resp}");
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), live.read(&mut byte))
        .await
        .expect("relayed connection left open");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    eventually_refused(forwarded).await;
    // Stays stopped while quiesced (several scan intervals).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(TcpStream::connect(forwarded).await.is_err());

    // Resume restarts forwarding.
    let resp = http(envd_addr, "GET", "/health").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    eventually_echoes(forwarded).await;
}
