//! A TCP proxy between the daemon and SQS that a test can cut: while down it
//! closes every open connection and every new one at once. A cut can also
//! leave the server's side of each open connection open (as a network
//! failure between two hosts does): SQS then still answers a long poll
//! that was open, and what it hands out is lost on the way.

use std::net::SocketAddr;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    /// Whether a cut leaves the server's side of open connections open.
    orphan: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let (up, watch) = watch::channel(true);
        let orphan = Arc::new(AtomicBool::new(false));
        let orphaning = orphan.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !*watch.borrow() {
                    drop(client);
                    continue;
                }
                let mut watch = watch.clone();
                let upstream = upstream.clone();
                let orphaning = orphaning.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    let cut = async {
                        let _ = watch.wait_for(|up| !*up).await;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut => {
                            if orphaning.load(Ordering::SeqCst) {
                                drop(client);
                                // Held open, never read: what the server
                                // sends is lost.
                                tokio::time::sleep(std::time::Duration::from_secs(120)).await;
                                drop(server);
                            }
                        }
                    }
                });
            }
        });
        Proxy { addr, up, orphan }
    }

    /// Cuts the link, leaving the server's side of every open connection
    /// open and unread (see the module documentation).
    pub fn cut_leaving_server_side_open(&self) {
        self.orphan.store(true, Ordering::SeqCst);
        self.up.send_replace(false);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// A handle that can cut the link from anywhere (an application's
    /// script, say).
    pub fn switch(&self) -> Switch {
        Switch {
            up: self.up.clone(),
        }
    }
}

/// Cuts a [`Proxy`]'s link from elsewhere.
#[derive(Clone)]
pub struct Switch {
    up: watch::Sender<bool>,
}

impl Switch {
    /// Cuts the link now and restores it after `d` (from within a tokio
    /// runtime).
    pub fn down_for(&self, d: std::time::Duration) {
        self.up.send_replace(false);
        let up = self.up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            up.send_replace(true);
        });
    }
}
