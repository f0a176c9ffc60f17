//! Serving HTTP (and websocket upgrades) so that a simulated crash really drops every connection:
//! each connection runs in its own task that ends the moment the node's `down` signal fires, the
//! way a killed process's sockets close. `axum::serve` keeps connections alive past its own end, so
//! the accept loop is ours.

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A signal that fires once, when the process it belongs to "dies".
#[derive(Clone)]
pub struct Down(watch::Receiver<bool>);

impl Down {
    pub fn new() -> (watch::Sender<bool>, Down) {
        let (tx, rx) = watch::channel(false);
        (tx, Down(rx))
    }

    /// Resolves when the signal has fired (or its sender is gone).
    pub async fn fired(&mut self) {
        let _ = self.0.wait_for(|down| *down).await;
    }
}

/// Serves `app` on `listener` until `down` fires; then stops accepting and drops every connection.
pub async fn serve(listener: TcpListener, app: Router, mut down: Down) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = down.fired() => return,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut conn_down = down.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = conn_down.fired() => {}
            }
        });
    }
}
