"""Functional tier: Salt's real loaders in-process, masterless, no daemons."""

import pytest
from saltfactories.utils.functional import Loaders

from tests.conftest import REPO


@pytest.fixture(scope="module")
def minion_id():
    return "web1.example.com"


@pytest.fixture(scope="module")
def pillar_tree(tmp_path_factory):
    """A pillar tree holding the example pillar."""
    root = tmp_path_factory.mktemp("pillar")
    for name in ("top.sls", "snap.sls"):
        (root / name).write_text((REPO / "pillar" / name).read_text())
    return root


@pytest.fixture(scope="module")
def minion(salt_factories, minion_id, pillar_tree):
    overrides = {
        "file_client": "local",
        "file_roots": {"base": [str(REPO / "salt")]},
        "pillar_roots": {"base": [str(pillar_tree)]},
        "module_dirs": [str(REPO)],
        "ext_pillar": [{"snap": {}}],
        "pillar_mask_output": False,
    }
    return salt_factories.salt_minion_daemon(minion_id, overrides=overrides)


@pytest.fixture
def loaders(minion):
    loaders = Loaders(minion.config.copy())
    try:
        yield loaders
    finally:
        loaders.reset_state()


@pytest.fixture
def root_dir(minion):
    return minion.config["root_dir"]
