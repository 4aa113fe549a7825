//! A real small filesystem for full-disk tests: a tmpfs of a given size
//! mounted on a directory (unmounted on drop), and a ballast file that
//! fills it to `ENOSPC`. Mounting needs root, which CI has; without it the
//! test fails and says so (it never skips).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory, unmounted (lazily) on drop.
#[derive(Debug)]
pub struct SmallFs {
    at: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, such as `64m`) at `at`,
    /// creating the directory.
    ///
    /// # Panics
    ///
    /// Panics when the mount fails (not root).
    pub fn mount(at: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a {size} tmpfs at {} failed ({status}): this test needs root (CI runs as root)",
            at.display()
        );
        SmallFs {
            at: at.to_path_buf(),
        }
    }

    /// Fills the filesystem with a ballast file until `ENOSPC`; returns
    /// the file (remove it to free the space).
    ///
    /// # Panics
    ///
    /// Panics on any error but `ENOSPC`.
    pub fn fill(&self) -> PathBuf {
        let ballast = self.at.join("ballast");
        let mut file = std::fs::File::create(&ballast).expect("ballast file");
        let chunk = vec![0xA5u8; 64 << 10];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(28) => break,
                Err(error) => panic!("filling the disk: {error}"),
            }
        }
        ballast
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}
