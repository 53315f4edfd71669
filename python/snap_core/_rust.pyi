"""Type stubs for the Rust extension module snap_core._rust.

Errors are raised as the classes in :mod:`snap_core.errors`.
"""

import builtins
from collections.abc import Callable, Iterable, Mapping, Sequence
from os import PathLike
from typing import Any, Literal, Optional, TypedDict, Union, final, type_check_only

__version__: str
API_VERSION: tuple[int, int]

_Path = Union[str, bytes, PathLike[str], PathLike[bytes]]
_Progress = Optional[Callable[[dict[str, Any]], object]]
_KeySources = list[tuple[str, bytes]]

# --- core ---

@type_check_only
class PublicKey(TypedDict):
    type: str
    key: str
    fingerprint: str
    comment: str
    bits: int

def backup_minute(key: str, slots: int = 60) -> int:
    """``zlib.crc32(key.encode()) % slots``. Raises InvalidInput if slots is 0."""

def assign_backup_server(minion_id: str, backups: list[str], explicit: dict[str, str] | None = None) -> str:
    """The backup server ``minion_id`` pushes to: ``explicit[minion_id]`` (it must be one of
    ``backups``), else rendezvous hashing. Raises InvalidInput for a malformed id or an empty list."""

def backup_splay(key: str, slots: int = 60) -> int:
    """``(zlib.crc32(key.encode()) // slots) % 60``: seconds a server waits into its minute."""

def validate_hours(hours: Sequence[int]) -> list[int]:
    """Distinct hours 0-23, sorted; InvalidInput otherwise."""

def minute_spread(keys: Sequence[str], slots: int = 60) -> tuple[int, int, int]:
    """(most keys in one slot, ideal ceil(n/slots), empty slots)."""

def validate_minion_id(minion_id: str) -> None:
    """InvalidInput naming the id unless it is 1-253 chars of [A-Za-z0-9._-]."""

def account_name(minion_id: str) -> str:
    """``web1.example.com`` -> ``snap-web1`` (alone in its fleet); InvalidInput naming the id if it cannot be mapped."""

def validate_account_name(name: str) -> None:
    """InvalidInput naming the name unless it is a portable user name (1-32 of a-z, 0-9, '-', '_')."""

def account_names(minion_ids: Sequence[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Names for a fleet (distinct by construction); AccountCollision naming the ids if two would share one."""

def assign_accounts(
    minion_ids: Sequence[str], overrides: Mapping[str, str] | None = None, bound: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(names, rejected): a name for every id that can have one; the reason for each that cannot.
    ``bound``: {account: minion id it was made for} of the accounts that exist (they stay theirs)."""

def parse_public_key(text: str) -> PublicKey:
    """Exactly one bare OpenSSH public key, else InvalidKey (SecretKeyMaterial for a private key)."""

def generate_keypair(path: _Path, comment: str = "") -> str:
    """New Ed25519 pair at path (0600) and path.pub (0644); AlreadyExists if either exists.
    Returns the SHA256 fingerprint as ``ssh-keygen -l`` prints it."""

def public_from_private(path: _Path) -> PublicKey:
    """The validated public half of the private key at path."""

def restore_public(path: _Path) -> PublicKey:
    """Write a lost path.pub from the private key (never overwrites)."""

# --- push and rotation ---

def load_push_config(path: _Path) -> dict:
    """Read and check a push configuration (client.json); InvalidInput naming the field."""

def parse_push_config(text: str) -> dict:
    """Check a push configuration given as JSON text; returns it with defaults filled in."""

def parse_server_config(text: str) -> dict:
    """Check a backup server configuration given as JSON text; returns it with defaults filled in."""

def rsnapshot_conf(text: str) -> str:
    """rsnapshot.conf (tab-separated, sync_first, --fake-super) for a server configuration (JSON text)."""

def push_run(config: _Path, no_splay: bool = False, lock_wait: float = 0.0, progress: object = None) -> dict:
    """Run one push; returns its record (result ok/partial/failed/skipped), also kept under state_dir."""

def load_server_config(path: _Path) -> dict:
    """Read and check a backup server configuration (server.json)."""

def rotate_run(config: _Path, level: str) -> dict:
    """Build the next snapshot of every server from its newest complete push (lowest level) and run rsnapshot LEVEL; returns the record."""

def prepare_jail(jails_dir: _Path, account: str, uid: int, gid: int, dry_run: bool = False) -> list[str]:
    """Make or repair a push account's jail (home root's 0711, incoming the account's 0700, nothing
    else in the home but root's own files); returns what changed, or with dry_run what would."""

# --- archive ---

def parse_archive_config(text: str) -> dict:
    """Check an archive configuration (JSON text); returns it with defaults filled in."""

def archive_run(config: _Path, progress: object = None) -> dict:
    """history -> SquashFS -> OpenPGP -> off-site under Object Lock, with a manifest.
    Returns the run's record (``manifest``, ``manifest_key``, ``stages``, ``aborted_stale``);
    raises on failure (the failed run is recorded under state_dir too)."""

def history_inventory(history: _Path, servers: Sequence[str] | None = None) -> list[dict]:
    """[{name, servers, mtime}] for every snapshot directory of a history root."""

# --- status ---

def backup_server_view(config: _Path) -> dict[str, dict]:
    """{minion id: {account, last_good, last_failed, running_since, transfers, in_history}}
    from the backup server's own receipts and records (server.json)."""

def history_without_account(config: _Path) -> dict[str, dict]:
    """{minion id: {run_id, seq, pushed_started, pushed_finished, synced, stats}}: the newest
    push of each server that history holds but that has no account here any more (moved or gone)."""

def write_metrics(config: _Path, path: _Path, now: float | None = None) -> str:
    """Write Prometheus textfile-collector metrics (atomically); returns the text."""

def assess_status(schedule: str, observed: str, now: float | None = None, thresholds: str | None = None) -> dict:
    """Judge one server (JSON texts): {state: OK|LATE|MISSING|FAILED|NEVER, missed_slots,
    age_seconds, last_due_slot, next_slot, note}. ``now`` is unix seconds (default: now)."""

def crosscheck_status(sources: str) -> dict:
    """Cross-check the three sources of status (JSON text: {now, skew_seconds, servers: {id:
    {own: [{run_id, started, finished, result}] | None, received: {run_id, started} | None}},
    archive: {result, key, finished} | None, offsite: [{key, landed, created, servers: {id:
    snapshots}, error}] | None}): {findings: [{server, sources, message}], compared: [...]}."""

# --- pack ---

@type_check_only
class PackSummary(TypedDict):
    dirs: int
    files: int
    inodes: int
    hardlinks: int
    symlinks: int
    specials: int
    xattr_entries: int
    skipped_xattrs: int
    clamped_mtimes: int
    bytes_in: int  # holes of sparse files are not read
    sparse_files: int
    hole_bytes: int
    image_size: int
    duration: float

@type_check_only
class UnpackSummary(TypedDict):
    dirs: int
    files: int
    hardlinks: int
    symlinks: int
    specials: int
    skipped_devices: int
    fake_super_applied: int
    skipped_xattrs: int
    bytes_out: int
    duration: float

@type_check_only
class ImageEntry(TypedDict):
    path: bytes
    kind: Literal["dir", "file", "symlink", "chardev", "blockdev", "fifo", "socket"]
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    nlink: int
    inode: int
    symlink_target: bytes | None
    rdev: tuple[int, int] | None

def pack(
    src: _Path,
    image: _Path,
    compressor: Literal["zstd", "xz", "gzip", "lz4"] = "zstd",
    level: int | None = None,
    block_size: int = 131072,
    threads: int | None = None,
    select_depth: int | None = None,
    select_names: Iterable[str | bytes] | None = None,
    progress: _Progress = None,
    skip_unsupported_xattrs: bool = False,
) -> PackSummary:
    """Pack the tree `src` into a new SquashFS image `image` (must not exist).

    Raises InvalidInput (before writing anything) for entries that cannot be
    packed faithfully, AlreadyExists, DiskFull, IOFailure."""

def unpack(
    image: _Path,
    dest: _Path,
    select: Iterable[str | bytes] | None = None,
    apply_fake_super: bool = False,
    progress: _Progress = None,
) -> UnpackSummary:
    """Extract `image` (or the relative paths in `select`) into `dest`, which
    must be empty or not exist."""

def list_image(image: _Path, prefix: str | bytes = b"", depth: int = 1) -> list[ImageEntry]:
    """Entries below `prefix` in `image`, `depth` levels deep (0: `prefix` itself)."""

# --- chain ---
# An image of the whole history that grows by appending: a base, then links
# whose tails hold new data and the complete metadata tables (snap-pack chain).

@type_check_only
class ChainLinkRecord(TypedDict):
    number: int
    start: int  # image offset of the tail's first byte (0: the base)
    data_end: int  # where its data ends: the next tail starts there
    size: int  # bytes of the image at this link
    data_sha256: str  # of the bytes later images keep

@type_check_only
class ChainRange(TypedDict):
    offset: int
    len: int
    piece: Any  # "superblock" or {"tail": n}
    piece_offset: int
    sha256: str

@type_check_only
class ChainSnapshot(TypedDict):
    dir: str  # in history: daily.3
    name: str  # in the image: 2026-11-30T040012Z
    time: float
    source: Literal["stamp", "mtime"]

@type_check_only
class ChainLinkSummary(TypedDict):
    number: int
    snapshots: int
    new_files: int
    bytes_read: int
    reused_files: int
    reused_bytes: int
    unkeyed_files: int
    tail_bytes: int
    image_bytes: int
    data_bytes: int
    live_bytes: int
    dead_bytes: int
    dead_ratio: float
    duration: float

@type_check_only
class ChainLink(TypedDict):
    number: int
    tail: str
    tail_start: int
    superblock: bytes
    links: list[ChainLinkRecord]
    ranges: list[ChainRange]
    summary: ChainLinkSummary
    snapshots: list[ChainSnapshot]
    committed: bool

def chain_link(
    history: _Path,
    index: _Path,
    tail: _Path,
    start: bool = False,
    compressor: Literal["zstd", "xz", "gzip", "lz4"] = "zstd",
    level: int | None = None,
    block_size: int = 131072,
    threads: int | None = None,
    servers: Sequence[str] | None = None,
    commit: bool = True,
    progress: _Progress = None,
) -> ChainLink:
    """Start a chain (`start`: its base; `index` must not exist) or add a link: the
    tail goes to the new file `tail`; with `commit` the index is replaced atomically."""

def chain_assemble(ranges: Sequence[ChainRange], superblock: bytes, tails: Mapping[int, _Path], out: _Path) -> int:
    """The image of `ranges` at the new file `out`, every range's SHA-256 checked; its size."""

def chain_rebuild_index(
    history: _Path,
    index: _Path,
    links: Sequence[ChainLinkRecord],
    image: _Path | None = None,
    tail: _Path | None = None,
    tail_start: int | None = None,
    superblock: bytes | None = None,
    compressor: Literal["zstd", "xz", "gzip", "lz4"] = "zstd",
    level: int | None = None,
    block_size: int = 131072,
) -> dict[str, int]:
    """Write the chain index again from the newest image (or tail) and history."""

# --- crypt ---
# OpenPGP (rPGP): encrypt archives to public keys (SEIPDv1, AES-256, no
# compression, GnuPG 2.2 compatible); streaming decrypt for restore.
# (label naming where the key came from, key bytes: armored or binary)

@type_check_only
class Recipient(TypedDict):
    label: str
    fingerprint: str  # primary key, uppercase hex (gpg style)
    key_id: str  # 16 hex digits of the (sub)key the session key is encrypted to
    subkey_fingerprint: str
    algorithm: str  # "RSA 3072", "ECDH Curve25519", ...
    user_ids: list[str]
    created: int  # unix seconds
    expires: Optional[int]

@type_check_only
class EncryptSummary(TypedDict):
    plaintext_bytes: int
    ciphertext_bytes: int
    plaintext_sha256: str  # lowercase hex, as sha256sum prints it
    ciphertext_sha256: str
    recipients: list[str]  # primary fingerprints
    duration: float  # seconds

@type_check_only
class DecryptSummary(TypedDict):
    plaintext_bytes: int
    plaintext_sha256: str
    ciphertext_bytes: int
    ciphertext_sha256: str
    key_id: str  # component key that decrypted the session key
    key_fingerprint: str  # its primary key
    compressed: bool  # the message had a compression layer (gpg default)
    duration: float

@type_check_only
class KeyComponent(TypedDict):
    fingerprint: str
    key_id: str
    algorithm: str
    created: int
    capabilities: list[str]  # of "certify", "sign", "encrypt", "authenticate"
    secret: str  # "public" | "unprotected" | "protected" | "stub"

@type_check_only
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

# --- offsite ---

@type_check_only
class UploadResult(TypedDict):
    key: str  # S3 key; for a Glacier vault the archive id
    size: int
    sha256: str  # hex SHA-256 of the whole object, computed while streaming
    tree_hash: str | None  # Glacier tree hash (vaults only)
    version_id: str | None
    etag: str | None
    parts: int  # 0 for a single request
    part_size: int
    retain_until: float | None  # unix seconds (None for vaults)
    storage_class: str | None
    lock: LockCheck | None  # the lock as read back (None for vaults)

@type_check_only
class LockRetention(TypedDict):
    mode: str | None  # "COMPLIANCE", "GOVERNANCE" or None (no lock)
    retain_until: str | None  # RFC 3339

@type_check_only
class LockCheck(TypedDict):
    object: str
    key: str
    version_id: str | None
    wanted_until: str  # RFC 3339: COMPLIANCE until at least this was asked for
    found: LockRetention  # what the server held when first asked
    now: LockRetention  # what it holds now (after a repair)
    status: str  # "held" | "repaired"
    detail: str

@type_check_only
class Retention(TypedDict):
    mode: str | None
    retain_until: float | None  # unix seconds

@type_check_only
class RetrievalInfo(TypedDict):
    status: str  # "immediate" | "not-requested" | "in-progress" | "ready"
    readable: bool
    expires: float | None

@type_check_only
class ObjectInfo(TypedDict):
    key: str
    size: int
    lock_mode: str | None  # "COMPLIANCE" | "GOVERNANCE" | None
    retain_until: float | None
    legal_hold: bool | None
    storage_class: str | None  # None means STANDARD
    checksum_sha256: str | None
    version_id: str | None
    etag: str | None
    last_modified: float | None
    retrieval: RetrievalInfo

@type_check_only
class ListEntry(TypedDict):
    key: str
    size: int
    storage_class: str | None
    last_modified: float | None

@type_check_only
class IncompleteUpload(TypedDict):
    key: str
    upload_id: str
    initiated: float | None

@type_check_only
class DownloadResult(TypedDict):
    resumed_from: int
    fetched: int
    sha256: str  # of the whole file

OFFSITE_MIN_RETAIN_DAYS: int

@final
class OffsiteTarget:
    """An S3 bucket with Object Lock (kind "s3", default) or a Glacier vault
    (kind "glacier"). Settings: kind, bucket (or vault), region, endpoint_url,
    profile, credentials_file, config_file, force_path_style, part_size,
    max_in_flight, sdk_max_attempts, part_retries, retry_backoff (seconds),
    stall_timeout (seconds without an answer or a byte before a download
    counts as dropped, default 300), account_id. No secrets: credentials come from the AWS chain."""

    def __new__(cls, config: dict[str, Any]) -> OffsiteTarget: ...
    def describe(self) -> str: ...
    def put_file(
        self,
        path: str | PathLike[str],
        key: str,
        storage_class: str = "GLACIER",
        retain_days: int = 90,
        description: str | None = None,
        content_type: str | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> UploadResult: ...
    def put_bytes(
        self,
        data: bytes,
        key: str,
        storage_class: str = "STANDARD",
        retain_days: int = 90,
        description: str | None = None,
        content_type: str | None = None,
    ) -> UploadResult: ...
    def head(self, key: str) -> ObjectInfo: ...
    def retention(self, key: str, version_id: str | None = None) -> Retention:
        """The lock of key (at version_id) as the server holds it now (GetObjectRetention)."""
    def list(self, prefix: str) -> list[ListEntry]: ...
    def list_incomplete(self, prefix: str) -> builtins.list[IncompleteUpload]: ...
    def abort_stale(self, prefix: str, min_age: float = 0.0) -> builtins.list[IncompleteUpload]: ...
    def get_file(
        self,
        key: str,
        path: str | PathLike[str],
        resume: bool = False,
        version_id: str | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> DownloadResult: ...
    def request_retrieval(self, key: str, days: int = 3, tier: str = "Standard") -> RetrievalInfo: ...
    def retrieval_status(self, key: str) -> RetrievalInfo: ...

def glacier_tree_hash(data: bytes | str | PathLike[str]) -> str:
    """Tree hash (hex) of bytes, or of the file at a str/PathLike path."""

def offsite_archive_key(prefix: str, suffix: str = "") -> str: ...
def offsite_retain_until(days: int) -> float:
    """Unix time now + days + 1 day; raises InvalidInput below 90 days."""

# --- restore ---
# Restore and proof (snap-restore): archives from their manifests, off-site
# fetch with retrieval/resume, three integrity checks before anything is
# written, extraction with the servers' own metadata; local history; the
# sealed channel back to a server; sealed credentials; drill and audit.
_Prompt = Optional[Callable[[str], Optional[bytes]]]

@final
class ArchiveStore:
    """An off-site target for restore: settings (dict, as OffsiteTarget) and/or
    a sealed credentials pack (bytes from seal_creds) with its passphrase;
    the pack's settings are the base, `settings` override them. The pack is
    opened in memory only (the SDK reads the keys from a memfd)."""

    def __new__(cls, settings: dict[str, Any] | None = None, creds: bytes | None = None,
                passphrase: bytes | str | None = None) -> ArchiveStore: ...
    @property
    def prefix(self) -> str | None:
        """The key prefix the credentials pack carries."""
    def describe(self) -> str: ...
    def list(self, prefix: str = "snap/", head: bool = True) -> list[dict]:
        """Archives (oldest first): key, manifest_key, created, backup_server, servers,
        snapshots, size, plaintext_size, recipients, storage_class, lock_mode,
        retain_until, retrieval, retrieval_expires, error (per row)."""
    def manifest(self, key: str) -> dict: ...
    def newest(self, prefix: str = "snap/") -> dict: ...
    def retrieval(self, key: str, request: bool = False, tier: str = "Standard", days: int = 3) -> dict: ...
    def restore(self, key: str | None, secret_key: bytes, dest: _Path, select: Sequence[_Path] | None = None,
                snapshot: str | None = None, server: str | None = None, paths: Sequence[_Path] | None = None,
                passphrase: bytes | str | None = None, prompt: _Prompt = None, overwrite: bool = False,
                work_dir: _Path | None = None, prefix: str = "snap/", request: bool = True, tier: str = "Standard",
                days: int = 3, wait: float | None = None, poll: float = 600.0, resume: bool = True,
                progress: _Progress = None) -> dict:
        """Restore from off-site (key None: the newest under prefix). Raises NotReady
        (retrieval pending), IntegrityError (size/sha256/MDC), InvalidKey, NotFound,
        AlreadyExists (conflicts in dest; nothing moved). Returns {archive, created,
        checks, extract, seconds}."""
    def audit(self, prefix: str = "snap/", min_retain_days: int = 90, max_age_days: float = 16.0,
              lock_mode: str = "COMPLIANCE") -> dict: ...
    def verify(self, prefix: str = "snap/", sample: dict | None = None, secret_key: bytes | None = None,
               passphrase: bytes | str | None = None, state_dir: _Path | None = None,
               work_dir: _Path | None = None, min_retain_days: int = 90, max_age_days: float = 16.0,
               lock_mode: str = "COMPLIANCE", request: bool = True, tier: str = "Bulk", days: int = 3,
               wait: float | None = None, poll: float = 600.0, progress: _Progress = None) -> dict:
        """Audit and (with sample + drill key) the drill; record kept under state_dir.
        result: ok | failed | pending."""

def restore_from_file(archive: _Path, secret_key: bytes, dest: _Path, select: Sequence[_Path] | None = None,
                      snapshot: str | None = None, server: str | None = None, paths: Sequence[_Path] | None = None,
                      manifest: _Path | None = None, passphrase: bytes | str | None = None, prompt: _Prompt = None,
                      overwrite: bool = False, work_dir: _Path | None = None, progress: _Progress = None) -> dict:
    """Air-gapped restore of an archive file (manifest: ARCHIVE.manifest.json by default if present)."""

def restore_from_history(history: _Path, snapshot: str, server: str, dest: _Path, path: _Path | None = None,
                         overwrite: bool = False, work_dir: _Path | None = None, progress: _Progress = None) -> dict:
    """One file, a directory or the whole server (path None or "/") from history into dest (the server's /)."""

def pack_history_pick(history: _Path, snapshot: str, server: str, image: _Path, path: _Path | None = None) -> dict:
    """A pick of history packed into a new image; returns the PackedPick (what extract_history_pick needs)."""

def extract_history_pick(image: _Path, packed: dict, dest: _Path, server: str, path: _Path, overwrite: bool = False,
                         special: bool = False, progress: _Progress = None) -> dict:
    """Extract a packed pick into dest (the server's /) where server and path (what was asked) say;
    packed (the backup server's description) must agree. special: allow devices and set-id files."""

def seal_for_server(src: _Path, dst: _Path, recipient: str) -> dict:
    """Seal src for the holder of an ssh-ed25519 key (age); returns {size, sha256}."""

def open_sealed(src: _Path, dst: _Path, identity: _Path, sha256: str | None = None) -> int:
    """Open a sealed file with the SSH private key at identity; dst appears only if intact."""

def seal_creds(access_key_id: str, secret_access_key: str, target: dict, passphrase: bytes | str,
               session_token: str | None = None, prefix: str | None = None, note: str | None = None,
               work_factor: int | None = None) -> bytes:
    """An armored age file (scrypt passphrase) holding read-only credentials and target settings."""

def inspect_creds(sealed: bytes, passphrase: bytes | str) -> dict:
    """What a credentials pack holds, without its secret."""

def drill_sample(history: _Path, manifest: dict, random_files: int = 50, max_bytes: int = 268435456,
                 seed: int | None = None) -> dict:
    """A drill sample (paths + descriptions, no secrets) from the archive's snapshot still in history."""

def describe_tree(root: _Path, paths: list[str], fake_super: bool = False) -> dict: ...
