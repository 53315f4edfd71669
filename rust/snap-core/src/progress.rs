//! Progress of long work: bytes done, rate, ETA, and a summary at the end.
//!
//! The engine counts with [`Progress::add`] (an atomic add, cheap enough for
//! every block) and a [`ProgressSink`] decides where reports go: the CLI prints
//! them to stderr, the Salt module logs them. Reports are throttled here so
//! sinks never see more than one per interval.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stop::Stop;

/// One report about a stage of work.
#[derive(Debug, Clone)]
pub struct ProgressEvent {
    pub stage: String,
    pub done: u64,
    pub total: Option<u64>,
    pub elapsed: Duration,
    /// Average bytes per second since the stage started.
    pub rate: f64,
    pub eta: Option<Duration>,
    pub finished: bool,
}

impl fmt::Display for ProgressEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, human_bytes(self.done))?;
        if let Some(total) = self.total {
            let pct = if total == 0 {
                100.0
            } else {
                self.done as f64 * 100.0 / total as f64
            };
            write!(f, " / {} ({pct:.0}%)", human_bytes(total))?;
        }
        write!(f, ", {}/s", human_bytes(self.rate as u64))?;
        if self.finished {
            write!(f, ", done in {}", human_duration(self.elapsed))
        } else if let Some(eta) = self.eta {
            write!(f, ", ETA {}", human_duration(eta))
        } else {
            write!(f, ", {} elapsed", human_duration(self.elapsed))
        }
    }
}

/// Where progress reports go.
pub trait ProgressSink: Send + Sync {
    fn report(&self, event: &ProgressEvent);
}

/// A sink that prints each report as one line to stderr.
pub struct StderrSink;

impl ProgressSink for StderrSink {
    fn report(&self, event: &ProgressEvent) {
        eprintln!("{event}");
    }
}

/// What a finished stage did.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSummary {
    pub stage: String,
    pub bytes: u64,
    pub elapsed: Duration,
    pub rate: f64,
}

/// A counter for one stage of work, shared between threads.
pub struct Progress {
    stage: String,
    total: AtomicU64, // u64::MAX = unknown
    done: AtomicU64,
    start: Instant,
    last: Mutex<Instant>,
    interval: Duration,
    sink: Option<Arc<dyn ProgressSink>>,
    stop: Option<Stop>,
}

impl Progress {
    pub fn new(
        stage: impl Into<String>,
        total: Option<u64>,
        sink: Option<Arc<dyn ProgressSink>>,
    ) -> Self {
        let start = Instant::now();
        Progress {
            stage: stage.into(),
            total: AtomicU64::new(total.unwrap_or(u64::MAX)),
            done: AtomicU64::new(0),
            start,
            last: Mutex::new(start),
            interval: Duration::from_secs(1),
            sink,
            stop: None,
        }
    }

    /// A counter nobody watches.
    pub fn silent(stage: impl Into<String>) -> Self {
        Progress::new(stage, None, None)
    }

    /// Report at most once per `interval` (default one second).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// A stage that is one part of a job: it stops once `stop` is raised
    /// (the stages that check [`Progress::check_stop`]: downloads).
    pub fn with_stop(mut self, stop: Stop) -> Self {
        self.stop = Some(stop);
        self
    }

    /// `Ok` unless this stage was asked to stop ([`Progress::with_stop`]).
    pub fn check_stop(&self) -> io::Result<()> {
        match &self.stop {
            Some(s) => s.check_io(&self.stage),
            None => Ok(()),
        }
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Count `n` more bytes; reports if the interval has passed.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if self.sink.is_none() {
            return;
        }
        let now = Instant::now();
        if let Ok(mut last) = self.last.try_lock()
            && now.duration_since(*last) >= self.interval
        {
            *last = now;
            drop(last);
            self.emit(false);
        }
    }

    /// The current state as an event.
    pub fn event(&self, finished: bool) -> ProgressEvent {
        let done = self.done();
        let total = match self.total.load(Ordering::Relaxed) {
            u64::MAX => None,
            t => Some(t),
        };
        let elapsed = self.start.elapsed();
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = match total {
            Some(t) if rate > 0.0 && t >= done => {
                Some(Duration::from_secs_f64((t - done) as f64 / rate))
            }
            _ => None,
        };
        ProgressEvent {
            stage: self.stage.clone(),
            done,
            total,
            elapsed,
            rate,
            eta,
            finished,
        }
    }

    fn emit(&self, finished: bool) {
        if let Some(sink) = &self.sink {
            sink.report(&self.event(finished));
        }
    }

    /// End the stage: one final report and the summary.
    pub fn finish(&self) -> StageSummary {
        let ev = self.event(true);
        self.emit(true);
        StageSummary {
            stage: ev.stage,
            bytes: ev.done,
            elapsed: ev.elapsed,
            rate: ev.rate,
        }
    }
}

/// A reader that counts what passes through it.
pub struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<'a, R: Read> ProgressReader<'a, R> {
    pub fn new(inner: R, progress: &'a Progress) -> Self {
        ProgressReader { inner, progress }
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// A writer that counts what passes through it.
pub struct ProgressWriter<'a, W> {
    inner: W,
    progress: &'a Progress,
}

impl<'a, W: Write> ProgressWriter<'a, W> {
    pub fn new(inner: W, progress: &'a Progress) -> Self {
        ProgressWriter { inner, progress }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for ProgressWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `1536` → `"1.5 KiB"`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `Duration` → `"1:02:03"`, `"2:03"` or `"0.4s"`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Mutex<Vec<ProgressEvent>>);
    impl ProgressSink for Collect {
        fn report(&self, event: &ProgressEvent) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    #[test]
    fn counts_reports_and_summarises() {
        let sink = Arc::new(Collect(Mutex::new(Vec::new())));
        let p = Progress::new("pack", Some(100), Some(sink.clone())).with_interval(Duration::ZERO);
        p.add(40);
        p.add(60);
        let s = p.finish();
        assert_eq!(s.bytes, 100);
        let events = sink.0.lock().unwrap();
        assert_eq!(events.len(), 3);
        assert!(events[2].finished);
        assert_eq!(events[0].done, 40);
        assert!(
            events[0]
                .to_string()
                .starts_with("pack: 40 B / 100 B (40%)")
        );
    }

    #[test]
    fn throttles() {
        let sink = Arc::new(Collect(Mutex::new(Vec::new())));
        let p =
            Progress::new("x", None, Some(sink.clone())).with_interval(Duration::from_secs(3600));
        for _ in 0..1000 {
            p.add(1);
        }
        assert_eq!(sink.0.lock().unwrap().len(), 0);
        p.finish();
        assert_eq!(sink.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn reader_and_writer_count() {
        let p = Progress::silent("copy");
        let mut r = ProgressReader::new(&b"hello world"[..], &p);
        let mut out = Vec::new();
        let mut w = ProgressWriter::new(&mut out, &p);
        io::copy(&mut r, &mut w).unwrap();
        assert_eq!(p.done(), 22);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_duration(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(human_duration(Duration::from_secs(123)), "2:03");
    }
}
