//! A small simulator of the EC2 side of a plan: applies a [`Plan`] to an [`Observed`] state
//! with the AWS rules that matter (at most 3 sessions per ENI, a session number used once per
//! ENI, the ENI must exist, the session must exist). Used by the invariant tests here, and
//! usable by the adapter's fakes.

use std::collections::HashSet;

use crate::model::{MAX_SESSIONS_PER_ENI, Observed, Session};
use crate::plan::{Change, Plan};

/// A rule AWS would have enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("session {0} does not exist")]
    NoSuchSession(String),
    #[error("network interface {0} does not exist")]
    NoSuchEni(String),
    #[error("network interface {0} already has {MAX_SESSIONS_PER_ENI} sessions")]
    SessionLimit(String),
    #[error("session number {number} already used on {eni_id}")]
    NumberInUse { eni_id: String, number: u32 },
    #[error("session {0} would be created twice")]
    DuplicateId(String),
}

/// The state after deleting, then modifying, then creating as planned. Created sessions get
/// the id `tms-<hex of the client token>`.
pub fn apply_to(observed: &Observed, plan: &Plan) -> Result<Observed, SimError> {
    let mut next = observed.clone();
    for d in &plan.delete {
        let before = next.sessions.len();
        next.sessions.retain(|s| s.id != d.session_id);
        if next.sessions.len() == before {
            return Err(SimError::NoSuchSession(d.session_id.clone()));
        }
    }
    for m in &plan.modify {
        let s = next
            .sessions
            .iter_mut()
            .find(|s| s.id == m.session_id)
            .ok_or_else(|| SimError::NoSuchSession(m.session_id.clone()))?;
        for change in &m.changes {
            match change {
                Change::Target { to, .. } => s.target_id.clone_from(to),
                Change::Filter { to, .. } => s.filter_id.clone_from(to),
                Change::Vni { to, .. } => s.vni = Some(*to),
                Change::PacketLength { to, .. } => s.packet_length = *to,
            }
        }
    }
    let enis: HashSet<&str> = observed.enis.iter().map(|e| e.id.as_str()).collect();
    for c in &plan.create {
        if !enis.contains(c.eni_id.as_str()) {
            return Err(SimError::NoSuchEni(c.eni_id.clone()));
        }
        let on_eni: Vec<&Session> = next
            .sessions
            .iter()
            .filter(|s| s.eni_id == c.eni_id)
            .collect();
        if on_eni.len() >= MAX_SESSIONS_PER_ENI {
            return Err(SimError::SessionLimit(c.eni_id.clone()));
        }
        if on_eni.iter().any(|s| s.number == c.number) {
            return Err(SimError::NumberInUse {
                eni_id: c.eni_id.clone(),
                number: c.number,
            });
        }
        let id = format!("tms-{}", c.client_token.trim_start_matches("mf1-"));
        if next.sessions.iter().any(|s| s.id == id) {
            return Err(SimError::DuplicateId(id));
        }
        next.sessions.push(Session {
            id,
            eni_id: c.eni_id.clone(),
            target_id: c.target_id.clone(),
            filter_id: c.filter_id.clone(),
            number: c.number,
            vni: Some(c.vni),
            packet_length: c.packet_length,
            tags: c.tags.clone(),
        });
    }
    Ok(next)
}
