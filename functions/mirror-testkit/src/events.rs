//! The sample events of `events/` (the shapes real records have), with the ids a test seeded.

use serde_json::Value;

use crate::prereq::workspace_root;
use crate::settings::REGION;

/// The account the sample events come from.
pub const ACCOUNT: &str = "123456789012";

/// A sample event from `events/`.
pub fn sample_event(name: &str) -> Value {
    let path = workspace_root().join("events").join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The sample event `name` with its instance / ENI ids replaced (the shape stays the one in
/// `events/`).
pub fn event_for(name: &str, eni: Option<&str>, instance: Option<&str>) -> Value {
    let mut v = sample_event(name);
    if let Some(i) = instance {
        if v["detail"].get("instance-id").is_some() {
            v["detail"]["instance-id"] = i.into();
        }
        if v["detail"]["requestParameters"].get("instanceId").is_some() {
            v["detail"]["requestParameters"]["instanceId"] = i.into();
        }
        if v["detail"]["resource-type"] == "instance" || v["detail"].get("instance-id").is_some() {
            v["resources"] =
                serde_json::json!([format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{i}")]);
        }
    }
    if let Some(e) = eni {
        if v["detail"]["requestParameters"]
            .get("networkInterfaceId")
            .is_some()
        {
            v["detail"]["requestParameters"]["networkInterfaceId"] = e.into();
        }
        if v["detail"]["responseElements"]
            .get("networkInterface")
            .is_some()
        {
            v["detail"]["responseElements"]["networkInterface"]["networkInterfaceId"] = e.into();
        }
        if v["detail"]["resource-type"] == "network-interface" {
            v["resources"] = serde_json::json!([format!(
                "arn:aws:ec2:{REGION}:{ACCOUNT}:network-interface/{e}"
            )]);
        }
    }
    v
}

/// A tag change on the ENI `eni` (onboard-eni's narrowest scope).
pub fn eni_event(eni: &str) -> Value {
    event_for("tag-change-eni.json", Some(eni), None)
}

/// The instance `instance` started running.
pub fn instance_event(instance: &str) -> Value {
    event_for("instance-running.json", None, Some(instance))
}
