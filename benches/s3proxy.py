#!/usr/bin/env python3
"""A counting HTTP proxy in front of an S3 server, for benches/compare.py --s3.

Every request is forwarded as it came (method, path, query, headers, body;
only hop-by-hop headers are dropped and a chunked request body is re-framed
with Content-Length), and counted per bucket by S3 operation, so that the
harness can report how many PUT/GET/HEAD/LIST/DELETE requests each tool made
in each phase. Path-style addressing only (`http://host:port/BUCKET/KEY`):
the bucket is the first path segment, which is how the harness tells tools
apart (one bucket per tool).

Python 3 standard library only. Used in-process:

    proxy = CountingProxy(upstream_port=5000, latency_ms=25)   # 127.0.0.1, a free port
    proxy.start()                               # serves from a daemon thread
    before = proxy.snapshot("bucket")
    ...
    delta = diff_counts(proxy.snapshot("bucket"), before)
    proxy.stop()

or stand-alone for poking at a tool by hand:

    python3 benches/s3proxy.py --upstream-port 5000 --port 5001 [--latency-ms 25] [--trace FILE]
    (Ctrl-C or SIGTERM prints the counters as JSON)
"""
import argparse
import http.client
import http.server
import json
import signal
import socket
import sys
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit

# Fine-grained operations, and the billing-style group each belongs to.
# S3 bills PUT, COPY, POST and LIST in one tier and GET/HEAD in another; the
# groups here keep LIST apart because the harness reports it separately.
OP_GROUP = {
    "put_object": "PUT",
    "copy_object": "PUT",
    "create_multipart": "PUT",
    "upload_part": "PUT",
    "complete_multipart": "PUT",
    "get_object": "GET",
    "get_object_ranged": "GET",
    "head_object": "HEAD",
    "head_bucket": "HEAD",
    "list_objects": "LIST",
    "list_uploads": "LIST",
    "delete_object": "DELETE",
    "delete_objects": "DELETE",
    "abort_multipart": "DELETE",
    "create_bucket": "OTHER",
    "delete_bucket": "OTHER",
    "bucket_config": "OTHER",     # ?location, ?versioning, ?object-lock, ...
    "list_parts": "OTHER",
    "other": "OTHER",
}
GROUPS = ("PUT", "GET", "HEAD", "LIST", "DELETE", "OTHER")

# Not forwarded (RFC 9110 section 7.6.1, plus Expect: we answer 100-continue
# ourselves and send the whole body upstream at once).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "expect", "proxy-connection"}


def classify(method, target, headers):
    """(bucket, operation) of one path-style S3 request."""
    u = urlsplit(target)
    path = unquote(u.path).lstrip("/")
    bucket, _, key = path.partition("/")
    q = parse_qs(u.query, keep_blank_values=True)
    if not bucket:
        return "", "other"            # ListBuckets and the like
    if not key:
        if method == "GET":
            if "uploads" in q:
                return bucket, "list_uploads"
            if not q or q.keys() & {"list-type", "prefix", "delimiter", "marker",
                                    "continuation-token", "start-after", "max-keys"}:
                return bucket, "list_objects"
            return bucket, "bucket_config"
        if method == "HEAD":
            return bucket, "head_bucket"
        if method == "PUT":
            return bucket, "bucket_config" if q else "create_bucket"
        if method == "POST" and "delete" in q:
            return bucket, "delete_objects"
        if method == "DELETE":
            return bucket, "bucket_config" if q else "delete_bucket"
        return bucket, "other"
    if method == "PUT":
        if "partNumber" in q and "uploadId" in q:
            return bucket, "upload_part"
        if headers.get("x-amz-copy-source"):
            return bucket, "copy_object"
        return bucket, "put_object"
    if method == "POST":
        if "uploads" in q:
            return bucket, "create_multipart"
        if "uploadId" in q:
            return bucket, "complete_multipart"
        return bucket, "other"
    if method == "GET":
        if "uploadId" in q:
            return bucket, "list_parts"
        return bucket, "get_object_ranged" if headers.get("range") else "get_object"
    if method == "HEAD":
        return bucket, "head_object"
    if method == "DELETE":
        return bucket, "abort_multipart" if "uploadId" in q else "delete_object"
    return bucket, "other"


def key_class(target):
    """The "directory" of a key with shard levels folded: /b/repo/data/ab/abcd -> repo/data/*."""
    path = unquote(urlsplit(target).path).lstrip("/")
    parts = path.split("/")[1:-1]          # without the bucket and the object's own name
    return "/".join("*" if len(p) <= 2 and all(c in "0123456789abcdef" for c in p) else p
                    for p in parts) or "."


def empty_counts():
    return {"ops": {}, "groups": {g: 0 for g in GROUPS}, "errors": {}, "by_key_class": {},
            "bytes_sent": 0, "bytes_received": 0, "requests": 0}


def diff_counts(after, before):
    """after - before, for two snapshots of one bucket."""
    out = empty_counts()
    for k in ("bytes_sent", "bytes_received", "requests"):
        out[k] = after[k] - before[k]
    for k in ("ops", "groups", "errors", "by_key_class"):
        for name in set(after[k]) | set(before[k]):
            v = after[k].get(name, 0) - before[k].get(name, 0)
            if v or k == "groups":
                out[k][name] = v
    return out


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"     # keep-alive, as the S3 clients expect
    # Headers and body go out in separate writes: with Nagle's algorithm on,
    # the body of a small response would wait for the client's delayed ACK
    # (40 ms on Linux) and the proxy would add that to every small GET.
    disable_nagle_algorithm = True
    server_version = "s3proxy"

    def log_message(self, fmt, *args):   # quiet
        pass

    def _upstream(self, fresh=False):
        if fresh or getattr(self, "_conn", None) is None:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
            self._conn = http.client.HTTPConnection("127.0.0.1", self.server.proxy.upstream_port,
                                                    timeout=600)
        return self._conn

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass          # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        n = self.headers.get("Content-Length")
        return self.rfile.read(int(n)) if n else None

    def _forward(self):
        started = time.monotonic()
        body = self._read_body()
        lower = {k.lower(): v for k, v in self.headers.items()}
        bucket, op = classify(self.command, self.path, lower)
        delay = self.server.proxy.latency_ms
        if delay > 0:
            # One WAN round trip per request, paid before the server sees
            # it; requests in flight at once wait side by side (a thread
            # per connection), as they would on a real link.
            time.sleep(delay / 1000.0)
        status, sent_back = 502, 0
        try:
            for attempt in (0, 1):
                conn = self._upstream(fresh=attempt == 1)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                            continue
                        conn.putheader(k, v)
                    if body is not None:
                        conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    break
                except (ConnectionError, http.client.HTTPException, socket.timeout):
                    # A stale keep-alive connection to the server: retry once on a new one.
                    if attempt == 1:
                        raise
            status = resp.status
            self.send_response_only(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            data = None
            if length is None and not no_body:
                data = resp.read()
                length = str(len(data))
            for k, v in resp.getheaders():
                if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                    continue
                self.send_header(k, v)
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if not no_body:
                if data is not None:
                    self.wfile.write(data)
                    sent_back = len(data)
                else:
                    while True:
                        piece = resp.read(1 << 20)
                        if not piece:
                            break
                        self.wfile.write(piece)
                        sent_back += len(piece)
            else:
                resp.read()
            if resp.will_close:
                self._conn.close()
                self._conn = None
        except (ConnectionError, http.client.HTTPException, socket.timeout, OSError) as e:
            if status == 502:
                msg = f"s3proxy: upstream error: {e}\n".encode()
                try:
                    self.send_response_only(502)
                    self.send_header("Content-Length", str(len(msg)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(msg)
                except OSError:
                    pass
            self.close_connection = True
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
                self._conn = None
        finally:
            self.server.proxy._count(bucket, op, status, len(body or b""), sent_back,
                                     key_class(self.path))
            self.server.proxy._trace(started, self.command, op, status, self.path)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_OPTIONS = do_PATCH = _forward


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class CountingProxy:
    """The proxy: listens on 127.0.0.1:port, forwards to 127.0.0.1:upstream_port."""

    def __init__(self, upstream_port, port=0, latency_ms=0.0, trace=None):
        self.upstream_port = upstream_port
        self.latency_ms = latency_ms
        # A file to which every request is appended as one line: start and
        # end (monotonic seconds), method, operation, status, path; which
        # requests waited on which is what decides wall time at a latency.
        self._trace_file = open(trace, "a", buffering=1) if trace else None
        self._lock = threading.Lock()
        self._counts = {}
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.proxy = self
        self.port = self._server.server_address[1]
        self._thread = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def _count(self, bucket, op, status, sent, received, kclass):
        with self._lock:
            c = self._counts.setdefault(bucket, empty_counts())
            c["requests"] += 1
            kk = f"{op} {kclass}"
            c["by_key_class"][kk] = c["by_key_class"].get(kk, 0) + 1
            c["ops"][op] = c["ops"].get(op, 0) + 1
            c["groups"][OP_GROUP[op]] += 1
            if status >= 400:
                key = f"{op} {status}"
                c["errors"][key] = c["errors"].get(key, 0) + 1
            if OP_GROUP[op] == "PUT":
                c["bytes_sent"] += sent
            if OP_GROUP[op] == "GET":
                c["bytes_received"] += received

    def _trace(self, started, method, op, status, path):
        if self._trace_file is None:
            return
        with self._lock:
            self._trace_file.write(f"{started:.4f} {time.monotonic():.4f} {method} {op} {status} {path}\n")

    def snapshot(self, bucket):
        with self._lock:
            return json.loads(json.dumps(self._counts.get(bucket, empty_counts())))

    def all_counts(self):
        with self._lock:
            return json.loads(json.dumps(self._counts))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream-port", type=int, required=True, help="port of the S3 server on 127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="delay every request by this many milliseconds (a WAN round trip)")
    p.add_argument("--trace", metavar="FILE",
                   help="append one line per request (start, end, method, operation, status, path)")
    args = p.parse_args()
    proxy = CountingProxy(args.upstream_port, args.port, args.latency_ms, args.trace).start()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    print(f"s3proxy: {proxy.endpoint} -> http://127.0.0.1:{args.upstream_port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        json.dump(proxy.all_counts(), sys.stdout, indent=2)
        print()
        proxy.stop()


if __name__ == "__main__":
    main()
