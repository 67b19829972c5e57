#!/usr/bin/env python3
"""Retention and garbage collection: holdfast against restic, side by side.

Issue 9's benchmark. One history is built per tool: the standard corpus
(shared/bench/gen_corpus.py), then `--days` daily backups, each after
`gen_corpus.py mutate --percent P` (same seeds for both tools), dated one
day apart (`holdfast backup --time`, `restic backup --time`). Each history
is kept as a template; every repetition copies it and measures, interleaved
and with the order rotated:

    holdfast policy apply --policy KEEP --yes  &&  holdfast gc
    restic forget --keep-daily 7 --keep-weekly 2 --prune

(KEEP is a policy file with `keep = { daily = 7, weekly = 2 }` in UTC; restic
runs with TZ=UTC so both count days alike.) Recorded: wall time (the sum of
holdfast's two commands), peak RSS (the larger of the two), repository size
after. The kept snapshots must be the same days for both tools, and
`check --read-data` of both repositories must pass afterwards.

Then, once per tool, a backup is started 0.3 s after the GC (prune) starts,
on a mutated copy of the corpus: does it succeed, how long does it take, and
does it end before the GC does? restic's backup cannot take its lock while
prune holds the exclusive one.

    gc_bench.py [--size-mb 256] [--days 30] [--percent 5] [--repeat 3]
                [--holdfast target/release/holdfast] [--workdir DIR] [--json-out F]

Python 3 standard library only; reuses compare.py's measuring (wait4 rusage
through a fresh intermediate process).
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import compare  # noqa: E402  (benches/compare.py)

PASSWORD = compare.PASSWORD
POLICY = """[[policy]]
name = "bench"
source = "corpus"
timezone = "UTC"
keep = { daily = 7, weekly = 2 }
"""
TARGETS = {"wall_s": 0.5, "peak_rss_mib": 0.5, "size_mib": 1.0}


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def day_time(d, sep="T"):
    """03:00 UTC on day `d` of the history."""
    t = datetime.datetime(2026, 1, 1, 3, 0, 0) + datetime.timedelta(days=d)
    return t.strftime(f"%Y-%m-%d{sep}%H:%M:%S")


class Tool:
    def __init__(self, name, home):
        self.name = name
        self.home = home
        self.template = os.path.join(home, "template")
        self.repo = os.path.join(home, "repo")
        self.src = os.path.join(home, "corpus")
        self.log = os.path.join(home, "commands.log")


class Holdfast(Tool):
    def __init__(self, home, binary):
        super().__init__("holdfast", home)
        self.bin = binary
        self.policy = os.path.join(home, "keep.toml")

    key_file = None   # set by --key-file: open without password hashing

    def env(self, repo=None):
        e = dict(os.environ)
        e.update({"HOLDFAST_REPOSITORY": repo or self.repo, "HOLDFAST_PASSWORD": PASSWORD,
                  "HOLDFAST_CACHE_DIR": os.path.join(self.home, "cache")})
        if self.key_file:
            e.pop("HOLDFAST_PASSWORD")
            e["HOLDFAST_KEY_FILE"] = self.key_file
        return e

    def init(self):
        return [self.bin, "init"]

    def backup(self, d, src=None):
        return [self.bin, "backup", src or self.src, "--source", "corpus", "--time", day_time(d) + "Z"]

    def gc_steps(self):
        return [[self.bin, "policy", "apply", "--policy", self.policy, "--yes"],
                [self.bin, "gc"]]

    def check(self):
        return [self.bin, "check", "--read-data"]

    def kept_days(self, repo):
        out = subprocess.run([self.bin, "snapshots", "--json"], env=self.env(repo),
                             capture_output=True, text=True, check=True).stdout
        return sorted(s["time"][:10] for s in json.loads(out))


class Restic(Tool):
    def __init__(self, home):
        super().__init__("restic", home)

    def env(self, repo=None):
        e = dict(os.environ)
        e.update({"RESTIC_REPOSITORY": repo or self.repo, "RESTIC_PASSWORD": PASSWORD,
                  "RESTIC_CACHE_DIR": os.path.join(self.home, "cache"), "TZ": "UTC"})
        return e

    def init(self):
        return ["restic", "init", "--repository-version", "2"]

    def backup(self, d, src=None):
        return ["restic", "backup", "--compression", "auto", "--time", day_time(d, " "), src or self.src]

    def gc_steps(self):
        return [["restic", "forget", "--keep-daily", "7", "--keep-weekly", "2", "--prune"]]

    def check(self):
        return ["restic", "check", "--read-data"]

    def kept_days(self, repo):
        out = subprocess.run(["restic", "snapshots", "--json"], env=self.env(repo),
                             capture_output=True, text=True, check=True).stdout
        return sorted(s["time"][:10] for s in json.loads(out))


def run(argv, env, log, cwd=None):
    with open(log, "ab") as lf:
        lf.write(f"\n$ {' '.join(argv)}\n".encode())
        lf.flush()
        r = subprocess.run(argv, env=env, stdout=lf, stderr=lf, cwd=cwd)
    if r.returncode != 0:
        compare.die(f"{' '.join(argv)} failed ({r.returncode}); see {log}", 1)


def build_history(tool, pristine, gen, args):
    say(f"{tool.name}: building {args.days} days of history")
    for p in (tool.template, tool.src):
        if os.path.exists(p):
            shutil.rmtree(p)
    subprocess.run(["cp", "-a", pristine, tool.src], check=True)
    env = tool.env(tool.template)
    run(tool.init(), env, tool.log)
    for d in range(args.days):
        if d > 0:
            subprocess.run([sys.executable, gen, "mutate", tool.src, "--seed", str(1000 + d),
                            "--percent", str(args.percent)], check=True, stdout=subprocess.DEVNULL)
        run(tool.backup(d), env, tool.log)


def measure_gc(tool):
    """Copy the template, then run the tool's forget/GC commands, measured."""
    if os.path.exists(tool.repo):
        shutil.rmtree(tool.repo)
    subprocess.run(["cp", "-a", tool.template, tool.repo], check=True)
    os.sync()
    before = compare.dir_size(tool.repo)[0]
    wall = 0.0
    rss = 0.0
    cpu = 0.0
    for argv in tool.gc_steps():
        r = compare.measure(argv, tool.env(), None, tool.log)
        if r["rc"] != 0:
            compare.die(f"{tool.name}: {' '.join(argv)} exited {r['rc']} (see {tool.log})", 1)
        wall += r["wall_s"]
        cpu += r["cpu_s"]
        rss = max(rss, r["peak_rss_mib"])
    after = compare.dir_size(tool.repo)[0]
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": rss,
            "size_before_mib": before / 2**20, "size_mib": after / 2**20}


def concurrent_backup(tool, gen, args):
    """Start the GC, then a backup 0.3 s later; report how the backup fared."""
    if os.path.exists(tool.repo):
        shutil.rmtree(tool.repo)
    subprocess.run(["cp", "-a", tool.template, tool.repo], check=True)
    src2 = tool.src + "-next"
    if os.path.exists(src2):
        shutil.rmtree(src2)
    subprocess.run(["cp", "-a", tool.src, src2], check=True)
    subprocess.run([sys.executable, gen, "mutate", src2, "--seed", "99", "--percent", str(args.percent)],
                   check=True, stdout=subprocess.DEVNULL)
    # Alone first, for comparison (on a copy, so the measured run starts alike).
    alone_repo = tool.repo + "-alone"
    if os.path.exists(alone_repo):
        shutil.rmtree(alone_repo)
    subprocess.run(["cp", "-a", tool.template, alone_repo], check=True)
    t0 = time.perf_counter()
    r = subprocess.run(tool.backup(args.days, src2), env=tool.env(alone_repo),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    alone = time.perf_counter() - t0
    shutil.rmtree(alone_repo)
    os.sync()
    log = open(tool.log, "ab")
    t0 = time.perf_counter()
    steps = tool.gc_steps()
    # The policy apply (holdfast) is not what a backup could wait for;
    # the GC is. Run the earlier steps first, then start GC and backup.
    for argv in steps[:-1]:
        subprocess.run(argv, env=tool.env(), stdout=log, stderr=log, check=True)
    t0 = time.perf_counter()
    gc = subprocess.Popen(steps[-1], env=tool.env(), stdout=log, stderr=log)
    time.sleep(0.3)
    b0 = time.perf_counter()
    b = subprocess.run(tool.backup(args.days, src2), env=tool.env(), capture_output=True, text=True)
    b1 = time.perf_counter()
    gc_rc = gc.wait()
    g1 = time.perf_counter()
    log.close()
    shutil.rmtree(src2)
    return {"backup_alone_s": alone, "backup_rc": b.returncode, "backup_during_gc_s": b1 - b0,
            "backup_error": b.stderr.strip().splitlines()[-1] if b.returncode else "",
            "gc_rc": gc_rc, "gc_s": g1 - t0, "backup_ended_before_gc": b1 < g1,
            "alone_rc": r.returncode}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--percent", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--holdfast")
    ap.add_argument("--gen-corpus")
    ap.add_argument("--workdir", default="/tmp/holdfast-gc-bench")
    ap.add_argument("--json-out")
    ap.add_argument("--key-file", action="store_true",
                    help="holdfast opens with a key file (no argon2 in its peak RSS; the "
                         "unattended setup); restic keeps its password")
    ap.add_argument("--reuse-history", action="store_true",
                    help="keep the histories (templates) an earlier run built in --workdir")
    args = ap.parse_args()
    gen = compare.find_gen_corpus(args.gen_corpus)
    hf_bin = compare.find_holdfast(args.holdfast)
    if not os.access(hf_bin, os.X_OK):
        compare.die(f"{hf_bin} not found: cargo build --release -p holdfast-cli")
    if shutil.which("restic") is None:
        compare.die("restic is not installed")
    os.makedirs(args.workdir, exist_ok=True)
    pristine = os.path.join(args.workdir, "pristine")
    if not os.path.isdir(pristine):
        say(f"generating the corpus ({args.size_mb} MB)")
        subprocess.run([sys.executable, gen, "create", pristine, "--size-mb", str(args.size_mb),
                        "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
    tools = [Holdfast(os.path.join(args.workdir, "holdfast"), hf_bin),
             Restic(os.path.join(args.workdir, "restic"))]
    for t in tools:
        os.makedirs(t.home, exist_ok=True)
        if isinstance(t, Holdfast):
            with open(t.policy, "w") as f:
                f.write(POLICY)
        if not (args.reuse_history and os.path.isdir(t.template)):
            build_history(t, pristine, gen, args)
        if args.key_file and isinstance(t, Holdfast):
            key = os.path.join(t.home, "bench.key")
            if not os.path.exists(key):
                run([t.bin, "key", "add", "--new-key-file", key, "--label", "bench"],
                    t.env(t.template), t.log)
            t.key_file = key

    runs = {t.name: [] for t in tools}
    for rep in range(args.repeat):
        order = tools[rep % 2:] + tools[:rep % 2]
        for t in order:
            m = measure_gc(t)
            runs[t.name].append(m)
            say(f"rep {rep + 1} {t.name:<9} wall {m['wall_s']:7.2f}s cpu {m['cpu_s']:7.2f}s "
                f"rss {m['peak_rss_mib']:7.1f} MiB size {m['size_before_mib']:.1f} -> {m['size_mib']:.1f} MiB")

    # Same kept days, and both repositories check clean (the last copies).
    kept = {t.name: t.kept_days(t.repo) for t in tools}
    same_kept = kept["holdfast"] == kept["restic"]
    checks = {}
    for t in tools:
        r = subprocess.run(t.check(), env=t.env(), capture_output=True, text=True)
        checks[t.name] = r.returncode
    conc = {t.name: concurrent_backup(t, gen, args) for t in tools}

    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    print()
    print(f"{args.days} daily snapshots of a {args.size_mb} MB corpus, {args.percent}% mutated per day; "
          f"keep daily 7, weekly 2; medians of {args.repeat}; holdfast opens with "
          f"{'a key file' if args.key_file else 'the password (argon2id, 64 MiB)'}")
    print(f"{'metric':<22}{'holdfast':>12}{'restic':>12}{'ratio':>9}  target")
    out_ratios = {}
    for k in ("wall_s", "cpu_s", "peak_rss_mib", "size_before_mib", "size_mib"):
        h, r = med["holdfast"][k], med["restic"][k]
        ratio = h / r if r else float("nan")
        out_ratios[k] = ratio
        tgt = TARGETS.get(k)
        verdict = "" if tgt is None else (f"<= {tgt}x {'met' if ratio <= tgt else 'MISSED'}")
        print(f"{k:<22}{h:>12.2f}{r:>12.2f}{ratio:>8.3f}x  {verdict}")
    print(f"kept days identical: {same_kept} ({len(kept['holdfast'])} vs {len(kept['restic'])})")
    print(f"check --read-data after: holdfast exit {checks['holdfast']}, restic exit {checks['restic']}")
    for n, c in conc.items():
        print(f"{n}: backup started during GC: exit {c['backup_rc']}, {c['backup_during_gc_s']:.2f}s "
              f"(alone {c['backup_alone_s']:.2f}s), GC {c['gc_s']:.2f}s, ended before GC: "
              f"{c['backup_ended_before_gc']} {c['backup_error']}")
    result = {"args": vars(args), "runs": runs, "medians": med, "ratios": out_ratios,
              "kept": kept, "same_kept": same_kept, "checks": checks, "concurrent": conc}
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    ok = same_kept and all(c == 0 for c in checks.values()) and conc["holdfast"]["backup_rc"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
