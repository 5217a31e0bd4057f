//! Load-balancer health checks: mirrored requests that are noise to an analyzer.
//!
//! Mirroring an instance behind a load balancer also captures the balancer's health checks
//! (`ELB-HealthChecker/2.0` every few seconds from every balancer node). The engine drops
//! the requests this rule matches and counts them as `health_check`.
//!
//! A request is a health check when **all** of these hold:
//! - its method is `GET` or `HEAD` and it has no body (a request carrying data is never
//!   dropped, whatever it claims to be);
//! - if `user_agents` is not empty: its `User-Agent` contains one of them (case-sensitive);
//! - if `paths` is not empty: its target is exactly one of them (query included).
//!
//! Both lists empty = the rule is off. The User-Agent is the client's word: with only
//! User-Agent patterns, anyone can hide a body-less GET from the analyzer by claiming to be a
//! health checker. Setting `paths` to the health-check path(s) the balancer uses narrows the
//! rule to exactly those targets.

use crate::engine::request::HttpRequest;

/// User-Agent substrings dropped by default.
///
/// - `ELB-HealthChecker/`: ALB (`ELB-HealthChecker/2.0`), Classic ELB (`/1.0`) and NLB HTTP
///   health checks;
/// - `Amazon-Route53-Health-Check-Service`: Route 53 endpoint health checks;
/// - `kube-probe/`: kubelet liveness/readiness probes (EKS nodes);
/// - `GoogleHC/`: Google Cloud load balancer health checks (same agent on GKE ingress).
pub const DEFAULT_USER_AGENTS: &[&str] = &[
    "ELB-HealthChecker/",
    "Amazon-Route53-Health-Check-Service",
    "kube-probe/",
    "GoogleHC/",
];

/// Which requests are load-balancer health checks (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckRule {
    /// `User-Agent` substrings (any one matches).
    pub user_agents: Vec<String>,
    /// Exact request targets (any one matches).
    pub paths: Vec<String>,
}

impl Default for HealthCheckRule {
    /// The documented defaults: [`DEFAULT_USER_AGENTS`], any path.
    fn default() -> Self {
        HealthCheckRule {
            user_agents: DEFAULT_USER_AGENTS.iter().map(|s| s.to_string()).collect(),
            paths: Vec::new(),
        }
    }
}

impl HealthCheckRule {
    /// The rule that matches nothing.
    pub const OFF: HealthCheckRule = HealthCheckRule {
        user_agents: Vec::new(),
        paths: Vec::new(),
    };

    /// Whether the rule matches nothing.
    pub fn is_off(&self) -> bool {
        self.user_agents.is_empty() && self.paths.is_empty()
    }

    /// Whether `req` is a health check to drop.
    pub fn matches(&self, req: &HttpRequest) -> bool {
        if self.is_off()
            || !req.body.is_empty()
            || req.body_truncated
            || !(req.method == "GET" || req.method == "HEAD")
        {
            return false;
        }
        if !self.paths.is_empty() && !self.paths.contains(&req.target) {
            return false;
        }
        if !self.user_agents.is_empty() {
            let Some(ua) = req.header("user-agent") else {
                return false;
            };
            return self
                .user_agents
                .iter()
                .any(|p| memchr::memmem::find(ua, p.as_bytes()).is_some());
        }
        true
    }
}

/// The section of `--help` these flags are listed in.
const HEADING: &str = "Health checks";

/// Command-line and environment settings of the rule (`rebuilder run`, `rebuilder replay`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HealthCheckArgs {
    /// Drop GET/HEAD requests without a body whose User-Agent contains one of these
    /// (comma separated; empty = any User-Agent, then `--health-check-paths` must be set).
    #[arg(long, env = "REBUILDER_HEALTH_CHECK_USER_AGENTS", value_delimiter = ',', default_value = "ELB-HealthChecker/,Amazon-Route53-Health-Check-Service,kube-probe/,GoogleHC/", help_heading = HEADING)]
    pub health_check_user_agents: Vec<String>,
    /// ... and (when set) whose target is exactly one of these (comma separated, e.g.
    /// `/healthz`); recommended: it stops a client from hiding requests by faking the agent.
    #[arg(long, env = "REBUILDER_HEALTH_CHECK_PATHS", value_delimiter = ',', help_heading = HEADING)]
    pub health_check_paths: Vec<String>,
    /// Keep health checks (turn the rule off).
    #[arg(long, env = "REBUILDER_KEEP_HEALTH_CHECKS", default_value_t = false, help_heading = HEADING)]
    pub keep_health_checks: bool,
}

impl HealthCheckArgs {
    /// The rule these settings describe.
    pub fn rule(&self) -> HealthCheckRule {
        if self.keep_health_checks {
            return HealthCheckRule::OFF;
        }
        let list = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        HealthCheckRule {
            user_agents: list(&self.health_check_user_agents),
            paths: list(&self.health_check_paths),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, ua: Option<&str>, body: &[u8]) -> HttpRequest {
        let a = "10.0.0.1:1".parse().unwrap();
        HttpRequest {
            ts_us: 0,
            vni: 0,
            client: a,
            peer: a,
            server: a,
            method: method.into(),
            target: target.into(),
            version: 1,
            headers: ua
                .map(|u| vec![("User-Agent".to_string(), u.as_bytes().to_vec())])
                .unwrap_or_default(),
            body: body.to_vec(),
            chunked: false,
            body_truncated: false,
            response: None,
            response_missing: None,
        }
    }

    #[test]
    fn default_rule_drops_the_known_health_checkers() {
        let rule = HealthCheckRule::default();
        for ua in [
            "ELB-HealthChecker/2.0",
            "ELB-HealthChecker/1.0",
            "kube-probe/1.29",
            "GoogleHC/1.0",
            "Amazon-Route53-Health-Check-Service (ref 1234; report http://amzn.to/1vsZADi)",
        ] {
            assert!(rule.matches(&req("GET", "/health", Some(ua), b"")), "{ua}");
        }
        assert!(rule.matches(&req("HEAD", "/", Some("ELB-HealthChecker/2.0"), b"")));
    }

    #[test]
    fn ordinary_requests_and_requests_with_a_body_are_kept() {
        let rule = HealthCheckRule::default();
        assert!(!rule.matches(&req("GET", "/health", Some("curl/8.5"), b"")));
        assert!(!rule.matches(&req("GET", "/health", None, b"")));
        assert!(!rule.matches(&req("POST", "/health", Some("ELB-HealthChecker/2.0"), b"x")));
        assert!(!rule.matches(&req("GET", "/health", Some("ELB-HealthChecker/2.0"), b"x")));
        // Case-sensitive: a look-alike is kept.
        assert!(!rule.matches(&req("GET", "/", Some("elb-healthchecker/2.0"), b"")));
    }

    #[test]
    fn paths_narrow_the_rule_to_exact_targets() {
        let rule = HealthCheckRule {
            paths: vec!["/healthz".into()],
            ..HealthCheckRule::default()
        };
        assert!(rule.matches(&req("GET", "/healthz", Some("ELB-HealthChecker/2.0"), b"")));
        assert!(!rule.matches(&req(
            "GET",
            "/login?u=1' OR 1=1",
            Some("ELB-HealthChecker/2.0"),
            b""
        )));
        assert!(!rule.matches(&req(
            "GET",
            "/healthz?x",
            Some("ELB-HealthChecker/2.0"),
            b""
        )));
        assert!(!rule.matches(&req("GET", "/healthz", Some("curl/8"), b"")));
        let paths_only = HealthCheckRule {
            user_agents: vec![],
            paths: vec!["/ping".into()],
        };
        assert!(paths_only.matches(&req("GET", "/ping", None, b"")));
        assert!(!paths_only.matches(&req("GET", "/pong", None, b"")));
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        h: HealthCheckArgs,
    }

    fn args(v: &[&str]) -> HealthCheckRule {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("x").chain(v.iter().copied()))
            .expect("parses")
            .h
            .rule()
    }

    #[test]
    fn flags_default_to_the_documented_rule_and_can_narrow_or_disable_it() {
        assert_eq!(args(&[]), HealthCheckRule::default());
        assert_eq!(args(&["--keep-health-checks"]), HealthCheckRule::OFF);
        assert_eq!(
            args(&["--health-check-paths", "/healthz,/ping"]).paths,
            ["/healthz", "/ping"]
        );
        let only_paths = args(&[
            "--health-check-user-agents",
            "",
            "--health-check-paths",
            "/hc",
        ]);
        assert!(only_paths.user_agents.is_empty());
        assert_eq!(only_paths.paths, ["/hc"]);
        assert!(args(&["--health-check-user-agents", ""]).is_off());
    }

    #[test]
    fn the_off_rule_matches_nothing() {
        assert!(!HealthCheckRule::OFF.matches(&req(
            "GET",
            "/",
            Some("ELB-HealthChecker/2.0"),
            b""
        )));
    }
}
