"""Push accounts on the backup server: read the account tables once, plan
each account as one shadow-utils command.

A backup server may hold 10,000 push accounts. Salt's ``user.present`` would
run ``useradd``, ``usermod -G``, ``usermod -c`` and a password change for each
new account and parse all of ``/etc/group`` for every one it checks; here the
tables are read once per state run (:class:`Tables`), every account is
checked against that snapshot in constant time, and an account that needs
anything gets exactly one command (``useradd`` or ``usermod`` with every
option at once). The snapshot is updated with what the command did, so the
next account sees the uid as taken.

New accounts get a uid from a range chosen for them (pillar
``snap:server:uid_range``, default 65536-99999: far from the system range
and the regular users, below other users' subordinate ids) and the shared push group as their primary
group; no private group per account. Accounts made before keep their uid and
group: they are members of the push group, which is all snap needs.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import dataclasses
import grp
import os
import pwd
import stat
import subprocess
import tempfile
from collections.abc import Iterable

#: The comment that binds an account to the minion id it was made for.
GECOS_PREFIX = "snap push account of "
SHELL = "/bin/sh"
#: The comment that takes back a binding snap gave an account by mistake
#: (newusers updated an account that appeared while it ran).
REFUSED_GECOS = "not a snap push account (changed by snap by mistake)"
NOLOGIN = "/usr/sbin/nologin"


class AccountError(Exception):
    """An account that cannot be made or repaired; the message says why."""


@dataclasses.dataclass
class User:
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str
    password: str = ""
    expire: str = ""

    @property
    def bound_to(self) -> str | None:
        if self.gecos.startswith(GECOS_PREFIX):
            return self.gecos[len(GECOS_PREFIX) :].split(",")[0]
        return None


def _read_shadow(path: str) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 8:
                    out[fields[0]] = (fields[1], fields[7])
    except FileNotFoundError:
        pass
    return out


def _read_subids(path: str) -> list[tuple[int, int]]:
    """The subordinate id ranges of ``/etc/subuid`` (``name:first:count``),
    merged, as sorted ``(first, last)``."""
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit() and int(fields[2]) > 0:
                    out.append((int(fields[1]), int(fields[1]) + int(fields[2]) - 1))
    except FileNotFoundError:
        pass
    merged: list[tuple[int, int]] = []
    for first, last in sorted(out):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


class Tables:
    """One read of the user, group and shadow tables."""

    def __init__(self, group: str, shadow: str = "/etc/shadow", subuid: str = "/etc/subuid"):
        self.group = group
        self.shadow = shadow
        self.subuid = subuid
        self.users: dict[str, User] = {}
        #: uid -> how many accounts hold it.
        self.uid_holders: dict[int, int] = {}
        shadow_of = _read_shadow(shadow)
        # A uid in another user's subordinate range is that user's to map in
        # a user namespace (and so to own the jail): never given to an account.
        self.subuid_ranges = _read_subids(subuid)
        for pw in pwd.getpwall():
            password, expire = shadow_of.get(pw.pw_name, ("", ""))
            self.users[pw.pw_name] = User(
                pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_gecos, pw.pw_dir, pw.pw_shell, password, expire
            )
            self.uid_holders[pw.pw_uid] = self.uid_holders.get(pw.pw_uid, 0) + 1
        try:
            gr = grp.getgrnam(group)
            self.gid: int | None = gr.gr_gid
            self.members = set(gr.gr_mem)
        except KeyError:
            self.gid, self.members = None, set()
        self._next_uid: int | None = None

    def push_accounts(self) -> Iterable[User]:
        """Every account of the push group (primary group or member)."""
        for user in self.users.values():
            if user.name in self.members or (self.gid is not None and user.gid == self.gid):
                yield user

    def bindings(self) -> dict[str, str]:
        """``{account: minion id it was made for}`` of the push accounts."""
        return {u.name: u.bound_to for u in self.push_accounts() if u.bound_to is not None}

    def in_group(self, user: User) -> bool:
        return user.name in self.members or (self.gid is not None and user.gid == self.gid)

    def subordinate(self, uid: int) -> tuple[int, int] | None:
        """The subordinate uid range (``/etc/subuid``) ``uid`` lies in, if any."""
        i = bisect.bisect_right(self.subuid_ranges, (uid, float("inf"))) - 1
        if i >= 0 and self.subuid_ranges[i][0] <= uid <= self.subuid_ranges[i][1]:
            return self.subuid_ranges[i]
        return None

    def free_uid(self, first: int, last: int) -> int:
        """The lowest uid in ``first..last`` nobody has and no subordinate
        range holds (amortised constant time)."""
        uid = max(first, self._next_uid or first)
        while uid <= last:
            if uid in self.uid_holders:
                uid += 1
            elif sub := self.subordinate(uid):
                uid = sub[1] + 1
            else:
                break
        if uid > last:
            raise AccountError(
                f"no free uid left in snap:server:uid_range {first}-{last}: widen or move the range "
                f"({len([u for u in self.uid_holders if first <= u <= last])} uids in it are taken, the rest lie in "
                "other users' subordinate ranges, /etc/subuid)"
            )
        self._next_uid = uid
        return uid


def parse_uid_range(value) -> tuple[int, int]:
    """Pillar ``snap:server:uid_range``: ``[first, last]`` or ``"first-last"``."""
    if isinstance(value, str) and "-" in value:
        value = value.split("-", 1)
    try:
        first, last = (int(v) for v in value)
    except (TypeError, ValueError):
        raise AccountError(f"snap:server:uid_range must be [first, last], got {value!r}") from None
    if not 1000 <= first <= last < 2**31 - 1:
        raise AccountError(
            f"snap:server:uid_range {first}-{last} is not a range of regular uids (1000 <= first <= last < 2^31-1)"
        )
    return first, last


def plan(
    tables: Tables, account: str, minion_id: str, home: str, uid_range: tuple[int, int]
) -> tuple[list[str] | None, dict]:
    """The one command that makes ``account`` what it must be, and the changes it makes.

    ``(None, {})`` when the account is right already. Raises
    :class:`AccountError` when the name belongs to another server or to an
    account that is not snap's: nothing is ever taken over."""
    gecos = GECOS_PREFIX + minion_id
    if tables.gid is None:
        raise AccountError(f"group {tables.group} does not exist")
    user = tables.users.get(account)
    if user is None:
        uid = tables.free_uid(*uid_range)
        # -l: no lastlog/faillog record (a sparse write at uid*292 bytes per
        # account); sshd's login records still work.
        cmd = ["useradd", "-M", "-l", "-u", str(uid), "-g", str(tables.gid), "-c", gecos, "-d", home, "-s", SHELL]
        cmd += ["-p", "*", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", account]
        return cmd, {"user": {"old": None, "new": {"name": account, "uid": uid, "group": tables.group}}}
    if user.bound_to != minion_id:
        whose = f"server {user.bound_to!r}" if user.bound_to else "an account snap did not make"
        raise AccountError(f"account {account} exists and belongs to {whose} ({user.gecos!r}); it is left alone")
    if tables.uid_holders.get(user.uid, 1) > 1:
        raise AccountError(
            f"account {account} shares uid {user.uid} with another account: whoever holds that uid owns its "
            "jail; give one of them another uid by hand"
        )
    sub = tables.subordinate(user.uid)
    if sub:
        raise AccountError(
            f"uid {user.uid} of account {account} lies in a subordinate uid range ({sub[0]}-{sub[1]}, "
            "/etc/subuid): the user it belongs to can own the jail from a user namespace; move that range "
            "or the account (snap:server:uid_range)"
        )
    opts: list[str] = []
    changes: dict = {}

    def want(field, old, new, *flag):
        if old != new:
            changes[field] = {"old": old, "new": new}
            opts.extend(flag)

    want("home", user.home, home, "-d", home)
    want("shell", user.shell, SHELL, "-s", SHELL)
    want("password", "locked" if user.password == "*" else "other", "locked", "-p", "*")
    want("expire", user.expire or None, None, "-e", "")
    if not tables.in_group(user):
        changes["groups"] = {"old": None, "new": tables.group}
        opts += ["-a", "-G", tables.group]
    if not opts:
        return None, {}
    return ["usermod", *opts, account], changes


def planned_uid(cmd: list[str]) -> int:
    """The uid a ``useradd`` command from :func:`plan` gives."""
    return int(cmd[cmd.index("-u") + 1])


def applied(tables: Tables, account: str, minion_id: str, home: str, cmd: list[str]) -> None:
    """Record in ``tables`` what ``cmd`` (from :func:`plan`) did."""
    user = tables.users.get(account)
    if cmd[0] == "useradd":
        uid = planned_uid(cmd)
        tables.users[account] = User(account, uid, tables.gid or 0, GECOS_PREFIX + minion_id, home, SHELL, "*", "")
        tables.uid_holders[uid] = tables.uid_holders.get(uid, 0) + 1
        return
    if user is not None:
        user.home, user.shell, user.password, user.expire = home, SHELL, "*", ""
        if "-G" in cmd:
            tables.members.add(account)


#: Lines ``newusers`` prints for every account when it asks PAM for a
#: password it was not given (shadow-utils 4.13, Debian 12). Later versions
#: skip the empty password without a word (and write no shadow line for it;
#: ``chpasswd -e`` then adds one with ``*``).
_PAM_NOISE = (
    "No password has been supplied.",
    "pam_chauthtok() failed",
    "Authentication token manipulation error",
    "password not changed",
)


def scratch(tables: Tables) -> Tables:
    """A copy of ``tables`` to plan on: what :func:`applied` records there
    (uids handed out) is not taken for real by anyone reading ``tables``."""
    out = copy.copy(tables)
    out.users = {name: copy.copy(user) for name, user in tables.users.items()}
    out.members, out.uid_holders = set(tables.members), dict(tables.uid_holders)
    return out


def _unclaimed(tables: Tables, planned: dict[str, tuple[str, str, list[str]]]) -> dict[str, str]:
    """Why each planned account must not go to ``newusers`` (it creates *or
    updates* the accounts it is given, and does not check uids): its name or
    uid already taken (by the tables now, or by a directory the tables do not
    list), a stale ``/etc/shadow`` line under its name (newusers would keep
    its hash), or a home that is not the root-owned directory made for it."""
    shadow_names = set(_read_shadow(tables.shadow))
    refused = {}
    for account, (_, home, cmd) in planned.items():
        uid = planned_uid(cmd)
        try:
            pwd.getpwnam(account)
            refused[account] = "the name is taken"
            continue
        except KeyError:
            pass
        try:
            refused[account] = f"uid {uid} is taken by {pwd.getpwuid(uid).pw_name}"
            continue
        except KeyError:
            pass
        if account in shadow_names:
            refused[account] = "/etc/shadow holds a stale line for the name"
            continue
        try:
            st = os.lstat(home)
        except OSError as exc:
            refused[account] = f"home {home}: {exc.strerror}"
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            refused[account] = f"home {home} is not a root-owned directory"
    return refused


def make_at_once(tables: Tables, planned: dict[str, tuple[str, str, list[str]]]) -> tuple[list[str], str]:
    """Make several new accounts in one pass of the tables.

    ``planned`` maps each account to ``(minion id, home, useradd command)``
    as :func:`plan` gave them (on a :func:`scratch` copy). One ``useradd``
    per account rewrites all four tables each time (O(N) each, so O(N^2) for
    a fleet); here shadow-utils' own tools write them once: ``newusers -r``
    (``-r``: no subordinate uids, which ``useradd`` gets from
    ``SUB_UID_COUNT=0``; the uid and group are given, so it changes nothing
    else) makes every user with a locked password (``!``), then ``chpasswd
    -e`` sets ``*`` for the ones read back as made, as ``useradd -p *``
    would. Homes are made first, root-owned 0711, so ``newusers`` neither
    makes nor chowns them.

    ``newusers`` updates an account it is given that exists, and takes any
    uid: every name, uid, stale shadow line and home is checked again just
    before it runs (:func:`_unclaimed`), and what was made is read back from
    the tables, never assumed (its uid held by no one else). It writes all
    or nothing for an error it finds before writing. Returns ``(accounts
    made, error)``: made means the user exists as planned, even if its
    password is still ``!`` (then the error says so, and its own state's
    ``usermod -p *`` finishes it). ``tables`` is read again in every case;
    an account not made is left to its own state (one ``useradd``)."""
    made: list[str] = []
    refused: list[str] = []
    problems: list[str] = []
    sent: list[str] = []
    try:
        lines, bad = [], {}
        for account, (minion_id, home, cmd) in sorted(planned.items()):
            fields = [account, "", str(planned_uid(cmd)), str(tables.gid), GECOS_PREFIX + minion_id, home, SHELL]
            if any(":" in f or "\n" in f for f in fields):
                bad[account] = "a field holds ':' or a newline"
            lines.append((account, ":".join(fields) + "\n"))
        for account, (_, home, _) in planned.items():
            if account not in bad:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(home, 0o711)
                    os.chown(home, 0, 0)
                    os.chmod(home, 0o711)
        bad.update(_unclaimed(tables, {a: p for a, p in planned.items() if a not in bad}))
        refused = [f"{a}: {why}" for a, why in sorted(bad.items())]
        sent = [account for account, _ in lines if account not in bad]
        if sent:
            todo = "".join(line for account, line in lines if account not in bad)
            res = _run(["newusers", "-r"], todo)
            noise = [ln for ln in res.stderr.splitlines() if ln.strip() and not any(n in ln for n in _PAM_NOISE)]
            if res.returncode and noise:
                problems.append(f"newusers failed (exit {res.returncode}): {' / '.join(noise[:3])}")
            fresh = Tables(tables.group, tables.shadow, tables.subuid)
            made = _read_back(fresh, planned, tables.gid)
            problems += _undo_astray(fresh, {a: planned[a] for a in sent if a not in made})
            if made:
                res = _run(["chpasswd", "-e"], "".join(f"{account}:*\n" for account in made))
                if res.returncode:
                    problems.append(f"chpasswd -e failed (exit {res.returncode}): {res.stderr.strip()[:300]}")
    except OSError as exc:
        problems.append(f"{exc.filename or 'the account tables'}: {exc.strerror or exc}")
    finally:
        try:
            fresh = Tables(tables.group, tables.shadow, tables.subuid)
            tables.__dict__.update(fresh.__dict__)
        except Exception as exc:  # noqa: BLE001 - reported; the run's states then fail on their own
            problems.append(f"cannot read the account tables again: {exc}")
    pending = [a for a in made if getattr(tables.users.get(a), "password", None) != "*"]
    if pending:
        problems.append(f"{len(pending)} made with their password still locked (their own states set '*')")
    # What went wrong with the pass itself first; then the accounts left to their own states.
    problems += refused
    shown = problems[:6]
    more = f" (+{len(problems) - 6} more)" if len(problems) > 6 else ""
    return sorted(made), "; ".join(shown) + more


def _run(cmd: list[str], text: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=text, capture_output=True, text=True, errors="replace", check=False)


def _undo_astray(fresh: Tables, astray: dict[str, tuple[str, str, list[str]]]) -> list[str]:
    """Accounts given to ``newusers`` that the tables do not hold as planned.

    Two ways that happens while it runs (someone else made the account, or
    took the uid, after the last check): ``newusers`` then *updated* an
    account that was not snap's (its comment now binds it to the server,
    and the next run would complete it), or made snap's account with a uid
    another account holds (the other could own its jail). The binding is
    taken back (comment :data:`REFUSED_GECOS`: every snap state
    refuses it), and an account snap just made with a shared uid is
    removed; both are named."""
    out = []
    for account, (minion_id, _, cmd) in sorted(astray.items()):
        user = fresh.users.get(account)
        uid = planned_uid(cmd)
        if user is None:
            out.append(f"{account}: not made")
        elif user.uid == uid and user.bound_to == minion_id and fresh.uid_holders.get(uid, 0) > 1:
            res = _run(["userdel", account], "")
            out.append(f"{account}: made with uid {uid}, which another account took meanwhile; removed"
                       + ("" if res.returncode == 0 else f" FAILED ({res.stderr.strip()[:200]}): remove it by hand"))  # fmt: skip
        elif user.bound_to == minion_id:
            res = _run(["usermod", "-c", REFUSED_GECOS, account], "")
            out.append(f"{account}: existed (uid {user.uid}) and newusers changed it; its binding to {minion_id} "
                       "is taken back, check its home and shell by hand"
                       + ("" if res.returncode == 0 else f"; taking it back FAILED ({res.stderr.strip()[:200]})"))  # fmt: skip
        else:
            out.append(f"{account}: not as planned after newusers")
    return out


def _read_back(fresh: Tables, planned: dict[str, tuple[str, str, list[str]]], gid: int | None) -> list[str]:
    """The planned accounts the tables now hold exactly as planned, each
    with a uid no other account has."""
    holders = fresh.uid_holders
    made = []
    for account, (minion_id, home, cmd) in planned.items():
        user = fresh.users.get(account)
        uid = planned_uid(cmd)
        if (
            user is not None
            and (user.uid, user.gid, user.bound_to, user.home, user.shell) == (uid, gid, minion_id, home, SHELL)
            and holders.get(uid) == 1
        ):
            made.append(account)
    return made


def write_root_file(path: str, text: str, mode: int, dry_run: bool = False) -> bool:
    """Make ``path`` a root-owned regular file holding ``text`` with ``mode``.

    Compares first and writes only on a difference, atomically (a temporary
    file beside it, renamed over it): a reader never sees half a key file.
    Returns whether anything changed (or would)."""
    data = text.encode()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        fd = None
    except OSError:  # a symlink or worse where the file belongs: replace it
        fd = None
    if fd is not None:
        try:
            st = os.fstat(fd)
            same = (
                stat.S_ISREG(st.st_mode)
                and st.st_uid == 0
                and st.st_gid == 0
                and (st.st_mode & 0o7777) == mode
                and st.st_size == len(data)
                and os.read(fd, len(data) + 1) == data
            )
        finally:
            os.close(fd)
        if same:
            return False
    if dry_run:
        return True
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp_fd, tmp = tempfile.mkstemp(prefix=".snap-", dir=directory)
    try:
        with os.fdopen(tmp_fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            os.fchown(handle.fileno(), 0, 0)
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True
