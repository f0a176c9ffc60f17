//! The switch steps this agent ran, in `<state_dir>/switch-journal.json`. A step runs to its end
//! whatever happens to the request that asked for it — a manager that timed out or was killed
//! a few hundred ms in must not leave the validator half demoted (unstaked with its voters in
//! place, or the reverse). A request repeated for the same step (same term, action and switch)
//! waits for the step in progress or gets the outcome recorded here, never a second run. A step
//! recorded as started but never finished was cut short by the agent's own death: a demotion so
//! cut is finished at the next start, since its term's manager wanted this node passive.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

use crate::agent::{unix_ms, Agent};
use crate::api::{FailoverAction, FailoverRequest, FailoverResponse};
use failover_identity::tower_hash;

const FILE_NAME: &str = "switch-journal.json";
/// Steps kept: a switch is two, a rollback one more; older ones answer nothing anyone asks.
const KEPT: usize = 8;

/// What makes two requests the same step: the same body (its signature and nonce travel in
/// headers), so a manager asking again for what it lost the answer to gets that answer, and a
/// different request in the same term (another tower, another flag) is a step of its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    pub term: u64,
    pub action: FailoverAction,
    body_sha256: String,
}

impl Step {
    pub fn of(req: &FailoverRequest) -> Self {
        Self {
            term: req.term,
            action: req.action,
            body_sha256: tower_hash(&serde_json::to_vec(req).expect("request serializes")),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub request: FailoverRequest,
    pub started_unix_ms: u64,
    /// Absent while the step runs — and in a file read at start, for a step the agent's death cut short.
    pub outcome: Option<FailoverResponse>,
}

/// Where a step stands, for a request that asks for it.
pub enum Lookup {
    /// Finished: its recorded outcome.
    Done(FailoverResponse),
    /// Running in this process: its outcome, when it comes.
    Running(watch::Receiver<Option<FailoverResponse>>),
    /// Not run here (or cut short by a restart): run it.
    New,
}

pub struct Journal {
    path: PathBuf,
    entries: Vec<Entry>,
    running: HashMap<Step, watch::Receiver<Option<FailoverResponse>>>,
}

impl Journal {
    /// Reads the journal in `dir`; an unreadable one is logged and started afresh (it only saves
    /// repeated work: the term and role that fence are in the state file).
    pub fn load(dir: &Path) -> Self {
        let path = dir.join(FILE_NAME);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(file = %path.display(), error = %e, "unreadable switch journal: starting a new one");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Self {
            path,
            entries,
            running: HashMap::new(),
        }
    }

    pub fn lookup(&self, step: &Step) -> Lookup {
        if let Some(rx) = self.running.get(step) {
            return Lookup::Running(rx.clone());
        }
        match self
            .entries
            .iter()
            .rev()
            .find(|e| &Step::of(&e.request) == step)
        {
            Some(Entry {
                outcome: Some(o), ..
            }) => Lookup::Done(o.clone()),
            _ => Lookup::New,
        }
    }

    /// Records `step` as started; returns where its outcome is to be sent.
    pub fn start(
        &mut self,
        request: &FailoverRequest,
        now_unix_ms: u64,
    ) -> watch::Sender<Option<FailoverResponse>> {
        let step = Step::of(request);
        let (tx, rx) = watch::channel(None);
        self.running.insert(step.clone(), rx);
        self.entries.retain(|e| Step::of(&e.request) != step);
        self.entries.push(Entry {
            request: request.clone(),
            started_unix_ms: now_unix_ms,
            outcome: None,
        });
        let excess = self.entries.len().saturating_sub(KEPT);
        self.entries.drain(..excess);
        self.save();
        tx
    }

    pub fn finish(&mut self, step: &Step, outcome: &FailoverResponse) {
        self.running.remove(step);
        if let Some(e) = self
            .entries
            .iter_mut()
            .rev()
            .find(|e| &Step::of(&e.request) == step)
        {
            e.outcome = Some(outcome.clone());
        }
        self.save();
    }

    /// The newest step, if the agent's death cut it short.
    pub fn interrupted(&self) -> Option<&Entry> {
        self.entries
            .last()
            .filter(|e| e.outcome.is_none() && !self.running.contains_key(&Step::of(&e.request)))
    }

    fn save(&self) {
        let bytes = serde_json::to_vec(&self.entries).expect("journal serializes");
        if let Err(e) = crate::state::write_durably(&self.path, &bytes) {
            // The step still runs: the journal only spares a repeated request a second run.
            warn!(file = %self.path.display(), error = %e, "cannot write the switch journal");
        }
    }
}

impl Agent {
    /// Runs the step `req` asks for to its end, in a task of its own, and answers with its
    /// outcome; a repeated request for the same step waits for that outcome or reads it back.
    pub(crate) async fn run_step(
        self: &Arc<Self>,
        req: FailoverRequest,
        admitted: Instant,
    ) -> FailoverResponse {
        let step = Step::of(&req);
        let key = step.clone();
        let mut outcome = {
            let mut journal = self.journal.lock().expect("journal");
            match journal.lookup(&step) {
                Lookup::Done(outcome) => {
                    info!(term = step.term, action = ?step.action, ok = outcome.ok, "a repeated request: answered from the switch journal");
                    return outcome;
                }
                Lookup::Running(rx) => {
                    info!(term = step.term, action = ?step.action, "a repeated request: waiting for the step in progress");
                    rx
                }
                Lookup::New => {
                    let tx = journal.start(&req, unix_ms());
                    let rx = tx.subscribe();
                    let agent = self.clone();
                    // Every line the step logs carries its step, term and reason (as fields of
                    // the span in JSON logs).
                    let span = info_span!("step", step = step.action.name(), term = req.term, reason = %req.reason);
                    let task = async move {
                        let hooks = agent.cfg.switch_hooks.clone();
                        let mut env = vec![
                            ("FAILOVER_STEP", req.action.name().to_string()),
                            (
                                "FAILOVER_ROLE",
                                match req.action {
                                    FailoverAction::BecomeActive => "active".to_string(),
                                    FailoverAction::BecomePassive => "passive".to_string(),
                                },
                            ),
                            ("FAILOVER_TERM", req.term.to_string()),
                            ("FAILOVER_REASON", req.reason.clone()),
                        ];
                        spawn_hook(
                            "pre_role_change_command",
                            hooks.pre.clone(),
                            env.clone(),
                            hooks.timeout,
                        );
                        let outcome = match req.action {
                            FailoverAction::BecomePassive => {
                                agent.become_passive(req.term, &req.reason).await
                            }
                            FailoverAction::BecomeActive => {
                                agent.become_active(&req, admitted).await
                            }
                        };
                        agent
                            .journal
                            .lock()
                            .expect("journal")
                            .finish(&step, &outcome);
                        agent
                            .metrics
                            .step(step.action.name(), outcome.ok, &outcome.phases);
                        let phases: Vec<String> = outcome
                            .phases
                            .iter()
                            .map(|p| format!("{}={}", p.name, p.ms))
                            .collect();
                        env.extend([
                            ("FAILOVER_OK", u8::from(outcome.ok).to_string()),
                            ("FAILOVER_ERROR", outcome.error.clone().unwrap_or_default()),
                            ("FAILOVER_PHASES", phases.join(" ")),
                        ]);
                        spawn_hook("post_role_change_command", hooks.post, env, hooks.timeout);
                        let _ = tx.send(Some(outcome));
                    };
                    tokio::spawn(task.instrument(span));
                    rx
                }
            }
        };
        let done = outcome
            .wait_for(Option::is_some)
            .await
            .map(|done| done.clone());
        match done {
            Ok(Some(outcome)) => outcome,
            // Only a panic ends the task without an outcome.
            _ => {
                self.journal.lock().expect("journal").running.remove(&key);
                FailoverResponse {
                    ok: false,
                    action: key.action,
                    term: key.term,
                    identity: None,
                    tower: None,
                    phases: vec![],
                    dry_run: self.cfg.dry_run,
                    error: Some("the step failed inside the agent: see its log".into()),
                }
            }
        }
    }

    /// At start: a demotion the agent's own death cut short is finished (its term's manager
    /// wanted this node passive, and a half-demoted validator may still hold the staked identity).
    pub(crate) async fn finish_interrupted_demotion(self: &Arc<Self>) {
        let Some(entry) = self.journal.lock().expect("journal").interrupted().cloned() else {
            return;
        };
        let current = self.term().await;
        let req = entry.request;
        if req.action != FailoverAction::BecomePassive || req.term != current {
            info!(term = req.term, action = ?req.action, "the agent stopped during this step; the manager decides what follows");
            return;
        }
        warn!(term = req.term, reason = %req.reason, "the agent stopped during a demotion: finishing it");
        let agent = self.clone();
        tokio::spawn(async move {
            let outcome = agent.run_step(req, Instant::now()).await;
            info!(
                ok = outcome.ok,
                error = outcome.error.as_deref().unwrap_or(""),
                "the interrupted demotion is finished"
            );
        });
    }
}

/// Starts the operator's hook beside the step (it never delays or blocks it): with
/// `FAILOVER_STEP`, `FAILOVER_ROLE` (the role the step gives this node), `FAILOVER_TERM`,
/// `FAILOVER_REASON`, and after the step `FAILOVER_OK`, `FAILOVER_ERROR`, `FAILOVER_PHASES`.
fn spawn_hook(
    name: &'static str,
    command: Option<String>,
    env: Vec<(&'static str, String)>,
    timeout: std::time::Duration,
) {
    if let Some(command) = command {
        tokio::spawn(async move {
            let _ = crate::commands::run_hook(name, &command, &env, timeout).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(term: u64, action: FailoverAction) -> FailoverRequest {
        FailoverRequest {
            action,
            term,
            switch_id: Some("s".into()),
            skip_identity: false,
            reason: "r".into(),
            tower: None,
            tower_sha256: None,
            consensus: None,
            allow_migration: false,
            min_last_vote: None,
            min_root: None,
            past_lockouts: None,
        }
    }

    fn outcome(term: u64) -> FailoverResponse {
        FailoverResponse {
            ok: true,
            action: FailoverAction::BecomePassive,
            term,
            identity: None,
            tower: None,
            phases: vec![],
            dry_run: false,
            error: None,
        }
    }

    #[test]
    fn a_finished_step_is_answered_after_a_restart_and_a_cut_short_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::load(dir.path());
        let demote = request(3, FailoverAction::BecomePassive);
        assert!(matches!(journal.lookup(&Step::of(&demote)), Lookup::New));
        let tx = journal.start(&demote, 1);
        assert!(matches!(
            journal.lookup(&Step::of(&demote)),
            Lookup::Running(_)
        ));
        assert!(
            journal.interrupted().is_none(),
            "running here, not cut short"
        );
        journal.finish(&Step::of(&demote), &outcome(3));
        drop(tx);
        let promote = request(4, FailoverAction::BecomeActive);
        let _tx = journal.start(&promote, 2);

        let restarted = Journal::load(dir.path());
        match restarted.lookup(&Step::of(&demote)) {
            Lookup::Done(o) => assert_eq!(o, outcome(3)),
            _ => panic!("the finished demotion is answered from the journal"),
        }
        assert!(matches!(restarted.lookup(&Step::of(&promote)), Lookup::New));
        assert_eq!(restarted.interrupted().map(|e| &e.request), Some(&promote));
        // Another request in the same term (another switch, another flag) is another step.
        let other = FailoverRequest {
            switch_id: Some("t".into()),
            ..demote.clone()
        };
        assert!(matches!(restarted.lookup(&Step::of(&other)), Lookup::New));
        let forced = FailoverRequest {
            allow_migration: true,
            ..demote
        };
        assert!(matches!(restarted.lookup(&Step::of(&forced)), Lookup::New));
    }

    #[test]
    fn the_journal_keeps_the_newest_steps_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::load(dir.path());
        for term in 1..=20 {
            let r = request(term, FailoverAction::BecomePassive);
            let _tx = journal.start(&r, term);
            journal.finish(&Step::of(&r), &outcome(term));
        }
        let restarted = Journal::load(dir.path());
        assert_eq!(restarted.entries.len(), KEPT);
        assert!(matches!(
            restarted.lookup(&Step::of(&request(20, FailoverAction::BecomePassive))),
            Lookup::Done(_)
        ));
        std::fs::write(dir.path().join(FILE_NAME), b"{garbage").unwrap();
        assert!(Journal::load(dir.path()).entries.is_empty());
    }
}
