#!/usr/bin/env python3
"""PostgreSQL benchmark: holdfast vs pg_dump (+zstd) and pgBackRest, side by side.

Builds the synthetic EHR database (shared/bench/ehr_db.sql), applies one day
of changes (ehr_day.sql) and measures, in one run on one cluster:

  logical   pg_dump -Fc -Z0 alone; pg_dump -Fc -Z0 | zstd -3;
            holdfast backup --postgres day 1 and day 2 (bytes stored on day 2
            vs a full compressed dump); holdfast restore --to-postgres --jobs 2
  physical  pgBackRest (zstd 3, aes-256-cbc, process-max 2) full and
            incremental; holdfast backup --postgres-physical full and day 2;
            restore of both (file layout), WAL replay reported separately.

With --workload pgbench the database is `pgbench -i -s SCALE` instead (default
scale 20) and day 2 is `pgbench -c 2 -T SECONDS` of the default TPC-B-like
transactions; only the physical backups (full, then incremental) and their
restores are measured. --runs N repeats the whole measurement on fresh
clusters and repositories and reports the median of each ratio.

Usage (as root or as a user that can run the PostgreSQL server binaries):
  python3 benches/postgres_bench.py [--patients 60000] [--work /tmp/hfpgbench]
      [--holdfast target/release/holdfast] [--bindir /usr/lib/postgresql/15/bin]
      [--workload ehr|pgbench] [--scale 20] [--pgbench-seconds 60] [--runs 1]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from benchlib import free_port, sh  # noqa: E402  (benches/benchlib.py)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def timed(fn):
    t = time.monotonic()
    out = fn()
    return time.monotonic() - t, out


def du(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dp, f)).st_size
            except FileNotFoundError:
                pass
    return total


def shared_repo_dir(path):
    """A repository directory the postgres user (archive_command) shares:
    holdfast writes 0600/0700 unless the repository directory has group
    bits, so make it root:postgres 2770 when we are root."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        import grp
        os.chown(path, 0, grp.getgrnam("postgres").gr_gid)
        os.chmod(path, 0o2770)


def mb(n):
    return f"{n / 1e6:,.1f} MB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=60000)
    ap.add_argument("--work", default="/tmp/hfpgbench")
    ap.add_argument("--holdfast", default=str(ROOT / "target/release/holdfast"))
    ap.add_argument("--bindir", default="/usr/lib/postgresql/15/bin")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--workload", choices=["ehr", "pgbench"], default="ehr")
    ap.add_argument("--scale", type=int, default=20, help="pgbench scale factor")
    ap.add_argument("--pgbench-seconds", type=int, default=60, help="day 2 of the pgbench workload")
    ap.add_argument("--runs", type=int, default=1, help="repeat on fresh clusters; report medians")
    ap.add_argument("--page-compression", choices=["auto", "zstd"], default=None,
                    help="holdfast backup --page-compression for physical backups (default: holdfast's own)")
    a = ap.parse_args()
    all_results = []
    for i in range(a.runs):
        if a.runs > 1:
            print(f"\n=== run {i + 1} of {a.runs} ===", flush=True)
        all_results.append(run_once(a))
    if a.runs > 1:
        print(f"\nmedians over {a.runs} runs ({a.workload}):")
        for key in sorted(all_results[0]["ratios"]):
            vals = [r["ratios"][key] for r in all_results]
            print(f"  {key}: {statistics.median(vals):.2f}  (runs: {', '.join(f'{v:.2f}' for v in vals)})")
    if a.json:
        Path(a.json).write_text(json.dumps(all_results if a.runs > 1 else all_results[0], indent=2))


def run_once(a):
    pgbench = a.workload == "pgbench"
    dbname = "bench" if pgbench else "ehr"

    os.umask(0)  # the server user (archive_command) and we share the repositories
    work = Path(a.work)
    if work.exists():
        # stop anything left from an earlier run, then start clean
        for d in ("data", "restore-hf", "restore-pgbr"):
            if (work / d / "postmaster.pid").exists():
                sh([f"{a.bindir}/pg_ctl", "-D", str(work / d), "-m", "immediate", "stop"], check=False, as_pg=True)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.chmod(work, 0o777)
    hf = str(Path(a.holdfast).resolve())
    if not Path(hf).exists():
        sys.exit(f"{hf} missing: cargo build --release -p holdfast-cli")
    B = lambda t: f"{a.bindir}/{t}"
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    port = free_port()
    pw = work / "hf-password"
    pw.write_text("bench password\n")
    hf_log_repo, hf_phys_repo = work / "hf-logical", work / "hf-physical"
    hf_env = lambda repo: dict(os.environ, HOLDFAST_REPOSITORY=str(repo), HOLDFAST_PASSWORD_FILE=str(pw),
                               HOLDFAST_PG_BINDIR=a.bindir)
    for r in (hf_log_repo, hf_phys_repo):
        shared_repo_dir(r)
        sh([hf, "init"], env=hf_env(r))

    # pgBackRest: zstd 3, AES-256-CBC, 2 processes, local repository
    pgbr_conf = work / "pgbackrest.conf"
    pgbr_repo = work / "pgbr-repo"
    pgbr_conf.write_text(f"""[global]
repo1-path={pgbr_repo}
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-cipher-pass
compress-type=zst
compress-level=3
process-max=2
start-fast=y
log-level-console=warn
log-level-file=off
lock-path={work}/pgbr-lock
spool-path={work}/pgbr-spool

[bench]
pg1-path={data}
pg1-port={port}
pg1-socket-path={sock}
pg1-user=postgres
""")
    pgbr = lambda *args: ["pgbackrest", f"--config={pgbr_conf}", "--stanza=bench", *args]

    sh([B("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
       as_pg=True, capture=True)
    archive = (f"HOLDFAST_REPOSITORY={hf_phys_repo} HOLDFAST_PASSWORD_FILE={pw} {hf} -q wal-push %p && "
               f"pgbackrest --config={pgbr_conf} --stanza=bench archive-push %p")
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"""
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sock}'
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
wal_level = replica
archive_mode = on
archive_command = '{archive.replace("'", "''")}'
""")
    log = work / "server.log"
    sh([B("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "start"], as_pg=True, capture=True)
    psql = lambda db, sql: sh(["psql", "-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-h", str(sock), "-p", str(port),
                               "-U", "postgres", "-d", db, "-c", sql], capture=True).stdout.strip()
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname={dbname}"
    results = {}
    try:
        psql("postgres", f"CREATE DATABASE {dbname}")
        if pgbench:
            t, _ = timed(lambda: sh([B("pgbench"), "-i", "-q", "-s", str(a.scale), "-h", str(sock), "-p", str(port),
                                     "-U", "postgres", dbname], capture=True))
        else:
            t, _ = timed(lambda: sh(["psql", "-X", "-q", "-h", str(sock), "-p", str(port), "-U", "postgres",
                                     "-v", f"patients={a.patients}", "-f", str(SHARED / "bench/ehr_db.sql"), "ehr"],
                                    capture=True))
        psql(dbname, "VACUUM"); psql(dbname, "CHECKPOINT")
        dbsize = int(psql(dbname, f"SELECT pg_database_size('{dbname}')"))
        what = f"pgbench scale {a.scale}" if pgbench else f"ehr ({a.patients} patients)"
        print(f"built {what}: {mb(dbsize)} in {t:.1f}s", flush=True)
        results["db_bytes"] = dbsize
        sh(pgbr("stanza-create"), as_pg=True, capture=True)

        pgenv = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="postgres")
        dumpfile = work / "ehr.dump.zst"

        def drain_archive():
            # Measure backups, not the archiver's backlog from loading: both
            # tools' backups wait for their last segment to be archived.
            seg = psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
            while psql("postgres", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < seg:
                time.sleep(0.2)

        def logical_round(day):
            r = {}
            drain_archive()
            r["pg_dump_s"], _ = timed(lambda: sh(["bash", "-c", f"{B('pg_dump')} -Fc -Z0 ehr > /dev/null"], env=pgenv))
            r["pg_dump_zstd_s"], _ = timed(lambda: sh(
                ["bash", "-o", "pipefail", "-c", f"{B('pg_dump')} -Fc -Z0 ehr | zstd -q -3 -T1 > {dumpfile}"], env=pgenv))
            r["dump_zstd_bytes"] = dumpfile.stat().st_size
            before = du(hf_log_repo)
            r["hf_logical_s"], _ = timed(lambda: sh([hf, "-q", "backup", "--postgres", dsn, "--database", "ehr"],
                                                    env=hf_env(hf_log_repo)))
            r["hf_logical_added_bytes"] = du(hf_log_repo) - before
            print(f"day {day} logical: {r}", flush=True)
            return r

        def physical_round(day, pgbr_type):
            r = {}
            psql("postgres", "CHECKPOINT")
            drain_archive()
            t0 = time.monotonic()
            pc = ["--page-compression", a.page_compression] if a.page_compression else []
            out = sh([hf, "--json", "backup", "--postgres-physical", dsn.replace("dbname=ehr", "dbname=postgres"),
                      "--pgdata", str(data), *pc], env=hf_env(hf_phys_repo), capture=True).stdout
            r["hf_physical_s"] = time.monotonic() - t0
            # the snapshot's own count: WAL archived meanwhile goes to the same repository
            r["hf_physical_added_bytes"] = json.loads(out)["summary"]["stored_added"]
            drain_archive()
            before = du(pgbr_repo / "backup")
            r["pgbr_s"], _ = timed(lambda: sh(pgbr(f"--type={pgbr_type}", "backup"), as_pg=True, capture=True))
            r["pgbr_added_bytes"] = du(pgbr_repo / "backup") - before
            print(f"day {day} physical: {r}", flush=True)
            return r

        if pgbench:
            results["day1_physical"] = physical_round(1, "full")
            t, _ = timed(lambda: sh([B("pgbench"), "-n", "-c", "2", "-j", "2", "-T", str(a.pgbench_seconds),
                                     "-h", str(sock), "-p", str(port), "-U", "postgres", dbname], capture=True))
            psql(dbname, "CHECKPOINT")
            print(f"pgbench day 2 ran {t:.1f}s", flush=True)
            results["day2_physical"] = physical_round(2, "incr")
            return pgbench_report(a, results, data, work, B, sock, hf, hf_env, hf_phys_repo, pgbr, psql)
        results["day1_logical"] = logical_round(1)
        results["day1_physical"] = physical_round(1, "full")
        t, _ = timed(lambda: sh(["psql", "-X", "-q", "-h", str(sock), "-p", str(port), "-U", "postgres",
                                 "-v", "day=2", "-f", str(SHARED / "bench/ehr_day.sql"), "ehr"], capture=True))
        psql("ehr", "CHECKPOINT")
        print(f"applied day 2 in {t:.1f}s", flush=True)
        results["day2_logical"] = logical_round(2)
        results["day2_physical"] = physical_round(2, "incr")

        # logical restore (pg_restore -j2 through holdfast)
        t, _ = timed(lambda: sh([hf, "-q", "restore", "latest", "--to-postgres", dsn.replace("dbname=ehr", "dbname=postgres"),
                                 "--database", "ehr_restored", "--jobs", "2"], env=hf_env(hf_log_repo)))
        results["hf_logical_restore_j2_s"] = t
        t, _ = timed(lambda: sh(["bash", "-o", "pipefail", "-c",
                                 f"zstd -dq -c {dumpfile} > {work}/ehr.dump && {B('createdb')} ehr_pgr && "
                                 f"{B('pg_restore')} -j2 -d ehr_pgr {work}/ehr.dump"], env=pgenv))
        results["pg_restore_j2_s"] = t
        psql("postgres", "DROP DATABASE ehr_restored"); psql("postgres", "DROP DATABASE ehr_pgr")
        (work / "ehr.dump").unlink()

        # physical restores: files, then WAL replay to consistency, separately
        def replay(datadir):
            p2 = free_port()
            with open(datadir / "postgresql.conf", "a") as f:
                f.write(f"\nport = {p2}\narchive_mode = off\n")
            t0 = time.monotonic()
            sh([B("pg_ctl"), "-D", str(datadir), "-l", str(work / f"replay-{datadir.name}.log"), "-w", "-t", "600", "start"],
               as_pg=True, capture=True)
            while True:
                r = sh(["psql", "-X", "-Atq", "-h", str(sock), "-p", str(p2), "-U", "postgres", "-d", "postgres",
                        "-c", "SELECT pg_is_in_recovery()"], capture=True, check=False)
                if r.returncode == 0 and r.stdout.strip() == "f":
                    break
                time.sleep(0.05)
            t = time.monotonic() - t0
            n = sh(["psql", "-X", "-Atq", "-h", str(sock), "-p", str(p2), "-U", "postgres", "-d", "ehr",
                    "-c", "SELECT count(*) FROM observation"], capture=True).stdout.strip()
            sh([B("pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"], as_pg=True, capture=True)
            return t, n

        rh = work / "restore-hf"
        t, _ = timed(lambda: sh([hf, "-q", "restore", "latest", "--to-datadir", str(rh)], env=hf_env(hf_phys_repo)))
        results["hf_physical_restore_s"] = t
        results["hf_replay_s"], results["hf_restored_rows"] = replay(rh)
        rp = work / "restore-pgbr"
        rp.mkdir(mode=0o700)
        shutil.chown(rp, "postgres", "postgres") if os.geteuid() == 0 else None
        t, _ = timed(lambda: sh(pgbr(f"--pg1-path={rp}", "--type=immediate", "--target-action=promote", "restore"),
                                as_pg=True, capture=True))
        results["pgbr_restore_s"] = t
        results["pgbr_replay_s"], results["pgbr_restored_rows"] = replay(rp)
        results["source_rows"] = psql("ehr", "SELECT count(*) FROM observation")
    finally:
        sh([B("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], as_pg=True, check=False, capture=True)

    d1l, d2l, d1p, d2p = (results[k] for k in ("day1_logical", "day2_logical", "day1_physical", "day2_physical"))
    rows = [
        ("pg_dump -Fc -Z0 alone", f"{d1l['pg_dump_s']:.2f} s", "", ""),
        ("pg_dump -Fc -Z0 | zstd -3", f"{d1l['pg_dump_zstd_s']:.2f} s", mb(d1l["dump_zstd_bytes"]), ""),
        ("holdfast logical day 1", f"{d1l['hf_logical_s']:.2f} s", mb(d1l["hf_logical_added_bytes"]),
         f"{d1l['hf_logical_s'] / d1l['pg_dump_s']:.2f}x pg_dump (target <= 1.2)"),
        ("holdfast logical day 2", f"{d2l['hf_logical_s']:.2f} s", mb(d2l["hf_logical_added_bytes"]),
         f"{d2l['hf_logical_added_bytes'] / d2l['dump_zstd_bytes']:.0%} of a full dump.zst (target <= 35%); "
         f"{d2l['hf_logical_s'] / d2l['pg_dump_s']:.2f}x pg_dump"),
        ("holdfast restore --to-postgres -j2", f"{results['hf_logical_restore_j2_s']:.2f} s", "",
         f"{results['hf_logical_restore_j2_s'] / results['pg_restore_j2_s']:.2f}x pg_restore -j2 from a file"),
        ("pg_restore -j2 (unzstd + restore)", f"{results['pg_restore_j2_s']:.2f} s", "", ""),
        ("pgBackRest full", f"{d1p['pgbr_s']:.2f} s", mb(d1p["pgbr_added_bytes"]), ""),
        ("holdfast physical full", f"{d1p['hf_physical_s']:.2f} s", mb(d1p["hf_physical_added_bytes"]),
         f"{d1p['hf_physical_s'] / d1p['pgbr_s']:.2f}x pgBackRest time (target <= 0.7)"),
        ("pgBackRest incremental (day 2)", f"{d2p['pgbr_s']:.2f} s", mb(d2p["pgbr_added_bytes"]), ""),
        ("holdfast physical day 2", f"{d2p['hf_physical_s']:.2f} s", mb(d2p["hf_physical_added_bytes"]),
         f"{d2p['hf_physical_added_bytes'] / max(d2p['pgbr_added_bytes'], 1):.2f}x bytes (target <= 0.7), "
         f"{d2p['hf_physical_s'] / d2p['pgbr_s']:.2f}x time (target <= 0.7)"),
        ("pgBackRest restore (files)", f"{results['pgbr_restore_s']:.2f} s", "",
         f"WAL replay to consistency {results['pgbr_replay_s']:.2f} s"),
        ("holdfast restore --to-datadir (files)", f"{results['hf_physical_restore_s']:.2f} s", "",
         f"{results['hf_physical_restore_s'] / results['pgbr_restore_s']:.2f}x pgBackRest (target <= 1.0); "
         f"WAL replay {results['hf_replay_s']:.2f} s"),
    ]
    print(f"\nEHR database {mb(results['db_bytes'])} ({a.patients} patients); rows after restore: "
          f"holdfast {results['hf_restored_rows']}, pgBackRest {results['pgbr_restored_rows']}, source {results['source_rows']}\n")
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'what':<{w[0]}}  {'wall':>{w[1]}}  {'stored':>{w[2]}}  ratio")
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]}")
    results["ratios"] = {
        "physical full bytes (holdfast / pgBackRest)": d1p["hf_physical_added_bytes"] / max(d1p["pgbr_added_bytes"], 1),
        "physical day 2 bytes (holdfast / pgBackRest)": d2p["hf_physical_added_bytes"] / max(d2p["pgbr_added_bytes"], 1),
        "physical full time (holdfast / pgBackRest)": d1p["hf_physical_s"] / d1p["pgbr_s"],
        "physical day 2 time (holdfast / pgBackRest)": d2p["hf_physical_s"] / d2p["pgbr_s"],
    }
    return results


def pgbench_report(a, results, data, work, B, sock, hf, hf_env, hf_phys_repo, pgbr, psql):
    """Restore holdfast's latest base backup, check it, and print the physical comparison."""
    d1p, d2p = results["day1_physical"], results["day2_physical"]
    rh = work / "restore-hf"
    t, _ = timed(lambda: sh([hf, "-q", "restore", "latest", "--to-datadir", str(rh)], env=hf_env(hf_phys_repo)))
    results["hf_physical_restore_s"] = t
    p2 = free_port()
    with open(rh / "postgresql.conf", "a") as f:
        f.write(f"\nport = {p2}\narchive_mode = off\n")
    sh([B("pg_ctl"), "-D", str(rh), "-l", str(work / "replay-hf.log"), "-w", "-t", "600", "start"], as_pg=True, capture=True)
    q = "SELECT count(*) || ' ' || sum(abalance) FROM pgbench_accounts"
    restored = sh(["psql", "-X", "-Atq", "-h", str(sock), "-p", str(p2), "-U", "postgres", "-d", "bench", "-c", q],
                  capture=True).stdout.strip()
    sh([B("pg_ctl"), "-D", str(rh), "-m", "fast", "-w", "stop"], as_pg=True, capture=True)
    source = psql("bench", q)
    sh([B("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], as_pg=True, check=False, capture=True)
    if restored != source:
        sys.exit(f"restored pgbench_accounts differs: {restored} vs source {source}")
    results["ratios"] = {
        "physical full bytes (holdfast / pgBackRest)": d1p["hf_physical_added_bytes"] / max(d1p["pgbr_added_bytes"], 1),
        "physical day 2 bytes (holdfast / pgBackRest)": d2p["hf_physical_added_bytes"] / max(d2p["pgbr_added_bytes"], 1),
        "physical full time (holdfast / pgBackRest)": d1p["hf_physical_s"] / d1p["pgbr_s"],
        "physical day 2 time (holdfast / pgBackRest)": d2p["hf_physical_s"] / d2p["pgbr_s"],
    }
    print(f"\npgbench scale {a.scale} ({mb(results['db_bytes'])}), day 2 = {a.pgbench_seconds} s of pgbench; "
          f"restored accounts match the source ({restored})")
    print(f"  full:  holdfast {mb(d1p['hf_physical_added_bytes'])} in {d1p['hf_physical_s']:.2f} s, "
          f"pgBackRest {mb(d1p['pgbr_added_bytes'])} in {d1p['pgbr_s']:.2f} s")
    print(f"  day 2: holdfast {mb(d2p['hf_physical_added_bytes'])} in {d2p['hf_physical_s']:.2f} s, "
          f"pgBackRest incr {mb(d2p['pgbr_added_bytes'])} in {d2p['pgbr_s']:.2f} s")
    for k, v in results["ratios"].items():
        print(f"  {k}: {v:.2f}")
    return results


if __name__ == "__main__":
    main()
