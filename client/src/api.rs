//! The gRPC client: [`Client`] and per-namespace [`NamespaceHandle`]s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::retry::Backoff;
use pagoda_formats::chain::{ChainHash, ChainHasher, ChainKey};
use pagoda_formats::limits;
use pagoda_formats::namespace::{Namespace, NamespaceId};
use pagoda_formats::proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
    /// The connection could not be made (the message names the cause:
    /// refused, TLS, not an HTTP/2 server, …).
    #[error("connecting: {}", causes(.0))]
    Connect(#[from] tonic::transport::Error),
    /// The bytes received do not match their checksum (never returned).
    #[error("received bytes fail their checksum: expected {expected:#010x}, got {got:#010x}")]
    Checksum {
        /// The checksum the server sent.
        expected: u32,
        /// The checksum of the bytes received.
        got: u32,
    },
    /// The server's answer breaks the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A local argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An exchange with an HTTP port failed (module `http`).
    #[error("{0}")]
    Http(String),
}

/// An error and its sources, as one line (tonic's transport error alone
/// says only "transport error").
fn causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    if line.contains("Connection refused") {
        line.push_str(" (is a node listening there? its gRPC port is 7420 unless configured)");
    }
    line
}

/// The URL of a node's gRPC port from what users write: `host:port`, or
/// `http://host:port` / `https://host:port` as they are.
pub fn endpoint_url(addr: &str) -> String {
    let addr = addr.trim();
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

impl Error {
    /// The gRPC status code, when the server answered one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a block is cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// DRAM.
    Dram,
    /// SSD.
    Ssd,
}

fn tier_of(code: i32) -> Option<Tier> {
    match pb::Tier::try_from(code) {
        Ok(pb::Tier::Dram) => Some(Tier::Dram),
        Ok(pb::Tier::Ssd) => Some(Tier::Ssd),
        _ => None,
    }
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PutOutcome {
    /// Stored.
    Stored,
    /// Already stored with the same bytes.
    Exists,
    /// Stored with other bytes: not stored.
    Diverged,
    /// The parent is not cached: not stored.
    Rejected,
}

/// A prefix lookup's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Leading blocks cached.
    pub matched: usize,
    /// Their tiers.
    pub tiers: Vec<Tier>,
    /// The chain hashes of the query (computed by the server from tokens).
    pub hashes: Vec<ChainHash>,
}

/// A connection to a node.
#[derive(Clone, Debug)]
pub struct Client {
    /// One data client per pooled connection, used in turn.
    stores: Arc<Vec<pb::store_client::StoreClient<Channel>>>,
    next: Arc<AtomicUsize>,
    admin: pb::admin_client::AdminClient<Channel>,
    token: Option<String>,
    /// The node's gRPC URL as given (the data plane is on the same host).
    url: Arc<str>,
}

impl Client {
    /// Connects to `addr` (`http://host:port`), authenticating with `token`.
    pub async fn connect(addr: &str, token: Option<&str>) -> Result<Client> {
        Client::connect_with(addr, token, None, 1).await
    }

    /// Connects with `connections` pooled connections (HTTP/2 channels);
    /// calls take them in turn, so large transfers do not queue behind each
    /// other on one connection.
    pub async fn connect_pool(
        addr: &str,
        token: Option<&str>,
        connections: usize,
    ) -> Result<Client> {
        Client::connect_with(addr, token, None, connections.max(1)).await
    }

    /// Connects over TLS (`https://host:port`), trusting the PEM
    /// certificate authority `ca_pem` and expecting the server's certificate
    /// to name `domain`.
    pub async fn connect_tls(
        addr: &str,
        token: Option<&str>,
        ca_pem: &[u8],
        domain: &str,
    ) -> Result<Client> {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
            .domain_name(domain);
        Client::connect_with(addr, token, Some(tls), 1).await
    }

    async fn connect_with(
        addr: &str,
        token: Option<&str>,
        tls: Option<tonic::transport::ClientTlsConfig>,
        connections: usize,
    ) -> Result<Client> {
        let url = endpoint_url(addr);
        let mut endpoint = Endpoint::from_shared(url.clone()).map_err(|error| {
            Error::InvalidArgument(format!(
                "{addr:?} is not a node address (host:port or http(s)://host:port): {}",
                causes(&error)
            ))
        })?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Megabyte blocks: windows far above HTTP/2's default 64 KiB.
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .max_frame_size(Some(1 << 20));
        let message = limits::MESSAGE_BYTES_MAX as usize;
        let mut stores = Vec::with_capacity(connections);
        let mut first = None;
        for _ in 0..connections {
            let channel = endpoint.connect().await?;
            first.get_or_insert_with(|| channel.clone());
            stores.push(
                pb::store_client::StoreClient::new(channel)
                    .max_decoding_message_size(message)
                    .max_encoding_message_size(message),
            );
        }
        let channel = first.ok_or_else(|| Error::InvalidArgument("no connection".into()))?;
        Ok(Client {
            stores: Arc::new(stores),
            next: Arc::new(AtomicUsize::new(0)),
            admin: pb::admin_client::AdminClient::new(channel),
            token: token.map(str::to_owned),
            url: url.into(),
        })
    }

    /// A request carrying the token.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// The node's gRPC URL (`http(s)://host:port`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The API token, when the client has one.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The raw `Store` client (for calls this crate does not wrap).
    pub fn store(&self) -> pb::store_client::StoreClient<Channel> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.stores.len();
        self.stores[turn].clone()
    }

    /// Creates a namespace (idempotent); needs the admin role.
    pub async fn create_namespace(&self, namespace: &Namespace) -> Result<NamespaceId> {
        let message = pb::CreateNamespaceRequest {
            namespace: Some(pb::Namespace::from(namespace)),
        };
        let answer = self
            .admin
            .clone()
            .create_namespace(self.request(message))
            .await?;
        let id = <[u8; 32]>::try_from(answer.into_inner().namespace_id.as_slice())
            .map_err(|_| Error::Protocol("namespace id is not 32 bytes".into()))?;
        Ok(NamespaceId(id))
    }

    /// Drops a namespace; needs the admin role.
    pub async fn drop_namespace(&self, id: &NamespaceId) -> Result<()> {
        let message = pb::DropNamespaceRequest {
            namespace_id: id.0.to_vec(),
        };
        self.admin
            .clone()
            .drop_namespace(self.request(message))
            .await?;
        Ok(())
    }

    /// Connects to `addr` and opens namespace `id` (what a service built on
    /// the store does first).
    pub async fn connect_namespace(
        addr: &str,
        token: Option<&str>,
        id: NamespaceId,
    ) -> std::result::Result<NamespaceHandle, String> {
        let client = Client::connect(addr, token)
            .await
            .map_err(|error| format!("store {addr}: {error}"))?;
        client
            .namespace(id)
            .await
            .map_err(|error| format!("namespace {id}: {error}"))
    }

    /// A handle on a namespace: fetches its chain key once, so token chains
    /// are hashed locally from then on.
    pub async fn namespace(&self, id: NamespaceId) -> Result<NamespaceHandle> {
        let message = pb::GetChainKeyRequest {
            namespace_id: id.0.to_vec(),
        };
        let answer = self
            .retry(|client| {
                let request = client.request(message.clone());
                let mut store = client.store();
                async move { store.get_chain_key(request).await }
            })
            .await?;
        let key = <[u8; 32]>::try_from(answer.chain_key.as_slice())
            .map_err(|_| Error::Protocol("chain key is not 32 bytes".into()))?;
        Ok(NamespaceHandle {
            client: self.clone(),
            id,
            chain_key: ChainKey(key),
            block_tokens: answer.block_tokens,
        })
    }

    /// Runs an idempotent call under the retry policy (`retry.rs`).
    async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(&Client) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let mut backoff = Backoff::new();
        loop {
            match call(self).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => match backoff.after(&status) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return Err(status.into()),
                },
            }
        }
    }
}

/// A namespace of the caller's tenant.
#[derive(Clone, Debug)]
pub struct NamespaceHandle {
    client: Client,
    id: NamespaceId,
    chain_key: ChainKey,
    block_tokens: u32,
}

fn concat(hashes: &[ChainHash]) -> Vec<u8> {
    hashes.iter().flat_map(|hash| hash.0).collect()
}

fn split_hashes(bytes: &[u8]) -> Vec<ChainHash> {
    bytes
        .chunks_exact(32)
        .map(|chunk| ChainHash(<[u8; 32]>::try_from(chunk).unwrap_or_default()))
        .collect()
}

impl NamespaceHandle {
    /// The namespace id.
    pub fn id(&self) -> &NamespaceId {
        &self.id
    }

    /// Tokens per block.
    pub fn block_tokens(&self) -> u32 {
        self.block_tokens
    }

    /// Chain hashes of the full blocks of `tokens`, computed locally.
    pub fn hash_tokens(&self, tokens: &[u32]) -> Result<Vec<ChainHash>> {
        pagoda_formats::chain::hash_tokens(&self.chain_key, self.block_tokens, tokens)
            .map(|hashes| hashes.hashes)
            .map_err(|error| Error::InvalidArgument(error.to_string()))
    }

    /// The hash of the block `tokens` after `parent`.
    pub fn block_hash(&self, parent: &ChainHash, tokens: &[u32]) -> Result<ChainHash> {
        let mut hasher = ChainHasher::resume(self.chain_key.clone(), self.block_tokens, *parent, 1)
            .map_err(|error| Error::InvalidArgument(error.to_string()))?;
        hasher
            .push_block(tokens, &[])
            .map_err(|error| Error::InvalidArgument(error.to_string()))
    }

    fn answer(lookup: &pb::LookupResponse) -> Lookup {
        Lookup {
            matched: lookup.matched_blocks as usize,
            tiers: lookup.tiers.iter().filter_map(|t| tier_of(*t)).collect(),
            hashes: split_hashes(&lookup.chain_hashes),
        }
    }

    /// Longest cached prefix of a token sequence (the server hashes it).
    pub async fn lookup_tokens(&self, tokens: &[u32]) -> Result<Lookup> {
        self.lookup(pb::lookup_request::Query::Tokens(pb::TokenChain {
            ids: tokens.to_vec(),
            extras: Vec::new(),
        }))
        .await
    }

    /// Longest cached prefix of a chain given by hashes (computed locally
    /// with [`NamespaceHandle::hash_tokens`]: a long prompt sends 32 bytes a
    /// block instead of 4 bytes a token).
    pub async fn lookup_hashes(&self, hashes: &[ChainHash]) -> Result<Lookup> {
        self.lookup(pb::lookup_request::Query::ChainHashes(concat(hashes)))
            .await
    }

    async fn lookup(&self, query: pb::lookup_request::Query) -> Result<Lookup> {
        let message = pb::LookupRequest {
            namespace_id: self.id.0.to_vec(),
            query: Some(query),
        };
        let answer = self
            .client
            .retry(|client| {
                let request = client.request(message.clone());
                let mut store = client.store();
                async move { store.lookup(request).await }
            })
            .await?;
        Ok(Self::answer(&answer))
    }

    /// Puts the block of `tokens` after `parent` (`ChainHash::ROOT` for a
    /// first block), streaming `payload` in 1 MiB chunks. Returns the
    /// block's chain hash and what the server did. Not retried (a put is
    /// not idempotent in its accounting; a resend of the same bytes is
    /// answered `Exists`).
    pub async fn put(
        &self,
        parent: &ChainHash,
        tokens: &[u32],
        payload: &[u8],
    ) -> Result<(ChainHash, PutOutcome)> {
        self.send_block(parent, tokens, None, payload).await
    }

    /// Stores `payload` under `chain` as given (admin role): how a block
    /// moves between the nodes of a cluster without its tokens.
    pub async fn import(
        &self,
        parent: &ChainHash,
        chain: &ChainHash,
        payload: &[u8],
    ) -> Result<PutOutcome> {
        self.send_block(parent, &[], Some(chain), payload)
            .await
            .map(|(_, outcome)| outcome)
    }

    /// Up to `limit` blocks held in DRAM on this node, as (chain hash,
    /// parent hash).
    pub async fn list_hot(&self, limit: u32) -> Result<Vec<(ChainHash, ChainHash)>> {
        let message = pb::ListHotRequest {
            namespace_id: self.id.0.to_vec(),
            limit,
        };
        let answer = self
            .client
            .retry(|client| {
                let request = client.request(message.clone());
                let mut store = client.store();
                async move { store.list_hot(request).await }
            })
            .await?;
        let chains = split_hashes(&answer.chain_hashes);
        let parents = split_hashes(&answer.parent_hashes);
        if chains.len() != parents.len() {
            return Err(Error::Protocol(
                "ListHot: hashes and parents differ in count".into(),
            ));
        }
        Ok(chains.into_iter().zip(parents).collect())
    }

    async fn send_block(
        &self,
        parent: &ChainHash,
        tokens: &[u32],
        chain: Option<&ChainHash>,
        payload: &[u8],
    ) -> Result<(ChainHash, PutOutcome)> {
        let header = pb::PutHeader {
            namespace_id: self.id.0.to_vec(),
            parent_hash: parent.0.to_vec(),
            tokens: tokens.to_vec(),
            extra: Vec::new(),
            payload_len: payload.len() as u64,
            payload_crc32c: crc32c::crc32c(payload),
            durability: pb::Durability::Default as i32,
            chain_hash: chain.map(|chain| chain.0.to_vec()).unwrap_or_default(),
        };
        let mut messages = vec![pb::PutRequest {
            part: Some(pb::put_request::Part::Header(header)),
        }];
        for chunk in payload.chunks(limits::CHUNK_BYTES_DEFAULT as usize) {
            messages.push(pb::PutRequest {
                part: Some(pb::put_request::Part::Chunk(bytes::Bytes::copy_from_slice(
                    chunk,
                ))),
            });
        }
        let request = self.client.request(tokio_stream::iter(messages));
        let answer = self.client.store().put(request).await?.into_inner();
        let result = answer
            .results
            .first()
            .ok_or_else(|| Error::Protocol("put answered no result".into()))?;
        let hash = <[u8; 32]>::try_from(result.chain_hash.as_slice())
            .map(ChainHash)
            .map_err(|_| Error::Protocol("chain hash is not 32 bytes".into()))?;
        let outcome = match pb::PutOutcome::try_from(result.outcome) {
            Ok(pb::PutOutcome::Stored) => PutOutcome::Stored,
            Ok(pb::PutOutcome::Exists) => PutOutcome::Exists,
            Ok(pb::PutOutcome::Diverged) => PutOutcome::Diverged,
            _ => PutOutcome::Rejected,
        };
        Ok((hash, outcome))
    }

    /// The bytes `offset..offset + length` of a block (`length` 0: to the
    /// end), verified against the server's range checksum; `None` when the
    /// block is not cached.
    pub async fn get_range(
        &self,
        hash: &ChainHash,
        offset: u64,
        length: u64,
    ) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let found = self.get_range_into(hash, offset, length, &mut out).await?;
        Ok(found.then_some(out))
    }

    /// [`NamespaceHandle::get_range`] into a caller's buffer (cleared first,
    /// its capacity reused); returns whether the block was cached.
    pub async fn get_range_into(
        &self,
        hash: &ChainHash,
        offset: u64,
        length: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        let message = pb::GetRequest {
            namespace_id: self.id.0.to_vec(),
            ranges: vec![pb::BlockRange {
                chain_hash: hash.0.to_vec(),
                offset,
                length,
            }],
            chunk_bytes: 0,
        };
        let mut backoff = Backoff::new();
        loop {
            out.clear();
            match self.get_once(message.clone(), out).await {
                Err(Error::Status(status)) => match backoff.after(&status) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return Err(Error::Status(status)),
                },
                other => return other,
            }
        }
    }

    async fn get_once(&self, message: pb::GetRequest, bytes: &mut Vec<u8>) -> Result<bool> {
        let mut stream = self
            .client
            .store()
            .get(self.client.request(message))
            .await?
            .into_inner();
        let mut start: Option<pb::GetBlockStart> = None;
        while let Some(part) = stream.message().await? {
            match part.part {
                Some(pb::get_response::Part::Start(header)) => {
                    bytes.reserve(usize::try_from(header.length).unwrap_or(0));
                    start = Some(header);
                }
                Some(pb::get_response::Part::Chunk(chunk)) => bytes.extend_from_slice(&chunk),
                Some(pb::get_response::Part::Missing(_)) => return Ok(false),
                None => return Err(Error::Protocol("an empty get message".into())),
            }
        }
        let start = start.ok_or_else(|| Error::Protocol("get answered nothing".into()))?;
        let got = crc32c::crc32c(bytes);
        if bytes.len() as u64 != start.length || got != start.range_crc32c {
            bytes.clear();
            return Err(Error::Checksum {
                expected: start.range_crc32c,
                got,
            });
        }
        Ok(true)
    }

    /// A whole block, verified; `None` when not cached.
    pub async fn get(&self, hash: &ChainHash) -> Result<Option<Vec<u8>>> {
        self.get_range(hash, 0, 0).await
    }

    /// The tier of each block (`None`: not cached).
    pub async fn exists(&self, hashes: &[ChainHash]) -> Result<Vec<Option<Tier>>> {
        let message = pb::ExistsRequest {
            namespace_id: self.id.0.to_vec(),
            chain_hashes: concat(hashes),
        };
        let answer = self
            .client
            .retry(|client| {
                let request = client.request(message.clone());
                let mut store = client.store();
                async move { store.exists(request).await }
            })
            .await?;
        Ok(answer.tiers.iter().map(|t| tier_of(*t)).collect())
    }

    /// Removes blocks (deepest first); returns how many went.
    pub async fn remove(&self, hashes: &[ChainHash]) -> Result<u32> {
        let message = pb::RemoveRequest {
            namespace_id: self.id.0.to_vec(),
            chain_hashes: concat(hashes),
        };
        let answer = self
            .client
            .store()
            .remove(self.client.request(message))
            .await?;
        Ok(answer.into_inner().removed_blocks)
    }

    /// Pins the cached leading blocks of `hashes` for `duration`; returns the
    /// lease id and the number pinned.
    pub async fn pin(&self, hashes: &[ChainHash], duration: Duration) -> Result<(Vec<u8>, u32)> {
        self.pin_kind(hashes, duration, false).await
    }

    /// The scheduler's pin-for-soon hint for a queued request's prompt: the
    /// blocks of `hashes` are evicted last until `duration` passes or
    /// [`Self::unpin`] (call it when the request is served); those in the
    /// node's DRAM at once, the others (on SSD, or still to be put by
    /// requests ahead in the queue) once they arrive. Nothing is held
    /// against eviction or the quota. Returns the lease id and the number
    /// of DRAM blocks hinted at once.
    pub async fn expect_soon(
        &self,
        hashes: &[ChainHash],
        duration: Duration,
    ) -> Result<(Vec<u8>, u32)> {
        self.pin_kind(hashes, duration, true).await
    }

    async fn pin_kind(
        &self,
        hashes: &[ChainHash],
        duration: Duration,
        soft: bool,
    ) -> Result<(Vec<u8>, u32)> {
        let message = pb::PinRequest {
            namespace_id: self.id.0.to_vec(),
            chain_hashes: concat(hashes),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            soft,
        };
        let answer = self
            .client
            .store()
            .pin(self.client.request(message))
            .await?
            .into_inner();
        Ok((answer.lease_id, answer.pinned_blocks))
    }

    /// Releases a lease early.
    pub async fn unpin(&self, lease: &[u8]) -> Result<bool> {
        let message = pb::UnpinRequest {
            lease_id: lease.to_vec(),
        };
        let answer = self
            .client
            .store()
            .unpin(self.client.request(message))
            .await?;
        Ok(answer.into_inner().released)
    }

    /// Copies blocks into DRAM on the serving node; returns (replicated,
    /// missing).
    pub async fn replicate_to_dram(&self, hashes: &[ChainHash]) -> Result<(u32, u32)> {
        let message = pb::ReplicateRequest {
            namespace_id: self.id.0.to_vec(),
            chain_hashes: concat(hashes),
            target: Some(pb::replicate_request::Target::Tier(pb::Tier::Dram as i32)),
        };
        let answer = self
            .client
            .store()
            .replicate(self.client.request(message))
            .await?;
        let answer = answer.into_inner();
        Ok((answer.replicated_blocks, answer.missing_blocks))
    }

    /// Events of blocks stored in this namespace (a router keeps its own
    /// prefix index from them).
    pub async fn watch(&self) -> Result<tonic::Streaming<pb::WatchEvent>> {
        let message = pb::WatchRequest {
            namespace_id: self.id.0.to_vec(),
        };
        Ok(self
            .client
            .store()
            .watch(self.client.request(message))
            .await?
            .into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_taken_as_users_write_them() {
        assert_eq!(endpoint_url("127.0.0.1:7420"), "http://127.0.0.1:7420");
        assert_eq!(endpoint_url(" node:7420 "), "http://node:7420");
        assert_eq!(endpoint_url("http://node:7420"), "http://node:7420");
        assert_eq!(endpoint_url("https://node:7420"), "https://node:7420");
    }

    #[tokio::test]
    async fn a_failed_connection_says_why() {
        // A port nobody listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for addr in [
            format!("127.0.0.1:{port}"),
            format!("http://127.0.0.1:{port}"),
        ] {
            let error = Client::connect(&addr, None)
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(error.contains("Connection refused"), "{addr}: {error}");
            assert!(error.contains("7420"), "{addr}: no hint in {error}");
        }
        let error = Client::connect("http://no spaces:1", None)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("not a node address"), "{error}");
    }
}
