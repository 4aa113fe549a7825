"""Pagoda as an SGLang HiCache L3 storage backend (pinned: sglang 0.5.23).

SGLang configuration::

    python -m sglang.launch_server ... --enable-hierarchical-cache \\
        --hicache-mem-layout page_first \\
        --hicache-storage-backend dynamic \\
        --hicache-storage-backend-extra-config '{"backend_name": "pagoda",
            "module_path": "pagoda.integrations.sglang",
            "class_name": "PagodaHiCacheStorage", "interface_v1": 1,
            "url": "http://127.0.0.1:7420", "token": "pgd_...",
            "tenant": "default", "salt": "", "timeout": 5.0}'

(``token`` may come from the ``PAGODA_TOKEN`` variable instead.)
``interface_v1`` selects SGLang's zero-copy path: ``batch_get_v1`` and
``batch_set_v1`` move pages between Pagoda and the host pool's own memory
(``get_page_buffer_meta``: K and V of a page for MHA models, one part for
MLA), in one batched call per batch of pages.

Keys: SGLang's page hash strings (each covers its prefix) under the
``sglang`` external key scheme (``pagoda.keys``), one block per page part
(``<hash>:k``, ``<hash>:v``), in a namespace per model and tensor-parallel
rank (MLA models share one: every rank holds the same latent cache, and only
the writer rank stores). ``batch_exists`` asks for all parts of a batch's
pages in one call and answers the leading run of whole pages. A load that
fails reports its pages as not loaded (SGLang recomputes); a node that
cannot be reached trips a circuit breaker and nothing waits on it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, List, Optional

import torch
from sglang.srt.mem_cache.hicache_storage import HiCacheStorage, HiCacheStorageConfig, HiCacheStorageExtraInfo

import pagoda
from pagoda import keys as external
from pagoda.integrations._breaker import Breaker

logger = logging.getLogger(__name__)


class PagodaHiCacheStorage(HiCacheStorage):
    """SGLang's ``HiCacheStorage`` over a Pagoda node."""

    def __init__(self, storage_config: HiCacheStorageConfig, kwargs: Optional[dict] = None):
        extra = dict(storage_config.extra_config or {})
        self.config = storage_config
        self.url = extra.get("url", "http://127.0.0.1:7420")
        token = extra.get("token") or os.environ.get("PAGODA_TOKEN")
        self.tenant = extra.get("tenant", "default")
        self.timeout = float(extra.get("timeout", 5.0))
        salt = extra.get("salt", "")
        self.mla = bool(storage_config.is_mla_model)
        rank = "mla" if self.mla else f"tp{storage_config.tp_rank}-{storage_config.tp_size}"
        if storage_config.pp_size > 1:
            rank += f"-pp{storage_config.pp_rank}"
        self.breaker = Breaker()
        self.client = pagoda.Client(self.url, token)
        model = (storage_config.model_name or "model").replace("/", "-")
        self.namespace = external.open_namespace(self.client, self.tenant, model, "sglang", rank)
        self.keys = external.ExternalKeys(self.namespace, "sglang", salt)
        self.mem_pool_host = None
        logger.info("Pagoda HiCache backend: %s, tenant %s, namespace %s", self.url, self.tenant, self.namespace.id)

    # The zero-copy path (interface_v1).

    def _parts(self, keys: List[str], host_indices: torch.Tensor):
        pointers, sizes = self.mem_pool_host.get_page_buffer_meta(host_indices)
        per = len(pointers) // max(1, len(keys))
        names = [f"{key}:{'kv'[j] if per == 2 else j}" for key in keys for j in range(per)]
        return names, [int(p) for p in pointers], [int(s) for s in sizes], per

    def batch_set_v1(self, keys: List[str], host_indices: torch.Tensor, extra_info: Optional[HiCacheStorageExtraInfo] = None) -> List[bool]:
        if not keys:
            return []
        if self.mla and not self.config.is_storage_writer:
            return [True] * len(keys)
        names, pointers, sizes, per = self._parts(keys, host_indices)
        items = [(None, self.keys.tokens(name), pointer, size) for name, pointer, size in zip(names, pointers, sizes)]
        results = self.breaker.call(lambda: self.namespace.put_from_addresses(items, self.timeout), None)
        if results is None:
            return [False] * len(keys)
        stored = [not isinstance(r, pagoda.PagodaError) and r[1] in ("stored", "exists") for r in results]
        return [all(stored[i * per : (i + 1) * per]) for i in range(len(keys))]

    def batch_get_v1(self, keys: List[str], host_indices: torch.Tensor, extra_info: Optional[HiCacheStorageExtraInfo] = None) -> List[bool]:
        if not keys:
            return []
        names, pointers, sizes, per = self._parts(keys, host_indices)
        items = [(self.keys.hash(name), pointer, size) for name, pointer, size in zip(names, pointers, sizes)]
        results = self.breaker.call(lambda: self.namespace.get_into_addresses(items, self.timeout), None)
        if results is None:
            return [False] * len(keys)
        loaded = [isinstance(r, int) and r == size for r, size in zip(results, sizes)]
        return [all(loaded[i * per : (i + 1) * per]) for i in range(len(keys))]

    def batch_exists(self, keys: List[str], extra_info: Optional[HiCacheStorageExtraInfo] = None) -> int:
        if not keys:
            return 0
        per = 1 if self.mla else 2
        names = [f"{key}:{'kv'[j] if per == 2 else j}" for key in keys for j in range(per)]
        hashes = self.keys.roots(names)
        leading = self.breaker.call(lambda: self.namespace.leading(hashes, self.timeout), 0)
        return leading // per

    def exists(self, key: str) -> bool:
        return self.batch_exists([key]) == 1

    # The copying path (without interface_v1): whole pages as flat tensors.

    def set(self, key: str, value: Optional[Any] = None, target_location: Optional[Any] = None, target_sizes: Optional[Any] = None) -> bool:
        return self.batch_set([key], [value])

    def batch_set(self, keys: List[str], values: Optional[Any] = None, target_locations: Optional[Any] = None, target_sizes: Optional[Any] = None) -> bool:
        if self.mla and not self.config.is_storage_writer:
            return True
        tensors = [value.contiguous() for value in values]
        items = [
            (None, self.keys.tokens(f"{key}:page"), tensor.data_ptr(), tensor.numel() * tensor.element_size())
            for key, tensor in zip(keys, tensors)
        ]
        results = self.breaker.call(lambda: self.namespace.put_from_addresses(items, self.timeout), None)
        return results is not None and all(
            not isinstance(r, pagoda.PagodaError) and r[1] in ("stored", "exists") for r in results
        )

    def get(self, key: str, target_location: Optional[Any] = None, target_sizes: Optional[Any] = None):
        got = self.batch_get([key], [target_location])
        return got[0] if isinstance(got, list) else None

    def batch_get(self, keys: List[str], target_locations: Optional[Any] = None, target_sizes: Optional[Any] = None):
        targets = list(target_locations)
        items = [
            (self.keys.hash(f"{key}:page"), target.data_ptr(), target.numel() * target.element_size())
            for key, target in zip(keys, targets)
        ]
        results = self.breaker.call(lambda: self.namespace.get_into_addresses(items, self.timeout), None)
        if results is None:
            return [None] * len(keys)
        return [target if isinstance(r, int) and r == size else None for target, r, (_, _, size) in zip(targets, results, items)]

    def clear(self) -> None:
        logger.info("Pagoda HiCache backend: clear is a no-op (blocks age out by the node's eviction)")

    def close(self) -> None:
        logger.info("Pagoda HiCache backend closed (breaker trips: %d)", self.breaker.trips)
