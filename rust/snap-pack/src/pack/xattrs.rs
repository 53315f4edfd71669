#![forbid(unsafe_code)]
//! Which entries and xattrs a pack takes, and reading xattrs.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use xattr::FileExt as _;

use super::{Selection, UnsupportedXattrs};
use crate::util::show_os;
use crate::walk::St;

pub(super) fn selected(sel: Option<&Selection>, depth: usize, name: &CStr) -> bool {
    match sel {
        Some(s) if s.depth == depth => s.names.contains(OsStr::from_bytes(name.to_bytes())),
        _ => true,
    }
}

pub(super) fn xattr_supported(name: &[u8]) -> bool {
    for p in [&b"user."[..], b"trusted.", b"security."] {
        if name.len() > p.len() && name.starts_with(p) {
            return name.len() - p.len() <= u16::MAX as usize;
        }
    }
    false
}

/// Where to read xattrs from: an open descriptor (files, directories) or,
/// for symlinks and special files, a path (not followed).
#[derive(Clone, Copy)]
pub(super) enum XSrc<'a> {
    Fd(&'a File),
    Path(&'a Path),
}

/// Xattrs to store (sorted by name) and how many were skipped.
pub(super) type XattrList = (Vec<(CString, Vec<u8>)>, u64);

/// Read all xattrs of an entry, sorted by name. Returns the pairs to store
/// and the number of unsupported ones skipped.
pub(super) fn read_xattrs(
    src: XSrc<'_>,
    policy: UnsupportedXattrs,
) -> std::result::Result<XattrList, String> {
    let listed = match src {
        XSrc::Fd(f) => f.list_xattr(),
        XSrc::Path(p) => xattr::list(p),
    };
    let names = match listed {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok((Vec::new(), 0)),
        Err(e) => return Err(format!("cannot list xattrs: {e}")),
    };
    let mut out = Vec::new();
    let mut skipped = 0;
    for name in names {
        let raw = name.as_bytes();
        if !xattr_supported(raw) {
            match policy {
                UnsupportedXattrs::Refuse => {
                    return Err(format!(
                        "xattr {} cannot be stored in SquashFS (only user., trusted., security.)",
                        show_os(&name)
                    ));
                }
                UnsupportedXattrs::Skip => {
                    skipped += 1;
                    continue;
                }
            }
        }
        let got = match src {
            XSrc::Fd(f) => f.get_xattr(&name),
            XSrc::Path(p) => xattr::get(p, &name),
        };
        let value = match got {
            Ok(Some(v)) => v,
            Ok(None) => continue, // vanished between list and get
            Err(e) => return Err(format!("cannot read xattr {}: {e}", show_os(&name))),
        };
        let key = CString::new(raw.to_vec()).map_err(|_| "xattr name with NUL".to_string())?;
        out.push((key, value));
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok((out, skipped))
}

pub(super) fn known_type(st: &St) -> bool {
    matches!(
        st.fmt(),
        libc::S_IFDIR
            | libc::S_IFREG
            | libc::S_IFLNK
            | libc::S_IFIFO
            | libc::S_IFSOCK
            | libc::S_IFCHR
            | libc::S_IFBLK
    )
}
