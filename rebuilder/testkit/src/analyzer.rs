//! The recording analyzer: an HTTP/1.1 server that records every request exactly as it
//! arrived — header names as sent and in order, the body decoded (Content-Length or chunked)
//! — and answers 200 (or the status of [`Analyzer::set_status`]). It stands in for the analyzer
//! behind the rebuilder, and for the origin (web server) whose records are the ground truth of
//! what a client sent.
//!
//! It reads the wire itself (httparse for heads) instead of going through an HTTP framework,
//! which would fold header names to lower case and group repeated fields. Keep-alive,
//! pipelining, `Expect: 100-continue` (an interim 100 is sent) and bare-LF line ends work.
//! It can listen inside a network namespace ([`AnalyzerConfig::netns`]), be slowed down
//! ([`Analyzer::set_delay`]), stopped (every connection closed) and restarted on its port.
//!
//! Records can be appended to a JSON-lines file (one [`Recorded`] per line), the format the
//! demo and the system tests read.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::netns;

/// Largest head accepted (bigger ones close the connection).
const MAX_HEAD: usize = 256 * 1024;
/// Most header fields accepted (the rebuilder keeps up to 1,000 by default).
const MAX_HEADERS: usize = 2048;

/// One request as the analyzer received it (also a line of the record file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Arrival time, seconds since the UNIX epoch.
    #[serde(default)]
    pub ts: f64,
    /// The TCP peer (`ip:port`).
    pub peer: String,
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// HTTP/1.`version`.
    pub version: u8,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    /// The decoded body, base64.
    pub body_b64: String,
    /// The body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

/// Fields the rebuilder must rewrite on its way to the analyzer: the framing ones (a decoded
/// body goes with a Content-Length of its own), `Connection` (renamed `x-rebuilder-connection`:
/// it would manage the rebuilder's connection) and the one it appends the client to. Every
/// other field arrives as sent (names, order, values); fields named `x-rebuilder-*` are the
/// rebuilder's markers.
pub const NOT_END_TO_END: [&str; 4] = [
    "connection",
    "transfer-encoding",
    "content-length",
    "x-forwarded-for",
];

/// Prefix of the rebuilder's marker fields.
pub const MARKER_PREFIX: &str = "x-rebuilder-";

impl Recorded {
    /// Values of the fields named `name` (ASCII case-insensitive), in order.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of `name`.
    pub fn first_header(&self, name: &str) -> Option<&str> {
        self.header(name).into_iter().next()
    }

    /// The decoded body.
    pub fn body(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.body_b64)
            .expect("records hold base64 bodies")
    }

    /// The JSON lines of an ndjson body (what the rebuilder's ndjson sink POSTs), gunzipped
    /// when the request says `Content-Encoding: gzip`.
    pub fn ndjson(&self) -> Vec<serde_json::Value> {
        let mut body = self.body();
        if self
            .first_header("content-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
        {
            use std::io::Read;
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut plain)
                .expect("a gzip body");
            body = plain;
        }
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// The peer's address without the port.
    pub fn peer_ip(&self) -> &str {
        self.peer
            .rsplit_once(':')
            .map_or("", |(ip, _)| ip.trim_matches(['[', ']']))
    }

    /// Fields that must arrive unchanged through the rebuilder, names as sent (case
    /// included), in order.
    pub fn end_to_end_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(k, _)| {
                let lower = k.to_ascii_lowercase();
                !NOT_END_TO_END.contains(&lower.as_str()) && !lower.starts_with(MARKER_PREFIX)
            })
            .cloned()
            .collect()
    }
}

/// Reads the records of a JSON-lines file (none when it does not exist).
pub fn read_records(path: &std::path::Path) -> std::io::Result<Vec<Recorded>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

/// How to run an analyzer.
#[derive(Debug, Clone)]
pub struct AnalyzerConfig {
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Listen inside this network namespace.
    pub netns: Option<String>,
    /// Append every record to this JSON-lines file.
    pub record: Option<PathBuf>,
    /// Name in printed lines.
    pub label: String,
    /// Print one line per request on stdout (`[label] #n METHOD target HTTP/1.x from peer`).
    pub print: bool,
}

impl AnalyzerConfig {
    /// Listens on `listen` in this namespace; records kept in memory only, nothing printed.
    pub fn new(listen: SocketAddr) -> AnalyzerConfig {
        AnalyzerConfig {
            listen,
            netns: None,
            record: None,
            label: "analyzer".to_owned(),
            print: false,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    count: AtomicU64,
    records: Mutex<Vec<Recorded>>,
    delay_ms: AtomicU64,
    /// Status of every answer (0: 200).
    status: AtomicU16,
    file: Mutex<Option<std::fs::File>>,
}

/// A running analyzer (see the module documentation). Stops on drop.
#[derive(Debug)]
pub struct Analyzer {
    /// The address it listens on.
    pub addr: SocketAddr,
    cfg: AnalyzerConfig,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Analyzer {
    /// Binds and serves on a thread of its own.
    pub fn start(cfg: AnalyzerConfig) -> std::io::Result<Analyzer> {
        let file = match &cfg.record {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            file: Mutex::new(file),
            ..Shared::default()
        });
        let mut a = Analyzer {
            addr: cfg.listen,
            cfg,
            shared,
            stop: None,
            thread: None,
        };
        a.serve(a.cfg.listen)?;
        Ok(a)
    }

    /// An analyzer on a free port of 127.0.0.1, records in memory only (the upstream of the
    /// loopback tests). Panics when it cannot listen.
    pub fn loopback() -> Analyzer {
        Analyzer::start(AnalyzerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))))
            .expect("an analyzer listens on 127.0.0.1")
    }

    /// An analyzer listening on `listen` inside network namespace `ns`, records in memory.
    pub fn in_netns(ns: &str, listen: SocketAddr) -> std::io::Result<Analyzer> {
        Analyzer::start(AnalyzerConfig {
            netns: Some(ns.to_owned()),
            ..AnalyzerConfig::new(listen)
        })
    }

    /// `http://ADDR`, the rebuilder's `--upstream` for it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, addr: SocketAddr) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel::<std::io::Result<SocketAddr>>();
        let shared = self.shared.clone();
        let (label, print) = (self.cfg.label.clone(), self.cfg.print);
        let thread = netns::spawn_in(self.cfg.netns.as_deref(), "analyzer", move || {
            let listener = match std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
            {
                Ok(l) => {
                    let _ = bound_tx.send(l.local_addr());
                    l
                }
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                    return;
                }
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            rt.block_on(accept_loop(listener, rx, shared, label, print));
        })?;
        let bound = bound_rx
            .recv()
            .map_err(|_| std::io::Error::other("the analyzer thread ended before binding"))?;
        self.addr = bound?;
        self.stop = Some(tx);
        self.thread = Some(thread);
        Ok(())
    }

    /// Requests received so far.
    pub fn received(&self) -> u64 {
        self.shared.count.load(SeqCst)
    }

    /// The requests received so far, in arrival order.
    pub fn records(&self) -> Vec<Recorded> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The JSON lines of every ndjson batch received so far (an ndjson sink's records).
    pub fn ndjson_lines(&self) -> Vec<serde_json::Value> {
        self.records().iter().flat_map(|r| r.ndjson()).collect()
    }

    /// Delays every answer by `d` (a slow upstream).
    pub fn set_delay(&self, d: Duration) {
        self.shared.delay_ms.store(d.as_millis() as u64, SeqCst);
    }

    /// Answers every request with `status` from now on (e.g. 503: an analyzer that fails).
    /// Requests are still recorded.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, SeqCst);
    }

    /// Stops listening and closes every connection (the upstream goes down).
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Listens again on the same address (retrying while the port is still taken).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let addr = self.addr;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.serve(addr) {
                Ok(()) => return Ok(()),
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Serves until the thread ends (the `mirror-lab analyzer` binary: until it is killed).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Analyzer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    shared: Arc<Shared>,
    label: String,
    print: bool,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let label: Arc<str> = label.into();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            acc = listener.accept() => {
                let Ok((stream, peer)) = acc else { continue };
                let (shared, label) = (shared.clone(), label.clone());
                conns.spawn(async move {
                    let _ = connection(stream, peer, &shared, &label, print).await;
                });
            }
        }
    }
    conns.abort_all();
}

/// Method, target, minor version, fields.
type Head = (String, String, u8, Vec<(String, String)>);

/// A request head: method, target, minor version, fields. `httparse` first; when it refuses
/// the head, a plain line reader that also takes field names with visible bytes outside the
/// token set (`Foo@Bar`: nginx serves such requests, ignoring the field; the analyzer records
/// it) — never a name with a space, a control byte, or no colon.
fn parse_head(head: &[u8]) -> Option<Head> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    if let Ok(httparse::Status::Complete(_)) = req.parse(head) {
        let headers = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        return Some((
            req.method?.to_owned(),
            req.path?.to_owned(),
            req.version.unwrap_or(1),
            headers,
        ));
    }
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return None,
    };
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return None;
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Some((method.to_owned(), target.to_owned(), version, headers))
}

/// One complete request in `bytes` (a head, then a `Content-Length` body), recorded as the
/// analyzer records what arrives on a connection (peer empty, time 0): the form in which a
/// benchmark compares what the rebuilder should have sent with what the analyzer received.
/// `None` when the head does not parse, the body is chunked, or bytes are missing or left
/// over.
pub fn record_of_request(bytes: &[u8]) -> Option<Recorded> {
    let head_len = memchr::memmem::find(bytes, b"\r\n\r\n")? + 4;
    let (method, target, version, headers) = parse_head(&bytes[..head_len])?;
    let field = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name));
    if field("transfer-encoding").is_some() {
        return None;
    }
    let len: usize = match field("content-length") {
        Some((_, v)) => v.trim().parse().ok()?,
        None => 0,
    };
    let body = bytes.get(head_len..)?;
    if body.len() != len {
        return None;
    }
    Some(Recorded {
        ts: 0.0,
        peer: String::new(),
        method,
        target,
        version,
        headers,
        body_len: body.len(),
        body_b64: base64::engine::general_purpose::STANDARD.encode(body),
        chunked: false,
    })
}

/// Serves one connection: requests one after the other until the client closes it, sends
/// `Connection: close`, or sends something that is not HTTP/1.x.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    label: &str,
    print: bool,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(8192);
    loop {
        let Some(head_len) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let Some((method, target, version, headers)) = parse_head(&buf[..head_len]) else {
            stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await?;
            return Ok(());
        };
        buf.drain(..head_len);
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        if value("expect").is_some_and(|v| v == "100-continue") {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let chunked = value("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let body = if chunked {
            read_chunked(&mut stream, &mut buf).await?
        } else {
            let n: usize = value("content-length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            read_exact(&mut stream, &mut buf, n).await?
        };
        let close = match value("connection") {
            Some(v) if v.contains("close") => true,
            Some(v) if v.contains("keep-alive") => false,
            _ => version == 0,
        };
        let seen = record(
            shared,
            label,
            print,
            Recorded {
                ts: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                peer: peer.to_string(),
                method: method.clone(),
                target,
                version,
                headers,
                body_len: body.len(),
                body_b64: base64::engine::general_purpose::STANDARD.encode(&body),
                chunked,
            },
        );
        let delay = shared.delay_ms.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let status = match shared.status.load(SeqCst) {
            0 => 200,
            s => s,
        };
        let reply = format!("{{\"ok\": {}, \"seen\": {seen}}}", status < 400);
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
            if status < 400 { "OK" } else { "Failing" },
            reply.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if method != "HEAD" {
            out.push_str(&reply);
        }
        stream.write_all(out.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}

/// Counts, keeps, writes and prints one record; returns its number.
fn record(shared: &Shared, label: &str, print: bool, rec: Recorded) -> u64 {
    let mut records = shared.records.lock().unwrap_or_else(|e| e.into_inner());
    let seen = shared.count.fetch_add(1, SeqCst) + 1;
    if let Some(f) = shared
        .file
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
    {
        let line = serde_json::to_string(&rec).expect("a record serialises");
        let _ = writeln!(f, "{line}");
    }
    if print {
        let xff = rec
            .first_header("x-forwarded-for")
            .map(|v| format!(" xff={v}"))
            .unwrap_or_default();
        let body = if rec.body_len > 0 {
            format!(" body={}B", rec.body_len)
        } else {
            String::new()
        };
        let target: String = rec.target.chars().take(100).collect();
        println!(
            "[{label}] #{seen} {} {target} HTTP/1.{} from {}{body}{}{xff}",
            rec.method,
            rec.version,
            rec.peer,
            if rec.chunked { " (chunked)" } else { "" }
        );
    }
    records.push(rec);
    seen
}

/// Reads until `buf` holds a complete head (an empty line ends it; empty lines before it are
/// skipped); its length, or `None` when the client closed the connection between requests.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    loop {
        let skip = buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        buf.drain(..skip);
        if let Some(end) = head_end(buf) {
            return Ok(Some(end));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("head too large"));
        }
        if fill(stream, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

/// The length of the head at the start of `buf` (through its empty line), if complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|i| match buf.get(i + 1..) {
        Some([b'\n', ..]) => Some(i + 2),
        Some([b'\r', b'\n', ..]) => Some(i + 3),
        _ => None,
    })
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Takes `n` bytes from `buf`, reading more as needed.
async fn read_exact(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    n: usize,
) -> std::io::Result<Vec<u8>> {
    while buf.len() < n {
        if fill(stream, buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf.drain(..n).collect())
}

/// Takes one line (through its LF) from `buf`, reading more as needed.
async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    loop {
        if let Some(i) = memchr::memchr(b'\n', buf) {
            return Ok(buf.drain(..=i).collect());
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("line too long"));
        }
        if fill(stream, buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Decodes a chunked body (extensions ignored, trailers read and dropped).
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let text = String::from_utf8_lossy(&line);
        let size = text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size line {text:?}")))?;
        if size == 0 {
            while !matches!(read_line(stream, buf).await?.as_slice(), b"\r\n" | b"\n") {}
            return Ok(body);
        }
        body.extend(read_exact(stream, buf, size).await?);
        read_line(stream, buf).await?;
    }
}
