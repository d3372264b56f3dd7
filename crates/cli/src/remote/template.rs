//! `wrenn template build|builds|cancel`: template builds on a control plane (spec §B.13, §G),
//! for platform admins (an admin's API key, e.g. the `admin-api-key` of `wrenn up`).
//!
//! `build` queues a recipe (a file, or one of the recipes bundled into this binary from
//! `recipes/`), prints each step as it finishes (stderr, so `--json` stdout stays clean), waits
//! until the build ends and exits non-zero when it did not succeed: 6 for a failed build, 1 for
//! a cancelled one; bad recipes are rejected by the server before anything runs (exit 2).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use serde::Deserialize;
use wrenn_client::{Build, BuildRequest};

use super::{CliError, ConnArgs, Exit, Need, output};

/// Recipes built into the binary: (name, recipe.txt, build.json).
const BUNDLED: &[(&str, &str, &str)] = &[
    (
        "code-runner-beta",
        include_str!("../../../../recipes/code-runner-beta/recipe.txt"),
        include_str!("../../../../recipes/code-runner-beta/build.json"),
    ),
    (
        "python",
        include_str!("../../../../recipes/python/recipe.txt"),
        include_str!("../../../../recipes/python/build.json"),
    ),
];

const POLL: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct TemplateArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: TemplateCommand,
}

#[derive(Subcommand, Debug)]
enum TemplateCommand {
    /// Build a platform template from a recipe and wait for it (admins only).
    Build(BuildArgs),
    /// List template builds, newest first.
    Builds,
    /// Cancel a queued or running build.
    Cancel {
        /// The build (`bld-…`).
        build_id: String,
    },
}

#[derive(clap::Args, Debug)]
struct BuildArgs {
    /// Template name [default with --bundled: the bundled recipe's name].
    #[arg(required_unless_present = "bundled")]
    name: Option<String>,
    /// Recipe file: one instruction per line; blank lines and `#` comments are skipped.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "RECIPE",
        conflicts_with = "bundled"
    )]
    file: Option<PathBuf>,
    /// A recipe shipped with wrenn: code-runner-beta, python.
    #[arg(long, value_name = "NAME")]
    bundled: Option<String>,
    /// Files for COPY: a directory (sent as tar.gz) or a tar, tar.gz or zip file (≤ 100 MiB).
    #[arg(long, value_name = "DIR_OR_FILE")]
    archive: Option<PathBuf>,
    /// Healthcheck (`[--interval=…] [--timeout=…] [--start-period=…] [--retries=…] CMD`): makes
    /// a snapshot template (running processes kept) once it passes.
    #[arg(long, allow_hyphen_values = true)]
    healthcheck: Option<String>,
    /// Template to start from [server default: minimal].
    #[arg(long = "base")]
    base_template: Option<String>,
    #[arg(long)]
    vcpus: Option<i64>,
    #[arg(long)]
    memory_mb: Option<i64>,
    /// Skip the pre-build (apt update, user wrenn-user) and post-build (apt clean) phases.
    #[arg(long)]
    skip_pre_post: bool,
    /// Queue the build and print its id without waiting.
    #[arg(long)]
    no_wait: bool,
}

/// `build.json` of a bundled recipe.
#[derive(Debug, Default, Deserialize)]
struct BundledConfig {
    base_template: Option<String>,
    healthcheck: Option<String>,
    vcpus: Option<i64>,
    memory_mb: Option<i64>,
    #[serde(default)]
    skip_pre_post: bool,
}

/// Recipe file text → instructions.
pub fn recipe_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    CliError::new(Exit::Usage, message).into()
}

/// The archive bytes: a file as is, a directory as a gzip'd tar of its contents.
fn archive_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    let data = if path.is_dir() {
        let out = std::process::Command::new("tar")
            .arg("-czf")
            .arg("-")
            .arg("-C")
            .arg(path)
            .arg(".")
            .output()
            .map_err(|e| anyhow::anyhow!("running tar to pack {}: {e}", path.display()))?;
        if !out.status.success() {
            anyhow::bail!(
                "tar could not pack {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        out.stdout
    } else {
        std::fs::read(path).map_err(|e| usage(format!("reading {}: {e}", path.display())))?
    };
    if data.len() > wrenn_client::builds::MAX_ARCHIVE_BYTES {
        return Err(usage(format!(
            "{} is {} MiB; archives are limited to 100 MiB",
            path.display(),
            data.len() >> 20
        )));
    }
    Ok(data)
}

fn request(args: &BuildArgs) -> anyhow::Result<BuildRequest> {
    let (name, lines, config) = if let Some(bundled) = &args.bundled {
        let Some((bname, text, json)) = BUNDLED.iter().find(|(n, _, _)| n == bundled) else {
            let names: Vec<&str> = BUNDLED.iter().map(|(n, _, _)| *n).collect();
            return Err(usage(format!(
                "no bundled recipe {bundled:?}; bundled: {}",
                names.join(", ")
            )));
        };
        let config: BundledConfig = serde_json::from_str(json)
            .map_err(|e| anyhow::anyhow!("bundled {bname}/build.json: {e}"))?;
        (
            args.name.clone().unwrap_or_else(|| (*bname).to_owned()),
            recipe_lines(text),
            config,
        )
    } else {
        let Some(file) = &args.file else {
            return Err(usage("give a recipe with -f FILE (or --bundled NAME)"));
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| usage(format!("reading {}: {e}", file.display())))?;
        (
            args.name.clone().unwrap_or_default(),
            recipe_lines(&text),
            BundledConfig::default(),
        )
    };
    Ok(BuildRequest {
        name,
        base_template: args.base_template.clone().or(config.base_template),
        recipe: lines,
        healthcheck: args.healthcheck.clone().or(config.healthcheck),
        vcpus: args.vcpus.or(config.vcpus),
        memory_mb: args.memory_mb.or(config.memory_mb),
        skip_pre_post: args.skip_pre_post || config.skip_pre_post,
    })
}

pub async fn run(args: TemplateArgs) -> anyhow::Result<i32> {
    let json = args.conn.json;
    let client = args.conn.client(Need::Any)?;
    match args.command {
        TemplateCommand::Build(b) => {
            let req = request(&b)?;
            let archive = b.archive.as_deref().map(archive_bytes).transpose()?;
            let build = client.create_build(&req, archive.as_deref()).await?;
            eprintln!(
                "build {} of template {:?}: {} steps",
                build.id, build.name, build.total_steps
            );
            if b.no_wait {
                if json {
                    output::json(&build)?;
                } else {
                    println!("{}", build.id);
                }
                return Ok(0);
            }
            let build = follow(&client, build).await?;
            if json {
                output::json(&build)?;
            }
            match build.status.as_str() {
                "success" => {
                    eprintln!(
                        "template {:?} is ready ({}, default user {})",
                        build.name,
                        build.template_type.as_deref().unwrap_or("template"),
                        build.default_user
                    );
                    if !json {
                        println!("{}", build.name);
                    }
                    Ok(0)
                }
                "cancelled" => Err(CliError::new(
                    Exit::Failure,
                    format!("build {} was cancelled", build.id),
                )
                .into()),
                _ => Err(CliError::new(
                    Exit::Unavailable,
                    format!(
                        "build {} failed: {}",
                        build.id,
                        build.error.as_deref().unwrap_or("no reason given")
                    ),
                )
                .into()),
            }
        }
        TemplateCommand::Builds => {
            let builds = client.list_builds().await?;
            if json {
                output::json(&builds)?;
            } else {
                let rows: Vec<Vec<String>> = builds
                    .iter()
                    .map(|b| {
                        vec![
                            b.id.clone(),
                            b.name.clone(),
                            b.status.clone(),
                            format!("{}/{}", b.current_step, b.total_steps),
                            output::time(b.created_at.as_deref()),
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "STATUS", "STEP", "CREATED"], &rows)?;
            }
            Ok(0)
        }
        TemplateCommand::Cancel { build_id } => {
            client.cancel_build(&build_id).await?;
            if !json {
                eprintln!("build {build_id} cancelled");
            }
            Ok(0)
        }
    }
}

/// Polls the build, printing every newly finished step, until it ends.
async fn follow(client: &wrenn_client::Client, mut build: Build) -> anyhow::Result<Build> {
    let tty = std::io::stderr().is_terminal();
    let mut shown = 0usize;
    let mut announced = 0i64;
    loop {
        for log in build.logs.iter().skip(shown) {
            let mark = if log.ok { "ok" } else { "FAILED" };
            eprintln!(
                "[{}/{}] {:<10} {} ({mark}, {:.1}s)",
                log.step,
                build.total_steps,
                log.phase,
                log.cmd,
                log.elapsed_ms as f64 / 1000.0
            );
            if !log.ok {
                for line in log
                    .stderr
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .iter()
                    .rev()
                {
                    eprintln!("    {line}");
                }
            }
        }
        shown = build.logs.len();
        if build.is_finished() {
            return Ok(build);
        }
        if tty && build.current_step > announced && build.current_step as usize > shown {
            announced = build.current_step;
            if let Some(cmd) = build.recipe_step(build.current_step) {
                eprintln!(
                    "[{}/{}] running    {cmd}",
                    build.current_step, build.total_steps
                );
            }
        }
        tokio::time::sleep(POLL).await;
        build = client.get_build(&build.id).await?;
    }
}

trait StepText {
    fn recipe_step(&self, step: i64) -> Option<String>;
}

impl StepText for Build {
    /// The instruction of step `step` when it is one of the recipe's (pre-build has 3).
    fn recipe_step(&self, step: i64) -> Option<String> {
        let offset = if self.total_steps as usize == self.recipe.len() {
            0
        } else {
            3
        };
        let i = usize::try_from(step - 1 - offset).ok()?;
        self.recipe.get(i).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_recipes_parse() {
        for (name, text, json) in BUNDLED {
            let lines = recipe_lines(text);
            assert!(!lines.is_empty(), "{name}");
            wrenn_server::builds::recipe::parse_recipe(&lines)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let config: BundledConfig = serde_json::from_str(json).expect("build.json");
            if let Some(hc) = config.healthcheck {
                wrenn_server::builds::recipe::parse_healthcheck(&hc)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
        let runner = recipe_lines(BUNDLED[0].1).join("\n");
        assert!(
            runner.contains("--name wrenn"),
            "kernelspec must be named wrenn"
        );
        assert!(runner.contains("--ServerApp.ip=0.0.0.0 --ServerApp.port=8888"));
    }

    #[test]
    fn recipe_file_lines() {
        assert_eq!(
            recipe_lines("# c\n\nRUN a\n  ENV X=1  \n#x\n"),
            vec!["RUN a", "ENV X=1"]
        );
    }
}
