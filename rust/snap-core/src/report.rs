//! What the backup server itself knows about each server: its receipts
//! (written by `snap-receive` for every transfer, outside the reach of the
//! client), whether a push is being received now (the jail's lock), and what
//! went into history. Also the Prometheus textfile-collector metrics.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lock;
use crate::rotate::{Received, ServerConfig};
use crate::status::Observed;

/// One transfer as `snap-receive` recorded it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Receipt {
    pub started: f64,
    pub finished: f64,
    /// `.` (the state file) or `data`.
    pub dest: String,
    pub exit: i32,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub bytes: u64,
    /// For the state file: what it says after the transfer.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub run_id: Option<String>,
}

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

/// Read a receipts file (both generations), oldest first; unreadable lines skipped.
pub fn read_receipts(jail_home: &Path) -> Vec<Receipt> {
    let mut out = Vec::new();
    for name in ["receipts.jsonl.1", "receipts.jsonl"] {
        if let Ok(f) = fs::File::open(jail_home.join(name)) {
            for line in BufReader::new(f).lines().map_while(|l| l.ok()) {
                if let Ok(r) = serde_json::from_str::<Receipt>(&line) {
                    out.push(r);
                }
            }
        }
    }
    out.sort_by(|a, b| a.started.total_cmp(&b.started));
    out
}

/// Turn a server's receipts into pushes: `running` state, data, `done` state.
pub fn summarize(
    receipts: &[Receipt],
    running_now: bool,
) -> (Option<GoodPush>, Option<FailedPush>, Option<f64>) {
    let mut good: Option<GoodPush> = None;
    let mut failed: Option<FailedPush> = None;
    let mut open: Option<(String, f64)> = None; // run id and start of a push in progress
    let mut data: Option<&Receipt> = None;
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
                continue;
            }
            match r.state.as_deref() {
                Some("running") => {
                    if let Some((run, start)) = open.take() {
                        failed = Some(FailedPush {
                            at: start,
                            reason: format!("push {run} never completed"),
                        });
                    }
                    open = Some((r.run_id.clone().unwrap_or_default(), r.started));
                    data = None;
                }
                Some("done") => {
                    let run = r.run_id.clone().unwrap_or_default();
                    match (&open, data) {
                        (Some((open_run, start)), Some(d)) if *open_run == run && d.exit == 0 => {
                            good = Some(GoodPush {
                                run_id: run,
                                started: *start,
                                finished: r.finished,
                                files: d.files,
                                bytes: d.bytes,
                            });
                        }
                        _ => {
                            failed = Some(FailedPush {
                                at: r.started,
                                reason: format!(
                                    "push {run} said done without a complete data transfer"
                                ),
                            });
                        }
                    }
                    open = None;
                    data = None;
                }
                _ => {}
            }
        } else if r.dest == "data" {
            if r.exit != 0 {
                failed = Some(FailedPush {
                    at: r.started,
                    reason: format!("the data transfer broke off (rsync exit {})", r.exit),
                });
            }
            data = Some(r);
        }
    }
    let running_since = match (&open, running_now) {
        (Some((_, start)), true) => Some(*start),
        (Some((run, start)), false) => {
            if failed.as_ref().is_none_or(|f| f.at < *start) {
                failed = Some(FailedPush {
                    at: *start,
                    reason: format!("push {run} never completed"),
                });
            }
            None
        }
        (None, _) => None,
    };
    // A failure before the last good push is history, not news.
    if let (Some(g), Some(f)) = (&good, &failed)
        && f.at < g.started
    {
        failed = None;
    }
    (good, failed, running_since)
}

/// The view of every server of `cfg`, by minion id.
pub fn backup_server_view(cfg: &ServerConfig) -> Result<BTreeMap<String, ServerView>> {
    let received: BTreeMap<String, Received> = fs::read(cfg.state_dir.join("received.json"))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for (account, minion_id) in &cfg.accounts {
        let home = cfg.jails_dir.join(account);
        let incoming = home.join("incoming");
        let running_now = incoming.is_dir() && lock::lock_dir(&incoming, Duration::ZERO)?.is_none();
        let receipts = read_receipts(&home);
        let (last_good, last_failed, running_since) = summarize(&receipts, running_now);
        out.insert(
            minion_id.clone(),
            ServerView {
                account: account.clone(),
                last_good,
                last_failed,
                running_since,
                transfers: receipts.len() as u64,
                in_history: received.get(minion_id).cloned(),
            },
        );
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
            state: state.map(Into::into),
            run_id: state.map(|_| run.to_string()),
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
        let (g, f, run) = summarize(&push(100.0, "a"), false);
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
        all.push(r(201.0, "data", 12, None, "b"));
        let (g, f, _) = summarize(&all, false);
        assert_eq!(g.unwrap().run_id, "a");
        assert!(f.unwrap().reason.contains("broke off"));
        // Killed before data arrived: still "running" but nobody holds the jail.
        let mut killed = push(100.0, "a");
        killed.push(r(300.0, ".", 0, Some("running"), "c"));
        let (_, f, run) = summarize(&killed, false);
        assert!(f.unwrap().reason.contains("c never completed") && run.is_none());
        // The same while the jail is locked: it is running.
        let (_, f, run) = summarize(&killed, true);
        assert!(f.is_none());
        assert_eq!(run, Some(300.0));
        // A client claiming done without data is not believed.
        let lie = vec![
            r(10.0, ".", 0, Some("running"), "x"),
            r(11.0, ".", 0, Some("done"), "x"),
        ];
        let (g, f, _) = summarize(&lie, false);
        assert!(
            g.is_none()
                && f.unwrap()
                    .reason
                    .contains("without a complete data transfer")
        );
    }

    #[test]
    fn an_old_failure_is_forgotten_after_success() {
        let mut all = vec![
            r(50.0, ".", 0, Some("running"), "z"),
            r(51.0, "data", 12, None, "z"),
        ];
        all.extend(push(100.0, "a"));
        let (g, f, _) = summarize(&all, false);
        assert!(g.is_some() && f.is_none());
    }

    #[test]
    fn metrics_are_textfile_format() {
        let mut view = BTreeMap::new();
        let (g, _, _) = summarize(&push(100.0, "a"), false);
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
