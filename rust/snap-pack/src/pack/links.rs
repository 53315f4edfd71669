#![forbid(unsafe_code)]
//! Hard-linked inodes whose links are not all seen yet.

use std::collections::HashMap;

use super::packer::Target;

/// Per hardlinked inode while some of its links are unseen. 24 bytes (8-byte
/// inode number key + 16-byte value) plus a control byte in a hash map: about
/// 28-57 bytes per inode depending on the table's fill.
#[derive(Clone, Copy)]
pub(super) struct Link {
    /// Links inside the tree not seen yet (pre-pass: the in-tree count).
    pub(super) remaining: u32,
    /// Inode number once written or queued; 0 before.
    pub(super) inum: u32,
    /// Inode reference, or `SLOT | index` while queued.
    pub(super) loc: u64,
}

pub(super) const SLOT: u64 = 1 << 63;
/// Bits of `loc` holding the file type (`S_IFMT >> 12`); inode references
/// use 48 bits at most.
const FMT: u64 = 0xF << 56;

impl Link {
    pub(super) fn target(&self) -> Target {
        let loc = self.loc & !FMT;
        if loc & SLOT != 0 {
            Target::Slot(loc as u32)
        } else {
            Target::Known {
                inum: self.inum,
                iref: loc,
            }
        }
    }

    pub(super) fn set(&mut self, t: Target) {
        self.loc = (self.loc & FMT)
            | match t {
                Target::Slot(j) => SLOT | j as u64,
                Target::Known { iref, .. } => iref,
            };
    }

    /// Remember the inode's file type (`st_mode & S_IFMT`).
    pub(super) fn set_fmt(&mut self, fmt: u32) {
        self.loc = (self.loc & !FMT) | (((fmt >> 12) as u64 & 0xF) << 56);
    }

    pub(super) fn fmt(&self) -> u16 {
        (((self.loc & FMT) >> 56) << 12) as u16
    }
}

/// Hard-linked inodes by (device, inode). Keyed by inode number alone for
/// the source's own device (the usual case), by both for others.
pub(super) struct Links {
    pub(super) dev: u64,
    pub(super) main: HashMap<u64, Link>,
    pub(super) other: HashMap<(u64, u64), Link>,
}

impl Links {
    pub(super) fn new(dev: u64) -> Links {
        Links {
            dev,
            main: HashMap::new(),
            other: HashMap::new(),
        }
    }

    pub(super) fn entry(&mut self, key: (u64, u64)) -> &mut Link {
        let fresh = Link {
            remaining: 0,
            inum: 0,
            loc: 0,
        };
        if key.0 == self.dev {
            self.main.entry(key.1).or_insert(fresh)
        } else {
            self.other.entry(key).or_insert(fresh)
        }
    }

    pub(super) fn get_mut(&mut self, key: (u64, u64)) -> Option<&mut Link> {
        if key.0 == self.dev {
            self.main.get_mut(&key.1)
        } else {
            self.other.get_mut(&key)
        }
    }

    pub(super) fn remove(&mut self, key: (u64, u64)) {
        if key.0 == self.dev {
            self.main.remove(&key.1);
        } else {
            self.other.remove(&key);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.main.len() + self.other.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
