//! The push: a server sends its data to its own jail on the backup server.
//!
//! One run: take the lock (a run that finds the previous one still going
//! skips and records that), wait its splay, run the pre-hooks, then three
//! rsync transfers over SSH with the server's own key and the pinned host key
//! of the backup server:
//!
//! 1. `.snap-state` = `running` — from now on the backup server will not
//!    turn this server's jail into a snapshot;
//! 2. the data, into `data/`: the backup server receives it into a fresh
//!    tree, hard-linking what did not change from the previous complete push
//!    (no `--delete` is needed, nor allowed: the receiver never names a
//!    stored file back), with rsync's `--fake-super` on the receiving side so
//!    ownership, modes, devices and ACLs survive in xattrs although the jail
//!    account is not root;
//! 3. `.snap-state` = `done`.
//!
//! Whether a push is complete is decided on the backup server, from the
//! receiving rsync's own exit status (`snap-receive`'s receipts), never from
//! what this side says; a failed or killed run never becomes history. Everything runs under `nice`
//! and `ionice`, with an optional bandwidth limit, and ends in a record.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::account::{validate_account_name, validate_minion_id};
use crate::config::JsonConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::lock;
use crate::proc::{self, Output};
use crate::progress::Progress;
use crate::record;

/// Client configuration, written by state `snap.client` as JSON.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    pub minion_id: String,
    pub account: String,
    pub server_host: String,
    #[serde(default = "d_port")]
    pub server_port: u16,
    /// This server's private key.
    pub key: PathBuf,
    /// known_hosts with the backup server's pinned host key(s).
    pub known_hosts: PathBuf,
    /// Absolute paths to back up.
    pub paths: Vec<String>,
    /// rsync exclude patterns.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Directory of pre-hooks (executables run in name order before the push).
    #[serde(default)]
    pub hooks_dir: Option<PathBuf>,
    #[serde(default = "d_hook_timeout")]
    pub hook_timeout: u64,
    #[serde(default)]
    pub bwlimit_kbps: Option<u64>,
    #[serde(default = "d_nice")]
    pub nice: i32,
    /// ionice class: 2 (best effort) or 3 (idle).
    #[serde(default = "d_ionice_class")]
    pub ionice_class: u8,
    #[serde(default = "d_ionice_level")]
    pub ionice_level: u8,
    /// Seconds to wait before connecting (spreads a busy minute).
    #[serde(default)]
    pub splay: u64,
    /// Lock, records, temporary state file (root-only).
    pub state_dir: PathBuf,
    #[serde(default = "d_retries")]
    pub retries: u32,
    #[serde(default = "d_retry_delay")]
    pub retry_delay: u64,
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout: u64,
    /// rsync's I/O timeout: a transfer stalled this long is aborted.
    #[serde(default = "d_io_timeout")]
    pub io_timeout: u64,
    #[serde(default = "d_rsync")]
    pub rsync: String,
    #[serde(default = "d_ssh")]
    pub ssh: String,
}

fn d_port() -> u16 {
    22
}
fn d_hook_timeout() -> u64 {
    3600
}
fn d_nice() -> i32 {
    19
}
fn d_ionice_class() -> u8 {
    2
}
fn d_ionice_level() -> u8 {
    7
}
fn d_retries() -> u32 {
    3
}
fn d_retry_delay() -> u64 {
    30
}
fn d_connect_timeout() -> u64 {
    30
}
fn d_io_timeout() -> u64 {
    600
}
fn d_rsync() -> String {
    "rsync".into()
}
fn d_ssh() -> String {
    "ssh".into()
}

fn bad(field: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!("push configuration: {field} {why}"))
}

fn no_quotes(field: &str, p: &Path) -> Result<()> {
    let s = p.to_string_lossy();
    if s.contains(['"', '\'', '\n', '\\']) || !p.is_absolute() {
        return Err(bad(
            field,
            format!("must be an absolute path without quotes: {s:?}"),
        ));
    }
    Ok(())
}

impl JsonConfig for PushConfig {
    const WHAT: &'static str = "push configuration";

    /// Everything that can be checked without touching the network.
    fn check(&self) -> Result<()> {
        validate_minion_id(&self.minion_id)?;
        validate_account_name(&self.account)?;
        let host_ok = !self.server_host.is_empty()
            && !self.server_host.starts_with('-')
            && self
                .server_host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !host_ok {
            return Err(bad(
                "server_host",
                format!("is not a host name or address: {:?}", self.server_host),
            ));
        }
        if self.server_port == 0 {
            return Err(bad("server_port", "must be 1-65535"));
        }
        no_quotes("key", &self.key)?;
        no_quotes("known_hosts", &self.known_hosts)?;
        no_quotes("state_dir", &self.state_dir)?;
        if !(0..=19).contains(&self.nice) {
            return Err(bad("nice", "must be 0-19"));
        }
        if !(2..=3).contains(&self.ionice_class) || self.ionice_level > 7 {
            return Err(bad(
                "ionice",
                "class must be 2 (best effort) or 3 (idle), level 0-7",
            ));
        }
        if self.bwlimit_kbps == Some(0) {
            return Err(bad(
                "bwlimit_kbps",
                "must be positive (leave it unset for no limit)",
            ));
        }
        if self.paths.is_empty() {
            return Err(bad("paths", "is empty: nothing to back up"));
        }
        for p in &self.paths {
            let path = Path::new(p);
            if !path.is_absolute()
                || path.components().any(|c| matches!(c, Component::ParentDir))
                || p.contains(['\n', '\r', '\0'])
            {
                return Err(bad(
                    "paths",
                    format!("entry {p:?} must be a plain absolute path"),
                ));
            }
        }
        for e in &self.excludes {
            if e.is_empty() || e.contains(['\n', '\r', '\0']) {
                return Err(bad(
                    "excludes",
                    format!("entry {e:?} is not a valid pattern"),
                ));
            }
        }
        Ok(())
    }
}

impl PushConfig {
    /// Check what must exist on this server before anything is sent.
    fn check_local(&self) -> Result<()> {
        for (what, p) in [
            ("private key", &self.key),
            ("known_hosts", &self.known_hosts),
        ] {
            fs::metadata(p).map_err(|e| Error::io_path(&format!("reading {what}"), p, e))?;
        }
        let missing: Vec<&str> = self
            .paths
            .iter()
            .filter(|p| fs::symlink_metadata(p).is_err())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Error::invalid_input(format!(
                "configured backup paths do not exist: {}; nothing was sent \
                 (fix pillar snap:client:paths, or restore the missing data)",
                missing.join(", ")
            )));
        }
        Ok(())
    }

    fn destination(&self, path: &str) -> String {
        let host = if self.server_host.contains(':') && !self.server_host.starts_with('[') {
            format!("[{}]", self.server_host)
        } else {
            self.server_host.clone()
        };
        format!("{}@{host}:{path}", self.account)
    }

    /// The `-e` argument for rsync: ssh with this server's key only, the
    /// pinned host key only, no agent, no forwarding, no user config.
    pub fn ssh_command(&self) -> String {
        let q = |p: &Path| format!("\"{}\"", p.display());
        [
            self.ssh.clone(),
            "-F /dev/null".into(),
            format!("-i {}", q(&self.key)),
            format!("-p {}", self.server_port),
            "-o IdentitiesOnly=yes".into(),
            "-o IdentityAgent=none".into(),
            "-o BatchMode=yes".into(),
            "-o StrictHostKeyChecking=yes".into(),
            format!("-o UserKnownHostsFile={}", q(&self.known_hosts)),
            "-o GlobalKnownHostsFile=/dev/null".into(),
            "-o UpdateHostKeys=no".into(),
            "-o PasswordAuthentication=no".into(),
            "-o KbdInteractiveAuthentication=no".into(),
            "-o PreferredAuthentications=publickey".into(),
            "-o ForwardAgent=no".into(),
            "-o ForwardX11=no".into(),
            "-o ClearAllForwardings=yes".into(),
            "-o ControlMaster=no".into(),
            "-o ControlPath=none".into(),
            "-o RequestTTY=no".into(),
            format!("-o ConnectTimeout={}", self.connect_timeout),
            "-o ServerAliveInterval=15".into(),
            "-o ServerAliveCountMax=4".into(),
            "-o LogLevel=ERROR".into(),
        ]
        .join(" ")
    }

    /// rsync filter rules: excludes first, then each path and its parents,
    /// then nothing else (the source is `/`).
    pub fn filter_rules(&self) -> Vec<String> {
        let mut rules: Vec<String> = self.excludes.iter().map(|e| format!("- {e}")).collect();
        let mut parents = std::collections::BTreeSet::new();
        let mut includes = Vec::new();
        for p in &self.paths {
            let path = Path::new(p);
            let mut cur = PathBuf::from("/");
            let comps: Vec<_> = path.components().skip(1).collect();
            for c in &comps[..comps.len().saturating_sub(1)] {
                cur.push(c);
                parents.insert(format!("+ {}/", cur.display()));
            }
            let clean = p.trim_end_matches('/');
            if clean.is_empty() {
                includes.push("+ /***".to_string());
            } else if Path::new(clean).is_dir() {
                includes.push(format!("+ {clean}/***"));
            } else {
                includes.push(format!("+ {clean}"));
            }
        }
        rules.extend(parents);
        rules.extend(includes);
        rules.push("- *".into());
        rules
    }

    fn niced(&self, program: &str) -> Command {
        let mut cmd = Command::new("nice");
        cmd.arg("-n")
            .arg(self.nice.to_string())
            .arg("ionice")
            .arg("-c")
            .arg(self.ionice_class.to_string());
        if self.ionice_class == 2 {
            cmd.arg("-n").arg(self.ionice_level.to_string());
        }
        cmd.arg(program);
        cmd
    }
}

/// One pre-hook's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookRecord {
    pub name: String,
    pub exit_code: i32,
    pub seconds: f64,
    pub timed_out: bool,
    /// The last lines it printed.
    pub output: String,
}

/// rsync's own counts for the data transfer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TransferStats {
    pub files: u64,
    pub files_transferred: u64,
    pub total_size: u64,
    pub transferred_size: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// What a push did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushRecord {
    pub run_id: String,
    pub minion_id: String,
    pub account: String,
    pub server: String,
    pub started: String,
    pub finished: String,
    pub seconds: f64,
    /// `ok`, `partial` (sent, but a pre-hook failed or some files were not transferred),
    /// `failed` (not completely sent: the previous snapshot stays), `skipped`.
    pub result: String,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub attempts: u32,
    pub hooks: Vec<HookRecord>,
    pub transfer: Option<TransferStats>,
    pub warnings: Vec<String>,
}

/// Options of one run (not configuration).
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Skip the splay wait (manual runs).
    pub no_splay: bool,
    /// How long to wait for the lock before skipping.
    pub lock_wait: Duration,
}

/// Parse the numbers of rsync's `--stats` output.
pub fn parse_stats(stdout: &str) -> TransferStats {
    let mut s = TransferStats::default();
    for line in stdout.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let num = value
            .split_whitespace()
            .next()
            .map(|n| n.replace(',', ""))
            .and_then(|n| n.parse::<u64>().ok());
        let Some(num) = num else { continue };
        match key.trim() {
            "Number of files" => s.files = num,
            "Number of regular files transferred" => s.files_transferred = num,
            "Total file size" => s.total_size = num,
            "Total transferred file size" => s.transferred_size = num,
            "Total bytes sent" => s.bytes_sent = num,
            "Total bytes received" => s.bytes_received = num,
            _ => {}
        }
    }
    s
}

/// Parse one `--info=progress2` line: (bytes so far, percent).
pub fn parse_progress2(line: &str) -> Option<(u64, u32)> {
    let mut it = line.split_whitespace();
    let bytes = it.next()?.replace(',', "").parse::<u64>().ok()?;
    let pct = it.next()?.strip_suffix('%')?.parse::<u32>().ok()?;
    Some((bytes, pct))
}

/// Turn a failed rsync run into an error of the right kind with a message an
/// operator can act on. `transient` says whether retrying may help.
pub fn classify_failure(cfg: &PushConfig, what: &str, out: &Output) -> (Error, bool) {
    let text = format!("{}\n{}", out.stderr, out.stdout);
    let server = format!("{}:{}", cfg.server_host, cfg.server_port);
    let has = |needle: &str| text.contains(needle);
    let (kind, message, transient) = if has("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || has("Host key verification failed")
        || has("No ED25519 host key is known")
        || has("host key for")
    {
        (
            ErrorKind::Refused,
            format!(
                "the backup server {server} did not present the pinned host key in {} \
                 (key changed, or a different machine answers): refusing to send anything",
                cfg.known_hosts.display()
            ),
            false,
        )
    } else if has("snap-receive:") && !has("busy:") {
        (
            ErrorKind::Refused,
            format!("the backup server {server} refused the transfer"),
            false,
        )
    } else if has("Permission denied (publickey") {
        (
            ErrorKind::Refused,
            format!(
                "the backup server {server} refused this server's key for account {} \
                 (has the backup server been highstated since this key was made?)",
                cfg.account
            ),
            false,
        )
    } else if has("busy: another transfer or a rotation") {
        (
            ErrorKind::Busy,
            format!("the backup server is rotating this server's history right now ({server})"),
            true,
        )
    } else if has("No space left on device") || has("Disk quota exceeded") {
        (
            ErrorKind::DiskFull,
            format!("the backup server {server} ran out of space while receiving"),
            false,
        )
    } else if out.timed_out || out.code == 30 {
        (
            ErrorKind::Network,
            format!("{what} to {server} stalled longer than {}s", cfg.io_timeout),
            true,
        )
    } else if matches!(out.code, 255 | 10 | 12 | 35) {
        (
            ErrorKind::Network,
            format!("cannot reach the backup server {server} ({what})"),
            true,
        )
    } else {
        (
            ErrorKind::Io,
            format!("{what} failed (rsync exit {})", out.code),
            false,
        )
    };
    let detail = out.tail(3);
    let message = if detail.is_empty() {
        message
    } else {
        format!("{message}: {detail}")
    };
    (Error::new(kind, message), transient)
}

struct Runner<'a> {
    cfg: &'a PushConfig,
    attempts: u32,
}

impl Runner<'_> {
    /// Run one rsync transfer with retries on transient failures.
    fn rsync(
        &mut self,
        what: &str,
        args: &[String],
        progress: Option<&Progress>,
        niced: bool,
    ) -> Result<Output> {
        let mut delay = Duration::from_secs(self.cfg.retry_delay);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.attempts += 1;
            let mut cmd = if niced {
                self.cfg.niced(&self.cfg.rsync)
            } else {
                Command::new(&self.cfg.rsync)
            };
            cmd.args(args);
            let mut last = 0u64;
            let mut on_line = |line: &str| {
                if let (Some(p), Some((bytes, pct))) = (progress, parse_progress2(line)) {
                    if bytes > last {
                        p.add(bytes - last);
                        last = bytes;
                    }
                    if pct > 0 {
                        p.set_total(bytes * 100 / u64::from(pct));
                    }
                }
            };
            let out = proc::run(cmd, None, Some(&mut on_line))?;
            if out.success() || out.code == 24 || (what == "data" && out.code == 23) {
                return Ok(out);
            }
            let (err, transient) = classify_failure(self.cfg, what, &out);
            if !transient || attempt > self.cfg.retries {
                let tries = if attempt > 1 {
                    format!(" (after {attempt} attempts)")
                } else {
                    String::new()
                };
                return Err(err.context(format!("push of {}{tries}", self.cfg.minion_id)));
            }
            // Jitter: servers refused together (a burst beyond the backup
            // server's MaxStartups) must not all come back together.
            thread::sleep(jittered(delay));
            delay = (delay * 2).min(Duration::from_secs(600));
        }
    }
}

/// `delay` scaled by a random factor in [0.5, 1.5).
pub fn jittered(delay: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(delay.as_nanos());
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    delay.mul_f64(0.5 + unit)
}

fn state_json(
    cfg: &PushConfig,
    state: &str,
    run_id: &str,
    started: &str,
    extra: serde_json::Value,
) -> String {
    let mut v = serde_json::json!({
        "state": state,
        "run_id": run_id,
        "minion_id": cfg.minion_id,
        "started": started,
        "updated": record::now(),
    });
    if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in more {
            obj.insert(k.clone(), val.clone());
        }
    }
    v.to_string()
}

/// Executable hook files in name order: skips dotfiles, editor and dpkg leftovers.
/// Refuses a hooks directory or hook that others could write (they run as root).
pub fn list_hooks(dir: &Path) -> Result<Vec<PathBuf>> {
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io_path("reading hooks directory", dir, e)),
    };
    let unsafe_perm = |m: &fs::Metadata| m.uid() != 0 || m.permissions().mode() & 0o022 != 0;
    if unsafe_perm(&meta) {
        return Err(Error::invalid_input(format!(
            "hooks directory {} must be owned by root and writable only by root",
            dir.display()
        )));
    }
    let mut hooks = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io_path("listing", dir, e))? {
        let entry = entry.map_err(|e| Error::io_path("listing", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with('~') || name.contains(".dpkg-") {
            continue;
        }
        let path = entry.path();
        let m = fs::metadata(&path).map_err(|e| Error::io_path("reading hook", &path, e))?;
        if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
            continue;
        }
        if unsafe_perm(&m) {
            return Err(Error::invalid_input(format!(
                "hook {} must be owned by root and writable only by root",
                path.display()
            )));
        }
        hooks.push(path);
    }
    hooks.sort();
    Ok(hooks)
}

fn run_hooks(
    cfg: &PushConfig,
    run_id: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<HookRecord>> {
    let Some(dir) = &cfg.hooks_dir else {
        return Ok(Vec::new());
    };
    let mut records = Vec::new();
    for hook in list_hooks(dir)? {
        let mut cmd = cfg.niced(&hook.to_string_lossy());
        cmd.current_dir("/")
            .env("SNAP_RUN_ID", run_id)
            .env("SNAP_MINION_ID", &cfg.minion_id)
            .env("SNAP_STAGE", "pre");
        let out = proc::run(cmd, Some(Duration::from_secs(cfg.hook_timeout)), None)?;
        let name = hook
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !out.success() {
            warnings.push(if out.timed_out {
                format!("hook {name} timed out after {}s", cfg.hook_timeout)
            } else {
                format!("hook {name} exited {}: {}", out.code, out.tail(2))
            });
        }
        records.push(HookRecord {
            name,
            exit_code: out.code,
            seconds: out.seconds,
            timed_out: out.timed_out,
            output: out.tail(20),
        });
    }
    Ok(records)
}

/// Run one push. Returns the record (also written under `state_dir`); an
/// `Err` only for failures before anything could be recorded.
pub fn push(cfg: &PushConfig, opts: &PushOptions, progress: &Progress) -> Result<PushRecord> {
    cfg.check()?;
    record::ensure_dir(&cfg.state_dir, 0o700)?;
    let run_id = record::run_id();
    let started = record::now();
    let clock = Instant::now();
    let mut rec = PushRecord {
        run_id: run_id.clone(),
        minion_id: cfg.minion_id.clone(),
        account: cfg.account.clone(),
        server: format!("{}:{}", cfg.server_host, cfg.server_port),
        started: started.clone(),
        finished: String::new(),
        seconds: 0.0,
        result: "failed".into(),
        error: None,
        error_kind: None,
        attempts: 0,
        hooks: Vec::new(),
        transfer: None,
        warnings: Vec::new(),
    };

    let lock_path = cfg.state_dir.join("push.lock");
    let lock = lock::lock_file(&lock_path, opts.lock_wait)?;
    let outcome = match lock {
        None => {
            let err = lock::busy("the previous push", &lock_path);
            rec.result = "skipped".into();
            Err(err)
        }
        Some(mut held) => {
            held.write_note(&format!(
                "pid {} run {run_id} since {started}",
                std::process::id()
            ))?;
            let r = run_locked(cfg, opts, progress, &run_id, &started, &mut rec);
            drop(held);
            r
        }
    };
    if let Err(e) = outcome {
        rec.error = Some(e.to_string());
        rec.error_kind = Some(e.kind().name().to_string());
    }
    rec.finished = record::now();
    rec.seconds = clock.elapsed().as_secs_f64();
    record::write_json(&cfg.state_dir.join("push-last.json"), &rec)?;
    record::append_jsonl(&cfg.state_dir.join("push.jsonl"), &rec)?;
    Ok(rec)
}

fn run_locked(
    cfg: &PushConfig,
    opts: &PushOptions,
    progress: &Progress,
    run_id: &str,
    started: &str,
    rec: &mut PushRecord,
) -> Result<()> {
    cfg.check_local()?;
    if cfg.splay > 0 && !opts.no_splay {
        thread::sleep(Duration::from_secs(cfg.splay));
    }
    let mut warnings = Vec::new();
    rec.hooks = run_hooks(cfg, run_id, &mut warnings)?;

    let ssh = cfg.ssh_command();
    // Sent into the jail's directory, the one destination besides data/
    // that snap-receive accepts.
    let outgoing = cfg.state_dir.join("outgoing");
    record::ensure_dir(&outgoing, 0o700)?;
    let state_file = outgoing.join(".snap-state");
    let mut runner = Runner { cfg, attempts: 0 };
    let state_args = |file: &Path| -> Vec<String> {
        vec![
            "--chmod=F600".into(),
            format!("--timeout={}", cfg.io_timeout),
            "-e".into(),
            ssh.clone(),
            file.display().to_string(),
            cfg.destination("./"),
        ]
    };

    let result: Result<()> = (|| {
        record::write_atomic(
            &state_file,
            state_json(cfg, "running", run_id, started, serde_json::json!({})).as_bytes(),
            0o600,
        )?;
        runner.rsync("state", &state_args(&state_file), None, false)?;

        let mut args: Vec<String> = vec![
            "-aHAXS".into(),
            "--numeric-ids".into(),
            "--stats".into(),
            "--info=progress2".into(),
            format!("--timeout={}", cfg.io_timeout),
            "--remote-option=--fake-super".into(),
            "-e".into(),
            ssh.clone(),
        ];
        if let Some(kbps) = cfg.bwlimit_kbps {
            args.push(format!("--bwlimit={kbps}"));
        }
        args.extend(
            cfg.filter_rules()
                .into_iter()
                .map(|r| format!("--filter={r}")),
        );
        args.push("/".into());
        args.push(cfg.destination("data/"));
        let out = runner.rsync("data", &args, Some(progress), true)?;
        let stats = parse_stats(&out.stdout);
        // rsync counts unchanged files as done too, but prints no progress when
        // nothing changed: the whole tree is accounted for now.
        progress.set_total(stats.total_size.max(progress.done()));
        progress.add(stats.total_size.saturating_sub(progress.done()));
        if out.code == 24 {
            warnings
                .push("some files vanished while they were sent (normal on a live system)".into());
        }
        if out.code == 23 {
            // Whether the push is complete is the backup server's call (its
            // receiving rsync's exit status), never this side's.
            warnings.push(format!(
                "some files were not transferred (rsync exit 23; the backup server keeps this \
                 push only if it stored everything it was sent): {}",
                out.tail(3)
            ));
        }
        rec.transfer = Some(stats.clone());

        record::write_atomic(
            &state_file,
            state_json(
                cfg,
                "done",
                run_id,
                started,
                serde_json::json!({"finished": record::now(), "transfer": stats}),
            )
            .as_bytes(),
            0o600,
        )?;
        runner.rsync("state", &state_args(&state_file), None, false)?;
        Ok(())
    })();
    let _ = fs::remove_file(&state_file);
    rec.attempts = runner.attempts;
    progress.finish();
    rec.warnings = warnings;
    result?;
    rec.result = if rec.warnings.iter().any(|w| !w.contains("vanished")) {
        "partial".into()
    } else {
        "ok".into()
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_jittered_within_half_to_one_and_a_half() {
        let d = Duration::from_secs(30);
        let got: Vec<Duration> = (0..200).map(|_| jittered(d)).collect();
        assert!(got.iter().all(|g| *g >= d / 2 && *g < d * 3 / 2), "{got:?}");
        let distinct: std::collections::BTreeSet<_> = got.iter().collect();
        assert!(distinct.len() > 150, "jitter must differ between calls");
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    fn cfg() -> PushConfig {
        serde_json::from_value(serde_json::json!({
            "minion_id": "web1.example.com",
            "account": "snap-web1",
            "server_host": "backup1.example.com",
            "server_port": 2222,
            "key": "/etc/snap/id_ed25519",
            "known_hosts": "/etc/snap/known_hosts",
            "paths": ["/etc", "/var/www/html", "/srv/data/db.dump"],
            "excludes": ["*.tmp", "/var/www/html/cache/"],
            "state_dir": "/var/lib/snap",
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_gentle() {
        let c = cfg();
        c.check().unwrap();
        assert_eq!((c.nice, c.ionice_class, c.ionice_level), (19, 2, 7));
        assert_eq!(
            c.destination("data/"),
            "snap-web1@backup1.example.com:data/"
        );
    }

    #[test]
    fn filter_rules_include_paths_and_parents_only() {
        let rules = cfg().filter_rules();
        assert_eq!(rules[0], "- *.tmp");
        assert_eq!(rules[1], "- /var/www/html/cache/");
        assert!(rules.contains(&"+ /var/".to_string()));
        assert!(rules.contains(&"+ /var/www/".to_string()));
        assert!(rules.contains(&"+ /srv/data/".to_string()));
        assert!(rules.contains(&"+ /etc/***".to_string()));
        assert_eq!(rules.last().unwrap(), "- *");
    }

    #[test]
    fn ssh_pins_everything() {
        let s = cfg().ssh_command();
        for must in [
            "-i \"/etc/snap/id_ed25519\"",
            "-p 2222",
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=\"/etc/snap/known_hosts\"",
            "GlobalKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "BatchMode=yes",
            "-F /dev/null",
            "ForwardAgent=no",
        ] {
            assert!(s.contains(must), "{must} missing in {s}");
        }
    }

    #[test]
    fn bad_configuration_is_refused_naming_the_field() {
        let mut c = cfg();
        c.server_host = "-oProxyCommand=sh".into();
        assert!(c.check().unwrap_err().to_string().contains("server_host"));
        let mut c = cfg();
        c.paths = vec!["etc".into()];
        assert!(c.check().unwrap_err().to_string().contains("paths"));
        let mut c = cfg();
        c.paths = vec!["/etc/../root".into()];
        assert!(c.check().is_err());
        let mut c = cfg();
        c.key = PathBuf::from("/etc/\"x");
        assert!(c.check().unwrap_err().to_string().contains("key"));
        let mut c = cfg();
        c.ionice_class = 1;
        assert!(c.check().is_err());
        let e =
            serde_json::from_value::<PushConfig>(serde_json::json!({"minion_id": "x", "bogus": 1}))
                .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn missing_paths_are_listed_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        let key = dir.path().join("k");
        fs::write(&key, "x").unwrap();
        c.key = key.clone();
        c.known_hosts = key;
        c.paths = vec![
            dir.path().display().to_string(),
            "/nonexistent/a".into(),
            "/nonexistent/b".into(),
        ];
        let e = c.check_local().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(
            e.to_string().contains("/nonexistent/a, /nonexistent/b"),
            "{e}"
        );
    }

    #[test]
    fn parses_rsync_stats_and_progress() {
        let out = "Number of files: 1,234 (reg: 1,000, dir: 234)\n\
                   Number of regular files transferred: 12\n\
                   Total file size: 9,876,543 bytes\n\
                   Total transferred file size: 12,345 bytes\n\
                   Total bytes sent: 23,456\nTotal bytes received: 789\n";
        let s = parse_stats(out);
        assert_eq!(s.files, 1234);
        assert_eq!(s.files_transferred, 12);
        assert_eq!(s.total_size, 9876543);
        assert_eq!(s.transferred_size, 12345);
        assert_eq!((s.bytes_sent, s.bytes_received), (23456, 789));
        assert_eq!(
            parse_progress2(
                "  1,238,099,968  45%   39.83MB/s    0:00:29 (xfr#5, ir-chk=1011/2000)"
            ),
            Some((1238099968, 45))
        );
        assert_eq!(parse_progress2("sending incremental file list"), None);
    }

    #[test]
    fn failures_are_classified_for_operators() {
        let c = cfg();
        let out = |code: i32, stderr: &str| Output {
            code,
            stdout: String::new(),
            stderr: stderr.into(),
            timed_out: false,
            seconds: 0.1,
        };
        let (e, t) = classify_failure(
            &c,
            "data",
            &out(255, "ssh: connect to host x port 2222: Connection refused"),
        );
        assert_eq!((e.kind(), t), (ErrorKind::Network, true));
        let (e, t) = classify_failure(
            &c,
            "data",
            &out(
                255,
                "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.",
            ),
        );
        assert_eq!((e.kind(), t), (ErrorKind::Refused, false));
        assert!(e.to_string().contains("pinned host key"), "{e}");
        let (e, t) = classify_failure(
            &c,
            "data",
            &out(
                1,
                "snap-receive: busy: another transfer or a rotation is using this jail",
            ),
        );
        assert_eq!((e.kind(), t), (ErrorKind::Busy, true));
        let (e, _) = classify_failure(
            &c,
            "data",
            &out(
                23,
                "rsync: write failed on \"x\": No space left on device (28)",
            ),
        );
        assert_eq!(e.kind(), ErrorKind::DiskFull);
    }
}
