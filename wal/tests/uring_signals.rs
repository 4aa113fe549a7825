//! Regression test: io_uring waits interrupted by signals.
//!
//! The bug: `submit` returned as soon as `io_uring_enter` failed, and a signal
//! caught by a handler installed without `SA_RESTART` makes the wait fail with
//! `EINTR` while the write, read or `fdatasync` is still in the kernel. The
//! call then returned an error for I/O that was still running (a read could
//! land in a freed buffer), and the ring went back to the pool with the late
//! completion in it, where the next call, matching completions by index only,
//! took it for its own result.
//!
//! Here two threads write, sync and read back blocks through `UringDisk`
//! while a third sends them `SIGUSR1` (handler without `SA_RESTART`) in a
//! tight loop: every call must succeed and every read must return the bytes
//! written.
#![expect(
    unsafe_code,
    reason = "installing a signal handler and sending signals"
)]

use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pagoda_wal::disk::{Disk, UringDisk};

const BLOCK_BYTES: usize = 64 << 10;
const ROUNDS: u64 = 300;

extern "C" fn on_signal(_: libc::c_int) {}

fn install_handler_without_restart() {
    // SAFETY: a zeroed `sigaction` is a valid starting value; the handler
    // does nothing (async-signal-safe), and `sa_flags = 0` leaves out
    // `SA_RESTART`, so blocking system calls fail with `EINTR`.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = 0;
        libc::sigemptyset(&raw mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &raw const action, std::ptr::null_mut()),
            0
        );
    }
}

fn pattern(thread: u64, round: u64) -> Vec<u8> {
    let mut state = (thread << 32 | round).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..BLOCK_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn uring_calls_complete_correctly_under_a_signal_storm() {
    let dir = std::env::temp_dir().join(format!("pagoda-uring-signals-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = match UringDisk::open(&dir) {
        Ok(disk) => Arc::new(disk),
        Err(error) => {
            println!("skipped: io_uring is unavailable here ({error})");
            return;
        }
    };
    install_handler_without_restart();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2u64)
        .map(|thread| {
            let disk = Arc::clone(&disk);
            std::thread::spawn(move || worker(&disk, thread))
        })
        .collect();
    let targets: Vec<libc::pthread_t> = workers.iter().map(JoinHandleExt::as_pthread_t).collect();
    let sent = Arc::new(AtomicU64::new(0));
    let signaller = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                for &target in &targets {
                    // SAFETY: the targets are joined only after `stop` is
                    // set and this thread is joined, so each is still alive.
                    let sent_ok = unsafe { libc::pthread_kill(target, libc::SIGUSR1) } == 0;
                    if sent_ok {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::yield_now();
            }
        })
    };
    let results: Vec<Result<(), String>> = workers
        .into_iter()
        .map(|worker| worker.join().unwrap())
        .collect();
    stop.store(true, Ordering::Release);
    signaller.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    println!("signals sent: {}", sent.load(Ordering::Relaxed));
    assert!(sent.load(Ordering::Relaxed) > 0, "no signal was sent");
    for result in results {
        result.unwrap();
    }
}

/// Writes (with sync), then reads back, `ROUNDS` blocks of its own file.
fn worker(disk: &UringDisk, thread: u64) -> Result<(), String> {
    let file = disk
        .open(&format!("file-{thread}"), true)
        .map_err(|e| e.to_string())?;
    for round in 0..ROUNDS {
        let offset = round * BLOCK_BYTES as u64;
        let bytes = pattern(thread, round);
        file.write_and_sync(&bytes, offset)
            .map_err(|e| format!("thread {thread} round {round}: write_and_sync: {e}"))?;
        let mut back = vec![0u8; BLOCK_BYTES];
        file.read_at(&mut back, offset)
            .map_err(|e| format!("thread {thread} round {round}: read_at: {e}"))?;
        if back != bytes {
            return Err(format!("thread {thread} round {round}: read other bytes"));
        }
        file.sync_data()
            .map_err(|e| format!("thread {thread} round {round}: sync_data: {e}"))?;
        if round > 0 {
            let earlier = round / 2;
            let mut back = vec![0u8; BLOCK_BYTES];
            file.read_at(&mut back, earlier * BLOCK_BYTES as u64)
                .map_err(|e| format!("thread {thread} round {round}: read_at earlier: {e}"))?;
            if back != pattern(thread, earlier) {
                return Err(format!(
                    "thread {thread} round {round}: earlier block changed"
                ));
            }
        }
    }
    Ok(())
}
