//! The application side: everything that speaks to the web application the
//! daemon delivers to. [`request`] says what one POST is and which paths
//! are allowed; [`client`] sends it over keep-alive HTTP/1.1 connections.
//!
//! May use: `config` and the shared `http1` pool. Knows nothing of SQS or
//! of how messages are settled.

pub mod client;
pub mod request;

pub use client::{Answer, AppClient, Failure};
pub use request::Request;
