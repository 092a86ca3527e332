//! TLS: the listener's certificates (picked by SNI) and client-certificate
//! checks, built once per config generation so a reload swaps them for new
//! handshakes; and the rustls client configs of `https://` upstreams.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgegate_config::{
    ClientAuthMode, TlsCertificate, TlsListenerConfig, UnknownSni, UpstreamTlsConfig,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Largest PEM file read (a chain, a key or a CA bundle).
const MAX_PEM_BYTES: u64 = 1 << 20;
/// TLS 1.2 sessions kept for resumption by id (tickets need no server state).
const SESSION_CACHE: usize = 4096;
/// A certificate this close to its end is warned about at every load.
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// The ring provider: the only one edgegate builds with.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a loaded certificate is, for metrics, logs and the picking table.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    /// The names it is picked by.
    pub(crate) names: Vec<String>,
    /// The leaf's serial number, hex.
    pub(crate) serial: String,
    /// The leaf's `notAfter`, seconds since the Unix epoch.
    pub(crate) not_after: i64,
    /// The chain file.
    pub(crate) cert_file: PathBuf,
}

impl CertInfo {
    /// The name the expiry metric carries: the first name, or the file.
    pub(crate) fn label(&self) -> String {
        self.names
            .first()
            .cloned()
            .unwrap_or_else(|| self.cert_file.display().to_string())
    }
}

/// The TLS side of one config generation's listener.
pub(crate) struct ListenerTls {
    /// The same config twice but for the cipher suite order: AES-GCM first,
    /// and ChaCha20-Poly1305 first for clients that ask for it first.
    aes_first: Arc<rustls::ServerConfig>,
    chacha_first: Arc<rustls::ServerConfig>,
    pub(crate) certs: Vec<CertInfo>,
    /// Every file the listener reads, for the change watcher.
    pub(crate) files: Vec<PathBuf>,
}

/// The verified client certificate of a connection, as policies see it
/// (context keys `tls.client.*`, docs/tls.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientIdentity {
    /// The subject distinguished name (`CN=alice,O=Example`).
    pub(crate) subject: String,
    /// DNS names of the subject alternative names.
    pub(crate) dns: Vec<String>,
    /// URI names of the subject alternative names.
    pub(crate) uris: Vec<String>,
    /// The first `spiffe://` URI name, when there is one.
    pub(crate) spiffe: Option<String>,
}

/// What a TLS connection tells the request path.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSession {
    /// The server name the client sent.
    pub(crate) sni: Option<String>,
    /// The verified client certificate, when one was presented.
    pub(crate) client: Option<ClientIdentity>,
}

impl TlsSession {
    /// Reads what policies may see from a finished handshake.
    pub(crate) fn of(conn: &rustls::ServerConnection) -> Self {
        let client = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| client_identity(leaf.as_ref()));
        Self {
            sni: conn.server_name().map(str::to_string),
            client,
        }
    }
}

fn client_identity(der: &[u8]) -> Option<ClientIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut id = ClientIdentity {
        subject: cert.subject().to_string(),
        ..ClientIdentity::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => id.dns.push(d.to_string()),
                x509_parser::extensions::GeneralName::URI(u) => id.uris.push(u.to_string()),
                _ => {}
            }
        }
    }
    id.spiffe = id.uris.iter().find(|u| u.starts_with("spiffe://")).cloned();
    Some(id)
}

/// Picks the certificate for a handshake: exact name, then a one-label
/// wildcard, then the default (none when unknown names are refused).
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(c) = self.wildcard.get(parent) {
                return Some(c.clone());
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// Reads a PEM file, bounded; the error names the file.
fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "{what} {}: {} bytes; the limit is {MAX_PEM_BYTES}",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The certificates of a PEM file (at least one).
pub(crate) fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no CERTIFICATE block in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_pem(path, "key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "key {}: no usable private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM): {e}",
            path.display()
        )
    })
}

/// A CA bundle as a root store.
pub(crate) fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "CA file")? {
        roots
            .add(cert)
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Loads one configured pair: the chain parses, the key is a supported
/// type and belongs to the leaf, and the leaf has not expired.
fn load_pair(
    cfg: &TlsCertificate,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, CertInfo), String> {
    let chain = read_certs(&cfg.cert, "certificate")?;
    let key = read_key(&cfg.key)?;
    let files = || format!("{} with {}", cfg.cert.display(), cfg.key.display());
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        format!(
            "key {}: not an RSA, ECDSA P-256/P-384 or Ed25519 key: {e}",
            cfg.key.display()
        )
    })?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|e| {
        format!(
            "{}: the key does not belong to the certificate ({e})",
            files()
        )
    })?;
    let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].as_ref())
        .map_err(|e| format!("certificate {}: unreadable X.509: {e}", cfg.cert.display()))?;
    let not_after = leaf.validity().not_after.timestamp();
    let now = unix_now();
    if not_after < now {
        return Err(format!(
            "certificate {}: expired on {}",
            cfg.cert.display(),
            leaf.validity().not_after
        ));
    }
    let names = match &cfg.names {
        Some(names) => names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        None => {
            let mut names = Vec::new();
            if let Ok(Some(san)) = leaf.subject_alternative_name() {
                for n in &san.value.general_names {
                    if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                        names.push(d.to_ascii_lowercase());
                    }
                }
            }
            names
        }
    };
    let info = CertInfo {
        names,
        serial: leaf.raw_serial_as_string().replace(':', ""),
        not_after,
        cert_file: cfg.cert.clone(),
    };
    Ok((Arc::new(certified), info))
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl ListenerTls {
    /// Builds the listener's TLS from `[server.tls]`; the error names the file
    /// and what is wrong with it.
    pub(crate) fn load(cfg: &TlsListenerConfig) -> Result<Self, String> {
        let provider = provider();
        let mut resolver = SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
        };
        let mut certs = Vec::new();
        let mut files = Vec::new();
        let default_index = cfg.certificates.iter().position(|c| c.default).unwrap_or(0);
        for (i, c) in cfg.certificates.iter().enumerate() {
            let (key, info) = load_pair(c, &provider)?;
            if info.names.is_empty() && i != default_index {
                return Err(format!(
                    "certificate {}: has no DNS names and sets no `names`, so no client could pick it",
                    c.cert.display()
                ));
            }
            for name in &info.names {
                let table = match name.strip_prefix("*.") {
                    Some(parent) => resolver.wildcard.entry(parent.to_string()),
                    None => resolver.exact.entry(name.clone()),
                };
                // The first certificate listed for a name wins.
                table.or_insert_with(|| key.clone());
            }
            if i == default_index && cfg.unknown_sni == UnknownSni::Default {
                resolver.default = Some(key.clone());
            }
            tracing::info!(certificate = %c.cert.display(), serial = %info.serial, names = ?info.names, "TLS certificate loaded");
            files.push(c.cert.clone());
            files.push(c.key.clone());
            certs.push(info);
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if cfg.min_version == "1.3" {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let client_verifier = match &cfg.client_auth {
            None => None,
            Some(auth) => {
                files.push(auth.ca_file.clone());
                let roots = read_roots(&auth.ca_file)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = match auth.mode {
                    ClientAuthMode::Required => verifier,
                    ClientAuthMode::Optional => verifier.allow_unauthenticated(),
                };
                Some(
                    verifier
                        .build()
                        .map_err(|e| format!("CA file {}: {e}", auth.ca_file.display()))?,
                )
            }
        };
        warn_expiring(&certs, unix_now());
        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(resolver);
        // Stateless tickets (keys rotated every 6 hours): resumption works
        // for any number of clients, where the default session cache holds
        // 256. A generation of its own, so a reload that changes the
        // client-certificate CA is not bypassed by resuming an older session.
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("session ticket keys: {e}"))?;
        // TLS 1.2 clients without tickets resume by session id.
        let sessions = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        // Two configs that differ only in the server's suite order; they
        // share the ticketer, so a session resumes whichever one picks up
        // the client's next hello.
        let config = |chacha: bool| -> Result<Arc<rustls::ServerConfig>, String> {
            let mut ordered = (*provider).clone();
            ordered
                .cipher_suites
                .sort_by_key(|s| suite_rank(s.suite(), chacha));
            let builder = rustls::ServerConfig::builder_with_provider(Arc::new(ordered))
                .with_protocol_versions(versions)
                .map_err(|e| format!("server.tls.min_version: {e}"))?;
            let builder = match &client_verifier {
                None => builder.with_no_client_auth(),
                Some(v) => builder.with_client_cert_verifier(v.clone()),
            };
            let mut config = builder.with_cert_resolver(resolver.clone());
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            config.ticketer = ticketer.clone();
            config.session_storage = sessions.clone();
            config.ignore_client_order = true;
            Ok(Arc::new(config))
        };
        Ok(Self {
            aes_first: config(!aes_hardware())?,
            chacha_first: config(true)?,
            certs,
            files,
        })
    }

    /// The handshake of one connection. The config is chosen from the
    /// client's hello, as Go's crypto/tls and OpenSSL's
    /// `SSL_OP_PRIORITIZE_CHACHA` do: ChaCha20-Poly1305 when the client lists
    /// it first (it has no AES hardware) or this machine has no AES
    /// hardware; otherwise AES-128-GCM, whose SHA-256 key schedule costs less
    /// than AES-256-GCM's SHA-384 (SHA-NI accelerates SHA-256 only).
    pub(crate) async fn accept<IO>(
        &self,
        io: IO,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let chacha = start
            .client_hello()
            .cipher_suites()
            .first()
            .is_some_and(|s| suite_rank(*s, true) == 0);
        let config = if chacha {
            &self.chacha_first
        } else {
            &self.aes_first
        };
        start.into_stream(config.clone()).await
    }
}

/// Where `suite` goes in the server's order: ChaCha20-Poly1305 first when
/// `chacha`, else AES-128-GCM, AES-256-GCM, then ChaCha20-Poly1305.
fn suite_rank(suite: rustls::CipherSuite, chacha: bool) -> u8 {
    use rustls::CipherSuite as S;
    let bulk = match suite {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 2,
        S::TLS13_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 3,
        _ => 4,
    };
    match (chacha, bulk) {
        (true, 3) => 0,
        (false, 3) => 3,
        (_, b) => b,
    }
}

/// Whether this CPU encrypts AES-GCM in hardware (what ring uses when it can).
fn aes_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The certificates within [`EXPIRY_WARNING`] of their end at `now` (Unix seconds).
pub(crate) fn expiring(certs: &[CertInfo], now: i64) -> impl Iterator<Item = &CertInfo> {
    certs
        .iter()
        .filter(move |c| c.not_after - now < EXPIRY_WARNING.as_secs() as i64)
}

/// Logs a warning for each certificate within 30 days of its end: at every
/// load, and once a day from the certificate watcher.
pub(crate) fn warn_expiring(certs: &[CertInfo], now: i64) {
    for c in expiring(certs, now) {
        tracing::warn!(certificate = %c.cert_file.display(), name = %c.label(), days_left = (c.not_after - now) / 86_400, "TLS certificate expires within 30 days");
    }
}

/// The modification times of `files` (missing files as `None`): what the
/// watcher compares between two looks.
pub(crate) fn file_stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// The client config of a cleartext cluster: it trusts nothing, and is never
/// used for a handshake (the connector needs one).
pub(crate) fn cleartext_client_config() -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// The rustls client config of one `https://` cluster (the connector sets
/// its ALPN from the cluster's `protocol`).
pub(crate) fn upstream_client_config(
    cluster: &str,
    cfg: &UpstreamTlsConfig,
) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = if cfg.insecure_skip_verify {
        tracing::warn!(upstream = cluster, "upstreams.{cluster}.tls.insecure_skip_verify = true: the upstream's certificate is NOT checked; anyone on the path can read and change this traffic");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let roots = match &cfg.ca_file {
            Some(ca) => read_roots(ca)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots)
    };
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "client certificate")?;
            let key = read_key(key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The system's trusted roots, read once per process.
fn system_roots() -> Result<RootCertStore, String> {
    static ROOTS: std::sync::OnceLock<Result<Vec<CertificateDer<'static>>, String>> =
        std::sync::OnceLock::new();
    let certs = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err(format!(
                "no system root certificates found (install Debian `ca-certificates`, or set tls.ca_file): {:?}",
                found.errors
            ));
        }
        Ok(found.certs)
    });
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs.clone()?);
    if added == 0 {
        return Err("none of the system root certificates could be used".into());
    }
    Ok(roots)
}

/// `insecure_skip_verify`: signatures are still checked, the chain is not.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a TLS connection to an upstream failed, when it did: `tls_verify`
/// (the certificate was refused) or `tls_handshake` (anything else in TLS).
pub(crate) fn upstream_failure(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    find_tls_error(err, 0).map(|e| match e {
        rustls::Error::InvalidCertificate(_) => "tls_verify",
        _ => "tls_handshake",
    })
}

/// `err` and its causes, `: `-joined, with the rustls reason when there is
/// one (hyper's own text for a failed connect is only "client error (Connect)").
pub(crate) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    let mut depth = 0;
    while let Some(e) = next {
        if depth > 8 {
            break;
        }
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = e.source();
        depth += 1;
    }
    if let Some(tls) = find_tls_error(err, 0) {
        let part = tls.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

/// The rustls error in `err`'s chain; connectors wrap it in `io::Error`s,
/// whose `source` skips the wrapped error, so those are opened too.
fn find_tls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
    depth: usize,
) -> Option<&'a rustls::Error> {
    if depth > 16 {
        return None;
    }
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if let Some(tls) = find_tls_error(inner, depth + 1) {
            return Some(tls);
        }
    }
    err.source().and_then(|s| find_tls_error(s, depth + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str, sans: &[&str]) -> TlsCertificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_file = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        TlsCertificate {
            cert: cert_file,
            key: key_file,
            names: None,
            default: false,
        }
    }

    fn listener(certs: Vec<TlsCertificate>) -> TlsListenerConfig {
        toml::from_str::<TlsListenerConfig>("certificates = []").map_or_else(
            |e| panic!("{e}"),
            |mut c| {
                c.certificates = certs;
                c
            },
        )
    }

    fn leaf_of(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].as_ref().to_vec()
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default_and_names_come_from_the_san() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a", &["a.example.com"]);
        let w = pair(dir.path(), "w", &["*.example.com"]);
        let cfg = listener(vec![a.clone(), w.clone()]);
        let tls = ListenerTls::load(&cfg).unwrap();
        assert_eq!(tls.certs[0].names, ["a.example.com"]);
        assert_eq!(tls.certs[1].names, ["*.example.com"]);
        let provider = provider();
        let (a_key, _) = load_pair(&a, &provider).unwrap();
        let (w_key, _) = load_pair(&w, &provider).unwrap();
        let mut resolver = SniResolver {
            exact: HashMap::from([("a.example.com".into(), a_key.clone())]),
            wildcard: HashMap::from([("example.com".into(), w_key.clone())]),
            default: Some(a_key.clone()),
        };
        let pick = |r: &SniResolver, n: Option<&str>| r.pick(n).map(|k| leaf_of(&k));
        assert_eq!(
            pick(&resolver, Some("A.Example.com.")),
            Some(leaf_of(&a_key))
        );
        assert_eq!(
            pick(&resolver, Some("b.example.com")),
            Some(leaf_of(&w_key))
        );
        // One label only: `x.b.example.com` is not covered by `*.example.com`.
        assert_eq!(
            pick(&resolver, Some("x.b.example.com")),
            Some(leaf_of(&a_key))
        );
        assert_eq!(pick(&resolver, None), Some(leaf_of(&a_key)));
        resolver.default = None;
        assert_eq!(pick(&resolver, Some("other.org")), None);
    }

    #[test]
    fn a_mismatched_pair_a_missing_file_and_a_broken_key_name_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a", &["a.example.com"]);
        let b = pair(dir.path(), "b", &["b.example.com"]);
        let crossed = TlsCertificate {
            key: b.key.clone(),
            ..a.clone()
        };
        let err = ListenerTls::load(&listener(vec![crossed])).err().unwrap();
        assert!(err.contains("a.crt") && err.contains("b.key"), "{err}");
        assert!(err.contains("does not belong"), "{err}");
        std::fs::write(
            &b.key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = ListenerTls::load(&listener(vec![b])).err().unwrap();
        assert!(err.contains("b.key"), "{err}");
        let missing = TlsCertificate {
            cert: dir.path().join("none.crt"),
            ..a
        };
        let err = ListenerTls::load(&listener(vec![missing])).err().unwrap();
        assert!(err.contains("none.crt"), "{err}");
    }

    #[test]
    fn an_expired_certificate_is_refused_with_its_date() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["old.example.com".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("old.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("old.key"), key.serialize_pem()).unwrap();
        let cfg = listener(vec![TlsCertificate {
            cert: dir.path().join("old.crt"),
            key: dir.path().join("old.key"),
            names: None,
            default: false,
        }]);
        let err = ListenerTls::load(&cfg).err().unwrap();
        assert!(err.contains("old.crt") && err.contains("expired"), "{err}");
    }

    #[test]
    fn certificates_within_thirty_days_of_their_end_are_expiring() {
        let cert = |days: i64| CertInfo {
            names: vec![format!("in-{days}.test")],
            serial: String::new(),
            not_after: 1_000_000_000 + days * 86_400,
            cert_file: PathBuf::from("c.pem"),
        };
        let certs = [cert(31), cert(29), cert(-1)];
        let names: Vec<String> = expiring(&certs, 1_000_000_000)
            .map(CertInfo::label)
            .collect();
        assert_eq!(names, ["in-29.test", "in--1.test"]);
    }

    #[test]
    fn client_identity_reads_subject_sans_and_spiffe() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["svc.internal".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "billing");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/ns/prod/sa/billing"
                .try_into()
                .unwrap(),
        ));
        let cert = params.self_signed(&key).unwrap();
        let id = client_identity(cert.der()).unwrap();
        assert_eq!(id.subject, "CN=billing");
        assert_eq!(id.dns, ["svc.internal"]);
        assert_eq!(
            id.spiffe.as_deref(),
            Some("spiffe://example.org/ns/prod/sa/billing")
        );
    }

    #[test]
    fn the_server_orders_aes_128_first_or_chacha_first_for_both_versions() {
        let names = |chacha: bool| {
            let mut suites = provider().cipher_suites.clone();
            suites.sort_by_key(|s| suite_rank(s.suite(), chacha));
            suites
                .iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect::<Vec<_>>()
        };
        let aes = names(false);
        assert_eq!(aes[0], "TLS13_AES_128_GCM_SHA256", "{aes:?}");
        let pos = |list: &[String], s: &str| list.iter().position(|x| x == s).unwrap();
        assert!(
            pos(&aes, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
                < pos(&aes, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
        );
        assert!(
            pos(&aes, "TLS13_AES_256_GCM_SHA384") < pos(&aes, "TLS13_CHACHA20_POLY1305_SHA256")
        );
        let chacha = names(true);
        assert_eq!(chacha[0], "TLS13_CHACHA20_POLY1305_SHA256", "{chacha:?}");
        assert!(
            pos(&chacha, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256")
                < pos(&chacha, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
        );
        // Every suite of the provider is kept.
        assert_eq!(aes.len(), provider().cipher_suites.len());
    }
}
