//! A node's admin RPC on `<ledger>/admin.rpc`, as Agave 3.1 serves it: requests read as a JSON
//! stream (no newline needed, several per write), one `\n`-terminated answer per request, params
//! counted strictly, and Agave's result shapes and error strings
//! (`fixtures/agave-3.1.12/admin-rpc-transcript.txt`). Nodes reporting Agave ≥ 4.2 take the
//! three-param `setIdentity`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use failover_identity::admin_rpc::SetIdentityArity;
use failover_identity::Keypair;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::cluster::{exit_node, Endpoint, Shared};
use crate::jsonrpc::{self, Params, RpcError};
use crate::server::Down;

/// Largest request we buffer; Agave's IPC server has no such need, but a test peer might flood.
const MAX_PENDING: usize = 1 << 20;

/// Binds `<ledger>/admin.rpc` for node `i` and serves it until `down` fires.
pub fn spawn(
    shared: Arc<Shared>,
    i: usize,
    socket: &Path,
    down: Down,
) -> anyhow::Result<JoinHandle<()>> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    // Agave's socket is for the validator's user only.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let socket: PathBuf = socket.to_path_buf();
    Ok(tokio::spawn(async move {
        let mut accept_down = down.clone();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                _ = accept_down.fired() => break,
            };
            let shared = shared.clone();
            let mut conn_down = down.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = session(shared, i, stream) => {}
                    _ = conn_down.fired() => {}
                }
            });
        }
        drop(listener);
        let _ = std::fs::remove_file(&socket);
    }))
}

async fn session(shared: Arc<Shared>, i: usize, mut stream: UnixStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_PENDING {
            return;
        }
        let mut requests = Vec::new();
        let mut consumed = 0;
        {
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            loop {
                match values.next() {
                    Some(Ok(v)) => {
                        consumed = values.byte_offset();
                        requests.push(v);
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(_)) => {
                        // jsonrpc's IPC codec answers a parse error and drops the bad bytes.
                        let frame = jsonrpc::error_frame(
                            Value::Null,
                            &RpcError::new(-32700, "Parse error"),
                        );
                        let _ = stream.write_all(format!("{frame}\n").as_bytes()).await;
                        consumed = buf.len();
                        break;
                    }
                    None => break,
                }
            }
        }
        buf.drain(..consumed);
        for request in requests {
            shared.wait_responsive(Endpoint::Node(i)).await;
            let delay = shared.admin_delay(i);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let answer = jsonrpc::answer_one(&request, &mut |method, params| {
                dispatch(&shared, i, method, params)
            });
            if let Some(answer) = answer {
                if stream
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    i: usize,
    method: &str,
    params: &Params,
) -> Result<Value, RpcError> {
    // Until start-up completes Agave answers only `startProgress` (and `exit`, `pid`).
    let (starting, is_4_2) = {
        let world = shared.world();
        (
            world.nodes[i].faults.starting_until.is_some(),
            world.nodes[i].is_4_2_or_later(),
        )
    };
    if starting && !matches!(method, "startProgress" | "exit" | "pid") {
        return Err(RpcError::new(
            -32602,
            "Retry once validator start up is complete",
        ));
    }
    match method {
        "contactInfo" => {
            params.expect_none()?;
            let world = shared.world();
            let node = &world.nodes[i];
            let rpc = shared.rpc_addrs[i];
            let ip = rpc.ip();
            let at = |port: u16| format!("{ip}:{port}");
            if node.is_4_2_or_later() {
                // 4.2 has no TVU QUIC port and no UDP TPU (":1" stands for an unset socket).
                return Ok(json!({
                    "gossip": at(8001),
                    "id": node.identity.pubkey().to_string(),
                    "last_updated_timestamp": unix_millis(),
                    "rpc": rpc.to_string(),
                    "rpc_pubsub": at(rpc.port() + 1),
                    "serve_repair": at(8011),
                    "serve_repair_quic": at(1),
                    "shred_version": 8474,
                    "tpu": at(1),
                    "tpu_forwards": at(1),
                    "tpu_vote": at(8004),
                    "tvu": at(8000),
                }));
            }
            Ok(json!({
                "gossip": at(8001),
                "id": node.identity.pubkey().to_string(),
                "last_updated_timestamp": unix_millis(),
                "rpc": rpc.to_string(),
                "rpc_pubsub": at(rpc.port() + 1),
                "serve_repair": at(8011),
                "serve_repair_quic": at(8012),
                "shred_version": 8474,
                "tpu": at(8002),
                "tpu_forwards": at(8003),
                "tpu_vote": at(8004),
                "tvu": at(8000),
                "tvu_quic": at(8001),
            }))
        }
        // Agave 4.2: whether the vote account holds a validator admission ticket, and whether
        // this node would vote (`voting_enabled`: its authorized-voter list is not empty).
        "validatorAdmissionTicketStatus" if is_4_2 => {
            params.expect_none()?;
            let world = shared.world();
            Ok(json!({
                "current_epoch": world.epoch(),
                "current_epoch_vote_account_stake": world.vote.activated_stake,
                "current_epoch_vote_accounts": 2,
                "in_current_epoch_vat": true,
                "next_epoch_vat_failure_reason": null,
                "vat_active": true,
                "vote_account": world.vote.vote_pubkey.to_bytes().to_vec(),
                "voting_enabled": !world.nodes[i].authorized_voters.is_empty(),
            }))
        }
        "startProgress" => {
            params.expect_none()?;
            let world = shared.world();
            Ok(match world.nodes[i].faults.starting_until {
                Some(until) => json!({"ProcessingLedger": {"slot": world.slot, "max_slot": until}}),
                None => json!("Running"),
            })
        }
        "pid" => {
            params.expect_none()?;
            Ok(json!(std::process::id()))
        }
        "exit" => {
            params.expect_none()?;
            exit_node(shared, i);
            Ok(Value::Null)
        }
        "setIdentity" | "setIdentityFromBytes" => {
            let arity = {
                let world = shared.world();
                SetIdentityArity::for_version(&world.nodes[i].version)
            };
            let size = if arity == Some(SetIdentityArity::Three) {
                3
            } else {
                2
            };
            let items = params.tuple(size)?;
            let require_tower = items[1].as_bool().ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "invalid type: {}, expected a boolean",
                    jsonrpc::describe(&items[1])
                ))
            })?;
            let keypair = keypair_param(
                &items[0],
                method == "setIdentityFromBytes",
                |path, e| format!("Failed to read identity keypair from {path}: {e}"),
                "Failed to read identity keypair from provided byte array: signature error",
            )?;
            let require_vote_history = match items.get(2) {
                None => false,
                Some(v) => v.as_bool().ok_or_else(|| {
                    RpcError::invalid_params(format!(
                        "invalid type: {}, expected a boolean",
                        jsonrpc::describe(v)
                    ))
                })?,
            };
            let result = shared.world().set_identity(
                i,
                Arc::new(keypair),
                require_tower,
                require_vote_history,
            );
            shared.bump();
            result
                .map(|()| Value::Null)
                .map_err(|e| RpcError::new(e.code, e.message))
        }
        "addAuthorizedVoter" | "addAuthorizedVoterFromBytes" => {
            let items = params.tuple(1)?;
            let keypair = keypair_param(
                &items[0],
                method == "addAuthorizedVoterFromBytes",
                |_, e| e,
                "Failed to read authorized voter keypair from provided byte array: signature error",
            )?;
            let mut world = shared.world();
            let voters = &mut world.nodes[i].authorized_voters;
            if voters.iter().any(|k| k.pubkey() == keypair.pubkey()) {
                return Err(RpcError::new(-32602, "Authorized voter already present"));
            }
            voters.push(Arc::new(keypair));
            Ok(Value::Null)
        }
        "removeAllAuthorizedVoters" => {
            params.expect_none()?;
            shared.world().nodes[i].authorized_voters.clear();
            Ok(Value::Null)
        }
        _ => Err(RpcError::method_not_found()),
    }
}

/// The keypair a method names, as a path on this machine or as 64 bytes, with Agave's messages
/// for each way it can be unreadable.
fn keypair_param(
    item: &Value,
    from_bytes: bool,
    file_error: impl FnOnce(&str, String) -> String,
    bytes_error: &str,
) -> Result<Keypair, RpcError> {
    if from_bytes {
        keypair_bytes(item)
            .and_then(|b| Keypair::from_bytes(&b).ok())
            .ok_or_else(|| RpcError::new(-32602, bytes_error))
    } else {
        let path = string_param(item)?;
        read_keypair(&path).map_err(|e| RpcError::new(-32602, file_error(&path, e)))
    }
}

/// Reads a keypair file as Agave's `read_keypair_file` reports it: I/O errors in std's words.
fn read_keypair(path: &str) -> Result<Keypair, String> {
    let text = Zeroizing::new(std::fs::read(path).map_err(|e| e.to_string())?);
    Keypair::from_json(&text).map_err(|e| e.kind.to_string())
}

fn string_param(v: &Value) -> Result<String, RpcError> {
    v.as_str().map(str::to_string).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "invalid type: {}, expected a string",
            jsonrpc::describe(v)
        ))
    })
}

fn keypair_bytes(v: &Value) -> Option<Zeroizing<Vec<u8>>> {
    let items = v.as_array()?;
    let mut out = Zeroizing::new(Vec::with_capacity(items.len()));
    for item in items {
        out.push(u8::try_from(item.as_u64()?).ok()?);
    }
    Some(out)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
