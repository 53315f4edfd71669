#!/bin/bash
# Create the virtualenv the LocalStack test runs LocalStack from, and print
# its python. LocalStack (localstack-core 2026.3.0) needs Python >= 3.13;
# Debian 12 has 3.11 and no registry serves a CPython, so this uses one that
# is already on the machine (pyenv's, or python3.13+ on PATH) and exits 1
# with the reason if there is none. Usage (from the Makefile):
#   SNAP_LOCALSTACK_PYTHON=$(tests/support/localstack_venv.sh .venv-localstack)
set -euo pipefail
dest=${1:-.venv-localstack}
if [ -x "$dest/bin/python" ] && "$dest/bin/python" -c 'import localstack.aws.components' 2>/dev/null; then
    echo "$(cd "$dest" && pwd)/bin/python"; exit 0
fi
base=
for cand in python3.14 python3.13 $(ls -d /root/.pyenv/versions/3.1[3-9]*/bin/python3 2>/dev/null | sort -rV); do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys, venv; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
        base=$(command -v "$cand"); break
    fi
done
if [ -z "$base" ]; then
    echo "no Python >= 3.13 on this machine: the LocalStack test will be skipped" >&2; exit 1
fi
"$base" -m venv "$dest" >&2
"$dest/bin/python" -m pip install -q --upgrade pip >&2
"$dest/bin/python" -m pip install -q 'localstack-core[runtime]==2026.3.0' 'cbor2<5.7' \
    'cryptography==43.0.3' 'pyopenssl==24.2.1' 'service_identity==24.1.0' >&2
"$dest/bin/python" -c 'import localstack.aws.components' >&2
echo "$(cd "$dest" && pwd)/bin/python"
