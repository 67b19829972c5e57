#!/usr/bin/env python3
"""WAL archiving benchmark: how fast holdfast archives and restores WAL the
way PostgreSQL drives it (one process per segment, one after another).

Prepares real WAL once: a PostgreSQL 15 cluster under a pgbench load, its
archive_command copying the segments into a directory. Then, per run, on a
fresh local repository:

  push       `holdfast wal-push --key-file K SEG` for every segment,
             sequentially, one process each (as the archiver does): MB/s
  push (pw)  the same with a password (argon2id, default cost) on the first
             few segments, for the ratio
  fetch      `holdfast wal-fetch --key-file K NAME DEST` of single segments:
             wall time per call, process start included
  replay     fetching every segment in order, as restore_command during
             recovery does, with and without --prefetch 8 (between calls the
             bench waits as long as PostgreSQL would need to replay a
             segment, --replay-ms): total time spent waiting in fetches,
             per segment; for --prefetch 8 also how many fetches found
             their segment in the spool and the median cost of those
  replay cp  the same loop with restore_command a plain `cp` from a
             directory of segments: the floor PostgreSQL itself imposes

Figures are medians over --runs runs (each on a fresh repository).

Usage (as root, or a user that can run the PostgreSQL server binaries):
  python3 benches/wal_bench.py [--segments 48] [--runs 5] [--replay-ms 40]
      [--holdfast target/release/holdfast] [--bindir /usr/lib/postgresql/15/bin]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import benchlib  # noqa: E402  (benches/benchlib.py)
from benchlib import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEG = 16 * 1024 * 1024


def sh(cmd, **kw):
    """benchlib.sh with stdout captured (pgbench and psql chatter stays off the report)."""
    return benchlib.sh(cmd, capture=True, **kw)


def prepare_wal(a, work):
    """Real WAL from pgbench, archived by `cp` into work/segs."""
    segs = work / "segs"
    if segs.exists() and len(list(segs.glob("0" * 7 + "1*"))) >= a.segments:
        return sorted(p for p in segs.iterdir() if len(p.name) == 24)[: a.segments]
    for d in ("data",):
        if (work / d / "postmaster.pid").exists():
            sh([f"{a.bindir}/pg_ctl", "-D", str(work / d), "-m", "immediate", "stop"], check=False, as_pg=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chmod(work, 0o777)
    segs.mkdir()
    os.chmod(segs, 0o777)
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    os.chmod(sock, 0o777)
    port = free_port()
    sh([f"{a.bindir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"], as_pg=True)
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"""
listen_addresses = ''
port = {port}
unix_socket_directories = '{sock}'
max_wal_size = 4GB
wal_level = replica
archive_mode = on
archive_command = 'cp %p {segs}/%f'
""")
    sh([f"{a.bindir}/pg_ctl", "-D", str(data), "-l", str(work / "server.log"), "-w", "start"], as_pg=True)
    try:
        pg = ["-h", str(sock), "-p", str(port), "-U", "postgres"]
        sh(["pgbench", "-i", "-s", "20", "-q", *pg, "postgres"])
        while len(list(segs.glob("00000001*"))) < a.segments:
            sh(["pgbench", "-n", "-c", "4", "-T", "10", *pg, "postgres"])
            sh(["psql", "-X", "-q", *pg, "-c", "SELECT pg_switch_wal()", "postgres"])
            time.sleep(1)
    finally:
        sh([f"{a.bindir}/pg_ctl", "-D", str(data), "-m", "fast", "stop"], check=False, as_pg=True)
    return sorted(p for p in segs.iterdir() if len(p.name) == 24)[: a.segments]


def cluster_of(seg):
    with open(seg, "rb") as f:
        head = f.read(32)
    return int.from_bytes(head[24:32], "little")


def one_run(a, work, segs, hf):
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    pw = run / "pw"
    pw.write_text("bench password\n")
    pw.chmod(0o600)
    env = dict(os.environ, HOLDFAST_REPOSITORY=str(run / "repo"), HOLDFAST_PASSWORD_FILE=str(pw))
    sh([hf, "init"], env=env)
    key = run / "wal.key"
    sh([hf, "key", "add", "--new-key-file", str(key)], env=env)
    kenv = dict(env)
    del kenv["HOLDFAST_PASSWORD_FILE"]
    kenv["HOLDFAST_KEY_FILE"] = str(key)
    cluster = str(cluster_of(segs[0]))
    r = {}

    t = time.monotonic()
    for s in segs:
        sh([hf, "-q", "wal-push", str(s)], env=kenv)
    push_s = time.monotonic() - t
    total = sum(s.stat().st_size for s in segs)
    r["push_mb_s"] = total / 1e6 / push_s
    r["push_ms_per_segment"] = push_s * 1000 / len(segs)

    # With a password (argon2id, default cost), a few segments into another repo.
    penv = dict(env, HOLDFAST_REPOSITORY=str(run / "repo-pw"))
    sh([hf, "init"], env=penv)
    few = segs[: min(6, len(segs))]
    t = time.monotonic()
    for s in few:
        sh([hf, "-q", "wal-push", str(s)], env=penv)
    r["push_password_ms_per_segment"] = (time.monotonic() - t) * 1000 / len(few)

    dest_dir = run / "pg_wal"
    dest_dir.mkdir()
    times = []
    for s in segs[: min(12, len(segs))]:
        t = time.monotonic()
        sh([hf, "-q", "wal-fetch", "--cluster", cluster, s.name, str(dest_dir / "RECOVERYXLOG")], env=kenv)
        times.append(time.monotonic() - t)
    r["fetch_ms"] = statistics.median(times) * 1000

    # The floor: restore_command as a plain `cp` from a directory (what
    # PostgreSQL itself imposes: a process start and 16 MiB copied).
    shutil.rmtree(dest_dir)
    dest_dir.mkdir()
    waited = 0.0
    for s in segs:
        t = time.monotonic()
        sh(["cp", str(s), str(dest_dir / "RECOVERYXLOG")])
        waited += time.monotonic() - t
        time.sleep(a.replay_ms / 1000)
    r["replay_fetch_ms_per_segment_cp"] = waited * 1000 / len(segs)

    for prefetch in (0, 8):
        shutil.rmtree(dest_dir)
        dest_dir.mkdir()
        spool = dest_dir / "holdfast-prefetch"
        waited = 0.0
        hits = []
        for s in segs:
            # Whether the spool holds it (looked at before the clock starts).
            spooled = prefetch > 0 and (spool / s.name).exists()
            t = time.monotonic()
            sh([hf, "-q", "wal-fetch", "--prefetch", str(prefetch), "--cluster", cluster, s.name,
                str(dest_dir / "RECOVERYXLOG")], env=kenv)
            dt = time.monotonic() - t
            waited += dt
            if spooled:
                hits.append(dt)
            time.sleep(a.replay_ms / 1000)  # PostgreSQL replaying the segment
        r[f"replay_fetch_ms_per_segment_prefetch{prefetch}"] = waited * 1000 / len(segs)
        if prefetch > 0:
            r[f"spool_hits_prefetch{prefetch}"] = len(hits)
            r[f"spool_hit_ms_prefetch{prefetch}"] = statistics.median(hits) * 1000 if hits else float("nan")
        # let a prefetcher still running finish before the directory goes
        time.sleep(1)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=48)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--replay-ms", type=float, default=40.0)
    ap.add_argument("--work", default="/tmp/hfwalbench")
    ap.add_argument("--holdfast", default=str(ROOT / "target/release/holdfast"))
    ap.add_argument("--bindir", default="/usr/lib/postgresql/15/bin")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    hf = str(Path(a.holdfast).resolve())
    if not Path(hf).exists():
        sys.exit(f"{hf} missing: cargo build --release -p holdfast-cli")
    work = Path(a.work)
    segs = prepare_wal(a, work)
    mb = sum(s.stat().st_size for s in segs) / 1e6
    print(f"{len(segs)} segments of real pgbench WAL ({mb:,.0f} MB), {a.runs} runs", flush=True)
    runs = []
    for i in range(a.runs):
        r = one_run(a, work, segs, hf)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)
        runs.append(r)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print("\nmedians:")
    for k, v in med.items():
        print(f"  {k:<42} {v:8.1f}")
    print(f"  {'replay prefetch8 / cp floor':<42} {med['replay_fetch_ms_per_segment_prefetch8'] / med['replay_fetch_ms_per_segment_cp']:8.2f}x")
    print(f"  {'password push / key-file push':<42} {med['push_password_ms_per_segment'] / med['push_ms_per_segment']:8.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": runs, "medians": med}, indent=2))


if __name__ == "__main__":
    main()
