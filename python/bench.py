"""Python `get_into` against memcpy and the Rust client, in one run.

    python python/bench.py [--pagoda PATH] [--seconds 2] [--sizes 65536,1048576,4194304]

Starts a `pagoda serve` node (durability memory), puts a chain of blocks,
then for each block size and transport (shm, tcp) gets them in batches into
a registered buffer and into a numpy array (staged: one more copy), for
`--seconds` each. Baselines of the same run: `memcpy` of the same bytes
(numpy, from rings larger than the caches, one thread) and the Rust
client's get figure from `pagoda bench` on the same block size (one
connection, batches as here). Prints a markdown table of GB/s and ratios.
Absolute figures on a shared machine are noise; the ratios are the result.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy

import pagoda

BATCH_BYTES = 64 << 20
RING_BYTES = 256 << 20


def start_node(binary: str, directory: pathlib.Path):
    config = directory / "bench.toml"
    config.write_text(
        f'grpc_addr = "127.0.0.1:0"\nhttp_addr = "127.0.0.1:0"\ndata_dir = "{directory / "data"}"\n'
        'durability = "memory"\ndram_bytes = "2GiB"\n'
    )
    process = subprocess.Popen(
        [binary, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PAGODA_LOG="warn"),
    )
    url = None
    for line in process.stdout:
        if line.startswith("listening grpc="):
            url = "http://" + line.split()[1].split("=", 1)[1]
        if line.strip() == "ready":
            return process, url
    raise RuntimeError("the node exited before it was ready")


def memcpy_gbps(block: int, seconds: float) -> float:
    blocks = max(2, RING_BYTES // block)
    source = numpy.ones(blocks * block, dtype=numpy.uint8)
    target = numpy.zeros(blocks * block, dtype=numpy.uint8)
    moved, start, index = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        at = (index % blocks) * block
        numpy.copyto(target[at : at + block], source[at : at + block])
        moved += block
        index += 1
    return moved / (time.perf_counter() - start) / 1e9


def rust_gbps(binary: str, block: int, seconds: float) -> dict:
    """The Rust client's get GB/s per transport from `pagoda bench`."""
    out = subprocess.run(
        [binary, "bench", "--block-bytes", str(block), "--concurrency", "1",
         "--duration", str(seconds), "--transport", "tcp,shm"],
        capture_output=True, text=True, check=True,
        env=dict(os.environ, PAGODA_LOG="warn"),
    ).stdout
    figures = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) > 5 and cells[0] in ("pagoda tcp", "pagoda shm"):
            figures[cells[0].split()[1]] = float(cells[5])
    return figures


def measure(client: pagoda.Client, ns: pagoda.Namespace, block: int, seconds: float) -> dict:
    batch = max(1, min(64, BATCH_BYTES // block))
    source = client.buffer(batch * block)
    numpy.frombuffer(source.view, dtype=numpy.uint8)[:] = numpy.random.default_rng(block).integers(
        0, 256, batch * block, dtype=numpy.uint8
    )
    parent = pagoda.ROOT
    items = []
    for i in range(batch):
        tokens = [block + i * ns.block_tokens + t for t in range(ns.block_tokens)]
        items.append((parent, tokens, i * block, block))
        parent = ns.block_hash(parent, tokens)
    results = ns.put_many(items, source)
    hashes = [hash for hash, _ in results]
    figures = {}
    for name, target in (("registered", client.buffer(batch * block)),
                         ("numpy", numpy.zeros(batch * block, dtype=numpy.uint8))):
        moved, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            got = ns.get_into(hashes, target, block)
            if got != [block] * batch:
                raise RuntimeError(f"get_into answered {got[:3]}...")
            moved += batch * block
        figures[name] = moved / (time.perf_counter() - start) / 1e9
    view = numpy.frombuffer(target, dtype=numpy.uint8)
    if not numpy.array_equal(view, numpy.frombuffer(source.view, dtype=numpy.uint8)):
        raise RuntimeError("the bytes got differ from the bytes put")
    ns.remove(hashes)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/pagoda-target"))
    parser.add_argument("--pagoda", default=os.path.join(target, "release", "pagoda"))
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--sizes", default="65536,1048576,4194304")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pagoda-pybench-") as directory:
        process, url = start_node(args.pagoda, pathlib.Path(directory))
        try:
            for block in sizes:
                memcpy = memcpy_gbps(block, args.seconds)
                rust = rust_gbps(args.pagoda, block, args.seconds)
                for transport in ("shm", "tcp"):
                    print(f"{block >> 10} KiB over {transport}...", file=sys.stderr)
                    client = pagoda.Client(url, transport=transport)
                    ns = client.create_namespace("default", "bench", f"py-{transport}-{block}")
                    figures = measure(client, ns, block, args.seconds)
                    rows.append((block, transport, figures, memcpy, rust.get(transport, float("nan"))))
        finally:
            process.terminate()
            process.wait()
    print("| block | transport | registered GB/s | numpy GB/s | memcpy GB/s | Rust client GB/s "
          "| registered × memcpy | registered × Rust | numpy × Rust |")
    print("|---|---|---|---|---|---|---|---|---|")
    for block, transport, figures, memcpy, rust in rows:
        registered, staged = figures["registered"], figures["numpy"]
        print(f"| {block >> 10} KiB | {transport} | {registered:.2f} | {staged:.2f} | {memcpy:.2f} | {rust:.2f} "
              f"| {registered / memcpy:.2f} | {registered / rust:.2f} | {staged / rust:.2f} |")


if __name__ == "__main__":
    main()
