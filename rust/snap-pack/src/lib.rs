//! SquashFS images written through libsquashfs (squashfs-tools-ng).

pub use snap_core::{Error, ErrorKind, Result};
