//! Asking whether the application is there: a TCP connect to `worker_url`'s
//! host and port, or a `GET health_url` that must answer 2xx. Each probe is
//! bounded in time and reads no body.

use std::time::Duration;

use crate::config::Config;

/// Longest a `GET health_url` may take before it counts as failed.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a TCP connect of a probe may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How the application is probed.
pub enum Probe {
    /// A TCP connect to `host:port`.
    Connect { host: String, port: u16 },
    /// `GET url`, 2xx within [`HEALTH_TIMEOUT`].
    Health {
        url: String,
        client: reqwest::Client,
    },
}

impl Probe {
    /// The probe for `config`: `health_url` when set, else a connect to
    /// `worker_url`'s host on `app_probe_port` (or `worker_url`'s port).
    pub fn new(config: &Config) -> Result<Probe, String> {
        if let Some(url) = &config.health_url {
            // An application behind a proxy that checks the bearer token
            // needs it on its health checks too; it is never sent to
            // another origin.
            let mut headers = http::HeaderMap::new();
            if let Some(token) = &config.app_token {
                if same_origin(url, &config.worker_url) {
                    if let Ok(mut value) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
                        value.set_sensitive(true);
                        headers.insert(http::header::AUTHORIZATION, value);
                    }
                }
            }
            let client = reqwest::Client::builder()
                .default_headers(headers)
                .connect_timeout(CONNECT_TIMEOUT.min(config.connect_timeout))
                .timeout(HEALTH_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .pool_max_idle_per_host(1)
                .build()
                .map_err(|e| format!("cannot build the health check client: {e}"))?;
            return Ok(Probe::Health {
                url: url.clone(),
                client,
            });
        }
        let url = reqwest::Url::parse(&config.worker_url)
            .map_err(|e| format!("worker_url {}: {e}", config.worker_url))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("worker_url {} has no host", config.worker_url))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        // EB's `healthcheck: TCP:<port>` names the port to probe; the host
        // is the application's.
        let port = match config.app_probe_port {
            Some(port) => port,
            None => url
                .port_or_known_default()
                .ok_or_else(|| format!("worker_url {} has no port", config.worker_url))?,
        };
        Ok(Probe::Connect { host, port })
    }

    /// What is probed, for logs.
    pub fn target(&self) -> String {
        match self {
            Probe::Connect { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Probe::Connect { host, port } => format!("{host}:{port}"),
            Probe::Health { url, .. } => match url.split_once('?') {
                // A query may carry a token: logs show only that there is one.
                Some((path, _)) => format!("{path}?…"),
                None => url.clone(),
            },
        }
    }

    /// One probe: `Ok` when the application answered as it should, else
    /// why not.
    pub async fn check(&self) -> Result<(), String> {
        match self {
            Probe::Connect { host, port } => {
                let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
                match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Ok(Ok(_stream)) => Ok(()),
                    Ok(Err(e)) => Err(format!("cannot connect to {}: {e}", self.target())),
                    Err(_) => Err(format!(
                        "cannot connect to {}: no answer within {CONNECT_TIMEOUT:?}",
                        self.target()
                    )),
                }
            }
            Probe::Health { url, client } => {
                // The body is never read: dropping the response closes it.
                let answer = tokio::time::timeout(HEALTH_TIMEOUT, client.get(url).send()).await;
                match answer {
                    Ok(Ok(r)) if r.status().is_success() => Ok(()),
                    Ok(Ok(r)) => Err(format!(
                        "{} answered {}",
                        self.target(),
                        r.status().as_u16()
                    )),
                    Ok(Err(e)) => Err(format!(
                        "{}: {}",
                        self.target(),
                        crate::http1::error_chain(&e.without_url())
                    )),
                    Err(_) => Err(format!(
                        "{}: no answer within {HEALTH_TIMEOUT:?}",
                        self.target()
                    )),
                }
            }
        }
    }
}

/// Whether two URLs share scheme, host and port.
fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn config(worker_url: &str, health_url: Option<String>) -> Config {
        let flags = [(
            "queue_url".to_string(),
            "https://sqs.us-east-1.amazonaws.com/1/q".to_string(),
        )]
        .into();
        let mut c = crate::config::load(&crate::config::Inputs {
            flags: &flags,
            env: &|_| None,
        })
        .unwrap()
        .config;
        c.worker_url = worker_url.to_string();
        c.health_url = health_url;
        c
    }

    #[tokio::test]
    async fn a_connect_probe_follows_the_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = Probe::new(&config(&format!("http://127.0.0.1:{port}"), None)).unwrap();
        assert_eq!(probe.target(), format!("127.0.0.1:{port}"));
        probe.check().await.unwrap();
        drop(listener);
        let err = probe.check().await.unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }

    #[test]
    fn default_ports_come_from_the_scheme() {
        let p = Probe::new(&config("http://localhost", None)).unwrap();
        assert_eq!(p.target(), "localhost:80");
        let p = Probe::new(&config("https://app.internal/base", None)).unwrap();
        assert_eq!(p.target(), "app.internal:443");
        let p = Probe::new(&config("http://[::1]:8080", None)).unwrap();
        assert_eq!(p.target(), "[::1]:8080");
    }

    #[tokio::test]
    async fn a_probe_port_from_eb_replaces_the_worker_url_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // The application's POSTs go to port 1 (nothing listens there); EB's
        // `healthcheck: TCP:<port>` names the port that is up.
        let mut c = config("http://127.0.0.1:1", None);
        c.app_probe_port = Some(port);
        let probe = Probe::new(&c).unwrap();
        assert_eq!(probe.target(), format!("127.0.0.1:{port}"));
        probe.check().await.unwrap();
    }

    /// A one-shot HTTP server answering `status` to each request.
    async fn answering(status: u16) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_health_probe_wants_2xx() {
        let (ok_url, ok) = answering(204).await;
        let probe = Probe::new(&config("http://127.0.0.1:1", Some(ok_url.clone()))).unwrap();
        assert_eq!(probe.target(), ok_url);
        probe.check().await.unwrap();
        ok.abort();
        let (bad_url, bad) = answering(503).await;
        let probe = Probe::new(&config("http://127.0.0.1:1", Some(bad_url))).unwrap();
        let err = probe.check().await.unwrap_err();
        assert!(err.contains("answered 503"), "{err}");
        bad.abort();
    }

    #[test]
    fn the_token_goes_only_to_the_applications_own_origin() {
        assert!(same_origin(
            "http://localhost/health",
            "http://localhost:80"
        ));
        assert!(same_origin("https://app:8443/h", "https://app:8443/base"));
        assert!(!same_origin("http://other/health", "http://localhost"));
        assert!(!same_origin("https://localhost/health", "http://localhost"));
        assert!(!same_origin(
            "http://localhost:81/health",
            "http://localhost"
        ));
    }

    #[tokio::test]
    async fn a_silent_health_url_fails_within_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        // Accepts and never answers.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let probe = Probe::new(&config("http://127.0.0.1:1", Some(url))).unwrap();
        let started = std::time::Instant::now();
        let err = probe.check().await.unwrap_err();
        assert!(
            err.contains("no answer") || err.contains("timed out"),
            "{err}"
        );
        assert!(started.elapsed() < HEALTH_TIMEOUT + Duration::from_secs(2));
        hold.abort();
    }
}
