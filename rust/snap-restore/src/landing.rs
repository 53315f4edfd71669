//! Where a pick lands on a server: rebuilt from what the operator asked,
//! never from what the backup server says.
//!
//! `salt-run snap.restore db1 /etc/nginx` hands db1 an image the backup
//! server packed. A compromised backup server can put anything in it and
//! describe it any way it likes (`whole_server`, `parents`, `root_name`), so
//! the server receiving it trusts only the operator's request ([`Asked`]:
//! the server and the path, passed to it by the master, not through the
//! backup server):
//!
//! - the destination paths are rebuilt from the asked path: its parents,
//!   then its last component (or, for `/`, the server's whole tree); a
//!   packed description that differs from the request is refused;
//! - the image must hold exactly one entry at its root, named as asked;
//!   only that entry is extracted (`snap_pack::unpack` creates everything
//!   relative to directories it made, never through a symlink, and refuses
//!   `/`, `.`, `..` and empty names);
//! - a whole server only when `/` was asked;
//! - device nodes, set-uid/set-gid files and file capabilities inside the
//!   pick are refused unless `/` was asked or the operator allows them
//!   (`special=True`): a device node or a set-uid root file planted in
//!   `/etc/nginx` would give any local user root;
//! - parents that exist on the server are never changed (no mode, owner or
//!   time from the image) and never followed or replaced if they are not
//!   real directories; parents the restore creates are owned by root, with
//!   the packed mode cut to at most 0755;
//! - the finished tree is moved into place with the same staging and
//!   `renameat` rules as every restore (`crate::install`).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use snap_core::{Error, ErrorKind, Progress, Result};
use snap_pack::{EntryKind, UnpackOptions, show_bytes};

use crate::extract::{ExtractSummary, normalize};
use crate::history::{DirMeta, PackedPick, set_dir_meta};
use crate::install::Staging;
use crate::paths::unescape;

/// What the operator asked for, as the receiving server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asked {
    /// Whose data (minion id).
    pub server: String,
    /// The path on that server, normalized (`etc/nginx`); empty: all of it.
    pub path: Vec<u8>,
}

impl Asked {
    pub fn new(server: &str, path: &[u8]) -> Result<Asked> {
        snap_core::account::validate_minion_id(server)?;
        Ok(Asked {
            server: server.to_string(),
            path: normalize(path)?,
        })
    }

    pub fn whole_server(&self) -> bool {
        self.path.is_empty()
    }

    /// The one entry at the image root: the path's last component, or the
    /// server's id for a whole server.
    pub fn root_name(&self) -> Vec<u8> {
        if self.whole_server() {
            self.server.as_bytes().to_vec()
        } else {
            self.components().last().expect("not empty").to_vec()
        }
    }

    /// The path's parent directories, outermost first.
    pub fn parents(&self) -> Vec<Vec<u8>> {
        let comps = self.components();
        comps[..comps.len().saturating_sub(1)]
            .iter()
            .map(|c| c.to_vec())
            .collect()
    }

    fn components(&self) -> Vec<&[u8]> {
        if self.path.is_empty() {
            Vec::new()
        } else {
            self.path.split(|b| *b == b'/').collect()
        }
    }

    fn show(&self) -> String {
        format!("/{} of {}", show_bytes(&self.path), self.server)
    }
}

/// How much of what the image holds a restore onto a server accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Landing {
    /// Device nodes, set-uid/set-gid files and file capabilities inside the
    /// pick (always allowed for a whole server).
    pub allow_special: bool,
}

fn refuse(asked: &Asked, why: String) -> Error {
    Error::new(
        ErrorKind::Integrity,
        format!(
            "refusing the restore of {}: {why}; nothing was restored (a backup server that sends this \
             may be compromised)",
            asked.show()
        ),
    )
}

/// The packed description must say exactly what was asked.
fn check_description(asked: &Asked, packed: &PackedPick) -> Result<()> {
    let packed_path = normalize(&unescape(&packed.pick.path)?)?;
    if packed.pick.server != asked.server || packed_path != asked.path {
        return Err(refuse(
            asked,
            format!(
                "the backup server packed /{} of {}",
                show_bytes(&packed_path),
                packed.pick.server
            ),
        ));
    }
    if packed.whole_server != asked.whole_server() {
        return Err(refuse(
            asked,
            format!(
                "the backup server describes it as {}",
                if packed.whole_server {
                    "a whole server"
                } else {
                    "a single path"
                }
            ),
        ));
    }
    if unescape(&packed.root_name)? != asked.root_name() {
        return Err(refuse(
            asked,
            format!("the packed root entry is named {:?}", packed.root_name),
        ));
    }
    let names = packed
        .parents
        .iter()
        .map(|p| unescape(&p.name))
        .collect::<Result<Vec<_>>>()?;
    if names != asked.parents() {
        return Err(refuse(
            asked,
            format!(
                "the packed parents are {:?}",
                packed.parents.iter().map(|p| &p.name).collect::<Vec<_>>()
            ),
        ));
    }
    Ok(())
}

/// The image holds one entry at its root, named as asked, of a kind that
/// fits (a whole server is a directory).
fn check_image_root(image: &Path, asked: &Asked) -> Result<()> {
    let root = snap_pack::list(image, b"", 1)?;
    let want = asked.root_name();
    let names: Vec<String> = root
        .iter()
        .filter(|e| !e.path.is_empty())
        .map(|e| show_bytes(&e.path))
        .collect();
    let found: Vec<_> = root.iter().filter(|e| e.path == want).collect();
    if found.len() != 1 || names.len() != 1 {
        return Err(refuse(
            asked,
            format!(
                "the image holds {} at its root, not exactly {}",
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                },
                show_bytes(&want)
            ),
        ));
    }
    if asked.whole_server() && found[0].kind != EntryKind::Dir {
        return Err(refuse(
            asked,
            format!("the server's tree is a {}", found[0].kind.name()),
        ));
    }
    Ok(())
}

/// Device nodes, set-id files and file capabilities in a staged tree
/// (walked without following a link), at most a few named.
fn specials(root: &Path) -> Result<(u64, Vec<String>)> {
    fn walk(path: &Path, shown: &Path, n: &mut u64, named: &mut Vec<String>) -> Result<()> {
        let m = fs::symlink_metadata(path).map_err(|e| Error::io_path("checking", path, e))?;
        let t = m.file_type();
        let why = if t.is_block_device() || t.is_char_device() {
            Some(format!(
                "{} device {}:{}",
                if t.is_block_device() { "block" } else { "char" },
                rustix::fs::major(m.rdev()),
                rustix::fs::minor(m.rdev())
            ))
        } else if !t.is_symlink() && m.mode() & 0o6000 != 0 {
            Some(format!(
                "set-{}id mode {:o} owner {}",
                if m.mode() & 0o4000 != 0 { "u" } else { "g" },
                m.mode() & 0o7777,
                m.uid()
            ))
        } else if t.is_file() && matches!(xattr::get(path, "security.capability"), Ok(Some(_))) {
            Some("file capabilities (security.capability)".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            *n += 1;
            if named.len() < 5 {
                let rel = shown.display().to_string();
                named.push(if rel.is_empty() {
                    format!("({why})")
                } else {
                    format!("/{rel} ({why})")
                });
            }
        }
        if t.is_dir() {
            let mut entries: Vec<_> = fs::read_dir(path)
                .map_err(|e| Error::io_path("reading", path, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            entries.sort();
            for name in entries {
                walk(&path.join(&name), &shown.join(&name), n, named)?;
            }
        }
        Ok(())
    }
    let (mut n, mut named) = (0, Vec::new());
    walk(root, Path::new(""), &mut n, &mut named)?;
    Ok((n, named))
}

/// Extract a packed pick into `dest` (which stands for the server's `/`),
/// trusting only `asked` for where it goes (see the module docs).
pub fn land(
    image: &Path,
    packed: &PackedPick,
    asked: &Asked,
    dest: &Path,
    overwrite: bool,
    landing: Landing,
    progress: &Progress,
) -> Result<ExtractSummary> {
    let start = std::time::Instant::now();
    check_description(asked, packed)?;
    check_image_root(image, asked)?;
    let root_name = asked.root_name();
    let staging = Staging::for_dest(dest)?;
    let tree = staging.path().join("tree");
    let opts = UnpackOptions {
        select: vec![root_name.clone()],
        apply_fake_super: true,
        keep_fake_super_xattr: false,
        present: None,
    };
    let un = snap_pack::unpack(image, &tree, &opts, progress)?;
    let unpacked = tree.join(OsStr::from_bytes(&root_name));
    // rsync's packed ACLs and security.* xattrs come back before the check:
    // file capabilities travel as user.rsync.security.capability.
    let meta = crate::rsyncmeta::apply_tree(&unpacked)?;
    if !(landing.allow_special || asked.whole_server()) {
        let (n, named) = specials(&unpacked)?;
        if n > 0 {
            let shown = format!("/{}", show_bytes(&asked.path));
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "refusing the restore of {}: the pick holds {n} device node(s), set-id file(s) or file \
                     capabilities ({}{}); nothing was restored. If {shown} really holds them, restore it \
                     with special=True (check the backup server first: such entries outside /dev and the \
                     system's binaries are a way to root)",
                    asked.show(),
                    named
                        .iter()
                        .map(|p| format!("{shown}{}{p}", if p.starts_with('/') { "" } else { " " }))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if n > named.len() as u64 { ", ..." } else { "" }
                ),
            ));
        }
    }
    let (content, keep_depth) = if asked.whole_server() {
        (unpacked, 0)
    } else {
        let root = staging.path().join("root");
        fs::create_dir(&root).map_err(|e| Error::io_path("creating", &root, e))?;
        let metas: Vec<&DirMeta> = packed.parents.iter().collect();
        let mut cur = root.clone();
        let mut made = Vec::new();
        for (name, meta) in asked.parents().iter().zip(metas) {
            cur.push(OsStr::from_bytes(name));
            fs::create_dir(&cur).map_err(|e| Error::io_path("creating", &cur, e))?;
            // Only for parents this restore creates (existing ones are never
            // changed, see install_kept): owned by root, at most 0755, the
            // backup server's time. An owner or write bit of its choosing
            // on /srv would let a local user swap /srv/data later.
            let safe = DirMeta {
                mode: meta.mode & 0o755,
                uid: 0,
                gid: 0,
                ..meta.clone()
            };
            made.push((cur.clone(), safe));
        }
        let to = cur.join(OsStr::from_bytes(&root_name));
        fs::rename(&unpacked, &to)
            .map_err(|e| Error::io_path("moving into place in staging", &to, e))?;
        for (path, meta) in made.iter().rev() {
            set_dir_meta(path, meta)?;
        }
        // dest itself and every parent: merged into, never changed or replaced.
        (root, asked.parents().len() + 1)
    };
    crate::extract::finish_kept(
        &content, dest, overwrite, staging, &un, meta, keep_depth, start,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_asked_path_decides_parents_and_root() {
        let a = Asked::new("db1", b"/etc//nginx/").unwrap();
        assert_eq!(a.path, b"etc/nginx");
        assert_eq!(a.root_name(), b"nginx");
        assert_eq!(a.parents(), vec![b"etc".to_vec()]);
        assert!(!a.whole_server());
        let w = Asked::new("db1", b"/").unwrap();
        assert!(w.whole_server());
        assert_eq!(w.root_name(), b"db1");
        assert!(w.parents().is_empty());
        assert!(Asked::new("db1", b"/etc/../root").is_err());
        assert!(Asked::new("../db1", b"/etc").is_err());
    }
}
