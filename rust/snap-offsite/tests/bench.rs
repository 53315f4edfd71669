//! Upload throughput and memory to moto (ignored by default: a measurement,
//! not a check). Run:
//! `SNAP_BENCH_MIB=512 cargo test -p snap-offsite --test bench -- --ignored --nocapture`
//! (add `--config 'profile.dev.package.sha2.opt-level=3'` to take the three
//! SHA-256 passes of a debug build out of the measurement).

mod common;

use std::io::Write;
use std::time::{Instant, SystemTime};

use common::*;
use snap_offsite::{ArchiveTarget, Progress, PutOptions, S3Target, archive_key, error_from_io};

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

#[test]
#[ignore]
fn upload_throughput_and_rss() {
    let mib: usize = std::env::var("SNAP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let part: u64 = std::env::var("SNAP_BENCH_PART_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let inflight: usize = std::env::var("SNAP_BENCH_INFLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let moto = Moto::start();
    moto.setup(false);
    let t = S3Target::new(
        moto.config("admin", &moto.endpoint())
            .with_part_size(part * MIB as u64)
            .with_max_in_flight(inflight),
    )
    .unwrap();
    let chunk = data(MIB, 42);
    let before = status_kib("VmRSS:");
    let moto_cpu0 = cpu_secs(moto.pid());
    let start = Instant::now();
    let progress = Progress::silent("upload");
    let key = archive_key(PREFIX, SystemTime::now(), ".bench").unwrap();
    let mut w = t
        .create_writer(
            &key,
            &PutOptions::archive().with_storage_class("STANDARD"),
            &progress,
        )
        .unwrap();
    for _ in 0..mib {
        w.write_all(&chunk).map_err(error_from_io).unwrap();
    }
    let r = w.finish().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let moto_cpu = cpu_secs(moto.pid()) - moto_cpu0;
    eprintln!(
        "uploaded {mib} MiB in {} parts of {part} MiB, {inflight} in flight: {secs:.1} s, {:.1} MiB/s; \
         test process RSS {} MiB before, peak {} MiB; moto CPU {moto_cpu:.1} s",
        r.parts,
        mib as f64 / secs,
        before / 1024,
        status_kib("VmHWM:") / 1024
    );
}
