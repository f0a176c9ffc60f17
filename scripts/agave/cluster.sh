#!/usr/bin/env bash
# A small real Agave cluster (3.1.12 TowerBFT, or 4.2.2 TowerBFT or Alpenglow) on loopback for the
# end-to-end suite. See --help.
set -euo pipefail

AGAVE_VERSION=3.1.12
ALPENGLOW=0
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
CACHE_DIR=""
CLUSTER_DIR=/tmp/agave-failover-cluster
# A multiple of 4: Alpenglow's block-creation loop takes leader windows as global 4-slot blocks
# (solana-runtime leader_schedule_utils::first_of_consecutive_leader_slots) while the schedule is
# indexed from the epoch's first slot; with 750 the bootstrap node panics at slot 770.
SLOTS_PER_EPOCH=768
TIMEOUT=300
STOP_TIMEOUT=30
NICE="${AGAVE_NICE:-10}"
CPU_PERCENT="${AGAVE_CPU_PERCENT:-150}"
KEEP_ON_FAILURE=0
MARKER=.agave-failover-cluster
# Each node on its own loopback address (all of 127.0.0.0/8 is loopback on Linux), so gossip tells
# the failover pair apart as it would two servers.
host_of() { case "$1" in network) echo 127.0.0.1 ;; a) echo 127.0.0.2 ;; b) echo 127.0.0.3 ;; relay) echo 127.0.0.4 ;; esac; }
NODES=(network a b)
RELAY=0

# Stakes: the network node holds most of the stake, X a small one (10:1 as in the captured cluster).
NETWORK_STAKE_LAMPORTS=10000000000
X_STAKE_LAMPORTS=1000000000
# The relay (--relay): twice X's stake, so it, not X, is the first hop of most of the network's
# shreds; the network node alone still holds more than 60 % of all stake.
RELAY_STAKE_LAMPORTS=2000000000
IDENTITY_BALANCE_LAMPORTS=500000000000
FAUCET_LAMPORTS=1000000000000000

usage() {
    cat <<EOF
Usage: $(basename "$0") COMMAND [OPTIONS]

Runs a three-node agave-validator cluster (--version, default 3.1.12) on loopback (127.0.0.1-3 only):
  network  bootstrap validator with most of the stake   gossip 127.0.0.1:18001  rpc :18899  pubsub :18900
  a        runs as the failover identity X (active)      gossip 127.0.0.2:28001  rpc :28899  pubsub :28900
  b        runs with an unstaked identity (passive),     gossip 127.0.0.3:38001  rpc :38899  pubsub :38900
           same --vote-account as a, --authorized-voter X
  relay    (--relay) a staked validator of its own            gossip 127.0.0.4:48001  rpc :48899
Dynamic ports: 18100-18200, 28100-28200, 38100-38200, 48100-48200.

Commands:
  up                  create keys and genesis, start the three validators, wait until the cluster
                      roots slots and X's vote account gets fresh votes from a, write DIR/cluster.json.
                      A previous cluster in DIR (stopped) is wiped first; a running one is refused.
  down                stop exactly the recorded pids (SIGTERM, wait, SIGKILL); keeps all files.
  status              show each node's process, identity (RPC getIdentity), slot, and X's lastVote.
  stop-node NODE      stop one node by its recorded pid (--signal KILL for kill -9).
  start-node NODE     (re)start one node with its recorded command line; --identity KEYPAIR picks the
                      identity it starts with (required for a and b: X must never run on both).

Options:
  --dir DIR               cluster directory (default ${CLUSTER_DIR})
  --version V             Agave version of the binaries: 3.1.12 (default) or 4.2.2 (up; the other
                          commands read it from DIR/cluster.json)
  --alpenglow             up: Alpenglow from slot 0 (solana-genesis --alpenglow, a BLS key per
                          bootstrap validator derived from its authorized voter); needs 4.2.2
  --relay                 up: a fourth validator with a stake of its own (twice X's). Without
                          it the passive's only turbine parent is whoever holds X: when that node
                          dies, or X's stale gossip entry still points at a demoted node, the
                          passive gets no shreds, and under Alpenglow (votes not in gossip) it
                          does not even learn that slots exist. On mainnet it has many parents.
  --slots-per-epoch N     epoch length for genesis (default ${SLOTS_PER_EPOCH}; up only)
  --cache DIR             where install.sh put the binaries (default
                          \$HOME/.cache/solana-failover/agave-VERSION)
  --timeout SECS          how long up waits for roots and X's votes (default ${TIMEOUT})
  --stop-timeout SECS     how long down waits after SIGTERM before SIGKILL (default ${STOP_TIMEOUT})
  --keep-on-failure       up: leave the validators running when the wait times out
  --signal TERM|KILL      stop-node: signal to send first (default TERM)
  --identity KEYPAIR      start-node: identity keypair file
  -h, --help              show this help

Environment: RUST_LOG (default info) is passed to the validators; AGAVE_NICE (default 10) is their
niceness, and AGAVE_CPU_PERCENT (default 150, 0 for none) caps the three together, in percent of
one CPU, through a cpu cgroup when one is writable: on 2 cores their busy-polling threads otherwise
starve the kernel's workers and the tools under test. AGAVE_CACHE sets the default
cache dir; FAILOVER_IDENTITY overrides the failover-identity binary (default target/debug/).

Files in DIR: keys/*.json (0600), genesis/, ledger/{network,a,b}/ (admin socket admin.rpc,
towers), logs/<node>.log (validator log) and logs/<node>.out (stdout/stderr), pids/<node>.pid,
run/<node>.sh (the exact command line), cluster.json (everything a test needs).
Binaries: run scripts/agave/install.sh first.
EOF
}

die() { echo "cluster.sh: error: $*" >&2; exit 1; }
log() { echo "cluster.sh: $(date +%H:%M:%S) $*" >&2; }

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
COMMAND="$1"
shift
case "$COMMAND" in
    -h|--help|help) usage; exit 0 ;;
    up|down|status|start-node|stop-node) ;;
    *) usage >&2; die "unknown command: $COMMAND" ;;
esac

NODE_ARG=""
SIGNAL=TERM
START_IDENTITY=""
if [[ "$COMMAND" == start-node || "$COMMAND" == stop-node ]]; then
    [[ $# -ge 1 && "$1" != -* ]] || die "$COMMAND needs a node name (network, a, b or relay)"
    NODE_ARG="$1"
    shift
    case "$NODE_ARG" in network|a|b|relay) ;; *) die "unknown node: $NODE_ARG (network, a, b or relay)" ;; esac
fi

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) need_value "$@"; CLUSTER_DIR="$2"; shift 2 ;;
        --version) need_value "$@"; AGAVE_VERSION="$2"; VERSION_GIVEN=1; shift 2 ;;
        --alpenglow) ALPENGLOW=1; shift ;;
        --relay) RELAY=1; shift ;;
        --slots-per-epoch) need_value "$@"; SLOTS_PER_EPOCH="$2"; shift 2 ;;
        --cache) need_value "$@"; CACHE_DIR="$2"; shift 2 ;;
        --timeout) need_value "$@"; TIMEOUT="$2"; shift 2 ;;
        --stop-timeout) need_value "$@"; STOP_TIMEOUT="$2"; shift 2 ;;
        --keep-on-failure) KEEP_ON_FAILURE=1; shift ;;
        --signal) need_value "$@"; SIGNAL="$2"; shift 2 ;;
        --identity) need_value "$@"; START_IDENTITY="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ "$SLOTS_PER_EPOCH" =~ ^[0-9]+$ && "$SLOTS_PER_EPOCH" -ge 32 ]] || die "--slots-per-epoch must be an integer >= 32"
(( SLOTS_PER_EPOCH % 4 == 0 )) || die "--slots-per-epoch must be a multiple of 4 (the leader window); got $SLOTS_PER_EPOCH"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
[[ "$STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "--stop-timeout must be a number of seconds"
case "$SIGNAL" in TERM|KILL) ;; *) die "--signal must be TERM or KILL" ;; esac
command -v python3 >/dev/null || die "python3 is needed"

CLUSTER_DIR="$(realpath -m "$CLUSTER_DIR")"
# Commands other than up run on the cluster up made: its version and consensus are in cluster.json.
if [[ "$COMMAND" != up && -z "${VERSION_GIVEN:-}" && -f "$CLUSTER_DIR/cluster.json" ]]; then
    AGAVE_VERSION="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["agave_version"])' "$CLUSTER_DIR/cluster.json")"
    ALPENGLOW="$(python3 -c 'import json,sys; print(1 if json.load(open(sys.argv[1])).get("consensus") == "alpenglow" else 0)' "$CLUSTER_DIR/cluster.json")"
    RELAY="$(python3 -c 'import json,sys; print(1 if "relay" in json.load(open(sys.argv[1]))["nodes"] else 0)' "$CLUSTER_DIR/cluster.json")"
fi
[[ "$RELAY" == 1 ]] && NODES=(network relay a b)
[[ "$NODE_ARG" != relay || "$RELAY" == 1 ]] || die "this cluster has no relay node (up --relay)"
case "$AGAVE_VERSION" in 3.1.12|4.2.2) ;; *) die "--version must be 3.1.12 or 4.2.2" ;; esac
if [[ "$ALPENGLOW" == 1 && "$AGAVE_VERSION" != 4.2.2 ]]; then
    die "--alpenglow needs --version 4.2.2"
fi
# Agave 4.2 transmits with XDP by default, which loopback cannot carry; --allow-private-addr
# requires --no-xdp there.
AGAVE_4_2=0
[[ "$AGAVE_VERSION" == 4.2.* ]] && AGAVE_4_2=1
[[ -n "$CACHE_DIR" ]] || CACHE_DIR="${AGAVE_CACHE:-$HOME/.cache/solana-failover/agave-${AGAVE_VERSION}}"
CACHE_DIR="$(realpath -m "$CACHE_DIR")"
[[ "$CLUSTER_DIR" != / ]] || die "--dir must not be /"
BIN_DIR="$CACHE_DIR/bin"
SHIM="$CACHE_DIR/librlimit-shim.so"
VALIDATOR="$BIN_DIR/agave-validator"
GENESIS="$BIN_DIR/solana-genesis"
KEYS="$CLUSTER_DIR/keys"
PIDS="$CLUSTER_DIR/pids"
LOGS="$CLUSTER_DIR/logs"
RUN="$CLUSTER_DIR/run"
LEDGERS="$CLUSTER_DIR/ledger"
CLUSTER_JSON="$CLUSTER_DIR/cluster.json"

# Per-node layout. Port bases follow the captured reference cluster (18xxx, 28xxx, 38xxx).
port_base() { case "$1" in network) echo 18000 ;; a) echo 28000 ;; b) echo 38000 ;; relay) echo 48000 ;; esac; }
gossip_port() { echo $(( $(port_base "$1") + 1 )); }
rpc_port() { echo $(( $(port_base "$1") + 899 )); }
dynamic_range() { local b; b="$(port_base "$1")"; echo "$((b + 100))-$((b + 200))"; }
ledger_of() { echo "$LEDGERS/$1"; }
pid_file() { echo "$PIDS/$1.pid"; }

# ---------------------------------------------------------------------------------------------
# Process handling: only pids from our pid files, and only if they are our agave-validator.

read_pid() {
    local f
    f="$(pid_file "$1")"
    [[ -f "$f" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$f")"
    [[ -n "$pid" ]] || return 1
    echo "$pid"
}

# True when PID is alive and is the agave-validator of node NODE in this cluster dir.
is_our_validator() {
    local pid="$1" node="$2" exe cmdline
    [[ -d "/proc/$pid" ]] || return 1
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    # Either still the launcher (bash run/<node>.sh, just before its exec) or the validator itself
    # with this node's ledger on its command line.
    [[ "$cmdline" == *"$RUN/$node.sh"* ]] && return 0
    [[ "$exe" == */agave-validator* && "$cmdline" == *" --ledger $(ledger_of "$node") "* ]]
}

node_running() {
    local pid
    pid="$(read_pid "$1")" || return 1
    is_our_validator "$pid" "$1"
}

stop_node() {
    local node="$1" first_signal="${2:-TERM}" pid
    if ! pid="$(read_pid "$node")"; then
        log "$node: no pid file, nothing to stop"
        return 0
    fi
    if ! is_our_validator "$pid" "$node"; then
        if [[ -d "/proc/$pid" ]]; then
            log "$node: pid $pid is alive but is not this cluster's $node validator; not touching it"
        else
            log "$node: pid $pid already gone"
        fi
        rm -f "$(pid_file "$node")"
        return 0
    fi
    log "$node: sending SIG$first_signal to pid $pid"
    kill "-$first_signal" "$pid" 2>/dev/null || true
    local t0=$SECONDS killed=0
    [[ "$first_signal" == KILL ]] && killed=1
    while [[ -d "/proc/$pid" ]] && ! is_zombie "$pid"; do
        if (( killed == 0 && SECONDS - t0 >= STOP_TIMEOUT )); then
            log "$node: pid $pid still running ${STOP_TIMEOUT}s after SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            killed=1
        fi
        if (( SECONDS - t0 >= STOP_TIMEOUT + 30 )); then
            die "$node: pid $pid does not exit even after SIGKILL"
        fi
        sleep 0.1
    done
    log "$node: pid $pid stopped ($((SECONDS - t0))s)"
    rm -f "$(pid_file "$node")"
}

# A process whose threads have all exited but which is not reaped yet. (While it exits, the main
# thread can already be a zombie with the other threads still running: that is not "stopped".)
is_zombie() {
    [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo X)" == Z ]] || return 1
    local tasks=("/proc/$1/task"/*)
    (( ${#tasks[@]} <= 1 ))
}

start_node() {
    local node="$1" identity="$2" pid
    [[ -x "$RUN/$node.sh" ]] || die "missing $RUN/$node.sh (run '$0 up' first)"
    [[ -f "$identity" ]] || die "identity keypair not found: $identity"
    if node_running "$node"; then
        die "$node is already running (pid $(read_pid "$node"))"
    fi
    rm -f "$(pid_file "$node")"
    check_ports_free "$node"
    # setsid: the validator gets its own session, so the caller's terminal or process group
    # signals do not reach it; run/<node>.sh writes its own pid, then execs agave-validator.
    IDENTITY="$identity" setsid "$RUN/$node.sh" </dev/null >>"$LOGS/$node.out" 2>&1 &
    local waited=0
    while ! pid="$(read_pid "$node")"; do
        (( waited < 100 )) || die "$node did not write its pid file"
        sleep 0.05
        waited=$((waited + 1))
    done
    log "$node: started pid $pid (identity $("$FI" pubkey "$identity"), log $LOGS/$node.log)"
}

check_ports_free() {
    local node="$1"
    python3 - "$(host_of "$node")" "$(gossip_port "$node")" "$(rpc_port "$node")" "$(( $(rpc_port "$node") + 1 ))" <<'EOF' \
        || die "a port of node $node is in use on $(host_of "$node") (another cluster running? see 'ss -ltnup')"
import socket, sys
host = sys.argv[1]
for port in map(int, sys.argv[2:]):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        if kind == socket.SOCK_STREAM:
            # Like the validator's own listeners: TIME_WAIT leftovers of a stopped node are fine.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            print(f"port {port} ({'tcp' if kind == socket.SOCK_STREAM else 'udp'}): {e}", file=sys.stderr)
            sys.exit(1)
        finally:
            s.close()
EOF
}

tail_logs() {
    local node
    for node in "${NODES[@]}"; do
        if [[ -f "$LOGS/$node.out" && -s "$LOGS/$node.out" ]]; then
            echo "----- tail $LOGS/$node.out -----" >&2
            tail -n 15 "$LOGS/$node.out" >&2 || true
        fi
        if [[ -f "$LOGS/$node.log" ]]; then
            echo "----- tail $LOGS/$node.log (WARN/ERROR) -----" >&2
            grep -E ' (WARN|ERROR) ' "$LOGS/$node.log" | tail -n 15 >&2 || true
            echo "----- tail $LOGS/$node.log -----" >&2
            tail -n 25 "$LOGS/$node.log" >&2 || true
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# Tools.

find_failover_identity() {
    FI="${FAILOVER_IDENTITY:-$REPO_DIR/target/debug/failover-identity}"
    if [[ ! -x "$FI" ]]; then
        [[ -z "${FAILOVER_IDENTITY:-}" ]] || die "FAILOVER_IDENTITY=$FI is not executable"
        command -v cargo >/dev/null || die "cargo is needed to build failover-identity"
        log "building failover-identity (cargo build -q -p failover-identity)"
        (cd "$REPO_DIR" && cargo build -q -p failover-identity) || die "cargo build -p failover-identity failed"
        [[ -x "$FI" ]] || die "cargo build did not produce $FI"
    fi
}

check_binaries() {
    local b
    for b in "$VALIDATOR" "$GENESIS"; do
        [[ -x "$b" ]] || die "missing $b; run scripts/agave/install.sh${CACHE_DIR:+ --cache $CACHE_DIR} first"
    done
    [[ -f "$SHIM" ]] || die "missing $SHIM; run scripts/agave/install.sh first"
    "$VALIDATOR" --version | grep -q " ${AGAVE_VERSION} " \
        || die "$VALIDATOR is not ${AGAVE_VERSION}: $("$VALIDATOR" --version)"
}

new_key() {
    "$FI" new --outfile "$KEYS/$1.json" 2>/dev/null || die "failover-identity new --outfile $KEYS/$1.json failed"
}

pubkey() { "$FI" pubkey "$KEYS/$1.json"; }

# ---------------------------------------------------------------------------------------------
# up

prepare_dir() {
    if [[ -e "$CLUSTER_DIR" ]]; then
        [[ -d "$CLUSTER_DIR" ]] || die "$CLUSTER_DIR exists and is not a directory"
        local node
        for node in "${NODES[@]}"; do
            if node_running "$node"; then
                die "$node is still running (pid $(read_pid "$node")) in $CLUSTER_DIR; run '$0 down --dir $CLUSTER_DIR' first"
            fi
        done
        if [[ -n "$(ls -A "$CLUSTER_DIR")" ]]; then
            [[ -f "$CLUSTER_DIR/$MARKER" ]] \
                || die "$CLUSTER_DIR is not empty and was not made by cluster.sh; refusing to wipe it"
            log "wiping the previous (stopped) cluster in $CLUSTER_DIR"
            # Only the entries cluster.sh creates.
            rm -rf "${CLUSTER_DIR:?}/keys" "${CLUSTER_DIR:?}/genesis" "${CLUSTER_DIR:?}/ledger" \
                "${CLUSTER_DIR:?}/logs" "${CLUSTER_DIR:?}/pids" "${CLUSTER_DIR:?}/run" \
                "${CLUSTER_DIR:?}/cluster.json" "${CLUSTER_DIR:?}/validator-accounts.yml"
        fi
    fi
    mkdir -p "$CLUSTER_DIR" "$KEYS" "$PIDS" "$LOGS" "$RUN" "$LEDGERS"
    chmod 700 "$KEYS"
    touch "$CLUSTER_DIR/$MARKER"
    local sock
    sock="$(ledger_of network)/admin.rpc"
    (( ${#sock} < 100 )) || die "cluster dir path too long for a Unix socket path: $sock"
}

make_keys() {
    log "generating keys in $KEYS"
    local k
    for k in network-identity network-vote network-stake x-identity x-vote x-stake \
        a-unstaked b-unstaked faucet; do
        new_key "$k" >/dev/null
    done
    if [[ "$RELAY" == 1 ]]; then
        for k in relay-identity relay-vote relay-stake; do new_key "$k" >/dev/null; done
    fi
}

# The test bed's BLS tool (scripts/agave/bls-pubkey, its own lock file), built once into the cache.
BLS_TOOL=""
build_bls_tool() {
    local target="$HOME/.cache/solana-failover/bls-pubkey-target"
    BLS_TOOL="$target/release/bls-pubkey"
    if [[ -x "$BLS_TOOL" && "$BLS_TOOL" -nt "$SCRIPT_DIR/bls-pubkey/src/main.rs" ]]; then
        return 0
    fi
    command -v cargo >/dev/null || die "cargo is needed to build the BLS key tool"
    log "building the BLS key tool (scripts/agave/bls-pubkey, about a minute once)"
    CARGO_TARGET_DIR="$target" cargo build -q --release --locked \
        --manifest-path "$SCRIPT_DIR/bls-pubkey/Cargo.toml" || die "building bls-pubkey failed"
}

# The base64 compressed BLS pubkey of a validator whose authorized voter is KEY (a key name).
bls_pubkey() { "$BLS_TOOL" "$KEYS/$1.json"; }

# One entry of solana-genesis --validator-accounts-file for the keys NAME-identity, NAME-vote and
# NAME-stake. Genesis vote accounts have the identity as authorized voter: the BLS key derives
# from it.
validator_account() {
    local name="$1" stake="$2"
    cat <<EOF
- balance_lamports: $IDENTITY_BALANCE_LAMPORTS
  stake_lamports: $stake
  identity_account: $(pubkey "$name-identity")
  vote_account: $(pubkey "$name-vote")
  stake_account: $(pubkey "$name-stake")
EOF
    [[ "$ALPENGLOW" == 0 ]] || echo "  bls_pubkey: $(bls_pubkey "$name-identity")"
}

make_genesis() {
    log "creating genesis (slots per epoch $SLOTS_PER_EPOCH, network stake $NETWORK_STAKE_LAMPORTS, X stake $X_STAKE_LAMPORTS$([[ "$ALPENGLOW" == 1 ]] && echo ', Alpenglow from slot 0'))"
    {
        echo "validator_accounts:"
        validator_account x "$X_STAKE_LAMPORTS"
        [[ "$RELAY" == 0 ]] || validator_account relay "$RELAY_STAKE_LAMPORTS"
    } >"$CLUSTER_DIR/validator-accounts.yml"
    local consensus=(--hashes-per-tick sleep)
    if [[ "$ALPENGLOW" == 1 ]]; then
        consensus=(--alpenglow --bootstrap-validator-bls-pubkey "$(bls_pubkey network-identity)")
    fi
    local cmd=(
        "$GENESIS"
        --cluster-type development
        "${consensus[@]}"
        --slots-per-epoch "$SLOTS_PER_EPOCH"
        --ledger "$CLUSTER_DIR/genesis"
        --bootstrap-validator "$(pubkey network-identity)" "$(pubkey network-vote)" "$(pubkey network-stake)"
        --bootstrap-validator-lamports "$IDENTITY_BALANCE_LAMPORTS"
        --bootstrap-validator-stake-lamports "$NETWORK_STAKE_LAMPORTS"
        --validator-accounts-file "$CLUSTER_DIR/validator-accounts.yml"
        --faucet-pubkey "$(pubkey faucet)"
        --faucet-lamports "$FAUCET_LAMPORTS"
    )
    echo "${cmd[*]}" >"$RUN/genesis.cmd"
    "${cmd[@]}" >"$LOGS/genesis.out" 2>&1 || { cat "$LOGS/genesis.out" >&2; die "solana-genesis failed"; }
}

# A cpu cgroup capping all validators of this cluster together (cgroup v1 or v2), or "" when
# there is no writable cpu controller or the cap is off.
CGROUP=""
setup_cgroup() {
    [[ "$CPU_PERCENT" =~ ^[0-9]+$ ]] || die "AGAVE_CPU_PERCENT must be a whole number"
    (( CPU_PERCENT > 0 )) || return 0
    local name quota=$(( CPU_PERCENT * 1000 ))
    name="agave-failover-$(basename "$CLUSTER_DIR")"
    if [[ -w /sys/fs/cgroup/cpu && -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
        CGROUP="/sys/fs/cgroup/cpu/$name"
        mkdir -p "$CGROUP" && echo 100000 >"$CGROUP/cpu.cfs_period_us" \
            && echo "$quota" >"$CGROUP/cpu.cfs_quota_us" || CGROUP=""
    elif [[ -w /sys/fs/cgroup/cgroup.subtree_control ]] && grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control; then
        CGROUP="/sys/fs/cgroup/$name"
        mkdir -p "$CGROUP" && echo "$quota 100000" >"$CGROUP/cpu.max" || CGROUP=""
    fi
    if [[ -n "$CGROUP" ]]; then
        log "validators capped at ${CPU_PERCENT}% of a CPU together (cgroup $CGROUP)"
    else
        log "no writable cpu cgroup: validators run uncapped (at nice $NICE)"
    fi
}

# Writes run/<node>.sh: the exact agave-validator command line of a node. The identity comes from
# $IDENTITY so start-node can restart a node under another identity.
write_launcher() {
    local node="$1" default_identity="$2" vote="$3" voter="$4"
    shift 4
    local extra=("$@") f="$RUN/$node.sh" ledger
    ledger="$(ledger_of "$node")"
    {
        echo '#!/usr/bin/env bash'
        echo "# Generated by scripts/agave/cluster.sh: node $node. Start it with cluster.sh start-node."
        echo 'set -euo pipefail'
        printf 'echo $$ >%q\n' "$(pid_file "$node")"
        if [[ -n "$CGROUP" ]]; then
            printf 'if [[ -w %q ]]; then echo $$ >%q; fi\n' "$CGROUP/cgroup.procs" "$CGROUP/cgroup.procs"
        fi
        printf 'export LD_PRELOAD=%q\n' "$SHIM"
        printf 'default_identity=%q\n' "$default_identity"
        # shellcheck disable=SC2016 # these lines are for the launcher to expand
        echo 'identity="${IDENTITY:-$default_identity}"'
        # shellcheck disable=SC2016
        echo 'export RUST_LOG="${RUST_LOG:-info}" RUST_BACKTRACE=1'
        echo 'unset SOLANA_METRICS_CONFIG'
        # nice: on a 2-core machine three validators can starve the kernel's own workers (the VM
        # logged 'workqueue lockup' and stopped making slots for minutes); the agents and the
        # manager under test must not be starved either (each has a server beside its validator).
        printf 'exec nice -n %q %q' "$NICE" "$VALIDATOR"
        # shellcheck disable=SC2016
        printf ' \\\n    --identity "$identity"'
        local args=(
            --ledger "$ledger"
            --log "$LOGS/$node.log"
            --vote-account "$vote"
            --authorized-voter "$voter"
            --bind-address "$(host_of "$node")"
            --rpc-bind-address "$(host_of "$node")"
            --allow-private-addr
            --gossip-port "$(gossip_port "$node")"
            --rpc-port "$(rpc_port "$node")"
            --dynamic-port-range "$(dynamic_range "$node")"
            --full-rpc-api
            --no-genesis-fetch
            --no-snapshot-fetch
            --no-os-network-limits-test
            --no-poh-speed-test
            --wal-recovery-mode skip_any_corrupted_record
            "${extra[@]}"
        )
        (( AGAVE_4_2 == 0 )) || args+=(--no-xdp)
        local a
        for a in "${args[@]}"; do
            if [[ "$a" == --* ]]; then printf ' \\\n    %q' "$a"; else printf ' %q' "$a"; fi
        done
        echo
    } >"$f"
    chmod 755 "$f"
}

write_cluster_json() {
    local relay_pubkey=""
    [[ "$RELAY" == 1 ]] && relay_pubkey="$(pubkey relay-identity)"
    python3 - "$CLUSTER_JSON" <<EOF
import json, os, sys
def node(name, identity_path, identity_pubkey):
    ledger = "$LEDGERS/" + name
    pid_path = "$PIDS/" + name + ".pid"
    try:
        pid = int(open(pid_path).read().strip())
    except Exception:
        pid = None
    base = {"network": 18000, "a": 28000, "b": 38000, "relay": 48000}[name]
    host = {"network": "$(host_of network)", "a": "$(host_of a)", "b": "$(host_of b)",
            "relay": "$(host_of relay)"}[name]
    return {
        "ip": host,
        "rpc_url": "http://%s:%d" % (host, base + 899),
        "pubsub_url": "ws://%s:%d" % (host, base + 900),
        "gossip": "%s:%d" % (host, base + 1),
        "ledger": ledger,
        "admin_socket": ledger + "/admin.rpc",
        "identity_keypair": identity_path,
        "identity_pubkey": identity_pubkey,
        "pid": pid,
        "pid_file": pid_path,
        "log": "$LOGS/" + name + ".log",
        "stdout_log": "$LOGS/" + name + ".out",
        "launcher": "$RUN/" + name + ".sh",
    }
k = "$KEYS"
genesis = {}
try:
    for line in open("$LOGS/genesis.out"):
        key, _, value = line.partition(": ")
        if key == "Genesis hash":
            genesis["genesis_hash"] = value.strip()
        elif key == "Shred version":
            genesis["shred_version"] = int(value)
except OSError:
    pass
doc = {
    "agave_version": "$AGAVE_VERSION",
    "consensus": "$([[ "$ALPENGLOW" == 1 ]] && echo alpenglow || echo tower)",
    "dir": "$CLUSTER_DIR",
    "script": "$SCRIPT_DIR/cluster.sh",
    "cluster_rpc": "http://$(host_of network):18899",
    "cluster_pubsub": "ws://$(host_of network):18900",
    "entrypoint": "$(host_of network):18001",
    "slots_per_epoch": $SLOTS_PER_EPOCH,
    "genesis_hash": genesis.get("genesis_hash"),
    "shred_version": genesis.get("shred_version"),
    "agave_validator": "$VALIDATOR",
    "rlimit_shim": "$SHIM",
    "nodes": {
        "network": node("network", k + "/network-identity.json", "$(pubkey network-identity)"),
        "a": node("a", k + "/x-identity.json", "$(pubkey x-identity)"),
        "b": node("b", k + "/b-unstaked.json", "$(pubkey b-unstaked)"),
    },
    "network_vote_pubkey": "$(pubkey network-vote)",
    "x": {
        "keypair": k + "/x-identity.json",
        "pubkey": "$(pubkey x-identity)",
        "vote_pubkey": "$(pubkey x-vote)",
        "vote_keypair": k + "/x-vote.json",
        "stake_pubkey": "$(pubkey x-stake)",
        "tower_file": "tower-1_9-$(pubkey x-identity).bin",
        "vote_history_file": "vote_history-$(pubkey x-identity).bin",
    },
    "a_unstaked": {"keypair": k + "/a-unstaked.json", "pubkey": "$(pubkey a-unstaked)"},
    "b_unstaked": {"keypair": k + "/b-unstaked.json", "pubkey": "$(pubkey b-unstaked)"},
    "faucet": {"keypair": k + "/faucet.json", "pubkey": "$(pubkey faucet)"},
}
if "$RELAY" == "1":
    doc["nodes"]["relay"] = node("relay", k + "/relay-identity.json", "$relay_pubkey")
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
os.replace(tmp, sys.argv[1])
EOF
}

# Polls RPC until the network node is up (phase "network") or until the cluster roots slots and X
# votes from a (phase "cluster"). Exits 0 when done, 1 on timeout, 2 when a validator died.
wait_for() {
    local phase="$1" timeout="$2"
    python3 - "$phase" "$timeout" "$CLUSTER_JSON" "$PIDS" <<'EOF'
import json, os, sys, time, urllib.request

phase, timeout, cluster_json, pids_dir = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
c = json.load(open(cluster_json))
nodes = c["nodes"]

def rpc(url, method, params=None):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            doc = json.load(r)
    except Exception as e:
        return None, type(e).__name__
    if "error" in doc:
        return None, doc["error"].get("message", str(doc["error"]))
    return doc.get("result"), None

def alive(name):
    try:
        pid = int(open(os.path.join(pids_dir, name + ".pid")).read().strip())
    except Exception:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False

start = time.time()
deadline = start + timeout
last_print = 0
first_vote = None
names = ["network"] if phase == "network" else list(nodes)
while True:
    now = time.time()
    dead = [n for n in names if not alive(n)]
    if dead:
        print(f"validator(s) exited: {', '.join(dead)}", file=sys.stderr)
        sys.exit(2)
    if phase == "network":
        slot, err = rpc(nodes["network"]["rpc_url"], "getSlot", [{"commitment": "processed"}])
        if slot is not None:
            print(f"  network RPC up at slot {slot} after {now - start:.1f}s", file=sys.stderr)
            sys.exit(0)
        status = f"network RPC: {err}"
    else:
        net = nodes["network"]["rpc_url"]
        slot, _ = rpc(net, "getSlot", [{"commitment": "processed"}])
        root, _ = rpc(net, "getSlot", [{"commitment": "finalized"}])
        va, _ = rpc(net, "getVoteAccounts", [{"votePubkey": c["x"]["vote_pubkey"], "commitment": "processed"}])
        entry = None
        if va:
            for e in va.get("current", []) + va.get("delinquent", []):
                if e["votePubkey"] == c["x"]["vote_pubkey"]:
                    entry = e
        ids = {}
        slots = {}
        for n in [n for n in nodes if n != "network"]:
            r, err = rpc(nodes[n]["rpc_url"], "getIdentity")
            ids[n] = r["identity"] if r else err
            s, err = rpc(nodes[n]["rpc_url"], "getSlot", [{"commitment": "processed"}])
            slots[n] = s
        last_vote = entry["lastVote"] if entry else None
        if last_vote and first_vote is None:
            first_vote = last_vote
        x = c["x"]["pubkey"]
        ok = (
            root is not None and root > 0
            and slot is not None
            and entry is not None and entry["nodePubkey"] == x
            and first_vote is not None and last_vote > first_vote
            and last_vote >= slot - 16
            and ids["a"] == x
            and ids["b"] == c["b_unstaked"]["pubkey"]
            and slots["b"] is not None and slots["b"] >= slot - 32
            # The relay is there to feed the passive: it must be following the cluster too.
            and ("relay" not in slots or (slots["relay"] is not None and slots["relay"] >= slot - 32))
        )
        status = (f"slot {slot} root {root} | X lastVote {last_vote} | "
                  f"a: {str(ids['a'])[:12]} slot {slots['a']} | b: {str(ids['b'])[:12]} slot {slots['b']}"
                  + (f" | relay: slot {slots['relay']}" if "relay" in slots else ""))
        if ok:
            print(f"  {now - start:5.1f}s {status}", file=sys.stderr)
            print(f"  cluster is rooting and X votes from a ({now - start:.1f}s)", file=sys.stderr)
            sys.exit(0)
    if now - last_print >= 5:
        print(f"  {now - start:5.1f}s {status}", file=sys.stderr)
        last_print = now
    if now > deadline:
        print(f"timed out after {timeout:.0f}s: {status}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.5)
EOF
}

STARTED_BY_UP=0
on_up_failure() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ "$rc" -ne 0 && "$STARTED_BY_UP" == 1 ]]; then
        tail_logs
        if [[ "$KEEP_ON_FAILURE" == 1 ]]; then
            log "up failed; validators left running (--keep-on-failure); stop them with '$0 down --dir $CLUSTER_DIR'"
        else
            log "up failed; stopping the validators it started"
            local node
            for node in "${NODES[@]}"; do stop_node "$node" TERM || true; done
        fi
    fi
    exit "$rc"
}

cmd_up() {
    local t0=$SECONDS
    check_binaries
    find_failover_identity
    if [[ "$ALPENGLOW" == 1 ]]; then build_bls_tool; fi
    prepare_dir
    local node
    for node in "${NODES[@]}"; do check_ports_free "$node"; done
    make_keys
    make_genesis
    setup_cgroup
    for node in "${NODES[@]}"; do
        cp -a "$CLUSTER_DIR/genesis" "$(ledger_of "$node")"
    done

    local entry
    entry="$(host_of network):$(gossip_port network)"
    write_launcher network "$KEYS/network-identity.json" "$KEYS/network-vote.json" "$KEYS/network-identity.json" \
        --rpc-pubsub-enable-vote-subscription --no-wait-for-vote-to-start-leader
    write_launcher a "$KEYS/x-identity.json" "$(pubkey x-vote)" "$KEYS/x-identity.json" \
        --entrypoint "$entry"
    write_launcher b "$KEYS/b-unstaked.json" "$(pubkey x-vote)" "$KEYS/x-identity.json" \
        --entrypoint "$entry"
    if [[ "$RELAY" == 1 ]]; then
        write_launcher relay "$KEYS/relay-identity.json" "$(pubkey relay-vote)" "$KEYS/relay-identity.json" \
            --entrypoint "$entry"
    fi

    trap on_up_failure EXIT
    trap 'exit 130' INT TERM
    STARTED_BY_UP=1
    start_node network "$KEYS/network-identity.json"
    write_cluster_json
    log "waiting for the network node's RPC"
    wait_for network 120 || die "the network node did not come up"
    [[ "$RELAY" == 1 ]] && start_node relay "$KEYS/relay-identity.json"
    start_node a "$KEYS/x-identity.json"
    start_node b "$KEYS/b-unstaked.json"
    write_cluster_json
    log "waiting until the cluster roots slots and X's vote account gets votes from a (timeout ${TIMEOUT}s)"
    wait_for cluster "$TIMEOUT" || die "the cluster did not become ready in ${TIMEOUT}s"
    trap - EXIT INT TERM
    log "cluster up in $((SECONDS - t0))s; description in $CLUSTER_JSON"
    cmd_status
}

# ---------------------------------------------------------------------------------------------
# down / status / start-node / stop-node

cmd_down() {
    [[ -d "$CLUSTER_DIR" ]] || { log "$CLUSTER_DIR does not exist; nothing to stop"; return 0; }
    local node
    for node in "${NODES[@]}"; do stop_node "$node" TERM; done
    log "all validators of $CLUSTER_DIR stopped (files kept)"
}

cmd_status() {
    [[ -f "$CLUSTER_JSON" ]] || die "no $CLUSTER_JSON; is there a cluster in $CLUSTER_DIR?"
    local node state
    for node in "${NODES[@]}"; do
        if node_running "$node"; then state="pid $(read_pid "$node")"; else state="not running"; fi
        echo "$node: $state"
    done
    python3 - "$CLUSTER_JSON" <<'EOF'
import json, sys, urllib.request
c = json.load(open(sys.argv[1]))
def rpc(url, method, params=None):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, {"Content-Type": "application/json"}), timeout=2) as r:
            doc = json.load(r)
    except Exception as e:
        return None, type(e).__name__
    return (doc.get("result"), None) if "error" not in doc else (None, doc["error"].get("message"))
names = {c["x"]["pubkey"]: "X", c["a_unstaked"]["pubkey"]: "a-unstaked",
         c["b_unstaked"]["pubkey"]: "b-unstaked", c["nodes"]["network"]["identity_pubkey"]: "network"}
if "relay" in c["nodes"]:
    names[c["nodes"]["relay"]["identity_pubkey"]] = "relay"
for n, node in c["nodes"].items():
    ident, err = rpc(node["rpc_url"], "getIdentity")
    slot, _ = rpc(node["rpc_url"], "getSlot", [{"commitment": "processed"}])
    if ident:
        i = ident["identity"]
        print(f"{n:8} {node['rpc_url']}  identity {i} ({names.get(i, '?')})  slot {slot}")
    else:
        print(f"{n:8} {node['rpc_url']}  RPC unavailable: {err}")
va, err = rpc(c["cluster_rpc"], "getVoteAccounts", [{"votePubkey": c["x"]["vote_pubkey"], "commitment": "processed"}])
root, _ = rpc(c["cluster_rpc"], "getSlot", [{"commitment": "finalized"}])
if va is None:
    print(f"X vote account {c['x']['vote_pubkey']}: unavailable ({err})")
else:
    for kind in ("current", "delinquent"):
        for e in va.get(kind, []):
            print(f"X vote account {e['votePubkey']} ({kind}): lastVote {e['lastVote']} rootSlot {e['rootSlot']} "
                  f"node {e['nodePubkey']} stake {e['activatedStake']}  (cluster root {root})")
EOF
}

cmd_stop_node() {
    [[ -d "$CLUSTER_DIR" ]] || die "$CLUSTER_DIR does not exist"
    stop_node "$NODE_ARG" "$SIGNAL"
}

cmd_start_node() {
    [[ -f "$CLUSTER_JSON" ]] || die "no $CLUSTER_JSON; run '$0 up' first"
    check_binaries
    find_failover_identity
    local identity="$START_IDENTITY"
    if [[ -z "$identity" ]]; then
        [[ "$NODE_ARG" == network || "$NODE_ARG" == relay ]] \
            || die "start-node $NODE_ARG needs --identity KEYPAIR (X must never run on a and b at once)"
        identity="$KEYS/$NODE_ARG-identity.json"
    fi
    identity="$(cd "$(dirname "$identity")" && pwd)/$(basename "$identity")"
    start_node "$NODE_ARG" "$identity"
    write_cluster_json
}

case "$COMMAND" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    stop-node) cmd_stop_node ;;
    start-node) cmd_start_node ;;
esac
