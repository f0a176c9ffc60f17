//! The JSON-RPC (HTTP) and pubsub (websocket, RPC port + 1) servers of a node or of the cluster
//! endpoint, answering with the shapes of `fixtures/agave-3.1.12/rpc-responses.txt` and
//! `pubsub-notifications.txt`. Result objects are `serde_json` maps, so their keys come out sorted,
//! as Agave's do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cluster::{Endpoint, Shared};
use crate::jsonrpc::{self, describe, Params, RpcError};
use crate::server::{serve, Down};
use crate::world::{Consensus, World, DELINQUENT_SLOT_DISTANCE};

/// Agave 3.1.12's feature set id, as the fixture shows it.
/// The `feature-set` a release reports (3.1.12 and 4.2.2 as captured in `fixtures/`).
fn feature_set(version: &str) -> u64 {
    if is_4_2_or_later(version) {
        565_236_538
    } else {
        4_140_108_451
    }
}
const SHRED_VERSION: u64 = 8474;

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    subscriptions: Arc<Mutex<Subscriptions>>,
    down: Down,
}

/// Starts the RPC server on `rpc` and the pubsub server on `pubsub` until `down` fires.
pub fn spawn(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    rpc: TcpListener,
    pubsub: TcpListener,
    down: Down,
) -> Vec<JoinHandle<()>> {
    let ctx = Ctx {
        shared,
        endpoint,
        subscriptions: Arc::default(),
        down: down.clone(),
    };
    let rpc_app = Router::new()
        .route("/health", get(health))
        .fallback(any(json_rpc))
        .with_state(ctx.clone());
    let pubsub_app = Router::new().fallback(get(pubsub_upgrade)).with_state(ctx);
    vec![
        tokio::spawn(serve(rpc, rpc_app, down.clone())),
        tokio::spawn(serve(pubsub, pubsub_app, down)),
    ]
}

async fn json_rpc(
    State(ctx): State<Ctx>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ctx.shared.wait_responsive(ctx.endpoint).await;
    if let Some(refusal) = jsonrpc::check_http(&method, &headers, &body) {
        return refusal;
    }
    let world = ctx.shared.world();
    let answer = jsonrpc::answer_body(&body, |m, p| dispatch(&world, &ctx, m, p));
    drop(world);
    jsonrpc::json_response(answer)
}

/// Agave's `GET /health`: `ok`, `behind` or `unknown` as plain text.
async fn health(State(ctx): State<Ctx>) -> Response {
    ctx.shared.wait_responsive(ctx.endpoint).await;
    let behind = slots_behind(&ctx.shared.world(), ctx.endpoint);
    if behind > DELINQUENT_SLOT_DISTANCE {
        "behind".into_response()
    } else {
        "ok".into_response()
    }
}

fn slots_behind(world: &World, endpoint: Endpoint) -> u64 {
    match endpoint {
        Endpoint::Network => 0,
        Endpoint::Node(i) => world.nodes[i].faults.behind,
    }
}

fn endpoint_slot(world: &World, endpoint: Endpoint) -> u64 {
    match endpoint {
        Endpoint::Network => world.slot,
        Endpoint::Node(i) => world.node_slot(i),
    }
}

fn dispatch(world: &World, ctx: &Ctx, method: &str, params: &Params) -> Result<Value, RpcError> {
    let endpoint = ctx.endpoint;
    match method {
        "getIdentity" => {
            params.expect_none()?;
            let identity = match endpoint {
                Endpoint::Network => world.network.identity,
                Endpoint::Node(i) => world.nodes[i].identity.pubkey(),
            };
            Ok(json!({"identity": identity.to_string()}))
        }
        "getVersion" => {
            params.expect_none()?;
            let version = version_of(world, endpoint);
            Ok(json!({"feature-set": feature_set(&version), "solana-core": version}))
        }
        "getHealth" => {
            params.expect_none()?;
            let behind = slots_behind(world, endpoint);
            if behind > DELINQUENT_SLOT_DISTANCE {
                Err(RpcError {
                    code: -32005,
                    message: format!("Node is behind by {behind} slots"),
                    data: Some(json!({"numSlotsBehind": behind})),
                })
            } else {
                Ok(json!("ok"))
            }
        }
        "getSlot" => {
            let config = params.optional_config()?;
            let slot = endpoint_slot(world, endpoint);
            Ok(json!(at_commitment(
                world,
                slot,
                commitment(config.as_ref(), "finalized")?
            )))
        }
        "getEpochInfo" => {
            let config = params.optional_config()?;
            let slot = at_commitment(
                world,
                endpoint_slot(world, endpoint),
                commitment(config.as_ref(), "finalized")?,
            );
            Ok(json!({
                "absoluteSlot": slot,
                "blockHeight": slot.saturating_sub(7),
                "epoch": slot / world.slots_in_epoch,
                "slotIndex": slot % world.slots_in_epoch,
                "slotsInEpoch": world.slots_in_epoch,
                "transactionCount": world.transaction_count,
            }))
        }
        "getVoteAccounts" => vote_accounts(world, endpoint, params),
        // solana-rpc `rpc.rs` `get_slot_leaders`: (start_slot, limit), limit at most 5000.
        "getSlotLeaders" => {
            let items = params.tuple(2)?;
            let number = |v: &Value| {
                v.as_u64().ok_or_else(|| {
                    RpcError::invalid_params(format!(
                        "invalid type: {}, expected u64",
                        crate::jsonrpc::describe(v)
                    ))
                })
            };
            let (start, limit) = (number(&items[0])?, number(&items[1])?);
            if limit > 5000 {
                return Err(RpcError::new(-32602, "Invalid limit; max 5000"));
            }
            Ok(json!((start..start + limit)
                .map(|slot| world.slot_leader(slot).to_string())
                .collect::<Vec<_>>()))
        }
        // solana-rpc 4.2 `rpc.rs`: unknown to older nodes; null until Alpenglow runs.
        "getAgGenesisCert" if is_4_2_or_later(&version_of(world, endpoint)) => {
            params.expect_none()?;
            Ok(match world.consensus {
                Consensus::Alpenglow { genesis_slot } => json!({
                    "block": {"block_id": vec![0u8; 32], "slot": genesis_slot},
                    "signature": {"bitmap": [0, 0, 0], "signature": vec![0u8; 192]},
                }),
                _ => Value::Null,
            })
        }
        "getAccountInfo" => account_info(world, endpoint, params),
        "getClusterNodes" => {
            params.expect_none()?;
            Ok(cluster_nodes(world, &ctx.shared))
        }
        _ => Err(RpcError::method_not_found()),
    }
}

fn version_of(world: &World, endpoint: Endpoint) -> String {
    match endpoint {
        Endpoint::Network => world
            .nodes
            .first()
            .map(|n| n.version.clone())
            .unwrap_or_else(|| crate::cluster::DEFAULT_VERSION.to_string()),
        Endpoint::Node(i) => world.nodes[i].version.clone(),
    }
}

fn is_4_2_or_later(version: &str) -> bool {
    let mut parts = version.split(['.', '-']);
    let major: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (4, 2)
}

/// `getAccountInfo`: only the Alpenglow feature account of the endpoint's version line is known
/// (bincode `Feature { activated_at: Option<u64> }`, owned by the feature program).
fn account_info(world: &World, endpoint: Endpoint, params: &Params) -> Result<Value, RpcError> {
    use base64::Engine;
    let items = params.at_least(1)?;
    let Some(address) = items[0].as_str() else {
        return Err(RpcError::invalid_params("invalid type: expected a string"));
    };
    let version = version_of(world, endpoint);
    let feature = if version.starts_with("4.2") {
        failover_alpenglow_feature::V4_2
    } else {
        failover_alpenglow_feature::V4_3
    };
    let context = json!({"apiVersion": version, "slot": endpoint_slot(world, endpoint)});
    let value = match world.alpenglow_activated_at() {
        Some(at) if address == feature => {
            let mut data = vec![1u8];
            data.extend_from_slice(&at.to_le_bytes());
            json!({
                "data": [base64::engine::general_purpose::STANDARD.encode(&data), "base64"],
                "executable": false,
                "lamports": 1_009_200,
                "owner": "Feature111111111111111111111111111111111111",
                "rentEpoch": u64::MAX,
                "space": 9,
            })
        }
        _ => Value::Null,
    };
    Ok(json!({"context": context, "value": value}))
}

/// The Alpenglow feature ids (agave-feature-set 4.2 and 4.3).
mod failover_alpenglow_feature {
    pub const V4_2: &str = "a1penGLz8Vm2QHYB3JPefBiU4BY3Z6JkW2k3Scw5GWP";
    pub const V4_3: &str = "A1pengvuM6JEcyNuTnMqepBKhwHE3N6PmUrdATGawhJS";
}

#[derive(Clone, Copy)]
enum Commitment {
    Processed,
    Confirmed,
    Finalized,
}

fn commitment(config: Option<&Map<String, Value>>, default: &str) -> Result<Commitment, RpcError> {
    let value = config
        .and_then(|c| c.get("commitment"))
        .cloned()
        .unwrap_or_else(|| Value::String(default.into()));
    match value.as_str() {
        Some("processed") | Some("recent") => Ok(Commitment::Processed),
        Some("confirmed") | Some("single") | Some("singleGossip") => Ok(Commitment::Confirmed),
        Some("finalized") | Some("max") | Some("root") => Ok(Commitment::Finalized),
        Some(other) => Err(RpcError::invalid_params(format!(
            "unknown variant `{other}`, expected one of `processed`, `confirmed`, `finalized`"
        ))),
        None => Err(RpcError::invalid_params(format!(
            "invalid type: {}, expected a string",
            describe(&value)
        ))),
    }
}

fn at_commitment(world: &World, slot: u64, commitment: Commitment) -> u64 {
    match commitment {
        Commitment::Processed => slot,
        Commitment::Confirmed => slot.saturating_sub(1),
        Commitment::Finalized => slot.saturating_sub(world.root_distance()),
    }
}

fn vote_accounts(world: &World, endpoint: Endpoint, params: &Params) -> Result<Value, RpcError> {
    let config = params.optional_config()?;
    let commitment = commitment(config.as_ref(), "finalized")?;
    let bank_slot = at_commitment(world, endpoint_slot(world, endpoint), commitment);
    let version = version_of(world, endpoint);
    let filter = match config.as_ref().and_then(|c| c.get("votePubkey")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.parse::<failover_identity::Pubkey>().map_err(|_| {
            let kind = if bs58_len(s).is_some_and(|n| n != 32) {
                "WrongSize"
            } else {
                "Invalid"
            };
            RpcError::new(-32602, format!("Invalid param: {kind}"))
        })?),
        Some(other) => {
            return Err(RpcError::invalid_params(format!(
                "invalid type: {}, expected a string",
                describe(other)
            )))
        }
    };
    let vote = &world.vote;
    // A bank at `bank_slot` has seen votes up to the slot before it.
    let seen = |last: u64| last.min(bank_slot.saturating_sub(1));
    let entries = [
        (
            world.network.vote_pubkey,
            world.network.identity,
            world.network.activated_stake,
            seen(bank_slot),
            bank_slot.saturating_sub(world.root_distance()),
            100u8,
            world.slot,
        ),
        (
            vote.vote_pubkey,
            vote.node_pubkey,
            vote.activated_stake,
            seen(vote.last_vote),
            vote.root_slot.min(seen(vote.last_vote)),
            vote.commission,
            vote.credits,
        ),
    ];
    let mut current = Vec::new();
    let mut delinquent = Vec::new();
    for (vote_pubkey, node, stake, last_vote, root, commission, credits) in entries {
        if filter.is_some_and(|f| f != vote_pubkey) {
            continue;
        }
        let mut entry = json!({
            "activatedStake": stake,
            "commission": commission,
            "epochCredits": [[world.epoch(), credits, 0]],
            "epochVoteAccount": true,
            "lastVote": last_vote,
            "nodePubkey": node.to_string(),
            "rootSlot": root,
            "votePubkey": vote_pubkey.to_string(),
        });
        if is_4_2_or_later(&version) {
            entry["inflationRewardsCommissionBps"] = json!(u64::from(commission) * 100);
        }
        if world.is_alpenglow() {
            // Alpenglow credits come with the epoch's rewards: a 4.2.2 cluster showed none yet.
            entry["epochCredits"] = json!([]);
        }
        let is_current = if bank_slot >= DELINQUENT_SLOT_DISTANCE {
            last_vote > bank_slot - DELINQUENT_SLOT_DISTANCE
        } else {
            last_vote > 0
        };
        if is_current {
            current.push(entry);
        } else {
            delinquent.push(entry);
        }
    }
    Ok(json!({"current": current, "delinquent": delinquent}))
}

fn bs58_len(s: &str) -> Option<usize> {
    const ALPHABET: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    if !s.chars().all(|c| ALPHABET.contains(c)) {
        return None;
    }
    // Each base58 digit carries log2(58) ≈ 5.86 bits.
    Some((s.len() * 586).div_ceil(800))
}

/// Gossip as `getClusterNodes` shows it: the network node and every live node of the pair, each
/// under its current identity at its own address.
fn cluster_nodes(world: &World, shared: &Shared) -> Value {
    let entry = |pubkey: String, rpc: std::net::SocketAddr, version: &str| {
        let ip = rpc.ip();
        let at = |port: u16| format!("{ip}:{port}");
        if is_4_2_or_later(version) {
            // 4.2 dropped the UDP TPU ports from gossip and names the client.
            return json!({
                "clientId": "Agave",
                "featureSet": feature_set(version),
                "gossip": at(8001),
                "pubkey": pubkey,
                "pubsub": at(rpc.port() + 1),
                "rpc": rpc.to_string(),
                "serveRepair": at(8011),
                "shredVersion": SHRED_VERSION,
                "tpu": null,
                "tpuForwards": null,
                "tpuForwardsQuic": at(8009),
                "tpuQuic": at(8008),
                "tpuVote": at(8004),
                "tvu": at(8000),
                "version": version,
            });
        }
        json!({
            "featureSet": feature_set(version),
            "gossip": at(8001),
            "pubkey": pubkey,
            "pubsub": at(rpc.port() + 1),
            "rpc": rpc.to_string(),
            "serveRepair": at(8011),
            "shredVersion": SHRED_VERSION,
            "tpu": at(8002),
            "tpuForwards": at(8003),
            "tpuForwardsQuic": at(8009),
            "tpuQuic": at(8008),
            "tpuVote": at(8004),
            "tvu": at(8000),
            "version": version,
        })
    };
    let mut nodes = vec![entry(
        world.network.identity.to_string(),
        shared.network_rpc_addr,
        &version_of(world, Endpoint::Network),
    )];
    for (i, node) in world.nodes.iter().enumerate() {
        // A cut-off node drops out of the cluster's gossip as a crashed one does.
        let shown = match &world.network.gossip_frozen {
            Some(frozen) => frozen[i],
            None => (!node.faults.crashed && !node.faults.cut_off).then(|| node.identity.pubkey()),
        };
        if let Some(identity) = shown {
            nodes.push(entry(
                identity.to_string(),
                shared.rpc_addrs[i],
                &node.version,
            ));
        }
    }
    Value::Array(nodes)
}

/// Pubsub subscriptions of one endpoint: one id counter from 0, and identical subscriptions share
/// an id while anyone holds it (solana-rpc `rpc_subscription_tracker.rs`).
#[derive(Default)]
struct Subscriptions {
    next_id: u64,
    /// kind → (id, holders)
    active: HashMap<&'static str, (u64, usize)>,
}

impl Subscriptions {
    fn subscribe(&mut self, kind: &'static str) -> u64 {
        let next = &mut self.next_id;
        let entry = self.active.entry(kind).or_insert_with(|| {
            let id = *next;
            *next += 1;
            (id, 0)
        });
        entry.1 += 1;
        entry.0
    }

    fn unsubscribe(&mut self, kind: &'static str, id: u64) -> bool {
        match self.active.get_mut(kind) {
            Some((held, holders)) if *held == id => {
                *holders -= 1;
                if *holders == 0 {
                    self.active.remove(kind);
                }
                true
            }
            _ => false,
        }
    }
}

async fn pubsub_upgrade(State(ctx): State<Ctx>, upgrade: WebSocketUpgrade) -> Response {
    ctx.shared.wait_responsive(ctx.endpoint).await;
    upgrade.on_upgrade(move |socket| pubsub_session(ctx, socket))
}

/// One websocket connection: answers (un)subscribe requests and pushes slot and root
/// notifications for what this connection subscribed to.
async fn pubsub_session(ctx: Ctx, mut socket: WebSocket) {
    let mut slots = ctx.shared.slots.subscribe();
    let mut down = ctx.down.clone();
    // This connection's subscriptions: kind → id.
    let mut mine: HashMap<&'static str, u64> = HashMap::new();
    let mut last_sent: Option<u64> = None;
    loop {
        tokio::select! {
            _ = down.fired() => return,
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Ping(p))) => {
                        let _ = socket.send(Message::Pong(p)).await;
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                ctx.shared.wait_responsive(ctx.endpoint).await;
                let answer = jsonrpc::answer_body(text.as_bytes(), |method, params| {
                    pubsub_dispatch(&ctx, &mut mine, method, params)
                });
                if let Some(answer) = answer {
                    if socket.send(Message::Text(answer.into())).await.is_err() {
                        break;
                    }
                }
            }
            tick = slots.recv() => {
                if tick.is_err() && !matches!(tick, Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) {
                    break;
                }
                let (slot, responsive, root_distance) = {
                    let world = ctx.shared.world();
                    let responsive = match ctx.endpoint {
                        Endpoint::Network => !world.network.pubsub_silent,
                        Endpoint::Node(i) => world.nodes[i].responsive(),
                    };
                    (endpoint_slot(&world, ctx.endpoint), responsive, world.root_distance())
                };
                if !responsive || last_sent.is_some_and(|s| slot <= s) {
                    continue;
                }
                last_sent = Some(slot);
                let root = slot.saturating_sub(root_distance);
                let mut frames = Vec::new();
                if let Some(id) = mine.get("slot") {
                    frames.push(json!({"jsonrpc": "2.0", "method": "slotNotification",
                        "params": {"result": {"slot": slot, "parent": slot - 1, "root": root}, "subscription": id}}));
                }
                if let Some(id) = mine.get("root") {
                    frames.push(json!({"jsonrpc": "2.0", "method": "rootNotification",
                        "params": {"result": root, "subscription": id}}));
                }
                for frame in frames {
                    if socket.send(Message::Text(notification_text(&frame).into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    let mut subs = ctx.subscriptions.lock().expect("subscriptions");
    for (kind, id) in mine {
        subs.unsubscribe(kind, id);
    }
}

/// Agave writes notifications from structs, so `slot, parent, root` keep that order (not sorted).
fn notification_text(frame: &Value) -> String {
    let params = &frame["params"];
    let result = &params["result"];
    let result_text = match result.get("slot") {
        Some(slot) => format!(
            r#"{{"slot":{slot},"parent":{},"root":{}}}"#,
            result["parent"], result["root"]
        ),
        None => result.to_string(),
    };
    format!(
        r#"{{"jsonrpc":"2.0","method":{},"params":{{"result":{result_text},"subscription":{}}}}}"#,
        frame["method"], params["subscription"]
    )
}

fn pubsub_dispatch(
    ctx: &Ctx,
    mine: &mut HashMap<&'static str, u64>,
    method: &str,
    params: &Params,
) -> Result<Value, RpcError> {
    let kind = match method {
        "slotSubscribe" | "slotUnsubscribe" => "slot",
        "rootSubscribe" | "rootUnsubscribe" => "root",
        _ => return Err(RpcError::method_not_found()),
    };
    let mut subs = ctx.subscriptions.lock().expect("subscriptions");
    if method.ends_with("Unsubscribe") {
        let items = params.tuple(1)?;
        let id = items[0].as_u64().ok_or_else(|| {
            RpcError::invalid_params(format!(
                "invalid type: {}, expected u64",
                describe(&items[0])
            ))
        })?;
        if mine.get(kind) == Some(&id) && subs.unsubscribe(kind, id) {
            mine.remove(kind);
            Ok(json!(true))
        } else {
            Err(RpcError::new(-32602, "Invalid subscription id."))
        }
    } else {
        params.expect_none()?;
        if let Some(id) = mine.get(kind) {
            // A second identical subscription on one connection shares the id too.
            return Ok(json!(id));
        }
        let id = subs.subscribe(kind);
        mine.insert(kind, id);
        Ok(json!(id))
    }
}
