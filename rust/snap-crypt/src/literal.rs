//! Reading the literal data packet inside decrypted SEIPD data without
//! copying it (RFC 4880 §4.2, §5.9): the data comes out as slices of the
//! decrypting reader's buffer. Messages whose content is anything else (a
//! compressed packet, as GnuPG writes by default) go to rPGP's parser.

use std::io::{self, BufRead, Read};

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("literal data packet: {what}"),
    )
}

/// Whether `first` is the first octet of a literal data packet header.
pub(crate) fn is_literal(first: u8) -> bool {
    first == 0xC0 | 11 || (first & 0xC0 == 0x80 && (first >> 2) & 0x0F == 11)
}

/// How much of the packet body is left in the current part.
enum Part {
    /// This many bytes, then another length.
    Partial(u64),
    /// This many bytes, and the body ends.
    Last(u64),
    /// Until the end of the stream (old-format indeterminate length).
    ToEnd,
}

/// The data of a literal data packet, read from `src`.
pub(crate) struct LiteralReader<R: BufRead> {
    src: R,
    part: Part,
    done: bool,
}

fn byte<R: BufRead>(src: &mut R) -> io::Result<u8> {
    let mut b = [0u8; 1];
    src.read_exact(&mut b)
        .map_err(|_| bad("the packet ends early"))?;
    Ok(b[0])
}

/// A new-format body length (the first octet already read).
fn new_length<R: BufRead>(src: &mut R, o1: u8) -> io::Result<Part> {
    Ok(match o1 {
        0..=191 => Part::Last(o1 as u64),
        192..=223 => {
            let o2 = byte(src)?;
            Part::Last((((o1 as u64) - 192) << 8) + o2 as u64 + 192)
        }
        224..=254 => Part::Partial(1 << (o1 & 0x1F)),
        255 => {
            let mut b = [0u8; 4];
            src.read_exact(&mut b)
                .map_err(|_| bad("the packet ends early"))?;
            Part::Last(u32::from_be_bytes(b) as u64)
        }
    })
}

impl<R: BufRead> LiteralReader<R> {
    /// Read the packet header and the body's own header (format, file name,
    /// date); the reader is then at the data.
    pub(crate) fn new(mut src: R) -> io::Result<Self> {
        let tag = byte(&mut src)?;
        if !is_literal(tag) {
            return Err(bad("not a literal data packet"));
        }
        let part = if tag & 0x40 != 0 {
            let o1 = byte(&mut src)?;
            new_length(&mut src, o1)?
        } else {
            match tag & 3 {
                0 => Part::Last(byte(&mut src)? as u64),
                1 => {
                    let mut b = [0u8; 2];
                    src.read_exact(&mut b).map_err(|_| bad("ends early"))?;
                    Part::Last(u16::from_be_bytes(b) as u64)
                }
                2 => {
                    let mut b = [0u8; 4];
                    src.read_exact(&mut b).map_err(|_| bad("ends early"))?;
                    Part::Last(u32::from_be_bytes(b) as u64)
                }
                _ => Part::ToEnd,
            }
        };
        let mut r = LiteralReader {
            src,
            part,
            done: false,
        };
        // Body header: format, file name length and name, date.
        let mut head = [0u8; 2];
        r.read_exact(&mut head).map_err(|_| bad("no body header"))?;
        let mut skip = head[1] as usize + 4;
        let mut scratch = [0u8; 64];
        while skip > 0 {
            let n = skip.min(scratch.len());
            r.read_exact(&mut scratch[..n])
                .map_err(|_| bad("no body header"))?;
            skip -= n;
        }
        Ok(r)
    }
}

impl<R: BufRead> BufRead for LiteralReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        loop {
            if self.done {
                return Ok(&[]);
            }
            match self.part {
                Part::Partial(0) => {
                    let o1 = byte(&mut self.src)?;
                    self.part = new_length(&mut self.src, o1)?;
                }
                Part::Last(0) => self.done = true,
                Part::Partial(n) | Part::Last(n) => {
                    let buf = self.src.fill_buf()?;
                    if buf.is_empty() {
                        return Err(bad("the packet ends early"));
                    }
                    let n = (n as usize).min(buf.len());
                    // Borrow again to return (the loop above needs `self`).
                    return Ok(&self.src.fill_buf()?[..n]);
                }
                Part::ToEnd => {
                    let buf = self.src.fill_buf()?;
                    if buf.is_empty() {
                        self.done = true;
                        continue;
                    }
                    return self.src.fill_buf();
                }
            }
        }
    }

    fn consume(&mut self, amt: usize) {
        self.src.consume(amt);
        match &mut self.part {
            Part::Partial(n) | Part::Last(n) => *n -= amt as u64,
            Part::ToEnd => {}
        }
    }
}

impl<R: BufRead> Read for LiteralReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut r = LiteralReader::new(io::BufReader::with_capacity(5, bytes))?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn reads_new_and_old_formats_and_partial_lengths() {
        // New format, one part: 'b', name "ab", date, data.
        let mut p = vec![0xCB, 2 + 2 + 4 + 3, b'b', 2, b'a', b'b', 0, 0, 0, 0];
        p.extend_from_slice(b"xyz");
        assert_eq!(read_all(&p).unwrap(), b"xyz");
        // New format, partial parts (512 bytes) then a 2-octet length.
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut body = vec![b'b', 0, 0, 0, 0, 0];
        body.extend_from_slice(&data);
        let mut p = vec![0xCB, 0xE0 | 9];
        p.extend_from_slice(&body[..512]);
        let rest = body.len() - 512;
        p.extend_from_slice(&[(((rest - 192) >> 8) + 192) as u8, (rest - 192) as u8]);
        p.extend_from_slice(&body[512..]);
        assert_eq!(read_all(&p).unwrap(), data);
        // Old format, indeterminate length.
        let mut p = vec![0x80 | (11 << 2) | 3, b'b', 0, 0, 0, 0, 0];
        p.extend_from_slice(b"to the end");
        assert_eq!(read_all(&p).unwrap(), b"to the end");
        // Truncated.
        assert!(read_all(&[0xCB, 20, b'b', 0, 0, 0, 0, 0, 1]).is_err());
        assert!(!is_literal(0xC8));
    }
}
