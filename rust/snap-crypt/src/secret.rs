//! The secret key of a restore: where it came from, its passphrase or
//! prompt, and which of its component keys can decrypt a message.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pgp::composed::{PublicOrSecret, SignedSecretKey};
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::types::{KeyDetails, Password};
use snap_core::{Error, Result};
use zeroize::Zeroizing;

use crate::keys::{SecretState, hex_upper, secret_state_of};
use crate::scan::scan;

type Prompt = dyn Fn(&str) -> Option<Zeroizing<Vec<u8>>> + Send + Sync;

/// The secret key for a restore: key bytes (armored or binary, one or more
/// keys) and how to get its passphrase. Held in memory only, wiped on drop.
///
/// The key data is parsed once, and a protected component key is unlocked
/// once: the unlocked key is kept for every later message (a chain's link
/// is one message per piece). Unlocking derives the passphrase's key with
/// the key's S2K, which GnuPG calibrates to its count, up to 65 million
/// bytes of hashing (0.35 s here): paid again for every piece, it cost more
/// than the restore itself. A prompt is asked once: the passphrase it gave,
/// once it unlocked the key, is kept for another protected component key,
/// and threads decrypting at once wait for the one asking.
pub struct SecretKeySource {
    label: String,
    key: Zeroizing<Vec<u8>>,
    passphrase: Option<Zeroizing<Vec<u8>>>,
    prompt: Option<Box<Prompt>>,
    prompted: Mutex<Option<Zeroizing<Vec<u8>>>>,
    /// The keys parsed from `key`, each component key replaced by its
    /// unlocked self once its passphrase was found. Only keys that can
    /// decrypt are ever unlocked (RSA, ElGamal, ECDH, X25519, X448), and
    /// rPGP wipes their secret parameters when they are dropped.
    loaded: Mutex<Option<Arc<Vec<SignedSecretKey>>>>,
    /// Held while a passphrase is tried (one S2K derivation at a time).
    unlocking: Mutex<()>,
    /// Passphrases tried against a protected key (each an S2K derivation).
    tried: AtomicUsize,
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
            loaded: Mutex::new(None),
            unlocking: Mutex::new(()),
            tried: AtomicUsize::new(0),
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

    /// How many times a passphrase was tried against a protected key (each
    /// try derives the key's S2K): once per component key and answer, not
    /// once per message.
    pub fn passphrase_tries(&self) -> usize {
        self.tried.load(Ordering::Relaxed)
    }

    /// The secret keys in the key data, parsed on the first call; component
    /// keys unlocked so far are unlocked in what this returns.
    pub(crate) fn keys(&self) -> Result<Arc<Vec<SignedSecretKey>>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(keys) = loaded.as_ref() {
            return Ok(keys.clone());
        }
        let keys = Arc::new(load_secret_keys(self)?);
        *loaded = Some(keys.clone());
        Ok(keys)
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
    /// Where it is: the key's index in the key data, and the subkey's
    /// index in that key (`None`: the primary).
    pub(crate) at: At,
    /// Whether its algorithm can decrypt a session key. A message naming a
    /// signing key is not for it: that key is never unlocked for one.
    pub(crate) can_decrypt: bool,
}

/// A component key's place in the key data: key index, subkey index.
pub(crate) type At = (usize, Option<usize>);

fn can_decrypt(alg: PublicKeyAlgorithm) -> bool {
    matches!(
        alg,
        PublicKeyAlgorithm::RSA
            | PublicKeyAlgorithm::RSAEncrypt
            | PublicKeyAlgorithm::ElgamalEncrypt
            | PublicKeyAlgorithm::Elgamal
            | PublicKeyAlgorithm::ECDH
            | PublicKeyAlgorithm::X25519
            | PublicKeyAlgorithm::X448
    )
}

pub(crate) fn candidates(keys: &[SignedSecretKey]) -> Vec<Candidate<'_>> {
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        out.push(Candidate {
            key: k,
            key_id: k.primary_key.legacy_key_id(),
            fingerprint: k.primary_key.fingerprint(),
            state: secret_state_of(k.primary_key.secret_params()),
            is_primary: true,
            at: (i, None),
            can_decrypt: can_decrypt(k.primary_key.algorithm()),
        });
        for (j, sk) in k.secret_subkeys.iter().enumerate() {
            out.push(Candidate {
                key: k,
                key_id: sk.key.legacy_key_id(),
                fingerprint: sk.key.fingerprint(),
                state: secret_state_of(sk.key.secret_params()),
                is_primary: false,
                at: (i, Some(j)),
                can_decrypt: can_decrypt(sk.key.algorithm()),
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
    /// The keys with `chosen` (a candidate of [`Self::keys`]) usable without a
    /// password: as they are for an unprotected key; for a protected one,
    /// unlocked with the given passphrase or the prompt's answer (asked once,
    /// kept) and kept unlocked. An error for a stub, a wrong or a missing
    /// passphrase. `key_desc` names the key.
    pub(crate) fn unlocked(
        &self,
        chosen: &Candidate<'_>,
        key_desc: &str,
    ) -> Result<Arc<Vec<SignedSecretKey>>> {
        let at = chosen.at;
        match chosen.state {
            SecretState::Stub => {
                return Err(Error::invalid_key(format!(
                    "{}: the secret part of {key_desc} is not in this key data (a GnuPG stub: \
                     exported without that secret subkey, or it lives on a smartcard)",
                    self.label
                )));
            }
            SecretState::Protected => {}
            _ => return self.keys(),
        }
        let wrong =
            || Error::invalid_key(format!("{}: wrong passphrase for {key_desc}", self.label));
        let none = || {
            Error::invalid_key(format!(
                "{}: {key_desc} is passphrase-protected and no passphrase was given",
                self.label
            ))
        };
        match (&self.passphrase, &self.prompt) {
            (Some(pw), _) => self.unlock(at, pw)?.ok_or_else(wrong),
            (None, Some(prompt)) => {
                // Held while asking: another thread waits for this answer.
                let mut kept = self.prompted.lock().unwrap_or_else(|e| e.into_inner());
                // Not asked yet, or kept for another key of the ring.
                if let Some(keys) = kept
                    .as_ref()
                    .map(|pw| self.unlock(at, pw))
                    .transpose()?
                    .flatten()
                {
                    return Ok(keys);
                }
                let pw = prompt(key_desc).ok_or_else(none)?;
                let keys = self.unlock(at, &pw)?.ok_or_else(wrong)?;
                *kept = Some(pw);
                Ok(keys)
            }
            (None, None) => Err(none()),
        }
    }

    /// The keys with the component key at `at` unlocked by `pw` and kept
    /// so; `None` if `pw` does not unlock it. One derivation at a time: a
    /// thread that waited finds the key unlocked and derives nothing.
    fn unlock(&self, at: At, pw: &[u8]) -> Result<Option<Arc<Vec<SignedSecretKey>>>> {
        let _one = self.unlocking.lock().unwrap_or_else(|e| e.into_inner());
        let keys = self.keys()?;
        let lost = || Error::internal("the key to unlock is not in the key data");
        let (i, sub) = at;
        let key = keys.get(i).ok_or_else(lost)?;
        let password = Password::from(pw);
        // Only the component key is copied and unlocked, so that nothing
        // else of the key goes back to what it was.
        let unlocked = match sub {
            None => {
                if secret_state_of(key.primary_key.secret_params()) != SecretState::Protected {
                    return Ok(Some(keys));
                }
                let mut primary = key.primary_key.clone();
                self.tried.fetch_add(1, Ordering::Relaxed);
                if primary.remove_password(&password).is_err() {
                    return Ok(None);
                }
                Unlocked::Primary(primary)
            }
            Some(j) => {
                let sk = &key.secret_subkeys.get(j).ok_or_else(lost)?.key;
                if secret_state_of(sk.secret_params()) != SecretState::Protected {
                    return Ok(Some(keys));
                }
                let mut sk = sk.clone();
                self.tried.fetch_add(1, Ordering::Relaxed);
                if sk.remove_password(&password).is_err() {
                    return Ok(None);
                }
                Unlocked::Subkey(j, sk)
            }
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let current = loaded.get_or_insert_with(|| keys.clone());
        let mut next = current.as_ref().clone();
        match unlocked {
            Unlocked::Primary(p) => next[i].primary_key = p,
            Unlocked::Subkey(j, sk) => next[i].secret_subkeys[j].key = sk,
        }
        *current = Arc::new(next);
        Ok(Some(current.clone()))
    }
}

enum Unlocked {
    Primary(pgp::packet::SecretKey),
    Subkey(usize, pgp::packet::SecretSubkey),
}
