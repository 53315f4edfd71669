"""The status table with an injected clock: LATE vs MISSING without sleeping."""

import datetime

import pytest

from snap_core import fleetstatus


def at(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


SCHED = {"minute": 17, "second": 0, "hours": [2, 10, 18]}
UTC = {"timezone": "UTC", "grace_seconds": 7200, "missing_after": 2}


def view(good=None, failed=None, running=None):
    return {
        "account": "snap-x",
        "last_good": {"run_id": "r", "started": at(good), "finished": at(good) + 5, "files": 1, "bytes": 10}
        if good
        else None,
        "last_failed": {"at": at(failed), "reason": "the data transfer broke off (rsync exit 12)"} if failed else None,
        "running_since": at(running) if running else None,
    }


def table(now, **servers):
    minions = list(servers)
    return fleetstatus.build(
        minions,
        {m: SCHED for m in minions},
        {m: v for m, v in servers.items() if v is not None},
        {m: None for m in minions},
        None,
        now=at(now),
        thresholds=UTC,
    )


@pytest.mark.parametrize(
    "now,state,missed",
    [
        ("2026-11-20T12:00:00Z", "OK", 0),  # the 10:17 slot is still within its grace
        ("2026-11-20T12:30:00Z", "LATE", 1),  # 10:17 + 2 h passed
        ("2026-11-20T20:30:00Z", "MISSING", 2),  # 18:17 + 2 h passed too
        ("2026-11-22T20:30:00Z", "MISSING", 8),
    ],
)
def test_ok_late_missing_follow_the_clock(now, state, missed):
    row = table(now, web1=view(good="2026-11-20T02:17:04Z"))["servers"][0]
    assert (row["state"], row["missed_slots"]) == (state, missed)


def test_failed_never_and_running():
    t = table(
        "2026-11-20T11:00:00Z",
        ok=view(good="2026-11-20T10:17:04Z"),
        broken=view(good="2026-11-20T02:17:04Z", failed="2026-11-20T10:17:30Z"),
        fresh=None,
        pushing=view(running="2026-11-20T10:59:00Z"),
    )
    rows = {r["server"]: r for r in t["servers"]}
    assert rows["ok"]["state"] == "OK"
    assert rows["broken"]["state"] == "FAILED" and "broke off" in rows["broken"]["note"]
    assert rows["fresh"]["state"] == "NEVER" and "no account" in rows["fresh"]["note"]
    assert rows["pushing"]["state"] == "NEVER" and "receiving a push since" in rows["pushing"]["note"]
    assert t["ok"] is False


def test_the_servers_own_failure_report_counts_when_newer():
    record = {"result": "failed", "started": "2026-11-20T10:17:20Z", "error": "cannot reach the backup server"}
    t = fleetstatus.build(["db1"], {"db1": SCHED}, {"db1": view(good="2026-11-20T02:17:04Z")},
                          {"db1": record}, None, now=at("2026-11-20T11:00:00Z"), thresholds=UTC)  # fmt: skip
    row = t["servers"][0]
    assert row["state"] == "FAILED" and "cannot reach" in row["note"]


def test_a_server_without_schedule_or_answer_is_flagged():
    t = fleetstatus.build(["new1"], {}, {}, {}, None, now=at("2026-11-20T11:00:00Z"), thresholds=UTC)
    row = t["servers"][0]
    assert row["state"] == "NEVER" and "not highstated" in row["note"] and "did not answer" in row["note"]


def test_archive_state():
    ok = {"result": "ok", "finished": "2026-11-01T05:00:00Z",
          "manifest": {"archive": {"key": "k", "retain_until": "2027-02-01T00:00:00Z"}}}  # fmt: skip
    build = lambda arc, now, expected=True: fleetstatus.build(  # noqa: E731
        [], {}, {}, {}, arc, now=at(now), thresholds=UTC, archive_expected=expected
    )["archive"]
    assert build(ok, "2026-11-10T00:00:00Z")["archive_state"] == "OK"
    assert build(ok, "2026-11-30T00:00:00Z")["archive_state"] == "LATE"
    assert build(None, "2026-11-10T00:00:00Z")["archive_state"] == "NEVER"
    assert build(None, "2026-11-10T00:00:00Z", expected=False)["archive_state"] == "NOT CONFIGURED"
    assert build({"result": "failed", "error": "x"}, "2026-11-10T00:00:00Z")["archive_state"] == "FAILED"


def test_a_chain_link_shows_its_age_dead_share_last_link_and_the_bill():
    """The archive row of a chain run: chain age, dead share, what the last
    link uploaded, and what is held under lock at what monthly cost; a
    malformed record (the backup server's word) is named, never fatal."""
    link = {"result": "ok", "finished": "2026-11-09T05:00:00Z", "manifest": None,
            "manifest_key": "snap/b/chain/x.link-0002.chain.json",
            "storage": {"bytes_locked": 3 << 30, "monthly_usd": 0.1234567, "objects": 9},
            "chain": {"chain": {"id": "c1", "link": 2, "base_created": "2026-11-01T05:00:00Z",
                                "restorable_until": "2027-02-08T05:00:00Z"},
                      "image": {"dead_ratio": 0.1234},
                      "pieces": [{"link": 0, "size": 1000}, {"link": 1, "size": 50}, {"link": 2, "size": 20},
                                 {"link": 2, "size": 5}]}}  # fmt: skip
    arc = fleetstatus.build([], {}, {}, {}, link, now=at("2026-11-10T05:00:00Z"), archive_expected=True)["archive"]
    assert arc["archive_state"] == "OK" and arc["archive_key"] == link["manifest_key"], arc
    assert arc["retain_until"] == "2027-02-08T05:00:00Z"
    assert arc["chain"] == {"id": "c1", "link": 2, "age_days": 9.0, "dead_ratio": 0.123, "last_link_bytes": 25}
    assert arc["held_bytes"] == 3 << 30 and arc["monthly_usd"] == 0.12
    broken = dict(link, chain={"chain": {"id": "c1", "link": "two"}}, storage={"bytes_locked": "lots"})
    arc = fleetstatus.build([], {}, {}, {}, broken, now=at("2026-11-10T05:00:00Z"), archive_expected=True)["archive"]
    assert arc["chain"] == {"error": "the archive record's chain could not be read"} and "held_bytes" not in arc
    assert arc["archive_state"] == "OK"
    # Infinite numbers and a time that is none (cold attack on 964306a, finding 5).
    inf = dict(link, storage={"bytes_locked": float("inf"), "monthly_usd": 1.0},
               chain=dict(link["chain"], pieces=[{"link": 2, "size": float("inf")}]), finished="not a time")  # fmt: skip
    arc = fleetstatus.build([], {}, {}, {}, inf, now=at("2026-11-10T05:00:00Z"), archive_expected=True)["archive"]
    assert arc["chain"] == {"error": "the archive record's chain could not be read"} and "held_bytes" not in arc
    assert arc["archive_state"] == "FAILED" and "no valid finish time" in arc["error"], arc
