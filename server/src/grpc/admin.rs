//! The `Admin` service: namespaces and stats.

use pagoda_formats::limits as format_limits;
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace, NamespaceId};
use pagoda_formats::proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{AdminService, NamespaceCall, blocking};
use crate::config::Role;

fn layout_of(layout: Option<pb::KvLayout>) -> Result<KvLayout, Status> {
    let layout = layout.ok_or_else(|| Status::invalid_argument("a namespace needs a layout"))?;
    let dtype = u8::try_from(layout.dtype)
        .ok()
        .and_then(|code| Dtype::from_code(code).ok())
        .ok_or_else(|| Status::invalid_argument("unknown dtype"))?;
    let kind = u8::try_from(layout.kind)
        .ok()
        .and_then(|code| KvKind::from_code(code).ok())
        .ok_or_else(|| Status::invalid_argument("unknown KV kind"))?;
    let small = |value: u32, what: &str| {
        u16::try_from(value)
            .map_err(|_| Status::invalid_argument(format!("{what} is out of range")))
    };
    Ok(KvLayout {
        dtype,
        kind,
        layer_count: layout.layer_count,
        kv_head_count: layout.kv_head_count,
        head_dim: layout.head_dim,
        block_tokens: layout.block_tokens,
        tp_rank: small(layout.tp_rank, "tp_rank")?,
        tp_size: small(layout.tp_size, "tp_size")?,
    })
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_namespace(
        &self,
        request: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::CreateNamespaceResponse>, Status> {
        let (caller, _permit) = self
            .shared
            .enter(&request, Role::Admin, "create_namespace")?;
        let message = request
            .into_inner()
            .namespace
            .ok_or_else(|| Status::invalid_argument("no namespace"))?;
        if message.tenant != caller.tenant {
            return Err(Status::permission_denied(
                "a namespace can only be created for the caller's own tenant",
            ));
        }
        let namespace = Namespace::new(
            message.tenant,
            message.model,
            message.revision,
            layout_of(message.layout)?,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let engine = self.shared.engine()?;
        let existed = engine.namespace(&namespace.id()).is_some();
        let encoding = namespace.encode();
        let id = blocking(move || engine.create_namespace(&namespace)).await?;
        if let Some(endpoints) = self.shared.cluster.get() {
            // Every node creates it from etcd (a node that is down now
            // creates it when it comes back).
            let published = async {
                let mut client = pagoda_cluster::connect(endpoints).await?;
                pagoda_cluster::publish_namespace(&mut client, &id.to_string(), &encoding).await
            };
            published.await.map_err(|error| {
                Status::unavailable(format!("publishing the namespace: {error}"))
            })?;
        }
        Ok(Response::new(pb::CreateNamespaceResponse {
            namespace_id: id.0.to_vec(),
            created: !existed,
        }))
    }

    async fn drop_namespace(
        &self,
        request: Request<pb::DropNamespaceRequest>,
    ) -> Result<Response<pb::DropNamespaceResponse>, Status> {
        let NamespaceCall {
            permit: _permit,
            engine,
            id,
            ..
        } = self
            .shared
            .enter_namespace(request, Role::Admin, "drop_namespace")?;
        blocking(move || engine.drop_namespace(&id)).await?;
        if let Some(endpoints) = self.shared.cluster.get() {
            let withdrawn = async {
                let mut client = pagoda_cluster::connect(endpoints).await?;
                pagoda_cluster::withdraw_namespace(&mut client, &id.to_string()).await
            };
            withdrawn.await.map_err(|error| {
                Status::unavailable(format!("withdrawing the namespace: {error}"))
            })?;
        }
        Ok(Response::new(pb::DropNamespaceResponse {
            dropped_blocks: 0,
        }))
    }

    async fn list_namespaces(
        &self,
        request: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Read, "list_namespaces")?;
        let request = request.into_inner();
        // Paging (SPEC §11): namespaces in id order; a token is the id of
        // the last namespace of the previous page.
        let after = match request.page_token.as_slice() {
            [] => None,
            token => Some(<[u8; 32]>::try_from(token).map(NamespaceId).map_err(|_| {
                Status::invalid_argument("page_token is not one this server handed out")
            })?),
        };
        let count = match request.page_size {
            0 => format_limits::NAMESPACES_PER_PAGE_MAX,
            size => size.min(format_limits::NAMESPACES_PER_PAGE_MAX),
        } as usize;
        let engine = self.shared.engine()?;
        let tenant = caller.tenant.clone();
        let (page, more) =
            blocking(move || Ok(engine.namespaces_page(&tenant, after.as_ref(), count))).await?;
        let next_page_token = match page.last() {
            Some(last) if more => last.id.0.to_vec(),
            _ => Vec::new(),
        };
        let namespaces = page
            .into_iter()
            .map(|info| pb::NamespaceInfo {
                namespace: Some(pb::Namespace::from(&info.namespace)),
                namespace_id: info.id.0.to_vec(),
                ..pb::NamespaceInfo::default()
            })
            .collect();
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces,
            next_page_token,
        }))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Read, "stats")?;
        let engine = self.shared.engine()?;
        let stats = blocking(move || Ok(engine.stats())).await?;
        let tenants = stats
            .tenants
            .iter()
            .filter(|tenant| tenant.name == caller.tenant)
            .map(|tenant| pb::TenantStats {
                tenant: tenant.name.clone(),
                lookup_blocks: tenant.counters.lookup_blocks,
                hit_blocks_dram: tenant.counters.hits_dram,
                hit_blocks_ssd: tenant.counters.hits_ssd,
                dram_bytes: tenant.dram_bytes,
                ssd_bytes: tenant.ssd_bytes,
                dram_quota_bytes: tenant.dram_quota,
                ssd_quota_bytes: tenant.ssd_quota,
            })
            .collect();
        let mine = stats
            .tenants
            .iter()
            .find(|tenant| tenant.name == caller.tenant);
        Ok(Response::new(pb::StatsResponse {
            tiers: vec![
                pb::TierStats {
                    tier: "dram".into(),
                    capacity_bytes: stats.dram_capacity,
                    used_bytes: stats.dram_used,
                    ..pb::TierStats::default()
                },
                pb::TierStats {
                    tier: "ssd".into(),
                    capacity_bytes: stats.ssd_capacity,
                    used_bytes: stats.ssd_used,
                    ..pb::TierStats::default()
                },
            ],
            tenants,
            divergences: mine.map_or(0, |t| t.counters.divergences),
            checksum_failures: mine.map_or(0, |t| t.counters.checksum_failures),
            uptime_ms: u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }
}
