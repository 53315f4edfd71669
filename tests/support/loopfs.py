"""Real filesystems on loop devices, made and removed by the tests.

The backup server of the test fleet keeps its jails on btrfs (per-jail
subvolumes with qgroup quotas: a kernel-enforced limit this machine's kernel
supports) and its history on an ext4 filesystem of its own, as an operator
would lay out a real one. Images are sparse files; everything is unmounted
and deleted afterwards, also when a test fails.
"""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
import tempfile

MKFS = {
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0"],
}


@contextlib.contextmanager
def mounted(fstype: str, target: pathlib.Path, size: str = "512M", mkfs_args=(), options: str = ""):
    """A fresh ``fstype`` of ``size`` mounted at ``target`` (created if missing)."""
    target.mkdir(parents=True, exist_ok=True)
    image = pathlib.Path(tempfile.mkstemp(prefix=f"snap-{fstype}-", suffix=".img", dir="/var/tmp")[1])
    try:
        subprocess.run(["truncate", "-s", size, str(image)], check=True)
        subprocess.run([*MKFS[fstype], *mkfs_args, str(image)], check=True, capture_output=True)
        opts = "loop" + (f",{options}" if options else "")
        subprocess.run(["mount", "-o", opts, str(image), str(target)], check=True, capture_output=True, text=True)
        try:
            yield target
        finally:
            subprocess.run(["umount", str(target)], capture_output=True)
            if subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)
    finally:
        image.unlink(missing_ok=True)


def kernel_refuses(fstype: str, options: str, mkfs_args=()) -> str | None:
    """Why this kernel cannot mount ``fstype`` with ``options`` (None if it can)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        try:
            with mounted(fstype, pathlib.Path(tmp) / "m", "64M", mkfs_args, options):
                return None
        except subprocess.CalledProcessError as exc:
            dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.strip().splitlines()
            last = next((line for line in reversed(dmesg) if fstype.upper() in line.upper()), "")
            return f"{(exc.stderr or '').strip()} {last}".strip()
