//! EventBridge triggers → the scope of one run.
//!
//! An event never says what to do: it only narrows which ENIs (or which instance) the run
//! observes. The truth is always observe → plan → apply. A malformed or unexpected event fails
//! with an [`EventError`] that names the problem; it never widens the scope by accident. An
//! event that is well formed but names nothing to onboard — a CloudTrail record of a failed
//! call — is [`Triggered::ignored`]: the run does nothing and succeeds, with the reason in its
//! report.
//!
//! CloudTrail records are read with a narrow type of our own ([`CloudTrailRecord`]): every
//! field optional, only the ones used. Real records leave fields out or shape them per
//! principal ("userIdentity element", CloudTrail user guide): `sessionContext.sessionIssuer` is
//! `{}` for IAM users and console sessions, `webIdFederationData.attributes` is an object for
//! EKS IRSA / OIDC sessions, an AWS service calling has only `type` and `invokedBy`, and
//! `responseElements` is `null` on a failed call (whose `errorCode` carries a `Client.` prefix,
//! "Error codes for the Amazon EC2 API").

use aws_lambda_events::cloudwatch_events::ec2::InstanceStateChange;
use aws_lambda_events::cloudwatch_events::tag::TagChangeOnResource;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use mirror::plan::Scope;
use serde::Deserialize;
use serde_json::Value;

pub const DETAIL_INSTANCE_STATE: &str = "EC2 Instance State-change Notification";
pub const DETAIL_CLOUDTRAIL: &str = "AWS API Call via CloudTrail";
pub const DETAIL_TAG_CHANGE: &str = "Tag Change on Resource";
pub const DETAIL_SCHEDULED: &str = "Scheduled Event";

/// Which trigger produced a scope (a bounded label for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    InstanceRunning,
    InstanceStateOther,
    CreateNetworkInterface,
    AttachNetworkInterface,
    InstanceTagChange,
    EniTagChange,
    Scheduled,
}

impl Trigger {
    pub fn label(self) -> &'static str {
        match self {
            Trigger::InstanceRunning => "instance_running",
            Trigger::InstanceStateOther => "instance_state_other",
            Trigger::CreateNetworkInterface => "create_network_interface",
            Trigger::AttachNetworkInterface => "attach_network_interface",
            Trigger::InstanceTagChange => "instance_tag_change",
            Trigger::EniTagChange => "eni_tag_change",
            Trigger::Scheduled => "scheduled",
        }
    }
}

/// A parsed trigger: where it came from and what it narrows the run to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggered {
    pub trigger: Trigger,
    pub scope: Scope,
    /// Who made the call, for CloudTrail events (`AssumedRole arn:…`), for the logs.
    pub actor: Option<String>,
    /// Set when the event names nothing to act on: the run does nothing.
    pub ignored: Option<IgnoredEvent>,
}

impl Triggered {
    fn scoped(trigger: Trigger, scope: Scope) -> Triggered {
        Triggered {
            trigger,
            scope,
            actor: None,
            ignored: None,
        }
    }
}

/// Why a well-formed event leads to nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredEvent {
    /// `failed_call` (the record has an `errorCode`) or `no_network_interface` (it names no
    /// ENI).
    pub reason: &'static str,
    pub detail: String,
}

impl From<IgnoredEvent> for mirror::report::IgnoredEvent {
    fn from(e: IgnoredEvent) -> Self {
        mirror::report::IgnoredEvent {
            reason: e.reason.to_owned(),
            detail: e.detail,
        }
    }
}

/// The fields of a CloudTrail record (the `detail` of an "AWS API Call via CloudTrail" event)
/// that this code reads; all optional, whatever the principal or the outcome.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CloudTrailRecord {
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    /// Set on failed calls (`Client.InvalidParameterValue`, `Client.DryRunOperation`, ...).
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub user_identity: Option<UserIdentity>,
    /// `null` for some calls.
    pub request_parameters: Option<Value>,
    /// `null` (or absent) on failed calls.
    pub response_elements: Option<Value>,
}

/// `userIdentity`: its shape depends on the principal (`IAMUser`, `AssumedRole`, `Root`,
/// `AWSService`, `WebIdentityUser`, ...).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserIdentity {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub principal_id: Option<String>,
    pub arn: Option<String>,
    pub account_id: Option<String>,
    pub user_name: Option<String>,
    /// The service that made the call (`elasticloadbalancing.amazonaws.com`, `AWS Internal`).
    pub invoked_by: Option<String>,
    pub session_context: Option<SessionContext>,
}

/// `userIdentity.sessionContext`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionContext {
    /// `{}` for IAM users and console sessions: every field optional.
    pub session_issuer: Option<SessionIssuer>,
    pub web_id_federation_data: Option<WebIdFederationData>,
    /// `mfaAuthenticated` (a string), `creationDate` (two formats): kept as JSON.
    pub attributes: Option<Value>,
}

/// `sessionContext.sessionIssuer`: the role (or user) the session came from.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionIssuer {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub principal_id: Option<String>,
    pub arn: Option<String>,
    pub account_id: Option<String>,
    pub user_name: Option<String>,
}

/// `sessionContext.webIdFederationData`: an OIDC provider (EKS IRSA); `attributes` is an object.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebIdFederationData {
    pub federated_provider: Option<String>,
    pub attributes: Option<Value>,
}

impl UserIdentity {
    /// One line for the logs: the principal type, its ARN (or the invoking service), and the
    /// role a session came from or the OIDC provider of a web-identity session.
    pub fn describe(&self) -> String {
        let mut out = self.kind.clone().unwrap_or_else(|| "unknown".to_owned());
        if let Some(who) = self.arn.as_ref().or(self.invoked_by.as_ref()) {
            out.push(' ');
            out.push_str(who);
        }
        let context = self.session_context.as_ref();
        if let Some(issuer) = context
            .and_then(|c| c.session_issuer.as_ref())
            .and_then(|i| i.arn.as_ref())
        {
            out.push_str(" via ");
            out.push_str(issuer);
        }
        if let Some(provider) = context
            .and_then(|c| c.web_id_federation_data.as_ref())
            .and_then(|w| w.federated_provider.as_ref())
        {
            out.push_str(" federated by ");
            out.push_str(provider);
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event is not an EventBridge event: {0}")]
    NotEventBridge(#[source] serde_json::Error),
    #[error("unsupported event: detail-type {detail_type:?} from source {source_name:?}")]
    UnsupportedDetailType {
        detail_type: String,
        source_name: String,
    },
    #[error("malformed detail for {detail_type:?}: {error}")]
    MalformedDetail {
        detail_type: &'static str,
        #[source]
        error: serde_json::Error,
    },
    #[error(
        "unsupported CloudTrail event name {0:?} (expected CreateNetworkInterface or AttachNetworkInterface)"
    )]
    UnsupportedApiCall(String),
    #[error(
        "tag change on unsupported resource type {0:?} (expected instance or network-interface)"
    )]
    UnsupportedResourceType(String),
    #[error("tag change event names no {resource_type} in its resources: {resources:?}")]
    NoResource {
        resource_type: &'static str,
        resources: Vec<String>,
    },
    #[error("{field} {value:?} is not a valid {kind} id")]
    BadId {
        field: &'static str,
        value: String,
        kind: &'static str,
    },
    #[error(
        "event from account {event_account:?} region {event_region:?} is not for this function \
         (account {account}, region {region}): nothing done"
    )]
    ForeignEvent {
        event_account: String,
        event_region: String,
        account: String,
        region: String,
    },
}

impl EventError {
    /// Bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            EventError::NotEventBridge(_) => "not_eventbridge",
            EventError::UnsupportedDetailType { .. } => "unsupported_detail_type",
            EventError::MalformedDetail { .. } => "malformed_detail",
            EventError::UnsupportedApiCall(_) => "unsupported_api_call",
            EventError::UnsupportedResourceType(_) => "unsupported_resource_type",
            EventError::NoResource { .. } => "no_resource",
            EventError::BadId { .. } => "bad_id",
            EventError::ForeignEvent { .. } => "foreign_event",
        }
    }
}

/// The account and region a function acts in. An event from elsewhere (a cross-account or
/// cross-region rule, a replayed event) names resources this function cannot see or must not
/// touch: it fails with [`EventError::ForeignEvent`] before any API call (Lambda retries it,
/// then the DLQ keeps it, so the misrouting is visible). Parts left `None` are not checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Home {
    pub account: Option<String>,
    pub region: Option<String>,
}

impl Home {
    /// The account and region of a Lambda function ARN
    /// (`arn:<partition>:lambda:<region>:<account>:function:<name>[:qualifier]`); a part that
    /// does not look right is left unchecked. `region` (the SDK's) wins over the ARN's.
    pub fn from_function_arn(arn: &str, region: Option<&str>) -> Home {
        let parts: Vec<&str> = arn.split(':').collect();
        let arn_ok = parts.len() >= 7 && parts[0] == "arn" && parts[2] == "lambda";
        let account = arn_ok
            .then(|| parts[4])
            .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned);
        let region = region
            .map(str::to_owned)
            .or_else(|| arn_ok.then(|| parts[3].to_owned()))
            .filter(|r| !r.is_empty());
        Home { account, region }
    }

    /// Ok when the event's `account` and `region` are this function's (unchecked parts pass).
    pub fn admits(&self, payload: &Value) -> Result<(), EventError> {
        let field = |name: &str| {
            payload
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (event_account, event_region) = (field("account"), field("region"));
        let foreign = self.account.as_ref().is_some_and(|a| *a != event_account)
            || self.region.as_ref().is_some_and(|r| *r != event_region);
        if foreign {
            return Err(EventError::ForeignEvent {
                event_account,
                event_region,
                account: self.account.clone().unwrap_or_else(|| "any".into()),
                region: self.region.clone().unwrap_or_else(|| "any".into()),
            });
        }
        Ok(())
    }
}

/// The string at `path` of `value`: `Ok(None)` when a part is absent or `null`, an error when
/// it is there but not a string.
fn string_at<'a>(
    value: Option<&'a Value>,
    path: &[&str],
    field: &'static str,
) -> Result<Option<&'a str>, EventError> {
    let mut at = value;
    for key in path {
        at = at.and_then(|v| v.get(key));
    }
    match at {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(EventError::BadId {
            field,
            value: other.to_string(),
            kind: "string",
        }),
    }
}

/// The scope (or the reason to ignore it) of a CloudTrail record.
fn cloudtrail(call: CloudTrailRecord) -> Result<Triggered, EventError> {
    let actor = call.user_identity.as_ref().map(UserIdentity::describe);
    let name = call.event_name.clone().unwrap_or_default();
    let trigger = match name.as_str() {
        "CreateNetworkInterface" => Trigger::CreateNetworkInterface,
        "AttachNetworkInterface" => Trigger::AttachNetworkInterface,
        _ => return Err(EventError::UnsupportedApiCall(name)),
    };
    let ignore = |reason: &'static str, detail: String| Triggered {
        trigger,
        scope: Scope::enis(Vec::<String>::new()),
        actor: actor.clone(),
        ignored: Some(IgnoredEvent { reason, detail }),
    };
    if let Some(code) = &call.error_code {
        // A failed call changed nothing (EventBridge delivers failed calls too).
        let message = call.error_message.as_deref().unwrap_or_default();
        return Ok(ignore("failed_call", format!("{name}: {code}: {message}")));
    }
    let eni = match trigger {
        Trigger::CreateNetworkInterface => string_at(
            call.response_elements.as_ref(),
            &["networkInterface", "networkInterfaceId"],
            "responseElements.networkInterface.networkInterfaceId",
        )?,
        _ => {
            if let Some(instance) = string_at(
                call.request_parameters.as_ref(),
                &["instanceId"],
                "requestParameters.instanceId",
            )? {
                check_id("requestParameters.instanceId", instance, "instance")?;
            }
            string_at(
                call.request_parameters.as_ref(),
                &["networkInterfaceId"],
                "requestParameters.networkInterfaceId",
            )?
        }
    };
    let Some(eni) = eni else {
        return Ok(ignore(
            "no_network_interface",
            format!("{name} names no network interface"),
        ));
    };
    let field = if trigger == Trigger::CreateNetworkInterface {
        "responseElements.networkInterface.networkInterfaceId"
    } else {
        "requestParameters.networkInterfaceId"
    };
    let eni = check_id(field, eni, "network interface")?;
    Ok(Triggered {
        actor,
        ..Triggered::scoped(trigger, Scope::enis([eni]))
    })
}

fn detail<T: serde::de::DeserializeOwned>(
    detail_type: &'static str,
    value: Value,
) -> Result<T, EventError> {
    serde_json::from_value(value)
        .map_err(|error| EventError::MalformedDetail { detail_type, error })
}

/// Ids are opaque, but an id that is empty or contains separators or whitespace can only
/// come from a broken event, and would otherwise end up in a server-side filter.
fn check_id(field: &'static str, value: &str, kind: &'static str) -> Result<String, EventError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(EventError::BadId {
            field,
            value: value.to_owned(),
            kind,
        })
    }
}

/// The id at the end of an EC2 ARN `arn:aws:ec2:region:account:<resource_type>/<id>`.
fn id_from_arns(resources: &[String], resource_type: &'static str) -> Option<String> {
    let needle = format!(":{resource_type}/");
    resources
        .iter()
        .find_map(|arn| arn.split_once(&needle).map(|(_, id)| id.to_owned()))
}

/// Parse an event for `onboard-eni` (instance running, CloudTrail Create/AttachNetworkInterface,
/// tag change on an instance or ENI) or `reconcile-mirrors` (Scheduled Event → [`Scope::All`]).
pub fn parse(payload: Value) -> Result<Triggered, EventError> {
    let event: EventBridgeEvent<Value> =
        serde_json::from_value(payload).map_err(EventError::NotEventBridge)?;
    let resources = event.resources.unwrap_or_default();
    match event.detail_type.as_str() {
        DETAIL_INSTANCE_STATE => {
            let d: InstanceStateChange = detail(DETAIL_INSTANCE_STATE, event.detail)?;
            let id = check_id("detail.instance-id", &d.instance_id, "instance")?;
            let trigger = if d.state == "running" {
                Trigger::InstanceRunning
            } else {
                Trigger::InstanceStateOther
            };
            Ok(Triggered::scoped(trigger, Scope::instances([id])))
        }
        DETAIL_CLOUDTRAIL => cloudtrail(detail(DETAIL_CLOUDTRAIL, event.detail)?),
        DETAIL_TAG_CHANGE => {
            let d: TagChangeOnResource = detail(DETAIL_TAG_CHANGE, event.detail)?;
            match d.resource_type.as_str() {
                "instance" => {
                    let id = id_from_arns(&resources, "instance").ok_or_else(|| {
                        EventError::NoResource {
                            resource_type: "instance",
                            resources: resources.clone(),
                        }
                    })?;
                    let id = check_id("resources", &id, "instance")?;
                    Ok(Triggered::scoped(
                        Trigger::InstanceTagChange,
                        Scope::instances([id]),
                    ))
                }
                "network-interface" => {
                    let id = id_from_arns(&resources, "network-interface").ok_or_else(|| {
                        EventError::NoResource {
                            resource_type: "network-interface",
                            resources: resources.clone(),
                        }
                    })?;
                    let id = check_id("resources", &id, "network interface")?;
                    Ok(Triggered::scoped(Trigger::EniTagChange, Scope::enis([id])))
                }
                other => Err(EventError::UnsupportedResourceType(other.to_owned())),
            }
        }
        DETAIL_SCHEDULED => Ok(Triggered::scoped(Trigger::Scheduled, Scope::All)),
        _ => Err(EventError::UnsupportedDetailType {
            detail_type: event.detail_type,
            source_name: event.source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn events_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
    }

    fn sample(name: &str) -> Value {
        let text = std::fs::read_to_string(events_dir().join(name)).expect("sample event exists");
        serde_json::from_str(&text).expect("sample event is JSON")
    }

    #[test]
    fn instance_running_sample_scopes_to_that_instance() {
        let t = parse(sample("instance-running.json")).unwrap();
        assert_eq!(t.trigger, Trigger::InstanceRunning);
        assert_eq!(t.scope, Scope::instances(["i-0abcd1234ef567890"]));
    }

    #[test]
    fn cloudtrail_create_network_interface_sample_scopes_to_the_new_eni() {
        let t = parse(sample("cloudtrail-create-network-interface.json")).unwrap();
        assert_eq!(t.trigger, Trigger::CreateNetworkInterface);
        assert_eq!(t.scope, Scope::enis(["eni-0123456789abcdef0"]));
    }

    #[test]
    fn cloudtrail_attach_network_interface_sample_scopes_to_the_attached_eni() {
        let t = parse(sample("cloudtrail-attach-network-interface.json")).unwrap();
        assert_eq!(t.trigger, Trigger::AttachNetworkInterface);
        assert_eq!(t.scope, Scope::enis(["eni-0123456789abcdef0"]));
    }

    #[test]
    fn tag_change_on_instance_sample_scopes_to_the_instance() {
        let t = parse(sample("tag-change-instance.json")).unwrap();
        assert_eq!(t.trigger, Trigger::InstanceTagChange);
        assert_eq!(t.scope, Scope::instances(["i-0abcd1234ef567890"]));
    }

    #[test]
    fn tag_change_on_eni_sample_scopes_to_the_eni() {
        let t = parse(sample("tag-change-eni.json")).unwrap();
        assert_eq!(t.trigger, Trigger::EniTagChange);
        assert_eq!(t.scope, Scope::enis(["eni-0123456789abcdef0"]));
    }

    #[test]
    fn scheduled_sample_means_full_scope() {
        let t = parse(sample("scheduled.json")).unwrap();
        assert_eq!(t.trigger, Trigger::Scheduled);
        assert_eq!(t.scope, Scope::All);
    }

    #[test]
    fn every_eventbridge_file_in_events_parses() {
        let mut n = 0;
        for entry in std::fs::read_dir(events_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // The CloudFormation custom resource requests are the teardown's (teardown.rs).
            if path.extension().is_some_and(|e| e == "json") && !name.starts_with("cloudformation-")
            {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                parse(sample(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
                n += 1;
            }
        }
        assert!(n >= 6, "expected a sample for every trigger, found {n}");
    }

    /// The CloudTrail samples of `events/` by principal and outcome (file name → what it
    /// must lead to: the ENI onboarded, or the reason it is ignored).
    const CLOUDTRAIL_SAMPLES: &[(&str, Result<&str, &str>)] = &[
        (
            "cloudtrail-create-network-interface.json",
            Ok("eni-0123456789abcdef0"),
        ),
        (
            "cloudtrail-attach-network-interface.json",
            Ok("eni-0123456789abcdef0"),
        ),
        (
            "cloudtrail-create-network-interface-iam-user.json",
            Ok("eni-0a1b2c3d4e5f60718"),
        ),
        (
            "cloudtrail-create-network-interface-console-root.json",
            Ok("eni-0c1d2e3f4a5b60718"),
        ),
        (
            "cloudtrail-create-network-interface-assumed-role-empty-issuer.json",
            Ok("eni-0e1f2a3b4c5d60718"),
        ),
        (
            "cloudtrail-create-network-interface-eks-irsa.json",
            Ok("eni-0f1a2b3c4d5e60718"),
        ),
        (
            "cloudtrail-attach-network-interface-eks-cni-node-role.json",
            Ok("eni-0f1a2b3c4d5e60718"),
        ),
        (
            "cloudtrail-create-network-interface-elb-service-linked.json",
            Ok("eni-0b2c3d4e5f6a70819"),
        ),
        (
            "cloudtrail-create-network-interface-eks-service-linked.json",
            Ok("eni-0d2e3f4a5b6c70819"),
        ),
        (
            "cloudtrail-create-network-interface-lambda-service.json",
            Ok("eni-0a3b4c5d6e7f80910"),
        ),
        (
            "cloudtrail-create-network-interface-failed.json",
            Err("failed_call"),
        ),
        (
            "cloudtrail-create-network-interface-dry-run.json",
            Err("failed_call"),
        ),
        (
            "cloudtrail-attach-network-interface-failed.json",
            Err("failed_call"),
        ),
    ];

    #[test]
    fn every_cloudtrail_sample_parses_and_onboards_its_eni_or_is_ignored_with_a_reason() {
        let mut on_disk: Vec<String> = std::fs::read_dir(events_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("cloudtrail-"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = CLOUDTRAIL_SAMPLES
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect();
        listed.sort();
        assert_eq!(on_disk, listed, "every CloudTrail sample is listed here");
        for (name, want) in CLOUDTRAIL_SAMPLES {
            let t = parse(sample(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(t.actor.is_some(), "{name}: no userIdentity read");
            match want {
                Ok(eni) => {
                    assert_eq!(t.ignored, None, "{name}");
                    assert_eq!(t.scope, Scope::enis([*eni]), "{name}");
                }
                Err(reason) => {
                    assert_eq!(
                        t.ignored.as_ref().map(|i| i.reason),
                        Some(*reason),
                        "{name}"
                    );
                    assert_eq!(t.scope, Scope::enis(Vec::<String>::new()), "{name}");
                }
            }
        }
    }

    #[test]
    fn the_samples_cover_every_principal_shape_real_records_have() {
        let identity = |name: &str| sample(name)["detail"]["userIdentity"].clone();
        let kinds: std::collections::BTreeSet<String> = CLOUDTRAIL_SAMPLES
            .iter()
            .filter_map(|(n, _)| identity(n)["type"].as_str().map(str::to_owned))
            .collect();
        for kind in ["IAMUser", "Root", "AssumedRole", "AWSService"] {
            assert!(
                kinds.contains(kind),
                "no sample with userIdentity.type {kind}"
            );
        }
        let any =
            |f: &dyn Fn(&Value) -> bool| CLOUDTRAIL_SAMPLES.iter().any(|(n, _)| f(&identity(n)));
        assert!(
            any(&|u| u["sessionContext"]["sessionIssuer"] == serde_json::json!({})),
            "an empty sessionIssuer"
        );
        assert!(
            any(
                &|u| u["sessionContext"]["webIdFederationData"]["attributes"].is_object()
                    && u["sessionContext"]["webIdFederationData"]["attributes"]
                        .as_object()
                        .is_some_and(|a| !a.is_empty())
            ),
            "IRSA attributes as an object"
        );
        assert!(
            any(&|u| u["sessionContext"]["sessionIssuer"]["arn"]
                .as_str()
                .is_some_and(|a| a.contains(":role/aws-service-role/"))),
            "a service-linked role"
        );
        assert!(
            CLOUDTRAIL_SAMPLES
                .iter()
                .any(|(n, _)| sample(n)["detail"]["responseElements"].is_null()
                    && sample(n)["detail"]["errorCode"].is_string())
        );
    }

    #[test]
    fn a_record_with_nothing_but_the_event_name_and_the_id_still_onboards() {
        let mut v = sample("cloudtrail-attach-network-interface.json");
        let eni = v["detail"]["requestParameters"]["networkInterfaceId"].clone();
        v["detail"] = serde_json::json!({
            "eventName": "AttachNetworkInterface",
            "requestParameters": {"networkInterfaceId": eni},
        });
        let t = parse(v).unwrap();
        assert_eq!(t.scope, Scope::enis(["eni-0123456789abcdef0"]));
        assert_eq!(t.actor, None);
    }

    #[test]
    fn a_stopped_instance_still_only_narrows_the_scope() {
        let mut v = sample("instance-running.json");
        v["detail"]["state"] = "stopped".into();
        let t = parse(v).unwrap();
        assert_eq!(t.trigger, Trigger::InstanceStateOther);
        assert_eq!(t.scope, Scope::instances(["i-0abcd1234ef567890"]));
    }

    #[test]
    fn an_unknown_detail_type_is_named_in_the_error() {
        let mut v = sample("scheduled.json");
        v["detail-type"] = "EBS Volume Notification".into();
        let err = parse(v).unwrap_err();
        assert!(matches!(err, EventError::UnsupportedDetailType { .. }));
        assert!(err.to_string().contains("EBS Volume Notification"));
    }

    #[test]
    fn a_create_without_response_elements_names_nothing_and_is_ignored() {
        let mut v = sample("cloudtrail-create-network-interface.json");
        v["detail"]["responseElements"] = Value::Null;
        let t = parse(v).unwrap();
        assert_eq!(t.ignored.map(|i| i.reason), Some("no_network_interface"));
    }

    #[test]
    fn an_id_that_is_not_a_string_is_malformed() {
        let mut v = sample("cloudtrail-attach-network-interface.json");
        v["detail"]["requestParameters"]["networkInterfaceId"] = serde_json::json!(7);
        let err = parse(v).unwrap_err();
        assert_eq!(err.label(), "bad_id", "{err}");
        let mut v = sample("cloudtrail-attach-network-interface.json");
        v["detail"]["userIdentity"] = serde_json::json!("not an object");
        assert_eq!(parse(v).unwrap_err().label(), "malformed_detail");
    }

    #[test]
    fn another_cloudtrail_call_is_rejected_by_name() {
        let mut v = sample("cloudtrail-attach-network-interface.json");
        v["detail"]["eventName"] = "DetachNetworkInterface".into();
        let err = parse(v).unwrap_err();
        assert!(err.to_string().contains("DetachNetworkInterface"));
    }

    #[test]
    fn a_tag_change_on_a_volume_is_rejected() {
        let mut v = sample("tag-change-eni.json");
        v["detail"]["resource-type"] = "volume".into();
        assert!(matches!(
            parse(v).unwrap_err(),
            EventError::UnsupportedResourceType(t) if t == "volume"
        ));
    }

    #[test]
    fn a_tag_change_without_the_resource_arn_is_rejected() {
        let mut v = sample("tag-change-instance.json");
        v["resources"] = serde_json::json!([]);
        assert!(matches!(
            parse(v).unwrap_err(),
            EventError::NoResource { .. }
        ));
    }

    #[test]
    fn an_id_with_a_comma_cannot_sneak_into_a_filter() {
        let mut v = sample("cloudtrail-attach-network-interface.json");
        v["detail"]["requestParameters"]["networkInterfaceId"] = "eni-1,eni-2".into();
        assert!(matches!(parse(v).unwrap_err(), EventError::BadId { .. }));
    }

    #[test]
    fn the_home_comes_from_the_function_arn_and_the_sdk_region() {
        let h = Home::from_function_arn(
            "arn:aws:lambda:eu-west-1:123456789012:function:onboard-eni",
            Some("eu-west-1"),
        );
        assert_eq!(h.account.as_deref(), Some("123456789012"));
        assert_eq!(h.region.as_deref(), Some("eu-west-1"));
        let h = Home::from_function_arn("not an arn", None);
        assert_eq!(h, Home::default());
    }

    #[test]
    fn an_event_for_another_account_or_region_is_foreign() {
        let home = Home {
            account: Some("123456789012".into()),
            region: Some("us-east-1".into()),
        };
        let v = sample("tag-change-eni.json");
        home.admits(&v).unwrap();
        let mut other_account = v.clone();
        other_account["account"] = "210987654321".into();
        let err = home.admits(&other_account).unwrap_err();
        assert_eq!(err.label(), "foreign_event");
        assert!(err.to_string().contains("210987654321"), "{err}");
        let mut other_region = v;
        other_region["region"] = "eu-west-1".into();
        assert!(home.admits(&other_region).is_err());
        Home::default().admits(&other_region).unwrap();
    }

    #[test]
    fn a_payload_that_is_not_eventbridge_is_rejected() {
        let err = parse(serde_json::json!({"hello": "world"})).unwrap_err();
        assert_eq!(err.label(), "not_eventbridge");
    }
}
