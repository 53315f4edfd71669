"""``snap-backup verify-offsite`` and ``offsite-template``.

``snap_core.cli`` registers these beside every other command, so this module
imports the rest of the package only when one of them runs.
"""

from __future__ import annotations

import json
import sys

VERIFY_HELP = "read the off-site bucket/vault configuration back and report drift from the policy (exit 1 on drift)"
VERIFY_ARGS: tuple = (
    (
        ("--config",),
        {
            "required": True,
            "help": "JSON file: the snap:offsite settings, or an object with an 'offsite' key "
            "(and optionally 'archive', pillar snap:archive, which says whether chains need room)",
        },
    ),
    (
        ("--admin-profile",),
        {"default": None, "help": "AWS profile of the administrator/auditor identity that reads it"},
    ),
)
TEMPLATE_HELP = (
    "write the off-site policies and a CloudFormation template as JSON files (for provisioning outside Salt)"
)
TEMPLATE_ARGS: tuple = (
    (
        ("--config",),
        {"required": True, "help": "JSON file: the snap:offsite settings, or an object with an 'offsite' key"},
    ),
    (("--out",), {"required": True, "help": "directory to write into"}),
)


def _settings_from_file(path: str) -> dict:
    """The snap:offsite settings in ``path``. ``chains`` (whether the backup
    server archives chains, which the cap on retention must leave room for)
    unless given is decided as ``salt-run snap.provision`` decides it: from
    an ``archive`` object beside ``offsite`` (pillar ``snap:archive``), and
    without one as its default (chains, for an S3 target), said on stderr."""
    from snap_core.chains import provisioning_chains  # noqa: PLC0415
    from snap_core.provision.spec import ProvisionError  # noqa: PLC0415

    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    archive = None
    if isinstance(data, dict) and isinstance(data.get("offsite"), dict):
        archive = data.get("archive")
        data = data["offsite"]
    if isinstance(data, dict):
        data = dict(data)
        try:
            for note in provisioning_chains(data, archive, path):
                print(f"note: {note}", file=sys.stderr)
        except ValueError as exc:
            raise ProvisionError(f"{path}: {exc}") from None
    return data


def cmd_verify_offsite(args) -> None:
    """``snap-backup verify-offsite``: prints the report, raises
    :class:`OffsiteDrift` (exit 1) when anything drifted."""
    from snap_core.provision.drift import format_report, verify  # noqa: PLC0415
    from snap_core.provision.spec import OffsiteDrift  # noqa: PLC0415

    settings = _settings_from_file(args.config)
    if getattr(args, "admin_profile", None):
        settings = dict(settings, admin_profile=args.admin_profile)
    report = verify(settings)
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_report(report))
    if not report["ok"]:
        raise OffsiteDrift(f"{len(report['drift'])} difference(s) from the policy: " + "; ".join(report["drift"]))


def cmd_offsite_template(args) -> dict:
    """``snap-backup offsite-template``: write the documents, return the paths."""
    from snap_core.provision.templates import template  # noqa: PLC0415

    return {"written": template(_settings_from_file(args.config), args.out)}


def main_verify(argv=None) -> int:  # pragma: no cover - convenience entry
    """Standalone ``python -m snap_core.provision --config FILE``."""
    import argparse  # noqa: PLC0415

    from snap_core.provision.spec import OffsiteDrift, ProvisionError  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="snap-verify-offsite", description=VERIFY_HELP)
    parser.add_argument("--json", action="store_true")
    for names, options in VERIFY_ARGS:
        parser.add_argument(*names, **options)
    args = parser.parse_args(argv)
    try:
        cmd_verify_offsite(args)
    except OffsiteDrift as exc:
        print(f"verify-offsite: {exc}", file=sys.stderr)
        return 1
    except (ProvisionError, OSError, ValueError) as exc:
        print(f"verify-offsite: {exc}", file=sys.stderr)
        return 2
    return 0
