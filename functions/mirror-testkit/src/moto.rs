//! A moto server on 127.0.0.1 and a free port, started by the test, with the documented AWS
//! behaviours moto lacks loaded first (`moto_aws.py` next to this crate's `Cargo.toml`: the
//! PacketLength default of NLB targets, targets and filters that cannot be deleted while
//! sessions use them, 3 sessions per interface, one session number per interface, ClientToken
//! idempotency, interfaces, targets and filters that must exist, instance types that cannot be
//! sources; each rule with the AWS text it implements).

use std::path::PathBuf;
use std::time::Duration;

use rebuilder_testkit::system::{Proc, TempDir, free_port, unique};

use crate::prereq::Tools;
use crate::settings::REGION;

/// The moto wrapper with the documented AWS behaviours.
pub fn layer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("moto_aws.py")
}

/// moto with the AWS behaviours of `moto_aws.py`, killed on drop.
pub struct Moto {
    pub port: u16,
    pub url: String,
    _proc: Proc,
}

impl Moto {
    pub fn start(tools: &Tools, dir: &TempDir) -> Moto {
        let port = free_port();
        let mut cmd = std::process::Command::new(&tools.moto_python);
        cmd.arg(layer_script())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut proc = Proc::spawn(&unique("moto-"), cmd, dir.path())
            .unwrap_or_else(|e| panic!("start moto: {e}"));
        proc.wait_listening(port, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        Moto {
            port,
            url: format!("http://127.0.0.1:{port}"),
            _proc: proc,
        }
    }

    /// The environment a Lambda binary needs to talk to this moto server (through the SDK's
    /// standard `AWS_ENDPOINT_URL`).
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.url.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }
}

#[cfg(feature = "aws")]
impl Moto {
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        test_client!(aws_sdk_ec2.endpoint_url(&self.url))
    }

    pub fn autoscaling(&self) -> aws_sdk_autoscaling::Client {
        test_client!(aws_sdk_autoscaling.endpoint_url(&self.url))
    }

    pub fn elbv2(&self) -> aws_sdk_elasticloadbalancingv2::Client {
        test_client!(aws_sdk_elasticloadbalancingv2.endpoint_url(&self.url))
    }

    /// S3, path-style (as the functions use it against an endpoint override).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        test_client!(aws_sdk_s3.endpoint_url(&self.url).force_path_style(true))
    }

    pub fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        test_client!(aws_sdk_cloudwatch.endpoint_url(&self.url))
    }
}
