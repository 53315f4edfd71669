"""Restore helpers for tests and `make demo`: restore a server from off-site
into a fresh directory and say whether it matches the server's data."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from tests.support.treegen import describe


def restore_cli(*args, check=True, input=None):
    """Run ``python -m snap_core --json <args>``."""
    proc = subprocess.run([sys.executable, "-m", "snap_core", "--json", *map(str, args)],
                          capture_output=True, text=True, input=input, stdin=None if input else subprocess.DEVNULL)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"snap-backup {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr}")
    return proc


def restore_server_and_compare(target: dict, secret_key: os.PathLike, server: str, original: os.PathLike,
                               dest: os.PathLike, expected: dict | None = None, prefix: str = "snap/") -> tuple[bool, list]:
    """Restore ``server`` (newest archive, newest snapshot) from off-site into
    the fresh directory ``dest`` with the offline ``secret_key``, and compare
    what it had at ``original`` (its data directory, an absolute path on the
    server) by content and metadata. ``expected``: a description taken
    before the data was wiped (default: describe ``original`` now).
    Returns (matches, differences)."""
    import json

    proc = restore_cli("restore", "--target", json.dumps(target), "--prefix", prefix, "--key", secret_key,
                       "--server", server, "--to", dest, "--quiet")  # fmt: skip
    report = json.loads(proc.stdout)
    want = expected if expected is not None else describe(original)
    got = describe(pathlib.Path(dest) / os.fsencode(original).lstrip(b"/").decode(errors="surrogateescape"))
    diffs = [(path, want.get(path), got.get(path)) for path in sorted(set(want) | set(got)) if want.get(path) != got.get(path)]
    return not diffs, diffs if diffs else [report]


def acl_text(path: os.PathLike) -> str:
    """getfacl's view of an entry (numeric ids, no header)."""
    return subprocess.run(["getfacl", "-n", "-p", "--omit-header", str(path)], capture_output=True, text=True, check=True).stdout
