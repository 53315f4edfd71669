#![forbid(unsafe_code)]
//! Reading a regular file's data: its block list streamed from the inode
//! table (never held whole: a 16 TiB sparse file lists 134 million blocks),
//! each stored block read and decompressed once, holes skipped, the tail
//! taken from its fragment block (kept in [`super::frags`]).

use std::sync::Arc;

use snap_core::{Error, ErrorKind, Result};

use super::image::Image;
use crate::layout::{FileHead, HOLES, UNCOMPRESSED, on_disk};
use crate::util::{show, show_bytes};

/// Block size words read from the inode table at a time.
pub(super) const WORDS: usize = 1024;

impl Image {
    fn corrupt(&self, rel: &[u8], what: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::Integrity,
            format!(
                "image {}: data of {} is corrupted ({what})",
                show(&self.path),
                show_bytes(rel)
            ),
        )
    }

    /// Decompress (or copy) the stored block `word` at `at` into
    /// `self.block[..len]`; `len` is what it must hold.
    fn load_block(&mut self, rel: &[u8], word: u32, at: u64, len: usize) -> Result<()> {
        let stored = on_disk(word) as usize;
        if stored > self.raw.len() || len > self.block.len() {
            return Err(self.corrupt(rel, format_args!("block of {stored} bytes")));
        }
        let path = self.path.clone();
        self.file
            .read_at(&mut self.raw[..stored], at)
            .map_err(|e| crate::util::io_err("reading image", &path, e))?;
        if word & UNCOMPRESSED != 0 {
            if stored != len {
                return Err(self.corrupt(rel, format_args!("{stored} bytes stored for {len}")));
            }
            self.block[..len].copy_from_slice(&self.raw[..len]);
            return Ok(());
        }
        let n = match self.cmp.do_block(&self.raw[..stored], &mut self.block) {
            Ok(n) => n,
            Err(e) => return Err(self.corrupt(rel, e.describe())),
        };
        if n != len {
            return Err(self.corrupt(rel, format_args!("{n} bytes decompressed for {len}")));
        }
        Ok(())
    }

    /// Call `sink(offset, bytes)` for every stored part of the file at
    /// `iref` (holes are not reported); returns the file's header.
    pub(crate) fn file_data(
        &mut self,
        iref: u64,
        rel: &[u8],
        sink: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<FileHead> {
        self.file_data_with(iref, rel, None, sink)
    }

    /// [`Image::file_data`], with the file's fragment block found already
    /// (`(image offset, size word)`, as [`Image::fragment`] gives it): a
    /// reader without the fragment table (see [`Image::open_data`]) needs it.
    pub(crate) fn file_data_with(
        &mut self,
        iref: u64,
        rel: &[u8],
        fragment: Option<(u64, u32)>,
        sink: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<FileHead> {
        let bs = self.sup.block_size as u64;
        let head = match FileHead::read(&mut self.meta, iref, self.sup.block_size) {
            Ok(h) => h,
            Err(e) => return Err(self.err(e)),
        };
        let mut words = vec![0u32; WORDS];
        let mut at = head.blocks_start;
        let mut index = 0u64;
        while index < head.blocks {
            let n = (head.blocks - index).min(WORDS as u64) as usize;
            // The data reads below use other readers; the inode reader stays put.
            if let Err(e) = FileHead::read_words(&mut self.meta, &mut words[..n]) {
                return Err(self.err(e));
            }
            for &w in &words[..n] {
                let off = index * bs;
                let len = (head.size - off).min(bs) as usize;
                index += 1;
                if !stored_word(w) {
                    return Err(self.corrupt(rel, format_args!("block size word {w:#x}")));
                }
                if w == 0 {
                    continue; // a hole
                }
                self.load_block(rel, w, at, len)?;
                at += on_disk(w);
                let block = std::mem::take(&mut self.block);
                let r = sink(off, &block[..len]);
                self.block = block;
                r?;
            }
        }
        if let Some((idx, frag_off)) = head.frag {
            let off = head.blocks * bs;
            let len = (head.size - off) as usize;
            let (start, word) = match fragment {
                Some(at) => at,
                None => self.fragment(idx)?,
            };
            // Kept by where the block is, not by its index: a forged table
            // that lists one block under many indexes still hits.
            let frags = self.frags_cached.clone();
            let block = frags.get_or_read((start, word), || {
                // A fragment block holds up to a block of tail ends.
                let want = if word & UNCOMPRESSED != 0 {
                    on_disk(word) as usize
                } else {
                    0
                };
                let got = self.load_fragment(rel, word, start, want)?;
                Ok(Arc::from(&self.block[..got]))
            })?;
            let from = frag_off as usize;
            match from.checked_add(len) {
                Some(end) if end <= block.len() => sink(off, &block[from..end])?,
                _ => return Err(self.corrupt(rel, "tail end outside its fragment block")),
            }
        }
        Ok(head)
    }

    /// Load fragment block `word` at `at` into `self.block`; returns its length.
    fn load_fragment(
        &mut self,
        rel: &[u8],
        word: u32,
        at: u64,
        stored_len: usize,
    ) -> Result<usize> {
        if word & UNCOMPRESSED != 0 {
            self.load_block(rel, word, at, stored_len)?;
            return Ok(stored_len);
        }
        let stored = on_disk(word) as usize;
        if stored > self.raw.len() {
            return Err(self.corrupt(rel, format_args!("fragment block of {stored} bytes")));
        }
        let path = self.path.clone();
        self.file
            .read_at(&mut self.raw[..stored], at)
            .map_err(|e| crate::util::io_err("reading image", &path, e))?;
        match self.cmp.do_block(&self.raw[..stored], &mut self.block) {
            Ok(n) if n > 0 => Ok(n),
            Ok(_) => Err(self.corrupt(rel, "empty fragment block")),
            Err(e) => Err(self.corrupt(rel, e.describe())),
        }
    }
}

/// Whether `data` is all zero bytes.
pub(crate) fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(64);
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, b| a | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|b| *b == 0)
}

/// Whether `w` can be a block size word as an inode stores it: a size and
/// the uncompressed flag, nothing else (not the run of holes a
/// [`crate::layout::FileLayout`] keeps).
pub(super) fn stored_word(w: u32) -> bool {
    w & HOLES == 0 && w & !(2 * UNCOMPRESSED - 1) == 0
}
