//! The CloudFormation custom resource protocol, for the teardown function: the request
//! CloudFormation sends, the response it waits for, and the HTTPS `PUT` of that response to the
//! presigned `ResponseURL`.
//!
//! From the CloudFormation user guide ("Custom resource request objects", "Custom resource
//! response objects"): the request carries `RequestType` ("Create, Update, or Delete"),
//! `ResponseURL` ("a presigned S3 bucket that receives responses"), `StackId`, `RequestId`,
//! `LogicalResourceId`, `PhysicalResourceId` ("Always sent with Update and Delete requests;
//! never sent with Create") and `ResourceProperties`. The response is a JSON `PUT` with
//! `Status` ("SUCCESS or FAILED"), `Reason` ("Required if Status is FAILED"),
//! `PhysicalResourceId` ("must be identical for all responses for the same resource"), and
//! `StackId`, `RequestId`, `LogicalResourceId` "copied verbatim from the request"; "The total
//! size of the response body can't exceed 4096 bytes". AWS's own `cfn-response` module sends it
//! with an empty `Content-Type` (the presigned URL is signed without one).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The response body's limit.
pub const RESPONSE_MAX_BYTES: usize = 4096;
/// How long the `PUT` of the response may take.
pub const PUT_TIMEOUT: Duration = Duration::from_secs(20);

/// `RequestType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestType {
    Create,
    Update,
    Delete,
}

/// A custom resource request (the fields used).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Request {
    pub request_type: RequestType,
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(default)]
    pub physical_resource_id: Option<String>,
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub resource_properties: Option<Value>,
}

/// `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Success,
    Failed,
}

/// The response `PUT` to the `ResponseURL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub physical_resource_id: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub data: serde_json::Map<String, Value>,
}

impl Request {
    /// The physical id of this resource: the one CloudFormation sends (Update, Delete), else a
    /// stable one from the logical id (Create).
    pub fn physical_id(&self) -> String {
        self.physical_resource_id
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("mirrorfleet-teardown-{}", self.logical_resource_id))
    }

    /// The response to this request.
    pub fn respond(
        &self,
        status: Status,
        reason: Option<String>,
        data: serde_json::Map<String, Value>,
    ) -> Response {
        Response {
            status,
            reason,
            physical_resource_id: self.physical_id(),
            stack_id: self.stack_id.clone(),
            request_id: self.request_id.clone(),
            logical_resource_id: self.logical_resource_id.clone(),
            data,
        }
    }
}

impl Response {
    /// The JSON body, within [`RESPONSE_MAX_BYTES`]: a long reason is cut (with `…`).
    pub fn body(&self) -> Vec<u8> {
        let mut r = self.clone();
        loop {
            let body = serde_json::to_vec(&r).unwrap_or_default();
            if body.len() <= RESPONSE_MAX_BYTES {
                return body;
            }
            let excess = body.len() - RESPONSE_MAX_BYTES;
            match r.reason.as_mut() {
                Some(reason) if !reason.is_empty() => {
                    let keep = reason.chars().count().saturating_sub(excess + 3);
                    *reason = reason.chars().take(keep).collect::<String>() + "…";
                }
                _ => {
                    r.data.clear();
                    if serde_json::to_vec(&r).unwrap_or_default().len() > RESPONSE_MAX_BYTES {
                        return body;
                    }
                }
            }
        }
    }
}

/// Why the response could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("invalid ResponseURL {0:?}")]
    Url(String),
    #[error("PUT {url}: {error}")]
    Http { url: String, error: String },
    #[error("PUT {url}: no answer within {PUT_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("PUT {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

/// `PUT` `body` to `url` (https, or http for tests on 127.0.0.1) with an empty `Content-Type`,
/// within [`PUT_TIMEOUT`].
pub async fn put_response(url: &str, body: Vec<u8>) -> Result<(), PutError> {
    let uri: http::Uri = url.parse().map_err(|_| PutError::Url(url.to_owned()))?;
    // The URL without its query (the presigned signature) for messages.
    let shown = format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map(|a| a.as_str()).unwrap_or("?"),
        uri.path()
    );
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| PutError::Http {
            url: shown.clone(),
            error: e.to_string(),
        })?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let len = body.len();
    let request = http::Request::put(uri)
        .header(http::header::CONTENT_TYPE, "")
        .header(http::header::CONTENT_LENGTH, len)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| PutError::Http {
            url: shown.clone(),
            error: e.to_string(),
        })?;
    let answer = async {
        let response = client.request(request).await.map_err(|e| PutError::Http {
            url: shown.clone(),
            error: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(PutError::Status {
                url: shown.clone(),
                status,
                body: text.chars().take(500).collect(),
            })
        }
    };
    tokio::time::timeout(PUT_TIMEOUT, answer)
        .await
        .map_err(|_| PutError::Timeout { url: shown.clone() })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: &str) -> Request {
        serde_json::from_value(serde_json::json!({
            "RequestType": kind,
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:teardown",
            "ResponseURL": "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x?X-Amz-Signature=abc",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/mirrorfleet/1c2fa620-982a-11e3-aff7-50e2416294e0",
            "RequestId": "5d478078-13e9-baf0-464a-7ef285ecc786",
            "LogicalResourceId": "SessionTeardown",
            "ResourceType": "Custom::MirrorSessionTeardown",
            "ResourceProperties": {"ServiceToken": "arn", "TargetId": "tmt-1"}
        }))
        .unwrap()
    }

    #[test]
    fn a_response_copies_the_request_ids_and_keeps_the_physical_id() {
        let create = request("Create");
        let r = create.respond(Status::Success, None, serde_json::Map::new());
        let v: Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(v["Status"], "SUCCESS");
        assert_eq!(
            v["PhysicalResourceId"],
            "mirrorfleet-teardown-SessionTeardown"
        );
        assert_eq!(v["RequestId"], "5d478078-13e9-baf0-464a-7ef285ecc786");
        assert_eq!(v["LogicalResourceId"], "SessionTeardown");
        assert!(v.get("Reason").is_none() && v.get("Data").is_none());
        let mut delete = request("Delete");
        delete.physical_resource_id = Some("given-id".into());
        let r = delete.respond(Status::Failed, Some("why".into()), serde_json::Map::new());
        let v: Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(
            (v["Status"].as_str(), v["PhysicalResourceId"].as_str()),
            (Some("FAILED"), Some("given-id"))
        );
        assert_eq!(v["Reason"], "why");
    }

    #[test]
    fn the_response_body_stays_within_4096_bytes() {
        let r = request("Delete").respond(
            Status::Failed,
            Some("é".repeat(10_000)),
            serde_json::Map::new(),
        );
        let body = r.body();
        assert!(body.len() <= RESPONSE_MAX_BYTES, "{}", body.len());
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["Reason"].as_str().unwrap().ends_with('…'));
    }
}
