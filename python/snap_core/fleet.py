"""Fleet data shared by snap's Salt modules: the mine payload and its re-validation.

A minion publishes its public key through the Salt mine with
:func:`mine_entry`. Whoever reads the mine (the backup server building
accounts, the master reporting) passes everything through
:func:`validate_mine`: a compromised minion controls its mine data, so every
entry is parsed again by the Rust core and only the parsed, canonical parts
are used further on.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from snap_core import _rust
from snap_core.errors import Error, InvalidInput, InvalidKey, NotFound

#: The execution-module function to list under ``mine_functions``.
MINE_FUNCTION = "snap.pubkey"

_MAX_KEY_TEXT = 8192  # snap_core.sshkey::MAX_KEY_TEXT


def read_public_key(key_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``key_path + '.pub'``; raise NotFound/InvalidKey naming the file."""
    pub = os.fspath(key_path) + ".pub"
    try:
        with open(pub, encoding="utf-8") as handle:
            # One byte more than the core accepts, so an oversized file is refused by it.
            text = handle.read(_MAX_KEY_TEXT + 1)
    except FileNotFoundError as exc:
        raise NotFound(f"{pub} does not exist: apply state snap.keypair first") from exc
    except UnicodeDecodeError as exc:
        raise InvalidKey(f"{pub} is not UTF-8 text: not an OpenSSH public key") from exc
    try:
        return _rust.parse_public_key(text)
    except Error as exc:
        raise type(exc)(f"{pub}: {exc}") from None


def mine_entry(minion_id: str, key_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mine payload for this minion: the validated key, its fingerprint and account."""
    _rust.validate_minion_id(minion_id)
    key = read_public_key(key_path)
    line = f"{key['type']} {key['key']}"
    return {
        "id": minion_id,
        "account": _rust.account_name(minion_id),
        "line": line,
        "type": key["type"],
        "fingerprint": key["fingerprint"],
        "comment": key["comment"],
        "bits": key["bits"],
    }


def validate_entry(minion_id: str, entry: Any) -> dict[str, Any]:
    """Re-validate one mine entry received from ``minion_id``; raise a ValueError naming the problem."""
    _rust.validate_minion_id(minion_id)
    if not isinstance(entry, Mapping):
        raise InvalidKey(f"mine data of {minion_id!r} is not a mapping but {type(entry).__name__}")
    line = entry.get("line")
    if not isinstance(line, str):
        raise InvalidKey(f"mine data of {minion_id!r} has no public key line")
    try:
        key = _rust.parse_public_key(line)
    except Error as exc:
        raise type(exc)(f"mine key of {minion_id!r}: {exc}") from None
    claimed_id = entry.get("id")
    if claimed_id != minion_id:
        raise InvalidKey(f"mine data of {minion_id!r} claims to be from {claimed_id!r}")
    claimed_fp = entry.get("fingerprint")
    if claimed_fp is not None and claimed_fp != key["fingerprint"]:
        raise InvalidKey(
            f"mine key of {minion_id!r}: fingerprint {claimed_fp!r} does not match the key ({key['fingerprint']})"
        )
    return {
        "type": key["type"],
        "key": key["key"],
        "line": f"{key['type']} {key['key']}",
        "fingerprint": key["fingerprint"],
        "bits": key["bits"],
    }


def validate_mine(
    mine: Mapping[str, Any], overrides: Mapping[str, str] | None = None, bound: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Re-validate ``mine.get('*', 'snap.pubkey')``.

    Returns ``{"accepted": {id: key + account}, "rejected": {id: reason},
    "names": {id: account}}``. Entries that fail validation, and every id
    that would share an account name with another, are rejected with a
    message naming the problem; the rest of the fleet is unaffected. Names
    are assigned over every usable id in the mine, a bad key or not (a server
    whose key is bad this time keeps its name, and nobody else takes it);
    ``names`` holds them all. ``bound`` (``{account: minion id}`` of the
    accounts that exist) keeps every account with the server it was made for.
    """
    accepted: dict[str, dict[str, Any]] = {}
    rejected: dict[str, str] = {}
    ids: list[str] = []
    for minion_id in sorted(mine, key=str):
        if not isinstance(minion_id, str):
            rejected[repr(minion_id)] = "minion id is not a string"
            continue
        ids.append(minion_id)
        try:
            accepted[minion_id] = validate_entry(minion_id, mine[minion_id])
        except ValueError as exc:
            rejected[minion_id] = str(exc)
    names, refused = _rust.assign_accounts(ids, dict(overrides or {}), dict(bound or {}))
    for minion_id, reason in refused.items():
        accepted.pop(minion_id, None)
        rejected.setdefault(minion_id, reason)
    for minion_id, key in accepted.items():
        key["account"] = names[minion_id]
    return {"accepted": accepted, "rejected": rejected, "names": names}


def backup_assignment(snap: Mapping[str, Any]) -> tuple[list[str], dict[str, str]] | None:
    """Pillar ``snap:backup_servers`` and ``snap:assignment`` as the assignment
    reads them (the ext_pillar on the master and every backup server read
    them alike): the sorted backup server ids and the explicit map, or None
    with one backup server. Raises InvalidInput naming what is malformed."""
    servers = snap.get("backup_servers")
    if not servers:
        return None
    if not isinstance(servers, dict) or not all(isinstance(v, dict) for v in servers.values()):
        raise InvalidInput(
            f"snap:backup_servers must map each backup server's minion id to {{host, port, host_keys}}, got {servers!r}"
        )
    explicit = snap.get("assignment") or {}
    if not isinstance(explicit, dict) or not all(isinstance(v, str) for v in explicit.values()):
        raise InvalidInput(f"snap:assignment must map minion ids to backup server ids, got {explicit!r}")
    return sorted(str(k) for k in servers), {str(k): v for k, v in explicit.items()}


def assigned_backup_server(minion_id: str, backups: list[str], explicit: Mapping[str, str]) -> str:
    """The backup server ``minion_id`` pushes to; a backup server is its own
    (it pushes nowhere, and no backup server makes it an account)."""
    if minion_id in backups:
        return minion_id
    # Only this server's pin crosses into the core (it reads no other): the
    # whole map per call made 10,000 calls with 1,000 pins cost 5-8 s
    # (docs/BENCHMARKS.md, Fleet scale).
    pinned = {minion_id: explicit[minion_id]} if minion_id in explicit else {}
    return _rust.assign_backup_server(minion_id, backups, pinned)


# -- the master's own record of assignments ------------------------------------------------------


def _assigned_path(cachedir, minion_id: str) -> str:
    _rust.validate_minion_id(minion_id)  # a file name: letters, digits, '.', '-', '_'; no '..'
    return os.path.join(os.fspath(cachedir), "snap", "assigned", minion_id)


def assigned_ever(cachedir, minion_id: str) -> list[str]:
    """Every backup server the master has assigned ``minion_id`` to (its own
    record under its cachedir, which neither the server nor any backup
    server can write); [] when there is none or it cannot be read."""
    try:
        with open(_assigned_path(cachedir, minion_id), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return []
    return [str(b) for b in data if isinstance(b, str)][:100] if isinstance(data, list) else []


def remember_assignment(cachedir, minion_id: str, backup: str) -> bool:
    """Add ``backup`` to the master's record of ``minion_id``'s backup
    servers (written only when it is new, atomically). True when written."""
    known = assigned_ever(cachedir, minion_id)
    if backup in known:
        return False
    path = _assigned_path(cachedir, minion_id)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump([*known, backup][-100:], handle)
    os.replace(tmp, path)
    return True
