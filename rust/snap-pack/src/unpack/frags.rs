#![forbid(unsafe_code)]
//! The decompressed fragment blocks an image's readers keep.
//!
//! Two tiers, keyed by a block's place in the image (offset and size word):
//!
//! - **recent**: the blocks read last, most recent first, up to
//!   [`RECENT_BYTES`] and [`RECENT_BLOCKS`]. In a full image the files of a
//!   directory have their tail ends in one fragment block after the other,
//!   so this is all a restore uses. In a chain's image each link packed its
//!   new files' tails apart, and a directory's files jump between the
//!   links' blocks: with one block kept, a 13-link chain unpacked 2.5×
//!   slower than unsquashfs. The count bound keeps each look-up a short scan
//!   whatever the blocks weigh (1-byte blocks made it quadratic). 32 MiB was
//!   measured against 8 MiB on a 14-link chain's image: no faster.
//! - **again**: blocks read a second time after `recent` had let them go,
//!   up to [`AGAIN_BYTES`] and [`AGAIN_BLOCKS`]. A reader whose tails
//!   cycle through more blocks than `recent` holds missed on every file:
//!   plain `mksquashfs` output (70 blocks of 1 MiB and 20,000 tiny
//!   duplicate files pointed at them) cost a 1 MiB decompression per
//!   10-byte file, 54 s of CPU for a 264 KiB image. Blocks come in here
//!   only when they are missed again, so a restore that reads its blocks in
//!   order never fills it. When it is full a victim is picked by a stepping
//!   hand that jumps around the slots, not the oldest: an image that cycles
//!   through more than it holds still hits on the share it keeps. Longer
//!   cycles are bounded by the files set aside (`later.rs`), which asks
//!   here how often a block was read.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Where a fragment block is: its image offset and its size word.
pub(crate) type BlockAt = (u64, u32);

/// Bytes of decompressed blocks `recent` keeps.
const RECENT_BYTES: usize = 8 << 20;
/// ... and blocks (8 MiB of the default 128 KiB blocks).
const RECENT_BLOCKS: usize = 64;
/// Bytes of blocks missed again that `again` keeps: 32 MiB (256 MiB, what
/// unsquashfs keeps, was measured: on a 14-link chain's image no faster,
/// and the heap grew past 280 MiB; cycles longer than this tier are the
/// job of files set aside, later.rs).
const AGAIN_BYTES: usize = 32 << 20;
/// ... and blocks (its map stays small whatever the blocks weigh).
const AGAIN_BLOCKS: usize = 1024;
/// Blocks whose reads are counted.
const COUNTED: usize = 1 << 18;
/// Blocks `recent` let go that are remembered (by place only).
const GONE_KEYS: usize = 2 * AGAIN_BLOCKS;

#[derive(Default)]
pub(crate) struct FragCache {
    recent: Vec<(BlockAt, Arc<[u8]>)>,
    /// Blocks `recent` let go, by place, with the count at which each
    /// went (a key let go twice is in `gone_order` twice; only its last
    /// entry is current).
    gone: HashMap<BlockAt, u64>,
    gone_order: VecDeque<(BlockAt, u64)>,
    gone_count: u64,
    again: HashMap<BlockAt, (usize, Arc<[u8]>)>,
    /// The keys of `again`, by slot.
    again_slots: Vec<BlockAt>,
    again_bytes: usize,
    hand: usize,
    /// Blocks read (decompressed or copied) and put here.
    reads: u64,
    /// Blocks a reader is reading now.
    reading: HashSet<BlockAt>,
    /// How often each block was read (at most [`COUNTED`] blocks).
    counts: HashMap<BlockAt, u8>,
}

impl FragCache {
    /// The block at `start` with size word `word`.
    fn get(&mut self, start: u64, word: u32) -> Option<Arc<[u8]>> {
        let key = (start, word);
        if let Some(i) = self.recent.iter().position(|(k, _)| *k == key) {
            if i > 0 {
                self.recent[..=i].rotate_right(1);
            }
            return Some(self.recent[0].1.clone());
        }
        self.again.get(&key).map(|(_, d)| d.clone())
    }

    /// Keep a block just read.
    fn put(&mut self, start: u64, word: u32, data: Arc<[u8]>) {
        let key = (start, word);
        self.reads += 1;
        if self.counts.len() < COUNTED || self.counts.contains_key(&key) {
            let n = self.counts.entry(key).or_default();
            *n = n.saturating_add(1);
        }
        if self.again.contains_key(&key) {
            return; // another reader put it meanwhile
        }
        if self.gone.remove(&key).is_some() {
            self.recent.retain(|(k, _)| *k != key);
            self.keep_again(key, data);
            return;
        }
        // Another reader may have put it meanwhile.
        self.recent.retain(|(k, _)| *k != key);
        self.recent.insert(0, (key, data));
        let mut total = 0;
        let keep = self
            .recent
            .iter()
            .take(RECENT_BLOCKS)
            .take_while(|(_, d)| {
                total += d.len();
                total <= RECENT_BYTES
            })
            .count()
            .max(1);
        for (k, _) in self.recent.drain(keep..) {
            self.gone_count += 1;
            self.gone.insert(k, self.gone_count);
            self.gone_order.push_back((k, self.gone_count));
        }
        while self.gone.len() > GONE_KEYS || self.gone_order.len() > 2 * GONE_KEYS {
            let Some((k, n)) = self.gone_order.pop_front() else {
                break;
            };
            if self.gone.get(&k) == Some(&n) {
                self.gone.remove(&k);
            }
        }
    }

    fn keep_again(&mut self, key: BlockAt, data: Arc<[u8]>) {
        if data.len() > AGAIN_BYTES {
            return;
        }
        while !self.again_slots.is_empty()
            && (self.again_bytes + data.len() > AGAIN_BYTES
                || self.again_slots.len() >= AGAIN_BLOCKS)
        {
            // A step of about 0.618 of the slots (Fibonacci hashing of a
            // counter): victims spread over all of them.
            self.hand = self.hand.wrapping_add(1);
            let slot = (self.hand as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize
                % self.again_slots.len();
            let victim = self.again_slots.swap_remove(slot);
            if let Some((_, d)) = self.again.remove(&victim) {
                self.again_bytes -= d.len();
            }
            if let Some(moved) = self.again_slots.get(slot)
                && let Some(e) = self.again.get_mut(moved)
            {
                e.0 = slot;
            }
        }
        self.again_bytes += data.len();
        self.again.insert(key, (self.again_slots.len(), data));
        self.again_slots.push(key);
    }
}

/// One cache for every reader of an image (unpack's extractor and
/// writers): files whose tails share a block go to whichever writer is
/// free, and each would otherwise decompress the block again. The lock is
/// held only to look up and to put, never while a block is read; a reader
/// that wants a block another is reading waits for it rather than reading
/// it too (files set aside come grouped by block, and two writers took the
/// two files of one block at once: a sixth of the reads were twins).
#[derive(Default, Clone)]
pub(crate) struct SharedFrags(Arc<(Mutex<FragCache>, Condvar)>);

/// Marks a block as being read; unmarks it and wakes the waiting readers
/// when dropped, whatever happened to the read (an error, a panic).
struct Reading<'a>(&'a SharedFrags, BlockAt);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.lock().reading.remove(&self.1);
        self.0.0.1.notify_all();
    }
}

impl SharedFrags {
    fn lock(&self) -> MutexGuard<'_, FragCache> {
        // A reader that panicked left nothing half done: each call changes
        // the cache from one whole state to the next.
        self.0.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The block at `at`, kept or read now by `read` (outside the lock).
    pub(crate) fn get_or_read(
        &self,
        at: BlockAt,
        read: impl FnOnce() -> snap_core::Result<Arc<[u8]>>,
    ) -> snap_core::Result<Arc<[u8]>> {
        let mut c = self.lock();
        loop {
            if let Some(b) = c.get(at.0, at.1) {
                return Ok(b);
            }
            if !c.reading.contains(&at) {
                break;
            }
            c = self.0.1.wait(c).unwrap_or_else(|p| p.into_inner());
        }
        c.reading.insert(at);
        drop(c);
        let _reading = Reading(self, at);
        let b = read()?;
        self.lock().put(at.0, at.1, b.clone());
        Ok(b)
    }

    /// Whether the block at `at` was read twice already (or too many
    /// blocks were read to tell): files pointing at it come back to it
    /// after the cache let it go.
    pub(crate) fn read_twice(&self, at: BlockAt) -> bool {
        let c = self.lock();
        match c.counts.get(&at) {
            Some(n) => *n >= 2,
            None => c.counts.len() >= COUNTED,
        }
    }

    /// Fragment blocks read so far by all the readers.
    pub(crate) fn reads(&self) -> u64 {
        self.lock().reads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keeps_the_blocks_used_last_within_its_bytes_and_count() {
        let mut c = FragCache::default();
        let block = 1 << 20; // 8 of them fit
        for i in 0..8 {
            c.put(i * 10, 7, vec![i as u8; block].into());
        }
        assert_eq!(
            c.get(0, 7).map(|d| d[0]),
            Some(0),
            "the oldest is still there"
        );
        assert!(c.get(0, 8).is_none(), "another size word is another block");
        // Block 0 was just used: the next one in pushes out block 1, not 0.
        c.put(80, 7, vec![8; block].into());
        assert!(c.get(10, 7).is_none());
        assert!(c.get(0, 7).is_some() && c.get(80, 7).is_some());
        assert_eq!(c.recent.len(), 8);
        assert!(c.again.is_empty(), "nothing was read twice");
        // A block larger than the budget is still kept, alone.
        c.put(90, 7, vec![9; RECENT_BYTES + 1].into());
        assert_eq!(c.recent.len(), 1);
        assert_eq!(c.get(90, 7).map(|d| d.len()), Some(RECENT_BYTES + 1));
        // Tiny blocks: at most RECENT_BLOCKS of them, the newest.
        for i in 0..1000 {
            c.put(1000 + i, 1, vec![1].into());
        }
        // A block put twice (two readers missed it at once) is kept once.
        c.put(1999, 1, vec![1].into());
        assert_eq!(c.recent.iter().filter(|(k, _)| *k == (1999, 1)).count(), 1);
        assert_eq!(c.recent.len(), RECENT_BLOCKS);
        assert!(c.get(1999, 1).is_some() && c.get(1000, 1).is_none());
        assert!(c.gone.len() <= GONE_KEYS && c.gone_order.len() <= 2 * GONE_KEYS);
    }

    /// What a reader cycling through `blocks` blocks of `size` bytes,
    /// `rounds` times, reads.
    fn cycle(blocks: u64, size: usize, rounds: u64) -> (FragCache, u64) {
        let mut c = FragCache::default();
        for _ in 0..rounds {
            for b in 0..blocks {
                if c.get(b * 100, 1).is_none() {
                    c.put(b * 100, 1, vec![b as u8; size].into());
                }
            }
        }
        let reads = c.reads;
        (c, reads)
    }

    #[test]
    fn blocks_missed_again_are_kept_so_a_cycle_through_more_than_recent_holds_stops_missing() {
        // 30 blocks of 1 MiB, 30 times round: recent alone reads 900.
        let (c, reads) = cycle(30, 1 << 20, 30);
        assert!(reads <= 60 + 8, "{reads} reads");
        assert_eq!(c.again.len() + c.recent.len(), 30);
        assert_eq!(c.counts.len(), 30);
        // More than `again` holds: it keeps a share and hits on it (the
        // newest-first rule alone would read every time); longer cycles
        // are for the files set aside (later.rs).
        let (c, reads) = cycle(100, 1 << 20, 20);
        println!("100 blocks of 1 MiB 20 times round: {reads} reads of 2,000");
        assert!(c.again_bytes <= AGAIN_BYTES);
        assert!(reads < 2000 * 9 / 10, "{reads} reads");
        // Tiny blocks: the count bounds `again` too.
        let (c, _) = cycle(1_500, 1, 3);
        assert_eq!(c.again.len(), AGAIN_BLOCKS);
        assert_eq!(c.again.len(), c.again_slots.len());
        for (k, (slot, _)) in &c.again {
            assert_eq!(c.again_slots[*slot], *k);
        }
    }
}
