//! The control plane against moto, through the Lambda Runtime API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;

use super::harness::{self, Proc, TempDir};

/// The Lambda binaries the control-plane tests run.
pub const FUNCTIONS: [&str; 3] = ["onboard-eni", "reconcile-mirrors", "size-fleet"];

/// Why the control-plane tests can't run here, if they can't.
pub fn prerequisites() -> Result<(), String> {
    if harness::tool("moto_server").is_none() {
        return Err("moto_server not found (make setup installs it into .venv)".into());
    }
    if harness::python().is_none() {
        return Err("no python3 with boto3 (make setup installs it into .venv)".into());
    }
    if harness::tool("cargo-lambda").is_none() {
        return Err("cargo-lambda not found (make setup installs it into .venv)".into());
    }
    for f in FUNCTIONS {
        if harness::workspace_bin(f).is_none() {
            return Err(format!(
                "{f} is not built in {} (cargo build --workspace --all-targets)",
                harness::bin_dir().display()
            ));
        }
    }
    Ok(())
}

/// A moto server on a free 127.0.0.1 port, stopped on drop.
pub struct Moto {
    pub endpoint: String,
    _proc: Proc,
}

impl Moto {
    pub fn start(dir: &Path) -> Result<Self> {
        let port = harness::free_port();
        let mut cmd = Command::new(harness::tool("moto_server").context("moto_server")?);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut proc = Proc::spawn("moto", cmd, dir)?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        if !harness::wait_tcp(addr, Duration::from_secs(30)) {
            bail!(
                "moto did not listen on {addr} within 30 s (exited: {:?}):\n{}",
                proc.exited(),
                proc.log_tail(20)
            );
        }
        Ok(Self {
            endpoint: format!("http://{addr}"),
            _proc: proc,
        })
    }

    fn seed_cmd(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(harness::python().context("python3 with boto3")?);
        cmd.arg(harness::demo_script("seed.py"))
            .args(["--endpoint", &self.endpoint, "--region", REGION])
            .args(args);
        Ok(cmd)
    }

    /// Seeds the demo VPC (see `scripts/demo/seed.py`).
    pub fn seed(&self, asg_name: &str) -> Result<World> {
        let out = harness::run_ok(
            self.seed_cmd(&["seed", "--asg-name", asg_name])?,
            Duration::from_secs(120),
        )?;
        let raw: Value = serde_json::from_str(&out.stdout).context("seed.py output")?;
        let mut world: World = serde_json::from_value(raw.clone()).context("seed.py output")?;
        world.raw = raw;
        Ok(world)
    }

    /// Every traffic mirror session in moto.
    pub fn sessions(&self) -> Result<Vec<MirrorSession>> {
        let out = harness::run_ok(self.seed_cmd(&["sessions"])?, Duration::from_secs(60))?;
        serde_json::from_str(&out.stdout).context("seed.py sessions output")
    }

    /// The ASG's desired capacity.
    pub fn desired_capacity(&self, asg_name: &str) -> Result<u32> {
        let out = harness::run_ok(
            self.seed_cmd(&["asg", "--name", asg_name])?,
            Duration::from_secs(60),
        )?;
        let v: Value = serde_json::from_str(&out.stdout)?;
        v["desired"]
            .as_u64()
            .map(|d| d as u32)
            .context("asg output without desired")
    }

    /// Removes tag `key` from the given resources (drift for reconcile).
    pub fn untag(&self, resources: &[&str], key: &str) -> Result<()> {
        let mut args = vec!["untag", "--key", key];
        for r in resources {
            args.extend(["--resource", r]);
        }
        harness::run_ok(self.seed_cmd(&args)?, Duration::from_secs(60))?;
        Ok(())
    }
}

pub const REGION: &str = "us-east-1";

/// One seeded instance or ENI.
#[derive(Debug, Clone, Deserialize)]
pub struct Resource {
    pub name: String,
    pub kind: String,
    pub instance_id: Option<String>,
    pub eni_id: String,
    pub ip: String,
    pub subnet_id: String,
    pub tags: BTreeMap<String, String>,
}

/// What `seed.py seed` printed.
#[derive(Debug, Clone, Deserialize)]
pub struct World {
    pub vpc_id: String,
    pub target_id: String,
    pub filter_id: String,
    pub asg_name: String,
    pub foreign_session_id: String,
    pub by_name: BTreeMap<String, Resource>,
    pub expected_mirrored: Vec<String>,
    pub expected_untouched: Vec<String>,
    pub expected_after_events: Vec<String>,
    #[serde(skip)]
    pub raw: Value,
}

impl World {
    pub fn eni(&self, name: &str) -> &str {
        &self.by_name[name].eni_id
    }
}

/// A traffic mirror session as `seed.py sessions` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct MirrorSession {
    pub session_id: String,
    pub eni_id: String,
    pub target_id: String,
    pub filter_id: String,
    pub session_number: Option<u32>,
    pub vni: Option<u32>,
    pub packet_length: Option<u32>,
    pub tags: BTreeMap<String, String>,
}

pub const OWNER_TAG: &str = "mirrorfleet:owner";

/// Settings the functions get (what the SAM template sets in AWS).
#[derive(Debug, Clone)]
pub struct Settings {
    pub owner: String,
    pub vni: u32,
    pub fleet_min: u32,
    pub fleet_max: u32,
    pub sessions_per_instance: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            owner: "mirrorfleet-test".into(),
            vni: 4242,
            fleet_min: 1,
            fleet_max: 4,
            sessions_per_instance: 2,
        }
    }
}

impl Settings {
    pub fn env(&self, world: &World, moto: &Moto) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_ACCESS_KEY_ID", "mirrorfleet-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "mirrorfleet-test".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("MIRROR_TARGET_ID", world.target_id.clone()),
            ("MIRROR_FILTER_ID", world.filter_id.clone()),
            ("MIRROR_VNI", self.vni.to_string()),
            ("MIRROR_ENI_FILTERS", "Name=tag:mirror,Values=true".into()),
            (
                "MIRROR_INSTANCE_FILTERS",
                "Name=tag:mirror,Values=true".into(),
            ),
            ("MIRROR_EXCLUDE_TAG", "mirrorfleet:exclude".into()),
            ("MIRROR_OWNER", self.owner.clone()),
            ("FLEET_ASG_NAME", world.asg_name.clone()),
            ("FLEET_MIN", self.fleet_min.to_string()),
            ("FLEET_MAX", self.fleet_max.to_string()),
            (
                "FLEET_SESSIONS_PER_INSTANCE",
                self.sessions_per_instance.to_string(),
            ),
            ("FLEET_SCALE_IN_AFTER", "3".into()),
            ("DRY_RUN", "false".into()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// `cargo lambda watch --only-lambda-apis` on a free port, run from the workspace root; its log
/// lives in the test's temp dir (never in a crate folder).
pub struct RuntimeApi {
    pub port: u16,
    _proc: Proc,
}

impl RuntimeApi {
    pub fn start(dir: &Path) -> Result<Self> {
        let port = harness::free_port();
        let mut cmd = Command::new(harness::tool("cargo-lambda").context("cargo-lambda")?);
        cmd.args(["lambda", "watch", "--only-lambda-apis", "--ignore-changes"])
            .args(["-A", "127.0.0.1", "-P", &port.to_string()])
            .current_dir(harness::workspace_root())
            .env("PATH", harness::child_path());
        let mut proc = Proc::spawn("watch", cmd, dir)?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        if !harness::wait_tcp(addr, Duration::from_secs(60)) {
            bail!(
                "cargo lambda watch did not listen on {addr} (exited: {:?}):\n{}",
                proc.exited(),
                proc.log_tail(20)
            );
        }
        Ok(Self { port, _proc: proc })
    }

    /// Starts a function binary polling this runtime API as function `_`.
    pub fn function(
        &self,
        name: &str,
        env: &[(String, String)],
        dir: &Path,
    ) -> Result<Function<'_>> {
        let bin = harness::workspace_bin(name)
            .with_context(|| format!("{name} is not built in {}", harness::bin_dir().display()))?;
        let mut cmd = Command::new(bin);
        cmd.env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{}/.rt", self.port),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(&harness::unique(name), cmd, dir)?;
        Ok(Function {
            name: name.to_owned(),
            api: self,
            proc,
        })
    }
}

/// A running function binary; stopped on drop.
pub struct Function<'a> {
    pub name: String,
    api: &'a RuntimeApi,
    proc: Proc,
}

impl Function<'_> {
    /// `cargo lambda invoke _ --data-file EVENT`: the function's JSON response.
    pub fn invoke(&mut self, event: &Path) -> Result<Value> {
        if let Some(status) = self.proc.exited() {
            bail!(
                "{} exited ({status}) before the invocation:\n{}",
                self.name,
                self.proc.log_tail(20)
            );
        }
        let mut cmd = Command::new(harness::tool("cargo-lambda").context("cargo-lambda")?);
        cmd.args(["lambda", "invoke", "_", "--data-file"])
            .arg(event)
            .args(["-A", "127.0.0.1", "-P", &self.api.port.to_string()])
            .current_dir(harness::workspace_root())
            .env("PATH", harness::child_path());
        let out = harness::run(cmd, Duration::from_secs(120))?;
        if !out.status.success() {
            bail!(
                "{} failed on {}:\n{}{}\nfunction log:\n{}",
                self.name,
                event.display(),
                out.stdout,
                out.stderr,
                self.proc.log_tail(30)
            );
        }
        serde_json::from_str(&out.stdout).with_context(|| {
            format!(
                "{} returned no JSON for {}: {}",
                self.name,
                event.display(),
                out.stdout
            )
        })
    }
}

/// Writes the demo's events (the `events/` samples with the seeded ids) into `dir/events`:
/// `01-web-1-running.json`, `02-api-eni-created.json`, `03-web-3-tagged.json`,
/// `04-web-1-running-again.json`, `scheduled.json`.
pub fn write_events(world: &World, dir: &Path) -> Result<PathBuf> {
    let seed_file = dir.join("world.json");
    std::fs::write(&seed_file, serde_json::to_vec_pretty(&world.raw)?)?;
    let out = dir.join("events");
    let mut cmd = Command::new(harness::python().context("python3")?);
    cmd.arg(harness::demo_script("events.py"))
        .arg("--events-dir")
        .arg(harness::workspace_root().join("events"))
        .arg("--seed")
        .arg(&seed_file)
        .arg("--out")
        .arg(&out);
    harness::run_ok(cmd, Duration::from_secs(30))?;
    Ok(out)
}

/// Everything a control-plane test needs, torn down in reverse order on drop.
pub struct ControlPlane {
    pub world: World,
    pub settings: Settings,
    pub events: PathBuf,
    pub api: RuntimeApi,
    pub moto: Moto,
    pub dir: TempDir,
}

impl ControlPlane {
    pub fn start(settings: Settings) -> Result<Self> {
        let dir = TempDir::new("mfcp")?;
        let moto = Moto::start(dir.path())?;
        let world = moto.seed("mirrorfleet-rebuilders")?;
        let events = write_events(&world, dir.path())?;
        let api = RuntimeApi::start(dir.path())?;
        Ok(Self {
            world,
            settings,
            events,
            api,
            moto,
            dir,
        })
    }

    /// Starts `function`, invokes it once per event file name (in `events/`), stops it.
    pub fn run(&self, function: &str, events: &[&str]) -> Result<Vec<Value>> {
        let env = self.settings.env(&self.world, &self.moto);
        let mut f = self.api.function(function, &env, self.dir.path())?;
        let mut out = Vec::new();
        for e in events {
            out.push(f.invoke(&self.events.join(e))?);
        }
        Ok(out)
    }

    /// The sessions carrying our owner tag, by ENI.
    pub fn owned_sessions(&self) -> Result<BTreeMap<String, Vec<MirrorSession>>> {
        let mut by_eni: BTreeMap<String, Vec<MirrorSession>> = BTreeMap::new();
        for s in self.moto.sessions()? {
            if s.tags.get(OWNER_TAG) == Some(&self.settings.owner) {
                by_eni.entry(s.eni_id.clone()).or_default().push(s);
            }
        }
        Ok(by_eni)
    }
}
