"""snap-backup: snap's command line.

The work is done by the Rust core; this module parses arguments, prints
progress to stderr and a summary at the end, and maps errors to exit codes:
0 success, 1 failure, 2 bad usage or input, 3 another run holds the lock.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

import snap_core
from snap_core import errors

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 3

Command = Callable[[argparse.Namespace], Any]
Arg = tuple[tuple, dict]
COMMANDS: dict[str, tuple[Command, str, tuple[Arg, ...]]] = {}


def arg(*names, **options) -> Arg:
    """One ``add_argument`` call, for :func:`command`."""
    return names, options


def command(name: str, help: str, *arguments: Arg):
    """Register the decorated function as subcommand ``name`` with ``arguments``."""

    def register(func):
        COMMANDS[name] = (func, help, arguments)
        return func

    return register


def progress_printer(stream=sys.stderr) -> Callable[[dict], None]:
    """A progress callback for the core: one line per report on a terminal, rewritten in place."""
    interactive = stream.isatty()

    def report(event: dict) -> None:
        end = "\n" if event["finished"] or not interactive else "\r"
        stream.write(("\x1b[2K" if interactive else "") + event["text"] + end)
        stream.flush()

    return report


def emit(result: Any, as_json: bool) -> None:
    """Print a command's result: JSON, or ``key: value`` lines."""
    if result is None:
        return
    if as_json or not isinstance(result, dict):
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return
    for key, value in result.items():
        print(f"{key}: {value}")


# -- commands ----------------------------------------------------------------


@command("version", "print the version of snap")
def cmd_version(args):
    return {"snap-backup": snap_core.__version__}


@command(
    "minute",
    "print the backup minute of an id (crc32(id) %% slots)",
    arg("id", help="minion id (or hostname)"),
    arg("--slots", type=int, default=60),
)
def cmd_minute(args):
    return {"id": args.id, "minute": snap_core.backup_minute(args.id, args.slots)}


@command(
    "keygen",
    "create an Ed25519 key pair (never overwrites)",
    arg("path", help="private key path; the public key goes to PATH.pub"),
    arg("--comment", default=""),
)
def cmd_keygen(args):
    return {"path": args.path, "fingerprint": snap_core.generate_keypair(args.path, args.comment)}


@command("check-key", "validate one OpenSSH public key (file or '-' for stdin)", arg("file"))
def cmd_check_key(args):
    if args.file == "-":
        return snap_core.parse_public_key(sys.stdin.read())
    with open(args.file, encoding="utf-8") as handle:
        return snap_core.parse_public_key(handle.read())


DEFAULT_CLIENT_CONFIG = "/etc/snap/client.json"
DEFAULT_SERVER_CONFIG = "/etc/snap/server.json"


class RunFailed(Exception):
    """A run that finished and was recorded, but did not succeed."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def _human_bytes(n):
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


@command(
    "push",
    "push this server's data to its jail on the backup server (what cron runs)",
    arg("--config", default=DEFAULT_CLIENT_CONFIG, help=f"default {DEFAULT_CLIENT_CONFIG}"),
    arg("--no-splay", action="store_true", help="start now instead of after the configured splay"),
    arg("--lock-wait", type=float, default=0.0, help="seconds to wait for a running push (default: skip at once)"),
    arg("--quiet", action="store_true", help="no progress (errors still go to stderr)"),
)
def cmd_push(args):
    progress = None if args.quiet else progress_printer()
    rec = snap_core.push_run(args.config, no_splay=args.no_splay, lock_wait=args.lock_wait, progress=progress)
    transfer = rec.get("transfer") or {}
    summary = {
        "result": rec["result"],
        "run": rec["run_id"],
        "server": rec["server"],
        "seconds": round(rec["seconds"], 1),
        "sent": _human_bytes(transfer.get("bytes_sent")),
        "files changed": transfer.get("files_transferred", 0),
        "total size": _human_bytes(transfer.get("total_size")),
    }
    for warning in rec["warnings"]:
        print(f"snap-backup push: warning: {warning}", file=sys.stderr)
    if rec["result"] == "skipped":
        raise RunFailed(f"skipped: {rec['error']}", EXIT_BUSY)
    if rec["result"] == "failed":
        usage = rec.get("error_kind") == "InvalidInput"
        raise RunFailed(rec["error"], EXIT_USAGE if usage else EXIT_FAIL)
    if rec["result"] == "partial":
        emit(summary, args.json)
        raise RunFailed("pushed, with warnings (see above)", EXIT_FAIL)
    return rec if args.json else summary


@command(
    "rotate",
    "backup server: sync complete pushes into history and rotate LEVEL (what cron runs)",
    arg("level", help="retention level, e.g. recent, daily, weekly, monthly"),
    arg("--config", default=DEFAULT_SERVER_CONFIG, help=f"default {DEFAULT_SERVER_CONFIG}"),
)
def cmd_rotate(args):
    rec = snap_core.rotate_run(args.config, args.level)
    if not args.json:
        for minion_id, sync in rec["servers"].items():
            reason = f": {sync['reason']}" if sync.get("reason") else ""
            print(f"{minion_id}: {sync['action']}{reason}")
        print(f"rotate {rec['level']}: {rec['result']} in {rec['seconds']:.1f}s")
    if rec["result"] == "failed":
        raise RunFailed(rec["error"], EXIT_FAIL)
    return rec if args.json else None


@command(
    "metrics",
    "backup server: write Prometheus textfile-collector metrics (what cron runs every 5 minutes)",
    arg("--config", default=DEFAULT_SERVER_CONFIG, help=f"default {DEFAULT_SERVER_CONFIG}"),
    arg("--out", required=True, help="the .prom file, e.g. /var/lib/prometheus/node-exporter/snap.prom"),
)
def cmd_metrics(args):
    snap_core.write_metrics(args.config, args.out)
    return None


DEFAULT_ARCHIVE_CONFIG = "/etc/snap/archive.json"


@command(
    "pack",
    "pack a directory tree (e.g. rsnapshot history) into a SquashFS image",
    arg("src", help="directory to pack"),
    arg("image", help="image to create (must not exist)"),
    arg("--compressor", default="zstd", choices=["zstd", "xz", "gzip", "lz4"]),
    arg("--level", type=int, default=None, help="compression level (default: the compressor's)"),
    arg("--block-size", type=int, default=131072),
    arg("--threads", type=int, default=None, help="compression threads (default: all cores)"),
    arg("--server", action="append", dest="servers", metavar="ID",
        help="pack only this server from every snapshot (repeatable)"),
    arg("--quiet", action="store_true", help="no progress"),
)
def cmd_pack(args):
    return snap_core.pack(
        os.fsencode(args.src),
        os.fsencode(args.image),
        compressor=args.compressor,
        level=args.level,
        block_size=args.block_size,
        threads=args.threads,
        select_depth=2 if args.servers else None,
        select_names=args.servers,
        progress=None if args.quiet else progress_printer(),
    )


def _key_sources(paths):
    sources = []
    for path in paths:
        with open(path, "rb") as handle:
            sources.append((path, handle.read()))
    return sources


@command(
    "encrypt",
    "encrypt stdin to stdout for OpenPGP public keys (SEIPDv1, AES-256, no compression)",
    arg("--recipient", "-r", action="append", required=True, metavar="KEYFILE",
        help="public key file, armored or binary (repeatable); secret keys are refused"),
    arg("--quiet", action="store_true", help="no progress"),
)
def cmd_encrypt(args):
    if os.isatty(1):
        raise errors.InvalidInput("refusing to write ciphertext to a terminal: redirect stdout")
    sources = _key_sources(args.recipient)
    summary = snap_core.encrypt_fd(0, 1, sources, progress=None if args.quiet else progress_printer())
    for key in ("plaintext_bytes", "ciphertext_bytes", "plaintext_sha256", "ciphertext_sha256"):
        print(f"{key}: {summary[key]}", file=sys.stderr)
    return None


@command(
    "archive",
    "backup server: pack the history, encrypt it to the offline public key(s), upload it under Object Lock",
    arg("--config", default=DEFAULT_ARCHIVE_CONFIG, help=f"default {DEFAULT_ARCHIVE_CONFIG}"),
    arg("--quiet", action="store_true", help="no progress (errors still go to stderr)"),
)
def cmd_archive(args):
    rec = snap_core.archive_run(args.config, progress=None if args.quiet else progress_printer())
    locks = rec.get("locks") or []
    for lock in locks:  # a lock the server dropped and snap set again: always said
        if lock["status"] != "held":
            print(f"lock {lock['status']}: {lock['detail']}", file=sys.stderr)
    if args.json:
        return rec
    for stale in rec["aborted_stale"]:
        print(f"aborted an incomplete upload of an earlier run: {stale}", file=sys.stderr)
    for stale in rec["removed_stale_work"]:
        print(f"removed the work directory of a killed run: {stale}", file=sys.stderr)
    stages = ", ".join(f"{s['stage']} {s['seconds']:.1f}s" for s in rec["stages"])
    if rec.get("chain"):
        return _chain_summary(rec, stages)
    manifest = rec["manifest"]
    archive = manifest["archive"]
    return {
        "result": rec["result"],
        "archive": archive["key"],
        "manifest": rec["manifest_key"],
        "size": _human_bytes(archive["size"]),
        "sha256": archive["sha256"],
        "retain until": archive["retain_until"],
        "storage class": archive["storage_class"],
        "locks read back": ", ".join(
            f"{'manifest' if lock['key'].endswith('.manifest.json') else 'archive'} {lock['status']} ({lock['now']})"
            for lock in locks
        ),
        "servers": ", ".join(manifest["servers"]),
        "snapshots": len(manifest["snapshots"]),
        "recipients": ", ".join(r["fingerprint"] for r in manifest["recipients"]),
        "time": f"{rec['seconds']:.1f}s ({stages})",
        **_storage_summary(rec.get("storage")),
    }


def _storage_summary(storage: dict | None) -> dict:
    if not storage:
        return {}
    return {
        "held under lock": f"{_human_bytes(storage['bytes_locked'])} in {storage['objects']} objects"
        + (f" until {storage['locked_until']}" if storage.get("locked_until") else ""),
        "storage cost": f"~{storage['monthly_usd']:.4f} USD/month (list prices; override in pillar snap:archive:prices)",
    }


def _chain_summary(rec: dict, stages: str) -> dict:
    m = rec["chain"]
    chain, image = m["chain"], m["image"]
    new = [p for p in m["pieces"] if p["link"] == chain["link"]]
    what = "base" if chain["link"] == 0 else f"link {chain['link']}"
    return {
        "result": rec["result"],
        "chain": f"{chain['id']}: {what}" + (f" (new base: {chain['rebase_reason']})" if chain["rebase_reason"] else ""),
        "manifest": rec["manifest_key"],
        "uploaded": f"{_human_bytes(sum(p['size'] for p in new))} in {len(new)} pieces "
        f"(image {_human_bytes(image['size'])}, {len(m['pieces'])} pieces in all)",
        "read": f"{image['new_files']} new files, {_human_bytes(image['bytes_read'])}; "
        f"{image['reused_files']} files reused unread",
        "dead bytes": f"{image['dead_ratio'] * 100:.1f} % (rebase at {chain['max_dead_ratio'] * 100:.0f} %)",
        "restorable until": chain["restorable_until"],
        "servers": ", ".join(m["servers"]),
        "snapshots": len(m["snapshots"]),
        "recipients": ", ".join(r["fingerprint"] for r in m["recipients"]),
        "time": f"{rec['seconds']:.1f}s ({stages})",
        **_storage_summary(rec.get("storage")),
    }


def _register_provision_commands():
    """verify-offsite and offsite-template live with the provisioning code
    (whose ``cli`` module loads the rest of it only when one of them runs)."""
    from snap_core.provision import cli as provision

    for name, help_text, args, func in (
        ("verify-offsite", provision.VERIFY_HELP, provision.VERIFY_ARGS, provision.cmd_verify_offsite),
        ("offsite-template", provision.TEMPLATE_HELP, provision.TEMPLATE_ARGS, provision.cmd_offsite_template),
    ):
        command(name, help_text, *[arg(*names, **options) for names, options in args])(func)


_register_provision_commands()

from snap_core import restore_cli  # noqa: E402,F401  (registers restore, pack-creds, verify, drill-sample)


# -- entry point ---------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="snap-backup", description="snap: fleet backups (see README)")
    top.add_argument("--json", action="store_true", help="print results as JSON")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        for names, options in arguments:
            p.add_argument(*names, **options)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    func = COMMANDS[args.command][0]
    try:
        emit(func(args), args.json)
    except RunFailed as exc:
        print(f"snap-backup {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except errors.Busy as exc:
        print(f"snap-backup {args.command}: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except (errors.InvalidInput, UnicodeDecodeError) as exc:
        print(f"snap-backup {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (errors.Error, OSError) as exc:
        print(f"snap-backup {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print(f"snap-backup {args.command}: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
