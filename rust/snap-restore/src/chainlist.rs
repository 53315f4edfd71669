//! Links of incremental chains in a listing: one row per link manifest
//! (`*.chain.json`, what `restore --archive` takes), from its first version,
//! with every piece it needs checked against the listing (there, written
//! once, at the version the manifest names).

use std::collections::BTreeMap;

use serde::Serialize;
use snap_offsite::{ArchiveTarget, VersionEntry};

use crate::list::{
    ArchiveListing, created_problem, other_version, overwritten, read_first, rfc3339,
};

/// What a listing says of one link of a chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainListing {
    pub id: String,
    pub link: u32,
    pub base_created: String,
    /// Pieces the link needs (its own and every earlier link's data).
    pub pieces: usize,
    /// Encrypted bytes this link uploaded itself (its manifest aside).
    pub link_bytes: u64,
    /// The share of the image's data that history no longer holds.
    pub dead_ratio: f64,
    /// Until when every piece the link needs is locked (by the manifest).
    pub restorable_until: Option<String>,
}

/// One link of a chain, from its manifest (first version) and the listing:
/// every piece it needs must be there, written once, at the version named.
pub(crate) fn chain_row(
    target: &dyn ArchiveTarget,
    mkey: &str,
    versions: &[&VersionEntry],
    by_key: &BTreeMap<&str, Vec<&VersionEntry>>,
    head: bool,
) -> ArchiveListing {
    let mfirst = versions.iter().find(|e| !e.delete_marker);
    let mut row = ArchiveListing {
        key: mkey.to_string(),
        version_id: mfirst.and_then(|v| v.version_id.clone()),
        manifest_key: mkey.to_string(),
        manifest_version_id: mfirst.and_then(|v| v.version_id.clone()),
        landed: mfirst.and_then(|v| v.last_modified).map(rfc3339),
        ..ArchiveListing::default()
    };
    let mut tampered: Vec<String> = overwritten(mkey, versions).into_iter().collect();
    let read = read_first(target, mkey, versions).and_then(|buf| {
        crate::chain::parse_manifest(&buf, mkey).and_then(|m| crate::chain::keyed(m, mkey))
    });
    match read {
        Ok(m) => {
            row.created = Some(m.created.clone());
            row.error = created_problem(&m.created, mfirst.and_then(|v| v.last_modified));
            row.backup_server = Some(m.backup_server.clone());
            row.servers = m.servers.clone();
            row.snapshots = m.snapshots.iter().map(|s| s.name.clone()).collect();
            for snapshot in &m.snapshots {
                for server in &snapshot.servers {
                    *row.server_snapshots.entry(server.clone()).or_default() += 1;
                }
            }
            row.size = Some(m.pieces.iter().map(|p| p.size).sum());
            row.plaintext_size = Some(m.image.size);
            row.recipients = m.recipients.iter().map(|r| r.fingerprint.clone()).collect();
            let own: Vec<_> = m.pieces.iter().filter(|p| p.link == m.chain.link).collect();
            row.storage_class = own.first().map(|p| p.storage_class.clone());
            row.lock_mode = own.first().and_then(|p| p.lock_mode.clone());
            row.retain_until = m.chain.restorable_until.clone();
            let mut missing = Vec::new();
            for p in &m.pieces {
                let pv = by_key.get(p.key.as_str()).map_or(&[][..], |v| v.as_slice());
                tampered.extend(overwritten(&p.key, pv));
                match pv.iter().find(|v| !v.delete_marker) {
                    None => missing.push(p.key.clone()),
                    Some(v) => {
                        if let (Some(named), Some(real)) = (&p.version_id, &v.version_id)
                            && named != real
                        {
                            tampered.push(other_version(named, &p.key, real));
                        }
                    }
                }
            }
            if !missing.is_empty() && row.error.is_none() {
                row.error = Some(format!(
                    "{} of the {} pieces this link needs are missing off-site: {}",
                    missing.len(),
                    m.pieces.len(),
                    missing.join(", ")
                ));
            }
            row.chain = Some(ChainListing {
                id: m.chain.id.clone(),
                link: m.chain.link,
                base_created: m.chain.base_created.clone(),
                pieces: m.pieces.len(),
                link_bytes: own.iter().map(|p| p.size).sum(),
                dead_ratio: m.image.dead_ratio,
                restorable_until: m.chain.restorable_until.clone(),
            });
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    if head {
        // The manifest's lock is the link's: until it ends, the link restores.
        match target.head(mkey) {
            Ok(info) => {
                row.lock_mode = info.lock_mode.clone();
                row.retain_until = info.retain_until.map(rfc3339);
            }
            Err(e) if row.error.is_none() => row.error = Some(e.to_string()),
            Err(_) => {}
        }
    }
    row.mark_tampered(&tampered);
    row
}
