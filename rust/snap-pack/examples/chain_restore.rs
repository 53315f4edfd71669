//! Restore the image of a chain's newest link from its encrypted pieces,
//! each decrypted straight into its place in the image (no second copy),
//! every range checked (for benchmarks; phase 2 does this with the manifest):
//!
//!   chain_restore SECRET_KEY LINK_JSON SUPERBLOCK DIR OUT
//!
//! LINK_JSON: `{"ranges": [...]}` as a link reports them; DIR holds
//! `tail-<n>.gpg` for every link n. The ranges' digests prove the image, so
//! a piece's ciphertext is not hashed, as `snap-backup restore` does not
//! (since 2026-12-01); with `CIPHERTEXT_SHA256` set it is hashed while it
//! decrypts, as restore did for pieces from a directory before.

use std::fs::File;
use std::path::Path;

use snap_core::Progress;
use snap_crypt::SecretKeySource;
use snap_pack::chain::{ImageWriter, Piece, Range};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: chain_restore SECRET_KEY LINK_JSON SUPERBLOCK DIR OUT");
        std::process::exit(2);
    }
    let key = SecretKeySource::new(a[1].clone(), std::fs::read(&a[1]).expect("key"));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&a[2]).expect("json")).expect("json");
    let ranges: Vec<Range> = serde_json::from_value(v["ranges"].clone()).expect("ranges");
    let sb: [u8; 96] = std::fs::read(&a[3])
        .expect("sb")
        .try_into()
        .expect("96 bytes");
    let progress = Progress::silent("restore");
    let digests = if std::env::var_os("CIPHERTEXT_SHA256").is_some() {
        snap_crypt::Digests::CIPHERTEXT
    } else {
        snap_crypt::Digests::NONE
    };
    let run = || -> snap_core::Result<u64> {
        let mut image = ImageWriter::create(Path::new(&a[5]), &ranges, &sb)?;
        for r in &ranges {
            let Piece::Tail(n) = r.piece else { continue };
            let path = Path::new(&a[4]).join(format!("tail-{n}.gpg"));
            let f =
                File::open(&path).map_err(|e| snap_core::Error::io_path("opening", &path, e))?;
            let name = path.display().to_string();
            let mut w = image.piece(n, &name)?;
            snap_crypt::decrypt_with(&f, &name, &mut w, "the image", &key, digests, &progress)?;
            w.finish()?;
        }
        image.finish()
    };
    match run() {
        Ok(n) => eprintln!("{n} bytes"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
