//! Packet-level look at key material before anything is parsed as a key.
//!
//! A key source is split into binary OpenPGP data: either the whole input (if it
//! starts with a packet header) or every ASCII-armored block found in the text,
//! whatever text surrounds them. Every packet header of every block is then
//! walked with rPGP's packet parser, without parsing the bodies, so a secret key
//! (tag 5) or secret subkey (tag 7) is seen wherever it is, even in a block whose
//! armor header claims to be a public key, or in a key that rPGP could not
//! parse. rPGP's own parsers look at the first armor block only; that is why
//! this walk exists.

use std::io::{self, BufRead};

use pgp::armor::{BlockType, Dearmor};
use pgp::packet::PacketParser;
use pgp::types::Tag;
use snap_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

/// Binary OpenPGP data taken from one source.
pub(crate) struct Scanned {
    /// One entry per armor block, or one for a binary source.
    pub blocks: Vec<Zeroizing<Vec<u8>>>,
    /// Packet tags seen, in order, over all blocks.
    pub tags: Vec<Tag>,
    /// Where secret material was seen (empty if none).
    pub secret_seen: Vec<String>,
}

impl Scanned {
    pub fn has_secret(&self) -> bool {
        !self.secret_seen.is_empty()
    }
}

/// Packets that may appear in a transferable public or secret key.
fn allowed_in_key(tag: Tag) -> bool {
    matches!(
        tag,
        Tag::PublicKey
            | Tag::PublicSubkey
            | Tag::SecretKey
            | Tag::SecretSubkey
            | Tag::UserId
            | Tag::UserAttribute
            | Tag::Signature
            | Tag::Trust
            | Tag::Marker
            | Tag::Padding
    )
}

fn is_secret_tag(tag: Tag) -> bool {
    matches!(tag, Tag::SecretKey | Tag::SecretSubkey)
}

/// Split `bytes` into binary blocks and walk every packet header.
///
/// Secret material is recorded in [`Scanned::secret_seen`], never an error here:
/// the caller decides (recipients refuse it, restore needs it). Every other
/// problem (empty, garbage, truncated, unexpected packets) is `InvalidKey`,
/// unless secret material was also seen, which then takes precedence so the
/// caller reports the more serious problem.
pub(crate) fn scan(label: &str, bytes: &[u8]) -> Result<Scanned> {
    let mut out = Scanned {
        blocks: Vec::new(),
        tags: Vec::new(),
        secret_seen: Vec::new(),
    };
    let mut problems: Vec<String> = Vec::new();

    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid_key(format!(
            "{label}: empty key data (expected an OpenPGP public key)"
        )));
    }

    // A binary source starts with a packet header (bit 7 set).
    let binary = bytes[0] & 0x80 != 0;
    if binary {
        out.blocks.push(Zeroizing::new(bytes.to_vec()));
    }

    // Armor blocks anywhere (also after binary data: "key.gpg + cat secret.asc").
    let lines = armor_lines(bytes);
    let mut i = 0;
    let mut block_no = 0;
    while i < lines.len() {
        let line = trim(lines[i]);
        if line.starts_with(b"-----BEGIN ") {
            block_no += 1;
            let raw = String::from_utf8_lossy(line).into_owned();
            // Named, never quoted, when it is a private key: the error ends
            // up in logs (Salt's state comment, the minion log), and a log
            // line holding a private-key armor header trips every secret
            // scanner and looks like the key itself leaked.
            let header = describe_header(&raw);
            if raw.contains("PRIVATE KEY") {
                // PGP, OpenSSH, PEM: a private key is never welcome where a
                // public one belongs, whether or not it parses.
                out.secret_seen
                    .push(format!("armor block {block_no} ({header})"));
            }
            let end = (i + 1..lines.len()).find(|&j| trim(lines[j]).starts_with(b"-----END "));
            let Some(end) = end else {
                problems.push(format!(
                    "armor block {block_no} ({header}) has no END line (truncated?)"
                ));
                break;
            };
            if raw.starts_with("-----BEGIN PGP ") {
                let mut text = Vec::new();
                for l in &lines[i..=end] {
                    text.extend_from_slice(trim(l));
                    text.push(b'\n');
                }
                match dearmor(&text) {
                    Ok((typ, data)) => {
                        if typ == BlockType::PrivateKey && out.secret_seen.is_empty() {
                            out.secret_seen
                                .push(format!("armor block {block_no} ({header})"));
                        }
                        out.blocks.push(data);
                    }
                    Err(e) => problems.push(format!("armor block {block_no} ({header}): {e}")),
                }
            } else {
                problems.push(format!(
                    "armor block {block_no} ({header}) is not OpenPGP data"
                ));
            }
            i = end + 1;
        } else {
            i += 1;
        }
    }

    if out.blocks.is_empty() && problems.is_empty() {
        problems.push(
            "no OpenPGP data found (neither binary packets nor an ASCII-armored block)".into(),
        );
    }

    for (n, block) in out.blocks.iter().enumerate() {
        let which = if binary && n == 0 {
            "binary data".to_string()
        } else {
            format!("armor block {}", if binary { n } else { n + 1 })
        };
        walk(
            &which,
            block,
            &mut out.tags,
            &mut out.secret_seen,
            &mut problems,
        );
    }

    if out.has_secret() {
        // Reported by the caller, which knows whether secrets are welcome; the
        // other problems do not matter then.
        return Ok(out);
    }
    if let Some(first) = problems.first() {
        let more = if problems.len() > 1 {
            format!(" (and {} more problems)", problems.len() - 1)
        } else {
            String::new()
        };
        return Err(Error::invalid_key(format!("{label}: {first}{more}")));
    }
    Ok(out)
}

/// Lines of `bytes`, with an extra break before every "-----BEGIN " and
/// "-----END " that does not start a line (armor glued to binary data or to
/// other text must still be found).
fn armor_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    for mut line in bytes.split(|&b| b == b'\n') {
        while let Some(p) = (1..line.len())
            .find(|&p| line[p..].starts_with(b"-----BEGIN ") || line[p..].starts_with(b"-----END "))
        {
            out.push(&line[..p]);
            line = &line[p..];
        }
        out.push(line);
    }
    out
}

fn trim(line: &[u8]) -> &[u8] {
    line.trim_ascii()
}

fn dearmor(text: &[u8]) -> std::result::Result<(BlockType, Zeroizing<Vec<u8>>), String> {
    let mut d = Dearmor::new(text);
    let mut data = Zeroizing::new(Vec::new());
    io::Read::read_to_end(&mut d, &mut data).map_err(|e| format!("bad ASCII armor: {e}"))?;
    let typ = d.typ.ok_or_else(|| "bad ASCII armor header".to_string())?;
    Ok((typ, data))
}

/// Walk the packet headers of one block, draining bodies unparsed.
fn walk(
    which: &str,
    data: &[u8],
    tags: &mut Vec<Tag>,
    secret_seen: &mut Vec<String>,
    problems: &mut Vec<String>,
) {
    let mut parser = PacketParser::new(data);
    let mut n = 0usize;
    loop {
        let body = match parser.next_ref() {
            None => break,
            Some(Ok(body)) => body,
            Some(Err(e)) => {
                problems.push(format!(
                    "{which}: malformed OpenPGP data after {n} packets: {e}"
                ));
                return;
            }
        };
        let mut body = body;
        let tag = body.packet_header().tag();
        n += 1;
        tags.push(tag);
        if is_secret_tag(tag) {
            secret_seen.push(format!("{which}, packet {n} ({tag:?})"));
        } else if !allowed_in_key(tag) {
            problems.push(format!(
                "{which}: packet {n} is a {tag:?} packet, which does not belong in a key"
            ));
        }
        if let Err(e) = drain(&mut body) {
            problems.push(format!("{which}: packet {n} ({tag:?}) is truncated: {e}"));
            return;
        }
    }
    if n == 0 {
        problems.push(format!("{which}: no OpenPGP packets"));
    }
}

fn drain<R: BufRead>(r: &mut R) -> io::Result<()> {
    loop {
        let n = {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            buf.len()
        };
        r.consume(n);
    }
}

/// The error for secret material where only public keys belong.
pub(crate) fn secret_refused(label: &str, scanned: &Scanned) -> Error {
    Error::new(
        ErrorKind::SecretKeyMaterial,
        format!(
            "{label}: contains SECRET key material ({}); only public keys may be \
             given as recipients. The secret key must never be on the backup server: \
             remove it from there, and export only the public key (gpg --export --armor KEYID)",
            scanned.secret_seen.join("; ")
        ),
    )
}

/// An armor header line for messages: as it is, except a private key's,
/// which is described (`a PGP private key block`) rather than quoted.
fn describe_header(raw: &str) -> String {
    if !raw.contains("PRIVATE KEY") {
        return raw.to_string();
    }
    let kind = raw
        .trim_start_matches("-----BEGIN ")
        .split("PRIVATE KEY")
        .next()
        .unwrap_or("")
        .trim();
    match kind {
        "" => "a private key block".to_string(),
        k if k.starts_with(['A', 'E', 'I', 'O', 'U']) => format!("an {k} private key block"),
        k => format!("a {k} private key block"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_whitespace_are_invalid_key() {
        for input in [&b""[..], b"  \n\t\n"] {
            let e = scan("pillar x", input).err().expect("must fail");
            assert_eq!(e.kind(), ErrorKind::InvalidKey);
            assert!(e.to_string().starts_with("pillar x: empty"), "{e}");
        }
    }

    #[test]
    fn text_without_armor_is_invalid_key() {
        let e = scan("f", b"hello world\n").err().expect("must fail");
        assert_eq!(e.kind(), ErrorKind::InvalidKey);
        assert!(e.to_string().contains("no OpenPGP data"), "{e}");
    }

    #[test]
    fn private_key_armor_header_is_secret_even_if_garbage() {
        let s = scan(
            "f",
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nnot base64 !!\n-----END PGP PRIVATE KEY BLOCK-----\n",
        )
        .expect("scan reports secrets, not errors");
        assert!(s.has_secret());
    }

    #[test]
    fn a_private_key_header_is_named_never_quoted() {
        let s = scan(
            "pillar",
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nnot base64 !!\n-----END PGP PRIVATE KEY BLOCK-----\n",
        )
        .expect("scan");
        let text = s.secret_seen.join("; ");
        assert!(text.contains("a PGP private key block"), "{text}");
        assert!(
            !text.contains("BEGIN") && !text.contains("KEY BLOCK"),
            "{text}"
        );
        assert_eq!(
            describe_header("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
            "-----BEGIN PGP PUBLIC KEY BLOCK-----"
        );
        assert_eq!(
            describe_header("-----BEGIN OPENSSH PRIVATE KEY-----"),
            "an OPENSSH private key block"
        );
    }

    #[test]
    fn openssh_private_key_is_secret() {
        let s = scan(
            "f",
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n",
        )
        .expect("scan");
        assert!(s.has_secret());
    }

    #[test]
    fn unterminated_armor_is_invalid() {
        let e = scan("f", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQ==\n")
            .err()
            .expect("must fail");
        assert_eq!(e.kind(), ErrorKind::InvalidKey);
        assert!(e.to_string().contains("no END line"), "{e}");
    }

    #[test]
    fn binary_garbage_is_invalid() {
        let e = scan("f", &[0xff, 0x00, 0x12, 0x34])
            .err()
            .expect("must fail");
        assert_eq!(e.kind(), ErrorKind::InvalidKey);
    }

    #[test]
    fn a_secret_key_packet_header_is_seen_without_parsing_the_body() {
        // New-format header, tag 5, length 3, body that is not a valid key.
        let data = [0xC0 | 5, 3, 1, 2, 3];
        let s = scan("f", &data).expect("scan");
        assert!(s.has_secret());
        assert_eq!(s.tags, vec![Tag::SecretKey]);
        // Old-format header, tag 7 (secret subkey), one-octet length.
        let data = [0x80 | (7 << 2), 2, 9, 9];
        let s = scan("f", &data).expect("scan");
        assert!(s.has_secret());
    }

    #[test]
    fn message_packets_do_not_belong_in_a_key() {
        // A literal data packet (tag 11) with a tiny body.
        let data = [0xC0 | 11, 2, b'b', 0];
        let e = scan("f", &data).err().expect("must fail");
        assert_eq!(e.kind(), ErrorKind::InvalidKey);
        assert!(e.to_string().contains("does not belong in a key"), "{e}");
    }
}
