"""Type stubs for the Rust extension module snap_core._rust."""

__version__: str

# --- pack ---
import os
from typing import Any, Callable, Iterable, Literal, TypedDict, Union

_Path = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
_Progress = Callable[[dict[str, Any]], object]

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
    bytes_in: int
    image_size: int
    duration: float

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
    progress: _Progress | None = None,
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
    progress: _Progress | None = None,
) -> UnpackSummary:
    """Extract `image` (or the relative paths in `select`) into `dest`, which
    must be empty or not exist."""

def list_image(image: _Path, prefix: str | bytes = b"", depth: int = 1) -> list[ImageEntry]:
    """Entries below `prefix` in `image`, `depth` levels deep (0: `prefix` itself)."""
