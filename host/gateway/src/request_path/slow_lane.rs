//! The slow lane: where a policy call that outruns one epoch tick finishes,
//! so that it never holds an I/O worker (and the other requests on it).
//!
//! A call starts on the worker, inline: nearly every call ends well within a
//! millisecond and pays nothing more than a box. A call still running after
//! its first full tick (1 to 2 ms; the runtime yields at every tick, see
//! `PolicyInstance::arm`) moves, as it is, to the **warm lane**: threads at
//! nice 10 ([`WARM_NICE`]), so a legitimately slow call (a signature check, a
//! large body) still progresses on a saturated node. A call
//! still running [`WARM_SLICE`] after it started moves again, to the **idle
//! lane**, whose threads are `SCHED_IDLE` and run only on CPU the workers
//! leave. A hostile policy looping to its budget thus costs the node at most
//! one warm slice per call, and the rest of what it burns is spare CPU; the
//! request waits on a channel without blocking its worker.

use std::future::Future;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::{Duration, Instant};

/// How long a call may run at the workers' priority before it becomes
/// background work.
const WARM_SLICE: Duration = Duration::from_millis(25);

/// The warm lane's nice value: on a saturated core a warm call gets about a
/// tenth of it, so it progresses without taking much from the workers.
const WARM_NICE: i32 = 10;

/// A lane's runtime, started on first use and kept for the process.
fn start_lane(name: &str, idle: bool) -> Option<tokio::runtime::Runtime> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(threads)
        .thread_name(name)
        .enable_time();
    if idle {
        builder.on_thread_start(edgegate_runtime::idle_this_thread);
    } else {
        builder.on_thread_start(|| edgegate_runtime::lower_this_threads_priority(WARM_NICE));
    }
    match builder.build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            tracing::error!(error = %e, lane = name, "cannot start a policy lane; long policy calls stay where they are");
            None
        }
    }
}

fn warm_lane() -> Option<&'static tokio::runtime::Runtime> {
    static LANE: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    LANE.get_or_init(|| start_lane("edgegate-warm-policy", false))
        .as_ref()
}

fn idle_lane() -> Option<&'static tokio::runtime::Runtime> {
    static LANE: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    LANE.get_or_init(|| start_lane("edgegate-idle-policy", true))
        .as_ref()
}

/// Polls `call` until it ends (`Some`) or gives it back unfinished (`None`):
/// at its first pending poll when `until` is `None`, else at the first
/// pending poll past `until`.
async fn poll_until<F: Future + Unpin>(call: &mut F, until: Option<Instant>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *call).poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending if until.is_none_or(|t| Instant::now() >= t) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await
}

/// Runs `call` inline until it first yields, then on the warm lane, then on
/// the idle lane. `None` when a lane lost the call (it panicked): the caller
/// answers 503.
pub(crate) async fn run<F>(call: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    run_with(call, WARM_SLICE).await
}

async fn run_with<F>(call: F, warm_slice: Duration) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let started = Instant::now();
    let mut call = Box::pin(call);
    if let Some(out) = poll_until(&mut call, None).await {
        return Some(out);
    }
    let (Some(warm), Some(idle)) = (warm_lane(), idle_lane()) else {
        return Some(call.await);
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let idle = idle.handle().clone();
    warm.spawn(async move {
        match poll_until(&mut call, Some(started + warm_slice)).await {
            Some(out) => {
                let _ = tx.send(out);
            }
            None => {
                idle.spawn(async move {
                    let _ = tx.send(call.await);
                });
            }
        }
    });
    rx.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> String {
        std::thread::current()
            .name()
            .unwrap_or_default()
            .to_string()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_that_yields_finishes_off_the_calling_thread() {
        let caller = std::thread::current().id();
        let (ran_on, lane) = run(async {
            tokio::task::yield_now().await;
            (std::thread::current().id(), thread_name())
        })
        .await
        .expect("the warm lane returns the result");
        assert_ne!(ran_on, caller, "the rest of the call ran on a lane");
        assert_eq!(lane, "edgegate-warm-policy");
        let inline = run(async { std::thread::current().id() }).await;
        assert_eq!(
            inline,
            Some(caller),
            "a call that never yields stays inline"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_past_its_warm_slice_finishes_on_the_idle_lane() {
        let slice = Duration::from_millis(5);
        let lane = run_with(
            async move {
                let started = Instant::now();
                // Yields (as an epoch tick does) until well past the slice.
                while started.elapsed() < slice * 4 {
                    tokio::task::yield_now().await;
                }
                thread_name()
            },
            slice,
        )
        .await;
        assert_eq!(lane.as_deref(), Some("edgegate-idle-policy"));
    }
}
