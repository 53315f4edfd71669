//! The streaming multipart writer shared by the S3 and Glacier backends.
//!
//! The caller's thread fills one part buffer; a full buffer becomes a task on
//! the target's runtime; at most `max_in_flight` tasks run at once, and a
//! write that would start one more waits for the oldest to finish. Memory is
//! therefore about (in flight + 1) x part size. The whole-object SHA-256 (and
//! for vaults the tree hash) is computed on the caller's thread while the data
//! streams through.

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use snap_core::{Error, Progress, Result};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::error::to_io;
use crate::glacier::TreeHasher;
use crate::{ArchiveWriter, MAX_PART_SIZE, MAX_PARTS, MIB, UploadResult};

pub(crate) type PartFuture = Pin<Box<dyn Future<Output = Result<PartDone>> + Send + 'static>>;

/// One uploaded part.
#[derive(Debug, Clone)]
pub(crate) struct PartDone {
    pub number: u64,
    pub len: u64,
    pub etag: Option<String>,
    /// Base64 SHA-256 of the part (S3).
    pub checksum: Option<String>,
}

/// What the writer knows about the whole object when it completes.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    pub size: u64,
    pub sha256_hex: String,
    pub tree_hash: Option<[u8; 32]>,
    pub first_part_size: u64,
}

/// What a backend does for the writer.
pub(crate) trait PartBackend: Send + Sync {
    /// `s3://bucket/key` or `vault NAME archive "description"`, for messages.
    fn object(&self) -> String;
    /// Size of part `number` (1-based).
    fn part_size(&self, number: u64) -> u64;
    /// Start the multipart upload; returns its id.
    fn start(&self) -> Result<String>;
    /// The upload of one part (runs on the runtime, retries inside).
    fn part(&self, upload_id: &str, number: u64, offset: u64, data: Bytes) -> PartFuture;
    /// Complete the upload (parts sorted by number).
    fn complete(
        &self,
        upload_id: &str,
        parts: &[PartDone],
        summary: &Summary,
    ) -> Result<UploadResult>;
    /// Upload everything in one request (nothing was started).
    fn single(&self, data: Bytes, summary: &Summary) -> Result<UploadResult>;
    /// Abort the multipart upload.
    fn abort(&self, upload_id: &str) -> Result<()>;
    /// Whether the Glacier tree hash of the whole object is needed.
    fn wants_tree_hash(&self) -> bool;
}

/// S3 part sizes: `base` for parts 1..=1000, doubling every 1000 parts, at
/// most 5 GiB. From 5 MiB this reaches S3's 5 TiB object limit within 10,000
/// parts, so the writer needs no size in advance; a size hint raises `base` so
/// that the hinted size fits in 9,000 parts (room for a wrong hint).
pub(crate) fn growing_part_size(base: u64, size_hint: Option<u64>, number: u64) -> u64 {
    let base = match size_hint {
        Some(size) => base.max(round_up(size.div_ceil(9_000), MIB)),
        None => base,
    };
    let doublings = ((number.max(1) - 1) / 1000).min(20) as u32;
    base.saturating_mul(1u64 << doublings).min(MAX_PART_SIZE)
}

pub(crate) fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// Run `f` until it succeeds, retrying transient failures `retries` times with
/// exponential backoff (capped at one minute).
/// One SDK call with [`with_retries`]: `send` builds and sends the request
/// afresh for every attempt; a failure becomes an [`Error`] naming `what`.
pub(crate) async fn sdk_retried<T, E, F, Fut>(
    retries: u32,
    backoff: Duration,
    what: &str,
    mut send: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    with_retries(retries, backoff, || {
        let sent = send();
        async move { sent.await.map_err(|e| crate::error::sdk_error(what, e)) }
    })
    .await
}

impl crate::config::Shared {
    /// One request, sent on this target's runtime and retried as
    /// [`sdk_retried`] does; the caller waits for it.
    pub(crate) fn send<T, E, F, Fut>(
        &self,
        (retries, backoff): (u32, Duration),
        what: &str,
        send: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.rt.block_on(sdk_retried(retries, backoff, what, send))
    }

    /// [`Shared::send`], with each attempt given up (a `Network` error,
    /// retried) when no answer came within the target's `stall_timeout`:
    /// for a listing's page, small whatever the data, which an endpoint
    /// that never answers would hold for ever.
    pub(crate) fn send_within<T, E, F, Fut>(
        &self,
        config: &crate::TargetConfig,
        what: &str,
        mut send: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let stall = config.stall_timeout;
        let (retries, backoff) = (config.part_retries, config.retry_backoff);
        self.rt.block_on(with_retries(retries, backoff, || {
            let sent = send();
            async move {
                match tokio::time::timeout(stall, sent).await {
                    Ok(r) => r.map_err(|e| crate::error::sdk_error(what, e)),
                    Err(_) => Err(Error::new(
                        snap_core::ErrorKind::Network,
                        format!("{what}: no answer within {stall:?} (stall_timeout)"),
                    )),
                }
            }
        }))
    }
}

pub(crate) async fn with_retries<T, F, Fut>(retries: u32, backoff: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.kind().is_transient() && attempt < retries => {
                tokio::time::sleep(backoff_delay(backoff, attempt)).await;
                attempt += 1;
            }
            Err(e) if attempt > 0 => {
                return Err(e.context(format!("gave up after {} attempts", attempt + 1)));
            }
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(60))
}

/// `fut`, unless `progress` is asked to stop first ([`Progress::with_stop`]):
/// a download that waits for an answer, a body chunk or its backoff checks
/// the stop every 100 ms and ends `Interrupted` rather than retrying on.
pub(crate) async fn unless_stopped<F: std::future::Future>(
    progress: &Progress,
    fut: F,
) -> Result<F::Output> {
    let mut fut = std::pin::pin!(fut);
    loop {
        progress.check_stop().map_err(crate::error::error_from_io)?;
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(100), &mut fut).await {
            return Ok(v);
        }
    }
}

/// [`unless_stopped`], and `None` if `fut` is not done within `limit`: a
/// download's wait for an answer or a body chunk, which a stalled server
/// would make endless.
pub(crate) async fn within<F: std::future::Future>(
    progress: &Progress,
    limit: Duration,
    fut: F,
) -> Result<Option<F::Output>> {
    match tokio::time::timeout(limit, unless_stopped(progress, fut)).await {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}

/// The least a download must receive per `stall_timeout` (or the rest of
/// the object, when less is left), as curl's low-speed limit.
pub(crate) const LOW_SPEED_BYTES: u64 = 64 * 1024;

/// The pace of one attempt of a download, against the stall rule: each
/// window of `stall` must bring [`LOW_SPEED_BYTES`] (or what is left), and
/// only an attempt that brought as much counts as progress (resetting the
/// retries). Cold review of 7a061fa: with a timer per chunk and the
/// retries reset by any chunk, a server sending a byte now and then (or
/// empty chunks) held a download for ever.
pub(crate) struct Pace {
    stall: Duration,
    window: std::time::Instant,
    in_window: u64,
    need: u64,
    in_attempt: u64,
    attempt_need: u64,
}

impl Pace {
    /// `left`: the bytes still to come, if known.
    pub(crate) fn new(stall: Duration, left: Option<u64>) -> Self {
        let need = left.map_or(LOW_SPEED_BYTES, |l| l.min(LOW_SPEED_BYTES));
        Pace {
            stall,
            window: std::time::Instant::now(),
            in_window: 0,
            need,
            in_attempt: 0,
            attempt_need: need,
        }
    }

    /// How long the next chunk may take: the rest of the window.
    pub(crate) fn left(&self) -> Duration {
        self.stall.saturating_sub(self.window.elapsed())
    }

    pub(crate) fn add(&mut self, n: u64) {
        self.in_window += n;
        self.in_attempt += n;
    }

    /// Whether this attempt brought enough to count as progress.
    pub(crate) fn progressed(&self) -> bool {
        self.in_attempt >= self.attempt_need.max(1)
    }

    /// The window ran out: a new one if it brought enough, else why not.
    pub(crate) fn window_over(&mut self, left: Option<u64>) -> std::result::Result<(), String> {
        if self.in_window >= self.need.max(1) {
            self.window = std::time::Instant::now();
            self.in_window = 0;
            self.need = left.map_or(LOW_SPEED_BYTES, |l| l.min(LOW_SPEED_BYTES));
            return Ok(());
        }
        Err(format!(
            "{} bytes within {:?}, less than the {} a download must get in that time",
            self.in_window, self.stall, self.need
        ))
    }
}

/// A copy of an error (snap's errors are not `Clone`).
pub(crate) fn copy_error(e: &Error) -> Error {
    Error::new(e.kind(), e.to_string())
}

/// The generic streaming writer.
pub(crate) struct PartWriter<'a, B: PartBackend> {
    backend: B,
    rt: Arc<Runtime>,
    progress: &'a Progress,
    max_in_flight: usize,
    upload_id: Option<String>,
    buf: Vec<u8>,
    /// Size the current buffer is filled to before it is sent.
    target: u64,
    first_part_size: u64,
    next_part: u64,
    offset: u64,
    tasks: JoinSet<Result<PartDone>>,
    done: Vec<PartDone>,
    sha: Sha256,
    tree: Option<TreeHasher>,
    total: u64,
    failed: Option<Error>,
    finished: bool,
}

impl<'a, B: PartBackend> PartWriter<'a, B> {
    pub(crate) fn new(
        backend: B,
        rt: Arc<Runtime>,
        progress: &'a Progress,
        max_in_flight: usize,
    ) -> Self {
        let target = backend.part_size(1);
        let tree = backend.wants_tree_hash().then(TreeHasher::new);
        PartWriter {
            backend,
            rt,
            progress,
            max_in_flight: max_in_flight.max(1),
            upload_id: None,
            buf: Vec::new(),
            target,
            first_part_size: target,
            next_part: 1,
            offset: 0,
            tasks: JoinSet::new(),
            done: Vec::new(),
            sha: Sha256::new(),
            tree,
            total: 0,
            failed: None,
            finished: false,
        }
    }

    /// Collect parts that finished, without waiting.
    fn reap(&mut self) -> Result<()> {
        while let Some(joined) = self.tasks.try_join_next() {
            self.record(joined)?;
        }
        Ok(())
    }

    fn record(
        &mut self,
        joined: std::result::Result<Result<PartDone>, tokio::task::JoinError>,
    ) -> Result<()> {
        match joined {
            Ok(Ok(part)) => {
                self.progress.add(part.len);
                self.done.push(part);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(join) => Err(Error::internal(format!(
                "a part upload task of {} died: {join}",
                self.backend.object()
            ))),
        }
    }

    /// Wait for one running part.
    fn wait_one(&mut self) -> Result<()> {
        let rt = self.rt.clone();
        match rt.block_on(self.tasks.join_next()) {
            Some(joined) => self.record(joined),
            None => Ok(()),
        }
    }

    fn send_part(&mut self) -> Result<()> {
        if self.upload_id.is_none() {
            self.upload_id = Some(self.backend.start()?);
        }
        let number = self.next_part;
        if number > MAX_PARTS {
            return Err(Error::invalid_input(format!(
                "{} needs more than {MAX_PARTS} parts of {} bytes: raise the part size or give a size hint",
                self.backend.object(),
                self.target
            )));
        }
        // Backpressure: wait until a slot is free.
        self.reap()?;
        while self.tasks.len() >= self.max_in_flight {
            self.wait_one()?;
        }
        let data = Bytes::from(std::mem::take(&mut self.buf));
        let len = data.len() as u64;
        let upload_id = self.upload_id.clone().unwrap_or_default();
        let fut = self.backend.part(&upload_id, number, self.offset, data);
        self.tasks.spawn_on(fut, self.rt.handle());
        self.offset += len;
        self.next_part += 1;
        self.target = self.backend.part_size(self.next_part);
        Ok(())
    }

    fn fail(&mut self, e: Error) -> io::Error {
        let out = to_io(copy_error(&e));
        self.failed = Some(e);
        out
    }

    fn summary(&mut self) -> Summary {
        let sha = std::mem::take(&mut self.sha);
        Summary {
            size: self.total,
            sha256_hex: hex::encode(sha.finalize()),
            tree_hash: self.tree.take().map(|t| t.finish()),
            first_part_size: self.first_part_size,
        }
    }

    /// Stop running parts and abort the multipart upload (if one was started).
    fn cancel(&mut self) -> Result<()> {
        self.finished = true;
        self.tasks.abort_all();
        let rt = self.rt.clone();
        rt.block_on(async { while self.tasks.join_next().await.is_some() {} });
        match self.upload_id.take() {
            Some(id) => self.backend.abort(&id),
            None => Ok(()),
        }
    }

    /// After a failure: abort, and say in the error whether that worked.
    fn fail_and_abort(&mut self, e: Error) -> Error {
        let id = self.upload_id.clone();
        match self.cancel() {
            Ok(()) => e,
            Err(abort) => Error::new(
                e.kind(),
                format!(
                    "{e}; the incomplete upload {} was left behind for the next run to abort \
                     ({abort})",
                    id.unwrap_or_default()
                ),
            ),
        }
    }

    fn finish_inner(&mut self) -> Result<UploadResult> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.upload_id.is_none() {
            let data = Bytes::from(std::mem::take(&mut self.buf));
            let summary = self.summary();
            let result = self.backend.single(data, &summary)?;
            self.progress.add(summary.size);
            return Ok(result);
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        while !self.tasks.is_empty() {
            self.wait_one()?;
        }
        self.done.sort_by_key(|p| p.number);
        let summary = self.summary();
        let upload_id = self.upload_id.clone().unwrap_or_default();
        self.backend.complete(&upload_id, &self.done, &summary)
    }
}

impl<B: PartBackend> Write for PartWriter<'_, B> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(to_io(copy_error(e)));
        }
        if self.finished {
            return Err(to_io(Error::internal(
                "write after the upload was finished",
            )));
        }
        let mut rest = data;
        while !rest.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(self.target as usize);
            }
            let room = (self.target as usize).saturating_sub(self.buf.len());
            let n = room.min(rest.len());
            let (now, later) = rest.split_at(n);
            self.buf.extend_from_slice(now);
            self.sha.update(now);
            if let Some(t) = &mut self.tree {
                t.update(now);
            }
            self.total += n as u64;
            rest = later;
            if self.buf.len() as u64 >= self.target
                && let Err(e) = self.send_part()
            {
                return Err(self.fail(e));
            }
        }
        if let Err(e) = self.reap() {
            return Err(self.fail(e));
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Parts go out when they are full; the rest goes with finish().
        Ok(())
    }
}

impl<B: PartBackend> ArchiveWriter for PartWriter<'_, B> {
    fn written(&self) -> u64 {
        self.total
    }

    fn finish(mut self: Box<Self>) -> Result<UploadResult> {
        match self.finish_inner() {
            Ok(r) => {
                self.finished = true;
                self.upload_id = None;
                Ok(r)
            }
            Err(e) => Err(self.fail_and_abort(e)),
        }
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.cancel()
    }
}

impl<B: PartBackend> Drop for PartWriter<'_, B> {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped without finish: nothing may look complete. Best effort;
            // whatever is left is an incomplete upload the next run aborts.
            let _ = self.cancel();
        }
    }
}

/// `SystemTime` -> SDK time.
pub(crate) fn to_sdk_time(t: SystemTime) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from(t)
}

/// SDK time -> `SystemTime`.
pub(crate) fn from_sdk_time(t: &aws_smithy_types::DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIN_PART_SIZE;

    #[test]
    fn growing_parts_reach_five_tib_from_the_minimum() {
        let total: u64 = (1..=MAX_PARTS)
            .map(|n| growing_part_size(MIN_PART_SIZE, None, n))
            .sum();
        assert!(total >= 4_990 * 1024 * MIB, "{total}");
        assert_eq!(growing_part_size(MIN_PART_SIZE, None, 1), MIN_PART_SIZE);
        assert_eq!(growing_part_size(MIN_PART_SIZE, None, 1000), MIN_PART_SIZE);
        assert_eq!(
            growing_part_size(MIN_PART_SIZE, None, 1001),
            2 * MIN_PART_SIZE
        );
        for n in 1..=MAX_PARTS {
            let s = growing_part_size(64 * MIB, None, n);
            assert!((MIN_PART_SIZE..=MAX_PART_SIZE).contains(&s));
        }
    }

    #[test]
    fn size_hint_fits_in_nine_thousand_parts() {
        let size = 2 * 1024 * 1024 * MIB; // 2 TiB
        let s = growing_part_size(64 * MIB, Some(size), 1);
        assert!(s * 9000 >= size);
        assert_eq!(s % MIB, 0);
        // A small hint never goes below the configured size.
        assert_eq!(growing_part_size(64 * MIB, Some(10 * MIB), 1), 64 * MIB);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff_delay(b, 0), b);
        assert_eq!(backoff_delay(b, 3), Duration::from_millis(800));
        assert_eq!(backoff_delay(b, 30), Duration::from_secs(60));
    }
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    #[test]
    fn a_window_must_bring_64_kib_or_the_rest_and_only_that_earns_the_retries() {
        let mut p = Pace::new(Duration::from_secs(1), Some(10 * MIB));
        p.add(10); // a trickle
        assert!(!p.progressed());
        let why = p.window_over(Some(10 * MIB)).unwrap_err();
        assert!(
            why.contains("10 bytes within 1s, less than the 65536"),
            "{why}"
        );
        let mut p = Pace::new(Duration::from_secs(1), Some(10 * MIB));
        p.add(LOW_SPEED_BYTES);
        assert!(p.progressed());
        assert!(p.window_over(Some(10 * MIB)).is_ok());
        assert!(p.left() > Duration::from_millis(900), "a new window");
        // Near the end, the rest is enough; empty chunks are not progress.
        let mut p = Pace::new(Duration::from_secs(1), Some(100));
        p.add(0);
        assert!(!p.progressed() && p.window_over(Some(100)).is_err());
        p.add(100);
        assert!(p.progressed() && p.window_over(Some(0)).is_ok());
    }
}
