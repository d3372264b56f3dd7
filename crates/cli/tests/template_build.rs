//! Template builds end to end: `wrenn up` (control plane + in-process agent, real runsc) on a
//! scratch data dir and the `wrenn template build` command. Needs root (skipped otherwise),
//! runsc and the `minimal` image (WRENN_TEST_MINIMAL_IMAGE, else the agent tests' fixture).
//! Holds the host-wide capsule lock while capsules run.
//!
//! - `recipe_with_every_instruction`: RUN (+ --timeout), START, ENV (expansion, `$$`, literal),
//!   WORKDIR, USER, COPY from a directory archive, the pre/post phases and a healthcheck →
//!   a snapshot template; a capsule from it runs as the recipe's user with its env, its files
//!   and the START'ed server already answering.
//! - `failing_step_and_cancel`: a failing step fails the build with its stderr (CLI exit 6);
//!   cancel stops a running build and no capsule is left; a base template (no healthcheck)
//!   gives capsules the files without the processes.

mod up;

use up::{Up, capsules_possible, scratch_dir};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// CLI helpers on top of the shared harness.
trait UpExt {
    fn wrenn(&self, args: &[&str]) -> Run;
    fn expect(&self, code: i32, args: &[&str]) -> Run;
    fn build(&self, id: &str) -> Value;
}

impl UpExt for Up {
    fn wrenn(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_wrenn"))
            .args(args)
            .env("WRENN_BASE_URL", &self.url)
            .env("WRENN_API_KEY", &self.key)
            .env("HOME", &self.data)
            .env("XDG_CONFIG_HOME", self.data.join("xdg"))
            .stdin(Stdio::null())
            .output()
            .expect("run wrenn");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!("$ wrenn {} → {}\n{}", args.join(" "), run.code, run.stderr);
        run
    }

    fn expect(&self, code: i32, args: &[&str]) -> Run {
        let run = self.wrenn(args);
        assert_eq!(run.code, code, "wrenn {args:?}: {run:?}");
        run
    }

    fn build(&self, id: &str) -> Value {
        serde_json::from_str(&self.expect(0, &["template", "builds", "--json"]).stdout)
            .ok()
            .and_then(|v: Value| v.as_array()?.iter().find(|b| b["id"] == id).cloned())
            .unwrap_or_else(|| panic!("build {id} not listed"))
    }
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A capsule from `template`; its id.
fn capsule(up: &Up, template: &str) -> String {
    let run = up.expect(0, &["capsule", "create", "--template", template]);
    run.stdout.trim().to_owned()
}

fn sh(up: &Up, id: &str, script: &str) -> Run {
    up.wrenn(&["capsule", "exec", id, "--sh", "--", script])
}

#[test]
fn recipe_with_every_instruction() {
    let Some(image) = capsules_possible() else {
        return;
    };
    let up = Up::start(&image, "wrenn-build-up");
    let files = scratch_dir("wrenn-build-files");
    std::fs::create_dir_all(files.join("app/sub")).expect("mkdir");
    std::fs::write(files.join("app/hello.txt"), "hello from the archive\n").expect("write");
    std::fs::write(files.join("app/sub/data.txt"), "nested\n").expect("write");
    std::fs::write(files.join("notes.txt"), "notes\n").expect("write");
    let recipe = files.join("recipe.txt");
    std::fs::write(
        &recipe,
        r#"# every instruction
ENV GREETING=hello
ENV MSG="${GREETING} world, $$HOME stays, $GREETING$UNSET!"
ENV LIT='$GREETING'
USER builder
WORKDIR /opt
WORKDIR site
COPY app notes.txt ./
RUN --timeout=20s test "$(cat hello.txt)" = "hello from the archive" && test -f sub/data.txt && test -f notes.txt
RUN test "$(stat -c %U hello.txt)" = builder && test "$(whoami)" = builder && test "$HOME" = /home/builder && test "$(pwd)" = /opt/site
RUN echo "$MSG|$LIT" > /home/builder/msg.txt
START python3 -m http.server 8000 --bind 127.0.0.1
"#,
    )
    .expect("recipe");
    let started = Instant::now();
    let run = up.wrenn(&[
        "template",
        "build",
        "every-instruction",
        "-f",
        recipe.to_str().unwrap(),
        "--archive",
        files.to_str().unwrap(),
        "--healthcheck",
        "--interval=1s --timeout=5s --retries=20 curl -sf http://127.0.0.1:8000/hello.txt",
        "--json",
    ]);
    eprintln!("build took {:.1?}", started.elapsed());
    assert_eq!(run.code, 0, "{run:?}");
    let build: Value = serde_json::from_str(&run.stdout).expect("build JSON");
    assert_eq!(build["status"], "success");
    assert_eq!(build["total_steps"], 11 + 7);
    assert_eq!(build["current_step"], 18);
    assert_eq!(build["default_user"], "builder");
    assert_eq!(
        build["default_env"]["MSG"],
        "hello world, $HOME stays, hello!"
    );
    assert_eq!(build["default_env"]["LIT"], "$GREETING");
    assert!(build["default_env"].get("HOME").is_none());
    let logs = build["logs"].as_array().expect("logs");
    assert_eq!(logs.len(), 18);
    let phases: Vec<&str> = logs.iter().map(|l| l["phase"].as_str().unwrap()).collect();
    assert_eq!(&phases[..3], ["pre-build"; 3]);
    assert_eq!(&phases[3..14], ["recipe"; 11]);
    assert_eq!(&phases[14..], ["post-build"; 4]);
    assert_eq!(logs[0]["cmd"], "RUN apt update");
    assert!(logs.iter().all(|l| l["ok"] == true && l["exit"] == 0));
    // Its progress lines went to stderr.
    assert!(run.stderr.contains("[10/18] recipe"), "{}", run.stderr);
    assert!(up.capsule_dirs().is_empty(), "the build capsule is gone");

    let templates = up.expect(0, &["snapshot", "ls", "--json"]);
    let templates: Value = serde_json::from_str(&templates.stdout).expect("templates");
    let t = templates
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "every-instruction"))
        .expect("template listed");
    assert_eq!(t["type"], "snapshot");
    assert_eq!(t["platform"], true);

    // A capsule from it: the recipe's user, env and files, and the START'ed server.
    let id = capsule(&up, "every-instruction");
    let who = sh(
        &up,
        &id,
        "whoami; echo \"$MSG|$LIT|$HOME\"; cat /home/builder/msg.txt",
    );
    assert_eq!(who.code, 0, "{who:?}");
    assert_eq!(
        who.stdout,
        "builder\nhello world, $HOME stays, hello!|$GREETING|/home/builder\n\
         hello world, $HOME stays, hello!|$GREETING\n"
    );
    let served = sh(&up, &id, "curl -sf http://127.0.0.1:8000/hello.txt");
    assert_eq!(served.stdout, "hello from the archive\n", "{served:?}");
    let gone = sh(
        &up,
        &id,
        "ls /tmp/build-files 2>&1; ls /var/lib/apt/lists | wc -l",
    );
    assert!(gone.stdout.contains("No such file"), "{gone:?}");
    up.expect(0, &["capsule", "destroy", &id]);
    let _ = std::fs::remove_dir_all(&files);
}

#[test]
fn failing_step_and_cancel() {
    let Some(image) = capsules_possible() else {
        return;
    };
    let up = Up::start(&image, "wrenn-build-up");
    let dir = scratch_dir("wrenn-build-recipes");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("recipe");
        p.to_string_lossy().into_owned()
    };

    // A failing step: the build fails with that step's stderr; exit 6.
    let failing = write(
        "failing.txt",
        "RUN echo fine\nRUN echo to-stdout; echo broken-step >&2; exit 3\nRUN echo never\n",
    );
    let run = up.wrenn(&[
        "template",
        "build",
        "broken",
        "-f",
        &failing,
        "--skip-pre-post",
        "--json",
    ]);
    assert_eq!(run.code, 6, "{run:?}");
    assert!(
        run.stderr
            .contains("failed: recipe step 2 failed: broken-step"),
        "{}",
        run.stderr
    );
    let build: Value = serde_json::from_str(&run.stdout).expect("build JSON");
    assert_eq!(build["status"], "failed");
    assert_eq!(build["error"], "recipe step 2 failed: broken-step");
    let logs = build["logs"].as_array().expect("logs");
    assert_eq!(logs.len(), 2, "the step after the failure never ran");
    assert_eq!(logs[1]["exit"], 3);
    assert_eq!(logs[1]["ok"], false);
    assert_eq!(logs[1]["stdout"], "to-stdout\n");
    assert_eq!(logs[1]["stderr"], "broken-step\n");
    assert!(up.capsule_dirs().is_empty(), "{:?}", up.capsule_dirs());
    // No template was made.
    let ls = up.expect(0, &["snapshot", "ls"]);
    assert!(!ls.stdout.contains("broken"), "{ls:?}");

    // Cancel a running build: it ends `cancelled` and its capsule is gone when cancel returns.
    let slow = write("slow.txt", "RUN echo started\nRUN --timeout=5m sleep 300\n");
    let queued = up.expect(
        0,
        &[
            "template",
            "build",
            "slow",
            "-f",
            &slow,
            "--skip-pre-post",
            "--no-wait",
        ],
    );
    let id = queued.stdout.trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let b = up.build(&id);
        if b["current_step"] == 2 && !up.capsule_dirs().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "build never reached step 2: {b}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let t0 = Instant::now();
    up.expect(0, &["template", "cancel", &id]);
    eprintln!("cancel took {:.1?}", t0.elapsed());
    assert!(
        up.capsule_dirs().is_empty(),
        "capsule left after cancel: {:?}",
        up.capsule_dirs()
    );
    let b = up.build(&id);
    assert_eq!(b["status"], "cancelled", "{b}");
    assert!(b["completed_at"].is_string());
    let again = up.wrenn(&["template", "cancel", &id]);
    assert_eq!(
        again.code, 2,
        "cancel of an ended build is a 400: {again:?}"
    );

    // No healthcheck → a base template: files kept, START'ed processes not.
    let base = write(
        "base.txt",
        "RUN echo kept > /etc/wrenn-built\nSTART sleep 1000\nENV FROM_RECIPE=yes\n",
    );
    up.expect(
        0,
        &[
            "template",
            "build",
            "files-only",
            "-f",
            &base,
            "--skip-pre-post",
        ],
    );
    let templates = up.expect(0, &["snapshot", "ls", "--json"]);
    assert!(templates.stdout.contains("\"files-only\""));
    let cid = capsule(&up, "files-only");
    let check = sh(
        &up,
        &cid,
        "cat /etc/wrenn-built; echo $FROM_RECIPE; pgrep -x sleep || echo no-sleep",
    );
    assert_eq!(check.stdout, "kept\nyes\nno-sleep\n", "{check:?}");
    up.expect(0, &["capsule", "destroy", &cid]);
    let _ = std::fs::remove_dir_all(&dir);
}
