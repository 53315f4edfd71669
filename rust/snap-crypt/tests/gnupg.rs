//! snap-crypt against real GnuPG 2.2 (/usr/bin/gpg): interoperability both
//! ways, tamper/truncation detection, key handling in every shape.

mod common;

use std::fs;
use std::io::Cursor;
use std::path::Path;

use common::{GpgHome, PASSPHRASE, TestKey, data, keys, sha256_hex, sha256sum};
use snap_core::{ErrorKind, Progress};
use snap_crypt::{
    KeySource, Recipient, SecretKeySource, decrypt, decrypt_file, encrypt, encrypt_file,
    inspect_keys, load_recipients,
};

fn recipients(list: &[(&str, &[u8])]) -> Vec<Recipient> {
    let sources: Vec<KeySource> = list.iter().map(|(l, b)| KeySource::new(*l, *b)).collect();
    load_recipients(&sources).expect("load recipients")
}

fn snap_encrypt(plain: &[u8], rcpts: &[Recipient]) -> Vec<u8> {
    let mut out = Vec::new();
    let s = encrypt(Cursor::new(plain), &mut out, rcpts, &Progress::silent("t")).expect("encrypt");
    assert_eq!(s.plaintext_bytes, plain.len() as u64);
    assert_eq!(s.ciphertext_bytes, out.len() as u64);
    assert_eq!(s.plaintext_sha256, sha256_hex(plain));
    assert_eq!(s.ciphertext_sha256, sha256_hex(&out));
    out
}

fn secret(key: &TestKey) -> SecretKeySource {
    SecretKeySource::new("test secret key", key.secret_armored.clone())
}

fn snap_decrypt(
    cipher: &[u8],
    secret: &SecretKeySource,
) -> snap_crypt::Result<(Vec<u8>, snap_crypt::DecryptSummary)> {
    let mut out = Vec::new();
    let s = decrypt(
        Cursor::new(cipher),
        &mut out,
        secret,
        &Progress::silent("t"),
    )?;
    Ok((out, s))
}

/// gpg --decrypt FILE with the secret key of `key` imported in a fresh home.
fn gpg_decrypt(home: &GpgHome, cipher: &[u8]) -> Vec<u8> {
    let path = home.file("msg.gpg");
    fs::write(&path, cipher).unwrap();
    home.run(&["--decrypt", path.to_str().unwrap()]).stdout
}

#[test]
fn snap_encrypted_data_decrypts_with_gpg_byte_exact() {
    let k = keys();
    let rcpts = recipients(&[("rsa.asc", &k.rsa.public_armored)]);
    assert_eq!(rcpts[0].fingerprint, k.rsa.fingerprint);
    assert_eq!(rcpts[0].key_id, k.rsa.enc_key_id);
    assert_eq!(rcpts[0].algorithm, "RSA 3072");
    let home = GpgHome::new();
    home.import(&k.rsa.secret_armored);
    // Empty, tiny, around the 32 KiB partial-packet chunk (the first literal
    // chunk is 6 header bytes shorter) and the 256 KiB pipeline chunk, and
    // multi-MB not a multiple of anything.
    for (i, len) in [
        0usize,
        1,
        1000,
        32_762,
        32_763,
        32_768 + 3,
        262_143,
        262_145,
        5 * 1_048_576 + 12_345,
    ]
    .into_iter()
    .enumerate()
    {
        let plain = data(len, i as u64);
        let cipher = snap_encrypt(&plain, &rcpts);
        let back = gpg_decrypt(&home, &cipher);
        assert!(
            back == plain,
            "gpg decrypted {} bytes, expected {len}",
            back.len()
        );
    }
}

#[test]
fn two_recipients_each_can_decrypt_with_gpg_and_snap() {
    let k = keys();
    // One binary source and one armored source.
    let rcpts = recipients(&[
        ("rsa.gpg", &k.rsa.public_binary),
        ("ed.asc", &k.ed.public_armored),
    ]);
    assert_eq!(rcpts.len(), 2);
    assert_eq!(rcpts[1].algorithm, "ECDH Curve25519");
    let plain = data(3 * 1_048_576 + 1, 42);
    let cipher = snap_encrypt(&plain, &rcpts);
    for key in [&k.rsa, &k.ed] {
        let home = GpgHome::new();
        home.import(&key.secret_binary);
        assert!(gpg_decrypt(&home, &cipher) == plain);
        let (back, s) = snap_decrypt(&cipher, &secret(key)).expect("snap decrypt");
        assert!(back == plain);
        assert_eq!(s.key_id, key.enc_key_id);
        assert_eq!(s.key_fingerprint, key.fingerprint);
        assert!(!s.compressed);
    }
}

#[test]
fn packets_are_seipd_v1_aes256_uncompressed_binary_literal() {
    let k = keys();
    let rcpts = recipients(&[("rsa", &k.rsa.public_armored), ("ed", &k.ed.public_armored)]);
    let cipher = snap_encrypt(&data(70_000, 7), &rcpts);
    assert!(cipher[0] & 0x80 != 0, "binary output, not armor");
    let home = GpgHome::new();
    home.import(&k.rsa.secret_armored);
    let path = home.file("m.gpg");
    fs::write(&path, &cipher).unwrap();
    let out = home.run(&["--verbose", "--list-packets", path.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches(":pubkey enc packet: version 3").count(),
        2,
        "{text}"
    );
    assert!(
        text.contains(&format!("keyid {}", k.rsa.enc_key_id)),
        "{text}"
    );
    assert!(
        text.contains(&format!("keyid {}", k.ed.enc_key_id)),
        "{text}"
    );
    assert!(text.contains(":encrypted data packet:"), "{text}");
    assert!(text.contains("mdc_method: 2"), "SEIPD v1 with MDC: {text}");
    assert!(text.contains("AES256 encrypted data"), "{text}");
    assert!(
        !text.contains(":compressed packet:"),
        "no compression: {text}"
    );
    assert!(text.contains(":literal data packet:"), "{text}");
    assert!(text.contains("mode b"), "binary literal: {text}");
    let sk = home.run(&["--show-session-key", "--decrypt", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&sk.stderr);
    assert!(
        err.contains("session key: '9:"),
        "cipher algo 9 = AES256: {err}"
    );
}

#[test]
fn gpg_encrypted_files_decrypt_with_snap() {
    let k = keys();
    let home = GpgHome::new();
    home.import(&k.rsa.public_armored);
    let plain = data(2 * 1_048_576 + 99, 9);
    let src = home.file("plain.bin");
    fs::write(&src, &plain).unwrap();
    // Default settings (zlib, as the original scripts ran), -z 0, and armored.
    for (extra, compressed) in [
        (&[][..], true),
        (&["-z", "0"][..], false),
        (&["--armor"][..], true),
    ] {
        let dst = home.file("c.gpg");
        let mut args = vec![
            "--encrypt",
            "-r",
            &k.rsa.fingerprint,
            "-o",
            dst.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(src.to_str().unwrap());
        home.run(&args);
        let cipher = fs::read(&dst).unwrap();
        let (back, s) =
            snap_decrypt(&cipher, &secret(&k.rsa)).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert!(back == plain, "{extra:?}");
        assert_eq!(s.compressed, compressed, "{extra:?}");
        assert_eq!(s.plaintext_sha256, sha256_hex(&plain));
        assert_eq!(s.ciphertext_sha256, sha256_hex(&cipher));
        assert_eq!(s.ciphertext_bytes, cipher.len() as u64);
        assert_eq!(s.key_id, k.rsa.enc_key_id);
    }
}

#[test]
fn tampered_ciphertext_is_an_integrity_error() {
    let k = keys();
    let rcpts = recipients(&[("ed", &k.ed.public_armored)]);
    let plain = data(3 * 1_048_576 + 5, 11);
    let cipher = snap_encrypt(&plain, &rcpts);
    let sk = secret(&k.ed);
    // The intact message decrypts: the errors below are caused by the flips.
    assert!(snap_decrypt(&cipher, &sk).expect("intact").0 == plain);
    let n = cipher.len();
    for at in [n / 2, n / 2 + 1000, n - 30, n - 5, n - 1] {
        let mut bad = cipher.clone();
        bad[at] ^= 0x01;
        let e = snap_decrypt(&bad, &sk).expect_err("tampered message must fail");
        assert_eq!(e.kind(), ErrorKind::Integrity, "flip at {at}/{n}: {e}");
    }
    // The same holds for a gpg-made (compressed) message.
    let home = GpgHome::new();
    home.import(&k.ed.public_armored);
    let src = home.file("p");
    fs::write(&src, &plain).unwrap();
    let dst = home.file("c");
    home.run(&[
        "-e",
        "-r",
        &k.ed.fingerprint,
        "-o",
        dst.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    let mut bad = fs::read(&dst).unwrap();
    let len = bad.len();
    bad[len - 10] ^= 0x80;
    let e = snap_decrypt(&bad, &sk).expect_err("tampered gpg message must fail");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
}

#[test]
fn truncated_ciphertext_is_an_integrity_error() {
    let k = keys();
    let rcpts = recipients(&[("rsa", &k.rsa.public_armored)]);
    let cipher = snap_encrypt(&data(2 * 1_048_576, 12), &rcpts);
    let sk = secret(&k.rsa);
    // Inside the PKESK, in the middle of the data, inside the MDC.
    for keep in [100, cipher.len() / 2, cipher.len() - 1, cipher.len() - 22] {
        let e = snap_decrypt(&cipher[..keep], &sk).expect_err("truncated message must fail");
        assert_eq!(e.kind(), ErrorKind::Integrity, "kept {keep}: {e}");
    }
    // Trailing garbage after a complete message is refused too.
    let mut longer = cipher.clone();
    longer.extend_from_slice(b"garbage");
    let e = snap_decrypt(&longer, &sk).expect_err("trailing data must fail");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
}

#[test]
fn wrong_secret_key_names_the_key_ids_of_the_message() {
    let k = keys();
    let rcpts = recipients(&[("rsa", &k.rsa.public_armored)]);
    let cipher = snap_encrypt(b"hello", &rcpts);
    let e = snap_decrypt(&cipher, &secret(&k.ed)).expect_err("wrong key");
    assert_eq!(e.kind(), ErrorKind::InvalidKey);
    let msg = e.to_string();
    assert!(
        msg.contains(&k.rsa.enc_key_id),
        "names the message's key id: {msg}"
    );
    assert!(
        msg.contains(&k.ed.enc_key_id),
        "names the given key's ids: {msg}"
    );
    // A public key where the secret one is needed.
    let e = snap_decrypt(
        &cipher,
        &SecretKeySource::new("pub", k.rsa.public_armored.clone()),
    )
    .expect_err("public key cannot decrypt");
    assert_eq!(e.kind(), ErrorKind::InvalidKey);
    assert!(e.to_string().contains("no secret key"), "{e}");
}

#[test]
fn passphrase_protected_secret_key() {
    let k = keys();
    let rcpts = recipients(&[("pw", &k.protected.public_armored)]);
    let plain = data(10_000, 13);
    let cipher = snap_encrypt(&plain, &rcpts);
    let base = || SecretKeySource::new("pw.sec", k.protected.secret_armored.clone());
    let e = snap_decrypt(&cipher, &base()).expect_err("no passphrase");
    assert_eq!(e.kind(), ErrorKind::InvalidKey);
    assert!(e.to_string().contains("passphrase-protected"), "{e}");
    let e = snap_decrypt(&cipher, &base().with_passphrase("wrong")).expect_err("wrong passphrase");
    assert_eq!(e.kind(), ErrorKind::InvalidKey);
    assert!(e.to_string().contains("wrong passphrase"), "{e}");
    let given = base().with_passphrase(PASSPHRASE);
    let (back, _) = snap_decrypt(&cipher, &given).expect("right passphrase");
    assert!(back == plain);
    // The key is unlocked once and kept so: every S2K derivation costs what
    // GnuPG calibrated (up to 65 million bytes hashed), for every piece.
    for _ in 0..3 {
        assert!(snap_decrypt(&cipher, &given).expect("kept unlocked").0 == plain);
    }
    assert_eq!(
        given.passphrase_tries(),
        1,
        "the passphrase was tried again"
    );
    // A prompt is asked only because the key is protected, and its answer is used.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = asked.clone();
    let prompted = base().with_prompt(move |what| {
        assert!(what.contains("subkey"), "{what}");
        a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(zeroize::Zeroizing::new(PASSPHRASE.as_bytes().to_vec()))
    });
    assert!(snap_decrypt(&cipher, &prompted).expect("prompted").0 == plain);
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Asked once per key source: a chain's link is one message per piece.
    assert!(snap_decrypt(&cipher, &prompted).expect("prompted again").0 == plain);
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "asked again"
    );
    // A wrong answer is not kept: the next message asks again.
    let answers = std::sync::Arc::new(std::sync::Mutex::new(vec!["wrong", PASSPHRASE]));
    let (a, n) = (
        answers.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    );
    let n2 = n.clone();
    let fumbled = base().with_prompt(move |_| {
        n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pw = a.lock().unwrap().remove(0);
        Some(zeroize::Zeroizing::new(pw.as_bytes().to_vec()))
    });
    let e = snap_decrypt(&cipher, &fumbled).expect_err("wrong answer");
    assert!(e.to_string().contains("wrong passphrase"), "{e}");
    assert!(snap_decrypt(&cipher, &fumbled).expect("right answer").0 == plain);
    assert!(snap_decrypt(&cipher, &fumbled).expect("kept").0 == plain);
    assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        fumbled.passphrase_tries(),
        2,
        "wrong, then right, then kept"
    );
    // Threads decrypting at once with one source: one asks, the others wait for its answer.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = asked.clone();
    let shared = base().with_prompt(move |_| {
        a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(50));
        Some(zeroize::Zeroizing::new(PASSPHRASE.as_bytes().to_vec()))
    });
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert!(snap_decrypt(&cipher, &shared).expect("threads").0 == plain));
        }
    });
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "asked by more than one thread"
    );
    assert_eq!(
        shared.passphrase_tries(),
        1,
        "unlocked by more than one thread"
    );
    // A passphrase given, threads at once (a chain's pieces): one derives,
    // the others wait and find the key unlocked.
    let given = base().with_passphrase(PASSPHRASE);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert!(snap_decrypt(&cipher, &given).expect("threads").0 == plain));
        }
    });
    assert_eq!(
        given.passphrase_tries(),
        1,
        "derived by more than one thread"
    );
}

#[test]
fn a_message_naming_the_signing_primary_does_not_unlock_it() {
    // A hostile piece whose session-key packet names the primary (ed25519,
    // signing only) instead of the encryption subkey: refused as not for
    // this key, without unlocking the primary (it would be kept unlocked).
    let k = keys();
    let rcpts = recipients(&[("pw", &k.protected.public_armored)]);
    let mut cipher = snap_encrypt(&data(1000, 5), &rcpts);
    let sub = hex::decode(&k.protected.enc_key_id).unwrap();
    let primary =
        hex::decode(&k.protected.fingerprint[k.protected.fingerprint.len() - 16..]).unwrap();
    let at = cipher[..32]
        .windows(8)
        .position(|w| w == sub.as_slice())
        .expect("the subkey's id in the session-key packet");
    cipher[at..at + 8].copy_from_slice(&primary);
    let key = SecretKeySource::new("pw.sec", k.protected.secret_armored.clone())
        .with_passphrase(PASSPHRASE);
    let e = snap_decrypt(&cipher, &key).expect_err("a signing key cannot decrypt");
    assert_eq!(e.kind(), ErrorKind::InvalidKey, "{e}");
    assert!(
        e.to_string()
            .contains("a signing key, which cannot decrypt"),
        "{e}"
    );
    assert_eq!(
        key.passphrase_tries(),
        0,
        "the signing primary was unlocked"
    );
}

#[test]
fn decrypt_file_publishes_only_verified_output() {
    let k = keys();
    let rcpts = recipients(&[("ed", &k.ed.public_armored)]);
    let home = GpgHome::new(); // used as scratch dir
    let plain = data(1_500_000, 14);
    let src = home.file("plain");
    fs::write(&src, &plain).unwrap();
    let enc = home.file("archive.gpg");
    let s = encrypt_file(&src, &enc, &rcpts, &Progress::silent("t")).expect("encrypt_file");
    assert_eq!(s.plaintext_sha256, sha256sum(&src));
    assert_eq!(s.ciphertext_sha256, sha256sum(&enc));
    // Refuses to overwrite.
    let e = encrypt_file(&src, &enc, &rcpts, &Progress::silent("t")).expect_err("exists");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);

    let out = home.file("restored");
    let d = decrypt_file(&enc, &out, &secret(&k.ed), &Progress::silent("t")).expect("decrypt_file");
    assert_eq!(d.plaintext_sha256, sha256sum(&out));
    assert_eq!(d.ciphertext_sha256, sha256sum(&enc));
    assert!(fs::read(&out).unwrap() == plain);

    // Tampered: error, no destination, no temporary file left behind.
    let mut bad = fs::read(&enc).unwrap();
    let n = bad.len();
    bad[n - 3] ^= 1;
    let bad_path = home.file("bad.gpg");
    fs::write(&bad_path, &bad).unwrap();
    let out2 = home.file("restored2");
    let e = decrypt_file(&bad_path, &out2, &secret(&k.ed), &Progress::silent("t"))
        .expect_err("tampered");
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert!(!out2.exists());
    assert_no_partials(home.path());
}

fn assert_no_partials(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".partial"), "left behind: {name}");
    }
}

#[test]
fn secret_key_material_is_refused_in_every_shape_before_any_output() {
    let k = keys();
    let pub_asc = String::from_utf8(k.rsa.public_armored.clone()).unwrap();
    let sec_asc = String::from_utf8(k.ed.secret_armored.clone()).unwrap();
    // A secret key inside an armor block that claims to be a public key.
    let disguised = sec_asc.replace("PRIVATE KEY BLOCK", "PUBLIC KEY BLOCK");
    let mut pub_then_sec_binary = k.rsa.public_binary.clone();
    pub_then_sec_binary.extend_from_slice(&k.ed.secret_binary);
    let mut pub_bin_then_sec_armor = k.rsa.public_binary.clone();
    pub_bin_then_sec_armor.extend_from_slice(sec_asc.as_bytes());
    let shapes: Vec<(&str, Vec<u8>)> = vec![
        ("armored secret", k.ed.secret_armored.clone()),
        ("binary secret", k.ed.secret_binary.clone()),
        ("binary public + binary secret", pub_then_sec_binary),
        (
            "public armor block then secret armor block",
            format!("{pub_asc}\n{sec_asc}").into_bytes(),
        ),
        (
            "text around blocks",
            format!("my keys:\n{pub_asc}\nand also\n{sec_asc}\nbye\n").into_bytes(),
        ),
        (
            "secret subkeys only (stub primary)",
            k.ed.secret_subkeys_armored.clone(),
        ),
        ("secret disguised as public block", disguised.into_bytes()),
        ("binary public then armored secret", pub_bin_then_sec_armor),
        ("protected secret", k.protected.secret_armored.clone()),
    ];
    let home = GpgHome::new(); // scratch
    let src = home.file("plain");
    fs::write(&src, b"archive").unwrap();
    for (what, bytes) in shapes {
        let label = format!("pillar snap:archive:recipients[{what}]");
        // Also with a good key in another source: the secret one still wins.
        let sources = [
            KeySource::new("good.asc", k.rsa.public_armored.clone()),
            KeySource::new(label.clone(), bytes),
        ];
        let dst = home.file("out.gpg");
        // The binding's composition: keys first, output only afterwards.
        let result = load_recipients(&sources)
            .and_then(|r| encrypt_file(&src, &dst, &r, &Progress::silent("t")));
        let e = result.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::SecretKeyMaterial, "{what}: {e}");
        assert!(e.to_string().contains(&label), "names the source: {e}");
        assert!(!dst.exists(), "{what}: output written");
    }
    assert_no_partials(home.path());
}

#[test]
fn unusable_public_keys_are_refused_with_clear_errors() {
    let k = keys();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "empty"),
        (
            "garbage",
            b"this is not a key\n".to_vec(),
            "no OpenPGP data",
        ),
        (
            "binary garbage",
            vec![0x99, 0x01, 0x0d, 0xff, 0x00],
            "truncated",
        ),
        (
            "truncated",
            k.rsa.public_binary[..k.rsa.public_binary.len() / 2].to_vec(),
            "",
        ),
        (
            "sign only",
            k.sign_only.public_armored.clone(),
            "no encryption-capable key",
        ),
        ("expired", k.expired.public_armored.clone(), "expired"),
        ("revoked", k.revoked.public_armored.clone(), "revoked"),
        ("rsa2048", k.rsa2048.public_armored.clone(), "too weak"),
    ];
    for (what, bytes, needle) in cases {
        let e = load_recipients(&[KeySource::new(format!("key-{what}"), bytes)]).expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidKey, "{what}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("key-{what}")),
            "names the source: {msg}"
        );
        assert!(msg.contains(needle), "{what}: {msg}");
    }
}

#[test]
fn several_keys_in_one_source_and_duplicates() {
    let k = keys();
    let mut two = k.rsa.public_armored.clone();
    two.extend_from_slice(b"\n-- comment between blocks --\n");
    two.extend_from_slice(&k.ed.public_armored);
    let r = load_recipients(&[KeySource::new("two.asc", two)]).unwrap();
    assert_eq!(
        r.iter().map(|r| r.fingerprint.as_str()).collect::<Vec<_>>(),
        [k.rsa.fingerprint.as_str(), k.ed.fingerprint.as_str()]
    );
    let mut two_bin = k.rsa.public_binary.clone();
    two_bin.extend_from_slice(&k.ed.public_binary);
    let r = load_recipients(&[
        KeySource::new("two.gpg", two_bin),
        KeySource::new("again.asc", k.ed.public_armored.clone()),
    ])
    .unwrap();
    assert_eq!(r.len(), 2, "the same key twice is used once");
    assert_eq!(r[1].user_ids, ["Snap Test Ed <ed@example.invalid>"]);
    assert_eq!(r[1].fingerprint.len(), 40);
    assert!(
        r[1].fingerprint
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    );
}

#[test]
fn inspect_reports_public_and_secret_keys_without_secrets() {
    let k = keys();
    let mut all = k.rsa.public_armored.clone();
    all.extend_from_slice(&k.protected.secret_armored);
    all.extend_from_slice(&k.ed.secret_subkeys_armored);
    let infos = inspect_keys(&all).unwrap();
    assert_eq!(infos.len(), 3);
    let (rsa, prot, stub) = (&infos[0], &infos[1], &infos[2]);
    assert_eq!(rsa.fingerprint, k.rsa.fingerprint);
    assert!(!rsa.is_secret && !rsa.has_passphrase);
    assert_eq!(rsa.subkeys[0].key_id, k.rsa.enc_key_id);
    assert!(rsa.subkeys[0].capabilities.contains(&"encrypt".to_string()));
    assert!(rsa.usable_for_encryption.is_ok());
    assert_eq!(prot.fingerprint, k.protected.fingerprint);
    assert!(prot.is_secret && prot.has_passphrase);
    assert_eq!(prot.user_ids, ["Snap Test Protected <pw@example.invalid>"]);
    assert_eq!(stub.primary.secret, snap_crypt::SecretState::Stub);
    assert_eq!(stub.subkeys[0].secret, snap_crypt::SecretState::Unprotected);
    assert!(stub.is_secret && !stub.has_passphrase);
    let dump = format!("{infos:?}");
    assert!(!dump.contains("Plain"), "no secret params in the report");
    let e = inspect_keys(b"nothing").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidKey);
}

#[test]
fn output_write_errors_have_the_right_kind() {
    let k = keys();
    let rcpts = recipients(&[("ed", &k.ed.public_armored)]);
    let plain = data(3 * 1_048_576, 15);
    // /dev/full: every write fails with ENOSPC.
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let e =
        encrypt(Cursor::new(&plain), &full, &rcpts, &Progress::silent("t")).expect_err("ENOSPC");
    assert_eq!(e.kind(), ErrorKind::DiskFull, "{e}");
    assert!(
        e.to_string().contains("writing the encrypted output"),
        "{e}"
    );
    // A pipe whose reader went away (as a dropped upload connection): EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let e =
        encrypt(Cursor::new(&plain), writer, &rcpts, &Progress::silent("t")).expect_err("EPIPE");
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    // Decrypting into /dev/full.
    let cipher = snap_encrypt(&plain, &rcpts);
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let e = decrypt(
        Cursor::new(&cipher),
        &full,
        &secret(&k.ed),
        &Progress::silent("t"),
    )
    .expect_err("ENOSPC");
    assert_eq!(e.kind(), ErrorKind::DiskFull, "{e}");
}

#[test]
fn input_read_errors_and_non_messages() {
    let k = keys();
    let rcpts = recipients(&[("ed", &k.ed.public_armored)]);
    // Reading a directory fails with EISDIR.
    let dir = fs::File::open("/").unwrap();
    let e = encrypt(&dir, Vec::new(), &rcpts, &Progress::silent("t")).expect_err("EISDIR");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(
        e.to_string().contains("reading the input to encrypt"),
        "{e}"
    );
    let sk = secret(&k.ed);
    for (what, input) in [
        ("empty", &b""[..]),
        ("text", b"hello"),
        (
            "not encrypted",
            &[0xcb, 0x07, b'b', 0, 0, 0, 0, 0, b'x'][..],
        ),
    ] {
        let e = snap_decrypt(input, &sk).expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}");
    }
}

#[test]
fn progress_counts_bytes() {
    let k = keys();
    let rcpts = recipients(&[("ed", &k.ed.public_armored)]);
    let plain = data(1_234_567, 16);
    let p = Progress::silent("encrypt");
    let mut out = Vec::new();
    encrypt(Cursor::new(&plain), &mut out, &rcpts, &p).unwrap();
    assert_eq!(p.done(), plain.len() as u64);
    let p = Progress::silent("decrypt");
    decrypt(Cursor::new(&out), Vec::new(), &secret(&k.ed), &p).unwrap();
    assert_eq!(p.done(), out.len() as u64);
}

#[test]
fn the_encryption_subkey_is_the_one_gnupg_picks() {
    let k = keys();
    let r = recipients(&[("multi", &k.multi.public_armored)]);
    // The newest of the two subkeys, not the first listed.
    assert_ne!(r[0].key_id, k.multi.enc_key_id);
    let home = GpgHome::new();
    home.import(&k.multi.public_armored);
    let out = home.run_stdin(&["--encrypt", "-r", &k.multi.fingerprint], b"x");
    assert!(out.status.success());
    let path = home.file("m.gpg");
    fs::write(&path, &out.stdout).unwrap();
    // No secret key here: gpg lists the packets and then fails to decrypt.
    let listing = home
        .cmd()
        .args(["--list-packets", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(text.contains(":pubkey enc packet:"), "{text}");
    assert!(
        text.contains(&format!("keyid {}", r[0].key_id)),
        "gpg chose another subkey than {}: {text}",
        r[0].key_id
    );
}

/// A writer standing in for snap-offsite's upload writer (which cannot run
/// here): it fails the way that writer reports a refusal, with a snap error
/// inside the io::Error. This is a mock, on purpose.
struct RefusingUpload;

impl std::io::Write for RefusingUpload {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other(snap_core::Error::new(
            ErrorKind::Refused,
            "s3://bucket/archive.gpg: AccessDenied",
        )))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_snap_error_from_the_output_writer_keeps_its_kind() {
    let k = keys();
    let rcpts = recipients(&[("ed", &k.ed.public_armored)]);
    let e = encrypt(
        Cursor::new(data(600_000, 17)),
        RefusingUpload,
        &rcpts,
        &Progress::silent("t"),
    )
    .expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("AccessDenied"), "{e}");
    assert!(
        e.to_string().starts_with("writing the encrypted output"),
        "{e}"
    );
}

#[test]
fn each_digest_is_computed_only_when_asked_and_the_message_is_the_same_kind() {
    // A caller that hashes elsewhere (an upload writer, a chain's ranges)
    // leaves a digest out: the summary's is then empty, the other still
    // right, and the message still what gpg and snap decrypt.
    use snap_crypt::{Digests, decrypt_with, encrypt_with};
    let k = keys();
    let rcpts = recipients(&[("rsa.asc", &k.rsa.public_armored)]);
    let home = GpgHome::new();
    home.import(&k.rsa.secret_armored);
    let plain = data(300_001, 7);
    let p = Progress::silent("t");
    for digests in [
        Digests::BOTH,
        Digests::NONE,
        Digests::PLAINTEXT,
        Digests::CIPHERTEXT,
    ] {
        let mut cipher = Vec::new();
        let s = encrypt_with(
            Cursor::new(&plain),
            "in",
            &mut cipher,
            "out",
            &rcpts,
            digests,
            &p,
        )
        .expect("encrypt");
        assert_eq!(s.plaintext_bytes, plain.len() as u64);
        assert_eq!(s.ciphertext_bytes, cipher.len() as u64);
        let want = |on: bool, bytes: &[u8]| if on { sha256_hex(bytes) } else { String::new() };
        assert_eq!(
            s.plaintext_sha256,
            want(digests.plaintext, &plain),
            "{digests:?}"
        );
        assert_eq!(
            s.ciphertext_sha256,
            want(digests.ciphertext, &cipher),
            "{digests:?}"
        );
        assert!(gpg_decrypt(&home, &cipher) == plain, "{digests:?}");

        let mut back = Vec::new();
        let d = decrypt_with(
            Cursor::new(&cipher),
            "in",
            &mut back,
            "out",
            &secret(&k.rsa),
            digests,
            &p,
        )
        .expect("decrypt");
        assert!(back == plain, "{digests:?}");
        assert_eq!(d.plaintext_bytes, plain.len() as u64);
        assert_eq!(d.ciphertext_bytes, cipher.len() as u64);
        assert_eq!(
            d.plaintext_sha256,
            want(digests.plaintext, &plain),
            "{digests:?}"
        );
        assert_eq!(
            d.ciphertext_sha256,
            want(digests.ciphertext, &cipher),
            "{digests:?}"
        );
        // Leaving the digests out never leaves out the MDC.
        let mut bad = cipher.clone();
        let at = bad.len() - 30;
        bad[at] ^= 1;
        let e = decrypt_with(
            Cursor::new(&bad),
            "in",
            Vec::new(),
            "out",
            &secret(&k.rsa),
            digests,
            &p,
        )
        .expect_err("a flipped bit");
        assert_eq!(e.kind(), ErrorKind::Integrity, "{digests:?}: {e}");
    }
}

#[test]
fn a_flood_of_session_key_packets_is_refused_after_a_bounded_head() {
    // Cold attack on 5b2ef07: rPGP keeps every PKESK in memory before any
    // is checked; 150 MiB of tiny ones cost a restore 2 GiB. The head of a
    // message is now bounded (1 MiB), so 8 MiB of them stop early.
    let k = keys();
    let body = [
        &[3u8][..],
        &[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
        &[1, 0, 1, 1],
    ]
    .concat();
    let packet = [&[0xC1, body.len() as u8][..], &body].concat();
    let flood = packet.repeat((8 << 20) / packet.len());
    let e = snap_decrypt(&flood, &secret(&k.rsa)).expect_err("a flood");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("before the encrypted data"), "{e}");
    assert!(e.to_string().contains("1024 KiB"), "{e}");
}
