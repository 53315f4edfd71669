//! SquashFS images of rsnapshot history, written and read through
//! libsquashfs (squashfs-tools-ng 1.2) with a thin binding of our own.
//!
//! - [`pack`]: a directory tree → a new image. Keeps hard links as one inode
//!   with the in-image link count, symlinks, fifos, sockets, devices, all
//!   mode bits, numeric owners, mtimes, `user.`/`trusted.`/`security.` xattrs
//!   and raw-byte names. Refuses bad input before writing; writes to a hidden
//!   temporary file and renames it into place only when complete. Memory is
//!   bounded (see [`PackOptions::max_pending`]) except for a few dozen bytes
//!   per hard-linked inode whose links are not all seen yet, and the
//!   per-block / per-fragment deduplication records libsquashfs keeps.
//! - [`unpack`] / [`list`]: an image (or selected paths) → a directory, for
//!   restore; optionally applying rsync `--fake-super` metadata.
//! - [`chain`]: an image of a history's snapshots (named by their times)
//!   that grows by appending tails which reference what the image already
//!   holds; its index; putting an image together from its pieces.
//!
//! Sparse files cost their data, not their size: pack reads only the
//! blocks their data extents touch (SEEK_DATA/SEEK_HOLE) and lists the rest
//! as sparse blocks; unpack leaves holes and zero pages unwritten.
//!
//! Layout of the code: `sys` (bindgen output), `ffi/` (the only `unsafe`:
//! RAII wrappers: files, compressors, inodes, writers, readers), `walk`
//! (directory-relative stat/open, listings), `layout` (a file's blocks:
//! written and read as inodes), `pack/` (options, pre-pass, the data pass,
//! regular files, hard links, xattrs, what is walked, the writers around
//! it), `unpack/` (the open image, file data, extraction), `chain/`
//! (snapshot names, link, index, reuse, assembly, rebuild), `fakesuper`,
//! `util`.
//!
//! No NFS export table is written (restore never needs it; the kernel mounts
//! the image without one).

pub mod chain;
mod fakesuper;
mod ffi;
mod layout;
mod pack;
#[allow(clippy::all)]
mod sys;
mod unpack;
mod util;
mod walk;

pub use fakesuper::FakeStat;
pub use ffi::Present;
pub use pack::{Compressor, PackOptions, PackSummary, Selection, UnsupportedXattrs, pack};
pub use snap_core::{Error, ErrorKind, Result};
pub use unpack::{Entry, EntryKind, UnpackOptions, UnpackSummary, list, needed, unpack};
pub use util::show_bytes;
