"""The SGLang adapter against the real, pinned SGLang (0.5.23): its own
dynamic-backend factory and a real MHA host pool over CPU tensors, as
SGLang's HiCache controller drives an L3 backend (interface_v1), against a
real node."""

import pytest
import torch

from sglang.srt.mem_cache.device_pool_info import KVBufferLayout, KVBuffers, MHABufferInfo
from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig
from sglang.srt.mem_cache.pool_host.mha import MHATokenToKVPoolHost
from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory

from conftest import TOKENS, Node

LAYERS, HEADS, DIM, PAGE, DEVICE_TOKENS = 2, 2, 8, 4, 64


def host_pool():
    k = tuple(torch.zeros(DEVICE_TOKENS, HEADS, DIM, dtype=torch.bfloat16) for _ in range(LAYERS))
    v = tuple(torch.zeros(DEVICE_TOKENS, HEADS, DIM, dtype=torch.bfloat16) for _ in range(LAYERS))

    def pointers(tensors):
        return torch.tensor([t.data_ptr() for t in tensors], dtype=torch.uint64)

    info = MHABufferInfo(
        buffers=KVBuffers(k=k, v=v, k_data_ptrs=pointers(k), v_data_ptrs=pointers(v), layout=KVBufferLayout.NHD),
        page_size=PAGE, head_num=HEADS, head_dim=DIM, v_head_dim=DIM, dtype=torch.bfloat16,
        device=torch.device("cpu"),
    )
    return MHATokenToKVPoolHost(
        info, host_to_device_ratio=2.0, host_size=0, page_size=PAGE, layout="page_first", pin_memory=False,
        device="cpu", device_capacity_tokens=DEVICE_TOKENS, start_layer=0, end_layer=LAYERS,
    )


def backend(node, token, *, tenant="acme", salt="", tp_rank=0):
    pool = host_pool()
    config = HiCacheStorageConfig(
        tp_rank=tp_rank, tp_size=2, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1, is_mla_model=False,
        enable_storage_metrics=False, is_page_first_layout=True, model_name="llama-test",
        extra_config={
            "backend_name": "pagoda", "module_path": "pagoda.integrations.sglang",
            "class_name": "PagodaHiCacheStorage", "interface_v1": 1,
            "url": node.url, "token": token, "tenant": tenant, "salt": salt,
        },
    )
    storage = StorageBackendFactory.create_backend("dynamic", config, pool)
    storage.register_mem_pool_host(pool)
    return storage, pool


def fill(pool, pages, seed):
    indices = pool.alloc(pages * PAGE)
    generator = torch.Generator().manual_seed(seed)
    pool.kv_buffer[:, indices] = torch.randn(pool.kv_buffer[:, indices].shape, generator=generator).to(torch.bfloat16)
    return indices


def test_pages_round_trip_into_another_pool_and_the_leading_run(node):
    writer, pool = backend(node, TOKENS["acme"])
    keys = [f"{i:064x}" for i in range(1, 5)]
    indices = fill(pool, 4, seed=1)
    assert writer.batch_set_v1(keys[:3], indices[: 3 * PAGE]) == [True] * 3
    assert writer.batch_exists(keys) == 3
    assert writer.exists(keys[0]) and not writer.exists(keys[3])
    # Another server's pool loads them, bit-exact.
    reader, other = backend(node, TOKENS["acme"])
    target = other.alloc(4 * PAGE)
    assert reader.batch_get_v1(keys, target) == [True, True, True, False]
    assert torch.equal(other.kv_buffer[:, target[: 3 * PAGE]], pool.kv_buffer[:, indices[: 3 * PAGE]])


def test_ranks_salts_and_tenants_never_share_pages(node):
    writer, pool = backend(node, TOKENS["acme"])
    keys = [f"{i:064x}" for i in range(100, 102)]
    assert writer.batch_set_v1(keys, fill(pool, 2, seed=2)) == [True, True]
    for other, _ in (
        backend(node, TOKENS["acme"], tp_rank=1),
        backend(node, TOKENS["acme"], salt="user-42"),
        backend(node, TOKENS["globex"], tenant="globex"),
    ):
        assert other.batch_exists(keys) == 0


def test_the_copying_path(node):
    storage, pool = backend(node, TOKENS["acme"])
    page = torch.randn(PAGE * LAYERS * HEADS * DIM * 2, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    assert storage.set("legacy-page", page)
    target = torch.zeros_like(page)
    assert storage.get("legacy-page", target) is target
    assert torch.equal(target, page)
    assert storage.batch_get(["never-stored"], [torch.zeros_like(page)]) == [None]


def test_a_dead_node_fails_loads_and_never_raises(tmp_path):
    node = Node(tmp_path)
    storage, pool = backend(node, TOKENS["acme"])
    keys = ["dead-0"]
    indices = fill(pool, 1, seed=4)
    assert storage.batch_set_v1(keys, indices) == [True]
    node.stop()
    # The node is gone: loads fail (SGLang recomputes), lookups miss, and
    # after three failures in a row the breaker answers without calling.
    assert storage.batch_get_v1(keys, indices) == [False]
    assert storage.batch_exists(keys) == 0
    assert storage.batch_set_v1(keys, indices) == [False]
    assert storage.breaker.open
    assert storage.batch_get_v1(keys, indices) == [False]
