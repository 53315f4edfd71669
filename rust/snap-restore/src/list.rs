//! Archives as their manifests describe them, with what off-site says now
//! (storage class, lock, retrieval state).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use snap_archive::{ARCHIVE_SUFFIX, MANIFEST_SUFFIX, Manifest};
use snap_core::{Error, ErrorKind, Progress, Result};
use snap_offsite::ArchiveTarget;

/// Parse a manifest, naming where it came from.
pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Integrity,
            format!("manifest {what} is not a snap manifest: {e}"),
        )
    })?;
    if m.format != snap_archive::MANIFEST_FORMAT {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "manifest {what} has format {:?}; this snap reads {:?}",
                m.format,
                snap_archive::MANIFEST_FORMAT
            ),
        ));
    }
    Ok(m)
}

pub fn read_manifest_file(path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).map_err(|e| Error::io_path("reading", path, e))?;
    parse_manifest(&bytes, &path.display().to_string())
}

/// The manifest key for an archive key or a manifest key.
pub fn manifest_key(key: &str) -> String {
    if key.ends_with(MANIFEST_SUFFIX) {
        key.to_string()
    } else {
        format!("{key}{MANIFEST_SUFFIX}")
    }
}

/// The most a manifest may hold. A real one is a few KiB per snapshot;
/// anyone who can put objects can name one `*.manifest.json` in any size.
pub const MANIFEST_MAX_BYTES: usize = 16 << 20;

/// A buffer that refuses to grow past `max` bytes.
struct Capped {
    buf: Vec<u8>,
    max: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            return Err(std::io::Error::other(format!(
                "more than {} bytes, more than a manifest ever holds: not read further",
                self.max
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Read a manifest-sized object whole, never more than [`MANIFEST_MAX_BYTES`].
pub fn get_small(target: &dyn ArchiveTarget, key: &str) -> Result<Vec<u8>> {
    let mut out = Capped {
        buf: Vec::new(),
        max: MANIFEST_MAX_BYTES,
    };
    target.get(key, 0, &mut out, &Progress::silent("manifest"))?;
    Ok(out.buf)
}

/// Read one manifest (give the archive key or the manifest key).
pub fn load_manifest(target: &dyn ArchiveTarget, key: &str) -> Result<Manifest> {
    let mkey = manifest_key(key);
    let buf =
        get_small(target, &mkey).map_err(|e| e.context(format!("reading the manifest {mkey}")))?;
    let m = parse_manifest(&buf, &mkey)?;
    let expected = mkey.trim_end_matches(MANIFEST_SUFFIX);
    if m.archive.key != expected {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "manifest {mkey} describes {}, not {expected}",
                m.archive.key
            ),
        ));
    }
    Ok(m)
}

/// One archive in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveListing {
    pub key: String,
    /// The archive's version id as its manifest recorded it.
    pub version_id: Option<String>,
    pub manifest_key: String,
    pub created: Option<String>,
    pub backup_server: Option<String>,
    pub servers: Vec<String>,
    pub snapshots: Vec<String>,
    /// How many snapshots hold each server (from the manifest).
    pub server_snapshots: BTreeMap<String, u32>,
    /// When the store says the archive object landed (its LastModified: the
    /// store's clock, not the backup server's).
    pub landed: Option<String>,
    pub size: Option<u64>,
    pub plaintext_size: Option<u64>,
    pub recipients: Vec<String>,
    /// From HEAD now (None if not asked or not known).
    pub storage_class: Option<String>,
    pub lock_mode: Option<String>,
    pub retain_until: Option<String>,
    /// immediate | not-requested | in-progress | ready
    pub retrieval: Option<String>,
    pub retrieval_expires: Option<String>,
    /// What went wrong reading this one (the rest of the listing stands).
    pub error: Option<String>,
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    snap_core::record::format_unix(
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

/// Every archive under `prefix` that has a manifest, oldest first. With
/// `head`, each archive is also looked up (storage class, lock, retrieval).
pub fn list_archives(
    target: &dyn ArchiveTarget,
    prefix: &str,
    head: bool,
) -> Result<Vec<ArchiveListing>> {
    let objects = target.list(prefix)?;
    let landed: BTreeMap<&str, SystemTime> = objects
        .iter()
        .filter_map(|o| o.last_modified.map(|t| (o.key.as_str(), t)))
        .collect();
    let mut out = Vec::new();
    for obj in objects.iter().filter(|o| o.key.ends_with(MANIFEST_SUFFIX)) {
        let akey = obj.key.trim_end_matches(MANIFEST_SUFFIX).to_string();
        let mut row = ArchiveListing {
            key: akey.clone(),
            version_id: None,
            manifest_key: obj.key.clone(),
            created: None,
            backup_server: None,
            servers: Vec::new(),
            snapshots: Vec::new(),
            server_snapshots: BTreeMap::new(),
            landed: landed.get(akey.as_str()).copied().map(rfc3339),
            size: None,
            plaintext_size: None,
            recipients: Vec::new(),
            storage_class: None,
            lock_mode: None,
            retain_until: None,
            retrieval: None,
            retrieval_expires: None,
            error: None,
        };
        match load_manifest(target, &obj.key) {
            Ok(m) => {
                row.created = Some(m.created.clone());
                row.version_id = m.archive.version_id.clone();
                row.backup_server = Some(m.backup_server.clone());
                row.servers = m.servers.clone();
                row.snapshots = m.snapshots.iter().map(|s| s.name.clone()).collect();
                for snapshot in &m.snapshots {
                    for server in &snapshot.servers {
                        *row.server_snapshots.entry(server.clone()).or_default() += 1;
                    }
                }
                row.size = Some(m.archive.size);
                row.plaintext_size = Some(m.plaintext.size);
                row.recipients = m.recipients.iter().map(|r| r.fingerprint.clone()).collect();
                row.storage_class = Some(m.archive.storage_class.clone());
                row.lock_mode = m.archive.lock_mode.clone();
                row.retain_until = m.archive.retain_until.clone();
            }
            Err(e) => row.error = Some(e.to_string()),
        }
        if head {
            match target.head(&akey) {
                Ok(info) => {
                    row.storage_class = Some(info.storage_class_name());
                    row.lock_mode = info.lock_mode.clone();
                    row.retain_until = info.retain_until.map(rfc3339);
                    row.retrieval = Some(info.retrieval.name().to_string());
                    if let snap_offsite::RetrievalStatus::Ready { expires: Some(t) } =
                        info.retrieval
                    {
                        row.retrieval_expires = Some(rfc3339(t));
                    }
                    if row.size.is_some_and(|s| s != info.size) && row.error.is_none() {
                        row.error = Some(format!(
                            "the archive object is {} bytes, its manifest says {}",
                            info.size,
                            row.size.unwrap_or(0)
                        ));
                    }
                }
                Err(e) if row.error.is_none() => {
                    row.error = Some(if e.kind() == ErrorKind::NotFound {
                        format!("the archive object {akey} is missing: {e}")
                    } else {
                        e.to_string()
                    });
                }
                Err(_) => {}
            }
        }
        out.push(row);
    }
    // Keys carry the UTC time of the run; sort by creation, then key.
    out.sort_by(|a, b| (a.created.as_deref(), &a.key).cmp(&(b.created.as_deref(), &b.key)));
    Ok(out)
}

/// The newest archive under `prefix` whose manifest reads.
pub fn newest(target: &dyn ArchiveTarget, prefix: &str) -> Result<Manifest> {
    let rows = list_archives(target, prefix, false)?;
    let row = rows
        .iter()
        .rev()
        .find(|r| r.error.is_none())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no archive with a readable manifest under {prefix:?}"),
            )
        })?;
    load_manifest(target, &row.manifest_key)
}

/// Is `key` an archive key snap writes?
pub fn is_archive_key(key: &str) -> bool {
    key.ends_with(ARCHIVE_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_manifest_sized_read_stops_at_its_cap() {
        let mut out = Capped {
            buf: Vec::new(),
            max: 8,
        };
        out.write_all(b"12345678").unwrap();
        let err = out.write_all(b"9").unwrap_err();
        assert!(err.to_string().contains("more than 8 bytes"), "{err}");
        assert_eq!(out.buf.len(), 8, "nothing kept past the cap");
    }
}
