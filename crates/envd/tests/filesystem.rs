//! The `filesystem.Filesystem` Connect service against a real envd process,
//! through the generated Rust client.

mod common;

use base64::Engine;
use common::EnvdProcess;
use connectrpc::client::{CallOptions, ClientConfig, HttpClient};
use connectrpc::{ConnectError, ErrorCode};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};
use wrenn_proto::filesystem::watch_dir_response::Event as WatchEvent;
use wrenn_proto::filesystem::*;

type Client = FilesystemClient<HttpClient>;

fn client(envd: &EnvdProcess) -> Client {
    let uri = envd.base_url().parse().expect("base uri");
    FilesystemClient::new(HttpClient::plaintext(), ClientConfig::new(uri))
}

/// Call options naming `user` the way E2B clients do.
fn as_user(user: &str) -> CallOptions {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
    CallOptions::default().with_header("authorization", format!("Basic {token}"))
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

async fn stat(c: &Client, path: &str) -> Result<EntryInfo, ConnectError> {
    let resp = c
        .stat(StatRequest {
            path: path.into(),
            ..Default::default()
        })
        .await?;
    Ok(resp.into_owned().entry.into_option().expect("entry"))
}

fn code<T: std::fmt::Debug>(r: Result<T, ConnectError>) -> ErrorCode {
    r.expect_err("expected an error").code
}

#[tokio::test]
async fn stat_reports_files_dirs_and_symlinks() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let dir = tempdir();
    let file = dir.path().join("hello.txt");
    fs::write(&file, "hello").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("hello.txt", dir.path().join("link")).unwrap();

    let e = stat(&c, &p(&file)).await.unwrap();
    assert_eq!(e.name, "hello.txt");
    assert_eq!(e.path, p(&file));
    assert_eq!(e.r#type, FileType::FILE_TYPE_FILE);
    assert_eq!(e.size, 5);
    assert_eq!(e.mode, 0o640);
    assert_eq!(e.permissions, "-rw-r-----");
    let meta = fs::metadata(&file).unwrap();
    let me = nix::unistd::User::from_uid(meta.uid().into())
        .unwrap()
        .map(|u| u.name)
        .unwrap_or_else(|| meta.uid().to_string());
    assert_eq!(e.owner, me);
    assert!(!e.group.is_empty());
    let mtime = e.modified_time.as_option().expect("modified_time");
    assert_eq!(mtime.seconds, meta.mtime());
    assert!(!e.is_symlink);
    assert_eq!(e.symlink_target, None);

    let d = stat(&c, &p(&sub)).await.unwrap();
    assert_eq!(d.r#type, FileType::FILE_TYPE_DIRECTORY);
    assert_eq!(d.permissions, "drwxr-xr-x");
    assert_eq!(d.mode, 0o755);

    let l = stat(&c, &p(&dir.path().join("link"))).await.unwrap();
    assert!(l.is_symlink);
    assert_eq!(l.r#type, FileType::FILE_TYPE_FILE);
    assert_eq!(
        l.symlink_target.as_deref(),
        Some(p(&fs::canonicalize(&file).unwrap()).as_str())
    );
    assert!(l.permissions.starts_with('l'));

    // `..` and `.` are resolved before acting.
    let n = stat(&c, &format!("{}/sub/../hello.txt", p(dir.path())))
        .await
        .unwrap();
    assert_eq!(n.path, p(&file));

    assert_eq!(
        code(stat(&c, &p(&dir.path().join("missing"))).await),
        ErrorCode::NotFound
    );
    // A path through a file does not exist either.
    assert_eq!(
        code(stat(&c, &format!("{}/x", p(&file))).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(stat(&c, "~nobody/x").await),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn make_dir_creates_parents_and_reports_conflicts() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let dir = tempdir();
    let deep = dir.path().join("a/b/c");
    let req = |path: &Path| MakeDirRequest {
        path: p(path),
        ..Default::default()
    };

    let e = c
        .make_dir(req(&deep))
        .await
        .unwrap()
        .into_owned()
        .entry
        .into_option()
        .unwrap();
    assert_eq!(e.r#type, FileType::FILE_TYPE_DIRECTORY);
    assert_eq!(e.name, "c");
    assert_eq!(e.path, p(&deep));
    assert!(deep.is_dir());

    assert_eq!(code(c.make_dir(req(&deep)).await), ErrorCode::AlreadyExists);
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    assert_eq!(
        code(c.make_dir(req(&file)).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(c.make_dir(req(&file.join("sub"))).await),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn move_renames_and_creates_destination_parents() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let dir = tempdir();
    let src = dir.path().join("src.txt");
    fs::write(&src, "data").unwrap();
    let dst = dir.path().join("x/y/dst.txt");
    let e = c
        .r#move(MoveRequest {
            source: p(&src),
            destination: p(&dst),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned()
        .entry
        .into_option()
        .unwrap();
    assert_eq!(e.path, p(&dst));
    assert_eq!(e.name, "dst.txt");
    assert_eq!(e.size, 4);
    assert!(!src.exists());
    assert_eq!(fs::read_to_string(&dst).unwrap(), "data");

    let missing = c
        .r#move(MoveRequest {
            source: p(&src),
            destination: p(&dir.path().join("z")),
            ..Default::default()
        })
        .await;
    assert_eq!(code(missing), ErrorCode::NotFound);
}

#[tokio::test]
async fn list_dir_honours_depth_and_does_not_follow_symlinks() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let dir = tempdir();
    let root = dir.path();
    fs::write(root.join("f1"), "1").unwrap();
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::write(root.join("sub/f2"), "22").unwrap();
    fs::write(root.join("sub/deeper/f3"), "333").unwrap();
    std::os::unix::fs::symlink("sub", root.join("link")).unwrap();

    let list = |depth: u32, path: String| {
        let c = &c;
        async move {
            c.list_dir(ListDirRequest {
                path,
                depth,
                ..Default::default()
            })
            .await
            .map(|r| {
                let mut paths: Vec<String> =
                    r.into_owned().entries.into_iter().map(|e| e.path).collect();
                paths.sort();
                paths
            })
        }
    };
    let rel = |names: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = names.iter().map(|n| p(&root.join(n))).collect();
        v.sort();
        v
    };

    let one = rel(&["f1", "link", "sub"]);
    assert_eq!(list(0, p(root)).await.unwrap(), one);
    assert_eq!(list(1, p(root)).await.unwrap(), one);
    assert_eq!(
        list(2, p(root)).await.unwrap(),
        rel(&["f1", "link", "sub", "sub/deeper", "sub/f2"])
    );
    assert_eq!(
        list(5, p(root)).await.unwrap(),
        rel(&["f1", "link", "sub", "sub/deeper", "sub/deeper/f3", "sub/f2"])
    );

    // The symlinked directory is listed as a symlink to a directory.
    let entries = c
        .list_dir(ListDirRequest {
            path: p(root),
            depth: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned()
        .entries;
    let link = entries.iter().find(|e| e.name == "link").unwrap();
    assert!(link.is_symlink);
    assert_eq!(link.r#type, FileType::FILE_TYPE_DIRECTORY);
    let f1 = entries.iter().find(|e| e.name == "f1").unwrap();
    assert_eq!(f1.size, 1);

    // Listing through the symlink reports paths under the name asked for.
    assert_eq!(
        list(1, p(&root.join("link"))).await.unwrap(),
        rel(&["link/deeper", "link/f2"])
    );

    assert_eq!(
        code(list(1, p(&root.join("nope"))).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(list(1, p(&root.join("f1"))).await),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn remove_deletes_files_links_and_trees() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let dir = tempdir();
    let root = dir.path();
    fs::create_dir_all(root.join("tree/a/b")).unwrap();
    fs::write(root.join("tree/a/b/f"), "x").unwrap();
    fs::write(root.join("file"), "x").unwrap();
    std::os::unix::fs::symlink("tree", root.join("link")).unwrap();
    let rm = |path: &Path| {
        c.remove(RemoveRequest {
            path: p(path),
            ..Default::default()
        })
    };

    rm(&root.join("link")).await.unwrap();
    assert!(
        root.join("tree/a/b/f").exists(),
        "symlink removal must not touch the target"
    );
    rm(&root.join("file")).await.unwrap();
    rm(&root.join("tree")).await.unwrap();
    assert!(fs::read_dir(root).unwrap().next().is_none());
    assert_eq!(code(rm(&root.join("tree")).await), ErrorCode::NotFound);
}

#[tokio::test]
async fn operations_act_with_the_users_permissions() {
    if !is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let dir = tempdir();
    let root = dir.path();
    let nobody = as_user("nobody");

    // A root-only directory: nobody can neither look inside nor change it.
    let secret = root.join("secret");
    fs::create_dir(&secret).unwrap();
    fs::write(secret.join("f"), "x").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
    let stat_req = StatRequest {
        path: p(&secret.join("f")),
        ..Default::default()
    };
    assert_eq!(
        code(c.stat_with_options(stat_req.clone(), nobody.clone()).await),
        ErrorCode::PermissionDenied
    );
    // Root (the default user) still can.
    c.stat(stat_req).await.unwrap();
    let list_req = ListDirRequest {
        path: p(&secret),
        depth: 1,
        ..Default::default()
    };
    assert_eq!(
        code(c.list_dir_with_options(list_req, nobody.clone()).await),
        ErrorCode::PermissionDenied
    );
    let rm_req = RemoveRequest {
        path: p(&secret.join("f")),
        ..Default::default()
    };
    assert_eq!(
        code(c.remove_with_options(rm_req, nobody.clone()).await),
        ErrorCode::PermissionDenied
    );
    assert!(secret.join("f").exists());

    // Root-owned 0755 directory: nobody cannot create in it.
    let mk = |path: &Path| MakeDirRequest {
        path: p(path),
        ..Default::default()
    };
    assert_eq!(
        code(
            c.make_dir_with_options(mk(&root.join("nope")), nobody.clone())
                .await
        ),
        ErrorCode::PermissionDenied
    );
    assert!(!root.join("nope").exists());

    // In a world-writable directory, what nobody creates is nobody's.
    let open = root.join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let e = c
        .make_dir_with_options(mk(&open.join("a/b")), nobody.clone())
        .await
        .unwrap()
        .into_owned()
        .entry
        .into_option()
        .unwrap();
    assert_eq!(e.owner, "nobody");
    assert_eq!(fs::metadata(open.join("a")).unwrap().uid(), 65534);
    assert_eq!(fs::metadata(open.join("a/b")).unwrap().uid(), 65534);
    // Moving it is allowed, and the moved entry still belongs to nobody.
    let moved = c
        .move_with_options(
            MoveRequest {
                source: p(&open.join("a")),
                destination: p(&open.join("new/a")),
                ..Default::default()
            },
            nobody.clone(),
        )
        .await
        .unwrap()
        .into_owned()
        .entry
        .into_option()
        .unwrap();
    assert_eq!(moved.owner, "nobody");
    assert_eq!(fs::metadata(open.join("new")).unwrap().uid(), 65534);

    // Unknown users are rejected.
    assert_eq!(
        code(
            c.stat_with_options(
                StatRequest {
                    path: "/".into(),
                    ..Default::default()
                },
                as_user("no-such-user-here"),
            )
            .await
        ),
        ErrorCode::Unauthenticated
    );
}

/// Number of inotify instances the envd process holds.
fn inotify_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    fs::read_link(e.path())
                        .map(|t| t.to_string_lossy().contains("inotify"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

async fn wait_for(mut cond: impl FnMut() -> bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

type WatchStream = connectrpc::client::ServerStream<
    <HttpClient as connectrpc::client::ClientTransport>::ResponseBody,
    wrenn_proto::filesystem::WatchDirResponseView<'static>,
>;

/// Reads the stream until `want` has been seen (name, type), collecting
/// filesystem events; keepalives are counted.
async fn expect_events(
    stream: &mut WatchStream,
    want: &[(&str, EventType)],
    keepalives: &mut usize,
) -> Vec<FilesystemEvent> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let missing: Vec<_> = want
            .iter()
            .filter(|(n, t)| {
                !seen
                    .iter()
                    .any(|e: &FilesystemEvent| e.name == *n && e.r#type == *t)
            })
            .collect();
        if missing.is_empty() {
            return seen;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {missing:?}; saw {seen:?}"))
            .expect("stream error")
            .expect("stream ended");
        match msg.to_owned_message().event {
            Some(WatchEvent::Filesystem(e)) => seen.push(*e),
            Some(WatchEvent::Keepalive(_)) => *keepalives += 1,
            other => panic!("unexpected watch message {other:?}"),
        }
    }
}

#[tokio::test]
async fn watch_dir_streams_events_recursively() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let mut stream = c
        .watch_dir_with_options(
            WatchDirRequest {
                path: p(&root),
                recursive: true,
                include_entry: true,
                ..Default::default()
            },
            CallOptions::default().with_header("keepalive-ping-interval", "1"),
        )
        .await
        .expect("watch");
    let first = stream.message().await.unwrap().unwrap().to_owned_message();
    assert!(
        matches!(first.event, Some(WatchEvent::Start(_))),
        "first message must be start, got {first:?}"
    );
    let mut keepalives = 0;

    let file = root.join("a.txt");
    fs::write(&file, "one").unwrap();
    let events = expect_events(
        &mut stream,
        &[
            ("a.txt", EventType::EVENT_TYPE_CREATE),
            ("a.txt", EventType::EVENT_TYPE_WRITE),
        ],
        &mut keepalives,
    )
    .await;
    let created = events
        .iter()
        .find(|e| e.r#type == EventType::EVENT_TYPE_CREATE)
        .unwrap();
    let entry = created
        .entry
        .as_option()
        .expect("include_entry gives the entry");
    assert_eq!(entry.path, p(&file));
    assert_eq!(entry.r#type, FileType::FILE_TYPE_FILE);

    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    expect_events(
        &mut stream,
        &[("a.txt", EventType::EVENT_TYPE_CHMOD)],
        &mut keepalives,
    )
    .await;

    fs::rename(&file, root.join("b.txt")).unwrap();
    expect_events(
        &mut stream,
        &[
            ("a.txt", EventType::EVENT_TYPE_RENAME),
            ("b.txt", EventType::EVENT_TYPE_RENAME),
        ],
        &mut keepalives,
    )
    .await;

    fs::remove_file(root.join("b.txt")).unwrap();
    let removed = expect_events(
        &mut stream,
        &[("b.txt", EventType::EVENT_TYPE_REMOVE)],
        &mut keepalives,
    )
    .await;
    assert!(removed.iter().all(|e| e.entry.is_unset()));

    // A directory created after the watch started is watched too.
    fs::create_dir(root.join("sub")).unwrap();
    expect_events(
        &mut stream,
        &[("sub", EventType::EVENT_TYPE_CREATE)],
        &mut keepalives,
    )
    .await;
    fs::write(root.join("sub/inner.txt"), "x").unwrap();
    expect_events(
        &mut stream,
        &[("sub/inner.txt", EventType::EVENT_TYPE_CREATE)],
        &mut keepalives,
    )
    .await;
    // Even when its contents appear before the watch on it is in place.
    fs::create_dir_all(root.join("p/q/r")).unwrap();
    fs::write(root.join("p/q/r/deep.txt"), "x").unwrap();
    expect_events(
        &mut stream,
        &[
            ("p", EventType::EVENT_TYPE_CREATE),
            ("p/q/r/deep.txt", EventType::EVENT_TYPE_CREATE),
        ],
        &mut keepalives,
    )
    .await;
    fs::write(root.join("p/q/r/deep.txt"), "more").unwrap();
    expect_events(
        &mut stream,
        &[("p/q/r/deep.txt", EventType::EVENT_TYPE_WRITE)],
        &mut keepalives,
    )
    .await;

    // Idle: keepalives arrive at the requested interval.
    let before = keepalives;
    let deadline = Instant::now() + Duration::from_secs(5);
    while keepalives < before + 2 && Instant::now() < deadline {
        let msg = tokio::time::timeout(Duration::from_secs(3), stream.message())
            .await
            .expect("keepalive within 3 s")
            .unwrap()
            .unwrap()
            .to_owned_message();
        if let Some(WatchEvent::Keepalive(_)) = msg.event {
            keepalives += 1;
        }
    }
    assert!(keepalives >= before + 2, "expected keepalives while idle");
}

#[tokio::test]
async fn watch_dir_without_recursion_ignores_nested_changes() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    fs::create_dir(root.join("sub")).unwrap();
    let mut stream = c
        .watch_dir(WatchDirRequest {
            path: p(&root),
            ..Default::default()
        })
        .await
        .unwrap();
    stream.message().await.unwrap().unwrap();
    fs::write(root.join("sub/nested"), "x").unwrap();
    fs::write(root.join("top"), "x").unwrap();
    let mut k = 0;
    let events = expect_events(
        &mut stream,
        &[("top", EventType::EVENT_TYPE_CREATE)],
        &mut k,
    )
    .await;
    assert!(
        events.iter().all(|e| !e.name.contains("nested")),
        "{events:?}"
    );
    assert!(
        events.iter().all(|e| e.entry.is_unset()),
        "no entries unless asked"
    );
}

#[tokio::test]
async fn watch_dir_rejects_missing_and_non_directories() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let dir = tempdir();
    let file = dir.path().join("f");
    fs::write(&file, "x").unwrap();
    for (path, want) in [
        (dir.path().join("missing"), ErrorCode::NotFound),
        (file, ErrorCode::InvalidArgument),
    ] {
        let req = WatchDirRequest {
            path: p(&path),
            ..Default::default()
        };
        let got = match c.watch_dir(req).await {
            Err(e) => e.code,
            Ok(mut s) => s.message().await.expect_err("stream must fail").code,
        };
        assert_eq!(got, want, "{}", path.display());
        let poll = c
            .create_watcher(CreateWatcherRequest {
                path: p(&path),
                ..Default::default()
            })
            .await;
        assert_eq!(code(poll), want);
    }
}

#[tokio::test]
async fn watch_stream_releases_inotify_when_the_client_leaves() {
    let envd = EnvdProcess::start();
    let dir = tempdir();
    fs::create_dir_all(dir.path().join("a/b")).unwrap();
    assert_eq!(inotify_fds(envd.pid()), 0);
    {
        let c = client(&envd);
        let mut stream = c
            .watch_dir_with_options(
                WatchDirRequest {
                    path: p(dir.path()),
                    recursive: true,
                    ..Default::default()
                },
                CallOptions::default().with_header("keepalive-ping-interval", "1"),
            )
            .await
            .unwrap();
        stream.message().await.unwrap().unwrap();
        assert_eq!(inotify_fds(envd.pid()), 1);
        // Client and stream dropped here: the connection goes away.
    }
    let pid = envd.pid();
    assert!(
        wait_for(|| inotify_fds(pid) == 0, Duration::from_secs(10)).await,
        "inotify instance still open after the client left"
    );
}

#[tokio::test]
async fn polling_watcher_buffers_until_drained_and_can_be_removed() {
    let envd = EnvdProcess::start();
    let c = client(&envd);
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let id = c
        .create_watcher(CreateWatcherRequest {
            path: p(&root),
            recursive: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned()
        .watcher_id;
    assert!(!id.is_empty());
    assert_eq!(inotify_fds(envd.pid()), 1);

    fs::write(root.join("f.txt"), "data").unwrap();
    fs::create_dir(root.join("d")).unwrap();
    fs::remove_file(root.join("f.txt")).unwrap();

    let want = [
        ("f.txt", EventType::EVENT_TYPE_CREATE),
        ("f.txt", EventType::EVENT_TYPE_WRITE),
        ("d", EventType::EVENT_TYPE_CREATE),
        ("f.txt", EventType::EVENT_TYPE_REMOVE),
    ];
    let mut got: Vec<FilesystemEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let batch = c
            .get_watcher_events(GetWatcherEventsRequest {
                watcher_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_owned()
            .events;
        got.extend(batch);
        if want
            .iter()
            .all(|(n, t)| got.iter().any(|e| e.name == *n && e.r#type == *t))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (n, t) in want {
        assert!(
            got.iter().any(|e| e.name == n && e.r#type == t),
            "missing {n} {t:?} in {got:?}"
        );
    }
    // Order is preserved: the create comes before the remove.
    let pos = |t: EventType| got.iter().position(|e| e.name == "f.txt" && e.r#type == t);
    assert!(pos(EventType::EVENT_TYPE_CREATE) < pos(EventType::EVENT_TYPE_REMOVE));

    // Drained: nothing new means an empty batch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let empty = c
        .get_watcher_events(GetWatcherEventsRequest {
            watcher_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned()
        .events;
    assert!(empty.is_empty(), "{empty:?}");

    c.remove_watcher(RemoveWatcherRequest {
        watcher_id: id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let pid = envd.pid();
    assert!(wait_for(|| inotify_fds(pid) == 0, Duration::from_secs(5)).await);
    let after = c
        .get_watcher_events(GetWatcherEventsRequest {
            watcher_id: id.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(after), ErrorCode::NotFound);
    let again = c
        .remove_watcher(RemoveWatcherRequest {
            watcher_id: id,
            ..Default::default()
        })
        .await;
    assert_eq!(code(again), ErrorCode::NotFound);
    let unknown = c
        .get_watcher_events(GetWatcherEventsRequest {
            watcher_id: "nope".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(unknown), ErrorCode::NotFound);
}

#[tokio::test]
async fn json_codec_and_home_relative_paths_work() {
    // E2B's JS/Python clients speak Connect with JSON or proto; check JSON too,
    // and that `~` and relative paths resolve against the user's home.
    let envd = EnvdProcess::start();
    let uri = envd.base_url().parse().unwrap();
    let c = FilesystemClient::new(HttpClient::plaintext(), ClientConfig::new(uri).json());
    // The default user is root.
    let home = nix::unistd::User::from_name("root")
        .unwrap()
        .map(|u| u.dir)
        .unwrap();
    let e = stat(&c, "~").await.unwrap();
    assert_eq!(e.path, p(&home));
    assert_eq!(e.r#type, FileType::FILE_TYPE_DIRECTORY);
    if !is_root() {
        eprintln!(
            "skipped relative-path part: needs root to write in {}",
            home.display()
        );
        return;
    }
    let name = format!(".envd-fs-test-{}", std::process::id());
    fs::write(home.join(&name), "x").unwrap();
    let rel = stat(&c, &name).await;
    let _ = fs::remove_file(home.join(&name));
    assert_eq!(rel.unwrap().path, p(&home.join(&name)));
}
