#![forbid(unsafe_code)]
//! Regular files: their data into the image (holes skipped), their inodes
//! written from a [`FileLayout`], and, for chain links, files already in the
//! image referenced instead of read.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::SeekFrom;
use snap_core::{Error, Result};

use super::packer::{Meta, Packer, Slot, Target};
use super::xattrs::XSrc;
use crate::ffi;
use crate::layout::{FileLayout, InodeHead, write_file_inode};
use crate::sys;
use crate::util::io_err;
use crate::walk::{self, St};

/// Identity of a packed file, as the chain index records it. A later link
/// reuses a file's data only if every field is equal: the same inode
/// (device, number, and generation and/or birth time, which change when an
/// inode number is reused), the same size and modification time, below the
/// same server (`owner`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub generation: Option<u32>,
    pub btime: Option<(i64, u32)>,
    pub size: u64,
    pub mtime: (i64, u32),
    pub owner: u32,
}

impl FileKey {
    /// The key of an open file, or `None` where the file system keeps
    /// neither a generation nor a birth time: then an inode number alone
    /// could be a reused one, and the file is always read.
    pub fn of(meta: &St, f: &File, owner: u32) -> Option<FileKey> {
        let generation = generation_of(meta.dev, f);
        if generation.is_none() && meta.btime.is_none() {
            return None;
        }
        Some(FileKey {
            dev: meta.dev,
            ino: meta.ino,
            generation,
            btime: meta.btime,
            size: meta.size,
            mtime: (meta.mtime, meta.mtime_nsec),
            owner,
        })
    }
}

thread_local! {
    /// The last device found to keep no inode generations.
    static NO_GENERATION: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The inode generation, asking each device once whether it keeps them.
fn generation_of(dev: u64, f: &File) -> Option<u32> {
    if NO_GENERATION.get() == Some(dev) {
        return None;
    }
    let g = ffi::inode_generation(f);
    if g.is_none() {
        NO_GENERATION.set(Some(dev));
    }
    g
}

/// What a chain link knows about files already in its image.
pub(crate) trait Reuse {
    /// The number standing for server `name` in file keys.
    fn owner(&mut self, name: &[u8]) -> u32;
    /// Where the image already holds this file's data, if it does.
    fn lookup(&mut self, key: &FileKey) -> Result<Option<FileLayout>>;
    /// Remember where the new image holds a file's data.
    fn record(&mut self, key: &FileKey, layout: &FileLayout, reused: bool) -> Result<()>;
}

/// The data a chain image still uses: extents of data blocks and fragment
/// blocks referenced by its files.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub extents: Vec<(u64, u64)>,
    pub frags: Vec<u64>,
}

impl Live {
    fn add(&mut self, l: &FileLayout) {
        let len = l.data_len();
        if len > 0 {
            self.extents.push((l.blocks_start, len));
        }
        if let Some((idx, _)) = l.frag {
            let word = idx as usize / 64;
            if self.frags.len() <= word {
                self.frags.resize(word + 1, 0);
            }
            self.frags[word] |= 1 << (idx % 64);
        }
    }

    /// Bytes of data blocks in use (overlaps, from deduplication, counted once).
    pub fn data_bytes(&mut self) -> u64 {
        self.extents.sort_unstable();
        let mut total = 0;
        let mut end = 0u64;
        for &(start, len) in &self.extents {
            let e = start + len;
            if e > end {
                total += e - start.max(end);
                end = e;
            }
        }
        total
    }

    pub fn frag_used(&self, idx: u32) -> bool {
        self.frags
            .get(idx as usize / 64)
            .is_some_and(|w| w & (1 << (idx % 64)) != 0)
    }
}

/// Blocks a sparse file hands to the block processor at a time.
const SPARSE_CHUNK_BLOCKS: u64 = 1024;

impl Packer<'_> {
    /// Write the inode of a regular file whose data is placed.
    pub(super) fn write_file(
        &mut self,
        l: &FileLayout,
        inum: u32,
        meta: &Meta,
        nlink: u32,
    ) -> Result<u64> {
        if let Some(live) = &mut self.live {
            live.add(l);
        }
        let head = InodeHead {
            mode: meta.mode,
            uid_idx: meta.uid_idx,
            gid_idx: meta.gid_idx,
            mtime: meta.mtime,
            inum,
        };
        write_file_inode(&mut self.im, l, &head, nlink, meta.xattr, self.block_size)
            .map_err(|e| self.sq(e))
    }

    /// A regular file: referenced if a chain link already holds it, else read.
    pub(super) fn add_regular(
        &mut self,
        dir: &File,
        name: &std::ffi::CStr,
        path: &Path,
        meta: &St,
        inum: u32,
        nlink: u32,
    ) -> Result<Target> {
        self.sum.files += 1;
        let f = walk::open_file_at(dir, name).map_err(|e| io_err("opening", path, e))?;
        let m = self.meta_of(XSrc::Fd(&f), path, meta)?;
        let key = match self.reuse {
            // A file beside the servers belongs to none: never keyed.
            Some(_) if self.owner == super::packer::NO_OWNER => None,
            Some(_) => {
                let k = FileKey::of(meta, &f, self.owner);
                if k.is_none() {
                    self.sum.unkeyed_files += 1;
                }
                k
            }
            None => None,
        };
        if let (Some(k), Some(r)) = (&key, self.reuse.as_mut())
            && let Some(layout) = r.lookup(k)?
        {
            r.record(k, &layout, true)?;
            self.sum.reused_files += 1;
            self.sum.reused_bytes += meta.size;
            self.progress.add(meta.size);
            let iref = self.write_file(&layout, inum, &m, nlink)?;
            return Ok(Target::Known { inum, iref });
        }
        match self.add_file(f, path, meta)? {
            Some(layout) => {
                if let (Some(k), Some(r)) = (&key, self.reuse.as_mut()) {
                    r.record(k, &layout, false)?;
                }
                let iref = self.write_file(&layout, inum, &m, nlink)?;
                Ok(Target::Known { inum, iref })
            }
            None => {
                self.slots.push(Slot::File {
                    inum,
                    meta: m,
                    nlink,
                    link_key: meta.linked().then_some((meta.dev, meta.ino)),
                    key: key.map(Box::new),
                });
                Ok(Target::Slot(self.slots.len() as u32 - 1))
            }
        }
    }

    /// Feed a regular file to the block processor. Returns its layout at
    /// once for an empty or sparse file, `None` if it waits for compression.
    fn add_file(&mut self, mut f: File, path: &Path, meta: &St) -> Result<Option<FileLayout>> {
        let expect = meta.size;
        if expect == 0 {
            return Ok(Some(FileLayout::default()));
        }
        if expect > self.block_size as u64 && has_holes(&f, expect) {
            return self.add_sparse(&f, path, meta).map(Some);
        }
        self.bp.begin_file(0).map_err(|e| self.sq(e))?;
        let mut total = 0u64;
        loop {
            let n = match f.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = self.bp.end_file();
                    return Err(io_err("reading", path, e));
                }
            };
            total += n as u64;
            if total > expect {
                let _ = self.bp.end_file();
                return Err(self.changed(path, "file grew"));
            }
            if let Err(e) = self.bp.append(&self.buf[..n]) {
                return Err(self.sq(e));
            }
            self.progress.add(n as u64);
        }
        self.sum.bytes_in += total;
        let done = self.bp.end_file().map_err(|e| self.sq(e))?;
        if total != expect {
            return Err(self.changed(path, "file shrank"));
        }
        if done.is_some() {
            return Err(Error::internal("pack: a file with data completed at once"));
        }
        Ok(None)
    }

    /// A file with holes: only the blocks its data extents touch are read
    /// and compressed (each run of them as one uncompacted piece, so the
    /// pieces lie back to back); every other block is listed as sparse.
    fn add_sparse(&mut self, f: &File, path: &Path, meta: &St) -> Result<FileLayout> {
        let bs = self.block_size as u64;
        let size = meta.size;
        // Nothing of earlier files may land between this file's blocks.
        let done = self.bp.sync().map_err(|e| self.sq(e))?;
        self.synced.extend(done);
        let mut layout = FileLayout {
            size,
            ..FileLayout::default()
        };
        let mut next_block = 0u64; // first block not yet in the layout
        let mut next_off: Option<u64> = None; // where the next stored block must start
        let mut pos = 0u64;
        while let Some((start, end)) =
            data_extent(f, pos, size).map_err(|e| io_err("reading", path, e))?
        {
            let first = (start / bs).max(next_block);
            let last = end.div_ceil(bs); // exclusive
            pos = last * bs;
            if first >= last {
                continue;
            }
            layout.push_holes(first - next_block);
            self.progress.add((first - next_block) * bs);
            let mut b = first;
            while b < last {
                let upto = (b + SPARSE_CHUNK_BLOCKS).min(last);
                let piece = self.sparse_piece(f, path, b, upto, size)?;
                if piece.data_len() > 0 {
                    match next_off {
                        None => layout.blocks_start = piece.blocks_start,
                        Some(off) if off != piece.blocks_start => {
                            return Err(Error::internal(format!(
                                "pack: sparse file data not contiguous ({off} != {})",
                                piece.blocks_start
                            )));
                        }
                        Some(_) => {}
                    }
                    next_off = Some(piece.blocks_start + piece.data_len());
                }
                for w in piece.words {
                    if w & crate::layout::HOLES != 0 {
                        layout.push_holes((w & !crate::layout::HOLES) as u64);
                    } else {
                        layout.push(w);
                    }
                }
                b = upto;
            }
            next_block = last;
        }
        let total_blocks = size.div_ceil(bs);
        layout.push_holes(total_blocks - next_block);
        self.progress.add((total_blocks - next_block) * bs);
        let now = walk::stat_fd(f).map_err(|e| io_err("reading", path, e))?;
        if now.size != size || (now.mtime, now.mtime_nsec) != (meta.mtime, meta.mtime_nsec) {
            return Err(self.changed(path, "size or time"));
        }
        self.sum.sparse_files += 1;
        self.sum.hole_bytes += layout.sparse_bytes(self.block_size);
        Ok(layout)
    }

    /// Blocks `first..last` of a sparse file through the block processor,
    /// as one piece; returns the piece's layout.
    fn sparse_piece(
        &mut self,
        f: &File,
        path: &Path,
        first: u64,
        last: u64,
        size: u64,
    ) -> Result<FileLayout> {
        let bs = self.block_size as u64;
        let flags = sys::SQFS_BLK_DONT_FRAGMENT | sys::SQFS_BLK_DONT_DEDUPLICATE;
        self.bp.begin_file(flags).map_err(|e| self.sq(e))?;
        let end = (last * bs).min(size);
        let mut off = first * bs;
        while off < end {
            let n = ((end - off) as usize).min(self.buf.len());
            if let Err(e) = f.read_exact_at(&mut self.buf[..n], off) {
                let _ = self.bp.end_file();
                return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                    self.changed(path, "file shrank")
                } else {
                    io_err("reading", path, e)
                });
            }
            self.bp.append(&self.buf[..n]).map_err(|e| self.sq(e))?;
            self.sum.bytes_in += n as u64;
            self.progress.add(n as u64);
            off += n as u64;
        }
        self.bp.end_file().map_err(|e| self.sq(e))?;
        let mut done = self.bp.sync().map_err(|e| self.sq(e))?;
        let inode = match (done.pop(), done.is_empty()) {
            (Some(i), true) => i,
            _ => return Err(Error::internal("pack: a sparse piece left other inodes")),
        };
        FileLayout::from_inode(&inode).map_err(|e| self.sq(e))
    }
}

/// Whether an open file of `size` bytes has a hole before its end. (Leaves
/// the file offset at 0.)
fn has_holes(f: &File, size: u64) -> bool {
    let holes = matches!(rustix::fs::seek(f, SeekFrom::Hole(0)), Ok(h) if h < size);
    let _ = rustix::fs::seek(f, SeekFrom::Start(0));
    holes
}

/// The next extent holding data at or after `from`: `(start, end)`.
fn data_extent(f: &File, from: u64, size: u64) -> io::Result<Option<(u64, u64)>> {
    if from >= size {
        return Ok(None);
    }
    let start = match rustix::fs::seek(f, SeekFrom::Data(from)) {
        Ok(s) if s < size => s,
        Ok(_) | Err(rustix::io::Errno::NXIO) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let end = match rustix::fs::seek(f, SeekFrom::Hole(start)) {
        Ok(e) => e.min(size),
        Err(rustix::io::Errno::NXIO) => size,
        Err(e) => return Err(e.into()),
    };
    Ok(Some((start, end)))
}
