//! Restore of one link of a chain (see `snap_archive::chain`).
//!
//! The link's manifest lists every piece and the byte ranges that make the
//! image. Pieces in an archival class get their retrievals requested all
//! at once first (one wait, not one per piece). Then pieces are taken two
//! at a time (`assemble.rs`): the ciphertext is downloaded into
//! the root-only work directory, hashed as it arrives and its size and
//! SHA-256 checked against the manifest (or it is read from a directory of
//! downloaded pieces, its size checked), then decrypted straight into its
//! places in the image (no second plaintext copy), the MDC, the plaintext's
//! size and every range's SHA-256 checked. What reaches the image is proven
//! by its ranges' digests, so a piece from a directory is not hashed as
//! ciphertext too (bytes in no range never reach the image); only when
//! something fails is the file hashed, to say whether it is the piece the
//! manifest names. The image gets its name only when every range is there
//! and checked; nothing reaches the destination before. A missing,
//! tampered, truncated or reordered piece fails naming the piece, and stops
//! the piece beside it at its next chunk (its download or decryption is not
//! finished only to be thrown away).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use snap_archive::chain::{
    CHAIN_MANIFEST_FORMAT, CHAIN_MANIFEST_SUFFIX, ChainManifest, ChainPiece, ImageRange, SUPERBLOCK,
};
use snap_core::progress::ProgressSink;
use snap_core::{Error, ErrorKind, Progress, Result, Stop, StopReader};
use snap_crypt::SecretKeySource;
use snap_offsite::ArchiveTarget;
use snap_pack::Present;

use crate::assemble::{PIECES_AT_ONCE, Place, decrypt_into, in_order};
use crate::extract::extract_part;
use crate::fetch::{
    Checks, FetchOptions, PiecesReport, WorkArea, key_check, open_regular, sha256_fd,
};
use crate::retrieval::ensure_all_readable;
use crate::{Output, RestoreReport};

fn integrity(message: String) -> Error {
    Error::new(ErrorKind::Integrity, message)
}

/// Where the super block keeps its flags, and the flag that says the
/// compressor's options follow it (SquashFS 4.0).
const SUPERBLOCK_FLAGS: u64 = 24;
const COMPRESSOR_OPTIONS: u16 = 0x0400;

/// The most pieces a chain manifest may list: a link a day for years.
pub const MAX_PIECES: usize = 10_000;

/// Whether `key` names a chain manifest.
pub fn is_chain_manifest(key: &str) -> bool {
    key.ends_with(CHAIN_MANIFEST_SUFFIX)
}

/// Parse and check a chain manifest: its format, and ranges that make a
/// whole image out of the pieces it lists.
pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<ChainManifest> {
    let m: ChainManifest = serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid_input(format!("{what} is not a chain manifest: {e}")))?;
    if m.format != CHAIN_MANIFEST_FORMAT {
        return Err(Error::invalid_input(format!(
            "{what}: chain manifest format {:?}, this snap reads {CHAIN_MANIFEST_FORMAT}",
            m.format
        )));
    }
    // Anyone who can put objects can write a manifest: its lists are bounded
    // and checked in one pass each (a forged one must cost readers nothing).
    if m.pieces.len() > MAX_PIECES || m.ranges.len() > MAX_PIECES + 2 {
        return Err(integrity(format!(
            "{what}: {} pieces and {} ranges, more than a chain ever has ({MAX_PIECES})",
            m.pieces.len(),
            m.ranges.len()
        )));
    }
    let mut by_name: HashMap<&str, &ChainPiece> = HashMap::with_capacity(m.pieces.len());
    let mut by_key: HashMap<&str, Option<&str>> = HashMap::with_capacity(m.pieces.len());
    for p in &m.pieces {
        if by_name.insert(p.name.as_str(), p).is_some() {
            return Err(integrity(format!("{what}: names piece {} twice", p.name)));
        }
        if let Some(v) = by_key.insert(p.key.as_str(), p.version_id.as_deref())
            && v != p.version_id.as_deref()
        {
            return Err(integrity(format!(
                "{what}: names {} under two versions",
                p.key
            )));
        }
    }
    let mut at: u64 = 0;
    for r in &m.ranges {
        let Some(p) = by_name.get(r.piece.as_str()) else {
            return Err(integrity(format!(
                "{what}: a range names piece {}, which the manifest does not list",
                r.piece
            )));
        };
        let end = r.piece_offset.checked_add(r.len);
        if r.offset != at || end.is_none_or(|e| e > p.plaintext_size) {
            return Err(integrity(format!(
                "{what}: the range at {} ({} bytes of {} at {}) does not fit",
                r.offset, r.len, r.piece, r.piece_offset
            )));
        }
        at = at
            .checked_add(r.len)
            .ok_or_else(|| integrity(format!("{what}: the ranges add up past 2^64 bytes")))?;
    }
    if at != m.image.size || m.ranges.first().is_none_or(|r| r.len != SUPERBLOCK) {
        return Err(integrity(format!(
            "{what}: the ranges make {at} bytes, the image is {}",
            m.image.size
        )));
    }
    Ok(m)
}

/// A chain manifest from off-site.
pub fn load_chain_manifest(target: &dyn ArchiveTarget, key: &str) -> Result<ChainManifest> {
    // Its first version, like an archive's manifest: a later one is not snap's.
    let buf = crate::list::get_small_first(target, key)?;
    let m = parse_manifest(&buf, key)?;
    keyed(m, key)
}

/// The manifest with its own key: the one it was read from. A manifest
/// that names another key was put there by someone else.
pub fn keyed(mut m: ChainManifest, key: &str) -> Result<ChainManifest> {
    match m.key.as_deref() {
        Some(k) if k != key => Err(integrity(format!(
            "chain manifest {key} describes {k}, not itself"
        ))),
        _ => {
            m.key = Some(key.to_string());
            Ok(m)
        }
    }
}

/// Where the pieces come from.
pub enum Pieces<'a> {
    /// Off-site, retrieved from archival classes as `FetchOptions` says.
    Offsite(&'a dyn ArchiveTarget),
    /// A directory holding the pieces under the last segment of their keys.
    Dir(&'a Path),
}

fn label(p: &ChainPiece) -> String {
    format!("piece {} ({})", p.name, p.key)
}

/// A piece's ciphertext in a file, and whether its SHA-256 is proven already.
struct Cipher {
    /// Open, checked to be a regular file of the piece's size.
    file: File,
    path: PathBuf,
    /// A download hashed it as it arrived and it matched: decryption need
    /// not hash it again.
    proven: bool,
}

/// A piece's size or SHA-256 differs from what the manifest says.
fn wrong_piece(p: &ChainPiece, size: u64, sha: &str) -> Error {
    integrity(format!(
        "{} is {size} bytes with sha256 {sha}, the manifest says {} bytes with sha256 {}{}: \
         a wrong, changed or reordered piece; nothing restored",
        label(p),
        p.size,
        p.sha256,
        if size < p.size { " (truncated)" } else { "" }
    ))
}

/// Get the ciphertext of `p` into a file. A download is hashed as it
/// arrives and checked here, before anything decrypts it; a piece from a
/// directory is hashed while it decrypts (one pass, not two) and checked
/// after (see [`fetch_chain`]). Either way nothing reaches the target
/// unchecked.
fn ciphertext(
    source: &Pieces<'_>,
    p: &ChainPiece,
    n: usize,
    work: &Path,
    sink: &Option<Arc<dyn ProgressSink>>,
    stop: &Stop,
) -> Result<Cipher> {
    match source {
        Pieces::Dir(d) => {
            let path = d.join(p.key.rsplit('/').next().unwrap_or(&p.key));
            // Checked on the descriptor that is then decrypted (and read
            // again if a check fails), never by name again.
            let (file, size) = match open_regular(&path, "piece") {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("{} is missing: no file {}", label(p), path.display()),
                    ));
                }
                Err(e) => return Err(Error::new(e.kind(), format!("{}: {e}", label(p)))),
            };
            // The size costs nothing to check: a piece padded or cut is
            // refused before anything reads it.
            if size != p.size {
                return Err(integrity(format!(
                    "{} is {size} bytes, the manifest says {} bytes{}: a wrong, changed or reordered \
                     piece; nothing restored",
                    label(p),
                    p.size,
                    if size < p.size { " (truncated)" } else { "" }
                )));
            }
            Ok(Cipher {
                file,
                path,
                proven: false,
            })
        }
        Pieces::Offsite(t) => {
            // Readable already: `fetch_chain` made sure of every piece first.
            // Pieces download side by side (see assemble.rs): one file each.
            let path = work.join(format!("piece-{n}.gpg"));
            // Stops at its next chunk when another piece fails.
            let progress =
                Progress::new(format!("download {}", p.name), Some(p.size), sink.clone())
                    .with_stop(stop.clone());
            let got = snap_offsite::download_to_file_limited(
                *t,
                &p.key,
                p.version_id.as_deref(),
                &path,
                false,
                Some(p.size),
                &progress,
            )
            .map_err(|e| Error::new(e.kind(), format!("{}: {e}", label(p))))?;
            progress.finish();
            let size = got.resumed_from + got.fetched;
            if size != p.size || got.sha256 != p.sha256 {
                return Err(wrong_piece(p, size, &got.sha256));
            }
            let (file, _) = open_regular(&path, "piece")?;
            Ok(Cipher {
                file,
                path,
                proven: true,
            })
        }
    }
}

/// The bytes read of piece `p`, its plaintext's size, and each of its
/// ranges' SHA-256 (`hashes`, for the ranges `mine` of `ranges`), against
/// the manifest.
fn check_ranges(
    p: &ChainPiece,
    sum: &snap_crypt::DecryptSummary,
    mine: &[usize],
    ranges: &[snap_archive::chain::ImageRange],
    hashes: Vec<String>,
) -> Result<()> {
    if sum.ciphertext_bytes != p.size {
        return Err(integrity(format!(
            "{} was {} bytes as it was decrypted, the manifest says {}; nothing restored",
            label(p),
            sum.ciphertext_bytes,
            p.size,
        )));
    }
    if sum.plaintext_bytes != p.plaintext_size {
        return Err(integrity(format!(
            "{} decrypts to {} bytes, the manifest says {}; nothing restored",
            label(p),
            sum.plaintext_bytes,
            p.plaintext_size,
        )));
    }
    for (&i, got) in mine.iter().zip(hashes) {
        let r = &ranges[i];
        if got != r.sha256 {
            return Err(integrity(format!(
                "{}: image bytes {}..{} have sha256 {got}, the manifest says {}; nothing restored",
                label(p),
                r.offset,
                r.offset + r.len,
                r.sha256
            )));
        }
    }
    Ok(())
}

/// The image of the link `m` describes, every piece and range checked, in a
/// root-only work directory under `opts.work_parent`.
pub(crate) fn fetch_chain(
    source: &Pieces<'_>,
    m: &ChainManifest,
    key: &SecretKeySource,
    opts: &FetchOptions,
    sink: Option<Arc<dyn ProgressSink>>,
) -> Result<(PathBuf, Checks, WorkArea)> {
    let (image, checks, work, _) = fetch_pieces(source, m, key, opts, sink, None)?;
    Ok((image, checks, work))
}

/// The image of the link `m` describes, in a root-only work directory
/// under `opts.work_parent`. With `select` (paths inside the image, as
/// unpack takes them; empty: the whole tree), only the pieces that hold
/// what extracting those paths reads are fetched: first the pieces with
/// the super block and the metadata tables, then those holding the data
/// and fragment blocks the tables point to. The rest of the image stays a
/// hole, and the bytes that were filled in come back with it: extraction
/// reads nothing else. Without `select` (audits, drills), every piece.
/// Every piece fetched has its every range checked.
pub(crate) fn fetch_pieces(
    source: &Pieces<'_>,
    m: &ChainManifest,
    key: &SecretKeySource,
    opts: &FetchOptions,
    sink: Option<Arc<dyn ProgressSink>>,
    select: Option<&[Vec<u8>]>,
) -> Result<(PathBuf, Checks, WorkArea, Option<Arc<Present>>)> {
    key_check(key)?;
    // The id is the manifest's word: only its letters and digits name a directory.
    let stem: String = m
        .chain
        .id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .rev()
        .take(8)
        .collect();
    let work = WorkArea::open(
        &opts.work_parent,
        &format!(".snap-restore-chain-{stem}-{}", m.chain.link),
    )?;
    let image = work.dir.join("image.sqfs");
    let _ = fs::remove_file(&image);
    let tmp = tempfile::Builder::new()
        .prefix(".image.")
        .suffix(".partial")
        .tempfile_in(&work.dir)
        .map_err(|e| Error::io_path("creating a temporary file in", &work.dir, e))?;
    let mut checks = Checks {
        manifest: Some(format!("chain {} link {}", m.chain.id, m.chain.link)),
        ..Checks::default()
    };
    // Every piece's retrieval requested at once, and one wait for all.
    if let Pieces::Offsite(t) = source {
        let keys: Vec<&str> = m.pieces.iter().map(|p| p.key.as_str()).collect();
        ensure_all_readable(*t, &keys, &opts.retrieval, &sink).map_err(|e| {
            Error::new(
                e.kind(),
                format!("chain {} link {}: {e}", m.chain.id, m.chain.link),
            )
        })?;
    }
    let started = Instant::now();
    // Each piece's ranges, in image order.
    let mut mine: HashMap<&str, Vec<usize>> = HashMap::with_capacity(m.pieces.len());
    for (i, r) in m.ranges.iter().enumerate() {
        mine.entry(r.piece.as_str()).or_default().push(i);
    }
    let none = Vec::new();
    let out = tmp.as_file();
    let work_dir = work.dir.as_path();
    let one = |n: usize, stop: &Stop| -> Result<(String, bool)> {
        let p = &m.pieces[n];
        let mine = mine.get(p.name.as_str()).unwrap_or(&none);
        let cipher = ciphertext(source, p, n, work_dir, &sink, stop)?;
        let places: Vec<Place> = mine
            .iter()
            .map(|&i| {
                let r = &m.ranges[i];
                (r.piece_offset, r.len, r.offset)
            })
            .collect();
        // Never more than the manifest's size, whatever the file grows to;
        // and no further once another piece failed.
        let input = StopReader::new((&cipher.file).take(p.size), stop.clone(), label(p));
        let progress = Progress::new(format!("decrypt {}", p.name), Some(p.size), sink.clone());
        // What reaches the image is checked range by range below, so the
        // ciphertext is not hashed (bytes in no range never reach it).
        let decrypted = decrypt_into(
            (out, &format!("writing the image in {}", work_dir.display())),
            input,
            &format!("reading {}", label(p)),
            p.plaintext_size,
            &places,
            key,
            &progress,
        );
        // A wrong piece from a directory: say so, rather than what its
        // decryption or its ranges tripped on. Only a failure pays for
        // hashing the file.
        let wrong = |e: Error| -> Error {
            // Stopped because another piece failed: its error is the one told.
            if stop.raised() {
                return e;
            }
            let file = (!cipher.proven).then(|| sha256_fd(&cipher.file, p.size + 1));
            match file {
                Some(Ok((size, sha))) if size != p.size || sha != p.sha256 => {
                    wrong_piece(p, size, &sha)
                }
                Some(Err(re)) => Error::new(
                    e.kind(),
                    format!("{e} (the file could not be read again: {re})"),
                ),
                _ => e,
            }
        };
        let checked = decrypted
            .map_err(|e| Error::new(e.kind(), format!("{}: {e}", label(p))))
            .and_then(|(sum, hashes)| {
                check_ranges(p, &sum, mine, &m.ranges, hashes)?;
                Ok(sum)
            })
            .map_err(wrong);
        if matches!(source, Pieces::Offsite(_)) {
            let _ = fs::remove_file(&cipher.path);
        }
        let sum = checked?;
        progress.finish();
        Ok((sum.key_fingerprint, cipher.proven))
    };
    // The image's size first: a selection's walk reads the tables at its
    // end before the rest is there (the rest stays a hole until written).
    out.set_len(m.image.size)
        .map_err(|e| Error::io_path("sizing", &image, e))?;
    // Pieces in `list`, two at a time. With a prompt, the first alone: the
    // passphrase is asked (and a wrong one fails) before a second worker
    // needs the key. Either way a panic on hostile bytes is an error naming
    // its piece (in_order catches it).
    let run = |list: &[usize], ask_first: bool| -> Result<Vec<(String, bool)>> {
        let job = |j: usize, stop: &Stop| one(list[j], stop);
        if !ask_first || !key.may_prompt() || list.is_empty() {
            in_order(0..list.len(), PIECES_AT_ONCE, job)
        } else {
            let mut all = in_order(0..1, 1, job)?;
            all.extend(in_order(1..list.len(), PIECES_AT_ONCE, job)?);
            Ok(all)
        }
    };
    // The image bytes the pieces in `list` fill in.
    let filled = |list: &[usize]| -> Present {
        Present::new(
            list.iter()
                .flat_map(|&n| mine.get(m.pieces[n].name.as_str()).unwrap_or(&none))
                .map(|&i| (m.ranges[i].offset, m.ranges[i].offset + m.ranges[i].len))
                .collect(),
        )
    };
    let every: Vec<usize> = (0..m.pieces.len()).collect();
    let mut walk_error = None;
    let (fetched, decrypted, present) = match select {
        None => (every.clone(), run(&every, true)?, None),
        Some(paths) => {
            // The pieces with the super block and with the end of the image
            // (the meta piece: every metadata table).
            let index: HashMap<&str, usize> = m
                .pieces
                .iter()
                .enumerate()
                .map(|(n, p)| (p.name.as_str(), n))
                .collect();
            let piece_of =
                |r: Option<&ImageRange>| r.and_then(|r| index.get(r.piece.as_str()).copied());
            let mut head: Vec<usize> = [m.ranges.first(), m.ranges.last()]
                .into_iter()
                .filter_map(piece_of)
                .collect();
            head.sort_unstable();
            head.dedup();
            let mut decrypted = run(&head, true)?;
            // Compressor options, when the super block says there are
            // some, follow it: at the start of the base's data.
            let mut flags = [0u8; 2];
            out.read_exact_at(&mut flags, SUPERBLOCK_FLAGS)
                .map_err(|e| Error::io_path("reading the super block of", &image, e))?;
            if u16::from_le_bytes(flags) & COMPRESSOR_OPTIONS != 0
                && let Some(n) = piece_of(m.ranges.get(1))
                && !head.contains(&n)
            {
                decrypted.extend(run(&[n], false)?);
                head.push(n);
            }
            // What extracting the selection reads, from the tables alone (a
            // table outside those pieces fails the walk: then every piece).
            let need = snap_pack::needed(tmp.path(), paths, Some(Arc::new(filled(&head))));
            let wanted = |n: &usize| {
                !head.contains(n)
                    && need.as_ref().ok().is_none_or(|need| {
                        mine.get(m.pieces[*n].name.as_str())
                            .unwrap_or(&none)
                            .iter()
                            .any(|&i| {
                                let r = &m.ranges[i];
                                need.touches(r.offset, r.offset + r.len)
                            })
                    })
            };
            // A path the image does not hold: said now, nothing more fetched.
            if let Err(e) = &need
                && e.kind() == ErrorKind::NotFound
            {
                return Err(Error::new(
                    e.kind(),
                    format!("chain {} link {}: {e}", m.chain.id, m.chain.link),
                ));
            }
            let rest: Vec<usize> = every.iter().copied().filter(wanted).collect();
            decrypted.extend(run(&rest, false)?);
            let mut fetched = head;
            fetched.extend(rest);
            let present = need.as_ref().ok().map(|_| Arc::new(filled(&fetched)));
            walk_error = need.err().map(|e| e.to_string());
            (fetched, decrypted, present)
        }
    };
    let proven = decrypted.iter().all(|(_, proven)| *proven);
    if let Some((fingerprint, _)) = decrypted.last() {
        checks.key_fingerprint = fingerprint.clone();
    }
    // Every piece fetched was decrypted and its ranges checked: those
    // ranges are in place. Unless extraction is held to them (`present`),
    // they must be the whole image.
    if present.is_none() {
        let mut done = vec![false; m.ranges.len()];
        for &n in &fetched {
            for &i in mine.get(m.pieces[n].name.as_str()).unwrap_or(&none) {
                done[i] = true;
            }
        }
        if let Some(i) = done.iter().position(|d| !d) {
            return Err(integrity(format!(
                "image bytes at {} (piece {}) were never written; nothing restored",
                m.ranges[i].offset, m.ranges[i].piece
            )));
        }
    }
    if select.is_some() {
        let mut got = vec![false; m.pieces.len()];
        for &n in &fetched {
            got[n] = true;
        }
        let skipped: Vec<&ChainPiece> = (0..m.pieces.len())
            .filter(|&n| !got[n])
            .map(|n| &m.pieces[n])
            .collect();
        checks.pieces = Some(PiecesReport {
            fetched: fetched.len() as u64,
            skipped: skipped.len() as u64,
            skipped_bytes: skipped.iter().map(|p| p.size).sum(),
            walk_error,
        });
    }
    tmp.persist(&image)
        .map_err(|e| Error::io_path("naming the image", &image, e.error))?;
    checks.ciphertext_size = Some(true);
    // Downloads hash the ciphertext as it arrives; pieces from a directory
    // are proven by their ranges only.
    checks.ciphertext_sha256 = proven.then_some(true);
    checks.mdc = true;
    checks.plaintext_size = Some(true);
    checks.plaintext_sha256 = Some(true);
    checks.decrypt_seconds = started.elapsed().as_secs_f64();
    Ok((image, checks, work, present))
}

/// Restore `out.selection` of the link `m` describes into `out.dest`.
pub fn restore_chain(
    source: &Pieces<'_>,
    m: &ChainManifest,
    manifest_key: &str,
    key: &SecretKeySource,
    out: Output<'_>,
    opts: &FetchOptions,
    sink: Option<Arc<dyn ProgressSink>>,
) -> Result<RestoreReport> {
    let start = Instant::now();
    let select = out.selection.unpack_paths()?;
    let (image, checks, _work, present) =
        fetch_pieces(source, m, key, opts, sink.clone(), Some(&select))?;
    let p = Progress::new("extract", None, sink);
    let extract = extract_part(&image, present, out.selection, out.dest, out.overwrite, &p)?;
    Ok(RestoreReport {
        archive: Some(manifest_key.to_string()),
        created: Some(m.created.clone()),
        checks,
        extract,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
