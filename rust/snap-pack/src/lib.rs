//! SquashFS images of rsnapshot history, written and read through
//! libsquashfs (squashfs-tools-ng 1.2) with a thin binding of our own.
//!
//! - [`pack`]: a directory tree → a new image (hardlinks, xattrs, devices,
//!   raw-byte names; bounded memory; refuses bad input before writing).
//! - [`unpack`] / [`list`]: an image (or parts of it) → a directory, for restore.

mod fakesuper;
mod ffi;
mod pack;
#[allow(clippy::all)]
mod sys;
mod unpack;
mod util;
mod walk;

pub use fakesuper::FakeStat;
pub use pack::{Compressor, PackOptions, PackSummary, Selection, UnsupportedXattrs, pack};
pub use snap_core::{Error, ErrorKind, Result};
pub use unpack::{Entry, EntryKind, UnpackOptions, UnpackSummary, list, unpack};
pub use util::show_bytes;
