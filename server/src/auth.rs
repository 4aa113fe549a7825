//! Authentication: API tokens map to (tenant, role).
//!
//! Tokens travel as `authorization: Bearer <token>`; the server keeps only
//! their BLAKE3 hashes (from the configuration) and looks the hash up, so a
//! leaked configuration does not leak tokens. With no tenants configured the
//! server runs single-tenant without authentication (tenant `default`, role
//! admin), which the configuration allows only on loopback addresses.
//!
//! The HTTP port ([`Auth::http_view`]) takes the same bearer tokens: with
//! tenants configured, the node's admin token (`admin_token_file`) sees
//! every tenant, a tenant's token (any role) sees its own tenant only, and
//! no token sees nothing with tenant data. The admin token is compared as a
//! BLAKE3 hash in constant time (`blake3::Hash`'s `==`); a tenant token is
//! looked up by its hash, which tells a timing observer nothing usable about
//! the token.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use pagoda_formats::chain::TenantSecret;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::config::{Role, ServerConfig};
use crate::error::Error;

/// The tenant of a server without configured tenants.
pub const DEFAULT_TENANT: &str = "default";

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Tenant name.
    pub tenant: String,
    /// Role.
    pub role: Role,
}

impl Caller {
    /// Fails with `PERMISSION_DENIED` unless the caller has `role` or more.
    pub fn require(&self, role: Role) -> Result<(), Status> {
        if self.role >= role {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "this call needs the {role:?} role; the token has {:?}",
                self.role
            )))
        }
    }
}

/// What an HTTP caller may see of the node's stats and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum View {
    /// Every tenant and the node's own figures: the admin token, or any
    /// caller of a node without tenants.
    Node,
    /// One tenant's own figures only: a token of that tenant.
    Tenant(String),
}

impl View {
    /// Whether this view shows `tenant`'s figures.
    pub fn sees(&self, tenant: &str) -> bool {
        match self {
            View::Node => true,
            View::Tenant(own) => own == tenant,
        }
    }
}

/// Shortest admin token accepted: 128 bits as hex (`pagoda token` makes 52
/// characters).
pub const ADMIN_TOKEN_CHARS_MIN: usize = 32;

/// Token hashes to callers.
#[derive(Debug)]
pub struct Auth {
    tokens: HashMap<[u8; 32], Caller>,
    open: Option<Caller>,
    /// Tenants configured here (with their secrets).
    tenants: std::collections::HashSet<String>,
    /// BLAKE3 of the node's admin token for the HTTP port.
    admin: Option<blake3::Hash>,
}

/// The hex BLAKE3 hash of a token, as the configuration stores it.
pub fn hash_token(token: &str) -> String {
    pagoda_formats::hex::encode(blake3::hash(token.as_bytes()).as_bytes())
}

/// Decodes a hex tenant secret.
pub fn decode_secret(hex: &str) -> crate::Result<TenantSecret> {
    let invalid = |error: &dyn std::fmt::Display| Error::Config(format!("secret_hex: {error}"));
    let bytes = pagoda_formats::hex::decode(hex).map_err(|error| invalid(&error))?;
    TenantSecret::new(bytes).map_err(|error| invalid(&error))
}

impl Auth {
    /// The callers of a configuration and the engine's tenants. Without
    /// configured tenants, the `default` tenant's secret is read from (or
    /// created in) `data_dir/default-tenant.secret`.
    pub fn from_config(
        config: &ServerConfig,
    ) -> crate::Result<(Auth, Vec<pagoda_engine::TenantConfig>)> {
        let mut tokens = HashMap::new();
        let mut tenants = Vec::new();
        for tenant in &config.tenants {
            let secret = decode_secret(&tenant.secret_hex)?;
            let mut engine_tenant = pagoda_engine::TenantConfig::new(tenant.name.clone(), secret);
            engine_tenant.dram_quota = tenant.dram_quota.unwrap_or(u64::MAX);
            engine_tenant.ssd_quota = tenant.ssd_quota.unwrap_or(u64::MAX);
            tenants.push(engine_tenant);
            for token in &tenant.tokens {
                let hash = pagoda_formats::hex::decode(&token.blake3)
                    .ok()
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .ok_or_else(|| {
                        Error::Config(format!("tenant {:?}: bad token hash", tenant.name))
                    })?;
                tokens.insert(
                    hash,
                    Caller {
                        tenant: tenant.name.clone(),
                        role: token.role,
                    },
                );
            }
        }
        let open = if config.tenants.is_empty() {
            let secret = default_secret(&config.data_dir)?;
            tenants.push(pagoda_engine::TenantConfig::new(DEFAULT_TENANT, secret));
            Some(Caller {
                tenant: DEFAULT_TENANT.into(),
                role: Role::Admin,
            })
        } else {
            None
        };
        let names = config
            .tenants
            .iter()
            .map(|tenant| tenant.name.clone())
            .collect();
        let admin = match &config.admin_token_file {
            Some(path) => Some(read_admin_token(path)?),
            None => None,
        };
        Ok((
            Auth {
                tokens,
                open,
                tenants: names,
                admin,
            },
            tenants,
        ))
    }

    /// Whether calls are authenticated.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The caller of a request, from its `authorization` header: a token of
    /// the configuration, else one granted cluster-wide in etcd (`cluster`)
    /// for a tenant configured here.
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        cluster: Option<&pagoda_cluster::Membership>,
    ) -> Result<Caller, Status> {
        if let Some(open) = &self.open {
            return Ok(open.clone());
        }
        let header = metadata.get("authorization").map(|value| value.to_str());
        let hash = bearer_hash(header).map_err(Status::unauthenticated)?;
        self.tenant_caller(&hash, cluster)
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// The caller of a data-plane connection, from the token its `HELLO`
    /// carried (the same tokens as gRPC's bearer tokens).
    pub fn authenticate_token(
        &self,
        token: &[u8],
        cluster: Option<&pagoda_cluster::Membership>,
    ) -> Result<Caller, Status> {
        if let Some(open) = &self.open {
            return Ok(open.clone());
        }
        if token.is_empty() {
            return Err(Status::unauthenticated(
                "no token: HELLO must carry an API token",
            ));
        }
        let token = std::str::from_utf8(token)
            .map_err(|_| Status::unauthenticated("a token is UTF-8 text"))?;
        self.tenant_caller(&blake3::hash(token.trim().as_bytes()), cluster)
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// What an HTTP request with this `authorization` header may see (see
    /// the module docs); the error is the body of a 401 answer.
    pub fn http_view(
        &self,
        authorization: Option<&str>,
        cluster: Option<&pagoda_cluster::Membership>,
    ) -> Result<View, &'static str> {
        if self.open.is_some() {
            return Ok(View::Node);
        }
        let hash = bearer_hash(authorization.map(Ok::<_, ()>))?;
        // Constant time: `blake3::Hash`'s equality does not stop at the
        // first differing byte.
        if self.admin.is_some_and(|admin| admin == hash) {
            return Ok(View::Node);
        }
        self.tenant_caller(&hash, cluster)
            .map(|caller| View::Tenant(caller.tenant))
            .ok_or("unknown token")
    }

    /// The tenant and role of a token's hash: from the configuration, else
    /// granted cluster-wide in etcd for a tenant configured here.
    fn tenant_caller(
        &self,
        hash: &blake3::Hash,
        cluster: Option<&pagoda_cluster::Membership>,
    ) -> Option<Caller> {
        if let Some(caller) = self.tokens.get(hash.as_bytes()) {
            return Some(caller.clone());
        }
        cluster
            .and_then(|membership| membership.token(&hash.to_hex()))
            .and_then(|grant| {
                let role = match grant.role.as_str() {
                    "read" => Role::Read,
                    "write" => Role::Write,
                    "admin" => Role::Admin,
                    _ => return None,
                };
                let tenant = grant.tenant;
                self.tenants
                    .contains(&tenant)
                    .then_some(Caller { tenant, role })
            })
    }
}

/// The BLAKE3 hash of the token of an `authorization: Bearer <token>`
/// header (`Err` inside: a value that is not text); the error says what is
/// wrong, for the caller.
fn bearer_hash<E>(header: Option<Result<&str, E>>) -> Result<blake3::Hash, &'static str> {
    let header = header.ok_or("no authorization: send `Authorization: Bearer <token>`")?;
    let token = header
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or("authorization must be `Bearer <token>`")?;
    Ok(blake3::hash(token.trim().as_bytes()))
}

/// The hash of the admin token in `path` (the token alone, surrounding
/// white space ignored).
fn read_admin_token(path: &Path) -> crate::Result<blake3::Hash> {
    let text = std::fs::read_to_string(path).map_err(Error::io(format_args!(
        "admin_token_file {}",
        path.display()
    )))?;
    let token = text.trim();
    if token.len() < ADMIN_TOKEN_CHARS_MIN || token.chars().any(char::is_whitespace) {
        return Err(Error::Config(format!(
            "admin_token_file {}: the token must be one word of at least \
             {ADMIN_TOKEN_CHARS_MIN} characters (`pagoda token` makes one)",
            path.display()
        )));
    }
    Ok(blake3::hash(token.as_bytes()))
}

fn default_secret(data_dir: &Path) -> crate::Result<TenantSecret> {
    let path = data_dir.join("default-tenant.secret");
    if let Ok(bytes) = std::fs::read(&path) {
        return TenantSecret::new(bytes)
            .map_err(|error| Error::Config(format!("{}: {error}", path.display())));
    }
    std::fs::create_dir_all(data_dir).map_err(Error::io(data_dir.display()))?;
    let mut bytes = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(Error::io("reading /dev/urandom"))?;
    std::fs::write(&path, &bytes).map_err(Error::io(path.display()))?;
    TenantSecret::new(bytes).map_err(|error| Error::Config(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TenantConfig, TokenConfig};

    #[test]
    fn tokens_map_to_their_tenant_and_role() {
        let mut config = ServerConfig::default();
        config.tenants.push(TenantConfig {
            name: "acme".into(),
            secret_hex: "11".repeat(16),
            dram_quota: Some(1 << 20),
            ssd_quota: None,
            tokens: vec![TokenConfig {
                blake3: hash_token("reader-token"),
                role: Role::Read,
            }],
        });
        let (auth, tenants) = Auth::from_config(&config).unwrap();
        assert_eq!(tenants.len(), 1);
        assert_eq!(tenants[0].dram_quota, 1 << 20);
        let mut metadata = MetadataMap::new();
        assert_eq!(
            auth.authenticate(&metadata, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        metadata.insert("authorization", "Bearer reader-token".parse().unwrap());
        let caller = auth.authenticate(&metadata, None).unwrap();
        assert_eq!(caller.tenant, "acme");
        assert_eq!(
            caller.require(Role::Write).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        metadata.insert("authorization", "Bearer other".parse().unwrap());
        assert_eq!(
            auth.authenticate(&metadata, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn the_http_port_shows_the_admin_everything_and_a_tenant_its_own() {
        let dir = std::env::temp_dir().join(format!("pagoda-auth-view-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let admin_file = dir.join("admin.token");
        let admin = "pgd_0123456789abcdef0123456789abcdef";
        std::fs::write(&admin_file, format!("{admin}\n")).unwrap();
        let mut config = ServerConfig {
            admin_token_file: Some(admin_file.clone()),
            ..ServerConfig::default()
        };
        config.tenants.push(TenantConfig {
            name: "acme".into(),
            secret_hex: "11".repeat(16),
            dram_quota: None,
            ssd_quota: None,
            tokens: vec![TokenConfig {
                blake3: hash_token("reader-token"),
                role: Role::Read,
            }],
        });
        let (auth, _) = Auth::from_config(&config).unwrap();
        let bearer = |token: &str| format!("Bearer {token}");
        assert_eq!(auth.http_view(Some(&bearer(admin)), None), Ok(View::Node));
        assert_eq!(
            auth.http_view(Some(&bearer("reader-token")), None),
            Ok(View::Tenant("acme".into()))
        );
        assert!(View::Tenant("acme".into()).sees("acme"));
        assert!(!View::Tenant("acme".into()).sees("globex"));
        assert_eq!(
            auth.http_view(Some(&bearer("other")), None),
            Err("unknown token")
        );
        assert!(auth.http_view(None, None).is_err());
        assert!(
            auth.http_view(Some(admin), None).is_err(),
            "not a bearer header"
        );
        // Without tenants everything is open, as before.
        let (open, _) = Auth::from_config(&ServerConfig {
            data_dir: dir.join("data"),
            ..ServerConfig::default()
        })
        .unwrap();
        assert_eq!(open.http_view(None, None), Ok(View::Node));
        // A short admin token is refused at start.
        std::fs::write(&admin_file, "admin\n").unwrap();
        let error = Auth::from_config(&config).unwrap_err().to_string();
        assert!(error.contains("at least 32 characters"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
