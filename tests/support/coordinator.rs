//! The coordinator as a process, a real etcd server for its etcd store, and
//! the waits the health graph tests share.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{eventually, Started};

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `edgegate coordinator` on a config written to a folder.
pub struct CoordinatorProcess {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl CoordinatorProcess {
    /// Runs a coordinator on 127.0.0.1:`port` with the embedded store
    /// (`state.json` in `dir`), edges down after 1.5 s.
    pub fn start(dir: &Path, port: u16) -> Self {
        Self::start_with(
            dir,
            "coordinator.toml",
            &format!(
                "listen = \"127.0.0.1:{port}\"\nedge_ttl_ms = 1500\nremove_after_ms = 60000\n[store]\nbackend = \"embedded\"\npath = \"state.json\"\n"
            ),
        )
    }

    /// Writes `config` to `dir/name` and runs a coordinator on it; panics
    /// with its stderr when it does not start.
    pub fn start_with(dir: &Path, name: &str, config: &str) -> Self {
        match Self::try_start(dir, name, config) {
            Ok(c) => c,
            Err(e) => panic!("coordinator did not start: {e}"),
        }
    }

    /// Like [`Self::start_with`], but gives back what it printed when it did not start.
    pub fn try_start(dir: &Path, name: &str, config: &str) -> Result<Self, String> {
        let path = dir.join(name);
        std::fs::write(&path, config).unwrap();
        let mut started = Started::run("coordinator", &path);
        match started
            .first_line
            .trim()
            .strip_prefix("edgegate coordinator listening on ")
            .and_then(|a| {
                a.strip_prefix("http://")
                    .or_else(|| a.strip_prefix("https://"))
            })
            .and_then(|a| a.parse().ok())
        {
            Some(addr) => Ok(Self {
                child: started.child,
                addr,
                stderr: started.stderr,
            }),
            None => {
                let (status, logged) = started.exited();
                Err(format!(
                    "{status}; stdout {:?}; stderr:\n{logged}",
                    started.first_line
                ))
            }
        }
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, and wait for it to exit.
    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let _ = self.child.wait();
    }

    /// SIGKILL: no last snapshot, no clean-up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /v1/graph`.
    pub async fn graph(&self) -> Value {
        reqwest::get(self.url("/v1/graph"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST /v1/reports` with `report`; the status and the answer.
    pub async fn report(&self, report: &Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.url("/v1/reports"))
            .json(report)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A report as an edge sends it: one route to one upstream with one endpoint.
pub fn edge_report(node: &str, site: &str, seq: u64, endpoint: &str, up: bool) -> Value {
    let edge = format!("edge:{node}");
    let route = format!("route:{node}/api");
    let upstream = format!("upstream:{node}/backend");
    let ep = format!("endpoint:{endpoint}");
    let stats = serde_json::json!({"requests_per_s": 10.0, "error_rate": if up { 0.0 } else { 1.0 }, "latency_ms": 2.0, "circuit": if up { "closed" } else { "open" }, "up": up});
    serde_json::json!({
        "node": node, "site": site, "seq": seq, "boot": "test", "sent_at_ms": 0,
        "graph": {
            "nodes": [
                {"id": edge, "kind": "edge", "label": node, "site": site},
                {"id": route, "kind": "route", "label": "api", "site": site},
                {"id": upstream, "kind": "upstream", "label": "backend", "site": site, "stats": {"up": up}},
                {"id": ep, "kind": "endpoint", "label": endpoint, "stats": stats},
            ],
            "links": [
                {"from": edge, "to": route},
                {"from": route, "to": upstream},
                {"from": upstream, "to": ep, "stats": stats},
            ],
        },
    })
}

/// A node's health colour in a `/v1/graph` answer.
pub fn colour(graph: &Value, id: &str) -> Option<String> {
    graph["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == id)
        .and_then(|n| n["colour"].as_str())
        .map(String::from)
}

/// Whether the coordinator counts edge `node` live (`None`: it does not know it).
pub fn edge_live(graph: &Value, node: &str) -> Option<bool> {
    graph["edges"]
        .as_array()?
        .iter()
        .find(|e| e["node"] == node)
        .and_then(|e| e["live"].as_bool())
}

/// Polls `check` until it holds; fails the test after `secs` (see [`eventually`]).
pub async fn wait_for<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(Duration::from_secs(secs), what, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await;
}

/// A single-member etcd (Debian `etcd-server`) on loopback ports, with its
/// data in a temp dir; killed on drop.
pub struct EtcdServer {
    child: Child,
    pub client_url: String,
    _data: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers `/health`.
    pub async fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", data.path().display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running etcd (Debian package `etcd-server`; scripts/test.sh installs it)");
        let server = Self {
            child,
            client_url,
            _data: data,
        };
        let health = format!("{}/health", server.client_url);
        wait_for("etcd to answer /health", 30, || async {
            match reqwest::get(&health).await {
                Ok(r) => r.text().await.is_ok_and(|t| t.contains("true")),
                Err(_) => false,
            }
        })
        .await;
        server
    }

    /// The key's value and lease id through etcd's JSON gateway (`/v3/kv/range`),
    /// or `None` when the key does not exist.
    pub async fn get(&self, key: &str) -> Option<(Value, i64)> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/v3/kv/range", self.client_url))
            .json(&serde_json::json!({ "key": b64.encode(key) }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kv = answer["kvs"].as_array()?.first()?.clone();
        let value = b64.decode(kv["value"].as_str()?).ok()?;
        let lease = kv["lease"]
            .as_str()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        Some((serde_json::from_slice(&value).ok()?, lease))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A three-member etcd cluster on loopback ports; members can be killed.
pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    pub client_urls: Vec<String>,
    _data: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts three members and waits until the cluster has a leader.
    pub async fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut client_urls = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = Command::new("etcd")
                .arg(format!("--name=m{i}"))
                .arg(format!(
                    "--data-dir={}",
                    data.path().join(format!("m{i}")).display()
                ))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new")
                .arg("--log-level=error")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("running etcd (Debian package `etcd-server`; scripts/test.sh installs it)");
            members.push(Some(child));
            client_urls.push(client_url);
        }
        let cluster = Self {
            members,
            client_urls,
            _data: data,
        };
        wait_for("the etcd cluster to elect a leader", 30, || async {
            cluster.leader().await.is_some()
        })
        .await;
        cluster
    }

    /// The index of the member that leads, as the members say.
    pub async fn leader(&self) -> Option<usize> {
        for (i, url) in self.client_urls.iter().enumerate() {
            if self.members[i].is_none() {
                continue;
            }
            let Ok(r) = reqwest::Client::new()
                .post(format!("{url}/v3/maintenance/status"))
                .body("{}")
                .timeout(Duration::from_secs(1))
                .send()
                .await
            else {
                continue;
            };
            let Ok(status) = r.json::<Value>().await else {
                continue;
            };
            let (Some(me), Some(leader)) = (
                status["header"]["member_id"].as_str(),
                status["leader"].as_str(),
            ) else {
                continue;
            };
            if me == leader {
                return Some(i);
            }
        }
        None
    }

    /// `kill -9` of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
