#!/usr/bin/env bash
# The Python package: builds it into a cached virtual environment and runs
# its tests against a real node (`scripts/python.sh test`), or only builds it
# (`scripts/python.sh develop`), or runs the engine adapters' tests against
# the real, pinned engine packages (`scripts/python.sh engines`). The venvs
# are $PAGODA_VENV (default ~/.cache/pagoda-venv: build and test tools) and
# $PAGODA_ENGINES_VENV (default ~/.cache/pagoda-engines-venv: the engines,
# about 3 GB with torch), each made once; the Rust side builds into the
# shared $CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pagoda-target}"
venv="${PAGODA_VENV:-$HOME/.cache/pagoda-venv}"
tools=("maturin>=1.9,<2" "pytest>=7" "numpy")
nodeps=()
if [ "${1:-test}" = engines ]; then
    venv="${PAGODA_ENGINES_VENV:-$HOME/.cache/pagoda-engines-venv}"
    # The engines, pinned (docs/integrations.md): torch from PyPI (its CUDA
    # build runs on CPU), then LMCache with its dependencies.
    tools+=("torch==2.14.1" "lmcache==0.5.6")
    # vLLM and SGLang pin versions of torch, transformers and grpcio that
    # cannot share one environment with LMCache (docs/integrations.md): they
    # go in without their dependencies, with what their offloading and
    # HiCache modules import, pinned.
    nodeps=("vllm==0.33.0" "sglang==0.5.23")
    tools+=("cbor2==6.3.0" "cloudpickle==3.1.3" "llguidance==1.9.1" "openai==3.57.0"
        "openai-harmony==0.0.8" "partial-json-parser==0.2.1.1.post7" "uvloop==0.23.0" "xgrammar==0.2.9"
        "orjson==3.13.0" "pybase64==1.5.1" "pillow==13.0.0" "ipython==9.18.1" "torchvision==0.29.2"
        "dill==0.4.1" "apache-tvm-ffi==0.1.11" "sentencepiece==0.2.3" "compressed-tensors==0.20.1"
        "gguf==0.19.0")
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "python: making $venv"
    python3 -m venv "$venv"
fi
marker="$venv/.pagoda-tools"
wanted="${tools[*]} ${nodeps[*]:-}"
if [ "$(cat "$marker" 2>/dev/null)" != "$wanted" ]; then
    echo "python: installing into $venv: $wanted"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "${tools[@]}"
    if [ -n "${nodeps[*]:-}" ]; then
        "$venv/bin/pip" install --quiet --no-deps "${nodeps[@]}"
    fi
    echo "$wanted" > "$marker"
fi
export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
maturin develop --quiet --manifest-path python/Cargo.toml
case "${1:-test}" in
    develop) ;;
    test)
        cargo build --quiet --bin pagoda
        PAGODA_BIN="$CARGO_TARGET_DIR/debug/pagoda" python -m pytest -q python/tests --ignore=python/tests/engines
        ;;
    engines)
        cargo build --quiet --bin pagoda
        PAGODA_BIN="$CARGO_TARGET_DIR/debug/pagoda" python -m pytest -q python/tests/engines
        ;;
    *) echo "usage: scripts/python.sh [test|develop|engines]" >&2; exit 2 ;;
esac
