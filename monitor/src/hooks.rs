//! The operator's commands around a switch (`pre_switch_command`, `post_switch_command`,
//! `pre_switch_must_succeed`, `hook_timeout`). They get the switch's facts as environment
//! variables:
//!
//! | variable | pre | post |
//! |---|---|---|
//! | `FAILOVER_HOOK` | `pre_switch` | `post_switch` |
//! | `FAILOVER_KIND` | `planned` or `automatic` | same |
//! | `FAILOVER_FROM`, `FAILOVER_TO` | the nodes (`validator1 (10.0.0.1)`; `nobody` for no old active) | same |
//! | `FAILOVER_REASON` | why | same |
//! | `FAILOVER_TERM` | the term now (the switch raises it) | the switch's term |
//! | `FAILOVER_OK` | | `1` or `0` |
//! | `FAILOVER_ROLLED_BACK` | | `1` when the old active was made active again |
//! | `FAILOVER_ERROR` | | what failed, empty when ok |
//! | `FAILOVER_TOTAL_MS` | | decision to confirmed new active |
//! | `FAILOVER_PHASES` | | `term=1 demote=30 tower=0 …` (milliseconds) |
//!
//! A planned switch waits for its pre-hook (up to `hook_timeout`), and a failing one cancels it
//! with `pre_switch_must_succeed`. An automatic failover never waits for a hook: its pre-hook
//! starts beside it. Post-hooks start after the switch and are never waited for.

use failover_agent::commands::run_hook;
use failover_config::SwitchHooks;
use tracing::warn;

use crate::switch::Outcome;

pub type Env = Vec<(&'static str, String)>;

/// The pre-hook's environment.
pub fn pre_env(kind: &str, from: &str, to: &str, reason: &str, term: u64) -> Env {
    vec![
        ("FAILOVER_HOOK", "pre_switch".into()),
        ("FAILOVER_KIND", kind.into()),
        ("FAILOVER_FROM", from.into()),
        ("FAILOVER_TO", to.into()),
        ("FAILOVER_REASON", reason.into()),
        ("FAILOVER_TERM", term.to_string()),
    ]
}

/// The post-hook's environment.
pub fn post_env(kind: &str, outcome: &Outcome) -> Env {
    let phases: Vec<String> = outcome
        .phases
        .iter()
        .map(|p| format!("{}={}", p.name, p.ms))
        .collect();
    vec![
        ("FAILOVER_HOOK", "post_switch".into()),
        ("FAILOVER_KIND", kind.into()),
        (
            "FAILOVER_FROM",
            outcome.from.clone().unwrap_or_else(|| "nobody".into()),
        ),
        ("FAILOVER_TO", outcome.to.clone()),
        ("FAILOVER_REASON", outcome.reason.clone()),
        ("FAILOVER_TERM", outcome.term.to_string()),
        ("FAILOVER_OK", u8::from(outcome.ok).to_string()),
        (
            "FAILOVER_ROLLED_BACK",
            u8::from(outcome.rolled_back).to_string(),
        ),
        ("FAILOVER_ERROR", outcome.error.clone().unwrap_or_default()),
        ("FAILOVER_TOTAL_MS", outcome.total_ms.to_string()),
        ("FAILOVER_PHASES", phases.join(" ")),
    ]
}

/// Runs the pre-hook of a planned switch and waits for it: `Err` only when it failed and must
/// succeed (the switch is then cancelled).
pub async fn planned_pre(hooks: &SwitchHooks, env: &Env) -> Result<(), String> {
    let Some(command) = &hooks.pre else {
        return Ok(());
    };
    match run_hook("pre_switch_command", command, env, hooks.timeout).await {
        Ok(()) => Ok(()),
        Err(e) if hooks.pre_must_succeed => Err(e),
        Err(e) => {
            warn!("{e}; switching anyway (pre_switch_must_succeed is false)");
            Ok(())
        }
    }
}

/// Starts the pre-hook of an automatic failover beside it: nothing waits for it.
pub fn automatic_pre(hooks: &SwitchHooks, env: Env) {
    if let Some(command) = hooks.pre.clone() {
        let timeout = hooks.timeout;
        tokio::spawn(async move {
            let _ = run_hook("pre_switch_command", &command, &env, timeout).await;
        });
    }
}

/// Starts the post-hook; nothing waits for it.
pub fn post(hooks: &SwitchHooks, env: Env) {
    if let Some(command) = hooks.post.clone() {
        let timeout = hooks.timeout;
        tokio::spawn(async move {
            let _ = run_hook("post_switch_command", &command, &env, timeout).await;
        });
    }
}
