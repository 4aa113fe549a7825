//! `pagoda serve --print-config` from the outside: sizes with units on
//! flags, in the environment and in the file; a flag wins over its
//! variable, a variable over the file; a bad size is a clear error.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::process::{Command, Output};

fn print_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(pagoda_tests::pagoda_binary());
    command.args(["serve", "--print-config"]).args(args);
    for (name, _) in env {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn printed(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn sizes_take_units_and_flags_win_over_variables_over_the_file() {
    let dir = std::env::temp_dir().join(format!("pagoda-config-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pagoda.toml");
    std::fs::write(
        &file,
        "dram_bytes = \"1GiB\"\nssd_bytes = \"2GiB\"\npolicy = \"lru\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let from_file = printed(&print_config(&["--config", file], &[]));
    assert!(
        from_file.contains(&format!("dram_bytes = {}", 1u64 << 30)),
        "{from_file}"
    );
    assert!(
        from_file.contains(&format!("ssd_bytes = {}", 2u64 << 30)),
        "{from_file}"
    );

    let env = [
        ("PAGODA_SSD_BYTES", "16G"),
        ("PAGODA_POLICY", "s3fifo"),
        ("PAGODA_DRAM_BYTES", "3GiB"),
    ];
    let with_env = printed(&print_config(
        &["--config", file, "--dram-bytes", "512MiB"],
        &env,
    ));
    assert!(
        with_env.contains(&format!("dram_bytes = {}", 512u64 << 20)),
        "{with_env}"
    );
    assert!(
        with_env.contains(&format!("ssd_bytes = {}", 16u64 << 30)),
        "{with_env}"
    );
    assert!(with_env.contains("policy = \"s3fifo\""), "{with_env}");

    let bad = print_config(&["--dram-bytes", "12 parsecs"], &[]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("parsecs") && stderr.contains("unit"),
        "{stderr}"
    );
    let bad = print_config(&[], &[("PAGODA_DRAM_BYTES", "lots")]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lots"));
    std::fs::remove_dir_all(&dir).unwrap();
}
