//! Images forged to make unpack pay: tables a super block sizes, which
//! libsquashfs would allocate whatever the image holds (found by the cold
//! attack of 2026-12-01, docs/reviews/2026-12-01-parallel-writers.md).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use snap_core::{ErrorKind, Progress};
use snap_pack::{UnpackOptions, unpack};

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

// Super block offsets.
const FRAG_COUNT: usize = 16;
const ROOT_INODE: usize = 32;
const FLAGS: usize = 24;
const BYTES_USED: usize = 40;
const ID_START: usize = 48;
const XATTR_START: usize = 56;
const INODE_START: usize = 64;
const FRAG_START: usize = 80;
const EXPORT_START: usize = 88;
const NO_FRAGMENTS: u16 = 0x0010;

/// Give image `b` (built with -no-xattrs -no-exports) a fragment table of
/// `count` entries whose index points every slot at ONE stored 8 KiB
/// metadata block, and move the id table after it (libsquashfs wants the
/// fragment table first): 8 bytes of image per 8 KiB of table.
fn forge_fragment_table(b: &mut Vec<u8>, count: u32) {
    assert_eq!(u64_at(b, XATTR_START), u64::MAX, "built with -no-xattrs");
    assert_eq!(u64_at(b, EXPORT_START), u64::MAX, "built with -no-exports");
    let id_index = u64_at(b, ID_START) as usize;
    let id_block = u64_at(b, id_index) as usize;
    let id_len = 2 + (u16_at(b, id_block) & 0x7fff) as usize;
    let id_copy = b[id_block..id_block + id_len].to_vec();
    while !b.len().is_multiple_of(8) {
        b.push(0);
    }
    let block_at = b.len() as u64;
    b.extend_from_slice(&(0x8000u16 | 8192).to_le_bytes()); // stored uncompressed
    b.extend_from_slice(&[0u8; 8192]);
    let index_at = b.len() as u64;
    for _ in 0..(count as u64 * 16).div_ceil(8192) {
        b.extend_from_slice(&block_at.to_le_bytes());
    }
    let new_id_block = b.len() as u64;
    b.extend_from_slice(&id_copy);
    let new_id_index = b.len() as u64;
    b.extend_from_slice(&new_id_block.to_le_bytes());
    let used = b.len() as u64;
    let flags = u16_at(b, FLAGS) & !NO_FRAGMENTS;
    put(b, FLAGS, &flags.to_le_bytes());
    put(b, FRAG_COUNT, &count.to_le_bytes());
    put(b, FRAG_START, &index_at.to_le_bytes());
    put(b, ID_START, &new_id_index.to_le_bytes());
    put(b, BYTES_USED, &used.to_le_bytes());
    while !b.len().is_multiple_of(4096) {
        b.push(0);
    }
}

fn mksquashfs(src: &Path, image: &Path) {
    run(Command::new("mksquashfs").arg(src).arg(image).args([
        "-noappend",
        "-quiet",
        "-no-progress",
        "-no-xattrs",
        "-no-exports",
        "-no-fragments",
        "-comp",
        "gzip",
    ]));
}

/// `mksquashfs` with fragments and duplicates found (plain output, as
/// anyone's), blocks of `block`, xattrs kept if `xattrs`; returns the
/// image's fragment blocks.
fn pack_with_fragments(src: &Path, image: &Path, block: &str, xattrs: bool) -> u64 {
    let mut cmd = Command::new("mksquashfs");
    cmd.arg(src)
        .arg(image)
        .args(["-noappend", "-quiet", "-no-progress"]);
    if !xattrs {
        cmd.arg("-no-xattrs");
    }
    run(cmd.args(["-b", block, "-comp", "gzip"]));
    let stats = run(Command::new("unsquashfs").arg("-s").arg(image));
    stats
        .lines()
        .find_map(|l| l.strip_prefix("Number of fragments "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stats}"))
}

/// The tiny file of fragment block `i` in [`blocks_with_tails`].
fn tail(i: u64) -> Vec<u8> {
    format!("tail {i:08}\n").into_bytes()
}

/// `blocks` files under `src/a` of `block_len - 64` bytes (zeros with a
/// mark: they compress to almost nothing), each followed in the image's
/// order by its [`tail`] ("…a" < "…b"), which fills its fragment block.
fn blocks_with_tails(src: &Path, blocks: u64, block_len: usize) {
    for i in 0..blocks {
        let mut big = vec![0u8; block_len - 64];
        big[..8].copy_from_slice(&i.to_le_bytes());
        write(src, format!("a/{i:05}a").as_bytes(), &big);
        write(src, format!("a/{i:05}b").as_bytes(), &tail(i));
    }
}

/// A fragment count the image's data cannot hold (every fragment block
/// takes at least a byte before the inode table) is refused before any
/// table is read. Without the check this image of about 1 MiB unpacked
/// "fine" while every image reader (the extractor and each writer)
/// allocated the 256 MiB table it claims.
#[test]
fn a_fragment_count_the_image_cannot_hold_is_refused_before_any_table_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..12 {
        write(&src, format!("d/f{i}").as_bytes(), &noise(70_000, i));
    }
    let image = tmp.path().join("img.sqfs");
    mksquashfs(&src, &image);
    let mut b = fs::read(&image).unwrap();
    let room = u64_at(&b, INODE_START) - 96;
    // The same forgery within the bound reads back (so the check is not
    // what fails below): the files have no fragments to look up.
    let mut fits = b.clone();
    forge_fragment_table(&mut fits, room as u32);
    fs::write(&image, &fits).unwrap();
    let sum = unpack(
        &image,
        &tmp.path().join("fits"),
        &UnpackOptions::default(),
        &Progress::silent("test"),
    )
    .unwrap();
    assert_eq!(sum.files, 12);

    let claimed: u32 = 16 << 20; // 256 MiB of table
    forge_fragment_table(&mut b, claimed);
    fs::write(&image, &b).unwrap();
    println!(
        "image: {} KiB, {room} bytes of data, a fragment table of {} MiB claimed",
        b.len() >> 10,
        (claimed as u64 * 16) >> 20
    );
    let err = unpack(
        &image,
        &tmp.path().join("out"),
        &UnpackOptions::default(),
        &Progress::silent("test"),
    )
    .unwrap_err();
    println!("unpack: {err}");
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(
        err.to_string().contains(&format!(
            "counts {claimed} fragment blocks, more than the {room} bytes"
        )),
        "{err}"
    );
}

/// Plain `mksquashfs` output that cycles through more fragment blocks than
/// unpack's recent-blocks cache holds: 70 blocks of 1 MiB, each holding a
/// large tail and a 14-byte file, then 2,000 duplicates of the 14-byte
/// files (mksquashfs points a duplicate at the fragment already packed),
/// named so that in the image's order they take the blocks in turn. With
/// the recent blocks alone every duplicate read its block again: 1 MiB
/// decompressed per 10-byte file (found by the cold attack of 2026-12-01,
/// docs/reviews/2026-12-01-shared-fragment-cache.md: 54 s of CPU for
/// 20,000 of them in a 264 KiB image). Blocks missed again are kept (up
/// to 32 MiB), and files pointing back at blocks read twice are set aside
/// and written grouped by block, so each is read about three times.
#[test]
fn tails_that_cycle_through_many_large_fragment_blocks_read_each_block_a_few_times() {
    const BLOCKS: u64 = 70;
    const DUPLICATES: u64 = 2_000;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    blocks_with_tails(&src, BLOCKS, 1 << 20);
    for n in 0..DUPLICATES {
        write(&src, format!("b/{n:05}").as_bytes(), &tail(n % BLOCKS));
    }
    let image = tmp.path().join("img.sqfs");
    let fragments = pack_with_fragments(&src, &image, "1M", false);
    // More 1 MiB blocks than the 64 (8 MiB) the recent blocks hold.
    assert!(fragments > 64, "{fragments}");
    let out = tmp.path().join("out");
    let sum = unpack(
        &image,
        &out,
        &UnpackOptions::default(),
        &Progress::silent("test"),
    )
    .unwrap();
    println!(
        "image: {} KiB, {fragments} fragment blocks of 1 MiB, {DUPLICATES} 14-byte duplicates \
         cycling through them: {} fragment blocks read ({} MiB decompressed; each duplicate \
         reading its block would be {} MiB)",
        fs::metadata(&image).unwrap().len() >> 10,
        sum.fragment_blocks_read,
        sum.fragment_blocks_read,
        BLOCKS + DUPLICATES,
    );
    assert_eq!(sum.files, 2 * BLOCKS + DUPLICATES);
    for n in [0, 69, 70, 1999] {
        assert_eq!(
            fs::read(out.join(format!("b/{n:05}"))).unwrap(),
            tail(n % BLOCKS)
        );
    }
    assert!(
        (fragments..=4 * fragments).contains(&sum.fragment_blocks_read),
        "{} fragment blocks read",
        sum.fragment_blocks_read
    );
}

/// A temporary directory in tmpfs where there is one (making tens of
/// thousands of files in ext4 on the test VM took 20 s of system time,
/// in tmpfs 1 s), else in the default place.
fn tmpfs_tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

/// More fragment blocks than either tier of the cache keeps, cycled
/// through by tiny duplicates (cold attack of 2026-12-01 on the second
/// tier, docs/reviews/2026-12-01-fragment-tiers.md: 20,000 files over 300
/// blocks of 1 MiB still cost 12 s of CPU for a 516 KiB image). Files whose
/// block was read twice already and let go are set aside and written
/// grouped by block, so each block is read at most three times, whatever
/// the number of files pointing at it. 4 KiB blocks keep the test small:
/// 9,000 of them are more than the cache remembers (8,192), so without the
/// setting aside each of the four duplicates of a block read it again.
#[test]
fn files_pointing_back_at_blocks_let_go_are_written_by_block() {
    const BLOCKS: u64 = 9_000;
    const DUPLICATES: u64 = 36_000;
    // 45,000 files: in tmpfs, where there is one.
    let tmp = tmpfs_tempdir();
    let src = tmp.path().join("src");
    blocks_with_tails(&src, BLOCKS, 4096);
    for n in 0..DUPLICATES {
        // In two directories, so that their metadata waits for the files.
        write(
            &src,
            format!("b/{}/{n:06}", n / 18_000).as_bytes(),
            &tail(n % BLOCKS),
        );
    }
    let image = tmp.path().join("img.sqfs");
    let fragments = pack_with_fragments(&src, &image, "4K", false);
    assert!(fragments > 8_192 + 64, "{fragments}");
    let out = tmp.path().join("out");
    let sum = unpack(
        &image,
        &out,
        &UnpackOptions::default(),
        &Progress::silent("test"),
    )
    .unwrap();
    println!(
        "image: {} KiB, {fragments} fragment blocks of 4 KiB, {DUPLICATES} duplicates cycling \
         through them: {} fragment blocks read, {} files set aside (each duplicate reading its \
         block would be {} reads)",
        fs::metadata(&image).unwrap().len() >> 10,
        sum.fragment_blocks_read,
        sum.files_set_aside,
        fragments + DUPLICATES,
    );
    assert_eq!(sum.files, 2 * BLOCKS + DUPLICATES);
    for n in [0, 8_999, 18_000, 35_999] {
        assert_eq!(
            fs::read(out.join(format!("b/{}/{n:06}", n / 18_000))).unwrap(),
            tail(n % BLOCKS)
        );
    }
    assert!(sum.files_set_aside >= DUPLICATES / 2, "{sum:?}");
    assert!(
        sum.fragment_blocks_read <= 3 * fragments + fragments / 20,
        "{} fragment blocks read",
        sum.fragment_blocks_read
    );
    // The directories' metadata waited for their files: times as packed.
    let b = fs::metadata(out.join("b/0")).unwrap();
    let want = fs::metadata(src.join("b/0")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(b.mtime(), want.mtime());
}

/// The same cycle, the duplicates carrying 70 KB of xattrs each: more than
/// a writer's queue takes, so they were written by the extractor in the
/// image's order, outside the files set aside, and read their blocks again
/// (cold attack on ddb4e02, docs/reviews/2026-12-01-set-aside.md: 2,342
/// reads where the same image without xattrs read 303). They are set aside
/// too now, and the extractor writes them in their turn.
#[test]
fn files_with_heavy_xattrs_are_set_aside_too() {
    const BLOCKS: u64 = 70;
    const DUPLICATES: u64 = 700;
    let tmp = tmpfs_tempdir();
    let probe = tmp.path().join("probe");
    fs::write(&probe, b"").unwrap();
    if xattr::set(&probe, "user.a", &[0u8; 40_000]).is_err() {
        println!(
            "SKIPPED: {} takes no 40 KB user xattr",
            tmp.path().display()
        );
        return;
    }
    let src = tmp.path().join("src");
    blocks_with_tails(&src, BLOCKS, 1 << 20);
    for n in 0..DUPLICATES {
        let rel = format!("b/{n:05}");
        write(&src, rel.as_bytes(), &tail(n % BLOCKS));
        setxattr(&src, rel.as_bytes(), "user.a", &[b'a'; 40_000]);
        setxattr(&src, rel.as_bytes(), "user.b", &[b'b'; 30_000]);
    }
    let image = tmp.path().join("img.sqfs");
    pack_with_fragments(&src, &image, "1M", true);
    fs::remove_dir_all(&src).unwrap();
    let out = tmp.path().join("out");
    let sum = unpack(
        &image,
        &out,
        &UnpackOptions::default(),
        &Progress::silent("test"),
    )
    .unwrap();
    println!(
        "image: {} KiB, {BLOCKS} fragment blocks of 1 MiB, {DUPLICATES} duplicates with 70 KB of \
         xattrs: {} fragment blocks read, {} files set aside",
        fs::metadata(&image).unwrap().len() >> 10,
        sum.fragment_blocks_read,
        sum.files_set_aside,
    );
    let got = out.join("b/00699");
    assert_eq!(fs::read(&got).unwrap(), tail(699 % BLOCKS));
    assert_eq!(
        xattr::get(&got, "user.b").unwrap().map(|v| v.len()),
        Some(30_000)
    );
    assert!(sum.files_set_aside >= DUPLICATES / 2, "{sum:?}");
    assert!(
        sum.fragment_blocks_read <= 4 * BLOCKS,
        "{} fragment blocks read",
        sum.fragment_blocks_read
    );
}

/// A destination another user can change while unpack fills it is refused
/// (cold attacks of 2026-12-01 on files set aside: a racer in a 0777
/// destination had root write restored files into files it held open,
/// first by replacing a directory, then by re-creating files that got the
/// same inode numbers); a sticky one is not, and a new one is made 0700.
#[test]
fn a_destination_others_can_change_is_refused_and_a_new_one_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, b"f", b"data");
    let image = tmp.path().join("img.sqfs");
    mksquashfs(&src, &image);
    let go = |dest: &Path| {
        unpack(
            &image,
            dest,
            &UnpackOptions::default(),
            &Progress::silent("t"),
        )
    };
    let shared = tmp.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let err = go(&shared).unwrap_err();
    println!("0777: {err}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        err.to_string().contains("can be changed by others"),
        "{err}"
    );
    assert!(!shared.join("f").exists());
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    go(&shared).unwrap();
    if is_root() {
        let theirs = tmp.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let err = go(&theirs).unwrap_err();
        println!("another owner: {err}");
        assert!(err.to_string().contains("owner uid 65534"), "{err}");
    }
    let fresh = tmp.path().join("new/dest");
    go(&fresh).unwrap();
    assert_eq!(
        fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    assert_eq!(fs::read(fresh.join("f")).unwrap(), b"data");
}

#[test]
fn a_directory_that_lists_its_ancestor_is_refused_not_followed() {
    // Cold attack on 6bdc52a, finding 5: a directory entry pointing back at
    // the root's inode made unpack build a tree as deep as the descriptors
    // allowed (19,991 levels), whose removal then overflowed the stack.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    mkdir(&src, b"d00000");
    let image = tmp.path().join("loop.sqfs");
    // Tables stored uncompressed, so that an entry can be changed in place.
    run(Command::new("mksquashfs").arg(&src).arg(&image).args([
        "-noappend",
        "-quiet",
        "-no-progress",
        "-no-xattrs",
        "-no-exports",
        "-noI",
        "-noD",
        "-noF",
    ]));
    let mut b = fs::read(&image).unwrap();
    let root = u64_at(&b, ROOT_INODE);
    assert_eq!(
        root >> 16,
        0,
        "the root inode is in the first metadata block"
    );
    let name = b
        .windows(6)
        .rposition(|w| w == b"d00000")
        .expect("the entry");
    // The entry: inode offset (u16), inode number delta, type, name size - 1, name.
    assert_eq!(u16_at(&b, name - 2), 5);
    put(&mut b, name - 8, &((root & 0xffff) as u16).to_le_bytes());
    fs::write(&image, &b).unwrap();
    let out = tmp.path().join("out");
    let e = unpack(
        &image,
        &out,
        &UnpackOptions::default(),
        &Progress::silent("test"),
    )
    .expect_err("a loop");
    println!("a directory listing the root: {e}");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("a loop"), "{e}");
}
