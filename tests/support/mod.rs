//! Test support shared by the integration test binaries: guest components built once,
//! a recording upstream on loopback, and the real `edgegate` binary run as a process.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

pub mod coordinator;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Folder of built guest components; builds and signs them (once per test binary)
/// with the same scripts the README's commands use.
pub fn components() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo_root();
        let status = Command::new("bash")
            .arg(root.join("scripts/build-components.sh"))
            .stdout(Stdio::null())
            .status()
            .expect("running scripts/build-components.sh");
        assert!(status.success(), "scripts/build-components.sh failed");
        let status = Command::new("bash")
            .arg(root.join("scripts/sign-components.sh"))
            .arg(env!("CARGO_BIN_EXE_edgegate"))
            .stdout(Stdio::null())
            .status()
            .expect("running scripts/sign-components.sh");
        assert!(status.success(), "scripts/sign-components.sh failed");
        // The demo config's TLS listener needs its certificate.
        let status = Command::new("bash")
            .arg(root.join("scripts/demo-cert.sh"))
            .stdout(Stdio::null())
            .status()
            .expect("running scripts/demo-cert.sh");
        assert!(status.success(), "scripts/demo-cert.sh failed");
        root.join("target/components")
    })
    .clone()
}

/// The trust store that holds the key the test components are signed with.
pub fn trust_store() -> PathBuf {
    components();
    repo_root().join("target/demo-keys/trust.toml")
}

/// Path of one built and signed component, e.g. `component("headers")`.
pub fn component(name: &str) -> PathBuf {
    components();
    let p = repo_root().join(format!("target/signed/{name}.wasm"));
    assert!(p.exists(), "component {} was not built", p.display());
    p
}

/// Path of one built component before signing.
pub fn unsigned_component(name: &str) -> PathBuf {
    let p = components().join(format!("{name}.wasm"));
    assert!(p.exists(), "component {} was not built", p.display());
    p
}

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An upstream on 127.0.0.1 that records every request and answers 200 with
/// `upstream-ok` (`/slow/MS` waits MS ms first; `/status/N` answers status N).
/// It also plays an OpenAI-compatible provider: `POST /v1/chat/completions`
/// echoes the last message as `echo: TEXT` with `usage` (prompt tokens = the
/// text's length in bytes, completion tokens = 5), and `/cache/...` answers
/// `NAME:N` (N = requests seen) with `cache-control: max-age=60` and an ETag.
/// `GET /healthz` is its health check: it answers the status `set_health`
/// chose (200 at first) and is counted apart, not recorded with the rest.
/// Every answer carries `x-upstream: NAME`.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<VecDeque<Seen>>>,
    health: Arc<HealthPath>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the upstream's `/healthz` answers, and how often it was asked.
#[derive(Default)]
struct HealthPath {
    /// 0 until `set_health`: answer 200.
    status: std::sync::atomic::AtomicU16,
    checks: std::sync::atomic::AtomicUsize,
}

impl Upstream {
    pub fn start() -> Self {
        Self::start_named("upstream-ok")
    }

    /// An upstream whose body says `name` (to tell several apart).
    pub fn start_named(name: &'static str) -> Self {
        Self::start_with(name, None)
    }

    /// An upstream that answers every request with `status` (a failing provider).
    pub fn start_failing(name: &'static str, status: u16) -> Self {
        Self::start_with(name, Some(status))
    }

    fn start_with(name: &'static str, fail: Option<u16>) -> Self {
        let seen = Arc::new(Mutex::new(VecDeque::new()));
        let health = Arc::new(HealthPath::default());
        let health_path = health.clone();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let record = seen.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted_count = connections.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            accepted_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let record = record.clone();
                            let health = health_path.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |req: Request<Incoming>| {
                                    let record = record.clone();
                                    let health = health.clone();
                                    async move {
                                        if req.uri().path() == "/healthz" {
                                            return Ok::<_, Infallible>(health_answer(name, &health));
                                        }
                                        Ok::<_, Infallible>(answer(name, fail, req, record).await)
                                    }
                                });
                                let _ = auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                        _ = &mut stop_rx => break,
                    }
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            addr,
            seen,
            health,
            connections,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().cloned().collect()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// What `GET /healthz` answers from now on.
    pub fn set_health(&self, status: u16) {
        self.health
            .status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// `GET /healthz` requests received so far.
    pub fn health_checks(&self) -> usize {
        self.health.checks.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stop listening (later connections are refused).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn health_answer(name: &'static str, health: &HealthPath) -> Response<Full<Bytes>> {
    health
        .checks
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let status = match health.status.load(std::sync::atomic::Ordering::SeqCst) {
        0 => 200,
        s => s,
    };
    let mut resp = Response::new(Full::new(Bytes::from(format!("{name} health"))));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("x-upstream", http::HeaderValue::from_static(name));
    resp
}

async fn answer(
    name: &'static str,
    fail: Option<u16>,
    req: Request<Incoming>,
    record: Arc<Mutex<VecDeque<Seen>>>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let seen_count = {
        let mut record = record.lock().unwrap();
        record.push_back(Seen {
            method: parts.method.to_string(),
            path: path.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        record.len()
    };
    let tagged = |mut resp: Response<Full<Bytes>>| {
        resp.headers_mut()
            .insert("x-upstream", http::HeaderValue::from_static(name));
        resp
    };
    if let Some(status) = fail {
        let mut resp = Response::new(Full::new(Bytes::from(format!("{name} failed"))));
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
        return tagged(resp);
    }
    if parts.method == http::Method::POST && path == "/v1/chat/completions" {
        return tagged(chat_completion(name, &body));
    }
    if path.starts_with("/cache/") {
        let mut resp = Response::new(Full::new(Bytes::from(format!("{name}:{seen_count}"))));
        let h = resp.headers_mut();
        h.insert(
            "cache-control",
            http::HeaderValue::from_static("max-age=60"),
        );
        h.insert("etag", http::HeaderValue::from_static("\"v1\""));
        return tagged(resp);
    }
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|s| s.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut resp = Response::new(Full::new(Bytes::from(name)));
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
    {
        *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
    }
    resp.headers_mut()
        .insert("server", http::HeaderValue::from_static("test-upstream"));
    tagged(resp)
}

/// An OpenAI-style chat completion echoing the last message, with `usage`.
fn chat_completion(name: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    let answer = serde_json::json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": req["model"],
        "provider": name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {text}")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": text.len(), "completion_tokens": 5, "total_tokens": text.len() + 5},
    });
    let mut resp = Response::new(Full::new(Bytes::from(answer.to_string())));
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `edgegate COMMAND --config FILE` as a process: its stderr collected as it
/// comes, the first line of its stdout (where it says where it listens), and
/// the rest of stdout drained so it never blocks on a full pipe.
pub struct Started {
    pub child: Child,
    pub first_line: String,
    pub stderr: Arc<Mutex<String>>,
    stderr_read: Option<std::thread::JoinHandle<()>>,
}

impl Started {
    /// Starts it and waits for the first line of its stdout.
    pub fn run(command: &str, config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgegate"))
            .args([command, "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let err = child.stderr.take().unwrap();
        let stderr_read = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first_line = String::new();
        out.read_line(&mut first_line).unwrap();
        std::thread::spawn(move || for _ in out.lines() {});
        Self {
            child,
            first_line,
            stderr,
            stderr_read: Some(stderr_read),
        }
    }

    /// Waits for it to exit; its exit status and everything it logged.
    pub fn exited(&mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.stderr_read.take() {
            let _ = reader.join();
        }
        (status, self.stderr.lock().unwrap().clone())
    }
}

/// The `edgegate` binary running `serve` on a config written to a temp dir.
pub struct Gateway {
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The TLS listener, when the config has `[server.tls]`.
    pub tls: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
}

/// The config text shared by most tests: loopback listeners on OS-chosen ports.
pub fn base_config(upstream: SocketAddr) -> String {
    format!(
        r#"version = 1
[trust]
store = {trust:?}
[server]
listen = "127.0.0.1:0"
workers = 2
shutdown_grace_ms = 10000
[admin]
listen = "127.0.0.1:0"
[upstreams.backend]
endpoints = ["{upstream}"]
timeout_ms = 2000
"#,
        trust = trust_store().display().to_string()
    )
}

/// The shipped demo config (policies/gateway.toml: auth → routing →
/// redaction → caching on one route) with loopback ports chosen by the OS,
/// `upstream` for the demo provider and no coordinator.
pub fn demo_config(upstream: SocketAddr) -> String {
    components();
    let target = repo_root().join("target");
    std::fs::read_to_string(repo_root().join("policies/gateway.toml"))
        .unwrap()
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9901\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:8443\"", "\"127.0.0.1:0\"")
        .replace("127.0.0.1:9000", &upstream.to_string())
        .replace("http://127.0.0.1:7070", "http://127.0.0.1:9")
        .replace("\"../target/", &format!("\"{}/", target.display()))
}

impl Gateway {
    /// Write `config` to `gateway.toml` in a temp dir and run `edgegate serve` on it.
    pub fn start(config: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), config)
    }

    /// Stop this process and start a new one on the same folder (config and
    /// state folder), as after a restart.
    pub fn restart(mut self) -> Self {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let config = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
        drop(self);
        Self::start_in(dir, &config)
    }

    /// The gateway's resident memory, bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    /// Write `config` to `gateway.toml` in `dir` and run `edgegate serve` on it.
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Self {
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let mut started = Started::run("serve", &path);
        let Some((proxy, tls, admin)) = parse_listening(&started.first_line) else {
            let _ = started.child.kill();
            let (_, stderr) = started.exited();
            panic!(
                "gateway did not start: {:?}\nstderr:\n{stderr}",
                started.first_line
            )
        };
        Self {
            child: started.child,
            proxy,
            admin,
            tls,
            dir,
            stderr: started.stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Writes `config` over its config file and asks it to reload (`POST
    /// /v1/reload` on the admin listener); the answer.
    pub async fn reload(&self, config: &str) -> reqwest::Response {
        std::fs::write(self.dir.path().join("gateway.toml"), config).unwrap();
        reqwest::Client::new()
            .post(self.admin_url("/v1/reload"))
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/health` on the admin listener: the edge's health graph view.
    pub async fn health(&self) -> serde_json::Value {
        reqwest::get(self.admin_url("/v1/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// What the gateway logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_listening(line: &str) -> Option<(SocketAddr, Option<SocketAddr>, SocketAddr)> {
    // "edgegate listening on http://A [https://T ](admin http://B)"
    let rest = line.strip_prefix("edgegate listening on http://")?;
    let (proxy, mut rest) = rest.split_once(' ')?;
    let mut tls = None;
    if let Some(after) = rest.strip_prefix("https://") {
        let (addr, after) = after.split_once(' ')?;
        tls = Some(addr.parse().ok()?);
        rest = after;
    }
    let admin = rest
        .strip_prefix("(admin http://")?
        .trim_end()
        .strip_suffix(')')?;
    Some((proxy.parse().ok()?, tls, admin.parse().ok()?))
}

/// A policy table for `name` running component `component` with extra TOML lines.
pub fn policy(name: &str, component: &str, extra: &str) -> String {
    format!(
        "[policies.{name}]\ncomponent = {:?}\n{extra}\n",
        self::component(component).display().to_string()
    )
}

/// A route over `backend` with the given policies.
pub fn route(name: &str, prefix: &str, policies: &[&str]) -> String {
    let list: Vec<String> = policies.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "[[routes]]\nname = {name:?}\npath_prefix = {prefix:?}\nupstream = \"backend\"\npolicies = [{}]\n",
        list.join(", ")
    )
}

/// The value of the sample of metric `name` (e.g. `edgegate_policy_calls_total`)
/// whose labels include every `(label, value)` pair, from Prometheus text.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let prefix = format!("{name}{{");
    text.lines()
        .find(|l| {
            l.starts_with(&prefix)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The Python of the venv with the official SDKs (`openai`) that
/// scripts/test.sh makes under target/py; the tests run them as users do.
pub fn sdk_python() -> PathBuf {
    let python = repo_root().join("target/py/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh makes the venv with the official SDKs",
        python.display()
    );
    python
}

/// Run the `edgegate` binary with `args` and wait for it.
pub fn edgegate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgegate"))
        .args(args)
        .output()
        .unwrap()
}

/// Run `edgegate check-config` on `config` written to a temp file: (success,
/// stdout, stderr with the temp path replaced by `gateway.toml`).
pub fn check_config(config: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let out = edgegate(&["check-config", path.to_str().unwrap()]);
    let stderr =
        String::from_utf8_lossy(&out.stderr).replace(&*path.to_string_lossy(), "gateway.toml");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// stdout and stderr of a finished command, as text.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Sends raw `bytes` to `addr` and returns what came back until the peer
/// closed or stayed quiet for `quiet` (a refused request may be cut before
/// it is all written: that is not an error).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], quiet: Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match tokio::time::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// An upstream that sends `first` as the start of each answer (an event
/// stream), then waits until `release` is notified before it sends `rest`. `sent_rest` counts the
/// answers that got past the barrier.
pub struct Barrier {
    pub addr: SocketAddr,
    pub release: Arc<tokio::sync::Notify>,
    pub sent_rest: Arc<Mutex<usize>>,
}

pub fn barrier_upstream(first: &'static str, rest: &'static str) -> Barrier {
    let release = Arc::new(tokio::sync::Notify::new());
    let sent_rest = Arc::new(Mutex::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (r, s) = (release.clone(), sent_rest.clone());
    let frames = (
        Bytes::from_static(first.as_bytes()),
        Bytes::from_static(rest.as_bytes()),
    );
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (r, s, f) = (r.clone(), s.clone(), frames.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let (r, s, f) = (r.clone(), s.clone(), f.clone());
                        async move {
                            let events = futures_util::stream::unfold(0u8, move |step| {
                                let (r, s, f) = (r.clone(), s.clone(), f.clone());
                                async move {
                                    let frame = match step {
                                        0 => f.0,
                                        1 => {
                                            r.notified().await;
                                            *s.lock().unwrap() += 1;
                                            f.1
                                        }
                                        _ => return None,
                                    };
                                    Some((
                                        Ok::<_, Infallible>(hyper::body::Frame::data(frame)),
                                        step + 1,
                                    ))
                                }
                            });
                            let mut resp =
                                hyper::Response::new(http_body_util::StreamBody::new(events));
                            resp.headers_mut().insert(
                                "content-type",
                                hyper::header::HeaderValue::from_static("text/event-stream"),
                            );
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    Barrier {
        addr,
        release,
        sent_rest,
    }
}

/// Reads `resp` until its body holds `want`; what it read.
pub async fn read_until(resp: &mut reqwest::Response, got: &mut Vec<u8>, want: &str) {
    while !String::from_utf8_lossy(got).contains(want) {
        match resp.chunk().await.unwrap() {
            Some(c) => got.extend_from_slice(&c),
            None => panic!(
                "the stream ended before {want:?}: {:?}",
                String::from_utf8_lossy(got)
            ),
        }
    }
}
