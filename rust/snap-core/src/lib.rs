//! snap's core in plain Rust. No PyO3 here: the binding lives in `snap-py`.
//!
//! The heavier engines live in sibling crates that build on this one:
//! `snap-pack` (SquashFS through libsquashfs), `snap-crypt` (OpenPGP),
//! `snap-offsite` (S3 with Object Lock, Glacier vaults).

pub mod account;
pub mod assign;
pub mod config;
pub mod crosscheck;
pub mod error;
pub mod jail;
pub mod lock;
pub mod proc;
pub mod progress;
pub mod push;
pub mod record;
pub mod report;
pub mod rotate;
pub mod schedule;
pub mod sshkey;
pub mod status;
pub mod stop;
pub mod sync;

pub use error::{Error, ErrorKind, Result};
pub use progress::{Progress, ProgressEvent, ProgressSink, StageSummary};
pub use stop::{Stop, StopReader};
