#![forbid(unsafe_code)]
//! The pre-pass: validate every entry and count in-tree hard links before
//! anything is written.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
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
    let mut scan = Scan {
        links: Links::new(0),
        data_bytes: 0,
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
    let mut stack: Vec<(File, std::vec::IntoIter<CString>, usize)> =
        vec![(root, names.into_iter(), 1)];
    let mut path = src.to_path_buf();
    while !full {
        let Some((dir, names, depth)) = stack.last_mut() else {
            break;
        };
        let depth = *depth;
        let Some(name) = names.next() else {
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
        if let Err(msg) = read_xattrs(xsrc, policy) {
            full = problems.add(&path, msg);
        }
        if st.is_dir() {
            let dirf = opened.expect("opened directory");
            match walk::list(&dirf) {
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
