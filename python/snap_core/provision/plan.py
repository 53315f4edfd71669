"""Planning and applying: the steps that bring the bucket (or vault) and
the backup identity to the spec, never weakening anything."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

from snap_core.provision.aws import Aws, _code, identity_extra_policies, principal_of, read_s3
from snap_core.provision.checker import _glob, check_policies
from snap_core.provision.compare import _retention_days, policy_weakening, same
from snap_core.provision.compat import manual_steps
from snap_core.provision.policies import OWNERSHIP, documents, identity_policy, trust_policy
from snap_core.provision.spec import CONFIRM_PHRASE, IDENTITY_POLICY_NAME, OffsiteSpec, ProvisionError, load_spec
from snap_core.provision.vault import VaultSteps


@dataclasses.dataclass
class Step:
    """One change provisioning would make."""

    name: str
    action: str
    old: Any
    new: Any
    irreversible: bool = False
    apply: Callable[[], Any] | None = dataclasses.field(default=None, repr=False)

    def public(self) -> dict:
        out = {"step": self.name, "action": self.action, "old": self.old, "new": self.new}
        if self.irreversible:
            out["irreversible"] = True
        return out


class Provisioner(VaultSteps):
    """Plans and applies one spec. :meth:`plan` reads the current state and
    lists the :class:`Step` s; :meth:`run` applies them unless ``test``."""

    def __init__(self, spec: OffsiteSpec, session=None, log: Callable[[str], None] | None = None):
        self.spec = spec
        self.aws = Aws(spec, session)
        self.log = log or (lambda msg: None)
        self.steps: list[Step] = []
        self.refused: list[str] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.unconfirmed: list[str] = []

    # -- admins ---------------------------------------------------------------
    def _admins(self):
        caller = principal_of(self.aws.caller_arn())
        if not self.spec.admins:
            self.spec.admins = [caller]
            self.notes.append(
                f"administrators: {caller} (the identity running this; set snap:offsite:admins to choose)"
            )
        elif not any(_glob(a, caller) for a in self.spec.admins):
            raise ProvisionError(
                f"the identity running this ({caller}) is not among snap:offsite:admins; the policies would "
                "lock it out of every later fix. Run it as an administrator, or add its ARN."
            )

    def _step(self, *args, **kw):
        step = Step(*args, **kw)
        if step.irreversible and not self.spec.confirmed:
            self.unconfirmed.append(
                f"{step.name}: {step.action} cannot be undone; set snap:offsite:confirm_irreversible to "
                f"{CONFIRM_PHRASE!r} to allow it"
            )
        self.steps.append(step)

    # -- S3 ----------------------------------------------------------------------
    def _plan_s3(self):
        s3, spec = self.aws.s3, self.spec
        from botocore.exceptions import ClientError  # noqa: PLC0415

        exists = True
        try:
            s3.head_bucket(Bucket=spec.bucket)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                exists = False
            else:
                raise ProvisionError(f"bucket {spec.bucket}: {exc} (does it belong to another account?)") from exc
        if not exists:
            create = {"Bucket": spec.bucket, "ObjectLockEnabledForBucket": True}
            if spec.is_aws:
                create["ObjectOwnership"] = "BucketOwnerEnforced"
            if self.aws.region != "us-east-1":
                create["CreateBucketConfiguration"] = {"LocationConstraint": self.aws.region}
            self._step(
                "bucket",
                "CreateBucket with Object Lock (cannot be turned off)",
                None,
                create,
                True,
                lambda: s3.create_bucket(**create),
            )
            current = {
                "versioning": {},
                "lock": {},
                "pab": {},
                "enc": {},
                "lifecycle": [],
                "policy": None,
                "ownership": OWNERSHIP,
            }
        else:
            current = read_s3(self.aws.s3, spec.bucket, aws=spec.is_aws)
        desired = documents(spec)

        # Versioning (Object Lock needs it; with the lock it can never be suspended).
        if current["versioning"].get("Status") != "Enabled":
            cfg = desired["versioning"]
            self._step(
                "versioning",
                "PutBucketVersioning",
                current["versioning"].get("Status"),
                cfg,
                False,
                lambda: s3.put_bucket_versioning(Bucket=spec.bucket, VersioningConfiguration=cfg),
            )
        # Object Lock and its default retention: set or strengthened, never shortened.
        lock = current["lock"]
        want = desired["object_lock"]
        mode, days = _retention_days(lock.get("Rule"))
        enabled = lock.get("ObjectLockEnabled") == "Enabled"
        if enabled and mode == "COMPLIANCE" and days > spec.default_retention_days:
            self.refused.append(
                f"object-lock: the bucket's default retention is COMPLIANCE {days} days; retain_days "
                f"{spec.retain_days} would shorten it. snap never shortens a lock: set "
                f"snap:offsite:retain_days to {days} or more"
            )
        elif not (enabled and mode == "COMPLIANCE" and days == spec.default_retention_days):
            self._step(
                "object-lock",
                "PutObjectLockConfiguration (COMPLIANCE default retention)",
                lock or None,
                want,
                True,
                lambda: s3.put_object_lock_configuration(Bucket=spec.bucket, ObjectLockConfiguration=want),
            )
        # Public access block.
        pab = desired["public_access_block"]
        if not same(current["pab"], pab):
            self._step(
                "public-access-block",
                "PutPublicAccessBlock",
                current["pab"] or None,
                pab,
                False,
                lambda: s3.put_public_access_block(Bucket=spec.bucket, PublicAccessBlockConfiguration=pab),
            )
        if spec.is_aws:
            self._plan_aws_only(current, desired)
        # Lifecycle.
        lc = desired["lifecycle"]
        if not self._lifecycle_same(current["lifecycle"], lc["Rules"]):
            self._step(
                "lifecycle",
                "PutBucketLifecycleConfiguration",
                current["lifecycle"] or None,
                lc,
                False,
                lambda: s3.put_bucket_lifecycle_configuration(Bucket=spec.bucket, LifecycleConfiguration=lc),
            )
        if spec.is_aws:
            self._plan_identity()
        else:
            self.notes.extend(manual_steps(spec))
        # The bucket policy last: it closes every door but the administrators'.
        if "bucket_policy" in desired:
            self._plan_bucket_policy(current["policy"], desired["bucket_policy"])

    def _plan_aws_only(self, current: dict, desired: dict):
        """Ownership controls and default encryption (Ceph RGW 16 refuses both)."""
        s3, spec = self.aws.s3, self.spec
        # ACLs off: the bucket owner owns every object.
        if not same(current["ownership"], OWNERSHIP):
            self._step(
                "ownership",
                "PutBucketOwnershipControls (BucketOwnerEnforced)",
                current["ownership"] or None,
                OWNERSHIP,
                False,
                lambda: s3.put_bucket_ownership_controls(Bucket=spec.bucket, OwnershipControls=OWNERSHIP),
            )
        # Encryption at rest.
        enc = desired["encryption"]
        if not self._encryption_ok(current["enc"], enc):
            self._step(
                "encryption",
                "PutBucketEncryption",
                current["enc"] or None,
                enc,
                False,
                lambda: s3.put_bucket_encryption(Bucket=spec.bucket, ServerSideEncryptionConfiguration=enc),
            )

    def _plan_bucket_policy(self, have: dict | None, pol: dict):
        s3, spec = self.aws.s3, self.spec
        current = {"policy": have}
        if not same(current["policy"], pol):
            weaker = policy_weakening(current["policy"], pol) if current["policy"] else []
            if weaker:
                self.refused.append(
                    f"bucket-policy: the new policy would weaken the existing one: {'; '.join(weaker)}. "
                    "snap never weakens a policy; if this is intended, remove the bucket policy by hand as an administrator first"
                )
                self.steps.append(Step("bucket-policy", "PutBucketPolicy (refused)", current["policy"], pol))
            else:
                self._step(
                    "bucket-policy",
                    "PutBucketPolicy",
                    current["policy"],
                    pol,
                    False,
                    lambda: s3.put_bucket_policy(Bucket=spec.bucket, Policy=json.dumps(pol)),
                )

    @staticmethod
    def _encryption_ok(current: dict, desired: dict) -> bool:
        rules = current.get("Rules") or []
        if not rules:
            return False
        have = rules[0].get("ApplyServerSideEncryptionByDefault") or {}
        want = desired["Rules"][0]["ApplyServerSideEncryptionByDefault"]
        return have.get("SSEAlgorithm") == want["SSEAlgorithm"] and have.get("KMSMasterKeyID") == want.get(
            "KMSMasterKeyID"
        )

    @staticmethod
    def _lifecycle_same(current: list, desired: list) -> bool:
        def norm(rule):
            r = {
                k: v
                for k, v in rule.items()
                if k
                in (
                    "ID",
                    "Status",
                    "Filter",
                    "Transitions",
                    "NoncurrentVersionExpiration",
                    "AbortIncompleteMultipartUpload",
                    "Expiration",
                    "NoncurrentVersionTransitions",
                )
            }
            # S3 omits defaults on read; drop empty values on both sides.
            for key in ("NoncurrentVersionExpiration", "Expiration"):
                if isinstance(r.get(key), dict):
                    r[key] = {
                        k: v for k, v in r[key].items() if v not in (None, False, 0) or k in ("Days", "NoncurrentDays")
                    }
            flt = r.get("Filter") or {}
            if "And" in flt:
                flt = {"And": {k: v for k, v in flt["And"].items() if v not in (None, [], "")}}
            r["Filter"] = flt
            return {k: v for k, v in r.items() if v not in (None, [], {})}

        return same(
            sorted((norm(r) for r in current), key=lambda r: r.get("ID", "")),
            sorted((norm(r) for r in desired), key=lambda r: r.get("ID", "")),
        )

    # -- the backup identity ---------------------------------------------------------
    def _plan_identity(self):
        iam, spec, ident = self.aws.iam, self.spec, self.spec.identity
        from botocore.exceptions import ClientError  # noqa: PLC0415

        pol = identity_policy(spec)
        pol_text = json.dumps(pol)
        if ident.type == "user":
            try:
                iam.get_user(UserName=ident.name)
                exists = True
            except ClientError as exc:
                if _code(exc) != "NoSuchEntity":
                    raise
                exists = False
            if not exists:
                self._step(
                    "identity",
                    f"CreateUser {ident.path}{ident.name}",
                    None,
                    {"UserName": ident.name, "Path": ident.path},
                    False,
                    lambda: iam.create_user(
                        UserName=ident.name, Path=ident.path, Tags=[{"Key": "snap", "Value": "offsite-put-only"}]
                    ),
                )
                current = None
            else:
                current = self._inline(iam.get_user_policy, UserName=ident.name)
                self._extra_grants(iam, "user", ident.name)
            if not same(current, pol):
                self._step(
                    "identity-policy",
                    f"PutUserPolicy {IDENTITY_POLICY_NAME}",
                    current,
                    pol,
                    False,
                    lambda: iam.put_user_policy(
                        UserName=ident.name, PolicyName=IDENTITY_POLICY_NAME, PolicyDocument=pol_text
                    ),
                )
            return
        trust = trust_policy(spec)
        try:
            role = iam.get_role(RoleName=ident.name)["Role"]
        except ClientError as exc:
            if _code(exc) != "NoSuchEntity":
                raise
            role = None
        if role is None:
            create = {
                "RoleName": ident.name,
                "Path": ident.path,
                "AssumeRolePolicyDocument": trust,
                "MaxSessionDuration": 3600 * int(ident.max_session_hours),
            }
            self._step(
                "identity",
                f"CreateRole {ident.path}{ident.name}",
                None,
                create,
                False,
                lambda: iam.create_role(
                    **{
                        **create,
                        "AssumeRolePolicyDocument": json.dumps(trust),
                        "Tags": [{"Key": "snap", "Value": "offsite-put-only"}],
                    }
                ),
            )
            current = None
        else:
            have_trust = role.get("AssumeRolePolicyDocument")
            if isinstance(have_trust, str):
                from urllib.parse import unquote  # noqa: PLC0415

                have_trust = json.loads(unquote(have_trust))
            if not same(have_trust, trust):
                self._step(
                    "trust-policy",
                    "UpdateAssumeRolePolicy",
                    have_trust,
                    trust,
                    False,
                    lambda: iam.update_assume_role_policy(RoleName=ident.name, PolicyDocument=json.dumps(trust)),
                )
            current = self._inline(iam.get_role_policy, RoleName=ident.name)
            self._extra_grants(iam, "role", ident.name)
        if not same(current, pol):
            self._step(
                "identity-policy",
                f"PutRolePolicy {IDENTITY_POLICY_NAME}",
                current,
                pol,
                False,
                lambda: iam.put_role_policy(
                    RoleName=ident.name, PolicyName=IDENTITY_POLICY_NAME, PolicyDocument=pol_text
                ),
            )
        if ident.instance_profile:
            try:
                prof = iam.get_instance_profile(InstanceProfileName=ident.name)["InstanceProfile"]
                has_role = any(r["RoleName"] == ident.name for r in prof.get("Roles", []))
            except ClientError as exc:
                if _code(exc) != "NoSuchEntity":
                    raise
                self._step(
                    "instance-profile",
                    f"CreateInstanceProfile {ident.name}",
                    None,
                    ident.name,
                    False,
                    lambda: iam.create_instance_profile(InstanceProfileName=ident.name, Path=ident.path),
                )
                has_role = False
            if not has_role:
                self._step(
                    "instance-profile-role",
                    "AddRoleToInstanceProfile",
                    None,
                    ident.name,
                    False,
                    lambda: iam.add_role_to_instance_profile(InstanceProfileName=ident.name, RoleName=ident.name),
                )

    @staticmethod
    def _inline(call, **kw):
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            doc = call(PolicyName=IDENTITY_POLICY_NAME, **kw)["PolicyDocument"]
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return None
            raise
        if isinstance(doc, str):
            from urllib.parse import unquote  # noqa: PLC0415

            doc = json.loads(unquote(doc))
        return doc

    def _extra_grants(self, iam, kind, name):
        """Other policies on the backup identity: reported, never removed by snap."""
        extra = identity_extra_policies(iam, kind, name)
        for label in extra:
            self.problems.append(
                f"the backup {kind} {name} also has {label}; snap's put-only policy must be its only one: remove it"
            )

    # -- the run ------------------------------------------------------------------------
    def plan(self) -> list[Step]:
        if self.spec.is_aws:
            self._admins()
        if self.spec.kind == "s3":
            self._plan_s3()
        else:
            self._plan_vault()
        self.problems.extend(check_policies(self.spec))
        return self.steps

    def run(self, test: bool = False) -> dict:
        self.plan()
        applied = []
        result: bool | None = True
        if self.refused or self.problems or (self.unconfirmed and not test):
            result = False
        elif test:
            result = None if self.steps else True
        else:
            for step in self.steps:
                self.log(f"snap provision: {step.action}")
                step.apply()
                applied.append(step.name)
        target = f"s3://{self.spec.bucket}" if self.spec.kind == "s3" else f"glacier vault {self.spec.bucket}"
        if result is False:
            comment = f"{target}: nothing changed: " + "; ".join(self.refused + self.problems + self.unconfirmed)
        elif not self.steps:
            comment = f"{target}: everything is in place, nothing to change"
        elif test:
            comment = f"{target}: {len(self.steps)} change(s) would be made (test)"
            if self.unconfirmed:
                comment += "; and need the confirmation first: " + "; ".join(self.unconfirmed)
        else:
            comment = f"{target}: {len(applied)} change(s) made"
        return {
            "result": result,
            "target": target,
            "test": bool(test),
            "comment": comment,
            "changes": {s.name: {"old": s.old, "new": s.new} for s in self.steps}
            if (applied or (test and result is None))
            else {},
            "plan": [s.public() for s in self.steps],
            "refused": list(self.refused),
            "needs_confirmation": list(self.unconfirmed),
            "problems": list(self.problems),
            "notes": list(self.notes),
            "applied": applied,
            "documents": documents(self.spec),
        }


def provision(settings: dict[str, Any], test: bool = False, session=None, log=None) -> dict:
    """Create or check everything the pillar ``snap:offsite`` describes.

    Returns a dict with ``result`` (True: in place or applied; None: test run
    with changes pending; False: refused or a problem), ``changes``, ``plan``
    (each step with the exact JSON it applies), ``refused``, ``problems``,
    ``notes`` and the ``documents``. Nothing is applied if anything is
    refused. Raises :class:`ProvisionError` for invalid settings.
    """
    spec = load_spec(settings)
    return Provisioner(spec, session=session, log=log).run(test=test)
