//! A TCP relay in front of an HTTP server that loses answers: each request whose body contains a
//! given text is delivered and answered upstream, and then the connection is cut before the
//! answer reaches the client — the broken network after which "did it happen?" has no answer
//! but asking again. Loopback only; HTTP/1.1 with `Content-Length` bodies, as the agent speaks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct AnswerLosingRelay {
    /// `http://127.0.0.1:<port>`: give this to the client instead of the server's URL.
    pub url: String,
    lost: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl AnswerLosingRelay {
    /// Relays to `upstream` (`http://host:port`); the answers to the first `times` requests
    /// whose body contains `needle` are lost.
    pub async fn start(upstream: &str, needle: &str, times: usize) -> std::io::Result<Self> {
        let target = upstream
            .split("://")
            .nth(1)
            .unwrap_or(upstream)
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let lost = Arc::new(AtomicUsize::new(0));
        let (counter, needle) = (lost.clone(), needle.as_bytes().to_vec());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, counter, needle) = (target.clone(), counter.clone(), needle.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&target).await {
                        let _ = relay(client, server, &needle, times, &counter).await;
                    }
                });
            }
        });
        Ok(Self { url, lost, task })
    }

    /// How many answers were lost so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for AnswerLosingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection, request by request (keep-alive).
async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    needle: &[u8],
    times: usize,
    lost: &AtomicUsize,
) -> std::io::Result<()> {
    loop {
        let Some(request) = read_message(&mut client).await? else {
            return Ok(());
        };
        server.write_all(&request).await?;
        let Some(answer) = read_message(&mut server).await? else {
            return Ok(());
        };
        let body = &request[request
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(0)..];
        let wanted = body.windows(needle.len()).any(|w| w == needle);
        if wanted
            && lost
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < times).then_some(n + 1)
                })
                .is_ok()
        {
            // The server answered; the client never hears it.
            return Ok(());
        }
        client.write_all(&answer).await?;
    }
}

/// One HTTP/1.1 message (head and `Content-Length` body); `None` at a clean end of stream.
async fn read_message(from: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut message = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = message.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        message.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&message[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while message.len() < head_end + length {
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        message.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(message))
}
