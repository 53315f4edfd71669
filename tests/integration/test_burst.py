"""Issue 14: a burst of pushes to one backup server all land.

50 servers push at the same second over the test fleet's real sshd (their
accounts made by the real snap.server state from a mine that holds them):
with snap's sshd setting (MaxStartups 200:30:1000) and with sshd's default
(10:30:100), where sshd drops connections beyond 10 and the clients' retry
with jitter has to bring every push home. Small trees: one push is a few
files."""

import json
import pathlib
import shutil
import subprocess
import time

import pytest
import salt.cache
import salt.config

from tests.support.fleet import state_failures
from tests.support.pushing import PY, config_path, jail_record, srv

N = 50


def fake_ids():
    return [f"burst{i:02d}.dc{1 + i % 2}.example" for i in range(N)]


@pytest.fixture(scope="module")
def burst_fleet(pushed, tmp_path_factory):
    """N extra servers in the master's mine (accepted keys and mine data, as
    if each had been highstated), their accounts made by highstating the
    backup server; removed and purged afterwards."""
    fleet = pushed
    work = tmp_path_factory.mktemp("burst")
    opts = salt.config.master_config(fleet.master.config_file)
    cache = salt.cache.factory(opts)
    accepted = pathlib.Path(opts["pki_dir"]) / "minions"
    master_pub = (pathlib.Path(opts["pki_dir"]) / "master.pub").read_text()
    from snap_core import fleet as snap_fleet

    clients, published = {}, {}
    for minion_id in fake_ids():
        key = work / minion_id / "id_ed25519"
        key.parent.mkdir(parents=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        # Any PEM public key marks the id accepted; these never connect.
        (accepted / minion_id).write_text(master_pub)
        # Salt 3008 keeps the mine in bank "mine", one key per minion.
        cache.store("mine", minion_id, {"snap.pubkey": snap_fleet.mine_entry(minion_id, key)})
        clients[minion_id] = key
    try:
        assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
        mine = fleet.salt("mine.get", "backup1", "snap.accounts", tgt="web1")["backup1"]
        published.update({m: a for m, a in mine.items() if m in clients})
        assert len(published) == N, mine
        data = work / "data"
        (data / "etc").mkdir(parents=True)
        for i in range(5):
            (data / "etc" / f"f{i}.conf").write_text(f"setting {i}\n" * 20)
        template = json.loads(config_path(fleet, "web1").read_text())
        configs = {}
        for minion_id, key in clients.items():
            cfg = dict(
                template,
                minion_id=minion_id,
                account=published[minion_id],
                key=str(key),
                state_dir=str(key.parent / "state"),
                hooks_dir=str(key.parent / "hooks.d"),
                paths=[str(data / "etc")],
                retries=6,
                retry_delay=1,
            )
            path = key.parent / "client.json"
            path.write_text(json.dumps(cfg))
            configs[minion_id] = path
        yield fleet, configs, published
    finally:
        for minion_id in clients:
            (accepted / minion_id).unlink(missing_ok=True)
            cache.flush("mine", minion_id)
        purge = sorted(published.values())
        fleet.set_pillar(f"snap: {{server: {{purge: [{', '.join(purge)}]}}}}\n" if purge else "")
        assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
        fleet.set_pillar("")
        shutil.rmtree(work, ignore_errors=True)


def burst(configs):
    """Start every push at once; (seconds to the last, {id: record})."""
    t0 = time.monotonic()
    procs = {
        m: subprocess.Popen(
            [PY, "-m", "snap_core", "push", "--quiet", "--no-splay", "--config", str(c)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m, c in configs.items()
    }
    errors = {m: p.communicate(timeout=600)[1] for m, p in procs.items()}
    wall = time.monotonic() - t0
    records = {}
    for m, c in configs.items():
        state_dir = pathlib.Path(json.loads(c.read_text())["state_dir"])
        records[m] = json.loads((state_dir / "push-last.json").read_text())
        records[m]["stderr"] = errors[m][-500:]
    return wall, records


def set_max_startups(fleet, value):
    # Only the backup server: the 50 generated ids are accepted but never answer.
    fleet.set_pillar(f"snap: {{server: {{max_startups: '{value}'}}}}\n" if value else "", tgt="backup1")
    assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
    fleet.sshd.reload()


@pytest.mark.parametrize("max_startups", [None, "10:30:100"], ids=["snap-setting", "sshd-default"])
def test_fifty_simultaneous_pushes_all_land(burst_fleet, max_startups):
    fleet, configs, published = burst_fleet
    cfg = fleet.root_of("backup1") / "etc" / "ssh" / "sshd_config"
    if max_startups:
        set_max_startups(fleet, max_startups)
    try:
        effective = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(cfg)], capture_output=True, text=True).stdout
        setting = next(line for line in effective.splitlines() if line.startswith("maxstartups"))
        wall, records = burst(configs)
    finally:
        if max_startups:
            set_max_startups(fleet, None)
    failed = {m: (r["result"], r.get("error"), r["stderr"]) for m, r in records.items() if r["result"] != "ok"}
    retried = sorted(r["attempts"] for r in records.values() if r["attempts"] > 3)
    print(
        f"\n{N} simultaneous pushes, sshd {setting}: last one done after {wall:.1f} s; "
        f"{len(records) - len(failed)} ok, {len(failed)} failed; {len(retried)} needed retries "
        f"(attempts per push beyond the 3 transfers: {[a - 3 for a in retried]})"
    )
    assert failed == {}
    for minion_id, record in records.items():
        home = srv(fleet) / "jails" / published[minion_id]
        # What root recorded, not the client's word: this push is the jail's newest complete tree.
        assert json.loads((home / "jail.json").read_text())["current_run"] == record["run_id"], minion_id
    assert jail_record(fleet, "web1")["current"] is not None, "the fleet's own servers are untouched"
