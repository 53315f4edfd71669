"""Reading the off-site configuration back and reporting every drift."""

from __future__ import annotations

import json
from typing import Any

from snap_core.provision.aws import Aws, _code, identity_extra_policies, principal_of, read_s3
from snap_core.provision.checker import _as_list, check_policies
from snap_core.provision.compare import _read_json_policy, _retention_days, policy_weakening, same
from snap_core.provision.plan import Provisioner
from snap_core.provision.policies import OWNERSHIP, documents
from snap_core.provision.spec import OffsiteSpec, load_spec


def verify(settings: dict[str, Any], session=None) -> dict:
    """Read the configuration back and report every drift from the policy.

    Returns ``{"target", "ok", "checks": [{"check", "ok", "detail"}], "drift": [...]}``;
    ``ok`` is False when anything drifted. Longer retention than asked is no
    drift; a bucket policy that differs from snap's is drift even if it is
    stricter (say so and re-run provisioning).
    """
    spec = load_spec(settings)
    aws = Aws(spec, session)
    caller = None
    if spec.is_aws:
        try:
            caller = principal_of(aws.caller_arn())
        except Exception:  # noqa: BLE001 - an auditor may lack sts; ARNs then need account_id
            caller = None
    if not spec.admins and caller:
        spec.admins = [caller]
    checks: list[dict] = []

    def check(name, ok, detail=""):
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    from botocore.exceptions import ClientError  # noqa: PLC0415

    if spec.kind == "s3":
        try:
            aws.s3.head_bucket(Bucket=spec.bucket)
        except ClientError as exc:
            check("bucket exists", False, str(exc))
            return _verdict(spec, checks)
        cur = read_s3(aws.s3, spec.bucket, aws=spec.is_aws)
        docs = documents(spec)
        check(
            "versioning enabled",
            cur["versioning"].get("Status") == "Enabled",
            f"status {cur['versioning'].get('Status')}",
        )
        mode, days = _retention_days(cur["lock"].get("Rule"))
        check("object lock enabled", cur["lock"].get("ObjectLockEnabled") == "Enabled", json.dumps(cur["lock"]))
        check("default retention COMPLIANCE", mode == "COMPLIANCE", f"mode {mode}")
        check(f"default retention >= {spec.retain_days} days", days >= spec.retain_days, f"{days} days")
        check("public access blocked", same(cur["pab"], docs["public_access_block"]), json.dumps(cur["pab"]))
        if spec.is_aws:
            check(
                "ACLs disabled (BucketOwnerEnforced)", same(cur["ownership"], OWNERSHIP), json.dumps(cur["ownership"])
            )
            check(
                "encryption at rest",
                Provisioner._encryption_ok(cur["enc"], docs["encryption"]),
                json.dumps(cur["enc"], default=str),
            )
        check(
            "lifecycle as configured",
            Provisioner._lifecycle_same(cur["lifecycle"], docs["lifecycle"]["Rules"]),
            json.dumps(cur["lifecycle"], default=str),
        )
        for rule in cur["lifecycle"]:
            nce = (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
            exp = (rule.get("Expiration") or {}).get("Days")
            for what, n in (("noncurrent versions expire", nce), ("objects expire", exp)):
                if n is not None and n <= spec.retain_days:
                    check(f"lifecycle {rule.get('ID')}: {what} only after the lock", False, f"after {n} days")
        pol = cur["policy"]
        if "bucket_policy" in docs:
            check(
                "bucket policy is snap's",
                same(pol, docs["bucket_policy"]),
                "missing" if pol is None else _diff_hint(pol, docs["bucket_policy"]),
            )
            if pol is not None:
                weaker = policy_weakening(docs["bucket_policy"], pol)
                check("bucket policy denies everything snap's denies", not weaker, "; ".join(weaker))
        actual_docs = dict(docs, bucket_policy=pol or {"Statement": []})
    else:
        docs = documents(spec)
        try:
            pol = _read_json_policy(
                aws.glacier.get_vault_access_policy(accountId="-", vaultName=spec.bucket)["policy"]["Policy"]
            )
        except ClientError as exc:
            pol = None
            if _code(exc) != "ResourceNotFoundException":
                check("vault readable", False, str(exc))
        check(
            "vault access policy is snap's",
            same(pol, docs["vault_access_policy"]),
            "missing" if pol is None else _diff_hint(pol, docs["vault_access_policy"]),
        )
        actual_docs = dict(docs, vault_access_policy=pol or {"Statement": []})
        if spec.vault_lock:
            try:
                lock = aws.glacier.get_vault_lock(accountId="-", vaultName=spec.bucket)
            except ClientError as exc:
                lock = {"State": f"none ({_code(exc)})"}
            lpol = _read_json_policy(lock.get("Policy"))
            check("vault lock completed", lock.get("State") == "Locked", f"state {lock.get('State')}")
            check(
                "vault lock at least as strict as asked",
                lpol is not None and not policy_weakening(docs["vault_lock_policy"], lpol),
                json.dumps(lpol),
            )
            actual_docs["vault_lock_policy"] = lpol or {"Statement": []}
    if not spec.is_aws:
        # No IAM to read the backup user's own policies from: the bucket
        # policy (Ceph) or the operator's mc admin policy (MinIO) is all.
        problems = check_policies(spec, actual_docs)
        check("static check of the policies read back", not problems, "; ".join(problems))
        return _verdict(spec, checks)
    # The backup identity.
    ident = spec.identity
    try:
        get = aws.iam.get_user_policy if ident.type == "user" else aws.iam.get_role_policy
        arg = {"UserName": ident.name} if ident.type == "user" else {"RoleName": ident.name}
        ipol = Provisioner._inline(get, **arg)
        extra = identity_extra_policies(aws.iam, ident.type, ident.name)
    except ClientError as exc:
        check(f"backup {ident.type} {ident.name} readable", False, str(exc))
        ipol, extra = None, {}
    check(
        f"backup {ident.type} {ident.name} has snap's put-only policy",
        same(ipol, docs["identity_policy"]),
        "missing" if ipol is None else _diff_hint(ipol, docs["identity_policy"]),
    )
    check(f"backup {ident.type} {ident.name} has no other policy", not extra, ", ".join(extra))
    if ident.type == "role":
        try:
            role = aws.iam.get_role(RoleName=ident.name)["Role"]
            trust = role.get("AssumeRolePolicyDocument")
            if isinstance(trust, str):
                from urllib.parse import unquote  # noqa: PLC0415

                trust = json.loads(unquote(trust))
            check("trust policy is snap's", same(trust, docs["trust_policy"]), _diff_hint(trust, docs["trust_policy"]))
        except ClientError as exc:
            check(f"backup role {ident.name} readable", False, str(exc))
    actual_docs["identity_policy"] = ipol or {"Statement": []}
    if spec.account_id:
        problems = check_policies(spec, actual_docs, identity_extra=[d for d in extra.values() if d])
        check("static check of the policies read back", not problems, "; ".join(problems))
    return _verdict(spec, checks)


def _diff_hint(have, want) -> str:
    if same(have, want):
        return ""
    if isinstance(have, dict) and isinstance(want, dict) and "Statement" in want:
        hs = {s.get("Sid"): s for s in _as_list(have.get("Statement"))}
        ws = {s.get("Sid"): s for s in _as_list(want.get("Statement"))}
        parts = [f"missing {sid}" for sid in ws if sid not in hs]
        parts += [f"extra {sid}" for sid in hs if sid not in ws]
        parts += [f"changed {sid}" for sid in ws if sid in hs and not same(hs[sid], ws[sid])]
        return ", ".join(parts)
    return "differs"


def _verdict(spec: OffsiteSpec, checks: list[dict]) -> dict:
    drift = [f"{c['check']}: {c['detail']}" if c["detail"] else c["check"] for c in checks if not c["ok"]]
    target = f"s3://{spec.bucket}" if spec.kind == "s3" else f"glacier vault {spec.bucket}"
    return {"target": target, "ok": not drift, "checks": checks, "drift": drift}


def format_report(report: dict) -> str:
    lines = [f"verify-offsite {report['target']}"]
    for c in report["checks"]:
        mark = "ok   " if c["ok"] else "DRIFT"
        detail = f" ({c['detail']})" if c["detail"] and not c["ok"] else ""
        lines.append(f"  {mark} {c['check']}{detail}")
    lines.append("no drift" if report["ok"] else f"{len(report['drift'])} difference(s) from the policy")
    return "\n".join(lines)
