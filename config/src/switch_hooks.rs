//! The operator's own commands around a switch: `pre_switch_command` / `post_switch_command` on
//! the manager, `pre_role_change_command` / `post_role_change_command` on an agent, with one
//! `hook_timeout`. The facts of the switch reach them as `FAILOVER_*` environment variables.

use std::time::Duration;

use crate::fields::{Diagnostics, Object};
use crate::or_default;

/// `hook_timeout` default: long enough for a page to an on-call phone, short enough that a hung
/// hook does not hold a planned switch for long.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Commands run (with `sh -c`) before and after a switch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwitchHooks {
    pub pre: Option<String>,
    pub post: Option<String>,
    /// A hook still running after this is killed (its whole process group).
    pub timeout: Duration,
    /// Manager only (`pre_switch_must_succeed`): a planned switch whose pre-hook fails or times
    /// out is cancelled with nothing changed. Never an automatic failover.
    pub pre_must_succeed: bool,
}

impl SwitchHooks {
    /// Reads the hook fields named `pre`, `post` and, for the manager, `must_succeed`.
    pub(crate) fn read(
        o: &mut Object<'_>,
        pre: &'static str,
        post: &'static str,
        must_succeed: Option<&'static str>,
        diag: &mut Diagnostics,
    ) -> Option<Self> {
        let pre_command = o.get(pre).and_then(|f| f.command(diag));
        let post_command = o.get(post).and_then(|f| f.command(diag));
        let timeout = or_default(o.get("hook_timeout"), DEFAULT_HOOK_TIMEOUT, |f| {
            f.positive_duration(diag)
        });
        let pre_must_succeed = match must_succeed {
            Some(name) => or_default(o.get(name), false, |f| f.bool(diag)),
            None => Some(false),
        };
        if pre_must_succeed == Some(true) && pre_command.is_none() {
            diag.error(
                must_succeed.unwrap_or_default(),
                format!("true, but {pre} is not set: there is no pre-switch hook to succeed"),
            );
        }
        Some(Self {
            pre: pre_command,
            post: post_command,
            timeout: timeout?,
            pre_must_succeed: pre_must_succeed?,
        })
    }
}
