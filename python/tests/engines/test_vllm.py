"""The vLLM tier against the real, pinned vLLM (0.33.0): its own
TieringOffloadingManager over its CPU primary tier, loading
``pagoda.integrations.vllm.PagodaTier`` through its tier factory, driven as
vLLM's own tiering unit tests drive it (a primary region over a CPU tensor,
the offloading spec mocked as there), against a real node."""

import time
from unittest.mock import MagicMock

import pytest
import torch

from vllm.v1.kv_offload.base import LookupResult, ReqContext, ScheduleEndContext, make_offload_key
from vllm.v1.kv_offload.tiering.factory import SecondaryTierFactory
from vllm.v1.kv_offload.tiering.manager import CPUPrimaryTierOffloadingManager, TieringOffloadingManager

from conftest import TOKENS

CHUNKS, ROW = 8, 256


def tiering(node, token, *, tenant="acme", salt=""):
    region = MagicMock()
    backing = torch.zeros((CHUNKS, ROW), dtype=torch.int8)
    region.create_kv_memoryview.return_value = memoryview(backing.numpy())
    primary = CPUPrimaryTierOffloadingManager(num_chunks=CHUNKS, mmap_region=region)
    tier = SecondaryTierFactory.create_secondary_tier(
        {"type": "PagodaTier", "module_path": "pagoda.integrations.vllm", "url": node.url, "token": token,
         "tenant": tenant, "model": "llama-test", "salt": salt},
        primary.get_kv_memoryview(), MagicMock(),
    )
    manager = TieringOffloadingManager(primary_tier=primary, secondary_tiers=[tier], tier_poll_interval_s=0)
    return manager, tier, backing


def step(manager, new=()):
    manager.on_schedule_end(ScheduleEndContext(new_req_ids=list(new), preempted_req_ids=()))
    list(manager.take_events())


def settle(manager, keys, ctx, want):
    """Steps the scheduler until every key's lookup is `want` (vLLM answers
    RETRY and HIT_PENDING meanwhile)."""
    deadline = time.monotonic() + 30
    results = []
    while time.monotonic() < deadline:
        results = [manager.lookup(key, ctx) for key in keys]
        if all(result is want for result in results):
            return
        step(manager)
        time.sleep(0.01)
    raise AssertionError(f"lookups stayed {results}")


def store(manager, tier, backing, keys):
    ctx = ReqContext(req_id="writer")
    manager.on_new_request(ctx)
    manager.prepare_store(keys, ctx)
    generator = torch.Generator().manual_seed(len(keys))
    backing[: len(keys)] = torch.randint(-128, 127, (len(keys), ROW), generator=generator, dtype=torch.int8)
    written = backing[: len(keys)].clone()
    manager.complete_store(keys, ctx, success=True)  # cascades to Pagoda
    tier.drain_jobs()
    step(manager)
    return written


def test_blocks_cascade_to_pagoda_and_another_instance_loads_them(node):
    writer, tier, backing = tiering(node, TOKENS["acme"])
    keys = [make_offload_key(bytes([i]) * 32, 0) for i in range(3)]
    written = store(writer, tier, backing, keys)
    assert tier.leading(keys) == 3
    # Another vLLM instance: its CPU tier is empty, Pagoda has the blocks.
    reader, _, other = tiering(node, TOKENS["acme"])
    ctx = ReqContext(req_id="reader")
    reader.on_new_request(ctx)
    settle(reader, keys, ctx, LookupResult.HIT)
    loaded = sorted(other[c].clone().tolist() for c in range(CHUNKS) if other[c].any())
    assert loaded == sorted(row.tolist() for row in written)
    writer.shutdown()
    reader.shutdown()


def test_salted_and_other_tenant_lookups_miss(node):
    writer, tier, backing = tiering(node, TOKENS["acme"])
    keys = [make_offload_key(bytes([40 + i]) * 32, 0) for i in range(2)]
    store(writer, tier, backing, keys)
    for token, tenant, salt in ((TOKENS["acme"], "acme", "user-42"), (TOKENS["globex"], "globex", "")):
        other, _, _ = tiering(node, token, tenant=tenant, salt=salt)
        ctx = ReqContext(req_id=f"other-{tenant}-{salt}")
        other.on_new_request(ctx)
        settle(other, keys, ctx, LookupResult.MISS)
        other.shutdown()
    writer.shutdown()
