//! A Unix-socket peer that answers like Agave 3.1's admin RPC, for testing the client on the wire.
//!
//! It reads requests as a JSON stream (no newline needed, several per write), checks param counts
//! strictly with jsonrpc-core's messages, and answers with Agave's result shapes and error strings
//! (see shared/reference/agave-3.1.12/admin-rpc-transcript.txt). Behaviours that a real validator
//! shows only under stress — answers out of order, silence, a dropped connection — are switched on
//! per test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use failover_identity::{Keypair, Permissions, Pubkey};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer each request as soon as it is parsed.
    Prompt,
    /// Collect this many requests, then answer them last-first, all in one write.
    ReverseBatch(usize),
    /// Never answer this method (the request is still recorded).
    Silent(&'static str),
    /// Close the connection on receiving this method, without answering.
    HangUp(&'static str),
    /// Answer every call but `startProgress` with the start-up error.
    StartingUp,
    /// Require the three-param `setIdentity` of Agave 4.2+.
    VoteHistoryArity,
    /// Write each answer in two halves with a flush between.
    SplitWrites,
}

pub struct FakeAdmin {
    pub socket: PathBuf,
    pub ledger: PathBuf,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    identity: Pubkey,
    behaviour: Behaviour,
    requests: Vec<Value>,
    connections: usize,
    authorized_voters: Vec<Pubkey>,
}

impl FakeAdmin {
    /// Serves `<ledger>/admin.rpc` as a validator running with `identity`.
    pub fn start(ledger: &Path, identity: Pubkey, behaviour: Behaviour) -> Self {
        let socket = ledger.join("admin.rpc");
        let listener = UnixListener::bind(&socket).expect("bind admin socket");
        let state = Arc::new(Mutex::new(State {
            identity,
            behaviour,
            requests: Vec::new(),
            connections: 0,
            authorized_voters: Vec::new(),
        }));
        let ledger_dir = ledger.to_path_buf();
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    state.lock().unwrap().connections += 1;
                    tokio::spawn(serve(stream, state.clone(), ledger_dir.clone()));
                }
            }
        });
        Self {
            socket,
            ledger: ledger.to_path_buf(),
            state,
            task,
        }
    }

    pub fn identity(&self) -> Pubkey {
        self.state.lock().unwrap().identity
    }

    pub fn requests(&self) -> Vec<Value> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    pub fn authorized_voters(&self) -> Vec<Pubkey> {
        self.state.lock().unwrap().authorized_voters.clone()
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.state.lock().unwrap().behaviour = behaviour;
    }
}

impl Drop for FakeAdmin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: UnixStream, state: Arc<Mutex<State>>, ledger: PathBuf) {
    let mut buf = Vec::new();
    let mut held: Vec<String> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Parse every complete JSON value; keep an incomplete tail for the next read.
        let mut consumed = 0;
        let mut requests = Vec::new();
        {
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            while let Some(item) = values.next() {
                match item {
                    Ok(v) => {
                        consumed = values.byte_offset();
                        requests.push(v);
                    }
                    Err(e) if e.is_eof() => break,
                    Err(_) => return,
                }
            }
        }
        buf.drain(..consumed);

        for request in requests {
            let method = request["method"].as_str().unwrap_or_default().to_string();
            let behaviour = {
                let mut s = state.lock().unwrap();
                s.requests.push(request.clone());
                s.behaviour
            };
            match behaviour {
                Behaviour::Silent(m) if m == method => continue,
                Behaviour::HangUp(m) if m == method => return,
                _ => {}
            }
            let answer = answer(&request, &state, &ledger) + "\n";
            match behaviour {
                Behaviour::ReverseBatch(n) => {
                    held.push(answer);
                    if held.len() == n {
                        let all: String = held.drain(..).rev().collect();
                        if stream.write_all(all.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
                Behaviour::SplitWrites => {
                    let (a, b) = answer.split_at(answer.len() / 2);
                    for half in [a, b] {
                        if stream.write_all(half.as_bytes()).await.is_err()
                            || stream.flush().await.is_err()
                        {
                            return;
                        }
                        tokio::task::yield_now().await;
                    }
                }
                _ => {
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn answer(request: &Value, state: &Mutex<State>, ledger: &Path) -> String {
    let id = request["id"].clone();
    let method = request["method"].as_str().unwrap_or_default();
    let params = request
        .get("params")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ok = |result: Value| json!({"jsonrpc": "2.0", "result": result, "id": id}).to_string();
    let err = |code: i64, message: String| {
        json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id}).to_string()
    };
    let mut s = state.lock().unwrap();
    if s.behaviour == Behaviour::StartingUp && method != "startProgress" {
        return err(-32602, "Retry once validator start up is complete".into());
    }
    let arity = |want: usize| -> Result<(), String> {
        match params.len() {
            n if n == want => Ok(()),
            n if n < want => Err(format!(
                "Invalid params: invalid length {n}, expected a tuple of size {want}."
            )),
            n => Err(format!(
                "Invalid params: invalid length {n}, expected fewer elements in array."
            )),
        }
    };
    match method {
        "contactInfo" => ok(json!({
            "gossip": "127.0.0.1:28001", "id": s.identity.to_string(),
            "last_updated_timestamp": 1795684479198u64, "rpc": "127.0.0.1:28899",
            "rpc_pubsub": "127.0.0.1:28900", "serve_repair": "127.0.0.1:28111",
            "serve_repair_quic": "127.0.0.1:28112", "shred_version": 8474,
            "tpu": "127.0.0.1:28102", "tpu_forwards": "127.0.0.1:28103",
            "tpu_vote": "127.0.0.1:28104", "tvu": "127.0.0.1:28100", "tvu_quic": "127.0.0.1:28101"
        })),
        "startProgress" if s.behaviour == Behaviour::StartingUp => {
            ok(json!({"ProcessingLedger": {"slot": 10, "max_slot": 20}}))
        }
        "startProgress" => ok(json!("Running")),
        "setIdentity" | "setIdentityFromBytes" => {
            let want = if s.behaviour == Behaviour::VoteHistoryArity {
                3
            } else {
                2
            };
            if let Err(message) = arity(want) {
                return err(-32602, message);
            }
            let keypair = if method == "setIdentity" {
                let path = params[0].as_str().unwrap_or_default().to_string();
                match Keypair::read_file(Path::new(&path), Permissions::AllowInsecure) {
                    Ok(k) => k,
                    Err(e) => {
                        return err(
                            -32602,
                            format!("Failed to read identity keypair from {path}: {e}"),
                        )
                    }
                }
            } else {
                let bytes: Vec<u8> = serde_json::from_value(params[0].clone()).unwrap_or_default();
                match Keypair::from_bytes(&bytes) {
                    Ok(k) => k,
                    Err(_) => return err(
                        -32602,
                        "Failed to read identity keypair from provided byte array: signature error"
                            .into(),
                    ),
                }
            };
            let require_tower = params[1].as_bool().unwrap_or(false);
            let tower = ledger.join(format!("tower-1_9-{}.bin", keypair.pubkey()));
            if require_tower && !tower.exists() {
                return err(-32602, format!(
                    "Unable to load tower file for identity {}: IO Error: No such file or directory (os error 2)",
                    keypair.pubkey()
                ));
            }
            s.identity = keypair.pubkey();
            ok(Value::Null)
        }
        "addAuthorizedVoterFromBytes" => {
            if let Err(message) = arity(1) {
                return err(-32602, message);
            }
            let bytes: Vec<u8> = serde_json::from_value(params[0].clone()).unwrap_or_default();
            match Keypair::from_bytes(&bytes) {
                Ok(k) if s.authorized_voters.contains(&k.pubkey()) => {
                    err(-32602, "Authorized voter already present".into())
                }
                Ok(k) => {
                    s.authorized_voters.push(k.pubkey());
                    ok(Value::Null)
                }
                Err(_) => err(-32602, "Failed to read authorized voter keypair from provided byte array: signature error".into()),
            }
        }
        "removeAllAuthorizedVoters" => {
            s.authorized_voters.clear();
            ok(Value::Null)
        }
        _ => err(-32601, "Method not found".into()),
    }
}
