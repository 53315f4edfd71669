"""Set up a moto server for snap-offsite's integration tests (run by the Rust
tests with SNAP_TEST_PYTHON). The setup itself lives in tests/support/moto.py,
shared with the Python tests.

Usage: moto_setup.py ENDPOINT BUCKET VAULT PREFIX CREDENTIALS_FILE [noauth]
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))

from tests.support.moto import setup  # noqa: E402

endpoint, bucket, vault, prefix, creds_path = sys.argv[1:6]
print(json.dumps(setup(endpoint, bucket, vault, prefix, creds_path, auth=sys.argv[6:7] != ["noauth"])))
