#!/usr/bin/env bash
# What `make run` shows: the pagoda binary's version, then the chain hashes of
# 33 tokens in a demo namespace (the worked example of formats/SPEC.md, 6.2).
set -euo pipefail
pagoda=${1:-pagoda}
demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
printf 'tenant-one-secret-0123456789' > "$demo/secret"

"$pagoda" --version
echo
echo "\$ seq 1 33 | pagoda hash --tenant t1 --model m --revision r1 --block-tokens 16 --secret-file secret"
seq 1 33 | "$pagoda" hash --tenant t1 --model m --revision r1 --block-tokens 16 \
  --secret-file "$demo/secret"
