//! Streaming decryption for restore.
//!
//! # Output is untrusted until `Ok`
//!
//! An archive may be many gigabytes, so it is decrypted as a stream (rPGP's
//! SEIPDv1 "streaming" read mode) and plaintext reaches `output` BEFORE the
//! message's integrity code (the SHA-1 MDC at the very end) has been checked.
//! A tampered or truncated archive is detected only at the end, and
//! [`decrypt`] then returns an `Integrity` error **after having written
//! attacker-influenced bytes**. Callers must write to a staging file, and use
//! it only once `decrypt` has returned `Ok` ([`decrypt_file`] does exactly
//! that: `dst` appears only on success).

use std::fmt;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use pgp::composed::PlainSessionKey;
use pgp::composed::{DecryptionOptions, Edata, Esk, Message, SignedSecretKey, TheRing};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{ProtectedDataConfig, SymEncryptedProtectedDataConfig};
use pgp::types::{DecryptionKey, KeyDetails, Password, Seipdv1ReadMode};
use snap_core::{Error, ErrorKind, Progress, Result};
use zeroize::Zeroizing;

use crate::cfb::MdcReader;
use crate::keys::{SecretState, hex_upper};
use crate::literal::{LiteralReader, is_literal};
use crate::pipe::{
    ChanReader, ChanWriter, DEPTH, Digested, Digests, HeadLimit, Pool, StageError, fill_chunk,
    hex_if, is_full, read_stage, write_stage,
};
pub use crate::secret::SecretKeySource;
use crate::secret::{Candidate, candidates, describe};

/// What [`decrypt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptSummary {
    pub plaintext_bytes: u64,
    /// SHA-256 of the plaintext written, lowercase hex.
    pub plaintext_sha256: String,
    pub ciphertext_bytes: u64,
    /// SHA-256 of the ciphertext read, lowercase hex (compare with the upload record).
    pub ciphertext_sha256: String,
    /// Key id (uppercase hex) of the component key that decrypted the session key.
    pub key_id: String,
    /// Primary fingerprint of the secret key used.
    pub key_fingerprint: String,
    /// Whether the message had a compression layer (GnuPG's default).
    pub compressed: bool,
    pub duration: Duration,
}

struct Used {
    key_id: String,
    key_fingerprint: String,
    compressed: bool,
}

/// Decrypt an OpenPGP message (binary or armored) from `input` to `output`.
///
/// **Output is untrusted until this returns `Ok`** (see the module docs): a
/// tampered, truncated or corrupted message fails with `Integrity` only at the
/// end, after plaintext has been written. Reads SEIPDv1 messages from snap and
/// from GnuPG (compressed or not); refuses unprotected legacy (SED) messages.
///
/// Errors: `InvalidKey` for a key that is not for this message (the message
/// names the key ids it is for), a missing or wrong passphrase, or key data
/// without secret keys; `InvalidInput` for input that is not an encrypted
/// OpenPGP message; `Integrity` for tampering, truncation, corruption; I/O
/// errors of their own kinds. `progress` counts ciphertext bytes read.
pub fn decrypt(
    input: impl Read + Send,
    output: impl Write + Send,
    secret: &SecretKeySource,
    progress: &Progress,
) -> Result<DecryptSummary> {
    decrypt_named(
        input,
        "reading the encrypted input",
        output,
        "writing the decrypted output",
        secret,
        progress,
    )
}

/// [`decrypt`] with the phrases used in I/O error messages ("reading /x/archive.gpg").
pub fn decrypt_named(
    input: impl Read + Send,
    reading: &str,
    output: impl Write + Send,
    writing: &str,
    secret: &SecretKeySource,
    progress: &Progress,
) -> Result<DecryptSummary> {
    decrypt_with(
        input,
        reading,
        output,
        writing,
        secret,
        Digests::BOTH,
        progress,
    )
}

/// [`decrypt_named`] computing only the SHA-256 digests `digests` asks for
/// (the summary's others are empty), for callers that check the data
/// otherwise: a chain's assembly checks every range of the plaintext, a
/// download hashed the ciphertext as it arrived. The MDC is checked always.
pub fn decrypt_with(
    input: impl Read + Send,
    reading: &str,
    output: impl Write + Send,
    writing: &str,
    secret: &SecretKeySource,
    digests: Digests,
    progress: &Progress,
) -> Result<DecryptSummary> {
    let start = Instant::now();
    // Key problems are reported before any input is read or output written.
    let keys = secret.keys()?;
    let in_pool = Pool::default();
    let out_pool = Pool::default();

    let (cipher, plain, dec) = std::thread::scope(|s| {
        let (ctx, crx) = sync_channel(DEPTH);
        let (ptx, prx) = sync_channel(DEPTH);
        let in_pool = &in_pool;
        let out_pool = &out_pool;
        let reader =
            s.spawn(move || read_stage(input, reading, ctx, in_pool, digests.ciphertext, progress));
        let writer =
            s.spawn(move || write_stage(output, writing, prx, out_pool, digests.plaintext));
        let dec = run_rpgp(
            ChanReader::new(crx, in_pool),
            ChanWriter::new(ptx, out_pool),
            secret,
            &keys,
        );
        let cipher = join(reader);
        let plain = join(writer);
        (cipher, plain, dec)
    });

    let cipher = match cipher {
        Err(StageError::Failed(e)) => return Err(e),
        other => other,
    };
    let plain = match plain {
        Err(StageError::Failed(e)) => return Err(e),
        other => other,
    };
    let used = dec?;
    let (Ok(cipher), Ok(plain)) = (cipher, plain) else {
        return Err(Error::internal(
            "decryption pipeline: a stage stopped without an error",
        ));
    };
    Ok(DecryptSummary {
        plaintext_bytes: plain.bytes,
        plaintext_sha256: hex_if(digests.plaintext, plain.sha256),
        ciphertext_bytes: cipher.bytes,
        ciphertext_sha256: hex_if(digests.ciphertext, cipher.sha256),
        key_id: used.key_id,
        key_fingerprint: used.key_fingerprint,
        compressed: used.compressed,
        duration: start.elapsed(),
    })
}

fn join(
    h: std::thread::ScopedJoinHandle<'_, Result<Digested, StageError>>,
) -> Result<Digested, StageError> {
    h.join().unwrap_or_else(|_| {
        Err(StageError::Failed(Error::internal(
            "decryption pipeline: a worker thread panicked",
        )))
    })
}

/// Decrypt the file `src` into a new file `dst`, which appears only if the
/// whole message decrypted and passed its integrity check. Until then the
/// plaintext lives in a temporary file next to `dst` (mode 0600), which is
/// removed on any error. `dst` must not exist (`AlreadyExists`).
pub fn decrypt_file(
    src: &Path,
    dst: &Path,
    secret: &SecretKeySource,
    progress: &Progress,
) -> Result<DecryptSummary> {
    let input = std::fs::File::open(src).map_err(|e| Error::io_path("opening", src, e))?;
    if let Ok(meta) = input.metadata()
        && meta.is_file()
    {
        progress.set_total(meta.len());
    }
    // Check the key before creating anything.
    secret.keys()?;
    crate::staged_output(dst, |file| {
        decrypt_named(
            &input,
            &format!("reading {}", src.display()),
            file,
            &format!("writing {}", dst.display()),
            secret,
            progress,
        )
    })
}

fn esk_target(esk: &Esk) -> String {
    match esk {
        Esk::PublicKeyEncryptedSessionKey(p) => {
            if let Ok(id) = p.id() {
                if id.is_wildcard() {
                    "an anonymous recipient".to_string()
                } else {
                    format!("key id {}", hex_upper(id.as_ref()))
                }
            } else if let Ok(fp) = p.fingerprint() {
                match fp {
                    Some(fp) => format!("key {}", hex_upper(fp.as_bytes())),
                    None => "an anonymous recipient".to_string(),
                }
            } else {
                "a key of an unsupported PKESK version".to_string()
            }
        }
        Esk::SymKeyEncryptedSessionKey(_) => "a passphrase (symmetric encryption)".to_string(),
    }
}

fn integrity(msg: impl fmt::Display) -> Error {
    Error::new(ErrorKind::Integrity, msg.to_string())
}

fn run_rpgp(
    mut source: ChanReader<'_>,
    mut sink: ChanWriter<'_>,
    secret: &SecretKeySource,
    keys: &[SignedSecretKey],
) -> Result<Used> {
    // Recognise the input before rPGP's parser sees it, for a clearer error.
    let first = match source.fill_buf() {
        Ok(buf) => buf.first().copied(),
        Err(e) => return Err(Error::internal(format!("decryption pipeline: {e}"))),
    };
    let Some(first) = first else {
        return Err(Error::invalid_input(
            "the encrypted input is empty (expected an OpenPGP message)",
        ));
    };
    let armored = source
        .fill_buf()
        .map(|b| b.starts_with(b"-----BEGIN PGP MESSAGE"))
        .unwrap_or(false);
    if first & 0x80 == 0 && !armored {
        return Err(Error::invalid_input(
            "the input is not an OpenPGP message (neither binary packets nor ASCII armor)",
        ));
    }

    // The head (session-key packets) is bounded; the encrypted data is not.
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (msg, _) = Message::from_reader(HeadLimit::new(source, open.clone())).map_err(|e| {
        integrity(format!(
            "the OpenPGP message is corrupted or truncated before its encrypted data: {e}"
        ))
    })?;
    open.store(true, std::sync::atomic::Ordering::Relaxed);
    let Message::Encrypted { esk, edata, .. } = &msg else {
        return Err(Error::invalid_input(
            "the OpenPGP message is not encrypted (a plain, signed or compressed message)",
        ));
    };
    match edata {
        Edata::SymEncryptedProtectedData { .. } => {}
        Edata::SymEncryptedData { .. } => {
            return Err(integrity(
                "the message uses the legacy Symmetrically Encrypted Data packet, which has \
                 no integrity protection; refusing to decrypt it",
            ));
        }
        Edata::GnupgAeadData { .. } => {
            return Err(Error::invalid_input(
                "the message uses GnuPG's non-standard OCB (AEAD) packet; snap reads SEIPD only",
            ));
        }
    }

    // Which of our component keys is the message for?
    let cands = candidates(keys);
    let targets: Vec<String> = esk.iter().map(esk_target).collect();
    let pkesks: Vec<_> = esk
        .iter()
        .filter_map(|e| match e {
            Esk::PublicKeyEncryptedSessionKey(p) => Some(p),
            _ => None,
        })
        .collect();
    let chosen = pkesks.iter().find_map(|p| {
        cands
            .iter()
            .find(|c| {
                let matches = match p.id() {
                    Ok(id) => !id.is_wildcard() && *id == c.key_id,
                    Err(_) => matches!(p.fingerprint(), Ok(Some(fp)) if *fp == c.fingerprint),
                };
                matches && c.state != SecretState::Public && c.can_decrypt
            })
            .map(|c| (*p, c))
    });
    let Some((pkesk, chosen)) = chosen else {
        let ours: Vec<String> = cands
            .iter()
            .map(|c| {
                let id = hex_upper(c.key_id.as_ref());
                if c.can_decrypt {
                    id
                } else {
                    format!("{id} (a signing key, which cannot decrypt)")
                }
            })
            .collect();
        return Err(Error::invalid_key(format!(
            "{}: this key cannot decrypt the message: the message is encrypted to {}; \
             the key holds key ids {}",
            secret.label(),
            targets.join(", "),
            ours.join(", ")
        )));
    };
    let key_desc = describe(chosen);
    // Unlocked once for all the messages this key source decrypts.
    let unlocked = secret.unlocked(chosen, &key_desc)?;
    let unlocked = candidates(&unlocked);
    let Some(chosen) = unlocked.iter().find(|c| c.at == chosen.at) else {
        return Err(Error::internal("the unlocked key lost its component key"));
    };
    let password = Password::empty();

    let used = Used {
        key_id: hex_upper(chosen.key_id.as_ref()),
        key_fingerprint: hex_upper(chosen.key.primary_key.fingerprint().as_bytes()),
        compressed: false,
    };
    // SEIPDv1 with AES (what snap and GnuPG write): decrypt the session key
    // here and the data with snap's own chunked CFB (see cfb.rs).
    if let Some(session) = aes_session_key(pkesk, chosen, &password)
        && matches!(edata, Edata::SymEncryptedProtectedData { reader }
            if matches!(reader.config(), ProtectedDataConfig::Seipd(SymEncryptedProtectedDataConfig::V1)))
    {
        let Message::Encrypted { edata, .. } = msg else {
            unreachable!("checked above")
        };
        let Edata::SymEncryptedProtectedData { reader } = edata else {
            unreachable!("checked above")
        };
        let Some(mut mdc) = MdcReader::new(reader, &session) else {
            return Err(Error::internal("AES session key of an unexpected size"));
        };
        let compressed = stream_inner(&mut mdc, &mut sink)?;
        mdc.finish().map_err(|e| {
            integrity(format!(
                "the message failed its integrity check (tampered, truncated or corrupted); \
                 DISCARD the output written so far: {e}"
            ))
        })?;
        // Nothing may follow the encrypted data packet.
        let mut rest = mdc.into_inner().into_inner().into_inner();
        let trailing = rest.fill_buf().map(|b| !b.is_empty()).unwrap_or(true);
        if trailing {
            return Err(integrity(
                "data follows the encrypted message (appended or corrupted); \
                 DISCARD the output written so far",
            ));
        }
        sink.finish()
            .map_err(|e| Error::internal(format!("decryption pipeline: {e}")))?;
        return Ok(Used { compressed, ..used });
    }
    let ring = TheRing {
        secret_keys: vec![chosen.key],
        key_passwords: vec![&password],
        decrypt_options: DecryptionOptions::new().set_seipdv1_read_mode(Seipdv1ReadMode::Streaming),
        ..Default::default()
    };
    let (msg, _) = msg.decrypt_the_ring(ring, true).map_err(|e| {
        integrity(format!(
            "could not decrypt the session key with {key_desc} (corrupted message, or \
             mismatched key material): {e}"
        ))
    })?;
    let compressed = stream_message(msg, &mut sink)?;
    sink.finish()
        .map_err(|e| Error::internal(format!("decryption pipeline: {e}")))?;
    Ok(Used { compressed, ..used })
}

/// The AES session key of `pkesk`, decrypted with `c`'s key, if it is one.
fn aes_session_key(
    pkesk: &pgp::packet::PublicKeyEncryptedSessionKey,
    c: &Candidate<'_>,
    password: &Password,
) -> Option<Zeroizing<Vec<u8>>> {
    let values = pkesk.values().ok()?;
    let typ = pgp::types::EskType::V3_4;
    let got = if c.is_primary {
        c.key.primary_key.decrypt(password, values, typ)
    } else {
        let sk = c
            .key
            .secret_subkeys
            .iter()
            .find(|s| s.key.legacy_key_id() == c.key_id)?;
        sk.key.decrypt(password, values, typ)
    };
    let session = got.ok()?.ok()?;
    match &session {
        PlainSessionKey::V3_4 {
            sym_alg:
                SymmetricKeyAlgorithm::AES128
                | SymmetricKeyAlgorithm::AES192
                | SymmetricKeyAlgorithm::AES256,
            key,
        } => Some(Zeroizing::new(key.as_ref().to_vec())),
        _ => None,
    }
}

/// Parse the packets inside the encrypted data and stream the literal data
/// to `sink`; returns whether it was compressed. A literal data packet (what
/// snap writes) is read here without copying; anything else by rPGP.
fn stream_inner(
    mdc: &mut MdcReader<impl BufRead + Send + fmt::Debug>,
    sink: &mut ChanWriter<'_>,
) -> Result<bool> {
    let damaged = |e: std::io::Error| {
        integrity(format!(
            "the message failed its integrity check (tampered, truncated or corrupted); \
             DISCARD the output written so far: {e}"
        ))
    };
    let first = mdc.fill_buf().map_err(damaged)?.first().copied();
    if first.is_some_and(is_literal) {
        let mut lit = LiteralReader::new(&mut *mdc).map_err(damaged)?;
        stream_chunks(&mut lit, sink)?;
        return Ok(false);
    }
    let (msg, _) = Message::from_reader(mdc).map_err(|e| {
        integrity(format!(
            "the decrypted data is not an OpenPGP message (wrong key material, or corrupted): {e}"
        ))
    })?;
    stream_message(msg, sink)
}

/// Copy `data` into chunks for the writer stage.
fn stream_chunks(data: &mut impl Read, sink: &mut ChanWriter<'_>) -> Result<()> {
    // Stream the plaintext. From here on any failure that is not the I/O of
    // another stage means the data is not what was encrypted.
    loop {
        let chunk = fill_chunk(data, sink.pool()).map_err(|e| {
            integrity(format!(
                "the message failed its integrity check (tampered, truncated or corrupted); \
                 DISCARD the output written so far: {e}"
            ))
        })?;
        let last = !is_full(&chunk);
        if !chunk.data().is_empty() {
            sink.send_chunk(chunk)
                .map_err(|e| Error::internal(format!("decryption pipeline: {e}")))?;
        } else {
            sink.pool().put(chunk);
        }
        if last {
            break;
        }
    }
    Ok(())
}

/// Stream a decrypted message's literal data into `sink`; whether it was compressed.
fn stream_message(mut msg: Message<'_>, sink: &mut ChanWriter<'_>) -> Result<bool> {
    let mut compressed = false;
    while msg.is_compressed() {
        compressed = true;
        msg = msg
            .decompress()
            .map_err(|e| integrity(format!("bad compressed data in the message: {e}")))?;
    }

    stream_chunks(&mut msg, sink)?;
    Ok(compressed)
}
