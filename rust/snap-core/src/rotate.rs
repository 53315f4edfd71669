//! Rotation on the backup server: history with rsnapshot, from complete pushes only.
//!
//! rsnapshot runs with `sync_first`: `rsnapshot sync <server>/` copies one
//! server's jail into `.sync/<server>/`, `rsnapshot <level>` turns `.sync`
//! into a snapshot. For the lowest level snap syncs each server separately,
//! and only when
//!
//! * it holds the jail's lock (the one snap-receive takes for every
//!   transfer), so no push can change the jail while it is copied, and
//! * the jail's `.snap-state` says the last push is `done`.
//!
//! A push that is running or failed leaves `.sync/<server>` as it was, so the
//! next snapshot holds that server's last complete push, never a partial one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::account::{validate_account_name, validate_minion_id};
use crate::config::JsonConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::lock;
use crate::proc;
use crate::push::read_jail_state;
use crate::record;

/// Backup server configuration, written by state `snap.server` as JSON.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// One directory per account: `<jails_dir>/<account>/incoming/{.snap-state,data/}`.
    pub jails_dir: PathBuf,
    pub history_dir: PathBuf,
    pub rsnapshot_conf: PathBuf,
    #[serde(default = "d_rsnapshot")]
    pub rsnapshot: String,
    /// `{account: minion id}` of every server whose history is kept.
    pub accounts: BTreeMap<String, String>,
    /// Retention levels, lowest (most frequent) first.
    pub levels: Vec<Level>,
    /// Seconds to wait for a server's push to finish before skipping it.
    #[serde(default = "d_lock_wait")]
    pub lock_wait: u64,
    /// Records (root-only).
    pub state_dir: PathBuf,
    /// rsnapshot's log file and lock file.
    pub log_file: PathBuf,
    pub lock_file: PathBuf,
}

/// One retention level: `keep` snapshots named `<name>.0` .. `<name>.<keep-1>`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub name: String,
    pub keep: u32,
}

impl JsonConfig for ServerConfig {
    const WHAT: &'static str = "backup server configuration";

    fn check(&self) -> Result<()> {
        for (account, minion_id) in &self.accounts {
            validate_account_name(account)?;
            validate_minion_id(minion_id)?;
        }
        if self.levels.is_empty() {
            return Err(Error::invalid_input(
                "backup server configuration: levels is empty",
            ));
        }
        for (i, level) in self.levels.iter().enumerate() {
            let name = &level.name;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric()) || name == "sync"
            {
                return Err(Error::invalid_input(format!(
                    "backup server configuration: level {name:?} must be letters and digits (not \"sync\")"
                )));
            }
            if level.keep < 2 && i + 1 < self.levels.len() {
                return Err(Error::invalid_input(format!(
                    "backup server configuration: level {name} keeps {}; rsnapshot needs at least 2 \
                     below a higher level",
                    level.keep
                )));
            }
            if self.levels[..i].iter().any(|l| &l.name == name) {
                return Err(Error::invalid_input(format!(
                    "backup server configuration: level {name} is listed twice"
                )));
            }
        }
        for p in [
            &self.jails_dir,
            &self.history_dir,
            &self.log_file,
            &self.lock_file,
        ] {
            let text = p.to_string_lossy();
            if !p.is_absolute() || text.contains(['\t', '\n']) {
                return Err(Error::invalid_input(format!(
                    "backup server configuration: {text:?} must be an absolute path without tabs or newlines"
                )));
            }
        }
        Ok(())
    }
}

fn d_rsnapshot() -> String {
    "rsnapshot".into()
}
fn d_lock_wait() -> u64 {
    300
}

impl ServerConfig {
    pub fn level_names(&self) -> Vec<&str> {
        self.levels.iter().map(|l| l.name.as_str()).collect()
    }

    /// The rsnapshot configuration for this server (fields separated by tabs,
    /// as rsnapshot requires). `sync_first` so snap can sync servers one by
    /// one; `--fake-super` because a root rsync without it drops the
    /// `user.rsync.%stat` xattrs that hold the pushed files' real ownership,
    /// modes and devices.
    pub fn rsnapshot_conf(&self) -> String {
        let mut lines = vec![
            "# Managed by Salt (snap). rsnapshot's history of every server's last complete push."
                .to_string(),
            "config_version\t1.2".into(),
            format!("snapshot_root\t{}/", self.history_dir.display()),
            "no_create_root\t1".into(),
            "cmd_cp\t/bin/cp".into(),
            "cmd_rm\t/bin/rm".into(),
            "cmd_rsync\t/usr/bin/rsync".into(),
            "cmd_logger\t/usr/bin/logger".into(),
        ];
        for level in &self.levels {
            lines.push(format!("retain\t{}\t{}", level.name, level.keep));
        }
        lines.extend([
            "verbose\t2".into(),
            "loglevel\t3".into(),
            format!("logfile\t{}", self.log_file.display()),
            format!("lockfile\t{}", self.lock_file.display()),
            "sync_first\t1".into(),
            // link_dest 0: rotation hard-links .sync into <lowest>.0 and keeps
            // it, so a server skipped at the next rotation (push running or
            // failed) still has its last complete push in the new snapshot.
            // With link_dest 1 rsnapshot *moves* .sync away and it would vanish.
            "link_dest\t0".into(),
            "rsync_short_args\t-aHAXS".into(),
            "rsync_long_args\t--delete --numeric-ids --delete-excluded --fake-super".into(),
        ]);
        let mut by_id: Vec<(&String, &String)> =
            self.accounts.iter().map(|(a, m)| (m, a)).collect();
        by_id.sort();
        for (minion_id, account) in by_id {
            lines.push(format!(
                "backup\t{}/data/\t{minion_id}/",
                self.incoming(account).display()
            ));
        }
        lines.push(String::new());
        lines.join("\n")
    }

    pub fn incoming(&self, account: &str) -> PathBuf {
        self.jails_dir.join(account).join("incoming")
    }

    fn rsnapshot(&self) -> Command {
        let mut cmd = Command::new(&self.rsnapshot);
        cmd.arg("-c").arg(&self.rsnapshot_conf);
        cmd
    }
}

/// What rotation did with one server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerSync {
    pub account: String,
    /// `synced` (its last complete push went into history), `unchanged`
    /// (nothing new since the last sync), `skipped` (see `reason`), `failed`.
    pub action: String,
    pub reason: Option<String>,
    /// The push run that is now in history, as the jail recorded it.
    pub run_id: Option<String>,
    pub pushed_finished: Option<String>,
    pub seconds: f64,
}

/// What a rotation did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotateRecord {
    pub run_id: String,
    pub level: String,
    pub started: String,
    pub finished: String,
    pub seconds: f64,
    /// `ok`, `partial` (rotated, but some servers were skipped or failed), `failed`.
    pub result: String,
    pub error: Option<String>,
    pub servers: BTreeMap<String, ServerSync>,
}

/// What the backup server holds from each server, by minion id (the receiving
/// side's record: `received.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Received {
    pub run_id: String,
    pub pushed_started: Option<String>,
    pub pushed_finished: Option<String>,
    pub synced: String,
}

fn load_received(path: &Path) -> BTreeMap<String, Received> {
    fs::read(path)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default()
}

fn sync_one(
    cfg: &ServerConfig,
    account: &str,
    minion_id: &str,
    received: &mut BTreeMap<String, Received>,
) -> ServerSync {
    let start = Instant::now();
    let mut out = ServerSync {
        account: account.to_string(),
        action: "skipped".into(),
        reason: None,
        run_id: None,
        pushed_finished: None,
        seconds: 0.0,
    };
    let incoming = cfg.incoming(account);
    let result: Result<()> = (|| {
        let Some(_held) = lock::lock_dir(&incoming, Duration::from_secs(cfg.lock_wait))? else {
            out.reason = Some(format!(
                "a push was still running after {}s: its previous snapshot is kept",
                cfg.lock_wait
            ));
            return Ok(());
        };
        let state = match read_jail_state(&incoming.join(".snap-state"))? {
            None => {
                out.reason = Some("it has never completed a push".into());
                return Ok(());
            }
            Some(s) => s,
        };
        if state.state != "done" {
            out.reason = Some(format!(
                "its last push ({}, started {}) did not complete: the previous snapshot is kept",
                state.run_id,
                state.started.as_deref().unwrap_or("?")
            ));
            return Ok(());
        }
        out.run_id = Some(state.run_id.clone());
        out.pushed_finished = state.finished.clone();
        let in_sync = cfg.history_dir.join(".sync").join(minion_id).is_dir();
        if in_sync && received.get(minion_id).map(|r| r.run_id.as_str()) == Some(&state.run_id) {
            out.action = "unchanged".into();
            return Ok(());
        }
        let mut cmd = cfg.rsnapshot();
        cmd.arg("sync").arg(format!("{minion_id}/"));
        let res = proc::run(cmd, None, None)?;
        // rsnapshot exits 2 for warnings (e.g. vanished files); 1 is an error.
        if res.code != 0 && res.code != 2 {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "rsnapshot sync of {minion_id} failed (exit {}): {}",
                    res.code,
                    res.tail(3)
                ),
            ));
        }
        received.insert(
            minion_id.to_string(),
            Received {
                run_id: state.run_id.clone(),
                pushed_started: state.started.clone(),
                pushed_finished: state.finished.clone(),
                synced: record::now(),
            },
        );
        out.action = "synced".into();
        Ok(())
    })();
    if let Err(e) = result {
        out.action = "failed".into();
        out.reason = Some(e.to_string());
    }
    out.seconds = start.elapsed().as_secs_f64();
    out
}

/// Rotate `level`. For the lowest level, first sync every server whose last
/// push is complete. Writes `rotate-last.json`, `rotate.jsonl` and (lowest
/// level) `received.json` under `state_dir`.
pub fn rotate(cfg: &ServerConfig, level: &str) -> Result<RotateRecord> {
    cfg.check()?;
    if !cfg.level_names().contains(&level) {
        return Err(Error::invalid_input(format!(
            "unknown retention level {level:?}; configured: {}",
            cfg.level_names().join(", ")
        )));
    }
    record::ensure_dir(&cfg.state_dir, 0o700)?;
    let lock_path = cfg.state_dir.join("rotate.lock");
    let Some(mut held) = lock::lock_file(&lock_path, Duration::from_secs(cfg.lock_wait))? else {
        return Err(lock::busy("rotation", &lock_path));
    };
    let run_id = record::run_id();
    held.write_note(&format!(
        "pid {} run {run_id} level {level}",
        std::process::id()
    ))?;
    let clock = Instant::now();
    let mut rec = RotateRecord {
        run_id,
        level: level.to_string(),
        started: record::now(),
        finished: String::new(),
        seconds: 0.0,
        result: "ok".into(),
        error: None,
        servers: BTreeMap::new(),
    };
    let received_path = cfg.state_dir.join("received.json");
    if level == cfg.levels[0].name {
        let mut received = load_received(&received_path);
        let mut by_id: Vec<(&String, &String)> = cfg.accounts.iter().map(|(a, m)| (m, a)).collect();
        by_id.sort();
        for (minion_id, account) in by_id {
            let sync = sync_one(cfg, account, minion_id, &mut received);
            if sync.action == "skipped" || sync.action == "failed" {
                rec.result = "partial".into();
            }
            rec.servers.insert(minion_id.clone(), sync);
        }
        record::write_json(&received_path, &received)?;
    }
    let mut cmd = cfg.rsnapshot();
    cmd.arg(level);
    let res = proc::run(cmd, None, None)?;
    if res.code != 0 && res.code != 2 {
        rec.result = "failed".into();
        rec.error = Some(format!(
            "rsnapshot {level} failed (exit {}): {}",
            res.code,
            res.tail(3)
        ));
    }
    rec.finished = record::now();
    rec.seconds = clock.elapsed().as_secs_f64();
    record::write_json(&cfg.state_dir.join("rotate-last.json"), &rec)?;
    record::append_jsonl(&cfg.state_dir.join("rotate.jsonl"), &rec)?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> ServerConfig {
        serde_json::from_value(serde_json::json!({
            "jails_dir": dir.join("jails"),
            "history_dir": dir.join("history"),
            "rsnapshot_conf": dir.join("rsnapshot.conf"),
            "rsnapshot": "/bin/true",
            "accounts": {"snap-web1": "web1", "snap-db1": "db1"},
            "levels": [{"name": "recent", "keep": 6}, {"name": "daily", "keep": 14}],
            "lock_wait": 0,
            "state_dir": dir.join("state"),
            "log_file": dir.join("rsnapshot.log"),
            "lock_file": dir.join("rsnapshot.pid"),
        }))
        .unwrap()
    }

    fn jail(dir: &Path, account: &str, state: Option<&str>) {
        let inc = dir.join("jails").join(account).join("incoming");
        fs::create_dir_all(inc.join("data")).unwrap();
        if let Some(s) = state {
            fs::write(
                inc.join(".snap-state"),
                format!(
                    r#"{{"state":"{s}","run_id":"r-{account}","started":"t0","finished":"t1"}}"#
                ),
            )
            .unwrap();
        }
    }

    #[test]
    fn only_complete_pushes_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        jail(dir.path(), "snap-web1", Some("done"));
        jail(dir.path(), "snap-db1", Some("running"));
        let rec = rotate(&c, "recent").unwrap();
        assert_eq!(rec.result, "partial");
        assert_eq!(rec.servers["web1"].action, "synced");
        assert_eq!(rec.servers["web1"].run_id.as_deref(), Some("r-snap-web1"));
        assert_eq!(rec.servers["db1"].action, "skipped");
        assert!(
            rec.servers["db1"]
                .reason
                .as_deref()
                .unwrap()
                .contains("did not complete")
        );
        let received: BTreeMap<String, Received> =
            serde_json::from_slice(&fs::read(dir.path().join("state/received.json")).unwrap())
                .unwrap();
        assert_eq!(received.keys().collect::<Vec<_>>(), vec!["web1"]);
    }

    #[test]
    fn a_locked_jail_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        jail(dir.path(), "snap-web1", Some("done"));
        jail(dir.path(), "snap-db1", None);
        let _push = lock::lock_dir(&c.incoming("snap-web1"), Duration::ZERO)
            .unwrap()
            .unwrap();
        let rec = rotate(&c, "recent").unwrap();
        assert_eq!(rec.servers["web1"].action, "skipped");
        assert!(
            rec.servers["web1"]
                .reason
                .as_deref()
                .unwrap()
                .contains("still running")
        );
        assert!(
            rec.servers["db1"]
                .reason
                .as_deref()
                .unwrap()
                .contains("never completed")
        );
    }

    #[test]
    fn higher_levels_do_not_sync_and_unknown_levels_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        jail(dir.path(), "snap-web1", Some("done"));
        assert!(rotate(&c, "daily").unwrap().servers.is_empty());
        let e = rotate(&c, "hourly").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("recent, daily"));
    }

    #[test]
    fn rsnapshot_conf_is_tab_separated_with_fake_super() {
        let dir = tempfile::tempdir().unwrap();
        let text = cfg(dir.path()).rsnapshot_conf();
        assert!(
            text.contains("\nretain\trecent\t6\nretain\tdaily\t14\n"),
            "{text}"
        );
        assert!(text.contains("\nsync_first\t1\n"));
        assert!(
            text.contains("\nlink_dest\t0\n"),
            "skipped servers must stay in .sync"
        );
        assert!(text.contains("--fake-super"));
        let web1 = format!(
            "\nbackup\t{}/jails/snap-web1/incoming/data/\tweb1/\n",
            dir.path().display()
        );
        assert!(text.contains(&web1), "{text}");
        assert!(!text.contains("  "), "fields must be tabs");
    }

    #[test]
    fn bad_levels_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.levels[0].keep = 1;
        assert!(c.check().unwrap_err().to_string().contains("at least 2"));
        let mut c = cfg(dir.path());
        c.levels[1].name = "recent".into();
        assert!(c.check().unwrap_err().to_string().contains("twice"));
        let mut c = cfg(dir.path());
        c.levels[1].name = "sync".into();
        assert!(c.check().is_err());
    }

    #[test]
    fn a_failing_rsnapshot_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.rsnapshot = "/bin/false".into();
        jail(dir.path(), "snap-web1", Some("done"));
        jail(dir.path(), "snap-db1", Some("done"));
        let rec = rotate(&c, "recent").unwrap();
        assert_eq!(rec.result, "failed");
        assert_eq!(rec.servers["web1"].action, "failed");
        assert!(rec.error.unwrap().contains("rsnapshot recent failed"));
    }
}
