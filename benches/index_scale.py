#!/usr/bin/env python3
"""Index scale: what opening, backing up into and restoring from a repository
of 1, 10 and 50 million blobs costs in memory and time.

For each size N, in a scratch directory:

    init                       a local repository (cheap key derivation)
    synth                      N random index entries, written as real sealed
                               index objects by the hidden command
                               `holdfast bench-synth-index --entries N`
                               (65,536 entries per object, packs of 1,024
                               16 KiB blocks: a 1 TB cluster is 67 million)
    open, cold cache           `holdfast bench-open`: open, load the index,
                               building the cache's sorted runs
    open, warm cache           the same again (the figure the target is about)
    backup (small tree)        a 200-file tree, 6 MiB, into the big repository
    backup (changed tree)      the same tree with 5 files changed
    restore one file           `restore latest --include` of one file

Every step is one process; we record its wall time and its peak RSS
(ru_maxrss from wait4). The cache lives in the scratch directory
(HOLDFAST_CACHE_DIR). With --before BIN, the backup steps are also run with
an older holdfast binary (the in-memory hash-map index) for comparison.

    cargo build --release -p holdfast-cli
    python3 benches/index_scale.py --entries 1000000,10000000,50000000 \\
        --holdfast target/release/holdfast --json-out /tmp/index-scale.json

Targets (issue 8): peak RSS under 300 MB at 50 million entries, open under
2 s with a warm cache.

With --many-objects N (and --s3-latency-ms 25) it also opens a repository
of N small index objects, as months of `wal-push` leave, with no cache,
cold and warm, locally and on S3 (moto) through benches/s3proxy.py:

    python3 benches/index_scale.py --entries 0 --many-objects 5000 --s3-latency-ms 25

Python 3 standard library only.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True   # no benches/__pycache__ in the checkout
PASSWORD = "index-scale-bench"


def measure(argv, env, log):
    """(wall s, peak RSS MiB, stdout) of one command; exits on failure."""
    t = time.monotonic()
    with open(log, "ab") as lf:
        lf.write(("$ " + " ".join(argv) + "\n").encode())
        lf.flush()
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=lf)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t
    if p.returncode != 0:
        sys.exit(f"index_scale.py: {' '.join(argv)} exited {p.returncode} (log: {log})")
    return wall, ru.ru_maxrss / 1024.0, out


def small_tree(root, seed):
    rng = random.Random(seed)
    for d in range(10):
        os.makedirs(os.path.join(root, f"dir{d}"), exist_ok=True)
        for f in range(20):
            with open(os.path.join(root, f"dir{d}", f"file{f}.txt"), "wb") as fh:
                fh.write(rng.randbytes(30_000))


def change(root, seed):
    rng = random.Random(seed)
    for d in range(5):
        with open(os.path.join(root, f"dir{d}", "file3.txt"), "wb") as fh:
            fh.write(rng.randbytes(30_000))


def one_size(n, args, work):
    home = os.path.join(work, f"n{n}")
    shutil.rmtree(home, ignore_errors=True)
    os.makedirs(home)
    log = os.path.join(home, "commands.log")
    env = dict(os.environ)
    env.update({
        "HOLDFAST_REPOSITORY": os.path.join(home, "repo"),
        "HOLDFAST_PASSWORD": PASSWORD,
        "HOLDFAST_CACHE_DIR": os.path.join(home, "cache"),
    })
    hf = args.holdfast
    row = {"entries": n}
    measure([hf, "init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"], env, log)
    w, rss, out = measure([hf, "--no-cache", "bench-synth-index", "--entries", str(n)], env, log)
    row["synth"] = {"wall_s": w, "rss_mib": rss, **json.loads(out)}
    print(f"  {n:>11,} entries: synthesized in {w:.1f}s", flush=True)
    for label in ("open_cold", "open_warm"):
        w, rss, out = measure([hf, "bench-open"], env, log)
        row[label] = {"wall_s": w, "rss_mib": rss, **json.loads(out)}
        print(f"  {label:<16} wall {w:7.2f}s  peak RSS {rss:7.1f} MiB  "
              f"(load_index {row[label]['load_index_s']:.2f}s, {row[label]['runs']} run(s))", flush=True)
    src = os.path.join(home, "src")
    small_tree(src, 1)
    w, rss, _ = measure([hf, "backup", src, "--json"], env, log)
    row["backup"] = {"wall_s": w, "rss_mib": rss}
    print(f"  {'backup':<16} wall {w:7.2f}s  peak RSS {rss:7.1f} MiB", flush=True)
    change(src, 2)
    w, rss, _ = measure([hf, "backup", src, "--json"], env, log)
    row["backup_changed"] = {"wall_s": w, "rss_mib": rss}
    print(f"  {'backup changed':<16} wall {w:7.2f}s  peak RSS {rss:7.1f} MiB", flush=True)
    target = os.path.join(home, "restored")
    one = os.path.join(src, "dir3", "file3.txt")
    w, rss, _ = measure([hf, "restore", "latest", "--target", target, "--include", one], env, log)
    got = open(os.path.join(target, one.lstrip("/")), "rb").read()
    if got != open(one, "rb").read():
        sys.exit("index_scale.py: the restored file differs from its source")
    row["restore_file"] = {"wall_s": w, "rss_mib": rss}
    print(f"  {'restore file':<16} wall {w:7.2f}s  peak RSS {rss:7.1f} MiB", flush=True)
    if args.before:
        # The same backups with the older binary (it ignores the cache).
        b_src = os.path.join(home, "src-before")
        small_tree(b_src, 3)
        w, rss, _ = measure([args.before, "backup", b_src, "--json"], env, log)
        row["before_backup"] = {"wall_s": w, "rss_mib": rss}
        print(f"  {'before: backup':<16} wall {w:7.2f}s  peak RSS {rss:7.1f} MiB", flush=True)
    cache = os.path.join(home, "cache")
    row["cache_bytes"] = sum(os.path.getsize(os.path.join(d, f))
                             for d, _, fs in os.walk(cache) for f in fs)
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    return row


def many_objects(args, work):
    """Open a repository of `--many-objects` small index objects (what
    months of `wal-push` leave: one object per WAL segment), cold and warm,
    locally and, with --s3-latency-ms, on S3 (moto) through the counting
    proxy with that delay added to every request."""
    import s3proxy   # benches/s3proxy.py
    from benchlib import free_port
    n = args.many_objects
    out = {"objects": n}
    targets = [("local", None)]
    if args.s3_latency_ms is not None:
        targets.append(("s3", args.s3_latency_ms))
    for where, latency in targets:
        home = os.path.join(work, f"many-{where}")
        shutil.rmtree(home, ignore_errors=True)
        os.makedirs(home)
        log = os.path.join(home, "commands.log")
        env = dict(os.environ)
        env.update({"HOLDFAST_PASSWORD": PASSWORD, "HOLDFAST_CACHE_DIR": os.path.join(home, "cache")})
        moto = proxy = None
        if where == "local":
            env["HOLDFAST_REPOSITORY"] = os.path.join(home, "repo")
        else:
            port = free_port()
            moto = subprocess.Popen([args.moto, "-H", "127.0.0.1", "-p", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(100):
                try:
                    import urllib.request
                    urllib.request.urlopen(urllib.request.Request(
                        f"http://127.0.0.1:{port}/many", method="PUT"))
                    break
                except OSError:
                    time.sleep(0.2)
            proxy = s3proxy.CountingProxy(upstream_port=port, latency_ms=latency).start()
            env.update({"HOLDFAST_REPOSITORY": "s3://many/repo", "HOLDFAST_S3_ENDPOINT": proxy.endpoint,
                        "HOLDFAST_S3_PATH_STYLE": "true", "HOLDFAST_S3_ALLOW_HTTP": "true",
                        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_REGION": "us-east-1"})
        try:
            hf = args.holdfast
            measure([hf, "init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"], env, log)
            measure([hf, "--no-cache", "bench-synth-index", "--entries", str(3 * n), "--per-object", "3"],
                    env, log)
            row = {}
            for label, extra in (("no_cache", ["--no-cache"]), ("cold", []), ("warm", [])):
                before = proxy.snapshot("many") if proxy else None
                w, rss, o = measure([hf] + extra + ["bench-open"], env, log)
                row[label] = {"wall_s": w, "rss_mib": rss, **json.loads(o)}
                if proxy:
                    row[label]["requests"] = s3proxy.diff_counts(proxy.snapshot("many"), before)["groups"]
                print(f"  {n} index objects, {where}{f' +{latency:g} ms' if latency else ''}, "
                      f"{label:<8} wall {w:6.2f}s  RSS {rss:6.1f} MiB"
                      + (f"  requests {row[label]['requests']}" if proxy else ""), flush=True)
            out[where] = row
        finally:
            if proxy:
                proxy.stop()
            if moto:
                moto.terminate()
                moto.wait()
    return out


def table(rows):
    head = ("entries", "open cold s", "RSS MiB", "open warm s", "RSS MiB", "backup s", "RSS MiB",
            "changed s", "RSS MiB", "restore 1 s", "RSS MiB", "before: backup RSS MiB")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        cells = [f"{r['entries']:,}"]
        for k in ("open_cold", "open_warm", "backup", "backup_changed", "restore_file"):
            cells += [f"{r[k]['wall_s']:.2f}", f"{r[k]['rss_mib']:.0f}"]
        cells.append(f"{r['before_backup']['rss_mib']:.0f}" if "before_backup" in r else "-")
        lines.append(" | ".join(cells))
    return "\n".join("| " + l + " |" for l in lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", default="1000000,10000000,50000000",
                   help="comma-separated index sizes (default 1M,10M,50M)")
    p.add_argument("--holdfast", default=os.path.join(os.path.dirname(__file__), "..", "target",
                                                       "release", "holdfast"))
    p.add_argument("--before", help="an older holdfast binary to compare backups with")
    p.add_argument("--workdir", help="scratch directory (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep repositories and caches")
    p.add_argument("--json-out", help="write the measurements here")
    p.add_argument("--many-objects", type=int, default=0,
                   help="also open a repository of this many small index objects (wal-push style)")
    p.add_argument("--s3-latency-ms", type=float,
                   help="with --many-objects: also on S3 (moto) with this delay per request")
    p.add_argument("--moto", default=os.environ.get("HOLDFAST_MOTO_SERVER", "moto_server"))
    args = p.parse_args()
    if not os.access(args.holdfast, os.X_OK):
        sys.exit(f"index_scale.py: {args.holdfast} is not executable (cargo build --release -p holdfast-cli)")
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="holdfast-index-scale-"))
    os.makedirs(work, exist_ok=True)
    rows = []
    for n in [int(x) for x in args.entries.split(",") if x.strip() and int(x) > 0]:
        print(f"[{time.strftime('%H:%M:%S')}] {n:,} entries", flush=True)
        rows.append(one_size(n, args, work))
    many = many_objects(args, work) if args.many_objects else None
    print()
    if rows:
        print(table(rows))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"rows": rows, "table": table(rows) if rows else None, "many_objects": many,
                       "cpus": os.cpu_count(), "loadavg": os.getloadavg()}, f, indent=2)


if __name__ == "__main__":
    main()
