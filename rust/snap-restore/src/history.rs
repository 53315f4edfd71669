//! Restores from the backup server's own history (no off-site, no key):
//! one file, a directory or a whole server at a chosen snapshot.
//!
//! History holds what rsync `--fake-super` stored: plain files whose real
//! type, mode and owner live in xattrs. The pick is packed into a small
//! SquashFS image (LZ4, through `snap_pack`, which keeps hard links, xattrs
//! and raw names) and unpacked with the fake-super metadata applied — the
//! same code path as an off-site restore. The image is also what travels to
//! a server when the restore goes back onto it (see `channel`).

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, Timespec, Timestamps};
use serde::{Deserialize, Serialize};
use snap_core::progress::ProgressSink;
use snap_core::{Error, ErrorKind, Progress, Result};
use snap_pack::{Compressor, FakeStat, PackOptions, show_bytes};

use crate::extract::{ExtractSummary, normalize};
use crate::landing::{Asked, Landing, land};
use crate::paths::{escape, unescape};

/// What to take from history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pick {
    /// Snapshot directory name (`recent.0`, `daily.3`, ...).
    pub snapshot: String,
    /// Minion id.
    pub server: String,
    /// Path on the server (escaped, see `paths::escape`); `/` or empty: all of it.
    pub path: String,
}

impl Pick {
    pub fn new(snapshot: &str, server: &str, path: &[u8]) -> Result<Pick> {
        if snapshot.is_empty() || snapshot.contains('/') || snapshot == "." || snapshot == ".." {
            return Err(Error::invalid_input(format!(
                "snapshot {snapshot:?} is not a snapshot name"
            )));
        }
        snap_core::account::validate_minion_id(server)?;
        Ok(Pick {
            snapshot: snapshot.into(),
            server: server.into(),
            path: escape(&normalize(path)?),
        })
    }

    fn rel(&self) -> Result<Vec<u8>> {
        normalize(&unescape(&self.path)?)
    }

    fn server_root(&self, history: &Path) -> PathBuf {
        history.join(&self.snapshot).join(&self.server)
    }
}

/// A parent directory's metadata, re-created on the far side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirMeta {
    pub name: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// A pick packed into an image: what is at the image's root and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedPick {
    pub pick: Pick,
    /// Name of the one entry at the image root (escaped).
    pub root_name: String,
    /// The pick is the whole server: the root entry's contents are the destination.
    pub whole_server: bool,
    /// The path's parent directories, outermost first.
    pub parents: Vec<DirMeta>,
    pub image_size: u64,
    pub files: u64,
    pub bytes: u64,
}

/// Metadata of a history entry as the server had it.
fn server_meta(path: &Path) -> Result<(u32, u32, u32, i64)> {
    let m = fs::symlink_metadata(path).map_err(|e| Error::io_path("reading", path, e))?;
    let (mut mode, mut uid, mut gid) = (m.mode() & 0o7777, m.uid(), m.gid());
    if let Ok(Some(v)) = xattr::get(path, "user.rsync.%stat")
        && let Some(fs) = FakeStat::parse(&v)
    {
        mode = fs.mode & 0o7777;
        uid = fs.uid;
        gid = fs.gid;
    }
    Ok((mode, uid, gid, m.mtime()))
}

/// Pack `pick` from `history` into a new image (must not exist).
pub fn pack_pick(
    history: &Path,
    pick: &Pick,
    image: &Path,
    progress: &Progress,
) -> Result<PackedPick> {
    let rel = pick.rel()?;
    let root = pick.server_root(history);
    if !root.is_dir() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "{} has no {} in snapshot {} ({} missing)",
                history.display(),
                pick.server,
                pick.snapshot,
                root.display()
            ),
        ));
    }
    let (src, name, parents, whole) = if rel.is_empty() {
        (
            history.join(&pick.snapshot),
            OsString::from(&pick.server),
            Vec::new(),
            true,
        )
    } else {
        let full = root.join(OsStr::from_bytes(&rel));
        if fs::symlink_metadata(&full).is_err() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "/{} is not in snapshot {} of {}",
                    show_bytes(&rel),
                    pick.snapshot,
                    pick.server
                ),
            ));
        }
        let comps: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
        let mut parents = Vec::new();
        let mut cur = root.clone();
        for c in &comps[..comps.len() - 1] {
            cur.push(OsStr::from_bytes(c));
            let (mode, uid, gid, mtime) = server_meta(&cur)?;
            parents.push(DirMeta {
                name: escape(c),
                mode,
                uid,
                gid,
                mtime,
            });
        }
        (
            full.parent().expect("has a parent").to_path_buf(),
            OsString::from(OsStr::from_bytes(comps[comps.len() - 1])),
            parents,
            false,
        )
    };
    let opts = PackOptions {
        compressor: Compressor::Lz4,
        level: None,
        selection: Some(snap_pack::Selection {
            depth: 1,
            names: BTreeSet::from([name.clone()]),
        }),
        ..PackOptions::default()
    };
    let sum = snap_pack::pack(&src, image, &opts, progress)?;
    Ok(PackedPick {
        pick: pick.clone(),
        root_name: escape(name.as_bytes()),
        whole_server: whole,
        parents,
        image_size: sum.image_size,
        files: sum.files,
        bytes: sum.bytes_in,
    })
}

pub(crate) fn set_dir_meta(path: &Path, m: &DirMeta) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        rustix::fs::chown(
            path,
            Some(rustix::process::Uid::from_raw(m.uid)),
            Some(rustix::process::Gid::from_raw(m.gid)),
        )
        .map_err(|e| Error::io_path("changing owner of", path, e.into()))?;
    }
    rustix::fs::chmod(path, Mode::from_raw_mode(m.mode))
        .map_err(|e| Error::io_path("changing mode of", path, e.into()))?;
    let t = Timespec {
        tv_sec: m.mtime as _,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::io_path("setting times of", path, e.into()))
}

/// What a history restore did.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRestore {
    pub packed: PackedPick,
    pub pack_seconds: f64,
    pub extract: ExtractSummary,
    pub seconds: f64,
}

/// Restore `pick` from `history` into `dest` (standing for the server's
/// `/`). The temporary image lives in a root-only directory under
/// `work_parent` (default: next to `dest`).
pub fn restore_from_history(
    history: &Path,
    pick: &Pick,
    dest: &Path,
    overwrite: bool,
    work_parent: Option<&Path>,
    sink: Option<Arc<dyn ProgressSink>>,
) -> Result<HistoryRestore> {
    let start = std::time::Instant::now();
    let parent = match work_parent {
        Some(p) => p.to_path_buf(),
        None => match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    let work = crate::fetch::WorkArea::open(
        &parent,
        &format!(
            ".snap-restore-{}-{:08x}",
            snap_core::record::run_id(),
            rand::random::<u32>()
        ),
    )?;
    let image = work.dir.join("pick.sqfs");
    let p = Progress::new("pack", None, sink.clone());
    let packed = pack_pick(history, pick, &image, &p)?;
    let ps = p.finish();
    let p = Progress::new("extract", Some(packed.bytes), sink);
    let asked = Asked::new(&pick.server, &pick.rel()?)?;
    // The backup server's own history, into a directory its operator chose:
    // devices and set-id files come back as the server had them.
    let landing = Landing {
        allow_special: true,
    };
    let extract = land(&image, &packed, &asked, dest, overwrite, landing, &p)?;
    drop(work);
    Ok(HistoryRestore {
        packed,
        pack_seconds: ps.elapsed.as_secs_f64(),
        extract,
        seconds: start.elapsed().as_secs_f64(),
    })
}
