//! The metrics scraper: `GET /metrics` of a rebuilder (on loopback, or inside a network
//! namespace) parsed into series, with the labelled families read by their closed label
//! sets ([`DropReason`], [`RequestDropReason`], [`StatusClass`], [`UpstreamErrorClass`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rebuilder::DropReason;
use rebuilder::daemon::telemetry::{RequestDropReason, StatusClass, UpstreamErrorClass};

/// A scrape of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub text: String,
    pub values: HashMap<String, f64>,
}

impl Metrics {
    /// Parses the Prometheus text format: every sample line into (series, value).
    pub fn parse(text: &str) -> Metrics {
        let values = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect();
        Metrics {
            text: text.to_string(),
            values,
        }
    }

    /// `GET /metrics` from the admin listener at `admin`; `None` when nothing answers.
    pub fn scrape(admin: SocketAddr) -> Option<Metrics> {
        let (status, body) = http_get(admin, "/metrics")?;
        (status == 200).then(|| Metrics::parse(&body))
    }

    /// Value of a series (exact text, labels included); 0 when absent.
    pub fn get(&self, series: &str) -> u64 {
        self.values.get(series).copied().unwrap_or(0.0) as u64
    }

    /// The sum of every series of `family` (`name` or `name{labels}`).
    pub fn sum(&self, family: &str) -> u64 {
        self.values
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(family)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
            })
            .map(|(_, v)| *v as u64)
            .sum()
    }

    /// Value of a series as a float (gauges with fractions); `None` when absent.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.values.get(series).copied()
    }

    /// `rebuilder_requests_dropped_total{reason}`.
    pub fn dropped(&self, reason: RequestDropReason) -> u64 {
        self.get(&format!(
            "rebuilder_requests_dropped_total{{reason=\"{reason}\"}}"
        ))
    }

    /// `rebuilder_requests_dropped_total` over every reason.
    pub fn dropped_total(&self) -> u64 {
        RequestDropReason::ALL
            .iter()
            .map(|r| self.dropped(*r))
            .sum()
    }

    /// `rebuilder_requests_forwarded_total` over every status class.
    pub fn forwarded(&self) -> u64 {
        StatusClass::ALL
            .iter()
            .map(|c| self.forwarded_with(*c))
            .sum()
    }

    /// `rebuilder_requests_forwarded_total{status}`.
    pub fn forwarded_with(&self, class: StatusClass) -> u64 {
        self.get(&format!(
            "rebuilder_requests_forwarded_total{{status=\"{class}\"}}"
        ))
    }

    /// `rebuilder_decode_drops_total{reason}`.
    pub fn decode_drops(&self, reason: DropReason) -> u64 {
        self.get(&format!(
            "rebuilder_decode_drops_total{{reason=\"{reason}\"}}"
        ))
    }

    /// `rebuilder_upstream_errors_total{class}`.
    pub fn upstream_errors(&self, class: UpstreamErrorClass) -> u64 {
        self.get(&format!(
            "rebuilder_upstream_errors_total{{class=\"{class}\"}}"
        ))
    }

    /// The sample lines that are not zero (for failure messages).
    pub fn nonzero(&self) -> String {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.ends_with(" 0") && !l.ends_with(" 0.0"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Minimal HTTP/1.0 GET: (status, body); `None` when nothing answers within a few seconds.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}
