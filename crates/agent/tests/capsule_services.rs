//! The metrics sampler and the port proxy against a real gVisor capsule.
//!
//! Same requirements, fixture and host-wide lock as `tests/gvisor.rs` (`tests/common`).

mod common;

use common::envd_sh as exec;

use axum::body::Body;
use axum::http::StatusCode;
use hyper_util::rt::TokioIo;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wrenn_agent::CapsuleId;
use wrenn_agent::capsule::{self, Capsule, CapsuleRequest, Capsules};
use wrenn_agent::image;
use wrenn_agent::metrics::{MetricPoint, Metrics, Range};
use wrenn_agent::network::Network;
use wrenn_agent::proxy::{self, Proxy, ProxyRefusal};
use wrenn_agent::runtime::gvisor::{GvisorConfig, GvisorRuntime};

/// Waits until the newest raw point satisfies `pred`.
async fn wait_point(
    metrics: &Metrics,
    id: &CapsuleId,
    what: &str,
    pred: impl Fn(&MetricPoint) -> bool,
) -> MetricPoint {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let points = metrics.query(id, "10m".parse::<Range>().unwrap()).unwrap();
        if let Some(last) = points.last().filter(|p| pred(p)) {
            return *last;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last points {:?}",
            &points[points.len().saturating_sub(5)..]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> (StatusCode, Option<String>, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = axum::http::Request::builder()
        .uri(path)
        .header("host", addr.to_string())
        .body(Body::empty())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
        .await
        .unwrap();
    (
        status,
        location,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

type Agent = Arc<Capsules<GvisorRuntime>>;

/// A fresh agent core and one running capsule; the lock guard keeps other capsule tests out.
async fn setup() -> Option<(nix::fcntl::Flock<std::fs::File>, Agent, Capsule)> {
    let data_dir = common::fixture().await?;
    let lock = common::serial().await;
    let runtime = GvisorRuntime::new(GvisorConfig::new(data_dir.runsc_root()))
        .await
        .expect("runsc ready");
    capsule::reclaim(&data_dir, &runtime)
        .await
        .expect("reclaim");
    let network = Network::new(16).await.expect("network");
    let capsules = Arc::new(
        Capsules::new(data_dir.clone(), network, runtime)
            .with_health_timeout(Duration::from_secs(20)),
    );
    let capsule = capsules
        .create(CapsuleRequest::new(
            CapsuleId::random().unwrap(),
            image::MINIMAL,
        ))
        .await
        .expect("create");
    Some((lock, capsules, capsule))
}

/// Runs `body`, then destroys the capsule whether or not it panicked.
async fn finish(capsules: &Agent, id: &CapsuleId, body: impl std::future::Future<Output = ()>) {
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(body)).await;
    capsules.destroy(id).await.expect("destroy");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    common::assert_no_leftovers(capsules.data_dir()).await;
}

#[tokio::test]
async fn metrics_and_proxy_on_a_real_capsule() {
    let Some((_lock, capsules, capsule)) = setup().await else {
        return;
    };
    finish(&capsules, &capsule.id.clone(), run(&capsules, &capsule)).await;
}

/// Proxy refusing while paused, and serving again after resume (with a fresh metrics source).
#[tokio::test]
async fn proxy_across_pause_and_resume() {
    let Some((_lock, capsules, capsule)) = setup().await else {
        return;
    };
    finish(
        &capsules,
        &capsule.id.clone(),
        pause_resume(&capsules, &capsule),
    )
    .await;
}

async fn pause_resume(capsules: &Agent, capsule: &Capsule) {
    let id = capsule.id.clone();
    let (code, out) = exec(
        capsule,
        "mkdir -p /srv/site && echo before-pause > /srv/site/hello.txt && \
         head -c 20971520 /dev/urandom > /root/disk20m && cd /srv/site && \
         nohup python3 -m http.server 8000 >/dev/null 2>&1 &",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let proxy = Arc::new(Proxy::new(resolver(capsules)));
    let connections = proxy.connections();
    let addr = serve_proxy(proxy).await;
    let hello = format!("/proxy/{id}/8000/hello.txt");
    assert_eq!(wait_ok(addr, &hello).await, "before-pause\n");

    let metrics = Metrics::new();
    metrics.track(
        id.clone(),
        metrics.gvisor_source(&id, &capsule.dir, capsule.limits.vcpus),
    );
    metrics.sample_once();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    metrics.sample_once();
    let before = *metrics
        .query(&id, Range::default())
        .unwrap()
        .last()
        .expect("a point");
    eprintln!("before pause: {before:?}");

    // Pause as the service will: drain proxied connections, stop sampling, checkpoint.
    let drained = connections.drain(&id, Duration::from_secs(2)).await;
    assert_eq!(drained.forced, 0);
    assert!(metrics.stop(&id));
    capsules.pause(&id).await.expect("pause");
    let (status, _, body) = http_get(addr, &hello).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let flushed = metrics.flush(&id).expect("kept until flushed");
    assert!(!flushed.points_10m.is_empty());

    let resumed = capsules
        .resume(&id, wrenn_agent::snapshot::ResumeOptions::default())
        .await
        .expect("resume");
    connections.reopen(&id);
    assert_eq!(wait_ok(addr, &hello).await, "before-pause\n");

    metrics.track(
        id.clone(),
        metrics.gvisor_source(&id, &resumed.dir, resumed.limits.vcpus),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    metrics.sample_once();
    let after = *metrics
        .query(&id, Range::default())
        .unwrap()
        .last()
        .expect("a point after resume");
    eprintln!("after resume: {after:?}");
    assert!(after.mem_bytes > 0);
}

fn resolver(capsules: &Agent) -> impl proxy::Resolve {
    let registry = capsules.clone();
    move |id: &CapsuleId| -> Result<Ipv4Addr, ProxyRefusal> {
        let capsule = registry
            .get(id)
            .ok_or_else(|| ProxyRefusal::NotFound(id.clone()))?;
        if capsule.state.status != wrenn_agent::capsule::CapsuleStatus::Running {
            return Err(ProxyRefusal::Unavailable {
                id: id.clone(),
                state: capsule.state.status.as_str().to_owned(),
            });
        }
        Ok(capsule.network.capsule_ip())
    }
}

async fn serve_proxy<R: proxy::Resolve>(proxy: Arc<Proxy<R>>) -> SocketAddr {
    let app = proxy::router(proxy);
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// GETs `path` until 200 (a server just started answers 502 through the proxy until then).
async fn wait_ok(addr: SocketAddr, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, body) = http_get(addr, path).await;
        if status == StatusCode::OK {
            return body;
        }
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(Instant::now() < deadline, "{path} never answered: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn run(capsules: &Agent, capsule: &Capsule) {
    let id = capsule.id.clone();
    let metrics = Metrics::new();
    eprintln!("cgroup layout: {:?}", metrics.layout());
    metrics.track(
        id.clone(),
        metrics.gvisor_source(&id, &capsule.dir, capsule.limits.vcpus),
    );
    let sampler = metrics.spawn();

    // Idle baseline, then a busy loop: CPU % of the one vCPU goes above 50.
    // Boot (envd, the first exec) costs CPU for a moment; wait for the capsule to settle.
    let idle = wait_point(&metrics, &id, "idle below 30%", |p| p.cpu_pct < 30.0).await;
    eprintln!("idle: {idle:?}");
    let (code, out) = exec(
        capsule,
        "nohup sh -c 'while :; do :; done' >/dev/null 2>&1 &",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let busy = wait_point(&metrics, &id, "cpu > 50%", |p| {
        p.cpu_pct > 50.0 && p.timestamp_unix > idle.timestamp_unix
    })
    .await;
    eprintln!("busy: {busy:?}");
    let (code, out) = exec(capsule, "pkill -f '[w]hile :'; true").await;
    assert_eq!(code, 0, "{out}");

    // 50 MB on disk (overlay filestore) and 50 MB in memory (tmpfs /dev/shm is sentry memory).
    let before = wait_point(&metrics, &id, "a point", |_| true).await;
    let (code, out) = exec(
        capsule,
        "head -c 52428800 /dev/urandom > /root/big && head -c 52428800 /dev/urandom > /dev/shm/big && sync",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let grown = wait_point(&metrics, &id, "disk and memory +40 MB", |p| {
        p.disk_bytes - before.disk_bytes > 40 << 20 && p.mem_bytes - before.mem_bytes > 40 << 20
    })
    .await;
    eprintln!("before: {before:?}\ngrown:  {grown:?}");
    // Written to disk is not counted as memory twice (page cache excluded): memory grew by
    // the tmpfs file, not by both.
    assert!(
        grown.mem_bytes - before.mem_bytes < 90 << 20,
        "{before:?} → {grown:?}"
    );

    let mid = metrics.query(&id, "2h".parse().unwrap()).unwrap();
    assert!(!mid.is_empty());
    sampler.shutdown().await;
    let flushed = metrics.untrack(&id).expect("tracked");
    assert!(flushed.points_10m.len() >= 3, "{flushed:?}");
    assert!(!flushed.points_2h.is_empty() && !flushed.points_24h.is_empty());

    // A user service in the capsule answers through the proxy.
    let (code, out) = exec(
        capsule,
        "mkdir -p /srv/site/sub && echo proxied-ok > /srv/site/hello.txt && cd /srv/site && \
         nohup python3 -m http.server 8000 >/dev/null 2>&1 &",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let addr = serve_proxy(Arc::new(Proxy::new(resolver(capsules)))).await;
    let body = wait_ok(addr, &format!("/proxy/{id}/8000/hello.txt")).await;
    assert_eq!(body, "proxied-ok\n");
    // http.server redirects a directory without its slash to `/sub/`: rewritten under the prefix.
    let (status, location, _) = http_get(addr, &format!("/proxy/{id}/8000/sub")).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        location.as_deref(),
        Some(format!("/proxy/{id}/8000/sub/").as_str())
    );
    let (status, _, listing) = http_get(addr, &format!("/proxy/{id}/8000/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(listing.contains("hello.txt"), "{listing}");
    let (status, _, _) = http_get(addr, &format!("/proxy/{id}/8001/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}
