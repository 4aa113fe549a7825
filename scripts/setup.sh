#!/usr/bin/env bash
# Installs what building and testing Pagoda needs, and nothing that is already
# there: safe to run again and again (`make run` and `make test` call it).
#
# - Debian packages: only the missing ones, with apt-get (as root, or sudo).
# - The Rust toolchain pinned in rust-toolchain.toml (through rustup).
# - A nightly toolchain and cargo-fuzz, for the fuzz targets in fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# C/C++ compilers for blake3's assembly and RocksDB, make for the Makefile,
# python3 for scripts/fuzz.sh's corpus seeding, python3-dev and python3-venv
# for the Python package (pyo3 links libpython in a plain cargo build;
# scripts/python.sh makes a venv), libclang-dev for RocksDB's
# bindgen, cmake and clang for rdma-mummy-sys (the `rdma` feature's verbs
# bindings; rdma-core itself is loaded at run time), redis-server for the
# baseline of `pagoda bench --compare redis`, chromium for the headless test
# of the status page, etcd-server and etcd-client (etcdctl) for cluster mode
# and its tests, protobuf-compiler and libprotobuf-dev (the well-known types)
# for etcd-client's generated code.
packages=(build-essential python3 python3-dev python3-venv libclang-dev cmake clang redis-server chromium openssl
  etcd-server etcd-client protobuf-compiler libprotobuf-dev)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install rustup from https://rustup.rs, then run this again"
  exit 1
fi
pinned=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup toolchain list | grep -q "^$pinned"; then
  say "installing Rust $pinned (pinned in rust-toolchain.toml)"
  rustup toolchain install "$pinned" --profile minimal --component rustfmt,clippy
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain (for cargo fuzz)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi
