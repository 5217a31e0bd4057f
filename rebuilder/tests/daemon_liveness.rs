//! `rebuilder run` as the load balancer and the Auto Scaling group see it, over loopback:
//! `/healthz` is liveness only (an analyzer answering 503 to everything, then timing out, does
//! not make it fail), datagrams from outside `--allow-from` are counted and not processed, a
//! receive worker that panics takes the process down (systemd restarts it), and the admin
//! listener serves a bounded number of connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use rebuilder::DropReason;
use rebuilder::daemon::telemetry::{StatusClass, UpstreamErrorClass};
use rebuilder_testkit::analyzer::Analyzer;
use rebuilder_testkit::daemon::RebuilderProc;
use rebuilder_testkit::metrics::{Metrics, http_get};
use rebuilder_testkit::system::wait_until;
use rebuilder_testkit::traffic::{Sender, synth_payloads};

fn decode_drops(m: &Metrics, reason: DropReason) -> u64 {
    m.get(&format!(
        "rebuilder_decode_drops_total{{reason=\"{reason}\"}}"
    ))
}

/// Polls `/healthz` every 20 ms on a thread of its own until dropped; remembers every answer
/// that was not 200.
struct HealthWatch {
    stop: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    bad: Arc<std::sync::Mutex<Vec<(u16, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthWatch {
    fn start(admin: SocketAddr) -> HealthWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, p, b) = (stop.clone(), polls.clone(), bad.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(SeqCst) {
                let answer = http_get(admin, "/healthz").unwrap_or((0, String::new()));
                p.fetch_add(1, SeqCst);
                if answer.0 != 200 {
                    b.lock().unwrap().push(answer);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        HealthWatch {
            stop,
            polls,
            bad,
            thread: Some(thread),
        }
    }

    /// (polls made, answers that were not 200).
    fn finish(mut self) -> (u64, Vec<(u16, String)>) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let bad = self.bad.lock().unwrap().clone();
        (self.polls.load(SeqCst), bad)
    }
}

#[test]
fn healthz_stays_200_while_the_analyzer_answers_503_to_everything_and_then_times_out() {
    let sink = Analyzer::loopback();
    sink.set_status(503);
    let p = RebuilderProc::start(
        &sink.url(),
        &[
            "--workers",
            "2",
            "--health-failure-threshold",
            "2",
            "--health-probe-interval-ms",
            "100",
            "--request-timeout-ms",
            "300",
            "--failure-backoff-ms",
            "20",
        ],
    );
    let watch = HealthWatch::start(p.admin);
    let sender = Sender::new(p.udp, 4).unwrap();

    // Every request is answered 503.
    let (payloads, expected) = synth_payloads(61, 20, 500);
    for (sport, d) in &payloads {
        sender.send(*sport, d);
    }
    let m = p.wait_metrics(Duration::from_secs(20), "every request answered 503", |m| {
        m.get(&format!(
            "rebuilder_requests_forwarded_total{{status=\"{}\"}}",
            StatusClass::ServerError
        )) == expected as u64
    });
    assert!(m.upstream_errors(UpstreamErrorClass::Status5xx) >= expected as u64);
    assert_eq!(
        m.get("rebuilder_upstream_up"),
        0,
        "the analyzer is reported down"
    );
    assert_eq!(m.get("rebuilder_healthy"), 1);

    // Now it does not answer in time either.
    sink.set_delay(Duration::from_millis(1_000));
    let (payloads, _) = synth_payloads(62, 10, 500);
    for (sport, d) in &payloads {
        sender.send(*sport, d);
    }
    let m = p.wait_metrics(Duration::from_secs(20), "timeouts", |m| {
        m.upstream_errors(UpstreamErrorClass::Timeout) >= 3
    });
    assert_eq!(m.get("rebuilder_upstream_up"), 0);
    std::thread::sleep(Duration::from_millis(500));

    let (polls, bad) = watch.finish();
    assert!(polls > 20, "only {polls} health checks were made");
    assert!(
        bad.is_empty(),
        "/healthz failed while only the analyzer did: {bad:?}"
    );
    assert_eq!(p.healthz(), 200);
}

/// A socket bound on `ip` (any loopback address) sending to `to`.
fn sender_from(ip: &str, to: SocketAddr) -> impl Fn(&[u8]) {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    move |d: &[u8]| {
        s.send_to(d, to).unwrap();
    }
}

#[test]
fn a_datagram_from_outside_allow_from_is_counted_and_not_processed() {
    let sink = Analyzer::loopback();
    let p = RebuilderProc::start(
        &sink.url(),
        &["--workers", "1", "--allow-from", "127.0.0.2/32,fd00::/8"],
    );
    let (payloads, expected) = synth_payloads(63, 8, 300);
    let outsider = sender_from("127.0.0.1", p.udp);
    for (_, d) in &payloads {
        outsider(d);
    }
    outsider(b"\x00 not even a VXLAN header");
    let n = payloads.len() as u64 + 1;
    let m = p.wait_metrics(Duration::from_secs(10), "every datagram counted", |m| {
        decode_drops(m, DropReason::SourceNotAllowed) == n
    });
    assert_eq!(m.get("rebuilder_datagrams_received_total"), n);
    assert_eq!(m.get("rebuilder_flows_created_total"), 0, "not parsed");
    assert_eq!(m.get("rebuilder_requests_extracted_total"), 0);
    let others: u64 = DropReason::ALL
        .iter()
        .filter(|r| **r != DropReason::SourceNotAllowed)
        .map(|r| decode_drops(&m, *r))
        .sum();
    assert_eq!(others, 0, "counted under its own reason only");

    // The same datagrams from inside the list are processed.
    let insider = sender_from("127.0.0.2", p.udp);
    for (_, d) in &payloads {
        insider(d);
    }
    p.wait_metrics(Duration::from_secs(10), "requests extracted", |m| {
        m.get("rebuilder_requests_extracted_total") == expected as u64
    });
    assert!(wait_until(Duration::from_secs(10), || sink.received()
        == expected as u64));
}

/// `rebuilder run` aborts on a panic: a receive worker whose thread died would leave its share
/// of the flows unread while `/healthz` stayed green; a fresh process (systemd `Restart=always`)
/// is the safe state. The panic is provoked by the debug-build-only hook
/// `REBUILDER_DEBUG_PANIC_AFTER_DATAGRAMS` (absent from release builds).
#[cfg(debug_assertions)]
#[test]
fn a_receive_worker_that_panics_takes_the_process_down() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    use rebuilder_testkit::daemon::rebuilder_bin;
    use rebuilder_testkit::system::free_port;

    let sink = Analyzer::loopback();
    let udp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Command::new(rebuilder_bin())
        .args(["run", "--workers", "2", "--upstream", &sink.url()])
        .args(["--listen", &udp.to_string(), "--admin", &admin.to_string()])
        .env("REBUILDER_DEBUG_PANIC_AFTER_DATAGRAMS", "3")
        .env("REBUILDER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || http_get(
        admin, "/healthz"
    )
    .is_some_and(|(s, _)| s == 200)));
    // Datagrams from many source ports (the kernel spreads them over the workers' sockets)
    // until worker 0 has had three of them.
    let senders: Vec<UdpSocket> = (0..32)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let status = (0..200).find_map(|i| {
        let _ = senders[i % senders.len()].send_to(b"x", udp);
        std::thread::sleep(Duration::from_millis(20));
        child.try_wait().unwrap()
    });
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the process outlived its worker's panic");
    });
    assert_eq!(
        status.signal(),
        Some(6),
        "SIGABRT, not a clean exit: {status}"
    );
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("rx-0"), "the thread is named: {stderr}");
    assert!(stderr.contains("aborting"), "{stderr}");
}

#[test]
fn the_admin_listener_serves_a_bounded_number_of_connections() {
    let sink = Analyzer::loopback();
    let p = RebuilderProc::start(
        &sink.url(),
        &["--admin-max-connections", "1", "--admin-timeout-ms", "1500"],
    );
    // An idle client takes the only slot.
    let mut idle = TcpStream::connect(p.admin).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut refused = TcpStream::connect(p.admin).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = refused.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = Vec::new();
    let _ = refused.read_to_end(&mut got);
    assert!(got.is_empty(), "served over the cap: {got:?}");
    // The idle client is cut at --admin-timeout-ms; then the slot serves again.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        idle.read_to_end(&mut rest).unwrap_or(0),
        0,
        "closed without an answer"
    );
    let m = wait_until(Duration::from_secs(5), || {
        Metrics::scrape(p.admin).is_some()
    })
    .then(|| p.metrics())
    .expect("served again after the idle client was cut");
    assert!(m.get("rebuilder_admin_connections_rejected_total") >= 1);
    assert_eq!(m.get("rebuilder_admin_connections"), 1, "the scrape itself");
    assert_eq!(p.healthz(), 200);
}
