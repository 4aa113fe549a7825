//! `pagoda keys generate|check|rotate`: the master key of encryption at
//! rest (`formats/SPEC.md` section 16.1; README, "Keys and rotation").
//!
//! - `generate --out FILE` writes a new random master key as 64 hex digits
//!   (mode 0600; an existing file is never overwritten).
//! - `check --data-dir D --master-key-file F` says whether F is D's master
//!   key and whether every data key unwraps with it (exit 1 otherwise).
//! - `rotate --data-dir D --old-master-key-file A --new-master-key-file B`
//!   re-wraps every data key of the stopped node's directory under B in one
//!   atomic index write; no block record is rewritten. A wrong A, or a data
//!   key that does not unwrap, changes nothing (exit 1).
//!
//! `check` and `rotate` take the data directory lock: on a live node's
//! directory they exit 1 at once, naming its PID, and change nothing.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use pagoda_engine::MasterKey;
use pagoda_engine::keys::{rotate_master_key, unwrap_all, verify_master_key};

/// `pagoda keys …`.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Write a new random master key (64 hex digits) to a file.
    Generate(GenerateArgs),
    /// Check a master key against a stopped node's data directory.
    Check(CheckArgs),
    /// Re-wrap a stopped node's data keys under a new master key.
    Rotate(RotateArgs),
}

/// Flags of `pagoda keys generate`.
#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// The file to create (mode 0600); it must not exist.
    #[arg(long)]
    out: PathBuf,
}

/// Flags of `pagoda keys check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The data directory (holds `index/`); it is locked while this runs.
    #[arg(long)]
    data_dir: PathBuf,
    /// The master key file to check.
    #[arg(long)]
    master_key_file: PathBuf,
}

/// Flags of `pagoda keys rotate`.
#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// The data directory of a stopped node; it is locked while this runs.
    #[arg(long)]
    data_dir: PathBuf,
    /// The master key the directory is encrypted with now.
    #[arg(long)]
    old_master_key_file: PathBuf,
    /// The master key to encrypt it with from now on.
    #[arg(long)]
    new_master_key_file: PathBuf,
}

pub(crate) fn run(command: &KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Generate(args) => generate(&args.out),
        KeysCommand::Check(args) => check(args),
        KeysCommand::Rotate(args) => rotate(args),
    }
}

fn read_key(path: &Path) -> Result<MasterKey, String> {
    MasterKey::from_file(path).map_err(|error| error.to_string())
}

fn generate(out: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = MasterKey::generate().map_err(|error| error.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|error| format!("creating {}: {error}", out.display()))?;
    writeln!(file, "{}", key.to_hex())
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("writing {}: {error}", out.display()))?;
    println!("wrote a new master key to {}", out.display());
    Ok(())
}

fn check(args: &CheckArgs) -> Result<(), String> {
    let master = read_key(&args.master_key_file)?;
    let index_dir = args.data_dir.join("index");
    if !index_dir.is_dir() {
        return Err(format!(
            "{} is not a Pagoda data directory (no index/)",
            args.data_dir.display()
        ));
    }
    let _lock =
        pagoda_engine::DirLock::acquire(&args.data_dir).map_err(|error| error.to_string())?;
    let index = pagoda_engine::index::Index::open(&index_dir).map_err(|error| error.to_string())?;
    if !verify_master_key(&index, &master, &args.data_dir).map_err(|error| error.to_string())? {
        return Err(format!(
            "{} is not encrypted at rest (no master key check in its index)",
            args.data_dir.display()
        ));
    }
    let keys = unwrap_all(&index, &master).map_err(|error| error.to_string())?;
    let bad: Vec<String> = keys
        .iter()
        .filter_map(|(id, unwrapped)| {
            unwrapped.as_ref().err().map(|reason| {
                format!(
                    "namespace {}: {reason}",
                    pagoda_formats::hex::encode(id.as_bytes())
                )
            })
        })
        .collect();
    println!(
        "the master key matches {}; {} of {} data keys unwrap",
        args.data_dir.display(),
        keys.len() - bad.len(),
        keys.len()
    );
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("\n"))
    }
}

fn rotate(args: &RotateArgs) -> Result<(), String> {
    let old = read_key(&args.old_master_key_file)?;
    let new = read_key(&args.new_master_key_file)?;
    let rotation =
        rotate_master_key(&args.data_dir, &old, &new).map_err(|error| error.to_string())?;
    println!(
        "rotated the master key of {}: {} data key(s) re-wrapped; start the node with {}",
        args.data_dir.display(),
        rotation.rewrapped,
        args.new_master_key_file.display()
    );
    Ok(())
}
