//! What the backup server itself knows about each server: its receipts
//! (written by `snap-receive` for every transfer, outside the reach of the
//! client), whether a push is being received now (the jail's lock), and what
//! went into history. Also the Prometheus textfile-collector metrics.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::jail::{InProgress, Receipt};
use crate::rotate::{Received, ServerConfig};
use crate::status::Observed;

/// A push received completely.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct GoodPush {
    pub run_id: String,
    pub started: f64,
    pub finished: f64,
    pub files: u64,
    pub bytes: u64,
}

/// A push that did not arrive completely.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct FailedPush {
    pub at: f64,
    pub reason: String,
}

/// The backup server's view of one server.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ServerView {
    pub account: String,
    pub last_good: Option<GoodPush>,
    pub last_failed: Option<FailedPush>,
    pub running_since: Option<f64>,
    pub transfers: u64,
    pub in_history: Option<Received>,
    /// Why the jail could not be read (it is not as snap made it).
    #[serde(default)]
    pub problem: Option<String>,
}

impl ServerView {
    pub fn observed(&self) -> Observed {
        Observed {
            last_good: self.last_good.as_ref().map(|g| g.started),
            last_failed: self.last_failed.as_ref().map(|f| f.at),
            failure: self.last_failed.as_ref().map(|f| f.reason.clone()),
            running_since: self.running_since,
        }
    }
}

/// Turn a server's receipts into pushes. What counts is the data transfer
/// as root saw it end (exit 0: complete); the client's state file only
/// labels a push with its run id. `in_progress` is the data transfer
/// `jail.json` says started and did not end; `running_now`, whether the
/// jail's lock is held.
pub fn summarize(
    receipts: &[Receipt],
    in_progress: Option<&InProgress>,
    running_now: bool,
) -> (Option<GoodPush>, Option<FailedPush>, Option<f64>) {
    let mut good: Option<GoodPush> = None;
    let mut failed: Option<FailedPush> = None;
    let mut opened: Option<f64> = None; // a state transfer that began a push
    for r in receipts {
        if r.dest == "." {
            if r.exit != 0 {
                failed = Some(FailedPush {
                    at: r.started,
                    reason: format!(
                        "a state transfer failed on the backup server (rsync exit {})",
                        r.exit
                    ),
                });
            } else if r.state.as_deref() == Some("running") {
                opened = Some(r.started);
            }
        } else if r.dest == "data" {
            if r.complete() {
                good = Some(GoodPush {
                    run_id: r.run_id.clone().unwrap_or_default(),
                    started: opened
                        .take()
                        .filter(|t| *t <= r.started)
                        .unwrap_or(r.started),
                    finished: r.finished,
                    files: r.files,
                    bytes: r.bytes,
                });
            } else {
                let why = r
                    .stopped
                    .clone()
                    .unwrap_or_else(|| format!("rsync exit {}", r.exit));
                failed = Some(FailedPush {
                    at: r.started,
                    reason: format!("the data transfer did not complete ({why})"),
                });
            }
        }
    }
    let running_since = match (in_progress, running_now) {
        (_, false) => None,
        (Some(p), true) => Some(p.started),
        (None, true) => Some(opened.unwrap_or_else(|| receipts.last().map_or(0.0, |r| r.finished))),
    };
    if let (Some(p), false) = (in_progress, running_now) {
        failed = Some(FailedPush {
            at: p.started,
            reason: format!(
                "the data transfer into tree {} started and never ended",
                p.seq
            ),
        });
    }
    // A failure before the last good push is history, not news.
    if let (Some(g), Some(f)) = (&good, &failed)
        && f.at < g.started
    {
        failed = None;
    }
    (good, failed, running_since)
}

/// What went into history from each server (`received.json`); empty when
/// there is none or it cannot be read (the view then says "not in history").
fn received(cfg: &ServerConfig) -> BTreeMap<String, Received> {
    fs::read(cfg.state_dir.join("received.json"))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default()
}

/// What history holds of servers that have no account here any more (moved
/// to another backup server, or gone from the fleet), by minion id: the
/// newest push of each that went into history. Those snapshots stay until
/// rotation ages them out; fleet-wide status says where they live.
pub fn history_without_account(cfg: &ServerConfig) -> BTreeMap<String, Received> {
    let current: std::collections::BTreeSet<&String> = cfg.accounts.values().collect();
    received(cfg)
        .into_iter()
        .filter(|(minion_id, _)| !current.contains(minion_id))
        .collect()
}

/// The view of every server of `cfg`, by minion id.
pub fn backup_server_view(cfg: &ServerConfig) -> Result<BTreeMap<String, ServerView>> {
    let received = received(cfg);
    let mut out = BTreeMap::new();
    for (account, minion_id) in &cfg.accounts {
        let jail = cfg.jail(account);
        let mut view = ServerView {
            account: account.clone(),
            in_history: received.get(minion_id).cloned(),
            ..Default::default()
        };
        let read = (|| -> Result<()> {
            let home = jail.open_home()?;
            let running_now = jail.lock(Duration::ZERO)?.is_none();
            let info = jail.info(&home)?;
            let receipts = jail.receipts(&home);
            let (g, f, r) = summarize(&receipts, info.in_progress.as_ref(), running_now);
            (view.last_good, view.last_failed, view.running_since) = (g, f, r);
            view.transfers = receipts.len() as u64;
            Ok(())
        })();
        if let Err(e) = read
            && e.kind() != crate::error::ErrorKind::NotFound
        {
            view.problem = Some(e.to_string());
        }
        out.insert(minion_id.clone(), view);
    }
    Ok(out)
}

fn labels(server: &str) -> String {
    format!("{{server=\"{}\"}}", server.replace(['\\', '"', '\n'], "_"))
}

fn unix(text: &str) -> Option<f64> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second() as f64)
}

/// Prometheus textfile-collector metrics from the view and the latest
/// archive and drill records (JSON values as written under `state_dir`).
pub fn metrics_text(
    view: &BTreeMap<String, ServerView>,
    archive: Option<&serde_json::Value>,
    drill: Option<&serde_json::Value>,
    now: f64,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (l, v) in rows {
            out.push_str(&format!("{name}{l} {v}\n"));
        }
    };
    let per = |f: &dyn Fn(&ServerView) -> Option<f64>| -> Vec<(String, f64)> {
        view.iter()
            .filter_map(|(id, v)| f(v).map(|x| (labels(id), x)))
            .collect()
    };
    metric(
        "snap_push_last_success_timestamp_seconds",
        "Start of the last push the backup server received completely.",
        per(&|v| v.last_good.as_ref().map(|g| g.started)),
    );
    metric(
        "snap_push_last_success_duration_seconds",
        "Duration of the last complete push.",
        per(&|v| v.last_good.as_ref().map(|g| g.finished - g.started)),
    );
    metric(
        "snap_push_last_success_bytes",
        "Bytes the last complete push transferred.",
        per(&|v| v.last_good.as_ref().map(|g| g.bytes as f64)),
    );
    metric(
        "snap_push_last_success_files",
        "Files the last complete push transferred.",
        per(&|v| v.last_good.as_ref().map(|g| g.files as f64)),
    );
    metric(
        "snap_push_failing",
        "1 if the latest push attempt after the last success failed.",
        per(&|v| Some(if v.last_failed.is_some() { 1.0 } else { 0.0 })),
    );
    metric(
        "snap_push_running",
        "1 while a push is being received.",
        per(&|v| Some(if v.running_since.is_some() { 1.0 } else { 0.0 })),
    );
    let ok_archive = archive.filter(|a| a["result"] == "ok");
    let finished = ok_archive
        .and_then(|a| a["finished"].as_str())
        .and_then(unix);
    metric(
        "snap_archive_last_success_timestamp_seconds",
        "End of the last successful off-site archive.",
        finished.map(|t| (String::new(), t)).into_iter().collect(),
    );
    metric(
        "snap_archive_age_seconds",
        "Seconds since the last successful off-site archive.",
        finished
            .map(|t| (String::new(), now - t))
            .into_iter()
            .collect(),
    );
    let obj = ok_archive.map(|a| &a["manifest"]["archive"]);
    metric(
        "snap_archive_last_size_bytes",
        "Size of the last archive uploaded.",
        obj.and_then(|o| o["size"].as_f64())
            .map(|v| (String::new(), v))
            .into_iter()
            .collect(),
    );
    metric(
        "snap_archive_retain_until_timestamp_seconds",
        "Object Lock retain-until of the last archive.",
        obj.and_then(|o| o["retain_until"].as_str())
            .and_then(unix)
            .map(|v| (String::new(), v))
            .into_iter()
            .collect(),
    );
    metric(
        "snap_archive_last_failed",
        "1 if the latest archive run failed.",
        archive
            .map(|a| (String::new(), if a["result"] == "ok" { 0.0 } else { 1.0 }))
            .into_iter()
            .collect(),
    );
    metric(
        "snap_drill_last_success",
        "1 if the latest restore drill matched history, 0 if it did not.",
        drill
            .map(|d| (String::new(), if d["result"] == "ok" { 1.0 } else { 0.0 }))
            .into_iter()
            .collect(),
    );
    metric(
        "snap_drill_last_timestamp_seconds",
        "When the latest restore drill finished.",
        drill
            .and_then(|d| d["finished"].as_str())
            .and_then(unix)
            .map(|t| (String::new(), t))
            .into_iter()
            .collect(),
    );
    out
}

/// Write the metrics of backup server `cfg` to `path` (atomically), from its
/// view and the latest archive (`archive-last.json`) and drill
/// (`verify-last.json`) records under `state_dir`. Returns the text.
pub fn write_metrics(cfg: &ServerConfig, path: &Path, now: f64) -> Result<String> {
    let view = backup_server_view(cfg)?;
    let archive = read_record(&cfg.state_dir.join("archive-last.json"))?;
    let drill = read_record(&cfg.state_dir.join("verify-last.json"))?;
    let text = metrics_text(&view, archive.as_ref(), drill.as_ref(), now);
    if let Some(dir) = path.parent() {
        crate::record::ensure_dir(dir, 0o755)?;
    }
    crate::record::write_atomic(path, text.as_bytes(), 0o644)?;
    Ok(text)
}

/// Read a JSON record if it exists.
pub fn read_record(path: &Path) -> Result<Option<serde_json::Value>> {
    match fs::read(path) {
        Ok(t) => serde_json::from_slice(&t).map(Some).map_err(|e| {
            Error::invalid_input(format!("{} is not a snap record: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io_path("reading", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(started: f64, dest: &str, exit: i32, state: Option<&str>, run: &str) -> Receipt {
        Receipt {
            started,
            finished: started + 1.0,
            dest: dest.into(),
            exit,
            files: 3,
            bytes: 100,
            seq: (dest == "data").then_some(started as u64),
            run_id: Some(run.to_string()),
            state: state.map(Into::into),
            stopped: None,
        }
    }

    fn push(t: f64, run: &str) -> Vec<Receipt> {
        vec![
            r(t, ".", 0, Some("running"), run),
            r(t + 1.0, "data", 0, None, run),
            r(t + 5.0, ".", 0, Some("done"), run),
        ]
    }

    #[test]
    fn complete_pushes_are_good() {
        let (g, f, run) = summarize(&push(100.0, "a"), None, false);
        let g = g.unwrap();
        assert_eq!(
            (g.run_id.as_str(), g.started, g.files, g.bytes),
            ("a", 100.0, 3, 100)
        );
        assert!(f.is_none() && run.is_none());
    }

    #[test]
    fn broken_and_interrupted_pushes_are_failures() {
        let mut all = push(100.0, "a");
        all.push(r(200.0, ".", 0, Some("running"), "b"));
        all.push(r(201.0, "data", 23, None, "b"));
        let (g, f, _) = summarize(&all, None, false);
        assert_eq!(g.unwrap().run_id, "a");
        assert!(f.unwrap().reason.contains("rsync exit 23"));
        // Killed mid-transfer: jail.json says a transfer started, nobody holds the jail.
        let p = InProgress {
            seq: 7,
            started: 300.0,
        };
        let (_, f, run) = summarize(&push(100.0, "a"), Some(&p), false);
        assert!(f.unwrap().reason.contains("never ended") && run.is_none());
        // The same while the jail is locked: it is running.
        let (_, f, run) = summarize(&push(100.0, "a"), Some(&p), true);
        assert!(f.is_none());
        assert_eq!(run, Some(300.0));
        // A client claiming done without data is not believed.
        let lie = vec![
            r(10.0, ".", 0, Some("running"), "x"),
            r(11.0, ".", 0, Some("done"), "x"),
        ];
        let (g, _, _) = summarize(&lie, None, false);
        assert!(g.is_none());
    }

    #[test]
    fn an_old_failure_is_forgotten_after_success() {
        let mut all = vec![
            r(50.0, ".", 0, Some("running"), "z"),
            r(51.0, "data", 12, None, "z"),
        ];
        all.extend(push(100.0, "a"));
        let (g, f, _) = summarize(&all, None, false);
        assert!(g.is_some() && f.is_none());
    }

    #[test]
    fn metrics_are_textfile_format() {
        let mut view = BTreeMap::new();
        let (g, _, _) = summarize(&push(100.0, "a"), None, false);
        view.insert(
            "web1".to_string(),
            ServerView {
                account: "snap-web1".into(),
                last_good: g,
                ..Default::default()
            },
        );
        let archive = serde_json::json!({"result": "ok", "finished": "2026-11-22T00:00:00Z",
            "manifest": {"archive": {"size": 42, "retain_until": "2027-03-01T00:00:00Z"}}});
        let text = metrics_text(&view, Some(&archive), None, 1_800_000_000.0);
        assert!(
            text.contains("snap_push_last_success_timestamp_seconds{server=\"web1\"} 100\n"),
            "{text}"
        );
        assert!(text.contains("snap_archive_last_size_bytes 42\n"));
        assert!(text.contains("# TYPE snap_archive_age_seconds gauge\n"));
        assert!(
            !text.contains("\nsnap_drill_last_success "),
            "no drill, no sample"
        );
    }
}
