//! Listings: bounded whatever the endpoint says, and walked with the SDK's
//! paginators where it has them (S3's version and upload listings have two
//! markers and no paginator: `s3::read` follows those itself, counting
//! with [`Listed`] too).

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::http::HttpResponse;
use aws_smithy_async::future::pagination_stream::PaginationStream;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use snap_core::{Error, ErrorKind, Result};

use crate::TargetConfig;
use crate::config::Shared;
use crate::error::sdk_error;
use crate::parts::with_retries;

type SdkError<E> = aws_sdk_s3::error::SdkError<E, HttpResponse>;

/// The most objects (or object versions) a listing holds. Two years of a
/// fleet's archives are a few thousand; anyone who can put objects can
/// make more, and a listing is held in memory.
pub const LIST_MAX_ENTRIES: usize = 200_000;

/// The most pages a listing follows: [`LIST_MAX_ENTRIES`] at 50 a page (a
/// vault's default) is 4,000. An endpoint that hands out empty pages, each
/// with a new marker, is stopped here; pages count across the attempts of
/// a listing that is started again.
pub const LIST_MAX_PAGES: usize = 10_000;

/// The most entries one page may hold: S3's listings give at most 1,000, a
/// vault's 50 by default. (The SDK has parsed the page by then: the bound
/// keeps a flood from being held, not from being read.)
pub const LIST_MAX_PAGE_ENTRIES: usize = 1_000;

/// The longest marker a listing sends back: an S3 key is at most 1,024
/// bytes, a continuation token or an upload id a few hundred. The SDK puts
/// a marker in the request's URI and panics on one past 64 KiB.
pub const LIST_MAX_MARKER: usize = 4_096;

/// The longest a listing may take, all its pages and attempts together,
/// unless `stall_timeout` is longer (then twice that): honest listings of
/// [`LIST_MAX_ENTRIES`] take minutes; a server that answers each page just
/// within `stall_timeout` would otherwise hold one for weeks.
pub const LIST_DEADLINE: Duration = Duration::from_secs(3_600);

/// What a listing has seen: it is refused once past [`LIST_MAX_ENTRIES`]
/// entries, [`LIST_MAX_PAGES`] pages, a page of more than
/// [`LIST_MAX_PAGE_ENTRIES`] or its deadline, and when a marker is too
/// long or comes back (no progress), whatever the endpoint says.
#[derive(Debug)]
pub(crate) struct Listed {
    entries: usize,
    pages: usize,
    /// The markers given, hashed: a hostile endpoint's are not held.
    markers: HashSet<u64>,
    hasher: RandomState,
    until: Instant,
}

impl Listed {
    /// A listing of the target `config` describes, starting now.
    pub(crate) fn new(config: &TargetConfig) -> Listed {
        Listed::until(Instant::now() + LIST_DEADLINE.max(config.stall_timeout.saturating_mul(2)))
    }

    fn until(until: Instant) -> Listed {
        Listed {
            entries: 0,
            pages: 0,
            markers: HashSet::new(),
            hasher: RandomState::new(),
            until,
        }
    }

    /// Past the listing's deadline: a Network error (the endpoint is too
    /// slow), which a restarted attempt meets again before any request.
    fn in_time(&self, what: &str) -> Result<()> {
        if Instant::now() > self.until {
            return Err(Error::new(
                ErrorKind::Network,
                format!(
                    "{what}: not done after {} pages and more than an hour (or twice \
                     stall_timeout): given up",
                    self.pages
                ),
            ));
        }
        Ok(())
    }

    /// Count a page of `entries`; `what` names the listing in the error.
    pub(crate) fn page(&mut self, entries: usize, what: &str) -> Result<()> {
        self.entries += entries;
        self.pages += 1;
        self.in_time(what)?;
        let (most, of) = if self.pages > LIST_MAX_PAGES {
            (LIST_MAX_PAGES, "pages")
        } else if entries > LIST_MAX_PAGE_ENTRIES {
            (LIST_MAX_PAGE_ENTRIES, "entries on one page")
        } else if self.entries > LIST_MAX_ENTRIES {
            (LIST_MAX_ENTRIES, "entries")
        } else {
            return Ok(());
        };
        Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "{what}: more than {most} {of}, far more than snap puts there: not listed \
                 further (someone flooded it, or the endpoint pages without end)"
            ),
        ))
    }

    /// Where the next page starts, as the page says: `more` (more pages
    /// follow) and the marker to go on from. A page that says more follow
    /// must name a marker this listing has not been given before: else the
    /// listing could only end early (the SDK's paginators stop, silently,
    /// on a marker that comes back) or go round.
    pub(crate) fn next(&mut self, more: bool, marker: Option<&str>, what: &str) -> Result<()> {
        let broken = |why: String| {
            Error::new(
                ErrorKind::Integrity,
                format!("{what}: the listing cannot be followed: {why}"),
            )
        };
        match marker.filter(|m| !m.is_empty()) {
            _ if !more => Ok(()),
            None => Err(broken("a page says more follow but names no marker".into())),
            Some(m) => {
                check_marker(m, what)?;
                if !self.markers.insert(self.hasher.hash_one(m)) {
                    return Err(broken(format!(
                        "the endpoint gave the marker {m:?} again (no progress)"
                    )));
                }
                Ok(())
            }
        }
    }

    /// A listing started again after a transient error: its entries and
    /// markers afresh, its pages and its deadline still counted.
    fn again(&mut self, what: &str) -> Result<()> {
        self.in_time(what)?;
        self.entries = 0;
        self.markers.clear();
        Ok(())
    }
}

/// Refuse a marker longer than [`LIST_MAX_MARKER`] before it is sent back.
pub(crate) fn check_marker(marker: &str, what: &str) -> Result<()> {
    if marker.len() > LIST_MAX_MARKER {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "{what}: the listing cannot be followed: a marker of {} bytes (at most \
                 {LIST_MAX_MARKER}; an S3 key is at most 1,024)",
                marker.len()
            ),
        ));
    }
    Ok(())
}

/// Every page of the listing `start` begins (an SDK paginator's `send()`),
/// bounded by [`Listed`]: `next` says how many entries a page holds,
/// whether it says more follow, and its marker; `take` then adds what it
/// wants of the page to the answer. Each page must come within the target's
/// `stall_timeout`; after a transient error the whole listing is started
/// again (its pages still counted).
pub(crate) fn every_page<O, E, T>(
    shared: &Shared,
    config: &TargetConfig,
    what: &str,
    start: impl Fn() -> PaginationStream<std::result::Result<O, SdkError<E>>>,
    next: impl Fn(&O) -> (usize, bool, Option<String>),
    take: impl Fn(&O, &mut Vec<T>),
) -> Result<Vec<T>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (start, next, take) = (&start, &next, &take);
    let stall = config.stall_timeout;
    let listed = &RefCell::new(Listed::new(config));
    let (retries, backoff) = (config.part_retries, config.retry_backoff);
    shared
        .rt
        .block_on(with_retries(retries, backoff, || async move {
            listed.borrow_mut().again(what)?;
            let mut out = Vec::new();
            let mut pages = start();
            loop {
                let page = match tokio::time::timeout(stall, pages.next()).await {
                    Ok(Some(page)) => page.map_err(|e| sdk_error(what, e))?,
                    Ok(None) => return Ok(out),
                    Err(_) => {
                        return Err(Error::new(
                            ErrorKind::Network,
                            format!("{what}: no page within {stall:?} (stall_timeout)"),
                        ));
                    }
                };
                let (entries, more, marker) = next(&page);
                let mut listed = listed.borrow_mut();
                listed.page(entries, what)?;
                listed.next(more, marker.as_deref(), what)?;
                take(&page, &mut out);
            }
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon() -> Listed {
        Listed::until(Instant::now() + Duration::from_secs(60))
    }

    #[test]
    fn bounds_on_pages_entries_and_a_page() {
        let mut l = soon();
        for _ in 0..LIST_MAX_PAGES {
            l.page(0, "x").unwrap();
        }
        let e = l.page(0, "x").unwrap_err();
        assert!(e.to_string().contains("more than 10000 pages"), "{e}");
        let e = soon().page(LIST_MAX_PAGE_ENTRIES + 1, "x").unwrap_err();
        assert!(e.to_string().contains("entries on one page"), "{e}");
        let mut l = soon();
        for _ in 0..LIST_MAX_ENTRIES / LIST_MAX_PAGE_ENTRIES {
            l.page(LIST_MAX_PAGE_ENTRIES, "x").unwrap();
        }
        let e = l.page(1, "x").unwrap_err();
        assert!(e.to_string().contains("more than 200000 entries"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Integrity);
    }

    #[test]
    fn markers_must_be_new_short_and_named_when_more_follow() {
        let mut l = soon();
        l.next(true, Some("a"), "x").unwrap();
        l.next(true, Some("b"), "x").unwrap();
        l.next(false, None, "x").unwrap();
        l.next(false, Some("a"), "x").unwrap();
        let e = l.next(true, Some("a"), "x").unwrap_err();
        assert!(e.to_string().contains("\"a\" again (no progress)"), "{e}");
        let e = l.next(true, Some(""), "x").unwrap_err();
        assert!(e.to_string().contains("names no marker"), "{e}");
        let long = "k".repeat(LIST_MAX_MARKER + 1);
        let e = l.next(true, Some(&long), "x").unwrap_err();
        assert!(e.to_string().contains("a marker of 4097 bytes"), "{e}");
        l.next(true, Some(&long[1..]), "x").unwrap();
        // Started again: the same markers are fine once more.
        l.again("x").unwrap();
        l.next(true, Some("a"), "x").unwrap();
    }

    #[test]
    fn past_its_deadline_a_listing_gives_up_and_is_not_started_again() {
        let mut l = Listed::until(Instant::now());
        std::thread::sleep(Duration::from_millis(5));
        let e = l.page(0, "listing x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Network);
        assert!(
            e.to_string().contains("listing x: not done after 1 pages"),
            "{e}"
        );
        assert!(l.again("listing x").is_err());
    }
}
