//! Getting archived objects out of an archival storage class (S3 GLACIER
//! and DEEP_ARCHIVE, or a Glacier vault): request a retrieval where none
//! was requested, and wait for it if asked to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use snap_core::progress::ProgressSink;
use snap_core::{Error, ErrorKind, Progress, Result};
use snap_offsite::{ArchiveTarget, RetrievalStatus, RetrievalTier};

/// How to get an archive out of an archival storage class.
#[derive(Debug, Clone)]
pub struct RetrievalOptions {
    /// Ask for a retrieval if the archive is not readable (default true).
    pub request: bool,
    pub tier: RetrievalTier,
    /// Days the restored copy stays readable.
    pub days: u32,
    /// Wait at most this long for the retrieval; None: do not wait.
    pub wait: Option<Duration>,
    /// Time between two status checks while waiting.
    pub poll: Duration,
}

impl Default for RetrievalOptions {
    fn default() -> Self {
        RetrievalOptions {
            request: true,
            tier: RetrievalTier::Standard,
            days: 3,
            wait: None,
            poll: Duration::from_secs(600),
        }
    }
}

/// What retrieval found and did.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalReport {
    pub storage_class: Option<String>,
    /// immediate | not-requested | in-progress | ready
    pub status: String,
    pub requested: bool,
    pub tier: Option<String>,
    pub waited_seconds: f64,
}

/// Make sure `key` of `target` can be read, requesting a retrieval and
/// waiting if asked to.
pub fn ensure_readable(
    target: &dyn ArchiveTarget,
    key: &str,
    opts: &RetrievalOptions,
    sink: &Option<Arc<dyn ProgressSink>>,
) -> Result<RetrievalReport> {
    let info = target.head(key)?;
    let mut report = RetrievalReport {
        storage_class: info.storage_class.clone(),
        status: info.retrieval.name().to_string(),
        requested: false,
        tier: None,
        waited_seconds: 0.0,
    };
    if info.retrieval.is_readable() {
        return Ok(report);
    }
    let class = info
        .storage_class
        .clone()
        .unwrap_or_else(|| "an archival class".into());
    let mut status = info.retrieval.clone();
    if status == RetrievalStatus::NotRequested {
        if !opts.request {
            return Err(Error::new(
                ErrorKind::NotReady,
                format!(
                    "archive {key} is in {class} and no retrieval was requested: request one (tier {}) and run again",
                    opts.tier.as_str()
                ),
            ));
        }
        status = target.request_retrieval(key, opts.days, opts.tier)?;
        report.requested = true;
        report.tier = Some(opts.tier.as_str().to_string());
    }
    let start = Instant::now();
    while !status.is_readable() {
        let waited = start.elapsed();
        let Some(limit) = opts.wait.filter(|l| waited < *l) else {
            report.status = status.name().to_string();
            report.waited_seconds = waited.as_secs_f64();
            return Err(Error::new(
                ErrorKind::NotReady,
                format!(
                    "archive {key} is in {class}: retrieval {} (tier {}{}); run the same restore again later{}",
                    status.name(),
                    opts.tier.as_str(),
                    if report.requested {
                        ", requested now"
                    } else {
                        ""
                    },
                    if opts.wait.is_some() {
                        format!(" (waited {:.0}s)", waited.as_secs_f64())
                    } else {
                        ", or let it wait".to_string()
                    }
                ),
            ));
        };
        let p = Progress::new(
            format!(
                "retrieval of {key}: {} (tier {})",
                status.name(),
                opts.tier.as_str()
            ),
            None,
            sink.clone(),
        );
        p.finish();
        std::thread::sleep(opts.poll.min(limit - waited));
        status = target.retrieval_status(key)?;
    }
    report.status = status.name().to_string();
    report.waited_seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
