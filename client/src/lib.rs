//! `pagoda-client`: the async Rust client library for Pagoda.
//!
//! Connects with an API token, fetches a namespace's chain key once and hashes
//! token chains locally (`pagoda_formats::chain`), and speaks the gRPC API of
//! `formats/proto/pagoda/v1/`: lookup, streamed put and get, exists, pin,
//! replicate and watch, with retries for idempotent calls only. It depends on
//! `formats` alone, never on the engine or the server: every service, the
//! Conductor and the workers included, reaches the store through this API.
//!
//! With the `cluster` feature, `cluster::ClusterClient` routes the same calls
//! over a cluster whose membership it follows in etcd (rendezvous placement,
//! R replicas, failover to the next replica); without it the crate does not
//! depend on `pagoda-cluster` or etcd. [`KvNamespace`] is either, for
//! services that run on one node or a cluster alike.
//!
//! Bulk bytes: [`data::DataPlane`] moves batches of blocks between the node
//! and a memory region the caller owns, over shared memory on the same host
//! or TCP, picking the faster without the caller choosing.
//!
//! Transport: gRPC over TCP by default; the optional `rdma` feature (module
//! `rdma`) finds verbs devices for an RDMA data path and compiles out of the
//! default build.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pagoda_client::Error> {
//! use pagoda_client::Client;
//! use pagoda_formats::chain::ChainHash;
//! use pagoda_formats::namespace::NamespaceId;
//!
//! let client = Client::connect("http://127.0.0.1:7420", Some("pgd_token")).await?;
//! # let id = NamespaceId([0; 32]);
//! let ns = client.namespace(id).await?;
//! let tokens: Vec<u32> = (0..32).collect();
//! let hashes = ns.hash_tokens(&tokens)?; // hashed here, with the tenant's chain key
//! let (hash, _) = ns.put(&ChainHash::ROOT, &tokens[..16], b"KV bytes").await?;
//! assert_eq!(hash, hashes[0]);
//! assert_eq!(ns.lookup_hashes(&hashes).await?.matched, 1);
//! assert_eq!(ns.get(&hash).await?.as_deref(), Some(&b"KV bytes"[..]));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod api;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod data;
#[cfg(feature = "http")]
pub mod http;
mod kv;
mod retry;

pub use api::{Client, Error, Lookup, NamespaceHandle, PutOutcome, Result, Tier, endpoint_url};
pub use kv::KvNamespace;

#[cfg(feature = "rdma")]
pub mod rdma;
