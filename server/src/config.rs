//! Server configuration: a TOML file (`--config`), overridden by `PAGODA_*`
//! environment variables and by flags (the `pagoda serve` command applies
//! those), with defaults for a single loopback node.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Requests in flight per tenant.
    pub requests_per_tenant: usize,
    /// Payload bytes in flight (puts and gets) per tenant.
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_tenant: 1024,
            inflight_bytes_per_tenant: 1 << 30,
            requests_per_connection: 256,
            message_bytes: pagoda_formats::limits::MESSAGE_BYTES_MAX as usize,
            payload_bytes: pagoda_formats::limits::PAYLOAD_BYTES_DEFAULT_MAX,
            chunk_bytes: pagoda_formats::limits::CHUNK_BYTES_MAX,
            retry_after_ms: 50,
        }
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
    /// Data directory.
    pub data_dir: PathBuf,
    /// DRAM tier capacity in bytes.
    pub dram_bytes: u64,
    /// SSD tier capacity in bytes.
    pub ssd_bytes: u64,
    /// DRAM page size.
    pub page_bytes: usize,
    /// `memory`, `async` or `sync`: what every put gets, and the most a put
    /// may ask for (the API's `DURABILITY_MEMORY`, `DURABILITY_BUFFERED`
    /// and `DURABILITY_SYNC`, `formats/SPEC.md` §11).
    pub durability: String,
    /// `prefix-lru`, `lru` or `s3fifo`.
    pub policy: String,
    /// Allow binding a non-loopback address without tenants (no auth).
    pub insecure: bool,
    /// Serve gRPC and HTTP over TLS.
    pub tls: Option<TlsConfig>,
    /// Tenants and their tokens. None: single-tenant, no auth, loopback only.
    pub tenants: Vec<TenantConfig>,
    /// Limits.
    pub limits: Limits,
    /// Cluster mode (none: a single node).
    pub cluster: Option<ClusterConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_addr: GRPC_ADDR_DEFAULT.parse().expect("a valid address"),
            http_addr: HTTP_ADDR_DEFAULT.parse().expect("a valid address"),
            data_dir: PathBuf::from("./pagoda-data"),
            dram_bytes: 1 << 30,
            ssd_bytes: 16 << 30,
            page_bytes: 64 << 10,
            durability: "async".into(),
            policy: "prefix-lru".into(),
            insecure: false,
            tls: None,
            tenants: Vec::new(),
            limits: Limits::default(),
            cluster: None,
        }
    }
}

impl ServerConfig {
    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|error| error.to_string())
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

    /// Applies `PAGODA_*` environment variables (`PAGODA_GRPC_ADDR`,
    /// `PAGODA_HTTP_ADDR`, `PAGODA_DATA_DIR`, `PAGODA_DRAM_BYTES`,
    /// `PAGODA_SSD_BYTES`, `PAGODA_DURABILITY`, `PAGODA_POLICY`).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        let parse = |name: &str, value: &str| format!("{name}={value:?} does not parse");
        if let Some(value) = get("PAGODA_GRPC_ADDR") {
            self.grpc_addr = value
                .parse()
                .map_err(|_| parse("PAGODA_GRPC_ADDR", &value))?;
        }
        if let Some(value) = get("PAGODA_HTTP_ADDR") {
            self.http_addr = value
                .parse()
                .map_err(|_| parse("PAGODA_HTTP_ADDR", &value))?;
        }
        if let Some(value) = get("PAGODA_DATA_DIR") {
            self.data_dir = value.into();
        }
        if let Some(value) = get("PAGODA_DRAM_BYTES") {
            self.dram_bytes = value
                .parse()
                .map_err(|_| parse("PAGODA_DRAM_BYTES", &value))?;
        }
        if let Some(value) = get("PAGODA_SSD_BYTES") {
            self.ssd_bytes = value
                .parse()
                .map_err(|_| parse("PAGODA_SSD_BYTES", &value))?;
        }
        if let Some(value) = get("PAGODA_DURABILITY") {
            self.durability = value;
        }
        if let Some(value) = get("PAGODA_POLICY") {
            self.policy = value;
        }
        Ok(())
    }

    /// Checks the configuration: addresses, auth on non-loopback binds,
    /// names, secrets and token hashes.
    pub fn validate(&self) -> Result<(), String> {
        if pagoda_engine::Durability::parse(&self.durability).is_none() {
            return Err(format!(
                "durability {:?} is not one of memory, async, sync",
                self.durability
            ));
        }
        if pagoda_engine::PolicyKind::parse(&self.policy).is_none() {
            return Err(format!(
                "policy {:?} is not one of prefix-lru, lru, s3fifo",
                self.policy
            ));
        }
        let public = !self.grpc_addr.ip().is_loopback() || !self.http_addr.ip().is_loopback();
        if self.tenants.is_empty() && public && !self.insecure {
            return Err(
                "refusing to serve without authentication on a non-loopback address: \
                 configure tenants with tokens, or pass --insecure"
                    .into(),
            );
        }
        if let Some(cluster) = &self.cluster {
            pagoda_cluster::parse_endpoints(&cluster.etcd).map_err(|error| error.to_string())?;
            if cluster.node_id.is_empty()
                || cluster.node_id.len() > 128
                || cluster.node_id.contains('/')
            {
                return Err("cluster: node_id must be 1 to 128 bytes without '/'".into());
            }
            if self.tenants.is_empty() {
                return Err(
                    "cluster mode needs [[tenants]] (the same secrets on every node, so \
                     every node derives the same chain keys)"
                        .into(),
                );
            }
        }
        if let Some(tls) = &self.tls {
            for path in [&tls.cert, &tls.key] {
                if !path.is_file() {
                    return Err(format!("tls: {} is not a file", path.display()));
                }
            }
        }
        for tenant in &self.tenants {
            crate::auth::decode_secret(&tenant.secret_hex)
                .map_err(|error| format!("tenant {:?}: {error}", tenant.name))?;
            for token in &tenant.tokens {
                if pagoda_formats::hex::decode(&token.blake3).map(|b| b.len()) != Ok(32) {
                    return Err(format!(
                        "tenant {:?}: a token hash must be 64 hex digits (BLAKE3)",
                        tenant.name
                    ));
                }
            }
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
        assert!(config.validate().unwrap_err().contains("--insecure"));
        config.insecure = true;
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_env_are_errors() {
        assert!(ServerConfig::from_toml("grpc_adr = \"x\"").is_err());
        let mut config = ServerConfig::default();
        let env = |name: &str| (name == "PAGODA_DRAM_BYTES").then(|| "lots".to_string());
        assert!(config.apply_env(env).is_err());
        let env = |name: &str| (name == "PAGODA_DRAM_BYTES").then(|| "4096".to_string());
        config.apply_env(env).unwrap();
        assert_eq!(config.dram_bytes, 4096);
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
