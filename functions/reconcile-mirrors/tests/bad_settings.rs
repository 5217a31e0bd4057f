//! The reconcile-mirrors binary with settings whose filter syntax is bad: it exits at start-up
//! with an error naming the variable and the offending text, and makes no API call at all
//! (its endpoint is a listener on 127.0.0.1 that counts connections: zero).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (variable, value, text the error must contain)
const CASES: &[(&str, &str, &str)] = &[
    ("MIRROR_ENI_FILTERS", "Name=tag:mirror", "has no `Values=`"),
    (
        "MIRROR_ENI_FILTERS",
        "Name=tag:mirror,Values=\"web",
        "unterminated quote",
    ),
    (
        "MIRROR_ENI_FILTERS",
        "Name=instance-type,Values=m5.large",
        "unknown network interface filter name `instance-type`",
    ),
    (
        "MIRROR_INSTANCE_FILTERS",
        "Name=interface-type,Values=efa",
        "interface-type",
    ),
    ("MIRROR_ENI_FILTERS", "[{\"Name\": \"tag:mirror\"", "JSON"),
];

#[test]
fn bad_filter_syntax_stops_the_function_before_any_api_call() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    for (var, value, needle) in CASES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_reconcile-mirrors"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // A Runtime API that would also be refused: the process must not get that far.
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                listener.local_addr().unwrap().to_string(),
            )
            .env("MIRROR_TARGET_ID", "tmt-1")
            .env("MIRROR_FILTER_ID", "tmf-1")
            .env("MIRROR_VNI", "1")
            .env("MIRROR_OWNER", "owner")
            .env("MIRROR_ENI_FILTERS", "Name=tag:mirror,Values=true")
            .env(var, value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start reconcile-mirrors");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{var}={value}: still running after 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
        assert!(!status.success(), "{var}={value}: exited successfully");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
        assert!(stderr.contains(needle), "{var}={value}: {stderr}");
        let mut connections = 0;
        while listener.accept().is_ok() {
            connections += 1;
        }
        assert_eq!(connections, 0, "{var}={value}: the function called out");
    }
}
