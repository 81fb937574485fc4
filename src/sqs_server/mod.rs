//! An embedded SQS-compatible endpoint, so that sqsd runs with nothing else
//! installed (`sqsd sqs-server`, `sqsd local`).
//!
//! One HTTP listener speaks the AWS JSON 1.0 protocol (`X-Amz-Target:
//! AmazonSQS.<Action>`, what current SDKs send) and the older Query protocol
//! (form-encoded `Action=...`, XML answers). Any signature is accepted: it
//! is a local endpoint, and listens on loopback unless told otherwise.
//!
//! - `api.rs`: the actions, on JSON-shaped documents
//! - `store.rs`: queues and message semantics
//! - `query.rs`: translation between the Query protocol and those documents
//! - `md5.rs`, `error.rs`: digests and error shapes as AWS sends them
//! - `attr.rs`: a message attribute as sent

pub mod api;
pub mod attr;
pub mod error;
pub mod md5;
pub mod query;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http1::{serve as serve_http, Limits, HEAD_TIMEOUT};
use api::Api;
use error::ApiError;

/// Largest request body accepted (a full batch of 256 KiB messages, encoded).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// A request has a minute for its body and its answer: a long poll waits
/// up to 20 s. Clients of a local endpoint (the daemon's pollers, SDKs, test
/// suites) rarely hold more than a few dozen connections.
const LIMITS: Limits = Limits {
    head_timeout: HEAD_TIMEOUT,
    request_timeout: Duration::from_secs(60),
    max_connections: 512,
};

/// Serves the endpoint on `listener` until `stop` is cancelled, bounded as
/// all of sqsd's listeners are (`http1::server`).
pub async fn serve(listener: TcpListener, api: Arc<Api>, stop: CancellationToken) {
    let handler = move |request: Request<Incoming>| {
        let api = api.clone();
        async move { handle(&api, request).await }
    };
    serve_http("SQS endpoint", listener, LIMITS, stop, handler).await;
}

fn request_id() -> String {
    store::message_id()
}

async fn handle(api: &Api, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let query_string = req.uri().query().unwrap_or("").to_string();
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let e = ApiError::invalid_parameter("The request is larger than this server accepts.");
            return match target {
                Some(_) => json_error(&e),
                None => xml_error(&e),
            };
        }
    };
    match target {
        Some(target) => handle_json(api, &target, &body).await,
        None => handle_query(api, &query_string, &body).await,
    }
}

async fn handle_json(api: &Api, target: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let Some(action) = target.strip_prefix("AmazonSQS.") else {
        return json_error(&ApiError::unknown_operation(target));
    };
    let params: Value = if body.is_empty() {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return json_error(&ApiError::malformed(format!("Malformed JSON: {e}"))),
        }
    };
    let Value::Object(params) = params else {
        return json_error(&ApiError::malformed(
            "The request body must be a JSON object.",
        ));
    };
    match api.call(action, &params).await {
        Ok(v) => respond(
            StatusCode::OK,
            "application/x-amz-json-1.0",
            v.to_string(),
            None,
        ),
        Err(e) => json_error(&e),
    }
}

async fn handle_query(api: &Api, query_string: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let mut pairs = query::decode_form(query_string.as_bytes());
    pairs.extend(query::decode_form(body));
    let Some(action) = pairs
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
    else {
        return xml_error(&ApiError::missing_parameter("Action"));
    };
    let params = query::to_document(&pairs);
    match api.call(&action, &params).await {
        Ok(v) => {
            let xml = query::to_xml(&action, &v, &request_id());
            respond(StatusCode::OK, "text/xml", xml, None)
        }
        Err(e) => xml_error(&e),
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    query_error: Option<String>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-requestid", id);
    }
    if let Some(q) = query_error.and_then(|q| HeaderValue::from_str(&q).ok()) {
        h.insert("x-amzn-query-error", q);
    }
    r
}

fn json_error(e: &ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    respond(
        status,
        "application/x-amz-json-1.0",
        e.json_body(),
        Some(e.query_error_header()),
    )
}

fn xml_error(e: &ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    respond(status, "text/xml", query::error_xml(e, &request_id()), None)
}
