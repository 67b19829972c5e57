#!/usr/bin/env bash
# Serial share and 2-core wall time of full and unchanged backups, and of
# restores, for two holdfast binaries side by side (issue 14).
#
#   benches/serial_share.sh OLD_BIN NEW_BIN CORPUS_DIR [REPEAT] [WORKDIR]
#
# Per repetition, interleaved and with the order swapped every other time:
# full backup into a fresh repository, unchanged re-backup, restore. Each
# command runs under benches/thread_cpu.py, which reports its wall time, its
# CPU time (wait4) and the CPU time of its main thread; one JSON line per
# run goes to WORKDIR/runs.jsonl. The corpus is read once first so that it
# is page-cached, as in the issue's measurement.
set -euo pipefail
old=$1 new=$2 corpus=$3 repeat=${4:-3} work=${5:-/tmp/hf-serial}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work" && mkdir -p "$work"
export HOLDFAST_PASSWORD=bench
tar cf - "$corpus" 2>/dev/null | cat > /dev/null
run() { # label bin repo args...
    local label=$1 bin=$2 repo=$3
    shift 3
    local j
    j=$(HOLDFAST_REPOSITORY=$repo python3 "$here/thread_cpu.py" -- "$bin" "$@" 2>"$work/last.err")
    echo "{\"label\":\"$label\",\"run\":$j}" | tee -a "$work/runs.jsonl"
}
for i in $(seq 1 "$repeat"); do
    if (( i % 2 )); then order="old new"; else order="new old"; fi
    for which in $order; do
        bin=$old; [[ $which == new ]] && bin=$new
        repo=$work/repo-$which-$i
        HOLDFAST_REPOSITORY=$repo "$bin" init --kdf-memory-mib 8 --kdf-iterations 1 >/dev/null
        run "$which full" "$bin" "$repo" backup "$corpus" --quiet
        run "$which unchanged" "$bin" "$repo" backup "$corpus" --quiet
        rm -rf "$work/out"
        run "$which restore" "$bin" "$repo" restore latest --target "$work/out" --quiet
        rm -rf "$work/out" "$repo"
    done
done
python3 - "$work/runs.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
labels = sorted({r["label"] for r in rows})
print(f"{'run':16} {'n':>2} {'wall s':>8} {'CPU s':>7} {'main CPU s':>10} {'main share':>10} {'RSS MiB':>8}")
for lab in labels:
    rs = [r["run"] for r in rows if r["label"] == lab]
    med = lambda k: statistics.median(x[k] for x in rs)
    print(f"{lab:16} {len(rs):>2} {med('wall'):8.2f} {med('total'):7.2f} {med('main'):10.2f} {med('main_share'):10.3f} {med('max_rss_mib'):8.1f}")
EOF
