//! The application side: everything that speaks to the web application the
//! daemon delivers to. [`request`] says what one POST is and which paths
//! are allowed; [`signing`] proves to the application that a POST came
//! from this daemon; [`client`] sends it over keep-alive HTTP/1.1
//! connections; [`probe`] asks whether the application is there at all.
//!
//! May use: `config` and the shared `http1` pool. Knows nothing of SQS or
//! of how messages are settled.

pub mod client;
pub mod probe;
pub mod request;
pub mod signing;

pub use client::{Answer, AppClient, Failure};
pub use request::Request;
pub use signing::Signer;

use std::future::Future;
use std::pin::Pin;

/// A POST's answer, or why there is none.
pub type Answered<'a> = Pin<Box<dyn Future<Output = Result<Answer, Failure>> + Send + 'a>>;

/// The application as the pipeline sees it: something that answers a POST.
/// The real one is [`AppClient`]; tests of the pipeline give their own.
pub trait Application: Send + Sync + 'static {
    fn post(&self, request: Request) -> Answered<'_>;
}

impl Application for AppClient {
    fn post(&self, request: Request) -> Answered<'_> {
        Box::pin(AppClient::post(self, request))
    }
}
