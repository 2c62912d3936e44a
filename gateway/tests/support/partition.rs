//! A TCP proxy that can cut one process off from NATS: a network partition
//! on loopback, without namespaces or root.
//!
//! While cut, every proxied connection is closed and new ones are accepted
//! and dropped at once, so the client sees its connection lost and its
//! reconnects fail until the partition heals.

use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The proxy; it stops with the test's runtime.
pub struct Partition {
    /// `nats://127.0.0.1:PORT` of the proxy, for the process to cut off.
    pub url: String,
    /// `true` while connections pass.
    open: Arc<watch::Sender<bool>>,
}

impl Partition {
    /// Proxies a loopback port to `target_port`.
    pub async fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let open = Arc::new(watch::Sender::new(true));
        let state = open.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*state.borrow() {
                    continue; // dropped: refused while cut
                }
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Self { url, open }
    }

    /// Closes every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.open.send_replace(true);
    }
}
