//! A counting TCP relay in front of an RPC endpoint: what the manager and the agents ask of the
//! validators' RPC, in requests, without touching either side. Loopback only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The relay: its URL and the number of HTTP requests that went through it.
pub(super) struct CountingProxy {
    pub url: String,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Relays `127.0.0.1:<new port>` to the host:port of `upstream` (an `http://` URL).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let target = upstream
            .split("://")
            .nth(1)
            .unwrap_or(upstream)
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = target.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&target).await {
                        relay(client, server, counter).await;
                    }
                });
            }
        });
        Ok(Self {
            url,
            requests,
            task,
        })
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways and counts `POST ` going up: JSON-RPC requests are POSTs, and no request
/// body the product sends contains that word.
async fn relay(client: TcpStream, server: TcpStream, counter: Arc<AtomicU64>) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        // The tail of the previous read, so a request line split across reads is still seen.
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut window = std::mem::take(&mut carry);
            window.extend_from_slice(&buf[..n]);
            let starts = window.windows(5).filter(|w| w == b"POST ").count();
            counter.fetch_add(starts as u64, Ordering::Relaxed);
            carry = window[window.len().saturating_sub(4)..].to_vec();
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_tx.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    };
    tokio::join!(up, down);
}
