"""snap-receive's command validation: only snap's own rsync receiving commands pass,
and the receiver it starts is always bounded and confined, whatever the client asks."""

import importlib.machinery
import importlib.util

import pytest

from tests.conftest import REPO

loader = importlib.machinery.SourceFileLoader("snap_receive", str(REPO / "salt/snap/files/snap-receive"))
spec = importlib.util.spec_from_loader("snap_receive", loader)
receive = importlib.util.module_from_spec(spec)
loader.exec_module(receive)

DATA = "rsync --server -lHogDtpAXrSe.iLsfxCIvu --timeout=600 --bwlimit=1000 --stats --numeric-ids --fake-super . data/"
STATE = "rsync --server -e.LsfxCIvu --timeout=600 . ./"


def test_snaps_own_commands_pass():
    flags, longs, dest, timeout = receive.parse(DATA)
    assert flags == "-lHogDtpAXrSe.iLsfxCIvu" and dest == "data" and timeout == 600
    assert "--fake-super" not in longs, "it is added by snap-receive itself, always"
    assert not any(o.startswith("--timeout") for o in longs), "the receiver sets its own"
    assert receive.parse(STATE)[2] == "state"


def test_the_receiver_never_talks_back():
    # -v would make the receiver send names back; the capability letters after e. stay.
    flags, *_ = receive.parse("rsync --server -vvlogDtpre.iLsfxCIvu . data/")
    assert flags == "-logDtpre.iLsfxCIvu"


def test_the_receiver_bounds_a_transfer_whatever_the_client_asks():
    assert receive.io_timeout(None, 300) == 300, "no --timeout: the receiver's own"
    assert receive.io_timeout(0, 300) == 300, "--timeout=0 (never) is not honoured"
    assert receive.io_timeout(60, 300) == 60, "a stricter client timeout is fine"
    assert receive.io_timeout(86400, 300) == 300


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
        ("rsync --server -ce.LsfxCIvu . data/", "not allowed"),  # compares stored content
        ("rsync --server -ue.LsfxCIvu . data/", "not allowed"),  # compares stored times
        ("rsync --server -me.LsfxCIvu . data/", "not allowed"),  # would read a filter list
        ("rsync --server -re.LsfxCIvu . ./", "one file"),
        ("rsync --server -re.LsfxCIvu --delete . data/", "fresh tree"),
        ("rsync --server -re.LsfxCIvu --delete-excluded . data/", "fresh tree"),
        ("rsync --server -e.LsfxCIvu --existing . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --ignore-existing . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --link-dest=/srv/snap/history . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --log-file=/etc/passwd . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --temp-dir=/tmp . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --max-alloc=0 . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --debug=FILTER . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --timeout=1;id . data/", "not allowed"),
        ("rsync --server -e.LsfxCIvu --bwlimit=1' . data/", "refused"),
        ("rsync --server -e.LsfxCIvu . data/\nid", "refused"),
        ("rsync --server -e.LsfxCIvu data/", "unexpected"),
        ("rsync --server --daemon --config=/etc/shadow .", "unexpected"),
    ],
)
def test_everything_else_is_refused(command, why):
    with pytest.raises(receive.Refused, match=why):
        receive.parse(command)


def test_the_receiver_is_always_confined_and_never_sends_checksums():
    argv = receive.receiver_argv("-logDtpre.iLsfxCIvu", ["--stats"], 300, "/j/snap-web1", "/j/snap-web1/incoming")
    assert "--confine-root=/j/snap-web1/incoming" in argv, "no fail-open: an rsync without it refuses to run"
    assert "--whole-file" in argv and "--fake-super" in argv and "--timeout=300" in argv
    assert not any(a.startswith("--delete") for a in argv)


def test_the_receiving_rsync_runs_as_the_account_without_privileges():
    class Pw:
        pw_uid, pw_gid = 1234, 1234

    argv = receive.as_account(Pw, ["/usr/bin/rsync", "--server"])
    assert argv[0] == "/usr/bin/setpriv" and "--reuid=1234" in argv and "--no-new-privs" in argv
    assert "--clear-groups" in argv and "--bounding-set=-all" in argv
    assert argv[-2:] == ["/usr/bin/rsync", "--server"]
