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

use snap_core::Result;

use super::image::{Image, Node};
use super::{not_found, split_path};
use crate::ffi::Present;
use crate::layout::on_disk;

/// The data and fragment blocks that extracting `select` (paths inside the
/// image, as for [`crate::UnpackOptions::select`]; empty: all of it) from
/// `image` reads, as image byte ranges. The metadata tables are not part of
/// the answer: with `present` set, they must lie in it (or this fails).
pub fn needed(image: &Path, select: &[Vec<u8>], present: Option<Arc<Present>>) -> Result<Present> {
    let mut img = Image::open_present(image, present)?;
    let root = img.sup.root_inode_ref;
    let mut todo: Vec<u64> = Vec::new();
    if select.is_empty() {
        todo.push(root);
    }
    for p in select {
        let comps = split_path(p)?;
        let mut at = root;
        for (i, c) in comps.iter().enumerate() {
            let node = img.node(at)?;
            let Some(dir) = node.dir() else {
                return Err(not_found(&comps[..=i]));
            };
            let entries = img.read_dir(dir)?;
            match entries.into_iter().find(|e| e.name == *c) {
                Some(e) => at = e.iref,
                None => return Err(not_found(&comps[..=i])),
            }
        }
        todo.push(at);
    }
    let mut seen: HashSet<u64> = HashSet::new();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut frags: BTreeSet<u32> = BTreeSet::new();
    while let Some(iref) = todo.pop() {
        if !seen.insert(iref) {
            continue;
        }
        match img.node(iref)? {
            Node::File(_) => {
                let l = img.file_layout(iref)?;
                let len = l.data_len();
                if len > 0 {
                    ranges.push((l.blocks_start, l.blocks_start.saturating_add(len)));
                }
                if let Some((idx, _)) = l.frag {
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
            ranges.push((at, at.saturating_add(len)));
        }
    }
    Ok(Present::new(ranges))
}
