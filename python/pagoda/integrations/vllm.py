"""Pagoda as a secondary tier of vLLM's offloading (pinned: vllm 0.33.0).

vLLM configuration (``--kv-transfer-config``)::

    {"kv_connector": "OffloadingConnector", "kv_role": "kv_both",
     "kv_connector_extra_config": {
        "spec_name": "TieringOffloadingSpec",
        "cpu_bytes_to_use": 10737418240,
        "secondary_tiers": [
          {"type": "PagodaTier", "module_path": "pagoda.integrations.vllm",
           "url": "http://127.0.0.1:7420", "token": "pgd_...",
           "tenant": "default", "model": "llama-3.1-8b", "salt": "",
           "timeout": 5.0, "threads": 2}]}}

(``token`` may come from the ``PAGODA_TOKEN`` variable instead.) vLLM's
CPU tier is the primary; Pagoda is a remote tier behind it: blocks the CPU
tier stores cascade to Pagoda (``submit_store``), and a CPU miss that Pagoda
holds is promoted back (``submit_load``), shared by every vLLM instance on
the node.

Keys: vLLM's offload keys (its block hash, which already covers the prefix
and the request's ``cache_salt``, plus the KV group) under the ``vllm``
external key scheme (``pagoda.keys``), as chain roots in a namespace per
model. Everything runs on the tier's own threads: lookups go through vLLM's
``AsyncLookupManager`` (the scheduler gets ``RETRY`` until one batched
existence call per request and step answers, as the leading run), stores and
loads are one batched call per job, straight between Pagoda and the primary
tier's memory. A load that fails reports the blocks that did load
(``successful_keys``), the rest are recomputed; a node that cannot be reached
trips a circuit breaker.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Iterable, List, Optional

from vllm.v1.kv_offload.base import (
    Locality,
    LookupResult,
    Medium,
    OffloadKey,
    ReqContext,
    RequestOffloadingContext,
)
from vllm.v1.kv_offload.tiering.async_lookup import AsyncLookupManager
from vllm.v1.kv_offload.tiering.base import JobResult, SecondaryTierManager, TransferJob

import pagoda
from pagoda import keys as external
from pagoda.integrations._breaker import Breaker

logger = logging.getLogger(__name__)


class _Lookups(AsyncLookupManager):
    """vLLM's async lookups, answered by one Pagoda existence call per batch."""

    def __init__(self, tier: "PagodaTier"):
        super().__init__(tier_type=tier.tier_type)
        self._tier = tier

    def batch_lookup(self, keys: List[OffloadKey], req_context: ReqContext) -> Iterable[bool]:
        leading = self._tier.leading(keys)
        return [index < leading for index in range(len(keys))]


class PagodaTier(SecondaryTierManager):
    """A remote secondary tier on a Pagoda node."""

    medium: ClassVar[Medium] = Medium.CPU

    def __init__(
        self,
        offloading_spec,
        primary_kv_view: memoryview,
        tier_type: str,
        backpressure_detector=None,
        url: str = "http://127.0.0.1:7420",
        token: Optional[str] = None,
        tenant: str = "default",
        model: str = "vllm",
        salt: str = "",
        timeout: float = 5.0,
        threads: int = 2,
        **unused,
    ):
        super().__init__(
            offloading_spec=offloading_spec,
            primary_kv_view=primary_kv_view,
            tier_type=tier_type,
            backpressure_detector=backpressure_detector,
        )
        self.locality = Locality.REMOTE
        self.timeout = float(timeout)
        # The primary tier's memory: chunk c is bytes [c * size, (c + 1) * size).
        self._anchor = ctypes.c_char.from_buffer(primary_kv_view)
        self._base = ctypes.addressof(self._anchor)
        self.breaker = Breaker()
        self.client = pagoda.Client(url, token or os.environ.get("PAGODA_TOKEN"))
        self.namespace = external.open_namespace(self.client, tenant, model, "vllm")
        self.keys = external.ExternalKeys(self.namespace, "vllm", salt)
        self._pool = ThreadPoolExecutor(max(1, int(threads)), thread_name_prefix="pagoda-vllm")
        self._finished: "queue.SimpleQueue[JobResult]" = queue.SimpleQueue()
        self._inflight = 0
        self._failed: dict = {}
        self._idle = threading.Condition()
        self._lookups = _Lookups(self)
        logger.info("Pagoda tier %s: %s, tenant %s, namespace %s", tier_type, url, tenant, self.namespace.id)

    def leading(self, keys: List[OffloadKey]) -> int:
        hashes = self.keys.roots([bytes(key) for key in keys])
        return self.breaker.call(lambda: self.namespace.leading(hashes, self.timeout), 0)

    def lookup(self, key: OffloadKey, req_context: ReqContext) -> LookupResult:
        found = self._lookups.lookup(key, req_context)
        if found is None:
            return LookupResult.RETRY
        return LookupResult.HIT if found else LookupResult.MISS

    def _submit(self, job: TransferJob, run) -> None:
        with self._idle:
            self._inflight += 1

        def task():
            started = time.monotonic()
            try:
                result = run(started)
            except Exception:  # a bug: report the job failed, never hang vLLM
                logger.exception("Pagoda tier job %s", job.job_id)
                result = JobResult(job_id=job.job_id, success=False)
            self._finished.put(result)
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

        self._pool.submit(task)

    def submit_store(self, job_metadata: TransferJob) -> None:
        job = job_metadata
        size = self.block_size_bytes
        items = [
            (None, self.keys.tokens(bytes(key)), self._base + int(chunk) * size, size)
            for key, chunk in zip(job.keys, job.chunk_ids)
        ]

        def run(started: float) -> JobResult:
            results = self.breaker.call(lambda: self.namespace.put_from_addresses(items, self.timeout), None)
            stored = results is not None and all(
                not isinstance(r, pagoda.PagodaError) and r[1] in ("stored", "exists") for r in results
            )
            return JobResult(
                job_id=job.job_id, success=stored,
                transfer_time=time.monotonic() - started, transfer_bytes=len(items) * size,
            )

        self._submit(job, run)

    def submit_load(self, job_metadata: TransferJob) -> None:
        job = job_metadata
        size = self.block_size_bytes
        keys = list(job.keys)
        items = [
            (self.keys.hash(bytes(key)), self._base + int(chunk) * size, size)
            for key, chunk in zip(keys, job.chunk_ids)
        ]

        def run(started: float) -> JobResult:
            results = self.breaker.call(lambda: self.namespace.get_into_addresses(items, self.timeout), None)
            loaded = [] if results is None else [key for key, r in zip(keys, results) if r == size]
            complete = len(loaded) == len(keys)
            if not complete:
                # Marked a miss on the scheduler's side, in get_finished_jobs.
                done = set(loaded)
                self._failed[job.job_id] = [key for key in keys if key not in done]
            return JobResult(
                job_id=job.job_id, success=complete, successful_keys=None if complete else tuple(loaded),
                transfer_time=time.monotonic() - started, transfer_bytes=len(loaded) * size,
            )

        self._submit(job, run)

    def get_finished_jobs(self) -> Iterable[JobResult]:
        finished = []
        while True:
            try:
                result = self._finished.get_nowait()
            except queue.Empty:
                return finished
            failed = self._failed.pop(result.job_id, None)
            if failed:
                self._lookups.mark_miss(failed)
            finished.append(result)

    def has_pending_work(self) -> bool:
        with self._idle:
            return self._inflight > 0

    def on_new_request(self, req_context: ReqContext) -> RequestOffloadingContext:
        return RequestOffloadingContext()

    def on_request_finished(self, req_context: ReqContext) -> None:
        self._lookups.cleanup(req_context.req_id)

    def on_schedule_end(self, context) -> None:
        self._lookups.flush()

    def drain_jobs(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0)

    def shutdown(self) -> None:
        self._lookups.shutdown()
        self._pool.shutdown(wait=True)
        logger.info("Pagoda tier closed (breaker trips: %d)", self.breaker.trips)
