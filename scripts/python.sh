#!/usr/bin/env bash
# The Python package: builds it into a cached virtual environment and runs
# its tests against a real node (`scripts/python.sh test`), or only builds it
# (`scripts/python.sh develop`). The venv is $PAGODA_VENV, by default
# ~/.cache/pagoda-venv, made once with the pinned build and test tools; the
# Rust side builds into the shared $CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pagoda-target}"
venv="${PAGODA_VENV:-$HOME/.cache/pagoda-venv}"
tools=("maturin>=1.9,<2" "pytest>=7" "numpy")
if [ ! -x "$venv/bin/python" ]; then
    echo "python: making $venv"
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import maturin, pytest, numpy" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "${tools[@]}"
fi
export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
maturin develop --quiet --manifest-path python/Cargo.toml
case "${1:-test}" in
    develop) ;;
    test)
        cargo build --quiet --bin pagoda
        PAGODA_BIN="$CARGO_TARGET_DIR/debug/pagoda" python -m pytest -q python/tests
        ;;
    *) echo "usage: scripts/python.sh [test|develop]" >&2; exit 2 ;;
esac
