//! An in-process Kubernetes API server for tests, small but honest about what kube-rs relies on:
//! resource versions (one counter for everything), lists with field and label selectors
//! (`name=value` terms) and pages (`limit`, `continue`, `remainingItemCount`), watches from a version (410 `Expired` once history is compacted),
//! bookmarks-free streams of `ADDED`/`MODIFIED`/`DELETED`, create (409 when taken), merge patch,
//! replace (409 on a stale version), delete, and 403 on demand. It records every request as RBAC
//! sees it (verb, API group, resource), so a test can hold a ClusterRole to what code calls.
//!
//! For kubectl it also serves discovery (`/api`, `/apis` and each group version, for the
//! resources in [`RESOURCES`]) and strategic merge patches in the one form kubectl's `set env`
//! sends: lists of objects with a `name` merged by name (containers, env), `$setElementOrder`
//! directives ignored, `$patch: delete` honoured.

use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// A request as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// `get`, `list`, `watch`, `create`, `patch`, `update`, `delete`.
    pub verb: String,
    /// API group (`""` for the core group).
    pub group: String,
    /// Resource (plural).
    pub resource: String,
}

type Key = (String, String, String); // resource, namespace, name

#[derive(Default)]
struct State {
    rv: u64,
    /// The oldest version a watch may start after (history before it is compacted).
    floor: u64,
    objects: BTreeMap<Key, Value>,
    /// Changes: version, resource, type, object.
    log: Vec<(u64, String, &'static str, Value)>,
    accesses: Vec<Access>,
    forbidden: BTreeSet<String>,
}

struct Shared {
    state: Mutex<State>,
    changes: tokio::sync::broadcast::Sender<(u64, String, &'static str, Value)>,
    /// Bumped to end every open watch.
    epoch: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The server, on a loopback port, until dropped.
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Where a path points: resource, API group and version, namespace, name.
struct Target {
    resource: String,
    group: String,
    version: String,
    namespace: String,
    name: Option<String>,
}

fn target(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
        r => (String::new(), r),
    };
    let (resource, name) = match rest {
        [r] => (r.to_string(), None),
        [r, n] => (r.to_string(), Some(n.to_string())),
        _ => return None,
    };
    Some(Target { resource, group, version, namespace, name })
}

/// What discovery lists: (group, version, resource, kind, namespaced).
pub const RESOURCES: [(&str, &str, &str, &str, bool); 6] = [
    ("", "v1", "nodes", "Node", false),
    ("", "v1", "pods", "Pod", true),
    ("", "v1", "events", "Event", true),
    ("events.k8s.io", "v1", "events", "Event", true),
    ("apps", "v1", "daemonsets", "DaemonSet", true),
    ("crd.k8s.amazonaws.com", "v1alpha1", "eniconfigs", "ENIConfig", false),
];

fn kind_of(resource: &str) -> &'static str {
    RESOURCES.iter().find(|r| r.2 == resource).map_or("Object", |r| r.3)
}

/// Discovery documents: `/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION`.
fn discovery(path: &str) -> Option<Value> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resources = |g: &str, v: &str| -> Option<Value> {
        let list: Vec<Value> = RESOURCES
            .iter()
            .filter(|r| r.0 == g && r.1 == v)
            .map(|r| {
                json!({"name": r.2, "singularName": "", "namespaced": r.4, "kind": r.3,
                       "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        let gv = if g.is_empty() { v.to_string() } else { format!("{g}/{v}") };
        (!list.is_empty())
            .then(|| json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}))
    };
    match parts.as_slice() {
        ["api"] => Some(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})),
        ["apis"] => {
            let mut groups: Vec<(&str, &str)> =
                RESOURCES.iter().filter(|r| !r.0.is_empty()).map(|r| (r.0, r.1)).collect();
            groups.dedup();
            let groups: Vec<Value> = groups
                .iter()
                .map(|(g, v)| {
                    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["api", v] => resources("", v),
        ["apis", g, v] => resources(g, v),
        _ => None,
    }
}

/// A strategic merge patch as kubectl's `set env` sends it: objects merged key by key, lists
/// of named objects merged by name, any other list replaced.
fn strategic_merge(target: &mut Value, patch: &Value) {
    let named = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(|e| e.get("name").is_some_and(Value::is_string)));
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if k.starts_with("$setElementOrder/") || k == "$retainKeys" {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                } else {
                    strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t @ Value::Array(_), p) if named(t) && named(p) => {
            let (Some(items), Some(changes)) = (t.as_array_mut(), p.as_array()) else { return };
            for c in changes {
                let pos = items.iter().position(|i| i["name"] == c["name"]);
                match (pos, c.get("$patch").and_then(Value::as_str)) {
                    (Some(i), Some("delete")) => {
                        items.remove(i);
                    }
                    (None, Some("delete")) => {}
                    (Some(i), _) => strategic_merge(&mut items[i], c),
                    (None, _) => items.push(c.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

type Body = BoxBody<Bytes, Infallible>;

fn reply(code: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// Whether `obj` passes the selectors (`a=b` and `a!=b` terms, comma-separated).
fn selected(obj: &Value, fields: Option<&str>, labels: Option<&str>) -> bool {
    let terms = |s: Option<&str>| -> Vec<(String, bool, String)> {
        s.unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
            .filter_map(|t| {
                if let Some((k, v)) = t.split_once("!=") {
                    Some((k.to_string(), false, v.to_string()))
                } else {
                    t.split_once('=').map(|(k, v)| (k.trim_end_matches('=').to_string(), true, v.to_string()))
                }
            })
            .collect()
    };
    let field = |path: &str| -> String {
        let mut cur = obj;
        for p in path.split('.') {
            cur = &cur[p];
        }
        cur.as_str().unwrap_or_default().to_string()
    };
    let fields_ok = terms(fields).iter().all(|(k, eq, v)| (field(k) == *v) == *eq);
    let labels_ok =
        terms(labels).iter().all(|(k, eq, v)| (obj["metadata"]["labels"][k].as_str() == Some(v.as_str())) == *eq);
    fields_ok && labels_ok
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

impl ApiServer {
    /// Starts the server on a free loopback port.
    ///
    /// # Errors
    /// No port can be bound.
    pub fn start() -> std::io::Result<ApiServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        let (epoch, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), changes, epoch });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let s = Arc::clone(&shared);
        std::thread::Builder::new().name("apiserver".into()).spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let s = Arc::clone(&s);
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&s), req));
                                let io = hyper_util::rt::TokioIo::new(stream);
                                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                            });
                        }
                    }
                }
            });
        })?;
        Ok(ApiServer { addr, shared, stop: Some(stop) })
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig document for this server (no credentials).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n",
            self.url()
        )
    }

    /// A client of this server.
    ///
    /// # Errors
    /// The client cannot be built.
    pub fn client(&self) -> Result<kube::Client, kube::Error> {
        let url: http::Uri = self.url().parse().expect("the server's own URL");
        kube::Client::try_from(kube::Config::new(url))
    }

    /// Creates or replaces an object of `resource` (cluster-scoped unless it has a namespace).
    pub fn apply(&self, resource: &str, mut obj: Value) {
        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
        }
        let key = (resource.to_string(), ns, name);
        let kind = if st.objects.insert(key, obj.clone()).is_some() { "MODIFIED" } else { "ADDED" };
        st.log.push((rv, resource.to_string(), kind, obj.clone()));
        let _ = self.shared.changes.send((rv, resource.to_string(), kind, obj));
    }

    /// Deletes an object.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        let mut st = self.shared.lock();
        if let Some(mut obj) = st.objects.remove(&(resource.to_string(), namespace.to_string(), name.to_string())) {
            st.rv += 1;
            let rv = st.rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.log.push((rv, resource.to_string(), "DELETED", obj.clone()));
            let _ = self.shared.changes.send((rv, resource.to_string(), "DELETED", obj));
        }
    }

    /// The objects of `resource`.
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        self.shared.lock().objects.iter().filter(|((r, _, _), _)| r == resource).map(|(_, v)| v.clone()).collect()
    }

    /// Drops the change history and ends every open watch: a watch resumed from an older
    /// version gets 410 Expired, as after etcd compaction.
    pub fn compact(&self) {
        {
            let mut st = self.shared.lock();
            st.log.clear();
            st.floor = st.rv;
        }
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// Answers every request for `resource` with 403 while `on`.
    pub fn forbid(&self, resource: &str, on: bool) {
        let mut st = self.shared.lock();
        if on {
            st.forbidden.insert(resource.to_string());
        } else {
            st.forbidden.remove(resource);
        }
    }

    /// Every request served, as RBAC sees it (deduplicated).
    pub fn accesses(&self) -> BTreeSet<Access> {
        self.shared.lock().accesses.iter().cloned().collect()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.shared.epoch.send_modify(|e| *e += 1);
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.method() == Method::GET
        && let Some(doc) = discovery(req.uri().path())
    {
        return Ok(reply(200, &doc));
    }
    let strategic = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/strategic-merge-patch+json"));
    let Some(t) = target(req.uri().path()) else {
        return Ok(reply(404, &status(404, "NotFound", "no such path")));
    };
    let q: BTreeMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()).into_owned().collect();
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (req.method(), &t.name, watch) {
        (&Method::GET, None, true) => "watch",
        (&Method::GET, None, false) => "list",
        (&Method::GET, Some(_), _) => "get",
        (&Method::POST, _, _) => "create",
        (&Method::PATCH, _, _) => "patch",
        (&Method::PUT, _, _) => "update",
        (&Method::DELETE, _, _) => "delete",
        _ => return Ok(reply(405, &status(405, "MethodNotAllowed", "method not allowed"))),
    };
    {
        let mut st = shared.lock();
        st.accesses.push(Access { verb: verb.into(), group: t.group.clone(), resource: t.resource.clone() });
        if st.forbidden.contains(&t.resource) {
            let m = format!("{verb} {} is forbidden", t.resource);
            return Ok(reply(403, &status(403, "Forbidden", &m)));
        }
    }
    let api_version = if t.group.is_empty() { t.version.clone() } else { format!("{}/{}", t.group, t.version) };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(400, &status(400, "BadRequest", "unreadable body"))),
    };
    let parsed = || serde_json::from_slice::<Value>(&body).ok();
    let key = |name: &str| (t.resource.clone(), t.namespace.clone(), name.to_string());
    match verb {
        "list" => {
            let st = shared.lock();
            let items: Vec<(String, Value)> = st
                .objects
                .iter()
                .filter(|((r, ns, _), o)| {
                    *r == t.resource
                        && (t.namespace.is_empty() || *ns == t.namespace)
                        && selected(
                            o,
                            q.get("fieldSelector").map(String::as_str),
                            q.get("labelSelector").map(String::as_str),
                        )
                })
                // The token is the last key sent, `namespace/name` (neither may hold a '/'),
                // compared as the pair the objects are ordered by.
                .filter(|((_, ns, name), _)| {
                    q.get("continue").and_then(|c| c.split_once('/')).is_none_or(|c| c < (ns.as_str(), name.as_str()))
                })
                .map(|((_, ns, name), o)| (format!("{ns}/{name}"), o.clone()))
                .collect();
            let mut meta = json!({"resourceVersion": st.rv.to_string()});
            let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
            let mut items = items;
            if let Some(l) = limit.filter(|l| items.len() > *l) {
                let rest = items.split_off(l);
                meta["continue"] = json!(items[l - 1].0);
                // As the real server: the count only when no selector narrows the list.
                if !q.contains_key("fieldSelector") && !q.contains_key("labelSelector") {
                    meta["remainingItemCount"] = json!(rest.len());
                }
            }
            let items: Vec<Value> = items.into_iter().map(|(_, o)| o).collect();
            let list = json!({"kind": format!("{}List", kind_of(&t.resource)), "apiVersion": api_version,
                              "metadata": meta, "items": items});
            Ok(reply(200, &list))
        }
        "watch" => Ok(watch_stream(&shared, &t, &q)),
        "get" => {
            let st = shared.lock();
            match st.objects.get(&key(t.name.as_deref().unwrap_or_default())) {
                Some(o) => Ok(reply(200, o)),
                None => Ok(reply(404, &status(404, "NotFound", "not found"))),
            }
        }
        "create" => {
            let Some(mut obj) = parsed() else { return Ok(reply(400, &status(400, "BadRequest", "not JSON"))) };
            let mut st = shared.lock();
            let name = obj["metadata"]["name"].as_str().map(str::to_string).unwrap_or_else(|| {
                format!("{}{}", obj["metadata"]["generateName"].as_str().unwrap_or("obj-"), st.rv + 1)
            });
            if st.objects.contains_key(&key(&name)) {
                return Ok(reply(409, &status(409, "AlreadyExists", &format!("{name} already exists"))));
            }
            st.rv += 1;
            let rv = st.rv;
            obj["metadata"]["name"] = json!(name);
            if !t.namespace.is_empty() {
                obj["metadata"]["namespace"] = json!(t.namespace);
            }
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
            st.objects.insert(key(&name), obj.clone());
            st.log.push((rv, t.resource.clone(), "ADDED", obj.clone()));
            let _ = shared.changes.send((rv, t.resource.clone(), "ADDED", obj.clone()));
            Ok(reply(201, &obj))
        }
        "patch" | "update" => {
            let Some(patch) = parsed() else { return Ok(reply(400, &status(400, "BadRequest", "not JSON"))) };
            let mut st = shared.lock();
            let k = key(t.name.as_deref().unwrap_or_default());
            let Some(mut obj) = st.objects.get(&k).cloned() else {
                return Ok(reply(404, &status(404, "NotFound", "not found")));
            };
            let stale = patch["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|v| Some(v) != obj["metadata"]["resourceVersion"].as_str());
            if stale {
                return Ok(reply(409, &status(409, "Conflict", "the object has been modified")));
            }
            if verb == "patch" && strategic {
                strategic_merge(&mut obj, &patch);
            } else if verb == "patch" {
                merge(&mut obj, &patch);
            } else {
                obj = patch;
            }
            st.rv += 1;
            let rv = st.rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.objects.insert(k, obj.clone());
            st.log.push((rv, t.resource.clone(), "MODIFIED", obj.clone()));
            let _ = shared.changes.send((rv, t.resource.clone(), "MODIFIED", obj.clone()));
            Ok(reply(200, &obj))
        }
        _ => {
            let mut st = shared.lock();
            let k = key(t.name.as_deref().unwrap_or_default());
            match st.objects.remove(&k) {
                Some(obj) => {
                    st.rv += 1;
                    let rv = st.rv;
                    st.log.push((rv, t.resource.clone(), "DELETED", obj.clone()));
                    let _ = shared.changes.send((rv, t.resource.clone(), "DELETED", obj.clone()));
                    Ok(reply(200, &obj))
                }
                None => Ok(reply(404, &status(404, "NotFound", "not found"))),
            }
        }
    }
}

fn watch_stream(shared: &Arc<Shared>, t: &Target, q: &BTreeMap<String, String>) -> Response<Body> {
    let fields = q.get("fieldSelector").cloned();
    let labels = q.get("labelSelector").cloned();
    let from: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let resource = t.resource.clone();
    let namespace = t.namespace.clone();
    let mut rx = shared.changes.subscribe();
    let mut epoch = shared.epoch.subscribe();
    let passes = move |r: &str, o: &Value| {
        r == resource
            && (namespace.is_empty() || o["metadata"]["namespace"].as_str() == Some(namespace.as_str()))
            && selected(o, fields.as_deref(), labels.as_deref())
    };
    let line = |kind: &str, o: &Value| {
        Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{}\n", json!({"type": kind, "object": o})))))
    };
    let (first, last_sent): (Vec<_>, u64) = {
        let st = shared.lock();
        if from != 0 && from < st.floor {
            let gone = status(410, "Expired", &format!("too old resource version: {from} ({})", st.floor));
            (vec![line("ERROR", &gone)], u64::MAX)
        } else if from == 0 {
            let now: Vec<_> =
                st.objects.iter().filter(|((r, _, _), o)| passes(r, o)).map(|(_, o)| line("ADDED", o)).collect();
            (now, st.rv)
        } else {
            let since: Vec<_> =
                st.log.iter().filter(|(v, r, _, o)| *v > from && passes(r, o)).map(|(_, _, k, o)| line(k, o)).collect();
            (since, st.rv)
        }
    };
    let live = async_stream(move |tx| async move {
        if last_sent == u64::MAX {
            return;
        }
        loop {
            tokio::select! {
                _ = epoch.changed() => return,
                ch = rx.recv() => match ch {
                    Ok((v, r, k, o)) if v > last_sent && passes(&r, &o) => {
                        if tx.send(line(k, &o)).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures::stream::iter(first).chain(live);
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// A stream fed by a task through a channel (ends when the task does).
fn async_stream<F, Fut>(f: F) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_env_patch_merges_containers_and_env_by_name() {
        let mut ds = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "aws-node", "image": "cni:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "s:1"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "aws-node"}, {"name": "sidecar"}],
            "containers": [{"name": "aws-node", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}, {"name": "A", "$patch": "delete"}]}]
        }}}});
        strategic_merge(&mut ds, &patch);
        let c = &ds["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "cni:1");
        assert_eq!(c[0]["env"], json!([{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]));
        assert_eq!(c[1], json!({"name": "sidecar", "image": "s:1"}));
    }

    #[test]
    fn discovery_names_the_served_resources() {
        let apps = discovery("/apis/apps/v1").unwrap();
        assert_eq!(apps["resources"][0]["name"], "daemonsets");
        assert_eq!(apps["resources"][0]["namespaced"], true);
        let groups = discovery("/apis").unwrap();
        assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "crd.k8s.amazonaws.com"));
        assert!(discovery("/apis/apps/v2").is_none());
    }
}
