//! Mapping AWS SDK errors to snap's kinds, and back from `io::Error`.

use std::fmt::Display;
use std::io;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use snap_core::{Error, ErrorKind};

/// Classify an SDK error and name what was being done.
///
/// - dropped/refused connections, timeouts, 5xx, throttling: `Network` (transient);
/// - 403 / AccessDenied: `Refused`;
/// - 412 (an `If-None-Match: *` that found an object): `AlreadyExists`;
/// - 404, NoSuchKey, NoSuchUpload, ResourceNotFound: `NotFound`;
/// - InvalidObjectState (archived, not restored): `NotReady`;
/// - a 2xx answer the SDK could not parse: `Integrity`;
/// - other 4xx: `Refused` with the service's code and message.
pub(crate) fn sdk_error<E>(what: impl Display, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    let msg = err.message().map(str::to_owned);
    let kind = match &err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorKind::Network,
        SdkError::DispatchFailure(d) => {
            if d.is_user() {
                // A request the connector cannot send (bad endpoint URI...).
                ErrorKind::InvalidInput
            } else {
                // I/O, timeouts and "other" (hyper: connection closed
                // before the message completed) are network failures.
                ErrorKind::Network
            }
        }
        SdkError::ServiceError(_) => classify(status, code.as_deref()),
        SdkError::ConstructionFailure(_) => ErrorKind::InvalidInput,
        _ => ErrorKind::Internal,
    };
    let mut text = format!("{what}");
    match (&code, &msg) {
        (Some(c), Some(m)) => text.push_str(&format!(": {c}: {m}")),
        (Some(c), None) => text.push_str(&format!(": {c}")),
        (None, Some(m)) => text.push_str(&format!(": {m}")),
        (None, None) => {}
    }
    if let Some(s) = status {
        text.push_str(&format!(" (HTTP {s})"));
        if kind == ErrorKind::Integrity {
            text.push_str(
                ": the answer could not be read (in a listing: a key XML cannot carry, sent raw in \
                 a page marker; someone with put rights named objects so)",
            );
        }
    }
    let e = Error::new(kind, text);
    if matches!(err, SdkError::ServiceError(_)) {
        // The service's code and message are already in the text.
        e
    } else {
        e.with_source(err)
    }
}

/// The error code of a service error, if the SDK error is one.
pub(crate) fn service_code<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
) -> Option<&str> {
    match err {
        SdkError::ServiceError(_) => err.code(),
        _ => None,
    }
}

fn classify(status: Option<u16>, code: Option<&str>) -> ErrorKind {
    match code {
        Some("PreconditionFailed") => return ErrorKind::AlreadyExists,
        Some(
            "NoSuchKey"
            | "NoSuchUpload"
            | "NoSuchBucket"
            | "NotFound"
            | "ResourceNotFoundException"
            | "NoSuchVersion",
        ) => return ErrorKind::NotFound,
        Some("InvalidObjectState") => return ErrorKind::NotReady,
        Some(
            "AccessDenied"
            | "AccessDeniedException"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch",
        ) => {
            return ErrorKind::Refused;
        }
        Some(
            "SlowDown"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeoutException"
            | "ServiceUnavailableException",
        ) => return ErrorKind::Network,
        _ => {}
    }
    match status {
        Some(412) => ErrorKind::AlreadyExists,
        Some(404) => ErrorKind::NotFound,
        Some(403) | Some(401) => ErrorKind::Refused,
        // A 2xx the SDK could not read: the answer itself is malformed (a
        // hostile key raw in a listing's marker), never a refusal.
        Some(s) if (200..300).contains(&s) => ErrorKind::Integrity,
        Some(408) | Some(429) => ErrorKind::Network,
        Some(s) if s >= 500 => ErrorKind::Network,
        _ => ErrorKind::Refused,
    }
}

/// The `io::Error` a writer returns for a snap error: the io kind is chosen so
/// that `snap_core::Error::from(io)` keeps the class (network stays network).
pub(crate) fn to_io(err: Error) -> io::Error {
    let kind = match err.kind() {
        ErrorKind::Network => io::ErrorKind::ConnectionAborted,
        ErrorKind::NotFound => io::ErrorKind::NotFound,
        ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
        ErrorKind::Refused => io::ErrorKind::PermissionDenied,
        ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
        ErrorKind::Interrupted => io::ErrorKind::Interrupted,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, err)
}

/// Get the snap error back out of an `io::Error` returned by an
/// [`ArchiveWriter`](crate::ArchiveWriter) (or by anything writing into one);
/// any other io error is classified as usual.
pub fn error_from_io(err: io::Error) -> Error {
    if err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        if let Some(inner) = err.into_inner()
            && let Ok(e) = inner.downcast::<Error>()
        {
            return *e;
        }
        return Error::internal("io error lost its cause");
    }
    Error::from(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_round_trip_keeps_kind_and_message() {
        let e = Error::new(ErrorKind::Network, "uploading part 3 of s3://b/k");
        let io = to_io(e);
        let back = error_from_io(io);
        assert_eq!(back.kind(), ErrorKind::Network);
        assert_eq!(back.to_string(), "uploading part 3 of s3://b/k");
        // Through snap_core's own From, the kind survives as well.
        let io = to_io(Error::new(ErrorKind::Network, "x"));
        assert_eq!(Error::from(io).kind(), ErrorKind::Network);
    }

    #[test]
    fn classification() {
        assert_eq!(classify(Some(412), None), ErrorKind::AlreadyExists);
        assert_eq!(
            classify(Some(403), Some("AccessDenied")),
            ErrorKind::Refused
        );
        assert_eq!(classify(Some(200), None), ErrorKind::Integrity);
        assert_eq!(
            classify(Some(403), Some("AccessDenied")),
            ErrorKind::Refused
        );
        assert_eq!(classify(Some(404), Some("NoSuchKey")), ErrorKind::NotFound);
        assert_eq!(
            classify(Some(403), Some("InvalidObjectState")),
            ErrorKind::NotReady
        );
        assert_eq!(classify(Some(503), Some("SlowDown")), ErrorKind::Network);
        assert_eq!(classify(Some(500), None), ErrorKind::Network);
        assert_eq!(
            classify(Some(400), Some("InvalidRequest")),
            ErrorKind::Refused
        );
    }
}
