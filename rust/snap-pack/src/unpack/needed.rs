#![forbid(unsafe_code)]
//! The bytes of an image that extracting a selection reads.
//!
//! A chain restore first fetches the piece that holds the metadata tables,
//! then asks this which data blocks and fragment blocks the selection
//! needs, and fetches only the pieces that hold them (see
//! `snap_restore::chain`). The image is hostile: every inode is visited
//! once (a directory that lists an ancestor cannot loop), and with
//! `present` set a table that lies outside the fetched bytes fails here,
//! naming the bytes, rather than be read as zeros.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;

use snap_core::{Error, ErrorKind, Result};

use super::data::{WORDS, stored_word};
use super::image::{Image, Node};
use super::split_path;
use crate::ffi::Present;
use crate::layout::{FileHead, on_disk};

/// The data and fragment blocks that extracting `select` (paths inside the
/// image, as for [`crate::UnpackOptions::select`]; empty: all of it) from
/// `image` reads, as image byte ranges. The metadata tables are not part of
/// the answer: with `present` set, they must lie in it (or this fails).
pub fn needed(image: &Path, select: &[Vec<u8>], present: Option<Arc<Present>>) -> Result<Present> {
    let mut img = Image::open_present(image, present)?;
    let mut todo: Vec<u64> = Vec::new();
    if select.is_empty() {
        todo.push(img.sup.root_inode_ref);
    }
    for p in select {
        todo.push(img.lookup_ref(&split_path(p)?)?);
    }
    let size = img.file.size();
    let mut words = vec![0u32; WORDS];
    let mut seen: HashSet<u64> = HashSet::new();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut frags: BTreeSet<u32> = BTreeSet::new();
    while let Some(iref) = todo.pop() {
        if !seen.insert(iref) {
            continue;
        }
        match img.node(iref)? {
            Node::File(head) => {
                // The block list streamed (the reader is at it), never held
                // whole: a forged inode may list billions of words.
                let mut len = 0u64;
                let mut index = 0u64;
                while index < head.blocks {
                    let n = (head.blocks - index).min(WORDS as u64) as usize;
                    FileHead::read_words(&mut img.meta, &mut words[..n]).map_err(|e| img.err(e))?;
                    for &w in &words[..n] {
                        if !stored_word(w) {
                            return Err(corrupt(iref, format!("block size word {w:#x}")));
                        }
                        len += on_disk(w);
                    }
                    if head.blocks_start.saturating_add(len) > size {
                        return Err(corrupt(iref, "blocks past the end of the image".into()));
                    }
                    index += n as u64;
                }
                if len > 0 {
                    add(&mut ranges, head.blocks_start, head.blocks_start + len);
                }
                if let Some((idx, _)) = head.frag {
                    frags.insert(idx);
                }
            }
            node => {
                if let Some(dir) = node.dir() {
                    let entries = img.read_dir(dir)?;
                    todo.extend(entries.into_iter().map(|e| e.iref));
                }
            }
        }
    }
    for idx in frags {
        let (at, word) = img.fragment(idx)?;
        let len = on_disk(word);
        if len > 0 {
            add(&mut ranges, at, at.saturating_add(len));
        }
    }
    Ok(Present::new(ranges))
}

/// `[start, end)` added, merged with the last range when they touch (files
/// are mostly walked in the order they were packed).
fn add(ranges: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    match ranges.last_mut() {
        Some(last) if last.1 == start => last.1 = end,
        _ => ranges.push((start, end)),
    }
}

fn corrupt(iref: u64, what: String) -> Error {
    Error::new(
        ErrorKind::Integrity,
        format!("image is corrupted: the file inode at {iref:#x}: {what}"),
    )
}
