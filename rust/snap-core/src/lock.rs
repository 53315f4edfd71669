//! Advisory locks (`flock`) so runs never overlap.
//!
//! A push locks a file in its state directory; rotation on the backup server
//! locks each jail's root-owned `lock` file, the same lock `snap-receive`
//! takes for every transfer, so a push and the sync of that server's history
//! exclude each other. The lock goes away with the process, also when it is killed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};

use crate::error::{Error, ErrorKind, Result};

/// A held lock; released on drop.
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record who holds the lock (only for lock *files*).
    pub fn write_note(&mut self, note: &str) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|_| self.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|_| self.file.write_all(note.as_bytes()))
            .map_err(|e| Error::io_path("writing lock note", &self.path, e))
    }
}

fn try_flock(file: &File) -> std::io::Result<bool> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn acquire(file: File, path: &Path, wait: Duration) -> Result<Option<Lock>> {
    let deadline = Instant::now() + wait;
    loop {
        if try_flock(&file).map_err(|e| Error::io_path("locking", path, e))? {
            return Ok(Some(Lock {
                file,
                path: path.to_path_buf(),
            }));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(200).min(deadline - Instant::now()));
    }
}

/// Lock the file at `path` (created 0600 if missing; never through a
/// symbolic link), waiting up to `wait`. `Ok(None)` if someone else still holds it.
pub fn lock_file(path: &Path, wait: Duration) -> Result<Option<Lock>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io_path("opening lock file", path, e))?;
    acquire(file, path, wait)
}

/// Lock the directory at `path` (as rrsync does), waiting up to `wait`.
pub fn lock_dir(path: &Path, wait: Duration) -> Result<Option<Lock>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| Error::io_path("opening directory to lock", path, e))?;
    acquire(file, path, wait)
}

/// What the holder of a lock file wrote into it, for "still running" messages.
pub fn read_note(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(f) = File::open(path) {
        let _ = f.take(4096).read_to_string(&mut text);
    }
    text.trim().to_string()
}

/// The error for a lock that stayed busy.
pub fn busy(what: &str, path: &Path) -> Error {
    let note = read_note(path);
    let holder = if note.is_empty() {
        String::new()
    } else {
        format!(" ({note})")
    };
    Error::new(
        ErrorKind::Busy,
        format!(
            "{what} is locked by another run{holder}: {}",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("push.lock");
        let mut first = lock_file(&p, Duration::ZERO).unwrap().expect("first lock");
        first.write_note("pid 1 since now").unwrap();
        assert!(lock_file(&p, Duration::from_millis(300)).unwrap().is_none());
        let e = busy("push", &p);
        assert_eq!(e.kind(), ErrorKind::Busy);
        assert!(e.to_string().contains("pid 1 since now"), "{e}");
        drop(first);
        assert!(lock_file(&p, Duration::ZERO).unwrap().is_some());
    }

    #[test]
    fn directory_lock_excludes_a_second_flock_like_snap_receive() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path(), Duration::ZERO).unwrap().unwrap();
        // snap-receive locks the directory with fcntl.flock(LOCK_EX | LOCK_NB): a
        // second open file description must be refused.
        assert!(lock_dir(dir.path(), Duration::ZERO).unwrap().is_none());
        drop(held);
        assert!(lock_dir(dir.path(), Duration::ZERO).unwrap().is_some());
    }
}
