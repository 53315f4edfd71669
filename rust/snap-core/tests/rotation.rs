//! Rotation against the real tools: rsync (the sender as the jail's account,
//! through `snap-as-account` and `setpriv`), rsnapshot, as root. The jails
//! belong to `nobody`, an account every Debian system has, so these tests
//! create no users. Without root they skip (CI runs them as root).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use snap_core::rotate::{ServerConfig, rotate};

const ACCOUNT: &str = "nobody";
const ID: &str = "web1";

fn root() -> bool {
    rustix::process::getuid().is_root()
}

fn nobody() -> (u32, u32) {
    let out = Command::new("id").args(["-u", ACCOUNT]).output().unwrap();
    let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = Command::new("id").args(["-g", ACCOUNT]).output().unwrap();
    let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid, gid)
}

struct Site {
    _dir: tempfile::TempDir,
    base: PathBuf,
    cfg: ServerConfig,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o711)).unwrap();
        let as_account = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../salt/snap/files/snap-as-account")
            .canonicalize()
            .unwrap();
        // Every directory above the jail must let the account through.
        let mut p = base.clone();
        while let Some(parent) = p.parent() {
            let mode = fs::metadata(parent).unwrap().mode();
            if mode & 0o001 == 0 {
                fs::set_permissions(parent, fs::Permissions::from_mode(mode | 0o111)).unwrap();
            }
            p = parent.to_path_buf();
        }
        let cfg: ServerConfig = serde_json::from_value(serde_json::json!({
            "jails_dir": base.join("jails"),
            "history_dir": base.join("history"),
            "rsnapshot_conf": base.join("rsnapshot.conf"),
            "as_account": as_account,
            "accounts": {ACCOUNT: ID},
            "levels": [{"name": "recent", "keep": 3}, {"name": "daily", "keep": 3}],
            "lock_wait": 1,
            "state_dir": base.join("state"),
            "log_file": base.join("rsnapshot.log"),
            "lock_file": base.join("rsnapshot.pid"),
        }))
        .unwrap();
        fs::create_dir_all(base.join("history")).unwrap();
        fs::set_permissions(base.join("history"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(&cfg.rsnapshot_conf, cfg.rsnapshot_conf()).unwrap();
        let (uid, gid) = nobody();
        fs::create_dir(&cfg.jails_dir).unwrap();
        fs::set_permissions(&cfg.jails_dir, fs::Permissions::from_mode(0o711)).unwrap();
        snap_core::jail::prepare(&cfg.jails_dir, ACCOUNT, uid, gid, false).unwrap();
        Site {
            _dir: dir,
            base,
            cfg,
        }
    }

    fn jail(&self) -> PathBuf {
        self.cfg.jails_dir.join(ACCOUNT)
    }

    /// What snap-receive leaves after a complete push into tree `seq`.
    fn pushed(&self, seq: u64, files: &[(&str, &str, u32)]) {
        let (uid, gid) = nobody();
        let tree = self.jail().join("incoming").join(format!("tree.{seq}"));
        for (name, text, mode) in files {
            let p = tree.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        }
        chown_tree(&tree, uid, gid);
        let info = serde_json::json!({"seq": seq, "current": seq, "current_run": format!("run{seq}"),
                                      "current_finished": 1.0e9});
        fs::write(self.jail().join("jail.json"), info.to_string()).unwrap();
    }

    fn snap(&self, name: &str) -> PathBuf {
        self.base.join("history").join(name).join(ID)
    }
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    chown(p, Some(uid), Some(gid)).unwrap();
    if p.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

#[test]
fn a_push_becomes_a_snapshot_and_never_changes_an_older_one() {
    if !root() {
        return;
    }
    let s = Site::new();
    s.pushed(1, &[("etc/file", "same", 0o644), ("etc/other", "x", 0o644)]);
    let rec = rotate(&s.cfg, "recent").unwrap();
    assert_eq!(rec.result, "ok", "{rec:?}");
    assert_eq!(rec.servers[ID].action, "synced");
    assert_eq!(
        fs::read_to_string(s.snap("recent.0").join("etc/file")).unwrap(),
        "same"
    );
    let meta = fs::read_to_string(s.base.join("history/recent.0/.snapshot.json")).unwrap();
    assert!(meta.contains("\"time\"") && meta.contains("run1"), "{meta}");

    // The next push changes only attributes (setuid) of an unchanged file.
    let (uid, gid) = nobody();
    let t1 = s.jail().join("incoming/tree.1");
    let t2 = s.jail().join("incoming/tree.2");
    Command::new("cp")
        .arg("-a")
        .arg(&t1)
        .arg(&t2)
        .status()
        .unwrap();
    fs::set_permissions(t2.join("etc/file"), fs::Permissions::from_mode(0o4755)).unwrap();
    chown_tree(&t2, uid, gid);
    s.pushed(2, &[]);
    let rec = rotate(&s.cfg, "recent").unwrap();
    assert_eq!(rec.servers[ID].action, "synced", "{rec:?}");
    let old = fs::metadata(s.snap("recent.1").join("etc/file")).unwrap();
    let new = fs::metadata(s.snap("recent.0").join("etc/file")).unwrap();
    assert_ne!(old.ino(), new.ino(), "an attribute change gets a new inode");
    assert_eq!(
        old.mode() & 0o7777,
        0o644,
        "the older snapshot is as it was"
    );
    let same_old = fs::metadata(s.snap("recent.1").join("etc/other")).unwrap();
    let same_new = fs::metadata(s.snap("recent.0").join("etc/other")).unwrap();
    assert_eq!(
        same_old.ino(),
        same_new.ino(),
        "unchanged files are hard links"
    );

    // No new push: the snapshot carries the last one over, unchanged.
    let rec = rotate(&s.cfg, "recent").unwrap();
    assert_eq!(rec.servers[ID].action, "unchanged");
    assert_eq!(
        fs::metadata(s.snap("recent.0").join("etc/other"))
            .unwrap()
            .ino(),
        same_old.ino()
    );
}

#[test]
fn a_hostile_jail_is_refused_without_following_or_reading_it() {
    if !root() {
        return;
    }
    let s = Site::new();
    s.pushed(1, &[("etc/file", "good", 0o644)]);
    assert_eq!(rotate(&s.cfg, "recent").unwrap().result, "ok");
    // A sparse 1 GiB jail.json (as if the account could write it) is not read.
    let f = fs::File::create(s.jail().join("jail.json")).unwrap();
    f.set_len(1 << 30).unwrap();
    let rec = rotate(&s.cfg, "recent").unwrap();
    let srv = &rec.servers[ID];
    assert_eq!(srv.action, "failed", "{srv:?}");
    assert!(
        srv.reason.as_deref().unwrap().contains("larger than"),
        "{srv:?}"
    );
    assert_eq!(
        fs::read_to_string(s.snap("recent.0").join("etc/file")).unwrap(),
        "good",
        "the previous snapshot is carried over"
    );
    // incoming swapped for a link to somewhere else: refused, not followed.
    fs::write(s.jail().join("jail.json"), r#"{"seq":1,"current":1}"#).unwrap();
    let incoming = s.jail().join("incoming");
    fs::rename(&incoming, s.base.join("moved")).unwrap();
    symlink("/etc", &incoming).unwrap();
    let rec = rotate(&s.cfg, "recent").unwrap();
    let srv = &rec.servers[ID];
    assert_eq!(srv.action, "failed");
    assert!(
        srv.reason.as_deref().unwrap().contains("symbolic link"),
        "{srv:?}"
    );
    assert!(!s.snap("recent.0").join("passwd").exists());
}

#[test]
fn a_busy_jail_delays_nobody_and_keeps_its_previous_snapshot() {
    if !root() {
        return;
    }
    let s = Site::new();
    s.pushed(1, &[("f", "one", 0o644)]);
    assert_eq!(rotate(&s.cfg, "recent").unwrap().result, "ok");
    s.pushed(2, &[("f", "two!", 0o644)]);
    let jail = snap_core::jail::Jail::new(&s.cfg.jails_dir, ACCOUNT);
    let held = jail.lock(Duration::ZERO).unwrap().unwrap();
    let rec = rotate(&s.cfg, "recent").unwrap();
    drop(held);
    let srv = &rec.servers[ID];
    assert_eq!(srv.action, "kept", "{srv:?}");
    assert!(srv.reason.as_deref().unwrap().contains("still running"));
    assert!(srv.seconds < 5.0, "waited {}s", srv.seconds);
    assert_eq!(
        fs::read_to_string(s.snap("recent.0").join("f")).unwrap(),
        "one"
    );
    assert_eq!(
        rotate(&s.cfg, "recent").unwrap().servers[ID].action,
        "synced"
    );
    assert_eq!(
        fs::read_to_string(s.snap("recent.0").join("f")).unwrap(),
        "two!"
    );
}

#[test]
fn no_room_means_a_refusal_not_a_broken_history() {
    if !root() {
        return;
    }
    let s = Site::new();
    s.pushed(1, &[("f", "one", 0o644)]);
    assert_eq!(rotate(&s.cfg, "recent").unwrap().result, "ok");
    s.pushed(2, &[("f", "two", 0o644)]);
    // A receipt that says the new push brought more than the disk has free.
    let receipt = serde_json::json!({"started": 1.0, "finished": 2.0, "dest": "data", "exit": 0,
        "files": 1, "bytes": u64::MAX / 4, "seq": 2});
    fs::write(s.jail().join("receipts.jsonl"), format!("{receipt}\n")).unwrap();
    let rec = rotate(&s.cfg, "recent").unwrap();
    let srv = &rec.servers[ID];
    assert_eq!(srv.action, "refused", "{srv:?}");
    assert!(srv.reason.as_deref().unwrap().contains("too full"));
    assert_eq!(rec.result, "partial");
    assert_eq!(
        fs::read_to_string(s.snap("recent.0").join("f")).unwrap(),
        "one"
    );
}

/// History on a filesystem of its own (a tmpfs with few inodes, mounted by
/// the test): when not even the previous snapshots fit, nothing is rotated.
#[test]
fn a_full_history_filesystem_rotates_nothing() {
    if !root() {
        return;
    }
    let mut s = Site::new();
    s.cfg.reserve.min_free_bytes = 0;
    s.cfg.reserve.min_free_percent = 0.0;
    s.cfg.reserve.min_free_inodes_percent = 0.0;
    let history = s.base.join("history");
    let mount = |opts: &str| {
        assert!(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", opts, "snaptest"])
                .arg(&history)
                .status()
                .unwrap()
                .success()
        )
    };
    mount("size=8m,nr_inodes=40,mode=0700");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(history.clone());
    let files: Vec<(String, String, u32)> = (0..12)
        .map(|i| (format!("d{i}/f"), format!("{i}"), 0o644))
        .collect();
    let refs: Vec<(&str, &str, u32)> = files
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
        .collect();
    s.pushed(1, &refs);
    let rec = rotate(&s.cfg, "recent").unwrap();
    assert_eq!(rec.result, "ok", "{rec:?}");
    let before: Vec<_> = fs::read_dir(&history)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let rec = rotate(&s.cfg, "recent").unwrap();
    assert_eq!(rec.result, "refused", "{rec:?}");
    assert!(
        rec.error
            .as_deref()
            .unwrap()
            .contains("history is as it was"),
        "{rec:?}"
    );
    let after: Vec<_> = fs::read_dir(&history)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);
    assert!(!history.join(".sync").exists());
    assert_eq!(
        fs::read_to_string(s.snap("recent.0").join("d3/f")).unwrap(),
        "3"
    );
}
