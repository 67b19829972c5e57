#!/usr/bin/env python3
"""Peak memory and wall time of restoring many small files: holdfast against restic.

Generates a tree of N small files (default 300,000, 200 to 4,000 bytes of
partly compressible text, 1,000 per directory), backs it up once with each
tool, then restores the latest snapshot into an empty directory R times per
tool, interleaved (A, B, B, A, ...) so that background load lands on both
alike. Peak RSS is the child's ru_maxrss from wait4 (the restore process
itself). Reports medians and the holdfast/restic ratio of the medians.

    benches/restore_memory.py --files 300000 --repeat 5 --workdir /work/bench-mem

Python 3 standard library only. Needs target/release/holdfast (or --holdfast)
and restic on PATH.
"""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "bench-password"
WORDS = b"patient encounter observation glucose fasting normal discharge ward note".split()


def gen_tree(root, files, seed):
    rnd = random.Random(seed)
    for i in range(files):
        d = os.path.join(root, "d%04d" % (i // 1000))
        if i % 1000 == 0:
            os.makedirs(d, exist_ok=True)
        size = rnd.randint(200, 4000)
        body = b" ".join(rnd.choice(WORDS) for _ in range(size // 6))
        body += rnd.randbytes(size // 4)
        with open(os.path.join(d, "f%06d.json" % i), "wb") as f:
            f.write(body[:size])


def run(cmd, env):
    """Run cmd; return (wall seconds, peak RSS in MiB). Fails loudly."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit("%s failed (%d): %s" % (" ".join(cmd), code, err))
    return wall, ru.ru_maxrss / 1024.0


def fresh_fs(work, gib):
    """A new, empty ext4 file system mounted at WORK/fresh; returns a target inside it."""
    img, mnt = os.path.join(work, "fresh.img"), os.path.join(work, "fresh")
    drop_fs(work)
    with open(img, "wb") as f:
        f.truncate(gib << 30)
    # One inode per 4 KiB: the default (one per 16 KiB) runs out of inodes
    # before a few GiB hold 300,000 small files.
    subprocess.run(["mkfs.ext4", "-q", "-F", "-i", "4096", img], check=True)
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-o", "loop", img, mnt], check=True)
    return os.path.join(mnt, "restore")


def drop_fs(work):
    img, mnt = os.path.join(work, "fresh.img"), os.path.join(work, "fresh")
    if os.path.ismount(mnt):
        subprocess.run(["umount", mnt], check=True)
    if os.path.exists(img):
        os.remove(img)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=300_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--workdir", help="scratch directory (kept; the tree and repositories are reused)")
    p.add_argument("--holdfast", default=os.path.join(ROOT, "target", "release", "holdfast"))
    p.add_argument("--also", action="append", default=[], metavar="NAME=BINARY",
                   help="another holdfast binary to measure on the same repository (e.g. main=/tmp/holdfast-main)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fresh-fs", type=int, default=0, metavar="GIB",
                   help="restore each run into a freshly made ext4 file system of this size on a loop "
                        "device (root only): after a mass deletion ext4 slows every later run, so "
                        "without this the wall times drift run after run (0: restore into --workdir)")
    a = p.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="restore-mem-")
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "src")
    if not os.path.isdir(src):
        print("generating %d files in %s" % (a.files, src), flush=True)
        gen_tree(src + ".tmp", a.files, a.seed)
        os.rename(src + ".tmp", src)
    env = dict(os.environ, HOLDFAST_PASSWORD=PASSWORD, RESTIC_PASSWORD=PASSWORD)
    env.pop("HOLDFAST_PASSWORD_FILE", None)
    hf_repo, rs_repo = os.path.join(work, "hf-repo"), os.path.join(work, "restic-repo")
    tools = {
        "holdfast": lambda target: [a.holdfast, "--repo", hf_repo, "-q", "restore", "latest", "--target", target],
        "restic": lambda target: ["restic", "-r", rs_repo, "-q", "restore", "latest", "--target", target],
    }
    for spec in a.also:
        name, binary = spec.split("=", 1)
        tools[name] = lambda target, b=binary: [b, "--repo", hf_repo, "-q", "restore", "latest", "--target", target]
    if not os.path.isdir(hf_repo):
        run([a.holdfast, "--repo", hf_repo, "init"], env)
        run([a.holdfast, "--repo", hf_repo, "-q", "backup", src], env)
    if not os.path.isdir(rs_repo):
        run(["restic", "-r", rs_repo, "init"], env)
        run(["restic", "-r", rs_repo, "-q", "backup", src], env)
    results = {t: [] for t in tools}
    order = list(tools)
    for rep in range(a.repeat):
        for t in order:
            target = os.path.join(work, "restore-" + t)
            if a.fresh_fs:
                target = fresh_fs(work, a.fresh_fs)
            else:
                shutil.rmtree(target, ignore_errors=True)
            subprocess.run(["sync"], check=True)
            wall, rss = run(tools[t](target), env)
            results[t].append((wall, rss))
            print("rep %d %-8s %6.1f s  %7.1f MiB" % (rep, t, wall, rss), flush=True)
            if a.fresh_fs:
                drop_fs(work)
            else:
                shutil.rmtree(target, ignore_errors=True)
        order.reverse()
    med = {t: (statistics.median(w for w, _ in r), statistics.median(m for _, m in r)) for t, r in results.items()}
    for t, (w, m) in med.items():
        print("median %-8s %6.1f s  %7.1f MiB peak RSS" % (t, w, m))
    for t in tools:
        if t != "restic":
            print("%s/restic: wall %.2fx, peak RSS %.2fx (medians of %d interleaved runs, %d files)" % (
                t, med[t][0] / med["restic"][0], med[t][1] / med["restic"][1], a.repeat, a.files))


if __name__ == "__main__":
    main()
