//! The source map (`docs/sources.md`): which mirrored ENI, instance, load balancer or cluster
//! a datagram's key belongs to. The control plane publishes the document; `rebuilder run` and
//! `rebuilder replay` read it from `--sources-file` (`REBUILDER_SOURCES_FILE`).
//!
//! - [`SourceMap`]: one document, parsed and validated (version 1; a version this reader does
//!   not know is refused), indexed by key. [`SourceMap::lookup`] finds the entry of a
//!   [`SourceKey`] with the precedence of `docs/sources.md` ("The key a rebuilder matches on"):
//!   the full key (GWLB endpoint, sender, VNI), else the (endpoint, sender) pair, else the
//!   (endpoint, VNI) pair, each only when exactly one ENI has it.
//! - [`Attribution`]: the `"source"` object of an output record: the map's entry as published
//!   (every field of it), or the key with `"eni": null` when the key is not in the map.
//! - [`SharedSources`] and [`watch`]: the map in force, replaced as a whole when the file
//!   changes (polled: inode, size, modification time), never torn, kept when the new document
//!   does not load. Readers hold a [`SourcesReader`], which costs one atomic load per look-up
//!   while the map is unchanged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::engine::encap::geneve::endpoint_name;
pub use crate::engine::source::SourceKey;

/// The one version of the document this reader knows.
pub const VERSION: u64 = 1;

/// Why a document was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error("cannot read the source map {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the source map is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the source map has version {0}; this rebuilder reads version {VERSION} only")]
    Version(String),
    #[error("the source map is invalid: {0}")]
    Invalid(String),
}

/// One loaded document, indexed.
#[derive(Debug, Default)]
pub struct SourceMap {
    /// The entries as published (objects).
    entries: Vec<Value>,
    /// The ENI of each entry.
    enis: Vec<String>,
    /// The sender address of each entry.
    senders: Vec<Option<IpAddr>>,
    /// Entry by full key; `None`: several ENIs have it (ambiguous).
    exact: HashMap<(Option<u64>, IpAddr, u32), Option<u32>>,
    by_sender: HashMap<(Option<u64>, IpAddr), Option<u32>>,
    by_vni: HashMap<(Option<u64>, u32), Option<u32>>,
    generated_at: Option<String>,
}

/// Notes `idx` under `k`: ambiguous (`None`) once two ENIs have the key.
fn note<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Option<u32>>, enis: &[String], k: K, idx: u32) {
    m.entry(k)
        .and_modify(|cur| {
            if cur.is_some_and(|c| enis[c as usize] != enis[idx as usize]) {
                *cur = None;
            }
        })
        .or_insert(Some(idx));
}

/// `vpce-` and 17 hex digits, as AWS names an endpoint, to the id GENEVE carries.
fn parse_endpoint(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("vpce-")?;
    (hex.len() == 17 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

impl SourceMap {
    /// A map without entries (every key unknown).
    pub fn empty() -> SourceMap {
        SourceMap::default()
    }

    /// A shared map without entries.
    pub fn none() -> &'static SourceMap {
        static NONE: std::sync::LazyLock<SourceMap> = std::sync::LazyLock::new(SourceMap::empty);
        &NONE
    }

    /// Parses and validates one document.
    pub fn parse(bytes: &[u8]) -> Result<SourceMap, SourcesError> {
        let doc: Value = serde_json::from_slice(bytes)?;
        let Some(obj) = doc.as_object() else {
            return Err(SourcesError::Invalid("not a JSON object".into()));
        };
        match obj.get("version") {
            Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
            Some(v) => return Err(SourcesError::Version(v.to_string())),
            None => return Err(SourcesError::Version("(none)".into())),
        }
        let Some(sources) = obj.get("sources").and_then(Value::as_array) else {
            return Err(SourcesError::Invalid("`sources` is not an array".into()));
        };
        let mut map = SourceMap {
            generated_at: obj
                .get("generated_at")
                .and_then(Value::as_str)
                .map(str::to_owned),
            ..SourceMap::default()
        };
        let mut keys = Vec::with_capacity(sources.len());
        for (i, s) in sources.iter().enumerate() {
            let bad = |what: &str| SourcesError::Invalid(format!("sources[{i}]: {what}"));
            let o = s.as_object().ok_or_else(|| bad("not an object"))?;
            let eni = o
                .get("eni")
                .and_then(Value::as_str)
                .filter(|e| e.starts_with("eni-"))
                .ok_or_else(|| bad("`eni` is not an ENI id (eni-…)"))?;
            let sender = match o.get("sender_ip") {
                None | Some(Value::Null) => None,
                Some(Value::String(a)) => Some(
                    a.parse::<IpAddr>()
                        .map_err(|_| bad("`sender_ip` is not an IP address"))?,
                ),
                Some(_) => return Err(bad("`sender_ip` is not a string")),
            };
            let vni = match o.get("vni") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .filter(|v| *v < 1 << 24)
                        .ok_or_else(|| bad("`vni` is not a 24-bit integer"))?
                        as u32,
                ),
            };
            let gwlbe = match o.get("gwlbe") {
                None | Some(Value::Null) => None,
                Some(Value::String(g)) => {
                    Some(parse_endpoint(g).ok_or_else(|| bad("`gwlbe` is not an endpoint id"))?)
                }
                Some(_) => return Err(bad("`gwlbe` is not a string")),
            };
            map.enis.push(eni.to_owned());
            map.senders.push(sender);
            map.entries.push(s.clone());
            keys.push((gwlbe, sender, vni));
        }
        for (i, (gwlbe, sender, vni)) in keys.into_iter().enumerate() {
            let i = i as u32;
            if let (Some(a), Some(v)) = (sender, vni) {
                note(&mut map.exact, &map.enis, (gwlbe, a, v), i);
            }
            if let Some(a) = sender {
                note(&mut map.by_sender, &map.enis, (gwlbe, a), i);
            }
            if let Some(v) = vni {
                note(&mut map.by_vni, &map.enis, (gwlbe, v), i);
            }
        }
        Ok(map)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<SourceMap, SourcesError> {
        let bytes = std::fs::read(path).map_err(|source| SourcesError::Io {
            path: path.to_owned(),
            source,
        })?;
        SourceMap::parse(&bytes)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The document's `generated_at`.
    pub fn generated_at(&self) -> Option<&str> {
        self.generated_at.as_deref()
    }

    /// The entry of `key`: the full key first, then (endpoint, sender), then (endpoint, VNI),
    /// each only when exactly one ENI has it. The VNI alone never names an entry whose
    /// address differs from a known sender (every session of a stack may share one VNI).
    pub fn lookup(&self, key: &SourceKey) -> Option<usize> {
        if let (Some(a), Some(v)) = (key.sender, key.vni)
            && let Some(found) = self.exact.get(&(key.gwlbe, a, v))
        {
            return found.map(|i| i as usize);
        }
        if let Some(a) = key.sender
            && let Some(found) = self.by_sender.get(&(key.gwlbe, a))
        {
            return found.map(|i| i as usize);
        }
        if let Some(v) = key.vni
            && let Some(&Some(i)) = self.by_vni.get(&(key.gwlbe, v))
        {
            let entry_sender = self.senders[i as usize];
            let differs = matches!((key.sender, entry_sender), (Some(a), Some(b)) if a != b);
            return (!differs).then_some(i as usize);
        }
        None
    }

    /// The ENI of `key`, when the map has it.
    pub fn eni(&self, key: &SourceKey) -> Option<&str> {
        self.lookup(key).map(|i| self.enis[i].as_str())
    }

    /// Whether the map names `key`'s ENI as a load balancer's (`load_balancer` set).
    pub fn is_load_balancer(&self, key: &SourceKey) -> bool {
        self.lookup(key)
            .is_some_and(|i| !self.entries[i]["load_balancer"].is_null())
    }

    /// The `"source"` object for `key`.
    pub fn attribute(&self, key: SourceKey) -> Attribution<'_> {
        match self.lookup(&key) {
            Some(i) => Attribution::Known(&self.entries[i]),
            None => Attribution::Unknown(UnknownSource {
                eni: (),
                sender_ip: key.sender,
                vni: key.vni,
                gwlbe: key.gwlbe.map(endpoint_name),
            }),
        }
    }
}

/// The `"source"` of a record.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Attribution<'a> {
    /// The map's entry, as published.
    Known(&'a Value),
    /// Not in the map: the key, `"eni": null`.
    Unknown(UnknownSource),
}

impl Attribution<'_> {
    /// The ENI (`None` when unknown).
    pub fn eni(&self) -> Option<&str> {
        match self {
            Attribution::Known(v) => v.get("eni").and_then(Value::as_str),
            Attribution::Unknown(_) => None,
        }
    }
}

/// The key of traffic whose source is not in the map.
#[derive(Debug, Clone, Serialize)]
pub struct UnknownSource {
    /// Always `null`.
    #[serde(serialize_with = "null")]
    pub eni: (),
    pub sender_ip: Option<IpAddr>,
    pub vni: Option<u32>,
    pub gwlbe: Option<String>,
}

fn null<S: serde::Serializer>(_: &(), s: S) -> Result<S::Ok, S::Error> {
    s.serialize_none()
}

/// The map in force, shared by every reader, and the counters of its loading.
#[derive(Debug, Default)]
pub struct SharedSources {
    current: RwLock<Arc<SourceMap>>,
    generation: AtomicU64,
    loads: AtomicU64,
    load_errors: AtomicU64,
}

impl SharedSources {
    /// Starts with `map`.
    pub fn new(map: SourceMap) -> SharedSources {
        SharedSources {
            current: RwLock::new(Arc::new(map)),
            ..SharedSources::default()
        }
    }

    /// The map in force.
    pub fn get(&self) -> Arc<SourceMap> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the map (readers see it at their next look-up).
    pub fn replace(&self, map: SourceMap) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        self.generation.fetch_add(1, Ordering::Release);
        self.loads.fetch_add(1, Ordering::Relaxed);
    }

    /// A document that did not load (the map in force stays).
    pub fn load_failed(&self) {
        self.load_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Documents loaded, and documents refused, so far.
    pub fn load_counts(&self) -> (u64, u64) {
        (
            self.loads.load(Ordering::Relaxed),
            self.load_errors.load(Ordering::Relaxed),
        )
    }

    /// A reader (caches the map until it is replaced).
    pub fn reader(self: &Arc<SharedSources>) -> SourcesReader {
        SourcesReader {
            generation: self.generation.load(Ordering::Acquire),
            map: self.get(),
            shared: self.clone(),
        }
    }
}

/// One consumer's view of [`SharedSources`]: the map, re-fetched when it was replaced.
#[derive(Debug, Clone)]
pub struct SourcesReader {
    shared: Arc<SharedSources>,
    generation: u64,
    map: Arc<SourceMap>,
}

impl SourcesReader {
    /// A reader of a fixed map (no reloading: `rebuilder replay`, tests).
    pub fn fixed(map: SourceMap) -> SourcesReader {
        Arc::new(SharedSources::new(map)).reader()
    }

    /// The map in force now.
    #[inline]
    pub fn map(&mut self) -> &SourceMap {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.map = self.shared.get();
            self.generation = g;
        }
        &self.map
    }
}

/// What identifies a version of the file: device, inode, size, modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// Loads `path` into `shared` when its stamp differs from `last`; returns the new stamp.
/// A missing file keeps the map in force (it may appear later).
fn check(path: &Path, shared: &SharedSources, last: Option<Stamp>) -> Option<Stamp> {
    let now = stamp(path);
    if now == last {
        return last;
    }
    let Some(_) = now else {
        tracing::warn!(path = %path.display(), "source map file is missing; keeping the map in force");
        return None;
    };
    match SourceMap::load(path) {
        Ok(map) => {
            tracing::info!(
                path = %path.display(),
                sources = map.len(),
                generated_at = map.generated_at().unwrap_or(""),
                "source map loaded"
            );
            shared.replace(map);
        }
        Err(e) => {
            shared.load_failed();
            tracing::warn!(path = %path.display(), error = %e, "source map not loaded; keeping the map in force");
        }
    }
    now
}

/// Loads `path` once now (a missing or invalid file leaves `shared` as it is, logged and
/// counted), then polls it every `interval` on a thread of its own until the returned
/// [`Watcher`] is dropped.
pub fn watch(
    path: PathBuf,
    interval: Duration,
    shared: Arc<SharedSources>,
) -> std::io::Result<Watcher> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut last = check(&path, &shared, None);
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("sources".into())
        .spawn(move || {
            let step = interval.min(Duration::from_millis(100));
            let mut waited = Duration::ZERO;
            while !stop2.load(Ordering::Relaxed) {
                std::thread::sleep(step);
                waited += step;
                if waited >= interval {
                    waited = Duration::ZERO;
                    last = check(&path, &shared, last);
                }
            }
        })?;
    Ok(Watcher {
        stop,
        thread: Some(thread),
    })
}

/// The polling thread of [`watch`]; stopped when dropped.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn doc(sources: &str) -> String {
        format!(
            r#"{{"version":1,"generated_at":"2026-12-03T09:40:00Z","owner":"o","target":{{"id":"tmt-1","kind":"network_load_balancer","gwlbe":null}},"sources":[{sources}]}}"#
        )
    }

    fn entry(eni: &str, ip: &str, vni: u32) -> String {
        format!(
            r#"{{"eni":"{eni}","session":"tms-{eni}","vni":{vni},"sender_ip":"{ip}","vpc":"vpc-1","subnet":"subnet-1","az":"us-east-1a","gwlbe":null,"instance":{{"id":"i-1","name":"web-1"}},"load_balancer":null,"eks_cluster":null,"asg":null,"tags":{{"app":"shop"}}}}"#
        )
    }

    fn key(ip: &str, vni: u32) -> SourceKey {
        SourceKey {
            gwlbe: None,
            sender: Some(ip.parse().unwrap()),
            vni: Some(vni),
        }
    }

    #[test]
    fn a_document_of_version_1_is_indexed_by_sender_and_vni() {
        let m = SourceMap::parse(
            doc(&[entry("eni-a", "10.0.0.1", 7), entry("eni-b", "10.0.0.2", 7)].join(","))
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.eni(&key("10.0.0.1", 7)), Some("eni-a"));
        assert_eq!(m.eni(&key("10.0.0.2", 7)), Some("eni-b"));
        // The address alone identifies the source when the VNI differs or is unknown.
        assert_eq!(m.eni(&key("10.0.0.2", 9)), Some("eni-b"));
        let no_vni = SourceKey {
            vni: None,
            ..key("10.0.0.1", 0)
        };
        assert_eq!(m.eni(&no_vni), Some("eni-a"));
        // A VNI shared by two ENIs does not identify either.
        let vni_only = SourceKey {
            sender: None,
            ..key("10.0.0.1", 7)
        };
        assert_eq!(m.eni(&vni_only), None);
        assert_eq!(m.eni(&key("10.9.9.9", 7)), None);
    }

    #[test]
    fn a_vni_held_by_one_entry_does_not_name_traffic_from_another_address() {
        // One session mirrored, the stack's one VNI: traffic from an ENI another VPC mirrors
        // by hand with the same VNI is not that session's.
        let m = SourceMap::parse(doc(&entry("eni-a", "10.0.0.1", 7)).as_bytes()).unwrap();
        assert_eq!(m.eni(&key("10.0.0.2", 7)), None);
        let no_sender = SourceKey {
            sender: None,
            ..key("10.0.0.2", 7)
        };
        assert_eq!(
            m.eni(&no_sender),
            Some("eni-a"),
            "a plain capture: the VNI alone"
        );
    }

    #[test]
    fn per_session_vnis_identify_sources_without_the_sender() {
        let m = SourceMap::parse(
            doc(&[
                entry("eni-a", "10.0.0.1", 11),
                entry("eni-b", "10.0.0.2", 12),
            ]
            .join(","))
            .as_bytes(),
        )
        .unwrap();
        let k = SourceKey {
            gwlbe: None,
            sender: None,
            vni: Some(12),
        };
        assert_eq!(m.eni(&k), Some("eni-b"));
    }

    #[test]
    fn the_gateway_endpoint_is_part_of_the_key() {
        let e = entry("eni-a", "10.0.0.1", 7)
            .replace(r#""gwlbe":null"#, r#""gwlbe":"vpce-0123456789abcdef0""#);
        let m = SourceMap::parse(doc(&e).as_bytes()).unwrap();
        let mut k = key("10.0.0.1", 7);
        assert_eq!(m.eni(&k), None, "NLB-mode traffic from the same address");
        k.gwlbe = Some(0x1234_5678_9abc_def0);
        assert_eq!(m.eni(&k), Some("eni-a"));
    }

    #[test]
    fn an_unknown_version_or_a_malformed_entry_is_refused_with_a_clear_error() {
        let v2 = doc("").replace(r#""version":1"#, r#""version":2"#);
        let e = SourceMap::parse(v2.as_bytes()).unwrap_err();
        assert!(matches!(e, SourcesError::Version(_)), "{e}");
        assert!(e.to_string().contains("version 2"), "{e}");
        let e = SourceMap::parse(br#"{"sources":[]}"#).unwrap_err();
        assert!(matches!(e, SourcesError::Version(_)), "{e}");
        let bad_ip = entry("eni-a", "not-an-ip", 7);
        let e = SourceMap::parse(doc(&bad_ip).as_bytes()).unwrap_err();
        assert!(e.to_string().contains("sources[0]: `sender_ip`"), "{e}");
        let e = SourceMap::parse(doc(&entry("i-123", "10.0.0.1", 7)).as_bytes()).unwrap_err();
        assert!(e.to_string().contains("`eni`"), "{e}");
        let big = entry("eni-a", "10.0.0.1", 1 << 24);
        assert!(SourceMap::parse(doc(&big).as_bytes()).is_err());
        assert!(matches!(
            SourceMap::parse(b"{not json").unwrap_err(),
            SourcesError::Json(_)
        ));
    }

    #[test]
    fn two_enis_with_the_same_key_are_ambiguous_and_match_neither() {
        let m = SourceMap::parse(
            doc(&[entry("eni-a", "10.0.0.1", 7), entry("eni-b", "10.0.0.1", 7)].join(","))
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(m.eni(&key("10.0.0.1", 7)), None);
        // Two sessions of one ENI are not ambiguous.
        let m = SourceMap::parse(
            doc(&[entry("eni-a", "10.0.0.1", 7), entry("eni-a", "10.0.0.1", 7)].join(","))
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(m.eni(&key("10.0.0.1", 7)), Some("eni-a"));
    }

    #[test]
    fn attribution_is_the_entry_as_published_or_the_key_with_a_null_eni() {
        let m = SourceMap::parse(doc(&entry("eni-a", "10.0.0.1", 7)).as_bytes()).unwrap();
        let v = serde_json::to_value(m.attribute(key("10.0.0.1", 7))).unwrap();
        assert_eq!(v["eni"], "eni-a");
        assert_eq!(v["instance"]["name"], "web-1");
        assert_eq!(v["tags"]["app"], "shop");
        let mut k = key("10.0.0.9", 7);
        k.gwlbe = Some(1);
        let v = serde_json::to_value(m.attribute(k)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"eni": null, "sender_ip": "10.0.0.9", "vni": 7, "gwlbe": "vpce-00000000000000001"})
        );
    }

    #[test]
    fn a_reader_sees_a_replaced_map_at_its_next_look_up() {
        let shared = Arc::new(SharedSources::new(SourceMap::empty()));
        let mut r = shared.reader();
        assert!(r.map().is_empty());
        shared.replace(SourceMap::parse(doc(&entry("eni-a", "10.0.0.1", 7)).as_bytes()).unwrap());
        assert_eq!(r.map().eni(&key("10.0.0.1", 7)), Some("eni-a"));
        assert_eq!(shared.load_counts(), (1, 0));
    }

    #[test]
    fn the_watcher_loads_a_file_that_appears_later_and_keeps_the_map_on_a_bad_version() {
        let dir = std::env::temp_dir().join(format!("rebuilder-sources-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sources.json");
        let _ = std::fs::remove_file(&path);
        let shared = Arc::new(SharedSources::new(SourceMap::empty()));
        let _w = watch(path.clone(), Duration::from_millis(20), shared.clone()).unwrap();
        let mut r = shared.reader();
        let wait_for = |r: &mut SourcesReader, want: Option<&str>| {
            for _ in 0..200 {
                if r.map().eni(&key("10.0.0.1", 7)) == want {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("map never matched {want:?}");
        };
        // Written elsewhere and renamed into place, as the fetch script does.
        let put = |body: &str| {
            let tmp = dir.join("sources.json.tmp");
            std::fs::write(&tmp, body).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        put(&doc(&entry("eni-a", "10.0.0.1", 7)));
        wait_for(&mut r, Some("eni-a"));
        put(&doc(&entry("eni-b", "10.0.0.1", 7)).replace(r#""version":1"#, r#""version":3"#));
        for _ in 0..100 {
            if shared.load_counts().1 > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(shared.load_counts().1, 1, "the bad version was refused");
        assert_eq!(r.map().eni(&key("10.0.0.1", 7)), Some("eni-a"), "kept");
        put(&doc(&entry("eni-c", "10.0.0.1", 7)));
        wait_for(&mut r, Some("eni-c"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
