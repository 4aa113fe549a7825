"""Pagoda as an LMCache remote storage plugin (pinned: lmcache 0.5.6).

LMCache configuration (YAML, or ``LMCacheEngineConfig``)::

    chunk_size: 256
    local_cpu: true
    remote_serde: naive
    remote_storage_plugins: ["pagoda"]
    extra_config:
      remote_storage_plugin.pagoda.module_path: pagoda.integrations.lmcache
      remote_storage_plugin.pagoda.class_name: PagodaConnector
      remote_storage_plugin.pagoda.url: http://127.0.0.1:7420
      remote_storage_plugin.pagoda.token: pgd_...        # or PAGODA_TOKEN
      remote_storage_plugin.pagoda.tenant: default
      remote_storage_plugin.pagoda.salt: ""              # cache salt: salted runs never share entries
      remote_storage_plugin.pagoda.timeout: 5.0          # seconds per call

Chunks are keyed by LMCache's own key string
(``model@world_size@worker_id@chunk_hash@dtype``) through the ``lmcache``
external key scheme (``pagoda.keys``): two tenants' identical chunk hashes
are different blocks. LMCache's chunk hashes already chain (each covers its
prefix), so chunks are chain roots and ``batched_async_contains`` answers
the leading run of a batch in one call. A load writes into the
``MemoryObj`` LMCache allocated (its ``byte_array``); a chunk shorter than a
full one comes back reshaped to its length, so Pagoda keeps no chunk
metadata of its own (``save_chunk_meta`` is not used). A node that cannot
be reached trips a circuit breaker: lookups answer "not cached", loads
fail (LMCache recomputes), stores are dropped, and nothing waits on it.
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional

from lmcache.utils import CacheEngineKey
from lmcache.v1.memory_management import MemoryObj
from lmcache.v1.storage_backend.connector.base_connector import RemoteConnector

import pagoda
from pagoda import keys as external
from pagoda.integrations._breaker import Breaker

logger = logging.getLogger(__name__)

PREFIX = "remote_storage_plugin.pagoda."


class PagodaConnector(RemoteConnector):
    """LMCache's ``RemoteConnector`` over a Pagoda node."""

    def __init__(self, loop, local_cpu_backend, config):
        super().__init__(local_cpu_backend.config, local_cpu_backend.metadata)
        extra = dict(config.extra_config or {})
        self.loop = loop
        self.local_cpu_backend = local_cpu_backend
        self.url = extra.get(PREFIX + "url", "http://127.0.0.1:7420")
        token = extra.get(PREFIX + "token") or os.environ.get("PAGODA_TOKEN")
        self.tenant = extra.get(PREFIX + "tenant", "default")
        self.timeout = float(extra.get(PREFIX + "timeout", 5.0))
        salt = extra.get(PREFIX + "salt", "")
        # Pagoda keeps each chunk's length: no metadata header in the bytes.
        self.save_chunk_meta = False
        self.breaker = Breaker()
        model = local_cpu_backend.metadata.model_name
        self.client = pagoda.Client(self.url, token)
        self.namespace = external.open_namespace(self.client, self.tenant, model, "lmcache")
        self.keys = external.ExternalKeys(self.namespace, "lmcache", salt)
        logger.info("Pagoda connector: %s, tenant %s, namespace %s", self.url, self.tenant, self.namespace.id)

    def _key(self, key: CacheEngineKey) -> str:
        return key.to_string()

    def _leading(self, keys: List[CacheEngineKey]) -> int:
        hashes = self.keys.roots([self._key(key) for key in keys])
        return self.breaker.call(lambda: self.namespace.leading(hashes, self.timeout), 0)

    async def exists(self, key: CacheEngineKey) -> bool:
        return await self.loop.run_in_executor(None, self.exists_sync, key)

    def exists_sync(self, key: CacheEngineKey) -> bool:
        return self._leading([key]) == 1

    def support_batched_async_contains(self) -> bool:
        return True

    async def batched_async_contains(self, lookup_id: str, keys: List[CacheEngineKey], pin: bool = False) -> int:
        return await self.loop.run_in_executor(None, self._leading, keys)

    def support_batched_contains(self) -> bool:
        return True

    def batched_contains(self, keys: List[CacheEngineKey]) -> int:
        return self._leading(keys)

    def _get_many(self, keys: List[CacheEngineKey]) -> List[Optional[MemoryObj]]:
        objs = []
        for _ in keys:
            obj = self.local_cpu_backend.allocate(self.meta_shapes, self.meta_dtypes, self.meta_fmt)
            if obj is None:
                break
            objs.append(obj)
        hashes = self.keys.roots([self._key(key) for key in keys[: len(objs)]])
        items_results = []
        for obj, hash in zip(objs, hashes):
            # One block per call into LMCache's own allocation.
            result = self.breaker.call(
                lambda: self.namespace.get_into([hash], obj.byte_array, obj.get_size(), timeout=self.timeout)[0],
                None,
            )
            items_results.append(result)
        out: List[Optional[MemoryObj]] = []
        for obj, result in zip(objs, items_results):
            if isinstance(result, int) and result > 0:
                out.append(self.reshape_partial_chunk(obj, result))
            else:
                if isinstance(result, pagoda.PagodaError):
                    logger.warning("Pagoda load failed: %s", result)
                obj.ref_count_down()
                out.append(None)
        out.extend([None] * (len(keys) - len(out)))
        return out

    async def get(self, key: CacheEngineKey) -> Optional[MemoryObj]:
        return (await self.batched_get([key]))[0]

    def support_batched_get(self) -> bool:
        return True

    async def batched_get(self, keys: List[CacheEngineKey]) -> List[Optional[MemoryObj]]:
        return await self.loop.run_in_executor(None, self._get_many, keys)

    def _put_many(self, keys: List[CacheEngineKey], memory_objs: List[MemoryObj]) -> None:
        for key, obj in zip(keys, memory_objs):
            tokens = self.keys.tokens(self._key(key))
            data = obj.byte_array
            outcome = self.breaker.call(
                lambda: self.namespace.put(None, tokens, data, timeout=self.timeout)[1], "dropped"
            )
            if outcome not in ("stored", "exists"):
                logger.warning("Pagoda store of %s: %s", key.to_string(), outcome)

    async def put(self, key: CacheEngineKey, memory_obj: MemoryObj):
        await self.loop.run_in_executor(None, self._put_many, [key], [memory_obj])

    def support_batched_put(self) -> bool:
        return True

    async def batched_put(self, keys: List[CacheEngineKey], memory_objs: List[MemoryObj]):
        await self.loop.run_in_executor(None, self._put_many, keys, memory_objs)

    def remove_sync(self, key: CacheEngineKey) -> bool:
        hash = self.keys.hash(self._key(key))
        return self.breaker.call(lambda: self.namespace.remove([hash]), 0) == 1

    async def list(self) -> List[str]:
        # Pagoda keys blocks by keyed hashes: engine key strings are not kept.
        return []

    async def close(self):
        logger.info("Pagoda connector closed (breaker trips: %d)", self.breaker.trips)
