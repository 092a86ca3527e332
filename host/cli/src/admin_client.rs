//! `edgegate push | status | promote | rollback | reload`: a client of the
//! admin API (docs/operations.md).

use std::path::Path;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Where the admin API is and how to authenticate.
pub struct Admin<'a> {
    /// Base URL, e.g. `http://127.0.0.1:9901`.
    pub url: &'a str,
    /// Bearer token (`admin.token`), when the gateway has one.
    pub token: Option<&'a str>,
}

impl Admin<'_> {
    fn call(&self, method: &str, path: &str, body: Vec<u8>) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let uri: hyper::Uri = url.parse().with_context(|| format!("admin URL `{url}`"))?;
        if uri.scheme_str() != Some("http") {
            bail!("admin URL `{url}`: only http:// is supported (keep the admin listener on loopback or a private network)");
        }
        let mut req = hyper::Request::builder().method(method).uri(uri);
        if let Some(token) = self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/wasm");
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (status, text) = rt.block_on(async {
            let client = Client::builder(TokioExecutor::new()).build_http();
            let resp = client
                .request(req)
                .await
                .with_context(|| format!("{method} {url}: no answer"))?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
        })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| serde_json::json!({ "message": text.trim() }));
        if !status.is_success() {
            let message = value["message"].as_str().unwrap_or(text.trim());
            bail!("{method} {path}: {status}: {message}");
        }
        Ok(value)
    }

    /// Uploads a signed component as a new version of `policy`.
    pub fn push(
        &self,
        policy: &str,
        component: &Path,
        canary: Option<u32>,
        sticky: bool,
    ) -> anyhow::Result<()> {
        let bytes =
            std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
        let mut query = Vec::new();
        if let Some(p) = canary {
            query.push(format!("canary={p}"));
        }
        if sticky {
            query.push("sticky=true".to_string());
        }
        let path = format!(
            "/v1/policies/{policy}/versions{}{}",
            if query.is_empty() { "" } else { "?" },
            query.join("&")
        );
        let v = self.call("POST", &path, bytes)?;
        println!(
            "{policy}: {} {} (verify {} ms, compile {} ms, admission {} ms)",
            v["state"].as_str().unwrap_or("?"),
            v["digest"].as_str().unwrap_or("?"),
            v["timings_ms"]["verify"],
            v["timings_ms"]["compile"],
            v["timings_ms"]["admission"],
        );
        Ok(())
    }

    /// Prints every policy with its versions.
    pub fn status(&self, json: bool) -> anyhow::Result<()> {
        let v = self.call("GET", "/v1/policies", Vec::new())?;
        if json {
            println!("{v:#}");
            return Ok(());
        }
        for p in v["policies"].as_array().into_iter().flatten() {
            println!(
                "{} ({})",
                p["name"].as_str().unwrap_or("?"),
                p["kind"].as_str().unwrap_or("?")
            );
            for key in ["serving", "canary", "previous"] {
                let ver = &p[key];
                if ver.is_null() {
                    continue;
                }
                let c = &ver["counters"];
                let share = ver["percent"]
                    .as_u64()
                    .map(|p| format!(" {p}%"))
                    .unwrap_or_default();
                println!(
                    "  {key:<9}{share} {} from {} signed by [{}]: {} calls, {} failures, {} 5xx, p99 {} µs",
                    &ver["digest"].as_str().unwrap_or("?")[..12.min(ver["digest"].as_str().unwrap_or("?").len())],
                    ver["source"].as_str().unwrap_or("?"),
                    ver["signers"].as_array().map(|s| s.iter().filter_map(|k| k.as_str()).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                    c["calls"], c["failures"], c["server_errors"], c["p99_us"],
                );
                let q = &ver["quarantine"];
                if !q.is_null() {
                    println!(
                        "            QUARANTINED (on_error answers for it; lifts in {} s, or at a push or rollback): {}",
                        q["lifts_in_ms"].as_u64().unwrap_or(0).div_ceil(1000),
                        q["reason"].as_str().unwrap_or("?")
                    );
                }
            }
            for r in p["refused"].as_array().into_iter().flatten() {
                println!(
                    "  refused   {}: {}",
                    &r["digest"].as_str().unwrap_or("?")
                        [..12.min(r["digest"].as_str().unwrap_or("?").len())],
                    r["reason"].as_str().unwrap_or("?")
                );
            }
        }
        Ok(())
    }

    /// Promotes the canary of `policy`.
    pub fn promote(&self, policy: &str) -> anyhow::Result<()> {
        let v = self.call(
            "POST",
            &format!("/v1/policies/{policy}/promote"),
            Vec::new(),
        )?;
        println!("{policy}: serving {}", v["digest"].as_str().unwrap_or("?"));
        Ok(())
    }

    /// Ends the canary of `policy`, or serves its previous version again.
    pub fn rollback(&self, policy: &str) -> anyhow::Result<()> {
        let v = self.call(
            "POST",
            &format!("/v1/policies/{policy}/rollback"),
            Vec::new(),
        )?;
        println!(
            "{policy}: serving {} (dropped {})",
            v["serving"].as_str().unwrap_or("?"),
            v["dropped"].as_str().unwrap_or("?")
        );
        Ok(())
    }

    /// Makes the gateway read its config file again.
    pub fn reload(&self) -> anyhow::Result<()> {
        let v = self.call("POST", "/v1/reload", Vec::new())?;
        println!("reloaded {}", v["reloaded"].as_str().unwrap_or("?"));
        for s in v["pushed_versions_skipped"]
            .as_array()
            .into_iter()
            .flatten()
        {
            println!("  warning: {}", s.as_str().unwrap_or("?"));
        }
        for k in v["needs_restart"].as_array().into_iter().flatten() {
            println!(
                "  note: `{}` changed; it takes effect at the next restart",
                k.as_str().unwrap_or("?")
            );
        }
        Ok(())
    }
}
