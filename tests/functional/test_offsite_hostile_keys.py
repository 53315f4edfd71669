"""What a compromised backup server can put off-site to mislead the readers,
against the real Ceph RGW 16 (tests/support/ceph.py): its put-only identity
writes keys and bodies of its choosing, locked, and RGW does not refuse an
overwrite. Found by the second cold attack on issue 12; each test is one
attack, and says what it tried and what the readers made of it.

- a key XML 1.0 cannot carry (U+FFFE, a control character): the listing
  asks with EncodingType=url, so one such object does not stop every
  listing, audit and status for as long as its lock lasts;
- a manifest under ``A.manifest.json.manifest.json``: not a second row for
  archive A with a history of the attacker's choosing;
- a manifest whose ``created`` sorts after every date, or is no date at all:
  readers order archives by when the store says they landed, and flag it;
- the newest archive overwritten: a restore of "the newest" refuses, naming
  it, instead of quietly restoring an older one.

And from the third cold attack (RGW 16 sends a listing's NextKeyMarker raw,
even when asked for EncodingType=url, and ends pages where it likes):

- a flood of keys holding a literal ``%7A`` just before the newest archive:
  a page ending on one of them must not resume past the decoded key and
  skip the archive;
- a flood of keys XML cannot carry right after a manifest's key: the page
  whose raw marker the SDK cannot parse must never be taken for a refused
  ListBucketVersions (which would read current versions, unchecked).
"""

from __future__ import annotations

import datetime
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import snap_core
from snap_core import crosscheck
from tests.functional.test_offsite_ceph import bucket_for

PREFIX = "snap/backup1/"


def _until(days=92):
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)


def _manifest(key, version_id, created, snapshots=5):
    """A manifest as snap writes it (the fields readers use)."""
    return {
        "format": "snap-archive/1", "tool_version": "x", "created": created, "backup_server": "backup1",
        "archive": {"target": "s3", "key": key, "version_id": version_id, "size": 3, "sha256": "00",
                    "tree_hash": None, "storage_class": "STANDARD", "lock_mode": "COMPLIANCE",
                    "retain_until": None, "parts": 1},
        "plaintext": {"format": "squashfs", "size": 1, "sha256": "00", "compressor": "zstd", "level": None,
                      "block_size": 131072, "files": 1, "inodes": 1, "hardlinks": 0, "data_bytes": 1},
        "recipients": [], "servers": ["web1"],
        "snapshots": [{"name": f"recent.{i}", "servers": ["web1"], "mtime": 0} for i in range(snapshots)],
        "history_root": "/srv/snap/history",
    }  # fmt: skip


@pytest.fixture
def site(ceph, tmp_path):
    name = f"hostile-{time.time_ns() % 10**9}"
    bucket_for(ceph, name, repair=False)
    put = ceph.client(ceph.BACKUP)
    creds = ceph.credentials_file(tmp_path / "credentials", {"reader": ceph.ADMIN})
    store = snap_core.ArchiveStore({"bucket": name, "region": "us-east-1", "endpoint_url": ceph.endpoint,
                                    "profile": "reader", "credentials_file": str(creds), "sdk_max_attempts": 1})  # fmt: skip

    def p(key, body):
        """One put as the backup server's put-only identity, locked."""
        return put.put_object(Bucket=name, Key=key, Body=body, ObjectLockMode="COMPLIANCE",
                              ObjectLockRetainUntilDate=_until())["VersionId"]  # fmt: skip

    def archive(stamp, created=None, snapshots=5):
        """An archive and its manifest as snap uploads them; returns the key."""
        key = f"{PREFIX}2026/{stamp}-0123456789abcdef.sqfs.gpg"
        version = p(key, b"abc")
        p(key + ".manifest.json", json.dumps(_manifest(key, version, created or _iso(), snapshots)).encode())
        time.sleep(1.1)  # the store's LastModified is to the second
        return key

    return {"p": p, "archive": archive, "store": store}


def _iso(t=None):
    return datetime.datetime.fromtimestamp(t or time.time(), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("odd", ["\ufffe", "\x01", "\x08.manifest.json"])
def test_a_key_xml_cannot_carry_does_not_stop_the_readers(site, odd, capsys):
    key = site["archive"]("20260101T000000Z")
    site["p"](PREFIX + "zz" + odd, b"x")
    store = site["store"]
    rows = store.list(PREFIX, False)
    assert [r["key"] for r in rows] == [key], rows
    assert store.newest(PREFIX)["archive"]["key"] == key
    assert store.manifest(key)["archive"]["key"] == key
    audit = store.audit(PREFIX, min_retain_days=90, max_age_days=10**6)
    assert not [p for p in audit["problems"] if "listing" in p], audit["problems"]
    with capsys.disabled():
        print(f"\nCeph RGW: one locked object named ...zz{odd!r}: listing, newest, manifest and audit all still read")


def test_a_double_suffix_manifest_is_not_a_second_row(site):
    old = site["archive"]("20260101T000000Z", snapshots=5)
    new = site["archive"]("20260601T000000Z", snapshots=5)
    forged = _manifest(old, "whatever", "2099-01-01T00:00:00Z", snapshots=9)
    site["p"](old + ".manifest.json.manifest.json", json.dumps(forged).encode())
    store = site["store"]
    rows = store.list(PREFIX, False)
    assert [r["key"] for r in rows] == [old, new], [(r["key"], r["manifest_key"]) for r in rows]
    assert store.newest(PREFIX)["archive"]["key"] == new
    inventory = crosscheck.offsite_inventory(store, PREFIX)
    assert [r["servers"] for r in inventory] == [{"web1": 5}, {"web1": 5}], inventory


def test_newest_is_by_when_the_store_says_it_landed(site):
    site["archive"]("20260101T000000Z")
    liar = site["archive"]("20260201T000000Z", created="~ sorts after every date")
    later = site["archive"]("20260301T000000Z")
    store = site["store"]
    assert store.newest(PREFIX)["archive"]["key"] == later
    rows = {r["key"]: r for r in store.list(PREFIX, False)}
    assert "is not a time" in rows[liar]["error"], rows[liar]
    # A future "created" (the run cannot begin after its archive landed).
    future = site["archive"]("20260401T000000Z", created="2099-01-01T00:00:00Z")
    rows = {r["key"]: r for r in store.list(PREFIX, False)}
    assert "after the store says the archive landed" in rows[future]["error"], rows[future]
    assert store.newest(PREFIX)["archive"]["key"] == later
    # status's inventory: a row it cannot date, never an exception.
    inventory = {r["key"]: r for r in crosscheck.offsite_inventory(store, PREFIX)}
    assert inventory[liar]["created"] is None and inventory[liar]["error"], inventory[liar]


def test_an_overwritten_newest_archive_is_not_skipped_in_silence(site):
    site["archive"]("20260101T000000Z")
    newest = site["archive"]("20260601T000000Z")
    site["p"](newest, b"forged")  # RGW 16 keeps both: a second version on top
    store = site["store"]
    with pytest.raises(snap_core.IntegrityError) as refused:
        store.newest(PREFIX)
    text = str(refused.value)
    assert "was written again off-site" in text and f"--archive {newest}" in text, text
    # Named explicitly, the first version (snap's) is what is read.
    assert store.manifest(newest)["archive"]["key"] == newest


def _flood(p, keys):
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: p(k, b""), keys))


def test_a_page_that_ends_on_a_hostile_marker_skips_nothing(site, capsys):
    older = site["archive"]("20260101T000000Z")
    newest = site["archive"]("20260601T000000Z")
    stem = newest.split("-0123")[0]  # '%' sorts before '-': the flood sits just before the newest archive
    started = time.time()
    _flood(site["p"], [f"{stem}%7A{i:04d}" for i in range(1100)])
    store = site["store"]
    assert [r["key"] for r in store.list(PREFIX, False)] == [older, newest]
    assert store.newest(PREFIX)["archive"]["key"] == newest
    with capsys.disabled():
        print(f"\nCeph RGW: 1,100 keys '...%7A####' in {time.time() - started:.0f}s before the newest archive: "
              "both archives listed, the newest is still the newest")  # fmt: skip


def test_an_unparseable_listing_never_turns_the_overwrite_check_off(site, capsys):
    old = site["archive"]("20260101T000000Z")
    store = site["store"]
    genuine = store.manifest(old)["archive"]["version_id"]
    forged = site["p"](old, b"FORGED")
    site["p"](old + ".manifest.json", json.dumps(_manifest(old, forged, _iso(), snapshots=7)).encode())
    # Right after the manifest's key, 1,250 versions of keys XML cannot carry:
    # some page of the manifest's versions ends on one, its raw marker unparseable.
    _flood(site["p"], [f"{old}.manifest.json!\ufffe{i:03d}" for i in range(250) for _ in range(5)])
    seen = []
    for what, call in (("manifest by key", lambda: store.manifest(old)["archive"]["version_id"]),
                       ("listing", lambda: [r["version_id"] for r in store.list(PREFIX, False)]),
                       ("newest", lambda: store.newest(PREFIX)["archive"]["version_id"])):  # fmt: skip
        try:
            got = call()
            assert forged not in (got if isinstance(got, list) else [got]), (what, got)
            assert genuine in (got if isinstance(got, list) else [got]), (what, got)
            seen.append(f"{what}: snap's version")
        except snap_core.IntegrityError as refused:
            assert "unchecked" not in str(refused).lower(), refused
            seen.append(f"{what}: refused ({str(refused)[:80]}...)")
    with capsys.disabled():
        print("\nCeph RGW: overwrite + 1,250 unparseable keys: " + "; ".join(seen))
