#!/usr/bin/env bash
# The main job on the embedded default: a local directory repository, no
# cloud account. Builds holdfast, generates a small document store, backs it
# up, changes it, backs it up again (incremental), restores the latest
# snapshot, verifies it byte for byte and checks every blob.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

cargo build --release -p holdfast-cli
hf="${CARGO_TARGET_DIR:-$root/target}/release/holdfast"

work=${HOLDFAST_DEMO_DIR:-"$root/target/demo"}
rm -rf "$work"
mkdir -p "$work"
export HOLDFAST_REPOSITORY="$work/repo"
export HOLDFAST_PASSWORD=${HOLDFAST_PASSWORD:-demo-password}

gen="$root/../shared/bench/gen_corpus.py"
src="$work/documents"
if [ -f "$gen" ]; then
  python3 "$gen" create "$src" --size-mb "${HOLDFAST_DEMO_MB:-64}"
else
  cp -a "$root/examples" "$src"
fi

set -x
"$hf" init
"$hf" backup "$src" --tag demo
[ -f "$gen" ] && python3 "$gen" mutate "$src"
"$hf" backup "$src" --tag demo
"$hf" snapshots
"$hf" restore latest --target "$work/restored"
diff -r "$src" "$work/restored$src"
"$hf" check --read-data
"$hf" stats
set +x
echo "demo ok: repository in $HOLDFAST_REPOSITORY, restore in $work/restored"
