#!/usr/bin/env python3
"""What the progress scanner costs a backup.

Backs up a tree of small files (where per-entry work dominates) with the
scanner on (`--progress-interval`, which counts files and bytes ahead for the
progress total) and off (no progress shown), alternating, and prints the
medians of wall time and of CPU time (user + system) and their ratios.

    python3 benches/progress_scan.py [--holdfast PATH] [--files 20000] [--repeat 7]
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time


def make_tree(root, files):
    per_dir = 100
    for i in range(files):
        d = os.path.join(root, f"d{i // per_dir}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i % per_dir}"), "wb") as fh:
            fh.write(os.urandom(1024 + i % 3072))


def run(cmd, env):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main():
    ap = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--holdfast", default=os.path.join(target, "release", "holdfast"))
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="hf-scan-")
    try:
        src = os.path.join(work, "src")
        make_tree(src, a.files)
        env = dict(os.environ, HOLDFAST_REPOSITORY=os.path.join(work, "repo"), HOLDFAST_PASSWORD="bench")
        env.pop("HOLDFAST_PASSWORD_FILE", None)
        hf = a.holdfast
        subprocess.run([hf, "init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"], env=env, check=True, capture_output=True)
        subprocess.run([hf, "backup", src], env=env, check=True, capture_output=True)
        # --force re-reads every file (all deduplicated): the walk, reads and
        # hashing are measured, not uploads.
        res = {"scan": [], "no scan": []}
        for _ in range(a.repeat):
            res["scan"].append(run([hf, "--progress-interval", "1h", "backup", "--force", src], env))
            res["no scan"].append(run([hf, "backup", "--force", src], env))
        wall = {k: statistics.median(w for w, _ in v) for k, v in res.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in res.items()}
        print(f"{a.files} files, medians of {a.repeat} alternating runs, load average {os.getloadavg()[0]:.1f}")
        for k in res:
            print(f"  {k:8} wall {wall[k]:.3f} s  cpu {cpu[k]:.3f} s")
        print(f"  ratio scan / no scan: wall {wall['scan'] / wall['no scan']:.2f}x, cpu {cpu['scan'] / cpu['no scan']:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
