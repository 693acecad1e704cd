//! `ovbmc routes apply` / `ovbmc routes remove`: the policy routing `--routing auto` sets up,
//! installed or removed by a one-shot command, so that the long-running daemon can run
//! without CAP_NET_ADMIN (`--routing off`) while systemd runs these in `ExecStartPre=` /
//! `ExecStopPost=` (and again on reload). See `docs/deploy.md`.
//!
//! Both are idempotent and stateless: they plan exactly as [`Router::sync`] does (the same
//! [`plan`] over the host's state now), so a second `apply` finds every entry present and
//! changes nothing, and `remove` deletes only entries the plan names (rules `from ADDR`
//! with ovbmc's priority and table, the routes in ovbmc's tables), never anything else.

use super::{
    Applied, NetError, NetOps, Op, RouteRequest, Router, RoutingSettings, plan, tables_of,
};

/// What one op came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Added (apply) or deleted (remove) by this run.
    Changed,
    /// Nothing to do: already present (apply) or already absent (remove).
    Unchanged,
}

/// Install what `reqs` need; what is already present is left alone. On an error, what this
/// run added is rolled back (by [`Router::sync`]), so a failed apply leaves the host as it
/// was. Returns every planned op with what happened to it.
pub fn apply(
    ops: Box<dyn NetOps>,
    reqs: &[RouteRequest],
    settings: &RoutingSettings,
) -> Result<Vec<(Op, Change)>, NetError> {
    let mut router = Router::new(ops, settings.clone());
    let wanted = router.preview(reqs)?;
    router.sync(reqs)?;
    // Keep what was added: this process exits now, and `routes remove` takes it away later
    // (a Router removes what it added when dropped).
    let added = std::mem::take(&mut router.added);
    Ok(wanted
        .into_iter()
        .map(|(op, _)| {
            let c = if added.contains(&op) {
                Change::Changed
            } else {
                Change::Unchanged
            };
            (op, c)
        })
        .collect())
}

/// Delete the rules and routes the plan for `reqs` names, newest first (rules, then routes). Entries already gone are reported
/// [`Change::Unchanged`]. Deletion goes on past an error (so that one refusal does not
/// leave the rest behind) and the first error is returned.
pub fn remove(
    ops: Box<dyn NetOps>,
    reqs: &[RouteRequest],
    settings: &RoutingSettings,
) -> Result<Vec<(Op, Change)>, NetError> {
    // Planned over the host as it is: an address that is there is not in the plan, so
    // `remove` never takes an address away. It cannot tell one `apply --add-address` added
    // from the host's own without keeping state, and removing the host's own would cut it
    // off; an added address left behind is harmless with the rules gone (docs/deploy.md).
    let first = ops.state(&[])?;
    let planned = plan(&first, reqs, settings)?;
    let state = ops.state(&tables_of(&planned.ops))?;
    let mut out = Vec::new();
    let mut error = None;
    for op in planned.ops.into_iter().rev() {
        let c = if !state.has(&op) {
            Change::Unchanged
        } else {
            tracing::info!("routing: {}", op.command(false));
            match ops.apply(&op, false) {
                Ok(Applied::Done) => Change::Changed,
                Ok(Applied::AlreadyThere) => Change::Unchanged,
                Err(e) => {
                    error.get_or_insert(e);
                    continue;
                }
            }
        };
        out.push((op, c));
    }
    match error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
