//! Listings: bounded whatever the endpoint says, and walked with the SDK's
//! paginators where it has them (S3's version and upload listings have two
//! markers and no paginator: `s3::read` follows those itself, counting
//! with [`Listed`] too).

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_smithy_async::future::pagination_stream::PaginationStream;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use snap_core::{Error, ErrorKind, Result};

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
/// with a new marker, is stopped here.
pub const LIST_MAX_PAGES: usize = 10_000;

/// What a listing has seen: it is refused once past [`LIST_MAX_ENTRIES`]
/// entries or [`LIST_MAX_PAGES`] pages, whatever the endpoint says.
#[derive(Debug, Default)]
pub(crate) struct Listed {
    entries: usize,
    pages: usize,
}

impl Listed {
    /// Count a page of `entries`; `what` names the listing in the error.
    pub(crate) fn page(&mut self, entries: usize, what: &str) -> Result<()> {
        self.entries += entries;
        self.pages += 1;
        let (most, of) = if self.pages > LIST_MAX_PAGES {
            (LIST_MAX_PAGES, "pages")
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
}

/// Every page of the listing `start` begins (an SDK paginator's `send()`),
/// bounded by [`Listed`]; the whole listing is started again after a
/// transient error. `take` adds what it wants of a page to the answer and
/// says how many entries the page held.
pub(crate) fn every_page<O, E, T>(
    shared: &Shared,
    (retries, backoff): (u32, Duration),
    what: &str,
    start: impl Fn() -> PaginationStream<std::result::Result<O, SdkError<E>>>,
    take: impl Fn(&O, &mut Vec<T>) -> usize,
) -> Result<Vec<T>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (start, take) = (&start, &take);
    shared
        .rt
        .block_on(with_retries(retries, backoff, || async move {
            let mut out = Vec::new();
            let mut listed = Listed::default();
            let mut pages = start();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| sdk_error(what, e))?;
                listed.page(take(&page, &mut out), what)?;
            }
            Ok(out)
        }))
}
