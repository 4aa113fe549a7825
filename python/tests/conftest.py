"""A real `pagoda serve` node for the tests (the binary from PAGODA_BIN, or
the workspace's debug build), with two tenants and memory durability."""

import json
import os
import pathlib
import urllib.request
import subprocess
import tempfile

import pytest

TOKENS = {
    "acme": "pgd_acme_admin_token",
    "acme_reader": "pgd_acme_reader_token",
    "globex": "pgd_globex_admin_token",
}


def _binary() -> str:
    explicit = os.environ.get("PAGODA_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/pagoda-target"))
    return os.path.join(target, "debug", "pagoda")


def _hash(binary: str, token: str) -> str:
    out = subprocess.run([binary, "token", token], check=True, capture_output=True, text=True).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("blake3"))


class Node:
    def __init__(self, directory: pathlib.Path, grpc_port: int = 0, http_port: int = 0):
        binary = _binary()
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "node.toml"
        config.write_text(
            f"""grpc_addr = "127.0.0.1:{grpc_port}"
http_addr = "127.0.0.1:{http_port}"
data_dir = "{directory / 'data'}"
durability = "memory"
dram_bytes = "256MiB"

[[tenants]]
name = "acme"
secret_hex = "{'a1' * 32}"
tokens = [{{ blake3 = "{_hash(binary, TOKENS['acme'])}", role = "admin" }}, {{ blake3 = "{_hash(binary, TOKENS['acme_reader'])}", role = "read" }}]

[[tenants]]
name = "globex"
secret_hex = "{'b2' * 32}"
tokens = [{{ blake3 = "{_hash(binary, TOKENS['globex'])}", role = "admin" }}]
"""
        )
        env = dict(os.environ, PAGODA_LOG="warn")
        self.process = subprocess.Popen(
            [binary, "serve", "--config", str(config)], stdout=subprocess.PIPE, text=True, env=env
        )
        self.url = None
        self.http = None
        for line in self.process.stdout:
            if line.startswith("listening grpc="):
                fields = dict(field.split("=", 1) for field in line.split()[1:])
                self.url = "http://" + fields["grpc"]
                self.http = "http://" + fields["http"]
            if line.strip() == "ready":
                break
        if self.url is None:
            raise RuntimeError("the node exited before it was ready")

    def stats(self, token: str) -> dict:
        """The node's /v1/stats as a tenant's token sees it."""
        request = urllib.request.Request(self.http + "/v1/stats", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def tenant_stats(self, token: str, tenant: str) -> dict:
        return next(t for t in self.stats(token)["tenants"] if t["name"] == tenant)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def node():
    with tempfile.TemporaryDirectory(prefix="pagoda-python-") as directory:
        started = Node(pathlib.Path(directory))
        yield started
        started.stop()
