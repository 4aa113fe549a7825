"""External key schemes: engines' own block keys as Pagoda blocks.

Every engine hashes its prefix chains its own way and hands a store opaque
keys (vLLM: block hashes; SGLang: SHA-256 hex per page; LMCache:
``model@world_size@worker_id@chunk_hash@dtype`` strings). Pagoda takes them
without giving up tenancy (``formats/SPEC.md`` §20):

- an engine key becomes the 8 "tokens" of one block: the little-endian
  32-bit words of ``SHA-256("pagoda-external-key-v1" 0 scheme 0 salt 0 key)``;
- the block's chain hash is then the tenant's keyed BLAKE3 of those words
  after the block's parent (the usual chain hashing of §4, in a namespace of
  8 tokens per block), so two tenants' identical engine keys are different
  blocks, and nobody without the tenant's chain key can compute, and so
  probe, its blocks' keys;
- the salt (an engine's ``cache_salt``, a LoRA name, request tags) is in
  the digest: salted requests never share an entry with unsalted ones;
- where the engine gives order (vLLM's and SGLang's parent hashes) blocks
  chain to their parents, so existence answers the leading run; LMCache's
  chunk keys already chain in the engine (each chunk hash covers the
  prefix), and are stored as chain roots.
"""

from __future__ import annotations

import hashlib
import struct
from typing import List, Optional, Sequence, Union

#: The schemes a namespace may declare (its revision is ``scheme-<name>``).
SCHEMES = ("vllm", "sglang", "lmcache", "opaque")

#: Tokens per block of an externally keyed namespace: one SHA-256 digest.
BLOCK_TOKENS = 8

_DOMAIN = b"pagoda-external-key-v1"

Key = Union[bytes, str]


def key_tokens(scheme: str, key: Key, salt: Key = b"") -> List[int]:
    """The 8 token words of an engine key under ``scheme`` and ``salt``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown key scheme {scheme!r}; expected one of {SCHEMES}")
    key = key.encode() if isinstance(key, str) else bytes(key)
    salt = salt.encode() if isinstance(salt, str) else bytes(salt)
    digest = hashlib.sha256(_DOMAIN + b"\0" + scheme.encode() + b"\0" + salt + b"\0" + key).digest()
    return list(struct.unpack("<8I", digest))


def revision(scheme: str, revision: str = "") -> str:
    """The namespace revision that declares ``scheme``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown key scheme {scheme!r}; expected one of {SCHEMES}")
    return f"scheme-{scheme}" + (f".{revision}" if revision else "")


class ExternalKeys:
    """Engine keys of one scheme and salt, mapped into a namespace's chain."""

    def __init__(self, namespace, scheme: str, salt: Key = b""):
        if namespace.block_tokens != BLOCK_TOKENS:
            raise ValueError(
                f"an externally keyed namespace has {BLOCK_TOKENS} tokens per block, "
                f"not {namespace.block_tokens}"
            )
        self.namespace = namespace
        self.scheme = scheme
        self.salt = salt

    def tokens(self, key: Key) -> List[int]:
        return key_tokens(self.scheme, key, self.salt)

    def hash(self, key: Key, parent: Optional[bytes] = None) -> bytes:
        """The block hash of ``key`` after ``parent`` (None: a chain root)."""
        return self.namespace.block_hash(parent, self.tokens(key))

    def chain(self, keys: Sequence[Key]) -> List[bytes]:
        """Block hashes of keys in order, each the next one's parent."""
        hashes: List[bytes] = []
        parent = None
        for key in keys:
            parent = self.hash(key, parent)
            hashes.append(parent)
        return hashes

    def roots(self, keys: Sequence[Key]) -> List[bytes]:
        """Block hashes of keys each stored as a chain root."""
        return [self.hash(key) for key in keys]


def open_namespace(client, tenant: str, model: str, scheme: str, revision_: str = ""):
    """Creates (or finds) the externally keyed namespace of a model."""
    return client.create_namespace(tenant, model, revision(scheme, revision_), block_tokens=BLOCK_TOKENS)
