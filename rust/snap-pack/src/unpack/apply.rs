#![forbid(unsafe_code)]
//! An extracted entry's metadata: owner, xattrs, mode, times.
//!
//! One [`Apply`] per thread that finishes entries (the extractor, and each
//! writer that fills regular files, which gets a [`Apply::fresh`] copy):
//! both apply metadata in the same order and count what they may not set.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps, XattrFlags};
use rustix::process::{Gid, Uid};
use snap_core::{Error, Result};

use super::EntryKind;
use crate::util::{io_err, show_bytes};

/// Metadata to apply to one created entry.
pub(super) struct Attrs {
    pub(super) kind: EntryKind,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: u32,
    pub(super) rdev: (u32, u32),
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Attrs {
    /// Bytes its xattrs hold (names and values).
    pub(super) fn weight(&self) -> usize {
        self.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// Applies entries' metadata under `dest`; counts the xattrs it may not set.
pub(super) struct Apply {
    /// The destination, for messages (nothing is resolved through it).
    pub(super) dest: PathBuf,
    /// Whether this process may set owners and `trusted.*`/`security.*` xattrs.
    pub(super) root: bool,
    pub(super) skipped_xattrs: u64,
}

impl Apply {
    pub(super) fn new(dest: &Path, root: bool) -> Apply {
        Apply {
            dest: dest.to_path_buf(),
            root,
            skipped_xattrs: 0,
        }
    }

    /// Another for the same destination, with nothing counted yet.
    pub(super) fn fresh(&self) -> Apply {
        Apply::new(&self.dest, self.root)
    }

    /// `rel` (a path under the destination) as a path, for messages.
    pub(super) fn target(&self, rel: &[u8]) -> PathBuf {
        self.dest.join(OsStr::from_bytes(rel))
    }

    pub(super) fn fail(&self, verb: &str, rel: &[u8], e: impl Into<io::Error>) -> Error {
        io_err(verb, &self.target(rel), e.into())
    }

    /// Owner, xattrs, mode, times on an open descriptor (not for symlinks).
    /// The owner first: a change of owner drops `security.capability` (and
    /// the set-id bits, which the mode then gives back).
    pub(super) fn finish_fd(&mut self, fd: &OwnedFd, a: &Attrs, rel: &[u8]) -> Result<()> {
        if self.root {
            rustix::fs::fchown(fd, Some(Uid::from_raw(a.uid)), Some(Gid::from_raw(a.gid)))
                .map_err(|e| self.fail("changing owner of", rel, e))?;
        }
        for (k, v) in &a.xattrs {
            match rustix::fs::fsetxattr(fd, k.as_slice(), v, XattrFlags::empty()) {
                Ok(()) => {}
                Err(rustix::io::Errno::PERM) if !self.root && !k.starts_with(b"user.") => {
                    self.skipped_xattrs += 1;
                }
                Err(e) => {
                    return Err(self.fail(&format!("setting xattr {} on", show_bytes(k)), rel, e));
                }
            }
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(a.mode))
            .map_err(|e| self.fail("changing mode of", rel, e))?;
        rustix::fs::futimens(fd, &times(a.mtime)).map_err(|e| self.fail("setting times of", rel, e))
    }

    /// Owner, xattrs, mode, times by name in `dir` (symlinks and specials),
    /// in the order of [`Apply::finish_fd`].
    pub(super) fn finish_at(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        a: &Attrs,
        rel: &[u8],
    ) -> Result<()> {
        if self.root {
            rustix::fs::chownat(
                dir,
                name,
                Some(Uid::from_raw(a.uid)),
                Some(Gid::from_raw(a.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.fail("changing owner of", rel, e))?;
        }
        if !a.xattrs.is_empty() {
            let p = proc_path(dir, name);
            for (k, v) in &a.xattrs {
                match rustix::fs::lsetxattr(&p, k.as_slice(), v, XattrFlags::empty()) {
                    Ok(()) => {}
                    // Linux refuses user.* xattrs on symlinks and specials.
                    Err(rustix::io::Errno::PERM) if k.starts_with(b"user.") => {}
                    Err(rustix::io::Errno::PERM) if !self.root => self.skipped_xattrs += 1,
                    Err(e) => {
                        return Err(self.fail(
                            &format!("setting xattr {} on", show_bytes(k)),
                            rel,
                            e,
                        ));
                    }
                }
            }
        }
        if a.kind != EntryKind::Symlink {
            // No fchmodat(AT_SYMLINK_NOFOLLOW) on Linux: it was just created by
            // mknodat in a directory of ours, so it is not a symlink.
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(a.mode), AtFlags::empty())
                .map_err(|e| self.fail("changing mode of", rel, e))?;
        }
        rustix::fs::utimensat(dir, name, &times(a.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail("setting times of", rel, e))
    }
}

fn times(mtime: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// `/proc/self/fd/N/name`: a path for the few calls that have no `*at` form
/// (lsetxattr). Only the final component is looked up, without following it.
fn proc_path(dir: &OwnedFd, name: &CStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
    p.push(OsStr::from_bytes(name.to_bytes()));
    p
}
