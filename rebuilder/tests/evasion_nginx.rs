//! The evasion corpus against a real nginx (Debian `nginx-light`), the origin oracle: each
//! case's bytes go to nginx (proxying to the recording analyzer) and, as mirrored segments,
//! through the engine. For every case:
//! - the engine gives the analyzer exactly the requests the corpus says (method, target,
//!   body; the same whether the bytes come in MTU-sized or 7-byte segments), with the
//!   anomalies it lists;
//! - every request nginx served (passed upstream) is among them, with the body nginx
//!   forwarded: what nginx serves, the analyzer sees;
//! - when nginx refused a request, the engine either gave it to the analyzer (another origin
//!   serves it) or counted something (a drop or an anomaly): nothing vanishes silently.
//!
//! Needs nginx (the prerequisite policy of `rebuilder_testkit::system`: skipped, or failed
//! under `MIRRORFLEET_REQUIRE_SYSTEM=1`; `scripts/setup.sh` installs `nginx-light`).

mod evasion_corpus;

use evasion_corpus::{cases, seen, through_engine};
use rebuilder::engine::stats::Anomaly;
use rebuilder::{Engine, EngineConfig};
use rebuilder_testkit::analyzer::Analyzer;
use rebuilder_testkit::frames::TcpConn;
use rebuilder_testkit::nginx::{self, Nginx};
use rebuilder_testkit::system;
use std::time::Duration;

/// A conversation with nginx through the engine, both directions as a mirror delivers them:
/// each client part, then what nginx answered after it (in 1,400-byte segments), then the
/// client's FIN. The engine (for its counters) and every request's target with the status
/// paired with it.
fn both_ways(steps: &[(&[u8], &[u8])]) -> (Engine, Vec<(String, Option<u16>)>) {
    let mut c = TcpConn::new(7, "10.0.0.1:40000", "10.0.0.2:80", 4242);
    let mut datagrams = c.open();
    for (part, answered) in steps {
        datagrams.push(c.send(part));
        datagrams.extend(answered.chunks(1400).map(|p| c.respond(p)));
    }
    datagrams.push(c.fin());
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    for (i, d) in datagrams.iter().enumerate() {
        engine.on_vxlan_payload(1_700_000_000_000_000 + i as u64 * 10, d, &mut out);
    }
    engine.finish(&mut out);
    let got = out
        .iter()
        .map(|r| (r.target.clone(), r.response.as_ref().map(|r| r.status)))
        .collect();
    (engine, got)
}

/// `target` reduced to what nginx logs as `$request_uri` (absolute form: the path), then
/// percent-decoded (the engine percent-encodes bytes that are not UTF-8).
fn as_uri(target: &str) -> Vec<u8> {
    let path = match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            match rest.find(['/', '?']) {
                Some(j) if rest.as_bytes()[j] == b'/' => rest[j..].to_string(),
                Some(j) => format!("/{}", &rest[j..]),
                None => "/".to_string(),
            }
        }
        None => target.to_string(),
    };
    decode(path.as_bytes())
}

fn decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(h).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// `X*2000` in an expectation stands for 2,000 `X`.
fn expand(s: &str) -> String {
    match s.split_once('*') {
        Some((c, n)) if c.len() == 1 && n.parse::<usize>().is_ok() => c.repeat(n.parse().unwrap()),
        _ => s.to_string(),
    }
}

#[test]
fn what_nginx_serves_the_analyzer_sees_and_nothing_it_refuses_vanishes_silently() {
    const NAME: &str =
        "what_nginx_serves_the_analyzer_sees_and_nothing_it_refuses_vanishes_silently";
    if !system::require(NAME, nginx::check()) {
        return;
    }
    let upstream = Analyzer::loopback();
    let mut nginx = Nginx::start(upstream.addr).expect("nginx starts");
    let mut failures = Vec::new();
    let mut served_total = 0;
    let mut refused_total = 0;
    for case in cases() {
        let wire = (case.wire)();
        let before = upstream.records().len();
        let logged = nginx.exchange(&wire);
        let records = upstream.records();
        let forwarded = &records[before.min(records.len())..];
        let (reqs, stats) = through_engine(&wire, 1400);
        let (tiny, _) = through_engine(&wire, 7);
        let got = seen(&reqs);
        let mut problems = Vec::new();

        // What the corpus says the analyzer is given.
        let want: Vec<(String, String, String)> = case
            .sees
            .iter()
            .map(|(m, t, b)| (expand(m), t.to_string(), b.to_string()))
            .collect();
        if got != want {
            problems.push(format!("engine gave {got:?}, the corpus says {want:?}"));
        }
        if seen(&tiny) != got {
            problems.push(format!("7-byte segments gave {:?}", seen(&tiny)));
        }
        if let Some(first) = reqs.first() {
            for f in case.flags {
                if !first.anomalies.contains(*f) {
                    problems.push(format!("first request lacks {f} (has {})", first.anomalies));
                }
            }
        }

        // The oracle: every request nginx served is among the engine's, with nginx's body.
        let served: Vec<_> = logged.iter().filter(|l| l.served()).collect();
        served_total += served.len();
        let mut matched = vec![false; reqs.len()];
        for (k, l) in served.iter().enumerate() {
            let body = forwarded.get(k).map(|r| r.body()).unwrap_or_default();
            let hit = reqs.iter().enumerate().position(|(i, r)| {
                !matched[i]
                    && r.method == l.method
                    && as_uri(&r.target) == decode(&l.uri)
                    && r.body == body
            });
            match hit {
                Some(i) => matched[i] = true,
                None => problems.push(format!(
                    "nginx served {} {:?} (body {:?}) that the analyzer did not get",
                    l.method,
                    String::from_utf8_lossy(&l.uri),
                    String::from_utf8_lossy(&body)
                )),
            }
        }
        // Refused by nginx: seen anyway, or counted.
        let refused = logged.iter().filter(|l| !l.served()).count();
        refused_total += refused;
        let extra = matched.iter().filter(|m| !**m).count();
        let flagged: u64 = Anomaly::ALL.iter().map(|a| stats.anomalies(*a)).sum();
        if refused > 0 && extra == 0 && stats.total_drops() == 0 && flagged == 0 {
            problems.push(format!(
                "nginx refused {refused} request(s) and the engine counted nothing: {logged:?}"
            ));
        }
        eprintln!(
            "{:5} item {} {:60} nginx {:?} engine {:?}",
            case.id,
            case.item,
            case.what,
            logged.iter().map(|l| l.status).collect::<Vec<_>>(),
            got.iter()
                .map(|(m, t, _)| format!("{} {}", m.chars().take(12).collect::<String>(), t))
                .collect::<Vec<_>>()
        );
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({}; origins {}):\n    {}\n    nginx log: {logged:?}\n    nginx errors: {}",
                case.id,
                case.what,
                case.origins,
                problems.join("\n    "),
                nginx.error_log_tail()
            ));
        }
    }
    eprintln!("nginx served {served_total} requests and refused {refused_total} over the corpus");
    assert!(served_total > 100 && refused_total > 20, "the oracle ran");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Upgrade and CONNECT requests with requests pipelined behind them, against nginx with both
/// directions: nginx's own answers (it passes no upgrade to an upstream that did not ask for
/// one, and refuses CONNECT) go through the engine with the client's bytes, as a mirror of
/// both would deliver them. Every request nginx served reaches the analyzer with nginx's
/// status; the connection is never taken for a tunnel that nginx did not open.
#[test]
fn requests_behind_an_upgrade_or_connect_nginx_declines_reach_the_analyzer_with_its_answers() {
    const NAME: &str =
        "requests_behind_an_upgrade_or_connect_nginx_declines_reach_the_analyzer_with_its_answers";
    if !system::require(NAME, nginx::check()) {
        return;
    }
    let upstream = Analyzer::loopback();
    let mut nginx = Nginx::start(upstream.addr).expect("nginx starts");
    let next = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
    let cases: [&[u8]; 4] = [
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
        b"GET /h2c HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n",
    ];
    let mut failures = Vec::new();
    for head in cases {
        let wire = [head, &next[..]].concat();
        let (logged, answered) = nginx.converse(&wire);
        let (engine, got) = both_ways(&[(&wire, &answered)]);
        let line =
            String::from_utf8_lossy(&head[..head.iter().position(|&b| b == b'\r').unwrap_or(0)])
                .into_owned();
        eprintln!(
            "{line:60} nginx {:?} engine {got:?}",
            logged.iter().map(|l| l.status).collect::<Vec<_>>()
        );
        for l in logged.iter().filter(|l| l.served()) {
            let uri = String::from_utf8_lossy(&l.uri).into_owned();
            if !got.contains(&(uri.clone(), Some(l.status))) {
                failures.push(format!(
                    "{line}: nginx served {uri} ({}), the analyzer got {got:?}",
                    l.status
                ));
            }
        }
        if engine.stats().upgraded_flows != 0 {
            failures.push(format!("{line}: taken for a tunnel nginx did not open"));
        }
        if !logged.iter().any(|l| l.served() && l.uri == b"/next") && !head.starts_with(b"CONNECT")
        {
            failures.push(format!(
                "{line}: nginx did not serve /next ({logged:?}): the case tests nothing"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Requests nginx answers before their body has come — a location that answers at once and
/// discards the body as it arrives (the connection goes on), and a body over
/// `client_max_body_size` (413 at once; with `Expect: 100-continue` the client then sends no
/// body and closes, as curl does; without, it sends some and closes) — the client waiting for
/// the answer between the head and what follows: the engine, given both directions as a
/// mirror delivers them, pairs each request with nginx's own answer (a body cut by the close
/// flagged `body_incomplete`), and the requests after it with theirs.
#[test]
fn requests_nginx_answers_before_their_body_come_out_with_nginxs_answer() {
    const NAME: &str = "requests_nginx_answers_before_their_body_come_out_with_nginxs_answer";
    if !system::require(NAME, nginx::check()) {
        return;
    }
    let upstream = Analyzer::loopback();
    let mut nginx = Nginx::start(upstream.addr).expect("nginx starts");
    let first = b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
    let early = format!(
        "POST {} HTTP/1.1\r\nHost: h\r\nContent-Length: 3000\r\n\r\n",
        nginx::ANSWERED_EARLY
    );
    let mut rest = vec![b'x'; 3000];
    rest.extend(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    let expect =
        b"PUT /big HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n";
    let big = b"POST /big-cut HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\n";
    let cases: [(Vec<Vec<u8>>, &[u16]); 3] = [
        (
            vec![[&first[..], early.as_bytes()].concat(), rest],
            &[200, 403, 200],
        ),
        (vec![[&first[..], &expect[..]].concat()], &[200, 413]),
        // The client sends some of the body after the answer, then closes.
        (
            vec![[&first[..], &big[..]].concat(), vec![b'x'; 3000]],
            &[200, 413],
        ),
    ];
    let mut failures = Vec::new();
    for (parts, statuses) in cases {
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let (mut logged, answers) = nginx.converse_in_steps(&parts);
        if logged.len() < statuses.len() {
            // The 413 is logged when nginx's lingering close ends.
            logged.extend(
                nginx.logged_within(statuses.len() - logged.len(), Duration::from_secs(10)),
            );
        }
        let steps: Vec<(&[u8], &[u8])> = parts
            .iter()
            .zip(&answers)
            .map(|(p, a)| (*p, a.as_slice()))
            .collect();
        let (engine, got) = both_ways(&steps);
        let want: Vec<(String, Option<u16>)> = logged
            .iter()
            .map(|l| (String::from_utf8_lossy(&l.uri).into_owned(), Some(l.status)))
            .collect();
        eprintln!("nginx {want:?} engine {got:?}");
        if want.iter().map(|(_, s)| s.unwrap_or(0)).collect::<Vec<_>>() != statuses {
            failures.push(format!(
                "nginx answered {want:?}, not {statuses:?}: the case tests nothing"
            ));
        }
        if got != want {
            failures.push(format!(
                "nginx answered {want:?}, the engine paired {got:?}"
            ));
        }
        if engine.stats().responses_unmatched != 0 {
            failures.push(format!(
                "{} responses without a request",
                engine.stats().responses_unmatched
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
