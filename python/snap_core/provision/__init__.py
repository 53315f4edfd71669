"""Off-site provisioning: the bucket (or vault), its lock, its lifecycle, and
the backup server's put-only identity.

Run by an administrator identity (the Salt master through ``salt-run
snap.provision`` or the state ``snap.offsite_present``), never by the backup
server. Everything here works from one *spec* (the pillar ``snap:offsite``,
see :func:`load_spec`) and one set of document builders: the policies that
:func:`provision` applies are the ones :func:`verify` reads back and compares,
the ones :func:`template` writes for CloudFormation, and the ones
:func:`check_policies` proves statically. There is no second copy.

The parts, each in its own module:

- :mod:`.spec`: the settings validated into an :class:`OffsiteSpec`, shared constants;
- :mod:`.policies`: every document (bucket, identity, trust, vault policies, lifecycle...);
- :mod:`.checker`: the static policy checker (IAM's evaluation rules);
- :mod:`.aws`: the administrator's clients, reading the configuration back;
- :mod:`.compare`: equality of documents, and whether a change would weaken a policy;
- :mod:`.plan` and :mod:`.vault`: the steps that bring it to the spec;
- :mod:`.drift`: ``verify-offsite``, every difference from the spec;
- :mod:`.templates`: the JSON documents and CloudFormation, for provisioning outside Salt;
- :mod:`.credentials`: the backup server's AWS profile files;
- :mod:`.cli`: the ``snap-backup`` subcommands.

Why Python and not Rust: the documents are plain data consumed only by
Python callers (boto3 on the master, Salt, the CLI, the tests); putting them
in the Rust crate would add a JSON round trip through PyO3 and a wheel rebuild
for each policy change, and give the backup server's binary code it must never
run. The one number both sides must agree on, the minimum retention, is read
from the core (``OFFSITE_MIN_RETAIN_DAYS``).

boto3 is imported lazily: a Salt master has it (Salt's own AWS modules need
it); anywhere else provisioning says how to get it. So are the parts: a name
below is imported from its module when first used (PEP 562), so that
``snap-backup restore``, which registers ``verify-offsite`` beside it, does not
load the policy checker on every start (about 45 ms of each run).
"""

from __future__ import annotations

import importlib

# Every public name, and the module of this package that defines it.
_HOME = {
    "Aws": "aws",
    "identity_extra_policies": "aws",
    "principal_of": "aws",
    "read_s3": "aws",
    "_condition_holds": "checker",
    "check_policies": "checker",
    "evaluate": "checker",
    "Forbidden": "checker",
    "forbidden_requests": "checker",
    "pipeline_requests": "checker",
    "cmd_offsite_template": "cli",
    "cmd_verify_offsite": "cli",
    "main_verify": "cli",
    "TEMPLATE_ARGS": "cli",
    "TEMPLATE_HELP": "cli",
    "VERIFY_ARGS": "cli",
    "VERIFY_HELP": "cli",
    "_policy_text": "compare",
    "policy_weakening": "compare",
    "same": "compare",
    "fingerprint": "credentials",
    "render_aws_files": "credentials",
    "resolve_secrets": "credentials",
    "write_private": "credentials",
    "format_report": "drift",
    "verify": "drift",
    "provision": "plan",
    "Provisioner": "plan",
    "Step": "plan",
    "bucket_policy": "policies",
    "documents": "policies",
    "encryption_configuration": "policies",
    "identity_policy": "policies",
    "lifecycle_configuration": "policies",
    "lock_configuration": "policies",
    "OWNERSHIP": "policies",
    "PUBLIC_ACCESS_BLOCK": "policies",
    "trust_policy": "policies",
    "vault_access_policy": "policies",
    "vault_lock_policy": "policies",
    "ARCHIVE_CLASSES": "spec",
    "CONFIRM_PHRASE": "spec",
    "GLACIER_ACTIONS_NEEDED": "spec",
    "GLACIER_FORBIDDEN_ACTIONS": "spec",
    "GLACIER_FORBIDDEN_READS": "spec",
    "IDENTITY_POLICY_NAME": "spec",
    "IdentitySpec": "spec",
    "load_spec": "spec",
    "MAX_RETAIN_DAYS": "spec",
    "MIN_RETAIN_DAYS": "spec",
    "MIN_STORAGE_DAYS": "spec",
    "OffsiteDrift": "spec",
    "OffsiteSpec": "spec",
    "ProvisionError": "spec",
    "S3_BUCKET_ACTIONS_NEEDED": "spec",
    "S3_FORBIDDEN_BUCKET_ACTIONS": "spec",
    "S3_FORBIDDEN_OBJECT_ACTIONS": "spec",
    "S3_FORBIDDEN_READS": "spec",
    "S3_OBJECT_ACTIONS_NEEDED": "spec",
    "cloudformation": "templates",
    "template": "templates",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    """Import ``name`` from its module on first use, then keep it here."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
