//! Test harness for the control plane against moto, with each Lambda run as a binary behind
//! the Lambda Runtime API, as on AWS:
//!
//! - [`Moto`]: a `moto_server` on 127.0.0.1 and a free port, started by the test, killed on drop;
//! - [`RuntimeApi`]: `cargo lambda watch --only-lambda-apis` on 127.0.0.1 and a free port;
//! - [`Function`]: a Lambda binary started with `AWS_LAMBDA_RUNTIME_API` pointing at it, and
//!   invoked with `cargo lambda invoke --data-file`;
//! - [`Seed`]: a VPC, two subnets, an internal NLB with a UDP/4789 listener as the mirror
//!   target and a filter, created through the Rust SDK.
//!
//! Tools are found through `MOTO_SERVER` / `CARGO_LAMBDA`, then the repository's `.venv/bin`
//! (for a git worktree, also the main checkout's `.venv`), then `PATH`. When a tool is missing
//! the test is skipped with a printed reason, or fails if `MIRRORFLEET_REQUIRE_SYSTEM=1`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    Filter, InstanceType, ResourceType, Tag, TagSpecification, TrafficMirrorSession,
};
use serde_json::Value;

/// The SDK crates, for tests that name their types.
pub mod sdk {
    pub use aws_sdk_autoscaling as autoscaling;
    pub use aws_sdk_ec2 as ec2;
    pub use aws_sdk_elasticloadbalancingv2 as elbv2;
}

pub const REGION: &str = "us-east-1";
pub const OWNER: &str = "itest";
pub const VNI: u32 = 4242;
/// ENIs with this tag are mirrored (`MIRROR_ENI_FILTERS`).
pub const ENI_TAG: (&str, &str) = ("mirror", "true");
/// Instances with this tag have all their ENIs mirrored (`MIRROR_INSTANCE_FILTERS`).
pub const INSTANCE_TAG: (&str, &str) = ("mirror-instance", "true");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// `.venv/bin` of the repository, and of the main checkout when this is a git worktree.
fn venv_bins() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut dirs = vec![root.join(".venv/bin")];
    // A worktree's `.git` is a file: `gitdir: <main>/.git/worktrees/<name>`.
    if let Ok(text) = std::fs::read_to_string(root.join(".git"))
        && let Some(gitdir) = text.trim().strip_prefix("gitdir:")
        && let Some(main_git) = Path::new(gitdir.trim()).ancestors().nth(2)
        && let Some(main) = main_git.parent()
    {
        dirs.push(main.join(".venv/bin"));
    }
    dirs
}

/// Find a tool: `$env_var`, then the repository's `.venv/bin` (the versions
/// `scripts/setup.sh` pins: an older moto on `PATH` may lack the traffic-mirror API), then
/// `PATH`.
pub fn find_tool(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            eprintln!("{env_var}={} is not a file", p.display());
            return None;
        }
        return Some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    venv_bins()
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// True when `MIRRORFLEET_REQUIRE_SYSTEM=1`: missing prerequisites fail instead of skipping.
pub fn require_system() -> bool {
    std::env::var("MIRRORFLEET_REQUIRE_SYSTEM").is_ok_and(|v| v == "1")
}

/// The tools a moto test needs, or `None` (after printing why) when the test should skip.
/// Panics when they are missing and [`require_system`] is set.
pub fn tools() -> Option<Tools> {
    let moto = find_tool("MOTO_SERVER", "moto_server");
    let lambda = find_tool("CARGO_LAMBDA", "cargo-lambda");
    match (moto, lambda) {
        (Some(moto_server), Some(cargo_lambda)) => Some(Tools {
            moto_server,
            cargo_lambda,
        }),
        (moto, lambda) => {
            let mut missing = Vec::new();
            if moto.is_none() {
                missing.push("moto_server (set MOTO_SERVER, or pip install 'moto[server]')");
            }
            if lambda.is_none() {
                missing.push("cargo-lambda (set CARGO_LAMBDA, or pip install cargo-lambda)");
            }
            let msg = format!(
                "missing {} (searched the env var, {:?} and PATH)",
                missing.join(" and "),
                venv_bins()
            );
            assert!(!require_system(), "MIRRORFLEET_REQUIRE_SYSTEM=1: {msg}");
            eprintln!("skipping moto test: {msg}");
            None
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tools {
    pub moto_server: PathBuf,
    pub cargo_lambda: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn wait_listening(port: u16, child: &mut Child, what: &str, log: &Path) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status} before listening on {port}; log {}:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} not listening on {port} after 60 s; log {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A per-test scratch directory outside the crate folders, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "mirrorfleet-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch { dir }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("MIRRORFLEET_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A child process killed (and reaped) on drop.
pub struct Guard {
    child: Child,
}

impl Guard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A moto server on 127.0.0.1.
pub struct Moto {
    pub port: u16,
    pub url: String,
    _guard: Guard,
}

impl Moto {
    pub fn start(tools: &Tools, scratch: &Scratch) -> Moto {
        let port = free_port();
        let log_path = scratch.dir.join("moto.log");
        let log = std::fs::File::create(&log_path).expect("moto log");
        let mut child = Command::new(&tools.moto_server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", tools.moto_server.display()));
        wait_listening(port, &mut child, "moto_server", &log_path);
        Moto {
            port,
            url: format!("http://127.0.0.1:{port}"),
            _guard: Guard { child },
        }
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    pub fn autoscaling(&self) -> aws_sdk_autoscaling::Client {
        use aws_sdk_autoscaling::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_autoscaling::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .build();
        aws_sdk_autoscaling::Client::from_conf(config)
    }

    pub fn elbv2(&self) -> aws_sdk_elasticloadbalancingv2::Client {
        use aws_sdk_elasticloadbalancingv2::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_elasticloadbalancingv2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .build();
        aws_sdk_elasticloadbalancingv2::Client::from_conf(config)
    }

    /// The environment a Lambda binary needs to talk to this moto server.
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

/// `cargo lambda watch --only-lambda-apis`: the Lambda Runtime API and invoke endpoint.
pub struct RuntimeApi {
    pub port: u16,
    cargo_lambda: PathBuf,
    _guard: Guard,
}

impl RuntimeApi {
    pub fn start(tools: &Tools, scratch: &Scratch) -> RuntimeApi {
        let port = free_port();
        let log_path = scratch.dir.join("cargo-lambda-watch.log");
        let log = std::fs::File::create(&log_path).expect("watch log");
        let mut child = Command::new(&tools.cargo_lambda)
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--ignore-changes",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &port.to_string(),
            ])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", tools.cargo_lambda.display()));
        wait_listening(port, &mut child, "cargo lambda watch", &log_path);
        RuntimeApi {
            port,
            cargo_lambda: tools.cargo_lambda.clone(),
            _guard: Guard { child },
        }
    }

    /// `AWS_LAMBDA_RUNTIME_API` for a function binary.
    pub fn runtime_api(&self) -> String {
        format!("http://127.0.0.1:{}/.rt", self.port)
    }

    /// `cargo lambda invoke _ --data-file <file>`: the function's JSON response, or the error
    /// it returned (as cargo lambda printed it).
    pub async fn invoke(&self, data_file: &Path) -> Result<Value, String> {
        let out = tokio::process::Command::new(&self.cargo_lambda)
            .args(["lambda", "invoke", "_", "--data-file"])
            .arg(data_file)
            .args([
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &self.port.to_string(),
                "--output-format",
                "json",
            ])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), out)
            .await
            .map_err(|_| "cargo lambda invoke timed out after 120 s".to_owned())?
            .map_err(|e| format!("run cargo lambda invoke: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(format!("{}\n{stdout}\n{stderr}", out.status));
        }
        serde_json::from_str(stdout.trim())
            .map_err(|e| format!("response is not JSON ({e}): {stdout}\n{stderr}"))
    }
}

/// A Lambda binary connected to a [`RuntimeApi`].
pub struct Function {
    pub name: String,
    pub log: PathBuf,
    _guard: Guard,
}

impl Function {
    /// Start `binary` with the Lambda environment, the AWS environment of `moto` and `env`.
    pub fn start(
        binary: &Path,
        api: &RuntimeApi,
        moto: &Moto,
        env: &[(String, String)],
        scratch: &Scratch,
    ) -> Function {
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log_path = scratch.dir.join(format!(
            "{name}-{}.log",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let log = std::fs::File::create(&log_path).expect("function log");
        let child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.runtime_api())
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("RUST_LOG", "info")
            .envs(moto.aws_env())
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        Function {
            name,
            log: log_path,
            _guard: Guard { child },
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Everything a moto test starts: tools, scratch dir, moto, Runtime API.
pub struct Harness {
    pub tools: Tools,
    pub moto: Moto,
    pub api: RuntimeApi,
    pub scratch: Scratch,
}

impl Harness {
    /// Start moto and the Runtime API, or `None` (skip) when the tools are missing.
    pub fn start(tag: &str) -> Option<Harness> {
        let tools = tools()?;
        let scratch = Scratch::new(tag);
        let moto = Moto::start(&tools, &scratch);
        let api = RuntimeApi::start(&tools, &scratch);
        Some(Harness {
            tools,
            moto,
            api,
            scratch,
        })
    }

    /// Start a Lambda binary against this harness.
    pub fn function(&self, binary: &Path, env: &[(String, String)]) -> Function {
        Function::start(binary, &self.api, &self.moto, env, &self.scratch)
    }

    /// Write `event` to a file and invoke the running function with it.
    pub async fn invoke(&self, function: &Function, event: &Value) -> Result<Value, String> {
        let path = self.scratch.dir.join(format!(
            "event-{}.json",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, serde_json::to_vec_pretty(event).expect("event JSON"))
            .expect("write event");
        self.api.invoke(&path).await.map_err(|e| {
            format!(
                "{e}\n--- {} log ---\n{}",
                function.name,
                function.log_text()
            )
        })
    }
}

/// A sample event from `events/`.
pub fn sample_event(name: &str) -> Value {
    let path = workspace_root().join("events").join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The sample event `name` with its instance / ENI ids replaced by ids seeded in moto (the
/// shape stays the one in `events/`).
pub fn event_for(name: &str, eni: Option<&str>, instance: Option<&str>) -> Value {
    let mut v = sample_event(name);
    let account = "123456789012";
    if let Some(i) = instance {
        if v["detail"].get("instance-id").is_some() {
            v["detail"]["instance-id"] = i.into();
        }
        if v["detail"]["requestParameters"].get("instanceId").is_some() {
            v["detail"]["requestParameters"]["instanceId"] = i.into();
        }
        if v["detail"]["resource-type"] == "instance" || v["detail"].get("instance-id").is_some() {
            v["resources"] =
                serde_json::json!([format!("arn:aws:ec2:{REGION}:{account}:instance/{i}")]);
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
                "arn:aws:ec2:{REGION}:{account}:network-interface/{e}"
            )]);
        }
    }
    v
}

fn tag_spec(resource: ResourceType, tags: &[(&str, &str)]) -> Option<Vec<TagSpecification>> {
    if tags.is_empty() {
        return None;
    }
    Some(vec![
        TagSpecification::builder()
            .resource_type(resource)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .build(),
    ])
}

/// The base world: a VPC, two subnets, an internal NLB with a UDP/4789 listener, the mirror
/// target on it, and a filter.
pub struct Seed {
    pub ec2: aws_sdk_ec2::Client,
    pub vpc_id: String,
    pub subnets: Vec<String>,
    pub nlb_arn: String,
    pub target_id: String,
    pub filter_id: String,
}

impl Seed {
    pub async fn create(moto: &Moto) -> Seed {
        let ec2 = moto.ec2();
        let vpc_id = ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .send()
            .await
            .expect("create VPC")
            .vpc()
            .and_then(|v| v.vpc_id())
            .expect("VPC id")
            .to_owned();
        let mut subnets = Vec::new();
        for (i, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
            let out = ec2
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(format!("10.0.{}.0/20", i * 16))
                .availability_zone(*az)
                .send()
                .await
                .expect("create subnet");
            subnets.push(out.subnet().and_then(|s| s.subnet_id()).unwrap().to_owned());
        }
        let elb = moto.elbv2();
        use aws_sdk_elasticloadbalancingv2::types::{
            Action, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, ProtocolEnum,
        };
        let nlb_arn = elb
            .create_load_balancer()
            .name("mirrorfleet-target")
            .r#type(LoadBalancerTypeEnum::Network)
            .scheme(LoadBalancerSchemeEnum::Internal)
            .set_subnets(Some(subnets.clone()))
            .send()
            .await
            .expect("create NLB")
            .load_balancers()
            .first()
            .and_then(|l| l.load_balancer_arn())
            .expect("NLB ARN")
            .to_owned();
        let tg_arn = elb
            .create_target_group()
            .name("mirrorfleet-rebuilders")
            .protocol(ProtocolEnum::Udp)
            .port(4789)
            .vpc_id(&vpc_id)
            .health_check_protocol(ProtocolEnum::Tcp)
            .health_check_port("8080")
            .send()
            .await
            .expect("create target group")
            .target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
            .expect("target group ARN")
            .to_owned();
        elb.create_listener()
            .load_balancer_arn(&nlb_arn)
            .protocol(ProtocolEnum::Udp)
            .port(4789)
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(&tg_arn)
                    .build(),
            )
            .send()
            .await
            .expect("create UDP listener");
        let target_id = ec2
            .create_traffic_mirror_target()
            .network_load_balancer_arn(&nlb_arn)
            .description("mirrorfleet rebuilders")
            .send()
            .await
            .expect("create mirror target")
            .traffic_mirror_target()
            .and_then(|t| t.traffic_mirror_target_id())
            .expect("target id")
            .to_owned();
        let filter_id = ec2
            .create_traffic_mirror_filter()
            .description("mirrorfleet http")
            .send()
            .await
            .expect("create mirror filter")
            .traffic_mirror_filter()
            .and_then(|f| f.traffic_mirror_filter_id())
            .expect("filter id")
            .to_owned();
        Seed {
            ec2,
            vpc_id,
            subnets,
            nlb_arn,
            target_id,
            filter_id,
        }
    }

    /// The settings of onboard-eni / reconcile-mirrors for this world.
    pub fn mirror_env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("MIRROR_TARGET_ID".into(), self.target_id.clone()),
            ("MIRROR_FILTER_ID".into(), self.filter_id.clone()),
            ("MIRROR_VNI".into(), VNI.to_string()),
            ("MIRROR_OWNER".into(), OWNER.into()),
            (
                "MIRROR_ENI_FILTERS".into(),
                format!("Name=tag:{},Values={}", ENI_TAG.0, ENI_TAG.1),
            ),
            (
                "MIRROR_INSTANCE_FILTERS".into(),
                format!(
                    "Name=tag:{},Values={} Name=instance-state-name,Values=running",
                    INSTANCE_TAG.0, INSTANCE_TAG.1
                ),
            ),
        ];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    }

    /// A standalone ENI in subnet `subnet` (index) with `tags`.
    pub async fn eni(&self, subnet: usize, tags: &[(&str, &str)]) -> String {
        self.ec2
            .create_network_interface()
            .subnet_id(&self.subnets[subnet % self.subnets.len()])
            .description("app")
            .set_tag_specifications(tag_spec(ResourceType::NetworkInterface, tags))
            .send()
            .await
            .expect("create ENI")
            .network_interface()
            .and_then(|n| n.network_interface_id())
            .expect("ENI id")
            .to_owned()
    }

    /// A running instance with `tags`; returns its id and its primary ENI.
    pub async fn instance(&self, tags: &[(&str, &str)]) -> (String, String) {
        let out = self
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(InstanceType::M5Large)
            .min_count(1)
            .max_count(1)
            .subnet_id(&self.subnets[0])
            .set_tag_specifications(tag_spec(ResourceType::Instance, tags))
            .send()
            .await
            .expect("run instance");
        let i = out.instances().first().expect("one instance");
        let id = i.instance_id().expect("instance id").to_owned();
        let eni = i
            .network_interfaces()
            .first()
            .and_then(|n| n.network_interface_id())
            .expect("primary ENI")
            .to_owned();
        (id, eni)
    }

    /// A session not created by us (no owner tag, or another owner).
    pub async fn foreign_session(&self, eni: &str, number: i32, owner: Option<&str>) -> String {
        let tags: Vec<(&str, &str)> = owner
            .map(|o| vec![("mirrorfleet:owner", o)])
            .unwrap_or_default();
        self.ec2
            .create_traffic_mirror_session()
            .network_interface_id(eni)
            .traffic_mirror_target_id(&self.target_id)
            .traffic_mirror_filter_id(&self.filter_id)
            .session_number(number)
            .virtual_network_id(99)
            .set_tag_specifications(tag_spec(ResourceType::TrafficMirrorSession, &tags))
            .send()
            .await
            .expect("create foreign session")
            .traffic_mirror_session()
            .and_then(|s| s.traffic_mirror_session_id())
            .expect("session id")
            .to_owned()
    }

    /// Every session on `eni`.
    pub async fn sessions_on(&self, eni: &str) -> Vec<TrafficMirrorSession> {
        self.ec2
            .describe_traffic_mirror_sessions()
            .filters(
                Filter::builder()
                    .name("network-interface-id")
                    .values(eni)
                    .build(),
            )
            .send()
            .await
            .expect("describe sessions")
            .traffic_mirror_sessions()
            .to_vec()
    }

    /// Every session in moto (all pages).
    pub async fn all_sessions(&self) -> Vec<TrafficMirrorSession> {
        let mut out = Vec::new();
        let mut pages = self
            .ec2
            .describe_traffic_mirror_sessions()
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            out.extend(
                page.expect("describe sessions")
                    .traffic_mirror_sessions()
                    .to_vec(),
            );
        }
        out
    }

    /// Change a session's VNI behind our back (drift).
    pub async fn set_session_vni(&self, session_id: &str, vni: i32) {
        self.ec2
            .modify_traffic_mirror_session()
            .traffic_mirror_session_id(session_id)
            .virtual_network_id(vni)
            .send()
            .await
            .expect("modify session");
    }

    /// An Auto Scaling group for the rebuilder fleet (launch configuration included).
    pub async fn fleet_group(
        &self,
        asg: &aws_sdk_autoscaling::Client,
        name: &str,
        min: i32,
        max: i32,
        desired: i32,
    ) {
        asg.create_launch_configuration()
            .launch_configuration_name(format!("{name}-lc"))
            .image_id("ami-12c6146b")
            .instance_type("c5.large")
            .send()
            .await
            .expect("create launch configuration");
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_configuration_name(format!("{name}-lc"))
            .min_size(min)
            .max_size(max)
            .desired_capacity(desired)
            .vpc_zone_identifier(self.subnets.join(","))
            .send()
            .await
            .expect("create auto scaling group");
    }

    pub async fn remove_tag(&self, resource: &str, key: &str) {
        self.ec2
            .delete_tags()
            .resources(resource)
            .tags(Tag::builder().key(key).build())
            .send()
            .await
            .expect("delete tag");
    }
}

/// The group's desired capacity and its tags.
pub async fn group_state(
    asg: &aws_sdk_autoscaling::Client,
    name: &str,
) -> (i32, Vec<(String, String)>) {
    let out = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .expect("describe auto scaling groups");
    let g = out.auto_scaling_groups().first().expect("the group exists");
    let tags = g
        .tags()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    (g.desired_capacity().unwrap_or(-1), tags)
}

/// True when the session carries our owner tag.
pub fn is_owned(s: &TrafficMirrorSession) -> bool {
    s.tags()
        .iter()
        .any(|t| t.key() == Some("mirrorfleet:owner") && t.value() == Some(OWNER))
}
