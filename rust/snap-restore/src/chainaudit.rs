//! The audit of incremental chains: every link's manifest and every piece
//! it needs, read back the way the archive run reads them (by version id),
//! and no key written twice.
//!
//! A link is only worth its lock if each piece it needs stays locked as long:
//! the manifest records, per piece, the retain-until the link relies on, and
//! the audit wants at least that (and at least the policy's days from upload).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use snap_archive::chain::CHAIN_MANIFEST_SUFFIX;
use snap_core::Result;
use snap_offsite::{ArchiveTarget, VersionEntry};

use crate::audit::{AuditPolicy, AuditRow};
use crate::chain::parse_manifest;
use crate::list::{get_small_first, overwritten, rfc3339, versions_or_current};

/// What the chains under a prefix add to an audit.
pub struct ChainAudit {
    pub rows: Vec<AuditRow>,
    pub problems: Vec<String>,
    /// The newest link: when its manifest first landed, and its key.
    pub newest: Option<(SystemTime, String)>,
}

/// One object, at the version recorded for it, locked until `wanted`.
fn check_object(
    target: &dyn ArchiveTarget,
    r: &mut AuditRow,
    versions: &[&VersionEntry],
    version_id: Option<&str>,
    wanted_at_least: Option<SystemTime>,
    policy: &AuditPolicy,
    now: SystemTime,
) {
    r.problems.extend(overwritten(&r.key, versions));
    let first = versions.iter().find(|v| !v.delete_marker);
    let Some(first) = first else {
        r.problems
            .push("missing off-site: the link needs it".to_string());
        return;
    };
    if let (Some(want), Some(got)) = (version_id, first.version_id.as_deref())
        && want != got
    {
        r.problems.push(format!(
            "the manifest names version {want}, but the first version off-site is {got}"
        ));
    }
    let made = first.last_modified.unwrap_or(now);
    r.created = Some(rfc3339(made));
    r.storage_class = first.storage_class.clone();
    let by_policy = made + Duration::from_secs(u64::from(policy.min_retain_days) * 86400);
    let wanted = wanted_at_least.map_or(by_policy, |w| w.max(by_policy));
    r.read_lock_back(
        target,
        version_id.or(first.version_id.as_deref()),
        made,
        wanted,
        now,
        || format!("the link needs it locked until {}", rfc3339(wanted)),
    );
}

/// Audit every chain link under `prefix`.
pub fn audit_chains(
    target: &dyn ArchiveTarget,
    prefix: &str,
    policy: &AuditPolicy,
    now: SystemTime,
) -> Result<ChainAudit> {
    let (entries, _) = versions_or_current(target, prefix, false)?;
    let mut by_key: BTreeMap<&str, Vec<&VersionEntry>> = BTreeMap::new();
    for e in &entries {
        by_key.entry(e.key.as_str()).or_default().push(e);
    }
    let mut out = ChainAudit {
        rows: Vec::new(),
        problems: Vec::new(),
        newest: None,
    };
    let mut seen = BTreeSet::new();
    let links: Vec<&str> = by_key
        .keys()
        .copied()
        .filter(|k| k.ends_with(CHAIN_MANIFEST_SUFFIX))
        .collect();
    for key in links {
        let versions = &by_key[key];
        let mut mrow = AuditRow::new(key);
        check_object(target, &mut mrow, versions, None, None, policy, now);
        if let Some(first) = versions.iter().find(|v| !v.delete_marker)
            && let Some(t) = first.last_modified
            && out.newest.as_ref().is_none_or(|(n, _)| t > *n)
        {
            out.newest = Some((t, key.to_string()));
        }
        let manifest = get_small_first(target, key).and_then(|b| parse_manifest(&b, key));
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => {
                mrow.problems.push(format!("unreadable: {e}"));
                out.rows.push(mrow);
                continue;
            }
        };
        out.rows.push(mrow);
        for piece in &manifest.pieces {
            if !seen.insert((piece.key.clone(), piece.version_id.clone())) {
                continue; // a data piece every later link of the chain names too
            }
            let mut prow = AuditRow::new(&piece.key);
            let wanted = piece
                .retain_until_unix
                .map(|s| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64));
            let none = Vec::new();
            let pversions = by_key.get(piece.key.as_str()).unwrap_or(&none);
            check_object(
                target,
                &mut prow,
                pversions,
                piece.version_id.as_deref(),
                wanted,
                policy,
                now,
            );
            if let Some(v) = pversions.iter().find(|v| !v.delete_marker)
                && v.size != piece.size
            {
                prow.problems.push(format!(
                    "{} bytes off-site, the link's manifest says {}",
                    v.size, piece.size
                ));
            }
            out.rows.push(prow);
        }
    }
    for r in &out.rows {
        for p in &r.problems {
            out.problems.push(format!("{}: {p}", r.key));
        }
    }
    Ok(out)
}
