//! A small log writer for the SIGKILL test: appends records with `SyncData`
//! durability forever, printing each acknowledged location, so the test can
//! kill it at any moment and check that everything it printed survived.
//!
//! Usage: `wal-writer DIR FIRST_INDEX`. Record `i`'s payload is
//! [`pagoda_tests::writer_payload`]`(i)`; each acknowledged append prints
//! `i segment offset sequence length` on one line, flushed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use pagoda_formats::record::RecordKind;
use pagoda_wal::disk::{self, BackendChoice};
use pagoda_wal::{Durability, Wal, WalOptions};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(first)) = (
        args.next(),
        args.next().and_then(|text| text.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: wal-writer DIR FIRST_INDEX");
        return ExitCode::from(2);
    };
    match run(&PathBuf::from(dir), first) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wal-writer: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &std::path::Path, first: u64) -> Result<(), Box<dyn std::error::Error>> {
    let disk = disk::open_dir(dir, BackendChoice::Auto)?;
    let wal = Wal::open(
        disk,
        WalOptions {
            segment_bytes: 1 << 20,
            ..WalOptions::default()
        },
    )?;
    let mut stdout = std::io::stdout().lock();
    for index in first.. {
        let payload = pagoda_tests::writer_payload(index);
        let location = wal.append(RecordKind::Block, &payload, Durability::SyncData)?;
        writeln!(
            stdout,
            "{index} {} {} {} {}",
            location.segment_id, location.offset, location.sequence, location.payload_len
        )?;
        stdout.flush()?;
    }
    Ok(())
}
