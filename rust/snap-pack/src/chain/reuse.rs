#![forbid(unsafe_code)]
//! The chain's answer to "is this file already in the image?": an exact
//! match of the file's identity in the previous index, checked against the
//! image before it is trusted; and the new index, recorded as files pass.

use std::path::Path;

use snap_core::{Error, ErrorKind, Result};

use super::index::{IndexReader, IndexWriter};
use crate::layout::FileLayout;
use crate::pack::{FileKey, Reuse};
use crate::util::show;

pub(crate) struct ChainReuse<'a> {
    pub old: Option<IndexReader>,
    /// New owner number → the previous index's number for the same server.
    old_owner: Vec<Option<u32>>,
    pub new: IndexWriter,
    block_size: u32,
    index_path: &'a Path,
}

impl<'a> ChainReuse<'a> {
    pub fn new(
        old: Option<IndexReader>,
        new: IndexWriter,
        block_size: u32,
        index_path: &'a Path,
    ) -> Self {
        ChainReuse {
            old,
            old_owner: Vec::new(),
            new,
            block_size,
            index_path,
        }
    }

    fn bad(&self, key: &FileKey, what: String) -> Error {
        Error::new(
            ErrorKind::Integrity,
            format!(
                "chain index {}: the record of inode {} does not fit the image ({what}); \
                 rebuild the index from the chain's image",
                show(self.index_path),
                key.ino
            ),
        )
    }

    /// A recorded layout must lie inside the image's data and fragments.
    fn check(&self, key: &FileKey, old: &IndexReader, l: &FileLayout) -> Result<()> {
        l.check(self.block_size).map_err(|e| self.bad(key, e))?;
        let end = old.header.links.last().map_or(0, |k| k.data_end);
        let len = l.data_len();
        if len > 0 && (l.blocks_start < old.header.data_start || l.blocks_start + len > end) {
            return Err(self.bad(
                key,
                format!(
                    "blocks at {}+{len}, data lies at {}..{end}",
                    l.blocks_start, old.header.data_start
                ),
            ));
        }
        if let Some((idx, off)) = l.frag {
            let Some(&(_, word)) = old.fragments.get(idx as usize) else {
                return Err(self.bad(key, format!("fragment block {idx}")));
            };
            if word == 0 || off >= self.block_size {
                return Err(self.bad(key, format!("fragment {idx}+{off}")));
            }
        }
        Ok(())
    }
}

impl Reuse for ChainReuse<'_> {
    fn owner(&mut self, name: &[u8]) -> u32 {
        let id = self.new.owner(name);
        if id as usize == self.old_owner.len() {
            let old = self
                .old
                .as_ref()
                .and_then(|o| o.minions.iter().position(|m| m == name))
                .map(|i| i as u32);
            self.old_owner.push(old);
        }
        id
    }

    fn lookup(&mut self, key: &FileKey) -> Result<Option<FileLayout>> {
        let Some(Some(owner)) = self.old_owner.get(key.owner as usize).copied() else {
            return Ok(None);
        };
        let Some(old) = self.old.as_mut() else {
            return Ok(None);
        };
        let Some(r) = old.get(key.dev, key.ino)? else {
            return Ok(None);
        };
        // Everything must match: a reused inode number has another
        // generation or birth time; another server's file another owner.
        if r.owner != owner
            || r.generation != key.generation
            || r.btime != key.btime
            || r.size != key.size
            || r.mtime != key.mtime
        {
            return Ok(None);
        }
        let layout = old.layout(&r)?;
        let old = self.old.as_ref().expect("present");
        self.check(key, old, &layout)?;
        Ok(Some(layout))
    }

    fn record(&mut self, key: &FileKey, layout: &FileLayout, _reused: bool) -> Result<()> {
        self.new.push(key, layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::index::{Header, LinkRecord};

    /// An old index holding one file of web1's.
    fn old(dir: &Path) -> IndexReader {
        let mut w = IndexWriter::new(dir).unwrap();
        let web = w.owner(b"web1");
        let l = FileLayout {
            size: 300_000,
            blocks_start: 4096,
            frag: Some((0, 10)),
            words: vec![50_000, 60_000],
        };
        w.push(&key(web), &l).unwrap();
        let header = Header {
            block_size: 131072,
            compressor: "zstd".into(),
            compression_id: 6,
            level: None,
            compressor_options: false,
            data_start: 96,
            links: vec![LinkRecord {
                number: 0,
                start: 0,
                data_end: 1 << 20,
                size: 2 << 20,
                data_sha256: String::new(),
            }],
            minions: 0,
            fragments: 0,
            records: 0,
            blob_bytes: 0,
        };
        let dest = dir.join("old");
        w.finish(header, &[(200_000, 5000)], &dest)
            .unwrap()
            .persist(&dest)
            .unwrap();
        IndexReader::open(&dest).unwrap()
    }

    fn key(owner: u32) -> FileKey {
        FileKey {
            dev: 2049,
            ino: 77,
            generation: Some(123_456),
            btime: Some((1_700_000_000, 42)),
            size: 300_000,
            mtime: (1_700_000_100, 7),
            owner,
        }
    }

    #[test]
    fn only_an_exact_match_of_the_same_server_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let new = IndexWriter::new(dir.path()).unwrap();
        let index = dir.path().join("index");
        let mut r = ChainReuse::new(Some(old(dir.path())), new, 131072, &index);
        let db = r.owner(b"db1");
        let web = r.owner(b"web1");
        assert!(r.lookup(&key(web)).unwrap().is_some());
        // The same inode, size and times, below another server: never.
        assert!(r.lookup(&key(db)).unwrap().is_none());
        // An inode number reused by a new file: another generation or birth.
        let mut k = key(web);
        k.generation = Some(123_457);
        assert!(r.lookup(&k).unwrap().is_none());
        let mut k = key(web);
        k.btime = Some((1_700_000_000, 43));
        assert!(r.lookup(&k).unwrap().is_none());
        let mut k = key(web);
        k.generation = None; // recorded with one, now without: no match
        assert!(r.lookup(&k).unwrap().is_none());
        let mut k = key(web);
        k.mtime.1 += 1;
        assert!(r.lookup(&k).unwrap().is_none());
        let mut k = key(web);
        k.dev += 1;
        assert!(r.lookup(&k).unwrap().is_none());
    }
}
