//! A TCP proxy between the daemon and SQS that a test can cut: while down it
//! closes every open connection and every new one at once.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
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
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { addr, up }
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
