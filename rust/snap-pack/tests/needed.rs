//! Which bytes of an image extracting a selection reads (`snap_pack::needed`),
//! and an unpack that may read only those (`UnpackOptions::present`): what a
//! chain restore relies on to fetch only the pieces it needs.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::*;
use snap_core::{ErrorKind, Progress};
use snap_pack::{PackOptions, Present, UnpackOptions, needed, pack, unpack};

const BLOCK: usize = 128 << 10;

fn tree(root: &Path) {
    // Whole blocks (128 KiB) of noise: the big files have no tail in a
    // fragment block; the small ones share one.
    write(root, b"daily.0/web1/big", &noise(2 * BLOCK, 1));
    write(root, b"daily.0/web1/small", b"web1 small\n");
    write(root, b"daily.0/db1/big", &noise(3 * BLOCK, 2));
    write(root, b"daily.0/db1/small", b"db1 small\n");
    link(root, b"daily.0/web1/big", b"daily.1/web1/big");
    write(root, b"daily.1/db1/table", &noise(BLOCK, 3));
}

/// The super block with the compressor's options after it (up to the
/// first data block), and the metadata tables (from the inode table on).
fn tables(image: &[u8], data_start: u64) -> Vec<(u64, u64)> {
    let inode_table = u64::from_le_bytes(image[64..72].try_into().unwrap());
    vec![(0, data_start), (inode_table, image.len() as u64)]
}

fn with(a: &Present, more: &[(u64, u64)]) -> Arc<Present> {
    let mut r = a.ranges().to_vec();
    r.extend_from_slice(more);
    Arc::new(Present::new(r))
}

fn restore(
    image: &Path,
    dest: &Path,
    select: &[u8],
    present: Option<Arc<Present>>,
) -> snap_core::Result<()> {
    let opts = UnpackOptions {
        select: vec![select.to_vec()],
        present,
        ..UnpackOptions::default()
    };
    unpack(image, dest, &opts, &Progress::silent("test")).map(|_| ())
}

#[test]
fn a_selection_reads_only_its_own_blocks_and_nothing_outside_them() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let image = tmp.path().join("img.sqfs");
    let opts = PackOptions {
        level: Some(3),
        ..PackOptions::default()
    };
    pack(&src, &image, &opts, &Progress::silent("pack")).unwrap();
    let bytes = fs::read(&image).unwrap();

    let whole = needed(&image, &[], None).unwrap();
    let web = needed(&image, &[b"daily.0/web1".to_vec()], None).unwrap();
    let db = needed(&image, &[b"daily.0/db1".to_vec()], None).unwrap();
    println!(
        "image {} bytes; the whole tree reads {} of data, daily.0/web1 {}, daily.0/db1 {}",
        bytes.len(),
        whole.bytes(),
        web.bytes(),
        db.bytes()
    );
    let meta = tables(&bytes, whole.ranges()[0].0);
    let day1 = needed(&image, &[b"daily.1".to_vec()], None).unwrap();
    // The three selections read the whole tree's blocks between them, and
    // web1 and db1 share only the fragment block of their small files.
    let union = Present::new(
        [&web, &db, &day1]
            .iter()
            .flat_map(|p| p.ranges().to_vec())
            .collect(),
    );
    assert_eq!(union, whole);
    let shared: u64 = web
        .ranges()
        .iter()
        .flat_map(|&(s, e)| {
            db.ranges()
                .iter()
                .map(move |&(a, b)| b.min(e).saturating_sub(a.max(s)))
        })
        .sum();
    assert!(
        shared > 0 && shared < 4096,
        "web1 and db1 share {shared} bytes"
    );
    assert!(
        web.bytes() < whole.bytes() / 2 && db.bytes() < whole.bytes() * 3 / 4,
        "{whole:?} {web:?} {db:?}"
    );
    // An image with everything else zeroed, as a chain restore leaves the
    // pieces it did not fetch: web1 comes back whole.
    let holes = tmp.path().join("holes.sqfs");
    let keep = with(&web, &meta);
    let mut zeroed = vec![0u8; bytes.len()];
    for &(s, e) in keep.ranges() {
        zeroed[s as usize..e as usize].copy_from_slice(&bytes[s as usize..e as usize]);
    }
    fs::write(&holes, &zeroed).unwrap();
    let out = tmp.path().join("web1");
    restore(&holes, &out, b"daily.0/web1", Some(keep.clone())).unwrap();
    for name in ["big", "small"] {
        assert_eq!(
            fs::read(out.join("daily.0/web1").join(name)).unwrap(),
            fs::read(src.join("daily.0/web1").join(name)).unwrap(),
            "{name}"
        );
    }

    // Without the guard, db1 out of that image is zeros where its data
    // was: restored without a word. With it, the read is refused.
    let out = tmp.path().join("db1-unguarded");
    restore(&holes, &out, b"daily.0/db1", None).unwrap();
    let got = fs::read(out.join("daily.0/db1/big")).unwrap();
    assert!(got.iter().all(|&b| b == 0), "db1's data was in the holes");
    let out = tmp.path().join("db1");
    let e = restore(&holes, &out, b"daily.0/db1", Some(keep.clone())).unwrap_err();
    println!("db1 with only web1's bytes present: {e}");
    assert!(e.to_string().contains("were not fetched"), "{e}");

    // One of web1's own ranges left out: refused too.
    let (s, e0) = web.ranges()[0];
    let short = Arc::new(Present::new(
        keep.ranges()
            .iter()
            .flat_map(|&(a, b)| {
                [(a, b.min(s)), (a.max(e0), b)]
                    .into_iter()
                    .filter(|(x, y)| x < y)
            })
            .collect(),
    ));
    assert!(!short.covers(s, e0 - s));
    let e = restore(
        &holes,
        &tmp.path().join("short"),
        b"daily.0/web1",
        Some(short),
    )
    .unwrap_err();
    assert!(e.to_string().contains("were not fetched"), "{e}");

    // The tables outside what is present: the walk fails, naming the bytes.
    let e = needed(
        &holes,
        &[b"daily.0/web1".to_vec()],
        Some(Arc::new(Present::new(vec![(0, 96)]))),
    )
    .unwrap_err();
    assert!(e.to_string().contains("were not fetched"), "{e}");
    // A path the image does not hold.
    let e = needed(&image, &[b"daily.0/nope".to_vec()], None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn present_merges_and_answers_covers_and_touches() {
    let p = Present::new(vec![(10, 20), (0, 5), (20, 30), (5, 5), (40, 50), (45, 48)]);
    assert_eq!(p.ranges(), &[(0, 5), (10, 30), (40, 50)]);
    assert_eq!(p.bytes(), 35);
    assert!(p.covers(10, 20) && p.covers(0, 5) && p.covers(49, 1) && p.covers(7, 0));
    assert!(!p.covers(4, 2) && !p.covers(29, 2) && !p.covers(50, 1) && !p.covers(u64::MAX, 2));
    assert!(p.touches(4, 11) && p.touches(29, 100) && p.touches(0, 1));
    assert!(!p.touches(5, 10) && !p.touches(30, 40) && !p.touches(50, 60));
}
