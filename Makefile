# Pagoda's entry points. `make run` and `make test` are the two commands of
# the README; both install what they need first (scripts/setup.sh).
#
# Builds share one target directory outside the clone, so a second clone or a
# second CI run on the same machine is incremental.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/pagoda-target
FUZZ_SECONDS ?= 10

SEEDS ?= 1000

.PHONY: run demo test setup build lint fuzz fuzz-smoke vectors crash-test bench

setup:
	@scripts/setup.sh

build: setup
	cargo build --release --bin pagoda

# Runs Pagoda: one node with the embedded defaults on loopback (gRPC
# 127.0.0.1:7420, HTTP http://127.0.0.1:7421/, data in ./pagoda-data).
# Stop it with Ctrl-C (SIGINT) or SIGTERM: it syncs its log and exits 0.
run: build
	"$(CARGO_TARGET_DIR)/release/pagoda" serve $(ARGS)

# The worked `pagoda hash` example of formats/SPEC.md.
demo: build
	@scripts/demo.sh "$(CARGO_TARGET_DIR)/release/pagoda"

# The whole test suite: unit, property, golden-vector and end-to-end tests,
# the optional hardware features (cuda, rdma) built and tested on a machine
# without the hardware, the Python package's tests against a real node and
# its engine adapters' tests against the real, pinned engines
# (scripts/python.sh: cached venvs in ~/.cache), and a fuzz smoke run.
test: setup
	cargo test --workspace
	cargo test -p pagoda-worker --features cuda
	cargo test -p pagoda-client --features rdma
	scripts/python.sh test
	scripts/python.sh engines
	$(MAKE) fuzz-smoke

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p pagoda-worker --all-targets --features cuda -- -D warnings
	cargo clippy -p pagoda-client --all-targets --features rdma -- -D warnings

# Every fuzz target for FUZZ_SECONDS (10 s in the smoke run).
fuzz-smoke:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# The long run, by hand: 60 s per target.
fuzz: setup
	scripts/fuzz.sh 60

# Regenerates formats/tests/vectors/ (only when a format version changes).
vectors:
	cargo run -p pagoda-formats --example golden

# The log's crash test for SEEDS seeds (CI runs 12 inside `make test`).
crash-test: build
	"$(CARGO_TARGET_DIR)/release/pagoda" wal crash-test --seeds $(SEEDS)

# The log against raw writes and fsyncs on this machine's filesystem.
bench: build
	"$(CARGO_TARGET_DIR)/release/pagoda" bench wal --dir pagoda-bench
