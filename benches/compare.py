#!/usr/bin/env python3
"""Side-by-side benchmark: holdfast against restic (and rustic, borg where installed).

One run, one machine, one corpus. The standard corpus
(shared/bench/gen_corpus.py) is generated once; every tool gets its own
`cp -a` copy of it, so all tools back up byte-identical trees. The phases are
interleaved across tools so that background noise (other builds on the box)
lands on every tool alike:

    for each repetition:
        copy the pristine corpus for every tool
        init            tool A, tool B, ...
        full backup     tool A, tool B, ...
        mutate          every copy, same seed (identical "next day" data)
        incremental     tool A, tool B, ...
        restore latest  tool A, tool B, ...   (into an empty directory)
        verify          every restored tree against that tool's mutated source

Every measured phase is one command; we record its wall time, its CPU time
(user + sys, from wait4) and its peak RSS (ru_maxrss from wait4, taken by a
small intermediate process so that the harness's own memory does not leak
into it; see _RUNNER), plus the repository's size after each backup. With --repeat N the medians are reported
and the tool order rotates between repetitions.

With --s3 the repositories live in one local S3 server (moto) instead of
directories: one bucket per tool, reached through a counting proxy
(benches/s3proxy.py, run in a thread of this process) so that every phase also
reports its S3 requests (PUT/GET/HEAD/LIST/DELETE) per tool. A fresh moto
server is started for every repetition.

Nothing is deleted until the run ends: the previous repetition's copies and
restored trees are moved aside (renamed into WORKDIR/trash) and removed at
the end. On ext4 without a journal the kernel skips every inode deleted in
the last minute when it allocates a new one, checking them one by one, so a
restore of 4,900 files right after the harness deleted 20,000 spent 3-5 s
of CPU in the kernel (`recently_deleted`, `find_inode_bit` in `perf`), for
any tool, and the restore times split into a fast and a slow mode that
said nothing about the tools.

Python 3 standard library only. See benches/README.md.

Exit status: 0 all phases ran and every restore verified; 1 a tool failed or a
restored tree differs from its source; 2 bad usage or missing prerequisites.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import platform
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True   # no benches/__pycache__ in the checkout
import s3proxy  # noqa: E402  (benches/s3proxy.py, beside this file)
from benchlib import free_port  # noqa: E402  (benches/benchlib.py)

ROOT = os.path.dirname(HERE)
PASSWORD = "holdfast-bench-password"

PHASES = ("init", "full", "unchanged", "incremental", "restore")
TABLE_PHASES = (("full", "full backup"), ("unchanged", "unchanged re-backup"),
                ("incremental", "incremental backup"), ("restore", "restore"))
METRICS = (("wall_s", "wall s"), ("cpu_s", "CPU s (user+sys)"), ("sys_s", "  of which sys s"),
           ("peak_rss_mib", "peak RSS MiB"))

# Targets, as holdfast/restic ratios (lower is better). Keyed by (phase, metric).
TARGETS = {
    ("full", "wall_s"): 0.5,
    ("incremental", "wall_s"): 0.5,
    ("restore", "wall_s"): 0.5,
    ("full", "peak_rss_mib"): 1.0,
    ("incremental", "peak_rss_mib"): 1.0,
    ("restore", "peak_rss_mib"): 1.0,
    ("repo_after_full", "size_mib"): 1.0,
    ("repo_after_incremental", "size_mib"): 1.0,
}

# S3 mode: the targets, wall time and PUT requests (both holdfast/restic).
S3_TARGETS = {
    ("full", "wall_s"): 0.6,
    ("incremental", "wall_s"): 0.6,
    ("restore", "wall_s"): 0.6,
    ("full", "req_PUT"): 1.0,
    ("incremental", "req_PUT"): 1.0,
}
# S3 with --latency-ms (a WAN round trip per request): the issue-8 targets.
S3_LATENCY_TARGETS = {
    ("unchanged", "wall_s"): 0.3,
    ("incremental", "wall_s"): 0.3,
    ("restore", "wall_s"): 0.5,
}
# Request rows per phase in S3 mode: (key in the phase summary, label).
S3_METRICS = (
    ("req_PUT", "PUT requests (all)"),
    ("req_put_object", "  PutObject"),
    ("req_upload_part", "  UploadPart"),
    ("req_mpu_create_complete", "  Create+Complete MPU"),
    ("req_GET", "GET requests"),
    ("req_HEAD", "HEAD requests"),
    ("req_LIST", "LIST requests"),
    ("req_DELETE", "DELETE requests"),
    ("req_OTHER", "other requests"),
    ("mib_sent", "MiB sent (PUT bodies)"),
    ("mib_received", "MiB received (GET bodies)"),
    ("server_cpu_s", "moto CPU s"),
    ("proxy_cpu_s", "proxy CPU s"),
)
S3_TOOLS = ("holdfast", "restic")
S3_PREFIX = "repo"


def die(msg, code=2):
    print(f"compare.py: {msg}", file=sys.stderr)
    sys.exit(code)


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- tools


class Tool:
    """One backup program: how to init, back up and restore with it."""

    name = "?"

    def __init__(self, home):
        self.home = home                      # this tool's scratch directory
        self.repo = os.path.join(home, "repo")
        self.src = os.path.join(home, "corpus")
        self.restore_dir = os.path.join(home, "restore")
        self.log = os.path.join(home, "commands.log")
        self.s3 = None                        # S3Server in --s3 mode
        self.bucket = None

    def use_s3(self, server):
        self.s3 = server
        self.bucket = f"bench-{self.name}"

    # Subclasses fill these in.
    def env(self):
        return {}

    def version(self):
        return ""

    def init_cmd(self):
        raise NotImplementedError

    def backup_cmd(self, label):
        raise NotImplementedError

    def restore_cmd(self, label):
        """(argv, cwd) restoring the latest snapshot into self.restore_dir."""
        raise NotImplementedError

    def full_env(self):
        e = dict(os.environ)
        e.update(self.env())
        return e


class Holdfast(Tool):
    name = "holdfast"

    def __init__(self, home, binary):
        super().__init__(home)
        self.bin = binary

    def env(self):
        if self.s3:
            return {
                "HOLDFAST_REPOSITORY": f"s3://{self.bucket}/{S3_PREFIX}",
                "HOLDFAST_PASSWORD": PASSWORD,
                "HOLDFAST_S3_ENDPOINT": self.s3.endpoint,
                "HOLDFAST_S3_PATH_STYLE": "true",
                "HOLDFAST_S3_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_REGION": "us-east-1",
                "HOLDFAST_CACHE_DIR": os.path.join(self.home, "cache"),
            }
        return {"HOLDFAST_REPOSITORY": self.repo, "HOLDFAST_PASSWORD": PASSWORD,
                "HOLDFAST_CACHE_DIR": os.path.join(self.home, "cache")}

    def version(self):
        return capture([self.bin, "--version"])

    def init_cmd(self):
        return [self.bin, "init"]

    def backup_cmd(self, label):
        return [self.bin, "backup", self.src, "--source", "bench", "--json"]

    def restore_cmd(self, label):
        return [self.bin, "restore", "latest", "--target", self.restore_dir], None


class Restic(Tool):
    name = "restic"

    def env(self):
        e = {
            "RESTIC_REPOSITORY": self.repo,
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_CACHE_DIR": os.path.join(self.home, "cache"),
        }
        if self.s3:
            e.update({
                "RESTIC_REPOSITORY": f"s3:{self.s3.endpoint}/{self.bucket}/{S3_PREFIX}",
                "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test",
            })
        return e

    def restic(self):
        # minio-go already picks path-style for an IP endpoint; say it explicitly.
        return ["restic", "-o", "s3.bucket-lookup=path"] if self.s3 else ["restic"]

    def version(self):
        return capture(["restic", "version"])

    def init_cmd(self):
        # Repository format v2 (0.14+) is the one with compression.
        return self.restic() + ["init", "--repository-version", "2"]

    def backup_cmd(self, label):
        return self.restic() + ["backup", "--compression", "auto", self.src]

    def restore_cmd(self, label):
        return self.restic() + ["restore", "latest", "--target", self.restore_dir], None


class Rustic(Tool):
    name = "rustic"

    def env(self):
        return {
            "RUSTIC_REPOSITORY": self.repo,
            "RUSTIC_PASSWORD": PASSWORD,
            "RUSTIC_CACHE_DIR": os.path.join(self.home, "cache"),
        }

    def version(self):
        return capture(["rustic", "--version"])

    def init_cmd(self):
        return ["rustic", "init"]

    def backup_cmd(self, label):
        return ["rustic", "backup", self.src]

    def restore_cmd(self, label):
        return ["rustic", "restore", "latest", self.restore_dir], None


class Borg(Tool):
    name = "borg"

    def env(self):
        return {
            "BORG_REPO": self.repo,
            "BORG_PASSPHRASE": PASSWORD,
            # Keep borg's cache, keys and security dir out of $HOME.
            "BORG_BASE_DIR": os.path.join(self.home, "base"),
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }

    def version(self):
        return capture(["borg", "--version"])

    def init_cmd(self):
        return ["borg", "init", "-e", "repokey-blake2"]

    def backup_cmd(self, label):
        return ["borg", "create", "--compression", "zstd,3", f"::{label}", self.src]

    def restore_cmd(self, label):
        # borg extracts into the current directory.
        return ["borg", "extract", "::incremental"], self.restore_dir


def capture(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"


# ---------------------------------------------------------------- S3 mode


def find_moto():
    cands = [os.environ.get("HOLDFAST_MOTO_SERVER"),
             os.path.join(ROOT, ".venv", "bin", "moto_server"),
             "/tmp/motovenv/bin/moto_server",
             shutil.which("moto_server")]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    die("moto_server not found (needed by --s3): set HOLDFAST_MOTO_SERVER, or install it with "
        "`python3 -m venv .venv && .venv/bin/pip install 'moto[server]'` at the workspace root")


class S3Server:
    """A moto server (restarted per repetition) behind one counting proxy.

    Tools talk to the proxy (self.endpoint); the harness's own requests
    (creating buckets, listing them for the repository size) go straight to
    moto and are not counted.
    """

    def __init__(self, moto_bin, logdir, latency_ms=0.0):
        self.moto_bin = moto_bin
        self.logdir = logdir
        self.proc = None
        self.moto_port = None
        self.latency_ms = latency_ms
        self.proxy = s3proxy.CountingProxy(upstream_port=0, latency_ms=latency_ms).start()
        self.endpoint = self.proxy.endpoint

    def version(self):
        py = os.path.join(os.path.dirname(self.moto_bin), "python")
        if os.access(py, os.X_OK):
            v = capture([py, "-c", "import moto; print(moto.__version__)"])
            return f"moto {v}"
        return "moto (version unknown)"

    def start(self):
        self.stop()
        self.moto_port = free_port()
        log = open(os.path.join(self.logdir, f"moto-{self.moto_port}.log"), "wb")
        self.proc = subprocess.Popen([self.moto_bin, "-H", "127.0.0.1", "-p", str(self.moto_port)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                die(f"moto_server exited with {self.proc.returncode} (log in {self.logdir})")
            try:
                self._moto("GET", "/")
                break
            except OSError:
                if time.time() > deadline:
                    die(f"moto_server did not answer on port {self.moto_port} within 60 s")
                time.sleep(0.2)
        self.proxy.upstream_port = self.moto_port

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def close(self):
        self.stop()
        self.proxy.stop()

    def _moto(self, method, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.moto_port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.read()

    def create_bucket(self, bucket):
        # moto accepts unsigned requests by default.
        self._moto("PUT", f"/{bucket}")

    def bucket_size(self, bucket, prefix):
        """(bytes, objects) under prefix, from ListObjectsV2 (paged)."""
        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        total = count = 0
        token = None
        while True:
            q = {"list-type": "2", "prefix": prefix.rstrip("/") + "/", "max-keys": "1000"}
            if token:
                q["continuation-token"] = token
            root = ET.fromstring(self._moto("GET", f"/{bucket}?{urllib.parse.urlencode(q)}"))
            for c in root.iter(ns + "Contents"):
                total += int(c.find(ns + "Size").text)
                count += 1
            if (root.findtext(ns + "IsTruncated") or "false") != "true":
                return total, count
            token = root.findtext(ns + "NextContinuationToken")

    def counts(self, bucket):
        return self.proxy.snapshot(bucket)

    def cpu(self):
        """(moto's CPU s so far, this process's CPU s so far: the proxy threads during a phase)."""
        moto = 0.0
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            moto = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, AttributeError):
            pass
        t = os.times()
        return moto, t.user + t.system


# ---------------------------------------------------------------- measuring


# The measured command is started by this small intermediate, not by us.
# Linux carries a process's peak RSS across fork+exec: a child forked from
# this harness (tens of MiB once it holds tree manifests) would report at
# least the harness's own RSS as its ru_maxrss. The intermediate is a fresh
# `python3 -S` (about 7 MiB), so the floor it leaves is small and the same for
# every tool; it times the command, reaps it with wait4 and reports the
# command's own rusage on a pipe.
_RUNNER = r"""
import json, os, sys, time
fd = int(sys.argv[1]); argv = sys.argv[2:]
os.set_inheritable(fd, False)
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(2, ("cannot run %s: %s\n" % (argv[0], e)).encode())
    os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
os.write(fd, json.dumps({"rc": os.waitstatus_to_exitcode(status), "wall_s": wall,
                         "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
                         "maxrss_kib": ru.ru_maxrss}).encode())
"""


def measure(argv, env, cwd, log):
    """Run one command; return its wall time, CPU (user+sys) and peak RSS (wait4)."""
    with open(log, "ab") as lf:
        lf.write(f"\n$ {' '.join(argv)}{'   (in ' + cwd + ')' if cwd else ''}\n".encode())
        lf.flush()
        out_fd, out_path = tempfile.mkstemp(prefix="stdout-", dir=os.path.dirname(log))
        r, w = os.pipe()
        try:
            with os.fdopen(out_fd, "wb") as out:
                p = subprocess.Popen([sys.executable, "-S", "-c", _RUNNER, str(w)] + list(argv),
                                     env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=lf, pass_fds=(w,))
                os.close(w)
                w = -1
                with os.fdopen(r, "rb") as rf:
                    r = -1
                    report = rf.read()
                p.wait()
            with open(out_path, "rb") as f:
                stdout = f.read()
        finally:
            for fd in (r, w):
                if fd >= 0:
                    os.close(fd)
            os.unlink(out_path)
        try:
            m = json.loads(report)
        except ValueError:
            m = {"rc": p.returncode or 1, "wall_s": 0.0, "user_s": 0.0, "sys_s": 0.0, "maxrss_kib": 0}
        lf.write(stdout[-20000:])
        lf.write(f"\n# rc={m['rc']} wall={m['wall_s']:.2f}s user={m['user_s']:.2f}s "
                 f"sys={m['sys_s']:.2f}s maxrss={m['maxrss_kib']}KiB\n".encode())
    return {
        "rc": m["rc"],
        "wall_s": m["wall_s"],
        "user_s": m["user_s"],
        "sys_s": m["sys_s"],
        "cpu_s": m["user_s"] + m["sys_s"],
        "peak_rss_mib": m["maxrss_kib"] / 1024.0,   # Linux: KiB
        "stdout": stdout.decode("utf-8", "replace"),
    }


def dir_size(path):
    """(apparent bytes, allocated bytes, file count) of everything under path."""
    apparent = allocated = files = 0
    for d, dirs, fs in os.walk(path):
        for n in fs + dirs:
            try:
                st = os.lstat(os.path.join(d, n))
            except FileNotFoundError:
                continue
            allocated += st.st_blocks * 512
            if n in fs:
                apparent += st.st_size
                files += 1
    return apparent, allocated, files


# ---------------------------------------------------------------- verifying


def _hash_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)   # hashlib releases the GIL for large buffers
    return h.hexdigest()


def tree_manifest(root):
    """{relative path: ('d',) | ('l', target) | ('f', size, sha256)} for a tree."""
    out, files = {}, []
    for d, dirs, fs in os.walk(root):
        rel_d = os.path.relpath(d, root)
        for n in dirs + fs:
            p = os.path.join(d, n)
            rel = os.path.normpath(os.path.join(rel_d, n))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d",)
            elif stat.S_ISREG(st.st_mode):
                files.append((rel, p, st.st_size))
            else:
                out[rel] = ("other", st.st_mode)
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for (rel, _, size), digest in zip(files, pool.map(_hash_file, [f[1] for f in files])):
            out[rel] = ("f", size, digest)
    return out


def manifest_digest(m):
    h = hashlib.sha256()
    for k in sorted(m):
        h.update(json.dumps([k, list(m[k])]).encode())
    return h.hexdigest()


def diff_manifests(want, got, limit=10):
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differ = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    problems = []
    for label, keys in (("missing", missing), ("extra", extra), ("differs", differ)):
        for k in keys[:limit]:
            problems.append(f"{label}: {k}")
        if len(keys) > limit:
            problems.append(f"{label}: ... {len(keys) - limit} more")
    return {"missing": len(missing), "extra": len(extra), "differs": len(differ),
            "examples": problems}


def restored_root(tool):
    """Where the restored copy of tool.src ended up inside tool.restore_dir.

    holdfast, restic and borg all mirror the absolute source path under the
    target (borg without the leading slash); anything else is searched for.
    """
    cand = os.path.join(tool.restore_dir, tool.src.lstrip("/"))
    if os.path.isdir(cand):
        return cand
    base = os.path.basename(tool.src)
    for d, dirs, _ in os.walk(tool.restore_dir):
        if base in dirs:
            return os.path.join(d, base)
    return tool.restore_dir


# ---------------------------------------------------------------- the run


class Trash:
    """Where deleted trees go until the run ends (see the module docs)."""

    def __init__(self, root):
        self.root = root
        self.n = 0

    def discard(self, path):
        """Move `path` out of the way without freeing its inodes yet."""
        os.makedirs(self.root, exist_ok=True)
        self.n += 1
        os.rename(path, os.path.join(self.root, f"{self.n:04}-{os.path.basename(path)}"))

    def empty(self):
        shutil.rmtree(self.root, ignore_errors=True)


def run_checked(argv, **kw):
    r = subprocess.run(argv, **kw)
    if r.returncode != 0:
        die(f"{' '.join(argv)} failed with exit code {r.returncode}", 1)
    return r


def find_gen_corpus(explicit):
    cands = [explicit] if explicit else [
        os.environ.get("HOLDFAST_GEN_CORPUS"),
        os.path.join(ROOT, "..", "shared", "bench", "gen_corpus.py"),
        os.path.join(ROOT, "shared", "bench", "gen_corpus.py"),
        "/work/shared/bench/gen_corpus.py",
    ]
    for c in cands:
        if c and os.path.isfile(c):
            return os.path.abspath(c)
    die("cannot find gen_corpus.py; pass --gen-corpus PATH")


def find_holdfast(explicit):
    if explicit:
        return os.path.abspath(explicit)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "holdfast")


def make_tools(names, home, holdfast_bin, s3=False):
    tools, skipped = [], {}
    for n in names:
        d = os.path.join(home, n)
        if s3 and n not in S3_TOOLS:
            skipped[n] = "no S3 mode in this harness (only " + ", ".join(S3_TOOLS) + ")"
            continue
        if n == "holdfast":
            if not os.access(holdfast_bin, os.X_OK):
                die(f"{holdfast_bin} not found: run `cargo build --release -p holdfast-cli` "
                    "(or pass --holdfast PATH / --build)")
            tools.append(Holdfast(d, holdfast_bin))
        elif n in ("restic", "rustic", "borg"):
            if shutil.which(n) is None:
                skipped[n] = "not installed"
                continue
            tools.append({"restic": Restic, "rustic": Rustic, "borg": Borg}[n](d))
        else:
            die(f"unknown tool {n!r} (know holdfast, restic, rustic, borg)")
    return tools, skipped


def one_repetition(rep, tools, pristine, args, gen, trash):
    """Run every phase for every tool; returns {tool: {...}} and verify failures."""
    order = tools[rep % len(tools):] + tools[:rep % len(tools)]
    res = {t.name: {"phases": {}, "repo": {}} for t in tools}
    failures = []

    say(f"repetition {rep + 1}: copying the corpus for {', '.join(t.name for t in order)}")
    for t in tools:
        if os.path.exists(t.home):
            trash.discard(t.home)
        os.makedirs(t.home)
        run_checked(["cp", "-a", pristine, t.src])
    s3 = tools[0].s3
    if s3:
        s3.start()
        for t in tools:
            s3.create_bucket(t.bucket)
        say(f"  moto on port {s3.moto_port}, counting proxy at {s3.endpoint}, buckets "
            + ", ".join(t.bucket for t in tools))

    def phase(name, argv_of, label=None):
        for t in order:
            os.sync()  # flush earlier phases' dirty pages outside the timed window
            argv, cwd = argv_of(t)
            before = s3.counts(t.bucket) if s3 else None
            cpu_before = s3.cpu() if s3 else None
            r = measure(argv, t.full_env(), cwd, t.log)
            if s3:
                r["requests"] = s3proxy.diff_counts(s3.counts(t.bucket), before)
                cpu_after = s3.cpu()
                r["server_cpu_s"] = cpu_after[0] - cpu_before[0]
                r["proxy_cpu_s"] = cpu_after[1] - cpu_before[1]
            stdout = r.pop("stdout")
            if t.name == "holdfast" and name in ("full", "unchanged", "incremental"):
                try:
                    r["holdfast_summary"] = json.loads(stdout).get("summary")
                except ValueError:
                    pass
            res[t.name]["phases"][name] = r
            ok = "ok" if r["rc"] == 0 else f"FAILED rc={r['rc']} (see {t.log})"
            req = ""
            if s3:
                g = r["requests"]["groups"]
                req = "  " + " ".join(f"{k} {g[k]}" for k in s3proxy.GROUPS) + "  "
            say(f"  {name:<12} {t.name:<9} wall {r['wall_s']:8.2f}s  cpu {r['cpu_s']:8.2f}s  "
                f"rss {r['peak_rss_mib']:8.1f} MiB{req}  {ok}")
            if r["rc"] != 0:
                failures.append(f"{t.name}: {name} exited {r['rc']} (log: {t.log})")
            if label and s3:
                size, n = s3.bucket_size(t.bucket, S3_PREFIX)
                res[t.name]["repo"][label] = {"apparent_bytes": size, "objects": n}
            elif label:
                app, alloc, n = dir_size(t.repo)
                res[t.name]["repo"][label] = {"apparent_bytes": app, "allocated_bytes": alloc, "files": n}

    phase("init", lambda t: (t.init_cmd(), None))
    phase("full", lambda t: (t.backup_cmd("full"), None), label="after_full")
    # The same tree again: what a nightly backup of an unchanged store costs.
    phase("unchanged", lambda t: (t.backup_cmd("unchanged"), None))

    say("mutating every copy (same seed)")
    for t in tools:
        run_checked([sys.executable, gen, "mutate", t.src, "--seed", str(args.mutate_seed)],
                    stdout=subprocess.DEVNULL)

    phase("incremental", lambda t: (t.backup_cmd("incremental"), None), label="after_incremental")

    for t in tools:
        os.makedirs(t.restore_dir)
    phase("restore", lambda t: t.restore_cmd("incremental"))

    say("verifying restored trees byte for byte")
    digests = {}
    for t in tools:
        want = tree_manifest(t.src)
        digests[t.name] = manifest_digest(want)
        root = restored_root(t)
        got = tree_manifest(root)
        d = diff_manifests(want, got)
        ok = d["missing"] == d["extra"] == d["differs"] == 0
        d.update({"ok": ok, "restored_root": root, "files": sum(1 for v in want.values() if v[0] == "f"),
                  "bytes": sum(v[1] for v in want.values() if v[0] == "f")})
        res[t.name]["verify"] = d
        if ok:
            say(f"  verify {t.name:<9} OK ({d['files']} files, {d['bytes'] / 2**20:.0f} MiB)")
        else:
            say(f"  verify {t.name:<9} MISMATCH: {d['missing']} missing, {d['extra']} extra, "
                f"{d['differs']} differ")
            for e in d["examples"]:
                print(f"      {e}")
            failures.append(f"{t.name}: restored tree differs from the source")
        trash.discard(t.restore_dir)
    if s3:
        s3.stop()   # the next repetition starts an empty server
    if len(set(digests.values())) != 1:
        failures.append("the tools' mutated source copies differ (mutate is not deterministic?)")
        say("  source copies DIFFER between tools: " + json.dumps(digests))
    return res, failures


def median_of(runs, tool, path):
    vals = []
    for r in runs:
        v = r.get(tool)
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(v)
    return statistics.median(vals) if vals else None


def _request_metrics(req):
    """The S3 request rows of one phase, from s3proxy counts."""
    ops, g = req["ops"], req["groups"]
    out = {f"req_{k}": v for k, v in g.items()}
    out["req_put_object"] = ops.get("put_object", 0)
    out["req_upload_part"] = ops.get("upload_part", 0)
    out["req_mpu_create_complete"] = ops.get("create_multipart", 0) + ops.get("complete_multipart", 0)
    out["mib_sent"] = req["bytes_sent"] / 2**20
    out["mib_received"] = req["bytes_received"] / 2**20
    return out


def summarize(runs, tools):
    """Median per tool, per phase and metric, plus repository sizes in MiB."""
    out = {}
    for t in tools:
        s = {}
        for ph in PHASES:
            s[ph] = {m: median_of(runs, t, ("phases", ph, m))
                     for m in ("wall_s", "cpu_s", "user_s", "sys_s", "peak_rss_mib",
                               "server_cpu_s", "proxy_cpu_s")}
            per_run = [_request_metrics(r[t]["phases"][ph]["requests"]) for r in runs
                       if "requests" in r.get(t, {}).get("phases", {}).get(ph, {})]
            if per_run:
                for k in per_run[0]:
                    s[ph][k] = statistics.median(x[k] for x in per_run)
        for lab in ("after_full", "after_incremental"):
            app = median_of(runs, t, ("repo", lab, "apparent_bytes"))
            alloc = median_of(runs, t, ("repo", lab, "allocated_bytes"))
            objs = median_of(runs, t, ("repo", lab, "objects"))
            s["repo_" + lab] = {
                "size_mib": None if app is None else app / 2**20,
                "disk_mib": None if alloc is None else alloc / 2**20,
                "objects": objs,
            }
        out[t] = s
    return out


def fmt(v, digits=2):
    if v is None:
        return "-"
    return f"{v:.{digits}f}"


def render_table(summary, tool_names, base="holdfast", ref="restic", s3=False, latency=False):
    """The results table as text, and the list of target verdicts."""
    targets = (S3_LATENCY_TARGETS if latency else S3_TARGETS) if s3 else TARGETS
    metrics = METRICS + (S3_METRICS if s3 else ())
    rows = []   # (phase label, metric label, key)
    for ph, ph_label in TABLE_PHASES:
        for i, (m, m_label) in enumerate(metrics):
            rows.append((ph_label if i == 0 else "", m_label, (ph, m)))
    if s3:
        rows.append(("repository size", "after full MiB (list)", ("repo_after_full", "size_mib")))
        rows.append(("", "after incr. MiB (list)", ("repo_after_incremental", "size_mib")))
        rows.append(("repository objects", "after full", ("repo_after_full", "objects")))
        rows.append(("", "after incremental", ("repo_after_incremental", "objects")))
    else:
        rows.append(("repository size", "after full MiB", ("repo_after_full", "size_mib")))
        rows.append(("", "after incremental MiB", ("repo_after_incremental", "size_mib")))
        rows.append(("repository on disk", "after full MiB (du)", ("repo_after_full", "disk_mib")))
        rows.append(("", "after incr. MiB (du)", ("repo_after_incremental", "disk_mib")))

    have_ratio = base in summary and ref in summary
    head = ["phase", "metric"] + tool_names + ([f"{base}/{ref}", "target", "verdict"] if have_ratio else [])
    lines, verdicts = [], []
    body = []
    for ph_label, m_label, key in rows:
        cells = [ph_label, m_label]
        for t in tool_names:
            v = summary[t].get(key[0], {}).get(key[1])
            if key[1].startswith("req_") or key[1] == "objects":
                digits = 0 if v is None or v == int(v) else 1
            elif key[1] in ("peak_rss_mib", "size_mib", "disk_mib", "mib_sent", "mib_received",
                            "server_cpu_s", "proxy_cpu_s"):
                digits = 1
            else:
                digits = 2
            cells.append(fmt(v, digits))
        if have_ratio:
            a = summary[base].get(key[0], {}).get(key[1])
            b = summary[ref].get(key[0], {}).get(key[1])
            ratio = a / b if a is not None and b else None
            if key[1] in ("mib_sent", "mib_received") and (b or 0) < 1:
                ratio = None   # a ratio to (next to) nothing says nothing
            cells.append(fmt(ratio, 3) + "x" if ratio is not None else "-")
            tgt = targets.get(key)
            if tgt is not None:
                verdict = "PASS" if ratio is not None and ratio <= tgt else "MISS"
                cells += [f"<= {tgt:.1f}x", verdict]
                verdicts.append({"phase": key[0], "metric": key[1], "ratio": ratio,
                                 "target": tgt, "verdict": verdict})
            else:
                cells += ["", ""]
        body.append(cells)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i])
                         for i, c in enumerate(cells)).rstrip()
    lines.append(line(head))
    lines.append("  ".join("-" * w for w in widths))
    for i, cells in enumerate(body):
        if i and cells[0]:
            lines.append("")
        lines.append(line(cells))
    return "\n".join(lines), verdicts


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=1024, help="corpus size (default 1024)")
    p.add_argument("--workdir", help="scratch directory (default: a new temp dir); "
                   "a corpus generated there is reused by later runs with the same size and seed")
    p.add_argument("--keep", action="store_true", help="keep corpus copies and repositories afterwards")
    p.add_argument("--repeat", type=int, default=1, help="repetitions; medians are reported (default 1)")
    p.add_argument("--tools", default="holdfast,restic,rustic,borg",
                   help="comma-separated; tools not installed are skipped (default: %(default)s)")
    p.add_argument("--holdfast", help="holdfast binary (default: target/release/holdfast)")
    p.add_argument("--build", action="store_true", help="cargo build --release -p holdfast-cli first")
    p.add_argument("--gen-corpus", help="path to gen_corpus.py (default: shared/bench/gen_corpus.py)")
    p.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    p.add_argument("--mutate-seed", type=int, default=2, help="mutation seed (default 2)")
    p.add_argument("--json-out", help="write all measurements and the summary here")
    p.add_argument("--s3", action="store_true",
                   help="repositories in a local S3 server (moto) behind a counting proxy; "
                   "holdfast and restic only; reports S3 requests per phase")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="with --s3: delay every request by this many ms in the proxy (a WAN "
                   "round trip; the issue-8 targets apply)")
    args = p.parse_args()
    if args.repeat < 1 or args.size_mb < 1:
        die("--repeat and --size-mb must be at least 1")

    gen = find_gen_corpus(args.gen_corpus)
    if args.build:
        say("building holdfast (release)")
        run_checked(["cargo", "build", "--release", "-p", "holdfast-cli"], cwd=ROOT)
    hf_bin = find_holdfast(args.holdfast)

    own_workdir = args.workdir is None
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="holdfast-bench-"))
    os.makedirs(work, exist_ok=True)
    runs_home = os.path.join(work, "tools")
    tools, skipped = make_tools([n.strip() for n in args.tools.split(",") if n.strip()], runs_home, hf_bin,
                                s3=args.s3)
    if not tools:
        die("no tool to run")
    s3 = None
    if args.s3:
        os.makedirs(runs_home, exist_ok=True)
        s3 = S3Server(find_moto(), work, args.latency_ms)
        for t in tools:
            t.use_s3(s3)
    for n, why in skipped.items():
        say(f"skipping {n}: {why}")

    pristine = os.path.join(work, f"corpus-{args.size_mb}mb-seed{args.seed}")
    marker = pristine + ".complete"
    if os.path.exists(marker):
        say(f"reusing corpus {pristine}")
    else:
        if os.path.exists(pristine):
            shutil.rmtree(pristine)
        say(f"generating a {args.size_mb} MiB corpus in {pristine}")
        run_checked([sys.executable, gen, "create", pristine, "--size-mb", str(args.size_mb),
                     "--seed", str(args.seed)])
        open(marker, "w").close()
    c_bytes, _, c_files = dir_size(pristine)

    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "corpus": {"path": pristine, "size_mb_arg": args.size_mb, "seed": args.seed,
                   "mutate_seed": args.mutate_seed, "files": c_files, "bytes": c_bytes},
        "repeat": args.repeat,
        "versions": {t.name: t.version() for t in tools},
        "holdfast_binary": hf_bin if any(t.name == "holdfast" for t in tools) else None,
        "git_head": capture(["git", "-C", ROOT, "rev-parse", "HEAD"]),
        "skipped": skipped,
        "s3": None if s3 is None else {
            "server": s3.moto_bin, "server_version": s3.version(), "proxy": s3.endpoint,
            "latency_ms": s3.latency_ms,
            "buckets": {t.name: t.bucket for t in tools}, "prefix": S3_PREFIX,
            "env": {t.name: {k: v for k, v in t.env().items() if "PASSWORD" not in k} for t in tools},
            "repository_size": "sum of object sizes from ListObjectsV2 straight to moto (not counted)",
        },
        "mode": "s3" if s3 else "local",
        "commands": {t.name: {"init": t.init_cmd(), "backup": t.backup_cmd("LABEL"),
                              "restore": t.restore_cmd("LABEL")[0]} for t in tools},
    }
    say(f"corpus: {c_files} files, {c_bytes / 2**20:.0f} MiB; tools: "
        + ", ".join(f"{n} ({v})" for n, v in meta["versions"].items()))

    runs, failures = [], []
    trash = Trash(os.path.join(work, "trash"))
    try:
        for rep in range(args.repeat):
            r, f = one_repetition(rep, tools, pristine, args, gen, trash)
            runs.append(r)
            failures += [f"repetition {rep + 1}: {x}" for x in f]
    finally:
        if s3:
            s3.close()
        trash.empty()
        if not args.keep:
            shutil.rmtree(runs_home, ignore_errors=True)
            if own_workdir:
                shutil.rmtree(work, ignore_errors=True)
    meta["loadavg_end"] = os.getloadavg()

    names = [t.name for t in tools]
    summary = summarize(runs, names)
    table, verdicts = render_table(summary, names, s3=bool(s3), latency=bool(s3 and args.latency_ms))
    print()
    if s3:
        print(f"S3 mode: {meta['s3']['server_version']} on 127.0.0.1 (single-process Python, on the same "
              f"cores as the tools: see the moto CPU s rows), counting proxy {s3.endpoint}"
              f"{f', {args.latency_ms:g} ms added to every request' if args.latency_ms else ''}")
    print(f"corpus {c_bytes / 2**20:.0f} MiB in {c_files} files; {args.repeat} repetition(s)"
          f"{' (medians)' if args.repeat > 1 else ''}; {os.cpu_count()} CPUs; "
          f"load avg {meta['loadavg_start'][0]:.2f} -> {meta['loadavg_end'][0]:.2f}")
    print(table)
    if verdicts:
        missed = [v for v in verdicts if v["verdict"] == "MISS"]
        print(f"\ntargets: {len(verdicts) - len(missed)} of {len(verdicts)} met")
    if failures:
        print("\nFAILURES:")
        for f in failures:
            print(f"  {f}")

    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"meta": meta, "runs": runs, "summary": summary, "targets": verdicts,
                       "failures": failures, "table": table}, f, indent=2)
        say(f"wrote {args.json_out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
