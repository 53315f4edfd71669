"""Type stubs for the Rust extension module snap_core._rust."""

__version__: str

# --- offsite ---
from collections.abc import Callable
from os import PathLike
from typing import Any, TypedDict

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

class RetrievalInfo(TypedDict):
    status: str  # "immediate" | "not-requested" | "in-progress" | "ready"
    readable: bool
    expires: float | None

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

class ListEntry(TypedDict):
    key: str
    size: int
    storage_class: str | None
    last_modified: float | None

class IncompleteUpload(TypedDict):
    key: str
    upload_id: str
    initiated: float | None

class DownloadResult(TypedDict):
    resumed_from: int
    fetched: int
    sha256: str  # of the whole file

OFFSITE_MIN_RETAIN_DAYS: int

class OffsiteTarget:
    """An S3 bucket with Object Lock (kind "s3", default) or a Glacier vault
    (kind "glacier"). Settings: kind, bucket (or vault), region, endpoint_url,
    profile, credentials_file, config_file, force_path_style, part_size,
    max_in_flight, sdk_max_attempts, part_retries, retry_backoff (seconds),
    account_id. No secrets: credentials come from the AWS chain."""

    def __init__(self, config: dict[str, Any]) -> None: ...
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
    def list(self, prefix: str) -> list[ListEntry]: ...
    def list_incomplete(self, prefix: str) -> list[IncompleteUpload]: ...
    def abort_stale(self, prefix: str, min_age: float = 0.0) -> list[IncompleteUpload]: ...
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
