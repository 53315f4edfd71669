//! Streaming encryption to public keys: SEIPDv1, AES-256, no compression, binary.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use pgp::composed::{Esk, RawSessionKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::PublicKeyEncryptedSessionKey;
use pgp::ser::Serialize;
use rand::RngCore;
use rand::rngs::OsRng;
use snap_core::{Error, Progress, Result};
use zeroize::Zeroizing;

use crate::keys::Recipient;
use crate::pipe::{DEPTH, Digested, Digests, Pool, StageError, hex_if};
use crate::seipd::{cfb_stage, frame_stage, seal_stage};

/// What [`encrypt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptSummary {
    pub plaintext_bytes: u64,
    pub ciphertext_bytes: u64,
    /// SHA-256 of the plaintext read, lowercase hex (as `sha256sum` prints it).
    pub plaintext_sha256: String,
    /// SHA-256 of the ciphertext written, lowercase hex.
    pub ciphertext_sha256: String,
    /// Primary key fingerprints of the recipients, in order.
    pub recipients: Vec<String>,
    pub duration: Duration,
}

/// Encrypt `input` to every recipient, writing a binary OpenPGP message to `output`.
///
/// The message is what GnuPG 2.2 reads: one PKESK v3 per recipient, a SEIPD v1
/// packet (AES-256, SHA-1 MDC), and inside it a binary literal data packet with
/// no compression (archives are already compressed). Memory stays bounded
/// whatever the size: the input is read, hashed and encrypted in chunks on
/// three threads (read, SHA-256, literal packet and SHA-1 for the MDC /
/// AES-256-CFB / packet framing, SHA-256, write: see `seipd.rs`); the
/// session key's PKESKs are made by rPGP. `progress` counts plaintext bytes
/// read.
///
/// `input` and `output` are moved to worker threads, hence `Send`. Errors:
/// reading the input or writing the output fail with the kind of the I/O error
/// (`DiskFull`, `Network` for a broken pipe or dropped connection, `Io`...);
/// `output` may then hold a partial message, which the caller must discard.
pub fn encrypt(
    input: impl Read + Send,
    output: impl Write + Send,
    recipients: &[Recipient],
    progress: &Progress,
) -> Result<EncryptSummary> {
    encrypt_named(
        input,
        "reading the input to encrypt",
        output,
        "writing the encrypted output",
        recipients,
        progress,
    )
}

/// [`encrypt`] with the phrases used in I/O error messages ("reading /x/image").
pub fn encrypt_named(
    input: impl Read + Send,
    reading: &str,
    output: impl Write + Send,
    writing: &str,
    recipients: &[Recipient],
    progress: &Progress,
) -> Result<EncryptSummary> {
    encrypt_with(
        input,
        reading,
        output,
        writing,
        recipients,
        Digests::BOTH,
        progress,
    )
}

/// [`encrypt_named`] computing only the SHA-256 digests `digests` asks for
/// (the summary's others are empty), for callers that get them elsewhere: an
/// upload writer hashes the ciphertext it sends, a chain piece's plaintext
/// is hashed where it is read. Each digest left out is a pass of SHA-256
/// less on the cores the three stages share.
pub fn encrypt_with(
    input: impl Read + Send,
    reading: &str,
    output: impl Write + Send,
    writing: &str,
    recipients: &[Recipient],
    digests: Digests,
    progress: &Progress,
) -> Result<EncryptSummary> {
    if recipients.is_empty() {
        return Err(Error::invalid_key(
            "no recipients: refusing to encrypt to nobody",
        ));
    }
    let start = Instant::now();
    // The session key (AES-256), and a PKESK v3 of it for each recipient.
    let mut session_key = Zeroizing::new(vec![0u8; 32]);
    OsRng.fill_bytes(&mut session_key);
    let head = pkesks(&session_key, recipients)?;
    let pool = Pool::default();

    let (plain, cipher, enc) = std::thread::scope(|s| {
        let (ptx, prx) = sync_channel(DEPTH);
        let (ctx, crx) = sync_channel(DEPTH);
        let pool = &pool;
        let head = &head;
        let reader =
            s.spawn(move || seal_stage(input, reading, ptx, pool, digests.plaintext, progress));
        let writer =
            s.spawn(move || frame_stage(output, writing, head, crx, pool, digests.ciphertext));
        // Dropping the channel ends (inside cfb_stage) unblocks both stages.
        let enc = cfb_stage(prx, ctx, &session_key);
        let plain = join(reader);
        let cipher = join(writer);
        (plain, cipher, enc)
    });

    // The I/O stages hold the real cause of a failure; the middle stage's
    // error is then only "the other stage stopped".
    let plain = match plain {
        Err(StageError::Failed(e)) => return Err(e),
        other => other,
    };
    let cipher = match cipher {
        Err(StageError::Failed(e)) => return Err(e),
        other => other,
    };
    if let Err(StageError::Failed(e)) = enc {
        return Err(e);
    }
    let (Ok(plain), Ok(cipher), Ok(())) = (plain, cipher, enc) else {
        return Err(Error::internal(
            "encryption pipeline: a stage stopped without an error",
        ));
    };
    Ok(summary(plain, cipher, digests, recipients, start.elapsed()))
}

/// One PKESK v3 packet per recipient for `session_key` (AES-256).
fn pkesks(session_key: &[u8], recipients: &[Recipient]) -> Result<Vec<u8>> {
    let raw = RawSessionKey::from(session_key);
    let mut out = Vec::new();
    for r in recipients {
        let pkesk = PublicKeyEncryptedSessionKey::from_session_key_v3(
            OsRng,
            &raw,
            SymmetricKeyAlgorithm::AES256,
            &r.key,
        )
        .map_err(|e| {
            Error::invalid_key(format!(
                "{}: cannot encrypt to key {} ({}): {e}",
                r.label, r.key_id, r.algorithm
            ))
        })?;
        Esk::PublicKeyEncryptedSessionKey(pkesk)
            .to_writer(&mut out)
            .map_err(|e| Error::internal(format!("encoding a PKESK: {e}")))?;
    }
    Ok(out)
}

fn join(
    h: std::thread::ScopedJoinHandle<'_, Result<Digested, StageError>>,
) -> Result<Digested, StageError> {
    h.join().unwrap_or_else(|_| {
        Err(StageError::Failed(Error::internal(
            "encryption pipeline: a worker thread panicked",
        )))
    })
}

fn summary(
    plain: Digested,
    cipher: Digested,
    digests: Digests,
    recipients: &[Recipient],
    duration: Duration,
) -> EncryptSummary {
    EncryptSummary {
        plaintext_bytes: plain.bytes,
        ciphertext_bytes: cipher.bytes,
        plaintext_sha256: hex_if(digests.plaintext, plain.sha256),
        ciphertext_sha256: hex_if(digests.ciphertext, cipher.sha256),
        recipients: recipients.iter().map(|r| r.fingerprint.clone()).collect(),
        duration,
    }
}

/// Encrypt the file `src` to a new file `dst`.
///
/// The message is written to a temporary file next to `dst`, synced, and
/// renamed to `dst` only when complete, so `dst` never holds a partial
/// message. `dst` must not exist (`AlreadyExists`). `progress` gets the size of
/// `src` as its total.
pub fn encrypt_file(
    src: &Path,
    dst: &Path,
    recipients: &[Recipient],
    progress: &Progress,
) -> Result<EncryptSummary> {
    let input = std::fs::File::open(src).map_err(|e| Error::io_path("opening", src, e))?;
    if let Ok(meta) = input.metadata()
        && meta.is_file()
    {
        progress.set_total(meta.len());
    }
    crate::staged_output(dst, |file| {
        encrypt_named(
            &input,
            &format!("reading {}", src.display()),
            file,
            &format!("writing {}", dst.display()),
            recipients,
            progress,
        )
    })
}
