//! A hostile HTTP corpus against the real `edgegate` binary: raw HTTP/1.1
//! bytes on loopback sockets and HTTP/2 requests with chosen pseudo-headers,
//! each with the answer it must get. Behind the gateway a recording upstream
//! proves the invariant that matters: a request for the guarded route
//! (`/admin`, or the host `admin.test`) never reaches it without the guard
//! policy's consent, however it is spelled or framed.
//!
//! Families: path normalisation, Host rules, request-target forms, methods
//! (CONNECT, TRACE, OPTIONS), smuggling shapes (CL+TE, duplicate CL, TE
//! variants, bad chunk sizes, obs-fold, bare CR/LF, NUL), limits, pipelining,
//! and HTTP/2. The counts are printed at the end.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{base_config, policy, Gateway, Upstream};

/// What a case must get.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// These statuses, in order, on the connection.
    Statuses(Vec<u16>),
    /// No answer at all: the gateway closes (or keeps silent).
    NoAnswer,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
    /// The path the upstream must see for this case (only for forwarded cases).
    upstream_path: Option<String>,
    /// A streamed body that breaks mid-way: the upstream may have seen the
    /// head, but never a whole request (its connection is cut).
    may_abort: bool,
}

fn case(name: impl Into<String>, bytes: impl Into<Vec<u8>>, expect: &[u16]) -> Case {
    Case {
        name: name.into(),
        bytes: bytes.into(),
        expect: if expect.is_empty() {
            Expect::NoAnswer
        } else {
            Expect::Statuses(expect.to_vec())
        },
        upstream_path: None,
        may_abort: false,
    }
}

fn get(target: &str, host: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

/// Every spelling of `/admin` we know, each refused by the guard (401) or,
/// where no normal form is safe, by the gateway (400).
fn path_cases() -> Vec<Case> {
    let mut out = Vec::new();
    // Dot segments, raw and escaped, in every case of the hex digits.
    for dot in [".", "%2e", "%2E"] {
        for dot2 in [".", "%2e", "%2E"] {
            let dd = format!("{dot}{dot2}");
            for template in [
                "/public/{dd}/admin",
                "/x/{dd}/admin",
                "/{dd}/admin",
                "/a/b/{dd}/{dd}/admin",
            ] {
                let t = template.replace("{dd}", &dd);
                out.push(case(format!("dot-dot {t}"), get(&t, "pub.test"), &[401]));
            }
        }
        let t = format!("/{dot}/admin");
        out.push(case(format!("dot {t}"), get(&t, "pub.test"), &[401]));
        let t = format!("/admin/{dot}/x");
        out.push(case(format!("dot inside {t}"), get(&t, "pub.test"), &[401]));
    }
    // Each letter of `admin` escaped, lower- and upper-case hex.
    let word = "admin";
    for i in 0..word.len() {
        for upper in [false, true] {
            let b = word.as_bytes()[i];
            let esc = if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            };
            let spelled = format!("{}{esc}{}", &word[..i], &word[i + 1..]);
            for t in [
                format!("/{spelled}"),
                format!("/{spelled}/x"),
                format!("/public/../{spelled}"),
            ] {
                out.push(case(format!("escaped {t}"), get(&t, "pub.test"), &[401]));
            }
        }
    }
    // Slashes.
    for t in [
        "//admin",
        "///admin",
        "/public//..//admin",
        "//admin//x",
        "/./admin",
        "/admin/.",
    ] {
        out.push(case(format!("slashes {t}"), get(t, "pub.test"), &[401]));
    }
    // No safe normal form: 400, nothing forwarded.
    for t in [
        "/public/..%2fadmin",
        "/public/..%2Fadmin",
        "/public%2f..%2fadmin",
        "/public/..%5cadmin",
        "/public/..%5Cadmin",
        "/admin%2fx",
        "/a%zz",
        "/a%4",
        "/a%",
        "/%00admin",
        "/admin%0d%0aX:%20y",
        "/a%7f",
        "/public\\..\\admin",
    ] {
        out.push(case(
            format!("refused path {t}"),
            get(t, "pub.test"),
            &[400],
        ));
    }
    // Normal paths still go through, normalised.
    for (t, seen) in [
        ("/public/x", "/public/x"),
        ("/public/./x", "/public/x"),
        ("/public/y/../x", "/public/x"),
        ("/public/%7Euser", "/public/~user"),
        ("/public/a%20b", "/public/a%20b"),
        ("/public//x?q=/../admin", "/public/x?q=/../admin"),
        ("/%70ublic", "/public"),
    ] {
        let mut c = case(format!("forwarded {t}"), get(t, "pub.test"), &[200]);
        c.upstream_path = Some(seen.to_string());
        out.push(c);
    }
    out
}

fn host_cases() -> Vec<Case> {
    let mut out = Vec::new();
    for h in [
        "admin.test",
        "ADMIN.TEST",
        "Admin.Test",
        "admin.test.",
        "admin.test:80",
        "admin.test.:8080",
        "ADMIN.test.:1",
    ] {
        out.push(case(format!("host {h}"), get("/public/x", h), &[401]));
    }
    for h in [
        "admin.test, pub.test",
        "pub.test, admin.test",
        "admin test",
        "user@admin.test",
        "admin.test:",
        "admin.test:99999",
        "admin.test:8o",
        "[::1",
        "admin..test",
        "admin.test/x",
        "admin.test%00",
        "",
    ] {
        out.push(case(format!("bad host {h:?}"), get("/public/x", h), &[400]));
    }
    out.push(case(
        "no Host on HTTP/1.1",
        "GET /public/x HTTP/1.1\r\n\r\n",
        &[400],
    ));
    out.push(case(
        "two Host fields",
        "GET /public/x HTTP/1.1\r\nHost: pub.test\r\nHost: admin.test\r\n\r\n",
        &[400],
    ));
    out.push(case(
        "two Host fields, same value",
        "GET /public/x HTTP/1.1\r\nHost: pub.test\r\nHost: pub.test\r\n\r\n",
        &[400],
    ));
    let mut c = case(
        "HTTP/1.0 without Host takes the host-less routes",
        "GET /public/x HTTP/1.0\r\n\r\n",
        &[200],
    );
    c.upstream_path = Some("/public/x".into());
    out.push(c);
    // Absolute-form: the target's authority is the host; Host is replaced.
    let mut c = case(
        "absolute-form pub.test with Host admin.test",
        "GET http://pub.test/public/x HTTP/1.1\r\nHost: admin.test\r\n\r\n",
        &[200],
    );
    c.upstream_path = Some("/public/x".into());
    out.push(c);
    out.push(case(
        "absolute-form admin.test with Host pub.test",
        "GET http://admin.test/public/x HTTP/1.1\r\nHost: pub.test\r\n\r\n",
        &[401],
    ));
    out.push(case(
        "absolute-form with dot segments",
        "GET http://pub.test/public/../admin HTTP/1.1\r\nHost: pub.test\r\n\r\n",
        &[401],
    ));
    out.push(case(
        "absolute-form with user info",
        "GET http://u@pub.test/public/x HTTP/1.1\r\nHost: pub.test\r\n\r\n",
        &[400],
    ));
    out
}

fn method_cases() -> Vec<Case> {
    let mut out = vec![
        case(
            "CONNECT authority-form",
            "CONNECT admin.test:443 HTTP/1.1\r\nHost: admin.test:443\r\n\r\n",
            &[405],
        ),
        case(
            "CONNECT to pub",
            "CONNECT pub.test:80 HTTP/1.1\r\nHost: pub.test:80\r\n\r\n",
            &[405],
        ),
        case(
            "TRACE",
            "TRACE /public/x HTTP/1.1\r\nHost: pub.test\r\n\r\n",
            &[405],
        ),
        case(
            "OPTIONS asterisk",
            "OPTIONS * HTTP/1.1\r\nHost: pub.test\r\n\r\n",
            &[204],
        ),
    ];
    let mut c = case(
        "OPTIONS path",
        "OPTIONS /public/x HTTP/1.1\r\nHost: pub.test\r\n\r\n",
        &[200],
    );
    c.upstream_path = Some("/public/x".into());
    out.push(c);
    for m in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"] {
        out.push(case(
            format!("{m} to the guarded route"),
            format!("{m} /admin HTTP/1.1\r\nHost: pub.test\r\nContent-Length: 0\r\n\r\n"),
            &[401],
        ));
    }
    out
}

/// Framing attacks. The smuggled request behind each is for `/admin`: if the
/// gateway ever split the stream the way a different parser would, the
/// upstream would see it (the invariant catches that).
fn smuggling_cases() -> Vec<Case> {
    let smuggled = "GET /admin HTTP/1.1\r\nHost: pub.test\r\n\r\n";
    let mut out = Vec::new();
    let post = |headers: &str, body: &str| {
        format!("POST /public/x HTTP/1.1\r\nHost: pub.test\r\n{headers}\r\n{body}")
    };
    // CL with TE: read by Transfer-Encoding alone, then the connection is
    // closed (RFC 9112 §6.1), so what follows the chunked body is never read
    // as a request; the upstream gets one re-framed request.
    for (name, headers) in [
        (
            "CL and TE together",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE and CL together",
            "Transfer-Encoding: chunked\r\nContent-Length: 50\r\n",
        ),
    ] {
        let mut c = case(name, post(headers, &format!("0\r\n\r\n{smuggled}")), &[200]);
        c.upstream_path = Some("/public/x".into());
        out.push(c);
    }
    out.push(case(
        "duplicate CL, different",
        post("Content-Length: 3\r\nContent-Length: 40\r\n", "abc"),
        &[400],
    ));
    out.push(case(
        "CL list",
        post("Content-Length: 3, 40\r\n", "abc"),
        &[400],
    ));
    out.push(case(
        "CL negative",
        post("Content-Length: -1\r\n", ""),
        &[400],
    ));
    out.push(case(
        "CL plus sign",
        post("Content-Length: +3\r\n", "abc"),
        &[400],
    ));
    out.push(case(
        "CL hex",
        post("Content-Length: 0x3\r\n", "abc"),
        &[400],
    ));
    out.push(case(
        "CL overflow",
        post("Content-Length: 99999999999999999999999\r\n", ""),
        &[400],
    ));
    for te in [
        "chunked, identity",
        "identity, chunked, identity",
        "xchunked",
        "chunked2",
        "gzip",
        "identity",
    ] {
        out.push(case(
            format!("TE {te:?}"),
            post(
                &format!("Transfer-Encoding: {te}\r\n"),
                &format!("0\r\n\r\n{smuggled}"),
            ),
            &[400],
        ));
    }
    out.push(case(
        "TE with a space before the colon",
        post(
            "Transfer-Encoding : chunked\r\n",
            &format!("0\r\n\r\n{smuggled}"),
        ),
        &[400],
    ));
    out.push(case(
        "TE obs-folded",
        post(
            "Transfer-Encoding:\r\n chunked\r\n",
            &format!("0\r\n\r\n{smuggled}"),
        ),
        &[400],
    ));
    out.push(case(
        "obs-fold in another header",
        post("X-A: 1\r\n folded\r\nContent-Length: 0\r\n", ""),
        &[400],
    ));
    for (name, body) in [
        ("chunk size not hex", "zz\r\nabc\r\n0\r\n\r\n"),
        (
            "chunk size overflow",
            "ffffffffffffffffffff\r\na\r\n0\r\n\r\n",
        ),
        ("chunk size negative", "-1\r\na\r\n0\r\n\r\n"),
        ("chunk size with space", "1 1\r\na\r\n0\r\n\r\n"),
        ("chunk data longer than size", "1\r\nabc\r\n0\r\n\r\n"),
        ("chunk without CRLF after data", "3\r\nabcX0\r\n\r\n"),
        ("chunk size with bare LF data", "3\nabc\n0\n\n"),
    ] {
        let mut c = case(
            format!("chunked: {name}"),
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("{body}{smuggled}"),
            ),
            &[400],
        );
        c.may_abort = true;
        out.push(c);
    }
    let mut ok = case(
        "chunked with an extension, then a pipelined guarded request",
        post(
            "Transfer-Encoding: chunked\r\n",
            &format!("3;ext=1\r\nabc\r\n0\r\n\r\n{smuggled}"),
        ),
        &[200, 401],
    );
    ok.upstream_path = Some("/public/x".into());
    out.push(ok);
    for (name, raw) in [
        (
            "NUL in a header value",
            "GET /public/x HTTP/1.1\r\nHost: pub.test\r\nX-A: a\0b\r\n\r\n",
        ),
        (
            "bare CR in a header value",
            "GET /public/x HTTP/1.1\r\nHost: pub.test\r\nX-A: a\rb\r\n\r\n",
        ),
        (
            "bare CR line ending",
            "GET /public/x HTTP/1.1\rHost: pub.test\r\r",
        ),
        (
            "space in a header name",
            "GET /public/x HTTP/1.1\r\nHost: pub.test\r\nX A: 1\r\n\r\n",
        ),
        (
            "empty header name",
            "GET /public/x HTTP/1.1\r\nHost: pub.test\r\n: 1\r\n\r\n",
        ),
        (
            "header without a colon",
            "GET /public/x HTTP/1.1\r\nHost: pub.test\r\nXA\r\n\r\n",
        ),
        (
            "request line with two spaces",
            "GET  /public/x HTTP/1.1\r\nHost: pub.test\r\n\r\n",
        ),
        (
            "HTTP/1.2",
            "GET /public/x HTTP/1.2\r\nHost: pub.test\r\n\r\n",
        ),
        (
            "HTTP/2.0 in an HTTP/1 line",
            "GET /public/x HTTP/2.0\r\nHost: pub.test\r\n\r\n",
        ),
        (
            "lower-case version",
            "GET /public/x http/1.1\r\nHost: pub.test\r\n\r\n",
        ),
        ("missing version", "GET /public/x\r\nHost: pub.test\r\n\r\n"),
        (
            "method with a slash",
            "GE/T /public/x HTTP/1.1\r\nHost: pub.test\r\n\r\n",
        ),
        (
            "target with a space",
            "GET /public/x y HTTP/1.1\r\nHost: pub.test\r\n\r\n",
        ),
        (
            "target not a path",
            "GET public/x HTTP/1.1\r\nHost: pub.test\r\n\r\n",
        ),
    ] {
        out.push(case(name, raw, &[400]));
    }
    // A fragment is not part of the target: dropped, and the path is judged without it.
    out.push(case(
        "fragment in the target",
        "GET /admin#x HTTP/1.1\r\nHost: pub.test\r\n\r\n",
        &[401],
    ));
    // Bare LF line endings are accepted (RFC 9112 §2.2 allows it), and still canonical.
    out.push(case(
        "bare LF line endings to the guarded route",
        "GET /public/../admin HTTP/1.1\nHost: pub.test\n\n",
        &[401],
    ));
    out
}

fn limit_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let long = format!("/public/{}", "a".repeat(9000));
    out.push(case("path over 8 KiB", get(&long, "pub.test"), &[400]));
    let huge = format!("/public/{}", "a".repeat(40_000));
    out.push(case(
        "request line over the buffer",
        get(&huge, "pub.test"),
        &[431],
    ));
    let mut many = String::from("GET /public/x HTTP/1.1\r\nHost: pub.test\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    out.push(case("200 header fields", many, &[431]));
    let big_header = format!(
        "GET /public/x HTTP/1.1\r\nHost: pub.test\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17 << 10)
    );
    out.push(case("one header over max_header_bytes", big_header, &[431]));
    // Pipelining: answers in order, each request judged on its own.
    let mut c = case(
        "three pipelined requests",
        format!(
            "{}{}{}",
            get("/public/1", "pub.test"),
            get("/admin", "pub.test"),
            get("/public/2", "pub.test")
        ),
        &[200, 401, 200],
    );
    c.upstream_path = Some("/public/1".into());
    out.push(c);
    // The gateway's own 400 leaves the framing intact: the next request is served.
    let mut c = case(
        "pipelined after a refused one",
        format!(
            "{}{}",
            get("/a%zz", "pub.test"),
            get("/public/1", "pub.test")
        ),
        &[400, 200],
    );
    c.upstream_path = Some("/public/1".into());
    out.push(c);
    out.push(case(
        "hop-by-hop Connection naming Host",
        "GET /admin HTTP/1.1\r\nHost: pub.test\r\nConnection: host, x-api-key\r\n\r\n",
        &[401],
    ));
    out
}

/// Sends `bytes` and returns the statuses of the responses that came back.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u16> {
    statuses(&support::raw_exchange(addr, bytes, Duration::from_millis(400)).await)
}

/// Status codes of the responses in `raw`: every `HTTP/1.x NNN ` (the test
/// bodies never contain one; they need not end in a newline, so a pipelined
/// status line may follow a body directly).
fn statuses(raw: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(raw);
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while let Some(i) = rest.find("HTTP/1.") {
        let line = &rest[i..];
        let code = line
            .get(9..12)
            .filter(|_| line.get(8..9) == Some(" ") && line.get(12..13) == Some(" "))
            .and_then(|c| c.parse().ok());
        if let Some(code) = code {
            out.push(code);
        }
        rest = &rest[i + 7..];
    }
    out
}

fn corpus_config(upstream: SocketAddr) -> String {
    let key_sha = ring_sha256_hex(b"ops-key");
    base_config(upstream)
        + &policy(
            "guard",
            "auth",
            &format!(
                "capabilities = [\"kv\", \"clock\", \"crypto\"]\n[policies.guard.config]\napi_keys = {{ keys = [{{ id = \"ops\", sha256 = \"{key_sha}\" }}] }}\n"
            ),
        )
        + r#"
[[routes]]
name = "admin-host"
host = "admin.test"
path_prefix = "/"
upstream = "backend"
policies = ["guard"]

[[routes]]
name = "admin"
path_prefix = "/admin"
upstream = "backend"
policies = ["guard"]

[[routes]]
name = "public"
path_prefix = "/"
upstream = "backend"
policies = []
"#
}

fn ring_sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the upstream saw something only the guard may let through.
fn guarded(seen: &support::Seen) -> bool {
    let host = seen.header("host").unwrap_or("").to_ascii_lowercase();
    seen.path.starts_with("/admin") || host.starts_with("admin.test")
}

#[tokio::test]
async fn hostile_http1_and_http2_corpus() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&corpus_config(upstream.addr));

    let mut cases = Vec::new();
    cases.extend(path_cases());
    cases.extend(host_cases());
    cases.extend(method_cases());
    cases.extend(smuggling_cases());
    cases.extend(limit_cases());

    let mut failures = Vec::new();
    let mut refused_correctly = 0;
    let mut forwarded_wrongly = 0;
    // One case at a time, so what the upstream saw belongs to that case.
    for c in &cases {
        let before = upstream.seen().len();
        let got = exchange(gw.proxy, &c.bytes).await;
        let seen: Vec<_> = upstream.seen().into_iter().skip(before).collect();
        let expect_ok = match &c.expect {
            Expect::Statuses(want) => &got == want,
            Expect::NoAnswer => got.is_empty(),
        };
        if !expect_ok {
            failures.push(format!("{}: expected {:?}, got {got:?}", c.name, c.expect));
        }
        if seen.iter().any(guarded) {
            forwarded_wrongly += 1;
            failures.push(format!(
                "{}: the upstream saw a guarded request: {:?}",
                c.name,
                seen.iter()
                    .map(|s| (&s.path, s.header("host")))
                    .collect::<Vec<_>>()
            ));
        }
        match &c.upstream_path {
            Some(p) => {
                if seen.first().map(|s| s.path.as_str()) != Some(p.as_str()) {
                    failures.push(format!(
                        "{}: the upstream should have seen {p}, saw {:?}",
                        c.name,
                        seen.iter().map(|s| &s.path).collect::<Vec<_>>()
                    ));
                }
            }
            None => {
                // An aborted request reaches the upstream's parser without its body.
                let whole = seen.iter().filter(|s| !(c.may_abort && s.body.is_empty()));
                if whole.count() > 0 {
                    forwarded_wrongly += 1;
                    failures.push(format!(
                        "{}: refused, but the upstream saw {:?}",
                        c.name,
                        seen.iter().map(|s| &s.path).collect::<Vec<_>>()
                    ));
                } else if expect_ok {
                    refused_correctly += 1;
                }
            }
        }
    }
    let h2 = h2_cases(gw.proxy, &upstream).await;
    let total = cases.len() + h2.tried;
    refused_correctly += h2.refused;
    forwarded_wrongly += h2.forwarded_wrongly;
    failures.extend(h2.failures);

    let logs = gw.logs();
    let panics = logs.matches("panicked").count();
    eprintln!(
        "http corpus: {total} cases tried, {refused_correctly} refused correctly, {forwarded_wrongly} forwarded wrongly, {panics} panics"
    );
    assert!(total >= 200, "the corpus has {total} cases");
    assert_eq!(panics, 0, "the gateway panicked:\n{logs}");
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The guard does let its own through: the corpus tests the gateway, not a closed door.
    let resp = reqwest::Client::new()
        .get(gw.url("/public/../admin/x"))
        .header("x-api-key", "ops-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.seen().last().unwrap().path, "/admin/x");
}

struct H2Results {
    tried: usize,
    refused: usize,
    forwarded_wrongly: usize,
    failures: Vec<String>,
}

/// One HTTP/2 case: method, `:authority`, `:path`, `host` header, the status
/// it must get, and the path the upstream must see (when forwarded).
type H2Case = (
    &'static str,
    &'static str,
    String,
    Option<&'static str>,
    u16,
    Option<&'static str>,
);

/// HTTP/2 requests (prior knowledge) with chosen `:authority`, `:path` and `host`.
async fn h2_cases(addr: SocketAddr, upstream: &Upstream) -> H2Results {
    // (method, authority, path, host header, expected status, path the upstream sees)
    let mut table: Vec<H2Case> = vec![
        (
            "GET",
            "pub.test",
            "/public/../admin".into(),
            None,
            401,
            None,
        ),
        (
            "GET",
            "pub.test",
            "/public/%2e%2e/admin".into(),
            None,
            401,
            None,
        ),
        ("GET", "pub.test", "/%61dmin".into(), None, 401, None),
        ("GET", "pub.test", "/./admin".into(), None, 401, None),
        ("GET", "pub.test", "//admin".into(), None, 401, None),
        ("GET", "pub.test", "/adm%69n/x".into(), None, 401, None),
        (
            "GET",
            "pub.test",
            "/public/..%2fadmin".into(),
            None,
            400,
            None,
        ),
        ("GET", "pub.test", "/a%zz".into(), None, 400, None),
        ("GET", "admin.test", "/public/x".into(), None, 401, None),
        ("GET", "ADMIN.test.", "/public/x".into(), None, 401, None),
        (
            "GET",
            "pub.test",
            "/public/x".into(),
            Some("admin.test"),
            400,
            None,
        ),
        (
            "GET",
            "admin.test",
            "/public/x".into(),
            Some("pub.test"),
            400,
            None,
        ),
        (
            "GET",
            "pub.test",
            "/public/x".into(),
            Some("PUB.test."),
            200,
            Some("/public/x"),
        ),
        (
            "GET",
            "pub.test",
            "/public/x".into(),
            None,
            200,
            Some("/public/x"),
        ),
        (
            "GET",
            "pub.test",
            "/public/y/../x".into(),
            None,
            200,
            Some("/public/x"),
        ),
        ("TRACE", "pub.test", "/public/x".into(), None, 405, None),
        (
            "GET",
            "pub.test",
            format!("/public/{}", "a".repeat(9000)),
            None,
            400,
            None,
        ),
    ];
    for esc in ["%2e%2e", "%2E%2E", ".%2e", "%2e."] {
        table.push((
            "GET",
            "pub.test",
            format!("/x/{esc}/admin"),
            None,
            401,
            None,
        ));
    }
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut out = H2Results {
        tried: table.len(),
        refused: 0,
        forwarded_wrongly: 0,
        failures: Vec::new(),
    };
    for (method, authority, path, host, want, seen_path) in table {
        let before = upstream.seen().len();
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{authority}{path}"));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let name = format!("h2 {method} {authority} {path:.60} host={host:?}");
        let status = match sender.send_request(req).await {
            Ok(r) => r.status().as_u16(),
            Err(e) => {
                out.failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let seen: Vec<_> = upstream.seen().into_iter().skip(before).collect();
        if status != want {
            out.failures
                .push(format!("{name}: expected {want}, got {status}"));
        }
        if seen.iter().any(guarded) {
            out.forwarded_wrongly += 1;
            out.failures
                .push(format!("{name}: the upstream saw a guarded request"));
        }
        match seen_path {
            Some(p) => {
                if seen.first().map(|s| s.path.as_str()) != Some(p) {
                    out.failures
                        .push(format!("{name}: upstream should see {p}"));
                }
                if seen.first().and_then(|s| s.header("host")) != Some("pub.test") {
                    out.failures.push(format!(
                        "{name}: upstream should see Host pub.test, saw {:?}",
                        seen.first().and_then(|s| s.header("host"))
                    ));
                }
            }
            None if !seen.is_empty() => {
                out.forwarded_wrongly += 1;
                out.failures.push(format!("{name}: refused, but forwarded"));
            }
            None if status == want => out.refused += 1,
            None => {}
        }
    }
    out
}
