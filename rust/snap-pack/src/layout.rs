#![forbid(unsafe_code)]
//! Where a regular file's data lives in an image: the part of a file inode
//! that a chain link needs to reference a file without reading it.
//!
//! Block lists are kept compact: a run of sparse blocks (holes) is one
//! word, so a 16 TiB file with a few data extents costs a few words here,
//! whatever the 134 million entries its inode lists on disk. File inodes
//! are serialised from a layout by [`write_file_inode`] (streaming the
//! block list, never holding it expanded) and parsed back by
//! [`FileHead::read`] + [`FileHead::read_words`].

use crate::ffi::{Inode, MetaTables, MetaWriter, SqResult, SqfsError};
use crate::sys;

/// In a compact block list, a word with this bit set stands for
/// `word & !HOLES` sparse blocks. (Real size words use bits 0-24 only.)
pub const HOLES: u32 = 1 << 31;

/// Bit of a block size word: the block is stored uncompressed.
pub const UNCOMPRESSED: u32 = 1 << 24;

/// On-disk bytes of a block size word.
pub fn on_disk(word: u32) -> u64 {
    (word & (UNCOMPRESSED - 1)) as u64
}

/// A regular file's data: size, first block, block sizes, tail fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileLayout {
    pub size: u64,
    /// Image offset of the first stored block (0 when none is stored).
    pub blocks_start: u64,
    /// `(fragment block index, offset in it)` of the tail end.
    pub frag: Option<(u32, u32)>,
    /// Block size words, holes run-length encoded (see [`HOLES`]).
    pub words: Vec<u32>,
}

impl FileLayout {
    /// The layout libsquashfs's block processor filled in.
    pub fn from_inode(inode: &Inode) -> SqResult<FileLayout> {
        let (blocks_start, idx, off) = inode.file_location();
        let mut l = FileLayout {
            size: inode.file_size()?,
            blocks_start,
            frag: (idx != NO_FRAG).then_some((idx, off)),
            words: Vec::new(),
        };
        for w in inode.block_sizes() {
            l.push(*w);
        }
        Ok(l)
    }

    /// Add the size word of the next block (0: a sparse block).
    pub fn push(&mut self, word: u32) {
        if word == 0 {
            self.push_holes(1);
        } else {
            self.words.push(word);
        }
    }

    /// Add `n` sparse blocks.
    pub fn push_holes(&mut self, mut n: u64) {
        while n > 0 {
            if let Some(last) = self.words.last_mut()
                && *last & HOLES != 0
                && *last != u32::MAX
            {
                let room = !HOLES - (*last & !HOLES);
                let take = n.min(room as u64) as u32;
                *last += take;
                n -= take as u64;
                continue;
            }
            let take = n.min((!HOLES) as u64) as u32;
            self.words.push(HOLES | take);
            n -= take as u64;
        }
    }

    /// Blocks listed (holes counted).
    pub fn block_count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| {
                if w & HOLES != 0 {
                    (w & !HOLES) as u64
                } else {
                    1
                }
            })
            .sum()
    }

    /// Bytes the stored blocks take in the image.
    pub fn data_len(&self) -> u64 {
        self.words
            .iter()
            .filter(|w| *w & HOLES == 0)
            .map(|w| on_disk(*w))
            .sum()
    }

    /// Blocks a file of this size lists in its inode.
    pub fn expected_blocks(&self, block_size: u32) -> u64 {
        let bs = block_size as u64;
        if self.frag.is_some() {
            self.size / bs
        } else {
            self.size.div_ceil(bs)
        }
    }

    /// Bytes of the file that are holes (not written to the image).
    pub fn sparse_bytes(&self, block_size: u32) -> u64 {
        let bs = block_size as u64;
        let mut index = 0u64;
        let mut sparse = 0u64;
        for w in &self.words {
            if w & HOLES != 0 {
                let n = (w & !HOLES) as u64;
                let start = index * bs;
                let end = ((index + n) * bs).min(self.size);
                sparse += end.saturating_sub(start);
                index += n;
            } else {
                index += 1;
            }
        }
        sparse
    }

    /// Whether this layout is one an image of this block size can hold.
    pub fn check(&self, block_size: u32) -> Result<(), String> {
        let want = self.expected_blocks(block_size);
        let got = self.block_count();
        if want != got {
            return Err(format!(
                "{got} blocks listed for {} bytes (want {want})",
                self.size
            ));
        }
        if let Some(w) = self.words.iter().find(|w| {
            *w & HOLES == 0
                && (on_disk(**w) > block_size as u64 || **w & !(2 * UNCOMPRESSED - 1) != 0)
        }) {
            return Err(format!("bad block size word {w:#x}"));
        }
        if self.frag.is_some() && self.size.is_multiple_of(block_size as u64) {
            return Err("a fragment for a file without a tail".into());
        }
        Ok(())
    }
}

/// Owner, mode, time and number of an inode, as its header stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeHead {
    pub mode: u16,
    pub uid_idx: u16,
    pub gid_idx: u16,
    pub mtime: u32,
    pub inum: u32,
}

const NO_XATTR: u32 = 0xFFFF_FFFF;
const NO_FRAG: u32 = 0xFFFF_FFFF;

/// Write a regular file inode for `l` and return its reference. Basic form
/// when it fits (as libsquashfs chooses), extended otherwise.
pub fn write_file_inode(
    mw: &mut MetaWriter,
    l: &FileLayout,
    head: &InodeHead,
    nlink: u32,
    xattr: u32,
    block_size: u32,
) -> SqResult<u64> {
    let sparse = l.sparse_bytes(block_size);
    let basic = l.blocks_start <= u32::MAX as u64
        && l.size <= u32::MAX as u64
        && nlink == 1
        && xattr == NO_XATTR
        && sparse == 0;
    let (frag_idx, frag_off) = l.frag.unwrap_or((NO_FRAG, 0));
    let mut h = Vec::with_capacity(56);
    let ty = if basic {
        sys::SQFS_INODE_FILE
    } else {
        sys::SQFS_INODE_EXT_FILE
    };
    h.extend_from_slice(&(ty as u16).to_le_bytes());
    h.extend_from_slice(&head.mode.to_le_bytes());
    h.extend_from_slice(&head.uid_idx.to_le_bytes());
    h.extend_from_slice(&head.gid_idx.to_le_bytes());
    h.extend_from_slice(&head.mtime.to_le_bytes());
    h.extend_from_slice(&head.inum.to_le_bytes());
    if basic {
        h.extend_from_slice(&(l.blocks_start as u32).to_le_bytes());
        h.extend_from_slice(&frag_idx.to_le_bytes());
        h.extend_from_slice(&frag_off.to_le_bytes());
        h.extend_from_slice(&(l.size as u32).to_le_bytes());
    } else {
        h.extend_from_slice(&l.blocks_start.to_le_bytes());
        h.extend_from_slice(&l.size.to_le_bytes());
        h.extend_from_slice(&sparse.to_le_bytes());
        h.extend_from_slice(&nlink.to_le_bytes());
        h.extend_from_slice(&frag_idx.to_le_bytes());
        h.extend_from_slice(&frag_off.to_le_bytes());
        h.extend_from_slice(&xattr.to_le_bytes());
    }
    let iref = mw.position();
    mw.append(&h)?;
    // The block list, expanded a chunk at a time.
    const CHUNK: usize = 4096;
    let mut buf: Vec<u8> = Vec::with_capacity(4 * CHUNK);
    let flush = |buf: &mut Vec<u8>, mw: &mut MetaWriter| -> SqResult<()> {
        if !buf.is_empty() {
            mw.append(buf)?;
            buf.clear();
        }
        Ok(())
    };
    for w in &l.words {
        if w & HOLES != 0 {
            let mut n = (w & !HOLES) as usize;
            while n > 0 {
                let take = n.min(CHUNK - buf.len() / 4);
                buf.resize(buf.len() + 4 * take, 0);
                n -= take;
                if buf.len() == 4 * CHUNK {
                    flush(&mut buf, mw)?;
                }
            }
        } else {
            buf.extend_from_slice(&w.to_le_bytes());
            if buf.len() == 4 * CHUNK {
                flush(&mut buf, mw)?;
            }
        }
    }
    flush(&mut buf, mw)?;
    Ok(iref)
}

/// The fixed part of a regular file inode, read without its block list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHead {
    pub head: InodeHead,
    pub nlink: u32,
    pub xattr: u32,
    pub size: u64,
    pub blocks_start: u64,
    pub frag: Option<(u32, u32)>,
    /// Entries in the block list that follows.
    pub blocks: u64,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn corrupted(what: &'static str) -> SqfsError {
    SqfsError {
        code: sys::SQFS_ERROR_CORRUPTED,
        what,
    }
}

impl FileHead {
    /// Read the header of the file inode at `iref`; the reader is left at
    /// its block list. Errors if the inode is not a regular file.
    pub fn read(meta: &mut MetaTables, iref: u64, block_size: u32) -> SqResult<FileHead> {
        meta.seek_inode(iref)?;
        let mut b = [0u8; 56];
        meta.read_inode_bytes(&mut b[..16])?;
        let ty = le16(&b, 0) as u32;
        let head = InodeHead {
            mode: le16(&b, 2),
            uid_idx: le16(&b, 4),
            gid_idx: le16(&b, 6),
            mtime: le32(&b, 8),
            inum: le32(&b, 12),
        };
        let (size, start, nlink, fidx, foff, xattr) = match ty {
            sys::SQFS_INODE_FILE => {
                meta.read_inode_bytes(&mut b[16..32])?;
                let (start, fidx, foff, size) =
                    (le32(&b, 16), le32(&b, 20), le32(&b, 24), le32(&b, 28));
                (size as u64, start as u64, 1, fidx, foff, NO_XATTR)
            }
            sys::SQFS_INODE_EXT_FILE => {
                meta.read_inode_bytes(&mut b[16..56])?;
                (
                    le64(&b, 24),
                    le64(&b, 16),
                    le32(&b, 40),
                    le32(&b, 44),
                    le32(&b, 48),
                    le32(&b, 52),
                )
            }
            _ => return Err(corrupted("a file entry whose inode is not a file")),
        };
        let frag = (fidx != NO_FRAG).then_some((fidx, foff));
        let bs = block_size as u64;
        let blocks = if frag.is_some() {
            size / bs
        } else {
            size.div_ceil(bs)
        };
        Ok(FileHead {
            head,
            nlink,
            xattr,
            size,
            blocks_start: start,
            frag,
            blocks,
        })
    }

    /// Read the next `out.len()` block size words of the list.
    pub fn read_words(meta: &mut MetaTables, out: &mut [u32]) -> SqResult<()> {
        let mut bytes = vec![0u8; 4 * out.len()];
        meta.read_inode_bytes(&mut bytes)?;
        for (w, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_le_bytes(c.try_into().expect("4 bytes"));
        }
        Ok(())
    }

    /// The whole layout (block list compacted as it is read).
    pub fn layout(&self, meta: &mut MetaTables) -> SqResult<FileLayout> {
        let mut l = FileLayout {
            size: self.size,
            blocks_start: self.blocks_start,
            frag: self.frag,
            words: Vec::new(),
        };
        let mut left = self.blocks;
        let mut chunk = vec![0u32; 4096];
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            Self::read_words(meta, &mut chunk[..n])?;
            for w in &chunk[..n] {
                if w & HOLES != 0 {
                    return Err(corrupted("a block size word with unknown bits"));
                }
                l.push(*w);
            }
            left -= n as u64;
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_run_length_encoded() {
        let mut l = FileLayout {
            size: 16 << 40,
            ..Default::default()
        };
        l.push(100);
        l.push_holes((16u64 << 40) / 131072 - 2);
        l.push(0);
        assert_eq!(l.words.len(), 2);
        assert_eq!(l.block_count(), (16u64 << 40) / 131072);
        assert_eq!(l.data_len(), 100);
        assert_eq!(l.sparse_bytes(131072), (16u64 << 40) - 131072);
        l.check(131072).unwrap();
        l.frag = Some((1, 2));
        assert!(l.check(131072).is_err());
    }

    #[test]
    fn bad_words_are_refused() {
        let l = FileLayout {
            size: 10,
            words: vec![131073],
            ..Default::default()
        };
        assert!(l.check(131072).is_err());
        let l = FileLayout {
            size: 131072,
            words: vec![UNCOMPRESSED | 131072],
            ..Default::default()
        };
        l.check(131072).unwrap();
    }
}
