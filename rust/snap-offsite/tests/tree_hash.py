"""Independent Glacier SHA-256 tree hash (hashlib only), for cross-checking.

Usage: tree_hash.py FILE... -> one hex tree hash per line.
Follows the AWS guide: SHA-256 of every 1 MiB chunk, then pair hashes level
by level, carrying an odd one up unchanged.
"""

import hashlib
import sys

MIB = 1024 * 1024


def tree_hash(data: bytes) -> str:
    level = [hashlib.sha256(data[i : i + MIB]).digest() for i in range(0, len(data), MIB)]
    if not level:
        level = [hashlib.sha256(b"").digest()]
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            if i + 1 < len(level):
                nxt.append(hashlib.sha256(level[i] + level[i + 1]).digest())
            else:
                nxt.append(level[i])
        level = nxt
    return level[0].hex()


for path in sys.argv[1:]:
    with open(path, "rb") as f:
        print(tree_hash(f.read()))
