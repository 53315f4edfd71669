//! Streaming OpenPGP encryption to public keys, and decryption for restore.

pub use snap_core::{Error, ErrorKind, Result};
