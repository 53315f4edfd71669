"""snap-receive's command validation: only snap's own rsync receiving commands pass."""

import importlib.machinery
import importlib.util

import pytest

from tests.conftest import REPO

loader = importlib.machinery.SourceFileLoader("snap_receive", str(REPO / "salt/snap/files/snap-receive"))
spec = importlib.util.spec_from_loader("snap_receive", loader)
receive = importlib.util.module_from_spec(spec)
loader.exec_module(receive)

DATA = "rsync --server -lHogDtpAXrSe.iLsfxCIvu --timeout=600 --bwlimit=1000 --delete-excluded --stats --numeric-ids --fake-super . data/"
STATE = "rsync --server -e.LsfxCIvu --timeout=600 . ./"


def test_snaps_own_commands_pass():
    flags, longs, dest = receive.parse(DATA)
    assert flags == "-lHogDtpAXrSe.iLsfxCIvu" and dest == "data"
    assert "--fake-super" not in longs, "it is added by snap-receive itself, always"
    assert receive.parse(STATE)[2] == "."


@pytest.mark.parametrize(
    "command,why",
    [
        ("", "no command"),
        ("id", "rsync --server"),
        ("rsync --server --sender -logDtpre.iLsfxCIvu . data/", "can only write"),
        ("rsync --server -e.LsfxCIvu . ../", "not allowed"),
        ("rsync --server -e.LsfxCIvu . /srv/snap/history/", "not allowed"),
        ("rsync --server -e.LsfxCIvu . data/../../x", "not allowed"),
        ("rsync --server -se.LsfxCIvu . data/", "not allowed"),
        ("rsync --server -Le.LsfxCIvu . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --link-dest=/srv/snap/history . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --log-file=/etc/passwd . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --timeout=1;id . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --bwlimit=1' . data/", "refused"),
        ("rsync --server -e.LsfxCIvu . data/\nid", "refused"),
        ("rsync --server -e.LsfxCIvu data/", "unexpected"),
    ],
)
def test_everything_else_is_refused(command, why):
    with pytest.raises(receive.Refused, match=why):
        receive.parse(command)
