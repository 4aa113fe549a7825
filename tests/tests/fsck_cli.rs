//! `pagoda fsck` on a data directory with a damaged block: the check finds it
//! and exits 1, the repair removes it and exits 0, the next check is clean,
//! and the engine then serves every other block.
#![expect(clippy::unwrap_used, reason = "helpers fail the test loudly")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pagoda_engine::{Durability, Engine, EngineOptions, TenantConfig};
use pagoda_formats::chain::{ChainHash, TenantSecret};
use pagoda_formats::namespace::{Namespace, NamespaceId};
use pagoda_tests::pagoda_binary;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(dir: &Path) -> EngineOptions {
    let mut options = EngineOptions::on_disk(dir);
    options.dram_bytes = 1 << 20;
    options.page_bytes = 4096;
    options.durability = Durability::Sync;
    options.maintenance_interval = None;
    options.tenants = vec![TenantConfig::new(
        "acme",
        TenantSecret::new(b"acme secret for fsck test".to_vec()).unwrap(),
    )];
    options
}

fn namespace() -> Namespace {
    pagoda_tests::test_namespace("acme")
}

fn payload(index: u8) -> Vec<u8> {
    (0..5000u32)
        .map(|at| at.to_le_bytes()[0].wrapping_mul(7) ^ index)
        .collect()
}

fn fsck(dir: &Path, repair: bool) -> Output {
    let mut command = Command::new(pagoda_binary());
    command.arg("fsck").arg(dir);
    if repair {
        command.arg("--repair");
    }
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn fsck_finds_and_repairs_a_damaged_block() {
    let dir = TempDir(std::env::temp_dir().join(format!("pagoda-fsck-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let hashes: Vec<ChainHash> = (1..=4u8).map(|i| ChainHash([i; 32])).collect();
    let ns: NamespaceId = {
        let engine = Engine::open(options(&dir.0)).unwrap();
        let ns = engine.create_namespace(&namespace()).unwrap();
        let mut parent = ChainHash::ROOT;
        for (index, hash) in (0u8..).zip(&hashes) {
            let bytes = payload(index);
            engine
                .put(&ns, &parent, hash, &bytes, crc32c::crc32c(&bytes))
                .unwrap();
            parent = *hash;
        }
        engine.close().unwrap();
        ns
    };
    let clean = fsck(&dir.0, false);
    assert!(clean.status.success(), "{}", text(&clean));
    assert!(
        text(&clean).contains("verified            4"),
        "{}",
        text(&clean)
    );

    // Rot one byte of the third block's KV bytes.
    let log = dir.0.join("log");
    let segment = std::fs::read_dir(&log)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&segment).unwrap();
    let needle = payload(3);
    let at = bytes.windows(64).position(|w| w == &needle[..64]).unwrap() + 1000;
    bytes[at] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let found = fsck(&dir.0, false);
    assert_eq!(found.status.code(), Some(1), "{}", text(&found));
    assert!(
        text(&found).contains("1 problem(s) found"),
        "{}",
        text(&found)
    );
    assert!(
        text(&found).contains(&pagoda_formats::hex::encode(&[4u8; 32])),
        "{}",
        text(&found)
    );

    let repaired = fsck(&dir.0, true);
    assert_eq!(repaired.status.code(), Some(0), "{}", text(&repaired));
    assert!(
        text(&repaired).contains("[repaired]"),
        "{}",
        text(&repaired)
    );

    let after = fsck(&dir.0, false);
    assert!(after.status.success(), "{}", text(&after));
    assert!(
        text(&after).contains("verified            3"),
        "{}",
        text(&after)
    );

    let engine = Engine::open(options(&dir.0)).unwrap();
    assert_eq!(engine.lookup(&ns, &hashes).unwrap().matched, 3);
    for (index, hash) in (0u8..).zip(&hashes).take(3) {
        let block = engine.get(&ns, hash).unwrap().unwrap();
        assert_eq!(block.to_vec(), payload(index));
    }
    assert_eq!(engine.stats().total().checksum_failures, 0);
}

#[test]
fn fsck_refuses_what_is_not_a_data_directory() {
    let output = fsck(Path::new("/nonexistent/pagoda"), false);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("not a Pagoda data directory"),
        "{}",
        text(&output)
    );
}
