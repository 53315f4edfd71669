//! Incremental off-site archives: chains.
//!
//! The first run writes a **base** (a full image of history, snapshots named
//! by their time); every later run a **link** that appends only what is new
//! (`snap_pack::chain`). Each link uploads two pieces, each encrypted on its
//! own to the same recipients under Object Lock COMPLIANCE, reads every lock
//! back, then puts a manifest listing the whole chain (see [`manifest`]).
//!
//! **Lock plan** (no extension rights needed): a link is restorable until
//! `L = upload time + retain_days (+1 day margin)`, the lock of its meta
//! piece and of its manifest. Data pieces are needed by every later link of
//! the chain, so each is locked, at upload, until the chain's planned end
//! `T = base time + max_age_days + retain_days (+ margin)`. A link is only
//! made while `now + retain_days + margin <= T` (else: rebase), so no piece is
//! ever locked for less than a link that needs it. Before a link is made the
//! locks of the chain's data pieces are read back; after it is uploaded the
//! locks of every piece it needs and of its manifest are read back again.
//!
//! **Rebase**: a new base when there is no chain, its index is lost, the
//! settings or recipients changed, it reached `max_age_days` (default 180),
//! its image carries more dead bytes than `max_dead_ratio` (default 0.5), or
//! its locks could not cover another link. Old chains expire through their
//! locks and the bucket's lifecycle rule.
//!
//! **Killed mid-link**: nothing of the chain changes until the manifest is
//! uploaded and its lock read back; then the index is committed and the
//! local state saved. A killed run leaves at most orphan pieces (locked,
//! counted in the ledger) and the next run makes the link afresh. A manifest
//! never names a piece that was not uploaded and checked first.

pub mod manifest;
pub mod pieces;
mod run;

use serde::{Deserialize, Serialize};

pub use manifest::{
    CHAIN_MANIFEST_FORMAT, CHAIN_MANIFEST_SUFFIX, ChainImage, ChainInfo, ChainManifest, ChainPiece,
    ChainSnapshot, ChainState, ImageRange, LinkState, SUPERBLOCK,
};
pub use run::run_chain;

/// Pillar `snap:archive:chain`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSettings {
    /// Archive as a chain (base, then links) instead of a full image each run.
    pub enabled: bool,
    /// A new base once the chain is this old (days).
    pub max_age_days: u32,
    /// A new base once this share of the image's data is dead (history no
    /// longer has it).
    pub max_dead_ratio: f64,
}

impl Default for ChainSettings {
    fn default() -> Self {
        ChainSettings {
            enabled: false,
            max_age_days: 180,
            max_dead_ratio: 0.5,
        }
    }
}

impl ChainSettings {
    pub fn check(&self, retain_days: u32) -> snap_core::Result<()> {
        if self.max_age_days == 0 {
            return Err(snap_core::Error::invalid_input(
                "archive configuration: chain max_age_days must be at least 1",
            ));
        }
        if !(self.max_dead_ratio > 0.0 && self.max_dead_ratio <= 1.0) {
            return Err(snap_core::Error::invalid_input(format!(
                "archive configuration: chain max_dead_ratio must be in (0, 1], not {}",
                self.max_dead_ratio
            )));
        }
        // The data pieces' retention: must stay a sane number of days.
        snap_offsite::retain_until(
            std::time::SystemTime::now(),
            retain_days + self.max_age_days,
        )
        .map(|_| ())
    }
}
