//! Manual/benchmark driver: `crypt encrypt PUBKEY... < in > out`,
//! `crypt decrypt SECKEY [PASSPHRASE] < in > out`, `crypt inspect KEYFILE`.
//! Prints the summary to stderr.

use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::path::Path;

use snap_core::Progress;
use snap_crypt::{KeySource, SecretKeySource, inspect_keys, load_recipients};

/// Both SHA-256 digests, less those `NO_PLAINTEXT_SHA256` / `NO_CIPHERTEXT_SHA256` leave out.
fn digests() -> snap_crypt::Digests {
    snap_crypt::Digests {
        plaintext: std::env::var_os("NO_PLAINTEXT_SHA256").is_none(),
        ciphertext: std::env::var_os("NO_CIPHERTEXT_SHA256").is_none(),
    }
}

fn main() {
    // fds 0 and 1 as unbuffered files, not closed at the end.
    let stdin = ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let stdout = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    let args: Vec<String> = std::env::args().skip(1).collect();
    let progress = Progress::silent("crypt");
    let result = match args.first().map(String::as_str) {
        Some("encrypt") => {
            let sources: Vec<KeySource> = args[1..]
                .iter()
                .map(|p| KeySource::from_file(Path::new(p)).expect("key file"))
                .collect();
            let hash = digests();
            load_recipients(&sources).and_then(|r| {
                snap_crypt::encrypt_with(&*stdin, "stdin", &*stdout, "stdout", &r, hash, &progress)
                    .map(|s| format!("{s:#?}"))
            })
        }
        Some("decrypt") => {
            let key = std::fs::read(&args[1]).expect("key file");
            let mut secret = SecretKeySource::new(args[1].clone(), key);
            if let Some(pw) = args.get(2) {
                secret = secret.with_passphrase(pw.as_bytes());
            }
            let hash = digests();
            snap_crypt::decrypt_with(
                &*stdin, "stdin", &*stdout, "stdout", &secret, hash, &progress,
            )
            .map(|s| format!("{s:#?}"))
        }
        Some("inspect") => {
            let bytes = std::fs::read(&args[1]).expect("key file");
            inspect_keys(&bytes).map(|k| format!("{k:#?}"))
        }
        _ => {
            eprintln!("usage: crypt encrypt PUBKEY... | decrypt SECKEY [PASS] | inspect KEYFILE");
            std::process::exit(2);
        }
    };
    match result {
        Ok(s) => eprintln!("{s}"),
        Err(e) => {
            eprintln!("error: {e:?}");
            std::process::exit(1);
        }
    }
}
