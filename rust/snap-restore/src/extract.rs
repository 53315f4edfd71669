//! An image (already verified) → the destination, with the servers' own
//! metadata: `snap_pack::unpack` with `apply_fake_super` into a staging
//! directory, rsync's leftover ACLs and xattrs applied, then moved into place.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use snap_core::{Error, Progress, Result};
use snap_pack::{Present, UnpackOptions, show_bytes};

use crate::install::{InstallSummary, Staging, install_kept};
use crate::rsyncmeta::{RsyncMetaSummary, apply_tree};

/// What to take out of an image, and where it lands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Paths inside the image (raw bytes, relative, `/`-separated, e.g.
    /// `recent.0/db1/etc`). Empty: everything (below `base` if set).
    pub paths: Vec<Vec<u8>>,
    /// If set, the contents of this image directory become the destination
    /// (for `recent.0/db1` the destination stands for db1's `/`), and every
    /// path must lie below it. If not, the destination mirrors the image
    /// (`DEST/recent.0/db1/...`).
    pub base: Option<Vec<u8>>,
}

impl Selection {
    /// The whole image, mirrored.
    pub fn whole() -> Self {
        Selection::default()
    }

    /// Raw image paths, mirrored under the destination.
    pub fn paths(paths: Vec<Vec<u8>>) -> Self {
        Selection { paths, base: None }
    }

    /// A server at one snapshot: `paths` are paths on that server (leading
    /// `/` optional); none: the whole server. The destination stands for
    /// the server's `/`.
    pub fn server(snapshot: &str, server: &str, paths: &[Vec<u8>]) -> Result<Self> {
        check_component("snapshot", snapshot.as_bytes())?;
        snap_core::account::validate_minion_id(server)?;
        let base = format!("{snapshot}/{server}").into_bytes();
        let mut out = Vec::new();
        for p in paths {
            let rel = normalize(p)?;
            if rel.is_empty() {
                out.clear();
                break;
            }
            let mut full = base.clone();
            full.push(b'/');
            full.extend_from_slice(&rel);
            out.push(full);
        }
        Ok(Selection {
            paths: out,
            base: Some(base),
        })
    }

    /// The paths to hand to unpack (none: everything).
    pub(crate) fn unpack_paths(&self) -> Result<Vec<Vec<u8>>> {
        let base = match &self.base {
            Some(b) => Some(normalize(b)?),
            None => None,
        };
        let mut out = Vec::new();
        for p in &self.paths {
            let rel = normalize(p)?;
            if let Some(b) = &base
                && !(rel == *b || rel.starts_with(b) && rel.get(b.len()) == Some(&b'/'))
            {
                return Err(Error::invalid_input(format!(
                    "selected path {} is not below {}",
                    show_bytes(&rel),
                    show_bytes(b)
                )));
            }
            out.push(rel);
        }
        if out.is_empty()
            && let Some(b) = base
            && !b.is_empty()
        {
            out.push(b);
        }
        Ok(out)
    }
}

fn check_component(what: &str, c: &[u8]) -> Result<()> {
    if c.is_empty() || c == b"." || c == b".." || c.contains(&b'/') || c.contains(&0) {
        return Err(Error::invalid_input(format!(
            "{what} {:?} is not a single path component",
            show_bytes(c)
        )));
    }
    Ok(())
}

/// `/a//b/` → `a/b`; refuses `.`, `..` and NUL.
pub fn normalize(p: &[u8]) -> Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(p.len());
    for c in p.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
        if c == b"." || c == b".." || c.contains(&0) {
            return Err(Error::invalid_input(format!(
                "path {:?} may not contain '.', '..' or NUL",
                show_bytes(p)
            )));
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    Ok(out)
}

/// What [`extract_image`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExtractSummary {
    pub dirs: u64,
    pub files: u64,
    pub hardlinks: u64,
    pub symlinks: u64,
    pub specials: u64,
    /// Devices not created (not root).
    pub skipped_devices: u64,
    pub fake_super_applied: u64,
    pub skipped_xattrs: u64,
    pub bytes: u64,
    pub rsync_meta: RsyncMetaSummary,
    pub install: InstallSummary,
    pub seconds: f64,
    pub dest: PathBuf,
}

/// Extract `selection` of the (verified) `image` into `dest` (which may
/// exist: see [`crate::install`]). `progress` counts bytes written.
pub fn extract_image(
    image: &Path,
    selection: &Selection,
    dest: &Path,
    overwrite: bool,
    progress: &Progress,
) -> Result<ExtractSummary> {
    extract_part(image, None, selection, dest, overwrite, progress)
}

/// [`extract_image`] of an image of which only `present` was filled in
/// (all of it when `None`): a read anywhere else fails.
pub fn extract_part(
    image: &Path,
    present: Option<Arc<Present>>,
    selection: &Selection,
    dest: &Path,
    overwrite: bool,
    progress: &Progress,
) -> Result<ExtractSummary> {
    let start = std::time::Instant::now();
    let select = selection.unpack_paths()?;
    let staging = Staging::for_dest(dest)?;
    let tree = staging.path().join("tree");
    let opts = UnpackOptions {
        select,
        apply_fake_super: true,
        keep_fake_super_xattr: false,
        present,
    };
    let un = snap_pack::unpack(image, &tree, &opts, progress)?;
    let content = match &selection.base {
        Some(b) => {
            let b = normalize(b)?;
            if b.is_empty() {
                tree.clone()
            } else {
                tree.join(std::ffi::OsStr::from_bytes(&b))
            }
        }
        None => tree.clone(),
    };
    finish(&content, dest, overwrite, staging, &un, start)
}

/// The last steps of every extraction, once the staged `content` holds what
/// was asked for: ACLs and the rest rsync packed applied, then moved into
/// `dest` (see [`crate::install`]); the staging directory goes.
pub(crate) fn finish(
    content: &Path,
    dest: &Path,
    overwrite: bool,
    staging: Staging,
    un: &snap_pack::UnpackSummary,
    start: std::time::Instant,
) -> Result<ExtractSummary> {
    let meta = apply_tree(content)?;
    finish_kept(content, dest, overwrite, staging, un, meta, 0, start)
}

/// [`finish`] once rsync's metadata is applied, keeping the top `keep`
/// levels of `dest` as they are (see [`crate::install::install_kept`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_kept(
    content: &Path,
    dest: &Path,
    overwrite: bool,
    staging: Staging,
    un: &snap_pack::UnpackSummary,
    meta: RsyncMetaSummary,
    keep: usize,
    start: std::time::Instant,
) -> Result<ExtractSummary> {
    let inst = install_kept(content, dest, overwrite, keep)?;
    drop(staging);
    Ok(ExtractSummary {
        dirs: un.dirs,
        files: un.files,
        hardlinks: un.hardlinks,
        symlinks: un.symlinks,
        specials: un.specials,
        skipped_devices: un.skipped_devices,
        fake_super_applied: un.fake_super_applied,
        skipped_xattrs: un.skipped_xattrs,
        bytes: un.bytes_out,
        rsync_meta: meta,
        install: inst,
        seconds: start.elapsed().as_secs_f64(),
        dest: dest.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_selection_is_below_its_base() {
        let s = Selection::server(
            "recent.0",
            "db1",
            &[b"/srv/data".to_vec(), b"etc/".to_vec()],
        )
        .unwrap();
        assert_eq!(s.base.as_deref(), Some(&b"recent.0/db1"[..]));
        assert_eq!(
            s.unpack_paths().unwrap(),
            vec![
                b"recent.0/db1/srv/data".to_vec(),
                b"recent.0/db1/etc".to_vec()
            ]
        );
        let whole = Selection::server("recent.0", "db1", &[b"/".to_vec()]).unwrap();
        assert_eq!(
            whole.unpack_paths().unwrap(),
            vec![b"recent.0/db1".to_vec()]
        );
        assert!(Selection::server("../x", "db1", &[]).is_err());
        assert!(Selection::server("recent.0", "db1", &[b"/a/../etc".to_vec()]).is_err());
        let bad = Selection {
            paths: vec![b"recent.1/db1/x".to_vec()],
            base: Some(b"recent.0/db1".to_vec()),
        };
        assert!(
            bad.unpack_paths()
                .unwrap_err()
                .to_string()
                .contains("not below")
        );
    }
}
