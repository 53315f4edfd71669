//! Sealing a packed restore for one server, so it can travel back to that
//! server through Salt (publish messages every minion can decrypt, returns,
//! the master's cache) without anyone else being able to read it.
//!
//! The backup server seals the image to the server's own snap SSH key — the
//! public half it already reads from the mine to build the server's account
//! — with age's `ssh-ed25519` recipient (X25519, ChaCha20-Poly1305 STREAM:
//! every 64 KiB chunk authenticated, truncation detected). Only the server,
//! holding `/etc/snap/id_ed25519`, can open it; the backup server gets no
//! key and no login on the server.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};
use snap_core::progress::ProgressReader;
use snap_core::{Error, ErrorKind, Progress, Result};

/// What [`seal_file`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Sealed {
    pub size: u64,
    /// SHA-256 of the sealed file (checked again on arrival).
    pub sha256: String,
}

/// Seal `src` into a new file `dst` for the holder of the SSH key whose
/// public half is `recipient` (`ssh-ed25519 AAAA...`).
pub fn seal_file(src: &Path, dst: &Path, recipient: &str, progress: &Progress) -> Result<Sealed> {
    let r = age::ssh::Recipient::from_str(recipient.trim()).map_err(|e| {
        Error::invalid_key(format!(
            "restore recipient {recipient:?} is not an SSH public key age can use: {e:?}"
        ))
    })?;
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        .map_err(|e| Error::invalid_key(format!("restore recipient: {e}")))?;
    let input = File::open(src).map_err(|e| Error::io_path("opening", src, e))?;
    let out = File::options()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| Error::io_path("creating", dst, e))?;
    struct Hashing<W> {
        inner: W,
        h: Sha256,
        n: u64,
    }
    impl<W: Write> Write for Hashing<W> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(b)?;
            self.h.update(&b[..n]);
            self.n += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let mut w = enc
        .wrap_output(Hashing {
            inner: out,
            h: Sha256::new(),
            n: 0,
        })
        .map_err(|e| Error::io_path("writing", dst, e))?;
    std::io::copy(&mut ProgressReader::new(input, progress), &mut w)
        .map_err(|e| Error::io_path("sealing into", dst, e))?;
    let h = w.finish().map_err(|e| Error::io_path("writing", dst, e))?;
    h.inner
        .sync_all()
        .map_err(|e| Error::io_path("syncing", dst, e))?;
    Ok(Sealed {
        size: h.n,
        sha256: hex::encode(h.h.finalize()),
    })
}

/// Open `src` (sealed by [`seal_file`]) with the SSH private key at
/// `identity` into a new file `dst`, which appears only if all of it
/// decrypted and authenticated. `sha256`: what the sealer reported.
pub fn open_file(
    src: &Path,
    dst: &Path,
    identity: &Path,
    sha256: Option<&str>,
    progress: &Progress,
) -> Result<u64> {
    if let Some(want) = sha256 {
        let mut h = Sha256::new();
        let mut f = File::open(src).map_err(|e| Error::io_path("opening", src, e))?;
        std::io::copy(&mut f, &mut h).map_err(|e| Error::io_path("reading", src, e))?;
        let got = hex::encode(h.finalize());
        if got != want {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "{} has sha256 {got}, the backup server sent {want}: damaged in transit",
                    src.display()
                ),
            ));
        }
    }
    let key = File::open(identity).map_err(|e| Error::io_path("opening the key", identity, e))?;
    let id =
        age::ssh::Identity::from_buffer(BufReader::new(key), Some(identity.display().to_string()))
            .map_err(|e| {
                Error::invalid_key(format!(
                    "{}: not an SSH private key: {e}",
                    identity.display()
                ))
            })?;
    if !matches!(id, age::ssh::Identity::Unencrypted(_)) {
        return Err(Error::invalid_key(format!(
            "{}: an SSH key age cannot use here (passphrase-protected or unsupported type)",
            identity.display()
        )));
    }
    let input = File::open(src).map_err(|e| Error::io_path("opening", src, e))?;
    let dec = age::Decryptor::new_buffered(BufReader::new(ProgressReader::new(input, progress)))
        .map_err(|e| {
            Error::new(
                ErrorKind::Integrity,
                format!("{}: not a sealed restore: {e}", src.display()),
            )
        })?;
    let mut r = dec
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .map_err(|e| {
            Error::invalid_key(format!(
                "{}: cannot be opened with {}: {e}",
                src.display(),
                identity.display()
            ))
        })?;
    let dir = dst.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".snap-open.")
        .tempfile_in(dir)
        .map_err(|e| Error::io_path("creating a temporary file in", dir, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| {
            Error::new(
                ErrorKind::Integrity,
                format!("{}: damaged or truncated: {e}", src.display()),
            )
        })?;
        if n == 0 {
            break;
        }
        tmp.write_all(&buf[..n])
            .map_err(|e| Error::io_path("writing", tmp.path(), e))?;
        total += n as u64;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io_path("syncing", tmp.path(), e))?;
    tmp.persist_noclobber(dst)
        .map_err(|e| Error::io_path("creating", dst, e.error))?;
    Ok(total)
}
