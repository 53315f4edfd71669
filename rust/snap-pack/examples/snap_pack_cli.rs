//! A small command line front end, for manual checks and benchmarks:
//!   snap_pack_cli pack SRC IMAGE [zstd|xz|gzip|lz4] [LEVEL] [THREADS]
//!   snap_pack_cli unpack IMAGE DEST [PATH...]
//!   snap_pack_cli list IMAGE [PREFIX] [DEPTH]
//!   snap_pack_cli link HISTORY INDEX TAIL SUPERBLOCK_OUT [start] [LEVEL]
//!     (commits the link; prints its summary as JSON)

use std::path::Path;

use snap_core::Progress;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let progress = Progress::silent("cli");
    let result = match args.get(1).map(String::as_str) {
        Some("pack") => {
            let mut opts = snap_pack::PackOptions::default();
            if let Some(c) = args.get(4) {
                opts.compressor = c.parse().expect("compressor");
            }
            opts.level = args.get(5).map(|l| l.parse().expect("level"));
            opts.threads = args.get(6).map(|t| t.parse().expect("threads"));
            snap_pack::pack(Path::new(&args[2]), Path::new(&args[3]), &opts, &progress)
                .map(|s| format!("{s:?}"))
        }
        Some("unpack") => {
            let opts = snap_pack::UnpackOptions {
                select: args[4..].iter().map(|a| a.as_bytes().to_vec()).collect(),
                apply_fake_super: std::env::var_os("FAKE_SUPER").is_some(),
                keep_fake_super_xattr: false,
                present: None,
            };
            snap_pack::unpack(Path::new(&args[2]), Path::new(&args[3]), &opts, &progress)
                .map(|s| format!("{s:?}"))
        }
        Some("list") => {
            let prefix = args
                .get(3)
                .map(|p| p.as_bytes().to_vec())
                .unwrap_or_default();
            let depth = args.get(4).map_or(1, |d| d.parse().expect("depth"));
            snap_pack::list(Path::new(&args[2]), &prefix, depth).map(|v| {
                v.iter()
                    .map(|e| {
                        format!(
                            "{} {} {:o} {}",
                            e.kind.name(),
                            snap_pack::show_bytes(&e.path),
                            e.mode,
                            e.size
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Some("link") => {
            let opts = snap_pack::PackOptions {
                level: args.get(7).map(|l| l.parse().expect("level")),
                ..snap_pack::PackOptions::default()
            };
            let start = args.get(6).map(String::as_str) == Some("start");
            snap_pack::chain::link(
                Path::new(&args[2]),
                Path::new(&args[3]),
                start,
                Path::new(&args[4]),
                &opts,
                &progress,
            )
            .and_then(|mut l| {
                l.commit()?;
                std::fs::write(&args[5], l.superblock)
                    .map_err(|e| snap_core::Error::io("writing the super block", e))?;
                Ok(serde_json::json!({
                    "summary": l.summary,
                    "ranges": l.ranges,
                    "links": l.links,
                })
                .to_string())
            })
        }
        _ => {
            eprintln!("usage: snap_pack_cli pack SRC IMAGE [COMPRESSOR] [LEVEL] [THREADS]");
            std::process::exit(2);
        }
    };
    match result {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
