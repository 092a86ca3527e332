//! A compiled component version and a configured policy instance that runs calls on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
}

impl CompiledComponent {
    pub(crate) fn new(
        name: &str,
        digest: String,
        bytes: &[u8],
        pre: PolicyPre<HostState>,
        engine: Engine,
    ) -> Self {
        Self {
            name: name.to_string(),
            digest,
            size: bytes.len(),
            pre,
            engine,
        }
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

/// An instantiated, initialised policy kept for later calls.
struct Warm {
    store: Store<HostState>,
    policy: crate::bindings::Policy,
    calls: u32,
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
    /// Idle initialised instances, when `reuse_instances` is on.
    idle: Option<std::sync::Mutex<Vec<Warm>>>,
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
        let mut ctx = ContextBag::default();
        match self.call(&mut ctx, Hook::Init).await? {
            HookResult::Init(info) => {
                self.wants_response
                    .store(info.wants_response, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(PolicyFailure::Guest("unexpected hook result".into())),
        }
    }

    /// False when the policy said in `init` that its response phase does nothing.
    pub fn wants_response(&self) -> bool {
        self.wants_response.load(Ordering::Relaxed)
    }

    /// Run the request phase on a fresh instance.
    pub async fn on_request(
        &self,
        req: &types::Request,
        ctx: &mut ContextBag,
    ) -> Result<types::RequestVerdict, PolicyFailure> {
        match self.call(ctx, Hook::Request(req)).await? {
            HookResult::Request(v) => Ok(v),
            _ => Err(PolicyFailure::Guest("unexpected hook result".into())),
        }
    }

    /// Run the response phase on a fresh instance.
    pub async fn on_response(
        &self,
        summary: &types::RequestSummary,
        resp: &types::Response,
        ctx: &mut ContextBag,
    ) -> Result<types::ResponseVerdict, PolicyFailure> {
        match self.call(ctx, Hook::Response(summary, resp)).await? {
            HookResult::Response(v) => Ok(v),
            _ => Err(PolicyFailure::Guest("unexpected hook result".into())),
        }
    }

    async fn call(
        &self,
        ctx: &mut ContextBag,
        hook: Hook<'_>,
    ) -> Result<HookResult, PolicyFailure> {
        match (&self.idle, &hook) {
            (Some(idle), Hook::Request(_) | Hook::Response(..)) => {
                self.call_reused(idle, ctx, hook).await
            }
            _ => self.call_fresh(ctx, hook).await,
        }
    }

    /// A fresh store per call: instantiate, `init`, the hook, drop.
    async fn call_fresh(
        &self,
        ctx: &mut ContextBag,
        hook: Hook<'_>,
    ) -> Result<HookResult, PolicyFailure> {
        let mut store = self.new_store(ctx.clone());
        let outcome = self.run(&mut store, hook).await;
        self.finish(&mut store, ctx, outcome)
    }

    /// An idle initialised instance (or a new one) runs the hook; it goes back
    /// to the idle list unless the call trapped, timed out or ran out of
    /// memory (a trapped instance's state is not trusted again).
    async fn call_reused(
        &self,
        idle: &std::sync::Mutex<Vec<Warm>>,
        ctx: &mut ContextBag,
        hook: Hook<'_>,
    ) -> Result<HookResult, PolicyFailure> {
        let taken = lock(idle).pop();
        let mut warm = match taken {
            Some(w) => w,
            None => {
                let mut store = self.new_store(ContextBag::default());
                let started = self.instantiate_and_init(&mut store).await;
                let policy = match started {
                    Ok((policy, _)) => policy,
                    Err(e) => {
                        let mut scratch = ContextBag::default();
                        return self.finish(&mut store, &mut scratch, Err(e));
                    }
                };
                Warm {
                    store,
                    policy,
                    calls: 0,
                }
            }
        };
        {
            let state = warm.store.data_mut();
            state.ctx = ctx.clone();
            state.begin_call();
            state.limiter.memory_denied = false;
        }
        self.arm(&mut warm.store);
        let outcome = Self::run_hook(&warm.policy, &mut warm.store, hook).await;
        let reusable = matches!(outcome, Ok(_) | Err(Outcome::Guest(_)));
        let result = self.finish(&mut warm.store, ctx, outcome);
        warm.calls += 1;
        if reusable && warm.calls < MAX_CALLS_PER_INSTANCE {
            let mut list = lock(idle);
            if list.len() < MAX_IDLE_INSTANCES {
                list.push(warm);
            }
        }
        result
    }

    fn new_store(&self, ctx: ContextBag) -> Store<HostState> {
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
        // A failed call must not leave half-written facts behind, so the
        // context goes in as a copy and comes back only on success.
        let state = HostState::new(
            self.name.clone(),
            limiter,
            self.caps,
            self.kv.clone(),
            self.services.clone(),
            ctx,
        );
        let mut store = Store::new(&self.component.engine, state);
        store.limiter(|s| &mut s.limiter);
        self.arm(&mut store);
        store
    }

    /// Start the call's wall-time budget. The guest yields to the executor at
    /// every epoch tick, so a long call never holds its thread: the caller
    /// may move it elsewhere (the gateway's slow lane) after its first full tick.
    /// At a tick past the budget, the call traps with `Interrupt`.
    fn arm(&self, store: &mut Store<HostState>) {
        let deadline = std::time::Instant::now() + self.timeout;
        store.epoch_deadline_callback(move |_| {
            Ok(if std::time::Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        // The first yield comes after one full tick (1 to 2 ms of running),
        // so a short call that happens to span a tick stays where it is.
        store.set_epoch_deadline(2);
    }

    /// The call's result; on success the store's context becomes the request's.
    fn finish(
        &self,
        store: &mut Store<HostState>,
        ctx: &mut ContextBag,
        outcome: Result<HookResult, Outcome>,
    ) -> Result<HookResult, PolicyFailure> {
        match outcome {
            Ok(r) => {
                *ctx = std::mem::take(&mut store.data_mut().ctx);
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

    async fn run(
        &self,
        store: &mut Store<HostState>,
        hook: Hook<'_>,
    ) -> Result<HookResult, Outcome> {
        let (policy, info) = self.instantiate_and_init(store).await?;
        match hook {
            Hook::Init => Ok(HookResult::Init(info)),
            hook => Self::run_hook(&policy, store, hook).await,
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

    /// One request or response hook on an initialised instance.
    async fn run_hook(
        policy: &crate::bindings::Policy,
        store: &mut Store<HostState>,
        hook: Hook<'_>,
    ) -> Result<HookResult, Outcome> {
        let hooks = policy.edgegate_policy_hooks();
        Ok(match hook {
            Hook::Init => {
                return Err(Outcome::Guest(types::Error::Internal(
                    "init is not a hook".into(),
                )))
            }
            Hook::Request(req) => HookResult::Request(
                hooks
                    .call_on_request(&mut *store, req)
                    .await
                    .map_err(Outcome::Wasm)?
                    .map_err(Outcome::Guest)?,
            ),
            Hook::Response(summary, resp) => HookResult::Response(
                hooks
                    .call_on_response(&mut *store, summary, resp)
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

enum Hook<'a> {
    Init,
    Request(&'a types::Request),
    Response(&'a types::RequestSummary, &'a types::Response),
}

enum HookResult {
    Init(types::PolicyInfo),
    Request(types::RequestVerdict),
    Response(types::ResponseVerdict),
}

enum Outcome {
    Instantiate(wasmtime::Error),
    Wasm(wasmtime::Error),
    Guest(types::Error),
}
