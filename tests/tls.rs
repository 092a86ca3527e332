//! HTTPS in and out, against the real `edgegate` binary: the TLS listener
//! (SNI, ALPN, versions, reload, expiry metric, client certificates and the
//! auth policy, redirect), and `https://` upstreams (verification, names,
//! HTTP/2, client certificates, h2c). Every certificate is made here (rcgen).

#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{metric, Gateway, Upstream};

/// A test certificate authority.
struct Ca {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

/// A certificate the CA issued, written to `NAME.crt` / `NAME.key`.
#[derive(Clone)]
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { key, cert }
    }

    fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.pem"));
        std::fs::write(&p, self.cert.pem()).unwrap();
        p
    }

    /// A leaf for `sans` (DNS names or IPs) with common name `cn` and extra URI names.
    fn issue(&self, dir: &Path, name: &str, cn: &str, sans: &[&str], uris: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        for u in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*u).try_into().unwrap()));
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let issued = Issued {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_pem).unwrap();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let c: CertificateDer<'static> = c.unwrap();
        roots.add(c).unwrap();
    }
    roots
}

fn chain_and_key(issued: &Issued) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(&issued.cert).unwrap();
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&issued.key).unwrap();
    (chain, key)
}

/// How a test client connects.
#[derive(Clone)]
struct Client {
    ca: PathBuf,
    sni: Option<String>,
    alpn: Vec<Vec<u8>>,
    tls12_only: bool,
    cert: Option<Issued>,
    /// Accept any server certificate (to see which one an unknown name gets).
    accept_any: bool,
}

/// A verifier that accepts every certificate (signatures still checked).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Client {
    fn new(ca: &Path, sni: Option<&str>) -> Self {
        Self {
            ca: ca.to_path_buf(),
            sni: sni.map(str::to_string),
            alpn: vec![b"http/1.1".to_vec()],
            tls12_only: false,
            cert: None,
            accept_any: false,
        }
    }

    fn config(&self) -> rustls::ClientConfig {
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap();
        let b = if self.accept_any {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        } else {
            b.with_root_certificates(roots(&self.ca))
        };
        let mut c = match &self.cert {
            Some(issued) => {
                let (chain, key) = chain_and_key(issued);
                b.with_client_auth_cert(chain, key).unwrap()
            }
            None => b.with_no_client_auth(),
        };
        c.alpn_protocols = self.alpn.clone();
        c
    }

    /// An HTTP/1.1 connection to `addr`, kept open: its sender and the
    /// server's leaf certificate.
    async fn open(
        &self,
        addr: SocketAddr,
    ) -> (
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        Vec<u8>,
    ) {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.config()));
        let name = ServerName::try_from(self.sni.clone().unwrap()).unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0]
            .as_ref()
            .to_vec();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        (send, leaf)
    }

    /// Handshakes with `addr` and sends `GET path`: the status, the body,
    /// the server's leaf certificate and the ALPN protocol.
    async fn get(&self, addr: SocketAddr, path: &str) -> Result<Answer, String> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.config()));
        let name = match &self.sni {
            Some(n) => ServerName::try_from(n.clone()).unwrap(),
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, conn) = tls.get_ref();
        let leaf = conn.peer_certificates().unwrap()[0].as_ref().to_vec();
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let host = self.sni.clone().unwrap_or_else(|| addr.to_string());
        let req = http::Request::get(path)
            .header("host", &host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let io = TokioIo::new(tls);
        let resp = if alpn.as_deref() == Some(b"h2") {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut req = req;
            *req.uri_mut() = format!("https://{host}{path}").parse().unwrap();
            send.send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            send.send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?
        };
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            leaf,
            alpn,
        })
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    leaf: Vec<u8>,
    alpn: Option<Vec<u8>>,
}

fn config_with_tls(upstream: SocketAddr, tls: &str, extra: &str) -> String {
    format!(
        "{}{extra}\n[server.tls]\nlisten = \"127.0.0.1:0\"\n{tls}\n",
        support::base_config(upstream)
    )
}

fn cert_entry(i: &Issued, extra: &str) -> String {
    format!(
        "[[server.tls.certificates]]\ncert = {:?}\nkey = {:?}\n{extra}\n",
        i.cert.display().to_string(),
        i.key.display().to_string()
    )
}

fn route_all() -> String {
    "[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"backend\"\n".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_alpn_versions_redirect_and_the_expiry_metric() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("edgegate test CA");
    let ca_pem = ca.write_pem(dir.path(), "ca");
    let a = ca.issue(dir.path(), "a", "a.test", &["a.test", "localhost"], &[]);
    let wild = ca.issue(dir.path(), "wild", "wild", &["*.wild.test"], &[]);
    let fallback = ca.issue(
        dir.path(),
        "default",
        "default",
        &["default.test", "127.0.0.1"],
        &[],
    );
    let tls = format!(
        "{}{}{}",
        cert_entry(&a, ""),
        cert_entry(&wild, ""),
        cert_entry(&fallback, "default = true")
    );
    let config = config_with_tls(upstream.addr, &tls, &route_all()).replacen(
        "workers = 2\n",
        "workers = 2\nredirect_to_https = true\n",
        1,
    );
    let gw = Gateway::start(&config);
    let addr = gw.tls.expect("a TLS listener");

    // SNI picks the exact name, then the wildcard (one label), then the default.
    for (sni, want) in [
        (Some("a.test"), &a),
        (Some("x.wild.test"), &wild),
        (Some("unknown.test"), &fallback),
        (None, &fallback),
    ] {
        let mut client = Client::new(&ca_pem, sni);
        // The default certificate does not carry the unknown name: take it
        // unchecked, and compare it below.
        client.accept_any = sni == Some("unknown.test");
        let got = client.get(addr, "/hello").await.unwrap();
        assert_eq!(got.status, 200, "{sni:?}: {got:?}");
        assert_eq!(got.body, "upstream-ok");
        assert!(got.leaf == want.der, "{sni:?} got the wrong certificate");
    }
    // ALPN: h2 when offered, HTTP/1.1 otherwise, on the same port.
    let mut h2 = Client::new(&ca_pem, Some("a.test"));
    h2.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let got = h2.get(addr, "/h2").await.unwrap();
    assert_eq!(got.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(got.status, 200);
    let got = Client::new(&ca_pem, Some("a.test"))
        .get(addr, "/h1")
        .await
        .unwrap();
    assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));
    // curl, as a user runs it, over HTTP/2.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(&ca_pem)
        .args(["--resolve", &format!("a.test:{}:127.0.0.1", addr.port())])
        .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
        .arg(format!("https://a.test:{}/curl", addr.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200", "{out:?}");
    // TLS 1.2 is accepted by default; TLS 1.1 is refused by the server (rustls
    // answers a hello with no common version with a handshake_failure alert).
    let mut tls12 = Client::new(&ca_pem, Some("a.test"));
    tls12.tls12_only = true;
    assert_eq!(tls12.get(addr, "/12").await.unwrap().status, 200);
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-servername",
            "a.test",
        ])
        .args(["-connect", &addr.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = support::output_text(&out);
    assert!(!out.status.success(), "TLS 1.1 was accepted: {text}");
    assert!(
        text.contains("alert handshake failure") || text.contains("alert protocol version"),
        "TLS 1.1 was not refused for its version: {}",
        text.lines()
            .filter(|l| l.contains("error") || l.contains("alert"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The server picks the suite: AES-128-GCM (a SHA-256 key schedule)
    // over the AES-256-GCM an OpenSSL client lists first, and ChaCha20 for
    // a client that lists it first.
    // One request per connection, read to the server's close (the session
    // tickets come before the answer).
    let s_client = |suites: &str, session: &[&str]| {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args(["s_client", "-tls1_3", "-ign_eof", "-ciphersuites", suites])
            .args(["-servername", "a.test", "-CAfile"])
            .arg(&ca_pem)
            .args(["-connect", &addr.to_string()])
            .args(session)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"GET /s HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        drop(stdin);
        support::output_text(&child.wait_with_output().unwrap())
    };
    let all = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";
    let text = s_client(all, &[]);
    let picked = text
        .lines()
        .find_map(|l| {
            l.split_once("Cipher is ")
                .map(|(_, c)| c.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no cipher in: {text}"));
    assert!(
        picked == "TLS_AES_128_GCM_SHA256" || picked == "TLS_CHACHA20_POLY1305_SHA256",
        "{picked}"
    );
    let text = s_client(
        "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
        &[],
    );
    assert!(
        text.contains("Cipher is TLS_CHACHA20_POLY1305_SHA256"),
        "{text}"
    );
    // A session ticket from one connection resumes the next.
    let session = dir.path().join("session.pem");
    let session = session.to_str().unwrap();
    s_client(all, &["-sess_out", session]);
    let text = s_client(all, &["-sess_in", session]);
    assert!(text.contains("Reused, TLSv1.3"), "not resumed: {text}");

    // The cleartext listener redirects to the TLS one, path and query kept.
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(gw.url("/v1/x?y=1"))
        .header("host", format!("a.test:{}", gw.proxy.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://a.test:{}/v1/x?y=1", addr.port()).as_str()
    );

    // Each certificate's time left, by name.
    let metrics = gw.metrics().await;
    let left = metric(
        &metrics,
        "edgegate_tls_cert_expiry_seconds",
        &[("name", "a.test")],
    )
    .expect("expiry metric for a.test");
    // Issued to expire at 2030-01-01T00:00:00Z.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(left.abs_diff(1_893_456_000 - now) < 60, "{left}");

    // min_version = "1.3", by reload: a TLS 1.2 client is now refused.
    let raised = std::fs::read_to_string(gw.dir.path().join("gateway.toml"))
        .unwrap()
        .replace("[server.tls]\n", "[server.tls]\nmin_version = \"1.3\"\n");
    assert_eq!(gw.reload(&raised).await.status(), 200);
    let err = tls12.get(addr, "/12").await.unwrap_err();
    assert!(err.contains("handshake"), "{err}");
    assert_eq!(h2.get(addr, "/13").await.unwrap().status, 200);
}

/// Many requests, each on a new TLS connection, from two clients, while the
/// test does what `work` says: how many ran, how many failed, and why.
async fn under_load<F, Fut>(
    addr: SocketAddr,
    client: Client,
    work: F,
) -> (usize, usize, Vec<String>)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (stop, done, failures, client) =
            (stop.clone(), done.clone(), failures.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match client.get(addr, "/load").await {
                    Ok(a) if a.status == 200 => {}
                    Ok(a) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", a.status)),
                    Err(e) => failures.lock().unwrap().push(e),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    work().await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    (done.load(Ordering::SeqCst), failures.len(), failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_sighup_and_on_change_and_a_broken_key_keeps_the_old_one() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("edgegate test CA");
    let ca_pem = ca.write_pem(dir.path(), "ca");
    let first = ca.issue(dir.path(), "site", "a.test", &["a.test"], &[]);
    let tls = format!(
        "unknown_sni = \"refuse\"\nwatch_interval_ms = 0\n{}",
        cert_entry(&first, "")
    );
    let config = config_with_tls(upstream.addr, &tls, &route_all());
    let gw = Gateway::start(&config);
    let addr = gw.tls.unwrap();
    let client = Client::new(&ca_pem, Some("a.test"));
    assert!(client.get(addr, "/").await.unwrap().leaf == first.der);
    // A name no certificate carries is refused, as configured.
    let err = Client::new(&ca_pem, Some("other.test"))
        .get(addr, "/")
        .await
        .unwrap_err();
    assert!(err.contains("handshake"), "{err}");

    // Replace the files, SIGHUP: new handshakes get the new certificate, and
    // no request fails meanwhile.
    let pid = nix::unistd::Pid::from_raw(gw.child.id() as i32);
    let second_dir = tempfile::tempdir().unwrap();
    let second = ca.issue(second_dir.path(), "site", "a.test", &["a.test"], &[]);
    // A connection opened before the reload, kept open across it.
    let (mut kept, kept_leaf) = client.open(addr).await;
    assert!(kept_leaf == first.der);
    let (done, failed, why) = under_load(addr, client.clone(), || async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::copy(&second.cert, &first.cert).unwrap();
        std::fs::copy(&second.key, &first.key).unwrap();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        support::coordinator::wait_for("the new certificate", 10, || async {
            client
                .get(addr, "/")
                .await
                .is_ok_and(|a| a.leaf == second.der)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    assert_eq!(failed, 0, "{done} requests, failures: {why:?}");
    assert!(done > 10, "only {done} requests ran");
    // The connection opened before goes on, on the certificate it started with.
    let req = http::Request::get("/kept")
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(kept.send_request(req).await.unwrap().status(), 200);

    // A broken key file: the reload is refused naming the file, and the
    // certificate serving keeps serving.
    std::fs::write(
        &first.key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    support::coordinator::wait_for("the refusal", 10, || async {
        gw.logs().contains("reload refused") && gw.logs().contains("site.key")
    })
    .await;
    assert!(client.get(addr, "/").await.unwrap().leaf == second.der);

    // With a watch interval, changed files reload without a signal.
    let watched = std::fs::read_to_string(gw.dir.path().join("gateway.toml"))
        .unwrap()
        .replace("watch_interval_ms = 0", "watch_interval_ms = 200");
    std::fs::copy(&second.key, &first.key).unwrap();
    assert_eq!(gw.reload(&watched).await.status(), 200);
    drop(gw);
    let gw = Gateway::start(&watched);
    let addr = gw.tls.unwrap();
    assert!(client.get(addr, "/").await.unwrap().leaf == second.der);
    let third_dir = tempfile::tempdir().unwrap();
    let third = ca.issue(third_dir.path(), "site", "a.test", &["a.test"], &[]);
    std::fs::copy(&third.cert, &first.cert).unwrap();
    std::fs::copy(&third.key, &first.key).unwrap();
    support::coordinator::wait_for("the watched files to reload", 10, || async {
        client
            .get(addr, "/")
            .await
            .is_ok_and(|a| a.leaf == third.der)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_required_or_optional_reach_the_auth_policy() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("edgegate server CA");
    let ca_pem = ca.write_pem(dir.path(), "ca");
    let server = ca.issue(dir.path(), "server", "a.test", &["a.test"], &[]);
    let clients = Ca::new("edgegate client CA");
    let clients_pem = clients.write_pem(dir.path(), "clients");
    let billing = clients.issue(
        dir.path(),
        "billing",
        "billing",
        &[],
        &["spiffe://example.org/billing"],
    );
    let mallory = clients.issue(
        dir.path(),
        "mallory",
        "mallory",
        &[],
        &["spiffe://example.org/mallory"],
    );
    let stranger = Ca::new("someone else").issue(
        dir.path(),
        "stranger",
        "billing",
        &[],
        &["spiffe://example.org/billing"],
    );
    let policy = support::policy(
        "auth",
        "auth",
        "kind = \"auth\"\n[policies.auth.config]\nclient_certs = [{ spiffe = \"spiffe://example.org/billing\", roles = [\"chat\"] }]\n",
    );
    let tls = |mode: &str| {
        format!(
            "{}[server.tls.client_auth]\nca_file = {:?}\nmode = \"{mode}\"\n",
            cert_entry(&server, ""),
            clients_pem.display().to_string()
        )
    };
    let extra = format!("{policy}{}", support::route("all", "/", &["auth"]));
    let gw = Gateway::start(&config_with_tls(upstream.addr, &tls("required"), &extra));
    let addr = gw.tls.unwrap();
    let with = |cert: Option<&Issued>| {
        let mut c = Client::new(&ca_pem, Some("a.test"));
        c.cert = cert.cloned();
        c
    };
    // Required: no certificate, or one from another CA, is no connection.
    assert!(with(None).get(addr, "/").await.is_err());
    assert!(with(Some(&stranger)).get(addr, "/").await.is_err());
    // A listed identity passes; the upstream sees its principal.
    let ok = with(Some(&billing)).get(addr, "/who").await.unwrap();
    assert_eq!(ok.status, 200, "{ok:?}");
    let seen = upstream.seen();
    assert_eq!(
        seen.last().unwrap().header("x-edgegate-principal"),
        Some("spiffe://example.org/billing")
    );
    // A valid certificate the policy does not list: 401.
    assert_eq!(
        with(Some(&mallory)).get(addr, "/").await.unwrap().status,
        401
    );

    // Optional: no certificate means no identity (the auth policy says 401),
    // a listed one still passes.
    let optional = config_with_tls(upstream.addr, &tls("optional"), &extra);
    assert_eq!(gw.reload(&optional).await.status(), 200);
    assert_eq!(with(None).get(addr, "/").await.unwrap().status, 401);
    assert_eq!(
        with(Some(&billing)).get(addr, "/").await.unwrap().status,
        200
    );
}

/// What a test upstream saw.
#[derive(Default)]
struct UpstreamLog {
    /// Connections accepted.
    connections: AtomicUsize,
    /// Connections whose first byte was not a TLS handshake record.
    cleartext: AtomicUsize,
    /// HTTP versions of the requests served.
    versions: Mutex<Vec<http::Version>>,
    /// Requests that came with a client certificate.
    with_client_cert: AtomicUsize,
    /// `Host` headers.
    hosts: Mutex<Vec<String>>,
    /// Requests whose `Host` header differs from their `:authority` (HTTP/2
    /// servers such as nginx refuse them with 400).
    host_mismatch: AtomicUsize,
}

/// An upstream on 127.0.0.1, over TLS with `tls` (else cleartext, h2c
/// included), answering `tls-upstream`; each answer waits 50 ms so that
/// concurrent requests overlap.
fn start_upstream(tls: Option<rustls::ServerConfig>) -> (SocketAddr, Arc<UpstreamLog>) {
    let log = Arc::new(UpstreamLog::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let seen = log.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, log) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    log.connections.fetch_add(1, Ordering::SeqCst);
                    let mut first = [0u8; 1];
                    if stream.peek(&mut first).await.unwrap_or(0) == 1 && first[0] != 0x16 {
                        log.cleartext.fetch_add(1, Ordering::SeqCst);
                    }
                    let service = |client_cert: bool| {
                        let log = log.clone();
                        service_fn(move |req: http::Request<Incoming>| {
                            let log = log.clone();
                            async move {
                                log.versions.lock().unwrap().push(req.version());
                                if let (Some(h), Some(a)) =
                                    (req.headers().get("host"), req.uri().authority())
                                {
                                    if h.as_bytes() != a.as_str().as_bytes() {
                                        log.host_mismatch.fetch_add(1, Ordering::SeqCst);
                                    }
                                }
                                let host = req
                                    .headers()
                                    .get("host")
                                    .map(|h| h.to_str().unwrap_or("").to_string())
                                    .or_else(|| req.uri().authority().map(|a| a.to_string()))
                                    .unwrap_or_default();
                                log.hosts.lock().unwrap().push(host);
                                if client_cert {
                                    log.with_client_cert.fetch_add(1, Ordering::SeqCst);
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                    Bytes::from_static(b"tls-upstream"),
                                )))
                            }
                        })
                    };
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(a) => {
                            let Ok(tls) = a.accept(stream).await else {
                                return;
                            };
                            let has_cert = tls.get_ref().1.peer_certificates().is_some();
                            let _ = builder
                                .serve_connection(TokioIo::new(tls), service(has_cert))
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service(false))
                                .await;
                        }
                    }
                });
            }
        });
    });
    (rx.recv().unwrap(), log)
}

fn server_config(issued: &Issued, client_ca: Option<&Path>) -> rustls::ServerConfig {
    let (chain, key) = chain_and_key(issued);
    let b = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match client_ca {
        Some(ca) => b.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => b.with_no_client_auth(),
    };
    let mut c = b.with_single_cert(chain, key).unwrap();
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_verify_use_names_speak_http2_and_present_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("upstream CA");
    let ca_pem = ca.write_pem(dir.path(), "ca");
    let other_pem = Ca::new("not the upstream's CA").write_pem(dir.path(), "other");
    let leaf = ca.issue(
        dir.path(),
        "upstream",
        "upstream",
        &["localhost", "127.0.0.1"],
        &[],
    );
    let (tls_addr, tls_log) = start_upstream(Some(server_config(&leaf, None)));
    // An upstream that wants a client certificate from edgegate.
    let clients = Ca::new("upstream client CA");
    let clients_pem = clients.write_pem(dir.path(), "clients");
    let edge_cert = clients.issue(dir.path(), "edge", "edge", &["edge.test"], &[]);
    let (mtls_addr, mtls_log) = start_upstream(Some(server_config(&leaf, Some(&clients_pem))));
    let (h2c_addr, h2c_log) = start_upstream(None);
    let p = |path: &Path| format!("{:?}", path.display().to_string());
    let config = format!(
        r#"version = 1
[trust]
allow_unsigned = true
[server]
listen = "127.0.0.1:0"
workers = 1
[admin]
listen = "127.0.0.1:0"
[upstreams.good]
endpoints = ["https://127.0.0.1:{port}"]
tls = {{ ca_file = {ca} }}
[upstreams.by_name]
endpoints = ["https://localhost:{port}"]
protocol = "http1"
host_rewrite = "api.provider.test"
tls = {{ ca_file = {ca} }}
[upstreams.wrong_ca]
endpoints = ["https://127.0.0.1:{port}"]
tls = {{ ca_file = {other} }}
[upstreams.system_roots]
endpoints = ["https://127.0.0.1:{port}"]
[upstreams.mtls]
endpoints = ["https://localhost:{mtls}"]
tls = {{ ca_file = {ca}, client_cert = {edge_cert}, client_key = {edge_key} }}
[upstreams.mtls_without_cert]
endpoints = ["https://localhost:{mtls}"]
tls = {{ ca_file = {ca} }}
[upstreams.h2c]
endpoints = ["{h2c}"]
protocol = "http2"
"#,
        port = tls_addr.port(),
        mtls = mtls_addr.port(),
        h2c = h2c_addr,
        ca = p(&ca_pem),
        other = p(&other_pem),
        edge_cert = p(&edge_cert.cert),
        edge_key = p(&edge_cert.key),
    ) + &[
        "good",
        "by_name",
        "wrong_ca",
        "system_roots",
        "mtls",
        "mtls_without_cert",
        "h2c",
    ]
    .iter()
    .map(|u| format!("[[routes]]\nname = \"{u}\"\npath_prefix = \"/{u}\"\nupstream = \"{u}\"\n"))
    .collect::<String>();
    let gw = Gateway::start(&config);
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let url = gw.url(path);
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };

    // Verified against the cluster's CA, ALPN picks h2, and concurrent
    // requests share one multiplexed connection (one worker, one pool).
    let (status, body) = get("/good").await;
    assert_eq!((status, body.as_str()), (200, "tls-upstream"));
    let before = tls_log.connections.load(Ordering::SeqCst);
    let all = futures_util::future::join_all(
        (0..20).map(|i| get(if i % 2 == 0 { "/good/a" } else { "/good/b" })),
    )
    .await;
    assert!(all.iter().all(|(s, _)| *s == 200), "{all:?}");
    assert_eq!(
        tls_log.connections.load(Ordering::SeqCst),
        before,
        "the h2 connection was not reused"
    );
    assert!(tls_log
        .versions
        .lock()
        .unwrap()
        .iter()
        .all(|v| *v == http::Version::HTTP_2));

    // A name is resolved and its certificate checked against it; HTTP/1.1
    // when asked; Host carries the rewrite.
    let (status, _) = get("/by_name").await;
    assert_eq!(status, 200);
    assert_eq!(
        tls_log.versions.lock().unwrap().last(),
        Some(&http::Version::HTTP_11)
    );
    assert_eq!(
        tls_log.hosts.lock().unwrap().last().map(String::as_str),
        Some("api.provider.test")
    );

    // The wrong CA (and the system roots, which do not hold the test CA):
    // 502 tls_verify, counted, and never a cleartext retry.
    for route in ["/wrong_ca", "/system_roots"] {
        let (status, body) = get(route).await;
        assert_eq!(status, 502, "{route}: {body}");
        assert!(body.contains("\"tls_verify\""), "{route}: {body}");
    }
    let metrics = gw.metrics().await;
    assert!(
        metric(
            &metrics,
            "edgegate_upstream_requests_total",
            &[("upstream", "wrong_ca"), ("outcome", "tls_verify")]
        )
        .unwrap_or(0)
            >= 1,
        "{metrics}"
    );
    assert_eq!(
        tls_log.cleartext.load(Ordering::SeqCst),
        0,
        "a request went to the TLS upstream in cleartext"
    );
    // The name is an endpoint per address it resolved to, named for both.
    let resolved = format!("https://localhost:{0}@127.0.0.1:{0}", tls_addr.port());
    assert_eq!(
        metric(
            &metrics,
            "edgegate_upstream_requests_total",
            &[
                ("upstream", "by_name"),
                ("endpoint", resolved.as_str()),
                ("outcome", "ok")
            ]
        ),
        Some(1),
        "{metrics}"
    );

    // mTLS to an upstream: presented when configured; without it, a 502.
    let (status, body) = get("/mtls").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mtls_log.with_client_cert.load(Ordering::SeqCst), 1);
    let (status, _) = get("/mtls_without_cert").await;
    assert_eq!(status, 502);
    assert_eq!(mtls_log.with_client_cert.load(Ordering::SeqCst), 1);

    // h2c with prior knowledge to a cleartext upstream.
    let (status, _) = get("/h2c").await;
    assert_eq!(status, 200);
    assert_eq!(
        h2c_log.versions.lock().unwrap().as_slice(),
        [http::Version::HTTP_2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_talks_to_the_https_listener() {
    let python = support::sdk_python();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("edgegate test CA");
    let ca_pem = ca.write_pem(dir.path(), "ca");
    let leaf = ca.issue(dir.path(), "local", "localhost", &["localhost"], &[]);
    let gw = Gateway::start(&config_with_tls(
        upstream.addr,
        &cert_entry(&leaf, ""),
        &route_all(),
    ));
    let base = format!("https://localhost:{}/v1", gw.tls.unwrap().port());
    let script = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-test",
                       http_client=openai.DefaultHttpxClient(verify=sys.argv[2]))
r = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "over tls"}])
print(r.choices[0].message.content)
"#;
    let out = tokio::process::Command::new(&python)
        .args(["-c", script, &base])
        .arg(&ca_pem)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "echo: over tls"
    );
}

/// The edge's view of its coordinator sync (`GET /v1/health` on the admin listener).
async fn coordinator_sync(gw: &Gateway) -> serde_json::Value {
    gw.health().await["coordinator"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_report_to_a_coordinator_over_tls_and_refuse_one_they_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("coordinator CA");
    let ca_pem = ca.write_pem(dir.path(), "ca");
    let other_pem = Ca::new("another CA").write_pem(dir.path(), "other");
    let leaf = ca.issue(
        dir.path(),
        "coordinator",
        "coordinator",
        &["localhost"],
        &[],
    );
    let coordinator = support::coordinator::CoordinatorProcess::start_with(
        dir.path(),
        "coordinator.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n[tls]\ncert = {:?}\nkey = {:?}\n[store]\nbackend = \"embedded\"\npath = \"state.json\"\n",
            leaf.cert.display().to_string(),
            leaf.key.display().to_string()
        ),
    );
    let upstream = Upstream::start();
    let edge = |id: &str, ca: &Path| {
        format!(
            "{}[node]\nid = \"{id}\"\nsite = \"tls-site\"\ncoordinator = \"https://localhost:{}\"\ncoordinator_ca_file = {:?}\nreport_interval_ms = 200\n",
            support::base_config(upstream.addr),
            coordinator.addr.port(),
            ca.display().to_string()
        )
    };
    let trusted = Gateway::start(&edge("edge-tls", &ca_pem));
    let untrusting = Gateway::start(&edge("edge-wrong-ca", &other_pem));
    support::coordinator::wait_for("the edge to sync over TLS", 15, || async {
        coordinator_sync(&trusted).await["connected"] == true
    })
    .await;
    // The coordinator's graph, read over TLS, holds the edge that verified it
    // and not the one that could not.
    let graph = Client::new(&ca_pem, Some("localhost"))
        .get(coordinator.addr, "/v1/graph")
        .await
        .unwrap();
    assert_eq!(graph.status, 200);
    assert!(graph.body.contains("edge-tls"), "{}", graph.body);
    support::coordinator::wait_for(
        "the other edge to give up on the certificate",
        15,
        || async {
            let sync = coordinator_sync(&untrusting).await;
            sync["failures_in_a_row"].as_u64().unwrap_or(0) >= 1
        },
    )
    .await;
    let sync = coordinator_sync(&untrusting).await;
    assert_eq!(sync["connected"], false);
    assert!(
        sync["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("certificate"),
        "{sync}"
    );
    assert!(!graph.body.contains("edge-wrong-ca"));
}

/// etcd with TLS on its client port, client certificates required.
struct TlsEtcd {
    child: std::process::Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsEtcd {
    fn start(ca: &Path, server: &Issued) -> Self {
        let data = tempfile::tempdir().unwrap();
        let (client, peer) = (
            support::coordinator::free_port(),
            support::coordinator::free_port(),
        );
        let url = format!("https://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = std::process::Command::new("etcd")
            .arg("--name=tls")
            .arg(format!("--data-dir={}", data.path().display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=tls={peer_url}"))
            .arg(format!("--cert-file={}", server.cert.display()))
            .arg(format!("--key-file={}", server.key.display()))
            .arg(format!("--trusted-ca-file={}", ca.display()))
            .arg("--client-cert-auth")
            .arg("--log-level=error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("running etcd (Debian package `etcd-server`; scripts/test.sh installs it)");
        Self {
            child,
            url,
            _data: data,
        }
    }

    /// A client with `cert` (and the root user's password when auth is on).
    async fn client(
        &self,
        ca: &Path,
        cert: &Issued,
        root: Option<&str>,
    ) -> Result<etcd_client::Client, etcd_client::Error> {
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(
                std::fs::read(ca).unwrap(),
            ))
            .identity(etcd_client::Identity::from_pem(
                std::fs::read(&cert.cert).unwrap(),
                std::fs::read(&cert.key).unwrap(),
            ));
        let mut options = etcd_client::ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(2));
        if let Some(pw) = root {
            options = options.with_user("root", pw);
        }
        etcd_client::Client::connect([self.url.as_str()], Some(options)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_store_uses_tls_client_certificates_and_password_auth() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("etcd CA");
    let ca_pem = ca.write_pem(dir.path(), "ca");
    let server = ca.issue(dir.path(), "etcd", "etcd", &["127.0.0.1", "localhost"], &[]);
    let client_cert = ca.issue(
        dir.path(),
        "coordinator",
        "coordinator",
        &["coordinator.test"],
        &[],
    );
    let etcd = TlsEtcd::start(&ca_pem, &server);
    // Wait for it, then turn on password auth with a root and an edgegate user.
    let deadline = Instant::now() + Duration::from_secs(30);
    let admin = loop {
        if let Ok(mut c) = etcd.client(&ca_pem, &client_cert, None).await {
            if c.status().await.is_ok() {
                break c;
            }
        }
        assert!(Instant::now() < deadline, "etcd over TLS did not answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut auth = admin.auth_client();
    auth.user_add("root", "root-password-0", None)
        .await
        .unwrap();
    auth.user_grant_role("root", "root").await.unwrap();
    auth.role_add("edgegate").await.unwrap();
    auth.role_grant_permission(
        "edgegate",
        etcd_client::Permission::read_write("/edgegate").with_prefix(),
    )
    .await
    .unwrap();
    auth.user_add("edgegate", "edgegate-password-0", None)
        .await
        .unwrap();
    auth.user_grant_role("edgegate", "edgegate").await.unwrap();
    auth.auth_enable().await.unwrap();
    std::fs::write(dir.path().join("password"), "edgegate-password-0\n").unwrap();
    std::fs::write(dir.path().join("wrong"), "not-the-password\n").unwrap();

    let config = |password: &str, with_cert: bool| {
        let cert = if with_cert {
            format!(
                "client_cert = {:?}\nclient_key = {:?}\n",
                client_cert.cert.display().to_string(),
                client_cert.key.display().to_string()
            )
        } else {
            String::new()
        };
        format!(
            "listen = \"127.0.0.1:0\"\nedge_ttl_ms = 1500\n[store]\nbackend = \"etcd\"\nendpoints = [\"{}\"]\nuser = \"edgegate\"\npassword_file = \"{password}\"\ntimeout_ms = 3000\n[store.tls]\nca_file = {:?}\n{cert}",
            etcd.url,
            ca_pem.display().to_string()
        )
    };
    // A wrong password or no client certificate: the coordinator does not start, and says why.
    let err = support::coordinator::CoordinatorProcess::try_start(
        dir.path(),
        "wrong.toml",
        &config("wrong", true),
    )
    .err()
    .expect("started with a wrong password");
    assert!(err.contains("key `store`"), "{err}");
    let err = support::coordinator::CoordinatorProcess::try_start(
        dir.path(),
        "nocert.toml",
        &config("password", false),
    )
    .err()
    .expect("started without a client certificate");
    assert!(err.contains("key `store`"), "{err}");

    // With both, reports land in etcd under the edgegate user's prefix.
    let coordinator = support::coordinator::CoordinatorProcess::start_with(
        dir.path(),
        "coordinator.toml",
        &config("password", true),
    );
    let upstream = Upstream::start();
    let edge = format!(
        "{}[node]\nid = \"edge-etcd-tls\"\nsite = \"s\"\ncoordinator = \"http://{}\"\nreport_interval_ms = 200\n",
        support::base_config(upstream.addr),
        coordinator.addr
    );
    let _gw = Gateway::start(&edge);
    let mut root = etcd
        .client(&ca_pem, &client_cert, Some("root-password-0"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = root
            .get("/edgegate/edges/edge-etcd-tls", None)
            .await
            .is_ok_and(|r| !r.kvs().is_empty());
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no report in etcd:\n{}",
            coordinator.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
