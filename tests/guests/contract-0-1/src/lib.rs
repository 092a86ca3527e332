//! Test guest: a do-nothing policy that exports the hooks of the old policy
//! contract, `edgegate:policy@0.1.0` (wit/ holds that contract as it was).
//! The host refuses it at load, naming both contract versions.

// The generated export glue is unsafe FFI by nature.
#![allow(unsafe_code)]

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ world: "policy", path: "wit" });
}

use bindings::edgegate::policy::types::{
    Error, PolicyInfo, Request, RequestMutations, RequestSummary, RequestVerdict, Response,
    ResponseMutations, ResponseVerdict,
};
use bindings::exports::edgegate::policy::hooks::Guest;

struct Old;

impl Guest for Old {
    fn init(_config: String) -> Result<PolicyInfo, Error> {
        Ok(PolicyInfo {
            wants_response: false,
        })
    }

    fn on_request(_req: Request) -> Result<RequestVerdict, Error> {
        Ok(RequestVerdict::Continue(RequestMutations {
            headers: Vec::new(),
            path: None,
            body: None,
        }))
    }

    fn on_response(_req: RequestSummary, _resp: Response) -> Result<ResponseVerdict, Error> {
        Ok(ResponseVerdict::Continue(ResponseMutations {
            status: None,
            headers: Vec::new(),
            body: None,
        }))
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(Old with_types_in bindings);
