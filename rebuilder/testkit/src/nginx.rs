//! A real nginx (Debian `nginx-light`) as the origin oracle: what it serves, the analyzer must
//! see.
//!
//! [`Nginx::start`] runs nginx on 127.0.0.1 (a free port, its own prefix directory, one
//! process, no daemon) in front of an upstream (the recording [`crate::analyzer::Analyzer`]):
//! every request nginx accepts is proxied there (so the body is read and forwarded, and a
//! body nginx cannot frame is refused), every request it handles is a line of its access log
//! — status, method, the raw request line and target, the connection. [`Nginx::exchange`]
//! sends raw bytes on one connection and returns the access-log lines of that connection.
//!
//! One location answers by itself ([`ANSWERED_EARLY`]: 403 as soon as the head is read, the
//! body discarded as it comes, the connection kept): a server answering before the body.
//!
//! Defaults kept as Debian ships them (`ignore_invalid_headers on`, `underscores_in_headers
//! off`, `large_client_header_buffers 4 8k`, `client_max_body_size 1m`). Needs `nginx` (the
//! prerequisite policy of [`crate::system`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::system::{self, Proc, TempDir};

/// A path nginx answers itself (403) as soon as it has the head, before any body: what
/// follows on the connection is served as usual.
pub const ANSWERED_EARLY: &str = "/answered-early";

/// One access-log line: a request nginx handled (served, or answered with an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The status nginx answered (200 when the upstream served it).
    pub status: u16,
    /// `$request_method` (empty when nginx could not read one).
    pub method: String,
    /// `$request_uri` as raw bytes (the target, absolute form reduced to its path).
    pub uri: Vec<u8>,
    /// `$request`: the request line as received (raw bytes, up to its line end).
    pub request: Vec<u8>,
    /// `$connection`: nginx's connection serial number.
    pub connection: u64,
}

impl Logged {
    /// nginx passed the request to the application (the upstream answered).
    pub fn served(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A running nginx.
pub struct Nginx {
    pub addr: SocketAddr,
    access_log: PathBuf,
    read: usize,
    proc: Proc,
    _dir: TempDir,
}

/// `Ok` when nginx can be run.
pub fn check() -> Result<(), String> {
    system::tools(&["nginx"])
}

/// Decodes nginx's default log escaping (`\xHH` for `"`, `\`, and bytes below 0x20 or from
/// 0x7f on).
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && s.get(i + 1) == Some(&b'x')
            && let Some(h) = s.get(i + 2..i + 4)
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(h).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

impl Nginx {
    /// Starts nginx proxying every request to `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<Nginx> {
        let dir = TempDir::new("mf-nginx")?;
        let d = dir.path().to_path_buf();
        let port = system::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let access_log = d.join("access.log");
        // Tab-separated fields, nginx's default escaping (`\xHH`), one line per request.
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format oracle '$status\t$request_method\t$request_uri\t$request\t$connection';
    access_log {d}/access.log oracle;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            # The client closes its sending side right after the request: finish anyway.
            proxy_ignore_client_abort on;
        }}
        # Answered at once, before any body is read (nginx discards the body as it comes and
        # the connection goes on): a server answering a request before its body.
        location = {ANSWERED_EARLY} {{
            return 403 "refused\n";
        }}
    }}
}}
"#,
            d = d.display()
        );
        std::fs::write(d.join("nginx.conf"), conf)?;
        let nginx =
            system::tool("nginx").ok_or_else(|| std::io::Error::other("nginx not found"))?;
        let mut cmd = Command::new(nginx);
        cmd.arg("-p").arg(&d).arg("-c").arg(d.join("nginx.conf"));
        let proc = Proc::spawn("nginx", cmd, &d)?;
        if !system::wait_tcp(addr, Duration::from_secs(10)) {
            return Err(std::io::Error::other(format!(
                "nginx did not listen on {addr}: {}",
                proc.log_tail(20)
            )));
        }
        Ok(Nginx {
            addr,
            access_log,
            read: 0,
            proc,
            _dir: dir,
        })
    }

    /// Sends `bytes` on a new connection, closes the sending side, reads until nginx closes
    /// the connection (or stays silent for a second: it waits for more), and returns the
    /// access-log lines written meanwhile (this connection's: exchanges are sequential).
    pub fn exchange(&mut self, bytes: &[u8]) -> Vec<Logged> {
        self.converse(bytes).0
    }

    /// [`Self::exchange`], with the bytes nginx answered (its side of the connection).
    pub fn converse(&mut self, bytes: &[u8]) -> (Vec<Logged>, Vec<u8>) {
        let (logged, mut answers) = self.converse_in_steps(&[bytes]);
        (logged, answers.pop().unwrap_or_default())
    }

    /// [`Self::converse`] in steps, as a client that waits for an answer between them (a
    /// request head, then its body): each part is written once nginx has said what it had
    /// to say about the ones before (what it sends until it is silent for 300 ms); after the
    /// last the sending side is closed and everything up to nginx's close is read. Returns
    /// the access-log lines and what nginx answered after each part.
    pub fn converse_in_steps(&mut self, parts: &[&[u8]]) -> (Vec<Logged>, Vec<Vec<u8>>) {
        let mut s = TcpStream::connect(self.addr).expect("connect to nginx");
        let mut sink = [0u8; 16384];
        let mut answers = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            // nginx may answer and close before every byte is written (a 400): ignore errors.
            let _ = s.write_all(part);
            let silence = if last {
                let _ = s.shutdown(std::net::Shutdown::Write);
                Duration::from_millis(1000)
            } else {
                Duration::from_millis(300)
            };
            s.set_read_timeout(Some(silence)).unwrap();
            let mut answered = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match s.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answered.extend_from_slice(&sink[..n]),
                }
            }
            answers.push(answered);
        }
        drop(s);
        // nginx logs a request when it finalises it, before closing; one lingering one may
        // be finalised by the close itself.
        std::thread::sleep(Duration::from_millis(150));
        (self.new_log_lines(), answers)
    }

    /// Access-log lines written since the last read, waiting up to `wait` for at least
    /// `want` of them (nginx logs a request it refused with a body still to come only when
    /// its lingering close ends: seconds later).
    pub fn logged_within(&mut self, want: usize, wait: Duration) -> Vec<Logged> {
        let deadline = Instant::now() + wait;
        let mut logged = self.new_log_lines();
        while logged.len() < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            logged.extend(self.new_log_lines());
        }
        logged
    }

    /// The access-log lines written since the last read.
    fn new_log_lines(&mut self) -> Vec<Logged> {
        let text = std::fs::read(&self.access_log).unwrap_or_default();
        // Whole lines only (nginx may be writing one).
        let end = text
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
            .max(self.read.min(text.len()));
        let new = &text[self.read.min(text.len())..end];
        self.read = end;
        new.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|line| {
                let f: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
                let text = |i: usize| {
                    String::from_utf8_lossy(f.get(i).copied().unwrap_or(b"")).into_owned()
                };
                let raw = |i: usize| {
                    let v = f.get(i).copied().unwrap_or(b"");
                    if v == b"-" { Vec::new() } else { unescape(v) }
                };
                let method = text(1);
                Logged {
                    status: text(0).parse().unwrap_or(0),
                    method: if method == "-" { String::new() } else { method },
                    uri: raw(2),
                    request: raw(3),
                    connection: text(4).parse().unwrap_or(0),
                }
            })
            .collect()
    }

    /// The end of nginx's error log (why it refused something).
    pub fn error_log_tail(&self) -> String {
        let p = self.access_log.with_file_name("error.log");
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// nginx's own output (startup errors).
    pub fn log_tail(&self) -> String {
        self.proc.log_tail(20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_log_escapes_are_decoded() {
        assert_eq!(unescape(br#"/a\x22b\x5Cc\xE9"#), b"/a\"b\\c\xe9");
        assert_eq!(unescape(b"/plain"), b"/plain");
        assert_eq!(unescape(br"\x"), b"\\x");
    }
}
