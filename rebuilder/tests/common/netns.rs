//! Helpers shared by the network-namespace tests (`netns_e2e`, `netns_two_rebuilders`): the
//! origin and analyzer scripts, command runners, the `Lab` of namespaces and processes
//! (removed on drop), the prerequisite check, and reading the analyzer's records.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The origin server: answers 200 to everything, reads Content-Length and chunked bodies,
/// keeps connections alive (so keep-alive and pipelining work).
pub const ORIGIN_PY: &str = r#"
import sys, http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""): pass
                    return
                self.rfile.read(size); self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0") or 0)
        if n: self.rfile.read(n)
    def any(self):
        self.body()
        out = b"origin ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD": self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = any
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

/// The analyzer: records every request as one JSON line (headers in order, body in base64).
pub const RECORDER_PY: &str = r#"
import sys, json, base64, http.server, socketserver, threading
lock = threading.Lock()
out = open(sys.argv[3], "a")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def any(self):
        n = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(n) if n else b""
        rec = {"method": self.command, "target": self.path,
               "headers": [[k, v] for k, v in self.headers.items()],
               "body": base64.b64encode(body).decode()}
        with lock:
            out.write(json.dumps(rec) + "\n"); out.flush()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = any
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn ns(ns: &str, args: &[&str]) {
    let mut v = vec!["netns", "exec", ns];
    v.extend_from_slice(args);
    run("ip", &v).unwrap_or_else(|e| panic!("{e}"));
}

/// Namespaces and processes of one test, removed on drop (also when the test fails).
pub struct Lab {
    pub names: Vec<String>,
    pub children: Vec<Child>,
    pub dir: PathBuf,
}

impl Lab {
    pub fn spawn_in(&mut self, netns: &str, args: &[&str]) -> &mut Child {
        let mut v = vec!["netns", "exec", netns];
        v.extend_from_slice(args);
        let child = Command::new("ip")
            .args(&v)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn in namespace");
        self.children.push(child);
        self.children.last_mut().unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.names {
            let _ = run("ip", &["netns", "del", n]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn prerequisites() -> Result<(), String> {
    let uid = run("id", &["-u"])?;
    if uid.trim() != "0" {
        return Err("not root".into());
    }
    for tool in ["ip", "tc", "ethtool", "curl", "python3"] {
        run("sh", &["-c", &format!("command -v {tool}")])
            .map_err(|_| format!("{tool} not installed"))?;
    }
    Ok(())
}

pub fn wait_tcp(netns: &str, addr: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let probe =
        format!("import socket; socket.create_connection(('{addr}', {port}), timeout=1).close()");
    while run("ip", &["netns", "exec", netns, "python3", "-c", &probe]).is_err() {
        assert!(Instant::now() < deadline, "{addr}:{port} never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Debug)]
pub struct Rec {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Rec {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn read_records(path: &Path) -> Vec<Rec> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("recorder writes JSON");
            Rec {
                method: v["method"].as_str().unwrap().to_string(),
                target: v["target"].as_str().unwrap().to_string(),
                headers: v["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        (
                            h[0].as_str().unwrap().to_string(),
                            h[1].as_str().unwrap().to_string(),
                        )
                    })
                    .collect(),
                body: base64::engine::general_purpose::STANDARD
                    .decode(v["body"].as_str().unwrap())
                    .unwrap(),
            }
        })
        .collect()
}
