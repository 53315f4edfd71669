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
it); anywhere else provisioning says how to get it.
"""

from snap_core.provision.aws import Aws, identity_extra_policies, principal_of, read_s3
from snap_core.provision.checker import (
    Forbidden,
    _condition_holds,
    check_policies,
    evaluate,
    forbidden_requests,
    pipeline_requests,
)
from snap_core.provision.cli import (
    TEMPLATE_ARGS,
    TEMPLATE_HELP,
    VERIFY_ARGS,
    VERIFY_HELP,
    cmd_offsite_template,
    cmd_verify_offsite,
    main_verify,
)
from snap_core.provision.compare import _policy_text, policy_weakening, same
from snap_core.provision.credentials import fingerprint, render_aws_files, resolve_secrets, write_private
from snap_core.provision.drift import format_report, verify
from snap_core.provision.plan import Provisioner, Step, provision
from snap_core.provision.policies import (
    OWNERSHIP,
    PUBLIC_ACCESS_BLOCK,
    bucket_policy,
    documents,
    encryption_configuration,
    identity_policy,
    lifecycle_configuration,
    lock_configuration,
    trust_policy,
    vault_access_policy,
    vault_lock_policy,
)
from snap_core.provision.spec import (
    ARCHIVE_CLASSES,
    CONFIRM_PHRASE,
    GLACIER_ACTIONS_NEEDED,
    GLACIER_FORBIDDEN_ACTIONS,
    GLACIER_FORBIDDEN_READS,
    IDENTITY_POLICY_NAME,
    MAX_RETAIN_DAYS,
    MIN_RETAIN_DAYS,
    MIN_STORAGE_DAYS,
    S3_BUCKET_ACTIONS_NEEDED,
    S3_FORBIDDEN_BUCKET_ACTIONS,
    S3_FORBIDDEN_OBJECT_ACTIONS,
    S3_FORBIDDEN_READS,
    S3_OBJECT_ACTIONS_NEEDED,
    IdentitySpec,
    OffsiteDrift,
    OffsiteSpec,
    ProvisionError,
    load_spec,
)
from snap_core.provision.templates import cloudformation, template

__all__ = [
    "ARCHIVE_CLASSES",
    "CONFIRM_PHRASE",
    "GLACIER_ACTIONS_NEEDED",
    "GLACIER_FORBIDDEN_ACTIONS",
    "GLACIER_FORBIDDEN_READS",
    "IDENTITY_POLICY_NAME",
    "MAX_RETAIN_DAYS",
    "MIN_RETAIN_DAYS",
    "MIN_STORAGE_DAYS",
    "OWNERSHIP",
    "PUBLIC_ACCESS_BLOCK",
    "S3_BUCKET_ACTIONS_NEEDED",
    "S3_FORBIDDEN_BUCKET_ACTIONS",
    "S3_FORBIDDEN_OBJECT_ACTIONS",
    "S3_FORBIDDEN_READS",
    "S3_OBJECT_ACTIONS_NEEDED",
    "TEMPLATE_ARGS",
    "TEMPLATE_HELP",
    "VERIFY_ARGS",
    "VERIFY_HELP",
    "Aws",
    "Forbidden",
    "IdentitySpec",
    "OffsiteDrift",
    "OffsiteSpec",
    "ProvisionError",
    "Provisioner",
    "Step",
    "_condition_holds",
    "_policy_text",
    "bucket_policy",
    "check_policies",
    "cloudformation",
    "cmd_offsite_template",
    "cmd_verify_offsite",
    "documents",
    "encryption_configuration",
    "evaluate",
    "fingerprint",
    "forbidden_requests",
    "format_report",
    "identity_extra_policies",
    "identity_policy",
    "lifecycle_configuration",
    "load_spec",
    "lock_configuration",
    "main_verify",
    "pipeline_requests",
    "policy_weakening",
    "principal_of",
    "provision",
    "read_s3",
    "render_aws_files",
    "resolve_secrets",
    "same",
    "template",
    "trust_policy",
    "vault_access_policy",
    "vault_lock_policy",
    "verify",
    "write_private",
]
