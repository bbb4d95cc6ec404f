//! The admin port (`[admin] listen`, plain HTTP/1.1, loopback by default): what operators and
//! their tools read without a client certificate. Read-only, and nothing on it is personal data
//! (heads, lags, peers, certificate identities and expiry).
//!
//! - `/metrics`: Prometheus text format (`rpc::metrics`).
//! - `/livez`: the process answers. `/readyz`: the store is recovered, the TLS material loaded, and
//!   the writer, indexer and sync driver alive (503 naming the part that is not).
//! - `/`: the status page (`page`), refreshing itself.
//!
//! Bounded: at most `ADMIN_CONNECTIONS_MAX` connections at once, each with a header deadline and
//! a lifetime; requests have no body to read.

pub mod page;

use crate::health::Health;
use crate::rpc::metrics::Metrics;
use crate::rpc::operations::OperationsService;
use crate::rpc::transport::TransportStats;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Admin connections served at once; more wait in the listen backlog.
pub const ADMIN_CONNECTIONS_MAX: usize = 16;
/// A client must send its request headers within this.
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// An admin connection is closed after this, kept alive or not.
pub const ADMIN_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The status page reloads itself this often (seconds).
pub const PAGE_REFRESH_SECONDS: u32 = 2;

/// A status read for the admin port is reused for this long: scrapes and open pages cost one
/// read of the node's status per interval, however many there are.
pub const STATUS_REUSE: Duration = Duration::from_secs(1);

/// What the admin port reads.
pub struct Admin {
    pub operations: Arc<OperationsService>,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    pub transport: Arc<TransportStats>,
    /// The last status read, and when.
    pub recent: tokio::sync::Mutex<Option<(std::time::Instant, crate::rpc::pb::SyncStatusResponse)>>,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now_unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r.headers_mut()
        .insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    r
}

impl Admin {
    /// The node's status, read at most once per `STATUS_REUSE` (the lock makes concurrent
    /// requests wait for one read instead of each reading).
    async fn status(&self) -> Result<crate::rpc::pb::SyncStatusResponse, tonic::Status> {
        let mut recent = self.recent.lock().await;
        if let Some((at, s)) = recent.as_ref() {
            if at.elapsed() < STATUS_REUSE {
                return Ok(s.clone());
            }
        }
        let s = self.operations.full_status().await?;
        *recent = Some((std::time::Instant::now(), s.clone()));
        Ok(s)
    }

    /// Answers one request.
    pub async fn answer<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "the admin port is read-only: GET /, /metrics, /livez or /readyz\n",
            );
        }
        match request.uri().path() {
            "/livez" => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
            "/readyz" => match self.health.ready() {
                Ok(()) => reply(StatusCode::OK, "text/plain; charset=utf-8", "ready\n"),
                Err(why) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    format!("not ready\n{why}\n"),
                ),
            },
            "/metrics" => match self.status().await {
                Ok(status) => reply(
                    StatusCode::OK,
                    crate::rpc::metrics::CONTENT_TYPE,
                    self.metrics.render(&status, &self.transport, now_unix()),
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    format!("reading the sync status failed: {}\n", e.message()),
                ),
            },
            "/" => match self.status().await {
                Ok(status) => reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    page::render(&status, now_unix_millis(), PAGE_REFRESH_SECONDS),
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    format!("reading the sync status failed: {}\n", e.message()),
                ),
            },
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found: GET /, /metrics, /livez or /readyz\n",
            ),
        }
    }
}

/// Completes when `stopping` turns true (the borrow it yields is not held across an await).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// Serves the admin port on `listener` until `stopping` turns true.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut stopping: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(ADMIN_CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stopped(&mut stopping) => return,
        };
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stopping) => return,
        };
        let admin = admin.clone();
        let mut stop = stopping.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(admin.answer(request).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(tcp), service);
            // Ends with the node too: a kept-alive scraper must not hold the node's parts (and
            // with them the store writer) past the drain.
            tokio::select! {
                _ = tokio::time::timeout(ADMIN_CONNECTION_LIFETIME, conn) => {}
                _ = stopped(&mut stop) => {}
            }
        });
    }
}
