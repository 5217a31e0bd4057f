//! In-memory S3 objects behind `mirror_aws::ObjectStore` and CloudWatch traffic behind
//! `mirror_aws::MetricsApi`, for the handler tests (moto serves both for the binaries' tests).

use std::collections::BTreeMap;
use std::sync::Mutex;

use mirror::capacity::Traffic;
use mirror::settings::S3Uri;
use mirror_aws::error::AwsError;
use mirror_aws::metrics::MetricsApi;
use mirror_aws::store::ObjectStore;

/// One object's versions, oldest first: (body, content hash).
type Versions = Vec<(Vec<u8>, String)>;

/// Objects by `s3://bucket/key`, every version kept (the stack's bucket is versioned).
#[derive(Default)]
pub struct FakeStore {
    objects: Mutex<BTreeMap<String, Versions>>,
    puts: Mutex<Vec<String>>,
    fail: Mutex<Option<AwsError>>,
}

impl FakeStore {
    /// The current body of `uri`.
    pub fn body(&self, uri: &S3Uri) -> Option<Vec<u8>> {
        self.objects
            .lock()
            .unwrap()
            .get(&uri.to_string())
            .and_then(|v| v.last())
            .map(|(b, _)| b.clone())
    }

    /// The current body of `uri` as JSON.
    pub fn json(&self, uri: &S3Uri) -> Option<serde_json::Value> {
        self.body(uri)
            .map(|b| serde_json::from_slice(&b).expect("a JSON document"))
    }

    /// How many versions of `uri` exist.
    pub fn versions(&self, uri: &S3Uri) -> usize {
        self.objects
            .lock()
            .unwrap()
            .get(&uri.to_string())
            .map_or(0, Vec::len)
    }

    /// The URIs written, in order.
    pub fn puts(&self) -> Vec<String> {
        self.puts.lock().unwrap().clone()
    }

    /// Every call fails with `e` from now on.
    pub fn fail_with(&self, e: AwsError) {
        *self.fail.lock().unwrap() = Some(e);
    }

    fn failing(&self) -> Result<(), AwsError> {
        match self.fail.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl ObjectStore for FakeStore {
    async fn get(&self, uri: &S3Uri) -> Result<Option<Vec<u8>>, AwsError> {
        self.failing()?;
        Ok(self.body(uri))
    }

    async fn content_hash(&self, uri: &S3Uri) -> Result<Option<String>, AwsError> {
        self.failing()?;
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(&uri.to_string())
            .and_then(|v| v.last())
            .map(|(_, h)| h.clone()))
    }

    async fn put_json(&self, uri: &S3Uri, body: Vec<u8>, hash: &str) -> Result<(), AwsError> {
        self.failing()?;
        self.puts.lock().unwrap().push(uri.to_string());
        self.objects
            .lock()
            .unwrap()
            .entry(uri.to_string())
            .or_default()
            .push((body, hash.to_owned()));
        Ok(())
    }

    async fn delete_all_versions(&self, uri: &S3Uri) -> Result<usize, AwsError> {
        self.failing()?;
        Ok(self
            .objects
            .lock()
            .unwrap()
            .remove(&uri.to_string())
            .map_or(0, |v| v.len()))
    }
}

/// The fleet's traffic as a test sets it; every call counted.
#[derive(Default)]
pub struct FakeMetrics {
    answer: Mutex<Option<Result<Traffic, AwsError>>>,
    calls: Mutex<u64>,
}

impl FakeMetrics {
    /// `GetMetricData` answers `traffic` from now on.
    pub fn set(&self, traffic: Traffic) {
        *self.answer.lock().unwrap() = Some(Ok(traffic));
    }

    /// `GetMetricData` fails with `e` from now on.
    pub fn fail_with(&self, e: AwsError) {
        *self.answer.lock().unwrap() = Some(Err(e));
    }

    pub fn calls(&self) -> u64 {
        *self.calls.lock().unwrap()
    }
}

impl MetricsApi for FakeMetrics {
    async fn fleet_traffic(&self, _: &str, _: &str, _: u64) -> Result<Traffic, AwsError> {
        *self.calls.lock().unwrap() += 1;
        self.answer
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(Ok(Traffic::default()))
    }
}
