//! The archive pipeline: the backup server's whole history (or selected
//! servers) packed into a SquashFS image, encrypted to one or more OpenPGP
//! **public** keys while it streams to the off-site target, where every
//! object is written under Object Lock COMPLIANCE and can never be replaced.
//!
//! One run, under a lock:
//!
//! 1. check everything that can be checked first: the configuration, the
//!    recipients (secret key material anywhere is refused), the history;
//! 2. abort incomplete uploads a killed run left under this server's prefix
//!    (an encrypted stream cannot be resumed: each run has a new session key);
//! 3. pack into the only temporary file, in a root-only directory that is
//!    removed afterwards, also on failure;
//! 4. encrypt the image straight into the upload (no second plaintext copy,
//!    no ciphertext on disk), hashing both sides on the way;
//! 5. put a manifest next to the archive: what is inside, sizes, hashes,
//!    recipients, retention. It is what restore lists.
//!
//! With `chain.enabled`, a run makes the base or the next link of a chain
//! instead (see [`chain`]): only what is new is packed and uploaded.
//!
//! Each stage reports progress (bytes, rate, ETA); the record of the run is
//! kept under `state_dir` whether it succeeded or not.

pub mod chain;
pub mod cost;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use snap_core::config::JsonConfig;
use snap_core::progress::ProgressSink;
use snap_core::{Error, ErrorKind, Progress, Result, lock, record};
use snap_crypt::{KeySource, Recipient};
use snap_offsite::{PutOptions, TargetSettings};
use snap_pack::{Compressor, PackOptions, Selection};

/// Version of the manifest format.
pub const MANIFEST_FORMAT: &str = "snap-archive/1";
/// Suffix of archive objects and of their manifests.
pub const ARCHIVE_SUFFIX: &str = ".sqfs.gpg";
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// A recipient public key: a file, or armored text (from pillar).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientSpec {
    pub file: Option<PathBuf>,
    pub text: Option<String>,
    /// What to call it in messages (default: the file, or "recipients[i]").
    pub label: Option<String>,
}

/// Packing settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackSettings {
    pub compressor: String,
    pub level: Option<u32>,
    pub block_size: u32,
    pub threads: Option<usize>,
}

impl Default for PackSettings {
    fn default() -> Self {
        PackSettings {
            compressor: "zstd".into(),
            level: None,
            block_size: 128 * 1024,
            threads: None,
        }
    }
}

/// The backup server's archive configuration (state `snap.archive_config`
/// writes it as JSON).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// The backup server's minion id (in keys and the manifest).
    pub minion_id: String,
    /// rsnapshot's snapshot root.
    pub history_dir: PathBuf,
    /// Only these servers (minion ids) from every snapshot; None: everything.
    #[serde(default)]
    pub servers: Option<Vec<String>>,
    /// Parent of the run's root-only temporary directory (the image lives there).
    pub work_dir: PathBuf,
    /// Lock and records (root-only).
    pub state_dir: PathBuf,
    pub recipients: Vec<RecipientSpec>,
    /// Off-site target (see `snap_offsite::TargetSettings`).
    pub target: serde_json::Value,
    /// Key prefix (default `snap/<minion_id>`).
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default = "d_storage_class")]
    pub storage_class: String,
    #[serde(default = "d_manifest_class")]
    pub manifest_storage_class: String,
    /// Days of COMPLIANCE retention: at least 90.
    #[serde(default = "d_retain")]
    pub retain_days: u32,
    #[serde(default)]
    pub pack: PackSettings,
    /// Incremental archives (pillar `snap:archive:chain`).
    #[serde(default)]
    pub chain: chain::ChainSettings,
    /// USD per GiB-month per storage class, over the list prices.
    #[serde(default)]
    pub prices: BTreeMap<String, f64>,
}

impl JsonConfig for ArchiveConfig {
    const WHAT: &'static str = "archive configuration";

    /// Everything that can be checked without reading history or keys.
    fn check(&self) -> Result<()> {
        snap_core::account::validate_minion_id(&self.minion_id)?;
        for p in [&self.history_dir, &self.work_dir, &self.state_dir] {
            if !p.is_absolute() {
                return Err(Error::invalid_input(format!(
                    "archive configuration: {} must be an absolute path",
                    p.display()
                )));
            }
        }
        if self.work_dir.starts_with(&self.history_dir) {
            return Err(Error::invalid_input(format!(
                "archive configuration: work_dir {} must not be inside the history {}",
                self.work_dir.display(),
                self.history_dir.display()
            )));
        }
        if self.recipients.is_empty() {
            return Err(Error::invalid_key(
                "archive configuration: no recipients; archives are encrypted to at least one public key",
            ));
        }
        for (i, r) in self.recipients.iter().enumerate() {
            if r.file.is_some() == r.text.is_some() {
                return Err(Error::invalid_input(format!(
                    "archive configuration: recipients[{i}] needs exactly one of file or text"
                )));
            }
        }
        if let Some(servers) = &self.servers {
            for s in servers {
                snap_core::account::validate_minion_id(s)?;
            }
        }
        snap_offsite::retain_until(SystemTime::now(), self.retain_days)?;
        snap_offsite::s3::storage_class(&self.storage_class)?;
        snap_offsite::s3::storage_class(&self.manifest_storage_class)?;
        self.compressor()?;
        self.chain.check(self.retain_days)?;
        cost::prices(&self.prices)?;
        TargetSettings::from_value(self.target.clone())?.to_config()?;
        Ok(())
    }
}

fn d_storage_class() -> String {
    "GLACIER".into()
}
fn d_manifest_class() -> String {
    "STANDARD".into()
}
fn d_retain() -> u32 {
    snap_offsite::MIN_RETAIN_DAYS
}

impl ArchiveConfig {
    pub fn prefix(&self) -> String {
        self.prefix
            .clone()
            .unwrap_or_else(|| format!("snap/{}", self.minion_id))
    }

    fn compressor(&self) -> Result<Compressor> {
        Compressor::from_str(&self.pack.compressor)
    }

    /// Read and check the recipient keys (secret key material is refused).
    pub fn load_recipients(&self) -> Result<Vec<Recipient>> {
        let mut sources = Vec::new();
        for (i, r) in self.recipients.iter().enumerate() {
            let source = match (&r.file, &r.text) {
                (Some(file), _) => KeySource::from_file(file)?,
                (None, Some(text)) => KeySource::new(
                    r.label
                        .clone()
                        .unwrap_or_else(|| format!("recipients[{i}]")),
                    text.as_bytes().to_vec(),
                ),
                (None, None) => unreachable!("checked"),
            };
            sources.push(source);
        }
        snap_crypt::load_recipients(&sources)
    }
}

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
    pub storage: Option<cost::StorageCost>,
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
    /// A chain run: the link's manifest.
    #[serde(default)]
    pub chain: Option<chain::ChainManifest>,
    /// Everything held under lock off-site after the run, and its cost.
    #[serde(default)]
    pub storage: Option<cost::StorageCost>,
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
            .map(|e| e.file_name().to_string_lossy().into_owned())
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

/// A root-only directory removed when dropped (also on failure).
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(parent: &Path, run_id: &str) -> Result<Self> {
        record::ensure_dir(parent, 0o700)?;
        fs::set_permissions(parent, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io_path("securing", parent, e))?;
        let dir = parent.join(format!("run-{run_id}"));
        fs::create_dir(&dir).map_err(|e| Error::io_path("creating", &dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io_path("securing", &dir, e))?;
        Ok(WorkDir(dir))
    }
}

/// Remove what killed runs left in `work_dir` (their images: plaintext).
/// Only called under the archive lock, so no run of ours is using them.
fn remove_stale_work(work_dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(work_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io_path("reading", work_dir, e)),
    };
    for entry in entries.filter_map(|e| e.ok()) {
        if entry.file_name().to_string_lossy().starts_with("run-") {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(|e| Error::io_path("removing stale", &path, e))?;
            removed.push(path.display().to_string());
        }
    }
    Ok(removed)
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn rfc3339(t: SystemTime) -> String {
    record::format_unix(
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

/// Run the pipeline. The record is written under `state_dir` either way;
/// the error (if any) is returned after it is recorded.
pub fn archive(cfg: &ArchiveConfig, sink: Option<Arc<dyn ProgressSink>>) -> Result<ArchiveRecord> {
    cfg.check()?;
    record::ensure_dir(&cfg.state_dir, 0o700)?;
    let lock_path = cfg.state_dir.join("archive.lock");
    let Some(mut held) = lock::lock_file(&lock_path, Duration::ZERO)? else {
        return Err(lock::busy("the archive", &lock_path));
    };
    let run_id = record::run_id();
    held.write_note(&format!(
        "pid {} run {run_id} since {}",
        std::process::id(),
        record::now()
    ))?;
    let clock = Instant::now();
    let mut rec = ArchiveRecord {
        run_id: run_id.clone(),
        started: record::now(),
        finished: String::new(),
        seconds: 0.0,
        result: "failed".into(),
        error: None,
        error_kind: None,
        manifest_key: None,
        manifest: None,
        aborted_stale: Vec::new(),
        removed_stale_work: Vec::new(),
        stages: Vec::new(),
        chain: None,
        storage: None,
    };
    let outcome = remove_stale_work(&cfg.work_dir)
        .map(|removed| rec.removed_stale_work = removed)
        .and_then(|()| {
            if cfg.chain.enabled {
                chain::run_chain(cfg, &run_id, sink, &mut rec)
            } else {
                run(cfg, &run_id, sink, &mut rec)
            }
        });
    if let Err(e) = &outcome {
        rec.error = Some(e.to_string());
        rec.error_kind = Some(e.kind().name().to_string());
    } else {
        rec.result = "ok".into();
    }
    rec.finished = record::now();
    rec.seconds = clock.elapsed().as_secs_f64();
    record::write_json(&cfg.state_dir.join("archive-last.json"), &rec)?;
    record::append_jsonl(&cfg.state_dir.join("archive.jsonl"), &rec)?;
    drop(held);
    outcome.map(|()| rec)
}

fn stage(name: &str, sink: &Option<Arc<dyn ProgressSink>>, total: Option<u64>) -> Progress {
    Progress::new(name, total, sink.clone())
}

fn run(
    cfg: &ArchiveConfig,
    run_id: &str,
    sink: Option<Arc<dyn ProgressSink>>,
    rec: &mut ArchiveRecord,
) -> Result<()> {
    // 1. Everything checkable before any work.
    let recipients = cfg.load_recipients()?;
    let snapshots = inventory(&cfg.history_dir, cfg.servers.as_deref())?;
    let target_cfg = TargetSettings::from_value(cfg.target.clone())?.to_config()?;
    let target = snap_offsite::open_target(&target_cfg)?;
    let prefix = cfg.prefix();

    // 2. What a killed run left behind.
    rec.aborted_stale = snap_offsite::abort_stale(target.as_ref(), &prefix, Duration::ZERO)?
        .into_iter()
        .map(|u| format!("{} ({})", u.key, u.upload_id))
        .collect();

    // 3. Pack into the only temporary file.
    let work = WorkDir::create(&cfg.work_dir, run_id)?;
    let image = work.0.join("history.sqfs");
    let opts = PackOptions {
        compressor: cfg.compressor()?,
        level: cfg.pack.level,
        block_size: cfg.pack.block_size,
        threads: cfg.pack.threads,
        selection: cfg.servers.as_ref().map(|s| Selection {
            depth: 2,
            names: s.iter().map(Into::into).collect(),
        }),
        ..PackOptions::default()
    };
    let p = stage("pack", &sink, None);
    let packed = snap_pack::pack(&cfg.history_dir, &image, &opts, &p)?;
    let s = p.finish();
    rec.stages.push(StageTime {
        stage: "pack".into(),
        bytes: s.bytes,
        seconds: s.elapsed.as_secs_f64(),
    });

    // 4. Encrypt straight into the upload.
    let now = SystemTime::now();
    let key = snap_offsite::archive_key(&prefix, now, ARCHIVE_SUFFIX)?;
    let put = PutOptions::archive()
        .with_storage_class(cfg.storage_class.clone())
        .with_retain_days(cfg.retain_days)
        .with_size_hint(packed.image_size + packed.image_size / 100 + (1 << 20))
        .with_description(format!("snap archive of {} ({})", cfg.minion_id, run_id));
    let enc_progress = stage("encrypt", &sink, Some(packed.image_size));
    let up_progress = stage("upload", &sink, Some(packed.image_size));
    let file = File::open(&image).map_err(|e| Error::io_path("opening", &image, e))?;
    let mut writer = target.create_writer(&key, &put, &up_progress)?;
    let reading = format!("reading {}", image.display());
    let writing = format!("uploading to {}", target.describe());
    let enc = match snap_crypt::encrypt_named(
        &file,
        &reading,
        &mut *writer,
        &writing,
        &recipients,
        &enc_progress,
    ) {
        Ok(enc) => enc,
        Err(e) => {
            // Nothing may look complete: the multipart upload is aborted.
            let _ = writer.abort();
            return Err(e);
        }
    };
    let up = writer.finish()?;
    let e = enc_progress.finish();
    let u = up_progress.finish();
    rec.stages.push(StageTime {
        stage: "encrypt".into(),
        bytes: e.bytes,
        seconds: e.elapsed.as_secs_f64(),
    });
    rec.stages.push(StageTime {
        stage: "upload".into(),
        bytes: u.bytes,
        seconds: u.elapsed.as_secs_f64(),
    });
    if up.sha256 != enc.ciphertext_sha256 || up.size != enc.ciphertext_bytes {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "uploaded object {} ({} bytes, sha256 {}) differs from what was encrypted ({} bytes, sha256 {})",
                up.key, up.size, up.sha256, enc.ciphertext_bytes, enc.ciphertext_sha256
            ),
        ));
    }
    drop(work); // the image is gone before the manifest claims success
    let mut ledger = cost::Ledger::load(&cfg.state_dir)?;
    let stored_class = up
        .storage_class
        .clone()
        .unwrap_or_else(|| cfg.storage_class.clone());
    if let Some(until) = up.retain_until {
        ledger.add(
            [cost::Held {
                key: up.key.clone(),
                size: up.size,
                storage_class: stored_class,
                retain_until: cost::unix(until),
            }],
            SystemTime::now(),
        )?;
    }
    let prices = cost::prices(&cfg.prices)?;

    // 5. The manifest, locked like the archive.
    let servers: BTreeSet<String> = snapshots
        .iter()
        .flat_map(|s| s.servers.iter().cloned())
        .collect();
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        created: rfc3339(now),
        backup_server: cfg.minion_id.clone(),
        archive: ArchiveObject {
            target: target.describe(),
            key: up.key.clone(),
            version_id: up.version_id.clone(),
            size: up.size,
            sha256: up.sha256.clone(),
            tree_hash: up.tree_hash.clone(),
            storage_class: up
                .storage_class
                .clone()
                .unwrap_or_else(|| cfg.storage_class.clone()),
            lock_mode: up.retain_until.map(|_| "COMPLIANCE".to_string()),
            retain_until: up.retain_until.map(rfc3339),
            parts: up.parts,
        },
        plaintext: Plaintext {
            format: "squashfs".into(),
            size: enc.plaintext_bytes,
            sha256: enc.plaintext_sha256.clone(),
            compressor: cfg.pack.compressor.clone(),
            level: cfg.pack.level,
            block_size: cfg.pack.block_size,
            files: packed.files,
            inodes: packed.inodes,
            hardlinks: packed.hardlinks,
            data_bytes: packed.bytes_in,
        },
        recipients: recipients
            .iter()
            .map(|r| RecipientInfo {
                fingerprint: r.fingerprint.clone(),
                key_id: r.key_id.clone(),
                algorithm: r.algorithm.clone(),
                user_ids: r.user_ids.clone(),
            })
            .collect(),
        servers: servers.into_iter().collect(),
        snapshots,
        history_root: cfg.history_dir.display().to_string(),
        storage: Some(cost::estimate(&ledger.held, SystemTime::now(), &prices)),
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::internal(format!("encoding the manifest: {e}")))?;
    let manifest_key = format!("{key}{MANIFEST_SUFFIX}");
    let mput = PutOptions::manifest()
        .with_storage_class(cfg.manifest_storage_class.clone())
        .with_retain_days(cfg.retain_days)
        .with_description(format!("snap manifest of {}", up.key));
    let stored = target.put_small(&manifest_key, &text, &mput)?;
    if let Some(until) = stored.retain_until {
        ledger.add(
            [cost::Held {
                key: stored.key.clone(),
                size: stored.size,
                storage_class: cfg.manifest_storage_class.clone(),
                retain_until: cost::unix(until),
            }],
            SystemTime::now(),
        )?;
    }
    rec.storage = Some(cost::estimate(&ledger.held, SystemTime::now(), &prices));
    // A vault names the manifest itself (an archive id).
    rec.manifest_key = Some(stored.key);
    let local = cfg.state_dir.join("manifests");
    record::ensure_dir(&local, 0o700)?;
    let name = key.rsplit('/').next().unwrap_or(&key).to_string();
    record::write_json(&local.join(format!("{name}{MANIFEST_SUFFIX}")), &manifest)?;
    rec.manifest = Some(manifest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> serde_json::Value {
        serde_json::json!({
            "minion_id": "backup1",
            "history_dir": dir.join("history"),
            "work_dir": dir.join("work"),
            "state_dir": dir.join("state"),
            "recipients": [{"text": "-----BEGIN PGP PUBLIC KEY BLOCK-----"}],
            "target": {"bucket": "b", "endpoint_url": "http://127.0.0.1:1"},
        })
    }

    #[test]
    fn configuration_is_checked_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let ok = cfg(dir.path());
        ArchiveConfig::from_json(&ok.to_string()).unwrap();
        let bad = |change: &dyn Fn(&mut serde_json::Value), needle: &str| {
            let mut v = ok.clone();
            change(&mut v);
            let e = ArchiveConfig::from_json(&v.to_string()).unwrap_err();
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
        };
        bad(&|v| v["retain_days"] = 30.into(), "below the minimum of 90");
        bad(
            &|v| v["recipients"] = serde_json::json!([]),
            "no recipients",
        );
        bad(
            &|v| v["target"]["secret_access_key"] = "x".into(),
            "AWS chain",
        );
        bad(
            &|v| v["pack"] = serde_json::json!({"compressor": "lzo"}),
            "lzo",
        );
        bad(
            &|v| v["work_dir"] = v["history_dir"].clone(),
            "must not be inside the history",
        );
        bad(&|v| v["storage_class"] = "COLD".into(), "COLD");
        bad(
            &|v| v["recipients"] = serde_json::json!([{"file": "/x", "text": "y"}]),
            "exactly one",
        );
        bad(
            &|v| v["servers"] = serde_json::json!(["../etc"]),
            "cannot be used",
        );
    }

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

    #[test]
    fn stale_work_of_killed_runs_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        fs::create_dir_all(work.join("run-old")).unwrap();
        fs::write(work.join("run-old/history.sqfs"), b"plaintext").unwrap();
        fs::write(work.join("keep"), b"x").unwrap();
        let removed = remove_stale_work(&work).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(!work.join("run-old").exists() && work.join("keep").exists());
        assert!(
            remove_stale_work(&dir.path().join("none"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn work_dir_is_root_only_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let w = WorkDir::create(&dir.path().join("work"), "r1").unwrap();
            path = w.0.clone();
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o700
            );
            fs::write(path.join("image"), b"x").unwrap();
        }
        assert!(!path.exists());
    }
}
