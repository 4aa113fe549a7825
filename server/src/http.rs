//! The HTTP side: `/metrics` (Prometheus text), `/healthz` (the process is
//! up), `/readyz` (the engine finished its warm restart), `/v1/stats` (JSON)
//! and `/`, a status page that charts hit ratios by tier and tenant over the
//! last minutes from `/v1/stats` (inline script, nothing from the internet).
//!
//! Who sees what: on a node with tenants, `/metrics` and `/v1/stats` need
//! `Authorization: Bearer <token>` ([`Auth::http_view`]): the node's admin
//! token sees every tenant and the node's own figures, a tenant's token its
//! own tenant's series only, and no token or an unknown one gets 401 with a
//! body that says so. The status page itself is static (no figures) and
//! asks for a token when `/v1/stats` answers 401; it takes one from the
//! URL's fragment (`/#token=…`, which browsers never send to the server) or
//! a form, and keeps it in the tab's session storage. `/healthz` and
//! `/readyz` stay open: they tell nothing of any tenant. A node without
//! tenants serves everything to everyone, on loopback only.
//!
//! [`Auth::http_view`]: crate::auth::Auth::http_view

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use pagoda_engine::EngineStats;
use pagoda_engine::stats::{Counters, TenantStats};
use serde_json::{Value, json};

use crate::auth::View;
use crate::state::Shared;

/// The HTTP routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/stats", get(stats))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(engine) = shared.engine_if_ready() {
        // Still ready (reads and DRAM-only puts are served), but degraded.
        if engine.disk_full() {
            return (
                StatusCode::OK,
                "degraded: the SSD tier's disk is full; puts that need the SSD get \
                 RESOURCE_EXHAUSTED until space returns\n",
            )
                .into_response();
        }
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "warm restart in progress\n",
        )
            .into_response()
    }
}

/// The engine's stats, taken off the async runtime (a snapshot takes the
/// engine's state lock; a scrape must never stall a runtime thread).
async fn engine_stats(shared: &Arc<Shared>) -> Option<pagoda_engine::EngineStats> {
    let engine = shared.engine_if_ready()?;
    tokio::task::spawn_blocking(move || engine.stats())
        .await
        .ok()
}

/// What the caller may see, or why not (for [`unauthorized`]).
fn view_of(shared: &Shared, headers: &HeaderMap) -> Result<View, &'static str> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default());
    shared
        .auth
        .http_view(authorization, shared.membership.get())
}

/// The 401 answer to a request of `path` refused for `reason`.
fn unauthorized(path: &str, reason: &str) -> Response {
    let body = format!(
        "401 Unauthorized: {reason}\n\
         This node serves tenants, so {path} needs `Authorization: Bearer <token>`: \
         the node's admin token (admin_token_file) sees every tenant, a tenant's \
         token its own tenant. /healthz and /readyz need no token.\n"
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"pagoda\"")],
        body,
    )
        .into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let view = match view_of(&shared, &headers) {
        Ok(view) => view,
        Err(reason) => return unauthorized("/metrics", reason),
    };
    let stats = engine_stats(&shared).await;
    let body = shared.metrics.render_for(stats.as_ref(), &view);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn stats(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let view = match view_of(&shared, &headers) {
        Ok(view) => view,
        Err(reason) => return unauthorized("/v1/stats", reason),
    };
    let uptime_ms = shared.started.elapsed().as_millis();
    match engine_stats(&shared).await {
        Some(stats) => match &view {
            View::Node => axum::Json(stats_json(&stats, uptime_ms)).into_response(),
            View::Tenant(tenant) => {
                axum::Json(tenant_stats_json(&stats, uptime_ms, tenant)).into_response()
            }
        },
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false})),
        )
            .into_response(),
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A tenant's entry of `/v1/stats`.
fn tenant_json(tenant: &TenantStats) -> Value {
    let c = &tenant.counters;
    let gets = c.hits_dram + c.hits_ssd + c.misses;
    json!({
        "name": tenant.name,
        "prefix_hit_ratio": c.prefix_hit_ratio(),
        "get_hit_ratio_dram": ratio(c.hits_dram, gets),
        "get_hit_ratio_ssd": ratio(c.hits_ssd, gets),
        "lookups": c.lookups,
        "lookup_tokens": c.lookup_tokens,
        "lookup_hit_tokens": c.lookup_hit_tokens,
        "hits_dram": c.hits_dram,
        "hits_ssd": c.hits_ssd,
        "misses": c.misses,
        "puts": c.puts,
        "evictions_dram": c.evictions_dram,
        "evictions_ssd": c.evictions_ssd,
        "divergences": c.divergences,
        "checksum_failures": c.checksum_failures,
        "tag_failures": c.tag_failures,
        "dram_bytes": tenant.dram_bytes,
        "ssd_bytes": tenant.ssd_bytes,
        "pinned_bytes": tenant.pinned_bytes,
        "leases": tenant.leases,
        "soft_leases": tenant.soft_leases,
        "dram_blocks": tenant.dram_blocks,
        "ssd_blocks": tenant.ssd_blocks,
    })
}

/// The `overall` object of `/v1/stats`: counters summed over what the
/// caller sees.
fn overall_json(total: &Counters) -> Value {
    let gets = total.hits_dram + total.hits_ssd + total.misses;
    json!({
        "prefix_hit_ratio": total.prefix_hit_ratio(),
        "get_hit_ratio_dram": ratio(total.hits_dram, gets),
        "get_hit_ratio_ssd": ratio(total.hits_ssd, gets),
        "lookups": total.lookups,
        "hits_dram": total.hits_dram,
        "hits_ssd": total.hits_ssd,
        "misses": total.misses,
        "puts": total.puts,
        "evictions_dram": total.evictions_dram,
        "evictions_ssd": total.evictions_ssd,
        "divergences": total.divergences,
        "checksum_failures": total.checksum_failures,
        "tag_failures": total.tag_failures,
    })
}

/// The JSON of `/v1/stats` for the node's admin (also what `pagoda stats
/// --json` prints): every tenant, and the node's tiers and blocks.
pub fn stats_json(stats: &EngineStats, uptime_ms: u128) -> Value {
    json!({
        "ready": true,
        "scope": "node",
        "uptime_ms": u64::try_from(uptime_ms).unwrap_or(u64::MAX),
        "version": env!("CARGO_PKG_VERSION"),
        "overall": overall_json(&stats.total()),
        "tiers": {
            "dram": {"capacity_bytes": stats.dram_capacity, "used_bytes": stats.dram_used},
            "ssd": {"capacity_bytes": stats.ssd_capacity, "used_bytes": stats.ssd_used},
        },
        "blocks": stats.blocks,
        "open_ms": stats.open_ms,
        "tenants": stats.tenants.iter().map(tenant_json).collect::<Vec<_>>(),
    })
}

/// The JSON of `/v1/stats` for a token of `tenant`: that tenant's counters
/// as `overall` and its only entry of `tenants`; `tiers` gives its own bytes
/// and, as capacity, its quota within the node's capacity. Nothing summed
/// over other tenants (the node's used bytes and block count) is shown.
pub fn tenant_stats_json(stats: &EngineStats, uptime_ms: u128, tenant: &str) -> Value {
    let own = stats.tenants.iter().find(|entry| entry.name == tenant);
    let counters = own.map(|entry| entry.counters).unwrap_or_default();
    let tier = |capacity: u64, quota: Option<u64>, used: Option<u64>| {
        json!({
            "capacity_bytes": quota.map_or(capacity, |quota| quota.min(capacity)),
            "used_bytes": used.unwrap_or(0),
        })
    };
    json!({
        "ready": true,
        "scope": "tenant",
        "tenant": tenant,
        "uptime_ms": u64::try_from(uptime_ms).unwrap_or(u64::MAX),
        "version": env!("CARGO_PKG_VERSION"),
        "overall": overall_json(&counters),
        "tiers": {
            "dram": tier(stats.dram_capacity, own.map(|o| o.dram_quota), own.map(|o| o.dram_bytes)),
            "ssd": tier(stats.ssd_capacity, own.map(|o| o.ssd_quota), own.map(|o| o.ssd_bytes)),
        },
        "tenants": own.map(tenant_json).into_iter().collect::<Vec<_>>(),
    })
}

async fn status_page() -> Html<&'static str> {
    Html(STATUS_PAGE)
}

const STATUS_PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pagoda</title>
<style>
body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}th:first-child,td:first-child{text-align:left}
#chart{border:1px solid #ccc;background:#fff}
</style></head><body>
<h1>Pagoda <small id="version"></small> <small id="scope"></small></h1>
<form id="auth" hidden><p>This node serves tenants: its numbers need a token (the node's
admin token, or a tenant's own). <input id="token" type="password" autocomplete="off"
aria-label="token"> <button>Show</button> <span id="auth-error"></span></p></form>
<p>Uptime <span id="uptime">–</span> s · blocks <span id="blocks">–</span> ·
prefix hit ratio <b id="prefix-hit-ratio">–</b></p>
<h2>Hit ratio, last minutes</h2>
<svg id="chart" width="720" height="240" role="img" aria-label="hit ratio over time"></svg>
<div id="legend"></div>
<h2>Tiers</h2>
<table id="tiers"><tr><th>tier</th><th>used</th><th>capacity</th></tr></table>
<h2>Tenants</h2>
<table id="tenants"><tr><th>tenant</th><th>prefix hit</th><th>DRAM hits</th><th>SSD hits</th><th>misses</th>
<th>DRAM bytes</th><th>SSD bytes</th><th>evictions DRAM</th><th>evictions SSD</th><th>divergences</th><th>checksum failures</th></tr></table>
<script>
const history = [];
const colors = ["#1f77b4","#2ca02c","#ff7f0e","#d62728","#9467bd","#8c564b"];
function fmt(bytes){const u=["B","KiB","MiB","GiB","TiB"];let i=0;while(bytes>=1024&&i<4){bytes/=1024;i++;}return bytes.toFixed(1)+" "+u[i];}
function pct(x){return (100*x).toFixed(1)+" %";}
function row(table, cells){const tr=document.createElement("tr");for(const c of cells){const td=document.createElement("td");td.textContent=c;tr.appendChild(td);}table.appendChild(tr);}
function draw(){
  const svg=document.getElementById("chart");while(svg.firstChild)svg.removeChild(svg.firstChild);
  const series={};
  for(const point of history){for(const [name,value] of Object.entries(point.values)){(series[name]=series[name]||[]).push([point.t,value]);}}
  const t0=history.length?history[0].t:0, t1=history.length?history[history.length-1].t:1;
  const x=t=>40+(t-t0)/Math.max(1,t1-t0)*660, y=v=>220-v*200;
  const ns="http://www.w3.org/2000/svg";
  for(const v of [0,0.5,1]){const l=document.createElementNS(ns,"text");l.setAttribute("x",4);l.setAttribute("y",y(v)+4);l.textContent=(v*100)+"%";svg.appendChild(l);}
  let i=0;const legend=document.getElementById("legend");legend.textContent="";
  for(const [name,points] of Object.entries(series)){
    const p=document.createElementNS(ns,"polyline");p.setAttribute("fill","none");p.setAttribute("stroke",colors[i%colors.length]);p.setAttribute("stroke-width","2");
    p.setAttribute("points",points.map(([t,v])=>x(t)+","+y(v)).join(" "));p.setAttribute("data-series",name);svg.appendChild(p);
    const s=document.createElement("span");s.style.color=colors[i%colors.length];s.textContent=" ■ "+name+" "+pct(points[points.length-1][1]);legend.appendChild(s);i++;
  }
}
function token(){
  const found=/(?:^#|&)token=([^&]*)/.exec(location.hash);
  if(found){sessionStorage.setItem("pagoda-token",decodeURIComponent(found[1]));window.history.replaceState(null,"",location.pathname);}
  return sessionStorage.getItem("pagoda-token");
}
document.getElementById("auth").addEventListener("submit",event=>{
  event.preventDefault();sessionStorage.setItem("pagoda-token",document.getElementById("token").value);tick();
});
async function tick(){
  try{
    const t=token();
    const response=await fetch("/v1/stats",{headers:t?{"Authorization":"Bearer "+t}:{}});
    const auth=document.getElementById("auth");
    if(response.status===401){auth.hidden=false;document.getElementById("auth-error").textContent=t?"(token refused)":"";return;}
    auth.hidden=true;
    const stats=await response.json();
    if(!stats.ready){document.getElementById("uptime").textContent="starting";return;}
    document.getElementById("version").textContent=stats.version;
    document.getElementById("scope").textContent=stats.scope==="tenant"?"tenant "+stats.tenant:"";
    document.getElementById("uptime").textContent=(stats.uptime_ms/1000).toFixed(0);
    document.getElementById("blocks").textContent=stats.blocks??"–";
    document.getElementById("prefix-hit-ratio").textContent=pct(stats.overall.prefix_hit_ratio);
    const values={"overall prefix":stats.overall.prefix_hit_ratio,"DRAM gets":stats.overall.get_hit_ratio_dram,"SSD gets":stats.overall.get_hit_ratio_ssd};
    for(const t of stats.tenants){values["tenant "+t.name]=t.prefix_hit_ratio;}
    history.push({t:Date.now(),values});while(history.length>150)history.shift();
    const tiers=document.getElementById("tiers");while(tiers.rows.length>1)tiers.deleteRow(1);
    for(const [name,tier] of Object.entries(stats.tiers)){row(tiers,[name,fmt(tier.used_bytes),fmt(tier.capacity_bytes)]);}
    const tenants=document.getElementById("tenants");while(tenants.rows.length>1)tenants.deleteRow(1);
    for(const t of stats.tenants){row(tenants,[t.name,pct(t.prefix_hit_ratio),t.hits_dram,t.hits_ssd,t.misses,fmt(t.dram_bytes),fmt(t.ssd_bytes),t.evictions_dram,t.evictions_ssd,t.divergences,t.checksum_failures]);}
    draw();
  }catch(e){document.getElementById("uptime").textContent="unreachable";console.error(e);}
}
tick();setInterval(tick,2000);
</script></body></html>
"##;
