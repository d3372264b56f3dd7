//! `GET /files` and `POST /files` against a real envd process.

mod common;

use base64::Engine;
use common::EnvdProcess;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A temporary directory other users may traverse (tempfile makes 0700).
fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn p(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_owned()
}

fn url(envd: &EnvdProcess) -> String {
    format!("{}/files", envd.base_url())
}

/// Every byte value, several times over.
fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

async fn upload_raw(
    envd: &EnvdProcess,
    path: &str,
    body: Vec<u8>,
    headers: HeaderMap,
) -> reqwest::Response {
    http()
        .post(url(envd))
        .query(&[("path", path)])
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .headers(headers)
        .body(body)
        .send()
        .await
        .expect("POST /files")
}

async fn download(
    envd: &EnvdProcess,
    query: &[(&str, &str)],
    headers: HeaderMap,
) -> reqwest::Response {
    http()
        .get(url(envd))
        .query(query)
        .headers(headers)
        .send()
        .await
        .expect("GET /files")
}

async fn assert_error(resp: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(body["code"], json!(status.as_u16()));
    body["message"].as_str().expect("message").to_owned()
}

fn accept(encoding: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT_ENCODING, encoding.parse().unwrap());
    h
}

#[tokio::test]
async fn octet_stream_upload_round_trips_binary_data() {
    let envd = EnvdProcess::start();
    let dir = tempdir();
    let target = dir.path().join("new/parents/data.bin");
    let data = binary(300_000);

    let resp = upload_raw(&envd, &p(&target), data.clone(), HeaderMap::new()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!([{"path": p(&target), "name": "data.bin", "type": "file"}])
    );
    assert_eq!(fs::read(&target).unwrap(), data);
    // Created 0666 less the umask: at least owner read/write.
    assert_eq!(fs::metadata(&target).unwrap().mode() & 0o600, 0o600);

    // Overwrite truncates.
    let resp = upload_raw(&envd, &p(&target), b"short".to_vec(), HeaderMap::new()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fs::read(&target).unwrap(), b"short");

    let resp = upload_raw(&envd, &p(&target), data.clone(), HeaderMap::new()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Identity download: exact bytes, headers.
    let resp = download(&envd, &[("path", &p(&target))], accept("identity")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");
    assert_eq!(
        h[header::CONTENT_DISPOSITION],
        "inline; filename=\"data.bin\""
    );
    assert!(
        h.get_all(header::VARY)
            .iter()
            .any(|v| v.to_str().unwrap().eq_ignore_ascii_case("accept-encoding"))
    );
    assert!(h.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(h[header::CONTENT_LENGTH], data.len().to_string().as_str());
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());

    // No Accept-Encoding at all: identity too.
    let resp = download(&envd, &[("path", &p(&target))], HeaderMap::new()).await;
    assert!(resp.headers().get(header::CONTENT_ENCODING).is_none());
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn gzip_download_when_accepted_and_406_when_nothing_is() {
    let envd = EnvdProcess::start();
    let dir = tempdir();
    let target = dir.path().join("page.html");
    let data = b"<html>".repeat(10_000);
    fs::write(&target, &data).unwrap();

    let resp = download(&envd, &[("path", &p(&target))], accept("gzip, deflate, br")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/html");
    let compressed = resp.bytes().await.unwrap();
    assert!(
        compressed.len() < data.len() / 10,
        "gzip should shrink repetitive data"
    );
    assert_eq!(gunzip(&compressed), data);

    // Range requests get the stored bytes.
    let mut ranged = accept("gzip");
    ranged.insert(header::RANGE, "bytes=0-3".parse().unwrap());
    let resp = download(&envd, &[("path", &p(&target))], ranged).await;
    assert!(resp.headers().get(header::CONTENT_ENCODING).is_none());

    let resp = download(&envd, &[("path", &p(&target))], accept("br, identity;q=0")).await;
    assert_error(resp, StatusCode::NOT_ACCEPTABLE).await;
}

#[tokio::test]
async fn gzip_request_bodies_are_decoded() {
    let envd = EnvdProcess::start();
    let dir = tempdir();
    let target = dir.path().join("unzipped.bin");
    let data = binary(1_000_000);
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let resp = upload_raw(&envd, &p(&target), gzip(&data), h.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fs::read(&target).unwrap(), data);

    // Multipart bodies may be gzip-encoded as a whole too.
    let boundary = "envd-test-boundary-7f3a";
    let raw = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\ninside multipart\r\n--{boundary}--\r\n",
        p(&dir.path().join("mp.txt"))
    )
    .into_bytes();
    let resp = http()
        .post(url(&envd))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header(header::CONTENT_ENCODING, "gzip")
        .body(gzip(&raw))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        fs::read(dir.path().join("mp.txt")).unwrap(),
        b"inside multipart"
    );

    // Not gzip at all → a clean 400, and an unknown coding → 415.
    let resp = upload_raw(&envd, &p(&target), b"plain".to_vec(), h).await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    let mut br = HeaderMap::new();
    br.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
    let resp = upload_raw(&envd, &p(&target), b"x".to_vec(), br).await;
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn multipart_upload_writes_every_file_part() {
    let envd = EnvdProcess::start();
    let dir = tempdir();
    let a = dir.path().join("a/one.txt");
    let b = dir.path().join("b/two.bin");
    let form = reqwest::multipart::Form::new()
        .text("note", "ignored: not named file")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"first".to_vec()).file_name(p(&a)),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(binary(70_000)).file_name(p(&b)),
        );
    let resp = http()
        .post(url(&envd))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!([
            {"path": p(&a), "name": "one.txt", "type": "file"},
            {"path": p(&b), "name": "two.bin", "type": "file"},
        ])
    );
    assert_eq!(fs::read(&a).unwrap(), b"first");
    assert_eq!(fs::read(&b).unwrap(), binary(70_000));

    // `path` wins over the part's filename.
    let c = dir.path().join("c.txt");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"third".to_vec()).file_name("ignored-name.txt"),
    );
    let resp = http()
        .post(url(&envd))
        .query(&[("path", p(&c))])
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fs::read(&c).unwrap(), b"third");

    // Two parts for one path is a bad request.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"1".to_vec()).file_name("x"),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"2".to_vec()).file_name("y"),
        );
    let resp = http()
        .post(url(&envd))
        .query(&[("path", p(&dir.path().join("dup.txt")))])
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST).await;

    // No file part at all.
    let form = reqwest::multipart::Form::new().text("other", "x");
    let resp = http()
        .post(url(&envd))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST).await;

    // A relative filename lands in the user's home (root's, by default).
    if is_root() {
        let name = format!(".envd-files-test-{}", std::process::id());
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"home".to_vec()).file_name(name.clone()),
        );
        let resp = http()
            .post(url(&envd))
            .multipart(form)
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        let home = nix::unistd::User::from_name("root").unwrap().unwrap().dir;
        let written = home.join(&name);
        let ok = fs::read(&written).ok();
        let _ = fs::remove_file(&written);
        assert_eq!(body[0]["path"], json!(p(&written)));
        assert_eq!(ok.as_deref(), Some(&b"home"[..]));
    }
}

#[tokio::test]
async fn content_type_and_disposition_follow_the_name() {
    let envd = EnvdProcess::start();
    let dir = tempdir();
    for (name, mime) in [
        ("report \"final\".json", "application/json"),
        ("notes.txt", "text/plain"),
        ("image.png", "image/png"),
        ("no-extension", "application/octet-stream"),
    ] {
        let path = dir.path().join(name);
        fs::write(&path, "x").unwrap();
        let resp = download(&envd, &[("path", &p(&path))], HeaderMap::new()).await;
        assert_eq!(resp.status(), StatusCode::OK, "{name}");
        let ct = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ct.starts_with(mime), "{name}: {ct}");
        let cd = resp.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .to_owned();
        let escaped = name.replace('"', "\\\"");
        assert_eq!(cd, format!("inline; filename=\"{escaped}\""));
    }
}

#[tokio::test]
async fn bad_targets_are_client_errors() {
    let envd = EnvdProcess::start();
    let dir = tempdir();
    let missing = dir.path().join("missing.txt");
    let resp = download(&envd, &[("path", &p(&missing))], HeaderMap::new()).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;

    let resp = download(&envd, &[("path", &p(dir.path()))], HeaderMap::new()).await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;

    // Not a regular file (a FIFO must not hang the request either).
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let resp = download(&envd, &[("path", &p(&fifo))], HeaderMap::new()).await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;

    // Uploading onto a directory, or through a file.
    let resp = upload_raw(&envd, &p(dir.path()), b"x".to_vec(), HeaderMap::new()).await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    let resp = upload_raw(
        &envd,
        &p(&file.join("below")),
        b"x".to_vec(),
        HeaderMap::new(),
    )
    .await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;

    // Octet-stream needs a path.
    let resp = http()
        .post(url(&envd))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST).await;

    // Unknown user.
    let resp = download(
        &envd,
        &[("path", &p(&file)), ("username", "no-such-user-here")],
        HeaderMap::new(),
    )
    .await;
    assert_error(resp, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn files_act_with_the_users_permissions() {
    if !is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let envd = EnvdProcess::start();
    let dir = tempdir();
    let secret = dir.path().join("secret.txt");
    fs::write(&secret, "root only").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let as_nobody = |path: &Path| {
        vec![
            ("path".to_owned(), p(path)),
            ("username".to_owned(), "nobody".to_owned()),
        ]
    };

    let resp = http()
        .get(url(&envd))
        .query(&as_nobody(&secret))
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::FORBIDDEN).await;
    // The same file for the default user (root).
    let resp = download(&envd, &[("path", &p(&secret))], HeaderMap::new()).await;
    assert_eq!(resp.status(), StatusCode::OK);

    // Writing into a root-owned directory is refused and creates nothing.
    let denied = dir.path().join("sub/new.txt");
    let resp = http()
        .post(url(&envd))
        .query(&as_nobody(&denied))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::FORBIDDEN).await;
    assert!(!dir.path().join("sub").exists());

    // In a world-writable directory the new parents and file are nobody's.
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let target = open.join("x/y/file.txt");
    let resp = http()
        .post(url(&envd))
        .query(&as_nobody(&target))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body("mine")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for path in [open.join("x"), open.join("x/y"), target.clone()] {
        assert_eq!(
            fs::metadata(&path).unwrap().uid(),
            65534,
            "{}",
            path.display()
        );
    }
    // Basic auth names the user when `username` is absent.
    let token = base64::engine::general_purpose::STANDARD.encode("nobody:");
    let resp = http()
        .get(url(&envd))
        .query(&[("path", p(&secret))])
        .header(header::AUTHORIZATION, format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn upload_metadata_is_stored_as_xattrs() {
    let envd = EnvdProcess::start();
    let dir = tempdir();
    let target = dir.path().join("meta.txt");
    let mut h = HeaderMap::new();
    h.insert("x-metadata-Owner-Team", "infra".parse().unwrap());
    let resp = upload_raw(&envd, &p(&target), b"x".to_vec(), h).await;
    if resp.status() == StatusCode::BAD_REQUEST {
        eprintln!("skipped: no user xattrs on this filesystem");
        return;
    }
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body[0]["metadata"], json!({"owner-team": "infra"}));
    // Visible through Stat.
    let resp = http()
        .post(format!("{}/filesystem.Filesystem/Stat", envd.base_url()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(json!({"path": p(&target)}).to_string())
        .send()
        .await
        .unwrap();
    let stat: Value = resp.json().await.unwrap();
    assert_eq!(stat["entry"]["metadata"], json!({"owner-team": "infra"}));
}

async fn post_init(envd: &EnvdProcess, body: Value) {
    let resp = http()
        .post(format!("{}/init", envd.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "/init: {}", resp.status());
}

fn sign(path: &str, op: &str, user: &str, token: &str, exp: Option<i64>, base64: bool) -> String {
    let raw = match exp {
        Some(e) => format!("{path}:{op}:{user}:{token}:{e}"),
        None => format!("{path}:{op}:{user}:{token}"),
    };
    let digest = Sha256::digest(raw.as_bytes());
    if base64 {
        format!(
            "v1_{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
        )
    } else {
        format!(
            "v1_{}",
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    }
}

#[tokio::test]
async fn access_token_and_signatures_guard_files() {
    let envd = EnvdProcess::start();
    let dir = tempdir();
    let file = dir.path().join("guarded.txt");
    fs::write(&file, "secret").unwrap();
    let fp = p(&file);
    let token = "s3cr3t-token";
    post_init(&envd, json!({"accessToken": token})).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    // Nothing: 401.
    let resp = download(&envd, &[("path", &fp)], HeaderMap::new()).await;
    assert_error(resp, StatusCode::UNAUTHORIZED).await;
    // The token header.
    let mut good = HeaderMap::new();
    good.insert("x-access-token", token.parse().unwrap());
    let resp = download(&envd, &[("path", &fp)], good.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut bad = HeaderMap::new();
    bad.insert("x-access-token", "wrong".parse().unwrap());
    assert_error(
        download(&envd, &[("path", &fp)], bad).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // Signed URLs, hex and base64 forms, with and without expiry.
    for b64 in [false, true] {
        let sig = sign(&fp, "read", "", token, None, b64);
        let resp = download(
            &envd,
            &[("path", &fp), ("signature", &sig)],
            HeaderMap::new(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK, "base64={b64}");
        assert_eq!(resp.text().await.unwrap(), "secret");
    }
    let exp = (now + 300).to_string();
    let sig = sign(&fp, "read", "root", token, Some(now + 300), false);
    let q = [
        ("path", fp.as_str()),
        ("username", "root"),
        ("signature", &sig),
        ("signature_expiration", &exp),
    ];
    assert_eq!(
        download(&envd, &q, HeaderMap::new()).await.status(),
        StatusCode::OK
    );

    // Expired.
    let past = (now - 10).to_string();
    let sig = sign(&fp, "read", "", token, Some(now - 10), false);
    let q = [
        ("path", fp.as_str()),
        ("signature", &sig),
        ("signature_expiration", &past),
    ];
    let msg = assert_error(
        download(&envd, &q, HeaderMap::new()).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(msg.contains("expired"), "{msg}");
    // Signed for another operation, path, user or token.
    for sig in [
        sign(&fp, "write", "", token, None, false),
        sign("/etc/passwd", "read", "", token, None, false),
        sign(&fp, "read", "nobody", token, None, false),
        sign(&fp, "read", "", "other-token", None, false),
    ] {
        let resp = download(
            &envd,
            &[("path", &fp), ("signature", &sig)],
            HeaderMap::new(),
        )
        .await;
        assert_error(resp, StatusCode::UNAUTHORIZED).await;
    }
    // Expiry that was not signed.
    let sig = sign(&fp, "read", "", token, None, false);
    let q = [
        ("path", fp.as_str()),
        ("signature", &sig),
        ("signature_expiration", &exp),
    ];
    assert_error(
        download(&envd, &q, HeaderMap::new()).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // Uploads need the write signature.
    let target = dir.path().join("up.txt");
    let tp = p(&target);
    let read_sig = sign(&tp, "read", "", token, None, false);
    let resp = http()
        .post(url(&envd))
        .query(&[("path", tp.as_str()), ("signature", &read_sig)])
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::UNAUTHORIZED).await;
    assert!(!target.exists());
    let write_sig = sign(&tp, "write", "", token, None, true);
    let resp = http()
        .post(url(&envd))
        .query(&[("path", tp.as_str()), ("signature", &write_sig)])
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body("signed")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fs::read(&target).unwrap(), b"signed");
}

/// Unmounts on drop, so a failing test does not leave the mount behind.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn full_disk_is_507() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempdir();
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: cannot mount tmpfs here");
        return;
    }
    let _mount = Tmpfs(mnt.clone());
    let envd = EnvdProcess::start();
    let resp = upload_raw(
        &envd,
        &p(&mnt.join("big.bin")),
        binary(2 << 20),
        HeaderMap::new(),
    )
    .await;
    let msg = assert_error(resp, StatusCode::INSUFFICIENT_STORAGE).await;
    assert!(msg.contains("space"), "{msg}");
    // A file that fits still works afterwards.
    let _ = fs::remove_file(mnt.join("big.bin"));
    let resp = upload_raw(
        &envd,
        &p(&mnt.join("small.bin")),
        binary(1000),
        HeaderMap::new(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_streamed_upload_does_not_buffer_in_memory() {
    const TOTAL: u64 = 200 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let envd = EnvdProcess::start();
    let dir = tempdir();
    let target = dir.path().join("big.bin");

    let pid = envd.pid();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = vm_rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let chunk = bytes::Bytes::from(binary(CHUNK));
    let chunks = (TOTAL / CHUNK as u64) as usize;
    let body =
        futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = http()
        .post(url(&envd))
        .query(&[("path", p(&target))])
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("upload");
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fs::metadata(&target).unwrap().len(), TOTAL);

    let peak_mib = peak.load(Ordering::Relaxed) / 1024;
    eprintln!("envd peak RSS during a 200 MiB upload: {peak_mib} MiB");
    assert!(peak_mib > 0, "RSS was sampled");
    assert!(peak_mib < 64, "envd RSS reached {peak_mib} MiB");

    // Streamed back out the same way, byte for byte (spot-checked by hash).
    let resp = download(&envd, &[("path", &p(&target))], HeaderMap::new()).await;
    let mut stream = resp.bytes_stream();
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        n += c.len() as u64;
        hasher.update(&c);
    }
    assert_eq!(n, TOTAL);
    let mut expect = Sha256::new();
    let one = binary(CHUNK);
    for _ in 0..chunks {
        expect.update(&one);
    }
    assert_eq!(hasher.finalize(), expect.finalize());
}
