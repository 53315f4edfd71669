//! Restore and proof.
//!
//! - [`list::list_archives`]: archives as their manifests describe them, with
//!   storage class, lock and retrieval state from off-site now.
//! - [`restore_offsite`]: retrieval from archival classes (tier, wait),
//!   download with resume, decryption with the secret key given now, three
//!   integrity checks, then [`extract::extract_image`] of the selection.
//! - [`restore_file`]: the same from an archive file on disk (air-gapped).
//! - [`history::restore_from_history`]: one file, a directory or a whole
//!   server from the backup server's own history.
//! - [`channel`]: a packed pick sealed to a server's own SSH key, to travel
//!   back to that server through Salt; [`landing`]: where it lands there,
//!   rebuilt from what the operator asked, never from what the backup
//!   server says.
//! - [`creds`]: read-only off-site credentials sealed under a passphrase.
//! - [`proof`]: the restore drill and the off-site audit.
//!
//! Nothing is written to a restore's destination before the image passed
//! every check; the tree is built in a root-only staging directory on the
//! destination's file system and moved into place complete (see
//! [`install`]). Metadata comes back as the server had it: rsync
//! `--fake-super` xattrs are applied (owner, mode, devices, fifos,
//! symlinks), and so are the ACLs and the `security.*`/`trusted.*` xattrs
//! rsync kept under `user.rsync.*` ([`rsyncmeta`]).

pub mod assemble;
pub mod audit;
pub mod chain;
pub mod chainaudit;
pub mod chainlist;
pub mod channel;
pub mod creds;
pub mod extract;
pub mod fetch;
pub mod history;
pub mod install;
pub mod landing;
pub mod list;
pub mod paths;
pub mod proof;
pub mod retrieval;
pub mod rsyncmeta;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use snap_archive::Manifest;
use snap_core::progress::ProgressSink;
use snap_core::{Progress, Result};
use snap_crypt::SecretKeySource;
use snap_offsite::ArchiveTarget;

pub use extract::{ExtractSummary, Selection, extract_image};
pub use fetch::{
    Checks, FetchOptions, RetrievalOptions, VerifiedImage, fetch_offsite, open_archive_file,
};
pub use history::{Pick, restore_from_history};
pub use landing::{Asked, Landing, land};
pub use list::{ArchiveListing, list_archives, load_manifest};

/// What a restore from an archive did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub archive: Option<String>,
    pub created: Option<String>,
    pub checks: Checks,
    pub extract: ExtractSummary,
    pub seconds: f64,
}

fn report(
    img: &VerifiedImage,
    extract: ExtractSummary,
    start: std::time::Instant,
) -> RestoreReport {
    RestoreReport {
        archive: img.manifest.as_ref().map(|m| m.archive.key.clone()),
        created: img.manifest.as_ref().map(|m| m.created.clone()),
        checks: img.checks.clone(),
        extract,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Default parent of the work directory: next to the destination.
pub fn default_work_parent(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("/var/tmp"),
    }
}

/// Where a restore puts what: the selection out of the image, the
/// destination directory, and whether existing entries there may be replaced.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub selection: &'a Selection,
    pub dest: &'a Path,
    pub overwrite: bool,
}

/// Restore `out.selection` of the archive `manifest` describes from `target`
/// into `out.dest`.
pub fn restore_offsite(
    target: &dyn ArchiveTarget,
    manifest: &Manifest,
    key: &SecretKeySource,
    out: Output<'_>,
    opts: &FetchOptions,
    sink: Option<Arc<dyn ProgressSink>>,
) -> Result<RestoreReport> {
    let start = std::time::Instant::now();
    let img = fetch_offsite(target, manifest, key, opts, sink.clone())?;
    let p = Progress::new("extract", None, sink);
    let extract = extract_image(&img.path, out.selection, out.dest, out.overwrite, &p)?;
    Ok(report(&img, extract, start))
}

/// Restore `out.selection` of an archive file on disk into `out.dest`.
pub fn restore_file(
    archive: &Path,
    manifest: Option<Manifest>,
    key: &SecretKeySource,
    out: Output<'_>,
    work_parent: &Path,
    sink: Option<Arc<dyn ProgressSink>>,
) -> Result<RestoreReport> {
    let start = std::time::Instant::now();
    let img = open_archive_file(archive, manifest, key, work_parent, sink.clone())?;
    let p = Progress::new("extract", None, sink);
    let extract = extract_image(&img.path, out.selection, out.dest, out.overwrite, &p)?;
    Ok(report(&img, extract, start))
}

/// A drill against off-site: fetch and verify the sample's archive with the
/// drill key, restore the sample and compare it with what history holds.
pub fn drill_offsite(
    target: &dyn ArchiveTarget,
    sample: &proof::Sample,
    key: &SecretKeySource,
    opts: &FetchOptions,
    sink: Option<Arc<dyn ProgressSink>>,
) -> Result<proof::DrillReport> {
    if chain::is_chain_manifest(&sample.archive_key) {
        let m = chain::load_chain_manifest(target, &sample.archive_key)?;
        let (image, _checks, work) =
            chain::fetch_chain(&chain::Pieces::Offsite(target), &m, key, opts, sink)?;
        return proof::check_sample(&image, sample, &work.dir);
    }
    let manifest = load_manifest(target, &sample.archive_key)?;
    let img = fetch_offsite(target, &manifest, key, opts, sink)?;
    proof::check_sample(&img.path, sample, img.work_dir())
}
pub use zeroize;
