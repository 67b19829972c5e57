#!/usr/bin/env python3
"""Many small index objects, before and after `holdfast gc` merges them.

Every `wal-push` writes one index object (its segment's pack), so months of
archiving leave thousands, and opening the repository without a warm cache
reads every one. `holdfast gc` merges small index objects into a few. This
script measures what that does to an open:

1. pushes N real WAL-sized files (`--segment-kb` each, distinct content) into
   a local repository with `holdfast wal-push` (one process per file, as the
   archiver runs it) and keeps a copy of that repository;
2. locally: `bench-open` with no cache, then `gc`, then `bench-open` again;
3. with --s3-latency-ms: uploads both repositories (before and after GC) into
   a moto server, then opens each with no cache and with a cold cache
   through the counting proxy with that delay added to every request; and
   runs `gc` itself on a third copy through the proxy.

    wal_index_merge.py [--objects 5000] [--segment-kb 64] [--s3-latency-ms 25]
                       [--holdfast target/release/holdfast] [--workdir DIR]

Python 3 standard library only.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import s3proxy  # noqa: E402
from benchlib import free_port  # noqa: E402
import compare  # noqa: E402

PASSWORD = "bench"


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def env_local(repo, cache):
    e = dict(os.environ)
    e.update({"HOLDFAST_REPOSITORY": repo, "HOLDFAST_PASSWORD": PASSWORD, "HOLDFAST_CACHE_DIR": cache})
    return e


def open_once(hf, env, extra, log):
    m = compare.measure([hf] + extra + ["bench-open"], env, None, log)
    if m["rc"] != 0:
        compare.die(f"bench-open failed; see {log}", 1)
    return {"wall_s": m["wall_s"], "rss_mib": m["peak_rss_mib"], **json.loads(m["stdout"])}


def count(repo, kind):
    d = os.path.join(repo, kind)
    n = 0
    for _, _, fs in os.walk(d):
        n += sum(1 for f in fs if not f.startswith("."))
    return n


def upload(port, bucket, repo):
    """PUT every file of a local repository into `bucket` under `repo/`
    (moto takes unsigned requests; the key layout is the same)."""
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT"),
                           timeout=60)
    n = 0
    for d, _, fs in os.walk(repo):
        for f in fs:
            if f.startswith("."):
                continue
            p = os.path.join(d, f)
            key = os.path.relpath(p, repo)
            with open(p, "rb") as fh:
                body = fh.read()
            for attempt in range(5):
                try:
                    # Binary bodies as such: moto parses a default
                    # (form-encoded) body as a form, and some stall it.
                    urllib.request.urlopen(urllib.request.Request(
                        f"http://127.0.0.1:{port}/{bucket}/repo/{key}", data=body, method="PUT",
                        headers={"Content-Type": "application/octet-stream"}), timeout=60)
                    break
                except OSError:
                    if attempt == 4:
                        raise
                    time.sleep(1)
            n += 1
            if n % 2000 == 0:
                say(f"  {bucket}: {n} objects")


def push_all(hf, env, work, args):
    """Initialise the repository and push every segment, one process each."""
    subprocess.run([hf, "init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    say(f"pushing {args.objects} segments of {args.segment_kb} KiB")
    seg = os.path.join(work, "seg")
    os.makedirs(seg, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(args.objects):
        name = f"00000001{i // 256:08X}{i % 256:08X}"
        path = os.path.join(seg, name)
        with open(path, "wb") as f:
            f.write(os.urandom(args.segment_kb * 1024))
        subprocess.run([hf, "--no-cache", "-q", "wal-push", "--cluster", "7", path], env=env, check=True)
        os.unlink(path)
    say(f"pushed in {time.perf_counter() - t0:.1f}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=5000)
    ap.add_argument("--segment-kb", type=int, default=64)
    ap.add_argument("--s3-latency-ms", type=float)
    ap.add_argument("--holdfast")
    ap.add_argument("--moto", default=os.environ.get("HOLDFAST_MOTO_SERVER", "moto_server"))
    ap.add_argument("--workdir", default="/tmp/holdfast-wal-merge")
    ap.add_argument("--json-out")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the pushed repository of an earlier run in --workdir (skip the pushes)")
    args = ap.parse_args()
    hf = compare.find_holdfast(args.holdfast)
    work = args.workdir
    log = os.path.join(work, "commands.log")
    repo = os.path.join(work, "repo")
    pushed = os.path.join(work, "pushed")
    env = env_local(repo, os.path.join(work, "cache"))
    if args.reuse and os.path.isdir(pushed):
        for d in (repo, os.path.join(work, "repo-before"), os.path.join(work, "cache")):
            shutil.rmtree(d, ignore_errors=True)
        subprocess.run(["cp", "-a", pushed, repo], check=True)
        args.objects = count(repo, "index")
    else:
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        push_all(hf, env, work, args)
        subprocess.run(["cp", "-a", repo, pushed], check=True)
    before = os.path.join(work, "repo-before")
    subprocess.run(["cp", "-a", repo, before], check=True)
    out = {"objects": args.objects, "index_before": count(repo, "index")}


    out["local_before"] = open_once(hf, env, ["--no-cache"], log)
    m = compare.measure([hf, "--no-cache", "--json", "gc"], env, None, log)
    if m["rc"] != 0:
        compare.die(f"gc failed; see {log}", 1)
    out["local_gc"] = {"wall_s": m["wall_s"], "rss_mib": m["peak_rss_mib"], "report": json.loads(m["stdout"])}
    out["index_after"] = count(repo, "index")
    out["local_after"] = open_once(hf, env, ["--no-cache"], log)
    say(f"local: {out['index_before']} -> {out['index_after']} index objects; open without cache "
        f"{out['local_before']['wall_s']:.2f}s -> {out['local_after']['wall_s']:.2f}s; gc {m['wall_s']:.2f}s")
    check = subprocess.run([hf, "check", "--read-data"], env=env, capture_output=True, text=True)
    out["check_rc"] = check.returncode

    if args.s3_latency_ms is not None:
        port = free_port()
        moto = subprocess.Popen([args.moto, "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proxy = None
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/")
                    break
                except OSError:
                    time.sleep(0.2)
            say("uploading the repositories into moto")
            upload(port, "before", before)
            upload(port, "after", repo)
            upload(port, "gcrun", before)
            proxy = s3proxy.CountingProxy(upstream_port=port, latency_ms=args.s3_latency_ms).start()
            s3 = {}
            for bucket in ("before", "after", "gcrun"):
                e = dict(os.environ)
                e.update({"HOLDFAST_REPOSITORY": f"s3://{bucket}/repo", "HOLDFAST_PASSWORD": PASSWORD,
                          "HOLDFAST_CACHE_DIR": os.path.join(work, f"cache-{bucket}"),
                          "HOLDFAST_S3_ENDPOINT": proxy.endpoint, "HOLDFAST_S3_PATH_STYLE": "true",
                          "HOLDFAST_S3_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
                          "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"})
                if bucket == "gcrun":
                    b = proxy.snapshot(bucket)
                    m = compare.measure([hf, "--no-cache", "--json", "gc"], e, None, log)
                    s3["gc"] = {"wall_s": m["wall_s"], "rc": m["rc"],
                                "requests": s3proxy.diff_counts(proxy.snapshot(bucket), b)["groups"]}
                    say(f"s3 +{args.s3_latency_ms:g} ms: gc of {args.objects} index objects "
                        f"{m['wall_s']:.1f}s rc {m['rc']} {s3['gc']['requests']}")
                    continue
                for label, extra in (("no_cache", ["--no-cache"]), ("cold", [])):
                    b = proxy.snapshot(bucket)
                    r = open_once(hf, e, extra, log)
                    r["requests"] = s3proxy.diff_counts(proxy.snapshot(bucket), b)["groups"]
                    s3[f"{bucket}_{label}"] = r
                    say(f"s3 +{args.s3_latency_ms:g} ms {bucket:<6} {label:<8} open {r['wall_s']:6.2f}s "
                        f"{r['requests']}")
            out["s3"] = s3
        finally:
            if proxy:
                proxy.stop()
            moto.terminate()
            moto.wait()
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=2)
    print(json.dumps({k: v for k, v in out.items() if k != "local_gc"}, indent=1)[:3000])
    sys.exit(0 if out["check_rc"] == 0 else 1)


if __name__ == "__main__":
    main()
