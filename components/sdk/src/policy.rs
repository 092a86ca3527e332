//! The [`Policy`] trait and the glue that exports it through the WIT world.

use crate::{
    BodyChunk, BodyModes, ChunkVerdict, Error, EventVerdict, Request, RequestSummary,
    RequestVerdict, ResponseHead, ResponseVerdict, StreamEvent,
};

/// A policy: built once per instance from its config, then asked about
/// requests, responses and their bodies.
///
/// The host calls `init` on every new instance first. An instance may serve
/// many requests one after another (`reuse_instances`), and is bound to one
/// body from its head call (`on_request` / `on_response`) to the end of that
/// body's chunk or event calls. State that must outlive a request belongs in
/// the [`context`](crate::context) bag (same request) or in [`kv`](crate::kv)
/// (across requests).
pub trait Policy: 'static {
    /// Whether [`Policy::on_response`] does anything. Set it to `false` when you
    /// keep the default `on_response`: the host then skips the response phase
    /// for this policy, which saves one call per request.
    const WANTS_RESPONSE: bool = true;
    /// The request body modes it handles; a config naming another is refused
    /// at admission. Add `CHUNKS` when you write [`Policy::on_request_chunk`].
    const REQUEST_BODY: BodyModes = BodyModes::BUFFER;
    /// The response body modes it handles (`CHUNKS` for
    /// [`Policy::on_response_chunk`], `SSE` for [`Policy::on_response_event`]).
    const RESPONSE_BODY: BodyModes = BodyModes::BUFFER;

    /// Builds the policy from its config table, given as JSON text
    /// (parse it with [`config`](crate::config())).
    fn init(config: &str) -> Result<Self, Error>
    where
        Self: Sized;

    /// The request phase; policies run in config order.
    fn on_request(&self, req: Request) -> Result<RequestVerdict, Error>;

    /// The response phase; policies run in reverse config order.
    /// By default the response passes on unchanged.
    fn on_response(
        &self,
        req: RequestSummary,
        resp: ResponseHead,
    ) -> Result<ResponseVerdict, Error> {
        let _ = (req, resp);
        Ok(ResponseVerdict::continue_())
    }

    /// One chunk of the request body (`request_body = "stream"`).
    fn on_request_chunk(&self, chunk: BodyChunk) -> Result<ChunkVerdict, Error> {
        let _ = chunk;
        Ok(ChunkVerdict::Pass)
    }

    /// One chunk of the response body (`response_body = "stream"`).
    fn on_response_chunk(&self, chunk: BodyChunk) -> Result<ChunkVerdict, Error> {
        let _ = chunk;
        Ok(ChunkVerdict::Pass)
    }

    /// One server-sent event of the response, or its end (`response_body = "sse"`).
    fn on_response_event(&self, event: StreamEvent, carry: String) -> Result<EventVerdict, Error> {
        let _ = (event, carry);
        Ok(EventVerdict::Pass)
    }
}

/// Connects a [`Policy`] type to the component's exports.
///
/// Use it once per component crate, at the crate root:
/// `edgegate_policy_sdk::export_policy!(MyPolicy);`
#[doc(hidden)]
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        // The generated export glue is unsafe FFI by nature; it is the SDK's, not yours.
        #[allow(unsafe_code)]
        const _: () = {
            ::std::thread_local! {
                static EDGEGATE_POLICY: $crate::__private::Slot<$policy> =
                    const { $crate::__private::Slot::new(::core::option::Option::None) };
            }

            struct EdgegatePolicyExport;

            impl $crate::bindings::exports::edgegate::policy::hooks::Guest for EdgegatePolicyExport {
                fn init(config: ::std::string::String) -> ::core::result::Result<$crate::PolicyInfo, $crate::Error> {
                    $crate::__private::init(&EDGEGATE_POLICY, &config)
                }

                fn on_request(
                    req: $crate::__private::WitRequest,
                ) -> ::core::result::Result<$crate::RequestVerdict, $crate::Error> {
                    $crate::__private::on_request(&EDGEGATE_POLICY, $crate::__private::request(req))
                }

                fn on_response(
                    req: $crate::RequestSummary,
                    resp: $crate::__private::WitResponseHead,
                ) -> ::core::result::Result<$crate::ResponseVerdict, $crate::Error> {
                    $crate::__private::on_response(
                        &EDGEGATE_POLICY,
                        req,
                        $crate::__private::response_head(resp),
                    )
                }

                fn on_request_chunk(
                    chunk: $crate::BodyChunk,
                ) -> ::core::result::Result<$crate::ChunkVerdict, $crate::Error> {
                    $crate::__private::with(&EDGEGATE_POLICY, |p| <$policy as $crate::Policy>::on_request_chunk(p, chunk))
                }

                fn on_response_chunk(
                    chunk: $crate::BodyChunk,
                ) -> ::core::result::Result<$crate::ChunkVerdict, $crate::Error> {
                    $crate::__private::with(&EDGEGATE_POLICY, |p| <$policy as $crate::Policy>::on_response_chunk(p, chunk))
                }

                fn on_response_event(
                    event: $crate::StreamEvent,
                    carry: ::std::string::String,
                ) -> ::core::result::Result<$crate::EventVerdict, $crate::Error> {
                    $crate::__private::with(&EDGEGATE_POLICY, |p| <$policy as $crate::Policy>::on_response_event(p, event, carry))
                }
            }

            // The export symbols are named like `edgegate:policy/hooks@0.2.0#init`, which
            // only a wasm linker accepts. Natively the glue above still type-checks, and
            // naming it here keeps the policy type from counting as dead code.
            #[cfg(target_arch = "wasm32")]
            $crate::bindings::export!(EdgegatePolicyExport with_types_in $crate::bindings);
            #[cfg(not(target_arch = "wasm32"))]
            {
                use $crate::bindings::exports::edgegate::policy::hooks::Guest;
                let _ = (
                    <EdgegatePolicyExport as Guest>::init,
                    <EdgegatePolicyExport as Guest>::on_request,
                    <EdgegatePolicyExport as Guest>::on_response,
                    <EdgegatePolicyExport as Guest>::on_request_chunk,
                    <EdgegatePolicyExport as Guest>::on_response_chunk,
                    <EdgegatePolicyExport as Guest>::on_response_event,
                );
            }
        };
    };
}

/// What [`export_policy!`] expands to calls; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::cell::RefCell;
    use std::thread::LocalKey;

    pub use crate::bindings::edgegate::policy::types::{
        Request as WitRequest, ResponseHead as WitResponseHead,
    };
    pub use crate::logic::{request, response_head};

    /// Where an instance keeps its initialized policy.
    pub type Slot<P> = RefCell<Option<P>>;

    /// `init` export: builds the policy, replacing (or clearing, on error) any earlier one.
    pub fn init<P: Policy>(
        slot: &'static LocalKey<Slot<P>>,
        config: &str,
    ) -> Result<crate::PolicyInfo, Error> {
        slot.with(|s| s.replace(None));
        let policy = P::init(config)?;
        slot.with(|s| s.replace(Some(policy)));
        Ok(crate::PolicyInfo {
            wants_response: P::WANTS_RESPONSE,
            request_body: crate::logic::body_modes(P::REQUEST_BODY),
            response_body: crate::logic::body_modes(P::RESPONSE_BODY),
        })
    }

    /// `on-request` export.
    pub fn on_request<P: Policy>(
        slot: &'static LocalKey<Slot<P>>,
        req: Request,
    ) -> Result<RequestVerdict, Error> {
        slot.with(|s| match s.borrow().as_ref() {
            Some(policy) => policy.on_request(req),
            None => Err(not_initialized()),
        })
    }

    /// `on-response` export.
    pub fn on_response<P: Policy>(
        slot: &'static LocalKey<Slot<P>>,
        req: RequestSummary,
        resp: ResponseHead,
    ) -> Result<ResponseVerdict, Error> {
        with(slot, |policy| policy.on_response(req, resp))
    }

    /// Any other export: `f` on the initialised policy.
    pub fn with<P: Policy, T>(
        slot: &'static LocalKey<Slot<P>>,
        f: impl FnOnce(&P) -> Result<T, Error>,
    ) -> Result<T, Error> {
        slot.with(|s| match s.borrow().as_ref() {
            Some(policy) => f(policy),
            None => Err(not_initialized()),
        })
    }

    fn not_initialized() -> Error {
        Error::Internal("policy called before init".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::__private::{self, Slot};
    use super::*;
    use crate::ConfigError;

    struct Counter(u32);

    impl Policy for Counter {
        fn init(config: &str) -> Result<Self, Error> {
            config.parse().map(Counter).map_err(|_| {
                Error::InvalidConfig(ConfigError {
                    key: String::new(),
                    reason: "not a number".into(),
                })
            })
        }

        fn on_request(&self, _req: Request) -> Result<RequestVerdict, Error> {
            let mut changes = crate::RequestMutations::default();
            changes.set_header("x-n", &self.0.to_string());
            Ok(RequestVerdict::continue_with(changes))
        }
    }

    thread_local! {
        static SLOT: Slot<Counter> = const { Slot::new(None) };
    }

    #[test]
    fn calls_before_init_are_internal_errors_and_init_failure_clears_the_slot() {
        let req = Request::new("GET", "/");
        assert!(matches!(
            __private::on_request(&SLOT, req.clone()),
            Err(Error::Internal(_))
        ));

        __private::init(&SLOT, "7").expect("valid config");
        let verdict = __private::on_request(&SLOT, req.clone()).expect("initialized");
        let mut expected = crate::RequestMutations::default();
        expected.set_header("x-n", "7");
        assert_eq!(verdict, RequestVerdict::continue_with(expected));

        let summary = RequestSummary::from_request(&req, "backend");
        assert_eq!(
            __private::on_response(&SLOT, summary, ResponseHead::new(200)),
            Ok(ResponseVerdict::continue_())
        );

        assert!(matches!(
            __private::init(&SLOT, "x"),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            __private::on_request(&SLOT, req),
            Err(Error::Internal(_))
        ));
    }

    // The macro must expand and type-check natively too.
    export_policy!(Counter);
}
