//! What a chain link's manifest says, and the chain's local state.
//!
//! A link's manifest lists the **whole** chain it needs: every piece (key,
//! version id, sizes, SHA-256 of plaintext and ciphertext, lock read back)
//! and the byte ranges that make the image at that link, each with the
//! SHA-256 of its bytes. It is self-contained: restore needs no other
//! manifest.
//!
//! Pieces per link N (see `docs/RESTORE.md`):
//! - `link-N.data`: the data blocks and fragments link N appended (for the
//!   base: the image from byte 0 to its data end). Every later link of the
//!   chain needs it.
//! - `link-N.meta`: the image's metadata tables as link N wrote them, then
//!   the image's new 96-byte super block. Only link N needs it.
//!
//! The image at link N is `data-0 ‖ data-1 ‖ … ‖ data-N ‖ tables-N` with its
//! first 96 bytes replaced by the super block at the end of `meta-N`.

use serde::{Deserialize, Serialize};

use crate::cost::StorageCost;
use crate::{RecipientInfo, SnapshotEntry};

/// Version of the chain manifest format.
pub const CHAIN_MANIFEST_FORMAT: &str = "snap-chain/1";
/// Suffix of chain manifests (apart from full archives' `.manifest.json`).
pub const CHAIN_MANIFEST_SUFFIX: &str = ".chain.json";
/// Size of a SquashFS super block.
pub const SUPERBLOCK: u64 = 96;

/// One encrypted object of a chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChainPiece {
    /// `link-0003.data`, `link-0003.meta`.
    pub name: String,
    pub link: u32,
    /// `data` or `meta`.
    pub kind: String,
    pub key: String,
    pub version_id: Option<String>,
    /// Ciphertext size and SHA-256 (what is stored off-site).
    pub size: u64,
    pub sha256: String,
    pub plaintext_size: u64,
    pub plaintext_sha256: String,
    pub storage_class: String,
    /// As read back from the target after the upload.
    pub lock_mode: Option<String>,
    pub retain_until: Option<String>,
    /// Unix seconds of `retain_until` (for comparisons).
    pub retain_until_unix: Option<i64>,
    pub uploaded: String,
}

/// `len` bytes of the image at `offset` are the plaintext of `piece` at
/// `piece_offset`, with SHA-256 `sha256`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRange {
    pub offset: u64,
    pub len: u64,
    pub piece: String,
    pub piece_offset: u64,
    pub sha256: String,
}

/// Where this link stands in its chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChainInfo {
    pub id: String,
    /// When the base was made (RFC 3339).
    pub base_created: String,
    /// 0 for the base.
    pub link: u32,
    /// Why this run made a base (None: a link).
    pub rebase_reason: Option<String>,
    pub max_age_days: u32,
    pub max_dead_ratio: f64,
    /// The link is complete until this time: its meta piece's lock (read
    /// back); its manifest and every data piece it needs are locked at
    /// least as long.
    pub restorable_until: Option<String>,
    /// Planned lock end of the chain's data pieces (base time + max age +
    /// retention): every link of the chain ends before it.
    pub data_retain_until: String,
}

/// The image at this link and what making the link cost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChainImage {
    pub format: String,
    pub size: u64,
    pub compressor: String,
    pub level: Option<u32>,
    pub block_size: u32,
    /// Files (inodes) read and packed by this link, and their bytes.
    pub new_files: u64,
    pub bytes_read: u64,
    /// Files referenced without being read.
    pub reused_files: u64,
    pub reused_bytes: u64,
    pub unkeyed_files: u64,
    /// Bytes this link added to the image (its tail).
    pub tail_bytes: u64,
    pub data_bytes: u64,
    pub live_bytes: u64,
    pub dead_bytes: u64,
    pub dead_ratio: f64,
    pub seconds: f64,
}

/// A snapshot in the chain image: its name there (its time) and the
/// directory history had it under when the link was made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChainSnapshot {
    pub name: String,
    pub dir: String,
    pub servers: Vec<String>,
    /// Unix seconds (the snapshot's time).
    pub mtime: i64,
}

/// The manifest uploaded with each link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainManifest {
    pub format: String,
    /// This manifest's own key off-site (readers check it against the key
    /// they read it from; a local copy names its link by it). Older links
    /// have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub tool_version: String,
    pub created: String,
    pub backup_server: String,
    pub chain: ChainInfo,
    pub image: ChainImage,
    /// Every piece the image at this link needs, in image order.
    pub pieces: Vec<ChainPiece>,
    /// The image, range by range, in image order.
    pub ranges: Vec<ImageRange>,
    pub recipients: Vec<RecipientInfo>,
    pub servers: Vec<String>,
    pub snapshots: Vec<ChainSnapshot>,
    pub history_root: String,
    /// Everything this backup server holds under lock off-site (all chains
    /// and archives, this link's manifest aside) and its monthly cost.
    pub storage: StorageCost,
}

impl ChainManifest {
    /// The snapshot entries in the shape of a full archive's manifest
    /// (`name` is the snapshot's name inside the image).
    pub fn snapshot_entries(&self) -> Vec<SnapshotEntry> {
        self.snapshots
            .iter()
            .map(|s| SnapshotEntry {
                name: s.name.clone(),
                servers: s.servers.clone(),
                mtime: s.mtime,
            })
            .collect()
    }
}

/// One committed link, as the backup server remembers it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkState {
    pub number: u32,
    pub created: i64,
    pub manifest_key: String,
    pub data_end: u64,
    pub data_sha256: String,
    pub dead_ratio: f64,
    pub tail_bytes: u64,
}

/// The current chain (`state_dir/chain/state.json`, root-only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChainState {
    pub format: String,
    pub id: String,
    /// Key prefix of the chain's objects.
    pub key_prefix: String,
    /// Unix seconds of the base.
    pub created: i64,
    pub data_retain_until: i64,
    pub compressor: String,
    pub level: Option<u32>,
    pub block_size: u32,
    pub servers: Option<Vec<String>>,
    /// Fingerprints the chain is encrypted to.
    pub recipients: Vec<String>,
    /// File name of the chain index (in the same directory).
    pub index: String,
    /// Data pieces of every link, in order.
    pub data_pieces: Vec<ChainPiece>,
    pub links: Vec<LinkState>,
}

pub const STATE_FORMAT: &str = "snap-chain-state/1";
