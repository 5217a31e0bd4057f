//! Load-balancer health checks: mirrored requests that are noise to an analyzer.
//!
//! Mirroring an instance behind a load balancer also captures the balancer's health checks
//! (`ELB-HealthChecker/2.0` every few seconds from every balancer node). The engine drops
//! the requests this rule matches and counts them as `health_check`.
//!
//! A client must not be able to hide a request by making it look like a health check, so
//! the rule rests on what a client does not control. A request is a health check when **all**
//! of these hold:
//! - its TCP sender (the inner source of the connection, [`HttpRequest::peer`]: the balancer
//!   node, never the PROXY protocol client) is in one of the `from` ranges — the subnets of the
//!   balancer's nodes;
//! - its target is exactly one of `paths` (query included) — the health-check path the
//!   balancer is configured with;
//! - its method is `GET` or `HEAD` and it has no body (a request carrying data is never
//!   dropped, whatever it claims to be);
//! - if `user_agents` is not empty: its `User-Agent` contains one of them (case-sensitive).
//!
//! With `from` or `paths` empty (the default) nothing is dropped: there is no default rule
//! a client could trigger alone.

use std::net::IpAddr;

use crate::engine::ranges::AddrRanges;
use crate::engine::request::HttpRequest;

/// Which requests are load-balancer health checks (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthCheckRule {
    /// Exact request targets (any one matches).
    pub paths: Vec<String>,
    /// Address ranges of the balancer nodes (the TCP sender must be in one).
    pub from: AddrRanges,
    /// `User-Agent` substrings (any one matches); empty: any agent.
    pub user_agents: Vec<String>,
}

impl HealthCheckRule {
    /// The rule that matches nothing (the default).
    pub const OFF: HealthCheckRule = HealthCheckRule {
        paths: Vec::new(),
        from: AddrRanges::NONE,
        user_agents: Vec::new(),
    };

    /// Whether the rule matches nothing.
    pub fn is_off(&self) -> bool {
        self.paths.is_empty() || self.from.is_empty()
    }

    /// Whether `req`, sent by `peer` (the TCP source of its connection), is a health check
    /// to drop.
    pub fn matches(&self, req: &HttpRequest, peer: IpAddr) -> bool {
        if self.is_off()
            || req.body_len() > 0
            || req.body_truncated
            || !(req.method == "GET" || req.method == "HEAD")
            || !self.paths.contains(&req.target)
            || !self.from.contains(peer)
        {
            return false;
        }
        if self.user_agents.is_empty() {
            return true;
        }
        req.header("user-agent").is_some_and(|ua| {
            self.user_agents
                .iter()
                .any(|p| memchr::memmem::find(ua, p.as_bytes()).is_some())
        })
    }
}

/// The section of `--help` these flags are listed in.
const HEADING: &str = "Health checks";

/// Command-line and environment settings of the rule (`rebuilder run`, `rebuilder replay`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HealthCheckArgs {
    /// Drop body-less GET/HEAD requests whose target is exactly one of these (comma separated,
    /// e.g. `/healthz`) and that come from `--health-check-from`. Both must be set.
    #[arg(long, env = "REBUILDER_HEALTH_CHECK_PATHS", value_delimiter = ',', requires = "health_check_from", help_heading = HEADING)]
    pub health_check_paths: Vec<String>,
    /// Address ranges of the load balancer's nodes (comma separated CIDRs, e.g. the subnets
    /// of an ALB): only requests whose TCP sender is in one are health checks.
    #[arg(long, env = "REBUILDER_HEALTH_CHECK_FROM", value_delimiter = ',', value_parser = AddrRanges::parse_one, requires = "health_check_paths", help_heading = HEADING)]
    pub health_check_from: Vec<ipnet::IpNet>,
    /// ... and (when set) whose User-Agent contains one of these (comma separated, e.g.
    /// `ELB-HealthChecker/`).
    #[arg(long, env = "REBUILDER_HEALTH_CHECK_USER_AGENTS", value_delimiter = ',', help_heading = HEADING)]
    pub health_check_user_agents: Vec<String>,
    /// Keep health checks (turn the rule off whatever else is set).
    #[arg(long, env = "REBUILDER_KEEP_HEALTH_CHECKS", default_value_t = false, help_heading = HEADING)]
    pub keep_health_checks: bool,
}

impl HealthCheckArgs {
    /// The rule these settings describe (off unless both paths and ranges are set; the
    /// command line refuses one without the other).
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
        let rule = HealthCheckRule {
            paths: list(&self.health_check_paths),
            from: AddrRanges::new(self.health_check_from.clone()),
            user_agents: list(&self.health_check_user_agents),
        };
        if rule.is_off() {
            return HealthCheckRule::OFF;
        }
        rule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, ua: Option<&str>, body: &[u8]) -> HttpRequest {
        let a = "10.0.0.1:1".parse().unwrap();
        HttpRequest {
            headers: ua
                .map(|u| vec![("User-Agent", u)].into())
                .unwrap_or_default(),
            body: body.to_vec(),
            ..HttpRequest::new(method, target, a, a)
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn alb() -> HealthCheckRule {
        HealthCheckRule {
            paths: vec!["/healthz".into()],
            from: AddrRanges::parse("10.0.128.0/20,fd00:1::/64").unwrap(),
            user_agents: vec![],
        }
    }

    #[test]
    fn a_health_check_needs_the_path_and_a_balancer_address() {
        let rule = alb();
        let hc = req("GET", "/healthz", Some("ELB-HealthChecker/2.0"), b"");
        assert!(rule.matches(&hc, ip("10.0.130.7")));
        assert!(rule.matches(&hc, ip("fd00:1::9")));
        assert!(rule.matches(&req("HEAD", "/healthz", None, b""), ip("10.0.130.7")));
        // The same request from any other sender is a request.
        assert!(!rule.matches(&hc, ip("10.0.0.5")));
        assert!(!rule.matches(&hc, ip("203.0.113.9")));
        // Another target from the balancer's range (e.g. a client behind it) is a request.
        assert!(!rule.matches(&req("GET", "/healthz?x", None, b""), ip("10.0.130.7")));
        assert!(!rule.matches(&req("GET", "/login", None, b""), ip("10.0.130.7")));
    }

    #[test]
    fn requests_with_a_body_or_other_methods_are_never_health_checks() {
        let rule = alb();
        let from = ip("10.0.130.7");
        assert!(!rule.matches(&req("POST", "/healthz", None, b"x"), from));
        assert!(!rule.matches(&req("GET", "/healthz", None, b"x"), from));
        assert!(!rule.matches(&req("DELETE", "/healthz", None, b""), from));
    }

    #[test]
    fn user_agents_narrow_the_rule_further() {
        let rule = HealthCheckRule {
            user_agents: vec!["ELB-HealthChecker/".into()],
            ..alb()
        };
        let from = ip("10.0.130.7");
        assert!(rule.matches(
            &req("GET", "/healthz", Some("ELB-HealthChecker/2.0"), b""),
            from
        ));
        assert!(!rule.matches(&req("GET", "/healthz", Some("curl/8"), b""), from));
        assert!(!rule.matches(&req("GET", "/healthz", None, b""), from));
    }

    #[test]
    fn the_default_rule_matches_nothing_not_even_a_claimed_health_checker() {
        let hc = req("GET", "/", Some("ELB-HealthChecker/2.0"), b"");
        assert!(HealthCheckRule::default().is_off());
        assert!(!HealthCheckRule::default().matches(&hc, ip("10.0.0.1")));
        assert!(!HealthCheckRule::OFF.matches(&hc, ip("10.0.0.1")));
        let paths_only = HealthCheckRule {
            from: AddrRanges::NONE,
            ..alb()
        };
        assert!(!paths_only.matches(&req("GET", "/healthz", None, b""), ip("10.0.130.7")));
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        h: HealthCheckArgs,
    }

    fn args(v: &[&str]) -> Result<HealthCheckRule, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("x").chain(v.iter().copied())).map(|c| c.h.rule())
    }

    #[test]
    fn flags_default_to_no_rule_and_need_both_path_and_ranges() {
        assert_eq!(args(&[]).unwrap(), HealthCheckRule::OFF);
        let rule = args(&[
            "--health-check-paths",
            "/healthz,/ping",
            "--health-check-from",
            "10.0.128.0/20,10.0.144.0/20",
        ])
        .unwrap();
        assert_eq!(rule.paths, ["/healthz", "/ping"]);
        assert!(rule.from.contains(ip("10.0.150.1")));
        assert!(args(&["--health-check-paths", "/healthz"]).is_err());
        assert!(args(&["--health-check-from", "10.0.0.0/8"]).is_err());
        assert!(
            args(&[
                "--health-check-from",
                "nonsense",
                "--health-check-paths",
                "/h"
            ])
            .is_err()
        );
        assert_eq!(
            args(&[
                "--health-check-paths",
                "/h",
                "--health-check-from",
                "10.0.0.0/8",
                "--keep-health-checks"
            ])
            .unwrap(),
            HealthCheckRule::OFF
        );
    }
}
