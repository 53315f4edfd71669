//! Hard links into more directories than unpack keeps open, with few file
//! descriptors to spare. This file holds one test: it lowers the process's
//! descriptor limit, which `cargo test` shares between a file's tests.

mod common;

use std::fs;

use common::*;
use snap_core::Progress;
use snap_pack::{PackOptions, UnpackOptions, pack, unpack};

#[test]
fn links_into_many_directories_unpack_with_few_descriptors() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // 20 directories of files, then one directory of links to them taken
    // in turn (`l0-d00`, `l0-d01`, ...): each link's source directory is
    // the one kept open longest ago, more than unpack keeps.
    for d in 0..20 {
        let dir = src.join(format!("a/d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..9 {
            fs::write(dir.join(format!("f{f}")), format!("{d} {f}\n")).unwrap();
        }
    }
    fs::create_dir_all(src.join("b")).unwrap();
    for f in 0..9 {
        for d in 0..20 {
            fs::hard_link(
                src.join(format!("a/d{d:02}/f{f}")),
                src.join(format!("b/l{f}-d{d:02}")),
            )
            .unwrap();
        }
    }
    let image = tmp.path().join("img.sqfs");
    let opts = PackOptions {
        level: Some(3),
        ..PackOptions::default()
    };
    pack(&src, &image, &opts, &Progress::silent("pack")).unwrap();

    // As few descriptors as unpack needs with one link source kept open.
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(20),
            maximum: lim.maximum,
        },
    )
    .unwrap();
    let out = tmp.path().join("out");
    let got = unpack(
        &image,
        &out,
        &UnpackOptions::default(),
        &Progress::silent("unpack"),
    );
    rustix::process::setrlimit(rustix::process::Resource::Nofile, lim).unwrap();
    let sum = got.expect("unpack with 20 descriptors");
    assert_eq!(sum.hardlinks, 180);
    assert_same(&read_tree(&src, &all), &read_tree(&out, &all), false);
}
