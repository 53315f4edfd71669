//! A chain link's pieces decrypted straight into their places in the
//! image, a few at a time.
//!
//! Pieces are independent: each is one OpenPGP message whose plaintext
//! fills some ranges of the image. A decryption is a pipeline of three
//! threads that keeps about 1.3 cores busy, and each piece also pays a fixed
//! cost (its session key's RSA decryption, some 8 ms) and, off-site, its
//! download. Two at a time overlap one piece's fixed costs and download with
//! the other's streaming: on the 14-link chain of the bench, 14 pieces took
//! 0.56 s one at a time against `gpg -d`'s 0.40 s for the same image.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use snap_core::{Error, Progress, Result, Stop};
use snap_crypt::{DecryptSummary, Digests, SecretKeySource};

use crate::fetch::Limited;

/// Pieces decrypted at once.
pub const PIECES_AT_ONCE: usize = 2;

/// `job(i, stop)` for every `i` in `jobs`, at most `workers` at once, taken
/// in order of `i`; the results in that order. Once a job fails (an error
/// or a panic) it raises `stop`: no other job starts, and the jobs running
/// stop at their next chunk (those that give `stop` to their readers and
/// downloads) instead of finishing work that will be thrown away. The error
/// returned is that of the job that failed first, the one that raised
/// `stop`, never the `Interrupted` of a job it stopped. A job only hands
/// `stop` on (to its readers and downloads); it never raises it itself.
pub fn in_order<T: Send>(
    jobs: std::ops::Range<usize>,
    workers: usize,
    job: impl Fn(usize, &Stop) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let (first, n) = (jobs.start, jobs.len());
    let next = AtomicUsize::new(0);
    let stop = Stop::new();
    // The job that raised `stop`: its error is the one returned.
    let cause = AtomicUsize::new(usize::MAX);
    let done: Mutex<Vec<Option<Result<T>>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, n.max(1)) {
            s.spawn(|| {
                while !stop.raised() {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    // Taken after a failure: left undone.
                    if i >= n || stop.raised() {
                        break;
                    }
                    // A panic (a parser on hostile bytes) fails this job and
                    // stops the others, as an error does.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job(first + i, &stop)
                    }))
                    .unwrap_or_else(|p| {
                        let why = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(Error::internal(format!(
                            "piece {}: a panic: {why}",
                            first + i
                        )))
                    });
                    if r.is_err() && stop.raise() {
                        cause.store(i, Ordering::SeqCst);
                    }
                    done.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(Some(Err(e))) = done.get_mut(cause.into_inner()).map(Option::take) {
        return Err(e);
    }
    let mut out = Vec::with_capacity(n);
    for r in done {
        match r {
            Some(r) => out.push(r?),
            None => return Err(Error::internal("a piece was left undone without an error")),
        }
    }
    Ok(out)
}

/// One range of a piece's plaintext: its offset in the piece, its length,
/// and its offset in the image.
pub type Place = (u64, u64, u64);

/// The plaintext of one piece, written to its places in the image and
/// hashed place by place (bytes in no place are dropped).
struct RangeSink<'a> {
    image: &'a File,
    places: Vec<(Place, Sha256)>,
    pos: u64,
}

impl Write for RangeSink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let (start, end) = (self.pos, self.pos + data.len() as u64);
        for ((from, len, at), h) in &mut self.places {
            let (a, b) = (start.max(*from), end.min(*from + *len));
            if a < b {
                let part = &data[(a - start) as usize..(b - start) as usize];
                h.update(part);
                self.image.write_all_at(part, *at + (a - *from))?;
            }
        }
        self.pos = end;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decrypt the piece read from `input` (named `reading`) into `places` of
/// `image` (the file, and its name in messages), reading no more plaintext
/// than `plaintext_size`. Returns the
/// summary and each place's SHA-256 (hex), for the caller to check. Only
/// the MDC is checked here.
pub fn decrypt_into(
    (image, writing): (&File, &str),
    input: impl Read + Send,
    reading: &str,
    plaintext_size: u64,
    places: &[Place],
    key: &SecretKeySource,
    progress: &Progress,
) -> Result<(DecryptSummary, Vec<String>)> {
    let sink = RangeSink {
        image,
        places: places.iter().map(|&p| (p, Sha256::new())).collect(),
        pos: 0,
    };
    // A piece that decrypts (or decompresses) to more than it should stops
    // there, not at its end.
    let mut out = Limited::new(sink, Some(plaintext_size));
    let sum = snap_crypt::decrypt_with(
        input,
        reading,
        &mut out,
        writing,
        key,
        Digests::NONE,
        progress,
    )?;
    let hashes = out
        .inner
        .places
        .into_iter()
        .map(|(_, h)| hex::encode(h.finalize()))
        .collect();
    Ok((sum, hashes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use snap_core::ErrorKind;

    #[test]
    fn a_piece_stops_at_the_manifests_plaintext_size_and_only_its_ranges_land() {
        // A piece that decrypts or decompresses to more than the manifest
        // says (a compression bomb from a directory of pieces) stops there.
        let dir = tempfile::tempdir().unwrap();
        let image = File::create(dir.path().join("image")).unwrap();
        let mut sink = Limited::new(
            RangeSink {
                image: &image,
                places: vec![((2, 3, 10), Sha256::new())],
                pos: 0,
            },
            Some(8),
        );
        sink.write_all(b"abcdef").unwrap();
        sink.write_all(b"gh").unwrap();
        let e = sink.write_all(b"i").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("more than the 8 bytes"), "{e}");
        let got = hex::encode(sink.inner.places.pop().unwrap().1.finalize());
        assert_eq!(got, hex::encode(Sha256::digest(b"cde")));
        let mut back = Vec::new();
        File::open(dir.path().join("image"))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(&back[10..], b"cde");
    }

    #[test]
    fn in_order_returns_the_failing_jobs_error_and_starts_nothing_after() {
        let started = AtomicUsize::new(0);
        let r = in_order(0..50, 2, |i, _| {
            started.fetch_add(1, Ordering::Relaxed);
            if i == 7 {
                return Err(Error::invalid_input(format!("piece {i}")));
            }
            Ok(i)
        });
        let e = r.expect_err("a piece fails");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "piece 7");
        // The failure stops the workers: a few started after it at most.
        assert!(started.load(Ordering::Relaxed) <= 10, "{started:?}");
        // A panicking job is an error that stops the others too (the
        // others take 50 ms each; the default hook, which symbolizes a
        // backtrace in a test build for a second, is silenced meanwhile).
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let started = AtomicUsize::new(0);
        let e = in_order(0..50, 2, |i, _| {
            started.fetch_add(1, Ordering::Relaxed);
            if i == 3 {
                panic!("hostile bytes");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            Ok(i)
        })
        .expect_err("a job panics");
        std::panic::set_hook(hook);
        assert!(
            e.to_string().contains("piece 3: a panic: hostile bytes"),
            "{e}"
        );
        assert!(started.load(Ordering::Relaxed) <= 8, "{started:?}");
        let ok = in_order(0..5, 3, |i, _| Ok(i * 10)).unwrap();
        assert_eq!(ok, vec![0, 10, 20, 30, 40]);
        let ok = in_order(3..5, 2, |i, _| Ok(i)).unwrap();
        assert_eq!(ok, vec![3, 4]);
        assert!(in_order(0..0, 2, |i, _| Ok(i)).unwrap().is_empty());
    }

    #[test]
    fn a_failing_piece_stops_the_one_beside_it_at_its_next_chunk() {
        // Piece 0 is a long download (a base of hundreds of MB from
        // Glacier): 1000 chunks of 10 ms through a reader that checks the
        // stop, as the restore's downloads and decryptions do. Piece 1 is
        // tampered and fails at once. Without the stop the restore would
        // report the failure only after piece 0's ten seconds.
        let t = std::time::Instant::now();
        let chunks = AtomicUsize::new(0);
        let e = in_order(0..2, 2, |i, stop| -> Result<()> {
            if i == 1 {
                std::thread::sleep(std::time::Duration::from_millis(30));
                return Err(Error::new(ErrorKind::Integrity, "piece 1 is tampered"));
            }
            struct Slow<'a>(&'a AtomicUsize);
            impl Read for Slow<'_> {
                fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                    if self.0.fetch_add(1, Ordering::Relaxed) >= 1000 {
                        return Ok(0);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    buf[0] = 1;
                    Ok(1)
                }
            }
            let mut r = snap_core::StopReader::new(Slow(&chunks), stop.clone(), "piece 0");
            let e = io::copy(&mut r, &mut io::sink()).expect_err("stopped");
            let e = *e.into_inner().unwrap().downcast::<Error>().unwrap();
            assert_eq!(e.kind(), ErrorKind::Interrupted, "{e}");
            Err(e)
        })
        .expect_err("piece 1 fails");
        // The cause, not piece 0's Interrupted.
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        assert_eq!(e.to_string(), "piece 1 is tampered");
        eprintln!(
            "piece 1 failed, piece 0 stopped: {:.2} s in all, piece 0 read {} of 1000 chunks",
            t.elapsed().as_secs_f64(),
            chunks.load(Ordering::Relaxed)
        );
        assert!(chunks.load(Ordering::Relaxed) < 100, "{chunks:?}");
        assert!(t.elapsed() < std::time::Duration::from_secs(3));
    }
}
