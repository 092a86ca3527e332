//! Listeners and worker threads: one current-thread runtime per worker, each with its
//! own `SO_REUSEPORT` listener and upstream pools; graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use edgegate_config::GatewayConfig;
use edgegate_runtime::{KvStore, Runtime, RuntimeConfig};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;

use crate::control::admin;
use crate::control::plane::{self as control, Control};
use crate::control::state::{BuildError, GatewayState};
use crate::observability::graph::HealthGraph;
use crate::observability::metrics::Metrics;
use crate::request_path::body::ProxyBody;
use crate::request_path::phases::{self, Peer};
use crate::tls::{self, TlsSession};
use crate::upstreams::health_check;
use http::Response;

/// A gateway built from a config, ready to start.
pub struct Gateway {
    config: GatewayConfig,
    runtime: Arc<Runtime>,
    kv: Arc<KvStore>,
    state: Arc<ArcSwap<GatewayState>>,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    workers: usize,
}

/// How the process around a gateway runs it.
#[derive(Debug, Clone, Copy)]
pub struct GatewayOptions {
    /// `--log-format`: the access log's format when the config names none.
    pub log_format: edgegate_config::LineFormat,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            log_format: edgegate_config::LineFormat::Text,
        }
    }
}

impl Gateway {
    /// Compile and admit every policy of the config; nothing listens yet.
    pub fn new(config: GatewayConfig) -> Result<Self, BuildError> {
        Self::with_options(config, GatewayOptions::default())
    }

    /// [`Gateway::new`], run as `options` say.
    pub fn with_options(
        config: GatewayConfig,
        options: GatewayOptions,
    ) -> Result<Self, BuildError> {
        let compile_cache = config
            .admin
            .compile_cache
            .then(|| config.admin.state_dir.as_ref().map(|d| d.join("compiled")))
            .flatten();
        let runtime = Arc::new(
            Runtime::new(&RuntimeConfig {
                compile_cache,
                ..RuntimeConfig::default()
            })
            .map_err(|e| BuildError::Invalid(e.to_string()))?,
        );
        let kv = Arc::new(KvStore::default());
        let metrics = Arc::new(Metrics::new());
        let logs = Arc::new(crate::observability::access_log::Sinks::new(
            options.log_format,
            metrics.access_log_dropped.clone(),
        ));
        let workers = match config.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BuildError::Invalid(format!("starting a runtime: {e}")))?;
        // Pushed versions kept in the state folder serve again (verified anew).
        let pushed = control::load_pushed(&config);
        let (state, skipped) = rt.block_on(GatewayState::build(
            &config, &runtime, &kv, &metrics, &logs, workers, &pushed,
        ))?;
        for s in &skipped {
            tracing::error!("{s}");
        }
        for (name, set) in &state.policies {
            if pushed.contains_key(name)
                && set.serving.source == crate::control::versions::Source::Push
            {
                tracing::info!(policy = %name, digest = %set.serving.digest, "serving the version pushed before the restart");
            }
        }
        let state = Arc::new(ArcSwap::from_pointee(state));
        let control = Arc::new(Control::new(
            config.clone(),
            state.clone(),
            runtime.clone(),
            kv.clone(),
            metrics.clone(),
            logs,
            workers,
        ));
        Ok(Self {
            config,
            runtime,
            kv,
            state,
            control,
            metrics,
            workers,
        })
    }

    /// Bind the proxy and admin listeners and start serving.
    pub fn start(self) -> std::io::Result<GatewayHandle> {
        let listeners = bind_reuseport(self.config.server.listen, self.workers)?;
        let proxy_addr = listeners[0].local_addr()?;
        let mut tls_listeners: Vec<Option<StdListener>> = match &self.config.server.tls {
            Some(t) => bind_reuseport(t.listen, self.workers)?
                .into_iter()
                .map(Some)
                .collect(),
            None => (0..self.workers.max(1)).map(|_| None).collect(),
        };
        let tls_addr = match tls_listeners.first() {
            Some(Some(l)) => Some(l.local_addr()?),
            _ => None,
        };
        let tls_limits = self.config.server.tls.as_ref().map(|t| TlsLimits {
            handshakes: Arc::new(tokio::sync::Semaphore::new(t.max_handshakes.max(1))),
            timeout: Duration::from_millis(t.handshake_timeout_ms),
        });
        let admin_listener = StdListener::bind(self.config.admin.listen)?;
        admin_listener.set_nonblocking(true)?;
        let admin_addr = admin_listener.local_addr()?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(true));
        let grace = Duration::from_millis(self.config.server.shutdown_grace_ms);
        let connections = Arc::new(tokio::sync::Semaphore::new(
            self.config.server.max_connections.max(1),
        ));
        let mut threads = Vec::with_capacity(self.workers + 1);
        for (id, listener) in listeners.into_iter().enumerate() {
            let worker = Worker {
                id,
                state: self.state.clone(),
                header_timeout: Duration::from_millis(self.config.server.header_timeout_ms),
                first_byte_timeout: Duration::from_millis(self.config.server.first_byte_timeout_ms),
                max_header_bytes: self.config.server.max_header_bytes,
                max_streams: self.config.server.max_concurrent_streams,
                connections: connections.clone(),
                tls: tls_limits.clone(),
                tls_port: tls_addr.map(|a| a.port()),
                grace,
            };
            let rx = shutdown_rx.clone();
            let tls_listener = tls_listeners.get_mut(id).and_then(Option::take);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("edgegate-worker-{id}"))
                    .spawn(move || worker.run(listener, tls_listener, rx))?,
            );
        }
        if let Some(t) = self
            .config
            .server
            .tls
            .as_ref()
            .filter(|t| t.watch_interval_ms > 0)
        {
            let (state, control, rx) = (
                self.state.clone(),
                self.control.clone(),
                shutdown_rx.clone(),
            );
            let interval = Duration::from_millis(t.watch_interval_ms);
            threads.push(
                std::thread::Builder::new()
                    .name("edgegate-tls-watch".into())
                    .spawn(move || watch_certificates(state, control, interval, rx))?,
            );
        }
        let health = self
            .config
            .node
            .clone()
            .map(|node| Arc::new(HealthGraph::new(self.state.clone(), node)));
        if let Some(graph) = &health {
            let graph = graph.clone();
            let rx = shutdown_rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("edgegate-graph".into())
                    .spawn(move || {
                        crate::run_on_this_thread("graph reporter", graph.run(rx));
                    })?,
            );
        }
        // Active health checks and DNS refreshes of the serving generation, on a thread of their own.
        let checked = self.state.clone();
        let rx = shutdown_rx.clone();
        threads.push(
            std::thread::Builder::new()
                .name("edgegate-upstreams".into())
                .spawn(move || health_check::run(checked, rx))?,
        );
        let admin = admin::Admin {
            metrics: self.metrics.clone(),
            ready: ready.clone(),
            control: self.control.clone(),
            health,
        };
        let rx = shutdown_rx.clone();
        threads.push(
            std::thread::Builder::new()
                .name("edgegate-admin".into())
                .spawn(move || admin.run(admin_listener, rx))?,
        );
        tracing::info!(%proxy_addr, ?tls_addr, %admin_addr, workers = self.workers, "edgegate serving");
        Ok(GatewayHandle {
            proxy_addr,
            tls_addr,
            admin_addr,
            control: self.control,
            shutdown: shutdown_tx,
            ready,
            threads,
            _runtime: self.runtime,
            _kv: self.kv,
        })
    }
}

/// A running gateway.
pub struct GatewayHandle {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the TLS listener listens, when `[server.tls]` is set.
    pub tls_addr: Option<SocketAddr>,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    control: Arc<Control>,
    shutdown: watch::Sender<bool>,
    ready: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _runtime: Arc<Runtime>,
    _kv: Arc<KvStore>,
}

impl GatewayHandle {
    /// The control plane (push, promote, roll back, reload).
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Stop accepting, let in-flight requests finish (up to the grace period), then return.
    pub fn shutdown(self) {
        self.ready.store(false, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Waits for a new connection's first byte, up to `timeout`: false when the
/// client sent nothing (or closed), and the connection should be dropped.
pub(crate) async fn first_byte(stream: &tokio::net::TcpStream, timeout: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, stream.peek(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Runs the request path; a panic in it (a bug: nothing on the path may
/// panic) becomes a 500 for this request instead of a dead connection, and
/// the worker goes on serving the others.
async fn answer_even_if_it_panics(
    fut: std::pin::Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>,
) -> Response<ProxyBody> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %edgegate_runtime::guest_text(&what, 1024), "the request path panicked; answered 500");
            phases::error_response(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the gateway failed while handling this request",
            )
        }
    }
}

/// `n` listeners on one address with `SO_REUSEPORT`, so the kernel spreads connections.
fn bind_reuseport(addr: SocketAddr, n: usize) -> std::io::Result<Vec<StdListener>> {
    let mut out = Vec::with_capacity(n);
    let mut bound = addr;
    for _ in 0..n.max(1) {
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nodelay(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(4096)?;
        let l: StdListener = socket.into();
        // With port 0 the first bind picks the port; the rest share it.
        bound = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

struct Worker {
    id: usize,
    state: Arc<ArcSwap<GatewayState>>,
    header_timeout: Duration,
    first_byte_timeout: Duration,
    max_header_bytes: usize,
    max_streams: u32,
    /// Permits for open client connections, shared by all workers.
    connections: Arc<tokio::sync::Semaphore>,
    /// The TLS listener's handshake bounds, when there is one.
    tls: Option<TlsLimits>,
    /// The TLS listener's bound port, when there is one.
    tls_port: Option<u16>,
    grace: Duration,
}

/// On a cleartext request: the TLS listener's bound port, where
/// `server.redirect_to_https` sends it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpsPort(pub(crate) u16);

/// Bounds on TLS handshakes, shared by all workers.
#[derive(Clone)]
struct TlsLimits {
    /// Permits for handshakes in progress.
    handshakes: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
}

type Builder = auto::Builder<TokioExecutor>;

impl Worker {
    fn run(
        self,
        listener: StdListener,
        tls_listener: Option<StdListener>,
        shutdown: watch::Receiver<bool>,
    ) {
        let what = format!("worker {}", self.id);
        crate::run_on_this_thread(&what, async move {
            let register = |l: StdListener| match tokio::net::TcpListener::from_std(l) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(worker = self.id, error = %e, "cannot register listener");
                    None
                }
            };
            let Some(listener) = register(listener) else {
                return;
            };
            let tls_listener = match tls_listener.map(register) {
                Some(None) => return,
                Some(Some(l)) => Some(l),
                None => None,
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_timeout)
                .max_buf_size((self.max_header_bytes + 4096).max(8192))
                .keep_alive(true);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
                .max_concurrent_streams(self.max_streams);
            let graceful = GracefulShutdown::new();
            let plain = self.accept_loop(&listener, None, &builder, &graceful, shutdown.clone());
            match &tls_listener {
                Some(tls) => {
                    let secure = self.accept_loop(
                        tls,
                        self.tls.clone(),
                        &builder,
                        &graceful,
                        shutdown.clone(),
                    );
                    tokio::join!(plain, secure);
                }
                None => plain.await,
            }
            drop(listener);
            drop(tls_listener);
            tokio::select! {
                _ = graceful.shutdown() => {}
                _ = tokio::time::sleep(self.grace) => {
                    tracing::warn!(worker = self.id, "grace period over; closing remaining connections");
                }
            }
        });
    }

    /// Accepts on one listener until shutdown: cleartext when `tls` is
    /// `None`, else each connection's handshake first (bounded in time and in
    /// number at once), with the serving generation's certificates.
    async fn accept_loop(
        &self,
        listener: &tokio::net::TcpListener,
        tls: Option<TlsLimits>,
        builder: &Builder,
        graceful: &GracefulShutdown,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            // Waiting for a permit before accepting bounds open connections
            // (and handshakes in progress); the kernel's backlog holds the rest.
            let permit = tokio::select! {
                p = self.connections.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.changed() => break,
            };
            let handshake = match &tls {
                None => None,
                Some(t) => tokio::select! {
                    p = t.handshakes.clone().acquire_owned() => match p {
                        Ok(p) => Some(p),
                        Err(_) => break,
                    },
                    _ = shutdown.changed() => break,
                },
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let state = self.state.clone();
            let peer = Peer {
                ip: peer.ip(),
                worker: self.id,
            };
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let first_byte_timeout = self.first_byte_timeout;
            let tls = tls.clone();
            let https_port = self.tls_port.map(HttpsPort);
            tokio::spawn(async move {
                // Held until the connection ends, whichever way it ends.
                let _permit = permit;
                // hyper's header timeout starts only once bytes arrive (the
                // protocol sniffing waits before it): silent connections end here.
                if !first_byte(&stream, first_byte_timeout).await {
                    return;
                }
                let Some(limits) = tls else {
                    let conn = builder.serve_connection(
                        TokioIo::new(stream),
                        service(state, peer, Listener::Plain(https_port)),
                    );
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                };
                // New handshakes take the certificates of the generation serving now.
                let Some(listener_tls) = state.load().tls.clone() else {
                    return;
                };
                let accepted =
                    tokio::time::timeout(limits.timeout, listener_tls.accept(stream)).await;
                drop(handshake);
                let stream = match accepted {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer.ip, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(client = %peer.ip, "TLS handshake timed out");
                        return;
                    }
                };
                let session = Arc::new(TlsSession::of(stream.get_ref().1));
                let conn = builder.serve_connection(
                    TokioIo::new(stream),
                    service(state, peer, Listener::Tls(session)),
                );
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
    }
}

/// Which listener a connection came in on, and what its requests carry in
/// their extensions because of it.
#[derive(Clone)]
enum Listener {
    /// Cleartext; the TLS port, when there is a TLS listener.
    Plain(Option<HttpsPort>),
    /// TLS, with what the handshake established.
    Tls(Arc<TlsSession>),
}

/// The request path as a hyper service for one connection.
fn service(
    state: Arc<ArcSwap<GatewayState>>,
    peer: Peer,
    listener: Listener,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send,
> + Clone {
    service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let state = state.load_full();
        match &listener {
            Listener::Tls(session) => {
                req.extensions_mut().insert(session.clone());
            }
            Listener::Plain(Some(port)) => {
                req.extensions_mut().insert(*port);
            }
            Listener::Plain(None) => {}
        }
        // Boxing pins the future's type down, which lets the compiler
        // see it is Send (it cannot across the generic hyper layers).
        let fut: std::pin::Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>> =
            Box::pin(phases::handle(state, peer, req));
        async move { Ok::<_, Infallible>(answer_even_if_it_panics(fut).await) }
    })
}

/// Watches the TLS listener's certificate, key and CA files; a change
/// reloads the config, so new handshakes get the new files (a refused
/// reload keeps the old ones serving and says why).
fn watch_certificates(
    state: Arc<ArcSwap<GatewayState>>,
    control: Arc<Control>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    crate::run_on_this_thread("certificate watcher", async move {
        let files = |s: &GatewayState| s.tls.as_ref().map(|t| t.files.clone()).unwrap_or_default();
        let mut watched = files(&state.load());
        let mut stamps = tls::file_stamps(&watched);
        let mut expiry_checked = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            // A gateway that runs for weeks without a reload still says when
            // a certificate nears its end: once a day.
            if expiry_checked.elapsed() >= Duration::from_secs(24 * 3600) {
                expiry_checked = std::time::Instant::now();
                if let Some(t) = &state.load().tls {
                    tls::warn_expiring(&t.certs, tls::unix_now());
                }
            }
            let now = files(&state.load());
            if now != watched {
                // A reload changed which files serve.
                stamps = tls::file_stamps(&now);
                watched = now;
                continue;
            }
            if tls::file_stamps(&watched) == stamps {
                continue;
            }
            // Files are often replaced one after the other: let the writer finish.
            tokio::time::sleep(Duration::from_millis(200)).await;
            stamps = tls::file_stamps(&watched);
            match control.reload().await {
                Ok(_) => tracing::info!("TLS files changed: config reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS files changed but the reload was refused; still serving the previous certificates")
                }
            }
        }
    });
}
