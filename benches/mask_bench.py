#!/usr/bin/env python3
"""Masked vs unmasked logical restore of the EHR database.

Builds the synthetic EHR database (shared/bench/ehr_db.sql) on a fresh
cluster, takes one `holdfast backup --postgres` of it, then restores it
`--runs` times each way, interleaved (unmasked, masked, unmasked, ...) so
that drift of the machine hits both alike:

  unmasked  holdfast restore latest --to-postgres ... --database ehr_plain
  masked    the same with --mask policies/masking/ehr.toml (key file made
            here), which restores, masks, verifies and VACUUM FULLs the
            masked tables before renaming the database

and reports the median wall time of each and their ratio (the issue's
goal: masked at most 1.5x unmasked). Each restored database is dropped
before the next run.

Usage (as root or as a user that can run the PostgreSQL server binaries):
  python3 benches/mask_bench.py [--patients 20000] [--runs 3] [--jobs 1]
      [--work /tmp/hfmaskbench] [--holdfast target/release/holdfast]
      [--bindir /usr/lib/postgresql/15/bin] [--json FILE]
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1, help="restore --jobs for both")
    ap.add_argument("--work", default="/tmp/hfmaskbench")
    ap.add_argument("--holdfast", default=str(ROOT / "target/release/holdfast"))
    ap.add_argument("--bindir", default="/usr/lib/postgresql/15/bin")
    ap.add_argument("--mask", default=str(ROOT / "policies/masking/ehr.toml"))
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    hf = str(Path(a.holdfast).resolve())
    if not Path(hf).exists():
        sys.exit(f"{hf} missing: cargo build --release -p holdfast-cli")
    os.umask(0o022)
    work = Path(a.work)
    if work.exists():
        if (work / "data" / "postmaster.pid").exists():
            sh([f"{a.bindir}/pg_ctl", "-D", str(work / "data"), "-m", "immediate", "stop"], check=False, as_pg=True)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.chmod(work, 0o777)
    B = lambda t: f"{a.bindir}/{t}"
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    os.chmod(sock, 0o777)
    port = free_port()

    # The masking file, with its key here.
    key = work / "masking.key"
    key.write_bytes(os.urandom(32))
    mask = work / "ehr-mask.toml"
    text = Path(a.mask).read_text()
    mask.write_text(text.replace('key_file = "/etc/holdfast/masking.key"', f'key_file = "{key}"'))

    pw = work / "hf-password"
    pw.write_text("bench password\n")
    repo = work / "repo"
    env = dict(os.environ, HOLDFAST_REPOSITORY=str(repo), HOLDFAST_PASSWORD_FILE=str(pw),
               HOLDFAST_PG_BINDIR=a.bindir)
    sh([hf, "init"], env=env, capture=True)

    sh([B("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
       as_pg=True, capture=True)
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"""
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sock}'
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
""")
    sh([B("pg_ctl"), "-D", str(data), "-l", str(work / "server.log"), "-w", "start"], as_pg=True, capture=True)
    psql = lambda db, sql: sh(["psql", "-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-h", str(sock), "-p", str(port),
                               "-U", "postgres", "-d", db, "-c", sql], capture=True).stdout.strip()
    server = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    results = {"patients": a.patients, "jobs": a.jobs, "runs": a.runs}
    try:
        psql("postgres", "CREATE DATABASE ehr")
        t = time.monotonic()
        sh(["psql", "-X", "-q", "-h", str(sock), "-p", str(port), "-U", "postgres",
            "-v", f"patients={a.patients}", "-f", str(SHARED / "bench/ehr_db.sql"), "ehr"], capture=True)
        size = int(psql("ehr", "SELECT pg_database_size('ehr')"))
        print(f"built ehr ({a.patients} patients): {size / 1e6:,.1f} MB in {time.monotonic() - t:.1f}s", flush=True)
        results["db_bytes"] = size
        sh([hf, "-q", "backup", "--postgres", server, "--database", "ehr"], env=env)

        def restore(masked):
            db = "ehr_masked" if masked else "ehr_plain"
            cmd = [hf, "--json", "restore", "latest", "--to-postgres", server, "--database", db,
                   "--jobs", str(a.jobs)]
            if masked:
                cmd += ["--mask", str(mask)]
            t = time.monotonic()
            out = sh(cmd, env=env, capture=True)
            took = time.monotonic() - t
            report = json.loads(out.stdout)
            if masked and not report.get("masking", {}).get("verified"):
                sys.exit(f"masked restore not verified: {out.stdout}")
            psql("postgres", f"DROP DATABASE {db}")
            return took

        plain, masked = [], []
        for i in range(a.runs):
            plain.append(restore(False))
            masked.append(restore(True))
            print(f"run {i + 1}: unmasked {plain[-1]:.2f}s, masked {masked[-1]:.2f}s", flush=True)
        mp, mm = statistics.median(plain), statistics.median(masked)
        results.update(unmasked_s=plain, masked_s=masked, unmasked_median_s=mp, masked_median_s=mm,
                       ratio=mm / mp)
        print(f"median of {a.runs}: unmasked {mp:.2f}s, masked {mm:.2f}s: masked/unmasked = {mm / mp:.2f}"
              f" (goal <= 1.5)")
    finally:
        sh([B("pg_ctl"), "-D", str(data), "-m", "fast", "stop"], check=False, as_pg=True, capture=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
