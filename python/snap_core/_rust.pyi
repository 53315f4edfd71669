"""Type stubs for the Rust extension module snap_core._rust."""

__version__: str

# --- crypt ---
# OpenPGP (rPGP): encrypt archives to public keys (SEIPDv1, AES-256, no
# compression, GnuPG 2.2 compatible); streaming decrypt for restore.
from os import PathLike
from typing import Callable, Optional, TypedDict, Union

_Path = Union[str, "PathLike[str]"]
_Progress = Optional[Callable[[dict], None]]
# (label naming where the key came from, key bytes: armored or binary)
_KeySources = list[tuple[str, bytes]]

class Recipient(TypedDict):
    label: str
    fingerprint: str  # primary key, uppercase hex (gpg style)
    key_id: str  # 16 hex digits of the (sub)key the session key is encrypted to
    subkey_fingerprint: str
    algorithm: str  # "RSA 3072", "ECDH Curve25519", ...
    user_ids: list[str]
    created: int  # unix seconds
    expires: Optional[int]

class EncryptSummary(TypedDict):
    plaintext_bytes: int
    ciphertext_bytes: int
    plaintext_sha256: str  # lowercase hex, as sha256sum prints it
    ciphertext_sha256: str
    recipients: list[str]  # primary fingerprints
    duration: float  # seconds

class DecryptSummary(TypedDict):
    plaintext_bytes: int
    plaintext_sha256: str
    ciphertext_bytes: int
    ciphertext_sha256: str
    key_id: str  # component key that decrypted the session key
    key_fingerprint: str  # its primary key
    compressed: bool  # the message had a compression layer (gpg default)
    duration: float

class KeyComponent(TypedDict):
    fingerprint: str
    key_id: str
    algorithm: str
    created: int
    capabilities: list[str]  # of "certify", "sign", "encrypt", "authenticate"
    secret: str  # "public" | "unprotected" | "protected" | "stub"

class KeyInfo(TypedDict):
    fingerprint: str
    key_id: str
    is_secret: bool
    has_passphrase: bool
    user_ids: list[str]
    primary: KeyComponent
    subkeys: list[KeyComponent]
    usable_for_encryption: bool
    encryption: str  # which key snap would encrypt to, or why it cannot

def load_recipients(sources: _KeySources) -> list[Recipient]:
    """Check recipient public keys. Raises SecretKeyMaterial if ANY secret key
    material is in any source (checked packet by packet, every armor block),
    InvalidKey (naming the source) for empty/garbage/expired/revoked/weak keys
    or keys without an encryption subkey."""

def encrypt_file(
    src: _Path, dst: _Path, recipients: _KeySources, progress: _Progress = None
) -> EncryptSummary:
    """Encrypt src to a new file dst (FileExistsError/AlreadyExists if it
    exists); dst appears only when complete and synced. Keys are checked
    before anything is read or written. GIL released."""

def encrypt_fd(
    in_fd: int, out_fd: int, recipients: _KeySources, progress: _Progress = None
) -> EncryptSummary:
    """Encrypt from in_fd to out_fd (e.g. stdin to stdout); the fds are not
    closed. On error out_fd may hold a partial message: discard it."""

def decrypt_file(
    src: _Path,
    dst: _Path,
    secret_key: bytes,
    passphrase: Union[bytes, str, None] = None,
    progress: _Progress = None,
) -> DecryptSummary:
    """Decrypt src (snap's or gpg's, compressed or not, binary or armored) into
    a new file dst, which appears only if the message passed its integrity
    check. IntegrityError: tampered/truncated/corrupted. InvalidKey: not the
    key the message is for (names its key ids), missing/wrong passphrase.
    InvalidInput: not an encrypted OpenPGP message."""

def decrypt_fd(
    in_fd: int,
    out_fd: int,
    secret_key: bytes,
    passphrase: Union[bytes, str, None] = None,
    progress: _Progress = None,
) -> DecryptSummary:
    """Streaming decrypt from in_fd to out_fd; fds are not closed. The output
    is UNTRUSTED until this returns: IntegrityError is raised only at the end,
    after plaintext was written. Write to a staging file, promote on success."""

def inspect_keys(data: bytes) -> list[KeyInfo]:
    """Describe public and secret keys (never returns secret material)."""
