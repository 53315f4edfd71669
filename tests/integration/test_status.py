"""Issue 7 on the real fleet: salt-run snap.status from the backup server's own
records, events on the master's bus (beacon), the example reactor's alert,
and the Prometheus metrics. One server pushes, one fails, one never runs,
one is mid-push."""

import contextlib
import json
import pathlib
import re
import subprocess
import sys
import time

import pytest

from tests.support.fleet import MINION_OVERRIDES, state_failures
from tests.support.treegen import make_server_tree

PY = sys.executable


def client_config(fleet, minion_id):
    return fleet.root_of(minion_id) / "etc" / "snap" / "client.json"


def push(fleet, minion_id, config=None):
    return subprocess.run(
        [PY, "-m", "snap_core", "push", "--quiet", "--no-splay", "--config", str(config or client_config(fleet, minion_id))],
        capture_output=True, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def four(deployed):
    """web1 pushed, db1 failed (backup server unreachable), app1 never ran,
    cache1 is mid-push while the test looks."""
    fleet, _ = deployed
    start = time.time()
    with contextlib.ExitStack() as stack:
        for minion_id in ("app1", "cache1"):
            make_server_tree(fleet.client_data(minion_id), seed=7)
            minion = fleet.master.salt_minion_daemon(minion_id, overrides=MINION_OVERRIDES)
            stack.enter_context(minion.started())
            fleet.minions[minion_id] = minion
            fleet.salt("saltutil.sync_all", tgt=minion_id)
            assert state_failures({minion_id: fleet.highstate(tgt=minion_id)}) == []
            fleet.salt("mine.update", tgt=minion_id)
        assert state_failures({"backup1": fleet.highstate(tgt="backup1")}) == []
        assert push(fleet, "web1").returncode == 0
        down = fleet.root / "db1-down.json"
        cfg = json.loads(client_config(fleet, "db1").read_text())
        cfg.update(server_port=1, retries=0)  # nothing listens on port 1
        down.write_text(json.dumps(cfg))
        assert push(fleet, "db1", down).returncode == 1
        slow = fleet.root / "cache1-slow.json"
        cfg = json.loads(client_config(fleet, "cache1").read_text())
        cfg["bwlimit_kbps"] = 200  # ~3 MiB at 200 KB/s: about 15 s
        slow.write_text(json.dumps(cfg))
        pushing = subprocess.Popen([PY, "-m", "snap_core", "push", "--quiet", "--no-splay", "--config", str(slow)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not fleet.salt("snap.backup_view", tgt="backup1")["servers"]["cache1"]["running_since"]:
                assert time.monotonic() < deadline, "cache1's push never started"
                time.sleep(0.5)
            yield fleet, start, pushing
        finally:
            pushing.kill()
            pushing.wait()
            # Forget the two extra servers: stopped first (a running minion
            # whose key is deleted asks again and the test master accepts it),
            # then their mine, keys, accounts and jails.
            stack.close()
            for minion_id in ("app1", "cache1"):
                fleet.run("cache.clear_mine", tgt=minion_id)
                fleet.master.salt_key_cli().run("-d", minion_id, "-y")
                fleet.minions.pop(minion_id)
            left = fleet.master.salt_key_cli().run("-L").data or {}
            assert not {"app1", "cache1"} & set(left.get("minions", [])), f"keys left behind for later modules: {left}"
            fleet.set_pillar("snap:\n  server:\n    purge: [snap-app1, snap-cache1]\n")
            fleet.highstate(tgt="backup1")
            fleet.set_pillar("")


def status(fleet, *args):
    ret = fleet.master.salt_run_cli(timeout=120).run("snap.status", *args)
    return ret.returncode, ret.data


def test_status_shows_each_server_as_it_is(four):
    fleet, _, pushing = four
    code, table = status(fleet)
    assert pushing.poll() is None, "cache1's push must still be running while status looks"
    rows = {r["server"]: r for r in table["servers"]}
    assert set(rows) == {"web1", "db1", "app1", "cache1"}, "every server the master knows, none else"
    assert rows["web1"]["state"] == "OK", rows["web1"]
    assert rows["db1"]["state"] == "FAILED" and "cannot reach the backup server" in rows["db1"]["note"], rows["db1"]
    assert rows["app1"]["state"] == "NEVER", rows["app1"]
    assert rows["cache1"]["state"] == "NEVER" and "receiving a push since" in rows["cache1"]["note"], rows["cache1"]
    for row in rows.values():
        assert row["schedule"].endswith("past 2,10,18")
    assert code != 0, "anything not OK must make the return code non-zero"


def test_status_judges_by_the_clock_it_is_given(four):
    fleet, _, _ = four
    view = fleet.salt("snap.backup_view", tgt="backup1")
    good = view["servers"]["web1"]["last_good"]["started"]
    code, table = status(fleet, f"now={good + 3 * 86400}")
    rows = {r["server"]: r for r in table["servers"]}
    assert rows["web1"]["state"] == "MISSING" and rows["web1"]["missed_slots"] >= 8


def salt_run_raw(fleet, *args):
    """salt-run as an operator types it (salt-factories' CLI wrapper forces JSON)."""
    cmd = [PY, "-c", "import salt.scripts; salt.scripts.salt_run()", "-c", str(fleet.master.config_dir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_status_speaks_table_json_and_yaml(four):
    fleet, _, _ = four
    table = salt_run_raw(fleet, "snap.status")
    assert "web1" in table.stdout and "MISSING" not in table.stdout and table.returncode != 0
    raw = salt_run_raw(fleet, "snap.status", "--out=json")
    as_json = json.loads(raw.stdout)
    assert isinstance(as_json, dict) and "servers" in as_json, (raw.stdout, raw.stderr)
    assert {r["server"] for r in as_json["servers"]} >= {"web1", "db1"}
    import yaml

    assert yaml.safe_load(salt_run_raw(fleet, "snap.status", "--out=yaml").stdout)["servers"]


def test_events_reach_the_masters_bus(four, event_listener):
    fleet, start, _ = four
    master = fleet.master.id
    for tag in ("salt/beacon/web1/snap/push/done", "salt/beacon/db1/snap/push/failed"):
        matched = event_listener.wait_for_events([(master, tag)], after_time=start - 5, timeout=60)
        assert matched.found_all_events, f"no {tag} event on the master's bus"
        event = next(iter(matched.matches))
        assert event.data["result"] in ("ok", "failed") and event.data["run_id"]


def test_the_example_reactor_alerts_on_the_failure(four):
    fleet, start, _ = four

    def filed(pattern):  # alerts filed since this module began (earlier modules file their own)
        return [p for p in fleet.alerts.glob(pattern) if p.stat().st_mtime >= start]

    deadline = time.monotonic() + 60
    while not filed("salt_beacon_db1_snap_push_failed-*.json"):
        assert time.monotonic() < deadline, f"no alert filed: {list(fleet.alerts.iterdir())}"
        time.sleep(1)
    alert = json.loads(filed("salt_beacon_db1_snap_push_failed-*.json")[0].read_text())
    assert alert["tag"] == "salt/beacon/db1/snap/push/failed"
    assert "cannot reach the backup server" in alert["data"]["error"]
    assert not filed("*_snap_push_done-*"), "a good push is not an alert"


def test_prometheus_metrics_on_the_backup_server(four):
    fleet, _, _ = four
    path = pathlib.Path(fleet.salt("snap.write_metrics", tgt="backup1"))
    text = path.read_text()
    assert path == fleet.root_of("backup1") / "var/lib/prometheus/node-exporter/snap.prom"
    assert 'snap_push_last_success_timestamp_seconds{server="web1"} ' in text
    # cache1's push may have finished by now: the metric is there either way.
    assert re.search(r'^snap_push_running\{server="cache1"\} [01]$', text, re.M)
    assert "# TYPE snap_archive_age_seconds gauge" in text
    cron = subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout
    assert any(" -m snap_core metrics " in l and l.startswith("*/5 ") for l in cron.splitlines())
