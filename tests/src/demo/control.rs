//! The control plane against moto, through the Lambda Runtime API: moto, `cargo lambda watch`
//! and the function binaries come from the control plane's test kit (`mirror-testkit`, without
//! its SDK side); the demo's world is seeded and read back by `scripts/demo/seed.py`, as
//! `make demo` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use mirror_testkit::{Harness, Tools};
use serde::Deserialize;
use serde_json::Value;

use super::harness;

/// The Lambda binaries the control-plane tests run.
pub const FUNCTIONS: [&str; 3] = ["onboard-eni", "reconcile-mirrors", "size-fleet"];

/// Why the control-plane tests can't run here, if they can't.
pub fn prerequisites() -> Result<(), String> {
    Tools::find()?;
    if harness::python().is_none() {
        return Err("no python3 with boto3 (make setup installs it into .venv)".into());
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

/// `scripts/demo/seed.py` against one moto server: the demo's world, and what the tests read
/// back from moto.
pub struct SeedScript {
    pub endpoint: String,
}

impl SeedScript {
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

pub use mirror_testkit::REGION;

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

pub const OWNER_TAG: &str = mirror::model::OWNER_TAG_KEY;

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
    /// The functions' environment besides the AWS one (which points them at moto).
    pub fn env(&self, world: &World) -> Vec<(String, String)> {
        [
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
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
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

/// Everything a control-plane test needs, torn down on drop (moto and the Runtime API are
/// stopped, the scratch directory removed unless the test failed).
pub struct ControlPlane {
    pub world: World,
    pub settings: Settings,
    pub events: PathBuf,
    pub moto: SeedScript,
    kit: Harness,
}

impl ControlPlane {
    pub fn start(settings: Settings) -> Result<Self> {
        let kit = Harness::with_tools(Tools::find().map_err(|e| anyhow!(e))?, "cp");
        let moto = SeedScript {
            endpoint: kit.moto.url.clone(),
        };
        let world = moto.seed("mirrorfleet-rebuilders")?;
        let events = write_events(&world, kit.scratch.path())?;
        Ok(Self {
            world,
            settings,
            events,
            moto,
            kit,
        })
    }

    /// Starts `function`, invokes it once per event file name (in `events/`), stops it.
    pub fn run(&self, function: &str, events: &[&str]) -> Result<Vec<Value>> {
        let bin = harness::workspace_bin(function).with_context(|| {
            format!(
                "{function} is not built in {}",
                harness::bin_dir().display()
            )
        })?;
        let f = self.kit.function(&bin, &self.settings.env(&self.world));
        events
            .iter()
            .map(|e| {
                self.kit
                    .api
                    .invoke_blocking(&f, &self.events.join(e))
                    .map_err(|e| anyhow!(e))
            })
            .collect()
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
