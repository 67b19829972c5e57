//! The daemon's HTTP listener: `/healthz`, `/status` (the
//! [`StatusView`] as JSON), `/metrics` (Prometheus text) and `/` (the
//! status page). A small HTTP/1.1 server for GET and HEAD, one request
//! per connection: a scraper and a browser need no more, and an idle
//! daemon holds no connection state and no framework.
//!
//! Also the client side of `holdfast status`: [`fetch_status`].

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{DaemonError, Result};
use crate::scheduler::Daemon;
use crate::view::StatusView;

/// The longest request head read (a GET line and a few headers).
const MAX_HEAD: usize = 16 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Bind the listener (so that a taken port fails the start, not later).
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|source| DaemonError::Listen {
            address: address.to_string(),
            source,
        })
}

/// Serve requests on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, daemon: Daemon) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let d = daemon.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &d).await {
                        tracing::debug!(error = %e, "listener connection");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "listener accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A response: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

fn text(status: &'static str, body: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.as_bytes().to_vec(),
    }
}

/// What a path answers (the view is built only when needed).
pub fn route(path: &str, daemon: &Daemon) -> (&'static str, &'static str, Vec<u8>) {
    let r = match path {
        "/healthz" => text("200 OK", "ok\n"),
        "/status" => {
            let view = daemon.view(Utc::now());
            match serde_json::to_vec_pretty(&view) {
                Ok(mut body) => {
                    body.push(b'\n');
                    Response {
                        status: "200 OK",
                        content_type: "application/json",
                        body,
                    }
                }
                Err(e) => text("500 Internal Server Error", &format!("{e}\n")),
            }
        }
        "/metrics" => {
            let view = daemon.view(Utc::now());
            Response {
                status: "200 OK",
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: crate::metrics::render(&view).into_bytes(),
            }
        }
        "/" => {
            let view = daemon.view(Utc::now());
            Response {
                status: "200 OK",
                content_type: "text/html; charset=utf-8",
                body: crate::page::render(&view).into_bytes(),
            }
        }
        _ => text(
            "404 Not Found",
            "not found: try /, /status, /metrics or /healthz\n",
        ),
    };
    (r.status, r.content_type, r.body)
}

async fn handle(mut stream: TcpStream, daemon: &Daemon) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await
    .unwrap_or(Ok(false))?;
    if !complete {
        return Ok(());
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match method {
        "GET" | "HEAD" => route(path, daemon),
        _ => {
            let r = text("405 Method Not Allowed", "only GET and HEAD\n");
            (r.status, r.content_type, r.body)
        }
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(&body);
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// GET `path` from a daemon's listener (blocking; for `holdfast status`).
pub fn get(address: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    let no = |message: String| DaemonError::NoDaemon {
        address: address.to_string(),
        message,
    };
    let mut s =
        std::net::TcpStream::connect_timeout(&address, timeout).map_err(|e| no(e.to_string()))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|_| s.set_write_timeout(Some(timeout)))
        .map_err(|e| no(e.to_string()))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| no(e.to_string()))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| no(e.to_string()))?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| no("not an HTTP response".into()))?;
    let head = String::from_utf8_lossy(&resp[..split]);
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| no(format!("not an HTTP response: {:?}", head.lines().next())))?;
    Ok((code, resp[split + 4..].to_vec()))
}

/// The status of the daemon listening on `address`.
pub fn fetch_status(address: SocketAddr, timeout: Duration) -> Result<StatusView> {
    let (code, body) = get(address, "/status", timeout)?;
    if code != 200 {
        return Err(DaemonError::NoDaemon {
            address: address.to_string(),
            message: format!("/status answered HTTP {code}"),
        });
    }
    serde_json::from_slice(&body).map_err(|e| DaemonError::NoDaemon {
        address: address.to_string(),
        message: format!("/status is not a Holdfast status: {e}"),
    })
}
