//! Status a hostile backup server cannot fake: three sources, no single
//! machine controlling more than one of them.
//!
//! * **own**: what each server says it pushed (its own `push.jsonl`, asked
//!   directly by the master or read from the Salt mine: the backup server can
//!   write neither);
//! * **received**: what the backup server says it received (its receipts) and
//!   archived (its archive record);
//! * **off-site**: what the off-site store holds, listed with a read-only
//!   identity from the master or the drill minion. The time an archive landed
//!   is the store's own (`LastModified`); manifests are locked once written.
//!
//! Any disagreement is a [`Finding`]; the status turns the server (or the
//! archive row) it concerns into `SUSPECT`. Missing sources are not findings:
//! they only narrow what could be compared (listed in [`CrossCheck::compared`]).
//! Times from different machines are compared with `skew_seconds` of slack.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::record::format_unix;

/// One push as the server itself recorded it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct OwnPush {
    pub run_id: String,
    /// Unix seconds (the server's clock).
    pub started: f64,
    pub finished: f64,
    /// `ok`, `partial`, `failed`, `skipped`.
    pub result: String,
}

impl OwnPush {
    /// Sent completely: the backup server must hold a receipt of it.
    fn complete(&self) -> bool {
        matches!(self.result.as_str(), "ok" | "partial")
    }
}

/// The backup server's newest complete receipt of one server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Received {
    pub run_id: String,
    /// Unix seconds (the backup server's clock).
    pub started: f64,
}

/// What is known of one server.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ServerSources {
    /// The server's own records, oldest first; None: neither it nor the mine told.
    #[serde(default)]
    pub own: Option<Vec<OwnPush>>,
    /// None: the backup server knows no complete push.
    #[serde(default)]
    pub received: Option<Received>,
}

/// The backup server's record of its last archive run.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ArchiveClaim {
    /// `ok` or `failed`.
    pub result: String,
    pub key: Option<String>,
    /// Unix seconds.
    pub finished: f64,
}

/// One archive as the off-site store lists it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct OffsiteArchive {
    pub key: String,
    /// When the store says the archive object landed (unix seconds).
    pub landed: Option<f64>,
    /// When its manifest says the run began (unix seconds).
    #[serde(default)]
    pub created: Option<f64>,
    /// Server -> how many snapshots of the archive hold it.
    #[serde(default)]
    pub servers: BTreeMap<String, u32>,
    /// Set when the listing found it broken (object missing, size differs...).
    #[serde(default)]
    pub error: Option<String>,
    /// Set when a key snap wrote once was written again off-site.
    #[serde(default)]
    pub tampered: Option<String>,
    /// Set when the reader could not list versions: overwrites unseen.
    #[serde(default)]
    pub unchecked: Option<String>,
}

impl OffsiteArchive {
    /// The earliest the run can have begun, by the store's clock if the
    /// manifest claims later.
    fn began(&self) -> Option<f64> {
        match (self.created, self.landed) {
            (Some(c), Some(l)) => Some(c.min(l)),
            (c, l) => c.or(l),
        }
    }
}

/// Everything the three sources told.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Sources {
    pub now: f64,
    #[serde(default = "default_skew")]
    pub skew_seconds: f64,
    #[serde(default)]
    pub servers: BTreeMap<String, ServerSources>,
    /// The backup server's last archive record; None: it has none.
    #[serde(default)]
    pub archive: Option<ArchiveClaim>,
    /// The off-site listing, oldest first; None: not read.
    #[serde(default)]
    pub offsite: Option<Vec<OffsiteArchive>>,
}

fn default_skew() -> f64 {
    600.0
}

/// How long after its archive object landed (for a multipart upload, when
/// the upload began) an archive run may finish: the upload itself.
const ARCHIVE_RUN_SLACK_SECONDS: f64 = 2.0 * 86400.0;

/// One disagreement.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Finding {
    /// The server concerned; None: the archive.
    pub server: Option<String>,
    /// Which sources disagree: `server`, `backup server`, `off-site`.
    pub sources: Vec<String>,
    pub message: String,
}

/// The result: findings, and which comparisons the sources allowed.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct CrossCheck {
    pub findings: Vec<Finding>,
    pub compared: Vec<String>,
}

fn at(t: f64) -> String {
    format_unix(t.floor() as i64)
}

fn finding(server: Option<&str>, sources: &[&str], message: String) -> Finding {
    Finding {
        server: server.map(str::to_string),
        sources: sources.iter().map(|s| s.to_string()).collect(),
        message,
    }
}

/// Own records against the backup server's receipts.
fn own_vs_received(name: &str, s: &ServerSources, src: &Sources, out: &mut Vec<Finding>) {
    let Some(own) = s.own.as_deref() else { return };
    let skew = src.skew_seconds;
    if let Some(r) = &s.received {
        let mine = own.iter().find(|p| p.run_id == r.run_id);
        // A real run id with a time of the backup server's choosing would
        // make a server that stopped pushing look current.
        if let Some(p) = mine
            && (r.started < p.started - skew || r.started > p.finished + skew)
        {
            out.push(finding(
                Some(name),
                &["server", "backup server"],
                format!(
                    "the backup server's receipt of push {} says it started {}; {name}'s own record \
                     has that push from {} to {}",
                    r.run_id,
                    at(r.started),
                    at(p.started),
                    at(p.finished)
                ),
            ));
        }
        let known = mine.is_some();
        let covered = own.first().is_some_and(|p| p.started <= r.started + skew);
        if !known && covered && r.started < src.now - skew {
            out.push(finding(
                Some(name),
                &["server", "backup server"],
                format!(
                    "the backup server's receipts show a complete push {} started {} that {name} never made \
                     (its own records since {} hold no such run)",
                    r.run_id,
                    at(r.started),
                    at(own[0].started)
                ),
            ));
        }
    }
    let Some(last) = own.iter().rev().find(|p| p.complete()) else {
        return;
    };
    if last.finished >= src.now - skew {
        return; // just finished: the receipt may be a moment away
    }
    let behind = match &s.received {
        None => Some("none".to_string()),
        Some(r) if r.run_id != last.run_id && r.started < last.started - skew => {
            Some(format!("{} of {}", r.run_id, at(r.started)))
        }
        Some(_) => None,
    };
    if let Some(newest) = behind {
        out.push(finding(
            Some(name),
            &["server", "backup server"],
            format!(
                "{name} completed push {} started {}; the backup server's newest complete receipt is {newest}",
                last.run_id,
                at(last.started)
            ),
        ));
    }
}

/// Own records and the off-site history against each other.
fn against_offsite(
    name: &str,
    s: &ServerSources,
    valid: &[&OffsiteArchive],
    skew: f64,
    out: &mut Vec<Finding>,
) {
    let Some(newest) = valid.last() else { return };
    let held = newest.servers.get(name).copied().unwrap_or(0);
    if let (Some(own), Some(began)) = (s.own.as_deref(), newest.began()) {
        let before = own
            .iter()
            .rev()
            .find(|p| p.complete() && p.finished + skew < began);
        if let (Some(p), 0) = (before, held) {
            out.push(finding(
                Some(name),
                &["server", "off-site"],
                format!(
                    "{name} completed push {} at {}, before archive {} began; that archive holds no history of {name}",
                    p.run_id,
                    at(p.finished),
                    newest.key
                ),
            ));
        }
    }
    if let [.., previous, _] = valid {
        let had = previous.servers.get(name).copied().unwrap_or(0);
        // Rotation keeps the count steady once history is full; losing more
        // than one snapshot between two archives is not rotation.
        if held + 1 < had {
            out.push(finding(
                Some(name),
                &["off-site"],
                format!(
                    "the history of {name} shrank from {had} snapshots in archive {} to {held} in {}: \
                     history the backup server should keep is gone",
                    previous.key, newest.key
                ),
            ));
        }
    }
}

/// The backup server's archive record against the off-site listing.
fn archive_vs_offsite(
    claim: Option<&ArchiveClaim>,
    listing: &[OffsiteArchive],
    valid: &[&OffsiteArchive],
    skew: f64,
    out: &mut Vec<Finding>,
) {
    let newest = valid.last();
    let newest_text = newest.map_or("nothing".to_string(), |a| {
        format!(
            "{} landed {}",
            a.key,
            a.landed.map_or("at an unknown time".into(), at)
        )
    });
    match claim {
        Some(c) if c.result == "ok" => {
            let key = c.key.as_deref().unwrap_or("");
            match listing.iter().find(|a| a.key == key) {
                None => out.push(finding(
                    None,
                    &["backup server", "off-site"],
                    format!(
                        "the backup server says archive {key} finished {}; off-site holds no such archive (newest there: {newest_text})",
                        at(c.finished)
                    ),
                )),
                Some(a) if a.error.is_some() => out.push(finding(
                    None,
                    &["backup server", "off-site"],
                    format!(
                        "the backup server says archive {key} finished {}; off-site: {}",
                        at(c.finished),
                        a.error.as_deref().unwrap_or("")
                    ),
                )),
                Some(a) => {
                    // The record is written once the upload is done: an old
                    // archive's key with a fresh time hides that archiving stopped.
                    if let Some(landed) = a.landed
                        && (c.finished + skew < landed
                            || c.finished > landed + skew + ARCHIVE_RUN_SLACK_SECONDS)
                    {
                        out.push(finding(
                            None,
                            &["backup server", "off-site"],
                            format!(
                                "the backup server says archive {key} finished {}; off-site it landed {}",
                                at(c.finished),
                                at(landed)
                            ),
                        ));
                    }
                }
            }
            let newer =
                newest.filter(|n| n.key != key && n.landed.is_some_and(|l| l > c.finished + skew));
            if newer.is_some() {
                out.push(finding(
                    None,
                    &["backup server", "off-site"],
                    format!(
                        "off-site holds archive {newest_text}, newer than the last archive the backup server \
                         reports ({key}, {}): its record was lost or rewritten",
                        at(c.finished)
                    ),
                ));
            }
        }
        Some(_) => {} // the last run failed: objects may have landed all the same
        None => {
            if let Some(n) = newest {
                out.push(finding(
                    None,
                    &["backup server", "off-site"],
                    format!(
                        "off-site holds archive {} but the backup server has no archive record at all",
                        n.key
                    ),
                ));
            }
        }
    }
}

/// Compare the sources; every disagreement is a finding.
pub fn crosscheck(src: &Sources) -> CrossCheck {
    let mut out = Vec::new();
    let mut compared = BTreeSet::new();
    let valid: Vec<&OffsiteArchive> = match &src.offsite {
        Some(list) => {
            let mut v: Vec<&OffsiteArchive> = list.iter().filter(|a| a.error.is_none()).collect();
            v.sort_by(|a, b| a.landed.unwrap_or(0.0).total_cmp(&b.landed.unwrap_or(0.0)));
            v
        }
        None => Vec::new(),
    };
    for (name, s) in &src.servers {
        if s.own.is_some() {
            compared.insert("server/backup server");
        }
        own_vs_received(name, s, src, &mut out);
        if src.offsite.is_some() {
            compared.insert("off-site history");
            if s.own.is_some() {
                compared.insert("server/off-site");
            }
            against_offsite(name, s, &valid, src.skew_seconds, &mut out);
        }
    }
    if let Some(listing) = &src.offsite {
        compared.insert("backup server/off-site");
        // Only the backup identity can put objects: an overwrite is its work,
        // whatever its own record says.
        if let Some(note) = listing.iter().find_map(|a| a.unchecked.as_deref()) {
            out.push(finding(None, &["off-site"], format!("off-site: {note}")));
        }
        for a in listing {
            if let Some(t) = &a.tampered {
                out.push(finding(
                    None,
                    &["off-site"],
                    format!("archive {} was written again off-site: {t}", a.key),
                ));
            }
        }
        archive_vs_offsite(
            src.archive.as_ref(),
            listing,
            &valid,
            src.skew_seconds,
            &mut out,
        );
    }
    CrossCheck {
        findings: out,
        compared: compared.into_iter().map(str::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: f64 = 86400.0;
    const NOW: f64 = 1_800_000_000.0;

    fn push(run: &str, started: f64, result: &str) -> OwnPush {
        OwnPush {
            run_id: run.into(),
            started,
            finished: started + 60.0,
            result: result.into(),
        }
    }

    fn archive(key: &str, landed: f64, servers: &[(&str, u32)]) -> OffsiteArchive {
        OffsiteArchive {
            key: key.into(),
            landed: Some(landed),
            created: Some(landed - 300.0),
            servers: servers.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            error: None,
            tampered: None,
            unchecked: None,
        }
    }

    /// web1 pushed twice, the backup server received both, archived after the second.
    fn honest() -> Sources {
        let own = vec![
            push("r1", NOW - 2.0 * DAY, "ok"),
            push("r2", NOW - DAY, "ok"),
        ];
        Sources {
            now: NOW,
            skew_seconds: 600.0,
            servers: BTreeMap::from([(
                "web1".to_string(),
                ServerSources {
                    own: Some(own),
                    received: Some(Received {
                        run_id: "r2".into(),
                        started: NOW - DAY + 5.0,
                    }),
                },
            )]),
            archive: Some(ArchiveClaim {
                result: "ok".into(),
                key: Some("a2".into()),
                finished: NOW - DAY + 3600.0,
            }),
            offsite: Some(vec![
                archive("a1", NOW - 2.0 * DAY + 3600.0, &[("web1", 2)]),
                archive("a2", NOW - DAY + 3590.0, &[("web1", 3)]),
            ]),
        }
    }

    fn messages(src: &Sources) -> Vec<String> {
        crosscheck(src)
            .findings
            .into_iter()
            .map(|f| f.message)
            .collect()
    }

    #[test]
    fn three_honest_sources_agree() {
        let c = crosscheck(&honest());
        assert_eq!(c.findings, vec![]);
        assert_eq!(
            c.compared,
            vec![
                "backup server/off-site",
                "off-site history",
                "server/backup server",
                "server/off-site"
            ]
        );
    }

    #[test]
    fn receipts_of_a_push_the_server_never_made() {
        let mut s = honest();
        s.servers.get_mut("web1").unwrap().received = Some(Received {
            run_id: "forged".into(),
            started: NOW - 3600.0,
        });
        let m = messages(&s);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("complete push forged") && m[0].contains("never made"));
    }

    #[test]
    fn a_push_the_backup_server_does_not_admit() {
        let mut s = honest();
        s.servers.get_mut("web1").unwrap().received = Some(Received {
            run_id: "r1".into(),
            started: NOW - 2.0 * DAY,
        });
        let m = messages(&s);
        assert!(
            m[0].contains("completed push r2") && m[0].contains("r1 of"),
            "{m:?}"
        );
        s.servers.get_mut("web1").unwrap().received = None;
        assert!(messages(&s)[0].contains("newest complete receipt is none"));
        // A push that finished a moment ago is not judged yet.
        let w = s.servers.get_mut("web1").unwrap();
        w.own = Some(vec![push("r3", NOW - 100.0, "ok")]);
        s.offsite = None;
        assert_eq!(messages(&s), Vec::<String>::new());
    }

    #[test]
    fn an_archive_the_store_does_not_hold() {
        let mut s = honest();
        s.archive = Some(ArchiveClaim {
            result: "ok".into(),
            key: Some("a3".into()),
            finished: NOW - 600.0,
        });
        let m = messages(&s);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("archive a3") && m[0].contains("no such archive (newest there: a2"));
        // Broken there: named with the store's answer.
        let mut s = honest();
        s.offsite.as_mut().unwrap()[1].error = Some("the archive object a2 is missing".into());
        assert!(messages(&s).iter().any(|m| m.contains("a2 is missing")));
        // A record wiped or rewritten to an older run.
        let mut s = honest();
        s.archive = None;
        assert!(messages(&s)[0].contains("no archive record at all"));
        let mut s = honest();
        s.archive = Some(ArchiveClaim {
            result: "ok".into(),
            key: Some("a1".into()),
            finished: NOW - 2.0 * DAY + 3600.0,
        });
        assert!(messages(&s)[0].contains("newer than the last archive"));
    }

    #[test]
    fn an_old_archive_written_again_is_suspect_whatever_the_record_says() {
        // On a server that ignores If-None-Match, the backup identity put a
        // second version of a1 (the honest record names a2).
        let mut s = honest();
        let a1 = &mut s.offsite.as_mut().unwrap()[0];
        a1.tampered = Some("TAMPERING: a1 has 2 versions".into());
        a1.error = a1.tampered.clone();
        let r = crosscheck(&s);
        let m: Vec<&str> = r.findings.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("archive a1 was written again off-site"),
            "{m:?}"
        );
        assert_eq!(r.findings[0].server, None, "the archive row, not a server");
    }

    #[test]
    fn a_real_run_id_with_a_fresh_time() {
        // web1 stopped pushing after r2; the backup server answers with r2's
        // id and a time of its choosing, so web1 would read as current.
        let mut s = honest();
        s.servers.get_mut("web1").unwrap().received = Some(Received {
            run_id: "r2".into(),
            started: NOW - 1800.0,
        });
        let m = messages(&s);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("receipt of push r2 says it started") && m[0].contains("own record"),
            "{m:?}"
        );
        // Within the clock slack of the server's own times: agreement.
        s.servers.get_mut("web1").unwrap().received = Some(Received {
            run_id: "r2".into(),
            started: NOW - DAY - 300.0,
        });
        assert_eq!(messages(&s), Vec::<String>::new());
    }

    #[test]
    fn an_old_archive_with_a_fresh_finish_time() {
        // Archiving stopped after a2, 60 days ago; the record replays a2's
        // key as finished a minute ago.
        let mut s = honest();
        s.now += 60.0 * DAY;
        s.archive.as_mut().unwrap().finished = s.now - 60.0;
        let m = messages(&s);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("archive a2 finished") && m[0].contains("off-site it landed"));
        // No finish time at all reads as the epoch: before it landed.
        s.archive.as_mut().unwrap().finished = 0.0;
        assert!(messages(&s)[0].contains("off-site it landed"));
        // A long upload (the object's time is when it began) is not a finding.
        let mut s = honest();
        s.offsite.as_mut().unwrap()[1].landed = Some(NOW - 2.0 * DAY + 7200.0);
        s.archive.as_mut().unwrap().finished = NOW - 600.0;
        assert_eq!(messages(&s), Vec::<String>::new());
    }

    #[test]
    fn a_status_pillar_with_some_thresholds_keeps_the_other_defaults() {
        let t: crate::status::Thresholds = serde_json::from_str(r#"{"timezone": "UTC"}"#).unwrap();
        assert_eq!((t.grace_seconds, t.missing_after), (7200, 2));
    }

    #[test]
    fn wiped_history_shows_off_site() {
        // The backup server wiped web1's history, kept answering OK, and the
        // next archive holds one snapshot where the one before held three.
        let mut s = honest();
        let list = s.offsite.as_mut().unwrap();
        list.push(archive("a3", NOW - 600.0, &[("web1", 1)]));
        s.archive.as_mut().unwrap().key = Some("a3".into());
        s.archive.as_mut().unwrap().finished = NOW - 600.0;
        let m = messages(&s);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("shrank from 3 snapshots in archive a2 to 1 in a3"));
        // Or none at all, though web1 pushed before that archive began.
        s.offsite.as_mut().unwrap()[2].servers.clear();
        let m = messages(&s);
        assert!(
            m.iter().any(|m| m.contains("holds no history of web1")),
            "{m:?}"
        );
    }

    #[test]
    fn missing_sources_narrow_the_comparison_without_findings() {
        let mut s = honest();
        s.offsite = None;
        s.servers.get_mut("web1").unwrap().own = None;
        let c = crosscheck(&s);
        assert_eq!(c.findings, vec![]);
        assert!(c.compared.is_empty());
        let parsed: Sources = serde_json::from_str(r#"{"now": 1.0}"#).unwrap();
        assert_eq!(parsed.skew_seconds, 600.0);
    }
}
