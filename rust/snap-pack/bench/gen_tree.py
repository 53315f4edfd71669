#!/usr/bin/env python3
"""Generate an rsnapshot-like history tree for benchmarks.

gen_tree.py ROOT [SNAPSHOTS] [FILES] [SEED]

ROOT/daily.N/<server>/... : SNAPSHOTS snapshot dirs, each holding FILES files
over 3 servers. daily.0 is written in full; every older snapshot hardlinks
the files of the newer one except ~2% that get new content (new inodes).
Sizes: mostly 0.25-8 KiB text-like files, ~0.3% of 256 KiB - 2 MiB, a few empty
(about 150 MB unique at the defaults).
"""
import os
import random
import sys

root = sys.argv[1]
snaps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
nfiles = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)

words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(2, 10)))
         for _ in range(5000)]
base = ' '.join(rng.choice(words) for _ in range(400000)).encode()  # ~2.6 MB of text


def content(size):
    out = bytearray()
    while len(out) < size:
        off = rng.randrange(0, len(base) - 65536)
        out += b'%d ' % rng.getrandbits(64) + base[off:off + rng.randint(1024, 65536)]
    return bytes(out[:size])


def size():
    r = rng.random()
    if r < 0.01:
        return 0
    if r < 0.013:
        return rng.randint(256 << 10, 2 << 20)
    return rng.randint(256, 8 << 10)


servers = ['web1', 'web2', 'db1']
paths = []
for i in range(nfiles):
    srv = servers[i % 3]
    d = f'{srv}/etc/d{(i // 20) % 300:03d}/s{(i // 7) % 5}'
    paths.append(f'{d}/f{i:06d}.txt')

newest = os.path.join(root, 'daily.0')
for p in paths:
    full = os.path.join(newest, p)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, 'wb') as f:
        f.write(content(size()))
for n in range(1, snaps):
    prev = os.path.join(root, f'daily.{n - 1}')
    cur = os.path.join(root, f'daily.{n}')
    for p in paths:
        src = os.path.join(prev, p)
        dst = os.path.join(cur, p)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if rng.random() < 0.02:
            with open(dst, 'wb') as f:
                f.write(content(size()))
        else:
            os.link(src, dst)
