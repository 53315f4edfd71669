//! A flag that asks the parts of one job to stop.
//!
//! When work runs side by side (a restore's pieces, two at a time) and one
//! part fails, the others are worth nothing: a [`Stop`] shared by them is
//! raised by the failing part, and every other part stops at its next
//! chunk with an [`ErrorKind::Interrupted`] error instead of finishing a
//! download or a decryption whose result will be thrown away.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind};

/// Shared by the parts of one job; cheap to clone and to check.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn new() -> Self {
        Stop::default()
    }

    /// Ask every part to stop. True for the call that raised it first.
    pub fn raise(&self) -> bool {
        !self.0.swap(true, Ordering::SeqCst)
    }

    pub fn raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Ok` while not raised; otherwise the error that stops `what`.
    pub fn check(&self, what: &str) -> Result<(), Error> {
        if self.raised() {
            return Err(Error::new(
                ErrorKind::Interrupted,
                format!("{what}: stopped, another part of the same job failed"),
            ));
        }
        Ok(())
    }

    /// [`Stop::check`] as an I/O error, for readers and writers (the snap
    /// error inside keeps its kind through `io::Error::other`).
    pub fn check_io(&self, what: &str) -> io::Result<()> {
        self.check(what).map_err(io::Error::other)
    }
}

/// A reader that fails once its [`Stop`] is raised.
pub struct StopReader<R> {
    inner: R,
    stop: Stop,
    what: String,
}

impl<R: Read> StopReader<R> {
    pub fn new(inner: R, stop: Stop, what: impl Into<String>) -> Self {
        StopReader {
            inner,
            stop,
            what: what.into(),
        }
    }
}

impl<R: Read> Read for StopReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stop.check_io(&self.what)?;
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_stop_fails_the_next_read_not_the_one_before() {
        let stop = Stop::new();
        let mut r = StopReader::new(&b"abcdef"[..], stop.clone(), "reading piece 3");
        let mut buf = [0u8; 3];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert!(stop.raise(), "the first raise");
        assert!(!stop.raise(), "raised already");
        let e = r.read(&mut buf).unwrap_err();
        // Not io's Interrupted, which read loops retry forever.
        assert_eq!(e.kind(), io::ErrorKind::Other);
        let e = e.into_inner().unwrap().downcast::<Error>().unwrap();
        assert_eq!(e.kind(), ErrorKind::Interrupted);
        assert_eq!(
            e.to_string(),
            "reading piece 3: stopped, another part of the same job failed"
        );
        assert!(Stop::new().check("x").is_ok());
    }
}
