//! Writing a SEIPDv1 message (RFC 4880 §5.1, §5.9, §5.13, §5.14), in three
//! stages so the serial AES-CFB has a core to itself:
//!
//! ```text
//!  input --read, SHA-256, literal packet, SHA-1 (MDC)--> plaintext of the SEIPD
//!        --AES-256-CFB (calling thread)--> ciphertext
//!        --SEIPD packet framing, SHA-256, write--> output
//! ```
//!
//! The message: one PKESK v3 per recipient (made by rPGP), then a SEIPD
//! packet (tag 18, version 1) with partial body lengths whose data is the
//! CFB encryption of: 16 random bytes and their last two again, a literal
//! data packet (tag 11, binary, no file name, date 0) with partial body
//! lengths, and the MDC packet (`0xD3 0x14`, SHA-1 of all before its 20
//! bytes). GnuPG 2.2 reads it (tests/gnupg.rs).

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender};

use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use snap_core::Progress;

use crate::cfb::{BLOCK, CfbEncryptor};
use crate::pipe::{CHUNK, Chunk, Digested, Msg, Pool, StageError, fill, io_error};

/// Partial body length of both packets: 2^16 bytes.
const PARTIAL_LOG2: u32 = 16;
const PARTIAL: usize = 1 << PARTIAL_LOG2;

/// A new-format packet length for the final part of a body.
fn final_length(len: usize, out: &mut Vec<u8>) {
    if len < 192 {
        out.push(len as u8);
    } else if len < 8384 {
        let l = len - 192;
        out.push((l >> 8) as u8 + 192);
        out.push(l as u8);
    } else {
        out.push(0xFF);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Fills pool chunks with a byte stream, hashing it with SHA-1, and sends
/// every full one (CHUNK bytes: whole AES blocks).
struct ChunkSink<'p> {
    tx: SyncSender<Msg>,
    pool: &'p Pool,
    cur: Chunk,
    sha1: Sha1,
}

impl ChunkSink<'_> {
    fn put(&mut self, mut data: &[u8]) -> Result<(), StageError> {
        self.sha1.update(data);
        while !data.is_empty() {
            let n = (CHUNK - self.cur.len).min(data.len());
            self.cur.buf[self.cur.len..self.cur.len + n].copy_from_slice(&data[..n]);
            self.cur.len += n;
            data = &data[n..];
            if self.cur.len == CHUNK {
                let full = std::mem::replace(&mut self.cur, self.pool.get());
                self.tx
                    .send(Msg::Data(full))
                    .map_err(|_| StageError::Aborted)?;
            }
        }
        Ok(())
    }
}

/// Stage 1: read the input (SHA-256 of it), and send the plaintext of the
/// SEIPD packet: prefix, literal data packet, MDC.
pub(crate) fn seal_stage<R: Read>(
    mut input: R,
    what: &str,
    tx: SyncSender<Msg>,
    pool: &Pool,
    hash: bool,
    progress: &Progress,
) -> Result<Digested, StageError> {
    let mut sink = ChunkSink {
        tx,
        pool,
        cur: pool.get(),
        sha1: Sha1::new(),
    };
    let mut prefix = [0u8; BLOCK + 2];
    rand::rngs::OsRng.fill_bytes(&mut prefix[..BLOCK]);
    prefix[BLOCK] = prefix[BLOCK - 2];
    prefix[BLOCK + 1] = prefix[BLOCK - 1];
    sink.put(&prefix)?;
    // Literal data packet: binary, no file name, date 0, then the data.
    sink.put(&[0xC0 | 11])?;
    let mut body = vec![0u8; PARTIAL];
    body[..6].copy_from_slice(&[b'b', 0, 0, 0, 0, 0]);
    let mut have = 6;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    loop {
        let n = fill(&mut input, &mut body[have..]).map_err(|e| io_error(what, e))?;
        if hash {
            hasher.update(&body[have..have + n]);
        }
        bytes += n as u64;
        progress.add(n as u64);
        have += n;
        if have < PARTIAL {
            break; // end of input
        }
        // A full part: send it only once more data is known to follow.
        let mut peek = [0u8; 1];
        let more = fill(&mut input, &mut peek).map_err(|e| io_error(what, e))?;
        sink.put(&[0xE0 | PARTIAL_LOG2 as u8])?;
        sink.put(&body)?;
        have = 0;
        if more == 0 {
            break;
        }
        if hash {
            hasher.update(peek);
        }
        bytes += 1;
        progress.add(1);
        body[0] = peek[0];
        have = 1;
    }
    let mut len = Vec::with_capacity(5);
    final_length(have, &mut len);
    sink.put(&len)?;
    sink.put(&body[..have])?;
    // The MDC packet hashes its own tag and length.
    sink.put(&[0xD3, 0x14])?;
    let mdc = sink.sha1.clone().finalize();
    sink.put(&mdc)?;
    let last = std::mem::replace(&mut sink.cur, pool.get());
    if last.len > 0 {
        sink.tx
            .send(Msg::Data(last))
            .map_err(|_| StageError::Aborted)?;
    }
    sink.tx.send(Msg::End).map_err(|_| StageError::Aborted)?;
    Ok(Digested {
        bytes,
        sha256: hasher.finalize().into(),
    })
}

/// Stage 2 (calling thread): encrypt every chunk in place and pass it on.
/// Chunks are whole AES blocks except the last.
pub(crate) fn cfb_stage(
    rx: Receiver<Msg>,
    tx: SyncSender<Msg>,
    key: &[u8],
) -> Result<(), StageError> {
    let mut enc = Some(CfbEncryptor::new(key).ok_or_else(|| {
        StageError::Failed(snap_core::Error::internal("AES key of an unexpected size"))
    })?);
    loop {
        match rx.recv() {
            Ok(Msg::Data(mut chunk)) => {
                let len = chunk.len;
                let Some(e) = enc.as_mut() else {
                    return Err(StageError::Failed(snap_core::Error::internal(
                        "encryption pipeline: data after the last partial block",
                    )));
                };
                if len % BLOCK == 0 {
                    e.blocks(&mut chunk.buf[..len]);
                } else {
                    enc.take().expect("encryptor").last(&mut chunk.buf[..len]);
                }
                tx.send(Msg::Data(chunk)).map_err(|_| StageError::Aborted)?;
            }
            Ok(Msg::End) => break,
            Err(_) => return Err(StageError::Aborted),
        }
    }
    tx.send(Msg::End).map_err(|_| StageError::Aborted)
}

/// Output that hashes and counts what is written.
struct Hashed<W: Write> {
    out: W,
    sha: Option<Sha256>,
    bytes: u64,
}

impl<W: Write> Hashed<W> {
    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(sha) = &mut self.sha {
            sha.update(data);
        }
        self.bytes += data.len() as u64;
        self.out.write_all(data)
    }
}

/// Stage 3: write `head` (the PKESKs), then the SEIPD packet around the
/// ciphertext chunks, hashing all that is written if `hash`.
pub(crate) fn frame_stage<W: Write>(
    output: W,
    what: &str,
    head: &[u8],
    rx: Receiver<Msg>,
    pool: &Pool,
    hash: bool,
) -> Result<Digested, StageError> {
    let mut w = Hashed {
        out: output,
        sha: hash.then(Sha256::new),
        bytes: 0,
    };
    let err = |e| StageError::from(io_error(what, e));
    w.put(head).map_err(err)?;
    w.put(&[0xC0 | 18]).map_err(err)?;
    // The packet's body: version 1, then the ciphertext, in parts of PARTIAL
    // bytes; a part goes out once more is known to follow.
    let mut body = Vec::with_capacity(PARTIAL);
    body.push(1u8);
    loop {
        match rx.recv() {
            Ok(Msg::Data(chunk)) => {
                let mut data = chunk.data();
                while !data.is_empty() {
                    if body.len() == PARTIAL {
                        w.put(&[0xE0 | PARTIAL_LOG2 as u8]).map_err(err)?;
                        w.put(&body).map_err(err)?;
                        body.clear();
                    }
                    let n = (PARTIAL - body.len()).min(data.len());
                    body.extend_from_slice(&data[..n]);
                    data = &data[n..];
                }
                pool.put(chunk);
            }
            Ok(Msg::End) => break,
            Err(_) => return Err(StageError::Aborted),
        }
    }
    let mut len = Vec::with_capacity(5);
    final_length(body.len(), &mut len);
    w.put(&len).map_err(err)?;
    w.put(&body).map_err(err)?;
    w.out.flush().map_err(err)?;
    Ok(Digested {
        bytes: w.bytes,
        sha256: w.sha.map(|s| s.finalize().into()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_encoded_as_rfc_4880_says() {
        let enc = |n| {
            let mut v = Vec::new();
            final_length(n, &mut v);
            v
        };
        assert_eq!(enc(0), vec![0]);
        assert_eq!(enc(191), vec![191]);
        assert_eq!(enc(192), vec![192, 0]);
        assert_eq!(enc(8383), vec![223, 255]);
        assert_eq!(enc(8384), vec![0xFF, 0, 0, 0x20, 0xC0]);
        const { assert!(PARTIAL >= 512 && CHUNK.is_multiple_of(BLOCK)) };
    }
}
