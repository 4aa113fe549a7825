//! `SimDisk`: an in-memory [`Disk`] that is deterministic from a seed and
//! injects the faults real storage has.
//!
//! # Fault model
//!
//! - **Crash (power loss).** Each file keeps a *live* image (what reads see)
//!   and a *durable* image (what `sync_data` last made durable); the directory
//!   keeps live and durable name tables likewise (`sync_dir`). At a crash the
//!   durable state survives, plus a seeded subset of the writes and length
//!   changes made since the file's last sync: each is applied whole, applied
//!   **torn** (a seeded subset of its 512-byte sectors), or lost, in order.
//!   Each name created or removed since the last `sync_dir` ends up as it was
//!   before or after the change, at random. [`FaultPlan::crash_at_sync`]
//!   cuts the power just before the N-th sync (it does not happen);
//!   [`FaultPlan::crash_at_write`] lands the N-th write torn, then cuts the
//!   power. After the power is cut every operation fails with `EIO`, until
//!   [`SimDisk::crash`] returns the disk as it comes back.
//! - **I/O errors.** The N-th write, sync or read fails with `EIO`
//!   (nothing is written, nothing is made durable, nothing is read).
//! - **Full disk.** A write or allocation that would take the live bytes of
//!   all files past [`FaultPlan::capacity_bytes`] fails with `ENOSPC`.
//! - **Bit flips on read.** With probability 1/`read_bitflip_one_in`, a
//!   read returns its bytes with one bit flipped (the stored bytes are intact).
//!
//! Operations are counted (writes, syncs, reads) so a test can run a workload
//! once, learn how many sync points it has, and crash at each of them.
//! Everything random comes from the seed: the same seed, workload and plan
//! give the same bytes.

pub mod crash;

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::{Backend, Disk, DiskFile};

/// Sector size for torn writes.
const SECTOR_BYTES: u64 = 512;

/// A small deterministic PRNG (SplitMix64): good enough for fault choices,
/// with no dependency.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// Which faults to inject, counted in operations of each kind from 1.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// Cut the power just before the N-th sync (`sync_data` or `sync_dir`).
    pub crash_at_sync: Option<u64>,
    /// Land the N-th write torn, then cut the power.
    pub crash_at_write: Option<u64>,
    /// Fail the N-th write with `EIO`.
    pub fail_write_at: Option<u64>,
    /// Fail the N-th sync with `EIO`.
    pub fail_sync_at: Option<u64>,
    /// Fail the N-th read with `EIO`.
    pub fail_read_at: Option<u64>,
    /// Fail writes and allocations past this many live bytes with `ENOSPC`.
    pub capacity_bytes: Option<u64>,
    /// Flip one bit of a read's result with probability 1/N.
    pub read_bitflip_one_in: Option<u64>,
}

/// Operations performed so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// `write_at` calls (including each half of `write_and_sync`).
    pub writes: u64,
    /// `sync_data` and `sync_dir` calls.
    pub syncs: u64,
    /// `read_at` calls.
    pub reads: u64,
}

#[derive(Clone, Debug)]
enum Change {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Change>,
}

#[derive(Debug)]
struct SimState {
    rng: SimRng,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    plan: FaultPlan,
    counts: OpCounts,
    powered_off: bool,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated EIO: {what}"))
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error())
}

fn to_usize(value: u64) -> io::Result<usize> {
    usize::try_from(value).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn apply(image: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Write { offset, data } => {
            let start = usize::try_from(*offset).expect("simulated files fit in memory");
            let end = start + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image
                .get_mut(start..end)
                .expect("resized")
                .copy_from_slice(data);
        }
        Change::SetLen(len) => {
            image.resize(
                usize::try_from(*len).expect("simulated files fit in memory"),
                0,
            );
        }
    }
}

impl SimState {
    fn check_power(&self) -> io::Result<()> {
        if self.powered_off {
            Err(eio("power is off"))
        } else {
            Ok(())
        }
    }

    fn live_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| inode.live.len() as u64)
            .sum()
    }

    fn check_space(&self, inode: u64, new_len: u64) -> io::Result<()> {
        let Some(capacity) = self.plan.capacity_bytes else {
            return Ok(());
        };
        let current = self
            .inodes
            .get(&inode)
            .map_or(0, |file| file.live.len() as u64);
        // Writing inside a file's allocated bytes, or shrinking it, takes no
        // new space (as on a real filesystem with preallocated segments).
        if new_len <= current {
            return Ok(());
        }
        let total = self.live_bytes() - current + new_len.max(current);
        if total > capacity {
            Err(enospc())
        } else {
            Ok(())
        }
    }

    fn inode(&mut self, inode: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&inode)
            .ok_or_else(|| eio("file vanished"))
    }

    fn write(&mut self, inode: u64, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_power()?;
        self.counts.writes += 1;
        let nth = self.counts.writes;
        if self.plan.fail_write_at == Some(nth) {
            return Err(eio("write"));
        }
        let end = offset + buf.len() as u64;
        self.check_space(inode, end)?;
        let change = Change::Write {
            offset,
            data: buf.to_vec(),
        };
        if self.plan.crash_at_write == Some(nth) {
            let torn = self.tear(offset, buf);
            let file = self.inode(inode)?;
            for piece in torn {
                apply(&mut file.live, &piece);
                file.unsynced.push(piece);
            }
            self.powered_off = true;
            return Err(eio("power lost during write"));
        }
        let file = self.inode(inode)?;
        apply(&mut file.live, &change);
        file.unsynced.push(change);
        Ok(())
    }

    /// A seeded subset of the sectors of a write.
    fn tear(&mut self, offset: u64, buf: &[u8]) -> Vec<Change> {
        let mut pieces = Vec::new();
        let mut start = 0u64;
        while start < buf.len() as u64 {
            let sector_end = ((offset + start) / SECTOR_BYTES + 1) * SECTOR_BYTES - offset;
            let end = sector_end.min(buf.len() as u64);
            if self.rng.one_in(2) {
                let data = buf
                    .get(to_usize(start).unwrap_or(0)..to_usize(end).unwrap_or(0))
                    .unwrap_or_default()
                    .to_vec();
                pieces.push(Change::Write {
                    offset: offset + start,
                    data,
                });
            }
            start = end;
        }
        pieces
    }

    fn sync_point(&mut self, what: &str) -> io::Result<()> {
        self.check_power()?;
        self.counts.syncs += 1;
        let nth = self.counts.syncs;
        if self.plan.crash_at_sync == Some(nth) {
            self.powered_off = true;
            return Err(eio("power lost before sync"));
        }
        if self.plan.fail_sync_at == Some(nth) {
            return Err(eio(what));
        }
        Ok(())
    }

    fn read(&mut self, inode: u64, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check_power()?;
        self.counts.reads += 1;
        if self.plan.fail_read_at == Some(self.counts.reads) {
            return Err(eio("read"));
        }
        let flip = self
            .plan
            .read_bitflip_one_in
            .is_some_and(|n| self.rng.one_in(n));
        let bit = self.rng.below(buf.len() as u64 * 8);
        let file = self.inode(inode)?;
        if buf.is_empty() {
            // Like `read_exact_at`: an empty read succeeds anywhere.
            return Ok(());
        }
        let start = to_usize(offset)?;
        let source = start
            .checked_add(buf.len())
            .and_then(|end| file.live.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(source);
        if flip && let Some(byte) = buf.get_mut(to_usize(bit / 8)?) {
            *byte ^= 1 << (bit % 8);
        }
        Ok(())
    }

    /// The state as it comes back after a power loss.
    fn recovered(&mut self) -> SimState {
        let mut rng = SimRng::new(self.rng.next_u64());
        let mut names = self.durable_names.clone();
        let live_names: Vec<(String, u64)> = self
            .names
            .iter()
            .map(|(name, inode)| (name.clone(), *inode))
            .collect();
        for (name, inode) in &live_names {
            if names.get(name) != Some(inode) && rng.one_in(2) {
                names.insert(name.clone(), *inode);
            }
        }
        let durable: Vec<(String, u64)> = self
            .durable_names
            .iter()
            .map(|(name, inode)| (name.clone(), *inode))
            .collect();
        for (name, inode) in durable {
            if !self.names.contains_key(&name) && names.get(&name) == Some(&inode) && rng.one_in(2)
            {
                names.remove(&name);
            }
        }
        let mut inodes = BTreeMap::new();
        for inode in names.values() {
            let Some(file) = self.inodes.get(inode) else {
                continue;
            };
            let mut image = file.durable.clone();
            for change in &file.unsynced {
                match rng.below(4) {
                    0 | 1 => apply(&mut image, change),
                    2 => {
                        if let Change::Write { offset, data } = change {
                            let mut tearer = SimState::empty(rng.next_u64());
                            for piece in tearer.tear(*offset, data) {
                                apply(&mut image, &piece);
                            }
                        }
                    }
                    _ => {}
                }
            }
            let recovered = Inode {
                live: image.clone(),
                durable: image,
                unsynced: Vec::new(),
            };
            inodes.insert(*inode, recovered);
        }
        SimState {
            rng,
            inodes,
            next_inode: self.next_inode,
            durable_names: names.clone(),
            names,
            plan: FaultPlan::default(),
            counts: OpCounts::default(),
            powered_off: false,
        }
    }

    fn empty(seed: u64) -> SimState {
        SimState {
            rng: SimRng::new(seed),
            inodes: BTreeMap::new(),
            next_inode: 1,
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            plan: FaultPlan::default(),
            counts: OpCounts::default(),
            powered_off: false,
        }
    }
}

/// The simulated disk. Clones share the same state.
#[derive(Clone, Debug)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

impl SimDisk {
    /// An empty disk whose random choices come from `seed`.
    pub fn new(seed: u64) -> Self {
        SimDisk {
            state: Arc::new(Mutex::new(SimState::empty(seed))),
        }
    }

    /// A disk holding `files` (name, bytes), all durable: for replaying a
    /// directory image (the fuzz target builds logs this way).
    pub fn with_files(seed: u64, files: Vec<(String, Vec<u8>)>) -> Self {
        let disk = SimDisk::new(seed);
        {
            let mut state = disk.lock();
            for (name, bytes) in files {
                let inode = state.next_inode;
                state.next_inode += 1;
                let file = Inode {
                    live: bytes.clone(),
                    durable: bytes,
                    unsynced: Vec::new(),
                };
                state.inodes.insert(inode, file);
                state.names.insert(name.clone(), inode);
                state.durable_names.insert(name, inode);
            }
        }
        disk
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the fault plan (counts keep running).
    pub fn set_plan(&self, plan: FaultPlan) {
        self.lock().plan = plan;
    }

    /// Operations so far.
    pub fn counts(&self) -> OpCounts {
        self.lock().counts
    }

    /// Whether the power has been cut by the fault plan.
    pub fn powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// Cuts the power now (if it is not already off) and returns the disk as
    /// it comes back: durable state plus a seeded subset of unsynced changes.
    /// The returned disk has no fault plan and fresh counts.
    #[must_use]
    pub fn crash(&self) -> SimDisk {
        let mut state = self.lock();
        state.powered_off = true;
        SimDisk {
            state: Arc::new(Mutex::new(state.recovered())),
        }
    }

    /// XORs `mask` into the byte at `offset` of file `name`, in both the live
    /// and the durable image: bit rot.
    pub fn corrupt(&self, name: &str, offset: u64, mask: u8) -> io::Result<()> {
        let mut state = self.lock();
        let inode = *state
            .names
            .get(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let file = state.inode(inode)?;
        let index = to_usize(offset)?;
        for image in [&mut file.live, &mut file.durable] {
            let byte = image
                .get_mut(index)
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            *byte ^= mask;
        }
        Ok(())
    }

    /// The live bytes of file `name`.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        let inode = state.names.get(name)?;
        state.inodes.get(inode).map(|file| file.live.clone())
    }
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    inode: u64,
    /// Opened for direct I/O: writes must be aligned as `O_DIRECT` demands,
    /// or they fail with `EINVAL`, as the kernel's do.
    direct: bool,
}

/// `EINVAL` unless a direct write is aligned in offset, length and memory.
fn check_direct(bufs: &[&[u8]], offset: u64) -> io::Result<()> {
    let align = pagoda_formats::limits::DIRECT_IO_ALIGN;
    let aligned = offset.is_multiple_of(align)
        && bufs.iter().all(|buf| {
            (buf.len() as u64).is_multiple_of(align)
                && (buf.as_ptr() as usize as u64).is_multiple_of(align)
        });
    if aligned {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(
            rustix::io::Errno::INVAL.raw_os_error(),
        ))
    }
}

impl DiskFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.disk.lock().read(self.inode, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.direct {
            check_direct(&[buf], offset)?;
        }
        self.disk.lock().write(self.inode, buf, offset)
    }

    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        if self.direct {
            check_direct(bufs, offset)?;
        }
        self.disk.lock().write(self.inode, &bufs.concat(), offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.sync_point("sync_data")?;
        let file = state.inode(self.inode)?;
        file.durable.clone_from(&file.live);
        file.unsynced.clear();
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.check_power()?;
        state.check_space(self.inode, len)?;
        let file = state.inode(self.inode)?;
        if (file.live.len() as u64) < len {
            let change = Change::SetLen(len);
            apply(&mut file.live, &change);
            file.unsynced.push(change);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.check_power()?;
        state.check_space(self.inode, len)?;
        let file = state.inode(self.inode)?;
        let change = Change::SetLen(len);
        apply(&mut file.live, &change);
        file.unsynced.push(change);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.disk.lock();
        state.check_power()?;
        Ok(state.inode(self.inode)?.live.len() as u64)
    }
}

impl Disk for SimDisk {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let mut state = self.lock();
        state.check_power()?;
        let inode = match state.names.get(name) {
            Some(inode) => *inode,
            None if create => {
                let inode = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(inode, Inode::default());
                state.names.insert(name.to_owned(), inode);
                inode
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            inode,
            direct: false,
        }))
    }

    fn open_direct(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        let state = self.lock();
        state.check_power()?;
        let inode = *state
            .names
            .get(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            inode,
            direct: true,
        }))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.check_power()?;
        Ok(state.names.keys().cloned().collect())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.lock();
        state.check_power()?;
        state
            .names
            .remove(name)
            .map(drop)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.sync_point("sync_dir")?;
        state.durable_names = state.names.clone();
        Ok(())
    }

    fn backend(&self) -> Backend {
        Backend::Sim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_bytes_survive_a_crash_and_unsynced_ones_may_not() {
        let disk = SimDisk::new(1);
        let file = disk.open("a", true).unwrap();
        disk.sync_dir().unwrap();
        file.write_at(b"durable", 0).unwrap();
        file.sync_data().unwrap();
        file.write_at(b"maybe", 7).unwrap();
        let after = disk.crash();
        let bytes = after.file_bytes("a").unwrap();
        assert_eq!(&bytes[..7], b"durable");
        assert!(bytes.len() == 7 || bytes.len() == 12);
        assert!(disk.open("a", false).is_err(), "the crashed disk stays off");
    }

    #[test]
    fn crash_at_sync_cuts_power_before_the_sync() {
        let disk = SimDisk::new(2);
        disk.set_plan(FaultPlan {
            crash_at_sync: Some(2),
            ..FaultPlan::default()
        });
        let file = disk.open("a", true).unwrap();
        disk.sync_dir().unwrap();
        file.write_at(&[7; 100], 0).unwrap();
        assert!(file.sync_data().is_err());
        assert!(disk.powered_off());
        assert!(file.write_at(b"x", 0).is_err());
        assert_eq!(disk.counts().syncs, 2);
    }

    #[test]
    fn full_disks_refuse_growth() {
        let disk = SimDisk::new(3);
        disk.set_plan(FaultPlan {
            capacity_bytes: Some(100),
            ..FaultPlan::default()
        });
        let file = disk.open("a", true).unwrap();
        file.write_at(&[1; 100], 0).unwrap();
        let error = file.write_at(&[1; 1], 100).unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(rustix::io::Errno::NOSPC.raw_os_error())
        );
        file.write_at(&[2; 10], 0).unwrap();
    }

    #[test]
    fn same_seed_same_crash() {
        let image = |seed| {
            let disk = SimDisk::new(seed);
            let file = disk.open("a", true).unwrap();
            for index in 0..20u8 {
                file.write_at(&[index; 700], u64::from(index) * 700)
                    .unwrap();
            }
            disk.crash().file_bytes("a")
        };
        assert_eq!(image(9), image(9));
    }
}
