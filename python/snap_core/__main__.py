"""`python -m snap_core ...` is `snap-backup ...` (cron uses this form: it
runs with exactly the Python the core was installed into)."""

import sys

from snap_core.cli import main

sys.exit(main())
