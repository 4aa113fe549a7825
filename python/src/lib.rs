//! `pagoda._native`: the Python bindings of the Rust client, a thin layer
//! under the `pagoda` package (`python/pagoda/`), which adds the asyncio and
//! submit/poll forms, the buffer-protocol conveniences and the docs.
//!
//! Every call releases the GIL while it runs (on the client's own Tokio
//! runtime), so Python threads calling Pagoda run in parallel. Blocks move
//! through the data plane (`formats/SPEC.md` §19): shared memory on the
//! same host, else TCP, chosen by the Rust client.
//!
//! Two ways to move bytes:
//!
//! - a [`Buffer`] is registered memory (a sealed memfd, mapped here and, on
//!   the same host, by the node): gets land in it and puts leave from it
//!   with no copy in this process;
//! - any other memory is given as `(address, length)` by the Python layer
//!   (from `ctypes.from_buffer`, which holds the buffer's export for the
//!   call) and staged through a client-owned registered buffer: one extra
//!   `memcpy`.
//!
//! Errors are `pagoda.PagodaError(code, name, message)` with the gRPC status
//! code of the failure (`DATA_LOSS` for bytes failing their checksum,
//! `UNAVAILABLE` for a node that cannot be reached).

#![expect(
    clippy::needless_pass_by_value,
    reason = "pyo3 extracts a list argument as an owned Vec"
)]

use std::sync::Arc;
use std::time::Duration;

use pagoda_client::data::{DataPlane, GetInto, Got, Put, PutFrom, RegionId, Transport};
use pagoda_client::{Client as RustClient, NamespaceHandle, PutOutcome, Tier};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::{KvLayout, Namespace as NamespaceDesc, NamespaceId};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pyo3::create_exception!(
    _native,
    PagodaError,
    PyException,
    "A failed Pagoda call: args are (code, name, message), code the gRPC status code."
);

/// gRPC status names by code.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn pagoda_error(code: i32, message: String) -> PyErr {
    let name = usize::try_from(code)
        .ok()
        .and_then(|index| CODE_NAMES.get(index))
        .copied()
        .unwrap_or("UNKNOWN");
    PagodaError::new_err((code, name, message))
}

fn to_py(error: pagoda_client::Error) -> PyErr {
    let code = match &error {
        pagoda_client::Error::Status(status) => i32::from(status.code()),
        pagoda_client::Error::Connect(_) => 14,
        pagoda_client::Error::Checksum { .. } => 15,
        pagoda_client::Error::Protocol(_) => 13,
        pagoda_client::Error::InvalidArgument(_) => 3,
        _ => 2,
    };
    let message = match error {
        pagoda_client::Error::Status(status) => status.message().to_owned(),
        other => other.to_string(),
    };
    pagoda_error(code, message)
}

fn invalid(message: impl Into<String>) -> PyErr {
    pagoda_error(3, message.into())
}

fn hash_of(bytes: &[u8]) -> PyResult<ChainHash> {
    <[u8; 32]>::try_from(bytes)
        .map(ChainHash)
        .map_err(|_| invalid(format!("a chain hash is 32 bytes, not {}", bytes.len())))
}

fn hashes_of(list: &[Vec<u8>]) -> PyResult<Vec<ChainHash>> {
    list.iter().map(|bytes| hash_of(bytes)).collect()
}

fn parent_of(parent: Option<&[u8]>) -> PyResult<ChainHash> {
    parent.map_or(Ok(ChainHash::ROOT), hash_of)
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Dram => "dram",
        Tier::Ssd => "ssd",
    }
}

fn outcome_name(outcome: PutOutcome) -> &'static str {
    match outcome {
        PutOutcome::Stored => "stored",
        PutOutcome::Exists => "exists",
        PutOutcome::Diverged => "diverged",
        PutOutcome::Rejected => "parent_missing",
    }
}

fn deadline(timeout: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(timeout)
        .map_err(|_| invalid(format!("timeout {timeout} is not a duration in seconds")))
}

/// What one client shares with its namespaces and buffers.
struct Shared {
    runtime: tokio::runtime::Runtime,
    client: RustClient,
    /// The data plane, replaced by a new connection once it broke.
    plane: tokio::sync::Mutex<Option<Arc<DataPlane>>>,
    /// The transport asked for (None: the fastest available).
    transport: Option<Transport>,
    /// The registered buffer that stages caller memory, grown on demand.
    staging: tokio::sync::Mutex<Option<Staged>>,
}

struct Staged {
    region: Arc<pagoda_shm::Region>,
    id: RegionId,
    /// The data plane it is registered on.
    plane: Arc<DataPlane>,
}

impl Shared {
    fn block_on<T: Send>(
        &self,
        py: Python<'_>,
        future: impl Future<Output = PyResult<T>> + Send,
    ) -> PyResult<T> {
        py.detach(|| self.runtime.block_on(future))
    }

    /// The data plane; a broken one (the node went away) is replaced by a
    /// new connection, so calls work again once the node is back.
    async fn plane(&self) -> PyResult<Arc<DataPlane>> {
        let mut plane = self.plane.lock().await;
        if let Some(live) = plane.as_ref().filter(|plane| !plane.is_broken()) {
            return Ok(Arc::clone(live));
        }
        let connected = match self.transport {
            Some(transport) => DataPlane::connect_with(&self.client, transport).await,
            None => DataPlane::connect(&self.client).await,
        };
        let connected = Arc::new(connected.map_err(to_py)?);
        *plane = Some(Arc::clone(&connected));
        Ok(connected)
    }

    /// The staging buffer, at least `len` bytes, held for the caller's call.
    async fn staging(&self, len: u64) -> PyResult<(StagingGuard<'_>, Arc<DataPlane>)> {
        let plane = self.plane().await?;
        let mut guard = self.staging.lock().await;
        let stale = guard
            .as_ref()
            .is_none_or(|staged| staged.region.len() < len || !Arc::ptr_eq(&staged.plane, &plane));
        if stale {
            if let Some(old) = guard.take()
                && Arc::ptr_eq(&old.plane, &plane)
            {
                plane.unregister(old.id).await.map_err(to_py)?;
            }
            let size = len.max(1 << 20).next_power_of_two();
            let region = Arc::new(
                pagoda_shm::Region::create("pagoda-python-staging", size)
                    .map_err(|error| pagoda_error(8, error.to_string()))?,
            );
            let id = plane.register(Arc::clone(&region)).await.map_err(to_py)?;
            *guard = Some(Staged {
                region,
                id,
                plane: Arc::clone(&plane),
            });
        }
        Ok((StagingGuard(guard), plane))
    }
}

struct StagingGuard<'a>(tokio::sync::MutexGuard<'a, Option<Staged>>);

impl StagingGuard<'_> {
    fn staged(&self) -> &Staged {
        self.0.as_ref().expect("staging() leaves a buffer in place")
    }
}

/// A connection to a Pagoda node.
#[pyclass(frozen, module = "pagoda._native")]
struct Client {
    shared: Arc<Shared>,
}

#[pymethods]
impl Client {
    /// Connects to `url` (`http://host:port`, or `https://` with `ca_pem`
    /// and `server_name`), authenticating with `token`; `transport`
    /// (`"shm"` or `"tcp"`) overrides the data plane's choice.
    #[new]
    #[pyo3(signature = (url, token=None, *, ca_pem=None, server_name=None, transport=None))]
    fn new(
        py: Python<'_>,
        url: &str,
        token: Option<&str>,
        ca_pem: Option<&[u8]>,
        server_name: Option<&str>,
        transport: Option<&str>,
    ) -> PyResult<Self> {
        let transport = match transport {
            None => None,
            Some("shm") => Some(Transport::SharedMemory),
            Some("tcp") => Some(Transport::Tcp),
            Some(other) => {
                return Err(invalid(format!(
                    "transport {other:?}: expected \"shm\" or \"tcp\""
                )));
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pagoda-python")
            .enable_all()
            .build()
            .map_err(|error| pagoda_error(13, format!("starting the client runtime: {error}")))?;
        let url = pagoda_client::endpoint_url(url);
        let client = py.detach(|| {
            runtime.block_on(async {
                match ca_pem {
                    Some(ca) => {
                        let name = server_name.unwrap_or("localhost");
                        RustClient::connect_tls(&url, token, ca, name).await
                    }
                    None => RustClient::connect(&url, token).await,
                }
            })
        });
        let client = client.map_err(to_py)?;
        Ok(Client {
            shared: Arc::new(Shared {
                runtime,
                client,
                plane: tokio::sync::Mutex::new(None),
                transport,
                staging: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Creates a namespace (or finds the same one) and returns it.
    #[pyo3(signature = (tenant, model, revision, *, dtype="bf16", kind="kv",
        layers=32, kv_heads=8, head_dim=128, block_tokens=16, tp_rank=0, tp_size=1))]
    #[expect(
        clippy::too_many_arguments,
        reason = "the KV layout's fields, as keywords"
    )]
    fn create_namespace(
        &self,
        py: Python<'_>,
        tenant: &str,
        model: &str,
        revision: &str,
        dtype: &str,
        kind: &str,
        layers: u32,
        kv_heads: u32,
        head_dim: u32,
        block_tokens: u32,
        tp_rank: u16,
        tp_size: u16,
    ) -> PyResult<Namespace> {
        let layout = KvLayout {
            dtype: dtype.parse().map_err(|error| invalid(format!("{error}")))?,
            kind: kind.parse().map_err(|error| invalid(format!("{error}")))?,
            layer_count: layers,
            kv_head_count: kv_heads,
            head_dim,
            block_tokens,
            tp_rank,
            tp_size,
        };
        let desc = NamespaceDesc::new(tenant, model, revision, layout)
            .map_err(|error| invalid(error.to_string()))?;
        let shared = &self.shared;
        let id = shared.block_on(py, async {
            shared.client.create_namespace(&desc).await.map_err(to_py)
        })?;
        self.open(py, id)
    }

    /// The namespace with this id (hex, as `Namespace.id` gives it).
    fn namespace(&self, py: Python<'_>, id: &str) -> PyResult<Namespace> {
        let id = NamespaceId::from_hex(id).map_err(|error| invalid(error.to_string()))?;
        self.open(py, id)
    }

    /// Drops a namespace: its blocks become invisible at once.
    fn drop_namespace(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let id = NamespaceId::from_hex(id).map_err(|error| invalid(error.to_string()))?;
        let shared = &self.shared;
        shared.block_on(py, async {
            shared.client.drop_namespace(&id).await.map_err(to_py)
        })
    }

    /// A registered buffer of `size` bytes: blocks are got into it and put
    /// from it with no copy in this process (on the same host, the node
    /// copies straight into it).
    fn buffer(&self, py: Python<'_>, size: u64) -> PyResult<Buffer> {
        let shared = &self.shared;
        shared.block_on(py, async {
            let plane = shared.plane().await?;
            let region = Arc::new(
                pagoda_shm::Region::create("pagoda-python", size)
                    .map_err(|error| invalid(error.to_string()))?,
            );
            let id = plane.register(Arc::clone(&region)).await.map_err(to_py)?;
            Ok(Buffer { region, id, plane })
        })
    }

    /// The data plane's transport (`"shm"` or `"tcp"`) and its counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let shared = &self.shared;
        let plane = shared.block_on(py, shared.plane())?;
        let stats = plane.stats();
        let dict = pyo3::types::PyDict::new(py);
        dict.set_item("transport", stats.transport.to_string())?;
        dict.set_item("calls", stats.calls)?;
        dict.set_item("bytes_sent", stats.bytes_sent)?;
        dict.set_item("bytes_received", stats.bytes_received)?;
        Ok(dict)
    }

    /// The node's URL.
    #[getter]
    fn url(&self) -> String {
        self.shared.client.url().to_owned()
    }
}

impl Client {
    fn open(&self, py: Python<'_>, id: NamespaceId) -> PyResult<Namespace> {
        let shared = &self.shared;
        let handle = shared.block_on(py, async {
            shared.client.namespace(id).await.map_err(to_py)
        })?;
        Ok(Namespace {
            shared: Arc::clone(&self.shared),
            handle,
        })
    }
}

/// Registered memory (a sealed memfd mapped by this process and, on the
/// same host, by the node).
#[pyclass(frozen, module = "pagoda._native")]
struct Buffer {
    region: Arc<pagoda_shm::Region>,
    id: RegionId,
    plane: Arc<DataPlane>,
}

#[pymethods]
impl Buffer {
    /// Its address in this process (for the `memoryview` the package makes).
    #[getter]
    fn address(&self) -> usize {
        self.region.address()
    }

    /// Its size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.region.len()
    }

    fn __len__(&self) -> usize {
        usize::try_from(self.region.len()).unwrap_or(usize::MAX)
    }
}

/// One get item: (hash, buffer offset, room, block offset, length).
type GetItem = (Vec<u8>, u64, u64, u64, u64);
/// One put item: (parent or None, tokens, buffer offset, length).
type PutItem = (Option<Vec<u8>>, Vec<u32>, u64, u32);
/// One get item into caller memory: (hash, address, room).
type AddressGet = (Vec<u8>, usize, u64);
/// One put item from caller memory: (parent or None, tokens, address, length).
type AddressPut = (Option<Vec<u8>>, Vec<u32>, usize, u32);

/// A namespace: where blocks of one model and layout live, for one tenant.
#[pyclass(frozen, module = "pagoda._native")]
struct Namespace {
    shared: Arc<Shared>,
    handle: NamespaceHandle,
}

#[pymethods]
impl Namespace {
    /// The namespace's id, hex.
    #[getter]
    fn id(&self) -> String {
        self.handle.id().to_string()
    }

    /// Tokens per block.
    #[getter]
    fn block_tokens(&self) -> u32 {
        self.handle.block_tokens()
    }

    /// The chain hashes of the full blocks of `tokens` (the tenant's keyed
    /// chain, computed here).
    fn hash_tokens<'py>(
        &self,
        py: Python<'py>,
        tokens: Vec<u32>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hashes = self.handle.hash_tokens(&tokens).map_err(to_py)?;
        Ok(hashes
            .iter()
            .map(|hash| PyBytes::new(py, hash.as_bytes()))
            .collect())
    }

    /// The chain hash of one block of `tokens` after `parent` (None: the
    /// chain's first block).
    #[pyo3(signature = (parent, tokens))]
    fn block_hash<'py>(
        &self,
        py: Python<'py>,
        parent: Option<&[u8]>,
        tokens: Vec<u32>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let parent = parent_of(parent)?;
        let hash = self.handle.block_hash(&parent, &tokens).map_err(to_py)?;
        Ok(PyBytes::new(py, hash.as_bytes()))
    }

    /// The cached leading run of a token sequence: (blocks, their tiers).
    fn lookup(&self, py: Python<'_>, tokens: Vec<u32>) -> PyResult<(usize, Vec<&'static str>)> {
        let handle = &self.handle;
        let lookup = self.shared.block_on(py, async {
            handle.lookup_tokens(&tokens).await.map_err(to_py)
        })?;
        Ok((
            lookup.matched,
            lookup.tiers.into_iter().map(tier_name).collect(),
        ))
    }

    /// The tiers of the cached leading run of a chain of hashes (its length
    /// is the leading-hit count), answered within `timeout` seconds, in one
    /// call however long the chain.
    #[pyo3(signature = (hashes, timeout=5.0))]
    fn exists(
        &self,
        py: Python<'_>,
        hashes: Vec<Vec<u8>>,
        timeout: f64,
    ) -> PyResult<Vec<&'static str>> {
        let hashes = hashes_of(&hashes)?;
        let deadline = deadline(timeout)?;
        let (shared, id) = (&self.shared, self.handle.id());
        let tiers = shared.block_on(py, async {
            let plane = shared.plane().await?;
            plane.exists(id, &hashes, deadline).await.map_err(to_py)
        })?;
        Ok(tiers.into_iter().map(tier_name).collect())
    }

    /// Puts blocks from a registered buffer, in order (an item may be an
    /// earlier one's child). Items are (parent or None, tokens, offset,
    /// length); each result is (hash, outcome) or a `PagodaError` (not
    /// raised) for an item that failed.
    #[pyo3(signature = (buffer, items, timeout=30.0))]
    fn put_from(
        &self,
        py: Python<'_>,
        buffer: &Buffer,
        items: Vec<PutItem>,
        timeout: f64,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let items = put_items(&items)?;
        let deadline = deadline(timeout)?;
        let (plane, id) = (&buffer.plane, self.handle.id());
        let results = self.shared.block_on(py, async {
            plane
                .put_from(id, buffer.id, &items, deadline)
                .await
                .map_err(to_py)
        })?;
        put_results(py, results)
    }

    /// Puts blocks whose payloads lie in caller memory at `address`
    /// (`length` bytes; offsets of the items are relative to it), staged
    /// through the client's registered buffer (one copy).
    #[pyo3(signature = (address, length, items, timeout=30.0))]
    fn put_from_address(
        &self,
        py: Python<'_>,
        address: usize,
        length: usize,
        items: Vec<PutItem>,
        timeout: f64,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let source = caller_memory(address, length);
        let pieces = items
            .iter()
            .map(|(parent, tokens, offset, len)| {
                let bytes = usize::try_from(*offset)
                    .ok()
                    .and_then(|start| source.get(start..start.checked_add(*len as usize)?))
                    .ok_or_else(|| {
                        invalid(format!(
                            "bytes {offset}..+{len} are outside the {length}-byte source"
                        ))
                    })?;
                Ok((parent_of(parent.as_deref())?, tokens.clone(), bytes))
            })
            .collect::<PyResult<Vec<_>>>()?;
        self.put_pieces(py, &pieces, timeout)
    }

    /// Puts one block from `data` (bytes): (hash, outcome).
    #[pyo3(signature = (parent, tokens, data, timeout=30.0))]
    fn put(
        &self,
        py: Python<'_>,
        parent: Option<Vec<u8>>,
        tokens: Vec<u32>,
        data: &[u8],
        timeout: f64,
    ) -> PyResult<Py<PyAny>> {
        let pieces = [(parent_of(parent.as_deref())?, tokens, data)];
        let mut results = self.put_pieces(py, &pieces, timeout)?;
        let result = results.pop().expect("one result per item");
        if let Ok(error) = result.bind(py).cast::<PagodaError>() {
            return Err(PyErr::from_value(error.clone().into_any()));
        }
        Ok(result)
    }

    /// Gets blocks (or byte ranges) into a registered buffer. Items are
    /// (hash, buffer offset, room, block offset, length; 0: to the end);
    /// each result is the bytes written, None for a block not cached, or a
    /// `PagodaError` (not raised) for an item that failed.
    #[pyo3(signature = (buffer, items, timeout=30.0))]
    fn get_into(
        &self,
        py: Python<'_>,
        buffer: &Buffer,
        items: Vec<GetItem>,
        timeout: f64,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let items = get_items(&items)?;
        let deadline = deadline(timeout)?;
        let (plane, id) = (&buffer.plane, self.handle.id());
        let got = self.shared.block_on(py, async {
            plane
                .get_into(id, buffer.id, &items, deadline)
                .await
                .map_err(to_py)
        })?;
        got_results(py, got)
    }

    /// [`Namespace::get_into`] into caller memory at `address` (`length`
    /// bytes, offsets relative to it), staged through the client's
    /// registered buffer (one copy).
    #[pyo3(signature = (address, length, items, timeout=30.0))]
    fn get_into_address(
        &self,
        py: Python<'_>,
        address: usize,
        length: usize,
        items: Vec<GetItem>,
        timeout: f64,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let window = length as u64;
        let mut items = get_items(&items)?;
        for item in &mut items {
            let end = item.region_offset.checked_add(item.region_len);
            if end.is_none_or(|end| end > window) {
                return Err(invalid(format!(
                    "bytes {}..+{} are outside the {window}-byte buffer",
                    item.region_offset, item.region_len
                )));
            }
        }
        let deadline = deadline(timeout)?;
        let (shared, id) = (&self.shared, self.handle.id());
        let got = shared.block_on(py, async {
            let (staging, plane) = shared.staging(window).await?;
            let staged = staging.staged();
            let got = plane
                .get_into(id, staged.id, &items, deadline)
                .await
                .map_err(to_py)?;
            let target = caller_memory_mut(address, length);
            for (item, got) in items.iter().zip(&got) {
                if let Got::Found { len, .. } = got {
                    let start = usize::try_from(item.region_offset).unwrap_or(usize::MAX);
                    let end = start.saturating_add(usize::try_from(*len).unwrap_or(usize::MAX));
                    let out = target
                        .get_mut(start..end)
                        .ok_or_else(|| invalid("a block longer than its room"))?;
                    staged
                        .region
                        .read_into(item.region_offset, out)
                        .map_err(|error| invalid(error.to_string()))?;
                }
            }
            Ok(got)
        })?;
        got_results(py, got)
    }

    /// Gets whole blocks into scattered caller memory: items are (hash,
    /// address, room), each block landing at its own address (an engine's
    /// host pool pages). Staged compactly through the client's registered
    /// buffer (one copy); results as [`Namespace::get_into`].
    #[pyo3(signature = (items, timeout=30.0))]
    fn get_into_addresses(
        &self,
        py: Python<'_>,
        items: Vec<AddressGet>,
        timeout: f64,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let mut at = 0u64;
        let mut gets = Vec::with_capacity(items.len());
        for (hash, _, room) in &items {
            gets.push(GetInto::block(hash_of(hash)?, at, *room));
            at += room;
        }
        let deadline = deadline(timeout)?;
        let (shared, id) = (&self.shared, self.handle.id());
        let got = shared.block_on(py, async {
            let (staging, plane) = shared.staging(at.max(1)).await?;
            let staged = staging.staged();
            let got = plane
                .get_into(id, staged.id, &gets, deadline)
                .await
                .map_err(to_py)?;
            for ((get, (_, address, room)), got) in gets.iter().zip(&items).zip(&got) {
                if let Got::Found { len, .. } = got {
                    let len = usize::try_from((*len).min(*room)).unwrap_or(0);
                    let out = caller_memory_mut(*address, len);
                    staged
                        .region
                        .read_into(get.region_offset, out)
                        .map_err(|error| invalid(error.to_string()))?;
                }
            }
            Ok(got)
        })?;
        got_results(py, got)
    }

    /// Puts blocks from scattered caller memory, in order: items are
    /// (parent or None, tokens, address, length). Staged compactly through
    /// the client's registered buffer (one copy); results as
    /// [`Namespace::put_from`].
    #[pyo3(signature = (items, timeout=30.0))]
    fn put_from_addresses(
        &self,
        py: Python<'_>,
        items: Vec<AddressPut>,
        timeout: f64,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let pieces = items
            .iter()
            .map(|(parent, tokens, address, len)| {
                let bytes = caller_memory(*address, *len as usize);
                Ok((parent_of(parent.as_deref())?, tokens.clone(), bytes))
            })
            .collect::<PyResult<Vec<_>>>()?;
        self.put_pieces(py, &pieces, timeout)
    }

    /// A whole block (or the range `offset..offset + length`; 0: to the
    /// end) as bytes; None when it is not cached.
    #[pyo3(signature = (hash, offset=0, length=0))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        hash: &[u8],
        offset: u64,
        length: u64,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let hash = hash_of(hash)?;
        let handle = &self.handle;
        let bytes = self.shared.block_on(py, async {
            handle.get_range(&hash, offset, length).await.map_err(to_py)
        })?;
        Ok(bytes.map(|bytes| PyBytes::new(py, &bytes)))
    }

    /// Removes blocks (those with cached children, pins or puts in flight
    /// stay); returns how many went.
    fn remove(&self, py: Python<'_>, hashes: Vec<Vec<u8>>) -> PyResult<u32> {
        let hashes = hashes_of(&hashes)?;
        let (shared, id) = (&self.shared, self.handle.id());
        shared.block_on(py, async {
            let plane = shared.plane().await?;
            plane.remove(id, &hashes).await.map_err(to_py)
        })
    }

    /// Pins the cached leading blocks of `hashes` for `seconds`: (lease,
    /// blocks pinned).
    fn pin<'py>(
        &self,
        py: Python<'py>,
        hashes: Vec<Vec<u8>>,
        seconds: f64,
    ) -> PyResult<(Bound<'py, PyBytes>, u32)> {
        self.lease(py, &hashes, seconds, false)
    }

    /// The scheduler's pin-for-soon hint: the blocks of `hashes` (a queued
    /// request's prompt; unpin once it is served) are evicted last for
    /// `seconds` or until `unpin(lease)`, those in the node's DRAM at once
    /// and the others once they arrive. Holds nothing against eviction:
    /// (lease, DRAM blocks hinted at once).
    fn expect_soon<'py>(
        &self,
        py: Python<'py>,
        hashes: Vec<Vec<u8>>,
        seconds: f64,
    ) -> PyResult<(Bound<'py, PyBytes>, u32)> {
        self.lease(py, &hashes, seconds, true)
    }

    /// Releases a lease early; whether it was still held.
    fn unpin(&self, py: Python<'_>, lease: &[u8]) -> PyResult<bool> {
        let handle = &self.handle;
        self.shared
            .block_on(py, async { handle.unpin(lease).await.map_err(to_py) })
    }
}

impl Namespace {
    /// A pin of the cached leading blocks of `hashes` (`soft`: a
    /// pin-for-soon hint of all of them) for `seconds`: (lease, blocks).
    fn lease<'py>(
        &self,
        py: Python<'py>,
        hashes: &[Vec<u8>],
        seconds: f64,
        soft: bool,
    ) -> PyResult<(Bound<'py, PyBytes>, u32)> {
        let hashes = hashes_of(hashes)?;
        let duration = deadline(seconds)?;
        let handle = &self.handle;
        let (lease, blocks) = self.shared.block_on(py, async {
            if soft {
                handle.expect_soon(&hashes, duration).await
            } else {
                handle.pin(&hashes, duration).await
            }
            .map_err(to_py)
        })?;
        Ok((PyBytes::new(py, &lease), blocks))
    }

    /// Stores `pieces` (parent, tokens, bytes) in order: each copied into the
    /// client's staging buffer, back to back, then put from there in one
    /// call (one copy, whatever memory the bytes are in).
    fn put_pieces(
        &self,
        py: Python<'_>,
        pieces: &[(ChainHash, Vec<u32>, &[u8])],
        timeout: f64,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let mut at = 0u64;
        let mut puts = Vec::with_capacity(pieces.len());
        for (parent, tokens, bytes) in pieces {
            let len = u32::try_from(bytes.len())
                .map_err(|_| invalid(format!("a block of {} bytes is too long", bytes.len())))?;
            puts.push(PutFrom {
                parent: *parent,
                tokens: tokens.clone(),
                extra: Vec::new(),
                region_offset: at,
                len,
            });
            at += u64::from(len);
        }
        let deadline = deadline(timeout)?;
        let (shared, id) = (&self.shared, self.handle.id());
        let results = shared.block_on(py, async {
            let (staging, plane) = shared.staging(at.max(1)).await?;
            let staged = staging.staged();
            for (put, (_, _, bytes)) in puts.iter().zip(pieces) {
                staged
                    .region
                    .write(put.region_offset, bytes)
                    .map_err(|error| invalid(error.to_string()))?;
            }
            plane
                .put_from(id, staged.id, &puts, deadline)
                .await
                .map_err(to_py)
        })?;
        put_results(py, results)
    }
}

/// Put items from a registered buffer (the node checks their bounds).
fn put_items(items: &[PutItem]) -> PyResult<Vec<PutFrom>> {
    items
        .iter()
        .map(|(parent, tokens, offset, len)| {
            Ok(PutFrom {
                parent: parent_of(parent.as_deref())?,
                tokens: tokens.clone(),
                extra: Vec::new(),
                region_offset: *offset,
                len: *len,
            })
        })
        .collect()
}

fn get_items(items: &[GetItem]) -> PyResult<Vec<GetInto>> {
    items
        .iter()
        .map(|(hash, region_offset, room, offset, length)| {
            Ok(GetInto {
                hash: hash_of(hash)?,
                offset: *offset,
                length: *length,
                region_offset: *region_offset,
                region_len: *room,
            })
        })
        .collect()
}

fn put_results(py: Python<'_>, results: Vec<Put>) -> PyResult<Vec<Py<PyAny>>> {
    results
        .into_iter()
        .map(|result| match result {
            Put::Done(outcome, hash) => {
                let pair = (PyBytes::new(py, hash.as_bytes()), outcome_name(outcome));
                Ok(pair.into_pyobject(py)?.into_any().unbind())
            }
            Put::Failed(code) => Ok(failed(py, i32::from(code))),
        })
        .collect()
}

fn got_results(py: Python<'_>, got: Vec<Got>) -> PyResult<Vec<Py<PyAny>>> {
    got.into_iter()
        .map(|got| match got {
            Got::Found { len, .. } => Ok(len.into_pyobject(py)?.into_any().unbind()),
            Got::Missing => Ok(py.None()),
            Got::Failed(code) => Ok(failed(py, i32::from(code))),
        })
        .collect()
}

fn failed(py: Python<'_>, code: i32) -> Py<PyAny> {
    let error = pagoda_error(code, "this item failed".into());
    error.into_value(py).into_any()
}

/// Caller memory the Python layer lends for one call.
fn caller_memory<'a>(address: usize, length: usize) -> &'a [u8] {
    if length == 0 {
        return &[];
    }
    // SAFETY: the Python layer passes the address and length of a buffer it
    // holds an export of (`ctypes.from_buffer`, or a `bytes`' own storage)
    // until this call returns; the bytes are plain bytes, and the borrow
    // ends with the call.
    #[expect(
        unsafe_code,
        reason = "caller memory lent for the call by the Python layer"
    )]
    unsafe {
        std::slice::from_raw_parts(address as *const u8, length)
    }
}

/// Writable caller memory the Python layer lends for one call.
fn caller_memory_mut<'a>(address: usize, length: usize) -> &'a mut [u8] {
    if length == 0 {
        return &mut [];
    }
    // SAFETY: the Python layer passes a writable buffer it holds an export
    // of (`ctypes.from_buffer` refuses read-only ones) until this call
    // returns; nothing else in this process writes it meanwhile (the GIL is
    // released, but the caller owns the range for the call, as with any
    // `readinto`).
    #[expect(
        unsafe_code,
        reason = "caller memory lent for the call by the Python layer"
    )]
    unsafe {
        std::slice::from_raw_parts_mut(address as *mut u8, length)
    }
}

/// The `pagoda._native` module.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Client>()?;
    module.add_class::<Namespace>()?;
    module.add_class::<Buffer>()?;
    module.add("PagodaError", module.py().get_type::<PagodaError>())?;
    Ok(())
}
