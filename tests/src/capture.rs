//! What an observer of the manager↔agent traffic holds: a TCP relay in front of an agent that
//! passes every byte through and keeps what the client sent, split into HTTP/1.1 requests, so a
//! test can send a captured request again — byte for byte — to any address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One captured request, exactly as it crossed the wire.
#[derive(Clone, Debug)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// The request line's path, e.g. `/failover`.
    pub path: String,
    pub body: Vec<u8>,
}

/// A recording relay; stops relaying when dropped.
pub struct Capture {
    pub addr: SocketAddr,
    /// What each connection's client sent, one buffer per connection in the order they opened.
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Capture {
    /// Relays connections to `target` from a fresh loopback port.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = log.clone();
                let index = {
                    let mut log = log.lock().expect("capture");
                    log.push(Vec::new());
                    log.len() - 1
                };
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        relay(client, server, log, index).await;
                    }
                });
            }
        });
        Ok(Self { addr, seen, task })
    }

    /// The base URL to give a client instead of the agent's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every complete request seen so far, connection by connection, each in its order.
    pub fn requests(&self) -> Vec<Captured> {
        let seen = self.seen.lock().expect("capture");
        seen.iter().flat_map(|c| split_requests(c)).collect()
    }

    /// The last captured request to `path` whose body contains `needle`.
    pub fn last(&self, path: &str, needle: &str) -> Option<Captured> {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.path == path && String::from_utf8_lossy(&r.body).contains(needle))
    }
}

/// Copies both directions; keeps the client's bytes in the connection's own buffer.
async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    log: Arc<Mutex<Vec<Vec<u8>>>>,
    index: usize,
) {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    log.lock().expect("capture")[index].extend_from_slice(&buf[..n]);
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Splits a byte stream of HTTP/1.1 requests (with `content-length` bodies, as reqwest sends them).
pub fn split_requests(mut stream: &[u8]) -> Vec<Captured> {
    let mut out = Vec::new();
    while let Some(head_end) = find(stream, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&stream[..head_end]).into_owned();
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let total = head_end + 4 + length;
        if stream.len() < total {
            break;
        }
        let path = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
            .to_string();
        out.push(Captured {
            bytes: stream[..total].to_vec(),
            path,
            body: stream[head_end + 4..total].to_vec(),
        });
        stream = &stream[total..];
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` as it was captured to `to` on a new connection; returns the status code and
/// the body of the answer.
pub async fn replay(request: &Captured, to: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(to).await?;
    stream.write_all(&request.bytes).await?;
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    // The agent keeps the connection open (keep-alive): read until one whole answer is in.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&answer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|len| answer.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_requests_and_keeps_their_bytes() {
        let one = b"POST /failover HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello";
        let two = b"POST /status HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        let stream = [&one[..], &two[..], b"POST /x HTTP/1.1\r\n"].concat();
        let requests = split_requests(&stream);
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].bytes, one);
        assert_eq!(requests[0].path, "/failover");
        assert_eq!(requests[0].body, b"hello");
        assert_eq!(requests[1].path, "/status");
        assert_eq!(requests[1].body, b"{}");
    }
}
