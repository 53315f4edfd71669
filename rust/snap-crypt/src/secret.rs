//! The secret key of a restore: where it came from, its passphrase or
//! prompt, and which of its component keys can decrypt a message.

use std::fmt;
use std::sync::Mutex;

use pgp::composed::{PublicOrSecret, SignedSecretKey};
use pgp::types::{KeyDetails, Password};
use snap_core::{Error, Result};
use zeroize::Zeroizing;

use crate::keys::{SecretState, hex_upper};
use crate::scan::scan;

type Prompt = dyn Fn(&str) -> Option<Zeroizing<Vec<u8>>> + Send + Sync;

/// The secret key for a restore: key bytes (armored or binary, one or more
/// keys) and how to get its passphrase. Held in memory only, wiped on drop.
///
/// A prompt is asked once: the passphrase it gave, once it unlocked the
/// key, is kept for every later message (a chain's link is one message per
/// piece), and threads decrypting at once wait for the one asking.
pub struct SecretKeySource {
    label: String,
    key: Zeroizing<Vec<u8>>,
    passphrase: Option<Zeroizing<Vec<u8>>>,
    prompt: Option<Box<Prompt>>,
    prompted: Mutex<Option<Zeroizing<Vec<u8>>>>,
}

impl SecretKeySource {
    /// `label` names where the key came from, for error messages.
    pub fn new(label: impl Into<String>, key: impl Into<Vec<u8>>) -> Self {
        SecretKeySource {
            label: label.into(),
            key: Zeroizing::new(key.into()),
            passphrase: None,
            prompt: None,
            prompted: Mutex::new(None),
        }
    }

    /// The passphrase of the secret key.
    pub fn with_passphrase(mut self, passphrase: impl Into<Vec<u8>>) -> Self {
        self.passphrase = Some(Zeroizing::new(passphrase.into()));
        self
    }

    /// Ask for the passphrase only if a protected key is needed. The closure gets
    /// a description of the key ("subkey 1234... of Alice <a@x>") and returns the
    /// passphrase, or `None` to give up.
    pub fn with_prompt(
        mut self,
        prompt: impl Fn(&str) -> Option<Zeroizing<Vec<u8>>> + Send + Sync + 'static,
    ) -> Self {
        self.prompt = Some(Box::new(prompt));
        self
    }

    /// Whether decrypting may ask its prompt (it has one, and no passphrase
    /// was given): callers decrypting several messages at once let one go
    /// first, so that a wrong answer fails before another thread asks.
    pub fn may_prompt(&self) -> bool {
        self.prompt.is_some() && self.passphrase.is_none()
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

impl fmt::Debug for SecretKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKeySource")
            .field("label", &self.label)
            .field("key", &"***")
            .field("passphrase", &self.passphrase.as_ref().map(|_| "***"))
            .field("prompt", &self.prompt.is_some())
            .finish()
    }
}

pub(crate) fn load_secret_keys(secret: &SecretKeySource) -> Result<Vec<SignedSecretKey>> {
    let label = &secret.label;
    let scanned = scan(label, &secret.key)?;
    let mut keys = Vec::new();
    for block in &scanned.blocks {
        let parsed = PublicOrSecret::from_bytes_many(&block[..])
            .map_err(|e| Error::invalid_key(format!("{label}: not an OpenPGP key: {e}")))?;
        for key in parsed {
            match key {
                Ok(PublicOrSecret::Secret(k)) => keys.push(k),
                Ok(PublicOrSecret::Public(_)) => {}
                Err(e) => {
                    return Err(Error::invalid_key(format!(
                        "{label}: malformed OpenPGP key: {e}"
                    )));
                }
            }
        }
    }
    if keys.is_empty() {
        return Err(Error::invalid_key(format!(
            "{label}: contains no secret key (only public keys?); restoring needs the \
             SECRET key (gpg --export-secret-keys KEYID)"
        )));
    }
    Ok(keys)
}

/// A component key of a secret key that could decrypt.
pub(crate) struct Candidate<'k> {
    pub(crate) key: &'k SignedSecretKey,
    pub(crate) key_id: pgp::types::KeyId,
    pub(crate) fingerprint: pgp::types::Fingerprint,
    pub(crate) state: SecretState,
    pub(crate) is_primary: bool,
}

pub(crate) fn candidates(keys: &[SignedSecretKey]) -> Vec<Candidate<'_>> {
    let mut out = Vec::new();
    for k in keys {
        out.push(Candidate {
            key: k,
            key_id: k.primary_key.legacy_key_id(),
            fingerprint: k.primary_key.fingerprint(),
            state: crate::keys::secret_state_of(k.primary_key.secret_params()),
            is_primary: true,
        });
        for sk in &k.secret_subkeys {
            out.push(Candidate {
                key: k,
                key_id: sk.key.legacy_key_id(),
                fingerprint: sk.key.fingerprint(),
                state: crate::keys::secret_state_of(sk.key.secret_params()),
                is_primary: false,
            });
        }
    }
    out
}

pub(crate) fn describe(c: &Candidate<'_>) -> String {
    let uid = c
        .key
        .details
        .users
        .first()
        .map(|u| format!(" of {}", String::from_utf8_lossy(u.id.id())))
        .unwrap_or_default();
    let what = if c.is_primary {
        "primary key"
    } else {
        "subkey"
    };
    format!("{what} {}{uid}", hex_upper(c.key_id.as_ref()))
}

impl SecretKeySource {
    /// The password that unlocks `chosen`: empty for an unprotected key, the
    /// given passphrase, or the prompt's answer (asked once, kept); an error
    /// for a stub, a wrong or a missing passphrase. `key_desc` names the key.
    pub(crate) fn password_for(&self, chosen: &Candidate<'_>, key_desc: &str) -> Result<Password> {
        let secret = self;
        Ok(match chosen.state {
            SecretState::Stub => {
                return Err(Error::invalid_key(format!(
                    "{}: the secret part of {key_desc} is not in this key data (a GnuPG stub: \
                     exported without that secret subkey, or it lives on a smartcard)",
                    secret.label
                )));
            }
            SecretState::Protected => {
                let unlocks = |pw: &[u8]| {
                    let password = Password::from(pw);
                    check_passphrase(chosen, &password).map(|_| password)
                };
                let wrong = || {
                    Error::invalid_key(format!("{}: wrong passphrase for {key_desc}", secret.label))
                };
                let none = || {
                    Error::invalid_key(format!(
                        "{}: {key_desc} is passphrase-protected and no passphrase was given",
                        secret.label
                    ))
                };
                match (&secret.passphrase, &secret.prompt) {
                    (Some(pw), _) => unlocks(pw).map_err(|_| wrong())?,
                    (None, Some(prompt)) => {
                        // Held while asking: another thread waits for this answer.
                        let mut kept = secret.prompted.lock().unwrap_or_else(|e| e.into_inner());
                        match kept.as_ref().map(|pw| unlocks(pw)) {
                            Some(Ok(password)) => password,
                            // Not asked yet, or kept for another key of the ring.
                            _ => {
                                let pw = prompt(key_desc).ok_or_else(none)?;
                                let password = unlocks(&pw).map_err(|_| wrong())?;
                                *kept = Some(pw);
                                password
                            }
                        }
                    }
                    (None, None) => return Err(none()),
                }
            }
            _ => Password::empty(),
        })
    }
}

fn check_passphrase(c: &Candidate<'_>, pw: &Password) -> pgp::errors::Result<()> {
    if c.is_primary {
        c.key.primary_key.unlock(pw, |_, _| Ok(()))?
    } else {
        let sk = c
            .key
            .secret_subkeys
            .iter()
            .find(|s| s.key.legacy_key_id() == c.key_id)
            .expect("candidate subkey exists");
        sk.key.unlock(pw, |_, _| Ok(()))?
    }
}
