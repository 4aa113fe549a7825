//! Server configuration: a TOML file (`--config`), overridden by `PAGODA_*`
//! environment variables and by flags (the `pagoda serve` command applies
//! those), with defaults for a single loopback node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Parses a size as users write it: a plain byte count (`4096`), or a
/// number with a unit, case-insensitive, spaces allowed between them:
/// `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB` are powers of 1024 (as in
/// `dd`, Docker or `-Xmx`); `KB`, `MB`, `GB`, `TB` are powers of 1000 (SI);
/// `B` is bytes. Fractions are allowed with a unit (`1.5GiB`) and rounded
/// down to a byte.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = number.replace('_', "");
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, K, M, G, T, KB, MB, GB or TB)"
            ));
        }
    };
    let invalid = || format!("{text:?} is not a size (e.g. 4096, 512MiB, 16G)");
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(scale)
            .ok_or_else(|| format!("{text:?} is over 2^64 bytes"));
    }
    let value: f64 = number.parse().map_err(|_| invalid())?;
    if scale == 1 || !value.is_finite() {
        return Err(invalid());
    }
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a fraction of a unit, checked against the range first"
    )]
    let bytes = {
        let bytes = value * scale as f64;
        if bytes >= u64::MAX as f64 {
            return Err(format!("{text:?} is over 2^64 bytes"));
        }
        bytes as u64
    };
    Ok(bytes)
}

/// Serde for a size field: an integer, or a string [`parse_bytes`] reads.
mod size {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        match Size::deserialize(deserializer)? {
            Size::Bytes(bytes) => Ok(bytes),
            Size::Text(text) => super::parse_bytes(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// Default gRPC address.
pub const GRPC_ADDR_DEFAULT: &str = "127.0.0.1:7420";
/// Default HTTP address.
pub const HTTP_ADDR_DEFAULT: &str = "127.0.0.1:7421";

/// Named limits of the front end. Over a limit of shared capacity (requests
/// or bytes in flight) the caller gets `RESOURCE_EXHAUSTED` with a retry
/// hint; over a limit on one request's size (payload, chunk, message) it
/// gets `INVALID_ARGUMENT`, since retrying cannot help (`formats/SPEC.md`
/// §12).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Requests in flight per tenant (unary calls, Put and Get streams;
    /// Watch streams have their own limit).
    pub requests_per_tenant: usize,
    /// Watch streams open per tenant. They do not count against
    /// `requests_per_tenant`: a watcher lives for hours, a request for
    /// milliseconds.
    pub watch_streams_per_tenant: usize,
    /// Put payload bytes received and not yet stored, per tenant. Bytes are
    /// counted as they arrive, not as a header declares them, so a stalled
    /// stream holds only what it sent.
    pub inflight_bytes_per_tenant: u64,
    /// Concurrent requests per connection.
    pub requests_per_connection: usize,
    /// Largest gRPC message.
    pub message_bytes: usize,
    /// Largest payload of one block.
    pub payload_bytes: u32,
    /// Largest Put chunk.
    pub chunk_bytes: u32,
    /// Milliseconds a client is told to wait before retrying.
    pub retry_after_ms: u64,
    /// Milliseconds a stream may sit idle: a Put that sends no message, or
    /// a Get or Watch whose client takes no message while one waits, for
    /// this long ends with `DEADLINE_EXCEEDED` and gives back its budget.
    pub stream_idle_timeout_ms: u64,
    /// Milliseconds a Put or Get stream may last in all; past it the stream
    /// ends with `DEADLINE_EXCEEDED`.
    pub stream_deadline_ms: u64,
    /// Milliseconds a Watch stream may last; past it the stream ends
    /// cleanly (`OK`) and the client subscribes again.
    pub watch_deadline_ms: u64,
    /// Milliseconds shutdown waits for Put and Get streams to finish before
    /// it cancels them (`UNAVAILABLE`); Watch streams end at once, cleanly.
    pub shutdown_grace_ms: u64,
    /// Connections open at once on the gRPC port; a connection beyond it is
    /// closed as soon as it is accepted. The process's file descriptor limit
    /// may lower it at start (`crate::listen`).
    pub grpc_connections: usize,
    /// Connections open at once on the HTTP port, counted apart from gRPC's
    /// so that a flood of one port never takes the other's descriptors.
    pub http_connections: usize,
}

/// Default of [`Limits::stream_idle_timeout_ms`]: 30 s, far longer than a
/// healthy client pauses between two chunks of a block.
pub const STREAM_IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default of [`Limits::stream_deadline_ms`]: 10 minutes, enough for a
/// full Put stream (4096 blocks) at a few hundred MB/s.
pub const STREAM_DEADLINE_MS_DEFAULT: u64 = 600_000;
/// Default of [`Limits::watch_deadline_ms`]: one hour.
pub const WATCH_DEADLINE_MS_DEFAULT: u64 = 3_600_000;
/// Default of [`Limits::shutdown_grace_ms`]: 10 s, within the 30 s a
/// container orchestrator waits between SIGTERM and SIGKILL.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 10_000;
/// Largest [`Limits::shutdown_grace_ms`]: 10 minutes.
pub const SHUTDOWN_GRACE_MS_MAX: u64 = 600_000;
/// Default of [`Limits::grpc_connections`]: clients keep a few long-lived
/// HTTP/2 connections each, so 4096 serves hundreds of workers.
pub const GRPC_CONNECTIONS_DEFAULT: usize = 4096;
/// Default of [`Limits::http_connections`]: scrapers, probes and browsers.
pub const HTTP_CONNECTIONS_DEFAULT: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_tenant: 1024,
            watch_streams_per_tenant: 256,
            inflight_bytes_per_tenant: 1 << 30,
            requests_per_connection: 256,
            message_bytes: pagoda_formats::limits::MESSAGE_BYTES_MAX as usize,
            payload_bytes: pagoda_formats::limits::PAYLOAD_BYTES_DEFAULT_MAX,
            chunk_bytes: pagoda_formats::limits::CHUNK_BYTES_MAX,
            retry_after_ms: 50,
            stream_idle_timeout_ms: STREAM_IDLE_TIMEOUT_MS_DEFAULT,
            stream_deadline_ms: STREAM_DEADLINE_MS_DEFAULT,
            watch_deadline_ms: WATCH_DEADLINE_MS_DEFAULT,
            shutdown_grace_ms: SHUTDOWN_GRACE_MS_DEFAULT,
            grpc_connections: GRPC_CONNECTIONS_DEFAULT,
            http_connections: HTTP_CONNECTIONS_DEFAULT,
        }
    }
}

impl Limits {
    /// Checks the stream limits: a zero count, timeout or deadline would
    /// refuse or end every stream, and a grace period is bounded so that
    /// shutdown always ends.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            (
                "watch_streams_per_tenant",
                self.watch_streams_per_tenant as u64,
            ),
            ("stream_idle_timeout_ms", self.stream_idle_timeout_ms),
            ("stream_deadline_ms", self.stream_deadline_ms),
            ("watch_deadline_ms", self.watch_deadline_ms),
            ("grpc_connections", self.grpc_connections as u64),
            ("http_connections", self.http_connections as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(Error::Config(format!("limits.{name} must be at least 1")));
        }
        if self.shutdown_grace_ms > SHUTDOWN_GRACE_MS_MAX {
            return Err(Error::Config(format!(
                "limits.shutdown_grace_ms {} is over the limit of {SHUTDOWN_GRACE_MS_MAX}",
                self.shutdown_grace_ms
            )));
        }
        Ok(())
    }

    /// [`Limits::stream_idle_timeout_ms`] as a duration.
    pub fn stream_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.stream_idle_timeout_ms)
    }

    /// [`Limits::stream_deadline_ms`] as a duration.
    pub fn stream_deadline(&self) -> Duration {
        Duration::from_millis(self.stream_deadline_ms)
    }

    /// [`Limits::watch_deadline_ms`] as a duration.
    pub fn watch_deadline(&self) -> Duration {
        Duration::from_millis(self.watch_deadline_ms)
    }

    /// [`Limits::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// A role an API token grants within its tenant.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Lookup, get, exists, watch, stats.
    Read,
    /// Read, plus put, remove, pin, replicate.
    Write,
    /// Write, plus namespace creation and drop.
    Admin,
}

/// An API token, stored hashed: `blake3` is the hex BLAKE3 hash of the token
/// (`pagoda token hash` prints it).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Hex BLAKE3 of the token.
    pub blake3: String,
    /// What the token may do.
    pub role: Role,
}

/// TLS for both listeners (rustls): a certificate chain and its key, PEM.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Cluster mode: membership and settings in etcd.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `etcd://host:port[,host:port…]`.
    pub etcd: String,
    /// This node's id: unique, stable across restarts (a pod name).
    pub node_id: String,
    /// gRPC URL clients reach this node at (default: `http://GRPC_ADDR`).
    #[serde(default)]
    pub advertise: Option<String>,
    /// HTTP address others reach this node's stats at (default: HTTP_ADDR).
    #[serde(default)]
    pub advertise_http: Option<String>,
}

/// A tenant.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant name.
    pub name: String,
    /// The tenant's chain-key secret, hex (16..=256 bytes). Keep the file private.
    pub secret_hex: String,
    /// DRAM quota in bytes (default: none).
    #[serde(default)]
    pub dram_quota: Option<u64>,
    /// SSD quota in bytes (default: none).
    #[serde(default)]
    pub ssd_quota: Option<u64>,
    /// API tokens of the tenant.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// The server's configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (metrics, health, stats, status page).
    pub http_addr: SocketAddr,
    /// The data plane's TCP listen address (`formats/SPEC.md` §17). None:
    /// gRPC's address with its port + 2 (port 0 when gRPC's is 0).
    pub data_addr: Option<SocketAddr>,
    /// The data plane's Unix socket, for clients on this host (shared
    /// memory). None: `data.sock` in the data directory.
    pub data_socket: Option<PathBuf>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// DRAM tier capacity in bytes (a number, or a string with a unit:
    /// `"8GiB"`, see [`parse_bytes`]).
    #[serde(deserialize_with = "size::deserialize")]
    pub dram_bytes: u64,
    /// SSD tier capacity in bytes (as `dram_bytes`).
    #[serde(deserialize_with = "size::deserialize")]
    pub ssd_bytes: u64,
    /// DRAM page size.
    pub page_bytes: usize,
    /// `memory`, `async` or `sync`: what every put gets, and the most a put
    /// may ask for (the API's `DURABILITY_MEMORY`, `DURABILITY_BUFFERED`
    /// and `DURABILITY_SYNC`, `formats/SPEC.md` §11).
    pub durability: String,
    /// `reuse` (the default), `prefix-lru` (the default before it), `lru` or
    /// `s3fifo`.
    pub policy: String,
    /// Allow binding a non-loopback address without tenants (no auth).
    pub insecure: bool,
    /// A file holding the node's admin token for the HTTP port (the token
    /// itself, one line; only its BLAKE3 hash is kept in memory). With
    /// tenants, `/metrics` and `/v1/stats` answer every tenant's numbers to
    /// this token and a tenant's own numbers to that tenant's tokens. It
    /// grants nothing on the gRPC port.
    pub admin_token_file: Option<PathBuf>,
    /// Serve gRPC and HTTP over TLS.
    pub tls: Option<TlsConfig>,
    /// Tenants and their tokens. None: single-tenant, no auth, loopback only.
    pub tenants: Vec<TenantConfig>,
    /// Limits.
    pub limits: Limits,
    /// Cluster mode (none: a single node).
    pub cluster: Option<ClusterConfig>,
    /// A file holding the node's master key (32 raw bytes or 64 hex
    /// digits): with one, the SSD tier is encrypted at rest
    /// (`formats/SPEC.md` §16.1). Keep it off the data directory's volume.
    pub master_key_file: Option<PathBuf>,
    /// The master key as 64 hex digits, from `PAGODA_MASTER_KEY` only
    /// (never read from or printed to a configuration file); the file
    /// wins when both are given.
    #[serde(skip)]
    pub master_key_hex: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_addr: GRPC_ADDR_DEFAULT.parse().expect("a valid address"),
            http_addr: HTTP_ADDR_DEFAULT.parse().expect("a valid address"),
            data_addr: None,
            data_socket: None,
            data_dir: PathBuf::from("./pagoda-data"),
            dram_bytes: 1 << 30,
            ssd_bytes: 16 << 30,
            page_bytes: 64 << 10,
            durability: "async".into(),
            policy: "reuse".into(),
            insecure: false,
            admin_token_file: None,
            tls: None,
            tenants: Vec::new(),
            limits: Limits::default(),
            cluster: None,
            master_key_file: None,
            master_key_hex: None,
        }
    }
}

impl ServerConfig {
    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|error| Error::Config(error.to_string()))
    }

    /// The configuration as TOML (for `--print-config`; secrets are shown
    /// as `<redacted>`).
    pub fn to_toml_redacted(&self) -> String {
        let mut shown = self.clone();
        for tenant in &mut shown.tenants {
            tenant.secret_hex = "<redacted>".into();
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|error| format!("# cannot print: {error}"))
    }

    /// The master key of encryption at rest, read from `master_key_file`
    /// (or `PAGODA_MASTER_KEY`); `None` when neither is given (encryption
    /// off).
    pub fn master_key(&self) -> Result<Option<pagoda_engine::MasterKey>> {
        if let Some(path) = &self.master_key_file {
            return Ok(Some(pagoda_engine::MasterKey::from_file(path)?));
        }
        self.master_key_hex
            .as_deref()
            .map(|hex| {
                pagoda_engine::MasterKey::parse(hex.as_bytes())
                    .map_err(|error| Error::Config(format!("PAGODA_MASTER_KEY: {error}")))
            })
            .transpose()
    }

    /// The data plane's TCP address: `data_addr`, or gRPC's with its port
    /// + 2 (0 stays 0: a test's node picks free ports).
    pub fn data_tcp_addr(&self) -> SocketAddr {
        self.data_addr.unwrap_or_else(|| {
            let mut addr = self.grpc_addr;
            if addr.port() != 0 {
                addr.set_port(addr.port().saturating_add(2));
            }
            addr
        })
    }

    /// The data plane's Unix socket path: `data_socket`, or `data.sock` in
    /// the data directory.
    pub fn data_socket_path(&self) -> PathBuf {
        self.data_socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("data.sock"))
    }

    /// Checks the configuration: addresses, auth on non-loopback binds,
    /// names, secrets and token hashes.
    pub fn validate(&self) -> Result<()> {
        self.limits.validate()?;
        if pagoda_engine::Durability::parse(&self.durability).is_none() {
            return Err(Error::Config(format!(
                "durability {:?} is not one of memory, async, sync",
                self.durability
            )));
        }
        if pagoda_engine::PolicyKind::parse(&self.policy).is_none() {
            return Err(Error::Config(format!(
                "policy {:?} is not one of reuse, prefix-lru, lru, s3fifo",
                self.policy
            )));
        }
        let public = !self.grpc_addr.ip().is_loopback()
            || !self.http_addr.ip().is_loopback()
            || !self.data_tcp_addr().ip().is_loopback();
        if self.tenants.is_empty() && public && !self.insecure {
            return Err(Error::Config(
                "refusing to serve without authentication on a non-loopback address: \
                 configure tenants with tokens, or pass --insecure"
                    .into(),
            ));
        }
        self.validate_http_port()?;
        if let Some(cluster) = &self.cluster {
            pagoda_cluster::parse_endpoints(&cluster.etcd)
                .map_err(|error| Error::Config(error.to_string()))?;
            if cluster.node_id.is_empty()
                || cluster.node_id.len() > 128
                || cluster.node_id.contains('/')
            {
                return Err(Error::Config(
                    "cluster: node_id must be 1 to 128 bytes without '/'".into(),
                ));
            }
            if self.tenants.is_empty() {
                return Err(Error::Config(
                    "cluster mode needs [[tenants]] (the same secrets on every node, so \
                     every node derives the same chain keys)"
                        .into(),
                ));
            }
        }
        if let Some(tls) = &self.tls {
            for path in [&tls.cert, &tls.key] {
                if !path.is_file() {
                    return Err(Error::Config(format!(
                        "tls: {} is not a file",
                        path.display()
                    )));
                }
            }
        }
        for tenant in &self.tenants {
            crate::auth::decode_secret(&tenant.secret_hex)
                .map_err(|error| Error::Config(format!("tenant {:?}: {error}", tenant.name)))?;
            for token in &tenant.tokens {
                if pagoda_formats::hex::decode(&token.blake3).map(|b| b.len()) != Ok(32) {
                    return Err(Error::Config(format!(
                        "tenant {:?}: a token hash must be 64 hex digits (BLAKE3)",
                        tenant.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The HTTP port's own rule: with tenants, a non-loopback HTTP address
    /// needs an admin token or TLS, so that nobody opens the port to the
    /// network without having thought about who reads it (every endpoint
    /// with tenant data needs a token either way).
    fn validate_http_port(&self) -> Result<()> {
        if let Some(path) = &self.admin_token_file
            && !path.is_file()
        {
            return Err(Error::Config(format!(
                "admin_token_file: {} is not a file",
                path.display()
            )));
        }
        let exposed = !self.tenants.is_empty() && !self.http_addr.ip().is_loopback();
        if exposed && self.admin_token_file.is_none() && self.tls.is_none() {
            return Err(Error::Config(format!(
                "refusing to serve HTTP on {} with tenants but neither an admin token nor \
                 TLS: set admin_token_file (--admin-token-file) for the operator's scraper, \
                 configure [tls], or bind http_addr to loopback",
                self.http_addr
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_and_valid() {
        let config = ServerConfig::default();
        assert!(config.grpc_addr.ip().is_loopback());
        config.validate().unwrap();
    }

    #[test]
    fn a_public_bind_without_tenants_is_refused_unless_insecure() {
        let mut config = ServerConfig::from_toml("grpc_addr = \"0.0.0.0:7420\"").unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--insecure")
        );
        config.insecure = true;
        config.validate().unwrap();
    }

    #[test]
    fn a_public_http_port_with_tenants_needs_an_admin_token_or_tls() {
        let mut config = ServerConfig::from_toml(
            "http_addr = \"0.0.0.0:7421\"\n[[tenants]]\nname = \"acme\"\nsecret_hex = \"11111111111111111111111111111111\"",
        )
        .unwrap();
        let refused = config.validate().unwrap_err().to_string();
        assert!(refused.contains("--admin-token-file"), "{refused}");
        // A loopback HTTP port needs neither.
        config.http_addr = HTTP_ADDR_DEFAULT.parse().unwrap();
        config.validate().unwrap();
        // An admin token file that is not there is named.
        config.http_addr = "0.0.0.0:7421".parse().unwrap();
        config.admin_token_file = Some("/nonexistent/admin.token".into());
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/admin.token")
        );
    }

    #[test]
    fn connection_limits_of_zero_are_refused() {
        for key in ["grpc_connections", "http_connections"] {
            let config = ServerConfig::from_toml(&format!("[limits]\n{key} = 0")).unwrap();
            assert!(
                config.validate().unwrap_err().to_string().contains(key),
                "{key}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(ServerConfig::from_toml("grpc_adr = \"x\"").is_err());
    }

    #[test]
    fn sizes_take_the_units_users_write() {
        for (text, bytes) in [
            ("4096", 4096),
            ("1_000", 1000),
            ("512MiB", 512 << 20),
            ("512 mib", 512 << 20),
            ("16G", 16 << 30),
            ("1GiB", 1 << 30),
            ("1GB", 1_000_000_000),
            ("2k", 2048),
            ("1.5GiB", 3 << 29),
            ("7b", 7),
            ("1TiB", 1 << 40),
        ] {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
        }
        for bad in [
            "",
            "lots",
            "1.5",
            "12 parsecs",
            "-1G",
            "99999999999T",
            "nanGiB",
            "1e400G",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} parsed");
        }
        let config = ServerConfig::from_toml("dram_bytes = \"8GiB\"\nssd_bytes = 1024").unwrap();
        assert_eq!((config.dram_bytes, config.ssd_bytes), (8 << 30, 1024));
        let error = ServerConfig::from_toml("dram_bytes = \"8 parsecs\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("parsecs"), "{error}");
    }

    #[test]
    fn stream_limits_of_zero_are_refused_and_the_grace_is_bounded() {
        // A zero idle timeout or deadline would end every stream at once,
        // and an unbounded grace period would let shutdown hang again.
        for key in [
            "watch_streams_per_tenant",
            "stream_idle_timeout_ms",
            "stream_deadline_ms",
            "watch_deadline_ms",
        ] {
            let config = ServerConfig::from_toml(&format!("[limits]\n{key} = 0")).unwrap();
            assert!(
                config.validate().unwrap_err().to_string().contains(key),
                "{key}"
            );
        }
        let config = ServerConfig::from_toml("[limits]\nshutdown_grace_ms = 0").unwrap();
        config.validate().unwrap();
        let text = format!(
            "[limits]\nshutdown_grace_ms = {}",
            SHUTDOWN_GRACE_MS_MAX + 1
        );
        let config = ServerConfig::from_toml(&text).unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("shutdown_grace_ms")
        );
    }

    #[test]
    fn printed_config_hides_secrets_and_parses_back() {
        let mut config = ServerConfig::default();
        config.tenants.push(TenantConfig {
            name: "acme".into(),
            secret_hex: "00".repeat(16),
            dram_quota: None,
            ssd_quota: None,
            tokens: Vec::new(),
        });
        let text = config.to_toml_redacted();
        assert!(!text.contains(&"00".repeat(16)));
        assert!(text.contains("<redacted>"));
        let mut back = ServerConfig::from_toml(&text).unwrap();
        back.tenants[0].secret_hex = "00".repeat(16);
        assert_eq!(back, config);
    }
}
