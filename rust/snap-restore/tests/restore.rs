//! Against the real tools: a server tree pushed the way snap pushes it
//! (rsync with `--fake-super` on the receiving side only, as the jail's
//! unprivileged receiver does), packed by snap-pack, encrypted by snap-crypt
//! to a key GnuPG made; restored by snap-restore and compared with the
//! source by `stat`, `getfacl`, `getfattr` and content. Runs as root.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use snap_core::{ErrorKind, Progress};
use snap_restore::{Output, Pick, Selection, restore_file, restore_from_history};

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The source tree: every kind of entry, owners, modes, an ACL (access and
/// default), a file capability, user xattrs, hard links, odd names.
fn make_source(src: &Path) {
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::create_dir_all(src.join("shared")).unwrap();
    fs::create_dir_all(src.join("dev")).unwrap();
    fs::write(src.join("etc/config"), b"[main]\n").unwrap();
    run(Command::new("setfacl")
        .args(["-m", "u:1234:r,g:50:rw"])
        .arg(src.join("etc/config")));
    run(Command::new("setfacl")
        .args(["-d", "-m", "u:1234:rx"])
        .arg(src.join("shared")));
    fs::write(src.join("etc/secret"), b"s3cr3t\n").unwrap();
    std::os::unix::fs::chown(src.join("etc/secret"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(src.join("etc/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(src.join("ping"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("ping"), fs::Permissions::from_mode(0o4755)).unwrap();
    run(Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(src.join("ping")));
    xattr::set(src.join("etc/config"), "user.note", b"\x00\xffbinary").unwrap();
    fs::write(src.join("hard1"), b"linked").unwrap();
    fs::hard_link(src.join("hard1"), src.join("etc/hard2")).unwrap();
    symlink("../etc/config", src.join("shared/link")).unwrap();
    run(Command::new("mknod")
        .arg(src.join("dev/loop9"))
        .args(["b", "7", "9"]));
    run(Command::new("mkfifo").arg(src.join("dev/fifo")));
    fs::write(src.join(std::ffi::OsStr::new("caf\u{e9}.txt")), b"utf8").unwrap();
    use std::os::unix::ffi::OsStrExt;
    fs::write(
        src.join(std::ffi::OsStr::from_bytes(b"latin\xe9")),
        b"latin-1",
    )
    .unwrap();
}

/// `history/<snap>/<server>/` as snap's jail and rsnapshot store it.
fn push(src: &Path, dest: &Path, tmp: &Path) {
    fs::create_dir_all(dest).unwrap();
    let rsh = tmp.join("rsh.sh");
    fs::write(&rsh, "#!/bin/sh\nshift\nexec \"$@\"\n").unwrap();
    fs::set_permissions(&rsh, fs::Permissions::from_mode(0o755)).unwrap();
    run(Command::new("rsync")
        .args(["-aHAXS", "--numeric-ids", "-M--fake-super", "-e"])
        .arg(&rsh)
        .arg(format!("{}/", src.display()))
        .arg(format!("x:{}/", dest.display())));
}

fn facl(p: &Path) -> String {
    String::from_utf8(
        run(Command::new("getfacl")
            .args(["-n", "-p", "--omit-header"])
            .arg(p))
        .stdout,
    )
    .unwrap()
}

fn caps(p: &Path) -> String {
    String::from_utf8(run(Command::new("getcap").arg(p)).stdout)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap_or("")
        .to_string()
}

/// Compare a restored tree with the source, entry by entry.
fn assert_same(src: &Path, got: &Path) {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (a, b) = (src.join(&rel), got.join(&rel));
        let (ma, mb) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap_or_else(|e| panic!("{}: {e}", b.display())),
        );
        assert_eq!(ma.mode(), mb.mode(), "mode of {}", rel.display());
        assert_eq!(
            (ma.uid(), ma.gid()),
            (mb.uid(), mb.gid()),
            "owner of {}",
            rel.display()
        );
        assert_eq!(ma.rdev(), mb.rdev(), "device of {}", rel.display());
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&a).unwrap(), fs::read_link(&b).unwrap());
            continue;
        }
        if !ma.is_dir() {
            assert_eq!(ma.mtime(), mb.mtime(), "mtime of {}", rel.display());
        }
        if ma.is_file() {
            assert_eq!(
                fs::read(&a).unwrap(),
                fs::read(&b).unwrap(),
                "content of {}",
                rel.display()
            );
            assert_eq!(caps(&a), caps(&b), "capabilities of {}", rel.display());
        }
        if !ma.file_type().is_block_device() && !ma.file_type().is_fifo() {
            assert_eq!(facl(&a), facl(&b), "ACL of {}", rel.display());
            let names = |p: &Path| {
                let mut v: Vec<_> = xattr::list(p)
                    .unwrap()
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            };
            assert_eq!(names(&a), names(&b), "xattrs of {}", rel.display());
        }
        if ma.is_dir() {
            for e in fs::read_dir(&a).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
    }
    // Hard links came back as one inode.
    let (h1, h2) = (
        fs::metadata(got.join("hard1")).unwrap(),
        fs::metadata(got.join("etc/hard2")).unwrap(),
    );
    assert_eq!(h1.ino(), h2.ino());
}

struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    src: PathBuf,
    history: PathBuf,
}

fn site() -> Site {
    let tmp = tempfile::Builder::new()
        .prefix("snap-restore-test.")
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = tmp.path().to_path_buf();
    let src = root.join("src");
    make_source(&src);
    let history = root.join("history");
    push(&src, &history.join("recent.0/db1"), &root);
    Site {
        _tmp: tmp,
        root,
        src,
        history,
    }
}

#[test]
fn whole_server_and_one_file_from_history_come_back_as_the_server_had_them() {
    let s = site();
    // What history holds is only plain files and xattrs.
    assert!(
        fs::symlink_metadata(s.history.join("recent.0/db1/dev/loop9"))
            .unwrap()
            .is_file()
    );
    let dest = s.root.join("restored");
    let pick = Pick::new("recent.0", "db1", b"/").unwrap();
    let rep = restore_from_history(&s.history, &pick, &dest, false, None, None).unwrap();
    assert!(rep.extract.rsync_meta.acls >= 2, "{rep:?}");
    assert_same(&s.src, &dest);
    // One file, parents included, into an existing directory.
    let one = s.root.join("one");
    fs::create_dir(&one).unwrap();
    let pick = Pick::new("recent.0", "db1", b"/etc/secret").unwrap();
    restore_from_history(&s.history, &pick, &one, false, None, None).unwrap();
    let m = fs::metadata(one.join("etc/secret")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o600));
    assert_eq!(
        fs::metadata(one.join("etc")).unwrap().mode(),
        fs::metadata(s.src.join("etc")).unwrap().mode()
    );
    // Again: a conflict, nothing changed.
    let e = restore_from_history(&s.history, &pick, &one, false, None, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let left: Vec<_> = fs::read_dir(&s.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !left
            .iter()
            .any(|n| n.to_string_lossy().starts_with(".snap-restore")),
        "{left:?}"
    );
}

struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("snap-restore-gnupg.")
            .tempdir()
            .unwrap();
        fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let g = Gpg { home };
        g.run(&[
            "--quick-gen-key",
            "restore test <t@snap.invalid>",
            "future-default",
            "default",
            "never",
        ]);
        g
    }
    fn run(&self, args: &[&str]) -> Vec<u8> {
        run(Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args))
        .stdout
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

#[test]
fn from_file_restores_a_selection_and_a_tampered_archive_writes_nothing() {
    let s = site();
    let gpg = Gpg::new();
    let public = gpg.run(&["--armor", "--export"]);
    let secret = gpg.run(&["--export-secret-keys"]);
    let image = s.root.join("history.sqfs");
    snap_pack::pack(
        &s.history,
        &image,
        &snap_pack::PackOptions::default(),
        &Progress::silent("t"),
    )
    .unwrap();
    let archive = s.root.join("archive.sqfs.gpg");
    let rcpt = snap_crypt::load_recipients(&[snap_crypt::KeySource::new("pub", public)]).unwrap();
    snap_crypt::encrypt_file(&image, &archive, &rcpt, &Progress::silent("t")).unwrap();
    let key = snap_crypt::SecretKeySource::new("secret", secret);
    let work = s.root.join("work");
    // Binary secret key, one server as the destination's root.
    let dest = s.root.join("from-file");
    let sel = Selection::server("recent.0", "db1", &[]).unwrap();
    let rep = restore_file(&archive, None, &key, out(&sel, &dest), &work, None).unwrap();
    assert!(
        rep.checks.mdc && rep.checks.ciphertext_sha256.is_none(),
        "no manifest: MDC only"
    );
    assert_same(&s.src, &dest);
    // Flip one byte in the middle: MDC fails, nothing appears.
    let mut bytes = fs::read(&archive).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 1;
    let bent = s.root.join("bent.sqfs.gpg");
    fs::write(&bent, &bytes).unwrap();
    let dest2 = s.root.join("never");
    let e = restore_file(&bent, None, &key, out(&sel, &dest2), &work, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(!dest2.exists());
    assert!(
        !work.exists() || fs::read_dir(&work).unwrap().next().is_none(),
        "work left behind"
    );
    // Truncated: the same.
    fs::write(&bent, &fs::read(&archive).unwrap()[..n]).unwrap();
    let e = restore_file(&bent, None, &key, out(&sel, &dest2), &work, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(!dest2.exists());
    // A public key only: refused before anything is read.
    let only_public = snap_crypt::SecretKeySource::new("pub", gpg.run(&["--export"]));
    let e = restore_file(&archive, None, &only_public, out(&sel, &dest2), &work, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidKey);
    assert!(!dest2.exists());
}

fn out<'a>(selection: &'a Selection, dest: &'a Path) -> Output<'a> {
    Output {
        selection,
        dest,
        overwrite: false,
    }
}
