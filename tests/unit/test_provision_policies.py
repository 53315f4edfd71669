"""Static proof of the off-site policies (snap_core.provision), no network.

These are the checks moto cannot make: it ignores bucket-policy principals
and every IAM condition. ``check_policies`` evaluates the documents with the
IAM rules for the condition operators snap uses (and refuses any other), for
the requests snap's pipeline sends and for every forbidden one.
"""

from __future__ import annotations

import copy
import json

import pytest

from snap_core import provision

ACCOUNT = "123456789012"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/snap-admin"


def base(**extra):
    out = {
        "bucket": "acme-snap-offsite",
        "prefix": "snap",
        "region": "eu-central-1",
        "admins": [ADMIN],
        "account_id": ACCOUNT,
    }
    out.update(extra)
    return out


VARIANTS = {
    "user": base(),
    "role assumed from a user": base(identity={"type": "role", "name": "snap-backup", "assume_from": [f"arn:aws:iam::{ACCOUNT}:user/backup1"]}),
    "role with instance profile": base(identity={"type": "role", "name": "snap-backup", "instance_profile": True}),
    "role via Roles Anywhere": base(identity={"type": "role", "name": "snap-backup", "roles_anywhere": {
        "trust_anchor_arn": f"arn:aws:rolesanywhere:eu-central-1:{ACCOUNT}:trust-anchor/abc", "subject_cn": "backup1.example.com"}}),
    "role via web identity": base(identity={"type": "role", "name": "snap-backup", "web_identity": {
        "provider_arn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.example.com"}}),
    "SSE-KMS, 400 days, DEEP_ARCHIVE after 7 days": base(encryption="aws:kms", kms_key_id=f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/k1",
                                                         retain_days=400, storage_class="DEEP_ARCHIVE", transition_days=7),
    "glacier vault with lock": base(kind="glacier", vault="snap-vault", vault_lock={"enabled": True}),
    "AWS with retention repair, 180-day chains": base(retention_repair=True, chain_max_age_days=180),
    "Ceph RGW (bucket policy grants the backup user)": base(provider="ceph", retention_repair=True, endpoint_url="http://127.0.0.1:7480",
                                                            admins=["arn:aws:iam:::user/snap-admin"]),
    "Ceph RGW over https, tenant user, a reader": base(provider="ceph", endpoint_url="https://rgw.example.com",
                                                       admins=["arn:aws:iam::acme:user/snap-admin"],
                                                       readers=["arn:aws:iam::acme:user/snap-restore"],
                                                       identity={"name": "snap-backup", "arn": "arn:aws:iam::acme:user/snap-backup"}),
    "MinIO (identity policy by hand)": base(provider="minio", endpoint_url="https://minio.example.com"),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_generated_documents_are_sound(name):
    spec = provision.load_spec(VARIANTS[name])
    docs = provision.documents(spec)
    # Parse: every document is plain JSON and survives a round trip.
    for doc in docs.values():
        assert json.loads(json.dumps(doc)) == doc
    assert provision.check_policies(spec, docs) == []
    forbidden = provision.forbidden_requests(spec)
    print(f"\n{name}: {len(forbidden)} forbidden requests refused, {len(provision.pipeline_requests(spec))} pipeline requests allowed")


def test_every_forbidden_action_is_denied_and_counted():
    spec = provision.load_spec(base())
    docs = provision.documents(spec)
    me = spec.identity_arn()
    outcomes = {}
    for f in provision.forbidden_requests(spec):
        outcomes[f.name] = provision.evaluate([docs["identity_policy"]], [docs["bucket_policy"]], me, f.action, f.resource, f.context)
    explicit = [n for n, o in outcomes.items() if o == "explicit-deny"]
    implicit = [n for n, o in outcomes.items() if o == "implicit-deny"]
    assert not [n for n, o in outcomes.items() if o == "allow"]
    # Not granted and not explicitly denied: only what lies outside the
    # identity's prefix (no NotResource in snap's policies).
    assert sorted(implicit) == ["ListObjectsV2 of another prefix", "ListObjectsV2 of the whole bucket", "PutObject outside its prefix"]
    names = set(outcomes)
    for required in ("DeleteObject", "DeleteObjectVersion", "PutObjectRetention", "PutObjectLegalHold", "BypassGovernanceRetention",
                     "PutBucketObjectLockConfiguration", "PutBucketVersioning", "PutLifecycleConfiguration", "PutBucketPolicy",
                     "DeleteBucketPolicy", "DeleteBucket", "GetObject", "PutObject with GOVERNANCE", "PutObject with 1 day of retention",
                     "PutObject replacing a key (no If-None-Match)", "PutObject locked for 98 days, past the cap (lock-bombing)"):
        assert required in names
    print(f"\nbackup identity: {len(outcomes)} forbidden requests refused ({len(explicit)} by explicit deny)")
    assert len(outcomes) == 40  # 30, and 10 more denied by the hardening of issue 12
    for hardened in ("PutBucketTagging", "PutObjectTagging", "PutBucketNotification", "ReplicateObject"):
        assert outcomes[hardened] == "explicit-deny", hardened


def test_even_an_identity_allowed_everything_cannot_destroy():
    """A compromised or misconfigured identity policy (s3:* on everything)
    is still stopped by the bucket policy; the administrator is not."""
    spec = provision.load_spec(base())
    bp = provision.bucket_policy(spec)
    everything = {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    for f in provision.forbidden_requests(spec):
        if f.everyone:
            assert provision.evaluate([everything], [bp], spec.identity_arn(), f.action, f.resource, f.context) == "explicit-deny", f.name
            if f.context.get("aws:SecureTransport") != "false":
                assert provision.evaluate([everything], [bp], ADMIN, f.action, f.resource, f.context) == "allow", f.name


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (lambda d: d["bucket_policy"]["Statement"].pop(0), "does not deny DeleteObject"),
        (lambda d: d["bucket_policy"]["Statement"][2]["Condition"].pop("StringNotEquals"), "pipeline's"),
        (lambda d: d["bucket_policy"]["Statement"][3]["Condition"]["NumericLessThan"].update({"s3:object-lock-remaining-retention-days": "1"}),
         "PutObject with 1 day of retention"),
        (lambda d: d["bucket_policy"]["Statement"][5].update(Condition={"Null": {"s3:if-none-match": "true"}}), "UploadPart"),
        (lambda d: d["bucket_policy"]["Statement"].pop(4), "past the cap (lock-bombing)"),
        (lambda d: d["identity_policy"]["Statement"][0]["Action"].append("s3:GetObject"), "granted s3:GetObject"),
        (lambda d: d["identity_policy"]["Statement"][0].update(Action="s3:*"), "granted s3:*"),
        (lambda d: d["identity_policy"]["Statement"].pop(3), "not explicitly denied"),
        (lambda d: d["identity_policy"]["Statement"][0].update(Resource="arn:aws:s3:::acme-snap-offsite/*"), "PutObject outside its prefix"),
        (lambda d: d["bucket_policy"]["Statement"][1]["Condition"]["ArnNotLike"].update({"aws:PrincipalArn": [ADMIN, f"arn:aws:iam::{ACCOUNT}:user/snap/*"]}),
         "does not deny PutBucketPolicy"),
    ],
)
def test_the_checker_catches_a_weakened_document(breakage, expected):
    spec = provision.load_spec(base())
    docs = copy.deepcopy(provision.documents(spec))
    breakage(docs)
    problems = provision.check_policies(spec, docs)
    assert any(expected in p for p in problems), problems


def test_checker_refuses_to_guess_unknown_operators():
    spec = provision.load_spec(base())
    docs = copy.deepcopy(provision.documents(spec))
    docs["bucket_policy"]["Statement"][0]["Condition"]["ForAnyValue:StringLike"] = {"aws:PrincipalTag/x": "y"}
    with pytest.raises(provision.ProvisionError, match="not supported"):
        provision.check_policies(spec, docs)


def test_condition_semantics_for_missing_keys():
    holds = provision._condition_holds
    assert holds({"StringNotEquals": {"k": "a"}}, {}) is True  # negated: missing key -> true
    assert holds({"StringEquals": {"k": "a"}}, {}) is False
    assert holds({"NumericLessThan": {"k": "5"}}, {}) is False
    assert holds({"NumericLessThanIfExists": {"k": "5"}}, {}) is True
    assert holds({"Null": {"k": "true"}}, {}) is True
    assert holds({"Null": {"k": "false"}}, {"k": "x"}) is True
    assert holds({"ArnNotLike": {"aws:PrincipalArn": ["arn:aws:iam::1:role/a*"]}}, {"aws:PrincipalArn": "arn:aws:iam::1:role/ab"}) is False
    assert holds({"Bool": {"b": "true"}, "StringEquals": {"k": ["x", "y"]}}, {"b": "true", "k": "y"}) is True


@pytest.mark.parametrize(
    "settings, message",
    [
        (base(retain_days=89), "at least 90 days"),
        (base(retain_days=40000), "above the maximum"),
        (base(noncurrent_expire_days=90), "after the lock ends"),
        (base(expire_days=30), "after the lock ends"),
        (base(storage_class="COLD"), "storage_class"),
        (base(bucket="Not_A_Bucket"), "not a valid S3 bucket name"),
        (base(prefix="a/../b"), "prefix"),
        (base(prefix="a*"), "prefix"),
        (base(admins=[f"arn:aws:iam::{ACCOUNT}:*"]), "every principal"),
        (base(admins=["root"]), "not an IAM principal ARN"),
        (base(encryption="aws:kms"), "kms_key_id"),
        (base(identity={"type": "role", "name": "r"}), "needs someone to assume it"),
        (base(identity={"type": "user", "instance_profile": True}), "for type role"),
        (base(vault_lock={"enabled": True}), "kind glacier only"),
        (base(colour="blue"), "unknown setting"),
        ({}, "missing"),
    ],
)
def test_bad_settings_are_refused_with_the_key(settings, message):
    with pytest.raises(provision.ProvisionError, match=message):
        provision.load_spec(settings)


def test_pipeline_settings_are_accepted_and_ignored():
    spec = provision.load_spec(base(profile="snap", credentials_file="/etc/snap/aws/credentials", part_size=64 << 20))
    assert spec.bucket == "acme-snap-offsite"


def test_policy_weakening_reasons():
    spec = provision.load_spec(base())
    old = provision.bucket_policy(spec)
    assert provision.policy_weakening(old, old) == []
    assert provision.policy_weakening(old, provision.bucket_policy(provision.load_spec(base(retain_days=120)))) == []
    shorter = provision.policy_weakening(provision.bucket_policy(provision.load_spec(base(retain_days=120))), old)
    assert any("from 120 to 90" in r for r in shorter)
    more = provision.policy_weakening(old, provision.bucket_policy(provision.load_spec(base(admins=[ADMIN, f"arn:aws:iam::{ACCOUNT}:user/x"]))))
    assert any("exempt more principals" in r for r in more)
    fewer_actions = copy.deepcopy(old)
    fewer_actions["Statement"][0]["Action"].remove("s3:DeleteObjectVersion")
    assert any("s3:deleteobjectversion" in r for r in provision.policy_weakening(old, fewer_actions))


def test_lifecycle_keeps_manifests_readable_and_expires_only_after_the_lock():
    spec = provision.load_spec(base(retain_days=120, expire_days=400))
    rules = {r["ID"]: r for r in provision.lifecycle_configuration(spec)["Rules"]}
    tr = rules["snap-archive-transition"]
    assert tr["Filter"]["And"] == {"Prefix": "snap/", "ObjectSizeGreaterThan": 1024 * 1024}
    assert tr["Transitions"] == [{"Days": 0, "StorageClass": "GLACIER"}]
    assert rules["snap-noncurrent-expiry"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 121
    assert rules["snap-expire-after-lock"]["Expiration"]["Days"] == 400


def test_cloudformation_template_passes_cfn_lint():
    lint = pytest.importorskip("cfnlint.api", reason="cfn-lint comes with moto[server]")
    for name in ("user", "role with instance profile", "role via Roles Anywhere", "SSE-KMS, 400 days, DEEP_ARCHIVE after 7 days"):
        spec = provision.load_spec(VARIANTS[name])
        tpl = provision.cloudformation(spec)
        matches = lint.lint(json.dumps(tpl), config=lint.ManualArgs(regions=["eu-central-1"]))
        serious = [str(m) for m in matches if m.rule.id.startswith("E")]
        assert serious == [], f"{name}: {serious}"
        assert tpl["Resources"]["SnapBucketPolicy"]["Properties"]["PolicyDocument"] == provision.bucket_policy(spec)
        assert tpl["Resources"]["SnapBucket"]["DeletionPolicy"] == "Retain"


def test_template_files(tmp_path):
    written = provision.template(base(), tmp_path)
    names = sorted(p.rsplit("/", 1)[1] for p in written)
    assert names == ["README.txt", "bucket_policy.json", "cloudformation.json", "encryption.json", "identity_policy.json",
                     "lifecycle.json", "object_lock.json", "ownership_controls.json", "public_access_block.json", "versioning.json"]
    assert json.loads((tmp_path / "bucket_policy.json").read_text()) == provision.bucket_policy(provision.load_spec(base()))
    vault = tmp_path / "vault"
    names = sorted(p.rsplit("/", 1)[1] for p in provision.template(VARIANTS["glacier vault with lock"], vault))
    assert names == ["README.txt", "identity_policy.json", "vault_access_policy.json", "vault_lock_policy.json"]
    lock = json.loads((vault / "vault_lock_policy.json").read_text())
    assert lock["Statement"][0]["Condition"] == {"NumericLessThan": {"glacier:ArchiveAgeInDays": "90"}}


# -- the backup server's AWS profile -------------------------------------------------


def test_aws_files_for_each_credential_source():
    keys = provision.render_aws_files("snap", {"access_key_id": "AKIA1", "secret_access_key": "s3cr3t", "region": "eu-central-1"})
    assert "[snap]" in keys["credentials"] and "aws_secret_access_key = s3cr3t" in keys["credentials"]
    assert keys["config"].startswith("[profile snap]") and "region = eu-central-1" in keys["config"]
    role = provision.render_aws_files("snap", {"access_key_id": "AKIA1", "secret_access_key": "s", "role_arn": "arn:aws:iam::1:role/r"})
    assert "[snap-source]" in role["credentials"] and "source_profile = snap-source" in role["config"]
    imds = provision.render_aws_files("snap", {"role_arn": "arn:aws:iam::1:role/r", "credential_source": "Ec2InstanceMetadata"})
    assert imds["credentials"] is None and "credential_source = Ec2InstanceMetadata" in imds["config"]
    ra = provision.render_aws_files("snap", {"roles_anywhere": {
        "certificate": "/etc/snap/pki/cert.pem", "private_key": "/etc/snap/pki/key.pem",
        "trust_anchor_arn": "arn:aws:rolesanywhere:eu-central-1:1:trust-anchor/t", "profile_arn": "arn:aws:rolesanywhere:eu-central-1:1:profile/p",
        "role_arn": "arn:aws:iam::1:role/r"}})
    assert ra["credentials"] is None
    assert "credential_process = /usr/local/bin/aws_signing_helper credential-process --certificate /etc/snap/pki/cert.pem" in ra["config"]
    with pytest.raises(provision.ProvisionError, match="line break"):
        provision.render_aws_files("snap", {"access_key_id": "AKIA1\n[evil]", "secret_access_key": "s"})
    with pytest.raises(provision.ProvisionError, match="both"):
        provision.render_aws_files("snap", {"access_key_id": "AKIA1"})


def test_secrets_come_from_sdb_never_plaintext():
    store = {"sdb://vault/key": "AKIA9", "sdb://vault/secret": "top"}
    got = provision.resolve_secrets({"access_key_id": "sdb://vault/key", "secret_access_key": "sdb://vault/secret"}, store.get)
    assert got == {"access_key_id": "AKIA9", "secret_access_key": "top"}
    with pytest.raises(provision.ProvisionError, match="plaintext"):
        provision.resolve_secrets({"secret_access_key": "top"}, store.get)
    with pytest.raises(provision.ProvisionError, match="returned nothing"):
        provision.resolve_secrets({"access_key_id": "sdb://vault/missing"}, store.get)


def test_write_private_is_atomic_0600_and_idempotent(tmp_path):
    path = tmp_path / "d" / "credentials"
    import os

    uid, gid = os.geteuid(), os.getegid()
    assert provision.write_private(str(path), "a\n", uid, gid) is True
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert provision.write_private(str(path), "a\n", uid, gid) is False
    path.chmod(0o644)
    assert provision.write_private(str(path), "a\n", uid, gid) is True
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["credentials"]


# -- Glacier vault lock: initiate, verify, complete -------------------------------------
#
# Mock, deliberately: no Glacier vault lock can run here (moto's Glacier has
# no vault lock API, LocalStack community has no Glacier, and Amazon takes no
# new vault customers). botocore's Stubber checks every request against the
# real Glacier API model and answers with canned responses.


def _vault_provisioner(settings, responses):
    from botocore.stub import Stubber

    boto3 = pytest.importorskip("boto3")
    sess = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="eu-central-1")
    spec = provision.load_spec(settings)
    p = provision.Provisioner(spec, session=sess)
    p.aws._caller = ADMIN  # the caller is an administrator (no STS call)
    stubs = {name: Stubber(getattr(p.aws, name)) for name in ("glacier", "iam")}
    for service, method, answer, params in responses:
        if isinstance(answer, str):
            stubs[service].add_client_error(method, service_error_code=answer, expected_params=params)
        else:
            stubs[service].add_response(method, answer, params)
    for s in stubs.values():
        s.activate()
    return p, stubs


def _vault_responses(spec, lock_answer, extra=()):
    access = json.dumps(provision.vault_access_policy(spec))
    pol = json.dumps(provision.identity_policy(spec))
    return [
        ("glacier", "describe_vault", {"VaultName": spec.bucket}, {"accountId": "-", "vaultName": spec.bucket}),
        ("glacier", "get_vault_access_policy", {"policy": {"Policy": access}}, None),
        ("iam", "get_user", {"User": {"UserName": "snap-backup", "Path": "/snap/", "UserId": "AIDA0000000000000", "Arn": spec.identity_arn(),
                                      "CreateDate": "2026-01-01T00:00:00Z"}}, None),
        ("iam", "get_user_policy", {"UserName": "snap-backup", "PolicyName": provision.IDENTITY_POLICY_NAME, "PolicyDocument": pol}, None),
        ("iam", "list_user_policies", {"PolicyNames": [provision.IDENTITY_POLICY_NAME]}, None),
        ("iam", "list_attached_user_policies", {"AttachedPolicies": []}, None),
        ("iam", "list_groups_for_user", {"Groups": []}, None),
        ("glacier", "get_vault_lock", lock_answer, None),
        *extra,
    ]


def test_vault_lock_is_initiated_then_completed_only_with_id_and_confirmation():
    settings = VARIANTS["glacier vault with lock"]
    spec = provision.load_spec(settings)
    lock_doc = json.dumps(provision.vault_lock_policy(spec))

    # 1. No lock yet: initiate (reversible for 24 hours), print the lock id.
    p, stubs = _vault_provisioner(settings, _vault_responses(spec, "ResourceNotFoundException", [
        ("glacier", "initiate_vault_lock", {"lockId": "LOCK-1"}, {"accountId": "-", "vaultName": "snap-vault", "policy": {"Policy": lock_doc}}),
    ]))
    out = p.run()
    assert out["result"] is True and out["applied"] == ["vault-lock"]
    assert any("LOCK-1" in n for n in out["notes"])
    stubs["glacier"].assert_no_pending_responses()

    # 2. In progress with the right policy, no confirmation: verify only, change nothing.
    in_progress = {"Policy": lock_doc, "State": "InProgress", "ExpirationDate": "2026-01-02T00:00:00Z", "CreationDate": "2026-01-01T00:00:00Z"}
    p, stubs = _vault_provisioner(settings, _vault_responses(spec, in_progress))
    out = p.run()
    assert out["result"] is True and out["plan"] == [] and any("complete_lock_id" in n for n in out["notes"])

    # 3. Lock id given but no confirmation phrase: still nothing.
    p, stubs = _vault_provisioner(dict(settings, vault_lock={"enabled": True, "complete_lock_id": "LOCK-1"}), _vault_responses(spec, in_progress))
    assert p.run()["applied"] == []

    # 4. Lock id and confirmation: complete (irreversible).
    confirmed = dict(settings, vault_lock={"enabled": True, "complete_lock_id": "LOCK-1"}, confirm_irreversible=provision.CONFIRM_PHRASE)
    p, stubs = _vault_provisioner(confirmed, _vault_responses(spec, in_progress, [
        ("glacier", "complete_vault_lock", {}, {"accountId": "-", "vaultName": "snap-vault", "lockId": "LOCK-1"}),
    ]))
    out = p.run()
    assert out["applied"] == ["vault-lock"] and out["plan"][0]["irreversible"]
    stubs["glacier"].assert_no_pending_responses()

    # 5. In progress with another policy: abort it and start again.
    other = dict(in_progress, Policy=json.dumps(provision.vault_lock_policy(provision.load_spec(dict(settings, retain_days=91)))))
    p, stubs = _vault_provisioner(settings, _vault_responses(spec, other, [
        ("glacier", "abort_vault_lock", {}, {"accountId": "-", "vaultName": "snap-vault"}),
        ("glacier", "initiate_vault_lock", {"lockId": "LOCK-2"}, None),
    ]))
    assert p.run()["applied"] == ["vault-lock-abort", "vault-lock"]

    # 6. Completed with a shorter retention: a problem nobody can fix in place.
    weaker = {"Policy": json.dumps(provision.vault_lock_policy(provision.load_spec(dict(settings, retain_days=90)))), "State": "Locked"}
    longer = dict(settings, retain_days=180)
    spec180 = provision.load_spec(longer)
    p, stubs = _vault_provisioner(longer, _vault_responses(spec180, weaker, []))
    # the access policy has no retention in it: same document for 90 and 180 days
    out = p.run(test=True)
    assert out["result"] is False and any("new vault" in x for x in out["problems"])


# -- the CLI commands, registered as the coordinator will in snap_core.cli ----------------


def _register():
    from snap_core import cli

    for name, help_text, args, func in (
        ("verify-offsite", provision.VERIFY_HELP, provision.VERIFY_ARGS, provision.cmd_verify_offsite),
        ("offsite-template", provision.TEMPLATE_HELP, provision.TEMPLATE_ARGS, provision.cmd_offsite_template),
    ):
        if name not in cli.COMMANDS:
            cli.command(name, help_text, *[cli.arg(*n, **o) for n, o in args])(func)
    return cli


def test_offsite_template_command_writes_the_files(tmp_path, capsys):
    cli = _register()
    config = tmp_path / "server.json"
    config.write_text(json.dumps({"offsite": base()}))
    assert cli.main(["--json", "offsite-template", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    written = json.loads(capsys.readouterr().out)["written"]
    assert str(tmp_path / "out" / "cloudformation.json") in written


def test_verify_offsite_with_bad_settings_is_a_usage_error(tmp_path, capsys):
    cli = _register()
    config = tmp_path / "bad.json"
    config.write_text(json.dumps(base(retain_days=30)))
    assert cli.main(["verify-offsite", "--config", str(config)]) == cli.EXIT_USAGE
    assert "at least 90 days" in capsys.readouterr().err
    assert cli.main(["verify-offsite", "--config", str(tmp_path / "missing.json")]) == cli.EXIT_FAIL


# -- lock-bombing: the cap on retention ------------------------------------------------


@pytest.mark.parametrize("provider", ["aws", "ceph"])
def test_no_retention_past_the_cap_but_room_for_a_chain(provider):
    """retain_days + chain max age + 7: a compromised backup server cannot lock
    anything longer (PutObject or PutObjectRetention), snap's own requests and
    an incremental chain's base (retain_days + chain age) still pass."""
    extra = {} if provider == "aws" else {"endpoint_url": "http://127.0.0.1:7480", "admins": ["arn:aws:iam:::user/a"]}
    spec = provision.load_spec(base(provider=provider, retention_repair=True, retain_days=100, chain_max_age_days=60,
                                    chains=True, **extra))  # fmt: skip
    assert spec.retention_cap_days == 167
    docs = provision.documents(spec)
    me = spec.identity_arn() if provider == "aws" else spec.backup_principal()
    ident = [docs["identity_policy"]] if "identity_policy" in docs else []
    key = f"{spec.prefix_arn[:-1]}2026/x.sqfs.gpg"

    def decide(action, days, mode="COMPLIANCE"):
        ctx = {"s3:object-lock-mode": mode, "s3:object-lock-remaining-retention-days": str(days), "s3:if-none-match": "*"}
        return provision.evaluate(ident, [docs["bucket_policy"]], me, action, key, ctx)

    for action in ("s3:PutObject", "s3:PutObjectRetention"):
        assert decide(action, 101) == "allow", action  # what the archive run asks
        assert decide(action, 160) == "allow", action  # a chain's base: retain_days + chain age
        assert decide(action, 167) == "allow", action
        assert decide(action, 168) == "explicit-deny", action  # one day past the cap
        assert decide(action, 36500) == "explicit-deny", action  # until 2126
        assert decide(action, 99) == "explicit-deny", action
        assert decide(action, 120, mode="GOVERNANCE") == "explicit-deny", action


def test_the_cap_follows_the_settings_and_the_chain_setting_is_checked():
    # Without chains no room for one: nothing snap writes needs more than retain_days + 1.
    assert provision.load_spec(base(retain_days=120, chain_max_age_days=30)).retention_cap_days == 127
    assert provision.load_spec(base()).retention_cap_days == 90 + 7
    assert provision.load_spec(base(chains=True)).retention_cap_days == 90 + 180 + 7
    spec = provision.load_spec(base(retain_days=120, chain_max_age_days=30, chains=True))
    longer = next(s for s in provision.bucket_policy(spec)["Statement"] if s["Sid"] == "SnapDenyLongerRetention")
    assert longer["Condition"]["NumericGreaterThan"] == {"s3:object-lock-remaining-retention-days": "157"}
    # A longer retain_days raises the cap too: that is the operator's change, never a refusal.
    old = provision.bucket_policy(provision.load_spec(base()))
    assert provision.policy_weakening(old, provision.bucket_policy(spec)) == []
    with pytest.raises(provision.ProvisionError, match="chain:max_age_days"):
        provision.load_spec(base(chain_max_age_days=-1))
    with pytest.raises(provision.ProvisionError, match="maximum retention"):
        provision.load_spec(base(retain_days=3600, chain_max_age_days=90))


def test_without_repair_the_backup_identity_never_touches_a_retention():
    spec = provision.load_spec(base())  # AWS: locks are kept as asked, no repair right
    docs = provision.documents(spec)
    assert "s3:PutObjectRetention" not in docs["identity_policy"]["Statement"][0]["Action"]
    assert "s3:GetObjectRetention" in docs["identity_policy"]["Statement"][0]["Action"]
    denied = next(s for s in docs["bucket_policy"]["Statement"] if s["Sid"] == "SnapDenyObjectDestruction")
    assert "s3:PutObjectRetention" in denied["Action"]
    ceph = provision.load_spec(base(provider="ceph", endpoint_url="http://127.0.0.1:7480", admins=["arn:aws:iam:::user/a"]))
    assert not ceph.retention_repair and ceph.storage_class == "STANDARD"
    assert provision.lock_configuration(ceph)["Rule"]["DefaultRetention"]["Days"] == 91
    cdocs = provision.documents(ceph)
    assert "identity_policy" not in cdocs and "ownership_controls" not in cdocs
    assert cdocs["public_access_block"] == {"BlockPublicAcls": False, "IgnorePublicAcls": True,
                                            "BlockPublicPolicy": False, "RestrictPublicBuckets": True}
    sids = [s["Sid"] for s in cdocs["bucket_policy"]["Statement"]]
    assert "SnapDenyReplacingObjects" not in sids and "SnapDenyInsecureTransport" not in sids
    grants = {s["Sid"]: s["Principal"] for s in cdocs["bucket_policy"]["Statement"]}
    assert grants.pop("SnapAllowAdministrators") == {"AWS": ["arn:aws:iam:::user/a"]}
    assert all(p == {"AWS": ["arn:aws:iam:::user/snap-backup"]} for p in grants.values()), grants
    # No noncurrent expiry where an overwrite cannot be refused (finding 4 of
    # the cold attack on issue 12): it would delete the genuine version.
    assert [r["ID"] for r in cdocs["lifecycle"]["Rules"]] == ["snap-abort-incomplete-uploads"]
    with pytest.raises(provision.ProvisionError, match="noncurrent_expire_days is refused for provider ceph"):
        provision.load_spec(base(provider="ceph", endpoint_url="http://127.0.0.1:7480", admins=["arn:aws:iam:::user/a"],
                                 noncurrent_expire_days=400))  # fmt: skip
    assert [r["ID"] for r in docs["lifecycle"]["Rules"]] == [
        "snap-archive-transition", "snap-noncurrent-expiry", "snap-abort-incomplete-uploads"]  # fmt: skip


def test_with_chains_the_ceph_default_retention_covers_a_chain_and_stays_under_the_cap():
    """Ceph RGW 16 keeps only the bucket default on multipart uploads: with
    chains, a data piece needs the chain's whole life (measured: a 7 MiB base
    piece was refused, locked 92 days, needed 182). AWS keeps every lock."""
    ceph = dict(provider="ceph", endpoint_url="http://127.0.0.1:7480", admins=["arn:aws:iam:::user/a"])
    plain = provision.load_spec(base(**ceph))
    chained = provision.load_spec(base(**ceph, chains=True, chain_max_age_days=60))
    days = provision.lock_configuration(chained)["Rule"]["DefaultRetention"]["Days"]
    assert provision.lock_configuration(plain)["Rule"]["DefaultRetention"]["Days"] == 91
    assert days == 90 + 1 + 60 + 1 and days <= chained.retention_cap_days
    assert provision.load_spec(base(chains=True)).default_retention_days == 90
    with pytest.raises(provision.ProvisionError, match="chain:enabled must be true or false"):
        provision.load_spec(base(**ceph, chains="yes"))
