"""The LMCache adapter against the real, pinned LMCache (0.5.6): its own
StorageManager, LocalCPUBackend and RemoteBackend on CPU, loading
``pagoda.integrations.lmcache`` as a remote storage plugin, against a real
node."""

import time

import pytest
import torch

from lmcache.utils import CacheEngineKey
from lmcache.v1.config import LMCacheEngineConfig
from lmcache.v1.event_manager import EventManager
from lmcache.v1.memory_management import MemoryFormat
from lmcache.v1.metadata import LMCacheMetadata
from lmcache.v1.storage_backend.storage_manager import StorageManager

from conftest import TOKENS

CHUNK = 16
SHAPE = (2, 2, CHUNK, 4, 8)  # layers, K/V, tokens, heads, head dim: 4 KiB a chunk in bf16


def manager(url, token, *, tenant="acme", salt="", instance="pagoda-test"):
    config = LMCacheEngineConfig.from_defaults(
        chunk_size=CHUNK, local_cpu=False, max_local_cpu_size=0.1, remote_serde="naive",
        lmcache_instance_id=instance,
    )
    config.remote_storage_plugins = ["pagoda"]
    config.extra_config = {
        "remote_storage_plugin.pagoda.module_path": "pagoda.integrations.lmcache",
        "remote_storage_plugin.pagoda.class_name": "PagodaConnector",
        "remote_storage_plugin.pagoda.url": url,
        "remote_storage_plugin.pagoda.token": token,
        "remote_storage_plugin.pagoda.tenant": tenant,
        "remote_storage_plugin.pagoda.salt": salt,
        "save_chunk_meta": False,
    }
    metadata = LMCacheMetadata(
        model_name="llama-test", world_size=1, local_world_size=1, worker_id=0, local_worker_id=0,
        kv_dtype=torch.bfloat16, kv_shape=SHAPE, chunk_size=CHUNK,
    )
    storage = StorageManager(config, metadata, EventManager())
    assert "RemoteBackend-pagoda" in storage.storage_backends, list(storage.storage_backends)
    return storage, metadata


def chunk_keys(first, count):
    return [CacheEngineKey("llama-test", 1, 0, 0x5EED0000 + first + i, torch.bfloat16) for i in range(count)]


def chunks(storage, metadata, count, seed):
    generator = torch.Generator().manual_seed(seed)
    objs = []
    for _ in range(count):
        obj = storage.allocate(metadata.get_shapes(), metadata.get_dtypes(), fmt=MemoryFormat.KV_2LTD)
        obj.tensor.copy_(torch.randn(obj.tensor.shape, generator=generator).to(torch.bfloat16))
        objs.append(obj)
    return objs


def connector(storage):
    return storage.storage_backends["RemoteBackend-pagoda"].connection


def wait_stored(storage, keys):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(storage.contains(key) for key in keys):
            return
        time.sleep(0.05)
    raise AssertionError("the puts did not land")


def test_store_then_load_identical_bytes_and_a_second_instance_hits(node):
    writer, metadata = manager(node.url, TOKENS["acme"], instance="writer")
    keys = chunk_keys(0, 8)
    objs = chunks(writer, metadata, 8, seed=1)
    expected = [obj.tensor.clone() for obj in objs]
    writer.batched_put(keys, objs)
    wait_stored(writer, keys)
    # Another LMCache instance (its own process's view: no local CPU tier)
    # loads the same prefix from Pagoda.
    reader, _ = manager(node.url, TOKENS["acme"], instance="reader")
    for key, tensor in zip(keys, expected):
        got = reader.get(key)
        assert got is not None, key
        assert torch.equal(got.tensor, tensor), key
        got.ref_count_down()
    writer.close()
    reader.close()


def test_leading_run_in_one_call(node):
    storage, metadata = manager(node.url, TOKENS["acme"], instance="leading")
    keys = chunk_keys(100, 5)
    storage.batched_put(keys[:3] + keys[4:], chunks(storage, metadata, 4, seed=2))
    wait_stored(storage, keys[:3] + keys[4:])
    remote = connector(storage)
    assert remote.batched_contains(keys) == 3
    assert remote.batched_contains(keys[:3]) == 3
    assert remote.batched_contains(keys[3:]) == 0
    storage.close()


def test_salted_and_other_tenant_requests_miss(node):
    storage, metadata = manager(node.url, TOKENS["acme"], instance="owner")
    keys = chunk_keys(200, 2)
    storage.batched_put(keys, chunks(storage, metadata, 2, seed=3))
    wait_stored(storage, keys)
    salted, _ = manager(node.url, TOKENS["acme"], salt="user-42", instance="salted")
    other, _ = manager(node.url, TOKENS["globex"], tenant="globex", instance="other")
    for storage_ in (salted, other):
        assert connector(storage_).batched_contains(keys) == 0
        assert all(storage_.get(key) is None for key in keys)
    for storage_ in (storage, salted, other):
        storage_.close()


def test_hundreds_of_chunks_through_lmcache_and_the_hit_counts_agree(node):
    """LMCache's own storage path stores 300 chunks through Pagoda; another
    instance asks for them and 100 never stored: LMCache's hits and
    Pagoda's (the node's per-tenant stats) agree."""
    writer, metadata = manager(node.url, TOKENS["acme"], instance="demo-writer")
    stored = chunk_keys(1000, 300)
    for start in range(0, 300, 50):
        batch = stored[start : start + 50]
        writer.batched_put(batch, chunks(writer, metadata, len(batch), seed=start))
        wait_stored(writer, batch)
    before = node.tenant_stats(TOKENS["acme"], "acme")
    reader, _ = manager(node.url, TOKENS["acme"], instance="demo-reader")
    asked = stored + chunk_keys(5000, 100)
    lmcache_hits = 0
    for key in asked:
        if reader.contains(key):
            got = reader.get(key)
            if got is not None:
                lmcache_hits += 1
                got.ref_count_down()
    after = node.tenant_stats(TOKENS["acme"], "acme")
    pagoda_hits = (after["hits_dram"] + after["hits_ssd"]) - (before["hits_dram"] + before["hits_ssd"])
    print(f"LMCache: {lmcache_hits} hits of {len(asked)} asked ({lmcache_hits / len(asked):.1%}); "
          f"Pagoda: {pagoda_hits} block hits, {after['misses'] - before['misses']} misses")
    assert lmcache_hits == 300
    assert pagoda_hits == lmcache_hits
    writer.close()
    reader.close()


def test_a_dead_node_is_a_miss_not_a_stall(node):
    storage, metadata = manager("http://127.0.0.1:9", TOKENS["acme"], instance="dead")
    key = chunk_keys(9000, 1)[0]
    storage.batched_put([key], chunks(storage, metadata, 1, seed=9))
    assert not storage.contains(key)
    assert storage.get(key) is None
    storage.close()
