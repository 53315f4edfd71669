"""Push accounts planned as one command each, against a snapshot of the tables."""

import os
import stat

import pytest

from snap_core import accounts as acc

RANGE = (200000, 299999)


def tables(users=(), gid=200000, members=()):
    t = acc.Tables.__new__(acc.Tables)
    t.group, t.gid, t.members = "snap-push", gid, set(members)
    t.users = {u.name: u for u in users}
    t.uid_holders = {}
    for u in users:
        t.uid_holders[u.uid] = t.uid_holders.get(u.uid, 0) + 1
    t.subuid_ranges = []
    t._next_uid = None
    return t


def user(name, uid, minion_id, **kw):
    fields = dict(gid=200000, home=f"/srv/snap/jails/{name}", shell=acc.SHELL, password="*", expire="")
    fields.update(kw)
    return acc.User(name, uid, fields["gid"], acc.GECOS_PREFIX + minion_id, fields["home"], fields["shell"],
                    fields["password"], fields["expire"])  # fmt: skip


def test_a_new_account_is_one_useradd_with_everything():
    t = tables([user("snap-a", 200000, "a")])
    cmd, changes = acc.plan(t, "snap-b", "b.example", "/srv/snap/jails/snap-b", RANGE)
    assert cmd[0] == "useradd" and cmd[-1] == "snap-b"
    opts = dict(zip(cmd[1:-1:], cmd[2:-1]))
    assert opts["-u"] == "200001", "the lowest free uid in the range"
    assert opts["-g"] == "200000", "the shared push group, no private group"
    assert opts["-c"] == "snap push account of b.example"
    assert opts["-d"] == "/srv/snap/jails/snap-b" and opts["-s"] == "/bin/sh" and opts["-p"] == "*"
    assert "-M" in cmd and "-U" not in cmd and "-r" not in cmd
    assert "SUB_UID_COUNT=0" in cmd, "no subordinate ids for a push account"
    assert changes["user"]["new"]["uid"] == 200001
    acc.applied(t, "snap-b", "b.example", "/srv/snap/jails/snap-b", cmd)
    cmd, _ = acc.plan(t, "snap-c", "c", "/j/snap-c", RANGE)
    assert dict(zip(cmd, cmd[1:]))["-u"] == "200002", "the next account sees the uid as taken"
    assert acc.plan(t, "snap-b", "b.example", "/srv/snap/jails/snap-b", RANGE) == (None, {})


def test_uids_outside_the_range_and_taken_ones_are_skipped_and_a_full_range_is_an_error():
    t = tables([user("x", 200000, "x"), user("y", 200002, "y")])
    first = acc.plan(t, "snap-n", "n", "/j/n", RANGE)[0]
    assert dict(zip(first, first[1:]))["-u"] == "200001"
    t = tables([user("x", 10, "x", gid=10)])
    with pytest.raises(acc.AccountError, match="no free uid left in snap:server:uid_range 10-10"):
        t.free_uid(10, 10)


def test_an_existing_account_is_repaired_with_one_usermod():
    old = user("snap-web1", 999, "web1", gid=999, shell=acc.NOLOGIN, expire="1", home="/old")
    t = tables([old], members=[])
    cmd, changes = acc.plan(t, "snap-web1", "web1", "/srv/snap/jails/snap-web1", RANGE)
    assert cmd[0] == "usermod" and cmd[-1] == "snap-web1"
    assert set(changes) == {"home", "shell", "expire", "groups"}
    assert ["-a", "-G", "snap-push"] == cmd[cmd.index("-a") : cmd.index("-a") + 3]
    assert "-u" not in cmd and "-g" not in cmd, "an existing account keeps its uid and group"
    acc.applied(t, "snap-web1", "web1", "/srv/snap/jails/snap-web1", cmd)
    assert acc.plan(t, "snap-web1", "web1", "/srv/snap/jails/snap-web1", RANGE) == (None, {})


def test_a_legacy_account_with_a_private_group_is_kept_as_it_is():
    legacy = user("snap-db1", 998, "db1", gid=998)
    t = tables([legacy], members=["snap-db1"])
    assert acc.plan(t, "snap-db1", "db1", "/srv/snap/jails/snap-db1", RANGE) == (None, {})
    assert t.bindings() == {"snap-db1": "db1"}


@pytest.mark.parametrize(
    "gecos, why",
    [("snap push account of web1.dc2", "server 'web1.dc2'"), ("Web admin", "an account snap did not make")],
)
def test_an_account_of_someone_else_is_never_taken_over(gecos, why):
    other = acc.User("snap-web1", 5000, 200000, gecos, "/home/x", "/bin/bash")
    t = tables([other])
    with pytest.raises(acc.AccountError, match="belongs to " + why.replace("(", r"\(")):
        acc.plan(t, "snap-web1", "web1.dc1", "/j/snap-web1", RANGE)


@pytest.mark.parametrize("value", [[200000, 299999], "200000-299999", (1000, 1000)])
def test_uid_ranges(value):
    first, last = acc.parse_uid_range(value)
    assert first <= last


@pytest.mark.parametrize("value", [[0, 10], [300, 100], "x", None, [2000, 2**31]])
def test_bad_uid_ranges_are_refused(value):
    with pytest.raises(acc.AccountError, match="uid_range"):
        acc.parse_uid_range(value)


@pytest.mark.skipif(os.geteuid() != 0, reason="writes a root-owned file")
def test_root_files_are_written_atomically_and_only_on_a_difference(tmp_path):
    path = str(tmp_path / "keys" / "snap-web1")
    assert acc.write_root_file(path, "a\n", 0o644, dry_run=True) is True
    assert not os.path.exists(path)
    assert acc.write_root_file(path, "a\n", 0o644) is True
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == 0
    before = st.st_ino
    assert acc.write_root_file(path, "a\n", 0o644) is False
    assert os.stat(path).st_ino == before, "nothing rewritten when nothing changed"
    os.chmod(path, 0o666)
    assert acc.write_root_file(path, "a\n", 0o644) is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    os.unlink(path)
    os.symlink("/etc/passwd", path)
    assert acc.write_root_file(path, "b\n", 0o644) is True
    assert not os.path.islink(path) and open(path).read() == "b\n"
    assert sorted(os.listdir(tmp_path / "keys")) == ["snap-web1"], "no temporary file left"


def test_an_account_sharing_its_uid_or_inside_a_subordinate_range_is_refused():
    """Whoever holds the uid, or may map it in a user namespace, owns the jail."""
    t = tables([user("snap-web1", 70000, "web1"), user("alias", 70000, "x", gid=5)])
    with pytest.raises(acc.AccountError, match="shares uid 70000 with another account"):
        acc.plan(t, "snap-web1", "web1", "/srv/snap/jails/snap-web1", RANGE)
    t = tables([user("snap-web1", 70000, "web1")])
    t.subuid_ranges = [(65536, 131071)]
    with pytest.raises(acc.AccountError, match=r"lies in a subordinate uid range \(65536-131071"):
        acc.plan(t, "snap-web1", "web1", "/srv/snap/jails/snap-web1", RANGE)
