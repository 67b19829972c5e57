#!/usr/bin/env python3
"""CPU time per thread of one command, from outside: how much of it is serial.

    thread_cpu.py [--interval 0.05] -- COMMAND [ARGS...]

Runs COMMAND, samples /proc/PID/task/*/stat every --interval seconds and
keeps each thread's last utime+stime (threads that end keep their last
sample), and takes the process's exact total from wait4. Prints one JSON
object on stdout:

    {"wall": s, "total": s (wait4 user+sys), "main": s (the thread whose id
     is the process id), "by_name": {thread name: s, ...}, "threads": n,
     "main_share": main/total, "max_rss_mib": peak RSS, "rc": exit code}

Works the same for any binary (no counters needed inside), so old and new
builds are measured alike. The last interval of each thread is missed, so
"main" is a slight underestimate (by at most --interval per thread).
The command's own stdout goes to stderr, to keep stdout for the JSON.

Python 3 standard library only (Linux).
"""
import json
import os
import re
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def sample(pid, seen):
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        # comm is in parentheses and may hold spaces; fields follow the last ')'.
        m = re.match(r"\d+ \((.*)\) (.*)", s, re.S)
        if not m:
            continue
        rest = m.group(2).split()
        cpu = (int(rest[11]) + int(rest[12])) / TICK
        seen[int(tid)] = (m.group(1), cpu)


def main():
    args = sys.argv[1:]
    interval = 0.05
    if args[:1] == ["--interval"]:
        interval = float(args[1])
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=sys.stderr)
    seen = {}
    while True:
        sample(p.pid, seen)
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        time.sleep(interval)
    wall = time.monotonic() - t0
    total = ru.ru_utime + ru.ru_stime
    by_name = {}
    for tid, (name, cpu) in seen.items():
        key = "main" if tid == p.pid else re.sub(r"-?\d+$", "", name)
        by_name[key] = round(by_name.get(key, 0.0) + cpu, 3)
    main_cpu = by_name.get("main", 0.0)
    out = {
        "wall": round(wall, 3),
        "total": round(total, 3),
        "main": main_cpu,
        "main_share": round(main_cpu / total, 4) if total else None,
        "by_name": by_name,
        "threads": len(seen),
        "max_rss_mib": round(ru.ru_maxrss / 1024, 1),
        "rc": os.waitstatus_to_exitcode(status),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
