//! The recipe language (spec §G): parsing instructions and healthchecks, Go-style durations,
//! immediate `ENV` expansion, and the build environment that the executor threads through the
//! steps. Pure code: no I/O, so every rule is unit-tested here.
//!
//! One instruction per entry: `KEYWORD rest`. The keyword is case-insensitive; the rest is
//! taken verbatim except where an instruction gives it structure:
//! - `RUN [--timeout=<dur>] <shell>`, `START <shell>`: the shell text is passed to `/bin/sh -c`.
//! - `ENV KEY=VALUE`: `KEY` is `[A-Za-z_][A-Za-z0-9_]*`. A value wrapped in one pair of double
//!   quotes loses them; one wrapped in single quotes loses them and is not expanded. Otherwise
//!   `$$` → `$`, `$NAME` / `${NAME}` → the current value (empty when unset); a `$` followed by
//!   anything else stays as it is.
//! - `WORKDIR <path>`: relative paths resolve against the current WORKDIR.
//! - `USER <name>`: `[A-Za-z_][A-Za-z0-9_-]*`, at most 32 characters.
//! - `COPY <src>... <dst>`: arguments split on whitespace, with `'…'` / `"…"` quoting for
//!   names holding spaces; sources are relative paths inside the uploaded archive (no `..`,
//!   not absolute), a relative destination resolves against WORKDIR.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Default `RUN` timeout in the user's recipe.
pub const RECIPE_RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `RUN` timeout in the pre- and post-build phases.
pub const PHASE_RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// `START`, `WORKDIR` and `USER` steps.
pub const SHORT_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// `COPY` steps.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest accepted `RUN --timeout` (the agent's exec limit).
pub const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(86_400);

/// A parse error: which entry (1-based) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    pub line: usize,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Run {
        cmd: String,
        timeout: Option<Duration>,
    },
    Start {
        cmd: String,
    },
    Env {
        key: String,
        value: EnvValue,
    },
    Workdir {
        path: String,
    },
    User {
        name: String,
    },
    Copy {
        sources: Vec<String>,
        dst: String,
    },
}

/// An `ENV` value as written: expanded when the step runs, against the env at that point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// Unquoted or double-quoted: `$VAR`, `${VAR}` and `$$` are expanded.
    Expand(String),
    /// Single-quoted: taken literally.
    Literal(String),
}

impl Instruction {
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::Run { .. } => "RUN",
            Instruction::Start { .. } => "START",
            Instruction::Env { .. } => "ENV",
            Instruction::Workdir { .. } => "WORKDIR",
            Instruction::User { .. } => "USER",
            Instruction::Copy { .. } => "COPY",
        }
    }
}

/// Parses a whole recipe; the first bad entry is reported with its 1-based line number.
pub fn parse_recipe(lines: &[String]) -> Result<Vec<Instruction>, ParseError> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| parse_line(i + 1, l))
        .collect()
}

/// Parses one instruction (`line` is only used in errors).
pub fn parse_line(line: usize, text: &str) -> Result<Instruction, ParseError> {
    let err = |problem: String| ParseError { line, problem };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(err("empty instruction".into()));
    }
    if trimmed.contains('\0') {
        return Err(err("instruction contains a NUL byte".into()));
    }
    let (keyword, rest) = match trimmed.find(char::is_whitespace) {
        Some(i) => (&trimmed[..i], trimmed[i..].trim()),
        None => (trimmed, ""),
    };
    let upper = keyword.to_ascii_uppercase();
    let need_rest = |what: &str| -> Result<(), ParseError> {
        if rest.is_empty() {
            Err(err(format!("{upper} needs {what}")))
        } else {
            Ok(())
        }
    };
    match upper.as_str() {
        "RUN" => {
            need_rest("a command")?;
            let (timeout, cmd) = match rest.strip_prefix("--timeout=") {
                Some(after) => {
                    let (value, cmd) = match after.find(char::is_whitespace) {
                        Some(i) => (&after[..i], after[i..].trim()),
                        None => (after, ""),
                    };
                    let d = parse_duration(value)
                        .map_err(|e| err(format!("RUN --timeout={value}: {e}")))?;
                    if d.is_zero() || d > MAX_RUN_TIMEOUT {
                        return Err(err(format!(
                            "RUN --timeout={value}: must be more than 0 and at most 24h"
                        )));
                    }
                    (Some(d), cmd)
                }
                None if rest.starts_with("--") => {
                    let flag = rest.split_whitespace().next().unwrap_or(rest);
                    return Err(err(format!(
                        "RUN: unknown flag {flag:?} (only --timeout=<duration>)"
                    )));
                }
                None => (None, rest),
            };
            if cmd.is_empty() {
                return Err(err("RUN needs a command after --timeout".into()));
            }
            Ok(Instruction::Run {
                cmd: cmd.to_owned(),
                timeout,
            })
        }
        "START" => {
            need_rest("a command")?;
            Ok(Instruction::Start {
                cmd: rest.to_owned(),
            })
        }
        "ENV" => {
            need_rest("KEY=VALUE")?;
            let Some((key, raw)) = rest.split_once('=') else {
                return Err(err(format!("ENV expects KEY=VALUE, got {rest:?}")));
            };
            if !is_env_name(key) {
                return Err(err(format!(
                    "ENV: invalid variable name {key:?} (expected [A-Za-z_][A-Za-z0-9_]*)"
                )));
            }
            let value = if raw.len() >= 2 && raw.starts_with('\'') && raw.ends_with('\'') {
                EnvValue::Literal(raw[1..raw.len() - 1].to_owned())
            } else if raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') {
                EnvValue::Expand(raw[1..raw.len() - 1].to_owned())
            } else {
                EnvValue::Expand(raw.to_owned())
            };
            Ok(Instruction::Env {
                key: key.to_owned(),
                value,
            })
        }
        "WORKDIR" => {
            need_rest("a path")?;
            Ok(Instruction::Workdir {
                path: rest.to_owned(),
            })
        }
        "USER" => {
            need_rest("a user name")?;
            if !is_user_name(rest) {
                return Err(err(format!(
                    "USER: invalid user name {rest:?} (a letter or _ first, then letters, \
                     digits, _ or -; at most 32)"
                )));
            }
            Ok(Instruction::User {
                name: rest.to_owned(),
            })
        }
        "COPY" => {
            need_rest("<src>... <dst>")?;
            let mut args = split_args(rest).map_err(|e| err(format!("COPY: {e}")))?;
            if args.len() < 2 {
                return Err(err(
                    "COPY needs at least one source and a destination".into()
                ));
            }
            let dst = args.pop().unwrap_or_default();
            for src in &args {
                check_source(src).map_err(|e| err(format!("COPY source {src:?}: {e}")))?;
            }
            Ok(Instruction::Copy { sources: args, dst })
        }
        _ => Err(err(format!(
            "unknown instruction {keyword:?} (expected RUN, START, ENV, WORKDIR, USER or COPY)"
        ))),
    }
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn is_user_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 32
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A COPY source must stay inside the archive.
fn check_source(src: &str) -> Result<(), &'static str> {
    if src.starts_with('/') {
        return Err("must be a relative path inside the archive");
    }
    if src.split('/').any(|c| c == "..") {
        return Err("must not contain `..` (it would leave the archive)");
    }
    Ok(())
}

/// The archive-relative form of a COPY source (`./a/b/` → `a/b`, `.` → ``).
pub fn normalize_source(src: &str) -> String {
    src.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Whitespace-separated words with `'…'` and `"…"` quoting (no escapes inside single quotes;
/// `\"` and `\\` inside double quotes).
pub fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Go's `time.ParseDuration` subset: one or more `<number><unit>` (units `ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`; decimals allowed), or a bare `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let bad = || format!("invalid duration {s:?} (expected e.g. 30s, 5m, 1h30m, 500ms)");
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Expands `$$`, `$NAME` and `${NAME}` against `env` (unset → empty).
pub fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            // Copy the whole UTF-8 character.
            let ch_len = value[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&value[i..i + ch_len]);
            i += ch_len;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        match next {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => match value[i + 2..].find('}') {
                Some(end) if is_var_chars(&value[i + 2..i + 2 + end]) && end > 0 => {
                    let name = &value[i + 2..i + 2 + end];
                    out.push_str(env.get(name).map_or("", String::as_str));
                    i += 3 + end;
                }
                _ => {
                    out.push('$');
                    i += 1;
                }
            },
            Some(c) if c.is_ascii_alphanumeric() || c == b'_' => {
                let len = value[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(value.len() - i - 1);
                let name = &value[i + 1..i + 1 + len];
                out.push_str(env.get(name).map_or("", String::as_str));
                i += 1 + len;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    out
}

fn is_var_chars(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Single-quotes `s` for `/bin/sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `a` joined with `b` when `b` is relative; `.` and `..` components resolved lexically.
pub fn resolve_path(base: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("{}/{p}", base.trim_end_matches('/'))
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Env keys that describe the session, not the template: dropped from `default_env`.
pub const SESSION_KEYS: &[&str] = &[
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "OLDPWD",
    "HOSTNAME",
    "TERM",
    "SHLVL",
    "_",
    "WRENN_SANDBOX_ID",
    "WRENN_TEMPLATE_ID",
];

/// The state a build threads through its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildEnv {
    pub user: String,
    pub workdir: String,
    pub env: BTreeMap<String, String>,
}

impl BuildEnv {
    /// Starts from the `env` output of the build capsule (as root, in `/`).
    pub fn from_env_output(output: &str) -> Self {
        let env = output
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| is_env_name(k))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        BuildEnv {
            user: "root".into(),
            workdir: "/".into(),
            env,
        }
    }

    /// Variables passed to each command: everything but the session keys (envd sets HOME,
    /// USER and LOGNAME for the user it runs the command as).
    pub fn command_env(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .filter(|(k, _)| !SESSION_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The template's `default_env`.
    pub fn default_env(&self) -> BTreeMap<String, String> {
        self.command_env()
    }

    pub fn home_of(user: &str) -> String {
        if user == "root" {
            "/root".into()
        } else {
            format!("/home/{user}")
        }
    }

    /// Switches the execution user (HOME follows).
    pub fn set_user(&mut self, user: &str) {
        self.user = user.to_owned();
        self.env.insert("HOME".into(), Self::home_of(user));
        self.env.insert("USER".into(), user.to_owned());
    }

    /// `ENV` step: the value expanded against the env as it is now.
    pub fn apply_env(&mut self, key: &str, value: &EnvValue) -> String {
        let v = match value {
            EnvValue::Expand(raw) => expand(raw, &self.env),
            EnvValue::Literal(raw) => raw.clone(),
        };
        self.env.insert(key.to_owned(), v.clone());
        v
    }
}

/// A parsed healthcheck (spec §G).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    /// 0 = unlimited (bounded by the build's overall limit).
    pub retries: u32,
    pub cmd: String,
}

impl fmt::Display for Healthcheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--interval={:?} --timeout={:?} --start-period={:?} --retries={} {}",
            self.interval, self.timeout, self.start_period, self.retries, self.cmd
        )
    }
}

/// `[--interval=<dur>] [--timeout=<dur>] [--start-period=<dur>] [--retries=<n>] <command…>`.
pub fn parse_healthcheck(s: &str) -> Result<Healthcheck, String> {
    let mut hc = Healthcheck {
        interval: Duration::from_secs(3),
        timeout: Duration::from_secs(10),
        start_period: Duration::ZERO,
        retries: 0,
        cmd: String::new(),
    };
    let mut rest = s.trim();
    while rest.starts_with("--") {
        let (flag, after) = match rest.find(char::is_whitespace) {
            Some(i) => (&rest[..i], rest[i..].trim_start()),
            None => (rest, ""),
        };
        let Some((k, v)) = flag[2..].split_once('=') else {
            return Err(format!("healthcheck flag {flag:?} must be --name=value"));
        };
        let dur = |v: &str| parse_duration(v).map_err(|e| format!("healthcheck --{k}: {e}"));
        match k {
            "interval" => hc.interval = dur(v)?,
            "timeout" => hc.timeout = dur(v)?,
            "start-period" => hc.start_period = dur(v)?,
            "retries" => {
                hc.retries = v.parse().map_err(|_| {
                    format!("healthcheck --retries={v}: expected a whole number ≥ 0")
                })?
            }
            _ => {
                return Err(format!(
                    "unknown healthcheck flag --{k} (expected --interval, --timeout, \
                     --start-period or --retries)"
                ));
            }
        }
        rest = after;
    }
    if rest.is_empty() {
        return Err("healthcheck needs a command after its flags".into());
    }
    if hc.interval.is_zero() {
        return Err("healthcheck --interval must be more than 0".into());
    }
    if hc.timeout.is_zero() {
        return Err("healthcheck --timeout must be more than 0".into());
    }
    hc.cmd = rest.to_owned();
    Ok(hc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Instruction {
        parse_line(1, s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn perr(s: &str) -> String {
        parse_line(7, s).expect_err(s).to_string()
    }

    #[test]
    fn run_and_timeout() {
        assert_eq!(
            p("RUN echo hi && ls"),
            Instruction::Run {
                cmd: "echo hi && ls".into(),
                timeout: None
            }
        );
        assert_eq!(
            p("run --timeout=2m30s pip install x"),
            Instruction::Run {
                cmd: "pip install x".into(),
                timeout: Some(Duration::from_secs(150))
            }
        );
        // Verbatim: quotes and `$` reach the shell untouched.
        assert_eq!(
            p(r#"Run   echo "$HOME" 'a  b'  "#),
            Instruction::Run {
                cmd: r#"echo "$HOME" 'a  b'"#.into(),
                timeout: None
            }
        );
        assert_eq!(perr("RUN"), "line 7: RUN needs a command");
        assert_eq!(
            perr("RUN --timeout=5s"),
            "line 7: RUN needs a command after --timeout"
        );
        assert!(perr("RUN --timeout=5x ls").contains("invalid duration \"5x\""));
        assert!(perr("RUN --timeout=0 ls").contains("more than 0"));
        assert!(perr("RUN --timeout=25h ls").contains("at most 24h"));
        assert!(perr("RUN --retries=3 ls").contains("unknown flag \"--retries=3\""));
    }

    #[test]
    fn start_workdir_user() {
        assert_eq!(
            p("START python3 -m http.server 8000"),
            Instruction::Start {
                cmd: "python3 -m http.server 8000".into()
            }
        );
        assert_eq!(
            p("WORKDIR /opt/app"),
            Instruction::Workdir {
                path: "/opt/app".into()
            }
        );
        assert_eq!(
            p("user wrenn-user"),
            Instruction::User {
                name: "wrenn-user".into()
            }
        );
        assert_eq!(perr("START   "), "line 7: START needs a command");
        assert_eq!(perr("WORKDIR"), "line 7: WORKDIR needs a path");
        assert!(perr("USER 1abc").contains("invalid user name \"1abc\""));
        assert!(perr("USER a b").contains("invalid user name \"a b\""));
        assert!(perr(&format!("USER {}", "a".repeat(33))).contains("invalid user name"));
    }

    #[test]
    fn env_parsing() {
        assert_eq!(
            p("ENV A=1"),
            Instruction::Env {
                key: "A".into(),
                value: EnvValue::Expand("1".into())
            }
        );
        assert_eq!(
            p("ENV PATH=/x:$PATH"),
            Instruction::Env {
                key: "PATH".into(),
                value: EnvValue::Expand("/x:$PATH".into())
            }
        );
        assert_eq!(
            p("ENV GREETING=\"hello world\""),
            Instruction::Env {
                key: "GREETING".into(),
                value: EnvValue::Expand("hello world".into())
            }
        );
        assert_eq!(
            p("ENV RAW='$HOME stays'"),
            Instruction::Env {
                key: "RAW".into(),
                value: EnvValue::Literal("$HOME stays".into())
            }
        );
        assert_eq!(
            p("ENV EMPTY="),
            Instruction::Env {
                key: "EMPTY".into(),
                value: EnvValue::Expand(String::new())
            }
        );
        assert_eq!(
            p("ENV A=b=c"),
            Instruction::Env {
                key: "A".into(),
                value: EnvValue::Expand("b=c".into())
            }
        );
        assert!(perr("ENV A").contains("ENV expects KEY=VALUE"));
        assert!(perr("ENV 1A=x").contains("invalid variable name \"1A\""));
        assert!(perr("ENV A-B=x").contains("invalid variable name"));
        assert!(perr("ENV =x").contains("invalid variable name \"\""));
    }

    #[test]
    fn env_expansion_edge_cases() {
        let env: BTreeMap<String, String> =
            [("HOME", "/root"), ("A", "1"), ("A_B", "2"), ("EMPTY", "")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let cases = [
            ("$A", "1"),
            ("${A}", "1"),
            ("${A}x", "1x"),
            ("$Ax", ""),
            ("$A_B", "2"),
            ("${A}_B", "1_B"),
            ("$$", "$"),
            ("$$A", "$A"),
            ("$$$A", "$1"),
            ("cost: 5$", "cost: 5$"),
            ("$-x", "$-x"),
            ("${", "${"),
            ("${}", "${}"),
            ("${A", "${A"),
            ("${A-B}", "${A-B}"),
            ("$UNSET/x", "/x"),
            ("${UNSET}", ""),
            ("$EMPTY.", "."),
            ("$HOME/bin:$A", "/root/bin:1"),
            ("é$A€", "é1€"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env), want, "{input:?}");
        }
        let mut b = BuildEnv {
            user: "root".into(),
            workdir: "/".into(),
            env,
        };
        b.apply_env("A", &EnvValue::Expand("$A$A".into()));
        assert_eq!(
            b.env["A"], "11",
            "expansion is immediate, against the old value"
        );
        b.apply_env("L", &EnvValue::Literal("$A".into()));
        assert_eq!(b.env["L"], "$A");
        b.set_user("alice");
        assert_eq!(b.env["HOME"], "/home/alice");
        b.apply_env("P", &EnvValue::Expand("$HOME/.local".into()));
        assert_eq!(b.env["P"], "/home/alice/.local");
        let d = b.default_env();
        assert!(!d.contains_key("HOME") && !d.contains_key("USER"));
        assert_eq!(d["P"], "/home/alice/.local");
    }

    #[test]
    fn copy_and_quoting() {
        assert_eq!(
            p("COPY a.txt b/ /opt/app/"),
            Instruction::Copy {
                sources: vec!["a.txt".into(), "b/".into()],
                dst: "/opt/app/".into()
            }
        );
        assert_eq!(
            p(r#"COPY "my file.txt" 'other one' dst"#),
            Instruction::Copy {
                sources: vec!["my file.txt".into(), "other one".into()],
                dst: "dst".into()
            }
        );
        assert_eq!(
            p(r#"COPY "a\"b" x"#),
            Instruction::Copy {
                sources: vec!["a\"b".into()],
                dst: "x".into()
            }
        );
        assert_eq!(
            perr("COPY ../etc/passwd /x"),
            "line 7: COPY source \"../etc/passwd\": must not contain `..` (it would leave the archive)"
        );
        assert!(perr("COPY a/../../b /x").contains("must not contain `..`"));
        assert!(perr("COPY /etc/passwd /x").contains("must be a relative path"));
        assert!(perr("COPY onlyone").contains("at least one source and a destination"));
        assert!(perr("COPY 'open x").contains("unterminated single quote"));
        assert!(perr("COPY \"open x").contains("unterminated double quote"));
        assert_eq!(normalize_source("./a//b/"), "a/b");
        assert_eq!(normalize_source("."), "");
    }

    #[test]
    fn bad_lines() {
        assert_eq!(
            perr("FROM debian"),
            "line 7: unknown instruction \"FROM\" (expected RUN, START, ENV, WORKDIR, USER or COPY)"
        );
        assert_eq!(perr(""), "line 7: empty instruction");
        assert_eq!(perr("   "), "line 7: empty instruction");
        assert!(perr("RUN a\0b").contains("NUL"));
        let lines: Vec<String> = ["RUN true", "ENV X=1", "BOGUS"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            parse_recipe(&lines).expect_err("bad").line,
            3,
            "the failing entry is named"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "5", "5 s", "-5s", "1d", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn healthchecks() {
        let hc = parse_healthcheck(
            "--interval=5s --timeout=4s --start-period=60s --retries=5 curl -sf http://127.0.0.1:8888/api/status",
        )
        .expect("parse");
        assert_eq!(hc.interval, Duration::from_secs(5));
        assert_eq!(hc.timeout, Duration::from_secs(4));
        assert_eq!(hc.start_period, Duration::from_secs(60));
        assert_eq!(hc.retries, 5);
        assert_eq!(hc.cmd, "curl -sf http://127.0.0.1:8888/api/status");
        let d = parse_healthcheck("test -f /ready").expect("defaults");
        assert_eq!(
            (d.interval, d.timeout, d.start_period, d.retries),
            (
                Duration::from_secs(3),
                Duration::from_secs(10),
                Duration::ZERO,
                0
            )
        );
        assert!(
            parse_healthcheck("--interval=5s")
                .unwrap_err()
                .contains("needs a command")
        );
        assert!(
            parse_healthcheck("--every=5s true")
                .unwrap_err()
                .contains("unknown healthcheck flag --every")
        );
        assert!(
            parse_healthcheck("--interval 5s true")
                .unwrap_err()
                .contains("must be --name=value")
        );
        assert!(
            parse_healthcheck("--retries=x true")
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            parse_healthcheck("--interval=0 true")
                .unwrap_err()
                .contains("more than 0")
        );
    }

    #[test]
    fn paths_and_quoting_helpers() {
        assert_eq!(resolve_path("/home/u", "app"), "/home/u/app");
        assert_eq!(resolve_path("/home/u", "/opt"), "/opt");
        assert_eq!(resolve_path("/home/u", "../x/./y/"), "/home/x/y");
        assert_eq!(resolve_path("/", "."), "/");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        let b = BuildEnv::from_env_output("PATH=/bin\nHOME=/root\nweird line\nX=a=b\n");
        assert_eq!(b.env["X"], "a=b");
        assert_eq!(b.env.len(), 3);
        assert_eq!(b.user, "root");
    }
}
