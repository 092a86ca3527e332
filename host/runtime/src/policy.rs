//! A compiled component version and a configured policy instance that runs calls on it.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use wasmtime::{
    Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};

use crate::bindings::{types, PolicyPre};
use crate::error::PolicyFailure;
use crate::host::{Capabilities, ContextBag, HostServices, HostState, KvNamespace};

/// One component version, compiled once and pre-linked.
pub struct CompiledComponent {
    name: String,
    digest: String,
    size: usize,
    pre: PolicyPre<HostState>,
    engine: Engine,
    cache: crate::CacheOutcome,
}

impl CompiledComponent {
    pub(crate) fn new(
        name: &str,
        digest: String,
        bytes: &[u8],
        pre: PolicyPre<HostState>,
        engine: Engine,
        cache: crate::CacheOutcome,
    ) -> Self {
        Self {
            name: name.to_string(),
            digest,
            size: bytes.len(),
            pre,
            engine,
            cache,
        }
    }

    /// Whether it was loaded from the compile cache, compiled and stored, or
    /// compiled without a cache.
    pub fn cache_outcome(&self) -> crate::CacheOutcome {
        self.cache
    }

    /// The name it was compiled under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The digest the caller compiled it under: the content digest
    /// (`edgegate_trust::content_digest`) that revocations and pins name.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// How one policy of a route runs: its config and limits.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// Policy name from the gateway config.
    pub name: String,
    /// The policy's `config` table as JSON, handed to `init`.
    pub config_json: String,
    /// Granted capabilities.
    pub capabilities: Capabilities,
    /// Linear memory limit per instance.
    pub memory_limit_bytes: usize,
    /// Wall-time budget per call (init + the hook).
    pub timeout: Duration,
    /// Keep initialised instances for later calls (see [`PolicyInstance`]).
    pub reuse_instances: bool,
}

/// Most idle initialised instances kept per policy when instances are reused.
const MAX_IDLE_INSTANCES: usize = 32;
/// Calls after which a reused instance is dropped, so guest heap growth and
/// fragmentation cannot build up without bound.
const MAX_CALLS_PER_INSTANCE: u32 = 10_000;

/// The idle list; a panic elsewhere while it was held leaves a usable `Vec`.
fn lock(idle: &std::sync::Mutex<Vec<Warm>>) -> std::sync::MutexGuard<'_, Vec<Warm>> {
    idle.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An instantiated, initialised policy.
struct Warm {
    store: Store<HostState>,
    policy: crate::bindings::Policy,
    calls: u32,
    /// False once a call trapped, timed out or ran out of memory: the
    /// instance's state is not trusted again.
    healthy: bool,
}

/// The body modes `init` declared, as bits for an atomic.
fn mode_bits(modes: types::BodyModes) -> u8 {
    use types::BodyModes as M;
    [M::BUFFER, M::CHUNKS, M::SSE]
        .iter()
        .enumerate()
        .filter(|(_, m)| modes.contains(**m))
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

fn modes_of(bits: u8) -> types::BodyModes {
    use types::BodyModes as M;
    [M::BUFFER, M::CHUNKS, M::SSE]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & 1 << i != 0)
        .fold(M::empty(), |modes, (_, m)| modes | m)
}

/// A policy ready to run: a compiled component plus its settings and shared host state.
pub struct PolicyInstance {
    component: Arc<CompiledComponent>,
    name: Arc<str>,
    config_json: String,
    caps: Capabilities,
    memory_limit: usize,
    timeout: Duration,
    kv: Option<Arc<KvNamespace>>,
    services: HostServices,
    /// What `init` said at admission: whether the response phase needs this policy.
    wants_response: AtomicBool,
    /// What `init` said at admission: the body modes it handles (request, response).
    request_modes: AtomicU8,
    response_modes: AtomicU8,
    /// Idle initialised instances, when `reuse_instances` is on.
    idle: Option<std::sync::Mutex<Vec<Warm>>>,
}

/// One instance bound to one body (see `wit/policy.wit`): a head call and
/// the chunk or event calls after it run on it in order. Dropping it hands a
/// healthy instance back to the idle list (when instances are reused).
pub struct Lease {
    owner: Arc<PolicyInstance>,
    warm: Option<Warm>,
}

impl Lease {
    /// The head call of a request body in `chunks` mode; the context stays
    /// with the instance for the chunk calls. `headers` are the request's,
    /// which the policy reads on demand (`message`).
    pub async fn on_request(
        &mut self,
        req: &types::Request,
        headers: &mut HeaderMap,
        ctx: &mut ContextBag,
    ) -> Result<types::RequestVerdict, PolicyFailure> {
        match self.call(Some((ctx, headers)), Hook::Request(req)).await? {
            HookResult::Request(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    /// The head call of a streamed response; `headers` are the response's.
    pub async fn on_response(
        &mut self,
        summary: &types::RequestSummary,
        resp: &types::ResponseHead,
        headers: &mut HeaderMap,
        ctx: &mut ContextBag,
    ) -> Result<types::ResponseVerdict, PolicyFailure> {
        match self
            .call(Some((ctx, headers)), Hook::Response(summary, resp))
            .await?
        {
            HookResult::Response(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    /// One chunk of the request body.
    pub async fn on_request_chunk(
        &mut self,
        chunk: &types::BodyChunk,
    ) -> Result<types::ChunkVerdict, PolicyFailure> {
        match self.call(None, Hook::RequestChunk(chunk)).await? {
            HookResult::Chunk(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    /// One chunk of the response body.
    pub async fn on_response_chunk(
        &mut self,
        chunk: &types::BodyChunk,
    ) -> Result<types::ChunkVerdict, PolicyFailure> {
        match self.call(None, Hook::ResponseChunk(chunk)).await? {
            HookResult::Chunk(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    /// One server-sent event of the response, or its end.
    pub async fn on_response_event(
        &mut self,
        event: &types::StreamEvent,
        carry: &str,
    ) -> Result<types::EventVerdict, PolicyFailure> {
        match self.call(None, Hook::ResponseEvent(event, carry)).await? {
            HookResult::Event(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    async fn call(
        &mut self,
        head: Option<Head<'_>>,
        hook: Hook<'_>,
    ) -> Result<HookResult, PolicyFailure> {
        let Some(warm) = self.warm.as_mut() else {
            return Err(PolicyFailure::Guest("the policy instance is gone".into()));
        };
        if !warm.healthy {
            return Err(PolicyFailure::Guest(
                "the policy instance failed earlier in this body".into(),
            ));
        }
        self.owner.call_on(warm, head, true, hook).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(warm) = self.warm.take() {
            self.owner.give_back(warm);
        }
    }
}

fn unexpected() -> PolicyFailure {
    PolicyFailure::Guest("unexpected hook result".into())
}

/// Limits of one store, remembering whether the memory limit was hit.
pub(crate) struct PolicyLimiter {
    limits: StoreLimits,
    pub(crate) memory_denied: bool,
}

impl ResourceLimiter for PolicyLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        if !ok {
            self.memory_denied = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl PolicyInstance {
    /// Bind a compiled component to its settings.
    pub fn new(
        component: Arc<CompiledComponent>,
        settings: PolicySettings,
        kv: Option<Arc<KvNamespace>>,
        services: HostServices,
    ) -> Self {
        Self {
            name: settings.name.into(),
            config_json: settings.config_json,
            caps: settings.capabilities,
            memory_limit: settings.memory_limit_bytes,
            timeout: settings.timeout,
            kv,
            services,
            component,
            wants_response: AtomicBool::new(true),
            request_modes: AtomicU8::new(0),
            response_modes: AtomicU8::new(0),
            idle: settings
                .reuse_instances
                .then(|| std::sync::Mutex::new(Vec::new())),
        }
    }

    /// The policy name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component version it runs.
    pub fn component(&self) -> &Arc<CompiledComponent> {
        &self.component
    }

    /// Admission check: instantiate and run `init` with the config; remembers
    /// what the policy said about itself.
    pub async fn check_init(&self) -> Result<(), PolicyFailure> {
        let (warm, info) = self.fresh().await?;
        self.wants_response
            .store(info.wants_response, Ordering::Relaxed);
        self.request_modes
            .store(mode_bits(info.request_body), Ordering::Relaxed);
        self.response_modes
            .store(mode_bits(info.response_body), Ordering::Relaxed);
        self.give_back(warm);
        Ok(())
    }

    /// False when the policy said in `init` that its response phase does nothing.
    pub fn wants_response(&self) -> bool {
        self.wants_response.load(Ordering::Relaxed)
    }

    /// The body modes `init` said the policy handles: (request, response).
    pub fn body_modes(&self) -> (types::BodyModes, types::BodyModes) {
        let of = |a: &AtomicU8| modes_of(a.load(Ordering::Relaxed));
        (of(&self.request_modes), of(&self.response_modes))
    }

    /// An instance for one body: its head call and its chunk or event calls.
    pub async fn lease(self: &Arc<Self>) -> Result<Lease, PolicyFailure> {
        let warm = self.take().await?;
        Ok(Lease {
            owner: Arc::clone(self),
            warm: Some(warm),
        })
    }

    /// Run the request phase (an instance for this one call). `headers` are
    /// the request's: they move into the store for the call, where the
    /// policy reads them on demand (`message`), and come back after.
    pub async fn on_request(
        &self,
        req: &types::Request,
        headers: &mut HeaderMap,
        ctx: &mut ContextBag,
    ) -> Result<types::RequestVerdict, PolicyFailure> {
        match self.once((ctx, headers), Hook::Request(req)).await? {
            HookResult::Request(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    /// Run the response phase on a response whose body is buffered or not
    /// seen (an instance for this one call); `headers` are the response's.
    pub async fn on_response(
        &self,
        summary: &types::RequestSummary,
        resp: &types::ResponseHead,
        headers: &mut HeaderMap,
        ctx: &mut ContextBag,
    ) -> Result<types::ResponseVerdict, PolicyFailure> {
        match self
            .once((ctx, headers), Hook::Response(summary, resp))
            .await?
        {
            HookResult::Response(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    async fn once(&self, head: Head<'_>, hook: Hook<'_>) -> Result<HookResult, PolicyFailure> {
        let mut warm = self.take().await?;
        let result = self.call_on(&mut warm, Some(head), false, hook).await;
        self.give_back(warm);
        result
    }

    /// An idle initialised instance when instances are reused, else a new one.
    async fn take(&self) -> Result<Warm, PolicyFailure> {
        if let Some(idle) = &self.idle {
            let taken = lock(idle).pop();
            if let Some(warm) = taken {
                return Ok(warm);
            }
        }
        self.fresh().await.map(|(warm, _)| warm)
    }

    /// A new instance with `init` run on it.
    async fn fresh(&self) -> Result<(Warm, types::PolicyInfo), PolicyFailure> {
        let mut store = self.new_store();
        match self.instantiate_and_init(&mut store).await {
            Ok((policy, info)) => Ok((
                Warm {
                    store,
                    policy,
                    calls: 0,
                    healthy: true,
                },
                info,
            )),
            Err(e) => Err(self
                .finish(&mut store, None, false, Err(e))
                .err()
                .unwrap_or_else(unexpected)),
        }
    }

    /// After a call: a healthy reusable instance goes back to the idle list.
    fn give_back(&self, warm: Warm) {
        let Some(idle) = &self.idle else { return };
        if warm.healthy && warm.calls < MAX_CALLS_PER_INSTANCE {
            let mut list = lock(idle);
            if list.len() < MAX_IDLE_INSTANCES {
                list.push(warm);
            }
        }
    }

    /// One hook on an initialised instance. A head call brings the request's
    /// context and the message's headers in and hands them back (`keep_ctx`:
    /// a copy of the context stays with the instance for the body calls
    /// after it); a body call works on the instance's own copy.
    async fn call_on(
        &self,
        warm: &mut Warm,
        head: Option<Head<'_>>,
        keep_ctx: bool,
        hook: Hook<'_>,
    ) -> Result<HookResult, PolicyFailure> {
        let (ctx, mut headers) = match head {
            Some((ctx, headers)) => (Some(ctx), Some(headers)),
            None => (None, None),
        };
        {
            let state = warm.store.data_mut();
            if let Some(ctx) = &ctx {
                // A failed call must not leave half-written facts behind, so
                // the context goes in as a copy and comes back only on success.
                state.ctx = (*ctx).clone();
            }
            if let Some(headers) = headers.as_deref_mut() {
                state.message = std::mem::take(headers);
            }
            state.begin_call();
            state.limiter.memory_denied = false;
        }
        self.arm(&mut warm.store);
        let outcome = Self::run_hook(&warm.policy, &mut warm.store, hook).await;
        // The headers go back whatever the outcome; none stay with the instance.
        let message = std::mem::take(&mut warm.store.data_mut().message);
        if let Some(headers) = headers {
            *headers = message;
        }
        warm.calls += 1;
        warm.healthy = matches!(outcome, Ok(_) | Err(Outcome::Guest(_)));
        self.finish(&mut warm.store, ctx, keep_ctx, outcome)
    }

    fn new_store(&self) -> Store<HostState> {
        let limiter = PolicyLimiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(self.memory_limit)
                .instances(64)
                .tables(64)
                .memories(8)
                .table_elements(100_000)
                .build(),
            memory_denied: false,
        };
        let state = HostState::new(
            self.name.clone(),
            limiter,
            self.caps,
            self.kv.clone(),
            self.services.clone(),
            ContextBag::default(),
        );
        let mut store = Store::new(&self.component.engine, state);
        store.limiter(|s| &mut s.limiter);
        // One callback per store, not a boxed closure per call.
        store.epoch_deadline_callback(|store| {
            Ok(if std::time::Instant::now() >= store.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        self.arm(&mut store);
        store
    }

    /// Start the call's wall-time budget. The guest yields to the executor at
    /// every epoch tick, so a long call never holds its thread: the caller
    /// may move it elsewhere (the gateway's slow lane) after its first full tick.
    /// At a tick past the budget, the call traps with `Interrupt` (the
    /// store's callback, installed once by [`PolicyInstance::new_store`],
    /// reads the deadline set here).
    fn arm(&self, store: &mut Store<HostState>) {
        store.data_mut().deadline = std::time::Instant::now() + self.timeout;
        // The first yield comes after one full tick (1 to 2 ms of running),
        // so a short call that happens to span a tick stays where it is.
        store.set_epoch_deadline(2);
    }

    /// The call's result; on success the store's context becomes the request's.
    fn finish(
        &self,
        store: &mut Store<HostState>,
        ctx: Option<&mut ContextBag>,
        keep_ctx: bool,
        outcome: Result<HookResult, Outcome>,
    ) -> Result<HookResult, PolicyFailure> {
        match outcome {
            Ok(r) => {
                if let Some(ctx) = ctx {
                    let state = store.data_mut();
                    *ctx = if keep_ctx {
                        state.ctx.clone()
                    } else {
                        std::mem::take(&mut state.ctx)
                    };
                }
                Ok(r)
            }
            Err(Outcome::Guest(e)) => Err(e.into()),
            Err(Outcome::Instantiate(e)) if e.downcast_ref::<Trap>().is_none() => {
                Err(PolicyFailure::Instantiate(format!("{e:#}")))
            }
            Err(Outcome::Instantiate(e) | Outcome::Wasm(e)) => {
                Err(self.classify(e, store.data().limiter.memory_denied))
            }
        }
    }

    /// A new instance in `store`, with `init` run on it.
    async fn instantiate_and_init(
        &self,
        store: &mut Store<HostState>,
    ) -> Result<(crate::bindings::Policy, types::PolicyInfo), Outcome> {
        let policy = self
            .component
            .pre
            .instantiate_async(&mut *store)
            .await
            .map_err(Outcome::Instantiate)?;
        let info = policy
            .edgegate_policy_hooks()
            .call_init(&mut *store, &self.config_json)
            .await
            .map_err(Outcome::Wasm)?
            .map_err(Outcome::Guest)?;
        Ok((policy, info))
    }

    /// One hook on an initialised instance.
    async fn run_hook(
        policy: &crate::bindings::Policy,
        store: &mut Store<HostState>,
        hook: Hook<'_>,
    ) -> Result<HookResult, Outcome> {
        let hooks = policy.edgegate_policy_hooks();
        let s = &mut *store;
        Ok(match hook {
            Hook::Request(req) => HookResult::Request(
                hooks
                    .call_on_request(s, req)
                    .await
                    .map_err(Outcome::Wasm)?
                    .map_err(Outcome::Guest)?,
            ),
            Hook::Response(summary, resp) => HookResult::Response(
                hooks
                    .call_on_response(s, summary, resp)
                    .await
                    .map_err(Outcome::Wasm)?
                    .map_err(Outcome::Guest)?,
            ),
            Hook::RequestChunk(chunk) => HookResult::Chunk(
                hooks
                    .call_on_request_chunk(s, chunk)
                    .await
                    .map_err(Outcome::Wasm)?
                    .map_err(Outcome::Guest)?,
            ),
            Hook::ResponseChunk(chunk) => HookResult::Chunk(
                hooks
                    .call_on_response_chunk(s, chunk)
                    .await
                    .map_err(Outcome::Wasm)?
                    .map_err(Outcome::Guest)?,
            ),
            Hook::ResponseEvent(event, carry) => HookResult::Event(
                hooks
                    .call_on_response_event(s, event, carry)
                    .await
                    .map_err(Outcome::Wasm)?
                    .map_err(Outcome::Guest)?,
            ),
        })
    }

    fn classify(&self, e: wasmtime::Error, memory_denied: bool) -> PolicyFailure {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PolicyFailure::Timeout(self.timeout.as_millis() as u64),
            Some(Trap::StackOverflow) => PolicyFailure::StackOverflow,
            _ if memory_denied => PolicyFailure::OutOfMemory(self.memory_limit),
            Some(t) => PolicyFailure::Trap(t.to_string()),
            None => PolicyFailure::Trap(format!("{e:#}")),
        }
    }
}

/// What a head call brings in: the request's context and the message's headers.
type Head<'a> = (&'a mut ContextBag, &'a mut HeaderMap);

enum Hook<'a> {
    Request(&'a types::Request),
    Response(&'a types::RequestSummary, &'a types::ResponseHead),
    RequestChunk(&'a types::BodyChunk),
    ResponseChunk(&'a types::BodyChunk),
    ResponseEvent(&'a types::StreamEvent, &'a str),
}

enum HookResult {
    Request(types::RequestVerdict),
    Response(types::ResponseVerdict),
    Chunk(types::ChunkVerdict),
    Event(types::EventVerdict),
}

enum Outcome {
    Instantiate(wasmtime::Error),
    Wasm(wasmtime::Error),
    Guest(types::Error),
}
