//! The off-site audit: every archive (and its manifest) and every chain
//! link's pieces, locked long enough, read back the way the archive run
//! reads them; the newest restore point recent enough. Part of the proof
//! that restores work (see [`crate::proof`]).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use snap_core::Result;
use snap_offsite::ArchiveTarget;

use crate::list::rfc3339;

/// What the audit requires of every archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPolicy {
    pub min_retain_days: u32,
    pub lock_mode: String,
    /// The newest archive may be at most this old (the archive interval
    /// plus slack: twice a month → 16 days).
    pub max_age_days: f64,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        AuditPolicy {
            min_retain_days: snap_offsite::MIN_RETAIN_DAYS,
            lock_mode: "COMPLIANCE".into(),
            max_age_days: 16.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRow {
    pub key: String,
    pub created: Option<String>,
    pub storage_class: Option<String>,
    pub lock_mode: Option<String>,
    pub retain_until: Option<String>,
    /// Days between upload and the end of retention.
    pub retained_days: Option<f64>,
    /// Days of retention left now.
    pub days_left: Option<f64>,
    pub problems: Vec<String>,
}

impl AuditRow {
    /// A row for `key`, nothing read yet.
    pub fn new(key: &str) -> Self {
        AuditRow {
            key: key.to_string(),
            created: None,
            storage_class: None,
            lock_mode: None,
            retain_until: None,
            retained_days: None,
            days_left: None,
            problems: Vec::new(),
        }
    }

    /// Read the lock of this row's object at `version` back (the same
    /// judgement the archive run applies) and note what it says: mode,
    /// retain-until, days left and retained, and a problem (ending in
    /// `why()`) unless COMPLIANCE holds until `wanted`.
    pub(crate) fn read_lock_back(
        &mut self,
        target: &dyn ArchiveTarget,
        version: Option<&str>,
        made: SystemTime,
        wanted: SystemTime,
        now: SystemTime,
        why: impl FnOnce() -> String,
    ) {
        match snap_offsite::read_lock(target, &self.key, version, wanted) {
            Ok(check) => {
                self.lock_mode = check.now.mode.clone();
                self.retain_until = check.now.retain_until.map(rfc3339);
                if let Some(until) = check.now.retain_until {
                    self.days_left = Some(signed_days(until, now));
                    self.retained_days = Some(signed_days(until, made));
                }
                if !check.is_locked() {
                    self.problems.push(format!("{} ({})", check.detail, why()));
                }
            }
            Err(e) => self
                .problems
                .push(format!("its lock could not be read back: {e}")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditReport {
    pub checked_at: String,
    pub prefix: String,
    pub policy: AuditPolicy,
    pub archives: Vec<AuditRow>,
    pub newest: Option<String>,
    pub newest_age_days: Option<f64>,
    pub problems: Vec<String>,
    pub ok: bool,
}

fn days(d: Duration) -> f64 {
    d.as_secs_f64() / 86400.0
}

pub(crate) fn signed_days(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => days(d),
        Err(e) => -days(e.duration()),
    }
}

/// Audit every archive (and its manifest) under `prefix`: HEAD for its
/// age, and its lock read back with `snap_offsite::read_lock` (the same
/// judgement the archive run applies), at the version its manifest recorded.
pub fn audit(
    target: &dyn ArchiveTarget,
    prefix: &str,
    policy: &AuditPolicy,
    now: SystemTime,
) -> Result<AuditReport> {
    let listing = crate::list::list_archives(target, prefix, false)?;
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    if let Some(note) = listing.iter().find_map(|l| l.unchecked.clone()) {
        problems.push(format!("{prefix}: {note}"));
    }
    let mut newest: Option<(SystemTime, String)> = None;
    // Chain links are audited below (every piece each needs), once.
    for l in listing.iter().filter(|l| l.chain.is_none()) {
        for key in [&l.key, &l.manifest_key] {
            let mut row = AuditRow::new(key);
            if key == &l.key
                && let Some(e) = &l.error
            {
                row.problems.push(format!("manifest: {e}"));
            }
            match target.head(key) {
                Ok(info) => {
                    row.storage_class = Some(info.storage_class_name());
                    row.created = info.last_modified.map(rfc3339);
                    let made = info.last_modified.unwrap_or(now);
                    // The version the manifest recorded, read back the same
                    // way the archive run read it (GetObjectRetention).
                    // The manifest at the version that was read (its first).
                    let version = if key == &l.key {
                        l.version_id.clone()
                    } else {
                        l.manifest_version_id.clone().or(info.version_id.clone())
                    };
                    let wanted =
                        made + Duration::from_secs(u64::from(policy.min_retain_days) * 86400);
                    row.read_lock_back(target, version.as_deref(), made, wanted, now, || {
                        format!(
                            "policy: {} for at least {} days from upload",
                            policy.lock_mode, policy.min_retain_days
                        )
                    });
                    if key == &l.key
                        && let Some(made) = info.last_modified
                        && newest.as_ref().is_none_or(|(t, _)| made > *t)
                    {
                        newest = Some((made, key.clone()));
                    }
                }
                Err(e) => row.problems.push(e.to_string()),
            }
            for p in &row.problems {
                problems.push(format!("{}: {p}", row.key));
            }
            rows.push(row);
        }
    }
    // Chain links: every piece a link needs, locked as long as it needs it.
    let chains = crate::chainaudit::audit_chains(target, prefix, policy, now)?;
    if let Some((t, k)) = chains.newest
        && newest.as_ref().is_none_or(|(n, _)| t > *n)
    {
        newest = Some((t, k));
    }
    rows.extend(chains.rows);
    problems.extend(chains.problems);
    let newest_age = newest.as_ref().map(|(t, _)| signed_days(now, *t));
    match newest_age {
        None => problems.push(format!("no archive under {prefix:?}")),
        Some(age) if age > policy.max_age_days => problems.push(format!(
            "the newest archive is {age:.1} days old, more than the {} days allowed",
            policy.max_age_days
        )),
        _ => {}
    }
    Ok(AuditReport {
        checked_at: rfc3339(now),
        prefix: prefix.to_string(),
        policy: policy.clone(),
        archives: rows,
        newest: newest.map(|(_, k)| k),
        newest_age_days: newest_age,
        ok: problems.is_empty(),
        problems,
    })
}
