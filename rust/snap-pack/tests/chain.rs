//! Chains against the real tools: rsnapshot rotates a history that rsync
//! --fake-super fills from live servers (owners, devices, setuid, xattrs,
//! hard links, non-UTF-8 names, a sparse file); a base and three links are
//! made over seven rotations; each link's image is assembled with `head -c`
//! and `dd conv=notrunc` from the pieces, and unsquashfs and snap's unpack
//! give back exactly the history of that moment. A lost index is rebuilt
//! from the newest tail; a truncated or reordered tail fails clearly.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rustix::fs::FileType;
use snap_core::Progress;
use snap_pack::chain::{ImageSource, Link, Piece, assemble, link, rebuild_index};
use snap_pack::{PackOptions, UnpackOptions, unpack};

fn opts() -> PackOptions {
    PackOptions {
        level: Some(3),
        ..PackOptions::default()
    }
}

fn quiet() -> Progress {
    Progress::silent("t")
}

/// A live server with every kind of entry, as root sees it.
fn live_server(root: &Path, seed: u64) {
    let s = root;
    write(s, b"etc/hosts", b"127.0.0.1 localhost\n");
    write(s, b"etc/shadow", b"root:*:19000::::::\n");
    chmod(s, b"etc/shadow", 0o640);
    chown(s, b"etc/shadow", 0, 42);
    write(s, b"usr/bin/sudo", b"#!/bin/sh\n");
    chmod(s, b"usr/bin/sudo", 0o4755);
    write(s, b"home/u/notes", &noise(5000, seed));
    chown(s, b"home/u/notes", 1000, 1000);
    chown(s, b"home/u", 1000, 1000);
    write(s, b"var/big", &noise(3 * 131072 + 17, seed + 1));
    write(s, b"names/caf\xe9", b"latin-1 name\n");
    write(s, b"names/new\nline", b"newline\n");
    mkdir(s, b"dev");
    mknod(s, b"dev/sda1", FileType::BlockDevice, 8, 1);
    mknod(s, b"dev/null", FileType::CharacterDevice, 1, 3);
    mknod(s, b"dev/initctl", FileType::Fifo, 0, 0);
    symlink(s, b"../etc/hosts", b"etc/hosts.link");
    setxattr(s, b"home/u/notes", "user.note", b"\x00\xffbinary");
    common::link(s, b"etc/hosts", b"etc/hosts.hard");
    // A VM disk: 8 MiB apparent, two small extents.
    let f = fs::File::create(s.join("var/disk.img")).unwrap();
    f.set_len(8 << 20).unwrap();
    f.write_all_at(&noise(10_000, seed + 2), 4096).unwrap();
    f.write_all_at(&noise(5000, seed + 3), (6 << 20) + 77)
        .unwrap();
}

/// One interval of change on a live server.
fn change(root: &Path, k: u64) {
    write(
        root,
        format!("var/log/day{k}").as_bytes(),
        &noise(20_000, 100 + k),
    );
    // (Sizes differ each day: rsync's quick check would skip a file of the
    // same size written in the same second.)
    write(
        root,
        b"etc/motd",
        format!("day {k}{}\n", "!".repeat(k as usize)).as_bytes(),
    );
    // A scratch file of two blocks, new every day: dead once its snapshots age out.
    write(
        root,
        b"var/tmp/scratch",
        &noise(2 * 131072 + k as usize, 200 + k),
    );
    if k == 2 {
        fs::remove_file(root.join(OsStrExt2::p(b"names/new\nline"))).unwrap();
    }
    if k == 3 {
        chmod(root, b"home/u/notes", 0o600);
    }
}

struct OsStrExt2;
impl OsStrExt2 {
    fn p(b: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(b))
    }
}

struct Fixture {
    dir: PathBuf,
    history: PathBuf,
    live: PathBuf,
    conf: PathBuf,
}

impl Fixture {
    fn new(dir: &Path) -> Fixture {
        let history = dir.join("history");
        let live = dir.join("live");
        fs::create_dir_all(&history).unwrap();
        for (i, server) in ["db1", "web1"].iter().enumerate() {
            live_server(&live.join(server), i as u64 * 10);
        }
        let conf = dir.join("rsnapshot.conf");
        let lines = [
            "config_version\t1.2".to_string(),
            format!("snapshot_root\t{}/", history.display()),
            "no_create_root\t1".into(),
            "cmd_cp\t/bin/cp".into(),
            "cmd_rm\t/bin/rm".into(),
            "cmd_rsync\t/usr/bin/rsync".into(),
            "retain\trecent\t3".into(),
            "retain\tdaily\t2".into(),
            "verbose\t1".into(),
            format!("lockfile\t{}/rsnapshot.pid", dir.display()),
            "sync_first\t1".into(),
            "link_dest\t0".into(),
            "rsync_short_args\t-aHAXS".into(),
            "rsync_long_args\t--delete --numeric-ids --delete-excluded --fake-super".into(),
            format!("backup\t{}/db1/\tdb1/", live.display()),
            format!("backup\t{}/web1/\tweb1/", live.display()),
            String::new(),
        ];
        fs::write(&conf, lines.join("\n")).unwrap();
        Fixture {
            dir: dir.to_path_buf(),
            history,
            live,
            conf,
        }
    }

    fn rsnapshot(&self, what: &str) {
        run(Command::new("rsnapshot")
            .arg("-c")
            .arg(&self.conf)
            .arg(what));
    }

    /// Rotation k: change the servers, sync, rotate (daily every third),
    /// stamp the new snapshot (not the first: it is named by its mtime).
    fn rotate(&self, k: u64) {
        if k > 0 {
            for server in ["db1", "web1"] {
                change(&self.live.join(server), k);
            }
        }
        self.rsnapshot("sync");
        if k > 0 && k.is_multiple_of(3) {
            self.rsnapshot("daily");
        }
        self.rsnapshot("recent");
        if k > 0 {
            // Rotations a day apart, after the first (named by its mtime: now).
            let now = jiff::Timestamp::now().as_second();
            let stamp = jiff::Timestamp::from_second(now + k as i64 * 86_400).unwrap();
            fs::write(
                self.history.join("recent.0/.snapshot.json"),
                format!("{{\"time\": \"{stamp}\"}}"),
            )
            .unwrap();
        }
    }

    /// History as the image at a link must show it: snapshot directories
    /// under their time names, without stamps, `.sync` and the like.
    fn expected(&self, names: &BTreeMap<Vec<u8>, Vec<u8>>) -> Tree {
        let keep = |rel: &[u8]| {
            let mut comps = rel.split(|b| *b == b'/');
            let first = comps.next().unwrap();
            names.contains_key(first) && comps.next().is_none_or(|c| c.first() != Some(&b'.'))
        };
        let t = read_tree(&self.history, &keep);
        let rename = |p: &Vec<u8>| -> Vec<u8> {
            let i = p.iter().position(|b| *b == b'/').unwrap_or(p.len());
            let mut out = names[&p[..i]].clone();
            out.extend_from_slice(&p[i..]);
            out
        };
        Tree {
            nodes: t
                .nodes
                .iter()
                .map(|(k, v)| (rename(k), v.clone()))
                .collect(),
            groups: t
                .groups
                .iter()
                .map(|(k, v)| (*k, v.iter().map(rename).collect()))
                .collect(),
            nlink: t.nlink.iter().map(|(k, v)| (rename(k), *v)).collect(),
        }
    }
}

/// A link's pieces, kept as an uploader would: tail and super block.
struct Pieces {
    tails: Vec<PathBuf>,
}

/// Assemble the image of `l` with coreutils, as an operator would.
fn coreutils(dir: &Path, pieces: &Pieces, l: &Link, out: &Path) {
    let sb = dir.join(format!("sb-{}", l.number));
    fs::write(&sb, l.superblock).unwrap();
    let mut script = String::from("set -e\n");
    for r in &l.ranges {
        match r.piece {
            Piece::Superblock => {}
            Piece::Tail(0) => {
                assert_eq!(r.offset, r.piece_offset);
                script += &format!(
                    "head -c {} '{}' > '{}'\n",
                    r.offset + r.len,
                    pieces.tails[0].display(),
                    out.display()
                );
            }
            Piece::Tail(n) => {
                assert_eq!(r.piece_offset, 0);
                script += &format!(
                    "head -c {} '{}' >> '{}'\n",
                    r.len,
                    pieces.tails[n as usize].display(),
                    out.display()
                );
            }
        }
    }
    script += &format!(
        "dd if='{}' of='{}' bs=96 count=1 conv=notrunc status=none\n",
        sb.display(),
        out.display()
    );
    run(Command::new("sh").arg("-c").arg(&script));
}

/// unsquashfs and snap's unpack both give back `want`.
fn check_image(dir: &Path, image: &Path, want: &Tree) {
    let out = dir.join("unsquashfs-out");
    let _ = fs::remove_dir_all(&out);
    run(Command::new("unsquashfs")
        .arg("-no-progress")
        .arg("-d")
        .arg(&out)
        .arg(image));
    assert_same(want, &read_tree(&out, &all), false);
    fs::remove_dir_all(&out).unwrap();
    let mine = dir.join("unpack-out");
    let _ = fs::remove_dir_all(&mine);
    unpack(image, &mine, &UnpackOptions::default(), &quiet()).unwrap();
    assert_same(want, &read_tree(&mine, &all), false);
    fs::remove_dir_all(&mine).unwrap();
    let listing = run(Command::new("unsquashfs").arg("-l").arg(image));
    for name in want.nodes.keys().filter(|k| !k.contains(&b'/')) {
        let name = String::from_utf8_lossy(name);
        assert!(
            listing.contains(&format!("squashfs-root/{name}/web1/etc/hosts")),
            "{name} not listed"
        );
    }
}

/// Assemble with coreutils from pieces changed by `mutate`.
fn assemble_broken(
    dir: &Path,
    pieces: &Pieces,
    l: &Link,
    out: &Path,
    mutate: &dyn Fn(&mut Vec<PathBuf>),
) {
    let mut tails = pieces.tails.clone();
    mutate(&mut tails);
    coreutils(dir, &Pieces { tails }, l, out);
}

#[test]
fn a_chain_of_links_gives_back_every_point_in_time() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fixture::new(tmp.path());
    let state = fx.dir.join("state");
    fs::create_dir(&state).unwrap();
    let index = state.join("chain.idx");
    let mut pieces = Pieces { tails: Vec::new() };
    let mut made: Vec<(Link, Tree)> = Vec::new();
    let make = |fx: &Fixture, pieces: &mut Pieces, made: &mut Vec<(Link, Tree)>| {
        let n = pieces.tails.len();
        let tail = fx.dir.join(format!("tail-{n}"));
        let mut l = link(&fx.history, &index, n == 0, &tail, &opts(), &quiet()).unwrap();
        let names: BTreeMap<Vec<u8>, Vec<u8>> = l
            .snapshots
            .iter()
            .map(|s| {
                use std::os::unix::ffi::OsStrExt;
                (s.dir.as_bytes().to_vec(), s.name.as_bytes().to_vec())
            })
            .collect();
        let want = fx.expected(&names);
        pieces.tails.push(tail);
        let s = l.summary.clone();
        eprintln!(
            "link {n}: {} snapshots, {} new files ({} bytes read), {} reused, tail {} bytes, \
             image {} bytes, dead {} bytes ({:.1} %)",
            s.snapshots,
            s.new_files,
            s.bytes_read,
            s.reused_files,
            s.tail_bytes,
            s.image_bytes,
            s.dead_bytes,
            100.0 * s.dead_ratio
        );
        assert_eq!(l.ranges.iter().map(|r| r.len).sum::<u64>(), s.image_bytes);
        if n > 0 {
            assert!(s.reused_files > s.new_files, "{s:?}");
            // Unchanged files (the VM disk, var/big) are not read again.
            assert!(s.bytes_read < 1_300_000, "{s:?}");
            assert_eq!(
                l.tail_start,
                made.last().unwrap().0.links.last().unwrap().data_end
            );
        }
        let image = fx.dir.join(format!("image-{n}.sqfs"));
        coreutils(&fx.dir, pieces, &l, &image);
        assert_eq!(fs::metadata(&image).unwrap().len(), s.image_bytes);
        check_image(&fx.dir, &image, &want);
        // The newest snapshot, with fake-super applied, is the live servers.
        let newest = &l.snapshots.last().unwrap().name;
        let restored = fx.dir.join("restored");
        let _ = fs::remove_dir_all(&restored);
        let uo = UnpackOptions {
            select: vec![newest.as_bytes().to_vec()],
            apply_fake_super: true,
            keep_fake_super_xattr: false,
            present: None,
        };
        unpack(&image, &restored, &uo, &quiet()).unwrap();
        assert_same(
            &read_tree(&fx.live, &all),
            &read_tree(&restored.join(newest), &all),
            false,
        );
        fs::remove_dir_all(&restored).unwrap();
        fs::remove_file(&image).unwrap();
        l.commit().unwrap();
        made.push((l, want));
    };
    for k in 0..=6u64 {
        fx.rotate(k);
        if k % 2 == 0 {
            make(&fx, &mut pieces, &mut made); // links at rotations 0, 2, 4, 6
        }
    }
    // recent.2 of rotation 1 aged out at rotation 4: its own data is dead.
    assert!(made[2].0.summary.dead_bytes > 0, "{:?}", made[2].0.summary);
    assert!(made[0].0.snapshots[0].source == snap_pack::chain::TimeSource::Mtime);

    // Every earlier point in time still assembles from the same pieces.
    for (l, want) in &made {
        let image = fx.dir.join("again.sqfs");
        coreutils(&fx.dir, &pieces, l, &image);
        check_image(&fx.dir, &image, want);
        fs::remove_file(&image).unwrap();
    }

    // snap's assembler checks every range; a truncated or reordered piece
    // fails naming it, and no image appears.
    let last = &made[3].0;
    let bad = fx.dir.join("bad.sqfs");
    let cut = fx.dir.join("tail-3-cut");
    let t3 = fs::read(&pieces.tails[3]).unwrap();
    fs::write(&cut, &t3[..t3.len() - 5000]).unwrap();
    let good = |n: u32| pieces.tails[n as usize].clone();
    assert_eq!(
        assemble(&last.ranges, &last.superblock, &good, &bad).unwrap(),
        last.summary.image_bytes
    );
    fs::remove_file(&bad).unwrap();
    let truncated = |n: u32| if n == 3 { cut.clone() } else { good(n) };
    let swapped = |n: u32| {
        good(match n {
            1 => 2,
            2 => 1,
            n => n,
        })
    };
    for (what, tails) in [
        ("truncated", &truncated as &dyn Fn(u32) -> PathBuf),
        ("reordered", &swapped),
    ] {
        let e = assemble(&last.ranges, &last.superblock, tails, &bad).unwrap_err();
        eprintln!("{what} piece: {e}");
        assert_eq!(e.kind(), snap_core::ErrorKind::Integrity, "{e}");
        let named = if what == "truncated" {
            "tail-3-cut"
        } else {
            "tail-2"
        };
        assert!(e.to_string().contains(named), "{e}");
        assert!(!bad.exists());
    }
    // With coreutils alone, a truncated tail leaves an image the tools refuse.
    assemble_broken(&fx.dir, &pieces, last, &bad, &|t: &mut Vec<PathBuf>| {
        t[3] = cut.clone()
    });
    let out = Command::new("unsquashfs")
        .arg("-no-progress")
        .arg("-d")
        .arg(fx.dir.join("x"))
        .arg(&bad)
        .output()
        .unwrap();
    let _ = fs::remove_dir_all(fx.dir.join("x"));
    assert!(!out.status.success(), "unsquashfs read a truncated image");
    let e = unpack(&bad, &fx.dir.join("y"), &UnpackOptions::default(), &quiet()).unwrap_err();
    let _ = fs::remove_dir_all(fx.dir.join("y"));
    eprintln!(
        "truncated image: unsquashfs exit {:?}; snap unpack: {e}",
        out.status.code()
    );
    fs::remove_file(&bad).unwrap();

    // A lost index is rebuilt from the newest tail; the next link reuses.
    fs::remove_file(&index).unwrap();
    let sum = rebuild_index(
        &fx.history,
        ImageSource::Tail {
            tail: &pieces.tails[3],
            start: last.tail_start,
            superblock: last.superblock,
        },
        &last.links,
        &opts(),
        &index,
    )
    .unwrap();
    eprintln!("rebuilt index: {sum:?}");
    assert!(
        sum.recorded > 0 && sum.recorded + sum.missing + sum.mismatched + sum.unkeyed == sum.files,
        "{sum:?}"
    );
    fx.rotate(7);
    make(&fx, &mut pieces, &mut made);
    let s = &made[4].0.summary;
    assert!(
        s.reused_files > s.new_files && s.bytes_read < 1_300_000,
        "{s:?}"
    );
}
