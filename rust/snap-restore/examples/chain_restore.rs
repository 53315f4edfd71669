//! Restore the image of a chain's newest link from its encrypted pieces,
//! for benchmarks: the pieces are decrypted straight into their places in
//! the image, two at a time, every range checked, by the functions a chain
//! restore uses (`snap_restore::assemble`), without a manifest:
//!
//!   chain_restore SECRET_KEY LINK_JSON SUPERBLOCK DIR OUT
//!
//! LINK_JSON: `{"ranges": [...]}` as a link reports them; DIR holds
//! `tail-<n>.gpg` for every link n. The ranges' digests prove the image, so
//! a piece's ciphertext is not hashed, as `snap-backup restore` does not.
//! With `ONE_AT_A_TIME` set, pieces are decrypted one after the other (as
//! restore did before 2026-12-02); `PASSPHRASE` is the secret key's.
//!
//! With `SELECT` set (paths inside the image, `:`-separated; empty: the
//! whole tree), as `snap-backup restore` does since 2026-12-02: first the
//! tail that ends the image (the tables; and the one with the compressor's
//! options after the super block, if it has any), then only the tails that hold
//! what extracting the selection reads (`snap_pack::needed`); with `DEST`
//! too, the selection is then unpacked there (owners applied), reading only
//! the bytes that were filled in.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use snap_core::{Error, Progress, Result};
use snap_crypt::SecretKeySource;
use std::sync::Arc;

use snap_pack::chain::{Piece, Range};
use snap_pack::{Present, UnpackOptions};
use snap_restore::assemble::{PIECES_AT_ONCE, Place, decrypt_into, in_order};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: chain_restore SECRET_KEY LINK_JSON SUPERBLOCK DIR OUT");
        std::process::exit(2);
    }
    let mut key = SecretKeySource::new(a[1].clone(), std::fs::read(&a[1]).expect("key"));
    if let Some(pw) = std::env::var_os("PASSPHRASE") {
        key = key.with_passphrase(pw.into_encoded_bytes());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&a[2]).expect("json")).expect("json");
    let ranges: Vec<Range> = serde_json::from_value(v["ranges"].clone()).expect("ranges");
    let sb = std::fs::read(&a[3]).expect("sb");
    let workers = if std::env::var_os("ONE_AT_A_TIME").is_some() {
        1
    } else {
        PIECES_AT_ONCE
    };
    match run(
        &key,
        &ranges,
        &sb,
        Path::new(&a[4]),
        Path::new(&a[5]),
        workers,
    ) {
        Ok(n) => eprintln!("{n} bytes"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn run(
    key: &SecretKeySource,
    ranges: &[Range],
    sb: &[u8],
    dir: &Path,
    out: &Path,
    workers: usize,
) -> Result<u64> {
    let image = File::create_new(out).map_err(|e| Error::io_path("creating", out, e))?;
    image
        .write_all_at(sb, 0)
        .map_err(|e| Error::io_path("writing", out, e))?;
    // Each tail's ranges, in image order.
    let mut tails: BTreeMap<u32, Vec<&Range>> = BTreeMap::new();
    for r in ranges {
        if let Piece::Tail(n) = r.piece {
            tails.entry(n).or_default().push(r);
        }
    }
    let tails: Vec<(u32, Vec<&Range>)> = tails.into_iter().collect();
    let len = ranges.iter().map(|r| r.offset + r.len).max().unwrap_or(0);
    let progress = Progress::silent("restore");
    let one = |i: usize| -> Result<()> {
        let (n, mine) = &tails[i];
        let path = dir.join(format!("tail-{n}.gpg"));
        let f = File::open(&path).map_err(|e| Error::io_path("opening", &path, e))?;
        let places: Vec<Place> = mine
            .iter()
            .map(|r| (r.piece_offset, r.len, r.offset))
            .collect();
        // No manifest gives the tail's plaintext size (its tables, which
        // later links replace, follow its last range): not bounded here.
        let name = path.display().to_string();
        let (_, hashes) = decrypt_into(
            (&image, "the image"),
            &f,
            &name,
            u64::MAX,
            &places,
            key,
            &progress,
        )?;
        for (r, got) in mine.iter().zip(hashes) {
            if got != r.sha256 {
                return Err(Error::invalid_input(format!(
                    "{name}: image bytes at {} have sha256 {got}, the link says {}",
                    r.offset, r.sha256
                )));
            }
        }
        Ok(())
    };
    let decrypt = |list: &[usize]| in_order(0..list.len(), workers, |j, _| one(list[j]));
    image
        .set_len(len)
        .map_err(|e| Error::io_path("sizing", out, e))?;
    let all: Vec<usize> = (0..tails.len()).collect();
    let Some(select) = std::env::var_os("SELECT") else {
        decrypt(&all)?;
        return Ok(len);
    };
    let select: Vec<Vec<u8>> = select
        .into_encoded_bytes()
        .split(|&b| b == b':')
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let filled = |list: &[usize]| {
        let mut r: Vec<(u64, u64)> = list
            .iter()
            .flat_map(|&i| tails[i].1.iter().map(|r| (r.offset, r.offset + r.len)))
            .collect();
        r.push((0, sb.len() as u64));
        Arc::new(Present::new(r))
    };
    let head: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| {
            // The tables; and the compressor's options right after the super
            // block when its flags say there are some (as restore does).
            let options = sb.len() >= 26 && u16::from_le_bytes([sb[24], sb[25]]) & 0x0400 != 0;
            tails[i]
                .1
                .iter()
                .any(|r| r.offset + r.len == len || options && r.offset == sb.len() as u64)
        })
        .collect();
    decrypt(&head)?;
    let need = snap_pack::needed(out, &select, Some(filled(&head)))?;
    let rest: Vec<usize> = all
        .iter()
        .copied()
        .filter(|i| !head.contains(i))
        .filter(|&i| {
            tails[i]
                .1
                .iter()
                .any(|r| need.touches(r.offset, r.offset + r.len))
        })
        .collect();
    decrypt(&rest)?;
    let fetched: Vec<usize> = head.iter().chain(&rest).copied().collect();
    eprintln!(
        "{} of {} tails decrypted, {} bytes of image filled",
        fetched.len(),
        tails.len(),
        filled(&fetched).bytes()
    );
    if let Some(dest) = std::env::var_os("DEST") {
        let opts = UnpackOptions {
            select,
            apply_fake_super: true,
            keep_fake_super_xattr: false,
            present: Some(filled(&fetched)),
        };
        snap_pack::unpack(out, Path::new(&dest), &opts, &Progress::silent("unpack"))?;
    }
    Ok(len)
}
