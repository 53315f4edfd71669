//! The SHA-256 tree hash Glacier checks on every part and on a whole
//! archive: computed while the data streams, in O(log n) memory.

use sha2::{Digest, Sha256};
use snap_core::{Error, Result};

/// Size of the leaves of a tree hash.
pub const TREE_CHUNK: usize = 1024 * 1024;
fn pair(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Streaming SHA-256 tree hash: SHA-256 of each 1 MiB chunk, then pairs of
/// hashes hashed level by level, an odd one promoted as it is. Memory is
/// O(log n): completed subtrees of equal height are merged as soon as they
/// appear, which gives the same root as pairing level by level.
#[derive(Clone)]
pub struct TreeHasher {
    chunk: usize,
    current: Sha256,
    current_len: usize,
    chunks: u64,
    /// (height, hash) of complete subtrees, heights strictly decreasing.
    stack: Vec<(u32, [u8; 32])>,
}

impl Default for TreeHasher {
    fn default() -> Self {
        TreeHasher::new()
    }
}

impl TreeHasher {
    pub fn new() -> Self {
        TreeHasher::with_chunk(TREE_CHUNK)
    }

    /// Another leaf size (only for tests against published examples that use one).
    pub fn with_chunk(chunk: usize) -> Self {
        TreeHasher {
            chunk: chunk.max(1),
            current: Sha256::new(),
            current_len: 0,
            chunks: 0,
            stack: Vec::new(),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (self.chunk - self.current_len).min(data.len());
            self.current.update(&data[..n]);
            self.current_len += n;
            data = &data[n..];
            if self.current_len == self.chunk {
                self.push_leaf();
            }
        }
    }

    fn push_leaf(&mut self) {
        let leaf: [u8; 32] = std::mem::take(&mut self.current).finalize().into();
        self.current_len = 0;
        self.chunks += 1;
        let mut node = (0u32, leaf);
        while let Some(&(h, top)) = self.stack.last() {
            if h != node.0 {
                break;
            }
            self.stack.pop();
            node = (h + 1, pair(&top, &node.1));
        }
        self.stack.push(node);
    }

    /// The root. The empty input hashes to SHA-256 of nothing.
    pub fn finish(mut self) -> [u8; 32] {
        if self.current_len > 0 || self.chunks == 0 {
            self.push_leaf();
        }
        let mut acc: Option<[u8; 32]> = None;
        while let Some((_, h)) = self.stack.pop() {
            acc = Some(match acc {
                None => h,
                Some(right) => pair(&h, &right),
            });
        }
        acc.unwrap_or_default()
    }
}

/// Tree hash of a byte slice.
pub fn tree_hash(data: &[u8]) -> [u8; 32] {
    let mut t = TreeHasher::new();
    t.update(data);
    t.finish()
}

/// Tree hash of a byte slice, as lower-case hex.
pub fn tree_hash_hex(data: &[u8]) -> String {
    hex::encode(tree_hash(data))
}

/// Tree hash of the file at `path`, as lower-case hex (read in 1 MiB blocks).
pub fn tree_hash_file_hex(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io_path("opening", path, e))?;
    let mut t = TreeHasher::new();
    let mut buf = vec![0u8; TREE_CHUNK];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io_path("reading", path, e))?;
        if n == 0 {
            break;
        }
        t.update(&buf[..n]);
    }
    Ok(hex::encode(t.finish()))
}

/// Combine the tree hashes of consecutive parts (each a power of two MiB, all
/// of one size but the last) into the tree hash of the whole: pair level by
/// level, promoting an odd one.
pub fn tree_hash_of_parts(hashes: &[[u8; 32]]) -> [u8; 32] {
    if hashes.is_empty() {
        return Sha256::digest([]).into();
    }
    let mut level = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|c| {
                if c.len() == 2 {
                    pair(&c[0], &c[1])
                } else {
                    c[0]
                }
            })
            .collect();
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference algorithm as the AWS guide describes it: hash every
    /// 1 MiB chunk, then pair level by level, promoting an odd one.
    fn reference(data: &[u8], chunk: usize) -> [u8; 32] {
        let leaves: Vec<[u8; 32]> = if data.is_empty() {
            vec![Sha256::digest([]).into()]
        } else {
            data.chunks(chunk)
                .map(|c| Sha256::digest(c).into())
                .collect()
        };
        tree_hash_of_parts(&leaves)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn streaming_equals_level_pairing_for_many_shapes() {
        // Small leaves so many tree shapes are cheap: 1..=40 leaves, ragged ends.
        for n in [
            0usize, 1, 15, 16, 17, 31, 32, 33, 100, 255, 256, 257, 640, 643,
        ] {
            let d = data(n);
            let mut t = TreeHasher::with_chunk(16);
            // Feed in odd slices to exercise chunk boundaries.
            for piece in d.chunks(7) {
                t.update(piece);
            }
            assert_eq!(t.finish(), reference(&d, 16), "n={n}");
        }
    }

    #[test]
    fn guide_example_one_six_and_a_half_mib() {
        // The guide's example 1: a 6.5 MiB archive has 7 leaves; the root is
        // H(H(H(h1,h2),H(h3,h4)), H(H(h5,h6),h7)).
        let d = data(6 * TREE_CHUNK + TREE_CHUNK / 2);
        let h: Vec<[u8; 32]> = d
            .chunks(TREE_CHUNK)
            .map(|c| Sha256::digest(c).into())
            .collect();
        assert_eq!(h.len(), 7);
        let root = pair(
            &pair(&pair(&h[0], &h[1]), &pair(&h[2], &h[3])),
            &pair(&pair(&h[4], &h[5]), &h[6]),
        );
        assert_eq!(tree_hash(&d), root);
    }

    #[test]
    fn guide_example_two_parts_combine() {
        // The guide's example 2: upload in parts (here 2 MiB parts of a
        // 6.5 MiB archive); the tree hash of the part hashes is the whole one.
        let d = data(6 * TREE_CHUNK + TREE_CHUNK / 2);
        let parts: Vec<[u8; 32]> = d.chunks(2 * TREE_CHUNK).map(tree_hash).collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(tree_hash_of_parts(&parts), tree_hash(&d));
        // And with 4 MiB parts.
        let parts: Vec<[u8; 32]> = d.chunks(4 * TREE_CHUNK).map(tree_hash).collect();
        assert_eq!(tree_hash_of_parts(&parts), tree_hash(&d));
    }

    #[test]
    fn small_inputs_are_plain_sha256() {
        assert_eq!(tree_hash(b""), <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!(tree_hash(b"abc"), <[u8; 32]>::from(Sha256::digest(b"abc")));
        let one = data(TREE_CHUNK);
        assert_eq!(tree_hash(&one), <[u8; 32]>::from(Sha256::digest(&one)));
    }
}
