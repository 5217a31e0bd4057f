//! A small simulator of the EC2 side of mirroring: the session writes of a [`Plan`] applied one
//! call at a time to an [`Observed`] world, with the rules of the real API that matter to the
//! planner and to concurrent runs. Each rule answers with the error code EC2 uses
//! ([`SimError::code`]):
//!
//! - `ClientToken`: "If you retry an API request with the same client token and the same
//!   parameters after it has completed successfully, the result of the original request is
//!   returned. If you retry a request with the same client token, but change one or more of
//!   the API parameters, the IdempotentParameterMismatch error is returned."
//!   (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html>). A token is
//!   remembered after its session is deleted.
//! - at most 3 sessions per source ENI, not adjustable
//!   (<https://docs.aws.amazon.com/vpc/latest/mirroring/traffic-mirroring-quotas.html>;
//!   `TrafficMirrorSessionsPerInterfaceLimitExceeded`);
//! - the source ENI must exist (`InvalidNetworkInterfaceID.NotFound`), and so must a session
//!   that is modified or deleted (`InvalidTrafficMirrorSessionId.NotFound`, the code on the
//!   wire);
//! - session numbers are 1..=32766
//!   (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_TrafficMirrorSession.html>),
//!   and one number is used once per ENI. AWS does not document the error of a reused number;
//!   the simulator answers `InvalidParameterValue`, as for one out of range;
//! - a session to a Network Load Balancer target created (or modified to remove the field)
//!   without a packet length is described with 8500: "For sessions with Network Load Balancer
//!   (NLB) Traffic Mirror targets the default PacketLength will be set to 8500"
//!   (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateTrafficMirrorSession.html>;
//!   "When you remove a property from a Traffic Mirror session, the property is set to the
//!   default", ModifyTrafficMirrorSession).
//!
//! [`Rules::MOTO`] turns off the two rules moto skips (tokens, number reuse) for negative
//! controls. Used by the invariant tests and the benchmark here ([`apply_to`]), and by the
//! control-plane test kit's fake EC2 (one call at a time, [`Ec2Sim`]).

use std::collections::{HashMap, HashSet};

use crate::model::{
    MAX_SESSIONS_PER_ENI, NLB_DEFAULT_PACKET_LENGTH, Observed, SESSION_NUMBER_MAX,
    SESSION_NUMBER_MIN, Session, TargetKind,
};
use crate::plan::{Change, CreateSession, ModifySession, Plan};

/// A rule the API enforced.
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
    #[error("session number {0} is outside 1..=32766")]
    NumberOutOfRange(u32),
    #[error("client token {0} was used with other parameters")]
    TokenReused(String),
    /// Not an EC2 answer: a plan that creates with one token twice ([`apply_to`]).
    #[error("the plan creates with client token {0} twice")]
    DuplicateCreate(String),
}

impl SimError {
    /// The EC2 error code of this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            SimError::NoSuchSession(_) => "InvalidTrafficMirrorSessionId.NotFound",
            SimError::NoSuchEni(_) => "InvalidNetworkInterfaceID.NotFound",
            SimError::SessionLimit(_) => "TrafficMirrorSessionsPerInterfaceLimitExceeded",
            SimError::NumberInUse { .. } | SimError::NumberOutOfRange(_) => "InvalidParameterValue",
            SimError::TokenReused(_) => "IdempotentParameterMismatch",
            SimError::DuplicateCreate(_) => "DuplicateCreate",
        }
    }
}

/// Which of the API's rules the simulator enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// `ClientToken` makes a create idempotent.
    pub client_token: bool,
    /// A session number is used once per ENI.
    pub unique_numbers: bool,
}

impl Rules {
    /// What EC2 does.
    pub const AWS: Rules = Rules {
        client_token: true,
        unique_numbers: true,
    };
    /// What moto does: tokens ignored, numbers not checked.
    pub const MOTO: Rules = Rules {
        client_token: false,
        unique_numbers: false,
    };
}

/// The EC2 side of mirroring, one call at a time.
#[derive(Debug, Clone)]
pub struct Ec2Sim {
    /// The ENIs, instances, sessions and targets as they are now.
    pub world: Observed,
    pub rules: Rules,
    /// token → (the request it was first used with, the session it created).
    tokens: HashMap<String, (CreateSession, String)>,
    created: u64,
}

impl Ec2Sim {
    pub fn new(world: Observed, rules: Rules) -> Self {
        Self {
            world,
            rules,
            tokens: HashMap::new(),
            created: 0,
        }
    }

    /// `CreateTrafficMirrorSession`: the new session's id (`tms-sim…`), or the id the same
    /// token already created.
    pub fn create(&mut self, req: &CreateSession) -> Result<String, SimError> {
        if self.rules.client_token
            && let Some((first, id)) = self.tokens.get(&req.client_token)
        {
            return if first == req {
                Ok(id.clone())
            } else {
                Err(SimError::TokenReused(req.client_token.clone()))
            };
        }
        if !self.world.enis.iter().any(|e| e.id == req.eni_id) {
            return Err(SimError::NoSuchEni(req.eni_id.clone()));
        }
        let on_eni = || {
            self.world
                .sessions
                .iter()
                .filter(|s| s.eni_id == req.eni_id)
        };
        if on_eni().count() >= MAX_SESSIONS_PER_ENI {
            return Err(SimError::SessionLimit(req.eni_id.clone()));
        }
        if !(SESSION_NUMBER_MIN..=SESSION_NUMBER_MAX).contains(&req.number) {
            return Err(SimError::NumberOutOfRange(req.number));
        }
        if self.rules.unique_numbers && on_eni().any(|s| s.number == req.number) {
            return Err(SimError::NumberInUse {
                eni_id: req.eni_id.clone(),
                number: req.number,
            });
        }
        self.created += 1;
        let id = format!("tms-sim{:08}", self.created);
        let packet_length = req
            .packet_length
            .or_else(|| self.nlb_default(&req.target_id));
        if self.rules.client_token {
            self.tokens
                .insert(req.client_token.clone(), (req.clone(), id.clone()));
        }
        self.world.sessions.push(Session {
            id: id.clone(),
            eni_id: req.eni_id.clone(),
            target_id: req.target_id.clone(),
            filter_id: req.filter_id.clone(),
            number: req.number,
            vni: Some(req.vni),
            packet_length,
            tags: req.tags.clone(),
        });
        Ok(id)
    }

    /// 8500 for a session to an observed Network Load Balancer target, else nothing.
    fn nlb_default(&self, target_id: &str) -> Option<u32> {
        self.world
            .target(target_id)
            .filter(|t| t.kind() == TargetKind::NetworkLoadBalancer)
            .map(|_| NLB_DEFAULT_PACKET_LENGTH)
    }

    /// `DeleteTrafficMirrorSession`.
    pub fn delete(&mut self, session_id: &str) -> Result<(), SimError> {
        let before = self.world.sessions.len();
        self.world.sessions.retain(|s| s.id != session_id);
        if self.world.sessions.len() == before {
            return Err(SimError::NoSuchSession(session_id.to_owned()));
        }
        Ok(())
    }

    /// `ModifyTrafficMirrorSession` with every change of `req`.
    pub fn modify(&mut self, req: &ModifySession) -> Result<(), SimError> {
        let i = self
            .world
            .sessions
            .iter()
            .position(|s| s.id == req.session_id)
            .ok_or_else(|| SimError::NoSuchSession(req.session_id.clone()))?;
        for change in &req.changes {
            let s = &mut self.world.sessions[i];
            match change {
                Change::Target { to, .. } => s.target_id.clone_from(to),
                Change::Filter { to, .. } => s.filter_id.clone_from(to),
                Change::Vni { to, .. } => s.vni = Some(*to),
                Change::PacketLength { to: Some(p), .. } => s.packet_length = Some(*p),
                Change::PacketLength { to: None, .. } => {
                    let target = s.target_id.clone();
                    self.world.sessions[i].packet_length = self.nlb_default(&target);
                }
            }
        }
        Ok(())
    }

    /// Every action of `plan`: deletes, then modifies, then creates; stops at the first
    /// refusal.
    pub fn apply(&mut self, plan: &Plan) -> Result<(), SimError> {
        for d in &plan.delete {
            self.delete(&d.session_id)?;
        }
        for m in &plan.modify {
            self.modify(m)?;
        }
        for c in &plan.create {
            self.create(c)?;
        }
        Ok(())
    }
}

/// The world after applying `plan` to `observed` under the API's rules. Within one plan
/// every create must carry its own token (the same token twice is the planner's mistake, not
/// a retry), so tokens need no memory here.
pub fn apply_to(observed: &Observed, plan: &Plan) -> Result<Observed, SimError> {
    let mut tokens = HashSet::new();
    if let Some(c) = plan
        .create
        .iter()
        .find(|c| !tokens.insert(c.client_token.as_str()))
    {
        return Err(SimError::DuplicateCreate(c.client_token.clone()));
    }
    let rules = Rules {
        client_token: false,
        ..Rules::AWS
    };
    let mut sim = Ec2Sim::new(observed.clone(), rules);
    sim.apply(plan)?;
    Ok(sim.world)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Eni;

    fn world() -> Observed {
        Observed {
            enis: vec![Eni {
                id: "eni-1".into(),
                ..Eni::default()
            }],
            ..Observed::default()
        }
    }

    fn create(number: u32, token: &str) -> CreateSession {
        CreateSession {
            eni_id: "eni-1".into(),
            target_id: "tmt-1".into(),
            filter_id: "tmf-1".into(),
            number,
            vni: 42,
            packet_length: None,
            tags: Default::default(),
            client_token: token.into(),
        }
    }

    #[test]
    fn the_same_token_and_parameters_give_back_the_first_session() {
        let mut sim = Ec2Sim::new(world(), Rules::AWS);
        let id = sim.create(&create(1, "t1")).unwrap();
        assert_eq!(sim.create(&create(1, "t1")), Ok(id.clone()));
        sim.delete(&id).unwrap();
        assert_eq!(
            sim.create(&create(1, "t1")),
            Ok(id),
            "remembered after delete"
        );
        assert!(sim.world.sessions.is_empty());
        let other = sim.create(&create(2, "t1")).unwrap_err();
        assert_eq!(other.code(), "IdempotentParameterMismatch");
    }

    #[test]
    fn a_fourth_session_a_reused_number_and_a_missing_eni_are_refused_with_their_codes() {
        let mut sim = Ec2Sim::new(world(), Rules::AWS);
        for n in 1..=3 {
            sim.create(&create(n, &format!("t{n}"))).unwrap();
        }
        let code = |r: Result<String, SimError>| r.unwrap_err().code();
        assert_eq!(
            code(sim.create(&create(4, "t4"))),
            "TrafficMirrorSessionsPerInterfaceLimitExceeded"
        );
        let mut sim = Ec2Sim::new(world(), Rules::AWS);
        sim.create(&create(1, "a")).unwrap();
        assert_eq!(code(sim.create(&create(1, "b"))), "InvalidParameterValue");
        assert_eq!(code(sim.create(&create(0, "c"))), "InvalidParameterValue");
        let mut gone = create(2, "d");
        gone.eni_id = "eni-2".into();
        assert_eq!(
            code(sim.create(&gone)),
            "InvalidNetworkInterfaceID.NotFound"
        );
        assert_eq!(
            sim.delete("tms-x").unwrap_err().code(),
            "InvalidTrafficMirrorSessionId.NotFound"
        );
    }

    #[test]
    fn a_plan_creating_with_one_token_twice_is_refused() {
        let plan = Plan {
            create: vec![create(1, "t"), create(2, "t")],
            ..Plan::default()
        };
        assert_eq!(
            apply_to(&world(), &plan),
            Err(SimError::DuplicateCreate("t".into()))
        );
        let plan = Plan {
            create: vec![create(1, "t1"), create(2, "t2")],
            ..Plan::default()
        };
        assert_eq!(apply_to(&world(), &plan).unwrap().sessions.len(), 2);
    }

    #[test]
    fn moto_rules_create_again_for_the_same_token_and_number() {
        let mut sim = Ec2Sim::new(world(), Rules::MOTO);
        let a = sim.create(&create(1, "t")).unwrap();
        let b = sim.create(&create(1, "t")).unwrap();
        assert_ne!(a, b);
        assert_eq!(sim.world.sessions.len(), 2);
    }
}
