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
    let mut reports = ensure_all_readable(target, &[key], opts, sink)?;
    Ok(reports.remove(0))
}

/// Make sure every one of `keys` (the pieces of a chain's link) can be
/// read: first a retrieval is requested for each that needs one, so they
/// all run side by side, then one wait for all of them. Taken one at a
/// time, a link of N pieces in GLACIER would cost N runs, or N waits of
/// hours each.
pub fn ensure_all_readable(
    target: &dyn ArchiveTarget,
    keys: &[&str],
    opts: &RetrievalOptions,
    sink: &Option<Arc<dyn ProgressSink>>,
) -> Result<Vec<RetrievalReport>> {
    let mut reports = Vec::with_capacity(keys.len());
    let mut status = Vec::with_capacity(keys.len());
    for key in keys {
        let info = target.head(key)?;
        reports.push(RetrievalReport {
            storage_class: info.storage_class.clone(),
            status: info.retrieval.name().to_string(),
            requested: false,
            tier: None,
            waited_seconds: 0.0,
        });
        status.push(info.retrieval);
    }
    // "" for one key; for more, how many others are in the same state.
    let more = |n: usize| match n {
        0 | 1 => String::new(),
        2 => " (and 1 more piece of this link)".to_string(),
        n => format!(" (and {} more pieces of this link)", n - 1),
    };
    let unrequested: Vec<usize> = (0..keys.len())
        .filter(|&i| status[i] == RetrievalStatus::NotRequested)
        .collect();
    if let Some(&first) = unrequested.first() {
        if !opts.request {
            return Err(Error::new(
                ErrorKind::NotReady,
                format!(
                    "archive {} is in {} and no retrieval was requested{}: request one (tier {}) and run again",
                    keys[first],
                    class(&reports[first]),
                    more(unrequested.len()),
                    opts.tier.as_str()
                ),
            ));
        }
        for &i in &unrequested {
            status[i] = target.request_retrieval(keys[i], opts.days, opts.tier)?;
            reports[i].requested = true;
            reports[i].tier = Some(opts.tier.as_str().to_string());
        }
    }
    let start = Instant::now();
    loop {
        let pending: Vec<usize> = (0..keys.len())
            .filter(|&i| !status[i].is_readable())
            .collect();
        let waited = start.elapsed();
        // Every piece waited as long as the link did.
        for (r, st) in reports.iter_mut().zip(&status) {
            r.status = st.name().to_string();
            r.waited_seconds = waited.as_secs_f64();
        }
        let Some(&first) = pending.first() else {
            return Ok(reports);
        };
        let Some(limit) = opts.wait.filter(|l| waited < *l) else {
            return Err(Error::new(
                ErrorKind::NotReady,
                format!(
                    "archive {} is in {}: retrieval {} (tier {}{}){}; run the same restore again later{}",
                    keys[first],
                    class(&reports[first]),
                    status[first].name(),
                    opts.tier.as_str(),
                    if reports[first].requested {
                        ", requested now"
                    } else {
                        ""
                    },
                    more(pending.len()),
                    if opts.wait.is_some() {
                        format!(" (waited {:.0}s)", waited.as_secs_f64())
                    } else {
                        ", or let it wait".to_string()
                    }
                ),
            ));
        };
        let what = if pending.len() == 1 {
            format!("retrieval of {}", keys[first])
        } else {
            format!(
                "retrieval of {} pieces, {} first",
                pending.len(),
                keys[first]
            )
        };
        let p = Progress::new(
            format!(
                "{what}: {} (tier {})",
                status[first].name(),
                opts.tier.as_str()
            ),
            None,
            sink.clone(),
        );
        p.finish();
        std::thread::sleep(opts.poll.min(limit - waited));
        for &i in &pending {
            status[i] = target.retrieval_status(keys[i])?;
        }
    }
}

/// The storage class a report names, for messages.
fn class(r: &RetrievalReport) -> String {
    r.storage_class
        .clone()
        .unwrap_or_else(|| "an archival class".into())
}
