//! A moto server (the AWS stand-in) on 127.0.0.1 and a free port, started by the test.

use std::time::Duration;

use crate::prereq::Tools;
use crate::process::{Proc, Scratch, command, free_port};
use crate::settings::REGION;

/// A `moto_server`, killed on drop.
pub struct Moto {
    pub port: u16,
    pub url: String,
    _proc: Proc,
}

impl Moto {
    pub fn start(tools: &Tools, scratch: &Scratch) -> Moto {
        let port = free_port();
        let mut cmd = command(&tools.moto_server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let proc = Proc::spawn("moto_server", cmd, scratch.path("moto.log"));
        proc.wait_listening(port, Duration::from_secs(60));
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
}
