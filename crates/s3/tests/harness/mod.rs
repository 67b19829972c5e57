//! Test harness: a real moto S3 server on 127.0.0.1, and a fault-injecting
//! HTTP proxy to put between the backend and it.
//!
//! moto is found through `HOLDFAST_MOTO_SERVER` (path of `moto_server`),
//! else `<workspace>/.venv/bin/moto_server`, else `moto_server` on `PATH`.
//! If none is there the tests fail and say how to install it: they never
//! skip silently. The server is killed when [`Moto`] is dropped.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use holdfast_s3::{S3Config, S3Credentials};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const INSTALL_HINT: &str = "moto_server not found. Install it at the workspace root with \
     `python3 -m venv .venv && .venv/bin/pip install 'moto[server]'` \
     (or set HOLDFAST_MOTO_SERVER to the path of a moto_server binary)";

/// Where `moto_server` is, or a panic telling how to install it.
pub fn moto_binary() -> PathBuf {
    if let Ok(p) = std::env::var("HOLDFAST_MOTO_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "HOLDFAST_MOTO_SERVER={} is not a file. {INSTALL_HINT}",
            p.display()
        );
        return p;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = workspace.join(".venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let cand = dir.join("moto_server");
            if cand.is_file() {
                return cand;
            }
        }
    }
    panic!("{INSTALL_HINT}");
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// A running moto server, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Moto {
    pub fn start() -> Moto {
        Self::start_with_env(&[])
    }

    /// Start with extra environment variables (e.g. moto's
    /// `INITIAL_NO_AUTH_ACTION_COUNT=0`, which makes it check credentials).
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let bin = moto_binary();
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            // The server's log goes to a file: a pipe nobody reads would fill
            // up and block it. Read back if it fails to start.
            let log = std::env::temp_dir().join(format!("holdfast-moto-{port}.log"));
            let log_file = std::fs::File::create(&log).expect("create moto log file");
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}. {INSTALL_HINT}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    // Exited: port taken meanwhile, or a broken install.
                    last_log = format!(
                        "{status}: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                // A connect alone is not proof: two tests may draw the same
                // free port, and the loser's connect reaches the winner's
                // server, which dies with the winner's test. Only our own
                // server's "Running on" line says the port is ours.
                let ours = std::fs::read_to_string(&log)
                    .map(|l| l.contains(&format!("Running on http://127.0.0.1:{port}")))
                    .unwrap_or(false);
                if ours && StdStream::connect(("127.0.0.1", port)).is_ok() {
                    return Moto { child, port, log };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("moto_server did not listen on port {port} within 60 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = std::fs::remove_file(&log);
        }
        panic!(
            "{} failed to start 5 times; last output: {last_log}\n{INSTALL_HINT}",
            bin.display()
        );
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A backend configuration for `bucket` on this server (or on
    /// `endpoint`, e.g. a fault proxy in front of it), with short timeouts.
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        config_for(&self.endpoint(), bucket, prefix)
    }

    /// A raw SDK client for test setup (creating buckets and so on).
    pub fn admin(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        self.admin()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("create bucket");
    }

    pub async fn create_lock_bucket(&self, bucket: &str) {
        self.admin()
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .expect("create Object Lock bucket");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn config_for(endpoint: &str, bucket: &str, prefix: &str) -> S3Config {
    let mut c = S3Config::new(bucket, prefix);
    c.endpoint = Some(endpoint.to_string());
    c.path_style = true;
    c.allow_http = true;
    c.region = "us-east-1".into();
    c.credentials = Some(S3Credentials {
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        session_token: None,
    });
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(10);
    c.base_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(500);
    // Small enough that the conformance suite's 20 MiB object is multipart.
    c.multipart_threshold = 8 * 1024 * 1024;
    c.multipart_part_size = 8 * 1024 * 1024;
    c
}

/// Deterministic test data.
pub fn pattern(len: usize, seed: u64) -> bytes::Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    bytes::Bytes::from(v)
}

// ---------------------------------------------------------------------------
// Fault-injecting proxy
// ---------------------------------------------------------------------------

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `500 InternalError` without forwarding.
    Error500,
    /// `503 SlowDown` (S3's throttling answer) without forwarding.
    SlowDown503,
    /// Read the request, then reset the connection without forwarding.
    ResetBefore,
    /// Forward the request (so the server applies it), then reset the
    /// connection instead of answering: the client never learns it worked.
    ResetAfter,
    /// Read the request, then send nothing for `stall` (past the client's timeout).
    Stall,
    /// Forward, send the head and half the body, then stall and reset.
    TruncateBody,
    /// Hold the request until [`FaultProxy::release`], then forward it
    /// (scripted only: lets a test act between two requests of one call).
    Hold,
}

pub const ALL_FAULTS: [Fault; 6] = [
    Fault::Error500,
    Fault::SlowDown503,
    Fault::ResetBefore,
    Fault::ResetAfter,
    Fault::Stall,
    Fault::TruncateBody,
];

#[derive(Default, Debug)]
pub struct ProxyStats {
    pub requests: AtomicU64,
    pub faults: AtomicU64,
    /// Every injected fault with the request line it hit.
    pub log: Mutex<Vec<(Fault, String)>>,
}

struct ProxyState {
    upstream: SocketAddr,
    /// Share of requests that fail, in per mille.
    share: AtomicU32,
    stall: Duration,
    /// What to do to the next requests, in order (`None`: pass through),
    /// before random faults apply again.
    script: Mutex<Vec<Option<Fault>>>,
    rng: Mutex<u64>,
    stats: ProxyStats,
    held: AtomicU64,
    gate: tokio::sync::Semaphore,
}

/// An HTTP/1.1 proxy on 127.0.0.1 in front of moto that fails a share of
/// requests. Stopped when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream_port: u16, stall: Duration, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(ProxyState {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            share: AtomicU32::new(0),
            stall,
            script: Mutex::new(Vec::new()),
            rng: Mutex::new(seed | 1),
            stats: ProxyStats::default(),
            held: AtomicU64::new(0),
            gate: tokio::sync::Semaphore::new(0),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, st).await;
                });
            }
        });
        FaultProxy { addr, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fail this share (0.0..=1.0) of requests from now on.
    pub fn set_fault_share(&self, share: f64) {
        self.state
            .share
            .store((share.clamp(0.0, 1.0) * 1000.0) as u32, Ordering::SeqCst);
    }

    /// Apply these faults to the next requests, in order (`None` passes
    /// one request through).
    pub fn script(&self, faults: &[Option<Fault>]) {
        let mut s = self.state.script.lock().unwrap();
        s.clear();
        s.extend(faults.iter().rev());
    }

    /// Requests held by [`Fault::Hold`] so far.
    pub fn held(&self) -> u64 {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Let one held request go on.
    pub fn release(&self) {
        self.state.gate.add_permits(1);
    }

    pub fn requests(&self) -> u64 {
        self.state.stats.requests.load(Ordering::Relaxed)
    }

    pub fn faults(&self) -> u64 {
        self.state.stats.faults.load(Ordering::Relaxed)
    }

    /// Injected faults of this kind whose request line contains `needle`.
    pub fn faults_matching(&self, fault: Fault, needle: &str) -> usize {
        self.state
            .stats
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(f, line)| *f == fault && line.contains(needle))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProxyState {
    fn next_rand(&self) -> u64 {
        let mut x = self.rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    fn pick(&self) -> Option<Fault> {
        if let Some(f) = self.script.lock().unwrap().pop() {
            return f;
        }
        let share = self.share.load(Ordering::SeqCst);
        if share == 0 || (self.next_rand() % 1000) as u32 >= share {
            return None;
        }
        Some(ALL_FAULTS[(self.next_rand() % ALL_FAULTS.len() as u64) as usize])
    }
}

struct Request {
    method: String,
    /// Request line and headers, without the blank line.
    head_lines: Vec<String>,
    body: Vec<u8>,
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).await?;
        if n == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

async fn read_chunked<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    // Keeps the chunked framing verbatim (it is forwarded as is).
    let mut out = Vec::new();
    loop {
        let mut size_line = String::new();
        r.read_line(&mut size_line).await?;
        out.extend_from_slice(size_line.as_bytes());
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
            .unwrap_or(0);
        if size == 0 {
            // Trailers until the blank line.
            loop {
                let mut t = String::new();
                let n = r.read_line(&mut t).await?;
                out.extend_from_slice(t.as_bytes());
                if n == 0 || t == "\r\n" || t == "\n" {
                    return Ok(out);
                }
            }
        }
        let mut chunk = vec![0u8; size + 2];
        r.read_exact(&mut chunk).await?;
        out.extend_from_slice(&chunk);
    }
}

async fn read_request(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<Option<Request>> {
    let Some(head_lines) = read_head(r).await? else {
        return Ok(None);
    };
    let method = head_lines[0].split(' ').next().unwrap_or("").to_string();
    if header(&head_lines, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let body = if header(&head_lines, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(r).await?
    } else {
        let len: usize = header(&head_lines, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut b = vec![0u8; len];
        r.read_exact(&mut b).await?;
        b
    };
    Ok(Some(Request {
        method,
        head_lines,
        body,
    }))
}

/// Send the request to moto on a fresh connection and read the whole answer.
async fn forward(req: &Request, upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).await?;
    let mut head = String::new();
    head.push_str(&req.head_lines[0]);
    head.push_str("\r\n");
    for l in &req.head_lines[1..] {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name == "connection" || name == "expect" {
            continue;
        }
        head.push_str(l);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes()).await?;
    up.write_all(&req.body).await?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).await?;
    Ok(resp)
}

/// Split a raw response into (head lines, body) and say whether the client
/// can frame it without the connection closing.
fn split_response(raw: &[u8], method: &str) -> (Vec<String>, Vec<u8>, bool) {
    let pos = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..pos]).to_string();
    let body = raw.get(pos + 4..).unwrap_or(&[]).to_vec();
    let lines: Vec<String> = head.split("\r\n").map(str::to_string).collect();
    let status: u16 = lines[0]
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let framed = method == "HEAD"
        || status == 204
        || status == 304
        || header(&lines, "content-length").is_some()
        || header(&lines, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
    (lines, body, framed)
}

fn error_response(status: &str, code: &str, message: &str, head_only: bool) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>FAULT</RequestId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
        if head_only { 0 } else { body.len() }
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

async fn reset(w: tokio::net::tcp::OwnedWriteHalf, r: BufReader<tokio::net::tcp::OwnedReadHalf>) {
    if let Ok(s) = r.into_inner().reunite(w) {
        let _ = s.set_zero_linger();
        drop(s);
    }
}

async fn serve(sock: TcpStream, st: Arc<ProxyState>) -> std::io::Result<()> {
    let _ = sock.set_nodelay(true);
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    loop {
        let Some(req) = read_request(&mut r, &mut w).await? else {
            return Ok(());
        };
        st.stats.requests.fetch_add(1, Ordering::Relaxed);
        let fault = st.pick();
        if let Some(f) = fault {
            st.stats.faults.fetch_add(1, Ordering::Relaxed);
            st.stats
                .log
                .lock()
                .unwrap()
                .push((f, req.head_lines[0].clone()));
        }
        let head_only = req.method == "HEAD";
        match fault {
            Some(Fault::Error500) => {
                w.write_all(&error_response(
                    "500 Internal Server Error",
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                    head_only,
                ))
                .await?;
                continue;
            }
            Some(Fault::SlowDown503) => {
                w.write_all(&error_response(
                    "503 Slow Down",
                    "SlowDown",
                    "Please reduce your request rate.",
                    head_only,
                ))
                .await?;
                continue;
            }
            Some(Fault::ResetBefore) => {
                reset(w, r).await;
                return Ok(());
            }
            Some(Fault::Stall) => {
                tokio::time::sleep(st.stall).await;
                reset(w, r).await;
                return Ok(());
            }
            Some(Fault::Hold) => {
                st.held.fetch_add(1, Ordering::SeqCst);
                if let Ok(p) = st.gate.acquire().await {
                    p.forget();
                }
            }
            _ => {}
        }
        let raw = forward(&req, st.upstream).await?;
        let (lines, body, framed) = split_response(&raw, &req.method);
        match fault {
            Some(Fault::ResetAfter) => {
                reset(w, r).await;
                return Ok(());
            }
            Some(Fault::TruncateBody) => {
                let mut out = String::new();
                for l in &lines {
                    out.push_str(l);
                    out.push_str("\r\n");
                }
                out.push_str("\r\n");
                w.write_all(out.as_bytes()).await?;
                w.write_all(&body[..body.len() / 2]).await?;
                w.flush().await?;
                tokio::time::sleep(st.stall).await;
                reset(w, r).await;
                return Ok(());
            }
            _ => {}
        }
        // Relay the answer; keep the client connection if it can be framed.
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            let is_conn = i > 0
                && l.split(':')
                    .next()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case("connection"));
            if is_conn && framed {
                continue;
            }
            out.push_str(l);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        w.write_all(out.as_bytes()).await?;
        w.write_all(&body).await?;
        w.flush().await?;
        if !framed {
            return Ok(());
        }
    }
}
