//! `edgegate`: the edge gateway binary.

mod admin_client;
mod demo_upstream;
mod signing;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use edgegate_gateway::Gateway;

/// mimalloc instead of glibc's malloc: the request path allocates and frees
/// small buffers on two threads at a high rate, and glibc's arenas spent
/// 14% of the four-policy chain's CPU in malloc, free and consolidation
/// (docs/benchmarks.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A WebAssembly-policy edge gateway.
#[derive(Parser)]
#[command(name = "edgegate", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Gateway config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a config: parse, compile every policy, run each policy's `init`.
    CheckConfig {
        /// Gateway config file (TOML).
        file: PathBuf,
    },
    /// Generate a signing key: writes DIR/KEYID.secret, DIR/KEYID.public and DIR/trust.toml.
    Keygen {
        /// Folder to write the key files into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Policy kinds the key may sign, comma-separated (default: every kind).
        #[arg(long, value_delimiter = ',', default_value = "*")]
        kinds: Vec<String>,
    },
    /// Sign a component (adds a signature; existing ones are kept for k-of-n).
    Sign {
        /// Secret key file (PEM) from `edgegate keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signed component (default: in place).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The component to sign.
        component: PathBuf,
    },
    /// Verify a component against a trust store; prints the signer key ids and
    /// its content sha256 (what revocations, pins and the fleet name).
    Verify {
        /// Trust store file.
        #[arg(long)]
        trust: PathBuf,
        /// Policy kind the component would run as.
        #[arg(long, default_value = "custom")]
        kind: String,
        /// Distinct trusted signers required.
        #[arg(long, default_value_t = 1)]
        signers: usize,
        /// A signed revocation list to apply.
        #[arg(long)]
        revocations: Option<PathBuf>,
        /// The component to verify.
        component: PathBuf,
    },
    /// Write a signed revocation list (revoked key ids and component digests).
    Revoke {
        /// Secret key of a trust-store key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// List version; must not be lower than the one gateways hold.
        #[arg(long)]
        list_version: u64,
        /// Key id to revoke (repeatable).
        #[arg(long = "revoke-key")]
        revoke_keys: Vec<String>,
        /// Content sha256 (hex) of a component to revoke, as `edgegate verify`
        /// prints it: the component without its signature sections (repeatable).
        #[arg(long = "revoke-digest")]
        revoke_digests: Vec<String>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Push a signed component as a new version of a policy (admin API).
    Push {
        #[command(flatten)]
        admin: AdminArgs,
        /// Start it as a canary for this percent of requests (1-99).
        #[arg(long)]
        canary: Option<u32>,
        /// Canary by client IP (the same client always gets the same version).
        #[arg(long)]
        sticky: bool,
        /// Policy name (as in the config).
        policy: String,
        /// The signed component.
        component: PathBuf,
    },
    /// Show every policy's serving, canary, previous and refused versions.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve a policy's canary to everyone.
    Promote {
        #[command(flatten)]
        admin: AdminArgs,
        /// Policy name.
        policy: String,
    },
    /// End a policy's canary, or serve its previous version again.
    Rollback {
        #[command(flatten)]
        admin: AdminArgs,
        /// Policy name.
        policy: String,
    },
    /// Make a running gateway read its config file again (as SIGHUP does).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run the coordinator: merges the edges' health graphs (docs/operations.md).
    Coordinator {
        /// Coordinator config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a small local upstream for demos and benchmarks (echoes requests as JSON).
    DemoUpstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// Time between two events of a streamed chat answer (`"stream": true`).
        #[arg(long, default_value_t = 50)]
        stream_interval_ms: u64,
    },
}

/// Where the admin API is.
#[derive(clap::Args)]
struct AdminArgs {
    /// Admin listener URL.
    #[arg(long, default_value = "http://127.0.0.1:9901")]
    admin: String,
    /// Bearer token (`admin.token`); also read from EDGEGATE_ADMIN_TOKEN.
    #[arg(long, env = "EDGEGATE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl AdminArgs {
    fn client(&self) -> admin_client::Admin<'_> {
        admin_client::Admin {
            url: &self.admin,
            token: self.token.as_deref(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve { config } => serve(&config, cli.log_format),
        Command::CheckConfig { file } => check_config(&file),
        Command::DemoUpstream {
            listen,
            stream_interval_ms,
        } => demo_upstream::run(listen, std::time::Duration::from_millis(stream_interval_ms)),
        Command::Push {
            admin,
            canary,
            sticky,
            policy,
            component,
        } => admin.client().push(&policy, &component, canary, sticky),
        Command::Status { admin, json } => admin.client().status(json),
        Command::Promote { admin, policy } => admin.client().promote(&policy),
        Command::Rollback { admin, policy } => admin.client().rollback(&policy),
        Command::Reload { admin } => admin.client().reload(),
        Command::Coordinator { config } => coordinator(&config),
        Command::Keygen { out, kinds } => signing::keygen(&out, &kinds),
        Command::Sign {
            key,
            out,
            component,
        } => signing::sign(&key, &component, out.as_deref()),
        Command::Verify {
            trust,
            kind,
            signers,
            revocations,
            component,
        } => signing::verify(&trust, &kind, signers, revocations.as_deref(), &component),
        Command::Revoke {
            key,
            list_version,
            revoke_keys,
            revoke_digests,
            out,
        } => signing::revoke(&key, list_version, revoke_keys, revoke_digests, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgegate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or collector gets plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = edgegate_config::load(file)?;
    let summary = format!(
        "{}: ok ({} routes, {} policies, {} upstreams)",
        file.display(),
        config.routes.len(),
        config.policies.len(),
        config.upstreams.len()
    );
    // Building the gateway verifies, compiles and admits every policy; nothing listens.
    let gateway = Gateway::new(config).with_context(|| format!("{}", file.display()))?;
    drop(gateway);
    println!("{summary}");
    Ok(())
}

fn serve(file: &std::path::Path, format: LogFormat) -> anyhow::Result<()> {
    let config = edgegate_config::load(file)?;
    let options = edgegate_gateway::GatewayOptions {
        log_format: match format {
            LogFormat::Text => edgegate_config::LineFormat::Text,
            LogFormat::Json => edgegate_config::LineFormat::Json,
        },
    };
    let gateway =
        Gateway::with_options(config, options).with_context(|| format!("{}", file.display()))?;
    let handle = gateway.start().context("binding listeners")?;
    // Tests and scripts read this line to learn the ports.
    let tls = handle
        .tls_addr
        .map(|a| format!(" https://{a}"))
        .unwrap_or_default();
    println!(
        "edgegate listening on http://{}{tls} (admin http://{})",
        handle.proxy_addr, handle.admin_addr
    );
    wait_for_signals(&handle)?;
    tracing::info!("shutting down: draining in-flight requests");
    handle.shutdown();
    tracing::info!("stopped");
    Ok(())
}

fn coordinator(file: &std::path::Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let config = edgegate_coordinator::CoordinatorConfig::load(file)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let server = tokio::spawn(edgegate_coordinator::server::run(config, stop_rx, bound_tx));
        match bound_rx.await {
            // Tests and scripts read this line to learn the port.
            Ok(addr) => println!("edgegate coordinator listening on {scheme}://{addr}"),
            Err(_) => {
                return match server.await {
                    Ok(Err(e)) => Err(anyhow::anyhow!("{}: {e}", file.display())),
                    _ => Err(anyhow::anyhow!("the coordinator did not start")),
                }
            }
        }
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(true);
        match server.await {
            Ok(result) => result.map_err(|e| anyhow::anyhow!(e)),
            Err(e) => Err(anyhow::anyhow!("coordinator task: {e}")),
        }
    })
}

/// Waits for SIGTERM or SIGINT; SIGHUP reloads the config file meanwhile,
/// and SIGUSR1 opens the access log files again (after a rotation).
fn wait_for_signals(handle: &edgegate_gateway::GatewayHandle) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let control = handle.control().clone();
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = usr1.recv() => control.reopen_logs(),
                _ = hup.recv() => match control.reload().await {
                    Ok(_) => tracing::info!("SIGHUP: config reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload refused; still serving the previous config"),
                },
            }
        }
        Ok(())
    })
}
