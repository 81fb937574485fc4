//! A real HTTP application on loopback that records every request and
//! answers as the test scripts it; it also tracks how many requests it holds
//! at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// One request as the application saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn msgid(&self) -> String {
        self.header("x-aws-sqsd-msgid").unwrap_or_default()
    }

    pub fn receive_count(&self) -> u32 {
        self.header("x-aws-sqsd-receive-count")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// How to answer one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }
}

type Script = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// The running application.
#[derive(Clone)]
pub struct App {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    completed: Arc<AtomicUsize>,
    current: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    /// Fires to take the application down: its port then refuses.
    down: tokio_util::sync::CancellationToken,
}

impl App {
    /// Starts an application that answers 200 to everything.
    pub async fn ok() -> App {
        App::start(|_| Reply::status(200)).await
    }

    pub async fn start(script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind app");
        Self::serve(listener, Arc::new(script))
    }

    /// Starts on a given address (for a port that was refusing before).
    pub async fn start_on(
        addr: SocketAddr,
        script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> App {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind app");
        Self::serve(listener, Arc::new(script))
    }

    fn serve(listener: tokio::net::TcpListener, script: Script) -> App {
        let app = App {
            addr: listener.local_addr().expect("addr"),
            requests: Arc::default(),
            completed: Arc::default(),
            current: Arc::default(),
            peak: Arc::default(),
            down: tokio_util::sync::CancellationToken::new(),
        };
        let state = app.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = state.down.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                let state = state.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let down = state.down.clone();
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        let script = script.clone();
                        async move { Ok::<_, Infallible>(state.answer(req, &*script).await) }
                    });
                    let serve = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = serve => {}
                        _ = down.cancelled() => {}
                    }
                });
            }
        });
        app
    }

    /// Takes the application down, as a crash or a restart would: the
    /// listener closes (its port refuses connections) and so does every
    /// open connection. `App::start_on(app.addr, …)` brings it back.
    pub async fn stop(&self) {
        self.down.cancel();
        // The port refuses once the accept loop has dropped the listener.
        super::eventually(
            Duration::from_secs(5),
            "the application's port to refuse",
            || async {
                tokio::net::TcpStream::connect(self.addr)
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await;
    }

    async fn answer(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        script: &(dyn Fn(&Recorded) -> Reply + Send + Sync),
    ) -> hyper::Response<Full<Bytes>> {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let recorded = Recorded {
            method: parts.method.to_string(),
            target: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            body,
            at: Instant::now(),
        };
        let reply = script(&recorded);
        self.requests.lock().unwrap().push(recorded);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
        *response.status_mut() = hyper::StatusCode::from_u16(reply.status).expect("status");
        for (k, v) in reply.headers {
            response
                .headers_mut()
                .insert(k, v.parse().expect("header value"));
        }
        self.current.fetch_sub(1, Ordering::SeqCst);
        self.completed.fetch_add(1, Ordering::SeqCst);
        response
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests received so far (answered or not).
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_requests(&self, n: usize, within: Duration) -> Vec<Recorded> {
        super::eventually(within, &format!("{n} requests at the application"), || {
            let r = self.requests();
            async move { (r.len() >= n).then_some(r) }
        })
        .await
    }

    /// Requests carrying message id `id`.
    pub fn for_message(&self, id: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.msgid() == id)
            .collect()
    }
}
