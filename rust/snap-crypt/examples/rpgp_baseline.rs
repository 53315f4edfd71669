//! Baseline for benchmarks: rPGP alone on one thread, no hashing, no pipeline:
//! `rpgp_baseline PUBKEY < in > out` (what snap's pipeline is compared to).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

use pgp::composed::{Deserializable, MessageBuilder, SignedPublicKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use rand::rngs::OsRng;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: rpgp_baseline PUBKEY < in > out");
    let (key, _) =
        SignedPublicKey::from_reader_single(File::open(path).expect("key")).expect("key");
    let sub = &key.public_subkeys[0];
    let stdin = ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let stdout = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    let mut out = BufWriter::with_capacity(256 * 1024, &*stdout);
    let mut b = MessageBuilder::from_reader("", BufReader::with_capacity(256 * 1024, &*stdin))
        .seipd_v1(OsRng, SymmetricKeyAlgorithm::AES256);
    b.partial_chunk_size(32 * 1024).unwrap();
    b.encrypt_to_key(OsRng, sub).expect("encrypt to key");
    b.to_writer(OsRng, &mut out).expect("encrypt");
    out.flush().unwrap();
}
