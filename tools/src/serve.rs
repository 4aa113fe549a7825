//! `pagoda serve`: runs one node (see `pagoda-server`), and `pagoda stats`,
//! `pagoda token`: the admin's view of it.
//!
//! Configuration comes from defaults, then `--config FILE` (TOML), then
//! `PAGODA_*` environment variables, then flags; `--print-config` prints the
//! result (secrets redacted) and exits. SIGTERM or SIGINT stops the node
//! gracefully: no new calls, Watch streams end, other in-flight calls finish
//! within the grace period (`[limits] shutdown_grace_ms`, 10 s) or are
//! cancelled, the log is synced, exit 0.
//!
//! On stdout a node prints exactly two lines, a stable format for scripts
//! and tests (its log lines go to stderr):
//!
//! ```text
//! listening grpc=127.0.0.1:7420 http=127.0.0.1:7421
//! ready
//! ```
//!
//! `listening` comes once both listeners are bound and gives the bound
//! addresses (so `--grpc-addr 127.0.0.1:0` shows the port the system
//! picked); `ready` comes once the engine is open and `/readyz` answers 200.
//! Later versions may append `key=value` pairs to `listening`, never
//! reorder or rename these.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use pagoda_server::config::ServerConfig;

/// Flags of `pagoda serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC listen address (default 127.0.0.1:7420).
    #[arg(long, env = "PAGODA_GRPC_ADDR")]
    grpc_addr: Option<SocketAddr>,
    /// HTTP listen address (default 127.0.0.1:7421).
    #[arg(long, env = "PAGODA_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// The data plane's TCP listen address (default: the gRPC address with
    /// its port + 2, 127.0.0.1:7422).
    #[arg(long, env = "PAGODA_DATA_ADDR")]
    data_addr: Option<SocketAddr>,
    /// The data plane's Unix socket, for clients on this host (default:
    /// data.sock in the data directory).
    #[arg(long, env = "PAGODA_DATA_SOCKET")]
    data_socket: Option<PathBuf>,
    /// Data directory (default ./pagoda-data).
    #[arg(long, env = "PAGODA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// DRAM tier capacity: bytes, or with a unit (512MiB, 8GiB, 16G; KiB/K
    /// and the like are powers of 1024, KB/MB/GB powers of 1000).
    #[arg(long, env = "PAGODA_DRAM_BYTES", value_parser = pagoda_server::config::parse_bytes)]
    dram_bytes: Option<u64>,
    /// SSD tier capacity, as --dram-bytes.
    #[arg(long, env = "PAGODA_SSD_BYTES", value_parser = pagoda_server::config::parse_bytes)]
    ssd_bytes: Option<u64>,
    /// memory, async or sync.
    #[arg(long, env = "PAGODA_DURABILITY")]
    durability: Option<String>,
    /// reuse (the default), prefix-lru, lru or s3fifo.
    #[arg(long, env = "PAGODA_POLICY")]
    policy: Option<String>,
    /// Serve a non-loopback address without authentication.
    #[arg(long)]
    insecure: bool,
    /// File holding the node's admin token for the HTTP port: with tenants,
    /// `/metrics` and `/v1/stats` show every tenant to it (env
    /// PAGODA_ADMIN_TOKEN_FILE).
    #[arg(long, env = "PAGODA_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Connections open at once on the gRPC port (default 4096; lowered to
    /// fit `ulimit -n`).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections open at once on the HTTP port (default 256; lowered to
    /// fit `ulimit -n`).
    #[arg(long)]
    max_http_connections: Option<usize>,
    /// Join a cluster: `etcd://HOST:PORT[,HOST:PORT…]` (env PAGODA_CLUSTER).
    #[arg(long, env = "PAGODA_CLUSTER")]
    cluster: Option<String>,
    /// This node's id in the cluster (env PAGODA_NODE_ID; default: the host name).
    #[arg(long, env = "PAGODA_NODE_ID")]
    node_id: Option<String>,
    /// gRPC URL clients reach this node at (env PAGODA_ADVERTISE).
    #[arg(long, env = "PAGODA_ADVERTISE")]
    advertise: Option<String>,
    /// HOST:PORT others reach this node's HTTP stats at (env PAGODA_ADVERTISE_HTTP).
    #[arg(long, env = "PAGODA_ADVERTISE_HTTP")]
    advertise_http: Option<String>,
    /// The node's master key file (32 raw bytes or 64 hex digits; env
    /// PAGODA_MASTER_KEY_FILE): the SSD tier is encrypted at rest.
    #[arg(long, env = "PAGODA_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

fn effective(args: &ServeArgs) -> Result<ServerConfig, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            ServerConfig::from_toml(&text)
                .map_err(|error| format!("{}: {error}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    // Environment variables are read by clap with their flags (a flag wins
    // over its variable, both over the file), except the master key itself,
    // which has no flag so that it never shows in a process list.
    if let Ok(hex) = std::env::var("PAGODA_MASTER_KEY") {
        config.master_key_hex = Some(hex);
    }
    if let Some(addr) = args.grpc_addr {
        config.grpc_addr = addr;
    }
    if let Some(addr) = args.http_addr {
        config.http_addr = addr;
    }
    if let Some(addr) = args.data_addr {
        config.data_addr = Some(addr);
    }
    if let Some(path) = &args.data_socket {
        config.data_socket = Some(path.clone());
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Some(bytes) = args.dram_bytes {
        config.dram_bytes = bytes;
    }
    if let Some(bytes) = args.ssd_bytes {
        config.ssd_bytes = bytes;
    }
    if let Some(durability) = &args.durability {
        config.durability.clone_from(durability);
    }
    if let Some(policy) = &args.policy {
        config.policy.clone_from(policy);
    }
    config.insecure |= args.insecure;
    if let Some(path) = &args.master_key_file {
        config.master_key_file = Some(path.clone());
    }
    if let Some(path) = &args.admin_token_file {
        config.admin_token_file = Some(path.clone());
    }
    if let Some(count) = args.max_connections {
        config.limits.grpc_connections = count;
    }
    if let Some(count) = args.max_http_connections {
        config.limits.http_connections = count;
    }
    apply_cluster(args, &mut config)?;
    config.validate().map_err(|error| error.to_string())?;
    Ok(config)
}

/// The cluster flags over the file's `[cluster]`: `--cluster` makes (or
/// replaces) it, the other flags amend one the file has.
fn apply_cluster(args: &ServeArgs, config: &mut ServerConfig) -> Result<(), String> {
    if let Some(etcd) = &args.cluster {
        let node_id = match &args.node_id {
            Some(id) => id.clone(),
            None => std::fs::read_to_string("/etc/hostname")
                .map(|name| name.trim().to_owned())
                .map_err(|error| format!("--node-id not given and no host name: {error}"))?,
        };
        let previous = config.cluster.take();
        config.cluster = Some(pagoda_server::config::ClusterConfig {
            etcd: etcd.clone(),
            node_id,
            advertise: args
                .advertise
                .clone()
                .or_else(|| previous.as_ref().and_then(|c| c.advertise.clone())),
            advertise_http: args
                .advertise_http
                .clone()
                .or_else(|| previous.and_then(|c| c.advertise_http)),
        });
    } else if let Some(cluster) = &mut config.cluster {
        if let Some(id) = &args.node_id {
            cluster.node_id.clone_from(id);
        }
        if let Some(advertise) = &args.advertise {
            cluster.advertise = Some(advertise.clone());
        }
        if let Some(advertise) = &args.advertise_http {
            cluster.advertise_http = Some(advertise.clone());
        }
    }
    Ok(())
}

pub(crate) fn run(args: &ServeArgs) -> Result<(), String> {
    let config = effective(args)?;
    if args.print_config {
        print!("{}", config.to_toml_redacted());
        return Ok(());
    }
    // Before any thread starts: the connection limits fit this limit.
    let fd_limit = pagoda_server::listen::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("starting the runtime: {error}"))?;
    runtime.block_on(async move {
        let shutdown = crate::serving::stop_signal();
        tracing::info!(
            pid = std::process::id(),
            fd_limit,
            "stop with Ctrl-C or SIGTERM"
        );
        pagoda_server::serve_announcing(config, shutdown, announce)
            .await
            .map_err(|error| error.to_string())
    })
}

/// Prints an announcement on stdout in the format of the module docs.
fn announce(announcement: pagoda_server::Announcement) {
    let line = match announcement {
        pagoda_server::Announcement::Listening { grpc, http } => {
            format!("listening grpc={grpc} http={http}")
        }
        pagoda_server::Announcement::Ready => "ready".to_owned(),
        other => {
            tracing::debug!(?other, "an announcement without a stdout line");
            return;
        }
    };
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (`| head -1`) must not stop the node.
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Flags of `pagoda stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// HTTP address of the node.
    #[arg(long, default_value = pagoda_server::config::HTTP_ADDR_DEFAULT)]
    addr: SocketAddr,
    /// Print the raw JSON of `/v1/stats`.
    #[arg(long)]
    json: bool,
    /// Refresh every this many seconds until interrupted.
    #[arg(long)]
    watch: Option<f64>,
    /// Use HTTPS, trusting this PEM certificate authority.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Name the node's certificate must carry (with --tls-ca).
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// Token for a node with tenants: its admin token (every tenant) or a
    /// tenant's token (that tenant only) (env PAGODA_TOKEN).
    #[arg(long, env = "PAGODA_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// A rustls client for `pagoda stats --tls-ca`.
/// GETs `path` from a node's HTTP port (over TLS when `tls` names a CA file
/// and a server name, with `Authorization: Bearer` when given a token);
/// returns the body of a 200 answer.
pub(crate) fn http_get(
    addr: SocketAddr,
    path: &str,
    tls: Option<(&std::path::Path, &str)>,
    token: Option<&str>,
) -> Result<String, String> {
    let tls = tls
        .map(|(ca, name)| pagoda_client::http::Tls::from_ca_file(ca, name))
        .transpose()
        .map_err(|error| error.to_string())?;
    let addr = addr.to_string();
    let (status, body) = pagoda_client::http::Request::get(&addr, path)
        .token(token)
        .tls(tls.as_ref())
        .send_blocking()
        .map_err(|error| error.to_string())?;
    if status != 200 {
        return Err(format!("{addr}{path}: {status}: {body}"));
    }
    Ok(body)
}

fn percent(value: &serde_json::Value) -> String {
    format!("{:.1} %", value.as_f64().unwrap_or(0.0) * 100.0)
}

fn mib(value: &serde_json::Value) -> String {
    format!("{:.1} MiB", value.as_f64().unwrap_or(0.0) / 1_048_576.0)
}

fn table(stats: &serde_json::Value) -> String {
    let mut out = String::new();
    let overall = &stats["overall"];
    let scope = match stats["tenant"].as_str() {
        Some(tenant) => format!("tenant {tenant}"),
        None => format!("blocks {}", stats["blocks"]),
    };
    let _ = write!(
        out,
        "pagoda {}  uptime {} s  {scope}\n\n",
        stats["version"].as_str().unwrap_or("?"),
        stats["uptime_ms"].as_u64().unwrap_or(0) / 1000,
    );
    let _ = writeln!(
        out,
        "hit ratio  prefix {}  gets from DRAM {}  gets from SSD {}",
        percent(&overall["prefix_hit_ratio"]),
        percent(&overall["get_hit_ratio_dram"]),
        percent(&overall["get_hit_ratio_ssd"])
    );
    let _ = writeln!(
        out,
        "tiers      DRAM {} of {}  SSD {} of {}",
        mib(&stats["tiers"]["dram"]["used_bytes"]),
        mib(&stats["tiers"]["dram"]["capacity_bytes"]),
        mib(&stats["tiers"]["ssd"]["used_bytes"]),
        mib(&stats["tiers"]["ssd"]["capacity_bytes"])
    );
    let _ = write!(
        out,
        "evictions  DRAM {}  SSD {}   divergences {}   checksum failures {}\n\n",
        overall["evictions_dram"],
        overall["evictions_ssd"],
        overall["divergences"],
        overall["checksum_failures"]
    );
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>9} {:>9} {:>8} {:>12} {:>12} {:>8} {:>8}",
        "tenant", "prefix", "DRAM hit", "SSD hit", "misses", "DRAM", "SSD", "evict D", "evict S"
    );
    for tenant in stats["tenants"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>9} {:>9} {:>8} {:>12} {:>12} {:>8} {:>8}",
            tenant["name"].as_str().unwrap_or("?"),
            percent(&tenant["prefix_hit_ratio"]),
            tenant["hits_dram"].to_string(),
            tenant["hits_ssd"].to_string(),
            tenant["misses"].to_string(),
            mib(&tenant["dram_bytes"]),
            mib(&tenant["ssd_bytes"]),
            tenant["evictions_dram"].to_string(),
            tenant["evictions_ssd"].to_string()
        );
    }
    out
}

pub(crate) fn stats(args: &StatsArgs) -> Result<(), String> {
    let tls = args
        .tls_ca
        .as_deref()
        .map(|ca| (ca, args.tls_name.as_str()));
    loop {
        let body = http_get(args.addr, "/v1/stats", tls, args.token.as_deref())?;
        let stats: serde_json::Value =
            serde_json::from_str(&body).map_err(|error| format!("/v1/stats: {error}"))?;
        if args.json {
            println!("{stats}");
        } else {
            if args.watch.is_some() {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", table(&stats));
        }
        match args.watch {
            Some(seconds) if seconds > 0.0 => std::thread::sleep(Duration::from_secs_f64(seconds)),
            _ => return Ok(()),
        }
    }
}

/// Flags of `pagoda token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// A token to hash; without it a new random token is made.
    token: Option<String>,
}

/// Prints a token (new unless given) and the BLAKE3 hash the configuration
/// stores for it.
/// A new random API token (`pgd_` and 48 hex digits).
pub(crate) fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|error| format!("reading /dev/urandom: {error}"))?;
    Ok(format!("pgd_{}", pagoda_formats::hex::encode(&bytes)))
}

pub(crate) fn token(args: &TokenArgs) -> Result<(), String> {
    let token = match &args.token {
        Some(token) => token.clone(),
        None => new_token()?,
    };
    println!("token  {token}");
    println!("blake3 {}", pagoda_server::auth::hash_token(&token));
    Ok(())
}
