#![forbid(unsafe_code)]
//! Small helpers shared by pack and unpack.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use snap_core::{Error, ErrorKind};

use crate::ffi::{SqFile, SqfsError};

/// Show raw path bytes readably: valid UTF-8 as is, everything else (and
/// control characters, backslashes) escaped as `\xNN`, so the exact bytes
/// can be recovered from a message.
pub fn show_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

pub fn show(path: &Path) -> String {
    show_bytes(path.as_os_str().as_bytes())
}

pub fn show_os(s: &OsStr) -> String {
    show_bytes(s.as_bytes())
}

/// An I/O error about `path`, with the path shown escaped.
pub fn io_err(verb: &str, path: &Path, err: io::Error) -> Error {
    Error::io(format_args!("{verb} {}", show(path)), err)
}

/// Turn a libsquashfs failure into a snap error. If one of `files` recorded
/// the OS error behind it (a full disk, say), that error decides the kind.
pub fn sq_err(e: SqfsError, files: &[(&SqFile, &Path)]) -> Error {
    for (f, path) in files {
        if let Some(io) = f.take_error() {
            return io_err("writing", path, io).context(e.describe());
        }
    }
    let kind = match e.code {
        crate::sys::SQFS_ERROR_CORRUPTED
        | crate::sys::SFQS_ERROR_SUPER_MAGIC
        | crate::sys::SFQS_ERROR_SUPER_VERSION
        | crate::sys::SQFS_ERROR_OUT_OF_BOUNDS
        | crate::sys::SQFS_ERROR_SUPER_BLOCK_SIZE => ErrorKind::Integrity,
        crate::sys::SQFS_ERROR_UNSUPPORTED | crate::sys::SQFS_ERROR_ARG_INVALID => {
            ErrorKind::InvalidInput
        }
        crate::sys::SQFS_ERROR_IO => ErrorKind::Io,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, e.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_invalid_and_control_bytes() {
        assert_eq!(show_bytes(b"daily.0/web1"), "daily.0/web1");
        assert_eq!(show_bytes(b"caf\xe9\n"), "caf\\xe9\\x0a");
        assert_eq!(show_bytes("ü\\".as_bytes()), "ü\\x5c");
    }
}
