//! The control API of `failover-sim`, for the demo and benchmarks to drive a running cluster:
//!
//! - `GET /cluster` — endpoints and keypair paths ([`ClusterInfo`]);
//! - `GET /state` — slot, vote account, each node's identity and faults;
//! - `GET /safety` — the safety report;
//! - `POST /nodes/{node}/fault` with a [`Fault`] as JSON (`{"kind":"crash"}`,
//!   `{"kind":"behind","slots":200}`, …); `{node}` is an index from 0 or a name like `node1`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::cluster::{Cluster, Fault};

/// The control API's routes over `cluster`.
pub fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/cluster", get(info))
        .route("/state", get(state))
        .route("/safety", get(safety))
        .route("/nodes/{node}/fault", post(fault))
        .with_state(cluster)
}

async fn info(State(cluster): State<Arc<Cluster>>) -> Response {
    Json(cluster.info().clone()).into_response()
}

async fn state(State(cluster): State<Arc<Cluster>>) -> Response {
    let state = cluster.with_world(|w| {
        json!({
            "slot": w.slot,
            "vote_account": w.vote,
            "nodes": w.nodes.iter().map(|n| json!({
                "name": n.name,
                "identity": (!n.faults.crashed).then(|| n.identity.pubkey().to_string()),
                "last_voted_slot": n.last_voted_slot(),
                "faults": n.faults,
                "version": n.version,
            })).collect::<Vec<_>>(),
        })
    });
    Json(state).into_response()
}

async fn safety(State(cluster): State<Arc<Cluster>>) -> Response {
    Json(cluster.safety()).into_response()
}

async fn fault(
    State(cluster): State<Arc<Cluster>>,
    Path(node): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let nodes = &cluster.info().nodes;
    let index = node
        .parse::<usize>()
        .ok()
        .filter(|i| *i < nodes.len())
        .or_else(|| nodes.iter().position(|n| n.name == node));
    let Some(index) = index else {
        return (StatusCode::NOT_FOUND, format!("no node {node:?}\n")).into_response();
    };
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("bad fault: {e}; e.g. {{\"kind\":\"crash\"}}\n"),
            )
                .into_response()
        }
    };
    match cluster.fault(index, fault.clone()).await {
        Ok(()) => Json(json!({"node": nodes[index].name, "applied": fault})).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
    }
}
