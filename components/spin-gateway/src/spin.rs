//! The Spin side: the exported HTTP handler, Spin variables and key-value
//! store, outbound HTTP through `wasi:http/outgoing-handler`, timers on the
//! monotonic clock.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use edgegate_policy_core::{json_error, Headers, HttpResponse, Level};
use futures::future::{select, Either};
use futures::{Stream, StreamExt};
use spin_executor::CancelOnDropToken;
use spin_sdk::http::{
    ErrorCode, Fields, IncomingRequest, IncomingResponse, Method, OutgoingBody, OutgoingResponse,
    Request, ResponseOutparam,
};
use spin_sdk::key_value::Store;
use wasi::io::streams::{OutputStream, StreamError};

use crate::chain::{
    self, Answer, BodyStream, Client, ClientGone, Delivered, Incoming, Outgoing, SendError,
    Transport,
};
use crate::config::{Config, CONFIG_VARIABLE};
use crate::env::{parse_level, KvStore, RequestEnv};

/// The Spin variable naming the log level (`debug`, `info`, `warn`, `error`).
pub const LOG_LEVEL_VARIABLE: &str = "log_level";
/// The Spin variable naming the key-value store (a label in `key_value_stores`).
pub const KV_STORE_VARIABLE: &str = "kv_store";

thread_local! {
    /// The last parsed config and its text: a host that keeps the instance
    /// for several requests parses it once.
    static PARSED: RefCell<Option<(String, Rc<Config>)>> = const { RefCell::new(None) };
}

#[spin_sdk::http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let mut client = SpinClient {
        out: Some(out),
        body: None,
    };
    let delivered = serve(req, &mut client).await;
    client.end(delivered);
}

/// The response to the client, over wasi:http: the head once, then the
/// body written through as it comes.
struct SpinClient {
    out: Option<ResponseOutparam>,
    /// The output stream (dropped first) and the body it writes.
    body: Option<(OutputStream, OutgoingBody)>,
}

impl Client for SpinClient {
    fn head(&mut self, status: u16, headers: &Headers) {
        let Some(out) = self.out.take() else {
            return;
        };
        let fields = Fields::new();
        for (name, value) in headers
            .iter()
            .filter(|(n, _)| n != "content-length" && n != "transfer-encoding")
            .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
            .chain(std::iter::once((
                "via".to_string(),
                chain::VIA.as_bytes().to_vec(),
            )))
        {
            // The chain checked policy headers; the upstream's came through
            // wasi:http fields. One the host still refuses is left out.
            if let Err(e) = fields.append(&name, &value) {
                eprintln!("WARN gateway: response header `{name}` not sent: {e:?}");
            }
        }
        let response = OutgoingResponse::new(fields);
        if response.set_status_code(status).is_err() {
            let _ = response.set_status_code(502);
        }
        let body = response.body().ok();
        let stream = body.as_ref().and_then(|b| b.write().ok());
        out.set(response);
        self.body = stream.zip(body);
    }

    async fn write(&mut self, data: Vec<u8>) -> Result<(), ClientGone> {
        let Some((stream, _)) = &self.body else {
            return Err(ClientGone);
        };
        write_all(stream, &data).await.map_err(|_| ClientGone)
    }
}

impl SpinClient {
    /// Finishes a whole body; a cut one is dropped unfinished, which wasi:http
    /// hosts pass on as a broken body (no last chunk, a reset stream).
    fn end(mut self, delivered: Delivered) {
        if self.out.is_some() {
            // No head was sent (cannot happen on the chain's paths).
            self.head(500, &Vec::new());
        }
        let Some((stream, body)) = self.body.take() else {
            return;
        };
        drop(stream);
        match delivered {
            Delivered::Complete => {
                let _ = OutgoingBody::finish(body, None);
            }
            Delivered::Cut => drop(body),
        }
    }
}

/// Writes all of `data` and flushes it, waiting on the stream's readiness:
/// a slow client makes this wait, and nothing more is read meanwhile.
async fn write_all(stream: &OutputStream, data: &[u8]) -> Result<(), StreamError> {
    let mut offset = 0;
    let mut flushing = false;
    let mut token: Option<CancelOnDropToken> = None;
    futures::future::poll_fn(|cx| loop {
        match stream.check_write() {
            Ok(0) => {
                token = Some(CancelOnDropToken::from(
                    spin_executor::push_waker_and_get_token(stream.subscribe(), cx.waker().clone()),
                ));
                return Poll::Pending;
            }
            Ok(room) => {
                if offset == data.len() {
                    if flushing {
                        return Poll::Ready(Ok(()));
                    }
                    if let Err(e) = stream.flush() {
                        return Poll::Ready(Err(e));
                    }
                    flushing = true;
                } else {
                    let n = usize::try_from(room)
                        .unwrap_or(usize::MAX)
                        .min(data.len() - offset);
                    if let Err(e) = stream.write(&data[offset..offset + n]) {
                        return Poll::Ready(Err(e));
                    }
                    offset += n;
                }
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    })
    .await?;
    drop(token);
    Ok(())
}

fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name).ok()
}

async fn serve(req: IncomingRequest, client: &mut SpinClient) -> Delivered {
    let log_level = variable(LOG_LEVEL_VARIABLE)
        .and_then(|l| parse_level(&l))
        .unwrap_or(Level::Info);
    let config = match load_config() {
        Ok(c) => c,
        Err(message) => {
            eprintln!("ERROR gateway: {message}");
            return chain::answer(client, json_error(500, "config_invalid", &message)).await;
        }
    };
    let store_label = variable(KV_STORE_VARIABLE).unwrap_or_else(|| "default".into());
    let store = SpinStore::open(&store_label);
    let env = RequestEnv::new(
        store.as_ref().map(|s| s as &dyn KvStore),
        log_level,
        now_millis,
    );
    if store.is_none() {
        env.log(
            Level::Debug,
            "gateway",
            &format!("key-value store `{store_label}` is not available to this component (key_value_stores in spin.toml)"),
        );
    }

    let method = req.method().to_string();
    let path = req.path_with_query().unwrap_or_else(|| "/".into());
    let headers: Vec<(String, String)> = req
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| {
            (
                n.to_ascii_lowercase(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let authority = req
        .authority()
        .or_else(|| edgegate_policy_core::header(&headers, "host").map(String::from))
        .unwrap_or_default();
    let Some(route) = config.find_route(&authority, &path, &method) else {
        let resp = json_error(404, "no_route", "no route matches this request");
        return chain::answer(client, resp).await;
    };
    let limit = chain::request_limit(&config, route);
    let declared = edgegate_policy_core::header(&headers, "content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return chain::answer(client, too_large(limit)).await;
    }
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) if body.len() + chunk.len() > limit => {
                return chain::answer(client, too_large(limit)).await
            }
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(e) => {
                let resp = json_error(
                    400,
                    "body_read_failed",
                    &format!("reading the request body failed: {e}"),
                );
                return chain::answer(client, resp).await;
            }
        }
    }
    let client_ip = edgegate_policy_core::header(&headers, "spin-client-addr")
        .map(chain::client_ip)
        .unwrap_or_default();
    let incoming = Incoming {
        method,
        path,
        authority,
        headers,
        body,
        client_ip,
    };
    chain::run(&config, route, &env, &SpinTransport, incoming, client).await
}

fn too_large(limit: usize) -> HttpResponse {
    json_error(
        413,
        "body_too_large",
        &format!("request body exceeds {limit} bytes"),
    )
}

fn load_config() -> Result<Rc<Config>, String> {
    let text = spin_sdk::variables::get(CONFIG_VARIABLE).map_err(|e| {
        format!("Spin variable `{CONFIG_VARIABLE}` is not readable ({e}); declare it in spin.toml's [component.<id>.variables]")
    })?;
    if let Some(config) = PARSED.with_borrow(|p| {
        p.as_ref()
            .filter(|(t, _)| *t == text)
            .map(|(_, c)| Rc::clone(c))
    }) {
        return Ok(config);
    }
    let config = Rc::new(
        Config::parse(&text)
            .map_err(|e| format!("Spin variable `{CONFIG_VARIABLE}` refused: {e}"))?,
    );
    if !config.ignored.is_empty() {
        eprintln!(
            "INFO gateway: keys only the edgegate host reads, ignored on Spin: {}",
            config.ignored.join(", ")
        );
    }
    PARSED.with_borrow_mut(|p| *p = Some((text, Rc::clone(&config))));
    Ok(config)
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Spin's key-value store.
struct SpinStore(Store);

impl SpinStore {
    fn open(label: &str) -> Option<Self> {
        Store::open(label).ok().map(SpinStore)
    }
}

impl KvStore for SpinStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(key).map_err(|e| e.to_string())
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.set(key, value).map_err(|e| e.to_string())
    }
    fn delete(&self, key: &str) -> Result<(), String> {
        self.0.delete(key).map_err(|e| e.to_string())
    }
}

/// A future ready at a monotonic-clock deadline, driven by Spin's executor.
struct Sleep {
    deadline: u64,
    token: Option<CancelOnDropToken>,
}

fn sleep(duration: Duration) -> Sleep {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    Sleep {
        deadline: wasi::clocks::monotonic_clock::now().saturating_add(nanos),
        token: None,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Compare clocks rather than ask a fresh pollable: wasmtime reports a
        // new past-deadline pollable as not ready until it has yielded once,
        // so re-subscribing on every poll would never finish.
        if wasi::clocks::monotonic_clock::now() >= self.deadline {
            self.token = None;
            return Poll::Ready(());
        }
        let pollable = wasi::clocks::monotonic_clock::subscribe_instant(self.deadline);
        self.token = Some(CancelOnDropToken::from(
            spin_executor::push_waker_and_get_token(pollable, cx.waker().clone()),
        ));
        Poll::Pending
    }
}

/// Outbound HTTP through Spin (`allowed_outbound_hosts` applies).
struct SpinTransport;

fn method(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    }
}

fn send_error(e: spin_sdk::http::SendError) -> SendError {
    match e {
        spin_sdk::http::SendError::Http(code) => match code {
            ErrorCode::DnsTimeout
            | ErrorCode::DnsError(_)
            | ErrorCode::DestinationNotFound
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpProhibited
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionTimeout
            | ErrorCode::TlsProtocolError
            | ErrorCode::TlsCertificateError
            | ErrorCode::HttpRequestDenied => SendError::Connect(format!("{code:?}")),
            ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => SendError::Timeout,
            other => SendError::Other(format!("{other:?}")),
        },
        // The body could not be written: the host refused or dropped the
        // request before any answer (spin-sdk writes the body before it reads
        // the response future, so a refusal such as `allowed_outbound_hosts`
        // surfaces here).
        spin_sdk::http::SendError::Io(e) => {
            SendError::Connect(format!("the request was not accepted: {e}"))
        }
        other => SendError::Other(other.to_string()),
    }
}

impl SpinTransport {
    async fn exchange(&self, req: Outgoing<'_>) -> Result<IncomingResponse, SendError> {
        let request = Request::builder()
            .method(method(req.method))
            .uri(req.url)
            .headers(req.headers.clone())
            .body(req.body.to_vec())
            .build();
        spin_sdk::http::send(request).await.map_err(send_error)
    }
}

/// An upstream answer's body on wasi:http, each piece within the idle timeout.
struct SpinBody {
    /// Dropped before the response: dropping both cancels the request.
    stream: Pin<Box<dyn Stream<Item = Result<Vec<u8>, wasi::io::streams::Error>>>>,
    _response: IncomingResponse,
    idle: Duration,
}

impl BodyStream for SpinBody {
    async fn next(&mut self) -> Option<Result<Vec<u8>, SendError>> {
        match select(self.stream.next(), sleep(self.idle)).await {
            Either::Left((piece, _)) => {
                piece.map(|r| r.map_err(|e| SendError::Other(format!("reading the answer: {e}"))))
            }
            Either::Right(((), _)) => Some(Err(SendError::Timeout)),
        }
    }
}

impl Transport for SpinTransport {
    type Body = SpinBody;

    async fn send(
        &self,
        req: Outgoing<'_>,
        timeout: Duration,
        idle: Duration,
    ) -> Result<Answer<SpinBody>, SendError> {
        let exchange = std::pin::pin!(self.exchange(req));
        let resp = match select(exchange, sleep(timeout)).await {
            Either::Left((result, _)) => result?,
            Either::Right(((), _)) => return Err(SendError::Timeout),
        };
        let status = resp.status();
        let headers = resp
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| {
                (
                    n.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        Ok(Answer {
            status,
            headers,
            body: SpinBody {
                stream: Box::pin(resp.take_body_stream()),
                _response: resp,
                idle,
            },
        })
    }

    async fn sleep(&self, duration: Duration) {
        sleep(duration).await;
    }
}
