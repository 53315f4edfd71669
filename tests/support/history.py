"""An rsnapshot-style history like the backup server's: each server's tree
stored the way the jail and rsnapshot store it (rsync --fake-super: plain
files and xattrs, owned by root), snapshots sharing unchanged files as
hardlinks, a few files changed between snapshots."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

from tests.support.treegen import make_server_tree

SNAPSHOTS = ("recent.2", "recent.1", "recent.0")


def make_history(history: pathlib.Path, servers=("web1", "db1"), snapshots=SNAPSHOTS, big=1 << 20):
    """Oldest snapshot first; returns {snapshot: {server: path}}."""
    history = pathlib.Path(history)
    history.mkdir(parents=True, exist_ok=True)
    history.chmod(0o700)
    src = pathlib.Path(tempfile.mkdtemp(prefix="snap-src-"))
    made = {}
    try:
        for seed, server in enumerate(servers):
            make_server_tree(src / server, seed=seed, big=big)
        previous = None
        for n, snap in enumerate(snapshots):
            target = history / snap
            if previous is None:
                target.mkdir()
                for server in servers:
                    subprocess.run(
                        ["rsync", "-aHAXS", "--numeric-ids", "--fake-super", f"{src / server}/", f"{target / server}/"],
                        check=True,
                    )
            else:
                subprocess.run(["cp", "-al", str(previous), str(target)], check=True)
                for server in servers:
                    changed = target / server / "data" / "changes.log"
                    changed.unlink(missing_ok=True)  # a new inode, as rsync would write
                    changed.write_text(f"{server} in {snap}\n" * (n + 1))
            made[snap] = {server: target / server for server in servers}
            previous = target
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return made
