//! Traffic for a running rebuilder: VXLAN (or GWLB GENEVE) datagrams from generated captures,
//! sent over loopback UDP from several sockets (the mirror spreads flows by outer source port),
//! paced.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rebuilder::engine::encap::Encap;
use rebuilder::engine::packet::{Parsed, parse_ethernet};
use rebuilder::offline::synth::{SynthConfig, generate};

/// The VXLAN payload (UDP payload) of an outer Ethernet/IP/UDP frame to port 4789, with the
/// outer UDP source port.
pub fn vxlan_payload(frame: &[u8]) -> Option<(u16, &[u8])> {
    tunnel_payload(frame)
        .filter(|(encap, ..)| *encap == Encap::Vxlan)
        .map(|(_, sport, payload)| (sport, payload))
}

/// The tunnel payload (UDP payload to port 4789 or 6081) of an outer Ethernet/IP/UDP frame,
/// with its encapsulation and the outer UDP source port.
pub fn tunnel_payload(frame: &[u8]) -> Option<(Encap, u16, &[u8])> {
    match parse_ethernet(frame, true).ok()? {
        Parsed::Tunnel(t) => {
            let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
            match p.transport? {
                etherparse::TransportSlice::Udp(u) => Some((t.encap, u.source_port(), t.payload)),
                _ => None,
            }
        }
        Parsed::Tcp(_) => None,
    }
}

/// Synthetic clean traffic: `connections` keep-alive connections (16 open at a time),
/// responses and ACKs included. Returns the datagrams (with their outer source port) and
/// how many requests they carry.
pub fn synth_payloads(
    seed: u64,
    connections: usize,
    max_body: usize,
) -> (Vec<(u16, Vec<u8>)>, usize) {
    let cfg = SynthConfig {
        seed,
        connections,
        concurrency: 16,
        min_body: 16,
        max_body,
        ..Default::default()
    };
    let (frames, truth) = generate(cfg);
    let expected = truth.iter().filter(|t| t.expected).count();
    let payloads = frames
        .iter()
        .filter_map(|f| vxlan_payload(&f.data).map(|(p, d)| (p, d.to_vec())))
        .collect();
    (payloads, expected)
}

/// The tunnel datagrams (UDP payloads, with their encapsulation and outer source port) of a
/// generated capture, and how many requests it carries (expected ones).
pub fn capture_payloads(cfg: SynthConfig) -> (Vec<(Encap, u16, Vec<u8>)>, usize) {
    let (frames, truth) = generate(cfg);
    let expected = truth.iter().filter(|t| t.expected).count();
    let payloads = frames
        .iter()
        .filter_map(|f| tunnel_payload(&f.data).map(|(e, p, d)| (e, p, d.to_vec())))
        .collect();
    (payloads, expected)
}

/// Sends datagrams through a set of sockets (chosen by outer source port, as the mirror
/// spreads flows).
#[derive(Debug)]
pub struct Sender {
    socks: Vec<UdpSocket>,
    to: SocketAddr,
}

impl Sender {
    pub fn new(to: SocketAddr, sockets: usize) -> std::io::Result<Sender> {
        let any: SocketAddr = if to.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        }
        .parse()
        .expect("address literal");
        let socks = (0..sockets.max(1))
            .map(|_| UdpSocket::bind(any))
            .collect::<std::io::Result<_>>()?;
        Ok(Sender { socks, to })
    }

    /// The sockets (for batch senders).
    pub fn sockets(&self) -> &[UdpSocket] {
        &self.socks
    }

    /// Sends one datagram from the socket of `sport`. Loopback UDP can report ENOBUFS under
    /// pressure: retried a little (bounded), then given up.
    pub fn send(&self, sport: u16, payload: &[u8]) -> bool {
        let s = &self.socks[usize::from(sport) % self.socks.len()];
        for _ in 0..100 {
            if s.send_to(payload, self.to).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        false
    }
}

/// Paces items at `pps` per second (call `wait(i)` before item `i`; 0 = no pacing).
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    pps: u64,
}

impl Pacer {
    pub fn new(pps: u64) -> Pacer {
        Pacer {
            start: Instant::now(),
            pps,
        }
    }

    pub fn wait(&self, i: u64) {
        if self.pps == 0 {
            return;
        }
        let due = Duration::from_nanos(i * 1_000_000_000 / self.pps);
        let el = self.start.elapsed();
        if due > el + Duration::from_micros(200) {
            std::thread::sleep(due - el);
        }
    }
}
