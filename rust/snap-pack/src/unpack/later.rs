#![forbid(unsafe_code)]
//! Files set aside to be written grouped by their fragment block.
//!
//! A file's tail (or all of a small file) sits in a fragment block, which
//! must be decompressed whole (up to a block, 1 MiB at most) to give it.
//! In the image's order the files of one block come one after the other,
//! and the cache keeps the blocks read last (see [`super::frags`]); but an
//! image can point file after file at blocks read long before and let go:
//! 20,000 tiny duplicate files cycling through 300 blocks of 1 MiB cost a
//! 1 MiB decompression each, 12 s of CPU for a 516 KiB image (54 s with
//! unsquashfs). So a file whose block was read twice already and is not
//! kept now is created (its name, for hard links and the directory's
//! listing) and set aside; the files set aside are written later, sorted
//! by block, so each block is decompressed about three times (twice as
//! files came, once per batch, and a few more when writers race a queue
//! ahead): the work is bounded by the image's blocks, not by how often
//! files point back at them.
//!
//! A batch holds at most [`LATER_BYTES`] of paths and metadata; the
//! directories with a file set aside below get their metadata after it (a
//! directory's mode may shut out the path that reopens a file). A file or
//! directory is opened again beneath the destination, without following a
//! symlink, and only as the entry it was (device and inode): a directory
//! renamed and replaced meanwhile is an error, not a place to write.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use snap_core::{Error, ErrorKind, Result};

use super::apply::Attrs;
use super::extract::Extractor;
use super::frags::{BlockAt, SharedFrags};
use super::writer::{Job, QUEUED_XATTRS_MAX, write_data};
use crate::util::{show, show_bytes};

/// Paths and metadata the files set aside may hold before they are written.
const LATER_BYTES: usize = 32 << 20;
/// What a file set aside takes besides its path and xattrs.
const ASIDE_OVERHEAD: usize = 160;
/// What an xattr takes besides its name and value (two vectors and two
/// allocations: a cold attack's 6,000 empty xattrs a file made a batch
/// weigh ten times its count).
const XATTR_OVERHEAD: usize = 96;

/// A created, empty regular file whose data is written later.
pub(super) struct Aside {
    pub(super) block: BlockAt,
    pub(super) iref: u64,
    pub(super) size: u64,
    pub(super) rel: Vec<u8>,
    pub(super) attrs: Attrs,
    /// Its device and inode number: what it is opened again as.
    pub(super) id: (u64, u64),
}

/// What a path and metadata kept here take: their bytes and, for each
/// xattr, its two vectors and their allocations.
fn footprint(rel: &[u8], attrs: &Attrs) -> usize {
    ASIDE_OVERHEAD + rel.len() + attrs.weight() + XATTR_OVERHEAD * attrs.xattrs.len()
}

/// A directory whose metadata waits for files set aside below it: its
/// path, metadata and identity (as [`Aside::id`]).
pub(super) type Postponed = (Vec<u8>, Attrs, (u64, u64));

#[derive(Default)]
pub(super) struct Later {
    /// The block of the last file written as it came.
    last: Option<BlockAt>,
    files: Vec<Aside>,
    bytes: usize,
    dirs: Vec<Postponed>,
    /// Files set aside so far.
    pub(super) count: u64,
}

impl Later {
    /// Whether a file whose tail is in `block` waits: the block was read
    /// twice already, and the file before did not use it. Whether the
    /// cache holds it now says little: a writer reads it up to a queue
    /// later, when a cycle longer than the cache has pushed it out (a
    /// first try that asked that set aside a third of the files and read
    /// each block 30 times). A block read twice by chance (a chain's image
    /// reads 4 % of its blocks twice) sets aside only the files that come
    /// back to it later.
    pub(super) fn waits(&mut self, block: BlockAt, frags: &SharedFrags) -> bool {
        if self.last == Some(block) || !frags.read_twice(block) {
            self.last = Some(block);
            return false;
        }
        true
    }

    pub(super) fn push(&mut self, a: Aside) {
        self.bytes += footprint(&a.rel, &a.attrs);
        self.count += 1;
        self.files.push(a);
    }

    pub(super) fn is_full(&self) -> bool {
        self.bytes >= LATER_BYTES
    }

    /// A directory with files set aside below closed: its metadata
    /// after them (`id` as [`Aside::id`]). Counted in the batch like a file.
    pub(super) fn push_dir(&mut self, rel: Vec<u8>, attrs: Attrs, id: (u64, u64)) {
        self.bytes += footprint(&rel, &attrs);
        self.dirs.push((rel, attrs, id));
    }

    /// The files set aside, by block (stable: in the image's order within
    /// one), and the directories that waited for them, in the order they
    /// closed (deepest first).
    pub(super) fn take(&mut self) -> (Vec<Aside>, Vec<Postponed>) {
        let mut files = std::mem::take(&mut self.files);
        files.sort_by_key(|a| a.block);
        self.bytes = 0;
        (files, std::mem::take(&mut self.dirs))
    }
}

impl Extractor<'_> {
    /// Write the files set aside, by block, through the writers (each
    /// opened again beneath the destination, no symlink followed, and
    /// required to be the very file this extraction created: a directory
    /// renamed and replaced meanwhile in a destination others can write to
    /// is an error, not a file written), then apply the metadata of the
    /// directories that waited for them. A file whose xattrs are too heavy
    /// to queue is written here, in its turn.
    pub(super) fn write_later(&mut self) -> Result<()> {
        let (files, dirs) = self.later.take();
        for a in files {
            let fd = self.again(&a.rel, OFlags::WRONLY, a.id)?;
            let file = File::from(fd);
            if a.attrs.weight() > QUEUED_XATTRS_MAX {
                write_data(
                    &mut self.img,
                    self.progress,
                    &self.apply,
                    &file,
                    (a.iref, Some(a.block)),
                    a.size,
                    &a.rel,
                )?;
                self.apply
                    .finish_fd(&OwnedFd::from(file), &a.attrs, &a.rel)?;
                continue;
            }
            let job = Job {
                file,
                iref: a.iref,
                size: a.size,
                fragment: Some(a.block),
                rel: a.rel,
                attrs: a.attrs,
            };
            let sent = self.data.as_ref().is_some_and(|tx| tx.send(job).is_ok());
            if !sent {
                return Err(Error::internal(
                    "unpack: a data writer stopped (its error follows)",
                ));
            }
        }
        for (rel, a, id) in dirs {
            let fd = self.again(&rel, OFlags::RDONLY | OFlags::DIRECTORY, id)?;
            self.apply.finish_fd(&fd, &a, &rel)?;
        }
        Ok(())
    }

    /// Open `rel` again, beneath the destination, and require it to be the
    /// entry with identity `id` (see [`identity`]).
    fn again(&self, rel: &[u8], flags: OFlags, id: (u64, u64)) -> Result<OwnedFd> {
        match open_again(&self.dest_fd, rel, flags, id) {
            Ok(fd) => Ok(fd),
            Err(Again::Io(e)) => Err(self.fail("opening again", rel, e)),
            Err(Again::Replaced) => Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "{}: {} was replaced while the restore ran (someone else can write in the \
                     destination); nothing written through it",
                    show(&self.apply.dest),
                    show_bytes(rel)
                ),
            )),
        }
    }
}

/// Why an entry could not be opened again.
#[derive(Debug)]
pub(super) enum Again {
    Io(rustix::io::Errno),
    /// Another entry stands at its path now.
    Replaced,
}

/// Open `rel` beneath `dir` without following a symlink, as the entry
/// with identity `id` only.
pub(super) fn open_again(
    dir: &OwnedFd,
    rel: &[u8],
    flags: OFlags,
    id: (u64, u64),
) -> std::result::Result<OwnedFd, Again> {
    let fd = rustix::fs::openat2(
        dir,
        OsStr::from_bytes(rel),
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(Again::Io)?;
    if identity(&fd).map_err(Again::Io)? != id {
        return Err(Again::Replaced);
    }
    Ok(fd)
}

/// What names an entry whatever its path: its device and inode number.
pub(super) fn identity(fd: impl std::os::fd::AsFd) -> rustix::io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cold attack on ddb4e02 (docs/reviews/2026-12-01-set-aside.md): in a
    /// destination others could write to, a directory holding files set
    /// aside was renamed and replaced by one of the attacker's, and root
    /// wrote the restored files into the attacker's (open) files.
    #[test]
    fn an_entry_is_opened_again_only_as_itself() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("b")).unwrap();
        std::fs::write(d.path().join("b/f"), b"").unwrap();
        let dest: OwnedFd = File::open(d.path()).unwrap().into();
        let f = File::open(d.path().join("b/f")).unwrap();
        let id = identity(&f).unwrap();
        let fd = open_again(&dest, b"b/f", OFlags::WRONLY, id).unwrap();
        assert_eq!(identity(&fd).unwrap(), id);
        // The directory renamed away and another put in its place.
        std::fs::rename(d.path().join("b"), d.path().join("b.old")).unwrap();
        std::fs::create_dir(d.path().join("b")).unwrap();
        std::fs::write(d.path().join("b/f"), b"theirs").unwrap();
        let e = open_again(&dest, b"b/f", OFlags::WRONLY, id).unwrap_err();
        assert!(matches!(e, Again::Replaced), "{e:?}");
        // A symlink in the way is not followed.
        std::fs::remove_dir_all(d.path().join("b")).unwrap();
        std::os::unix::fs::symlink("b.old", d.path().join("b")).unwrap();
        let e = open_again(&dest, b"b/f", OFlags::WRONLY, id).unwrap_err();
        assert!(matches!(e, Again::Io(_)), "{e:?}");
    }

    #[test]
    fn a_batch_counts_what_its_paths_and_xattrs_take() {
        let mut later = Later::default();
        let attrs = |n: usize| Attrs {
            kind: super::super::EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            rdev: (0, 0),
            xattrs: (0..n)
                .map(|i| (format!("user.{i}").into_bytes(), Vec::new()))
                .collect(),
        };
        // 6,000 empty xattrs weigh 6 bytes each by their names, but take
        // a hundred: the batch fills by what they take.
        let mut dirs = 0;
        while !later.is_full() {
            later.push_dir(format!("d{dirs}").into_bytes(), attrs(6_000), (0, dirs));
            dirs += 1;
        }
        assert!(
            dirs <= (LATER_BYTES / (6_000 * XATTR_OVERHEAD)) as u64 + 1,
            "{dirs}"
        );
        let (files, kept) = later.take();
        assert!(files.is_empty() && kept.len() as u64 == dirs);
        assert!(!later.is_full());
    }
}
