#![forbid(unsafe_code)]
//! Writing a chain index (format: see `index.rs`): records arrive in walk
//! order, are sorted in runs spilled to temporary files, and merged at the
//! end behind the header, server names and fragment table.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use snap_core::{Error, Result};

use super::index::{Header, MAGIC, RECORD, RUN, Record, VERSION, pad8};
use crate::layout::FileLayout;
use crate::pack::FileKey;
use crate::util::io_err;

/// A record in a spilled run, ordered for the merge (smallest key first).
struct Head(Record, usize);

impl PartialEq for Head {
    fn eq(&self, o: &Self) -> bool {
        self.0.key() == o.0.key() && self.1 == o.1
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Head {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.0.key(), o.1).cmp(&(self.0.key(), self.1))
    }
}

/// A new index, built while a link is packed.
pub(crate) struct IndexWriter {
    dir: PathBuf,
    /// Records sorted in memory before a run is spilled.
    run_len: usize,
    minions: Vec<Vec<u8>>,
    by_name: HashMap<Vec<u8>, u32>,
    blob: BufWriter<File>,
    blob_len: u64,
    run: Vec<Record>,
    runs: Vec<File>,
    records: u64,
}

impl IndexWriter {
    /// Temporary files go to `dir` (the index's own directory).
    pub fn new(dir: &Path) -> Result<IndexWriter> {
        let blob = tempfile::tempfile_in(dir)
            .map_err(|e| io_err("creating a temporary file in", dir, e))?;
        Ok(IndexWriter {
            dir: dir.to_path_buf(),
            run_len: RUN,
            minions: Vec::new(),
            by_name: HashMap::new(),
            blob: BufWriter::new(blob),
            blob_len: 0,
            run: Vec::new(),
            runs: Vec::new(),
            records: 0,
        })
    }

    pub fn owner(&mut self, name: &[u8]) -> u32 {
        if let Some(id) = self.by_name.get(name) {
            return *id;
        }
        let id = self.minions.len() as u32;
        self.minions.push(name.to_vec());
        self.by_name.insert(name.to_vec(), id);
        id
    }

    pub fn push(&mut self, key: &FileKey, layout: &FileLayout) -> Result<()> {
        let rec = Record {
            dev: key.dev,
            ino: key.ino,
            generation: key.generation,
            btime: key.btime,
            owner: key.owner,
            size: layout.size,
            mtime: key.mtime,
            frag: layout.frag,
            words: layout.words.len() as u32,
            blocks_start: layout.blocks_start,
            blob_off: self.blob_len,
        };
        for w in &layout.words {
            self.blob
                .write_all(&w.to_le_bytes())
                .map_err(|e| io_err("writing a temporary file in", &self.dir, e))?;
        }
        self.blob_len += 4 * layout.words.len() as u64;
        self.run.push(rec);
        self.records += 1;
        if self.run.len() >= self.run_len {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        self.run.sort_unstable_by_key(|r| r.key());
        let f = tempfile::tempfile_in(&self.dir)
            .map_err(|e| io_err("creating a temporary file in", &self.dir, e))?;
        let mut w = BufWriter::new(f);
        for r in self.run.drain(..) {
            w.write_all(&r.encode())
                .map_err(|e| io_err("writing a temporary file in", &self.dir, e))?;
        }
        let mut f = w
            .into_inner()
            .map_err(|e| io_err("writing a temporary file in", &self.dir, e.into_error()))?;
        f.seek(SeekFrom::Start(0))
            .map_err(|e| io_err("reading a temporary file in", &self.dir, e))?;
        self.runs.push(f);
        Ok(())
    }

    /// Write the whole index into a new temporary file next to `dest`
    /// (mode 0600), synced; the caller renames it into place.
    pub fn finish(
        self,
        header: Header,
        fragments: &[(u64, u32)],
        dest: &Path,
    ) -> Result<tempfile::NamedTempFile> {
        self.finish_filtered(header, fragments, dest, &HashSet::new())
    }

    /// [`IndexWriter::finish`], leaving out the records of inodes in `skip`.
    pub fn finish_filtered(
        mut self,
        mut header: Header,
        fragments: &[(u64, u32)],
        dest: &Path,
        skip: &HashSet<(u64, u64)>,
    ) -> Result<tempfile::NamedTempFile> {
        self.spill()?;
        let blob = self
            .blob
            .into_inner()
            .map_err(|e| io_err("writing a temporary file in", &self.dir, e.into_error()))?;
        let dir = self.dir.clone();
        let werr = |e: io::Error| io_err("writing", dest, e);
        // Merge the sorted runs into one file of records, counting them.
        let merged = tempfile::tempfile_in(&dir)
            .map_err(|e| io_err("creating a temporary file in", &dir, e))?;
        let mut out = BufWriter::with_capacity(1 << 16, merged);
        let mut readers: Vec<BufReader<File>> = std::mem::take(&mut self.runs)
            .into_iter()
            .map(|f| BufReader::with_capacity(1 << 16, f))
            .collect();
        let mut heap = BinaryHeap::new();
        let mut rec = [0u8; RECORD];
        let next = |r: &mut BufReader<File>, rec: &mut [u8; RECORD]| -> io::Result<bool> {
            match r.read_exact(rec) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
                Err(e) => Err(e),
            }
        };
        for (i, r) in readers.iter_mut().enumerate() {
            if next(r, &mut rec).map_err(werr)? {
                heap.push(Head(Record::decode(&rec), i));
            }
        }
        let mut last = None;
        let mut written = 0u64;
        while let Some(Head(r, i)) = heap.pop() {
            if next(&mut readers[i], &mut rec).map_err(werr)? {
                heap.push(Head(Record::decode(&rec), i));
            }
            if skip.contains(&r.key()) {
                continue;
            }
            if last == Some(r.key()) {
                return Err(Error::internal(format!(
                    "chain index: inode {:?} recorded twice",
                    r.key()
                )));
            }
            last = Some(r.key());
            out.write_all(&r.encode()).map_err(werr)?;
            written += 1;
        }
        drop(readers);
        let mut merged = out.into_inner().map_err(|e| werr(e.into_error()))?;
        merged.seek(SeekFrom::Start(0)).map_err(werr)?;

        header.minions = self.minions.len() as u32;
        header.fragments = fragments.len() as u64;
        header.records = written;
        header.blob_bytes = self.blob_len;
        let tmp = tempfile::Builder::new()
            .prefix(".chain-index-")
            .suffix(".pending")
            .tempfile_in(&dir)
            .map_err(|e| io_err("creating a temporary file in", &dir, e))?;
        let mut w = Hashing::new(BufWriter::with_capacity(1 << 16, tmp.as_file()));
        let text = serde_json::to_vec(&header)
            .map_err(|e| Error::internal(format!("encoding the chain index header: {e}")))?;
        w.write_all(MAGIC).map_err(werr)?;
        w.write_all(&VERSION.to_le_bytes()).map_err(werr)?;
        w.write_all(&(text.len() as u32).to_le_bytes())
            .map_err(werr)?;
        w.write_all(&text).map_err(werr)?;
        w.pad8().map_err(werr)?;
        w.write_all(&(self.minions.len() as u32).to_le_bytes())
            .map_err(werr)?;
        for m in &self.minions {
            w.write_all(&(m.len() as u16).to_le_bytes()).map_err(werr)?;
            w.write_all(m).map_err(werr)?;
        }
        w.pad8().map_err(werr)?;
        for (start, size) in fragments {
            w.write_all(&start.to_le_bytes()).map_err(werr)?;
            w.write_all(&size.to_le_bytes()).map_err(werr)?;
            w.write_all(&0u32.to_le_bytes()).map_err(werr)?;
        }
        io::copy(&mut BufReader::with_capacity(1 << 16, merged), &mut w).map_err(werr)?;
        let mut blob = blob;
        blob.seek(SeekFrom::Start(0)).map_err(werr)?;
        io::copy(&mut BufReader::with_capacity(1 << 16, blob), &mut w).map_err(werr)?;
        let (mut inner, digest) = w.finish();
        inner.write_all(&digest).map_err(werr)?;
        inner.flush().map_err(werr)?;
        drop(inner);
        tmp.as_file().sync_all().map_err(werr)?;
        Ok(tmp)
    }
}

/// A writer that hashes what passes through.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    fn pad8(&mut self) -> io::Result<()> {
        let n = pad8(self.len) as usize;
        self.write_all(&[0u8; 8][..n])
    }

    fn finish(self) -> (W, [u8; 32]) {
        (self.inner, self.hash.finalize().into())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::index::IndexReader;
    use snap_core::ErrorKind;

    fn header() -> Header {
        Header {
            block_size: 131072,
            compressor: "zstd".into(),
            compression_id: 6,
            level: None,
            compressor_options: false,
            data_start: 96,
            links: vec![],
            minions: 0,
            fragments: 0,
            records: 0,
            blob_bytes: 0,
        }
    }

    fn key(ino: u64, owner: u32) -> FileKey {
        FileKey {
            dev: 7,
            ino,
            generation: (!ino.is_multiple_of(3)).then_some(ino as u32 * 11),
            btime: ino.is_multiple_of(2).then_some((ino as i64, 5)),
            size: ino * 1000,
            mtime: (1_700_000_000 + ino as i64, 9),
            owner,
        }
    }

    #[test]
    fn records_survive_runs_merge_and_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = IndexWriter::new(dir.path()).unwrap();
        w.run_len = 7; // many spilled runs
        let web = w.owner(b"web1");
        let db = w.owner(b"db1");
        assert_eq!(w.owner(b"web1"), web);
        // Inode numbers in walk order, not sorted.
        let inos: Vec<u64> = (0..100u64).map(|i| (i * 37) % 101 + 1).collect();
        for &ino in &inos {
            let l = FileLayout {
                size: ino * 1000,
                blocks_start: 4096 * ino,
                frag: (ino % 4 == 0).then_some((ino as u32, 12)),
                words: (0..ino % 5).map(|j| 100 + j as u32).collect(),
            };
            w.push(&key(ino, if ino % 2 == 0 { web } else { db }), &l)
                .unwrap();
        }
        let dest = dir.path().join("index");
        let tmp = w.finish(header(), &[(96, 500), (700, 300)], &dest).unwrap();
        tmp.persist(&dest).unwrap();
        let mut r = IndexReader::open(&dest).unwrap();
        assert_eq!(r.header.records, 100);
        assert_eq!(r.minions, vec![b"web1".to_vec(), b"db1".to_vec()]);
        assert_eq!(r.fragments, vec![(96, 500), (700, 300)]);
        for &ino in &inos {
            let rec = r.get(7, ino).unwrap().expect("recorded");
            let k = key(ino, rec.owner);
            assert_eq!(
                (rec.generation, rec.btime, rec.size, rec.mtime),
                (k.generation, k.btime, k.size, k.mtime)
            );
            let l = r.layout(&rec).unwrap();
            assert_eq!(l.blocks_start, 4096 * ino);
            assert_eq!(l.words.len() as u64, ino % 5);
        }
        assert!(r.get(7, 0).unwrap().is_none());
        assert!(r.get(7, 500).unwrap().is_none());
        assert!(r.get(8, 5).unwrap().is_none());
        assert_eq!(r.records().unwrap().len(), 100);

        // Any damaged byte is noticed before anything is trusted.
        let mut bytes = std::fs::read(&dest).unwrap();
        bytes[300] ^= 1;
        std::fs::write(&dest, &bytes).unwrap();
        let e = IndexReader::open(&dest).err().expect("damaged");
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(e.to_string().contains("checksum"), "{e}");
    }
}
