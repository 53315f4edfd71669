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
//!
//! Here: the run and its records; `config`: what the client is configured
//! to send and how; `rsync`: what rsync's output says.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::JsonConfig;
use crate::error::{Error, Result};
use crate::lock;
use crate::proc::{self, Output};
use crate::progress::Progress;
use crate::record;

mod config;
mod rsync;
pub use config::PushConfig;
pub use rsync::{classify_failure, parse_progress2, parse_stats};

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
}
