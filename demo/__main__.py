"""`make demo`: start a throwaway fleet on loopback (a salt-master and the
minions web1, db1, backup1, each with its own root dir), highstate it, and
report what the master reads back: every server's schedule and key.
Everything started here is stopped before it exits.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import shutil
import sys
import time

from pytestshellutils.utils.ports import get_unused_localhost_port
from saltfactories.manager import FactoriesManager

from tests.conftest import private_root
from tests.support import loopback
from tests.support.fleet import Fleet, state_changes, state_failures


def say(text: str = "") -> None:
    print(text, flush=True)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def run(keep: bool) -> int:
    root = private_root("snap-demo-")
    started = time.monotonic()
    say(f"snap demo: a throwaway fleet under {root} (127.0.0.1 only)")
    try:
        with loopback.loopback_event_listener() as events:
            manager = FactoriesManager(
                root_dir=root,
                log_server_host="127.0.0.1",
                log_server_port=get_unused_localhost_port(),
                log_server_level="error",
                event_listener=events,
                slow_stop=False,
            )
            say("starting salt-master and minions web1, db1, backup1 ...")
            with Fleet(manager, root) as fleet:
                say(f"  up after {time.monotonic() - started:.0f}s; modules synced")
                say("highstate (snap.core installs the core, snap.keypair makes each server's key) ...")
                first = fleet.highstate()
                failures = state_failures(first)
                if failures:
                    say(f"highstate FAILED: {failures}")
                    return 1
                say(f"  {len(state_changes(first))} states changed something")
                second = fleet.highstate()
                say(f"  second highstate: {len(state_changes(second))} changes (idempotent)")
                fleet.salt("mine.update")
                report = fleet.run("snap.fleet")
                say()
                say("What the master reads back (schedule from the ext_pillar, keys from the mine, re-validated):")
                rows = [
                    [
                        minion_id,
                        f"{row['minute']:02d}",
                        ",".join(str(h) for h in row["hours"]),
                        row.get("account", "-"),
                        row.get("fingerprint", row["key"]),
                    ]
                    for minion_id, row in sorted(report.items())
                ]
                say(table(rows, ["server", "minute", "hours", "account", "key fingerprint"]))
            say()
            say(f"stopped every daemon; demo took {time.monotonic() - started:.0f}s")
        return 0
    finally:
        if keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the fleet's root dir afterwards")
    return run(parser.parse_args(argv).keep)


if __name__ == "__main__":
    sys.exit(main())
