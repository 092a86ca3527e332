//! The Spin gateway component (`components/spin-gateway`) run the
//! way Spin runs it, and `spin.toml` read the way Spin reads it.
//!
//! Spin's CLI is not installable on these machines, so this file carries a
//! small Spin-like host built on wasmtime-wasi-http: it serves
//! `wasi:http/incoming-handler` on loopback with a fresh instance per request,
//! adds the `spin-*` request headers, renders the component's variables from
//! spin.toml's templates and application variables (overrides play
//! `spin up --variable`), provides `fermyon:spin/variables` and
//! `fermyon:spin/key-value` (only the stores listed in `key_value_stores`), and
//! refuses outbound requests to hosts not in `allowed_outbound_hosts`. It
//! records which variables the component reads, so the test can check spin.toml
//! declares every one.

#![allow(clippy::unwrap_used)] // a poisoned lock in the test host is a failed test

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::{components, repo_root, Upstream};
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Spin's `fermyon:spin@2.0.0` variables and key-value interfaces, as
/// spin-sdk 5.2 imports them (spin-sdk's wit/deps/spin@2.0.0, doc comments dropped).
mod spin_wit {
    wasmtime::component::bindgen!({
        inline: r#"
            package fermyon:spin@2.0.0;

            interface variables {
                get: func(name: string) -> result<string, error>;
                variant error {
                    invalid-name(string),
                    undefined(string),
                    provider(string),
                    other(string),
                }
            }

            interface key-value {
                resource store {
                    open: static func(label: string) -> result<store, error>;
                    get: func(key: string) -> result<option<list<u8>>, error>;
                    set: func(key: string, value: list<u8>) -> result<_, error>;
                    delete: func(key: string) -> result<_, error>;
                    exists: func(key: string) -> result<bool, error>;
                    get-keys: func() -> result<list<string>, error>;
                }
                variant error {
                    store-table-full,
                    no-such-store,
                    access-denied,
                    other(string),
                }
            }

            world spin-imports {
                import variables;
                import key-value;
            }
        "#,
        world: "spin-imports",
        with: { "fermyon:spin/key-value.store": super::OpenStore },
    });
}

use spin_wit::fermyon::spin::{key_value, variables};

// ---------------------------------------------------------------- spin.toml

fn manifest_path() -> PathBuf {
    repo_root().join("spin.toml")
}

fn manifest() -> toml::Table {
    let text = std::fs::read_to_string(manifest_path()).expect("reading spin.toml");
    toml::from_str(&text).expect("spin.toml is TOML")
}

fn table<'a>(t: &'a toml::Table, key: &str) -> &'a toml::Table {
    t.get(key)
        .and_then(toml::Value::as_table)
        .unwrap_or_else(|| panic!("spin.toml: `{key}` is not a table"))
}

fn strings(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The variable names a Spin template (`... {{ name }} ...`) refers to.
fn template_names(template: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed `{{{{` in template: {template:?}"))?;
        let name = after[..end].trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("`{name}` is not a Spin variable name"));
        }
        names.push(name.to_string());
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return Err(format!("stray `}}}}` in template: {template:?}"));
    }
    Ok(names)
}

/// Renders a template from application variable values.
fn render(template: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = template.to_string();
    for name in template_names(template)? {
        let value = values
            .get(&name)
            .ok_or_else(|| format!("application variable `{name}` has no value"))?;
        // Spin allows any spacing inside the braces; spin.toml uses one space.
        out = out.replace(&format!("{{{{ {name} }}}}"), value);
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    Ok(out)
}

/// One component of spin.toml, resolved as Spin resolves it.
#[derive(Clone)]
struct App {
    source: PathBuf,
    allowed_outbound_hosts: Vec<String>,
    key_value_stores: Vec<String>,
    /// Component variables, rendered.
    variables: BTreeMap<String, String>,
}

impl App {
    /// The component the catch-all HTTP trigger names, with `overrides` as
    /// `spin up --variable NAME=VALUE` would give them.
    fn load(overrides: &[(&str, &str)]) -> Result<App, String> {
        let m = manifest();
        let trigger = m["trigger"]["http"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(toml::Value::as_table)
            .ok_or("spin.toml: no [[trigger.http]]")?;
        let id = trigger["component"]
            .as_str()
            .ok_or("trigger without component")?;
        let component = table(table(&m, "component"), id);

        let mut values = BTreeMap::new();
        for (name, decl) in table(&m, "variables") {
            let decl = decl.as_table().ok_or("variable declarations are tables")?;
            let value = overrides
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.to_string())
                .or_else(|| {
                    decl.get("default")
                        .and_then(|d| d.as_str())
                        .map(String::from)
                });
            match value {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None if decl.get("required").and_then(toml::Value::as_bool) == Some(true) => {
                    return Err(format!("required variable `{name}` has no value"))
                }
                None => {}
            }
        }
        let variables = component
            .get("variables")
            .and_then(toml::Value::as_table)
            .map(|vars| {
                vars.iter()
                    .map(|(k, v)| {
                        let t = v
                            .as_str()
                            .ok_or(format!("variable `{k}` is not a string"))?;
                        Ok((k.clone(), render(t, &values)?))
                    })
                    .collect::<Result<BTreeMap<_, _>, String>>()
            })
            .transpose()?
            .unwrap_or_default();
        let allowed_outbound_hosts = strings(component.get("allowed_outbound_hosts"))
            .iter()
            .map(|h| render(h, &values))
            .collect::<Result<_, _>>()?;
        Ok(App {
            source: repo_root().join(component["source"].as_str().ok_or("source")?),
            allowed_outbound_hosts,
            key_value_stores: strings(component.get("key_value_stores")),
            variables,
        })
    }
}

// ---------------------------------------------------------------- the host

/// An open key-value store (the `store` resource).
pub struct OpenStore {
    label: String,
}

/// What all requests of one running app share.
struct Shared {
    app: App,
    stores: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
    variables_read: Mutex<BTreeSet<String>>,
    denied_outbound: Mutex<Vec<String>>,
}

struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Hooks,
    shared: Arc<Shared>,
}

struct Hooks {
    shared: Arc<Shared>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Whether `allowed` (`scheme://host[:port]`, port `*` for any) admits `uri`.
fn outbound_allowed(allowed: &[String], uri: &http::Uri) -> bool {
    let scheme = uri.scheme_str().unwrap_or("");
    let host = uri.host().unwrap_or("");
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    allowed.iter().any(|entry| {
        let Some((s, authority)) = entry.split_once("://") else {
            return false;
        };
        let (h, p) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let port_ok = match p {
            Some("*") => true,
            Some(p) => p.parse::<u16>() == Ok(port),
            None => port == if s == "https" { 443 } else { 80 },
        };
        s == scheme && h.eq_ignore_ascii_case(host) && port_ok
    })
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        _ = fut;
        if !outbound_allowed(&self.shared.app.allowed_outbound_hosts, request.uri()) {
            self.shared
                .denied_outbound
                .lock()
                .unwrap()
                .push(request.uri().to_string());
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (resp, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                resp.map(BodyExt::boxed_unsync),
                Box::new(io)
                    as Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            ))
        })
    }
}

impl variables::Host for State {
    fn get(&mut self, name: String) -> Result<String, variables::Error> {
        self.shared
            .variables_read
            .lock()
            .unwrap()
            .insert(name.clone());
        self.shared
            .app
            .variables
            .get(&name)
            .cloned()
            .ok_or(variables::Error::Undefined(format!(
                "no variable for {name:?}"
            )))
    }
}

impl key_value::Host for State {}

impl key_value::HostStore for State {
    fn open(&mut self, label: String) -> Result<Resource<OpenStore>, key_value::Error> {
        if !self.shared.app.key_value_stores.contains(&label) {
            return Err(key_value::Error::AccessDenied);
        }
        self.table
            .push(OpenStore { label })
            .map_err(|e| key_value::Error::Other(e.to_string()))
    }

    fn get(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> Result<Option<Vec<u8>>, key_value::Error> {
        let label = self.label(&store)?;
        let stores = self.shared.stores.lock().unwrap();
        Ok(stores.get(&label).and_then(|s| s.get(&key)).cloned())
    }

    fn set(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), key_value::Error> {
        let label = self.label(&store)?;
        self.shared
            .stores
            .lock()
            .unwrap()
            .entry(label)
            .or_default()
            .insert(key, value);
        Ok(())
    }

    fn delete(&mut self, store: Resource<OpenStore>, key: String) -> Result<(), key_value::Error> {
        let label = self.label(&store)?;
        if let Some(s) = self.shared.stores.lock().unwrap().get_mut(&label) {
            s.remove(&key);
        }
        Ok(())
    }

    fn exists(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> Result<bool, key_value::Error> {
        Ok(self.get(store, key)?.is_some())
    }

    fn get_keys(&mut self, store: Resource<OpenStore>) -> Result<Vec<String>, key_value::Error> {
        let label = self.label(&store)?;
        let stores = self.shared.stores.lock().unwrap();
        Ok(stores
            .get(&label)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn drop(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl State {
    fn label(&self, store: &Resource<OpenStore>) -> Result<String, key_value::Error> {
        self.table
            .get(store)
            .map(|s| s.label.clone())
            .map_err(|e| key_value::Error::Other(e.to_string()))
    }
}

/// The engine and the compiled component, once per test binary.
fn compiled() -> &'static (Engine, Component) {
    static COMPILED: OnceLock<(Engine, Component)> = OnceLock::new();
    COMPILED.get_or_init(|| {
        components();
        let engine = Engine::new(&Config::new()).expect("engine");
        let app = App::load(&[]).expect("spin.toml");
        let component = Component::from_file(&engine, &app.source)
            .unwrap_or_else(|e| panic!("loading {}: {e:?}", app.source.display()));
        (engine, component)
    })
}

/// A running app: the Spin-like host serving the component on loopback.
struct SpinHost {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for SpinHost {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl SpinHost {
    async fn start(app: App) -> SpinHost {
        let (engine, component) = compiled();
        let mut linker = Linker::<State>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).expect("wasi:http");
        spin_wit::SpinImports::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .expect("fermyon:spin");
        let pre = ProxyPre::new(linker.instantiate_pre(component).expect("instantiate_pre"))
            .expect("the component exports wasi:http/incoming-handler");
        let shared = Arc::new(Shared {
            app,
            stores: Mutex::default(),
            variables_read: Mutex::default(),
            denied_outbound: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server_shared = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, client)) = listener.accept().await else {
                    return;
                };
                let pre = pre.clone();
                let shared = Arc::clone(&server_shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let pre = pre.clone();
                        let shared = Arc::clone(&shared);
                        async move {
                            Ok::<_, std::convert::Infallible>(serve(pre, shared, client, req).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        SpinHost {
            addr,
            shared,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn variables_read(&self) -> BTreeSet<String> {
        self.shared.variables_read.lock().unwrap().clone()
    }
}

fn host_error(message: String) -> hyper::Response<HyperOutgoingBody> {
    eprintln!("spin test host: {message}");
    let body = http_body_util::Full::new(bytes::Bytes::from(message))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    resp.headers_mut()
        .insert("x-test-host-error", http::HeaderValue::from_static("1"));
    resp
}

/// One request: a fresh store and instance, as Spin does.
async fn serve(
    pre: ProxyPre<State>,
    shared: Arc<Shared>,
    client: SocketAddr,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    // The headers Spin adds to every request it routes to a component.
    let full_url = format!(
        "http://{}{}",
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(""),
        req.uri()
    );
    let path_info = req.uri().path().to_string();
    for (name, value) in [
        ("spin-client-addr", client.to_string()),
        ("spin-full-url", full_url),
        ("spin-path-info", path_info),
        ("spin-matched-route", "/...".to_string()),
        ("spin-component-route", String::new()),
        ("spin-base-path", "/".to_string()),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            req.headers_mut().insert(name, v);
        }
    }
    let mut store = Store::new(
        pre.engine(),
        State {
            wasi: WasiCtx::builder().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: Hooks {
                shared: Arc::clone(&shared),
            },
            shared,
        },
    );
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = match store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
    {
        Ok(r) => r,
        Err(e) => return host_error(format!("incoming request: {e:?}")),
    };
    let out = match store.data_mut().http().new_response_outparam(sender) {
        Ok(o) => o,
        Err(e) => return host_error(format!("response outparam: {e:?}")),
    };
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, out)
            .await
    });
    match receiver.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(code)) => host_error(format!("the component answered error {code:?}")),
        Err(_) => host_error(match task.await {
            Ok(Ok(())) => "the component never set a response".to_string(),
            Ok(Err(e)) => format!("the component failed: {e:?}"),
            Err(e) => format!("the component task failed: {e}"),
        }),
    }
}

// ---------------------------------------------------------------- tests

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

fn chat(text: &str, temperature: f64) -> Value {
    json!({
        "model": "gpt-test",
        "temperature": temperature,
        "messages": [{"role": "user", "content": text}],
    })
}

async fn post_chat(
    host: &SpinHost,
    key: Option<&str>,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client().post(host.url("/v1/chat/completions")).json(body);
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    let resp = req.send().await.expect("request to the Spin host");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

/// spin.toml names things that exist, its templates refer to declared
/// variables, and its build command builds the component it serves.
#[test]
fn spin_toml_names_what_exists() {
    let m = manifest();
    assert_eq!(m["spin_manifest_version"].as_integer(), Some(2));
    assert!(m["application"]["name"]
        .as_str()
        .is_some_and(|n| !n.is_empty()));
    let components_table = table(&m, "component");
    let declared: BTreeSet<&String> = table(&m, "variables").keys().collect();
    let triggers = m["trigger"]["http"].as_array().expect("[[trigger.http]]");
    assert!(!triggers.is_empty());
    for trigger in triggers {
        let route = trigger["route"].as_str().expect("route");
        assert!(route.starts_with('/'), "route {route}");
        let id = trigger["component"].as_str().expect("component id");
        assert!(
            components_table.contains_key(id),
            "trigger names unknown component `{id}`"
        );
    }
    for (id, component) in components_table {
        let component = component.as_table().expect("component table");
        let build = component["build"].as_table().expect("build table");
        let command = build["command"].as_str().expect("build.command");
        // Spin runs the build from the manifest's folder: run it the same way.
        let status = std::process::Command::new("sh")
            .args(["-c", command])
            .current_dir(repo_root())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running the build command");
        assert!(status.success(), "`{command}` failed");
        let source = repo_root().join(component["source"].as_str().expect("source"));
        assert!(
            source.is_file(),
            "component `{id}`: {} missing after its build",
            source.display()
        );
        for pattern in strings(build.get("watch")) {
            let base = pattern.split("/*").next().unwrap_or(&pattern);
            assert!(
                repo_root().join(base).exists(),
                "watch `{pattern}`: {base} missing"
            );
        }
        let mut templates = strings(component.get("allowed_outbound_hosts"));
        if let Some(vars) = component.get("variables").and_then(toml::Value::as_table) {
            for (name, value) in vars {
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "component variable `{name}` is not a valid Spin variable name"
                );
                templates.push(value.as_str().expect("variable value").to_string());
            }
        }
        for t in &templates {
            for name in template_names(t).unwrap_or_else(|e| panic!("component `{id}`: {e}")) {
                assert!(
                    declared.contains(&name),
                    "`{{{{ {name} }}}}` is not declared in [variables]"
                );
            }
        }
        assert!(!strings(component.get("key_value_stores")).is_empty());
    }
    // Every declared application variable is used by some template.
    let text = std::fs::read_to_string(manifest_path()).unwrap();
    for name in declared {
        assert!(
            text.contains(&format!("{{{{ {name} }}}}")),
            "variable `{name}` is never used"
        );
    }
}

/// The component imports only what Spin provides and exports the 0.2 handler.
#[test]
fn the_component_imports_only_what_spin_provides() {
    let (engine, component) = compiled();
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    for name in &imports {
        assert!(
            name.starts_with("wasi:")
                || name == "fermyon:spin/variables@2.0.0"
                || name == "fermyon:spin/key-value@2.0.0",
            "unexpected import {name}"
        );
    }
    assert!(imports.iter().any(|n| n == "fermyon:spin/variables@2.0.0"));
    assert!(imports
        .iter()
        .any(|n| n.starts_with("wasi:http/outgoing-handler@0.2")));
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(
        exports
            .iter()
            .any(|n| n == "wasi:http/incoming-handler@0.2.0"),
        "exports: {exports:?}"
    );
}

/// With spin.toml's own config: auth refuses bad keys before anything goes
/// upstream, a good request is proxied with PII redacted both ways, a card
/// number is blocked, a deterministic LLM call is answered from Spin's
/// key-value store the second time, and every variable the component reads is
/// one spin.toml declares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_the_policy_chain_under_a_wasi_http_host() {
    let upstream = Upstream::start();
    let addr = upstream.addr.to_string();
    let app = App::load(&[("upstream_host", &addr)]).expect("spin.toml");
    let declared: BTreeSet<String> = app.variables.keys().cloned().collect();
    let host = SpinHost::start(app).await;

    let body = chat("hi", 0.7);
    let (status, headers, text) = post_chat(&host, None, &body).await;
    assert_eq!(status, 401, "{text}");
    assert!(headers.contains_key("www-authenticate"));
    let (status, _, wrong) = post_chat(&host, Some("wrong-key"), &body).await;
    assert_eq!(status, 401);
    assert_eq!(wrong, text, "every refusal reads the same");
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");

    let pii = chat("Mail jane.doe@corp.example from 192.0.2.44 please", 0.0);
    let (status, headers, text) = post_chat(&host, Some("demo-key"), &pii).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        !text.contains("jane.doe@"),
        "answer still carries the e-mail: {text}"
    );
    assert!(text.contains("[REDACTED:email]"), "{text}");
    assert!(!text.contains("192.0.2.44"), "{text}");
    assert_eq!(
        headers
            .get("x-edgegate-cache")
            .and_then(|v| v.to_str().ok()),
        Some("miss")
    );
    assert!(headers.contains_key("x-ratelimit-remaining-tokens"));
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let sent = String::from_utf8_lossy(&seen[0].body);
    assert!(sent.contains("[REDACTED:email]"), "upstream saw: {sent}");
    assert!(
        !sent.contains("jane.doe@") && !sent.contains("192.0.2.44"),
        "{sent}"
    );
    assert_eq!(seen[0].header("x-edgegate-principal"), Some("demo-team"));
    assert_eq!(seen[0].header("x-edgegate-tenant"), Some("demo"));
    assert_eq!(
        seen[0].header("x-api-key"),
        None,
        "the credential is stripped"
    );
    assert_eq!(
        seen[0].header("spin-client-addr"),
        None,
        "Spin's headers stay inside"
    );
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));

    // The same deterministic call: from the cache in Spin's key-value store.
    let (status, headers, again) = post_chat(&host, Some("demo-key"), &pii).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers
            .get("x-edgegate-cache")
            .and_then(|v| v.to_str().ok()),
        Some("hit")
    );
    assert_eq!(again, text);
    assert_eq!(upstream.count(), 1, "a hit does not go upstream");
    assert!(host
        .shared
        .stores
        .lock()
        .unwrap()
        .get("default")
        .is_some_and(|s| s.keys().any(|k| k.starts_with("caching/"))));

    // A card number (Luhn-valid) is blocked before the upstream.
    let card = chat("my card is 4111 1111 1111 1111", 0.7);
    let (status, _, text) = post_chat(&host, Some("demo-key"), &card).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("credit_card"), "{text}");
    assert_eq!(upstream.count(), 1);

    let read = host.variables_read();
    assert!(read.contains("gateway_config"));
    let undeclared: Vec<&String> = read.difference(&declared).collect();
    assert!(
        undeclared.is_empty(),
        "the component reads undeclared variables {undeclared:?}"
    );
}

/// The first event of a streamed answer through the Spin chain.
const STREAM_FIRST: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello from the stream. \"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Mail jane@exa\"}}]}\n\n",
);
/// The rest, sent only once the client has the first event.
const STREAM_REST: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"mple.com today\"}}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6,\"total_tokens\":10}}\n\n",
    "data: [DONE]\n\n",
);

/// The text of an OpenAI chunk stream's deltas, and whether it ended in `[DONE]`.
fn stream_text(body: &str) -> (String, bool) {
    let mut text = String::new();
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
        } else if let Ok(v) = serde_json::from_str::<Value>(data) {
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
        }
    }
    (text, done)
}

/// On Spin the same chain streams over wasi:http: the first event reaches
/// the client while the upstream holds the rest back (a barrier, not a
/// clock), PII split across two deltas is still redacted, and the whole
/// answer is then replayed from the cache as an event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_flows_through_the_spin_chain_event_by_event() {
    let upstream = support::barrier_upstream(STREAM_FIRST, STREAM_REST);
    let addr = upstream.addr.to_string();
    let app = App::load(&[("upstream_host", &addr)]).expect("spin.toml");
    let host = SpinHost::start(app).await;
    let body = json!({
        "model": "gpt-test",
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "stream please"}],
    });
    let send = || {
        client()
            .post(host.url("/v1/chat/completions"))
            .header("x-api-key", "demo-key")
            .json(&body)
            .send()
    };
    let mut resp = send().await.expect("request to the Spin host");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut got = Vec::new();
    // Bounded only so a gateway that buffers fails here instead of hanging.
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        support::read_until(&mut resp, &mut got, "Hello from the stream"),
    )
    .await
    .expect("the first event never came while the upstream held the rest: the answer is buffered");
    assert_eq!(
        *upstream.sent_rest.lock().unwrap(),
        0,
        "the first event came before the rest was sent"
    );
    upstream.release.notify_one();
    while let Some(chunk) = resp.chunk().await.expect("body") {
        got.extend_from_slice(&chunk);
    }
    let streamed = String::from_utf8_lossy(&got).into_owned();
    let (text, done) = stream_text(&streamed);
    assert_eq!(
        text, "Hello from the stream. Mail [REDACTED:email] today",
        "{streamed}"
    );
    assert!(done, "the stream ends in [DONE]: {streamed}");
    assert!(!streamed.contains("jane@"), "{streamed}");

    // The same deterministic call: a hit, replayed as an event stream.
    let again = send().await.expect("request to the Spin host");
    assert_eq!(
        again
            .headers()
            .get("x-edgegate-cache")
            .and_then(|v| v.to_str().ok()),
        Some("hit")
    );
    let replay = again.text().await.expect("body");
    assert_eq!(stream_text(&replay), (text, true), "{replay}");
    assert_eq!(
        *upstream.sent_rest.lock().unwrap(),
        1,
        "a hit does not go upstream"
    );
}

/// Outbound hosts outside `allowed_outbound_hosts` are refused by the host and
/// answered 502 by the gateway; a config the component refuses answers 500
/// naming the key; a route the config lacks answers 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_limits_and_config_errors_are_reported() {
    let upstream = Upstream::start();
    let addr = upstream.addr.to_string();
    let mut app = App::load(&[("upstream_host", &addr)]).expect("spin.toml");
    app.allowed_outbound_hosts = vec!["http://127.0.0.1:1".into()];
    let host = SpinHost::start(app).await;
    let (status, _, text) = post_chat(&host, Some("demo-key"), &chat("hi", 0.7)).await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("upstream_unreachable"), "{text}");
    assert_eq!(upstream.count(), 0);
    assert!(!host.shared.denied_outbound.lock().unwrap().is_empty());
    drop(host);

    let bad = App::load(&[("upstream_host", &addr), ("api_key_sha256", "not-a-digest")])
        .expect("spin.toml");
    let host = SpinHost::start(bad).await;
    let (status, _, text) = post_chat(&host, Some("demo-key"), &chat("hi", 0.7)).await;
    assert_eq!(status, 500, "{text}");
    let error: Value = serde_json::from_str(&text).expect("JSON error");
    assert_eq!(error["error"], "config_invalid");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`gateway_config`")
            && message.contains("policies.auth.config.api_keys.keys[0].sha256"),
        "{message}"
    );
    drop(host);

    let mut narrow = App::load(&[("upstream_host", &addr)]).expect("spin.toml");
    let config =
        narrow.variables["gateway_config"].replace("path_prefix = \"/\"", "path_prefix = \"/v1\"");
    narrow.variables.insert("gateway_config".into(), config);
    let host = SpinHost::start(narrow).await;
    let resp = client()
        .get(host.url("/other"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 404);
    assert!(resp.text().await.unwrap_or_default().contains("no_route"));
}
