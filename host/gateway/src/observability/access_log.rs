//! The access log: one line per request, made when its answer's body ends
//! (so a stream's line has its real size and time) and written by a thread
//! of its own. A full pipe or a slow disk drops lines, counted in
//! `edgegate_access_log_dropped_total`; it never holds a request.
//!
//! What a line holds is listed in docs/operations.md ("Access log"). No
//! header is ever logged, and the path is logged without its query, so
//! neither credentials nor tokens in a query string reach the log.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use edgegate_config::{AccessLogConfig, LineFormat, RequestIdMode};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::observability::metrics::Phase;
use crate::request_path::body::{BoxError, ProxyBody};

/// Lines waiting for the writer; past it, new lines are dropped.
const QUEUE_LINES: usize = 8192;
/// Longest path logged; a longer one is cut (on a character boundary).
const MAX_PATH_CHARS: usize = 1024;
/// Most policy marks one line holds (a chain is bounded by the config, and
/// each policy has at most a request and a response mark).
const MAX_MARKS: usize = 64;
/// Longest request id accepted from a client.
const MAX_REQUEST_ID: usize = 128;

/// The request id header.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id a request carries: the client's when `mode` accepts it and it is
/// well formed, else a new one (128 random bits in hex).
pub(crate) fn request_id(mode: RequestIdMode, headers: &HeaderMap) -> HeaderValue {
    if mode == RequestIdMode::Accept {
        let given = headers.get(&X_REQUEST_ID).filter(|v| {
            let b = v.as_bytes();
            !b.is_empty()
                && b.len() <= MAX_REQUEST_ID
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
        });
        if let Some(v) = given {
            return v.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let mut bits = fastrand::u128(..);
    for b in id.iter_mut().rev() {
        *b = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The writers, one per target, shared by every config generation that
/// names it; a target nobody names any more has its writer stop.
pub(crate) struct Sinks {
    live: Mutex<Vec<(String, Weak<Sink>)>>,
    /// `--log-format`: the format of a config that does not name one.
    default_format: LineFormat,
    dropped: Counter,
}

impl Sinks {
    /// No writer yet; lines are `default_format` unless a config says otherwise.
    pub(crate) fn new(default_format: LineFormat, dropped: Counter) -> Self {
        Self {
            live: Mutex::new(Vec::new()),
            default_format,
            dropped,
        }
    }

    /// What one config generation logs with: `None` when the log is off.
    /// A file that cannot be opened is an error naming it.
    pub(crate) fn settings(&self, config: &AccessLogConfig) -> Result<Option<AccessLog>, String> {
        if !config.enabled {
            return Ok(None);
        }
        Ok(Some(AccessLog {
            sink: self.sink(&config.target)?,
            format: config.format.unwrap_or(self.default_format),
            sample: config.sample,
            sample_errors: config.sample_errors,
        }))
    }

    fn sink(&self, target: &str) -> Result<Arc<Sink>, String> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|(_, w)| w.strong_count() > 0);
        if let Some(sink) = live
            .iter()
            .find(|(t, _)| t == target)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(sink);
        }
        let out = Output::open(target)
            .map_err(|e| format!("access_log.target: cannot open `{target}` for appending: {e}"))?;
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&reopen);
        std::thread::Builder::new()
            .name("edgegate-access-log".into())
            .spawn(move || write_lines(&rx, out, &flag))
            .map_err(|e| format!("access_log: cannot start its writer: {e}"))?;
        let sink = Arc::new(Sink {
            tx,
            reopen,
            dropped: self.dropped.clone(),
        });
        live.push((target.to_string(), Arc::downgrade(&sink)));
        Ok(sink)
    }

    /// SIGUSR1: every file target is opened again (after a log rotation
    /// moved it away), before the next line it writes.
    pub(crate) fn reopen(&self) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for sink in live.iter().filter_map(|(_, w)| w.upgrade()) {
            sink.reopen.store(true, Ordering::Release);
            // Wakes a writer with nothing to write, so it reopens now.
            let _ = sink.tx.try_send(Msg::Wake);
        }
    }
}

/// Where one writer writes.
enum Output {
    Stdout(io::BufWriter<io::Stdout>),
    File(PathBuf, io::BufWriter<File>),
}

/// The writer's buffer: a batch goes out in a few large writes.
const WRITE_BUFFER: usize = 64 << 10;

impl Output {
    fn open(target: &str) -> io::Result<Self> {
        if target == "stdout" {
            return Ok(Self::Stdout(io::BufWriter::with_capacity(
                WRITE_BUFFER,
                io::stdout(),
            )));
        }
        let path = PathBuf::from(target);
        let file = Self::append_to(&path)?;
        Ok(Self::File(path, file))
    }

    /// `path` opened for appending (made when missing), buffered.
    fn append_to(path: &std::path::Path) -> io::Result<io::BufWriter<File>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(io::BufWriter::with_capacity(WRITE_BUFFER, file))
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Self::Stdout(out) => out,
            Self::File(_, f) => f,
        }
    }

    fn reopen(&mut self) {
        let Self::File(path, f) = self else { return };
        let _ = f.flush();
        match Self::append_to(path) {
            Ok(file) => {
                *f = file;
                tracing::info!(file = %path.display(), "access log opened again");
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot open the access log again; writing to the old file");
            }
        }
    }
}

/// What the request path sends the writer.
enum Msg {
    Line(Vec<u8>),
    /// Nothing to write: look at the reopen flag.
    Wake,
}

/// One target's queue.
pub(crate) struct Sink {
    tx: SyncSender<Msg>,
    reopen: Arc<AtomicBool>,
    dropped: Counter,
}

impl Sink {
    fn send(&self, line: Vec<u8>) {
        // Full or gone: the line is dropped, never waited for.
        if self.tx.try_send(Msg::Line(line)).is_err() {
            self.dropped.inc();
        }
    }
}

/// How long the writer waits after a line for the lines that follow it, so
/// that under load it wakes, writes and flushes once per batch instead of
/// once per line (a line reaches the file at most this late).
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// The writer thread: it sleeps until a line comes, lets a batch gather,
/// then writes and flushes it; it ends when every sender is gone, after
/// the lines still queued.
fn write_lines(rx: &Receiver<Msg>, mut out: Output, reopen: &AtomicBool) {
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        if matches!(first, Msg::Line(_)) {
            // While it sleeps, senders queue without waking it.
            std::thread::sleep(BATCH_WAIT);
        }
        let mut next = Some(first);
        while let Some(msg) = next {
            if reopen.swap(false, Ordering::AcqRel) {
                out.reopen();
            }
            if let Msg::Line(line) = msg {
                match out.writer().write_all(&line) {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        // Said once per run of failures, not once per line.
                        failing = true;
                        tracing::error!(error = %e, "writing the access log failed; lines are lost until it works again");
                    }
                    Err(_) => {}
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.writer().flush();
    }
    let _ = out.writer().flush();
}

/// What one config generation logs with.
pub(crate) struct AccessLog {
    sink: Arc<Sink>,
    format: LineFormat,
    sample: f64,
    sample_errors: f64,
}

impl AccessLog {
    /// Whether a request answered `status` is logged (its sample share).
    pub(crate) fn samples(&self, status: u16) -> bool {
        let share = if status >= 400 {
            self.sample_errors
        } else {
            self.sample
        };
        share >= 1.0 || (share > 0.0 && fastrand::f64() < share)
    }
}

/// How a policy's call ended, as the log says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    /// It let the request or answer go on (maybe changed).
    Continue,
    /// It chose the upstream.
    Route,
    /// It answered the request itself.
    Respond,
    /// It replaced the upstream's answer.
    Replace,
    /// It failed, and `on_error = "deny"` answered 503.
    FailedDeny,
    /// It failed, and `on_error = "allow"` went on without it.
    FailedAllow,
    /// It is quarantined, and `on_error = "deny"` answered 503 without running it.
    QuarantinedDeny,
    /// It is quarantined, and `on_error = "allow"` went on without running it.
    QuarantinedAllow,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::Route => "route",
            Self::Respond => "respond",
            Self::Replace => "replace",
            Self::FailedDeny => "failed_deny",
            Self::FailedAllow => "failed_allow",
            Self::QuarantinedDeny => "quarantined_deny",
            Self::QuarantinedAllow => "quarantined_allow",
        }
    }
}

/// One policy call of a request.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Mark {
    pub(crate) policy: String,
    pub(crate) phase: &'static str,
    pub(crate) verdict: Verdict,
    /// Wall time of the call, in microseconds.
    pub(crate) us: u64,
}

/// What the phases leave for the line, filled as the request goes.
#[derive(Default)]
pub(crate) struct Trail {
    /// Whether anything is recorded (the log is on).
    pub(crate) on: bool,
    pub(crate) policies: Vec<Mark>,
    /// The cluster that answered, and its endpoint.
    pub(crate) upstream: Option<String>,
    pub(crate) endpoint: Option<String>,
    /// Upstream attempts made (retries and fallbacks included).
    pub(crate) attempts: u32,
    /// Request body bytes read from the client.
    pub(crate) bytes_in: Option<Arc<AtomicU64>>,
}

impl Trail {
    /// A trail that records when `on`.
    pub(crate) fn new(on: bool) -> Self {
        Self {
            on,
            ..Self::default()
        }
    }

    /// A policy call's verdict and time.
    pub(crate) fn mark(
        &mut self,
        policy: &str,
        phase: Phase,
        verdict: Verdict,
        took: std::time::Duration,
    ) {
        if self.on && self.policies.len() < MAX_MARKS {
            self.policies.push(Mark {
                policy: policy.to_string(),
                phase: phase.as_str(),
                verdict,
                us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            });
        }
    }
}

/// The parts of a line known before the answer's body ends.
pub(crate) struct Entry {
    pub(crate) time: SystemTime,
    pub(crate) started: Instant,
    pub(crate) request_id: HeaderValue,
    pub(crate) route: Option<String>,
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) status: u16,
    /// The gateway's error code, when the gateway made the answer.
    pub(crate) error: Option<String>,
    pub(crate) trail: Trail,
    pub(crate) model: Option<String>,
    pub(crate) principal: Option<String>,
    pub(crate) tenant: Option<String>,
}

impl Entry {
    /// The path as logged: no query, at most [`MAX_PATH_CHARS`].
    pub(crate) fn path_of(uri: &http::Uri) -> String {
        let p = uri.path();
        match p.char_indices().nth(MAX_PATH_CHARS) {
            Some((cut, _)) => format!("{}...", &p[..cut]),
            None => p.to_string(),
        }
    }
}

/// How the answer's body ended.
#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum BodyEnd {
    /// To its last byte.
    Complete,
    /// The body failed mid-way (an upstream that broke or went silent, a
    /// policy that cut a stream).
    Broken,
    /// The client went away first.
    ClientGone,
}

impl BodyEnd {
    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Broken => "broken",
            Self::ClientGone => "client_gone",
        }
    }
}

/// The line as JSON writes it.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: u16,
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<&'a str>,
    attempts: u32,
    bytes_in: u64,
    bytes_out: u64,
    body: BodyEnd,
    policies: &'a [Mark],
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
}

impl Line<'_> {
    fn json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// logfmt: `key=value`, a value quoted (JSON string rules) when it has a
    /// space, a quote, `=`, a control character or nothing in it.
    fn text(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        let mut put = |key: &str, value: &str| {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(key);
            out.push('=');
            let plain = !value.is_empty()
                && value
                    .chars()
                    .all(|c| !c.is_control() && c != ' ' && c != '"' && c != '=');
            if plain {
                out.push_str(value);
            } else {
                out.push_str(&serde_json::Value::from(value).to_string());
            }
        };
        put("time", &self.time);
        put("request_id", self.request_id);
        if let Some(r) = self.route {
            put("route", r);
        }
        put("method", self.method);
        put("path", self.path);
        put("status", &self.status.to_string());
        put("duration_ms", &format!("{:.3}", self.duration_ms));
        if let Some(e) = self.error {
            put("error", e);
        }
        if let Some(u) = self.upstream {
            put("upstream", u);
        }
        if let Some(e) = self.endpoint {
            put("endpoint", e);
        }
        put("attempts", &self.attempts.to_string());
        put("bytes_in", &self.bytes_in.to_string());
        put("bytes_out", &self.bytes_out.to_string());
        put("body", self.body.as_str());
        let marks: Vec<String> = self
            .policies
            .iter()
            .map(|m| format!("{}:{}:{}:{}us", m.policy, m.phase, m.verdict.as_str(), m.us))
            .collect();
        put("policies", &marks.join(","));
        for (key, value) in [
            ("model", self.model),
            ("principal", self.principal),
            ("tenant", self.tenant),
        ] {
            if let Some(v) = value {
                put(key, v);
            }
        }
        let mut out = out.into_bytes();
        out.push(b'\n');
        out
    }
}

/// An answer's body that counts what it carries and, when it ends or is
/// dropped, sends its request's line.
pub(crate) struct Logged {
    inner: ProxyBody,
    log: Arc<AccessLog>,
    entry: Option<Box<Entry>>,
    bytes_out: u64,
}

impl Logged {
    /// `body`, logged as `entry` when it ends.
    pub(crate) fn wrap(body: ProxyBody, log: Arc<AccessLog>, entry: Box<Entry>) -> ProxyBody {
        http_body_util::BodyExt::boxed_unsync(Self {
            inner: body,
            log,
            entry: Some(entry),
            bytes_out: 0,
        })
    }

    fn finish(&mut self, end: BodyEnd) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let bytes_in = entry
            .trail
            .bytes_in
            .as_ref()
            .map_or(0, |n| n.load(Ordering::Relaxed));
        let line = Line {
            time: humantime::format_rfc3339_millis(entry.time).to_string(),
            request_id: entry.request_id.to_str().unwrap_or(""),
            route: entry.route.as_deref(),
            method: entry.method.as_str(),
            path: &entry.path,
            status: entry.status,
            duration_ms: entry.started.elapsed().as_secs_f64() * 1000.0,
            error: entry.error.as_deref(),
            upstream: entry.trail.upstream.as_deref(),
            endpoint: entry.trail.endpoint.as_deref(),
            attempts: entry.trail.attempts,
            bytes_in,
            bytes_out: self.bytes_out,
            body: end,
            policies: &entry.trail.policies,
            model: entry.model.as_deref(),
            principal: entry.principal.as_deref(),
            tenant: entry.tenant.as_deref(),
        };
        let bytes = match self.log.format {
            LineFormat::Json => line.json(),
            LineFormat::Text => line.text(),
        };
        self.log.sink.send(bytes);
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_out += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(BodyEnd::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(BodyEnd::Broken),
            Poll::Ready(None) => this.finish(BodyEnd::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // Dropped before its end: the client went, unless the answer has no
        // body to send (HEAD, 204, 304), which hyper then never reads.
        let bodiless = self
            .entry
            .as_ref()
            .is_some_and(|e| e.method == http::Method::HEAD || matches!(e.status, 204 | 304));
        let end = if bodiless || self.inner.is_end_stream() {
            BodyEnd::Complete
        } else {
            BodyEnd::ClientGone
        };
        self.finish(end);
    }
}

/// A request body that counts the bytes the client sent.
pub(crate) struct Counted {
    inner: ProxyBody,
    read: Arc<AtomicU64>,
}

impl Counted {
    /// `body`, counted into `read`.
    pub(crate) fn wrap(body: ProxyBody, read: Arc<AtomicU64>) -> ProxyBody {
        http_body_util::BodyExt::boxed_unsync(Self { inner: body, read })
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.read.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(policies: &[Mark]) -> Line<'_> {
        Line {
            time: "2026-12-07T10:00:00.000Z".into(),
            request_id: "abc",
            route: Some("chat"),
            method: "POST",
            path: "/v1/chat completions",
            status: 200,
            duration_ms: 1.5,
            error: None,
            upstream: Some("openai"),
            endpoint: Some("127.0.0.1:9000"),
            attempts: 1,
            bytes_in: 10,
            bytes_out: 20,
            body: BodyEnd::Complete,
            policies,
            model: Some("gpt-4o"),
            principal: None,
            tenant: None,
        }
    }

    #[test]
    fn text_lines_quote_what_needs_it_and_json_lines_parse() {
        let marks = [Mark {
            policy: "auth".into(),
            phase: "request",
            verdict: Verdict::Continue,
            us: 12,
        }];
        let text = String::from_utf8(line(&marks).text()).unwrap();
        assert_eq!(
            text,
            "time=2026-12-07T10:00:00.000Z request_id=abc route=chat method=POST \
             path=\"/v1/chat completions\" status=200 duration_ms=1.500 upstream=openai \
             endpoint=127.0.0.1:9000 attempts=1 bytes_in=10 bytes_out=20 body=complete \
             policies=auth:request:continue:12us model=gpt-4o\n"
        );
        let json: serde_json::Value = serde_json::from_slice(&line(&marks).json()).unwrap();
        assert_eq!(json["policies"][0]["verdict"], "continue");
        assert_eq!(json["path"], "/v1/chat completions");
        assert!(json.get("principal").is_none());
        // An empty list is quoted, so the line still splits into pairs.
        assert!(String::from_utf8(line(&[]).text())
            .unwrap()
            .contains(" policies=\"\" "));
    }

    #[test]
    fn request_ids_are_accepted_only_when_well_formed() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("trace-1.a:b_c"));
        assert_eq!(request_id(RequestIdMode::Accept, &h), "trace-1.a:b_c");
        let made = request_id(RequestIdMode::Generate, &h);
        assert_eq!(made.len(), 32);
        assert_ne!(made, "trace-1.a:b_c");
        for bad in ["has space", "semi;colon", &"x".repeat(129)] {
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = request_id(RequestIdMode::Accept, &h);
            assert_eq!(id.len(), 32, "{bad}");
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
    }

    #[test]
    fn long_paths_are_cut_and_queries_left_out() {
        let uri: http::Uri = format!("/{}?api_key=secret", "%C3%A9".repeat(400))
            .parse()
            .unwrap();
        let p = Entry::path_of(&uri);
        assert!(!p.contains("secret"));
        assert!(p.ends_with("..."));
        assert_eq!(p.len(), MAX_PATH_CHARS + 3);
        let short: http::Uri = "/v1/chat?x=1".parse().unwrap();
        assert_eq!(Entry::path_of(&short), "/v1/chat");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let dropped = Counter::default();
        let sink = Sink {
            tx,
            reopen: Arc::new(AtomicBool::new(false)),
            dropped: dropped.clone(),
        };
        sink.send(b"a\n".to_vec());
        sink.send(b"b\n".to_vec());
        sink.send(b"c\n".to_vec());
        assert_eq!(dropped.get(), 2);
    }
}
