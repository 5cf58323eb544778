//! The simulated VPC served the way AWS serves EC2, so the daemon's one cloud path, the AWS
//! SDK, is the path every test and the demo run:
//! - `POST /` (or `GET /?...`): the EC2 Query API, form-encoded parameters in, EC2's XML and
//!   error codes out, for every action podip calls (and `RunInstances`/`TerminateInstances`);
//! - `/imds/<instance-id>/latest/...`: IMDSv2 of each simulated instance.
//!
//! Requests must be signed (an `AWS4-HMAC-SHA256` authorization header, as every SDK and the
//! AWS CLI send: a web page cannot forge one), but the signature is not checked, as in any
//! local EC2 stand-in. A call takes the simulated latency, scaled; a reply the simulator's faults lose is
//! never sent (the connection closes, as a reply lost in the network would look).

pub mod actions;
pub mod filters;
pub mod imds;
pub mod query;
pub mod xml;

use cloud::CallError;
use cloud::sim::SimVpc;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use ipam::Time;
use ipam::addr::InstanceId;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A test's or operator's rule refusing requests by action name with an EC2 error (an account
/// without the IAM permissions, say).
pub type Refuse = Box<dyn Fn(&str) -> Option<CallError> + Send + Sync>;

/// The largest request body taken (EC2's own limit is far below).
const MAX_BODY: usize = 1 << 20;
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

struct State {
    vpc: Mutex<SimVpc>,
    now: fn() -> Time,
    scale: AtomicU64,
    refuse: Mutex<Option<Refuse>>,
    tokens: Mutex<imds::Tokens>,
    requests: AtomicU64,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, SimVpc> {
        // A poisoned lock means a handler panicked: the simulation is void either way.
        self.vpc.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

/// The simulated VPC served on a loopback address.
pub struct Endpoint {
    addr: SocketAddr,
    state: Arc<State>,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// The reply to a request is lost: the connection closes without an answer.
#[derive(Debug)]
struct Lost;

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reply lost (injected)")
    }
}

impl std::error::Error for Lost {}

impl Endpoint {
    /// Serves `vpc` on a free loopback port; `now` reads the clock at every call.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub fn start(vpc: SimVpc, now: fn() -> Time) -> std::io::Result<Endpoint> {
        Endpoint::bind(SocketAddr::from(([127, 0, 0, 1], 0)), vpc, now)
    }

    /// Serves `vpc` on `addr`.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn bind(addr: SocketAddr, vpc: SimVpc, now: fn() -> Time) -> std::io::Result<Endpoint> {
        let state = Arc::new(State {
            vpc: Mutex::new(vpc),
            now,
            scale: AtomicU64::new(0f64.to_bits()),
            refuse: Mutex::new(None),
            tokens: Mutex::new(imds::Tokens::default()),
            requests: AtomicU64::new(0),
        });
        let listener = std::net::TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let running = run(listener, Arc::clone(&state))?;
        Ok(Endpoint { addr, state, running: Mutex::new(Some(running)) })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The EC2 endpoint URL (`AWS_ENDPOINT_URL_EC2`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The metadata service URL of `instance` (`AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    pub fn imds_url(&self, instance: &InstanceId) -> String {
        format!("http://{}/imds/{}", self.addr, instance.0)
    }

    /// The simulated VPC itself, for a test to set up or look at (no API call is made).
    pub fn vpc(&self) -> MutexGuard<'_, SimVpc> {
        self.state.lock()
    }

    /// Scales every call's simulated latency (0 answers at once, 1 is EC2-like, a huge value
    /// hangs the cloud).
    pub fn set_latency_scale(&self, scale: f64) {
        self.state.scale.store(scale.clamp(0.0, 1e6).to_bits(), Ordering::Relaxed);
    }

    /// Refuses the requests `refuse` returns an error for (by action name), before the VPC sees
    /// them.
    pub fn set_refusal(&self, refuse: impl Fn(&str) -> Option<CallError> + Send + Sync + 'static) {
        *self.state.refuse.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(refuse));
    }

    /// Stops serving: the port closes and open connections drop (the cloud is gone). The VPC
    /// keeps its state for [`Endpoint::restart`].
    pub fn stop(&self) {
        let r = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(r) = r {
            let _ = r.stop.send(true);
            let _ = r.thread.join();
        }
    }

    /// Serves again at the same address, with the same VPC.
    ///
    /// # Errors
    /// The address was taken meanwhile.
    pub fn restart(&self) -> std::io::Result<()> {
        self.stop();
        let listener = std::net::TcpListener::bind(self.addr)?;
        let r = run(listener, Arc::clone(&self.state))?;
        *self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
        Ok(())
    }

    /// Blocks until the server thread ends (it ends only on [`Endpoint::stop`]).
    pub fn wait(self) {
        let r = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(r) = r {
            let _ = r.thread.join();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(listener: std::net::TcpListener, state: Arc<State>) -> std::io::Result<Running> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new().name("sim-endpoint".into()).spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept(), if conns.len() < MAX_CONNECTIONS => {
                        let Ok((stream, _)) = accepted else {
                            // Out of descriptors, say: let connections finish rather than spin.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        let state = Arc::clone(&state);
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = hyper::server::conn::http1::Builder::new()
                                .timer(hyper_util::rt::TokioTimer::new())
                                .header_read_timeout(HEADER_TIMEOUT)
                                .serve_connection(io, svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            conns.abort_all();
        });
    })?;
    Ok(Running { stop, thread })
}

fn text(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// The HTTP status EC2 answers an error code with.
pub fn status_of(code: &str) -> u16 {
    match code {
        "RequestLimitExceeded" | "Unavailable" | "ServiceUnavailable" => 503,
        "InternalError" | "InternalFailure" => 500,
        "DryRunOperation" => 412,
        "MissingAuthenticationToken" | "AuthFailure" => 401,
        _ => 400,
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Lost> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed);
    let rid = format!("5e1a7ed0-0000-4000-8000-{n:012x}");
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/imds/") {
        let header = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (ttl, token) = (header(imds::TTL_HEADER), header(imds::TOKEN_HEADER));
        let now = (state.now)();
        let r = {
            let vpc = state.lock();
            let mut tokens = state.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            imds::serve(&vpc, &mut tokens, now, req.method().as_str(), rest, ttl.as_deref(), token.as_deref())
        };
        let mut resp = text(r.status, r.body);
        if let Some(t) = r.ttl {
            resp.headers_mut().insert(imds::TTL_HEADER, t.into());
        }
        return Ok(resp);
    }
    if path != "/" {
        return Ok(text(404, xml::error("InvalidAction", &format!("no such path {path}"), &rid)));
    }
    let signed = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 "));
    if !signed {
        let m = "Request is missing Authentication Token (sign it, as the AWS SDKs and CLI do)";
        return Ok(text(401, xml::error("MissingAuthenticationToken", m, &rid)));
    }
    let query = req.uri().query().unwrap_or_default().as_bytes().to_vec();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(text(400, xml::error("InvalidRequest", &format!("request body: {e}"), &rid))),
    };
    let params = query::Params::parse(&[&query, &body]);
    let Some(action) = params.get("Action").map(str::to_string) else {
        return Ok(text(400, xml::error("MissingAction", "The request must contain the parameter Action", &rid)));
    };
    let refused =
        state.refuse.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().and_then(|f| f(&action));
    let (answer, latency) = match refused {
        Some(e) => (Err(actions::Failure::from(e)), Duration::ZERO),
        None => {
            let mut vpc = state.lock();
            vpc.set_now((state.now)());
            let a = actions::dispatch(&mut vpc, &action, &params, &rid);
            (a, vpc.take_elapsed())
        }
    };
    let scale = f64::from_bits(state.scale.load(Ordering::Relaxed));
    if scale > 0.0 {
        tokio::time::sleep(latency.mul_f64(scale)).await;
    }
    match answer {
        Ok(xml) => Ok(text(200, xml)),
        // A reply the simulator lost after the call took effect is never sent.
        Err(f) if f.code == "RequestTimeout" => Err(Lost),
        Err(f) => Ok(text(status_of(&f.code), xml::error(&f.code, &f.message, &rid))),
    }
}
