//! Per-server SSH keys: generation, and strict parsing of public keys.
//!
//! A public key travels from a minion through the Salt mine to the backup
//! server, where it ends up in an `authorized_keys` line that snap writes.
//! A compromised minion controls that text, so [`parse_public_key`] accepts
//! exactly one bare key (`type base64 [comment]`) and nothing else: no
//! options, no second line, no private key, no truncated blob, no unknown or
//! weak algorithm. Callers rebuild the line from the parsed parts.

use std::fs;
use std::path::{Path, PathBuf};

use ssh_key::public::KeyData;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::error::{Error, ErrorKind, Result};
use crate::record::write_new;

/// Key types snap accepts from servers.
pub const ACCEPTED_TYPES: &[&str] = &[
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
];
/// Smallest RSA modulus accepted.
pub const MIN_RSA_BITS: usize = 3072;
/// Longest public key text accepted (an RSA-16384 key is about 2.8 KiB).
pub const MAX_KEY_TEXT: usize = 8192;

/// A validated public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// Algorithm name, e.g. `ssh-ed25519`.
    pub key_type: String,
    /// Base64 of the key blob, canonical.
    pub key: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The comment, possibly empty (printable ASCII only).
    pub comment: String,
    /// Key size in bits (256 for Ed25519, the modulus for RSA).
    pub bits: usize,
}

impl ParsedKey {
    /// The bare `type base64` line (no comment) for `authorized_keys`.
    pub fn bare(&self) -> String {
        format!("{} {}", self.key_type, self.key)
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid_key(msg)
}

/// Parse exactly one bare OpenSSH public key.
pub fn parse_public_key(text: &str) -> Result<ParsedKey> {
    if text.len() > MAX_KEY_TEXT {
        return Err(bad(format!(
            "public key text is {} bytes, more than {MAX_KEY_TEXT}: not a single public key",
            text.len()
        )));
    }
    if text.contains('\0') {
        return Err(bad("public key text contains a NUL byte"));
    }
    if text.contains("PRIVATE KEY") || text.trim_start().starts_with("-----BEGIN") {
        return Err(Error::new(
            ErrorKind::SecretKeyMaterial,
            "this is a private key, not a public key: never publish or copy private keys",
        ));
    }
    // One line: a single trailing newline (\n or \r\n) is tolerated, nothing else.
    let line = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if line.contains(['\n', '\r']) {
        return Err(bad(
            "public key text has more than one line: exactly one key is allowed",
        ));
    }
    if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(bad(format!(
            "public key text contains control character {c:?}"
        )));
    }
    let mut parts = line.trim().splitn(3, [' ', '\t']);
    let key_type = parts.next().unwrap_or_default();
    let blob = parts.next().map(str::trim).unwrap_or_default();
    let comment = parts.next().map(str::trim).unwrap_or_default().to_string();
    if key_type.is_empty() {
        return Err(bad("public key text is empty"));
    }
    if !ACCEPTED_TYPES.contains(&key_type) {
        if key_type.contains(['=', ',', '"']) || ACCEPTED_TYPES.contains(&blob) {
            return Err(bad(format!(
                "public key starts with options ({}...): options are not allowed, snap sets its own",
                key_type.chars().take(24).collect::<String>()
            )));
        }
        return Err(bad(format!(
            "unknown or unsupported key type {:?} (accepted: {})",
            key_type.chars().take(48).collect::<String>(),
            ACCEPTED_TYPES.join(", ")
        )));
    }
    if blob.is_empty() {
        return Err(bad(format!("{key_type} key has no key data")));
    }
    if !comment.is_ascii() {
        return Err(bad("public key comment must be printable ASCII"));
    }
    if ACCEPTED_TYPES.iter().any(|t| comment.contains(t)) {
        return Err(bad(
            "public key text holds more than one key: exactly one is allowed",
        ));
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {blob}"))
        .map_err(|e| bad(format!("{key_type} key data is not valid: {e}")))?;
    let algorithm = key.algorithm();
    if algorithm.as_str() != key_type {
        return Err(bad(format!(
            "key type says {key_type} but the key data is {}",
            algorithm.as_str()
        )));
    }
    let bits = match key.key_data() {
        KeyData::Rsa(rsa) => {
            let n = rsa.n.as_positive_bytes().unwrap_or_default();
            let lead = n.first().map_or(0, |b| 8 - b.leading_zeros() as usize);
            let bits = if n.is_empty() {
                0
            } else {
                (n.len() - 1) * 8 + lead
            };
            if bits < MIN_RSA_BITS {
                return Err(bad(format!(
                    "RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
                )));
            }
            bits
        }
        KeyData::Ecdsa(ec) => match ec.curve() {
            ssh_key::EcdsaCurve::NistP256 => 256,
            ssh_key::EcdsaCurve::NistP384 => 384,
            ssh_key::EcdsaCurve::NistP521 => 521,
        },
        KeyData::SkEcdsaSha2NistP256(_) => 256,
        _ => 256,
    };
    // Canonical re-encoding: refuses trailing garbage inside the base64 blob.
    let canonical = key
        .to_openssh()
        .map_err(|e| bad(format!("cannot encode {key_type} key: {e}")))?;
    let canonical_blob = canonical.split(' ').nth(1).unwrap_or_default().to_string();
    if canonical_blob != blob {
        return Err(bad(format!(
            "{key_type} key data has trailing or non-canonical bytes"
        )));
    }
    Ok(ParsedKey {
        key_type: key_type.to_string(),
        key: canonical_blob,
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        comment,
        bits,
    })
}

/// The `.pub` path next to a private key path.
pub fn public_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Generate an Ed25519 key pair at `path` (private, 0600) and `path.pub`
/// (public, 0644). Never overwrites: if either file exists, fails with
/// [`ErrorKind::AlreadyExists`]. Returns the SHA256 fingerprint.
pub fn generate_keypair(path: &Path, comment: &str) -> Result<String> {
    let public = public_path(path);
    for p in [path, public.as_path()] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} already exists; snap never overwrites a key",
                    p.display()
                ),
            ));
        }
    }
    if comment.chars().any(|c| c.is_control()) || !comment.is_ascii() {
        return Err(Error::invalid_input(format!(
            "key comment {comment:?} must be printable ASCII"
        )));
    }
    let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .map_err(|e| Error::internal(format!("generating an Ed25519 key: {e}")))?;
    key.set_comment(comment);
    let private_text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| Error::internal(format!("encoding the private key: {e}")))?;
    let public_text = key
        .public_key()
        .to_openssh()
        .map_err(|e| Error::internal(format!("encoding the public key: {e}")))?;
    write_new(path, private_text.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, format!("{public_text}\n").as_bytes(), 0o644) {
        // Do not leave half a pair behind.
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(key.fingerprint(HashAlg::Sha256).to_string())
}

/// Read the private key at `path` and return its public half, parsed.
/// Fails if the key is encrypted with a passphrase (server keys are not).
pub fn public_from_private(path: &Path) -> Result<ParsedKey> {
    let text = fs::read_to_string(path).map_err(|e| Error::io_path("reading", path, e))?;
    let key = PrivateKey::from_openssh(&text).map_err(|e| {
        bad(format!(
            "{} is not an OpenSSH private key: {e}",
            path.display()
        ))
    })?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| Error::internal(format!("encoding the public key: {e}")))?;
    parse_public_key(&public)
}

/// Write `path.pub` from the private key at `path` (when the public half was
/// lost). Never overwrites. Returns the parsed public key.
pub fn restore_public(path: &Path) -> Result<ParsedKey> {
    let parsed = public_from_private(path)?;
    let line = format!("{} {}\n", parsed.bare(), parsed.comment);
    let line = line.replace(" \n", "\n");
    write_new(&public_path(path), line.as_bytes(), 0o644)?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl web1";

    #[test]
    fn accepts_one_bare_key() {
        let k = parse_public_key(ED).unwrap();
        assert_eq!(k.key_type, "ssh-ed25519");
        assert_eq!(k.comment, "web1");
        assert!(k.fingerprint.starts_with("SHA256:"));
        assert_eq!(k.bits, 256);
        assert_eq!(parse_public_key(&format!("{ED}\n")).unwrap(), k);
    }

    fn refuse(text: &str) -> Error {
        match parse_public_key(text) {
            Ok(k) => panic!("accepted {text:?} as {k:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn refuses_everything_else() {
        let blob = ED.split(' ').nth(1).unwrap();
        let cases = [
            format!("command=\"/bin/sh\" {ED}"),
            format!("restrict,pty {ED}"),
            format!("no-pty {ED}"),
            format!("{ED}\n{ED}"),
            format!("{ED}\n\n"),
            format!("{ED} ssh-ed25519 {blob}"),
            format!("ssh-ed25519 {blob}\0"),
            format!("ssh-ed25519 {}", &blob[..blob.len() - 8]),
            format!("ssh-ed25519 {blob}AAAA"),
            format!("ssh-dss {blob}"),
            format!("ssh-rsa {blob}"),
            format!("ssh-ed25519-cert-v01@openssh.com {blob}"),
            "ssh-ed25519".to_string(),
            "".to_string(),
            "ssh-ed25519 !!!notbase64!!!".to_string(),
            format!("ssh-ed25519 {blob} caf\u{e9}"),
            format!("ssh-ed25519 {blob} a\u{1b}[2Jb"),
        ];
        for case in cases {
            let e = refuse(&case);
            assert_eq!(e.kind(), ErrorKind::InvalidKey, "{case:?}: {e}");
        }
        let e = refuse(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        );
        assert_eq!(e.kind(), ErrorKind::SecretKeyMaterial);
    }

    fn have_ssh_keygen() -> bool {
        Command::new("ssh-keygen").arg("-?").output().is_ok()
    }

    #[test]
    fn rsa_size_limit_against_ssh_keygen() {
        if !have_ssh_keygen() {
            panic!("ssh-keygen is required for this test (openssh-client)");
        }
        let dir = tempfile::tempdir().unwrap();
        for (bits, ok) in [(2048, false), (3072, true)] {
            let p = dir.path().join(format!("rsa{bits}"));
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "rsa", "-b", &bits.to_string(), "-N", "", "-f"])
                .arg(&p)
                .status()
                .unwrap();
            assert!(st.success());
            let text = fs::read_to_string(public_path(&p)).unwrap();
            match parse_public_key(&text) {
                Ok(k) => {
                    assert!(ok, "{bits}-bit RSA accepted");
                    assert_eq!(k.bits, bits);
                }
                Err(e) => {
                    assert!(!ok, "{bits}-bit RSA refused: {e}");
                    assert!(e.to_string().contains(&format!("{bits} bits")), "{e}");
                }
            }
        }
    }

    #[test]
    fn generated_pair_matches_ssh_keygen_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id_snap");
        let fp = generate_keypair(&p, "snap@web1").unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let pubmeta = fs::metadata(public_path(&p)).unwrap();
        assert_eq!(pubmeta.permissions().mode() & 0o777, 0o644);
        // ssh-keygen agrees on the fingerprint, from both halves.
        for f in [p.clone(), public_path(&p)] {
            let out = Command::new("ssh-keygen")
                .arg("-lf")
                .arg(&f)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.starts_with(&format!("256 {fp} ")), "{text} vs {fp}");
            assert!(text.trim_end().ends_with("(ED25519)"));
        }
        // ssh-keygen derives the same public key from our private key.
        let out = Command::new("ssh-keygen")
            .arg("-yf")
            .arg(&p)
            .output()
            .unwrap();
        let derived = parse_public_key(&String::from_utf8(out.stdout).unwrap()).unwrap();
        let ours = parse_public_key(&fs::read_to_string(public_path(&p)).unwrap()).unwrap();
        assert_eq!(derived.key, ours.key);
        assert_eq!(ours.fingerprint, fp);
        // Never overwrite.
        let before = fs::read(&p).unwrap();
        let e = generate_keypair(&p, "x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), before);
        // Lost public half is rebuilt from the private key, unchanged.
        fs::remove_file(public_path(&p)).unwrap();
        assert!(generate_keypair(&p, "x").is_err());
        assert_eq!(restore_public(&p).unwrap().key, ours.key);
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
