//! Who may read the HTTP port (issue 16, failure 7): on a node with tenants,
//! `/metrics`, `/v1/stats` and the status page's numbers used to answer
//! anyone, listing every tenant's name, puts, lookups, hit ratios and
//! bytes, and the port could be bound to a public address. Now the node's
//! admin token sees every tenant, a tenant's token only its own tenant, no
//! token gets 401; `/healthz` and `/readyz` stay open; a node without
//! tenants answers as before; a public HTTP bind with tenants needs an
//! admin token or TLS. The real binary, on loopback ports it picked.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::PathBuf;

use pagoda_client::{Client, PutOutcome};
use pagoda_formats::chain::ChainHash;
use pagoda_server::auth::hash_token;
use pagoda_tests::{Node, http_get, http_get_with_token, pagoda_binary, test_namespace};

const ADMIN: &str = "pgd_node-admin-token-0123456789abcdef0123";
const ACME_READER: &str = "acme-reader-token";
const ACME_ADMIN: &str = "acme-admin-token";
const GLOBEX_ADMIN: &str = "globex-admin-token";

/// Writes the node's admin token to a file of its own and returns the path.
fn admin_token_file(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("pagoda-admin-token-{name}-{}", std::process::id()));
    std::fs::write(&path, format!("{ADMIN}\n")).unwrap();
    path
}

fn tenants() -> String {
    format!(
        r#"
[[tenants]]
name = "acme"
secret_hex = "{}"
tokens = [{{ blake3 = "{}", role = "admin" }}, {{ blake3 = "{}", role = "read" }}]

[[tenants]]
name = "globex"
secret_hex = "{}"
tokens = [{{ blake3 = "{}", role = "admin" }}]
"#,
        "a1".repeat(32),
        hash_token(ACME_ADMIN),
        hash_token(ACME_READER),
        "b2".repeat(32),
        hash_token(GLOBEX_ADMIN),
    )
}

/// Puts `blocks` blocks in a new namespace of `tenant` (`token`'s).
async fn put_blocks(node: &Node, token: Option<&str>, tenant: &str, blocks: u32) {
    let client = Client::connect(&node.url(), token).await.unwrap();
    let id = client
        .create_namespace(&test_namespace(tenant))
        .await
        .unwrap();
    let ns = client.namespace(id).await.unwrap();
    let mut parent = ChainHash::ROOT;
    for block in 0..blocks {
        let tokens: Vec<u32> = (block * 16..block * 16 + 16).collect();
        let (hash, outcome) = ns.put(&parent, &tokens, &[7u8; 4096]).await.unwrap();
        assert_eq!(outcome, PutOutcome::Stored);
        parent = hash;
    }
}

/// The `tenants` entry of a `/v1/stats` answer, by name.
fn names(stats: &serde_json::Value) -> Vec<String> {
    stats["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tenant| tenant["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The leak itself: a node with tenants (and no admin token) used to
/// answer `/metrics` and `/v1/stats` to anyone with every tenant's numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tenants_no_token_sees_nothing_and_a_tenant_token_only_its_own_tenant() {
    let node = Node::start("http-tenant-views", &tenants());
    put_blocks(&node, Some(ACME_ADMIN), "acme", 3).await;
    put_blocks(&node, Some(GLOBEX_ADMIN), "globex", 2).await;

    // No token: 401 that says what to send, and no tenant's name.
    for path in ["/metrics", "/v1/stats"] {
        let (status, body) = http_get(node.http, path).unwrap();
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("Authorization: Bearer"), "{path}: {body}");
        assert!(!body.contains("acme") && !body.contains("globex"), "{body}");
        let (status, body) = http_get_with_token(node.http, path, "not-a-token").unwrap();
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("unknown token"), "{path}: {body}");
    }
    // The page is static: it has no numbers and no names of its own.
    let (status, page) = http_get(node.http, "/").unwrap();
    assert_eq!(status, 200);
    assert!(!page.contains("acme") && !page.contains("globex"));
    // Health needs no token.
    assert_eq!(http_get(node.http, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(node.http, "/readyz").unwrap().0, 200);

    // A tenant's token, of any role, sees its own tenant alone: no other
    // name, nothing summed over tenants.
    for (token, own, other, puts) in [
        (ACME_READER, "acme", "globex", 3),
        (GLOBEX_ADMIN, "globex", "acme", 2),
    ] {
        let (status, metrics) = http_get_with_token(node.http, "/metrics", token).unwrap();
        assert_eq!(status, 200, "{metrics}");
        assert!(
            metrics.contains(&format!("pagoda_puts_total{{tenant=\"{own}\"}} {puts}")),
            "{metrics}"
        );
        assert!(!metrics.contains(other), "{own} sees {other}:\n{metrics}");
        assert!(!metrics.contains("pagoda_tier_used_bytes"), "{metrics}");
        assert!(!metrics.contains("pagoda_blocks "), "{metrics}");
        assert!(
            !metrics.contains("pagoda_request_duration_seconds_count"),
            "{metrics}"
        );
        let (status, stats) = http_get_with_token(node.http, "/v1/stats", token).unwrap();
        assert_eq!(status, 200);
        assert!(!stats.contains(other), "{own} sees {other}: {stats}");
        let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(stats["scope"], "tenant");
        assert_eq!(stats["tenant"], own);
        assert_eq!(names(&stats), [own]);
        assert_eq!(stats["overall"]["puts"], puts);
        assert!(stats.get("blocks").is_none(), "{stats}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_sees_every_tenant_and_pagoda_stats_sends_it() {
    let token_file = admin_token_file("admin");
    let config = format!(
        "admin_token_file = \"{}\"\n{}",
        token_file.display(),
        tenants()
    );
    let node = Node::start("http-admin-view", &config);
    put_blocks(&node, Some(ACME_ADMIN), "acme", 3).await;
    put_blocks(&node, Some(GLOBEX_ADMIN), "globex", 2).await;
    let (status, metrics) = http_get_with_token(node.http, "/metrics", ADMIN).unwrap();
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("pagoda_puts_total{tenant=\"acme\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pagoda_puts_total{tenant=\"globex\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("pagoda_tier_used_bytes{tier=\"dram\"}"));
    assert!(metrics.contains("pagoda_request_duration_seconds_count{method=\"put\"}"));
    let (status, stats) = http_get_with_token(node.http, "/v1/stats", ADMIN).unwrap();
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["scope"], "node");
    assert_eq!(names(&stats), ["acme", "globex"]);
    assert_eq!(stats["overall"]["puts"], 5);
    // Still nothing without a token.
    assert_eq!(http_get(node.http, "/metrics").unwrap().0, 401);

    // `pagoda stats` takes the token, and says why without one.
    let stats = |token: Option<&str>| {
        let mut command = std::process::Command::new(pagoda_binary());
        command.args(["stats", "--json", "--addr", &node.http.to_string()]);
        command.env_remove("PAGODA_TOKEN");
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        command.output().unwrap()
    };
    let refused = stats(None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let printed = stats(Some(ADMIN));
    assert!(printed.status.success(), "{printed:?}");
    let printed: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(names(&printed), ["acme", "globex"]);
    let _ = std::fs::remove_file(token_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tenants_the_http_port_stays_open_on_loopback() {
    let node = Node::start("http-open", "");
    put_blocks(&node, None, "default", 2).await;
    let (status, metrics) = http_get(node.http, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("pagoda_puts_total{tenant=\"default\"} 2"),
        "{metrics}"
    );
    let (status, stats) = http_get(node.http, "/v1/stats").unwrap();
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(names(&stats), ["default"]);
}

#[test]
fn a_public_http_port_with_tenants_needs_an_admin_token_or_tls() {
    let dir = std::env::temp_dir().join(format!("pagoda-http-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pagoda.toml");
    std::fs::write(&config, tenants()).unwrap();
    let serve = |extra: &[&str]| {
        std::process::Command::new(pagoda_binary())
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--http-addr", "0.0.0.0:0", "--print-config"])
            .args(extra)
            .env_remove("PAGODA_ADMIN_TOKEN_FILE")
            .output()
            .unwrap()
    };
    let refused = serve(&[]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("0.0.0.0:0") && stderr.contains("--admin-token-file"),
        "{stderr}"
    );
    // A token file that is not there is refused by name.
    let missing = dir.join("no-such-token");
    let refused = serve(&["--admin-token-file", missing.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no-such-token"));
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, ADMIN).unwrap();
    let allowed = serve(&["--admin-token-file", token_file.to_str().unwrap()]);
    assert!(allowed.status.success(), "{allowed:?}");
    let printed = String::from_utf8_lossy(&allowed.stdout);
    assert!(printed.contains("admin_token_file"), "{printed}");
    assert!(
        !printed.contains(ADMIN),
        "the token itself is never printed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A token too short to be secret is refused at start, before anything is
/// served.
#[test]
fn a_short_admin_token_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("pagoda-short-token-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, "admin\n").unwrap();
    let output = std::process::Command::new(pagoda_binary())
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--admin-token-file")
        .arg(&token_file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 32 characters"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
