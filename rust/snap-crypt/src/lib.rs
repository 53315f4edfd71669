//! Streaming OpenPGP for snap: encrypt archives to public keys, decrypt them at restore.
//!
//! - [`load_recipients`]: public keys from files or pillar text. Secret key
//!   material anywhere in the input is refused (`SecretKeyMaterial`), checked
//!   packet by packet in every armor block.
//! - [`encrypt`] / [`encrypt_file`]: SEIPDv1 + AES-256, no compression, binary,
//!   readable by GnuPG 2.2; bounded memory; SHA-256 of plaintext and ciphertext.
//! - [`decrypt`] / [`decrypt_file`]: streaming restore of snap's and GnuPG's
//!   messages. **Plaintext is untrusted until `decrypt` returns `Ok`** (the
//!   integrity check is at the end of the message); `decrypt_file` only makes
//!   the destination appear on success.
//! - [`inspect_keys`]: what a key file holds, never its secrets.

mod cfb;
mod decrypt;
mod encrypt;
mod keys;
mod literal;
mod pipe;
mod scan;
mod secret;
mod seipd;

use std::fs::File;
use std::path::Path;

pub use decrypt::{
    DecryptSummary, SecretKeySource, decrypt, decrypt_file, decrypt_named, decrypt_with,
};
pub use encrypt::{EncryptSummary, encrypt, encrypt_file, encrypt_named, encrypt_with};
pub use keys::{
    ComponentInfo, KeyInfo, KeySource, MIN_RSA_BITS, Recipient, SecretState, inspect_keys,
    load_recipients,
};
pub use pipe::Digests;
pub use snap_core::{Error, ErrorKind, Result};

/// Run `work` on a temporary file next to `dst`; on success sync it and move
/// it to `dst` (which must not exist); on failure remove it.
pub(crate) fn staged_output<T>(dst: &Path, work: impl FnOnce(&File) -> Result<T>) -> Result<T> {
    if dst.symlink_metadata().is_ok() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("{} already exists; not overwriting it", dst.display()),
        ));
    }
    let dir = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|e| Error::io_path("creating a temporary file in", dir, e))?;
    let value = work(tmp.as_file())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io_path("syncing", tmp.path(), e))?;
    tmp.persist_noclobber(dst)
        .map_err(|e| Error::io_path("moving the finished file to", dst, e.error))?;
    Ok(value)
}
