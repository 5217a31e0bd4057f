//! EventBridge triggers → the scope of one run.
//!
//! An event never says what to do: it only narrows which ENIs (or which instance) the run
//! observes. The truth is always observe → plan → apply. A malformed or unexpected event fails
//! with an [`EventError`] that names the problem; it never widens the scope by accident.

use aws_lambda_events::cloudwatch_events::cloudtrail::AWSAPICall;
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
        "CloudTrail {event_name} event carries no {field} (a failed call has no responseElements)"
    )]
    MissingField {
        event_name: &'static str,
        field: &'static str,
    },
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
            EventError::MissingField { .. } => "missing_field",
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateNiResponse {
    network_interface: CreatedNi,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedNi {
    network_interface_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttachNiRequest {
    network_interface_id: String,
    #[serde(default)]
    instance_id: Option<String>,
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
            Ok(Triggered {
                trigger,
                scope: Scope::instances([id]),
            })
        }
        DETAIL_CLOUDTRAIL => {
            let call: AWSAPICall<Value, Value> = detail(DETAIL_CLOUDTRAIL, event.detail)?;
            match call.event_name.as_str() {
                "CreateNetworkInterface" => {
                    let resp = call.response_elements.ok_or(EventError::MissingField {
                        event_name: "CreateNetworkInterface",
                        field: "responseElements",
                    })?;
                    let resp: CreateNiResponse = detail(DETAIL_CLOUDTRAIL, resp)?;
                    let eni = check_id(
                        "responseElements.networkInterface.networkInterfaceId",
                        &resp.network_interface.network_interface_id,
                        "network interface",
                    )?;
                    Ok(Triggered {
                        trigger: Trigger::CreateNetworkInterface,
                        scope: Scope::enis([eni]),
                    })
                }
                "AttachNetworkInterface" => {
                    let req: AttachNiRequest = detail(DETAIL_CLOUDTRAIL, call.request_parameters)?;
                    let eni = check_id(
                        "requestParameters.networkInterfaceId",
                        &req.network_interface_id,
                        "network interface",
                    )?;
                    if let Some(instance) = &req.instance_id {
                        check_id("requestParameters.instanceId", instance, "instance")?;
                    }
                    Ok(Triggered {
                        trigger: Trigger::AttachNetworkInterface,
                        scope: Scope::enis([eni]),
                    })
                }
                other => Err(EventError::UnsupportedApiCall(other.to_owned())),
            }
        }
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
                    Ok(Triggered {
                        trigger: Trigger::InstanceTagChange,
                        scope: Scope::instances([id]),
                    })
                }
                "network-interface" => {
                    let id = id_from_arns(&resources, "network-interface").ok_or_else(|| {
                        EventError::NoResource {
                            resource_type: "network-interface",
                            resources: resources.clone(),
                        }
                    })?;
                    let id = check_id("resources", &id, "network interface")?;
                    Ok(Triggered {
                        trigger: Trigger::EniTagChange,
                        scope: Scope::enis([id]),
                    })
                }
                other => Err(EventError::UnsupportedResourceType(other.to_owned())),
            }
        }
        DETAIL_SCHEDULED => Ok(Triggered {
            trigger: Trigger::Scheduled,
            scope: Scope::All,
        }),
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
    fn every_file_in_events_parses() {
        let mut n = 0;
        for entry in std::fs::read_dir(events_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                parse(sample(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
                n += 1;
            }
        }
        assert!(n >= 6, "expected a sample for every trigger, found {n}");
    }

    #[test]
    fn cloudtrail_samples_carry_every_field_aws_api_call_requires() {
        for name in [
            "cloudtrail-create-network-interface.json",
            "cloudtrail-attach-network-interface.json",
        ] {
            let v = sample(name);
            let detail = v["detail"].as_object().unwrap();
            for field in [
                "eventVersion",
                "userIdentity",
                "eventTime",
                "eventSource",
                "eventName",
                "awsRegion",
                "sourceIPAddress",
                "userAgent",
                "requestID",
                "eventID",
                "eventType",
            ] {
                assert!(detail.contains_key(field), "{name} lacks detail.{field}");
            }
        }
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
    fn a_failed_create_network_interface_call_is_a_missing_field_error() {
        let mut v = sample("cloudtrail-create-network-interface.json");
        v["detail"]["responseElements"] = Value::Null;
        let err = parse(v).unwrap_err();
        assert!(
            matches!(
                err,
                EventError::MissingField {
                    field: "responseElements",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_cloudtrail_event_without_required_fields_is_malformed() {
        let mut v = sample("cloudtrail-attach-network-interface.json");
        v["detail"].as_object_mut().unwrap().remove("eventID");
        let err = parse(v).unwrap_err();
        assert!(matches!(err, EventError::MalformedDetail { .. }), "{err}");
        assert_eq!(err.label(), "malformed_detail");
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
