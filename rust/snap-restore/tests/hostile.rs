//! A compromised backup server answering `salt-run snap.restore db1 /etc/nginx`.
//!
//! This test plays that backup server: it builds forged images (with the
//! real snap-pack, as the backup server would) and forged descriptions of
//! them, and hands each to what db1 runs (`snap_restore::land`, the code
//! behind `snap.restore_apply`) with what the operator asked. `dest` stands
//! for db1's `/`, with a live `/etc/cron.d`, `/root/.ssh`, `/etc/shadow`
//! and a directory outside it that planted symlinks point to. After every
//! attempt the whole tree outside the asked path is compared with how it
//! was (every entry's type, mode, owner, times, content, link target): the
//! test prints how many forged picks it tried and how many files were
//! written outside the asked path, and fails unless that is zero. Runs as
//! root (devices, owners).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use snap_core::Progress;
use snap_pack::{Compressor, PackOptions};
use snap_restore::history::{DirMeta, PackedPick};
use snap_restore::paths::escape;
use snap_restore::{Asked, Landing, Pick, land};

/// Everything under `root` except below `skip` (the asked path), by path:
/// type, mode, owner, content or link target, and mtime (but directories').
fn snapshot(root: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, skip: &[PathBuf], out: &mut BTreeMap<PathBuf, String>) {
        if skip.iter().any(|s| p.starts_with(s)) {
            return;
        }
        let m = fs::symlink_metadata(p).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("link {:?}", fs::read_link(p).unwrap())
        } else if m.is_file() {
            format!("file {:?}", fs::read(p).unwrap())
        } else if m.is_dir() {
            "dir".into()
        } else {
            format!("special {}", m.rdev())
        };
        // A directory's mtime moves whenever an entry is added or removed
        // in it (the restore's own staging directory, made and removed in
        // `dest`): entries and their metadata are what counts.
        let mtime = if m.is_dir() {
            String::new()
        } else {
            format!(" mtime {}.{}", m.mtime(), m.mtime_nsec())
        };
        out.insert(
            p.to_path_buf(),
            format!("{what} mode {:o} {}:{}{mtime}", m.mode(), m.uid(), m.gid()),
        );
        if m.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), skip, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out);
    out
}

/// db1's `/`: what a compromised backup server would love to reach.
fn make_server(root: &Path, outside: &Path) {
    for d in ["etc/nginx", "etc/cron.d", "root/.ssh", "srv", "usr/bin"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/nginx/nginx.conf"), b"live config\n").unwrap();
    fs::write(root.join("etc/shadow"), b"root:$6$live:19000::::::\n").unwrap();
    fs::set_permissions(root.join("etc/shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(
        root.join("root/.ssh/authorized_keys"),
        b"ssh-ed25519 AAAA admin\n",
    )
    .unwrap();
    fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(outside).unwrap();
    fs::write(outside.join("keep"), b"outside the destination\n").unwrap();
    // A symlink planted earlier (say, by a forged restore): /srv/app -> outside.
    symlink(outside, root.join("srv/app")).unwrap();
}

/// A tree for the backup server to pack, from (path, kind) pairs:
/// `d` dir, `f:TEXT` file, `l:TARGET` symlink, `x:STAT` a plain file with
/// `user.rsync.%stat` = STAT (how history keeps devices and set-id files),
/// `c:CAP` a file with `user.rsync.security.capability` = CAP.
fn tree(root: &Path, entries: &[(&str, &str)]) {
    fs::create_dir_all(root).unwrap();
    for (path, kind) in entries {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        match kind.split_once(':') {
            None if *kind == "d" => fs::create_dir_all(&p).unwrap(),
            Some(("f", text)) => fs::write(&p, text).unwrap(),
            Some(("l", target)) => symlink(target, &p).unwrap(),
            Some(("x", stat)) => {
                fs::write(&p, b"").unwrap();
                xattr::set(&p, "user.rsync.%stat", stat.as_bytes()).unwrap();
            }
            Some(("c", cap)) => {
                fs::write(&p, b"#!/bin/sh\n").unwrap();
                xattr::set(&p, "user.rsync.security.capability", cap.as_bytes()).unwrap();
            }
            _ => panic!("bad entry kind {kind}"),
        }
    }
}

/// Pack `names` from the directory `src` (its children) into `image`.
fn pack(src: &Path, image: &Path) {
    let opts = PackOptions {
        compressor: Compressor::Lz4,
        level: None,
        ..PackOptions::default()
    };
    snap_pack::pack(src, image, &opts, &Progress::silent("pack")).unwrap();
}

fn packed(server: &str, path: &str, root_name: &str, parents: &[&str], whole: bool) -> PackedPick {
    PackedPick {
        pick: Pick {
            snapshot: "recent.0".into(),
            server: server.into(),
            path: path.into(),
        },
        root_name: escape(root_name.as_bytes()),
        whole_server: whole,
        parents: parents
            .iter()
            .map(|n| DirMeta {
                name: (*n).into(),
                mode: 0o777,
                uid: 4242,
                gid: 4242,
                mtime: 1,
            })
            .collect(),
        image_size: 0,
        files: 0,
        bytes: 0,
    }
}

struct Forged {
    name: &'static str,
    /// What the operator asked (server, path).
    asked: (&'static str, &'static str),
    /// The image's top-level entries and the description the backup server sends.
    image: Vec<(&'static str, &'static str)>,
    packed: PackedPick,
    overwrite: bool,
    /// Must the restore be refused? (Some forgeries are harmless inside the
    /// asked path: a symlink pointing out is restored, never followed.)
    refused: bool,
}

#[test]
fn a_hostile_backup_server_gets_nothing_outside_the_asked_path() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root (devices, owners)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("db1");
    let outside = t.path().join("outside");
    make_server(&root, &outside);
    // VFS_CAP_REVISION_2 with the effective bit: cap_net_raw permitted.
    let cap: String = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]
    .iter()
    .map(|b| char::from(*b))
    .collect();
    let forged = vec![
        Forged {
            name: "root entry cron.d described as the pick of /etc/nginx",
            asked: ("db1", "/etc/nginx"),
            image: vec![("cron.d/x", "f:* * * * * root sh -c evil")],
            packed: packed("db1", "etc/nginx", "cron.d", &["etc"], false),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "parents root/.ssh for /etc/nginx",
            asked: ("db1", "/etc/nginx"),
            image: vec![("authorized_keys", "f:ssh-ed25519 AAAA attacker")],
            packed: packed(
                "db1",
                "etc/nginx",
                "authorized_keys",
                &["root", ".ssh"],
                false,
            ),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "the pick of another path (/root/.ssh) sent for /etc/nginx",
            asked: ("db1", "/etc/nginx"),
            image: vec![("authorized_keys", "f:ssh-ed25519 AAAA attacker")],
            packed: packed(
                "db1",
                "root/.ssh/authorized_keys",
                "authorized_keys",
                &["root", ".ssh"],
                false,
            ),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "another server's pick (web1)",
            asked: ("db1", "/etc/nginx"),
            image: vec![("nginx/nginx.conf", "f:web1's")],
            packed: packed("web1", "etc/nginx", "nginx", &["etc"], false),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "a whole-server image (etc/cron.d/x, root/.ssh) for /etc/nginx",
            asked: ("db1", "/etc/nginx"),
            image: vec![
                ("db1/etc/cron.d/x", "f:* * * * * root sh -c evil"),
                (
                    "db1/root/.ssh/authorized_keys",
                    "f:ssh-ed25519 AAAA attacker",
                ),
            ],
            packed: packed("db1", "", "db1", &[], true),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "whole_server claimed for the right path and root",
            asked: ("db1", "/etc/nginx"),
            image: vec![("nginx/nginx.conf", "f:x")],
            packed: packed("db1", "etc/nginx", "nginx", &["etc"], true),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "'..' in the described path",
            asked: ("db1", "/etc/nginx"),
            image: vec![("nginx/x", "f:x")],
            packed: packed("db1", "etc/nginx/../../root/.ssh", "nginx", &["etc"], false),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "'..' as parents and root name",
            asked: ("db1", "/etc/nginx"),
            image: vec![("nginx/x", "f:x")],
            packed: packed("db1", "etc/nginx", "..", &["..", ".."], false),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "a second root entry (cron.d) beside nginx",
            asked: ("db1", "/etc/nginx"),
            image: vec![
                ("nginx/nginx.conf", "f:x"),
                ("cron.d/x", "f:* * * * * root evil"),
            ],
            packed: packed("db1", "etc/nginx", "nginx", &["etc"], false),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "a hard link from nginx/ to an entry outside it",
            asked: ("db1", "/etc/nginx"),
            image: vec![("nginx/h", "f:shared"), ("shadow", "f:shared")],
            packed: packed("db1", "etc/nginx", "nginx", &["etc"], false),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "a char device 1:1 (/dev/mem) mode 0666 where nginx.conf was asked",
            asked: ("db1", "/etc/nginx/nginx.conf"),
            image: vec![("nginx.conf", "x:20666 1,1 0:0")],
            packed: packed(
                "db1",
                "etc/nginx/nginx.conf",
                "nginx.conf",
                &["etc", "nginx"],
                false,
            ),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "a set-uid root file inside /etc/nginx",
            asked: ("db1", "/etc/nginx"),
            image: vec![("nginx/helper", "x:104755 0,0 0:0")],
            packed: packed("db1", "etc/nginx", "nginx", &["etc"], false),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "a file with capabilities inside /etc/nginx",
            asked: ("db1", "/etc/nginx"),
            image: vec![("nginx/tool", "c:CAP")],
            packed: packed("db1", "etc/nginx", "nginx", &["etc"], false),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "a block device deep inside /etc/nginx",
            asked: ("db1", "/etc/nginx"),
            image: vec![("nginx/conf.d/disk", "x:60660 8,0 0:0")],
            packed: packed("db1", "etc/nginx", "nginx", &["etc"], false),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "parents that differ in metadata only (/etc 0777 owned by 4242)",
            asked: ("db1", "/etc/nginx"),
            image: vec![("nginx/nginx.conf", "f:restored config\n")],
            packed: packed("db1", "etc/nginx", "nginx", &["etc"], false),
            overwrite: true,
            refused: false,
        },
        Forged {
            name: "parents the restore creates (/opt/app) with owner 4242 and mode 0777",
            asked: ("db1", "/opt/app/conf"),
            image: vec![("conf/app.ini", "f:[app]\n")],
            packed: packed("db1", "opt/app/conf", "conf", &["opt", "app"], false),
            overwrite: false,
            refused: false,
        },
        Forged {
            name: "absolute symlinks inside the pick (nginx/sites -> /etc/cron.d, nginx/out -> outside)",
            asked: ("db1", "/etc/nginx"),
            image: vec![("nginx/sites", "l:/etc/cron.d"), ("nginx/out", "l:OUTSIDE")],
            packed: packed("db1", "etc/nginx", "nginx", &["etc"], false),
            overwrite: true,
            refused: false,
        },
        Forged {
            name: "a pick below a planted symlink (/srv/app -> outside)",
            asked: ("db1", "/srv/app/data"),
            image: vec![("data/x", "f:through the symlink")],
            packed: packed("db1", "srv/app/data", "data", &["srv", "app"], false),
            overwrite: true,
            refused: true,
        },
        Forged {
            name: "the planted symlink itself replaced (asked /srv/app)",
            asked: ("db1", "/srv/app"),
            image: vec![("app/x", "f:into the symlink's place")],
            packed: packed("db1", "srv/app", "app", &["srv"], false),
            overwrite: false,
            refused: true,
        },
        Forged {
            name: "the root entry a symlink to /etc/cron.d (asked /etc/nginx, exists)",
            asked: ("db1", "/etc/nginx"),
            image: vec![("nginx", "l:/etc/cron.d")],
            packed: packed("db1", "etc/nginx", "nginx", &["etc"], false),
            overwrite: true,
            refused: true,
        },
    ];
    let mut tried = 0;
    let mut outside_writes = 0;
    let mut parents_created = 0;
    for (i, f) in forged.iter().enumerate() {
        let work = t.path().join(format!("forge-{i}"));
        let src = work.join("tree");
        let entries: Vec<(String, String)> = f
            .image
            .iter()
            .map(|(p, k)| {
                (
                    p.to_string(),
                    k.replace("OUTSIDE", outside.to_str().unwrap())
                        .replace("c:CAP", &format!("c:{cap}")),
                )
            })
            .collect();
        let borrowed: Vec<(&str, &str)> = entries
            .iter()
            .map(|(p, k)| (p.as_str(), k.as_str()))
            .collect();
        tree(&src, &borrowed);
        if f.name.starts_with("a hard link") {
            fs::remove_file(src.join("shadow")).unwrap();
            fs::hard_link(src.join("nginx/h"), src.join("shadow")).unwrap();
        }
        let image = work.join("pick.sqfs");
        pack(&src, &image);
        let asked = Asked::new(f.asked.0, f.asked.1.as_bytes()).unwrap();
        let asked_path = root.join(f.asked.1.trim_start_matches('/'));
        let skip = vec![asked_path.clone()];
        let before = snapshot(&root, &skip);
        let before_outside = snapshot(&outside, &[]);
        let got = land(
            &image,
            &f.packed,
            &asked,
            &root,
            f.overwrite,
            Landing::default(),
            &Progress::silent("extract"),
        );
        tried += 1;
        let after = snapshot(&root, &skip);
        let after_outside = snapshot(&outside, &[]);
        let mut changed: Vec<String> = Vec::new();
        for (p, v) in &after {
            // A parent of the asked path the restore had to create: a
            // directory owned by root, at most 0755 (checked), not a file.
            let created_parent = !before.contains_key(p)
                && asked_path.starts_with(p)
                && v.starts_with("dir mode 40")
                && v.ends_with(" 0:0")
                && fs::metadata(p).unwrap().mode() & 0o7022 == 0;
            if created_parent {
                parents_created += 1;
                continue;
            }
            if before.get(p) != Some(v) {
                changed.push(format!("{} ({v})", p.display()));
            }
        }
        for p in before.keys() {
            if !after.contains_key(p) {
                changed.push(format!("{} (removed)", p.display()));
            }
        }
        if before_outside != after_outside {
            changed.push(format!("{} changed", outside.display()));
        }
        outside_writes += changed.len();
        match (&got, f.refused) {
            (Ok(_), true) => panic!("{}: restored, must be refused", f.name),
            (Err(e), false) => panic!(
                "{}: refused ({e}), must be restored inside the asked path",
                f.name
            ),
            (Err(e), true) => eprintln!("refused  {}: {e}", f.name),
            (Ok(_), false) => eprintln!("restored {} (inside {} only)", f.name, f.asked.1),
        }
        assert!(
            changed.is_empty(),
            "{}: written outside the asked path: {changed:?}",
            f.name
        );
    }
    // The harmless ones landed as asked: a restored symlink is there, not followed.
    assert_eq!(
        fs::read_link(root.join("etc/nginx/sites")).unwrap(),
        Path::new("/etc/cron.d")
    );
    assert_eq!(
        fs::metadata(root.join("etc")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(fs::metadata(root.join("etc")).unwrap().uid(), 0);
    assert_eq!(parents_created, 2, "/opt and /opt/app, root-owned");
    println!(
        "a hostile backup server: {tried} forged picks tried, {outside_writes} files written outside the asked path \
         ({parents_created} missing parents created, root-owned, at most 0755)"
    );
    assert_eq!(outside_writes, 0);
}

#[test]
fn a_whole_server_lands_only_when_slash_was_asked() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("tree");
    tree(
        &src,
        &[
            ("db1/etc/hostname", "f:db1\n"),
            ("db1/usr/bin/passwd", "x:104755 0,0 0:0"),
        ],
    );
    let image = t.path().join("pick.sqfs");
    pack(&src, &image);
    let dest = t.path().join("restored");
    let asked = Asked::new("db1", b"/").unwrap();
    land(
        &image,
        &packed("db1", "", "db1", &[], true),
        &asked,
        &dest,
        false,
        Landing::default(),
        &Progress::silent("extract"),
    )
    .unwrap();
    assert_eq!(fs::read(dest.join("etc/hostname")).unwrap(), b"db1\n");
    // `/` asked: the system's set-id binaries come back as they were.
    assert_eq!(
        fs::symlink_metadata(dest.join("usr/bin/passwd"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );
}
