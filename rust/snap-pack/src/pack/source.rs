#![forbid(unsafe_code)]
//! What a pack walks: a directory tree as it is, or a history's snapshots
//! under the names a chain image gives them (their times).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::path::Path;

use super::Selection;
use super::xattrs::selected;
use crate::walk;

pub(crate) struct Source<'a> {
    pub root: &'a Path,
    /// Chain images: the root lists these names (image name → snapshot
    /// directory below `root`); inside a snapshot, names starting with a
    /// dot (`.snapshot.json`) are not servers and are left out.
    pub snapshots: Option<&'a BTreeMap<CString, CString>>,
    /// Modification time given to the root (chain images: the newest snapshot's).
    pub root_mtime: Option<i64>,
}

impl<'a> Source<'a> {
    pub fn dir(root: &'a Path) -> Source<'a> {
        Source {
            root,
            snapshots: None,
            root_mtime: None,
        }
    }

    /// The entries the root lists, sorted by their names' bytes.
    pub fn root_names(&self, root: &File) -> io::Result<Vec<walk::Ent>> {
        match self.snapshots {
            Some(map) => Ok(map.keys().cloned().map(walk::Ent::named).collect()),
            None => walk::entries(root),
        }
    }

    /// Whether the walk leaves out `name` at `depth` (1 = the root's children).
    pub fn skip(&self, sel: Option<&Selection>, depth: usize, name: &CStr) -> bool {
        if !selected(sel, depth, name) {
            return true;
        }
        self.snapshots.is_some() && depth == 2 && name.to_bytes().first() == Some(&b'.')
    }

    /// The directory entry `name` at `depth` stands for.
    pub fn real<'n>(&'n self, depth: usize, name: &'n CStr) -> &'n CStr {
        match self.snapshots {
            Some(map) if depth == 1 => map.get(name).map_or(name, |d| d.as_c_str()),
            _ => name,
        }
    }
}
