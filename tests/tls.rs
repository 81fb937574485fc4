//! SQS over HTTPS, as in production: the daemon reaches the endpoint through
//! a TLS front whose certificate comes from a CA made for the test, trusted
//! only through `SSL_CERT_FILE` (as a corporate or private CA would be).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::app::App;
use common::{base_args, endpoint, sqsd_command, Daemon, TestQueue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const WAIT: Duration = Duration::from_secs(30);

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate it signed for `localhost` and `127.0.0.1`.
fn make_certificates() -> PathBuf {
    let dir = common::scratch_file("ext.cnf", "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        .parent()
        .unwrap()
        .to_path_buf();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=sqsd test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    dir
}

/// Terminates TLS and passes the bytes on to the SQS endpoint under test.
struct TlsFront {
    port: u16,
    connections: Arc<AtomicUsize>,
}

async fn tls_front(dir: &Path) -> TlsFront {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().unwrap().port();
    let upstream = endpoint()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream, counter) =
                (acceptor.clone(), upstream.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(mut server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    TlsFront { port, connections }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_over_https_receives_and_deletes() {
    let dir = make_certificates();
    let front = tls_front(&dir).await;
    let queue = TestQueue::new("tls").await;
    let app = App::ok().await;
    let ids = queue.send_many(15, |i| format!("{{\"n\":{i}}}")).await;
    let mut args = base_args(&queue, &app.url());
    args.extend([
        "--endpoint-url".into(),
        format!("https://localhost:{}", front.port),
    ]);
    let mut cmd = sqsd_command(&args);
    cmd.env("SSL_CERT_FILE", dir.join("ca.pem"));
    let daemon = Daemon::start_with(cmd).await;
    let got = app.wait_requests(15, WAIT).await;
    let mut seen: Vec<String> = got.iter().map(|r| r.msgid()).collect();
    seen.sort();
    seen.dedup();
    let mut sent = ids.clone();
    sent.sort();
    assert_eq!(seen, sent, "every message delivered");
    // Deleted through the same HTTPS endpoint: nothing comes back.
    queue.wait_empty(WAIT).await;
    common::eventually(WAIT, "15 deletes counted", || async {
        (daemon.metric("sqsd_messages_deleted_total").await >= 15.0).then_some(())
    })
    .await;
    assert!(front.connections.load(Ordering::SeqCst) > 0);
    assert_eq!(app.count(), 15, "no message delivered twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_certificate_nobody_vouches_for_is_refused() {
    let dir = make_certificates();
    let front = tls_front(&dir).await;
    let queue = TestQueue::new("tlsbad").await;
    let app = App::ok().await;
    queue.send("should stay").await;
    let mut args = base_args(&queue, &app.url());
    args.extend([
        "--endpoint-url".into(),
        format!("https://localhost:{}", front.port),
    ]);
    // The test CA is not trusted: the daemon must not talk to this endpoint.
    let daemon = Daemon::start(args).await;
    let line = daemon
        .wait_log("cannot reach SQS to check the queue", WAIT)
        .await;
    assert!(
        line.to_lowercase().contains("certificate")
            || daemon.log_text().to_lowercase().contains("certificate"),
        "{line}"
    );
    assert_eq!(
        front.connections.load(Ordering::SeqCst),
        0,
        "no TLS session completed"
    );
    assert_eq!(app.count(), 0);
}
