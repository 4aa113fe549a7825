"""The Python package against a real node: bytes in and out of every kind of
buffer, batches, ranges, misses, existence, errors, tenancy, and the submit
and asyncio forms."""

import array
import asyncio
import os

import pytest

import pagoda
from conftest import TOKENS

BLOCK = 64 << 10


def payload(seed: int, length: int = BLOCK) -> bytes:
    return bytes((seed * 31 + i) % 251 for i in range(length))


def tokens(block: int, count: int = 16):
    return [block * 100 + i for i in range(count)]


@pytest.fixture(scope="module")
def acme(node):
    return pagoda.Client(node.url, TOKENS["acme"])


@pytest.fixture(scope="module")
def ns(acme):
    return acme.create_namespace("acme", "llama", "python-tests")


def put_chain(ns, first: int, blocks: int):
    parent = pagoda.ROOT
    hashes = []
    for block in range(first, first + blocks):
        hash, outcome = ns.put(parent, tokens(block), payload(block))
        assert outcome in ("stored", "exists")
        hashes.append(hash)
        parent = hash
    return hashes


def test_same_host_picks_shared_memory(acme):
    stats = acme.stats()
    assert stats["transport"] == "shm"
    assert acme.transport == "shm"


def test_put_get_round_trip_and_keys(ns):
    hashes = put_chain(ns, 0, 4)
    assert hashes == ns.hash_tokens(sum((tokens(b) for b in range(4)), []))
    assert ns.block_hash(hashes[0], tokens(1)) == hashes[1]
    for block, hash in enumerate(hashes):
        assert ns.get(hash) == payload(block)
    assert ns.get(hashes[2], 100, 50) == payload(2)[100:150]
    # The same bytes again: exists; other bytes under the same key: diverged.
    assert ns.put(pagoda.ROOT, tokens(0), payload(0)) == (hashes[0], "exists")
    assert ns.put(pagoda.ROOT, tokens(0), payload(99))[1] == "diverged"
    assert ns.get(hashes[0]) == payload(0)
    # A block whose parent is not cached is not stored.
    assert ns.put(os.urandom(32), tokens(7), payload(7))[1] == "parent_missing"


def test_get_into_every_kind_of_buffer(acme, ns):
    hashes = put_chain(ns, 10, 3)
    expected = b"".join(payload(b) for b in range(10, 13))
    registered = acme.buffer(3 * BLOCK)
    targets = [registered, bytearray(3 * BLOCK), memoryview(bytearray(3 * BLOCK)), array.array("B", bytes(3 * BLOCK))]
    try:
        import numpy

        targets.append(numpy.zeros(3 * BLOCK, dtype=numpy.uint8))
        targets.append(numpy.zeros((3, BLOCK // 2), dtype=numpy.uint16))
    except ImportError:
        pass
    for target in targets:
        got = ns.get_into(hashes, target, BLOCK)
        assert got == [BLOCK] * 3, type(target)
        view = target.view if isinstance(target, pagoda.Buffer) else memoryview(target).cast("B")
        assert bytes(view) == expected, type(target)


def test_registered_buffer_wraps_without_copy(acme, ns):
    numpy = pytest.importorskip("numpy")
    buffer = acme.buffer(BLOCK)
    array = numpy.frombuffer(buffer.view, dtype=numpy.uint8)
    hash, _ = ns.put(pagoda.ROOT, tokens(20), payload(20))
    assert ns.get_into([hash], buffer, BLOCK) == [BLOCK]
    # The array sees the bytes the node wrote into the registered memory.
    assert array.tobytes() == payload(20)
    # And puts leave from it: write, put, read back.
    array[:] = numpy.frombuffer(payload(21), dtype=numpy.uint8)
    [(stored, outcome)] = ns.put_many([(pagoda.ROOT, tokens(21), 0, BLOCK)], buffer)
    assert outcome == "stored"
    assert ns.get(stored) == payload(21)


def test_put_many_from_any_buffer_and_ranges(ns):
    data = bytearray(b"".join(payload(b) for b in range(30, 34)))
    parent = pagoda.ROOT
    items = []
    for i, block in enumerate(range(30, 34)):
        items.append((parent, tokens(block), i * BLOCK, BLOCK))
        parent = ns.block_hash(parent, tokens(block))
    results = ns.put_many(items, data)
    assert [outcome for _, outcome in results] == ["stored"] * 4
    hashes = [hash for hash, _ in results]
    out = bytearray(300)
    got = ns.get_ranges_into([(hashes[1], 0, 100, 10, 100), (hashes[3], 100, 200, 1000, 200)], out)
    assert got == [100, 200]
    assert bytes(out[:100]) == payload(31)[10:110]
    assert bytes(out[100:]) == payload(33)[1000:1200]


def test_misses_failures_and_bad_arguments(ns):
    hash, _ = ns.put(pagoda.ROOT, tokens(40), payload(40))
    out = bytearray(2 * BLOCK)
    got = ns.get_into([os.urandom(32), hash], out, BLOCK)
    assert got[0] is None and got[1] == BLOCK
    # A block longer than its room fails alone, as an error value.
    got = ns.get_ranges_into([(hash, 0, 10, 0, 0)], out)
    assert isinstance(got[0], pagoda.PagodaError)
    with pytest.raises(pagoda.PagodaError) as error:
        ns.get(b"short")
    assert error.value.name == "INVALID_ARGUMENT" and error.value.code == 3
    with pytest.raises(pagoda.PagodaError):
        ns.get_ranges_into([(hash, 2 * BLOCK, BLOCK, 0, 0)], out)
    with pytest.raises(TypeError):
        ns.get_into([hash], b"read-only", BLOCK)
    # A put item past the end of its source is refused before anything moves.
    with pytest.raises(pagoda.PagodaError) as error:
        ns.put_many([(pagoda.ROOT, tokens(41), 10, BLOCK)], bytearray(BLOCK))
    assert error.value.name == "INVALID_ARGUMENT"


def test_existence_is_the_leading_run(ns):
    hashes = put_chain(ns, 50, 8)
    assert ns.leading(hashes) == 8
    assert ns.exists(hashes) == ["dram"] * 8
    probe = hashes[:3] + [os.urandom(32)] + hashes[4:]
    assert ns.leading(probe) == 3
    assert ns.lookup(sum((tokens(b) for b in range(50, 58)), [])) == (8, ["dram"] * 8)


def test_remove_pin_unpin(ns):
    hashes = put_chain(ns, 60, 3)
    lease, pinned = ns.pin(hashes, 60.0)
    assert pinned == 3
    assert ns.unpin(lease) is True
    # A soft pin (pin-for-soon) hints the blocks but holds nothing: the
    # remove below takes them all while its lease is open.
    soft, hinted = ns.expect_soon(hashes, 60.0)
    assert hinted == 3
    assert ns.remove(hashes) == 3
    assert ns.unpin(soft) is True
    assert ns.leading(hashes) == 0
    assert ns.get(hashes[0]) is None
    # A hint may name blocks nobody has put yet (a request ahead in the
    # queue will): none is in DRAM now, the lease is taken all the same.
    soft, hinted = ns.expect_soon(hashes, 60.0)
    assert hinted == 0
    assert ns.unpin(soft) is True


def test_submit_poll_and_asyncio(ns):
    hashes = put_chain(ns, 70, 4)
    out = bytearray(4 * BLOCK)
    future = ns.submit.get_into(hashes, out, BLOCK)
    assert future.result(timeout=30) == [BLOCK] * 4
    assert future.done()
    assert bytes(out) == b"".join(payload(b) for b in range(70, 74))

    async def main():
        return await asyncio.gather(*(ns.aio.get(hash) for hash in hashes))

    assert asyncio.run(main()) == [payload(b) for b in range(70, 74)]


def test_tenants_never_meet(node, ns):
    hash, _ = ns.put(pagoda.ROOT, tokens(80), payload(80))
    globex = pagoda.Client(node.url, TOKENS["globex"])
    theirs = globex.create_namespace("globex", "llama", "python-tests")
    # The same tokens are another key under another tenant.
    assert theirs.hash_tokens(tokens(80)) != [hash]
    assert theirs.get(hash) is None
    assert theirs.leading([hash]) == 0
    # Acme's namespace does not exist for globex.
    with pytest.raises(pagoda.PagodaError) as error:
        globex.namespace(ns.id)
    assert error.value.name in ("NOT_FOUND", "PERMISSION_DENIED")


def test_auth_errors(node, ns):
    with pytest.raises(pagoda.PagodaError) as error:
        pagoda.Client(node.url, "pgd_nobody").create_namespace("acme", "llama", "x")
    assert error.value.name == "UNAUTHENTICATED"
    reader = pagoda.Client(node.url, TOKENS["acme_reader"]).namespace(ns.id)
    with pytest.raises(pagoda.PagodaError) as error:
        reader.put(pagoda.ROOT, tokens(90), payload(90))
    assert error.value.name == "PERMISSION_DENIED"


def test_tcp_returns_the_same_bytes(node, ns):
    hashes = put_chain(ns, 100, 3)
    tcp = pagoda.Client(node.url, TOKENS["acme"], transport="tcp")
    assert tcp.transport == "tcp"
    theirs = tcp.namespace(ns.id)
    for target in (tcp.buffer(3 * BLOCK), bytearray(3 * BLOCK)):
        assert theirs.get_into(hashes, target, BLOCK) == [BLOCK] * 3
        view = target.view if isinstance(target, pagoda.Buffer) else memoryview(target)
        assert bytes(view) == b"".join(payload(b) for b in range(100, 103))
    data = bytearray(payload(110))
    assert theirs.put_many([(pagoda.ROOT, tokens(110), 0, BLOCK)], data)[0][1] == "stored"
    assert ns.get(ns.hash_tokens(tokens(110))[0]) == payload(110)
    with pytest.raises(pagoda.PagodaError):
        pagoda.Client(node.url, TOKENS["acme"], transport="carrier-pigeon")


def test_scattered_memory_by_address(ns):
    import ctypes

    sources = [ctypes.create_string_buffer(payload(b, 5000), 5000) for b in (120, 121)]
    items = [(pagoda.ROOT, tokens(120 + i), ctypes.addressof(s), 5000) for i, s in enumerate(sources)]
    results = ns.put_from_addresses(items)
    assert [outcome for _, outcome in results] == ["stored", "stored"]
    targets = [ctypes.create_string_buffer(5000) for _ in range(3)]
    got = ns.get_into_addresses(
        [(results[1][0], ctypes.addressof(targets[0]), 5000),
         (os.urandom(32), ctypes.addressof(targets[1]), 5000),
         (results[0][0], ctypes.addressof(targets[2]), 5000)]
    )
    assert got[0] == 5000 and got[1] is None and got[2] == 5000
    assert targets[0].raw == payload(121, 5000) and targets[2].raw == payload(120, 5000)
    assert targets[1].raw == bytes(5000)


def test_calls_work_again_once_a_restarted_node_is_back(tmp_path):
    import socket

    from conftest import Node

    def free_port():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    grpc, http = free_port(), free_port()
    first = Node(tmp_path / "a", grpc, http)
    client = pagoda.Client(first.url, TOKENS["acme"])
    ns = client.create_namespace("acme", "llama", "restart")
    hash, _ = ns.put(pagoda.ROOT, tokens(130), payload(130))
    first.stop()
    with pytest.raises(pagoda.PagodaError) as error:
        ns.get_into([hash], bytearray(BLOCK), BLOCK)
    assert error.value.name == "UNAVAILABLE"
    # The same node again (memory durability: its blocks are gone); the
    # client connects a new data plane by itself.
    second = Node(tmp_path / "b", grpc, http)
    try:
        ns = client.create_namespace("acme", "llama", "restart")
        assert ns.get_into([hash], bytearray(BLOCK), BLOCK) == [None]
        assert ns.put(pagoda.ROOT, tokens(130), payload(130))[1] == "stored"
        assert ns.get(hash) == payload(130)
    finally:
        second.stop()
