//! Test helpers: real GnuPG (/usr/bin/gpg) in temporary homes.
//!
//! Keys are generated once per test binary by GnuPG itself in a throw-away
//! home (whose agent is killed and directory removed right after), exported,
//! and imported by each test into its own temporary GNUPGHOME, whose agent is
//! killed when the test's `GpgHome` is dropped.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

pub const PASSPHRASE: &str = "correct horse battery staple";

/// A temporary GNUPGHOME; its gpg-agent is killed and the directory removed on drop.
pub struct GpgHome {
    dir: tempfile::TempDir,
}

impl GpgHome {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("snap-crypt-gnupg.")
            .tempdir()
            .expect("temp GNUPGHOME");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        GpgHome { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A file path inside the home (handy scratch space that is cleaned up).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("/usr/bin/gpg");
        c.env("GNUPGHOME", self.path())
            .args(["--batch", "--no-tty", "--quiet", "--yes"])
            .args(["--pinentry-mode", "loopback", "--trust-model", "always"])
            .stdin(Stdio::null());
        c
    }

    /// Run gpg with `args`; panic with its stderr unless it succeeds.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().expect("run gpg");
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run gpg with `args` and `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gpg");
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("gpg output");
        feeder.join().unwrap();
        out
    }

    pub fn import(&self, key: &[u8]) {
        let out = self.run_stdin(&["--import"], key);
        assert!(
            out.status.success(),
            "gpg --import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.path())
            .args(["--kill", "all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One generated key, exported in every shape the tests need.
pub struct TestKey {
    pub fingerprint: String,
    /// Key id of the encryption subkey.
    pub enc_key_id: String,
    pub public_armored: Vec<u8>,
    pub public_binary: Vec<u8>,
    pub secret_armored: Vec<u8>,
    pub secret_binary: Vec<u8>,
    /// `--export-secret-subkeys`: primary as a stub, secret subkeys.
    pub secret_subkeys_armored: Vec<u8>,
}

pub struct Keys {
    pub rsa: TestKey,
    pub ed: TestKey,
    /// cv25519 key protected by [`PASSPHRASE`].
    pub protected: TestKey,
    /// RSA 2048 (too weak for snap).
    pub rsa2048: TestKey,
    /// Signing-only ed25519 key (no encryption subkey).
    pub sign_only: TestKey,
    /// Expired (created with an expiry in the past is impossible, so: expires
    /// in 1 s and the fixture waits).
    pub expired: TestKey,
    /// Revoked with gpg's generated revocation certificate.
    pub revoked: TestKey,
    /// Two cv25519 encryption subkeys; `enc_key_id` is the older one.
    pub multi: TestKey,
}

fn colons_field(listing: &str, record: &str, n: usize) -> Vec<String> {
    listing
        .lines()
        .filter(|l| l.starts_with(&format!("{record}:")))
        .map(|l| l.split(':').nth(n).unwrap_or("").to_string())
        .collect()
}

fn gen_key(
    home: &GpgHome,
    uid: &str,
    primary: &str,
    sub: Option<&str>,
    pass: &str,
    expire: &str,
) -> String {
    home.run(&[
        "--passphrase",
        pass,
        "--quick-gen-key",
        uid,
        primary,
        "sign,cert",
        expire,
    ]);
    let listing =
        String::from_utf8(home.run(&["--with-colons", "--list-keys", uid]).stdout).unwrap();
    let fpr = colons_field(&listing, "fpr", 9)[0].clone();
    if let Some(sub) = sub {
        home.run(&[
            "--passphrase",
            pass,
            "--quick-add-key",
            &fpr,
            sub,
            "encr",
            expire,
        ]);
    }
    fpr
}

fn export(home: &GpgHome, fpr: &str, pass: &str) -> TestKey {
    let listing =
        String::from_utf8(home.run(&["--with-colons", "--list-keys", fpr]).stdout).unwrap();
    let sub_ids = colons_field(&listing, "sub", 4);
    let pw = ["--passphrase", pass];
    TestKey {
        fingerprint: fpr.to_string(),
        enc_key_id: sub_ids.first().cloned().unwrap_or_default(),
        public_armored: home.run(&["--armor", "--export", fpr]).stdout,
        public_binary: home.run(&["--export", fpr]).stdout,
        secret_armored: home
            .run(&[&pw[..], &["--armor", "--export-secret-keys", fpr]].concat())
            .stdout,
        secret_binary: home
            .run(&[&pw[..], &["--export-secret-keys", fpr]].concat())
            .stdout,
        secret_subkeys_armored: home
            .run(&[&pw[..], &["--armor", "--export-secret-subkeys", fpr]].concat())
            .stdout,
    }
}

/// Keys generated by GnuPG once for this test binary.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let home = GpgHome::new();
        // Cheap passphrase protection on export (the agent calibrates ~100 ms
        // of native hashing; unoptimised test builds of rPGP take seconds).
        std::fs::write(home.file("gpg-agent.conf"), "s2k-count 65536\n").unwrap();
        // First, so that it has expired by the time everything else is made.
        let expired_at = std::time::Instant::now();
        let expired = gen_key(
            &home,
            "Snap Test Expired <exp@example.invalid>",
            "ed25519",
            Some("cv25519"),
            "",
            "seconds=1",
        );
        let rsa = gen_key(
            &home,
            "Snap Test RSA <rsa@example.invalid>",
            "rsa3072",
            Some("rsa3072"),
            "",
            "never",
        );
        let ed = gen_key(
            &home,
            "Snap Test Ed <ed@example.invalid>",
            "ed25519",
            Some("cv25519"),
            "",
            "never",
        );
        let protected = gen_key(
            &home,
            "Snap Test Protected <pw@example.invalid>",
            "ed25519",
            Some("cv25519"),
            PASSPHRASE,
            "never",
        );
        let rsa2048 = gen_key(
            &home,
            "Snap Test Weak <weak@example.invalid>",
            "rsa2048",
            Some("rsa2048"),
            "",
            "never",
        );
        let sign_only = gen_key(
            &home,
            "Snap Test SignOnly <so@example.invalid>",
            "ed25519",
            None,
            "",
            "never",
        );
        let revoked = gen_key(
            &home,
            "Snap Test Revoked <rev@example.invalid>",
            "ed25519",
            Some("cv25519"),
            "",
            "never",
        );
        // Revoke with the certificate gpg stored at generation (its ':' is escaped).
        let rev_path = home
            .path()
            .join("openpgp-revocs.d")
            .join(format!("{revoked}.rev"));
        let cert = std::fs::read_to_string(rev_path)
            .unwrap()
            .replace(":-----", "-----");
        home.import(cert.as_bytes());
        // Two encryption subkeys, the second one a second younger.
        let multi = gen_key(
            &home,
            "Snap Test Multi <multi@example.invalid>",
            "ed25519",
            Some("cv25519"),
            "",
            "never",
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
        home.run(&[
            "--passphrase",
            "",
            "--quick-add-key",
            &multi,
            "cv25519",
            "encr",
            "never",
        ]);
        let waited = expired_at.elapsed();
        if waited < std::time::Duration::from_millis(2100) {
            std::thread::sleep(std::time::Duration::from_millis(2100) - waited);
        }
        let keys = Keys {
            rsa: export(&home, &rsa, ""),
            ed: export(&home, &ed, ""),
            protected: export(&home, &protected, PASSPHRASE),
            rsa2048: export(&home, &rsa2048, ""),
            sign_only: export(&home, &sign_only, ""),
            expired: export(&home, &expired, ""),
            revoked: export(&home, &revoked, ""),
            multi: export(&home, &multi, ""),
        };
        drop(home);
        keys
    })
}

/// Deterministic incompressible test data.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `sha256sum FILE` as the coreutils tool prints it.
pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
