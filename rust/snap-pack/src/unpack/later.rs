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
//! by block, so each block is decompressed at most three times (twice as
//! files came, once per batch): the work is bounded by the image's blocks,
//! not by how often files point back at them.
//!
//! A batch holds at most [`LATER_BYTES`] of paths and metadata; the
//! directories that close while files wait get their metadata after them
//! (a directory's mode may shut out the path that reopens a file).

use super::apply::Attrs;
use super::frags::{BlockAt, SharedFrags};

/// Paths and metadata the files set aside may hold before they are written.
const LATER_BYTES: usize = 32 << 20;
/// What a file set aside takes besides its path and xattrs.
const ASIDE_OVERHEAD: usize = 160;

/// A created, empty regular file whose data is written later.
pub(super) struct Aside {
    pub(super) block: BlockAt,
    pub(super) iref: u64,
    pub(super) size: u64,
    pub(super) rel: Vec<u8>,
    pub(super) attrs: Attrs,
}

#[derive(Default)]
pub(super) struct Later {
    /// The block of the last file written as it came.
    last: Option<BlockAt>,
    files: Vec<Aside>,
    bytes: usize,
    dirs: Vec<(Vec<u8>, Attrs)>,
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
        self.bytes += ASIDE_OVERHEAD + a.rel.len() + a.attrs.weight();
        self.count += 1;
        self.files.push(a);
    }

    /// Whether files are waiting (directories that close now wait too).
    pub(super) fn pending(&self) -> bool {
        !self.files.is_empty()
    }

    pub(super) fn is_full(&self) -> bool {
        self.bytes >= LATER_BYTES
    }

    /// A directory closed while files wait: its metadata after them.
    pub(super) fn push_dir(&mut self, rel: Vec<u8>, attrs: Attrs) {
        self.bytes += ASIDE_OVERHEAD + rel.len() + attrs.weight();
        self.dirs.push((rel, attrs));
    }

    /// The files set aside, by block (stable: in the image's order within
    /// one), and the directories that waited for them, in the order they
    /// closed (deepest first).
    pub(super) fn take(&mut self) -> (Vec<Aside>, Vec<(Vec<u8>, Attrs)>) {
        let mut files = std::mem::take(&mut self.files);
        files.sort_by_key(|a| a.block);
        self.bytes = 0;
        (files, std::mem::take(&mut self.dirs))
    }
}
