//! Runs one claimed build: capsule, archive, steps, healthcheck, template. Every step's log
//! entry is written to the row as soon as the step ends, and `current_step` as it starts, so
//! `GET /v1/admin/builds/{id}` shows progress while the build runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connectrpc::client::CallOptions;
use connectrpc::{ConnectError, ErrorCode};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use wrenn_proto::hostagent::v1::{
    CreateSandboxRequest, CreateSnapshotRequest, DeleteSnapshotRequest, ExecRequest,
    WriteFileStreamMeta, WriteFileStreamRequest, write_file_stream_request,
};

use super::recipe::{self, BuildEnv, Healthcheck, Instruction, sh_quote};
use crate::agent::AgentClient;
use crate::db::builds::{self, BuildRow, Outcome};
use crate::db::templates::{self, TemplateRow};
use crate::ids::{CapsuleId, TeamId, TemplateId};
use crate::scheduler::{self, Demand};
use crate::state::AppState;

const CREATE_TIMEOUT: Duration = Duration::from_secs(180);
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Output kept per stream in a log entry (the tail).
const MAX_LOG_OUTPUT: usize = 64 << 10;
/// Healthchecks without `--retries` give up after this long.
const MAX_HEALTHCHECK: Duration = Duration::from_secs(600);
const ARCHIVE_DIR: &str = "/tmp/build-files";

/// Why a build stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    Failed(String),
    Cancelled,
}

impl From<String> for Stop {
    fn from(s: String) -> Self {
        Stop::Failed(s)
    }
}

/// What a build leaves behind while it runs, for the teardown.
struct Run {
    state: AppState,
    build: BuildRow,
    agent: Option<Arc<AgentClient>>,
    capsule: CapsuleId,
    cancel: watch::Receiver<bool>,
    logs: Vec<serde_json::Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pre,
    Recipe,
    Post,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pre => "pre-build",
            Phase::Recipe => "recipe",
            Phase::Post => "post-build",
        }
    }
}

fn opts(timeout: Duration) -> CallOptions {
    CallOptions::default().with_timeout(timeout)
}

fn agent_message(e: &ConnectError) -> String {
    e.message
        .clone()
        .unwrap_or_else(|| e.code.as_str().to_owned())
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(MAX_LOG_OUTPUT);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Result of one command in the capsule.
struct CmdResult {
    stdout: String,
    stderr: String,
    exit: i32,
}

/// Runs a claimed build to its end and records the outcome.
pub(crate) async fn run(state: AppState, build: BuildRow, cancel: watch::Receiver<bool>) {
    let id = build.id;
    let mut run = Run {
        state: state.clone(),
        build,
        agent: None,
        capsule: CapsuleId::random(),
        cancel,
        logs: Vec::new(),
    };
    let result = run.execute().await;
    run.teardown().await;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(Stop::Failed(message)) => {
            tracing::warn!(build = %id, %message, "build failed");
            Outcome {
                status: "failed",
                error: Some(message),
                ..Default::default()
            }
        }
        Err(Stop::Cancelled) => {
            tracing::info!(build = %id, "build stopped by cancel");
            return;
        }
    };
    let now = crate::time::now();
    match builds::finish(state.pool(), id, &["running"], &outcome, now).await {
        Ok(true) => tracing::info!(build = %id, status = outcome.status, "build ended"),
        Ok(false) => {
            // Cancelled while the template was being made: drop the template again.
            if let Some(t) = outcome.template_id {
                run.drop_template(t).await;
            }
        }
        Err(e) => tracing::error!(build = %id, error = %e, "recording the build outcome"),
    }
}

impl Run {
    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Awaits `f` unless the build is cancelled first.
    async fn or_cancel<T>(&mut self, f: impl Future<Output = T>) -> Result<T, Stop> {
        if self.cancelled() {
            return Err(Stop::Cancelled);
        }
        let mut cancel = self.cancel.clone();
        tokio::select! {
            v = f => Ok(v),
            _ = cancel.wait_for(|c| *c) => Err(Stop::Cancelled),
        }
    }

    fn agent(&self) -> Result<Arc<AgentClient>, Stop> {
        self.agent
            .clone()
            .ok_or_else(|| Stop::Failed("no build capsule".into()))
    }

    async fn execute(&mut self) -> Result<Outcome, Stop> {
        let b = self.build.clone();
        let instructions = recipe::parse_recipe(&b.recipe).map_err(|e| format!("recipe {e}"))?;
        let healthcheck = b
            .healthcheck
            .as_deref()
            .map(recipe::parse_healthcheck)
            .transpose()?;
        self.start_capsule().await?;
        let mut env = self.initial_env().await?;
        if let Some(kind) = b.archive_kind.clone() {
            self.upload_archive(&kind).await?;
        }

        let mut plan: Vec<(Phase, String, Instruction)> = Vec::new();
        let phase_lines = |lines: &[&str], phase| {
            lines
                .iter()
                .map(|l| {
                    recipe::parse_line(0, l)
                        .map(|i| (phase, (*l).to_owned(), i))
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()
        };
        if !b.skip_pre_post {
            plan.extend(phase_lines(
                &[
                    "RUN apt update",
                    "USER wrenn-user",
                    "WORKDIR /home/wrenn-user",
                ],
                Phase::Pre,
            )?);
        }
        plan.extend(
            b.recipe
                .iter()
                .cloned()
                .zip(instructions)
                .map(|(raw, i)| (Phase::Recipe, raw, i)),
        );
        let post_start = plan.len();
        if !b.skip_pre_post {
            plan.extend(phase_lines(
                &[
                    "RUN apt clean",
                    "RUN apt autoremove -y",
                    "RUN rm -rf /var/lib/apt/lists/*",
                    "RUN rm -rf /tmp/build-files /tmp/build-files.*",
                ],
                Phase::Post,
            )?);
        }

        let mut final_state: Option<(String, BTreeMap<String, String>)> = None;
        for (n, (phase, raw, ins)) in plan.iter().enumerate() {
            if n == post_start {
                // The recipe's end state is the template's; post-build runs as root.
                final_state = Some((env.user.clone(), env.default_env()));
                env.user = "root".into();
            }
            let step = n as i64 + 1;
            self.progress(step).await;
            self.step(step, *phase, raw, ins, &mut env).await?;
        }
        let (default_user, default_env) =
            final_state.unwrap_or_else(|| (env.user.clone(), env.default_env()));

        if let Some(hc) = &healthcheck {
            self.healthcheck(hc, &default_user, &env).await?;
        } else {
            // Base template: files only. Stop every process but envd (PID 1), then sync.
            self.exec_root("kill -9 -1 >/dev/null 2>&1; sync", Duration::from_secs(30))
                .await?;
        }
        let template = self
            .make_template(&default_user, &default_env, healthcheck.is_some())
            .await?;
        Ok(Outcome {
            status: "success",
            error: None,
            template_id: Some(template),
            default_user: Some(default_user),
            default_env: Some(super::env_json(&default_env)),
        })
    }

    async fn progress(&self, step: i64) {
        let logs = serde_json::Value::from(self.logs.clone());
        if let Err(e) = builds::progress(self.state.pool(), self.build.id, step, &logs).await {
            tracing::warn!(build = %self.build.id, error = %e, "recording build progress");
        }
    }

    async fn start_capsule(&mut self) -> Result<(), Stop> {
        let b = &self.build;
        let template = templates::resolve(self.state.pool(), TeamId::PLATFORM, &b.base_template)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("base template {:?} not found", b.base_template))?;
        let host = scheduler::place(
            &self.state,
            TeamId::PLATFORM,
            Demand {
                vcpus: b.vcpus,
                memory_mb: b.memory_mb,
            },
        )
        .await
        .map_err(|e| format!("no host for the build capsule: {}", e.message))?;
        let agent = self
            .state
            .agents()
            .client(&host.address)
            .map_err(|e| e.to_string())?;
        builds::set_capsule(self.state.pool(), b.id, self.capsule, host.id)
            .await
            .map_err(|e| e.to_string())?;
        self.agent = Some(agent.clone());
        let (name, team_id, template_id) = crate::lifecycle::agent_template(&template);
        let request = CreateSandboxRequest {
            sandbox_id: self.capsule.to_string(),
            template: name,
            vcpus: b.vcpus as i32,
            memory_mb: b.memory_mb as i32,
            team_id,
            template_id,
            default_user: "root".into(),
            ..Default::default()
        };
        tracing::info!(build = %b.id, capsule = %self.capsule, host = %host.id, "starting the build capsule");
        let created = self
            .or_cancel(agent.create_sandbox_with_options(request, opts(CREATE_TIMEOUT)))
            .await?;
        created.map_err(|e| format!("creating the build capsule: {}", agent_message(&e)))?;
        Ok(())
    }

    /// Runs `/bin/sh -c cmd` as `user` in `cwd` with `envs`.
    async fn exec(
        &mut self,
        cmd: &str,
        user: &str,
        cwd: &str,
        envs: BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<Result<CmdResult, String>, Stop> {
        let agent = self.agent()?;
        let secs = timeout.as_secs_f64().ceil().max(1.0) as i32;
        let request = ExecRequest {
            sandbox_id: self.capsule.to_string(),
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), cmd.to_owned()],
            timeout_sec: secs,
            envs: envs.into_iter().collect(),
            cwd: cwd.to_owned(),
            user: user.to_owned(),
            ..Default::default()
        };
        let call = agent.exec_with_options(request, opts(timeout + Duration::from_secs(30)));
        let result = self.or_cancel(call).await?;
        Ok(match result {
            Ok(resp) => {
                let resp = resp.into_owned();
                Ok(CmdResult {
                    stdout: tail(&resp.stdout),
                    stderr: tail(&resp.stderr),
                    exit: resp.exit_code,
                })
            }
            Err(e) if e.code == ErrorCode::DeadlineExceeded => {
                Err(format!("timed out after {}s", timeout.as_secs()))
            }
            Err(e) => Err(agent_message(&e)),
        })
    }

    /// A root command whose failure fails the build (setup and teardown commands).
    async fn exec_root(&mut self, cmd: &str, timeout: Duration) -> Result<CmdResult, Stop> {
        let r = self
            .exec(cmd, "root", "/", BTreeMap::new(), timeout)
            .await?
            .map_err(|e| format!("{cmd}: {e}"))?;
        if r.exit != 0 {
            return Err(Stop::Failed(format!(
                "{cmd}: exit code {}: {}",
                r.exit,
                r.stderr.trim()
            )));
        }
        Ok(r)
    }

    async fn initial_env(&mut self) -> Result<BuildEnv, Stop> {
        let out = self.exec_root("env", Duration::from_secs(30)).await?;
        Ok(BuildEnv::from_env_output(&out.stdout))
    }

    async fn upload_archive(&mut self, kind: &str) -> Result<(), Stop> {
        let path = self.state.builds().archive_path(self.build.id, kind);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("opening the build archive {}: {e}", path.display()))?;
        let agent = self.agent()?;
        let target = format!("{ARCHIVE_DIR}.{kind}");
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteFileStreamRequest>(8);
        let meta = WriteFileStreamRequest {
            content: Some(write_file_stream_request::Content::Meta(Box::new(
                WriteFileStreamMeta {
                    sandbox_id: self.capsule.to_string(),
                    path: target.clone(),
                    ..Default::default()
                },
            ))),
            ..Default::default()
        };
        let chunks =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let requests = futures::stream::once(async move { meta }).chain(chunks);
        let feed = async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                let msg = WriteFileStreamRequest {
                    content: Some(write_file_stream_request::Content::Chunk(buf[..n].to_vec())),
                    ..Default::default()
                };
                if tx.send(msg).await.is_err() {
                    return Ok(());
                }
            }
        };
        let rpc = agent.write_file_stream(requests);
        let (sent, fed) = self.or_cancel(async { tokio::join!(rpc, feed) }).await?;
        fed.map_err(|e| format!("reading the build archive: {e}"))?;
        sent.map_err(|e| format!("uploading the archive: {}", agent_message(&e)))?;
        let extract = match kind {
            "zip" => format!(
                "python3 -m zipfile -e {t} {d} 2>/dev/null || unzip -oq {t} -d {d}",
                t = sh_quote(&target),
                d = ARCHIVE_DIR
            ),
            "tar" => format!("tar -xf {} -C {ARCHIVE_DIR}", sh_quote(&target)),
            _ => format!("tar -xzf {} -C {ARCHIVE_DIR}", sh_quote(&target)),
        };
        let script = format!("mkdir -p {ARCHIVE_DIR} && {extract} && chmod -R a+rX {ARCHIVE_DIR}");
        self.exec_root(&script, Duration::from_secs(120))
            .await
            .map_err(|e| match e {
                Stop::Failed(m) => Stop::Failed(format!("extracting the archive: {m}")),
                c => c,
            })?;
        Ok(())
    }

    /// One step: runs it, logs it, fails the build when it fails.
    async fn step(
        &mut self,
        step: i64,
        phase: Phase,
        raw: &str,
        ins: &Instruction,
        env: &mut BuildEnv,
    ) -> Result<(), Stop> {
        let started = Instant::now();
        let default_timeout = if phase == Phase::Recipe {
            recipe::RECIPE_RUN_TIMEOUT
        } else {
            recipe::PHASE_RUN_TIMEOUT
        };
        let result: Result<CmdResult, String> = match ins {
            Instruction::Run { cmd, timeout } => {
                let (user, cwd, envs) = (env.user.clone(), env.workdir.clone(), env.command_env());
                self.exec(cmd, &user, &cwd, envs, timeout.unwrap_or(default_timeout))
                    .await?
            }
            Instruction::Start { cmd } => {
                let script = format!("nohup /bin/sh -c {} >/dev/null 2>&1 &", sh_quote(cmd));
                let (user, cwd, envs) = (env.user.clone(), env.workdir.clone(), env.command_env());
                self.exec(&script, &user, &cwd, envs, recipe::SHORT_STEP_TIMEOUT)
                    .await?
            }
            Instruction::Env { key, value } => {
                env.apply_env(key, value);
                Ok(CmdResult {
                    stdout: String::new(),
                    stderr: String::new(),
                    exit: 0,
                })
            }
            Instruction::Workdir { path } => {
                let dir = recipe::resolve_path(&env.workdir, path);
                let q = sh_quote(&dir);
                let script = if env.user == "root" {
                    format!("mkdir -p {q}")
                } else {
                    let u = sh_quote(&env.user);
                    format!("[ -d {q} ] || {{ mkdir -p {q} && chown {u}: {q}; }}")
                };
                let r = self
                    .exec(
                        &script,
                        "root",
                        "/",
                        BTreeMap::new(),
                        recipe::SHORT_STEP_TIMEOUT,
                    )
                    .await?;
                if matches!(&r, Ok(c) if c.exit == 0) {
                    env.workdir = dir;
                }
                r
            }
            Instruction::User { name } => {
                let script = if name == "root" {
                    "true".to_owned()
                } else {
                    let u = sh_quote(name);
                    let line = sh_quote(&format!("{name} ALL=(ALL) NOPASSWD:ALL"));
                    let home = sh_quote(&BuildEnv::home_of(name));
                    format!(
                        "set -e; if ! id -u {u} >/dev/null 2>&1; then \
                         if command -v adduser >/dev/null 2>&1; then \
                         adduser --disabled-password --gecos '' --shell /bin/bash --home {home} {u}; \
                         else useradd -m -d {home} -s /bin/bash {u}; fi; fi; \
                         mkdir -p {home} && chown {u}: {home}; \
                         grep -qxF {line} /etc/sudoers || echo {line} >> /etc/sudoers"
                    )
                };
                let r = self
                    .exec(
                        &script,
                        "root",
                        "/",
                        BTreeMap::new(),
                        recipe::SHORT_STEP_TIMEOUT,
                    )
                    .await?;
                if matches!(&r, Ok(c) if c.exit == 0) {
                    env.set_user(name);
                }
                r
            }
            Instruction::Copy { sources, dst } => {
                let script = copy_script(sources, dst, env);
                self.exec(&script, "root", "/", BTreeMap::new(), recipe::COPY_TIMEOUT)
                    .await?
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as i64;
        let (entry, failure) = match result {
            Ok(r) => {
                let ok = r.exit == 0;
                let failure = (!ok).then(|| {
                    let err = r.stderr.trim();
                    if err.is_empty() {
                        format!("exit code {}", r.exit)
                    } else {
                        err.to_owned()
                    }
                });
                (
                    serde_json::json!({
                        "step": step, "phase": phase.as_str(), "cmd": raw,
                        "stdout": r.stdout, "stderr": r.stderr, "exit": r.exit,
                        "ok": ok, "elapsed_ms": elapsed_ms,
                    }),
                    failure,
                )
            }
            Err(message) => (
                serde_json::json!({
                    "step": step, "phase": phase.as_str(), "cmd": raw,
                    "stdout": "", "stderr": message, "exit": -1,
                    "ok": false, "elapsed_ms": elapsed_ms,
                }),
                Some(message),
            ),
        };
        self.logs.push(entry);
        self.progress(step).await;
        match failure {
            None => Ok(()),
            Some(why) => Err(Stop::Failed(format!(
                "{} step {step} failed: {why}",
                phase.as_str()
            ))),
        }
    }

    async fn healthcheck(
        &mut self,
        hc: &Healthcheck,
        user: &str,
        env: &BuildEnv,
    ) -> Result<(), Stop> {
        let started = Instant::now();
        let limit = if hc.retries > 0 {
            hc.start_period + hc.interval * (hc.retries + 1)
        } else {
            MAX_HEALTHCHECK.max(hc.start_period + hc.interval)
        };
        let mut failures = 0u32;
        loop {
            let attempt = Instant::now();
            let r = self
                .exec(&hc.cmd, user, &env.workdir, env.default_env(), hc.timeout)
                .await?;
            let last = match r {
                Ok(c) if c.exit == 0 => {
                    tracing::info!(build = %self.build.id, after = ?started.elapsed(), "healthcheck passed");
                    return Ok(());
                }
                Ok(c) if c.stderr.trim().is_empty() => format!("exit code {}", c.exit),
                Ok(c) => c.stderr.trim().to_owned(),
                Err(e) => e,
            };
            if started.elapsed() >= hc.start_period {
                failures += 1;
            }
            if (hc.retries > 0 && failures >= hc.retries) || started.elapsed() >= limit {
                return Err(Stop::Failed(format!(
                    "healthcheck failed after {failures} attempt(s) in {:.0?}: {last}",
                    started.elapsed()
                )));
            }
            let wait = hc.interval.saturating_sub(attempt.elapsed());
            self.or_cancel(tokio::time::sleep(wait)).await?;
        }
    }

    async fn make_template(
        &mut self,
        default_user: &str,
        default_env: &BTreeMap<String, String>,
        with_memory: bool,
    ) -> Result<TemplateId, Stop> {
        let b = self.build.clone();
        let template = TemplateRow {
            id: TemplateId::random(),
            name: b.name.clone(),
            kind: if with_memory { "snapshot" } else { "base" }.into(),
            vcpus: b.vcpus,
            memory_mb: b.memory_mb,
            size_bytes: 0,
            team_id: TeamId::PLATFORM,
            default_user: default_user.to_owned(),
            default_env: super::env_json(default_env),
            metadata: serde_json::json!({
                "build_id": b.id.to_string(),
                "base_template": b.base_template,
            }),
            created_at: crate::time::now(),
        };
        if let Err(e) = templates::insert(self.state.pool(), &template).await {
            return Err(Stop::Failed(if e.is_unique_violation() {
                format!("a template named {:?} was created meanwhile", b.name)
            } else {
                e.to_string()
            }));
        }
        let agent = self.agent()?;
        let request = CreateSnapshotRequest {
            sandbox_id: self.capsule.to_string(),
            team_id: TeamId::PLATFORM.db(),
            template_id: template.id.db(),
            ..Default::default()
        };
        // Not cancellable half-way: a cancel that lands now drops the template afterwards.
        let result = agent
            .create_snapshot_with_options(request, opts(SNAPSHOT_TIMEOUT))
            .await;
        match result {
            Ok(resp) => {
                let size = resp.into_owned().size_bytes;
                if let Err(e) = templates::set_size(self.state.pool(), template.id, size).await {
                    tracing::warn!(error = %e, "recording the template size");
                }
                tracing::info!(build = %b.id, template = %template.id, size, "template created");
                Ok(template.id)
            }
            Err(e) => {
                let _ = templates::delete(self.state.pool(), TeamId::PLATFORM, template.id).await;
                Err(Stop::Failed(format!(
                    "creating the template: {}",
                    agent_message(&e)
                )))
            }
        }
    }

    /// Removes a template made by a build that was cancelled meanwhile.
    async fn drop_template(&self, t: TemplateId) {
        if let Some(agent) = &self.agent {
            let request = DeleteSnapshotRequest {
                team_id: TeamId::PLATFORM.db(),
                template_id: t.db(),
                ..Default::default()
            };
            if let Err(e) = agent
                .delete_snapshot_with_options(request, opts(Duration::from_secs(60)))
                .await
            {
                tracing::warn!(template = %t, error = %e, "deleting the template of a cancelled build");
            }
        }
        let _ = templates::delete(self.state.pool(), TeamId::PLATFORM, t).await;
    }

    /// Destroys the build capsule and removes the stored archive.
    async fn teardown(&mut self) {
        if let Some(agent) = &self.agent {
            super::workers::destroy_capsule(agent, self.capsule).await;
        }
        if let Some(kind) = &self.build.archive_kind {
            let _ =
                tokio::fs::remove_file(self.state.builds().archive_path(self.build.id, kind)).await;
        }
    }
}

/// `COPY src... dst` as a root shell script: sources from the extracted archive, a relative
/// destination against WORKDIR, then ownership to the current user. A directory source copies
/// its contents; several sources or a destination ending in `/` make the destination a
/// directory.
fn copy_script(sources: &[String], dst: &str, env: &BuildEnv) -> String {
    let into_dir = sources.len() > 1 || dst.ends_with('/');
    let dst = recipe::resolve_path(&env.workdir, dst);
    let qd = sh_quote(&dst);
    let owner = sh_quote(&format!("{}:", env.user));
    let mut script = String::from("set -e; ");
    for src in sources {
        let rel = recipe::normalize_source(src);
        let from = if rel.is_empty() {
            ARCHIVE_DIR.to_owned()
        } else {
            format!("{ARCHIVE_DIR}/{rel}")
        };
        let qs = sh_quote(&from);
        let name = sh_quote(rel.rsplit('/').next().unwrap_or_default());
        script.push_str(&format!(
            "if [ -d {qs} ]; then mkdir -p {qd} && cp -a {qs}/. {qd}/ && chown -R {owner} {qd}; \
             elif [ {into} = 1 ] || [ -d {qd} ]; then mkdir -p {qd} && cp -a {qs} {qd}/ && \
             chown -R {owner} {qd}/{name}; \
             else mkdir -p \"$(dirname {qd})\" && cp -a {qs} {qd} && chown {owner} {qd}; fi; ",
            into = u8::from(into_dir),
        ));
    }
    script
}
