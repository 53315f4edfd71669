//! The plumbing of the three-stage pipelines used by encrypt and decrypt.
//!
//! ```text
//!   input --read+hash--> [chunks] --OpenPGP--> [chunks] --hash+write--> output
//!        (reader thread)        (calling thread)       (writer thread)
//! ```
//!
//! The middle stage (AES-CFB, and for decryption the SHA-1 MDC) is the
//! slowest part; the two SHA-256 digests and the system calls run beside it
//! on the other core instead of adding to its time. (Encryption has its own
//! stages in `seipd.rs`.) Chunks are 32 KiB: they stay in cache from one
//! stage to the next (measured against 64 and 256 KiB: least system time).
//! Chunks go through bounded channels and come back through a small free
//! list, so memory stays at
//! `(DEPTH + 3) * CHUNK` per channel whatever the size of the stream.
//!
//! End of stream is an explicit [`Msg::End`]: a channel that closes without it
//! means the other side stopped on an error, never a short but valid stream.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender};

use sha2::{Digest, Sha256};
use snap_core::{Error, Progress};

/// Size of one chunk handed between stages.
pub(crate) const CHUNK: usize = 32 * 1024;
/// Chunks that may wait in one channel.
pub(crate) const DEPTH: usize = 16;

pub(crate) enum Msg {
    Data(Chunk),
    End,
}

/// A buffer of `CHUNK` bytes of which the first `len` are data.
pub(crate) struct Chunk {
    pub(crate) buf: Vec<u8>,
    pub(crate) len: usize,
}

impl Chunk {
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Free list of chunk buffers shared by the stages of one pipeline.
#[derive(Default)]
pub(crate) struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    pub(crate) fn get(&self) -> Chunk {
        let buf = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .unwrap_or_else(|| vec![0u8; CHUNK]);
        Chunk { buf, len: 0 }
    }

    pub(crate) fn put(&self, chunk: Chunk) {
        if let Ok(mut free) = self.free.lock()
            && free.len() < 2 * DEPTH + 4
        {
            free.push(chunk.buf);
        }
    }
}

/// Why a stage stopped early.
pub(crate) enum StageError {
    /// The stage on the other side of a channel went away (it has the real error).
    Aborted,
    /// This stage failed.
    Failed(Error),
}

impl From<Error> for StageError {
    fn from(e: Error) -> Self {
        StageError::Failed(e)
    }
}

/// Which SHA-256 digests a pipeline computes besides the MDC's SHA-1.
///
/// Each costs a pass of SHA-256 over every byte, on the two cores a
/// pipeline shares with its three stages: a caller that gets a digest
/// elsewhere (an upload writer hashes what it sends, a chain's ranges are
/// hashed where they are read or written) leaves it out here. A digest left
/// out is an empty string in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    /// SHA-256 of the plaintext (read by encrypt, written by decrypt).
    pub plaintext: bool,
    /// SHA-256 of the ciphertext (written by encrypt, read by decrypt).
    pub ciphertext: bool,
}

impl Digests {
    /// Both digests.
    pub const BOTH: Digests = Digests {
        plaintext: true,
        ciphertext: true,
    };
    /// Neither: the caller hashes what it needs itself.
    pub const NONE: Digests = Digests {
        plaintext: false,
        ciphertext: false,
    };
    /// Only the plaintext's.
    pub const PLAINTEXT: Digests = Digests {
        plaintext: true,
        ciphertext: false,
    };
    /// Only the ciphertext's.
    pub const CIPHERTEXT: Digests = Digests {
        plaintext: false,
        ciphertext: true,
    };
}

/// Lowercase hex of a digest, or "" when it was not computed.
pub(crate) fn hex_if(wanted: bool, sha256: [u8; 32]) -> String {
    if wanted {
        hex::encode(sha256)
    } else {
        String::new()
    }
}

/// What an I/O stage saw: byte count and SHA-256.
pub(crate) struct Digested {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

/// An I/O error as a snap error. A writer or reader that already failed with a
/// snap error (an upload writer refused by the remote side, say) passes it
/// through `io::Error::other`; its kind is kept instead of becoming `Io`.
pub(crate) fn io_error(what: &str, e: io::Error) -> Error {
    if !e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        return Error::io(what, e);
    }
    let inner = e
        .into_inner()
        .and_then(|inner| inner.downcast::<Error>().ok())
        .expect("checked to be a snap error");
    inner.context(what)
}

/// Read until `buf` is full or the input ends; retries on EINTR.
pub(crate) fn fill<R: Read + ?Sized>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reader stage: read `input` in chunks, count (and if asked hash) them, pass them on.
pub(crate) fn read_stage<R: Read>(
    mut input: R,
    what: &str,
    tx: SyncSender<Msg>,
    pool: &Pool,
    hash: bool,
    progress: &Progress,
) -> Result<Digested, StageError> {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    loop {
        let mut chunk = pool.get();
        let n = fill(&mut input, &mut chunk.buf).map_err(|e| io_error(what, e))?;
        chunk.len = n;
        if hash {
            hasher.update(chunk.data());
        }
        bytes += n as u64;
        progress.add(n as u64);
        if n > 0 && tx.send(Msg::Data(chunk)).is_err() {
            return Err(StageError::Aborted);
        }
        if n < CHUNK {
            break;
        }
    }
    tx.send(Msg::End).map_err(|_| StageError::Aborted)?;
    Ok(Digested {
        bytes,
        sha256: hasher.finalize().into(),
    })
}

/// Writer stage: hash and write every chunk; succeed only on an explicit end.
pub(crate) fn write_stage<W: Write>(
    mut output: W,
    what: &str,
    rx: Receiver<Msg>,
    pool: &Pool,
    hash: bool,
) -> Result<Digested, StageError> {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    loop {
        match rx.recv() {
            Ok(Msg::Data(chunk)) => {
                if hash {
                    hasher.update(chunk.data());
                }
                output
                    .write_all(chunk.data())
                    .map_err(|e| io_error(what, e))?;
                bytes += chunk.len as u64;
                pool.put(chunk);
            }
            Ok(Msg::End) => break,
            Err(_) => return Err(StageError::Aborted),
        }
    }
    output.flush().map_err(|e| io_error(what, e))?;
    Ok(Digested {
        bytes,
        sha256: hasher.finalize().into(),
    })
}

fn stage_gone(side: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        format!("the {side} stage of the pipeline stopped"),
    )
}

/// The consuming end of a chunk channel, as a `BufRead`.
pub(crate) struct ChanReader<'p> {
    rx: Receiver<Msg>,
    pool: &'p Pool,
    cur: Option<Chunk>,
    pos: usize,
    ended: bool,
}

impl<'p> ChanReader<'p> {
    pub(crate) fn new(rx: Receiver<Msg>, pool: &'p Pool) -> Self {
        ChanReader {
            rx,
            pool,
            cur: None,
            pos: 0,
            ended: false,
        }
    }
}

impl fmt::Debug for ChanReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChanReader")
            .field("pos", &self.pos)
            .field("ended", &self.ended)
            .finish()
    }
}

impl BufRead for ChanReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        loop {
            if let Some(chunk) = &self.cur
                && self.pos < chunk.len
            {
                break;
            }
            if let Some(done) = self.cur.take() {
                self.pool.put(done);
            }
            if self.ended {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Msg::Data(chunk)) => {
                    self.cur = Some(chunk);
                    self.pos = 0;
                }
                Ok(Msg::End) => self.ended = true,
                Err(_) => return Err(stage_gone("reader")),
            }
        }
        let chunk = self.cur.as_ref().expect("chunk present");
        Ok(&chunk.data()[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}

impl Read for ChanReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The producing end of a chunk channel, as a `Write`. Call [`ChanWriter::finish`]
/// on success; dropping it without that tells the writer stage to fail.
pub(crate) struct ChanWriter<'p> {
    tx: SyncSender<Msg>,
    pool: &'p Pool,
    cur: Chunk,
}

impl<'p> ChanWriter<'p> {
    pub(crate) fn new(tx: SyncSender<Msg>, pool: &'p Pool) -> Self {
        ChanWriter {
            tx,
            pool,
            cur: pool.get(),
        }
    }

    fn send_current(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.cur, self.pool.get());
        self.tx
            .send(Msg::Data(chunk))
            .map_err(|_| stage_gone("writer"))
    }

    /// Hand over a chunk that is already filled (no copy).
    pub(crate) fn send_chunk(&mut self, chunk: Chunk) -> io::Result<()> {
        if self.cur.len > 0 {
            self.send_current()?;
        }
        self.tx
            .send(Msg::Data(chunk))
            .map_err(|_| stage_gone("writer"))
    }

    pub(crate) fn pool(&self) -> &'p Pool {
        self.pool
    }

    pub(crate) fn finish(mut self) -> io::Result<()> {
        if self.cur.len > 0 {
            self.send_current()?;
        }
        self.tx.send(Msg::End).map_err(|_| stage_gone("writer"))
    }
}

impl Write for ChanWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.cur.len;
        let n = room.min(data.len());
        self.cur.buf[self.cur.len..self.cur.len + n].copy_from_slice(&data[..n]);
        self.cur.len += n;
        if self.cur.len == CHUNK {
            self.send_current()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Fill a fresh chunk from `input` (for stages that produce whole chunks).
pub(crate) fn fill_chunk<R: Read + ?Sized>(input: &mut R, pool: &Pool) -> io::Result<Chunk> {
    let mut chunk = pool.get();
    chunk.len = fill(input, &mut chunk.buf)?;
    Ok(chunk)
}

pub(crate) fn is_full(chunk: &Chunk) -> bool {
    chunk.len == CHUNK
}

/// Bytes a message may hold before its encrypted data: its session-key
/// packets (a PKESK is about 530 bytes for RSA 4096, so ~2,000
/// recipients). rPGP keeps every session-key packet in memory before any
/// of them is checked; without a bound, a hostile message of tiny PKESKs
/// cost a restore about 13 times its size in memory.
pub(crate) const HEAD_LIMIT: u64 = 1 << 20;

/// A `BufRead` that refuses to give more than [`HEAD_LIMIT`] bytes until
/// `open` is set (once the message's head is parsed).
#[derive(Debug)]
pub(crate) struct HeadLimit<R> {
    inner: R,
    used: u64,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R> HeadLimit<R> {
    pub(crate) fn new(inner: R, open: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        HeadLimit {
            inner,
            used: 0,
            open,
        }
    }
}

impl<R: BufRead> BufRead for HeadLimit<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.used >= HEAD_LIMIT && !self.open.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "more than {} KiB of packets before the encrypted data (session keys for \
                     thousands of recipients?): not a message snap made",
                    HEAD_LIMIT >> 10
                ),
            ));
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.used = self.used.saturating_add(n as u64);
        self.inner.consume(n);
    }
}

impl<R: BufRead> Read for HeadLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let have = self.fill_buf()?;
            let n = have.len().min(buf.len());
            buf[..n].copy_from_slice(&have[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}
