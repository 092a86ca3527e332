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

use crate::admin;
use crate::body::ProxyBody;
use crate::control::{self, Control};
use crate::graph::HealthGraph;
use crate::health_check;
use crate::metrics::Metrics;
use crate::phases::{self, Peer};
use crate::state::{BuildError, GatewayState};
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

impl Gateway {
    /// Compile and admit every policy of the config; nothing listens yet.
    pub fn new(config: GatewayConfig) -> Result<Self, BuildError> {
        let runtime = Arc::new(
            Runtime::new(&RuntimeConfig::default())
                .map_err(|e| BuildError::Invalid(e.to_string()))?,
        );
        let kv = Arc::new(KvStore::default());
        let metrics = Arc::new(Metrics::new());
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
        let (state, skipped) = rt.block_on(GatewayState::build_with(
            &config, &runtime, &kv, &metrics, workers, &pushed,
        ))?;
        for s in &skipped {
            tracing::error!("{s}");
        }
        for (name, set) in &state.policies {
            if pushed.contains_key(name) && set.serving.source == crate::versions::Source::Push {
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
                grace,
            };
            let rx = shutdown_rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("edgegate-worker-{id}"))
                    .spawn(move || worker.run(listener, rx))?,
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
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt.block_on(graph.run(rx)),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot start the graph reporter")
                            }
                        }
                    })?,
            );
        }
        // Active health checks of the serving generation, on a thread of their own.
        let checked = self.state.clone();
        let rx = shutdown_rx.clone();
        threads.push(
            std::thread::Builder::new()
                .name("edgegate-health-check".into())
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
        tracing::info!(%proxy_addr, %admin_addr, workers = self.workers, "edgegate serving");
        Ok(GatewayHandle {
            proxy_addr,
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
    grace: Duration,
}

impl Worker {
    fn run(self, listener: StdListener, mut shutdown: watch::Receiver<bool>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(worker = self.id, error = %e, "cannot start worker runtime");
                return;
            }
        };
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(worker = self.id, error = %e, "cannot register listener");
                    return;
                }
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
            loop {
                // Waiting for a permit before accepting bounds open connections;
                // the kernel's backlog holds the rest.
                let permit = tokio::select! {
                    p = self.connections.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = shutdown.changed() => break,
                };
                tokio::select! {
                    accepted = listener.accept() => {
                        let (stream, peer) = match accepted {
                            Ok(a) => a,
                            Err(e) => {
                                tracing::warn!(error = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        };
                        let _ = stream.set_nodelay(true);
                        let state = self.state.clone();
                        let peer = Peer { ip: peer.ip(), worker: self.id };
                        let service = service_fn(move |req| {
                            let state = state.load_full();
                            // Boxing pins the future's type down, which lets the compiler
                            // see it is Send (it cannot across the generic hyper layers).
                            let fut: std::pin::Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>> =
                                Box::pin(phases::handle(state, peer, req));
                            async move { Ok::<_, Infallible>(answer_even_if_it_panics(fut).await) }
                        });
                        let builder = builder.clone();
                        let watcher = graceful.watcher();
                        let first_byte_timeout = self.first_byte_timeout;
                        tokio::spawn(async move {
                            // hyper's header timeout starts only once bytes arrive (the
                            // protocol sniffing waits before it): silent connections end here.
                            if !first_byte(&stream, first_byte_timeout).await {
                                drop(permit);
                                return;
                            }
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            if let Err(e) = watcher.watch(conn.into_owned()).await {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                            drop(permit);
                        });
                    }
                    _ = shutdown.changed() => break,
                }
            }
            drop(listener);
            tokio::select! {
                _ = graceful.shutdown() => {}
                _ = tokio::time::sleep(self.grace) => {
                    tracing::warn!(worker = self.id, "grace period over; closing remaining connections");
                }
            }
        });
    }
}
