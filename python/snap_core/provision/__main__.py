"""``python -m snap_core.provision --config FILE``: verify-offsite on its own."""

import sys

from snap_core.provision.cli import main_verify

sys.exit(main_verify())
