//! What an archive holds and what a run did: the manifest uploaded next to
//! each archive, the run's record, and the inventory of a history root.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use snap_core::{Error, ErrorKind, Result};
use snap_offsite::{LockCheck, LockStatus};

/// What one snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotEntry {
    /// `recent.0`, `daily.3`, ... (`.sync`: pushes not yet rotated).
    pub name: String,
    pub servers: Vec<String>,
    /// Modification time of the snapshot directory (unix seconds).
    pub mtime: i64,
}

/// The manifest uploaded next to each archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub tool_version: String,
    pub created: String,
    pub backup_server: String,
    pub archive: ArchiveObject,
    pub plaintext: Plaintext,
    pub recipients: Vec<RecipientInfo>,
    pub servers: Vec<String>,
    pub snapshots: Vec<SnapshotEntry>,
    pub history_root: String,
    /// Everything held under lock off-site and its monthly cost (this
    /// manifest aside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<crate::cost::StorageCost>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveObject {
    pub target: String,
    pub key: String,
    pub version_id: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub tree_hash: Option<String>,
    pub storage_class: String,
    pub lock_mode: Option<String>,
    pub retain_until: Option<String>,
    pub parts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plaintext {
    pub format: String,
    pub size: u64,
    pub sha256: String,
    pub compressor: String,
    pub level: Option<u32>,
    pub block_size: u32,
    pub files: u64,
    pub inodes: u64,
    pub hardlinks: u64,
    pub data_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipientInfo {
    pub fingerprint: String,
    pub key_id: String,
    pub algorithm: String,
    pub user_ids: Vec<String>,
}

/// One stage's timing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub bytes: u64,
    pub seconds: f64,
}

/// What a run did (kept as `archive-last.json` and in `archive.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveRecord {
    pub run_id: String,
    pub started: String,
    pub finished: String,
    pub seconds: f64,
    /// `ok` or `failed`.
    pub result: String,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub manifest_key: Option<String>,
    pub manifest: Option<Manifest>,
    /// Incomplete uploads of earlier runs aborted first.
    pub aborted_stale: Vec<String>,
    /// Work directories (images) of killed runs removed first.
    pub removed_stale_work: Vec<String>,
    pub stages: Vec<StageTime>,
    /// Every object's lock as read back after it was complete (archive,
    /// manifest): held, or repaired where the server had dropped it.
    #[serde(default)]
    pub locks: Vec<LockRecord>,
    /// A chain run: the link's manifest.
    #[serde(default)]
    pub chain: Option<crate::chain::ChainManifest>,
    /// Everything held under lock off-site after the run, and its cost.
    #[serde(default)]
    pub storage: Option<crate::cost::StorageCost>,
}

/// One object's lock, read back (see `snap_offsite::lockcheck`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockRecord {
    pub key: String,
    pub version_id: Option<String>,
    /// `held` (stored as asked) or `repaired` (snap set it, then read it back).
    pub status: String,
    /// What the server held when first asked, e.g. `no lock`.
    pub found: String,
    /// What it holds now: `COMPLIANCE until ...`.
    pub now: String,
    pub detail: String,
}

impl From<&LockCheck> for LockRecord {
    fn from(c: &LockCheck) -> Self {
        LockRecord {
            key: c.key.clone(),
            version_id: c.version_id.clone(),
            status: match c.status {
                LockStatus::Held => "held",
                LockStatus::Repaired => "repaired",
                LockStatus::Missing => "missing",
            }
            .into(),
            found: c.found.describe(),
            now: c.now.describe(),
            detail: c.detail.clone(),
        }
    }
}

/// The snapshots and servers in a history root (only `servers` if given).
pub fn inventory(history: &Path, servers: Option<&[String]>) -> Result<Vec<SnapshotEntry>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let entries =
        fs::read_dir(history).map_err(|e| Error::io_path("reading history", history, e))?;
    let mut names: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let dir = history.join(&name);
        let mut inside: Vec<String> = fs::read_dir(&dir)
            .map_err(|e| Error::io_path("reading snapshot", &dir, e))?
            .filter_map(|e| e.ok())
            // Servers are directories; rotation's `.snapshot.json` (and any
            // other file) beside them is not a server.
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|s| !s.starts_with('.'))
            .filter(|s| servers.is_none_or(|only| only.contains(s)))
            .collect();
        inside.sort();
        seen.extend(inside.iter().cloned());
        let mtime = fs::metadata(&dir)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        out.push(SnapshotEntry {
            name: name.to_string_lossy().into_owned(),
            servers: inside,
            mtime,
        });
    }
    if let Some(only) = servers {
        let missing: Vec<&String> = only.iter().filter(|s| !seen.contains(*s)).collect();
        if !missing.is_empty() {
            return Err(Error::invalid_input(format!(
                "servers {missing:?} have no snapshot in {}",
                history.display()
            )));
        }
    }
    if out.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "history {} holds no snapshot yet: nothing to archive",
                history.display()
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_lists_snapshots_and_servers() {
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path().join("history");
        for p in [
            "recent.0/web1",
            "recent.0/db1",
            "recent.1/web1",
            ".sync/web1",
        ] {
            fs::create_dir_all(h.join(p)).unwrap();
        }
        // What rotation writes beside the servers is not a server.
        fs::write(h.join("recent.0/.snapshot.json"), "{}").unwrap();
        let all = inventory(&h, None).unwrap();
        assert_eq!(
            all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec![".sync", "recent.0", "recent.1"]
        );
        assert_eq!(all[1].servers, vec!["db1", "web1"]);
        let only = inventory(&h, Some(&["db1".to_string()])).unwrap();
        assert_eq!(only[1].servers, vec!["db1"]);
        assert!(only[2].servers.is_empty());
        let e = inventory(&h, Some(&["mail1".to_string()])).unwrap_err();
        assert!(e.to_string().contains("mail1"));
        fs::remove_dir_all(&h).unwrap();
        fs::create_dir(&h).unwrap();
        assert_eq!(inventory(&h, None).unwrap_err().kind(), ErrorKind::NotFound);
    }
}
