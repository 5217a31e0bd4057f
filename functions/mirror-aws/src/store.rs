//! S3 behind a small trait: the few object operations the control plane needs — read a small
//! JSON document, read the content hash a document was written with, write one with its hash,
//! and remove every version of one (stack delete). [`SdkStore`] implements it with aws-sdk-s3;
//! tests implement it in memory or against moto.

use std::future::Future;

use aws_sdk_s3::primitives::ByteStream;
use mirror::settings::S3Uri;

use crate::error::AwsError;

/// The object metadata key holding a document's content hash
/// ([`mirror::sources::SourceMap::content_hash`]); S3 returns it as `x-amz-meta-content-sha256`.
pub const CONTENT_HASH_METADATA: &str = "content-sha256";

/// The object operations the control plane uses.
pub trait ObjectStore: Send + Sync + 'static {
    /// `GetObject`: the body, or `None` when the object does not exist.
    fn get(&self, uri: &S3Uri) -> impl Future<Output = Result<Option<Vec<u8>>, AwsError>> + Send;
    /// `HeadObject`: the [`CONTENT_HASH_METADATA`] the object was written with (`Some("")`
    /// when it has none), or `None` when the object does not exist.
    fn content_hash(
        &self,
        uri: &S3Uri,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    /// `PutObject` of a JSON document with its content hash.
    fn put_json(
        &self,
        uri: &S3Uri,
        body: Vec<u8>,
        content_hash: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `ListObjectVersions` + `DeleteObject` of every version and delete marker of exactly this
    /// key (a versioned bucket cannot be deleted while any remain); returns how many were
    /// removed.
    fn delete_all_versions(
        &self,
        uri: &S3Uri,
    ) -> impl Future<Output = Result<usize, AwsError>> + Send;
}

/// [`ObjectStore`] on aws-sdk-s3.
#[derive(Clone, Debug)]
pub struct SdkStore {
    client: aws_sdk_s3::Client,
}

impl SdkStore {
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        SdkStore { client }
    }
}

/// The codes S3 answers for a missing object (`HeadObject` has no body, so its code is
/// derived from the status: `NotFound`).
fn is_missing(e: &AwsError) -> bool {
    matches!(e.code.as_str(), "NoSuchKey" | "NotFound" | "NoSuchVersion")
}

impl ObjectStore for SdkStore {
    async fn get(&self, uri: &S3Uri) -> Result<Option<Vec<u8>>, AwsError> {
        const OP: &str = "GetObject";
        let out = match self
            .client
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let e = AwsError::from_sdk(OP, &e);
                return if is_missing(&e) { Ok(None) } else { Err(e) };
            }
        };
        let body = out.body.collect().await.map_err(|e| {
            AwsError::new(
                mirror::report::ErrorClass::Timeout,
                OP,
                "ReadBody",
                e.to_string(),
            )
        })?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    async fn content_hash(&self, uri: &S3Uri) -> Result<Option<String>, AwsError> {
        match self
            .client
            .head_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.metadata()
                    .and_then(|m| m.get(CONTENT_HASH_METADATA))
                    .cloned()
                    .unwrap_or_default(),
            )),
            Err(e) => {
                let e = AwsError::from_sdk("HeadObject", &e);
                if is_missing(&e) { Ok(None) } else { Err(e) }
            }
        }
    }

    async fn put_json(
        &self,
        uri: &S3Uri,
        body: Vec<u8>,
        content_hash: &str,
    ) -> Result<(), AwsError> {
        self.client
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type("application/json")
            .metadata(CONTENT_HASH_METADATA, content_hash)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("PutObject", &e))
    }

    async fn delete_all_versions(&self, uri: &S3Uri) -> Result<usize, AwsError> {
        let mut removed = 0;
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let page = match self
                .client
                .list_object_versions()
                .bucket(&uri.bucket)
                .prefix(&uri.key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    let e = AwsError::from_sdk("ListObjectVersions", &e);
                    // The bucket is already gone: nothing to remove.
                    return if e.code == "NoSuchBucket" {
                        Ok(removed)
                    } else {
                        Err(e)
                    };
                }
            };
            let versions = page
                .versions()
                .iter()
                .filter(|v| v.key() == Some(uri.key.as_str()))
                .map(|v| v.version_id().map(str::to_owned));
            let markers = page
                .delete_markers()
                .iter()
                .filter(|m| m.key() == Some(uri.key.as_str()))
                .map(|m| m.version_id().map(str::to_owned));
            for version in versions.chain(markers).collect::<Vec<_>>() {
                self.client
                    .delete_object()
                    .bucket(&uri.bucket)
                    .key(&uri.key)
                    .set_version_id(version)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("DeleteObject", &e))?;
                removed += 1;
            }
            if page.is_truncated() != Some(true) {
                return Ok(removed);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
        }
    }
}
