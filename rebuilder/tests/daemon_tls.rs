//! An https upstream: the rebuilder verifies it against `--upstream-ca-file` (a private CA made
//! here with openssl) and delivers every request over TLS; without the CA the upstream is never
//! trusted and is reported down (`rebuilder_upstream_up` 0; the instance itself stays live).
//! Needs openssl and python3 (the prerequisite policy of `rebuilder_testkit::system`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rebuilder_testkit::daemon::{RebuilderProc, rebuilder_bin};
use rebuilder_testkit::system::{self, Proc, TempDir, free_port, wait_until};
use rebuilder_testkit::traffic::{Sender, synth_payloads};

const TLS_SERVER_PY: &str = r#"
import sys, ssl, http.server, socketserver, threading
lock = threading.Lock()
out = open(sys.argv[4], "a")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def any(self):
        n = int(self.headers.get("Content-Length", "0") or 0)
        if n: self.rfile.read(n)
        with lock:
            out.write(self.command + " " + self.path + " " + self.headers.get("Host", "") + "\n"); out.flush()
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = any
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
srv = S(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

fn sh(dir: &Path, cmd: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn https_upstream_with_a_private_ca_receives_every_request() {
    if !system::require(
        "https_upstream_with_a_private_ca_receives_every_request",
        system::tools(&["openssl", "python3"]),
    ) {
        return;
    }
    let tmp = TempDir::new("mf-tls").unwrap();
    let dir = tmp.path().to_path_buf();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(
        &dir,
        &format!(
            "openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=mirrorfleet-test-ca"
        ),
    );
    sh(
        &dir,
        &format!("openssl req {ec} -keyout srv.key -out srv.csr -subj /CN=localhost"),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(
        &dir,
        "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext.cnf",
    );
    std::fs::write(dir.join("server.py"), TLS_SERVER_PY).unwrap();
    let port = free_port();
    let log = dir.join("requests.log");
    let mut server = Command::new("python3");
    server
        .arg(dir.join("server.py"))
        .arg(port.to_string())
        .arg(dir.join("srv.pem"))
        .arg(dir.join("srv.key"))
        .arg(&log);
    let _server = Proc::spawn("tls-server", server, &dir).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "TLS server did not start"
    );
    let upstream = format!("https://localhost:{port}");

    // Without the CA the certificate is not trusted: never up, nothing delivered.
    let untrusting = RebuilderProc::start(&upstream, &["--health-probe-interval-ms", "200"]);
    let m = untrusting.wait_metrics(Duration::from_secs(10), "failed probes", |m| {
        m.get("rebuilder_upstream_probes_total{result=\"failure\"}") >= 2
    });
    assert_eq!(m.get("rebuilder_upstream_up"), 0);
    assert_eq!(
        m.get("rebuilder_upstream_probes_total{result=\"success\"}"),
        0
    );
    assert_eq!(untrusting.healthz(), 200, "live all the same");
    drop(untrusting);

    let ca = dir.join("ca.pem");
    let p = RebuilderProc::start(
        &upstream,
        &[
            "--upstream-ca-file",
            ca.to_str().unwrap(),
            "--health-probe-interval-ms",
            "200",
        ],
    );
    p.wait_upstream_up(Duration::from_secs(10));
    let (payloads, expected) = synth_payloads(51, 40, 2000);
    let sender = Sender::new(p.udp, 4).unwrap();
    for (sport, d) in &payloads {
        sender.send(*sport, d);
    }
    let lines = || {
        std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(20), || lines() >= expected),
        "TLS upstream got {} of {expected}",
        lines()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(), expected, "exactly once");
    let m = p.metrics();
    assert_eq!(m.forwarded(), expected as u64);
}

#[test]
fn an_unreadable_ca_file_is_a_clear_error() {
    let out = Command::new(rebuilder_bin())
        .args(["run", "--upstream", "https://localhost:1"])
        .args(["--upstream-ca-file", "/nonexistent/ca.pem"])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));
}
