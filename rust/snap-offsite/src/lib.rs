//! Off-site upload: S3 with Object Lock (the default), Glacier vaults (for
//! accounts that still have them).
//!
//! The public API is blocking: every target owns a small tokio runtime and
//! drives the AWS SDK on it, so the archive pipeline (plain synchronous Rust)
//! and the Python binding call it like any other library.
//!
//! Two small traits carry everything (the idea of small backend traits comes
//! from rustic's backend crate):
//!
//! - [`ArchiveTarget`]: where archives go (create a writer, put a small object,
//!   head, list, incomplete uploads, and for restore: get with resume and
//!   retrieval from archival storage classes);
//! - [`ArchiveWriter`]: a `std::io::Write` sink that uploads in parts while the
//!   caller streams into it; only [`ArchiveWriter::finish`] makes the object
//!   exist, dropping it aborts.
//!
//! Credentials come only from the AWS default chain (environment, profile,
//! role assumption, web identity, instance metadata); [`TargetConfig`] holds
//! names and paths, never secrets.

mod config;
mod error;
pub mod glacier;
mod keys;
mod listing;
pub mod lockcheck;
mod parts;
mod retention;
pub mod s3;

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

pub use snap_core::{Error, ErrorKind, Progress, Result};

pub use config::{TARGET_SETTING_KEYS, TargetConfig, TargetKind, TargetSettings};
pub use error::error_from_io;
pub use glacier::{
    GlacierTarget, TreeHasher, tree_hash, tree_hash_file_hex, tree_hash_hex, tree_hash_of_parts,
};
pub use keys::archive_key;
pub use listing::{LIST_MAX_ENTRIES, LIST_MAX_PAGES};
pub use lockcheck::{
    LockCheck, LockStatus, Retention, ensure_locked, ensure_upload_locked, read_lock,
};
pub use retention::{MIN_RETAIN_DAYS, RETAIN_MARGIN, retain_until};
pub use s3::S3Target;

/// 1 MiB.
pub const MIB: u64 = 1024 * 1024;
/// Default part size of multipart uploads.
pub const DEFAULT_PART_SIZE: u64 = 64 * MIB;
/// Smallest part S3 accepts (except the last one).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// Largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
/// Most parts in one multipart upload (S3 and Glacier alike).
pub const MAX_PARTS: u64 = 10_000;

/// How an object is stored. S3 storage class names as S3 spells them
/// (`GLACIER`, `DEEP_ARCHIVE`, `STANDARD`, `GLACIER_IR`, ...).
pub const STORAGE_CLASS_ARCHIVE: &str = "GLACIER";
/// Manifests stay readable without a retrieval so restore can list and read them.
pub const STORAGE_CLASS_MANIFEST: &str = "STANDARD";

/// What every upload carries.
#[derive(Debug, Clone, PartialEq)]
pub struct PutOptions {
    /// S3 storage class (ignored by Glacier vaults).
    pub storage_class: String,
    /// Days of COMPLIANCE retention; at least [`MIN_RETAIN_DAYS`].
    pub retain_days: u32,
    /// Expected size if known: lets the writer pick a part size up front.
    pub size_hint: Option<u64>,
    /// Content type (S3 only).
    pub content_type: Option<String>,
    /// Free text kept with the object: S3 metadata `x-amz-meta-snap-description`,
    /// the archive description of a Glacier vault archive.
    pub description: Option<String>,
}

impl PutOptions {
    /// Defaults for an encrypted archive: storage class GLACIER, 90 days.
    pub fn archive() -> Self {
        PutOptions {
            storage_class: STORAGE_CLASS_ARCHIVE.to_string(),
            retain_days: MIN_RETAIN_DAYS,
            size_hint: None,
            content_type: Some("application/pgp-encrypted".to_string()),
            description: None,
        }
    }

    /// Defaults for a manifest: storage class STANDARD (readable without a
    /// retrieval), 90 days.
    pub fn manifest() -> Self {
        PutOptions {
            storage_class: STORAGE_CLASS_MANIFEST.to_string(),
            retain_days: MIN_RETAIN_DAYS,
            size_hint: None,
            content_type: Some("application/json".to_string()),
            description: None,
        }
    }

    pub fn with_retain_days(mut self, days: u32) -> Self {
        self.retain_days = days;
        self
    }

    pub fn with_storage_class(mut self, class: impl Into<String>) -> Self {
        self.storage_class = class.into();
        self
    }

    pub fn with_size_hint(mut self, size: u64) -> Self {
        self.size_hint = Some(size);
        self
    }

    pub fn with_description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions::archive()
    }
}

/// What a finished upload produced.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadResult {
    /// S3 key; for a Glacier vault the archive id AWS assigned.
    pub key: String,
    pub size: u64,
    /// SHA-256 of the whole object, computed while streaming (hex).
    pub sha256: String,
    /// Glacier SHA-256 tree hash of the whole object (hex; vaults only).
    pub tree_hash: Option<String>,
    pub version_id: Option<String>,
    pub etag: Option<String>,
    /// Number of parts (0 for a single request).
    pub parts: u32,
    /// Size of the first part (0 for a single request).
    pub part_size: u64,
    /// Retention that was requested (None for vaults: the vault lock decides).
    pub retain_until: Option<SystemTime>,
    pub storage_class: Option<String>,
}

/// What HEAD says about an object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// `COMPLIANCE`, `GOVERNANCE` or None.
    pub lock_mode: Option<String>,
    pub retain_until: Option<SystemTime>,
    pub legal_hold: Option<bool>,
    /// None means STANDARD (S3 omits the header then).
    pub storage_class: Option<String>,
    /// Base64 SHA-256 checksum S3 stores (composite `...-N` for multipart).
    pub checksum_sha256: Option<String>,
    pub version_id: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    /// Retrieval state for archival storage classes.
    pub retrieval: RetrievalStatus,
}

impl ObjectInfo {
    /// The storage class by name; S3 omits it for STANDARD.
    pub fn storage_class_name(&self) -> String {
        self.storage_class
            .clone()
            .unwrap_or_else(|| "STANDARD".into())
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    pub storage_class: Option<String>,
    pub last_modified: Option<SystemTime>,
}

/// One version of one object (S3 ListObjectVersions): delete markers too.
/// A target without object versions lists each object once, with no id.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionEntry {
    pub key: String,
    pub version_id: Option<String>,
    pub size: u64,
    pub storage_class: Option<String>,
    pub last_modified: Option<SystemTime>,
    /// The key's current version (or its current delete marker).
    pub is_latest: bool,
    pub delete_marker: bool,
}

/// A listed object as its only version (a target without versions).
impl From<ListEntry> for VersionEntry {
    fn from(o: ListEntry) -> Self {
        VersionEntry {
            key: o.key,
            version_id: None,
            size: o.size,
            storage_class: o.storage_class,
            last_modified: o.last_modified,
            is_latest: true,
            delete_marker: false,
        }
    }
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq)]
pub struct IncompleteUpload {
    /// S3 key; for vaults the archive description.
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

/// Speed (and price) of a retrieval from an archival storage class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrievalTier {
    Expedited,
    Standard,
    Bulk,
}

impl RetrievalTier {
    pub fn parse(text: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "expedited" => Ok(RetrievalTier::Expedited),
            "standard" => Ok(RetrievalTier::Standard),
            "bulk" => Ok(RetrievalTier::Bulk),
            _ => Err(Error::invalid_input(format!(
                "unknown retrieval tier {text:?} (expected Expedited, Standard or Bulk)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RetrievalTier::Expedited => "Expedited",
            RetrievalTier::Standard => "Standard",
            RetrievalTier::Bulk => "Bulk",
        }
    }
}

/// Whether an object can be read now.
#[derive(Debug, Clone, PartialEq)]
pub enum RetrievalStatus {
    /// Stored in a class that is readable at once (STANDARD, GLACIER_IR, ...).
    Immediate,
    /// Archived and no retrieval requested.
    NotRequested,
    /// A retrieval is running.
    InProgress,
    /// A restored copy (or a vault job's output) is readable until `expires`.
    Ready { expires: Option<SystemTime> },
}

impl RetrievalStatus {
    pub fn name(&self) -> &'static str {
        match self {
            RetrievalStatus::Immediate => "immediate",
            RetrievalStatus::NotRequested => "not-requested",
            RetrievalStatus::InProgress => "in-progress",
            RetrievalStatus::Ready { .. } => "ready",
        }
    }

    pub fn is_readable(&self) -> bool {
        matches!(
            self,
            RetrievalStatus::Immediate | RetrievalStatus::Ready { .. }
        )
    }
}

/// Where archives go. All methods block.
pub trait ArchiveTarget: Send + Sync {
    /// A human description for messages: `s3://bucket (region, endpoint)`.
    fn describe(&self) -> String;

    /// Start streaming an object to `key`. Nothing exists under `key` until
    /// [`ArchiveWriter::finish`] succeeds. Uploaded bytes are counted on `progress`.
    fn create_writer<'a>(
        &'a self,
        key: &str,
        options: &PutOptions,
        progress: &'a Progress,
    ) -> Result<Box<dyn ArchiveWriter + 'a>>;

    /// Upload a small object (a manifest) in one request.
    fn put_small(&self, key: &str, bytes: &[u8], options: &PutOptions) -> Result<UploadResult>;

    /// Metadata of one object.
    fn head(&self, key: &str) -> Result<ObjectInfo>;

    /// Objects under `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<ListEntry>>;

    /// Every version of every object under `prefix`, delete markers too;
    /// in key order, and within a key oldest first. A target without object
    /// versions lists each object once (no version id, latest). Snap writes
    /// every key once, so a second version of a key is someone else's write.
    fn list_versions(&self, prefix: &str) -> Result<Vec<VersionEntry>> {
        Ok(self
            .list(prefix)?
            .into_iter()
            .map(VersionEntry::from)
            .collect())
    }

    /// The versions of the one object `key` (oldest first), however many
    /// other keys begin with it.
    fn key_versions(&self, key: &str) -> Result<Vec<VersionEntry>> {
        let mut v = self.list_versions(key)?;
        v.retain(|e| e.key == key);
        Ok(v)
    }

    /// Multipart uploads under `prefix` that were neither completed nor aborted.
    fn list_incomplete(&self, prefix: &str) -> Result<Vec<IncompleteUpload>>;

    /// Abort one incomplete upload (cannot touch completed objects).
    fn abort_incomplete(&self, upload: &IncompleteUpload) -> Result<()>;

    /// Stream the object from byte `offset` to its end into `out`. A connection
    /// dropped mid-body is resumed with a ranged GET from where it stopped.
    /// Returns the number of bytes written.
    fn get(&self, key: &str, offset: u64, out: &mut dyn Write, progress: &Progress) -> Result<u64>;

    /// Like [`get`](ArchiveTarget::get), for one version of the object (S3
    /// versioned buckets: a manifest records the version ids, so a restore
    /// reads exactly what was uploaded even if newer versions were added).
    fn get_version(
        &self,
        key: &str,
        version_id: &str,
        offset: u64,
        out: &mut dyn Write,
        progress: &Progress,
    ) -> Result<u64> {
        let _ = (offset, out, progress);
        Err(Error::invalid_input(format!(
            "{}: reading version {version_id} of {key}: this target has no object versions",
            self.describe()
        )))
    }

    /// Ask for an archived object to be made readable for `days` days.
    fn request_retrieval(
        &self,
        key: &str,
        days: u32,
        tier: RetrievalTier,
    ) -> Result<RetrievalStatus>;

    /// Whether an archived object can be read now.
    fn retrieval_status(&self, key: &str) -> Result<RetrievalStatus>;

    /// `s3://bucket/key` (or the like) for messages.
    fn object_url(&self, key: &str) -> String {
        format!("{} {key}", self.describe())
    }

    /// Whether each object carries its own Object Lock retention (S3), which
    /// [`lockcheck`] reads back and repairs. Glacier vaults: no (the vault
    /// lock policy decides).
    fn has_object_lock(&self) -> bool {
        false
    }

    /// The Object Lock retention of `key` at `version_id` (None: the current
    /// version), as the server holds it now. No lock at all is
    /// `Retention::default()`, not an error.
    fn retention(&self, key: &str, version_id: Option<&str>) -> Result<Retention> {
        let _ = version_id;
        Err(Error::invalid_input(format!(
            "{}: {key} has no object retention to read (this target has no Object Lock)",
            self.describe()
        )))
    }

    /// Set COMPLIANCE retention until `until` on `key` at `version_id`
    /// (PutObjectRetention: COMPLIANCE can only ever be extended).
    fn set_retention(&self, key: &str, version_id: Option<&str>, until: SystemTime) -> Result<()> {
        let _ = (version_id, until);
        Err(Error::invalid_input(format!(
            "{}: cannot set a retention on {key} (this target has no Object Lock)",
            self.describe()
        )))
    }
}

/// A streaming upload. Write the object through `std::io::Write`, then call
/// [`finish`](ArchiveWriter::finish). Dropping it unfinished aborts the upload.
///
/// A write that fails returns an `io::Error` wrapping the snap [`Error`]
/// (use [`error_from_io`] to get it back with its kind); `finish` after a
/// failure returns that error too.
pub trait ArchiveWriter: Write + Send {
    /// Bytes accepted so far.
    fn written(&self) -> u64;

    /// Upload what is buffered, wait for every part and complete the upload.
    fn finish(self: Box<Self>) -> Result<UploadResult>;

    /// Abort the upload: no object is created.
    fn abort(self: Box<Self>) -> Result<()>;
}

/// Abort the incomplete uploads under `prefix` that were started at least
/// `min_age` ago (a run holding the pipeline lock passes zero: nothing else can
/// be uploading under its prefix). Returns what was aborted.
pub fn abort_stale(
    target: &dyn ArchiveTarget,
    prefix: &str,
    min_age: Duration,
) -> Result<Vec<IncompleteUpload>> {
    let now = SystemTime::now();
    let mut aborted = Vec::new();
    for upload in target.list_incomplete(prefix)? {
        let old_enough = match upload.initiated {
            Some(t) => now.duration_since(t).unwrap_or_default() >= min_age,
            None => true,
        };
        if old_enough {
            target.abort_incomplete(&upload)?;
            aborted.push(upload);
        }
    }
    Ok(aborted)
}

/// What [`download_to_file`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Download {
    /// Bytes that were already in the file and kept.
    pub resumed_from: u64,
    /// Bytes fetched by this call.
    pub fetched: u64,
    /// SHA-256 of the whole file (hex).
    pub sha256: String,
}

/// Download `key` (or one version of it) into `path`. If `resume` and the
/// file exists, keep its bytes and fetch only the rest (a ranged GET from its
/// length).
pub fn download_to_file(
    target: &dyn ArchiveTarget,
    key: &str,
    version_id: Option<&str>,
    path: &Path,
    resume: bool,
    progress: &Progress,
) -> Result<Download> {
    download_to_file_limited(target, key, version_id, path, resume, None, progress)
}

/// [`download_to_file`], refusing (`Integrity`) to write more than `limit`
/// bytes in all: a restore knows each object's size from its manifest, and
/// a hostile server must not fill the work directory with a longer one.
/// A `progress` with a [`snap_core::Stop`] ends the download, `Interrupted`,
/// at the next chunk after the stop is raised.
pub fn download_to_file_limited(
    target: &dyn ArchiveTarget,
    key: &str,
    version_id: Option<&str>,
    path: &Path,
    resume: bool,
    limit: Option<u64>,
    progress: &Progress,
) -> Result<Download> {
    use sha2::{Digest, Sha256};
    use std::fs::OpenOptions;
    use std::io::Read;

    let mut hasher = Sha256::new();
    let mut resumed_from = 0;
    let mut file = if resume && path.exists() {
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io_path("opening", path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| Error::io_path("reading", path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            resumed_from += n as u64;
        }
        f
    } else {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io_path("creating", path, e))?
    };
    struct HashingWriter<'a, W: Write> {
        inner: &'a mut W,
        hasher: &'a mut Sha256,
        path: &'a Path,
        /// Bytes that may still be written, and the limit for the message.
        room: Option<(u64, u64)>,
        /// Stops the download when the job it is part of failed elsewhere.
        progress: &'a Progress,
    }
    impl<W: Write> Write for HashingWriter<'_, W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.progress.check_stop()?;
            if let Some((room, limit)) = &mut self.room {
                if buf.len() as u64 > *room {
                    return Err(io::Error::other(Error::new(
                        ErrorKind::Integrity,
                        format!(
                            "the server sent more than the {limit} bytes expected; stopped there"
                        ),
                    )));
                }
                *room -= buf.len() as u64;
            }
            let n = self.inner.write(buf).map_err(|e| {
                let kind = e.kind();
                io::Error::new(kind, Error::io_path("writing", self.path, e))
            })?;
            self.hasher.update(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }
    let fetched = {
        let mut w = HashingWriter {
            inner: &mut file,
            hasher: &mut hasher,
            path,
            room: limit.map(|l| (l.saturating_sub(resumed_from), l)),
            progress,
        };
        match version_id {
            Some(v) => target.get_version(key, v, resumed_from, &mut w, progress)?,
            None => target.get(key, resumed_from, &mut w, progress)?,
        }
    };
    file.sync_all()
        .map_err(|e| Error::io_path("syncing", path, e))?;
    Ok(Download {
        resumed_from,
        fetched,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Upload everything `reader` yields to `key` through a writer. Returns what
/// [`ArchiveWriter::finish`] returns; a read error aborts the upload.
pub fn upload_reader(
    target: &dyn ArchiveTarget,
    key: &str,
    reader: &mut dyn io::Read,
    options: &PutOptions,
    progress: &Progress,
) -> Result<UploadResult> {
    let mut writer = target.create_writer(key, options, progress)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = writer.abort();
                return Err(error_from_io(e).context(format!("reading the data for {key}")));
            }
        };
        if let Err(e) = writer.write_all(&buf[..n]) {
            let e = error_from_io(e);
            return Err(match writer.finish() {
                // finish() reports the stored failure (and whether the abort worked).
                Err(stored) => stored,
                Ok(_) => e,
            });
        }
    }
    writer.finish()
}

/// Upload the file at `path` to `key`, with its size as the size hint.
pub fn upload_file(
    target: &dyn ArchiveTarget,
    path: &Path,
    key: &str,
    options: &PutOptions,
    progress: &Progress,
) -> Result<UploadResult> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io_path("opening", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io_path("reading the size of", path, e))?
        .len();
    progress.set_total(size);
    let mut options = options.clone();
    options.size_hint.get_or_insert(size);
    struct Named<'a> {
        file: &'a mut std::fs::File,
        path: &'a Path,
    }
    impl io::Read for Named<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            io::Read::read(self.file, buf).map_err(|e| {
                let kind = e.kind();
                io::Error::new(kind, Error::io_path("reading", self.path, e))
            })
        }
    }
    upload_reader(
        target,
        key,
        &mut Named {
            file: &mut file,
            path,
        },
        &options,
        progress,
    )
}

/// Open the target a configuration names.
pub fn open_target(config: &TargetConfig) -> Result<Box<dyn ArchiveTarget>> {
    match config.kind {
        TargetKind::S3 => Ok(Box::new(S3Target::new(config.clone())?)),
        TargetKind::GlacierVault => Ok(Box::new(GlacierTarget::new(config.clone())?)),
    }
}
