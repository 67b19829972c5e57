#!/usr/bin/env python3
"""Idle footprint of `holdfast daemon` (issue 12): a daemon with 20 jobs
configured (daily schedules, so none runs while measured) against a real
local repository, after its start-up (the freshness read of the
repository), is sampled from /proc: resident memory (VmRSS, and the peak
VmHWM) and CPU time (utime + stime of /proc/PID/stat) over a window.

    benches/daemon_idle.py BIN [WINDOW_SECONDS] [WORKDIR]

Prints one JSON line: rss_kib, hwm_kib, cpu_percent (of one core, over
the window), threads. Targets: under 30 MB RSS and under 1% of a core.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    binary = os.path.abspath(sys.argv[1])
    window = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    work = sys.argv[3] if len(sys.argv) > 3 else "/tmp/hf-daemon-idle"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    repo = os.path.join(work, "repo")
    env = dict(os.environ, HOLDFAST_REPOSITORY=repo, HOLDFAST_PASSWORD="bench")
    subprocess.run([binary, "init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
                   env=env, check=True, capture_output=True)
    docs = os.path.join(work, "docs")
    os.makedirs(docs)
    for i in range(50):
        with open(os.path.join(docs, f"f{i}.txt"), "w") as f:
            f.write(f"document {i}\n" * 100)
    subprocess.run([binary, "backup", docs, "--source", "s0"], env=env, check=True,
                   capture_output=True)
    pw = os.path.join(work, "pass")
    with open(pw, "w") as f:
        f.write("bench")
    port = free_port()
    lines = [f'[repository.main]\nurl = "{repo}"\npassword_file = "{pw}"\n']
    for i in range(10):
        lines.append(f'[source.s{i}]\npaths = ["{docs}"]\nrpo = "26h"\n')
    for i in range(20):
        kind = "backup" if i < 10 else ("check" if i < 15 else "retention")
        extra = f'source = "s{i}"\n' if kind == "backup" else ""
        if kind == "retention":
            pol = os.path.join(work, "policy.toml")
            with open(pol, "w") as f:
                f.write('[[policy]]\nname = "all"\nsource = "s0"\ntimezone = "UTC"\nkeep = { last = 10 }\n')
            extra = f'policies = ["{pol}"]\n'
        hour = 1 + i % 20
        lines.append(f'[[job]]\nname = "job{i}"\nkind = "{kind}"\n{extra}repository = "main"\n'
                     f'schedule = "0 0 {hour} * * *"\ntimezone = "Europe/Berlin"\n')
    lines.append(f'[listen]\naddress = "127.0.0.1:{port}"\n')
    config = os.path.join(work, "holdfast.toml")
    with open(config, "w") as f:
        f.write("\n".join(lines))
    denv = {k: v for k, v in os.environ.items() if not k.startswith("HOLDFAST_")}
    denv["HOLDFAST_CACHE_DIR"] = os.path.join(work, "cache")
    log = open(os.path.join(work, "daemon.log"), "w")
    p = subprocess.Popen([binary, "daemon", "--config", config, "--state-dir",
                          os.path.join(work, "state")], env=denv, stderr=log,
                         stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/status"
        for _ in range(300):
            try:
                st = json.load(urllib.request.urlopen(url, timeout=2))
                if any(s["last_backup_at"] for s in st["sources"]):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("the daemon did not come up; see " + log.name)
        time.sleep(2)  # start-up work settles

        def cpu_ticks():
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        def status():
            out = {}
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    out[k] = v.strip()
            return out

        hz = os.sysconf("SC_CLK_TCK")
        t0, c0 = time.monotonic(), cpu_ticks()
        time.sleep(window)
        t1, c1 = time.monotonic(), cpu_ticks()
        s = status()
        print(json.dumps({
            "jobs": 20,
            "window_seconds": round(t1 - t0, 1),
            "rss_kib": int(s["VmRSS"].split()[0]),
            "hwm_kib": int(s["VmHWM"].split()[0]),
            "threads": int(s["Threads"]),
            "cpu_percent": round(100.0 * (c1 - c0) / hz / (t1 - t0), 3),
        }))
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)


if __name__ == "__main__":
    main()
