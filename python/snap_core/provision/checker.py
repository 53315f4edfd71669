"""The static policy checker: IAM's evaluation rules for the requests the
pipeline sends (allowed) and the ones the backup identity must never get."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any, Callable

from snap_core.provision.policies import (
    documents,
    forbidden_bucket_actions,
    forbidden_object_actions,
    object_actions_needed,
)
from snap_core.provision.spec import (
    GLACIER_ACTIONS_NEEDED,
    GLACIER_FORBIDDEN_ACTIONS,
    GLACIER_FORBIDDEN_READS,
    S3_BUCKET_ACTIONS_NEEDED,
    S3_FORBIDDEN_READS,
    OffsiteSpec,
    ProvisionError,
)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob(pattern: str, value: str, case: bool = True) -> bool:
    # IAM wildcards: * and ? only ([...] is literal).
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


_CONDITION_OPS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda want, have: want == have,
    "StringLike": lambda want, have: _glob(want, have),
    "ArnEquals": lambda want, have: want == have,
    "ArnLike": lambda want, have: _glob(want, have),
    "Bool": lambda want, have: str(want).lower() == str(have).lower(),
    "NumericLessThan": lambda want, have: float(have) < float(want),
    "NumericLessThanEquals": lambda want, have: float(have) <= float(want),
    "NumericGreaterThan": lambda want, have: float(have) > float(want),
    "NumericGreaterThanEquals": lambda want, have: float(have) >= float(want),
    "NumericEquals": lambda want, have: float(have) == float(want),
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NumericNotEquals": "NumericEquals",
}


def _condition_holds(condition: dict | None, context: dict[str, Any]) -> bool:
    """IAM condition semantics for single-valued keys: every operator and
    every key must hold; values of one key are ORed; a missing key makes a
    positive operator false, a negated one true, an ...IfExists one true;
    ``Null`` tests presence. An operator this checker does not know raises:
    it never guesses."""
    for op, keys in (condition or {}).items():
        base, if_exists = (op[:-8], True) if op.endswith("IfExists") else (op, False)
        if base != "Null" and base not in _NEGATED and base not in _CONDITION_OPS:
            raise ProvisionError(f"policy checker: condition operator {op} is not supported")
        for key, wanted in keys.items():
            wanted = [str(w) for w in _as_list(wanted)]
            present = key in context and context[key] is not None
            if base == "Null":
                if (not present) != (wanted[0].lower() == "true"):
                    return False
                continue
            if not present:
                if if_exists or base in _NEGATED:
                    continue
                return False
            have = str(context[key])
            if base in _NEGATED:
                if any(_CONDITION_OPS[_NEGATED[base]](w, have) for w in wanted):
                    return False
            elif not any(_CONDITION_OPS[base](w, have) for w in wanted):
                return False
    return True


def _principal_matches(p, principal: str) -> bool:
    aws = p if p == "*" else (p.get("AWS") if isinstance(p, dict) else None)
    if aws is None:
        return False
    return aws == "*" or any(a == "*" or _glob(a, principal) for a in _as_list(aws))


def _statement_applies(st: dict, action: str, resource: str, context: dict, principal: str | None) -> bool:
    if "NotAction" in st or "NotResource" in st or "NotPrincipal" in st:
        raise ProvisionError(f"policy checker: statement {st.get('Sid')!r} uses Not* elements; snap never writes those")
    if not any(_glob(p, action, case=False) for p in _as_list(st.get("Action"))):
        return False
    if "Resource" in st and not any(_glob(p, resource) for p in _as_list(st["Resource"])):
        return False
    if principal is not None and "Principal" in st and not _principal_matches(st["Principal"], principal):
        return False
    return _condition_holds(st.get("Condition"), context)


def evaluate(
    identity_docs: Iterable[dict],
    resource_docs: Iterable[dict],
    principal_arn: str,
    action: str,
    resource: str,
    context: dict[str, Any] | None = None,
) -> str:
    """Decide one request of a principal of the bucket's own account:
    ``"explicit-deny"``, ``"allow"`` or ``"implicit-deny"``. Same-account
    rules: an explicit deny anywhere wins; otherwise an allow in the identity
    policies or in the resource policy for this principal allows."""
    ctx = {"aws:PrincipalArn": principal_arn, "aws:SecureTransport": "true"}
    ctx.update(context or {})
    allowed = False
    for doc, principal in [(d, None) for d in identity_docs] + [(d, principal_arn) for d in resource_docs]:
        for st in _as_list(doc.get("Statement")):
            if _statement_applies(st, action, resource, ctx, principal):
                if st["Effect"] == "Deny":
                    return "explicit-deny"
                allowed = True
    return "allow" if allowed else "implicit-deny"


def pipeline_requests(spec: OffsiteSpec) -> list[tuple[str, str, str, dict]]:
    """What snap's upload pipeline sends, as (name, action, resource, context)."""
    if spec.kind == "glacier":
        return [(a.split(":")[1], a, spec.vault_arn(), {}) for a in GLACIER_ACTIONS_NEEDED]
    key = f"{spec.bucket_arn}/{spec.prefix}/2026/20260101T000000Z-0123456789abcdef.sqfs.gpg"
    lock = {"s3:object-lock-mode": "COMPLIANCE", "s3:object-lock-remaining-retention-days": str(spec.retain_days + 1)}
    out = [
        (
            "PutObject (If-None-Match, COMPLIANCE)",
            "s3:PutObject",
            key,
            {**lock, "s3:if-none-match": "*", "s3:ObjectCreationOperation": "true"},
        ),
        ("CreateMultipartUpload (COMPLIANCE)", "s3:PutObject", key, {**lock, "s3:ObjectCreationOperation": "false"}),
        ("UploadPart", "s3:PutObject", key, {"s3:ObjectCreationOperation": "false"}),
        (
            "CompleteMultipartUpload (If-None-Match)",
            "s3:PutObject",
            key,
            {"s3:if-none-match": "*", "s3:ObjectCreationOperation": "true"},
        ),
        ("AbortMultipartUpload", "s3:AbortMultipartUpload", key, {}),
        ("GetObjectRetention (every lock read back)", "s3:GetObjectRetention", key, {}),
        ("ListMultipartUploads", "s3:ListBucketMultipartUploads", spec.bucket_arn, {}),
    ]
    if spec.provider != "ceph":
        out.append(("ListObjectsV2 of its prefix", "s3:ListBucket", spec.bucket_arn, {"s3:prefix": f"{spec.prefix}/"}))
    if spec.retention_repair:
        out.append(("PutObjectRetention (a dropped lock set again)", "s3:PutObjectRetention", key, lock))
    return out


@dataclasses.dataclass(frozen=True)
class Forbidden:
    """A request the backup identity must never get.

    ``explicit``: refused by an explicit deny (no policy attached to the
    identity later can grant it), not merely not granted. ``everyone``: the
    resource policy refuses it to every principal that is not an
    administrator, even one whose own policy allows everything.
    """

    name: str
    action: str
    resource: str
    context: dict
    explicit: bool = True
    everyone: bool = True


def forbidden_requests(spec: OffsiteSpec) -> list[Forbidden]:
    """Everything the backup identity must be refused (the static list the
    tests also replay against a live endpoint)."""
    if spec.kind == "glacier":
        vault = spec.vault_arn()
        return [Forbidden(a.split(":")[1], a, vault, {}) for a in GLACIER_FORBIDDEN_ACTIONS] + [
            Forbidden(f"{a.split(':')[1]} (read archives back)", a, vault, {}, everyone=False)
            for a in GLACIER_FORBIDDEN_READS
        ]
    key = f"{spec.bucket_arn}/{spec.prefix}/2026/x.sqfs.gpg"
    ok = {
        "s3:object-lock-mode": "COMPLIANCE",
        "s3:object-lock-remaining-retention-days": str(spec.retain_days + 1),
        "s3:if-none-match": "*",
        "s3:ObjectCreationOperation": "true",
    }
    out = [Forbidden(a.split(":")[1], a, key, {}) for a in forbidden_object_actions(spec)]
    out += [Forbidden(a.split(":")[1], a, key, {}, everyone=False) for a in S3_FORBIDDEN_READS]
    out += [Forbidden(a.split(":")[1], a, spec.bucket_arn, {}) for a in forbidden_bucket_actions(spec)]
    bomb = str(spec.retention_cap_days + 1)
    out += [
        Forbidden("PutObject with GOVERNANCE", "s3:PutObject", key, {**ok, "s3:object-lock-mode": "GOVERNANCE"}),
        Forbidden(
            "PutObject with 1 day of retention",
            "s3:PutObject",
            key,
            {**ok, "s3:object-lock-remaining-retention-days": "1"},
        ),
        Forbidden(
            f"PutObject locked for {bomb} days, past the cap (lock-bombing)",
            "s3:PutObject",
            key,
            {**ok, "s3:object-lock-remaining-retention-days": bomb},
        ),
    ]
    if spec.retention_repair:
        out += [
            Forbidden(
                f"PutObjectRetention for {bomb} days, past the cap (lock-bombing)",
                "s3:PutObjectRetention",
                key,
                {"s3:object-lock-mode": "COMPLIANCE", "s3:object-lock-remaining-retention-days": bomb},
            ),
            Forbidden(
                "PutObjectRetention to GOVERNANCE",
                "s3:PutObjectRetention",
                key,
                {"s3:object-lock-mode": "GOVERNANCE", "s3:object-lock-remaining-retention-days": str(spec.retain_days)},
            ),
            Forbidden(
                "PutObjectRetention for 1 day",
                "s3:PutObjectRetention",
                key,
                {"s3:object-lock-mode": "COMPLIANCE", "s3:object-lock-remaining-retention-days": "1"},
            ),
        ]
    if spec.is_aws:
        out += [
            Forbidden(
                "PutObject replacing a key (no If-None-Match)",
                "s3:PutObject",
                key,
                {k: v for k, v in ok.items() if k != "s3:if-none-match"},
            ),
            Forbidden(
                "CopyObject onto a key",
                "s3:PutObject",
                key,
                {"s3:x-amz-copy-source": f"{spec.bucket}/{spec.prefix}/a", "s3:ObjectCreationOperation": "true"},
            ),
        ]
    if spec.secure_transport_only:
        out.append(Forbidden("PutObject over plain HTTP", "s3:PutObject", key, {**ok, "aws:SecureTransport": "false"}))
    out += [
        Forbidden(
            "PutObject outside its prefix",
            "s3:PutObject",
            f"{spec.bucket_arn}/elsewhere/x",
            ok,
            explicit=False,
            everyone=False,
        ),
        Forbidden(
            "ListObjectsV2 of the whole bucket",
            "s3:ListBucket",
            spec.bucket_arn,
            {"s3:prefix": ""},
            explicit=False,
            everyone=False,
        ),
        Forbidden(
            "ListObjectsV2 of another prefix",
            "s3:ListBucket",
            spec.bucket_arn,
            {"s3:prefix": "elsewhere/"},
            explicit=False,
            everyone=False,
        ),
    ]
    return out


def check_policies(
    spec: OffsiteSpec, docs: dict[str, Any] | None = None, identity_extra: Iterable[dict] = ()
) -> list[str]:
    """Prove the documents statically; return the problems (empty: sound).

    - every request the pipeline sends is allowed for the backup identity;
    - every forbidden request is refused for it (by an explicit deny where
      :class:`Forbidden` says so);
    - the resource policy refuses every destructive request to any principal
      that is not an administrator, even one allowed ``*``, and still lets
      the administrators manage the bucket;
    - no administrator pattern matches the backup identity;
    - the identity policies grant no action beyond what the pipeline needs.

    ``identity_extra`` are further policies found on the backup identity.
    """
    docs = docs or documents(spec)
    problems = []
    account = spec.account_id or "000000000000"
    if spec.is_aws:
        me = spec.identity_arn() if spec.account_id else f"arn:{spec.partition}:iam::{account}:user/snap/backup"
    else:
        me = spec.backup_principal()
    # Ceph: no IAM, the bucket policy alone grants and denies.
    ident_docs = ([docs["identity_policy"]] if "identity_policy" in docs else []) + list(identity_extra)
    res_key = "bucket_policy" if spec.kind == "s3" else "vault_access_policy"
    access = docs.get(res_key) or {"Statement": []}
    res_docs = [access] + ([docs["vault_lock_policy"]] if docs.get("vault_lock_policy") else [])
    for name, action, resource, ctx in pipeline_requests(spec):
        got = evaluate(ident_docs, res_docs, me, action, resource, ctx)
        if got != "allow":
            problems.append(f"the pipeline's {name} ({action}) would be refused ({got})")
    other = f"arn:{spec.partition}:iam::{account}:role/some-other-role"
    broad = [{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}]
    for f in forbidden_requests(spec):
        got = evaluate(ident_docs, res_docs, me, f.action, f.resource, f.context)
        if got == "allow" or (f.explicit and got != "explicit-deny"):
            problems.append(
                f"the backup identity: {f.name} ({f.action}) is {got}"
                + (", not explicitly denied" if f.explicit else "")
            )
        if f.everyone and spec.is_aws:
            for who, label in (
                (other, "a non-administrator"),
                (me, "the backup identity if its own policy allowed everything"),
            ):
                if evaluate(broad, res_docs, who, f.action, f.resource, f.context) != "explicit-deny":
                    problems.append(f"the {res_key} does not deny {f.name} ({f.action}) to {label}")
    for st in _as_list(access.get("Statement")):
        for op in ("ArnNotLike", "ArnNotEquals", "StringNotLike", "StringNotEquals"):
            for key, vals in ((st.get("Condition") or {}).get(op) or {}).items():
                if key.lower() != "aws:principalarn":
                    continue
                for pattern in _as_list(vals):
                    if pattern not in spec.admins:
                        problems.append(
                            f"the {res_key} statement {st.get('Sid')!r} exempts {pattern}, not an administrator"
                        )
    for admin in spec.admins:
        if _glob(admin, me):
            problems.append(f"administrator pattern {admin} matches the backup identity {me}")
        probe = admin.replace("*", "x").replace("?", "x")
        for f in forbidden_requests(spec):
            if f.everyone and f.context.get("aws:SecureTransport") != "false":
                if evaluate(broad, [access], probe, f.action, f.resource, f.context) != "allow":
                    problems.append(f"the {res_key} also denies {f.name} to the administrator {admin}")
    needed = set(
        GLACIER_ACTIONS_NEEDED if spec.kind == "glacier" else object_actions_needed(spec) + S3_BUCKET_ACTIONS_NEEDED
    )
    if spec.encryption == "aws:kms":
        needed |= {"kms:Decrypt", "kms:GenerateDataKey"}
    grants = list(ident_docs) + ([] if spec.is_aws else [access])
    for doc in grants:
        for st in _as_list(doc.get("Statement")):
            if st.get("Effect") != "Allow":
                continue
            if "Principal" in st and not _principal_matches(st["Principal"], me):
                continue  # a grant to the administrators or readers, not to the backup identity
            for act in _as_list(st.get("Action")):
                if act not in needed:
                    problems.append(
                        f"the backup identity is granted {act} (statement {st.get('Sid')!r}), beyond what the pipeline needs"
                    )
    if spec.chains and spec.retention_cap_days < spec.retain_days + spec.chain_max_age_days:
        problems.append("the retention cap leaves no room for an incremental chain")
    return problems
