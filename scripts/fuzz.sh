#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ and runs each for SECONDS seconds (default
# 60), seeded from the golden vectors and fuzz/seeds/. Needs the nightly
# toolchain and cargo-fuzz (scripts/setup.sh installs cargo-fuzz).
#
#   scripts/fuzz.sh            # every target, 60 s each
#   scripts/fuzz.sh 10 record  # one target, 10 s
#
# Prints libFuzzer's final stats line per target; a crash stops the script
# with libFuzzer's report and the reproducer under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(record segment_scan block_header block_record block_key namespace segment_header log_dir wire_frame)
fi

# Seed corpora from the golden vectors: every "encoding" hex string becomes a
# corpus file of the target that decodes it.
python3 - <<'PY'
import json, pathlib
vectors = pathlib.Path("formats/tests/vectors")
seeds = {"record": "record.json", "segment_scan": "record.json",
         "segment_header": None, "log_dir": None,
         "block_header": "block.json", "block_key": "key.json",
         "namespace": "namespace.json", "wire_frame": None}
def encodings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "encoding":
                yield bytes.fromhex(item)
            else:
                yield from encodings(item)
    elif isinstance(value, list):
        for item in value:
            yield from encodings(item)
for target, name in seeds.items():
    corpus = pathlib.Path("fuzz/corpus") / target
    corpus.mkdir(parents=True, exist_ok=True)
    if name is None:
        continue
    for index, data in enumerate(encodings(json.loads((vectors / name).read_text()))):
        if target == "segment_scan":
            data = bytes([3]) + data
        (corpus / f"golden-{index}").write_bytes(data)
# Targets without golden vectors: fuzz/seeds/TARGET.hex holds one input per
# line, in hex ('#' starts a comment line).
for seeds_file in sorted(pathlib.Path("fuzz/seeds").glob("*.hex")):
    corpus = pathlib.Path("fuzz/corpus") / seeds_file.stem
    corpus.mkdir(parents=True, exist_ok=True)
    lines = [line.strip() for line in seeds_file.read_text().splitlines()]
    for index, line in enumerate(l for l in lines if l and not l.startswith("#")):
        (corpus / f"seed-{index}").write_bytes(bytes.fromhex(line))
PY

# Share the workspace's stable target directory when one is set (as `make`
# and .ci/run do), so fuzz builds are incremental across clones too.
target_dir=()
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  target_dir=(--target-dir "$CARGO_TARGET_DIR/fuzz")
  unset CARGO_TARGET_DIR
fi

cd fuzz
cargo +nightly fuzz build "${target_dir[@]}"
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  cargo +nightly fuzz run "${target_dir[@]}" "$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|Done|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)' \
    || { echo "fuzz target $target failed"; exit 1; }
done
