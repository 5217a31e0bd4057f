//! Admin HTTP listener: `/healthz` (liveness: what the load balancer's target group and the
//! Auto Scaling group check) and `/metrics` (everything else, the upstream's state included).
//! Its own thread and runtime ([`AdminServer`]), a cap on connections served at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::daemon::telemetry::Telemetry;

/// Answers one admin request.
pub fn respond(telemetry: &Telemetry, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (method, path) {
        (&Method::GET | &Method::HEAD, "/healthz") => match telemetry.health() {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("unhealthy: {reason}\n"),
            ),
        },
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, Telemetry::CONTENT_TYPE, telemetry.render())
        }
        (_, "/healthz" | "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz or /metrics\n".to_string(),
        ),
    };
    let body = if method == Method::HEAD {
        String::new()
    } else {
        body
    };
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, ctype)
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// Admin listener settings.
#[derive(Debug, Clone, Copy)]
pub struct AdminConfig {
    /// Connections served at once (`--admin-max-connections`); more are closed unserved.
    pub max_connections: usize,
    /// Time allowed to one connection (`--admin-timeout-ms`): read the request, answer it.
    pub timeout: Duration,
}

/// Binds the admin listener (non-blocking, for the admin thread's runtime).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The admin listener, served by a thread of its own (`admin`) on a current-thread runtime:
/// rendering `/metrics` or a slow client never takes time from the forwarding runtime, and a
/// busy forwarding runtime never delays a health check.
pub struct AdminServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminServer {
    /// Starts serving `listener` on the admin thread.
    pub fn spawn(
        listener: std::net::TcpListener,
        telemetry: Arc<Telemetry>,
        cfg: AdminConfig,
    ) -> std::io::Result<AdminServer> {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("admin".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => serve(l, telemetry, cfg, stopped).await,
                        Err(e) => tracing::error!(error = %e, "admin listener unusable"),
                    }
                })
            })?;
        Ok(AdminServer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops accepting and waits for the admin thread (connections in progress are cut).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Counts a connection as served until dropped.
struct Served(Arc<Telemetry>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.admin_connection_closed();
    }
}

/// Serves admin requests until `stop` resolves. At most `cfg.max_connections` connections are
/// served at once (a semaphore); one more is closed at once, unserved, and counted. Each
/// connection carries one request (no keep-alive) and gets `cfg.timeout` in all, so an idle
/// client cannot hold a slot.
pub async fn serve(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    cfg: AdminConfig,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            telemetry.admin_connection_rejected();
            drop(stream);
            continue;
        };
        telemetry.admin_connection_opened();
        let served = Served(telemetry.clone());
        let t = telemetry.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _served = served;
            let svc = service_fn(move |req: Request<Incoming>| {
                let t = t.clone();
                async move { Ok::<_, Infallible>(respond(&t, req.method(), req.uri().path())) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(cfg.timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(cfg.timeout, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "admin connection ended with an error"),
                Err(_) => tracing::debug!("admin connection timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `cond` for up to 5 s.
    fn wait(cond: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    fn status(t: &Telemetry) -> StatusCode {
        respond(t, &Method::GET, "/healthz").status()
    }

    fn live() -> Telemetry {
        let t = Telemetry::new(1, 1);
        t.set_sockets_bound(1);
        t.set_workers_expected(1);
        t.worker_started();
        t.set_forwarder_running(true);
        t
    }

    #[test]
    fn healthz_is_liveness_and_ignores_the_upstream() {
        let t = live();
        assert_eq!(status(&t), StatusCode::OK, "the upstream was never reached");
        t.probe_result(false);
        t.upstream_error(crate::daemon::telemetry::UpstreamErrorClass::Status5xx);
        assert!(!t.upstream_up());
        assert_eq!(
            status(&t),
            StatusCode::OK,
            "an upstream outage is not a fleet outage"
        );
        t.probe_result(true);
        assert!(t.upstream_up());
    }

    #[test]
    fn healthz_is_503_with_a_reason_for_each_part_of_liveness() {
        let body = |t: &Telemetry| {
            let r = respond(t, &Method::GET, "/healthz");
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            format!("{:?}", r.body())
        };
        let t = Telemetry::new(1, 1);
        assert!(body(&t).contains("no UDP socket bound"));
        let t = live();
        t.worker_stopped();
        assert!(body(&t).contains("receive worker stopped"));
        let t = live();
        t.set_forwarder_running(false);
        assert!(body(&t).contains("forwarder"));
        let t = live();
        t.set_shutting_down();
        assert!(body(&t).contains("shutting down"));
    }

    #[test]
    fn a_worker_thread_that_panics_turns_healthz_red() {
        let t = Arc::new(live());
        t.set_workers_expected(2);
        let alive = crate::daemon::ingest::WorkerAlive::new(t.clone());
        assert_eq!(status(&t), StatusCode::OK);
        let r = std::thread::spawn(move || {
            let _alive = alive;
            panic!("a bug in a receive worker");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(t.workers_alive(), 1);
        assert_eq!(status(&t), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn connections_over_the_cap_are_closed_unserved_and_counted() {
        use std::io::{Read, Write};
        let t = Arc::new(live());
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = AdminConfig {
            max_connections: 2,
            timeout: Duration::from_millis(1500),
        };
        let server = AdminServer::spawn(listener, t.clone(), cfg).unwrap();
        // Two idle clients take both slots.
        let idle: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        assert!(wait(|| t.admin_connections_open() == 2));
        let mut third = std::net::TcpStream::connect(addr).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = Vec::new();
        let _ = third.read_to_end(&mut buf);
        assert!(
            buf.is_empty(),
            "refused unserved: {:?}",
            String::from_utf8_lossy(&buf)
        );
        assert_eq!(t.admin_connections_rejected(), 1);
        // The idle ones are cut at the timeout; then requests are served again.
        drop(idle);
        assert!(wait(|| t.admin_connections_open() == 0));
        let mut ok = std::net::TcpStream::connect(addr).unwrap();
        ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        ok.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        server.stop();
    }

    #[test]
    fn metrics_and_unknown_paths() {
        let t = Telemetry::new(1, 1);
        let r = respond(&t, &Method::GET, "/metrics");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()[http::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        assert_eq!(
            respond(&t, &Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&t, &Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
