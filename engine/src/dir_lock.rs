//! The data directory lock: at most one process works on a data directory.
//!
//! A data directory (`log/`, `index/`) is opened, recovered or repaired by
//! one process at a time. Recovery of the value log truncates a torn tail
//! and fsck's repair deletes index entries: run by a second process while
//! the first appends, either cuts records the first has acknowledged. So
//! every entry point that opens a directory — [`Engine::open`] (what
//! `pagoda serve` runs), [`fsck`], and `pagoda wal` — takes this lock
//! first, before it reads or changes anything, and holds it until it is
//! done (a server: for the life of its process).
//!
//! # Mechanism
//!
//! One file, [`LOCK_FILE_NAME`] in the data directory, locked with
//! `flock(LOCK_EX | LOCK_NB)`. The kernel releases the lock when the last
//! descriptor of it is closed, which happens on every exit, `SIGKILL`
//! included, so a crash never leaves a stale lock and there is nothing to
//! clean up. The file is never deleted (deleting a lock file while another
//! process has it open lets two processes lock two different files) and is
//! opened close-on-exec, so a child process does not inherit the lock.
//!
//! The holder writes its PID into the file after it locked it, so a
//! refused process can say who holds the directory. The content is a hint,
//! never the lock: only the `flock` decides. It names the last holder until
//! the next one overwrites it, and a process that loses the race to a
//! holder that has not yet written its PID reports the previous one or
//! none.
//!
//! # Limits
//!
//! `flock` locks are advisory: they bind processes that take them (every
//! Pagoda command that opens a data directory), not other programs. On NFS
//! Linux emulates `flock` with byte-range locks, which protect across
//! clients too; other network file systems may not lock at all.
//!
//! [`Engine::open`]: crate::Engine::open
//! [`fsck`]: crate::fsck::fsck

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the lock file inside a data directory.
pub const LOCK_FILE_NAME: &str = "pagoda.lock";

/// Longest lock file content read back for the holder's PID (a PID and a
/// newline need 11 bytes; a longer file is not a PID).
const LOCK_FILE_READ_BYTES_MAX: usize = 64;

/// Width the PID is written with: the content is overwritten in place by
/// one write of a fixed length, so a reader never finds it empty.
const PID_WIDTH: usize = 10;

/// An exclusive lock on a data directory, held until it is dropped.
///
/// Holding one is the permission to open, recover or repair the
/// directory's log and index. It is released when dropped, and by the
/// kernel when the process exits in any way.
#[derive(Debug)]
pub struct DirLock {
    /// The locked lock file; closing it (dropping the lock) releases the
    /// lock. The file itself stays.
    _file: File,
    /// The data directory.
    dir: PathBuf,
}

impl DirLock {
    /// Locks the data directory `dir`, creating it and its lock file when
    /// they do not exist. Never waits: when another process holds the lock
    /// this fails at once with [`Error::DirectoryInUse`], naming that
    /// process's PID when the lock file records it, and changes nothing.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let path = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io(format!("opening {}", path.display())))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(errno) if errno == rustix::io::Errno::WOULDBLOCK => {
                return Err(Error::DirectoryInUse {
                    dir: dir.to_path_buf(),
                    holder_pid: read_pid(&file),
                });
            }
            Err(errno) => {
                return Err(Error::Io {
                    what: format!("locking {}", path.display()),
                    source: errno.into(),
                });
            }
        }
        let record = format!("{:>PID_WIDTH$}\n", std::process::id());
        file.write_all_at(record.as_bytes(), 0)
            .and_then(|()| file.set_len(record.len() as u64))
            .map_err(Error::io(format!("writing the PID to {}", path.display())))?;
        tracing::debug!(dir = %dir.display(), pid = std::process::id(), "data directory locked");
        Ok(DirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PID recorded in the lock file of `dir`: the holder's while the
    /// directory is locked, else the last holder's. `None` when there is
    /// no lock file or it records no PID. A hint for messages only; whether
    /// the directory is locked is what [`DirLock::acquire`] finds.
    pub fn recorded_pid(dir: &Path) -> Option<u32> {
        File::open(dir.join(LOCK_FILE_NAME))
            .ok()
            .and_then(|file| read_pid(&file))
    }
}

/// The PID a lock file records, if it holds one.
fn read_pid(file: &File) -> Option<u32> {
    let mut bytes = [0u8; LOCK_FILE_READ_BYTES_MAX];
    let len = file.read_at(&mut bytes, 0).ok()?;
    let text = std::str::from_utf8(bytes.get(..len)?).ok()?;
    text.trim().parse().ok().filter(|&pid| pid != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pagoda-dir-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid() {
        // `flock` locks belong to an open file description, so a second
        // open of the lock file conflicts even inside one process: that is
        // what a second process sees.
        let dir = temp_dir("second");
        let held = DirLock::acquire(&dir).expect("the first lock");
        let refused = DirLock::acquire(&dir).expect_err("a second lock is refused");
        let pid = std::process::id();
        assert!(
            matches!(&refused, Error::DirectoryInUse { holder_pid: Some(holder), .. } if *holder == pid),
            "{refused:?}"
        );
        assert!(
            refused.to_string().contains(&format!("PID {pid}")),
            "{refused}"
        );
        drop(held);
        let again = DirLock::acquire(&dir).expect("free again once dropped");
        assert_eq!(again.dir(), dir.as_path());
        assert_eq!(DirLock::recorded_pid(&dir), Some(pid));
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stale_longer_pid_is_overwritten_whole() {
        // A lock file left by a holder whose PID had more digits must not
        // keep its tail: the record is rewritten at a fixed width and the
        // file cut to it.
        let dir = temp_dir("stale");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(LOCK_FILE_NAME), "4000000000999\n").expect("stale file");
        let lock = DirLock::acquire(&dir).expect("lock");
        assert_eq!(DirLock::recorded_pid(&dir), Some(std::process::id()));
        drop(lock);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
