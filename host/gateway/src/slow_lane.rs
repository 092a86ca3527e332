//! The slow lane: where a policy call that outruns one epoch tick finishes,
//! so that it never holds an I/O worker (and the other requests on it).
//!
//! A call starts on the worker, inline: nearly every call ends within its
//! first tick (1 ms) and pays nothing more than a box. A call that is still
//! running at the tick has yielded (the runtime yields at every tick, see
//! `PolicyInstance::arm`); its future then moves, as it is, to a small
//! runtime of its own whose threads are `SCHED_IDLE` (they run only on CPU
//! the workers leave), and the request waits for it there without blocking
//! its worker. A hostile policy looping to its budget thus costs the workers
//! one tick per call, and the CPU it burns is what the workers leave.

use std::future::Future;
use std::sync::OnceLock;
use std::task::Poll;

/// The slow lane's runtime, started on first use and kept for the process.
fn lane() -> Option<&'static tokio::runtime::Runtime> {
    static LANE: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    LANE.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("edgegate-slow-policy")
            .on_thread_start(edgegate_runtime::idle_this_thread)
            .enable_time()
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the slow lane; long policy calls stay on the workers");
                None
            }
        }
    })
    .as_ref()
}

/// Runs `call` inline until it first yields, then on the slow lane. `None`
/// when the slow lane lost the call (it panicked): the caller answers 503.
pub(crate) async fn run<F>(call: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut call = Box::pin(call);
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
        return Some(out);
    }
    let Some(lane) = lane() else {
        return Some(call.await);
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    lane.spawn(async move {
        let _ = tx.send(call.await);
    });
    rx.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_that_yields_finishes_off_the_calling_thread() {
        let caller = std::thread::current().id();
        let (ran_on, yielded) = run(async {
            tokio::task::yield_now().await;
            (std::thread::current().id(), true)
        })
        .await
        .expect("the slow lane returns the result");
        assert!(yielded);
        assert_ne!(ran_on, caller, "the rest of the call ran on the slow lane");
        let inline = run(async { std::thread::current().id() }).await;
        assert_eq!(
            inline,
            Some(caller),
            "a call that never yields stays inline"
        );
    }
}
