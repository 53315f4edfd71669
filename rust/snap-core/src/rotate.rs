//! Rotation on the backup server: history with rsnapshot, from complete pushes only.
//!
//! For the lowest level, rotation builds `<history>/.sync/` afresh, one
//! server at a time (see [`crate::sync`]), then runs `rsnapshot <level>`
//! with `sync_first 1` and `link_dest 1`, which only renames: `.sync`
//! becomes `<lowest>.0`. Higher levels are rsnapshot's own renames.
//!
//! What goes into `.sync/<server>` is decided by what the *receiving* side
//! saw, never by the client's word: the jail's newest tree that
//! `snap-receive` (root) recorded as received completely (rsync exit 0) in
//! `jail.json`. A push that is running, failed, or was killed is not there;
//! that server's previous snapshot is carried over instead. A server whose
//! jail is busy is tried again at the end, until `lock_wait` has passed, so a
//! stalled jail never delays anyone else's rotation.
//!
//! Before a server's new data is copied, rotation checks that the history
//! filesystem keeps its reserve (`snap:server:reserve`); if not, that server
//! is *refused* (its previous snapshot carried over, the refusal recorded).
//! If not even the previous snapshots fit, nothing is rotated at all: history
//! stays as it was rather than break.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::account::{validate_account_name, validate_minion_id};
use crate::config::JsonConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::jail::{Jail, pushes_between};
use crate::lock;
use crate::proc;
use crate::record;
use crate::sync::{self, Copier, Ids, Need, Reserve, TreeStats};

/// Backup server configuration, written by state `snap.server` as JSON.
/// `snap-receive` reads it too (`jails_dir`, `accounts`, `limits`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// One home per account: `<jails_dir>/<account>/` (see [`crate::jail`]).
    pub jails_dir: PathBuf,
    pub history_dir: PathBuf,
    pub rsnapshot_conf: PathBuf,
    #[serde(default = "d_rsnapshot")]
    pub rsnapshot: String,
    #[serde(default = "d_rsync")]
    pub rsync: String,
    #[serde(default = "d_cp")]
    pub cp: String,
    /// rsync's remote shell that runs a jail's sending rsync as its account.
    #[serde(default = "d_as_account")]
    pub as_account: PathBuf,
    /// `{account: minion id}` of every server whose history is kept.
    pub accounts: BTreeMap<String, String>,
    /// Retention levels, lowest (most frequent) first.
    pub levels: Vec<Level>,
    /// Seconds rotation keeps retrying a busy jail before carrying over
    /// that server's previous snapshot.
    #[serde(default = "d_lock_wait")]
    pub lock_wait: u64,
    /// Wall clock of one server's copy into history.
    #[serde(default = "d_sync_timeout")]
    pub sync_timeout: u64,
    /// What rotation keeps free on the history filesystem.
    #[serde(default)]
    pub reserve: Reserve,
    /// The limits `snap-receive` applies to every transfer.
    #[serde(default)]
    pub limits: ReceiveLimits,
    /// Records (root-only).
    pub state_dir: PathBuf,
    /// rsnapshot's log file and lock file.
    pub log_file: PathBuf,
    pub lock_file: PathBuf,
}

/// What one push may cost the backup server (`snap:server:limits`), applied
/// by `snap-receive` to the receiving rsync whatever the client asks.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReceiveLimits {
    /// Seconds without progress before the receiver gives up (rsync --timeout).
    pub io_timeout: u64,
    /// Wall clock of one transfer.
    pub max_seconds: u64,
    /// Largest file (apparent size, RLIMIT_FSIZE); None: no limit.
    pub max_file_size: Option<u64>,
    /// Address space of the receiving rsync.
    pub max_memory: u64,
    /// Processes of the account (RLIMIT_NPROC).
    pub max_processes: u64,
    pub max_open_files: u64,
}

impl Default for ReceiveLimits {
    fn default() -> Self {
        ReceiveLimits {
            io_timeout: 300,
            max_seconds: 6 * 3600,
            max_file_size: None,
            max_memory: 4 << 30,
            max_processes: 32,
            max_open_files: 1024,
        }
    }
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
            &self.as_account,
        ] {
            let text = p.to_string_lossy();
            if !p.is_absolute() || text.contains(['\t', '\n', ' ', '"', '\'']) {
                return Err(Error::invalid_input(format!(
                    "backup server configuration: {text:?} must be an absolute path without \
                     blanks or quotes"
                )));
            }
        }
        if self.history_dir.starts_with(&self.jails_dir)
            || self.jails_dir.starts_with(&self.history_dir)
        {
            return Err(Error::invalid_input(
                "backup server configuration: history and jails must not be inside each other",
            ));
        }
        Ok(())
    }
}

fn d_rsnapshot() -> String {
    "rsnapshot".into()
}
fn d_rsync() -> String {
    "rsync".into()
}
fn d_cp() -> String {
    "cp".into()
}
fn d_as_account() -> PathBuf {
    "/usr/local/lib/snap/snap-as-account".into()
}
fn d_lock_wait() -> u64 {
    300
}
fn d_sync_timeout() -> u64 {
    2 * 3600
}

impl ServerConfig {
    pub fn level_names(&self) -> Vec<&str> {
        self.levels.iter().map(|l| l.name.as_str()).collect()
    }

    /// The rsnapshot configuration (fields separated by tabs, as rsnapshot
    /// requires). rsnapshot only rotates: snap builds `.sync` itself, so
    /// rsnapshot's own rsync is `/bin/false` (`rsnapshot sync` by hand
    /// cannot copy a jail in place as root) and `link_dest 1` makes the
    /// lowest rotation a rename of `.sync`.
    pub fn rsnapshot_conf(&self) -> String {
        let mut lines = vec![
            "# Managed by Salt (snap). rsnapshot rotates the history snap builds from complete pushes."
                .to_string(),
            "config_version\t1.2".into(),
            format!("snapshot_root\t{}/", self.history_dir.display()),
            "no_create_root\t1".into(),
            "cmd_cp\t/bin/cp".into(),
            "cmd_rm\t/bin/rm".into(),
            "cmd_rsync\t/bin/false".into(),
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
            "link_dest\t1".into(),
            // rsnapshot insists on a backup point; snap never lets it sync one.
            format!("backup\t{}/\tunused/", self.jails_dir.display()),
            String::new(),
        ]);
        lines.join("\n")
    }

    pub fn jail(&self, account: &str) -> Jail {
        Jail::new(&self.jails_dir, account)
    }

    fn rsnapshot(&self) -> Command {
        let mut cmd = Command::new(&self.rsnapshot);
        cmd.arg("-c").arg(&self.rsnapshot_conf);
        cmd
    }

    fn copier(&self) -> Copier {
        Copier {
            rsync: self.rsync.clone(),
            cp: self.cp.clone(),
            as_account: self.as_account.clone(),
            io_timeout: self.limits.io_timeout,
            max_seconds: self.sync_timeout,
        }
    }

    /// The snapshot that is newest now (`<lowest>.0`).
    pub fn newest(&self) -> PathBuf {
        self.history_dir.join(format!("{}.0", self.levels[0].name))
    }
}

/// What rotation did with one server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerSync {
    pub account: String,
    /// `synced` (its newest complete push is the new snapshot), `unchanged`
    /// (no push since the last one: carried over), `kept` (its jail was
    /// busy or it never completed a push: the previous snapshot carried
    /// over), `refused` (not enough room for its new data: previous
    /// snapshot carried over), `failed` (the copy broke: previous snapshot
    /// carried over), `missing` (nothing to carry over).
    pub action: String,
    pub reason: Option<String>,
    /// The push now in history: its tree and the client's run id.
    pub seq: Option<u64>,
    pub run_id: Option<String>,
    pub pushed_finished: Option<String>,
    pub stats: Option<TreeStats>,
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
    /// `ok`, `partial` (rotated, but some servers were kept, refused or
    /// failed), `refused` (nothing rotated: no room), `failed`.
    pub result: String,
    pub error: Option<String>,
    pub servers: BTreeMap<String, ServerSync>,
    /// Free room on the history filesystem before and after.
    pub space_before: Option<sync::Space>,
    pub space_after: Option<sync::Space>,
}

/// What the backup server holds from each server, by minion id
/// (`received.json`: the newest push that went into history).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Received {
    pub run_id: String,
    #[serde(default)]
    pub seq: Option<u64>,
    pub pushed_started: Option<String>,
    pub pushed_finished: Option<String>,
    pub synced: String,
    #[serde(default)]
    pub stats: Option<TreeStats>,
}

fn load_received(path: &Path) -> BTreeMap<String, Received> {
    fs::read(path)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default()
}

/// Everything one lowest-level rotation needs while it builds `.sync`.
struct Builder<'a> {
    cfg: &'a ServerConfig,
    copier: Copier,
    ids: std::collections::HashMap<String, Ids>,
    sync: PathBuf,
    received: &'a BTreeMap<String, Received>,
    /// Set when not even a carried-over snapshot fits: nothing is rotated.
    abort: Option<String>,
}

impl Builder<'_> {
    fn previous(&self, minion_id: &str) -> Option<PathBuf> {
        let p = self.cfg.newest().join(minion_id);
        p.is_dir().then_some(p)
    }

    /// Carry `minion_id`'s previous snapshot over into `.sync`.
    fn carry_over(&mut self, minion_id: &str, out: &mut ServerSync) {
        let Some(prev) = self.previous(minion_id) else {
            if matches!(out.action.as_str(), "kept" | "unchanged") {
                out.action = "missing".into();
            } else {
                out.reason = Some(format!(
                    "{} (and it has no earlier snapshot to carry over)",
                    out.reason.as_deref().unwrap_or("")
                ));
            }
            return;
        };
        let dirs = self
            .received
            .get(minion_id)
            .and_then(|r| r.stats)
            .map_or(0, |s| s.dirs);
        let need = Need {
            bytes: dirs * 4096,
            inodes: dirs,
        };
        let space = sync::measure(&self.cfg.history_dir);
        if let Some(why) = space
            .ok()
            .and_then(|s| self.cfg.reserve.refuse(&s, need, false))
        {
            self.abort = Some(why);
            return;
        }
        let dest = self.sync.join(minion_id);
        match sync::link_copy(&self.copier, &prev, &dest) {
            Ok(stats) => out.stats = Some(stats),
            Err(e) => {
                let _ = sync::remove_tree(&dest);
                if e.kind() == ErrorKind::DiskFull {
                    self.abort = Some(e.to_string());
                } else {
                    out.action = "failed".into();
                    out.reason = Some(format!(
                        "{}; its previous snapshot could not be carried over: {e}",
                        out.reason.as_deref().unwrap_or("")
                    ));
                }
            }
        }
    }

    /// One server, its jail lock held.
    fn sync_one(&mut self, account: &str, minion_id: &str, out: &mut ServerSync) -> Result<()> {
        let jail = self.cfg.jail(account);
        let home = jail.open_home()?;
        let ids = *self.ids.get(account).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("account {account} does not exist on this backup server"),
            )
        })?;
        jail.check_incoming(&home, ids.uid)?;
        let info = jail.info(&home)?;
        let Some(seq) = info.current else {
            out.action = "kept".into();
            out.reason = Some("it has never completed a push".into());
            self.carry_over(minion_id, out);
            return Ok(());
        };
        out.seq = Some(seq);
        out.run_id = info.current_run.clone();
        out.pushed_finished = info.current_finished.map(|t| record::format_unix(t as i64));
        let last = self.received.get(minion_id).and_then(|r| r.seq);
        let previous = self.previous(minion_id);
        if last == Some(seq) && previous.is_some() {
            out.action = "unchanged".into();
            self.carry_over(minion_id, out);
            return Ok(());
        }
        // What the new data may cost: everything received since the last sync,
        // and a directory inode for every directory of the tree.
        let receipts = jail.receipts(&home);
        let pushes = pushes_between(&receipts, last, seq);
        let dirs = self
            .received
            .get(minion_id)
            .and_then(|r| r.stats)
            .map(|s| s.dirs);
        let files: u64 = pushes.iter().map(|r| r.files).sum();
        let need = Need {
            bytes: pushes.iter().map(|r| r.bytes).sum::<u64>() + dirs.unwrap_or(files) * 4096,
            inodes: files + dirs.unwrap_or(files),
        };
        let space = sync::measure(&self.cfg.history_dir)?;
        if let Some(why) = self.cfg.reserve.refuse(&space, need, true) {
            out.action = "refused".into();
            out.reason = Some(format!("its new push was not taken into history: {why}"));
            self.carry_over(minion_id, out);
            return Ok(());
        }
        let dest = self.sync.join(minion_id);
        match sync::pull(
            &self.copier,
            ids,
            &jail.incoming(),
            &jail.tree(seq),
            previous.as_deref(),
            &dest,
        ) {
            Ok(stats) => {
                out.action = "synced".into();
                out.stats = Some(stats);
            }
            Err(e) => {
                sync::remove_tree(&dest)?;
                out.action = "failed".into();
                out.reason = Some(format!(
                    "push {} (tree {seq}) was not taken into history: {e}",
                    out.run_id.as_deref().unwrap_or("?")
                ));
                self.carry_over(minion_id, out);
            }
        }
        Ok(())
    }
}

fn new_sync(account: &str) -> ServerSync {
    ServerSync {
        account: account.to_string(),
        action: "kept".into(),
        reason: None,
        seq: None,
        run_id: None,
        pushed_finished: None,
        stats: None,
        seconds: 0.0,
    }
}

/// What building `.sync` gave: every server and (if nothing may be rotated) why.
struct Built {
    servers: BTreeMap<String, ServerSync>,
    abort: Option<String>,
}

/// Build `.sync` for every server of the fleet.
fn build_sync(cfg: &ServerConfig, received: &BTreeMap<String, Received>) -> Result<Built> {
    let sync_dir = cfg.history_dir.join(".sync");
    sync::remove_tree(&sync_dir)?; // a stale one from a rotation that did not finish
    fs::create_dir(&sync_dir).map_err(|e| Error::io_path("creating", &sync_dir, e))?;
    let mut b = Builder {
        cfg,
        copier: cfg.copier(),
        ids: sync::account_ids(),
        sync: sync_dir,
        received,
        abort: None,
    };
    let mut servers = BTreeMap::new();
    let mut waiting: Vec<(&String, &String)> = cfg.accounts.iter().map(|(a, m)| (m, a)).collect();
    waiting.sort();
    let deadline = Instant::now() + Duration::from_secs(cfg.lock_wait);
    loop {
        let mut busy = Vec::new();
        for (minion_id, account) in waiting {
            if b.abort.is_some() {
                break;
            }
            let start = Instant::now();
            let mut out = new_sync(account);
            let jail = cfg.jail(account);
            match jail.lock(Duration::ZERO) {
                Ok(Some(_held)) => {
                    if let Err(e) = b.sync_one(account, minion_id, &mut out) {
                        out.action = "failed".into();
                        out.reason = Some(e.to_string());
                        b.carry_over(minion_id, &mut out);
                    }
                }
                Ok(None) => {
                    busy.push((minion_id, account));
                    continue;
                }
                Err(e) => {
                    out.action = "failed".into();
                    out.reason = Some(e.to_string());
                    b.carry_over(minion_id, &mut out);
                }
            }
            out.seconds = start.elapsed().as_secs_f64();
            servers.insert(minion_id.clone(), out);
        }
        if busy.is_empty() || b.abort.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            for (minion_id, account) in busy {
                let mut out = new_sync(account);
                out.reason = Some(format!(
                    "a push was still running after {}s: its previous snapshot is carried over",
                    cfg.lock_wait
                ));
                b.carry_over(minion_id, &mut out);
                servers.insert(minion_id.clone(), out);
            }
            break;
        }
        thread::sleep(Duration::from_millis(500));
        waiting = busy;
    }
    Ok(Built {
        servers,
        abort: b.abort,
    })
}

/// Rotate `level`. For the lowest level, first build the new snapshot of
/// every server (see the module). Writes `rotate-last.json`, `rotate.jsonl`
/// and (lowest level) `received.json` under `state_dir`.
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
        run_id: run_id.clone(),
        level: level.to_string(),
        started: record::now(),
        finished: String::new(),
        seconds: 0.0,
        result: "ok".into(),
        error: None,
        servers: BTreeMap::new(),
        space_before: sync::measure(&cfg.history_dir).ok(),
        space_after: None,
    };
    let received_path = cfg.state_dir.join("received.json");
    let lowest = level == cfg.levels[0].name;
    let mut rotate_now = true;
    let mut received = load_received(&received_path);
    if lowest {
        let Built { servers, abort } = build_sync(cfg, &received)?;
        rec.servers = servers;
        if rec
            .servers
            .values()
            .any(|s| s.action != "synced" && s.action != "unchanged")
        {
            rec.result = "partial".into();
        }
        let sync_dir = cfg.history_dir.join(".sync");
        if let Some(why) = abort {
            sync::remove_tree(&sync_dir)?;
            rec.result = "refused".into();
            rec.error = Some(format!("nothing was rotated, history is as it was: {why}"));
            rotate_now = false;
        } else if rec.servers.values().all(|s| s.stats.is_none()) {
            sync::remove_tree(&sync_dir)?;
            rotate_now = false; // nobody has pushed yet: no empty snapshot
        } else {
            write_snapshot_meta(&sync_dir, &run_id, &rec.servers)?;
        }
    }
    if rotate_now {
        let mut cmd = cfg.rsnapshot();
        cmd.arg(level);
        let res = proc::run(cmd, None, None)?;
        if res.code != 0 {
            rec.result = "failed".into();
            rec.error = Some(format!(
                "rsnapshot {level} failed (exit {}): {}",
                res.code,
                res.tail(3)
            ));
        } else if lowest {
            check_rotated(cfg, &mut rec)?;
            if rec.result != "failed" {
                let now = record::now();
                for (minion_id, s) in &rec.servers {
                    if s.action == "synced" {
                        received.insert(
                            minion_id.clone(),
                            Received {
                                run_id: s.run_id.clone().unwrap_or_default(),
                                seq: s.seq,
                                pushed_started: None,
                                pushed_finished: s.pushed_finished.clone(),
                                synced: now.clone(),
                                stats: s.stats,
                            },
                        );
                    }
                }
                record::write_json(&received_path, &received)?;
            }
        }
    }
    rec.space_after = sync::measure(&cfg.history_dir).ok();
    rec.finished = record::now();
    rec.seconds = clock.elapsed().as_secs_f64();
    record::write_json(&cfg.state_dir.join("rotate-last.json"), &rec)?;
    record::append_jsonl(&cfg.state_dir.join("rotate.jsonl"), &rec)?;
    Ok(rec)
}

/// `.sync/.snapshot.json`: when this snapshot was made and what it holds
/// (minion ids never start with a dot, so it cannot meet a server's name).
fn write_snapshot_meta(
    sync_dir: &Path,
    run_id: &str,
    servers: &BTreeMap<String, ServerSync>,
) -> Result<()> {
    let held: BTreeMap<&String, serde_json::Value> = servers
        .iter()
        .filter(|(_, s)| s.action != "missing")
        .map(|(id, s)| {
            (
                id,
                serde_json::json!({"action": s.action, "seq": s.seq, "run_id": s.run_id,
                                   "pushed_finished": s.pushed_finished}),
            )
        })
        .collect();
    let meta = serde_json::json!({"time": record::now(), "rotation": run_id, "servers": held});
    record::write_atomic(
        &sync_dir.join(".snapshot.json"),
        format!("{meta:#}\n").as_bytes(),
        0o600,
    )
}

/// After the lowest rotation: `.sync` is gone and `<lowest>.0` holds every
/// server that was put into it.
fn check_rotated(cfg: &ServerConfig, rec: &mut RotateRecord) -> Result<()> {
    let newest = cfg.newest();
    let mut missing: Vec<&str> = rec
        .servers
        .iter()
        .filter(|(_, s)| s.action != "missing" && s.stats.is_some())
        .filter(|(id, _)| !newest.join(id.as_str()).is_dir())
        .map(|(id, _)| id.as_str())
        .collect();
    if cfg.history_dir.join(".sync").exists() {
        missing.push(".sync still present");
    }
    if !missing.is_empty() {
        rec.result = "failed".into();
        rec.error = Some(format!(
            "after rotation {} lacks: {}",
            newest.display(),
            missing.join(", ")
        ));
    }
    Ok(())
}
