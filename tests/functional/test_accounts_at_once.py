"""New push accounts made in one pass of the real account tables
(snap_core.accounts.make_at_once: shadow-utils' newusers and chpasswd), and
the same as one ``useradd`` each would make them.

Makes real users (CI runs as root); removes exactly the users and the group
it made, by name, never "whatever appeared meanwhile" (the integration tier
makes accounts beside it)."""

from __future__ import annotations

import grp
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile

import pytest

from snap_core import accounts as acc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes real accounts: needs root (CI runs as root)")

TABLES = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/subuid", "/etc/subgid")


def _free_gid(first: int) -> int:
    taken = {g.gr_gid for g in grp.getgrall()} | {p.pw_uid for p in pwd.getpwall()}
    while first in taken:
        first += 1
    return first


@pytest.fixture
def push_group():
    gid = _free_gid(291000)
    name = f"snap-t{gid}"
    jails = pathlib.Path(tempfile.mkdtemp(prefix="snap-atonce-", dir="/var/tmp"))
    jails.chmod(0o711)
    subprocess.run(["groupadd", "-g", str(gid), name], check=True)
    made: list[str] = []
    try:
        yield name, gid, jails, made
    finally:
        for user in made:
            subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)
        shutil.rmtree(jails, ignore_errors=True)


def _shadow(name: str) -> list[str]:
    for line in pathlib.Path("/etc/shadow").read_text().splitlines():
        if line.split(":", 1)[0] == name:
            return line.split(":")
    raise AssertionError(f"{name} has no /etc/shadow entry")


def _plans(tables, names, jails, uid_range):
    """Planned as snap.make_accounts plans them: on a scratch copy."""
    draft = acc.scratch(tables)
    planned = {}
    for name in names:
        home = str(jails / name)
        cmd, _ = acc.plan(draft, name, f"{name}.example.com", home, uid_range)
        planned[name] = (f"{name}.example.com", home, cmd)
        acc.applied(draft, name, f"{name}.example.com", home, cmd)
    assert not set(names) & set(tables.users), "planning takes nothing in the run's own tables"
    return planned


def _taken_meanwhile(planned, names, gid, intruder, *foreign_opts) -> int:
    """What someone else does between planning and the pass: makes
    ``names[1]`` (not snap's, uid gid+900), and has ``intruder`` take the uid
    planned for ``names[2]``, which it returns."""
    subprocess.run(["useradd", "-M", "-u", str(gid + 900), "-c", "not snap's", *foreign_opts, names[1]], check=True)
    taken_uid = acc.planned_uid(planned[names[2]][2])
    subprocess.run(["useradd", "-M", "-u", str(taken_uid), "-c", "intruder", intruder], check=True)
    return taken_uid


def test_many_accounts_in_one_pass_are_what_useradd_makes(push_group):
    group, gid, jails, made = push_group
    uid_range = (gid + 1, gid + 999)
    names = [f"snaptao{gid}x{i}" for i in range(5)]
    made.extend(names + [f"snaptao{gid}u"])
    subuid_before = pathlib.Path("/etc/subuid").read_text()
    tables = acc.Tables(group)
    planned = _plans(tables, names, jails, uid_range)

    done, error = acc.make_at_once(tables, planned)
    print(f"made at once: {done}; error: {error!r}")
    assert error == "" and done == sorted(names)

    # One more the old way (one useradd) to compare with field by field.
    single = f"snaptao{gid}u"
    cmd, _ = acc.plan(tables, single, f"{single}.example.com", str(jails / single), uid_range)
    subprocess.run(cmd, check=True, capture_output=True)
    ref = _shadow(single)
    for i, name in enumerate(names):
        pw = pwd.getpwnam(name)
        assert (pw.pw_uid, pw.pw_gid) == (gid + 1 + i, gid), "uid from the range, the shared group"
        assert pw.pw_gecos == f"snap push account of {name}.example.com"
        assert (pw.pw_dir, pw.pw_shell) == (str(jails / name), acc.SHELL)
        assert _shadow(name)[1:] == ref[1:], f"{name}: shadow entry differs from useradd's {ref}"
        st = os.lstat(jails / name)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o711), "home made by snap, root 0711"
        assert acc.plan(tables, name, f"{name}.example.com", str(jails / name), uid_range) == (None, {}), (
            "the tables handed back know the account: its own state has nothing left to do"
        )
    assert _shadow(names[0])[1] == "*", "no password login, yet not locked (sshd refuses keys of '!' accounts)"
    assert pathlib.Path("/etc/subuid").read_text() == subuid_before, "no subordinate ids for a push account"
    assert grp.getgrnam(group).gr_mem == [], "no private group, no membership needed"


def test_a_batch_newusers_refuses_changes_nothing_and_says_why(push_group):
    group, gid, jails, made = push_group
    uid_range = (gid + 1, gid + 999)
    names = [f"snaptao{gid}y{i}" for i in range(3)]
    made.extend(names)
    tables = acc.Tables(group)
    planned = _plans(tables, names, jails, uid_range)
    # newusers refuses a name useradd would too; it changes all or nothing.
    minion_id, home, cmd = planned.pop(names[1])
    planned["-bad"] = (minion_id, home, [*cmd[:-1], "-bad"])
    before = {path: pathlib.Path(path).read_bytes() for path in TABLES}

    done, error = acc.make_at_once(tables, planned)
    print(f"made at once: {done}; error: {error!r}")
    assert done == [] and "newusers failed" in error and "-bad" in error
    assert {path: pathlib.Path(path).read_bytes() for path in TABLES} == before, "the tables are untouched"
    assert names[0] not in tables.users, "the tables handed back are the real ones, not the plan"


def test_a_field_that_would_split_a_line_is_refused_before_anything_runs(push_group):
    group, gid, jails, made = push_group
    tables = acc.Tables(group)
    name = f"snaptao{gid}z"
    made.append(name)
    planned = _plans(tables, [name], jails, (gid + 1, gid + 999))
    minion_id, home, cmd = planned[name]
    planned[name] = ("evil:0:0:root", home, cmd)
    before = pathlib.Path("/etc/passwd").read_bytes()
    done, error = acc.make_at_once(tables, planned)
    assert done == [] and "':'" in error
    assert pathlib.Path("/etc/passwd").read_bytes() == before
    assert not (jails / name).exists(), "nothing made, not even the home"


def test_an_account_or_uid_taken_after_planning_is_never_updated_or_shared(push_group, tmp_path):
    """newusers updates an account it is given that exists, and takes any
    uid: the pass checks every name, uid and stale shadow line again just
    before it runs, and leaves those accounts to their own states."""
    group, gid, jails, made = push_group
    uid_range = (gid + 1, gid + 999)
    names = [f"snaptao{gid}w{i}" for i in range(4)]
    intruder = f"snaptao{gid}i"
    made.extend(names + [intruder])
    tables = acc.Tables(group)
    planned = _plans(tables, names, jails, uid_range)
    # Between planning and the pass: someone makes names[1] (not snap's), and
    # another account takes the uid planned for names[2].
    hashed = "$6$salt$" + "x" * 86
    taken_uid = _taken_meanwhile(planned, names, gid, intruder, "-p", hashed)
    # And a stale /etc/shadow line under names[3] (read from a copy: the real
    # file is not touched by hand).
    shadow = tmp_path / "shadow"
    shadow.write_text(pathlib.Path("/etc/shadow").read_text() + f"{names[3]}:{hashed}:20000:0:99999:7:::\n")
    tables.shadow = str(shadow)

    done, error = acc.make_at_once(tables, planned)
    print(f"made at once: {done}; error: {error!r}")
    assert done == [names[0]]
    assert f"{names[1]}: the name is taken" in error
    assert f"{names[2]}: uid {taken_uid} is taken by {intruder}" in error
    assert f"{names[3]}: /etc/shadow holds a stale line" in error
    other = pwd.getpwnam(names[1])
    assert (other.pw_uid, other.pw_gecos) == (gid + 900, "not snap's"), "an existing account is never rewritten"
    assert _shadow(names[1])[1] == hashed, "nor its password"
    assert [p.pw_name for p in pwd.getpwall() if p.pw_uid == taken_uid] == [intruder], "no uid is ever shared"
    with pytest.raises(KeyError):
        pwd.getpwnam(names[3])


def test_free_uids_skip_other_users_subordinate_ranges(tmp_path):
    """A uid inside someone's /etc/subuid range is theirs to map in a user
    namespace: a push account never gets one (Debian hands the third
    regular user 231072-296607, inside the default 200000-299999)."""
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nbob:165536:65536\ncarol:231072:65536\nbad line\n")
    tables = acc.Tables("root", subuid=str(subuid))
    assert tables.subuid_ranges == [(100000, 296607)], "merged"
    assert tables.free_uid(200000, 299999) == 296608
    subuid.write_text("carol:231072:65536\n")
    tables = acc.Tables("root", subuid=str(subuid))
    assert tables.free_uid(200000, 299999) == 200000
    tables._next_uid = 231072
    assert tables.free_uid(200000, 299999) == 296608
    with pytest.raises(acc.AccountError, match="no free uid left"):
        acc.Tables("root", subuid=str(subuid)).free_uid(231072, 296607)


def test_if_the_last_check_misses_a_change_the_pass_takes_it_back(push_group, monkeypatch):
    """The window between the last check and newusers, forced open: an
    account someone else made meanwhile is updated by newusers (it does
    that), and a uid someone else took meanwhile is shared. The pass reads
    back, takes back the binding it gave the foreign account (every snap
    state then refuses it) and removes the account it made with a shared
    uid, naming both."""
    group, gid, jails, made = push_group
    uid_range = (gid + 1, gid + 999)
    names = [f"snaptao{gid}r{i}" for i in range(3)]
    intruder = f"snaptao{gid}j"
    made.extend(names + [intruder])
    tables = acc.Tables(group)
    planned = _plans(tables, names, jails, uid_range)
    taken_uid = _taken_meanwhile(planned, names, gid, intruder)
    monkeypatch.setattr(acc, "_unclaimed", lambda tables, planned: {})

    done, error = acc.make_at_once(tables, planned)
    print(f"made at once: {done}; error: {error!r}")
    assert done == [names[0]]
    assert f"{names[1]}: existed (uid {gid + 900}) and newusers changed it" in error
    assert f"{names[2]}: made with uid {taken_uid}, which another account took meanwhile; removed" in error
    assert pwd.getpwnam(names[1]).pw_gecos == acc.REFUSED_GECOS
    with pytest.raises(acc.AccountError, match="an account snap did not make"):
        acc.plan(tables, names[1], f"{names[1]}.example.com", str(jails / names[1]), uid_range)
    with pytest.raises(KeyError):
        pwd.getpwnam(names[2])
    assert [p.pw_name for p in pwd.getpwall() if p.pw_uid == taken_uid] == [intruder]
