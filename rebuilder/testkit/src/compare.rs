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
