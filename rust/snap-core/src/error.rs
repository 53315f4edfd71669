//! One error type for every snap crate.
//!
//! Every failure carries a [`ErrorKind`] (what went wrong, in terms a caller can
//! act on) and a message that names the problem: the path, the id, the key.
//! The Python binding maps kinds to exception classes in exactly one place
//! (`snap-py/src/errors.rs`); nothing else needs to know about Python.

use std::fmt;
use std::io;
use std::path::Path;

/// What kind of failure this is. Stable: the Python exception classes in
/// `snap_core.errors` are chosen from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Malformed input: a minion id, a path, an option, a configuration value.
    InvalidInput,
    /// A public key that is not acceptable (options, several keys, truncated, weak...).
    InvalidKey,
    /// Secret key material where only public keys belong.
    SecretKeyMaterial,
    /// Two different minion ids would map to the same account.
    AccountCollision,
    /// Something that must not be overwritten already exists.
    AlreadyExists,
    /// Something that must exist does not.
    NotFound,
    /// The disk (or quota) is full.
    DiskFull,
    /// Any other local I/O failure (permission denied, unreadable file...).
    Io,
    /// The network failed: refused, reset, timed out, dropped mid-transfer.
    Network,
    /// The remote side understood the request and refused it (access denied,
    /// precondition failed, object locked).
    Refused,
    /// Data failed an integrity check: checksum, MDC, truncated archive.
    Integrity,
    /// Another run holds the lock.
    Busy,
    /// Off-site data is not readable yet (archived storage class, retrieval pending).
    NotReady,
    /// The operation was interrupted or cancelled.
    Interrupted,
    /// A bug or an impossible state; the message says where.
    Internal,
}

impl ErrorKind {
    /// The name used by the Python binding to pick the exception class.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::InvalidKey => "InvalidKey",
            ErrorKind::SecretKeyMaterial => "SecretKeyMaterial",
            ErrorKind::AccountCollision => "AccountCollision",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::DiskFull => "DiskFull",
            ErrorKind::Io => "IOFailure",
            ErrorKind::Network => "NetworkError",
            ErrorKind::Refused => "Refused",
            ErrorKind::Integrity => "IntegrityError",
            ErrorKind::Busy => "Busy",
            ErrorKind::NotReady => "NotReady",
            ErrorKind::Interrupted => "Interrupted",
            ErrorKind::Internal => "InternalError",
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Network | ErrorKind::Busy | ErrorKind::NotReady
        )
    }
}

/// snap's error: a kind, a message naming the problem, and an optional cause.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying cause; its text is appended to the message.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    pub fn invalid_key(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidKey, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    /// An I/O error while doing `what` (a phrase such as "reading /etc/snap/key").
    /// ENOSPC/EDQUOT become [`ErrorKind::DiskFull`], ENOENT [`ErrorKind::NotFound`],
    /// EEXIST [`ErrorKind::AlreadyExists`], connection errors [`ErrorKind::Network`].
    pub fn io(what: impl fmt::Display, err: io::Error) -> Self {
        let kind = io_kind(&err);
        let message = match kind {
            ErrorKind::DiskFull => format!("{what}: no space left on device"),
            _ => format!("{what}"),
        };
        Error::new(kind, message).with_source(err)
    }

    /// Shorthand for [`Error::io`] with a path: "`verb` `path`".
    pub fn io_path(verb: &str, path: &Path, err: io::Error) -> Self {
        Error::io(format_args!("{verb} {}", path.display()), err)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefix the message with context, keeping kind and cause.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

/// Classify an [`io::Error`].
pub fn io_kind(err: &io::Error) -> ErrorKind {
    if let Some(code) = err.raw_os_error()
        && (code == libc::ENOSPC || code == libc::EDQUOT || code == libc::EFBIG)
    {
        return ErrorKind::DiskFull;
    }
    match err.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ErrorKind::DiskFull,
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::NotConnected
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::TimedOut
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable
        | io::ErrorKind::NetworkDown => ErrorKind::Network,
        io::ErrorKind::Interrupted => ErrorKind::Interrupted,
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => ErrorKind::Io,
        _ => ErrorKind::Io,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            // Walk the whole chain: SDK errors hide the useful part deep inside.
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            let mut last = String::new();
            while let Some(e) = cur {
                let text = e.to_string();
                if !text.is_empty() && text != last && !self.message.contains(&text) {
                    write!(f, ": {text}")?;
                }
                last = text;
                cur = e.source();
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::io("I/O error", err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_disk_full_and_names_the_path() {
        let e = Error::io_path(
            "writing",
            Path::new("/x/image"),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(e.kind(), ErrorKind::DiskFull);
        assert!(
            e.to_string()
                .starts_with("writing /x/image: no space left on device")
        );
    }

    #[test]
    fn connection_reset_is_network() {
        let e = Error::io("upload", io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(e.kind(), ErrorKind::Network);
        assert!(e.kind().is_transient());
    }

    #[test]
    fn context_prefixes_message_and_keeps_kind() {
        let e = Error::invalid_key("bad base64").context("mine key of web1");
        assert_eq!(e.kind(), ErrorKind::InvalidKey);
        assert_eq!(e.to_string(), "mine key of web1: bad base64");
    }
}
