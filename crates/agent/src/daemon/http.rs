//! The metrics endpoint on loopback: `/metrics` (Prometheus text) and `/v1/state` (the pool,
//! without pod identities: those are for the owner-only plugin socket). Served by hyper on a
//! single-threaded tokio runtime of its own, bounded: at most [`MAX_CONNECTIONS`] at once (more
//! are closed at once), headers within [`HEADER_TIMEOUT`] and [`MAX_BUFFER`] bytes, a whole
//! connection within [`CONNECTION_TIMEOUT`], no keep-alive, request bodies never read.

use super::{Daemon, DaemonError};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Time for a client to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole connection.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer (the longest request head).
pub const MAX_BUFFER: usize = 16 * 1024;

impl Daemon {
    /// Serves the endpoint on the configured loopback address, forever.
    ///
    /// # Errors
    /// The runtime cannot start or the address cannot be bound.
    pub fn serve_http(self: &Arc<Self>) -> Result<(), DaemonError> {
        let addr = self.cfg.metrics.clone();
        let io = |e: std::io::Error| DaemonError::Io { path: addr.clone(), message: e.to_string() };
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().map_err(io)?;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(&addr).await.map_err(io)?;
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let d = Arc::clone(self);
                tokio::spawn(async move {
                    let _permit = permit;
                    let svc = service_fn(move |req| {
                        let d = Arc::clone(&d);
                        async move { Ok::<_, Infallible>(d.route(&req)) }
                    });
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .max_buf_size(MAX_BUFFER)
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), svc);
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                });
            }
        })
    }

    fn route<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, ctype: &str, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            if let Ok(v) = ctype.parse() {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
        }
        match req.uri().path() {
            "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", self.metrics.render()),
            "/v1/state" => reply(StatusCode::OK, "application/json", self.state(false, super::now()).to_string()),
            "/" => reply(StatusCode::OK, "text/plain", "/metrics\n/v1/state\n".into()),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }
}
