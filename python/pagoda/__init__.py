"""Python client of Pagoda, the KVCache store.

A thin layer over the Rust client (``pagoda._native``): blocks of KV cache
move between a node and your memory in batches, over shared memory when the
node runs on the same host and TCP otherwise (the client picks; ``Client.stats()``
says which). Every call releases the GIL.

Three forms of every namespace call:

- sync: ``ns.get_into(...)`` blocks the calling thread (not the GIL);
- submit/poll: ``ns.submit.get_into(...)`` returns a ``concurrent.futures.Future``
  at once (``done()`` polls, ``result()`` waits);
- asyncio: ``await ns.aio.get_into(...)``.

Memory: a ``Buffer`` from ``Client.buffer(size)`` is registered with the node,
so gets land in it and puts leave from it with no copy in this process. Any
other writable buffer (``bytearray``, ``memoryview``, numpy arrays, CPU torch
tensors) works too, staged through the client's own registered buffer (one
``memcpy``).

Errors raise ``PagodaError`` with the gRPC status: ``error.code`` (int),
``error.name`` (``"NOT_FOUND"``...), ``error.message``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import functools
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from ._native import Buffer as _NativeBuffer
from ._native import Client as _NativeClient
from ._native import Namespace as _NativeNamespace
from ._native import PagodaError

__all__ = ["Client", "Namespace", "Buffer", "PagodaError", "ROOT"]

#: The parent of a chain's first block.
ROOT: Optional[bytes] = None

PagodaError.code = property(lambda self: self.args[0])  # type: ignore[attr-defined]
PagodaError.name = property(lambda self: self.args[1])  # type: ignore[attr-defined]
PagodaError.message = property(lambda self: self.args[2])  # type: ignore[attr-defined]
PagodaError.__str__ = lambda self: f"{self.args[1]}: {self.args[2]}"  # type: ignore[method-assign]

# Threads of the submit and asyncio forms (the calls release the GIL).
_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="pagoda")


def _memory(obj: Any, writable: bool) -> Tuple[int, int, Any]:
    """(address, length, keepalive) of a contiguous buffer's bytes.

    Takes the buffer protocol (bytearray, memoryview, numpy arrays, mmap),
    ``__array_interface__`` objects and CPU torch tensors (``data_ptr()``),
    without importing numpy or torch. The keepalive holds the export for the
    call.
    """
    if isinstance(obj, Buffer):
        return obj.address, obj.size, obj
    if hasattr(obj, "data_ptr") and hasattr(obj, "element_size"):
        # A torch tensor: CPU and contiguous only.
        if getattr(obj, "device", None) is not None and str(obj.device) != "cpu":
            raise ValueError(f"a tensor on {obj.device}: only CPU tensors are supported")
        if not obj.is_contiguous():
            raise ValueError("the tensor is not contiguous")
        return obj.data_ptr(), obj.numel() * obj.element_size(), obj
    try:
        view = memoryview(obj)
    except TypeError:
        interface = getattr(obj, "__array_interface__", None)
        if interface is None:
            raise TypeError(f"{type(obj).__name__} is not a buffer") from None
        address, readonly = interface["data"]
        if writable and readonly:
            raise TypeError("the array is read-only")
        if interface.get("strides") is not None:
            raise ValueError("the array is not contiguous")
        length = int(interface["typestr"][2:])
        for dim in interface["shape"]:
            length *= dim
        return address, length, obj
    if not view.c_contiguous:
        raise ValueError("the buffer is not contiguous")
    view = view.cast("B") if (view.ndim != 1 or view.format != "B") else view
    if view.nbytes == 0:
        return 0, 0, view
    if view.readonly:
        if writable:
            raise TypeError("the buffer is read-only")
        return _readonly_address(view)
    array = (ctypes.c_char * view.nbytes).from_buffer(view)
    return ctypes.addressof(array), view.nbytes, (array, view)


def _readonly_address(view: memoryview) -> Tuple[int, int, Any]:
    """A read-only buffer's address: bytes lend theirs; others are copied once."""
    obj = view.obj
    if isinstance(obj, bytes) and view.nbytes == len(obj):
        return ctypes.cast(ctypes.c_char_p(obj), ctypes.c_void_p).value or 0, len(obj), obj
    copy = bytearray(view)
    array = (ctypes.c_char * len(copy)).from_buffer(copy)
    return ctypes.addressof(array), len(copy), (array, copy)


class Buffer:
    """Registered memory: gets land in it and puts leave from it with no copy
    in this process (on the same host the node copies straight into it).

    ``view`` is a writable ``memoryview`` of its bytes (``numpy.frombuffer(buf.view,
    dtype=...)`` and ``torch.frombuffer(buf.view, dtype=...)`` wrap it without a
    copy). The memory lives as long as the ``Buffer`` or any view of it. A
    buffer is registered on one connection: calls with it fail
    ``UNAVAILABLE`` once that connection broke (the node restarted), while
    the client's other calls reconnect by themselves; make a new buffer then.
    """

    def __init__(self, native: _NativeBuffer):
        self._native = native
        array = (ctypes.c_char * native.size).from_address(native.address)
        array.owner = native  # the mapping lives while any view does
        self.view = memoryview(array).cast("B")

    @property
    def address(self) -> int:
        return self._native.address

    @property
    def size(self) -> int:
        return self._native.size

    def __len__(self) -> int:
        return self._native.size


class _Forms:
    """``ns.submit.f(...)`` and ``ns.aio.f(...)``: the sync call on a thread."""

    def __init__(self, target: Any, asynchronous: bool):
        self._target = target
        self._asynchronous = asynchronous

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        if not callable(method):
            raise AttributeError(name)

        if self._asynchronous:

            async def call(*args: Any, **kwargs: Any) -> Any:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(
                    _EXECUTOR, functools.partial(method, *args, **kwargs)
                )

        else:

            def call(*args: Any, **kwargs: Any) -> "concurrent.futures.Future[Any]":
                return _EXECUTOR.submit(method, *args, **kwargs)

        call.__name__ = name
        call.__doc__ = method.__doc__
        return call


class Client:
    """A connection to a Pagoda node.

    ``Client("http://127.0.0.1:7420", token)``; TLS with ``ca_pem`` (the CA
    certificate, PEM bytes) and ``server_name``; ``transport`` (``"shm"`` or
    ``"tcp"``) overrides the data plane's choice of the fastest available.
    """

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        ca_pem: Optional[bytes] = None,
        server_name: Optional[str] = None,
        transport: Optional[str] = None,
    ):
        self._native = _NativeClient(url, token, ca_pem=ca_pem, server_name=server_name, transport=transport)
        self.submit = _Forms(self, asynchronous=False)
        self.aio = _Forms(self, asynchronous=True)

    @property
    def url(self) -> str:
        return self._native.url

    def create_namespace(self, tenant: str, model: str, revision: str, **layout: Any) -> "Namespace":
        """Creates a namespace (or finds the same one). Layout keywords:
        ``dtype`` ("bf16"), ``kind`` ("kv" or "latent"), ``layers`` (32), ``kv_heads``
        (8), ``head_dim`` (128), ``block_tokens`` (16), ``tp_rank`` (0), ``tp_size`` (1)."""
        return Namespace(self._native.create_namespace(tenant, model, revision, **layout))

    def namespace(self, namespace_id: str) -> "Namespace":
        """The namespace with this id (hex)."""
        return Namespace(self._native.namespace(namespace_id))

    def drop_namespace(self, namespace_id: str) -> None:
        """Drops a namespace: its blocks become invisible at once."""
        self._native.drop_namespace(namespace_id)

    def buffer(self, size: int) -> Buffer:
        """A registered buffer of ``size`` bytes."""
        return Buffer(self._native.buffer(size))

    def stats(self) -> dict:
        """The data plane's transport (``"shm"`` or ``"tcp"``) and counters."""
        return self._native.stats()

    @property
    def transport(self) -> str:
        return self.stats()["transport"]


class Namespace:
    """Blocks of one model and KV layout, for one tenant.

    Blocks are keyed by the tenant's chain hash (32 bytes) of their tokens
    after their parent: ``hash_tokens`` computes a prompt's chain here.
    """

    def __init__(self, native: _NativeNamespace):
        self._native = native
        self.submit = _Forms(self, asynchronous=False)
        self.aio = _Forms(self, asynchronous=True)

    @property
    def id(self) -> str:
        return self._native.id

    @property
    def block_tokens(self) -> int:
        return self._native.block_tokens

    def hash_tokens(self, tokens: Sequence[int]) -> List[bytes]:
        """Chain hashes of the full blocks of ``tokens``."""
        return self._native.hash_tokens(list(tokens))

    def block_hash(self, parent: Optional[bytes], tokens: Sequence[int]) -> bytes:
        """The chain hash of one block after ``parent`` (None: first block)."""
        return self._native.block_hash(parent, list(tokens))

    def lookup(self, tokens: Sequence[int]) -> Tuple[int, List[str]]:
        """(cached leading blocks, their tiers) of a token sequence."""
        return self._native.lookup(list(tokens))

    def exists(self, hashes: Sequence[bytes], timeout: float = 5.0) -> List[str]:
        """Tiers (``"dram"``/``"ssd"``) of the cached leading run of a chain."""
        return self._native.exists(list(hashes), timeout)

    def leading(self, hashes: Sequence[bytes], timeout: float = 5.0) -> int:
        """How many leading blocks of a chain are cached (one call)."""
        return len(self.exists(hashes, timeout))

    def put(self, parent: Optional[bytes], tokens: Sequence[int], data: Any, timeout: float = 30.0) -> Tuple[bytes, str]:
        """Stores one block: (its hash, ``"stored"``/``"exists"``/``"diverged"``/
        ``"parent_missing"``)."""
        if isinstance(data, bytes):
            return self._native.put(parent, list(tokens), data, timeout)
        results = self.put_many([(parent, list(tokens), 0, _length(data))], data, timeout)
        result = results[0]
        if isinstance(result, PagodaError):
            raise result
        return result

    def put_many(self, items: Iterable[Tuple[Optional[bytes], Sequence[int], int, int]], data: Any, timeout: float = 30.0) -> list:
        """Stores blocks whose payloads lie in ``data`` (a ``Buffer`` or any
        buffer), in order: items are (parent, tokens, offset, length). Each
        result is (hash, outcome) or a ``PagodaError`` for that item (not raised)."""
        items = [(parent, list(tokens), offset, length) for parent, tokens, offset, length in items]
        if isinstance(data, Buffer):
            return self._native.put_from(data._native, items, timeout)
        address, length, keep = _memory(data, writable=False)
        try:
            return self._native.put_from_address(address, length, items, timeout)
        finally:
            del keep

    def get(self, hash: bytes, offset: int = 0, length: int = 0) -> Optional[bytes]:
        """A block (or its bytes ``offset..offset+length``; 0: to the end), or None."""
        return self._native.get(hash, offset, length)

    def get_into(self, hashes: Sequence[bytes], out: Any, block_bytes: int, offset: int = 0, timeout: float = 30.0) -> list:
        """Gets blocks into ``out`` (a ``Buffer`` or any writable buffer), block
        ``i`` at ``offset + i * block_bytes`` with ``block_bytes`` of room.
        Each result is the bytes written, None (not cached) or a ``PagodaError``
        for that item (not raised)."""
        items = [(h, offset + i * block_bytes, block_bytes, 0, 0) for i, h in enumerate(hashes)]
        return self.get_ranges_into(items, out, timeout)

    def get_ranges_into(self, items: Iterable[Tuple[bytes, int, int, int, int]], out: Any, timeout: float = 30.0) -> list:
        """Gets byte ranges into ``out``: items are (hash, out offset, room,
        block offset, length; 0: to the end of the block)."""
        items = list(items)
        if isinstance(out, Buffer):
            return self._native.get_into(out._native, items, timeout)
        address, length, keep = _memory(out, writable=True)
        try:
            return self._native.get_into_address(address, length, items, timeout)
        finally:
            del keep

    def get_into_addresses(self, items: Iterable[Tuple[bytes, int, int]], timeout: float = 30.0) -> list:
        """Gets whole blocks into scattered memory the caller owns: items are
        (hash, address, room), e.g. an engine's host-pool pages from their
        pointers. The caller keeps that memory alive and unread for the
        call. Results as ``get_into``."""
        return self._native.get_into_addresses(list(items), timeout)

    def put_from_addresses(self, items: Iterable[Tuple[Optional[bytes], Sequence[int], int, int]], timeout: float = 30.0) -> list:
        """Puts blocks from scattered memory the caller owns, in order: items
        are (parent, tokens, address, length). Results as ``put_many``."""
        items = [(parent, list(tokens), address, length) for parent, tokens, address, length in items]
        return self._native.put_from_addresses(items, timeout)

    def remove(self, hashes: Sequence[bytes]) -> int:
        """Removes blocks, given in chain order (parents first; they go deepest
        first, and a block that keeps cached children or pins stays); how many went."""
        return self._native.remove(list(hashes))

    def pin(self, hashes: Sequence[bytes], seconds: float) -> Tuple[bytes, int]:
        """Pins the cached leading blocks for ``seconds``: (lease, pinned)."""
        return self._native.pin(list(hashes), seconds)

    def expect_soon(self, hashes: Sequence[bytes], seconds: float) -> Tuple[bytes, int]:
        """The scheduler's pin-for-soon hint for a queued request's prompt: its
        blocks are evicted last for ``seconds`` or until ``unpin(lease)``, those
        in the node's DRAM at once and the others (on SSD, or still to be put by
        requests ahead in the queue) once they arrive; nothing is held against
        eviction or removal. Returns (lease, DRAM blocks hinted at once)."""
        return self._native.expect_soon(list(hashes), seconds)

    def unpin(self, lease: bytes) -> bool:
        """Releases a lease early."""
        return self._native.unpin(lease)


def _length(data: Any) -> int:
    return _memory(data, writable=False)[1]
