#!/usr/bin/env python3
"""Drill benchmark: what a drill costs over doing the same by hand.

Two comparisons (issue 11), each as interleaved repeated runs, reported as
ratios of medians with the drill's phase breakdown:

  files  `holdfast drill run` of a playbook that restores the standard
         document corpus (shared/bench/gen_corpus.py, 1 GiB by default)
         into a scratch directory and verifies every file against the
         snapshot, against a bare `holdfast restore` of the same snapshot
         plus a full content verification (`diff -r` of every restored file
         against the corpus). Target: drill <= 1.15x.
  ehr    a drill of the EHR database (shared/bench/ehr_db.sql; logical
         backup, restored into a scratch cluster the drill creates, one SQL
         check), against initdb + server start + `pg_restore -j2` of an
         equivalent dump (`pg_dump -Fc -Z0` of the same database, a local
         file) into a fresh database. Target: drill <= 1.15x.

The drill's wall time is the whole `drill run` command (opening the
repository, restore, checks, records, teardown of the scratch target); the
baseline's is the restore and its verification (or initdb + start +
pg_restore), without removing what it made (reported apart as cleanup).
Within every repetition the two run back to back, and which goes first
alternates, so background noise lands on both; `sync` runs before each, so
one's dirty pages are not written back on the other's clock (the page cache
is not dropped: the corpus and repository are warm for both alike).

Usage (as root, or a user that can run the PostgreSQL server binaries):
  python3 benches/drill_bench.py [--repeat 3] [--work /var/tmp/hfdrillbench]
      [--corpus-mb 1024] [--patients 60000] [--only files|ehr]
      [--holdfast target/release/holdfast] [--bindir /usr/lib/postgresql/15/bin]
      [--json results.json]

Python 3 standard library only. Exit 1 when a drill or a baseline fails.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True
from benchlib import free_port, sh  # noqa: E402  (benches/benchlib.py)

ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
TARGET = 1.15


def timed(fn):
    t = time.monotonic()
    out = fn()
    return time.monotonic() - t, out


def med(v):
    return statistics.median(v) if v else float("nan")


def pg_own(path):
    """Let the postgres user (the scratch clusters' owner) into `path`."""
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def run_drill(hf, env, playbook, report):
    """One `drill run`; its wall time and report (exit if it did not pass)."""
    t, r = timed(lambda: subprocess.run([hf, "-q", "drill", "run", str(playbook), "--report-json", str(report)],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    if r.returncode != 0:
        sys.exit(f"drill failed ({r.returncode}): {r.stderr}\n{report.read_text() if report.exists() else ''}")
    return t, json.loads(report.read_text())


def phases_of(report):
    """Phase name -> seconds, summed over the drill's restores."""
    out = {}
    for rs in report["restores"]:
        for p in rs["phases"]:
            out[p["name"]] = out.get(p["name"], 0.0) + p["seconds"]
    return out


def summarize(name, drills, baselines, baseline_parts, reports):
    """Print and return the medians, the ratio and the phase breakdown."""
    d, b = med(drills), med(baselines)
    rto = med([r["rto_seconds"] for r in reports])
    names = []
    for r in reports:
        for n in phases_of(r):
            if n not in names:
                names.append(n)
    phases = {n: med([phases_of(r).get(n, 0.0) for r in reports]) for n in names}
    parts = {k: med(v) for k, v in baseline_parts.items()}
    ratio = d / b
    print(f"\n[{name}] medians over {len(drills)} interleaved runs")
    print(f"  drill run (whole command)   {d:8.2f} s   runs: {', '.join(f'{x:.2f}' for x in drills)}")
    print(f"    of which RTO (to checked) {rto:8.2f} s")
    for n, s in phases.items():
        print(f"      {n:<24}{s:8.2f} s")
    print(f"  baseline                    {b:8.2f} s   runs: {', '.join(f'{x:.2f}' for x in baselines)}")
    for k, v in parts.items():
        print(f"      {k:<24}{v:8.2f} s")
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"  ratio drill / baseline      {ratio:8.2f}x  (target <= {TARGET}: {verdict}); "
          f"RTO / baseline {rto / b:.2f}x")
    return {"drill_s": drills, "baseline_s": baselines, "drill_median_s": d, "baseline_median_s": b,
            "rto_median_s": rto, "ratio": ratio, "rto_ratio": rto / b, "phases_median_s": phases,
            "baseline_parts_median_s": parts}


def bench_files(a, hf, work, pw):
    corpus = work / "corpus"
    if not (corpus / ".complete").exists():
        if corpus.exists():
            shutil.rmtree(corpus)
        print(f"generating the {a.corpus_mb} MiB corpus ...", flush=True)
        sh([sys.executable, str(SHARED / "bench/gen_corpus.py"), "create", str(corpus), "--size-mb", str(a.corpus_mb)])
        (corpus / ".complete").write_text("")
    repo, scratch, target = work / "repo-files", work / "scratch-files", work / "restored-files"
    for p in (repo, scratch, target):
        if p.exists():
            shutil.rmtree(p)
    scratch.mkdir()
    env = dict(os.environ, HOLDFAST_REPOSITORY=str(repo), HOLDFAST_PASSWORD_FILE=str(pw))
    env.pop("HOLDFAST_PASSWORD", None)
    sh([hf, "-q", "init"], env=env)
    t, _ = timed(lambda: sh([hf, "-q", "backup", "--source", "docs", str(corpus)], env=env))
    print(f"backed up the corpus in {t:.1f} s", flush=True)
    pb = work / "files-drill.toml"
    pb.write_text(f'''name = "bench-documents"
[snapshot]
source = "docs"
pick = "latest"
[target]
kind = "directory"
parent = "{scratch}"
[[check]]
kind = "files"
[objectives]
rto = "1h"
rpo = "30d"
''')
    restored_root = target / str(corpus).lstrip("/")
    drills, baselines, reports = [], [], []
    parts = {"restore": [], "verify (diff -r)": [], "cleanup (not counted)": []}

    def drill():
        sh(["sync"])
        t, r = run_drill(hf, env, pb, work / "files-report.json")
        drills.append(t)
        reports.append(r)
        print(f"  drill    {t:7.2f} s  (RTO {r['rto_seconds']:.2f} s)", flush=True)

    def baseline():
        sh(["sync"])
        tr, _ = timed(lambda: sh([hf, "-q", "restore", "latest", "--target", str(target)], env=env))
        tv, v = timed(lambda: sh(["diff", "-r", "--no-dereference", "-q", str(corpus), str(restored_root),
                                  "--exclude=.complete"], check=False, capture=True))
        if v.returncode != 0:
            sys.exit(f"restored tree differs from the corpus:\n{v.stdout}{v.stderr}")
        tc, _ = timed(lambda: shutil.rmtree(target))
        parts["restore"].append(tr)
        parts["verify (diff -r)"].append(tv)
        parts["cleanup (not counted)"].append(tc)
        baselines.append(tr + tv)
        print(f"  baseline {tr + tv:7.2f} s  (restore {tr:.2f} + verify {tv:.2f}; cleanup {tc:.2f})", flush=True)

    for i in range(a.repeat):
        print(f"files run {i + 1} of {a.repeat}", flush=True)
        for f in ((drill, baseline) if i % 2 == 0 else (baseline, drill)):
            f()
    out = summarize(f"files: {a.corpus_mb} MiB corpus", drills, baselines, parts, reports)
    out["corpus_mb"] = a.corpus_mb
    return out


def bench_ehr(a, hf, work, pw):
    B = lambda t: f"{a.bindir}/{t}"
    pgwork = work / "pg"
    if pgwork.exists():
        for d in pgwork.glob("*/postmaster.pid"):
            sh([B("pg_ctl"), "-D", str(d.parent), "-m", "immediate", "stop"], check=False, as_pg=True, capture=True)
        shutil.rmtree(pgwork)
    pgwork.mkdir()
    os.chmod(pgwork, 0o777)
    sock = pgwork / "sock"
    sock.mkdir()
    os.chmod(sock, 0o777)
    scratch = work / "scratch-ehr"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    os.chmod(scratch, 0o777)

    def cluster(data, port):
        """initdb + configure as the drill's scratch clusters are (no fsync)."""
        sh([B("initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=trust", "--no-sync",
            "-E", "UTF8", "--locale=C"], as_pg=True, capture=True)
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{sock}'\n"
                    "fsync = off\nsynchronous_commit = off\nlogging_collector = off\narchive_mode = off\n")
        sh([B("pg_ctl"), "-D", str(data), "-l", str(data.parent / f"{data.name}.log"), "-w", "start"],
           as_pg=True, capture=True)

    def stop(data):
        sh([B("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], as_pg=True, check=False, capture=True)

    src, port = pgwork / "source", free_port()
    cluster(src, port)
    psql = lambda db, sql: sh(["psql", "-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-h", str(sock), "-p", str(port),
                               "-U", "postgres", "-d", db, "-c", sql], capture=True).stdout.strip()
    results = {}
    try:
        psql("postgres", "CREATE DATABASE ehr")
        t, _ = timed(lambda: sh(["psql", "-X", "-q", "-h", str(sock), "-p", str(port), "-U", "postgres",
                                 "-v", f"patients={a.patients}", "-f", str(SHARED / "bench/ehr_db.sql"), "ehr"],
                                capture=True))
        psql("ehr", "VACUUM ANALYZE")
        size = int(psql("ehr", "SELECT pg_database_size('ehr')"))
        patients = int(psql("ehr", "SELECT count(*) FROM patient"))
        print(f"built the EHR database ({a.patients} patients, {size / 1e6:,.0f} MB) in {t:.1f} s", flush=True)
        repo = work / "repo-ehr"
        if repo.exists():
            shutil.rmtree(repo)
        env = dict(os.environ, HOLDFAST_REPOSITORY=str(repo), HOLDFAST_PASSWORD_FILE=str(pw),
                   HOLDFAST_PG_BINDIR=a.bindir, TMPDIR=str(scratch))
        env.pop("HOLDFAST_PASSWORD", None)
        sh([hf, "-q", "init"], env=env)
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=ehr"
        t, _ = timed(lambda: sh([hf, "-q", "backup", "--source", "ehr", "--postgres", dsn, "--database", "ehr"],
                                env=env))
        print(f"holdfast logical backup in {t:.1f} s", flush=True)
        dump = pgwork / "ehr.dump"
        pgenv = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="postgres")
        t, _ = timed(lambda: sh([B("pg_dump"), "-Fc", "-Z0", "-f", str(dump), "ehr"], env=pgenv))
        os.chmod(dump, 0o644)
        print(f"pg_dump -Fc -Z0: {dump.stat().st_size / 1e6:,.0f} MB in {t:.1f} s", flush=True)
    finally:
        stop(src)
    pb = work / "ehr-drill.toml"
    pb.write_text(f'''name = "bench-ehr"
[snapshot]
source = "ehr"
pick = "latest"
[target]
kind = "postgres-scratch"
[[check]]
kind = "sql"
name = "patients present"
query = "SELECT count(*) FROM patient"
expect = {patients}
[objectives]
rto = "2h"
rpo = "30d"
timeout = "4h"
''')
    drills, baselines, reports = [], [], []
    parts = {"initdb + start": [], "createdb + pg_restore -j2": [], "cleanup (not counted)": []}

    def drill():
        sh(["sync"])
        t, r = run_drill(hf, env, pb, work / "ehr-report.json")
        drills.append(t)
        reports.append(r)
        print(f"  drill    {t:7.2f} s  (RTO {r['rto_seconds']:.2f} s)", flush=True)

    def baseline():
        sh(["sync"])
        data, p2 = pgwork / "baseline", free_port()
        ts, _ = timed(lambda: cluster(data, p2))
        env2 = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(p2), PGUSER="postgres")
        tr, _ = timed(lambda: (sh([B("createdb"), "ehr"], env=env2),
                               sh([B("pg_restore"), "-j2", "-d", "ehr", str(dump)], env=env2)))
        n = sh(["psql", "-X", "-Atq", "-h", "127.0.0.1", "-p", str(p2), "-U", "postgres", "-d", "ehr",
                "-c", "SELECT count(*) FROM patient"], capture=True).stdout.strip()
        if int(n) != patients:
            sys.exit(f"pg_restore gave {n} patients, expected {patients}")

        def clean():
            stop(data)
            shutil.rmtree(data)
        tc, _ = timed(clean)
        parts["initdb + start"].append(ts)
        parts["createdb + pg_restore -j2"].append(tr)
        parts["cleanup (not counted)"].append(tc)
        baselines.append(ts + tr)
        print(f"  baseline {ts + tr:7.2f} s  (initdb+start {ts:.2f} + pg_restore {tr:.2f}; cleanup {tc:.2f})",
              flush=True)

    for i in range(a.repeat):
        print(f"ehr run {i + 1} of {a.repeat}", flush=True)
        for f in ((drill, baseline) if i % 2 == 0 else (baseline, drill)):
            f()
    out = summarize(f"ehr: {a.patients} patients, {size / 1e6:,.0f} MB database", drills, baselines, parts, reports)
    out.update({"patients": a.patients, "db_bytes": size, "dump_bytes": dump.stat().st_size})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default="/var/tmp/hfdrillbench")
    ap.add_argument("--corpus-mb", type=int, default=1024)
    ap.add_argument("--patients", type=int, default=60000, help="EHR scale (about 16 KB each; 60000 ~ 1 GB)")
    ap.add_argument("--only", choices=["files", "ehr"])
    ap.add_argument("--holdfast", default=str(ROOT / "target/release/holdfast"))
    ap.add_argument("--bindir", default="/usr/lib/postgresql/15/bin")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    if a.repeat < 1:
        sys.exit("--repeat must be at least 1")
    hf = str(Path(a.holdfast).resolve())
    if not Path(hf).exists():
        sys.exit(f"{hf} missing: cargo build --release -p holdfast-cli")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    pw = work / "password"
    pw.write_text("drill bench password\n")
    os.chmod(pw, 0o600)
    results = {}
    if a.only in (None, "files"):
        results["files"] = bench_files(a, hf, work, pw)
    if a.only in (None, "ehr"):
        results["ehr"] = bench_ehr(a, hf, work, pw)
    print("\nsummary (ratio of medians, drill / baseline, target <= 1.15):")
    for k, v in results.items():
        print(f"  {k}: {v['ratio']:.2f}x (RTO only: {v['rto_ratio']:.2f}x)")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
