"""External key schemes (formats/SPEC.md section 20): the golden vectors,
and tenancy and salts through a real node."""

import json
import pathlib

import pytest

import pagoda
from pagoda import keys
from conftest import TOKENS

VECTORS = pathlib.Path(__file__).parents[2] / "formats" / "tests" / "vectors" / "external_keys.json"


def test_golden_vectors():
    cases = json.loads(VECTORS.read_text())["vectors"]
    assert len(cases) >= 5
    for case in cases:
        key = bytes.fromhex(case["key_hex"])
        salt = bytes.fromhex(case["salt_hex"])
        assert keys.key_tokens(case["scheme"], key, salt) == case["tokens"], case["scheme"]


def test_unknown_scheme_is_refused():
    with pytest.raises(ValueError):
        keys.key_tokens("redis", b"k")
    with pytest.raises(ValueError):
        keys.revision("redis")


def test_same_engine_key_two_tenants_disjoint_and_salted_apart(node):
    acme = keys.open_namespace(pagoda.Client(node.url, TOKENS["acme"]), "acme", "llama", "vllm")
    globex = keys.open_namespace(pagoda.Client(node.url, TOKENS["globex"]), "globex", "llama", "vllm")
    engine_keys = [bytes([i]) * 32 for i in range(4)]
    ours = keys.ExternalKeys(acme, "vllm")
    hashes = ours.chain(engine_keys)
    parent = None
    for key in engine_keys:
        parent, outcome = acme.put(parent, ours.tokens(key), b"kv of " + key[:1])
        assert outcome in ("stored", "exists")
    assert acme.leading(hashes) == 4
    theirs = keys.ExternalKeys(globex, "vllm")
    # The same engine keys are other blocks under another tenant...
    assert theirs.chain(engine_keys) != hashes
    assert globex.leading(theirs.chain(engine_keys)) == 0
    # ...and acme's block hashes, known to globex, find nothing there.
    assert globex.leading(hashes) == 0
    assert globex.get(hashes[0]) is None
    # A salt makes other blocks.
    salted = keys.ExternalKeys(acme, "vllm", salt="user-42")
    assert acme.leading(salted.chain(engine_keys)) == 0
    with pytest.raises(ValueError):
        keys.ExternalKeys(pagoda.Client(node.url, TOKENS["acme"]).create_namespace("acme", "llama", "plain"), "vllm")
