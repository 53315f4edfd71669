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
//! 5. read the archive's lock back from the server (and set it where the
//!    server dropped it, see `snap_offsite::lockcheck`);
//! 6. put a manifest next to the archive: what is inside, sizes, hashes,
//!    recipients, the retention as read back. It is what restore lists.
//!    Its lock is read back the same way. A lock that cannot be established
//!    fails the run, naming the object: such a run is never called done.
//!
//! With `chain.enabled`, a run makes the base or the next link of a chain
//! instead (see [`chain`]): only what is new is packed and uploaded.
//!
//! Each stage reports progress (bytes, rate, ETA); the record of the run is
//! kept under `state_dir` whether it succeeded or not.

pub mod chain;
mod config;
pub mod cost;
mod manifest;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use snap_core::config::JsonConfig;
use snap_core::progress::ProgressSink;
use snap_core::{Error, ErrorKind, Progress, Result, lock, record};
use snap_offsite::{PutOptions, TargetSettings};

pub use config::{ArchiveConfig, PackSettings, RecipientSpec};
pub use manifest::{
    ArchiveObject, ArchiveRecord, LockRecord, Manifest, Plaintext, RecipientInfo, SnapshotEntry,
    StageTime, inventory,
};

/// Version of the manifest format.
pub const MANIFEST_FORMAT: &str = "snap-archive/1";
/// Suffix of archive objects and of their manifests.
pub const ARCHIVE_SUFFIX: &str = ".sqfs.gpg";
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

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
        locks: Vec::new(),
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

/// Read back the lock of an object this run completed (repairing it where
/// the server dropped it) and keep the verdict in the record. Every object a
/// run writes goes through here; a lock that cannot be established fails
/// the run, naming the object, the version and what to fix.
fn locked(
    target: &dyn snap_offsite::ArchiveTarget,
    up: &snap_offsite::UploadResult,
    rec: &mut ArchiveRecord,
) -> Result<Option<snap_offsite::LockCheck>> {
    let check = snap_offsite::ensure_upload_locked(target, up)?;
    if let Some(c) = &check {
        rec.locks.push(LockRecord::from(c));
    }
    Ok(check)
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
    let opts = cfg.pack_options()?;
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
    // The upload writer hashes the ciphertext it sends: encryption hashes
    // only the plaintext.
    let enc = match snap_crypt::encrypt_with(
        &file,
        &reading,
        &mut *writer,
        &writing,
        &recipients,
        snap_crypt::Digests::PLAINTEXT,
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
    if up.size != enc.ciphertext_bytes {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "uploaded object {} ({} bytes) differs from what was encrypted ({} bytes)",
                up.key, up.size, enc.ciphertext_bytes
            ),
        ));
    }
    drop(work); // the image is gone before the manifest claims success
    // The lock as the server holds it, not as it was asked for.
    let archive_lock = locked(target.as_ref(), &up, rec)?;
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
            lock_mode: match &archive_lock {
                Some(l) => l.now.mode.clone(),
                None => None,
            },
            retain_until: archive_lock
                .as_ref()
                .and_then(|l| l.now.retain_until)
                .map(rfc3339),
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
    locked(target.as_ref(), &stored, rec)?;
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
