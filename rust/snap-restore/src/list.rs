//! Archives as their manifests describe them, with what off-site says now
//! (storage class, lock, retrieval state).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use snap_archive::chain::CHAIN_MANIFEST_SUFFIX;
use snap_archive::{ARCHIVE_SUFFIX, MANIFEST_SUFFIX, Manifest};
use snap_core::{Error, ErrorKind, Progress, Result};
use snap_offsite::{ArchiveTarget, VersionEntry};

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

/// Read one version of a manifest-sized object (None: the only one).
fn get_small_at(target: &dyn ArchiveTarget, key: &str, version: Option<&str>) -> Result<Vec<u8>> {
    let Some(v) = version else {
        return get_small(target, key);
    };
    let mut out = Capped {
        buf: Vec::new(),
        max: MANIFEST_MAX_BYTES,
    };
    target.get_version(key, v, 0, &mut out, &Progress::silent("manifest"))?;
    Ok(out.buf)
}

/// The versions of one key, oldest first, from a listing of its prefix.
pub fn versions_of(target: &dyn ArchiveTarget, key: &str) -> Result<Vec<VersionEntry>> {
    Ok(versions_or_current(target, key, true)?.0)
}

/// The versions under `prefix` (or of the key `prefix` with `only_key`); for
/// a reader not allowed to list versions (an identity made before snap read
/// them) the current objects, with a note saying overwrites went unseen: a
/// restore with an old credentials pack still works.
pub fn versions_or_current(
    target: &dyn ArchiveTarget,
    prefix: &str,
    only_key: bool,
) -> Result<(Vec<VersionEntry>, Option<String>)> {
    let listed = if only_key {
        target.key_versions(prefix)
    } else {
        target.list_versions(prefix)
    };
    match listed {
        Ok(v) => Ok((v, None)),
        // Only a real refusal (403 AccessDenied): anything else, e.g. an
        // answer that could not be parsed, must never turn the check off.
        Err(e) if e.kind() == ErrorKind::Refused && e.to_string().contains("AccessDenied") => {
            let current = target
                .list(prefix)?
                .into_iter()
                .filter(|o| !only_key || o.key == prefix);
            let entries = current.map(VersionEntry::from).collect();
            Ok((
                entries,
                Some(format!(
                    "overwrites NOT checked: this identity may not list object versions ({e}); \
                     grant it s3:ListBucketVersions (snap.provision does for readers)"
                )),
            ))
        }
        Err(e) => Err(e),
    }
}

/// What is wrong with a key that snap wrote once: a second version (an
/// overwrite: on servers that ignore `If-None-Match`, the backup identity can
/// put one), or a delete marker.
pub fn overwritten(key: &str, versions: &[&VersionEntry]) -> Option<String> {
    let objects: Vec<&&VersionEntry> = versions.iter().filter(|v| !v.delete_marker).collect();
    if objects.len() <= 1 {
        return None;
    }
    let first = objects[0].version_id.as_deref().unwrap_or("null");
    let later: Vec<String> = objects[1..]
        .iter()
        .map(|v| {
            format!(
                "{} at {}",
                v.version_id.as_deref().unwrap_or("null"),
                v.last_modified.map_or("an unknown time".into(), rfc3339)
            )
        })
        .collect();
    Some(format!(
        "TAMPERING: {key} has {} versions; snap writes every key once, so someone overwrote it \
         (version {first} is snap's and is the one read; later: {})",
        objects.len(),
        later.join(", ")
    ))
}

/// Read a manifest-sized object at its first version (the one snap wrote;
/// the listing reports later ones as tampering).
pub fn get_small_first(target: &dyn ArchiveTarget, key: &str) -> Result<Vec<u8>> {
    let versions = versions_of(target, key)?;
    let first = versions
        .iter()
        .find(|v| !v.delete_marker)
        .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no object {key} off-site")))?;
    get_small_at(target, key, first.version_id.as_deref())
}

/// Read one manifest (give the archive key or the manifest key) at its
/// first version: a later version is someone else's write, and the archive
/// version the first one names is the one snap uploaded.
pub fn load_manifest(target: &dyn ArchiveTarget, key: &str) -> Result<Manifest> {
    let mkey = manifest_key(key);
    let buf = get_small_first(target, &mkey)
        .map_err(|e| e.context(format!("reading the manifest {mkey}")))?;
    check_manifest(&buf, &mkey)
}

fn check_manifest(buf: &[u8], mkey: &str) -> Result<Manifest> {
    let m = parse_manifest(buf, mkey)?;
    let expected = mkey.strip_suffix(MANIFEST_SUFFIX).unwrap_or(mkey);
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
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveListing {
    pub key: String,
    /// The archive's version id as its manifest recorded it.
    pub version_id: Option<String>,
    pub manifest_key: String,
    /// The manifest's version read: its first (None: the target has no versions).
    pub manifest_version_id: Option<String>,
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
    /// Set when a key snap wrote once has later versions (an overwrite),
    /// or the manifest names another version of the archive than its first.
    pub tampered: Option<String>,
    /// Set when versions could not be listed (the identity lacks
    /// s3:ListBucketVersions): the current objects were read, unchecked.
    pub unchecked: Option<String>,
    /// Set for a link of an incremental chain: `key` and `manifest_key` are
    /// then its manifest (`*.chain.json`, what `--archive` takes), `size`
    /// every encrypted piece it needs and `plaintext_size` its image.
    pub chain: Option<crate::chainlist::ChainListing>,
}

impl ArchiveListing {
    /// Record what was found written again (if anything): as `tampered`, and
    /// as an error too, so every reader that skips broken rows skips it.
    pub(crate) fn mark_tampered(&mut self, found: &[String]) {
        if found.is_empty() {
            return;
        }
        let text = found.join("; ");
        self.error = Some(match self.error.take() {
            Some(e) => format!("{text}; {e}"),
            None => text.clone(),
        });
        self.tampered = Some(text);
    }
}

/// The finding for a manifest naming a version of `key` other than the
/// first the store holds.
pub(crate) fn other_version(named: &str, key: &str, real: &str) -> String {
    format!(
        "TAMPERING: the manifest names version {named} of {key}, but the version snap uploaded \
         first is {real}"
    )
}

/// How much later than the archive's landing a manifest may say its run
/// began (clocks differ): more is a manifest that lies about its time.
const CREATED_SLACK_SECONDS: i64 = 600;

/// How much earlier than its landing a run may have begun (packing and
/// uploading a large history over a slow line): more is a backdated manifest.
const CREATED_EARLY_SECONDS: i64 = 7 * 86400;

pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    snap_core::record::format_unix(
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

/// What is wrong with a manifest's `created` against when the store says
/// its object landed. The manifest is written by the run; the landing time
/// is the store's: a run cannot begin after it, nor weeks before it.
pub(crate) fn created_problem(created: &str, landed: Option<SystemTime>) -> Option<String> {
    match (snap_core::record::parse_unix(created), landed) {
        (None, _) => Some(format!(
            "the manifest's creation time {created:?} is not a time"
        )),
        (Some(c), Some(l)) if c + CREATED_EARLY_SECONDS < unix(l) => Some(format!(
            "the manifest says the run began {created}, more than {} days before the store says \
             the archive landed ({}): no run takes that long",
            CREATED_EARLY_SECONDS / 86400,
            rfc3339(l)
        )),
        (Some(c), Some(l)) if c > unix(l) + CREATED_SLACK_SECONDS => Some(format!(
            "the manifest says the run began {created}, after the store says the archive landed ({})",
            rfc3339(l)
        )),
        _ => None,
    }
}

/// Every archive under `prefix` that has a manifest, oldest first. With
/// `head`, each archive is also looked up (storage class, lock, retrieval).
pub fn list_archives(
    target: &dyn ArchiveTarget,
    prefix: &str,
    head: bool,
) -> Result<Vec<ArchiveListing>> {
    let (entries, unchecked) = versions_or_current(target, prefix, false)?;
    let mut by_key: BTreeMap<&str, Vec<&VersionEntry>> = BTreeMap::new();
    for e in &entries {
        by_key.entry(e.key.as_str()).or_default().push(e);
    }
    // A key whose current version is a delete marker was deleted (by an
    // administrator or the expiry rule): not listed, as before versions.
    let live = |k: &str| {
        by_key
            .get(k)
            .is_some_and(|v| !v.iter().any(|e| e.is_latest && e.delete_marker))
    };
    let first = |k: &str| {
        by_key
            .get(k)
            .and_then(|v| v.iter().find(|e| !e.delete_marker).copied())
    };
    let mut out = Vec::new();
    for (&mkey, versions) in by_key.iter() {
        if mkey.ends_with(CHAIN_MANIFEST_SUFFIX) {
            if live(mkey) {
                let mut row = crate::chainlist::chain_row(target, mkey, versions, &by_key, head);
                row.unchecked = unchecked.clone();
                out.push(row);
            }
            continue;
        }
        // Only `<archive>.sqfs.gpg.manifest.json`: a key that ends in the
        // suffix twice would otherwise be a second row for the same archive.
        let Some(akey) = mkey
            .strip_suffix(MANIFEST_SUFFIX)
            .filter(|a| a.ends_with(ARCHIVE_SUFFIX))
        else {
            continue;
        };
        if !live(mkey) {
            continue;
        }
        let akey = akey.to_string();
        let afirst = first(&akey);
        let mut row = ArchiveListing {
            key: akey.clone(),
            manifest_key: mkey.to_string(),
            // When the archive first landed: a later version is not snap's.
            landed: afirst.and_then(|v| v.last_modified).map(rfc3339),
            unchecked: unchecked.clone(),
            ..ArchiveListing::default()
        };
        let mut tampered: Vec<String> = Vec::new();
        tampered.extend(overwritten(mkey, versions));
        tampered.extend(overwritten(
            &akey,
            by_key.get(akey.as_str()).map_or(&[], |v| v),
        ));
        let mfirst = versions.iter().find(|e| !e.delete_marker);
        row.manifest_version_id = mfirst.and_then(|v| v.version_id.clone());
        let read = read_first(target, mkey, versions).and_then(|buf| check_manifest(&buf, mkey));
        match read {
            Ok(m) => {
                row.created = Some(m.created.clone());
                row.error = created_problem(&m.created, afirst.and_then(|v| v.last_modified));
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
                if let (Some(named), Some(Some(real))) =
                    (&m.archive.version_id, afirst.map(|v| v.version_id.as_ref()))
                    && named != real
                {
                    tampered.push(other_version(named, &akey, real));
                }
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
        row.mark_tampered(&tampered);
        out.push(row);
    }
    // By when the store says each archive first landed (the store's clock;
    // a manifest's own `created` is the writer's word), then key.
    // Links of one chain that land in the same second keep their order.
    let order = |r: &ArchiveListing| {
        (
            r.landed.clone(),
            r.chain.as_ref().map(|c| (c.id.clone(), c.link)),
            r.key.clone(),
        )
    };
    out.sort_by_key(order);
    Ok(out)
}

/// A manifest read whole from `versions` (the listing of its key): its
/// first version, never anything the listing says is bigger than a manifest.
pub(crate) fn read_first(
    target: &dyn ArchiveTarget,
    key: &str,
    versions: &[&VersionEntry],
) -> Result<Vec<u8>> {
    let read = || {
        let first = versions
            .iter()
            .find(|e| !e.delete_marker)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no object {key} off-site")))?;
        // The listing says how big it is: nothing that size is downloaded.
        if first.size > MANIFEST_MAX_BYTES as u64 {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "{} bytes, more than a manifest ever holds ({MANIFEST_MAX_BYTES}): not read",
                    first.size
                ),
            ));
        }
        get_small_at(target, key, first.version_id.as_deref())
    };
    read().map_err(|e| e.context(format!("reading the manifest {key}")))
}

/// The newest restore point under `prefix`: a full archive's manifest or a
/// chain link's.
#[derive(Debug, Clone)]
pub enum Newest {
    Archive(Manifest),
    Chain(snap_archive::chain::ChainManifest),
}

impl Newest {
    /// What `restore --archive` takes for it.
    pub fn key(&self) -> &str {
        match self {
            Newest::Archive(m) => &m.archive.key,
            Newest::Chain(m) => m.key.as_deref().unwrap_or_default(),
        }
    }
}

/// The newest archive or chain link under `prefix` whose manifest reads.
pub fn newest(target: &dyn ArchiveTarget, prefix: &str) -> Result<Newest> {
    let rows = list_archives(target, prefix, false)?;
    // An overwritten archive newer than every sound one is not skipped in
    // silence: that would restore older data than the operator believes.
    let row = rows
        .iter()
        .rev()
        .find(|r| r.error.is_none() || r.tampered.is_some())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no archive with a readable manifest under {prefix:?}"),
            )
        })?;
    if let Some(t) = &row.tampered {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "the newest archive under {prefix:?}, {}, was written again off-site ({t}); \
                 name it with --archive {} to restore what snap wrote (its first version), \
                 or pick another from the listing",
                row.key, row.key
            ),
        ));
    }
    if row.chain.is_some() {
        return crate::chain::load_chain_manifest(target, &row.manifest_key).map(Newest::Chain);
    }
    load_manifest(target, &row.manifest_key).map(Newest::Archive)
}

/// Is `key` an archive key snap writes?
pub fn is_archive_key(key: &str) -> bool {
    key.ends_with(ARCHIVE_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn version(id: &str, secs: u64, delete_marker: bool) -> VersionEntry {
        VersionEntry {
            key: "k".into(),
            version_id: Some(id.into()),
            size: 1,
            storage_class: None,
            last_modified: Some(UNIX_EPOCH + std::time::Duration::from_secs(secs)),
            is_latest: false,
            delete_marker,
        }
    }

    #[test]
    fn a_second_version_of_a_key_is_tampering_and_names_the_first() {
        let one = [version("v1", 100, false)];
        let refs: Vec<&VersionEntry> = one.iter().collect();
        assert_eq!(overwritten("k", &refs), None);
        // A delete marker alone (the expiry rule) is not an overwrite.
        let expired = [version("v1", 100, false), version("d1", 200, true)];
        let refs: Vec<&VersionEntry> = expired.iter().collect();
        assert_eq!(overwritten("k", &refs), None);
        let forged = [version("v1", 100, false), version("v2", 200, false)];
        let refs: Vec<&VersionEntry> = forged.iter().collect();
        let text = overwritten("k", &refs).unwrap();
        assert!(
            text.starts_with("TAMPERING: k has 2 versions")
                && text.contains("version v1 is snap's")
                && text.contains("later: v2 at"),
            "{text}"
        );
    }

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
