"""Chains are the default for an S3 target (guarantee 8: an archive costs
what changed, not the history), full archives for a Glacier vault, and the
archive run on the backup server and ``salt-run snap.provision`` on the
master decide alike (the bucket policy's cap on retention must leave a
chain room exactly when runs make chains)."""

import copy
import json

import pytest
import salt.exceptions
import yaml

from snap_core import mod_archive
from snap_core.chains import chains_enabled, provisioning_chains
from tests.conftest import REPO
from tests.support.gpg import GnuPG
from tests.support.loader_modules import load


@pytest.mark.parametrize(
    ("archive", "want"),
    [
        (None, True),
        ({}, True),
        ({"chain": {"enabled": None, "max_age_days": 90}}, True),
        ({"target": {"bucket": "b"}}, True),
        ({"target": {"kind": "S3", "bucket": "b"}}, True),
        ({"target": {"kind": "glacier", "vault": "v"}}, False),
        ({"target": {"kind": "VAULT", "vault": "v"}}, False),
        # Not trimmed, as the core does not trim it (it refuses the kind): no vault here.
        ({"target": {"kind": " vault", "vault": "v"}}, True),
        ({"target": {"kind": "glacier-vault", "vault": "v"}, "chain": {"enabled": True}}, True),
        ({"chain": {"enabled": False}}, False),
    ],
)
def test_null_means_chains_unless_the_target_is_a_vault(archive, want):
    assert chains_enabled(archive) is want


@pytest.mark.parametrize("bad", ["yes", 1, "auto", []])
def test_anything_but_a_boolean_or_null_is_refused_naming_the_setting(bad):
    with pytest.raises(ValueError, match=r"snap:archive:chain:enabled must be True, False or null"):
        chains_enabled({"chain": {"enabled": bad}})
    with pytest.raises(ValueError, match=r"snap:archive:chain must be a mapping"):
        chains_enabled({"chain": "on"})


@pytest.mark.parametrize("chain", [False, 0, "", [], "off"])
def test_a_chain_setting_that_is_no_mapping_is_refused_not_read_as_the_default(chain):
    # Cold review of 592d307: `chain: False` read as "no settings", i.e. chains on.
    with pytest.raises(ValueError, match=r"snap:archive:chain must be a mapping"):
        chains_enabled({"chain": chain})
    with pytest.raises(ValueError, match=r"snap:archive must be a mapping"):
        chains_enabled(["chain"])


def test_provisioning_decides_alike_and_says_when_it_assumed_the_default():
    settings = {"bucket": "b"}
    assert provisioning_chains(settings, {"chain": {"enabled": False}}, "the pillar of backup1") == []
    assert settings["chains"] is False
    settings = {"bucket": "b"}
    assert provisioning_chains(settings, {"target": {"kind": "glacier"}}, "x") == []
    assert settings["chains"] is False
    settings = {"bucket": "b"}
    notes = provisioning_chains(settings, None, "the master's pillar")
    assert settings["chains"] is True
    assert len(notes) == 1 and "the master's pillar has no snap:archive: chains assumed" in notes[0]
    assert "snap.provision minion=<backup server>" in notes[0]
    # Said explicitly: kept.
    settings = {"bucket": "b", "chains": False}
    assert provisioning_chains(settings, None, "x") == [] and settings["chains"] is False


@pytest.fixture
def runner():
    mod = load("runners")
    mod.pillars = {}
    mod.__salt__ = {"pillar.show_pillar": lambda minion=None: copy.deepcopy(mod.pillars.get(minion or "master", {}))}
    return mod


def test_the_runner_reads_chains_from_the_backup_servers_pillar(runner):
    offsite = {"bucket": "b", "retain_days": 90}
    runner.pillars = {
        "backup1": {"snap": {"offsite": offsite, "archive": {"chain": {"enabled": False}}}},
        "backup2": {"snap": {"offsite": offsite, "archive": {"target": {"kind": "glacier", "vault": "v"}}}},
        "backup3": {"snap": {"offsite": offsite, "archive": {"chain": {"max_age_days": 90}}}},
        "backup4": {"snap": {"offsite": offsite, "archive": {"chain": False}}},
        "backup5": {"snap": {"offsite": offsite, "archive": {"chain": "on"}}},
        "master": {"snap": {"offsite": offsite}},
    }
    settings, notes = runner._offsite_settings("backup1")
    assert settings["chains"] is False and notes == []
    assert runner._offsite_settings("backup2")[0]["chains"] is False
    settings, notes = runner._offsite_settings("backup3")
    assert settings["chains"] is True and settings["chain_max_age_days"] == 90 and notes == []
    with pytest.raises(salt.exceptions.SaltInvocationError, match="snap:archive:chain must be a mapping"):
        runner._offsite_settings("backup4")
    with pytest.raises(salt.exceptions.SaltInvocationError, match="snap:archive:chain must be a mapping"):
        runner._offsite_settings("backup5")
    # The master's own pillar, without snap:archive: the default, and a note saying so.
    settings, notes = runner._offsite_settings()
    assert settings["chains"] is True and "the master's pillar has no snap:archive" in notes[0]
    # pillar= merges over the minion's archive pillar rather than replacing it.
    over = {"snap": {"archive": {"chain": {"max_age_days": 120}}}}
    settings, _ = runner._offsite_settings("backup1", pillar=over)
    assert settings["chains"] is False
    over = {"snap": {"archive": {"chain": {"enabled": True}}}}
    assert runner._offsite_settings("backup1", pillar=over)[0]["chains"] is True


def test_the_shipped_defaults_and_example_pillar_leave_the_choice_to_the_target():
    defaults = yaml.safe_load((REPO / "salt" / "snap" / "defaults.yaml").read_text())
    assert defaults["archive"]["chain"]["enabled"] is None
    assert chains_enabled(defaults["archive"]) is True
    example = (REPO / "pillar" / "snap.sls").read_text()
    assert "enabled: null" in example


@pytest.fixture(scope="module")
def public_key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("key") / "archive-key.asc"
    with GnuPG() as gpg:
        path.write_bytes(gpg.gpg("--armor", "--export", gpg.fingerprint).stdout)
    return str(path)


class _Env:
    """What archive_config reads of a ModuleEnv: the merged settings and the minion id."""

    def __init__(self, tmp_path, key, **archive):
        self.opts = {"id": "backup1"}
        self._settings = {
            "server": {"base": str(tmp_path / "srv"), "state_dir": str(tmp_path / "state")},
            "archive": {"recipients": [key], "recipients_dir": str(tmp_path / "rcpt"), "work_dir": str(tmp_path / "w"),
                        "storage_class": "GLACIER", "retain_days": 90, "pack": {"compressor": "zstd", "level": 3},
                        "chain": {"enabled": None, "max_age_days": 180, "max_dead_ratio": 0.5}, **archive},
        }  # fmt: skip

    def settings(self):
        return self._settings


def _config(env):
    out = mod_archive.archive_config(env)
    return json.loads(out) if isinstance(out, str) else out


def test_the_archive_config_cron_runs_says_chains_for_s3_and_full_archives_for_a_vault(tmp_path, public_key_file):
    key = public_key_file
    s3 = _config(_Env(tmp_path, key, target={"bucket": "b", "region": "eu-west-1"}))
    assert s3["chain"]["enabled"] is True and s3["chain"]["max_age_days"] == 180
    vault = _config(_Env(tmp_path, key, target={"kind": "glacier", "vault": "v", "region": "eu-west-1"}))
    assert vault["chain"]["enabled"] is False
    off = _config(_Env(tmp_path, key, target={"bucket": "b"}, chain={"enabled": False}))
    assert off["chain"]["enabled"] is False
    with pytest.raises(salt.exceptions.SaltInvocationError, match="must be True, False or null"):
        _config(_Env(tmp_path, key, target={"bucket": "b"}, chain={"enabled": "yes"}))
    # A chain setting that is no mapping: the clear error, not a TypeError.
    with pytest.raises(salt.exceptions.SaltInvocationError, match="snap:archive:chain must be a mapping"):
        _config(_Env(tmp_path, key, target={"bucket": "b"}, chain="on"))
