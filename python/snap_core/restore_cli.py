"""snap-backup restore, pack-creds, verify, drill-sample: the command line of
restore and proof. The work is done by the Rust core (snap-restore); this
module reads arguments, keys and passphrases, prints progress to stderr and a
summary at the end. It needs no Salt master: an operator on a fresh machine
with the offline key, its passphrase and a credentials pack can restore.

    snap-backup restore list --creds creds.age
    snap-backup restore --creds creds.age --key archive-key.asc --server db1 --to /srv/restore
    snap-backup restore --from-file ARCHIVE --key SECRET_KEY_FILE --to DIR [--select PATH ...]
    snap-backup restore --history /srv/snap/history --snapshot recent.0 --server db1 --path /etc --to DIR
    snap-backup pack-creds --credentials-file F --profile restore --config /etc/snap/archive.json --out creds.age
    snap-backup verify --creds creds.age --key drill-key.asc --sample sample.json --state-dir /var/lib/snap
"""

from __future__ import annotations

import configparser
import getpass
import json
import os
import sys

import snap_core
from snap_core import errors
from snap_core.cli import RunFailed, _human_bytes, arg, command, progress_printer

EXIT_FAIL = 1
DEFAULT_ARCHIVE_CONFIG = "/etc/snap/archive.json"
DEFAULT_SERVER_CONFIG = "/etc/snap/server.json"


# -- inputs ----------------------------------------------------------------------


def _json_arg(text: str, what: str):
    """JSON text, or the path of a JSON file."""
    if text.lstrip().startswith("{"):
        return json.loads(text)
    with open(text, encoding="utf-8") as handle:
        return json.load(handle)


def _read_secret_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read()
    return data.rstrip(b"\r\n")


def _passphrase(args, what: str, confirm: bool = False) -> bytes | None:
    """From --passphrase-file, else asked on the terminal (never echoed)."""
    path = getattr(args, "passphrase_file", None)
    if path:
        return _read_secret_file(path)
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass(f"{what}: ")
    if confirm and getpass.getpass(f"{what} (again): ") != first:
        raise errors.InvalidInput("the passphrases differ")
    return first.encode()


def _prompt(description: str):
    """Asked by the core only if the secret key is protected."""
    if not sys.stdin.isatty():
        return None
    return getpass.getpass(f"passphrase for {description}: ").encode()


def _store(args) -> snap_core.ArchiveStore:
    """The off-site target: --creds (sealed pack), --target, or the archive config."""
    settings = {}
    prefix = None
    if getattr(args, "config", None) and os.path.exists(args.config):
        with open(args.config, encoding="utf-8") as handle:
            cfg = json.load(handle)
        settings = dict(cfg.get("target") or {})
        prefix = cfg.get("prefix") or f"snap/{cfg['minion_id']}"
    if getattr(args, "target", None):
        settings.update(_json_arg(args.target, "--target"))
    creds = None
    passphrase = None
    if getattr(args, "creds", None):
        with open(args.creds, "rb") as handle:
            creds = handle.read()
        passphrase = _creds_passphrase(args)
        if passphrase is None:
            raise errors.InvalidInput("the credentials pack needs its passphrase: --creds-passphrase-file or a terminal")
    if not settings and creds is None:
        raise errors.InvalidInput("no off-site target: give --creds, --target or --config")
    store = snap_core.ArchiveStore(settings or None, creds=creds, passphrase=passphrase)
    if args.prefix is None:
        args.prefix = store.prefix or prefix or "snap/"
    return store


def _creds_passphrase(args) -> bytes | None:
    path = getattr(args, "creds_passphrase_file", None)
    if path:
        return _read_secret_file(path)
    if not sys.stdin.isatty():
        return None
    return getpass.getpass("passphrase of the credentials pack: ").encode()


def _secret_key(args) -> tuple[bytes, bytes | None]:
    if not args.key:
        raise errors.InvalidInput("restoring from an archive needs the secret key: --key SECRET_KEY_FILE")
    with open(args.key, "rb") as handle:
        key = handle.read()
    passphrase = _read_secret_file(args.passphrase_file) if args.passphrase_file else None
    return key, passphrase


def _newest_snapshot(manifest: dict, server: str) -> str:
    snaps = [s for s in manifest["snapshots"] if server in s["servers"]]
    if not snaps:
        what = manifest["archive"]["key"] if "archive" in manifest else f"chain {manifest['chain']['id']}"
        raise errors.NotFound(f"archive {what} holds nothing of {server}")
    rotated = [s for s in snaps if s["name"] != ".sync"] or snaps
    return max(rotated, key=lambda s: s["mtime"])["name"]


def _progress(args):
    return None if args.quiet else progress_printer()


# -- restore -----------------------------------------------------------------------


COMMON_OFFSITE = (
    arg("--creds", metavar="FILE", help="sealed read-only credentials (from pack-creds); passphrase asked"),
    arg("--creds-passphrase-file", metavar="FILE", help="the credentials pack's passphrase, from a file"),
    arg("--target", metavar="JSON|FILE", help="off-site target settings (bucket, region, endpoint_url, profile...)"),
    arg("--config", default=DEFAULT_ARCHIVE_CONFIG, help=f"take the target from an archive config (default {DEFAULT_ARCHIVE_CONFIG}, if present)"),
    arg("--prefix", default=None, help="key prefix of the archives (default: from the pack or config, else snap/)"),
)


@command(
    "restore",
    "restore from off-site, an archive file (--from-file) or local history (--history); 'restore list' lists archives",
    arg("action", nargs="?", choices=["list"], help="list: the archives off-site, from their manifests"),
    *COMMON_OFFSITE,
    arg("--archive", metavar="KEY", help="archive (or manifest) key, or a chain link's KEY.chain.json; default: the newest archive"),
    arg("--from-file", metavar="ARCHIVE", help="an archive file on disk (air-gapped restore); for a chain link: the directory of its pieces"),
    arg("--manifest", metavar="FILE", help="with --from-file: its manifest (default ARCHIVE.manifest.json if present); a *.chain.json for a chain link"),
    arg("--history", metavar="DIR", help="restore from this rsnapshot history (backup server), no key needed"),
    arg("--key", metavar="SECRET_KEY_FILE", help="the offline OpenPGP secret key, armored or binary (read, never written)"),
    arg("--passphrase-file", metavar="FILE", help="its passphrase, from a file (default: asked if needed)"),
    arg("--to", metavar="DIR", help="where to restore (made if missing; an existing one is merged into)"),
    arg("--select", action="append", metavar="PATH", help="path inside the archive, e.g. recent.0/db1/etc (repeatable); none: everything"),
    arg("--server", metavar="ID", help="restore this server; DIR stands for its /"),
    arg("--snapshot", metavar="NAME", help="with --server: snapshot (default: the newest holding it)"),
    arg("--path", action="append", metavar="PATH", help="with --server: only this path on the server (repeatable)"),
    arg("--overwrite", action="store_true", help="replace files that exist in DIR (default: refuse, nothing restored)"),
    arg("--work-dir", metavar="DIR", help="for the download and the decrypted image (default: next to --to)"),
    arg("--tier", default="Standard", choices=["Expedited", "Standard", "Bulk"], help="retrieval tier for archived storage classes"),
    arg("--no-request", action="store_true", help="do not request a retrieval; fail if the archive is not readable"),
    arg("--wait", type=float, default=None, metavar="SECONDS", help="wait this long for a retrieval (default: do not wait)"),
    arg("--poll", type=float, default=600.0, metavar="SECONDS", help="status check interval while waiting"),
    arg("--no-head", action="store_true", help="list: skip the per-archive HEAD (storage class, retrieval)"),
    arg("--quiet", action="store_true", help="no progress"),
)
def cmd_restore(args):
    if args.action == "list":
        return _restore_list(args)
    if not args.to:
        raise errors.InvalidInput("where to? --to DIR")
    if args.history:
        return _restore_history(args)
    if args.from_file:
        return _restore_file(args)
    return _restore_offsite(args)


def _restore_list(args):
    store = _store(args)
    rows = store.list(args.prefix, head=not args.no_head)
    if args.json:
        return rows
    if not rows:
        print(f"no archive under {args.prefix!r} on {store.describe()}")
        return None
    unchecked = next((row["unchecked"] for row in rows if row.get("unchecked")), None)
    if unchecked:
        print(f"WARNING: {unchecked}")
    for row in rows:
        if row["error"]:
            print(f"{row['key']}: ERROR {row['error']}")
            continue
        retrieval = f", retrieval {row['retrieval']}" if row.get("retrieval") else ""
        chain = row.get("chain")
        if chain:
            print(
                f"landed {row['landed']} (the store's clock; its manifest says the run began {row['created']})  "
                f"{row['key']}\n"
                f"    chain {chain['id']} link {chain['link']} (base {chain['base_created']}): "
                f"{_human_bytes(chain['link_bytes'])} uploaded for this link, {chain['pieces']} pieces needed, "
                f"{chain['dead_ratio']:.0%} of the image dead\n"
                f"    servers {', '.join(row['servers'])}; snapshots {', '.join(row['snapshots'])}\n"
                f"    {_human_bytes(row['size'])} encrypted in all ({_human_bytes(row['plaintext_size'])} image); "
                f"{row['storage_class']}; {row['lock_mode'] or 'no lock'} until {row['retain_until']}"
            )
            continue
        print(
            f"landed {row['landed']} (the store's clock; its manifest says the run began {row['created']})  "
            f"{row['key']}\n"
            f"    servers {', '.join(row['servers'])}; snapshots {', '.join(row['snapshots'])}\n"
            f"    {_human_bytes(row['size'])} encrypted ({_human_bytes(row['plaintext_size'])} image); "
            f"{row['storage_class']}{retrieval}; {row['lock_mode'] or 'no lock'} until {row['retain_until']}"
        )
    return None


def _selection_kwargs(args, manifest: dict | None):
    if args.server:
        if args.select:
            raise errors.InvalidInput("give either --select or --server, not both")
        snapshot = args.snapshot or (manifest and _newest_snapshot(manifest, args.server))
        if not snapshot:
            raise errors.InvalidInput("--server needs --snapshot here (no manifest to pick the newest)")
        return {"snapshot": snapshot, "server": args.server, "paths": [os.fsencode(p) for p in args.path or []]}
    if args.path or args.snapshot:
        raise errors.InvalidInput("--path and --snapshot go with --server")
    return {"select": [os.fsencode(p) for p in args.select or []]}


def _summary(rep: dict, what: str) -> dict:
    ex = rep["extract"]
    checks = rep["checks"]
    verified = [name for name in ("ciphertext_sha256", "mdc", "plaintext_sha256") if checks.get(name)]
    out = {
        "result": "ok",
        "restored": what,
        "to": ex["dest"],
        "archive": rep.get("archive") or "(no manifest)",
        "verified": ", ".join(verified) + ("" if checks.get("manifest") else " (no manifest: integrity, not origin)"),
        "decrypted with": checks.get("key_fingerprint"),
        "entries": f"{ex['files']} files, {ex['dirs']} dirs, {ex['hardlinks']} hard links, "
        f"{ex['symlinks']} symlinks, {ex['specials']} special",
        "data": _human_bytes(ex["bytes"]),
        "metadata": f"{ex['fake_super_applied']} from rsync fake-super, {ex['rsync_meta']['acls']} ACLs, "
        f"{ex['rsync_meta']['xattrs']} xattrs",
        "time": f"{rep['seconds']:.1f}s",
    }
    pieces = checks.get("pieces")
    if pieces:
        out["pieces"] = f"{pieces['fetched']} of {pieces['fetched'] + pieces['skipped']} fetched" + (
            f" ({pieces['skipped']} hold nothing restored: {_human_bytes(pieces['skipped_bytes'])} not read)"
            if pieces["skipped"]
            else ""
        )
        if pieces["skipped"]:
            out["verified"] += " (of the pieces fetched)"
        if pieces.get("walk_error"):
            out["pieces"] += f"; every piece, as the tables could not be walked: {pieces['walk_error']}"
    dl = checks.get("download")
    if dl:
        out["download"] = f"{_human_bytes(dl['fetched'])} in {dl['seconds']:.1f}s" + (
            f" (resumed at {_human_bytes(dl['resumed_from'])})" if dl["resumed_from"] else ""
        )
    if ex["skipped_devices"] or ex["skipped_xattrs"] or ex["rsync_meta"]["skipped"]:
        out["not restored (not root)"] = (
            f"{ex['skipped_devices']} devices, {ex['skipped_xattrs'] + ex['rsync_meta']['skipped']} xattrs"
        )
    return out


def _what(kwargs) -> str:
    if kwargs.get("server"):
        paths = ", ".join(os.fsdecode(p) for p in kwargs["paths"]) or "/"
        return f"{kwargs['server']} at {kwargs['snapshot']}: {paths}"
    sel = kwargs.get("select") or []
    return ", ".join(os.fsdecode(p) for p in sel) or "the whole image"


def _restore_offsite(args):
    store = _store(args)
    key, passphrase = _secret_key(args)
    manifest = store.manifest(args.archive) if args.archive else store.newest(args.prefix)
    kwargs = _selection_kwargs(args, manifest)
    # A chain link is restored by its manifest's key (*.chain.json).
    archive_key = manifest["key"] if "chain" in manifest else manifest["archive"]["key"]
    rep = store.restore(
        archive_key, key, args.to, passphrase=passphrase, prompt=_prompt,
        overwrite=args.overwrite, work_dir=args.work_dir, request=not args.no_request, tier=args.tier,
        wait=args.wait, poll=args.poll, progress=_progress(args), **kwargs,
    )  # fmt: skip
    return rep if args.json else _summary(rep, _what(kwargs))


def _restore_file(args):
    key, passphrase = _secret_key(args)
    manifest = None
    if args.manifest:
        with open(args.manifest, encoding="utf-8") as handle:
            manifest = json.load(handle)
    elif os.path.exists(args.from_file + ".manifest.json"):
        with open(args.from_file + ".manifest.json", encoding="utf-8") as handle:
            manifest = json.load(handle)
    kwargs = _selection_kwargs(args, manifest)
    rep = snap_core.restore_from_file(
        args.from_file, key, args.to, manifest=args.manifest, passphrase=passphrase, prompt=_prompt,
        overwrite=args.overwrite, work_dir=args.work_dir, progress=_progress(args), **kwargs,
    )  # fmt: skip
    return rep if args.json else _summary(rep, _what(kwargs))


def _restore_history(args):
    if not args.server:
        raise errors.InvalidInput("a restore from history needs --server (and --snapshot, default the newest)")
    if args.select:
        raise errors.InvalidInput("--select is for archives; from history use --server/--snapshot/--path")
    snapshot = args.snapshot
    if not snapshot:
        inv = [s for s in snap_core.history_inventory(args.history) if args.server in s["servers"] and s["name"] != ".sync"]
        if not inv:
            raise errors.NotFound(f"{args.history} holds no snapshot of {args.server}")
        snapshot = max(inv, key=lambda s: s["mtime"])["name"]
    results = []
    for path in args.path or ["/"]:
        results.append(
            snap_core.restore_from_history(
                args.history, snapshot, args.server, args.to, path=os.fsencode(path),
                overwrite=args.overwrite, work_dir=args.work_dir, progress=_progress(args),
            )  # fmt: skip
        )
    if args.json:
        return results
    files = sum(r["extract"]["files"] for r in results)
    data = sum(r["extract"]["bytes"] for r in results)
    return {
        "result": "ok",
        "restored": f"{args.server} at {snapshot}: {', '.join(args.path or ['/'])}",
        "from": args.history,
        "to": args.to,
        "entries": f"{files} files",
        "data": _human_bytes(data),
        "time": f"{sum(r['seconds'] for r in results):.2f}s",
    }


# -- credentials for a fresh machine ------------------------------------------------


def _profile_credentials(path: str, profile: str) -> dict:
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(path):
        raise errors.NotFound(f"credentials file {path} cannot be read")
    if profile not in parser:
        raise errors.InvalidInput(f"{path} has no profile [{profile}] (it has {', '.join(parser.sections())})")
    section = parser[profile]
    try:
        return {
            "access_key_id": section["aws_access_key_id"].strip(),
            "secret_access_key": section["aws_secret_access_key"].strip(),
            "session_token": (section.get("aws_session_token") or "").strip() or None,
        }
    except KeyError as exc:
        raise errors.InvalidInput(f"profile [{profile}] of {path} has no {exc.args[0]}") from None


@command(
    "pack-creds",
    "seal read-only off-site credentials under a passphrase for a fresh machine (restore --creds FILE)",
    arg("--out", required=True, metavar="FILE", help="the pack to write (armored age file; never overwritten)"),
    arg("--credentials-file", metavar="FILE", help="AWS shared credentials file (default: AWS_ACCESS_KEY_ID/... from the environment)"),
    arg("--profile", default="default", help="profile in the credentials file"),
    arg("--target", metavar="JSON|FILE", help="target settings to carry (bucket, region, endpoint_url...)"),
    arg("--config", default=None, metavar="FILE", help="take bucket/region/endpoint from this archive config"),
    arg("--prefix", default=None, help="key prefix of the archives to carry (default: from --config)"),
    arg("--note", default=None, help="free text kept in the pack (who, what for)"),
    arg("--passphrase-file", metavar="FILE", help="the passphrase, from a file (default: asked twice)"),
    arg("--work-factor", type=int, default=None, help="scrypt log2(N) (default: what age picks for about a second here)"),
)
def cmd_pack_creds(args):
    if os.path.lexists(args.out):
        raise errors.AlreadyExists(f"{args.out} exists; not overwriting it")
    target, prefix = {}, args.prefix
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            cfg = json.load(handle)
        target = dict(cfg.get("target") or {})
        prefix = prefix or cfg.get("prefix") or f"snap/{cfg['minion_id']}"
    if args.target:
        target.update(_json_arg(args.target, "--target"))
    # The pack carries its own keys: no profile or file names from this machine.
    for name in ("profile", "credentials_file", "config_file"):
        target.pop(name, None)
    if not target.get("bucket") and not target.get("vault"):
        raise errors.InvalidInput("no bucket to carry: give --config or --target")
    if args.credentials_file:
        creds = _profile_credentials(args.credentials_file, args.profile)
    else:
        creds = {
            "access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", ""),
            "secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            "session_token": os.environ.get("AWS_SESSION_TOKEN") or None,
        }
        if not creds["access_key_id"]:
            raise errors.InvalidInput("no credentials: give --credentials-file/--profile or set AWS_ACCESS_KEY_ID")
    passphrase = _passphrase(args, "passphrase for the credentials pack", confirm=True)
    if not passphrase:
        raise errors.InvalidInput("a passphrase is needed: --passphrase-file or a terminal")
    sealed = snap_core.seal_creds(
        creds["access_key_id"], creds["secret_access_key"], target, passphrase,
        session_token=creds["session_token"], prefix=prefix, note=args.note, work_factor=args.work_factor,
    )  # fmt: skip
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(sealed)
    return {
        "written": args.out,
        "access key": creds["access_key_id"],
        "target": target.get("bucket") or target.get("vault"),
        "prefix": prefix,
        "use": f"snap-backup restore list --creds {args.out}",
    }


# -- proof -------------------------------------------------------------------------------


@command(
    "verify",
    "off-site audit (locks, retention, newest archive age) and, with --key, a restore drill",
    *COMMON_OFFSITE,
    arg("--key", metavar="DRILL_KEY_FILE", help="the drill secret key (archives are also encrypted to it)"),
    arg("--passphrase-file", metavar="FILE", help="the drill key's passphrase, from a file"),
    arg("--sample", metavar="FILE", help="drill sample from 'drill-sample' on the backup server"),
    arg("--history", metavar="DIR", help="take the sample from this history (only where history and key meet)"),
    arg("--random-files", type=int, default=50),
    arg("--max-bytes", type=int, default=256 << 20, help="sample size cap in bytes"),
    arg("--min-retain-days", type=int, default=90),
    arg("--max-age-days", type=float, default=16.0, help="the newest archive may be this old (archive interval + slack)"),
    arg("--state-dir", default=None, help="keep verify-last.json and verify.jsonl here"),
    arg("--work-dir", default="/var/tmp", help="for the drill's download and image"),
    arg("--tier", default="Bulk", choices=["Expedited", "Standard", "Bulk"]),
    arg("--wait", type=float, default=None, metavar="SECONDS"),
    arg("--quiet", action="store_true"),
)
def cmd_verify(args):
    store = _store(args)
    sample = None
    secret = passphrase = None
    if args.key:
        secret, passphrase = _secret_key(args)
        if args.sample:
            with open(args.sample, encoding="utf-8") as handle:
                sample = json.load(handle)
        elif args.history:
            manifest = store.newest(args.prefix)
            sample = snap_core.drill_sample(args.history, manifest, random_files=args.random_files, max_bytes=args.max_bytes)
        else:
            raise errors.InvalidInput("the drill needs --sample (from drill-sample) or --history")
    rec = store.verify(
        args.prefix, sample=sample, secret_key=secret, passphrase=passphrase, state_dir=args.state_dir,
        work_dir=args.work_dir, min_retain_days=args.min_retain_days, max_age_days=args.max_age_days,
        tier=args.tier, wait=args.wait, progress=_progress(args),
    )  # fmt: skip
    if args.json:
        out = rec
    else:
        out = verify_summary(rec)
    if rec["result"] == "failed":
        from snap_core.cli import emit

        emit(out, args.json)
        raise RunFailed(rec.get("error") or "; ".join(_problems(rec)) or "verification failed", EXIT_FAIL)
    return out


def _problems(rec: dict) -> list[str]:
    out = list((rec.get("audit") or {}).get("problems") or [])
    out += (rec.get("drill") or {}).get("mismatches") or []
    return out


def verify_summary(rec: dict) -> dict:
    """Lines for people (also used by the Salt runner)."""
    audit = rec.get("audit") or {}
    drill = rec.get("drill")
    out = {"result": rec["result"]}
    if audit:
        out["audit"] = (
            f"{len(audit['archives'])} objects, newest {audit.get('newest')} "
            f"({audit.get('newest_age_days') or 0:.1f} days old): " + ("ok" if audit["ok"] else "; ".join(audit["problems"]))
        )
    if drill:
        out["drill"] = (
            f"{drill['files_checked']} files ({_human_bytes(drill['bytes_checked'])}) of {drill['snapshot']}, "
            f"server {drill['server']}{' (whole)' if drill['server_complete'] else ' (sampled)'}: "
            + ("match" if drill["ok"] else "; ".join(drill["mismatches"][:5]))
        )
    if rec.get("error"):
        out["error"] = rec["error"]
    return out


@command(
    "drill-sample",
    "backup server: pick a drill sample from history for the newest archive (JSON, no secrets)",
    arg("--history", required=True, metavar="DIR"),
    arg("--manifest", metavar="FILE", help="the archive's manifest (default: the newest in --manifests)"),
    arg("--manifests", default="/var/lib/snap/manifests", help="local manifest copies the archive run keeps"),
    arg("--random-files", type=int, default=50),
    arg("--max-bytes", type=int, default=256 << 20),
    arg("--seed", type=int, default=None),
    arg("--out", metavar="FILE", help="write here (default: stdout)"),
)
def cmd_drill_sample(args):
    sample = drill_sample_from(args.history, args.manifest, args.manifests, args.random_files, args.max_bytes, args.seed)
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(sample, handle)
        return {"written": args.out, "archive": sample["archive_key"], "files": sample["files"]}
    print(json.dumps(sample))
    return None


def newest_local_manifest(manifests_dir: str) -> dict:
    """The newest of the manifests the archive runs kept here (a full
    archive's or a chain link's), by the time each run began."""
    try:
        names = [n for n in os.listdir(manifests_dir) if n.endswith((".manifest.json", ".chain.json"))]
    except FileNotFoundError:
        names = []
    if not names:
        raise errors.NotFound(f"no manifest in {manifests_dir}: no archive was made here yet")
    newest = None
    for name in names:
        with open(os.path.join(manifests_dir, name), encoding="utf-8") as handle:
            manifest = json.load(handle)
        # RFC 3339 times in UTC, all written alike: their text sorts as time.
        if newest is None or (manifest.get("created") or "") > (newest.get("created") or ""):
            newest = manifest
    return newest


def drill_sample_from(history, manifest_path, manifests_dir, random_files=50, max_bytes=256 << 20, seed=None) -> dict:
    if manifest_path:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    else:
        manifest = newest_local_manifest(manifests_dir)
    return snap_core.drill_sample(history, manifest, random_files=random_files, max_bytes=max_bytes, seed=seed)
