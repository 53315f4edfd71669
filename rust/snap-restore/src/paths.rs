//! Raw-byte paths in JSON: printable ASCII and UTF-8 as they are, every
//! other byte (and `\`) as `\xNN`, so any name a server can have survives a
//! trip through JSON, Salt and Python unchanged.

use snap_core::{Error, Result};

pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_str(&mut out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                push_str(&mut out, std::str::from_utf8(good).expect("valid prefix"));
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                rest = &bad[n..];
            }
        }
    }
    out
}

fn push_str(out: &mut String, s: &str) {
    for ch in s.chars() {
        if ch == '\\' || ch.is_control() {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(ch);
        }
    }
}

pub fn unescape(text: &str) -> Result<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let hex = b
                .get(i + 1..i + 4)
                .filter(|h| h[0] == b'x')
                .and_then(|h| std::str::from_utf8(&h[1..]).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::invalid_input(format!("bad escape in path {text:?} (expected \\xNN)"))
                })?;
            out.push(hex);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_bytes() {
        for case in [
            &b"plain/path"[..],
            b"caf\xe9.txt",
            "ünï".as_bytes(),
            b"new\nline",
            b"back\\slash",
            b"\xff\xfe",
        ] {
            let e = escape(case);
            assert!(e.is_ascii() || std::str::from_utf8(case).is_ok());
            assert_eq!(unescape(&e).unwrap(), case, "{e}");
        }
        assert_eq!(escape(b"caf\xe9"), "caf\\xe9");
        assert!(unescape("bad\\q").is_err());
    }
}
