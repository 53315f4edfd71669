#![forbid(unsafe_code)]
//! The pre-pass: validate every entry and count in-tree hard links before
//! anything is written.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use snap_core::{Error, Result};

use super::PackOptions;
use super::links::Links;
use super::source::Source;
use super::xattrs::{XSrc, known_type, read_xattrs};
use crate::util::{io_err, show};
use crate::walk;

pub(super) const MAX_PROBLEMS: usize = 10;

pub(super) struct Scan {
    /// Every non-directory inode with st_nlink > 1; `remaining` = its
    /// number of links inside the packed tree.
    pub(super) links: Links,
    pub(super) data_bytes: u64,
    /// Links were counted from directory listings (every non-directory
    /// inode has an entry, whatever its st_nlink): see [`count_by_listing`].
    pub(super) listing_inodes: bool,
}

pub(super) struct Problems {
    pub(super) list: Vec<String>,
}

impl Problems {
    pub(super) fn add(&mut self, path: &Path, what: impl std::fmt::Display) -> bool {
        self.list.push(format!("{}: {what}", show(path)));
        self.list.len() >= MAX_PROBLEMS
    }
}

pub(super) fn prescan(source: &Source<'_>, opts: &PackOptions) -> Result<Scan> {
    let src = source.root;
    let light = source.snapshots.is_some();
    let mut scan = Scan {
        links: Links::new(0),
        data_bytes: 0,
        listing_inodes: false,
    };
    let mut problems = Problems { list: Vec::new() };
    let mut ids: HashSet<u32> = HashSet::new();
    let sel = opts.selection.as_ref();
    let policy = opts.unsupported_xattrs;

    let st = walk::stat_path(src).map_err(|e| io_err("reading", src, e))?;
    if !st.is_dir() {
        return Err(Error::invalid_input(format!(
            "{} is not a directory",
            show(src)
        )));
    }
    let root = walk::open_dir_path(src).map_err(|e| io_err("opening", src, e))?;
    if light && walk::listing_has_inodes(&root) {
        return count_by_listing(source, opts, root, st.dev);
    }
    scan.links.dev = st.dev;
    ids.insert(st.uid);
    ids.insert(st.gid);
    let mut full = false;
    if let Err(msg) = read_xattrs(XSrc::Fd(&root), policy) {
        full = problems.add(src, msg);
    }
    let names = source
        .root_names(&root)
        .map_err(|e| io_err("listing", src, e))?;
    // Open directories: descriptor, remaining names, depth of the names.
    let mut stack: Vec<(File, std::vec::IntoIter<walk::Ent>, usize)> =
        vec![(root, names.into_iter(), 1)];
    let mut path = src.to_path_buf();
    while !full {
        let Some((dir, names, depth)) = stack.last_mut() else {
            break;
        };
        let depth = *depth;
        let Some(walk::Ent { name, .. }) = names.next() else {
            stack.pop();
            if !stack.is_empty() {
                path.pop();
            }
            continue;
        };
        if source.skip(sel, depth, &name) {
            continue;
        }
        let name = source.real(depth, &name);
        path.push(OsStr::from_bytes(name.to_bytes()));
        let st = match walk::stat_at(dir, name) {
            Ok(st) => st,
            Err(e) => {
                full = problems.add(&path, format_args!("cannot stat: {e}"));
                path.pop();
                continue;
            }
        };
        ids.insert(st.uid);
        ids.insert(st.gid);
        if depth == 1 && source.snapshots.is_some() && !st.is_dir() {
            full = problems.add(&path, "snapshot is not a directory");
            path.pop();
            continue;
        }
        if st.linked() {
            let link = scan.links.entry((st.dev, st.ino));
            link.remaining += 1;
            if link.remaining > 1 {
                path.pop(); // xattrs, data and readability already checked
                continue;
            }
        }
        // A chain link only counts links and checks types here: it reads and
        // checks each entry once, in the data pass (a link that fails there
        // leaves nothing behind: its tail is removed, its index never used).
        if light && !st.is_dir() {
            if st.is_file() {
                scan.data_bytes += st.size;
            } else if !known_type(&st) {
                full = problems.add(&path, "unsupported file type");
            }
            path.pop();
            continue;
        }
        let opened = if st.is_dir() {
            walk::open_dir_at(dir, name).map_err(|e| format!("cannot list directory: {e}"))
        } else if st.is_file() {
            scan.data_bytes += st.size;
            walk::open_file_at(dir, name).map_err(|e| format!("cannot read: {e}"))
        } else if st.is_symlink() {
            match walk::readlink_at(dir, name) {
                Ok(_) => Err(String::new()),
                Err(e) => Err(format!("cannot read symlink: {e}")),
            }
        } else if known_type(&st) {
            Err(String::new())
        } else {
            Err("unsupported file type".to_string())
        };
        let xsrc = match &opened {
            Ok(f) => XSrc::Fd(f),
            Err(msg) if msg.is_empty() => XSrc::Path(&path),
            Err(msg) => {
                full = problems.add(&path, msg);
                path.pop();
                continue;
            }
        };
        if !light && let Err(msg) = read_xattrs(xsrc, policy) {
            full = problems.add(&path, msg);
        }
        if st.is_dir() {
            let dirf = opened.expect("opened directory");
            match walk::entries(&dirf) {
                Ok(names) => {
                    stack.push((dirf, names.into_iter(), depth + 1));
                    continue; // path stays pushed until the directory is done
                }
                Err(e) => full = problems.add(&path, format_args!("cannot list directory: {e}")),
            }
        }
        path.pop();
    }
    if ids.len() > 65536 {
        problems.list.push(format!(
            "{} distinct uids/gids; SquashFS stores at most 65536",
            ids.len()
        ));
    }
    if !problems.list.is_empty() {
        let more = if full {
            " (stopped at the first ten)"
        } else {
            ""
        };
        return Err(Error::invalid_input(format!(
            "refusing to pack {}: {} problem(s){more}: {}",
            show(src),
            problems.list.len(),
            problems.list.join("; ")
        )));
    }
    Ok(scan)
}

/// The pre-pass of a chain link on a file system whose listings give inode
/// numbers: count every non-directory inode's links in the tree from
/// directory listings alone (no stat, no open, except directories). Entries
/// are checked once, in the data pass: a link that fails there leaves
/// nothing behind (its tail is removed, its index never committed).
fn count_by_listing(source: &Source<'_>, opts: &PackOptions, root: File, dev: u64) -> Result<Scan> {
    let mut scan = Scan {
        links: Links::new(dev),
        data_bytes: 0,
        listing_inodes: true,
    };
    let sel = opts.selection.as_ref();
    let src = source.root;
    let names = source
        .root_names(&root)
        .map_err(|e| io_err("listing", src, e))?;
    // Open directories: descriptor, its device, remaining entries, depth.
    let mut stack: Vec<(File, u64, std::vec::IntoIter<walk::Ent>, usize)> =
        vec![(root, dev, names.into_iter(), 1)];
    let mut path = src.to_path_buf();
    while let Some((dir, dev, names, depth)) = stack.last_mut() {
        let (dev, depth) = (*dev, *depth);
        let Some(ent) = names.next() else {
            stack.pop();
            if !stack.is_empty() {
                path.pop();
            }
            continue;
        };
        if source.skip(sel, depth, &ent.name) {
            continue;
        }
        let name = source.real(depth, &ent.name);
        let (is_dir, key) = match ent.kind {
            walk::Kind::Dir => (true, (dev, ent.ino)),
            walk::Kind::Other if depth > 1 => (false, (dev, ent.ino)),
            _ => {
                let st = walk::stat_at(dir, name).map_err(|e| {
                    io_err("reading", &path.join(OsStr::from_bytes(name.to_bytes())), e)
                })?;
                (st.is_dir(), (st.dev, st.ino))
            }
        };
        if !is_dir {
            scan.links.entry(key).remaining += 1;
            continue;
        }
        path.push(OsStr::from_bytes(name.to_bytes()));
        let sub = walk::open_dir_at(dir, name).map_err(|e| io_err("opening", &path, e))?;
        let sub_dev = walk::stat_fd(&sub)
            .map_err(|e| io_err("reading", &path, e))?
            .dev;
        let entries = walk::entries(&sub).map_err(|e| io_err("listing", &path, e))?;
        stack.push((sub, sub_dev, entries.into_iter(), depth + 1));
    }
    Ok(scan)
}
