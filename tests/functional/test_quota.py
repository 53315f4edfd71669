"""Quotas on the jails, as the kernel enforces them (snap_core.quota): on real
filesystems on loop devices, made and removed by the test, with an account
every Debian system has (nobody) writing until the kernel says no."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from snap_core import quota
from snap_core.errors import InvalidInput
from tests.support import loopfs

NOBODY = 65534


@pytest.fixture
def tmp_path():
    """A directory nobody can pass through (pytest's own are 0700)."""
    import shutil
    import tempfile

    path = pathlib.Path(tempfile.mkdtemp(prefix="snap-quota-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_as_nobody(path: pathlib.Path, mib: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         "dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fsync"],
        capture_output=True, text=True,
    )  # fmt: skip


def test_sizes_and_limits_from_pillar():
    assert quota.parse_size("500G", "x") == 500 << 30
    assert quota.parse_size("2T", "x") == 2 << 40
    assert quota.parse_size(1024, "x") == 1024
    assert quota.parse_size(None, "x") is None
    with pytest.raises(InvalidInput, match="not a size"):
        quota.parse_size("lots", "snap:server:quota:blocks")
    assert quota.wanted_limits({"blocks": "1G", "inodes": None}, {"inodes": 10}, "web1") == (1 << 30, 10)
    with pytest.raises(InvalidInput, match="unknown keys"):
        quota.wanted_limits({"blokcs": "1G"}, None, "web1")


def test_btrfs_quota_stops_a_jail_and_can_be_lifted(tmp_path):
    with loopfs.mounted("btrfs", tmp_path / "jails", "512M"):
        jail = tmp_path / "jails" / "snap-web1"
        jail.mkdir()
        incoming = str(jail / "incoming")
        os.mkdir(incoming)  # a plain directory from before quotas
        assert quota.make_subvolume(incoming, dry_run=True) != []
        assert not quota.is_subvolume(incoming), "test=True changes nothing"
        changes = quota.make_subvolume(incoming, dry_run=False)
        assert "replaced by a btrfs subvolume" in changes[0] and quota.is_subvolume(incoming)
        os.chown(incoming, NOBODY, NOBODY)
        for p in (tmp_path / "jails", jail):
            p.chmod(0o711)
        fs = quota.filesystem_of(incoming)
        assert quota.method_for(fs) == "btrfs"
        assert quota.ensure_btrfs(incoming, "snap-web1", 16 << 20, dry_run=False) != {}
        assert quota.ensure_btrfs(incoming, "snap-web1", 16 << 20, dry_run=False) == {}, "a second run changes nothing"
        proc = write_as_nobody(pathlib.Path(incoming) / "big", 64)
        assert proc.returncode != 0 and "quota" in proc.stderr.lower(), proc.stderr
        assert os.path.getsize(pathlib.Path(incoming) / "big") <= 17 << 20
        os.unlink(pathlib.Path(incoming) / "big")
        assert quota.ensure_btrfs(incoming, "snap-web1", 0, dry_run=False)["quota"]["new"] == {"bytes": 0}
        assert write_as_nobody(pathlib.Path(incoming) / "big", 32).returncode == 0


def test_user_quotas_on_ext4(tmp_path):
    why = loopfs.kernel_refuses("ext4", "usrquota", ("-O", "quota", "-E", "quotatype=usrquota"))
    if why:
        pytest.skip(f"this kernel cannot mount ext4 with user quotas (a real limit, not emulated): {why}")
    with loopfs.mounted("ext4", tmp_path / "jails", "256M", ("-O", "quota", "-E", "quotatype=usrquota"), "usrquota"):
        fs = quota.filesystem_of(str(tmp_path / "jails"))
        assert quota.method_for(fs) == "usrquota"
        subprocess.run(["quotaon", "-u", fs.target], capture_output=True)
        table = quota.usrquota_table(fs)
        assert quota.ensure_usrquota(fs, "nobody", NOBODY, (16 << 20, 1000), table, dry_run=False) != {}
        table = quota.usrquota_table(fs)
        assert table[NOBODY] == (16 << 20, 1000)
        assert quota.ensure_usrquota(fs, "nobody", NOBODY, (16 << 20, 1000), table, dry_run=False) == {}
        d = tmp_path / "jails" / "nobody"
        d.mkdir()
        os.chown(d, NOBODY, NOBODY)
        (tmp_path / "jails").chmod(0o755)
        proc = write_as_nobody(d / "big", 64)
        assert proc.returncode != 0 and "quota" in proc.stderr.lower(), proc.stderr


def test_quotas_asked_where_the_filesystem_has_none_are_a_clear_error(tmp_path):
    with loopfs.mounted("ext4", tmp_path / "jails", "64M"):
        fs = quota.filesystem_of(str(tmp_path / "jails"))
        with pytest.raises(Exception, match="no user quotas on|quotaon"):
            quota.usrquota_table(fs)


def test_snap_lifts_only_a_limit_it_set(tmp_path):
    home = tmp_path / "snap-web1"
    home.mkdir()
    assert not quota.recorded(str(home))
    quota.remember(str(home), 24 << 20, None, dry_run=True)
    assert not quota.recorded(str(home)), "test=True writes nothing"
    quota.remember(str(home), 24 << 20, None, dry_run=False)
    assert quota.recorded(str(home))
    assert (home / "quota.json").stat().st_mode & 0o777 == 0o600
    # A record planted as a link (or by anyone but root) is not snap's.
    (home / "quota.json").unlink()
    (home / "quota.json").symlink_to("/etc/hostname")
    assert not quota.recorded(str(home))
    (home / "quota.json").unlink()
    quota.remember(str(home), 24 << 20, 0, dry_run=False)
    quota.forget(str(home), dry_run=False)
    assert not quota.recorded(str(home))
