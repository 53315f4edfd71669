#!/bin/sh
# Side-by-side benchmark: snap-pack vs mksquashfs / unsquashfs on a generated
# rsnapshot-like tree in tmpfs. Usage: bench/run.sh [SNAPSHOTS] [FILES] [LEVEL]
# (from rust/snap-pack; builds the example CLI in release mode).
set -eu
snaps=${1:-10}; files=${2:-20000}; level=${3:-15}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cargo build --release -q -p snap-pack --example snap_pack_cli --manifest-path "$root/Cargo.toml"
cli="$root/target/release/examples/snap_pack_cli"
work=$(mktemp -d /dev/shm/snap-pack-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 "$here/gen_tree.py" "$work/src" "$snaps" "$files"
t() { n=$1; shift; /usr/bin/time -f "$n: %e s wall, %U s user, %S s sys, %M KB max RSS" "$@" >/dev/null; }
for round in 1 2; do
  rm -f "$work/a.sqfs" "$work/m.sqfs"
  uptime
  t snap-pack "$cli" pack "$work/src" "$work/a.sqfs" zstd "$level"
  t mksquashfs mksquashfs "$work/src" "$work/m.sqfs" -comp zstd -Xcompression-level "$level" -no-progress -quiet
  ls -l "$work/a.sqfs" "$work/m.sqfs"
  rm -rf "$work/o1" "$work/o2"
  t snap-unpack-one-server "$cli" unpack "$work/a.sqfs" "$work/o1" daily.0/web1
  t unsquashfs-one-server unsquashfs -q -no-progress -d "$work/o2" "$work/a.sqfs" daily.0/web1
  rm -rf "$work/o1" "$work/o2"
  t snap-unpack-all "$cli" unpack "$work/a.sqfs" "$work/o1"
  t unsquashfs-all unsquashfs -q -no-progress -d "$work/o2" "$work/a.sqfs"
  rm -rf "$work/o1" "$work/o2"
done
