//! Read-only off-site credentials for a fresh machine, sealed under a
//! passphrase (`pack-creds`), opened only in memory at restore (`--creds`).
//!
//! The pack is an age file (rage's library: scrypt passphrase recipient,
//! ChaCha20-Poly1305 STREAM), ASCII-armored so it travels on paper or in a
//! mail. `age -d` opens it too. Inside: JSON with the access key, the target
//! settings (bucket, region, endpoint, prefix) and a note.
//!
//! At restore the credentials never touch a file system: they are handed to
//! the AWS SDK's profile provider as a credentials "file" that is a memfd
//! (anonymous memory, `/proc/self/fd/N`, close-on-exec), alive only as long
//! as the [`Offsite`] that uses it.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};
use snap_core::{Error, ErrorKind, Result};
use snap_offsite::{ArchiveTarget, TargetSettings};
use zeroize::{Zeroize, Zeroizing};

pub const CREDS_FORMAT: &str = "snap-creds/1";
const PROFILE: &str = "snap-restore";

/// What a credentials pack holds.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Creds {
    pub format: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
    /// Off-site target settings (bucket, region, endpoint_url, kind...),
    /// without profile or credentials file.
    pub target: serde_json::Value,
    /// Key prefix of the archives (e.g. `snap/backup1`), if known.
    #[serde(default)]
    pub prefix: Option<String>,
    pub created: String,
    #[serde(default)]
    pub note: Option<String>,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Drop for Creds {
    fn drop(&mut self) {
        self.secret_access_key.zeroize();
        if let Some(t) = &mut self.session_token {
            t.zeroize();
        }
    }
}

impl Creds {
    pub fn new(
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        target: serde_json::Value,
        prefix: Option<String>,
        note: Option<String>,
    ) -> Result<Creds> {
        let c = Creds {
            format: CREDS_FORMAT.into(),
            access_key_id,
            secret_access_key,
            session_token,
            target,
            prefix,
            created: snap_core::record::now(),
            note,
        };
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        if self.format != CREDS_FORMAT {
            return Err(Error::invalid_input(format!(
                "credentials pack has format {:?}, this snap reads {CREDS_FORMAT:?}",
                self.format
            )));
        }
        if self.access_key_id.trim().is_empty() || self.secret_access_key.trim().is_empty() {
            return Err(Error::invalid_input(
                "credentials pack: access key id and secret are required",
            ));
        }
        let bad = |s: &str| s.contains(['\n', '\r', '[', ']']);
        if bad(&self.access_key_id)
            || bad(&self.secret_access_key)
            || self.session_token.as_deref().is_some_and(bad)
        {
            return Err(Error::invalid_input(
                "credentials pack: a credential contains a line break or bracket",
            ));
        }
        let settings = TargetSettings::from_value(self.target.clone())?;
        if settings.profile.is_some()
            || settings.credentials_file.is_some()
            || settings.config_file.is_some()
        {
            return Err(Error::invalid_input(
                "credentials pack: the target settings must not name a profile or credentials/config file",
            ));
        }
        settings.to_config()?;
        Ok(())
    }

    /// The target settings with the in-memory credentials as their profile.
    fn settings_with(
        &self,
        mem: &MemFile,
        overrides: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        let mut v = self.target.clone();
        if let (Some(map), Some(extra)) = (v.as_object_mut(), overrides.as_object()) {
            for (k, val) in extra {
                if !val.is_null() {
                    map.insert(k.clone(), val.clone());
                }
            }
            map.insert("profile".into(), PROFILE.into());
            map.insert(
                "credentials_file".into(),
                mem.path.display().to_string().into(),
            );
        }
        Ok(v)
    }
}

fn passphrase_of(p: &[u8]) -> Result<SecretString> {
    let s = std::str::from_utf8(p)
        .map_err(|_| Error::invalid_input("the passphrase must be UTF-8 text"))?
        .trim_end_matches(['\n', '\r']);
    if s.is_empty() {
        return Err(Error::invalid_input("the passphrase is empty"));
    }
    Ok(SecretString::from(s.to_string()))
}

/// Seal `creds` under `passphrase` (armored age, scrypt). `work_factor`:
/// log2 of scrypt's N (default: what age picks for about a second here).
pub fn seal(creds: &Creds, passphrase: &[u8], work_factor: Option<u8>) -> Result<Vec<u8>> {
    creds.check()?;
    let json = Zeroizing::new(
        serde_json::to_vec_pretty(creds)
            .map_err(|e| Error::internal(format!("encoding credentials: {e}")))?,
    );
    let mut recipient = age::scrypt::Recipient::new(passphrase_of(passphrase)?);
    if let Some(wf) = work_factor {
        recipient.set_work_factor(wf);
    }
    let enc = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .map_err(|e| Error::internal(format!("age: {e}")))?;
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| Error::io("sealing credentials", e))?;
    let mut w = enc
        .wrap_output(armor)
        .map_err(|e| Error::io("sealing credentials", e))?;
    w.write_all(&json)
        .map_err(|e| Error::io("sealing credentials", e))?;
    w.finish()
        .and_then(|a| a.finish())
        .map_err(|e| Error::io("sealing credentials", e))?;
    Ok(out)
}

/// Open a sealed pack with its passphrase (in memory only).
pub fn open(sealed: &[u8], passphrase: &[u8], label: &str) -> Result<Creds> {
    let reader = age::armor::ArmoredReader::new(sealed);
    let dec = age::Decryptor::new(reader).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{label} is not a snap credentials pack (age file): {e}"),
        )
    })?;
    if !dec.is_scrypt() {
        return Err(Error::invalid_input(format!(
            "{label} is an age file, but not sealed with a passphrase"
        )));
    }
    let identity = age::scrypt::Identity::new(passphrase_of(passphrase)?);
    let mut r = dec
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                Error::invalid_key(format!("{label}: wrong passphrase (or the pack was changed)"))
            }
            age::DecryptError::ExcessiveWork { required, .. } => Error::invalid_input(format!(
                "{label}: sealed with scrypt work factor {required}, more than this machine is allowed to spend"
            )),
            other => Error::new(ErrorKind::Integrity, format!("{label}: {other}")),
        })?;
    let mut json = Zeroizing::new(Vec::new());
    r.read_to_end(&mut json).map_err(|e| {
        Error::new(
            ErrorKind::Integrity,
            format!("{label}: damaged credentials pack: {e}"),
        )
    })?;
    let creds: Creds = serde_json::from_slice(&json)
        .map_err(|e| Error::invalid_input(format!("{label}: not snap credentials: {e}")))?;
    creds.check()?;
    Ok(creds)
}

/// An anonymous in-memory file (memfd), readable by this process as
/// `/proc/self/fd/N` while it lives.
pub struct MemFile {
    _fd: OwnedFd,
    pub path: PathBuf,
}

impl MemFile {
    pub fn new(name: &str, content: &[u8]) -> Result<MemFile> {
        let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| Error::io("creating an in-memory credentials file", e.into()))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(content)
            .map_err(|e| Error::io("writing the in-memory credentials file", e))?;
        let fd = OwnedFd::from(f);
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        Ok(MemFile { _fd: fd, path })
    }
}

/// An open off-site target and whatever must live as long as it.
pub struct Offsite {
    pub target: Box<dyn ArchiveTarget>,
    pub prefix: Option<String>,
    _creds: Option<MemFile>,
}

/// Open the target `settings` names; with `creds`, its settings are the
/// base (`settings` override them) and its keys are the credentials.
pub fn open_offsite(settings: &serde_json::Value, creds: Option<&Creds>) -> Result<Offsite> {
    let (value, mem, prefix) = match creds {
        Some(c) => {
            let mut ini = Zeroizing::new(format!(
                "[{PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                c.access_key_id, c.secret_access_key
            ));
            if let Some(t) = &c.session_token {
                ini.push_str(&format!("aws_session_token = {t}\n"));
            }
            let mem = MemFile::new("snap-restore-credentials", ini.as_bytes())?;
            (
                c.settings_with(&mem, settings)?,
                Some(mem),
                c.prefix.clone(),
            )
        }
        None => (settings.clone(), None, None),
    };
    let cfg = TargetSettings::from_value(value)?.to_config()?;
    let target = snap_offsite::open_target(&cfg)?;
    Ok(Offsite {
        target,
        prefix,
        _creds: mem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Creds {
        Creds::new(
            "AKIAEXAMPLE".into(),
            "s3cr3t/key+value".into(),
            None,
            serde_json::json!({"bucket": "b", "region": "us-east-1"}),
            Some("snap/backup1".into()),
            None,
        )
        .unwrap()
    }

    #[test]
    fn seal_and_open_round_trip_and_wrong_passphrase_is_refused() {
        let sealed = seal(&sample(), b"correct horse\n", Some(10)).unwrap();
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert!(!text.contains("s3cr3t") && !text.contains("AKIAEXAMPLE"));
        let back = open(&sealed, b"correct horse", "pack").unwrap();
        assert_eq!(back.secret_access_key, "s3cr3t/key+value");
        assert_eq!(back.prefix.as_deref(), Some("snap/backup1"));
        let e = open(&sealed, b"wrong", "pack").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidKey);
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        let mut bent = sealed.clone();
        let n = bent.len();
        bent[n / 2] ^= 1;
        assert!(open(&bent, b"correct horse", "pack").is_err());
    }

    #[test]
    fn profiles_and_files_are_not_packed() {
        let e = Creds::new(
            "a".into(),
            "b".into(),
            None,
            serde_json::json!({"bucket": "b", "profile": "admin"}),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("profile"), "{e}");
        assert!(
            Creds::new(
                "a\n[x]".into(),
                "b".into(),
                None,
                serde_json::json!({"bucket": "b"}),
                None,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn memfile_is_readable_by_path_and_gone_after() {
        let path;
        {
            let m = MemFile::new("t", b"[p]\nx = 1\n").unwrap();
            path = m.path.clone();
            assert_eq!(std::fs::read(&path).unwrap(), b"[p]\nx = 1\n");
            let target = std::fs::read_link(&path).unwrap();
            assert!(
                target.to_string_lossy().starts_with("/memfd:"),
                "{target:?}"
            );
        }
        assert!(
            std::fs::read(&path)
                .map(|b| b != b"[p]\nx = 1\n")
                .unwrap_or(true)
        );
    }
}
