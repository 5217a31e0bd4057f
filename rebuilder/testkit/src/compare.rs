//! Sent vs. received: matches what the analyzer received against what was sent (the web
//! server's records, or the truth of `rebuilder generate`). Every request exactly once, with
//! the same method, target, end-to-end headers in order and body, and the client's address
//! in X-Forwarded-For.

use std::path::Path;

use serde::Deserialize;

use crate::analyzer::{Recorded, read_records};

/// One line of a "sent" file: an analyzer record, or a `rebuilder generate --truth` line.
#[derive(Debug, Clone, Deserialize)]
struct SentLine {
    method: String,
    target: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body_b64: Option<String>,
    #[serde(default)]
    body_len: usize,
    #[serde(default)]
    chunked: bool,
    #[serde(default)]
    peer: Option<String>,
    #[serde(default)]
    client: Option<String>,
    /// Truth lines marked `false` are requests the capture cannot yield (lost bytes).
    #[serde(default)]
    expected: Option<bool>,
}

impl SentLine {
    fn into_record(self) -> Recorded {
        Recorded {
            ts: 0.0,
            peer: self.peer.or(self.client).unwrap_or_default(),
            method: self.method,
            target: self.target,
            version: 1,
            headers: self.headers,
            body_len: self.body_len,
            body_b64: self.body_b64.unwrap_or_default(),
            chunked: self.chunked,
        }
    }
}

/// Reads a "sent" file (analyzer records or a truth file), leaving out the truth's requests
/// that cannot be expected.
pub fn read_sent(path: &Path) -> std::io::Result<Vec<Recorded>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let l: SentLine = serde_json::from_str(line).map_err(std::io::Error::other)?;
        if l.expected != Some(false) {
            out.push(l.into_record());
        }
    }
    Ok(out)
}

/// The outcome of one request of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Ok,
    Missing,
    Headers,
    Client,
    Xff,
    Extra,
}

impl Match {
    fn as_str(self) -> &'static str {
        match self {
            Match::Ok => "ok",
            Match::Missing => "MISSING",
            Match::Headers => "HEADERS",
            Match::Client => "CLIENT",
            Match::Xff => "XFF",
            Match::Extra => "EXTRA",
        }
    }
}

/// One row of the verdict's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub outcome: Match,
    pub method: String,
    pub target: String,
    pub body_len: usize,
    pub chunked: bool,
}

/// The comparison of sent and received requests.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub sent: usize,
    pub received: usize,
    pub matched: usize,
    pub rows: Vec<Row>,
    /// Every difference, in words; empty when the analyzer got exactly what was sent.
    pub problems: Vec<String>,
}

/// Compares (see the module documentation). `client_ip`: the address the web server must
/// have seen; `expect_count`: how many requests the client sent.
pub fn compare(
    sent: &[Recorded],
    got: &[Recorded],
    client_ip: Option<&str>,
    expect_count: Option<usize>,
) -> Verdict {
    let key = |r: &Recorded| (r.method.clone(), r.target.clone(), r.body_b64.clone());
    let mut v = Verdict {
        sent: sent.len(),
        received: got.len(),
        ..Verdict::default()
    };
    let mut unmatched: Vec<usize> = (0..got.len()).collect();
    for s in sent {
        let mut outcome = Match::Ok;
        match unmatched.iter().position(|&i| key(&got[i]) == key(s)) {
            None => {
                outcome = Match::Missing;
                v.problems
                    .push(format!("not received: {} {}", s.method, s.target));
            }
            Some(pos) => {
                let g = &got[unmatched.remove(pos)];
                v.matched += 1;
                let (h_sent, h_got) = (s.end_to_end_headers(), g.end_to_end_headers());
                if h_sent != h_got {
                    outcome = Match::Headers;
                    v.problems.push(format!(
                        "headers differ for {} {}: sent {h_sent:?} received {h_got:?}",
                        s.method, s.target
                    ));
                }
                let client = s.peer_ip();
                if let Some(want) = client_ip
                    && client != want
                {
                    outcome = Match::Client;
                    v.problems
                        .push(format!("web server saw client {client}, expected {want}"));
                }
                let xff = g.header("x-forwarded-for");
                let listed = xff.join(",");
                if !listed.split(',').any(|p| p.trim() == client) {
                    outcome = Match::Xff;
                    v.problems.push(format!(
                        "X-Forwarded-For {xff:?} lacks client {client} for {} {}",
                        s.method, s.target
                    ));
                }
            }
        }
        v.rows.push(Row {
            outcome,
            method: s.method.clone(),
            target: s.target.chars().take(70).collect(),
            body_len: s.body_len,
            chunked: s.chunked,
        });
    }
    for i in unmatched {
        let g = &got[i];
        v.problems.push(format!(
            "unexpected or duplicate at the analyzer: {} {}",
            g.method, g.target
        ));
        v.rows.push(Row {
            outcome: Match::Extra,
            method: g.method.clone(),
            target: g.target.chars().take(70).collect(),
            body_len: g.body_len,
            chunked: false,
        });
    }
    if let Some(n) = expect_count
        && n != sent.len()
    {
        v.problems.push(format!(
            "the web server saw {} requests, the client sent {n}",
            sent.len()
        ));
    }
    v
}

/// [`compare`] on two files.
pub fn compare_files(
    sent: &Path,
    received: &Path,
    client_ip: Option<&str>,
    expect_count: Option<usize>,
) -> std::io::Result<Verdict> {
    Ok(compare(
        &read_sent(sent)?,
        &read_records(received)?,
        client_ip,
        expect_count,
    ))
}

impl Verdict {
    /// The table (one row per request) and the summary, as the demo prints them.
    pub fn report(&self, table: bool) -> String {
        let mut out = String::new();
        if table {
            let cells: Vec<[String; 5]> =
                std::iter::once(["match", "method", "target", "body", ""].map(str::to_owned))
                    .chain(self.rows.iter().map(|r| {
                        [
                            r.outcome.as_str().to_owned(),
                            r.method.clone(),
                            r.target.clone(),
                            r.body_len.to_string(),
                            if r.chunked { "chunked" } else { "" }.to_owned(),
                        ]
                    }))
                    .collect();
            let widths: Vec<usize> = (0..5)
                .map(|i| {
                    cells
                        .iter()
                        .map(|c| c[i].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for (n, row) in cells.iter().enumerate() {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                out.push_str(&format!("    {}\n", line.join("  ").trim_end()));
                if n == 0 {
                    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                    out.push_str(&format!("    {}\n", rule.join("  ")));
                }
            }
        }
        out.push_str(&format!(
            "  requests sent {}, received by the analyzer {}, matched {}\n",
            self.sent, self.received, self.matched
        ));
        for p in &self.problems {
            out.push_str(&format!("  MISMATCH: {p}\n"));
        }
        out
    }
}

/// What a benchmark holds of the generator's truth to check what reached the analyzer: for
/// every request the capture must yield, its `X-Request-Id` and a fingerprint of the request
/// as the rebuilder must send it — the truth written by the rebuilder's own rewrite
/// ([`rebuilder::daemon::forward::write_request`] with the daemon's forwarding settings) and
/// read back by the analyzer's parser. So the check covers extraction, the queue, the senders
/// and delivery, not the rewrite's rules themselves (the forwarding tests and the evasion
/// suite check those against nginx). An id may come back (a new generator per block of a
/// soak numbers its connections again): the truth is a multiset of (id, fingerprint).
#[derive(Debug, Default)]
pub struct ForwardedTruth {
    /// (id, fingerprint) -> how many times it must arrive.
    expected: std::collections::HashMap<(String, u64), u32>,
    /// Every id of the truth (a reception under one of them that matches no fingerprint is
    /// a different request, not a foreign one).
    ids: std::collections::HashSet<String>,
    total: u64,
}

/// How what the analyzer received compares with [`ForwardedTruth`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedVerdict {
    /// Expected requests received as sent.
    pub recovered: u64,
    /// Expected requests not received as sent (never, or only altered).
    pub lost: u64,
    /// Receptions of a request as sent beyond the times it was sent.
    pub duplicates: u64,
    /// Receptions under a request id of the truth that differ from every request sent
    /// under it.
    pub different: u64,
    /// Receptions with no request id, or one the truth does not have.
    pub foreign: u64,
    /// The first few problems, in words.
    pub examples: Vec<String>,
}

impl ForwardedVerdict {
    /// Every expected request exactly once, as sent, and nothing else.
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.different == 0 && self.foreign == 0
    }
}

/// A hash of everything the analyzer records of a request but its arrival time and peer.
fn fingerprint(r: &Recorded) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &r.method,
        &r.target,
        r.version,
        &r.headers,
        r.body_len,
        &r.body_b64,
        r.chunked,
    )
        .hash(&mut h);
    h.finish()
}

/// The id a generated request carries.
fn request_id(r: &Recorded) -> Option<&str> {
    r.first_header("x-request-id")
}

/// The daemon's forwarding settings for `--upstream` and `extra` arguments, as `rebuilder
/// run` reads them (the `REBUILDER_*` environment included, as the daemon a benchmark starts
/// inherits it). The rewrite depends on the upstream URL's path alone: give one without a
/// path, as the benchmarks' analyzers have.
pub fn forward_config(extra: &[&str]) -> rebuilder::daemon::forward::ForwardConfig {
    use clap::Parser;
    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        run: rebuilder::daemon::config::RunArgs,
    }
    let args = ["run", "--upstream", "http://127.0.0.1:9"]
        .into_iter()
        .chain(extra.iter().copied());
    let args = Run::try_parse_from(args)
        .expect("the run arguments parse")
        .run;
    rebuilder::daemon::forward::ForwardConfig::from_args(&args)
        .expect("the forwarding settings are valid")
}

impl ForwardedTruth {
    /// Adds a request the capture must yield (panics when the rewrite refuses it or it has
    /// no id: the generator's requests are forwardable and carry one).
    pub fn add(
        &mut self,
        cfg: &rebuilder::daemon::forward::ForwardConfig,
        req: &rebuilder::engine::request::HttpRequest,
    ) {
        let mut bytes = Vec::new();
        rebuilder::daemon::forward::write_request(req, cfg, &mut bytes)
            .expect("a generated request is forwardable");
        let rec = crate::analyzer::record_of_request(&bytes)
            .expect("the rewrite writes one complete request");
        let id = request_id(&rec)
            .expect("every generated request has an X-Request-Id")
            .to_owned();
        let fp = fingerprint(&rec);
        self.ids.insert(id.clone());
        *self.expected.entry((id, fp)).or_default() += 1;
        self.total += 1;
    }

    /// Requests held.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// No request held.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Compares what the analyzer received.
    pub fn check(&self, got: &[Recorded]) -> ForwardedVerdict {
        let mut v = ForwardedVerdict::default();
        let mut left = self.expected.clone();
        let note = |v: &mut ForwardedVerdict, what: String| {
            if v.examples.len() < 5 {
                v.examples.push(what);
            }
        };
        for r in got {
            let Some(id) = request_id(r).filter(|id| self.ids.contains(*id)) else {
                v.foreign += 1;
                note(
                    &mut v,
                    format!("not in the truth: {} {}", r.method, r.target),
                );
                continue;
            };
            match left.get_mut(&(id.to_owned(), fingerprint(r))) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    v.recovered += 1;
                }
                Some(_) => {
                    v.duplicates += 1;
                    note(&mut v, format!("received more times than sent: {id}"));
                }
                None => {
                    v.different += 1;
                    note(
                        &mut v,
                        format!("differs from what was sent: {id} {} {}", r.method, r.target),
                    );
                }
            }
        }
        v.lost = self.total - v.recovered;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rebuilder::offline::synth::{Generator, SynthConfig};

    /// The truth of a small realistic capture and the records of its requests as the
    /// rewrite writes them (what an analyzer receives when nothing goes wrong).
    fn truth_and_records() -> (ForwardedTruth, Vec<Recorded>) {
        let mut generator = Generator::new(SynthConfig::realistic(7, 40, 8));
        for _ in generator.by_ref() {}
        let cfg = forward_config(&[]);
        let mut truth = ForwardedTruth::default();
        let mut records = Vec::new();
        for t in generator.drain_truth().into_iter().filter(|t| t.expected) {
            truth.add(&cfg, &t.request);
            let mut bytes = Vec::new();
            rebuilder::daemon::forward::write_request(&t.request, &cfg, &mut bytes).unwrap();
            records.push(crate::analyzer::record_of_request(&bytes).unwrap());
        }
        assert!(truth.len() > 20, "the capture holds requests");
        (truth, records)
    }

    #[test]
    fn forwarded_truth_finds_every_lost_duplicated_altered_and_foreign_request() {
        let (truth, mut got) = truth_and_records();
        let v = truth.check(&got);
        assert!(v.exact(), "{v:?}");
        assert_eq!(v.recovered, truth.len());

        got.remove(3);
        let again = got[5].clone();
        got.push(again);
        let mut body = got[7].body();
        body.push(b'x');
        got[7].body_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &body);
        got[7].body_len = body.len();
        got[9].headers.swap(0, 1);
        got[11].target.push('x');
        got[13]
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("x-request-id"));

        let v = truth.check(&got);
        assert_eq!(
            (v.lost, v.duplicates, v.different, v.foreign),
            (5, 1, 3, 1),
            "{v:?}"
        );
        assert!(!v.exact());
        assert_eq!(v.recovered, truth.len() - 5);
    }

    #[test]
    fn a_request_id_sent_twice_must_arrive_twice() {
        let mut generator = Generator::new(SynthConfig::realistic(3, 4, 2));
        for _ in generator.by_ref() {}
        let cfg = forward_config(&[]);
        let t = generator.drain_truth().remove(0);
        let mut truth = ForwardedTruth::default();
        truth.add(&cfg, &t.request);
        truth.add(&cfg, &t.request);
        let mut bytes = Vec::new();
        rebuilder::daemon::forward::write_request(&t.request, &cfg, &mut bytes).unwrap();
        let rec = crate::analyzer::record_of_request(&bytes).unwrap();

        let once = truth.check(std::slice::from_ref(&rec));
        assert_eq!((once.recovered, once.lost, once.duplicates), (1, 1, 0));
        let twice = truth.check(&[rec.clone(), rec.clone()]);
        assert!(twice.exact(), "{twice:?}");
        let thrice = truth.check(&[rec.clone(), rec.clone(), rec]);
        assert_eq!((thrice.recovered, thrice.duplicates), (2, 1));
    }
}
