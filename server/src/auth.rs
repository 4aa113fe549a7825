//! Authentication: API tokens map to (tenant, role).
//!
//! Tokens travel as `authorization: Bearer <token>`; the server keeps only
//! their BLAKE3 hashes (from the configuration) and looks the hash up, so a
//! leaked configuration does not leak tokens. With no tenants configured the
//! server runs single-tenant without authentication (tenant `default`, role
//! admin), which the configuration allows only on loopback addresses.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use pagoda_formats::chain::TenantSecret;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::config::{Role, ServerConfig};

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

/// Token hashes to callers.
#[derive(Debug)]
pub struct Auth {
    tokens: HashMap<[u8; 32], Caller>,
    open: Option<Caller>,
    /// Tenants configured here (with their secrets).
    tenants: std::collections::HashSet<String>,
}

/// The hex BLAKE3 hash of a token, as the configuration stores it.
pub fn hash_token(token: &str) -> String {
    pagoda_formats::hex::encode(blake3::hash(token.as_bytes()).as_bytes())
}

/// Decodes a hex tenant secret.
pub fn decode_secret(hex: &str) -> Result<TenantSecret, String> {
    let bytes = pagoda_formats::hex::decode(hex).map_err(|error| format!("secret_hex: {error}"))?;
    TenantSecret::new(bytes).map_err(|error| format!("secret_hex: {error}"))
}

impl Auth {
    /// The callers of a configuration and the engine's tenants. Without
    /// configured tenants, the `default` tenant's secret is read from (or
    /// created in) `data_dir/default-tenant.secret`.
    pub fn from_config(
        config: &ServerConfig,
    ) -> Result<(Auth, Vec<pagoda_engine::TenantConfig>), String> {
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
                    .ok_or_else(|| format!("tenant {:?}: bad token hash", tenant.name))?;
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
        Ok((
            Auth {
                tokens,
                open,
                tenants: names,
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
        let header = metadata
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("no authorization: send `Bearer <token>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
        let hash = blake3::hash(token.trim().as_bytes());
        if let Some(caller) = self.tokens.get(hash.as_bytes()) {
            return Ok(caller.clone());
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
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }
}

fn default_secret(data_dir: &Path) -> Result<TenantSecret, String> {
    let path = data_dir.join("default-tenant.secret");
    if let Ok(bytes) = std::fs::read(&path) {
        return TenantSecret::new(bytes).map_err(|error| format!("{}: {error}", path.display()));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|error| format!("{}: {error}", data_dir.display()))?;
    let mut bytes = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|error| format!("reading /dev/urandom: {error}"))?;
    std::fs::write(&path, &bytes).map_err(|error| format!("{}: {error}", path.display()))?;
    TenantSecret::new(bytes).map_err(|error| error.to_string())
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
}
