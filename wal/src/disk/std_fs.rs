//! The portable backend: `std::fs` with positional reads and writes
//! (`pread`/`pwrite`), `fdatasync`, and `fallocate` through rustix.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Backend, Disk, DiskFile};

/// A directory on a local filesystem, used through `std::fs`.
#[derive(Debug)]
pub struct StdDisk {
    root: PathBuf,
}

impl StdDisk {
    /// Uses `root` (which must exist) as the directory.
    pub fn open(root: &Path) -> io::Result<Self> {
        File::open(root)?;
        Ok(StdDisk {
            root: root.to_path_buf(),
        })
    }
}

/// An open file of a [`StdDisk`].
#[derive(Debug)]
pub(crate) struct StdFile {
    pub(crate) file: File,
}

pub(crate) fn open_file(root: &Path, name: &str, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .open(root.join(name))
}

/// Opens an existing file with `O_DIRECT`.
pub(crate) fn open_direct_file(root: &Path, name: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = i32::try_from(rustix::fs::OFlags::DIRECT.bits()).unwrap_or(0);
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(direct)
        .open(root.join(name))
}

pub(crate) fn remove_file(root: &Path, name: &str) -> io::Result<()> {
    std::fs::remove_file(root.join(name))
}

pub(crate) fn sync_directory(root: &Path) -> io::Result<()> {
    File::open(root)?.sync_all()
}

pub(crate) fn available_bytes(root: &Path) -> io::Result<Option<u64>> {
    let stat = rustix::fs::statvfs(root).map_err(io::Error::from)?;
    Ok(Some(stat.f_bavail.saturating_mul(stat.f_frsize)))
}

pub(crate) fn list_dir(root: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        // Filesystems without fallocate (tmpfs on old kernels, some FUSE):
        // a sparse extension reads back as zeros too.
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => {
            if file.metadata()?.len() < len {
                file.set_len(len)?;
            }
            Ok(())
        }
        Err(errno) => Err(errno.into()),
    }
}

impl DiskFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        super::write_all_vectored(bufs, offset, |slices, at| {
            rustix::io::pwritev(&self.file, slices, at).map_err(io::Error::from)
        })
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        allocate(&self.file, len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// A backend on a directory of the local filesystem. Both real backends
/// open, list, remove and sync names with the same `std::fs` calls (the
/// functions above); they differ only in how an open file does its I/O
/// (`wrap`) and in their name, so their [`Disk`] is this one impl.
pub(crate) trait LocalDir: Send + Sync + fmt::Debug {
    /// The directory.
    fn root(&self) -> &Path;
    /// An open file of the directory, as this backend reads and writes it.
    fn wrap(&self, file: File) -> Arc<dyn DiskFile>;
    /// Which backend this is.
    fn kind(&self) -> Backend;
}

impl<T: LocalDir> Disk for T {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        Ok(self.wrap(open_file(self.root(), name, create)?))
    }

    fn open_direct(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        Ok(self.wrap(open_direct_file(self.root(), name)?))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        list_dir(self.root())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        remove_file(self.root(), name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        sync_directory(self.root())
    }

    fn available_bytes(&self) -> io::Result<Option<u64>> {
        available_bytes(self.root())
    }

    fn backend(&self) -> Backend {
        self.kind()
    }
}

impl LocalDir for StdDisk {
    fn root(&self) -> &Path {
        &self.root
    }

    fn wrap(&self, file: File) -> Arc<dyn DiskFile> {
        Arc::new(StdFile { file })
    }

    fn kind(&self) -> Backend {
        Backend::Std
    }
}
