//! SEIPDv1's symmetric layer (RFC 4880 §5.13, RFC 9580 §5.13.1), fast.
//!
//! The data of a SEIPDv1 packet is AES in OpenPGP's CFB mode (IV of zeros,
//! no resynchronisation) over: 16 random bytes, their last two repeated,
//! the packets, then a Modification Detection Code packet (`0xD3 0x14` and
//! the SHA-1 of everything before its 20 bytes).
//!
//! rPGP encrypts and decrypts this one block at a time in 8 KiB steps, with
//! the SHA-1 in the same loop. Here whole chunks go through the `cfb-mode`
//! crate at once: encryption is serial by nature (each block needs the one
//! before) but runs as one tight AES-NI loop; decryption has every input
//! block at hand and runs 8 blocks at a time. [`MdcReader`] streams the
//! plaintext of a packet and checks its MDC at the end (no buffering of
//! the message); the caller must not trust what it read until then.

use std::io::{self, BufRead, Read};

use aes::{Aes128, Aes192, Aes256};
use cfb_mode::cipher::inout::InOutBuf;
use cfb_mode::cipher::{AsyncStreamCipher, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use cfb_mode::{Decryptor, Encryptor};
use sha1::{Digest, Sha1};

/// AES block size.
pub(crate) const BLOCK: usize = 16;
/// The random prefix and its two repeated bytes.
pub(crate) const PREFIX: usize = BLOCK + 2;
/// The MDC packet: tag, length, SHA-1.
pub(crate) const MDC: usize = 22;

macro_rules! per_key_size {
    ($name:ident, $mode:ident) => {
        pub(crate) enum $name {
            A128($mode<Aes128>),
            A192($mode<Aes192>),
            A256($mode<Aes256>),
        }

        impl $name {
            /// AES in CFB mode with an IV of zeros, for a 16, 24 or 32 byte key.
            pub(crate) fn new(key: &[u8]) -> Option<Self> {
                let iv = [0u8; BLOCK];
                Some(match key.len() {
                    16 => $name::A128($mode::new_from_slices(key, &iv).ok()?),
                    24 => $name::A192($mode::new_from_slices(key, &iv).ok()?),
                    32 => $name::A256($mode::new_from_slices(key, &iv).ok()?),
                    _ => return None,
                })
            }
        }
    };
}

per_key_size!(CfbEncryptor, Encryptor);
per_key_size!(CfbDecryptor, Decryptor);

impl CfbEncryptor {
    /// Encrypt whole blocks in place (`buf.len()` a multiple of 16).
    pub(crate) fn blocks(&mut self, buf: &mut [u8]) {
        let (blocks, tail) = InOutBuf::from(buf).into_chunks();
        debug_assert!(tail.is_empty(), "whole blocks only");
        match self {
            CfbEncryptor::A128(c) => c.encrypt_blocks_inout_mut(blocks),
            CfbEncryptor::A192(c) => c.encrypt_blocks_inout_mut(blocks),
            CfbEncryptor::A256(c) => c.encrypt_blocks_inout_mut(blocks),
        }
    }

    /// Encrypt the stream's last bytes (any length).
    pub(crate) fn last(self, buf: &mut [u8]) {
        match self {
            CfbEncryptor::A128(c) => c.encrypt(buf),
            CfbEncryptor::A192(c) => c.encrypt(buf),
            CfbEncryptor::A256(c) => c.encrypt(buf),
        }
    }
}

impl CfbDecryptor {
    /// Decrypt whole blocks in place (`buf.len()` a multiple of 16).
    pub(crate) fn blocks(&mut self, buf: &mut [u8]) {
        let (blocks, tail) = InOutBuf::from(buf).into_chunks();
        debug_assert!(tail.is_empty(), "whole blocks only");
        match self {
            CfbDecryptor::A128(c) => c.decrypt_blocks_inout_mut(blocks),
            CfbDecryptor::A192(c) => c.decrypt_blocks_inout_mut(blocks),
            CfbDecryptor::A256(c) => c.decrypt_blocks_inout_mut(blocks),
        }
    }

    /// Decrypt whole blocks from `input` into `out` (same length, a multiple of 16).
    pub(crate) fn blocks_into(&mut self, input: &[u8], out: &mut [u8]) {
        let buf = InOutBuf::new(input, out).expect("equal lengths");
        let (blocks, tail) = buf.into_chunks();
        debug_assert!(tail.is_empty(), "whole blocks only");
        match self {
            CfbDecryptor::A128(c) => c.decrypt_blocks_inout_mut(blocks),
            CfbDecryptor::A192(c) => c.decrypt_blocks_inout_mut(blocks),
            CfbDecryptor::A256(c) => c.decrypt_blocks_inout_mut(blocks),
        }
    }

    /// Decrypt the stream's last bytes (any length).
    pub(crate) fn last(self, buf: &mut [u8]) {
        match self {
            CfbDecryptor::A128(c) => c.decrypt(buf),
            CfbDecryptor::A192(c) => c.decrypt(buf),
            CfbDecryptor::A256(c) => c.decrypt(buf),
        }
    }
}

/// Why a SEIPDv1 packet did not check out.
pub(crate) fn mdc_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("SEIPD: {what}"))
}

/// The plaintext of a SEIPDv1 packet's data (after its version octet),
/// streamed: the prefix is dropped, the last 22 bytes are held back until
/// the source ends, and then must be an MDC packet matching the SHA-1 of
/// all before it, or reading fails.
pub(crate) struct MdcReader<R: BufRead> {
    src: R,
    dec: Option<CfbDecryptor>,
    sha1: Sha1,
    buf: Vec<u8>,
    /// `buf[pos..ready]` is plaintext for the caller; `buf[ready..plain]`
    /// is decrypted but held back; `buf[plain..end]` is ciphertext not yet
    /// decrypted (less than a block).
    pos: usize,
    ready: usize,
    plain: usize,
    end: usize,
    started: bool,
    done: bool,
}

/// Bytes read and decrypted at a time.
const CHUNK: usize = 256 * 1024;

impl<R: BufRead> MdcReader<R> {
    /// `key`: the session key (AES-128, -192 or -256); `None` if another cipher.
    pub(crate) fn new(src: R, key: &[u8]) -> Option<Self> {
        Some(MdcReader {
            src,
            dec: Some(CfbDecryptor::new(key)?),
            sha1: Sha1::new(),
            buf: vec![0u8; CHUNK + BLOCK + MDC],
            pos: 0,
            ready: 0,
            plain: 0,
            end: 0,
            started: false,
            done: false,
        })
    }

    /// Read ciphertext and decrypt as much as possible; at the end, check
    /// the MDC.
    fn refill(&mut self) -> io::Result<()> {
        // Keep what is held back and the ciphertext of a partial block.
        self.buf.copy_within(self.ready..self.end, 0);
        self.plain -= self.ready;
        self.end -= self.ready;
        self.pos = 0;
        self.ready = 0;
        let mut eof = false;
        let dec = self.dec.as_mut().expect("decryptor until the end");
        // Whole blocks are decrypted from the source straight into buf;
        // the ciphertext of a partial block waits in buf[plain..end].
        while self.end + BLOCK <= self.buf.len() {
            let avail = self.src.fill_buf()?;
            if avail.is_empty() {
                eof = true;
                break;
            }
            let pending = self.end - self.plain;
            if pending > 0 {
                let n = (BLOCK - pending).min(avail.len());
                self.buf[self.end..self.end + n].copy_from_slice(&avail[..n]);
                self.end += n;
                self.src.consume(n);
                if self.end - self.plain == BLOCK {
                    dec.blocks(&mut self.buf[self.plain..self.end]);
                    self.plain = self.end;
                }
                continue;
            }
            let room = (self.buf.len() - self.end) / BLOCK * BLOCK;
            let whole = (avail.len() / BLOCK * BLOCK).min(room);
            if whole > 0 {
                dec.blocks_into(&avail[..whole], &mut self.buf[self.end..self.end + whole]);
                self.end += whole;
                self.plain = self.end;
                self.src.consume(whole);
            } else {
                let n = avail.len().min(BLOCK - 1);
                self.buf[self.end..self.end + n].copy_from_slice(&avail[..n]);
                self.end += n;
                self.src.consume(n);
            }
        }
        if eof {
            self.dec
                .take()
                .expect("decryptor")
                .last(&mut self.buf[self.plain..self.end]);
            self.plain = self.end;
        }
        if !self.started {
            if self.plain < PREFIX + MDC {
                return Err(mdc_error("the encrypted data is too short (truncated?)"));
            }
            self.sha1.update(&self.buf[..PREFIX]);
            self.pos = PREFIX;
            self.ready = PREFIX;
            self.started = true;
        }
        // Release all but the last MDC bytes.
        let release = self.plain.saturating_sub(MDC).max(self.ready);
        self.sha1.update(&self.buf[self.ready..release]);
        self.ready = release;
        if eof {
            let tail = &self.buf[self.ready..self.plain];
            if tail.len() != MDC {
                return Err(mdc_error("the encrypted data is too short (truncated?)"));
            }
            let mut h = self.sha1.clone();
            h.update(&tail[..2]);
            let ok = tail[0] == 0xD3 && tail[1] == 0x14 && h.finalize()[..] == tail[2..];
            if !ok {
                return Err(mdc_error(
                    "modification detection code mismatch (tampered, truncated or corrupted)",
                ));
            }
            self.done = true;
        }
        Ok(())
    }

    /// The source, once read.
    pub(crate) fn into_inner(self) -> R {
        self.src
    }

    /// Read to the end, checking the MDC; errors if plaintext is left.
    pub(crate) fn finish(&mut self) -> io::Result<u64> {
        let mut left = 0u64;
        loop {
            let n = self.fill_buf()?.len();
            if n == 0 {
                return Ok(left);
            }
            left += n as u64;
            self.consume(n);
        }
    }
}

impl<R: BufRead> std::fmt::Debug for MdcReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdcReader")
            .field("held", &(self.plain - self.ready))
            .field("done", &self.done)
            .finish()
    }
}

impl<R: BufRead> BufRead for MdcReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.ready && !self.done {
            self.refill()?;
        }
        Ok(&self.buf[self.pos..self.ready])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.ready);
    }
}

impl<R: BufRead> Read for MdcReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encrypt `data` as a SEIPDv1 body would be (prefix, data, MDC).
    fn seal(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut p = vec![7u8; BLOCK];
        p.extend_from_slice(&[7, 7]);
        p.extend_from_slice(data);
        p.extend_from_slice(&[0xD3, 0x14]);
        let h = Sha1::digest(&p);
        p.extend_from_slice(&h);
        let mut enc = CfbEncryptor::new(key).unwrap();
        let whole = p.len() / BLOCK * BLOCK / 2 / BLOCK * BLOCK;
        let (a, b) = p.split_at_mut(whole);
        enc.blocks(a);
        enc.last(b);
        p
    }

    #[test]
    fn round_trips_in_any_read_pattern_and_catches_tampering() {
        for key in [&[1u8; 16][..], &[2u8; 24][..], &[3u8; 32][..]] {
            for len in [
                0usize,
                1,
                15,
                16,
                17,
                1000,
                CHUNK - 40,
                CHUNK,
                CHUNK + 3,
                3 * CHUNK + 5,
            ] {
                let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                let c = seal(key, &data);
                // A source that hands out odd pieces.
                let src = io::BufReader::with_capacity(777, &c[..]);
                let mut r = MdcReader::new(src, key).unwrap();
                let mut got = Vec::new();
                r.read_to_end(&mut got).unwrap();
                assert_eq!(got, data, "len {len}");
                for flip in [0, c.len() / 2, c.len() - 1] {
                    let mut bad = c.clone();
                    bad[flip] ^= 0x40;
                    let mut r = MdcReader::new(&bad[..], key).unwrap();
                    let mut sink = Vec::new();
                    assert!(r.read_to_end(&mut sink).is_err(), "len {len} flip {flip}");
                }
                let mut r = MdcReader::new(&c[..c.len() - 1], key).unwrap();
                assert!(r.read_to_end(&mut Vec::new()).is_err(), "truncated {len}");
            }
        }
    }
}
