//! Off-site upload: S3 with Object Lock, Glacier vaults.

pub use snap_core::{Error, ErrorKind, Result};
