//! A VXLAN datagram counter: a stand-in receiver on UDP/4789 for checking what the kernel
//! mirror sends (datagrams per VNI), with no rebuilder involved.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rebuilder::engine::encap::vxlan::VxlanPacket;
use serde::{Deserialize, Serialize};

use crate::netns;

/// What arrived so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkCounts {
    /// Valid VXLAN datagrams.
    pub datagrams: u64,
    /// Of those, per VNI.
    pub per_vni: BTreeMap<u32, u64>,
    /// Datagrams that are not VXLAN.
    pub other: u64,
}

/// A running counter; stops on drop.
#[derive(Debug)]
pub struct UdpSink {
    pub addr: SocketAddr,
    counts: Arc<Mutex<SinkCounts>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl UdpSink {
    /// Listens on `listen` (inside `netns` when given).
    pub fn start(netns: Option<&str>, listen: SocketAddr) -> std::io::Result<UdpSink> {
        let counts = Arc::new(Mutex::new(SinkCounts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (c, s) = (counts.clone(), stop.clone());
        let thread = netns::spawn_in(netns, "udp-sink", move || {
            let socket = match UdpSocket::bind(listen).and_then(|sock| {
                sock.set_read_timeout(Some(Duration::from_millis(100)))?;
                Ok(sock)
            }) {
                Ok(sock) => {
                    let _ = bound_tx.send(sock.local_addr());
                    sock
                }
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                    return;
                }
            };
            let mut buf = vec![0u8; 65536];
            while !s.load(SeqCst) {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let mut counts = c.lock().unwrap_or_else(|e| e.into_inner());
                match VxlanPacket::parse(&buf[..n]) {
                    Ok(p) => {
                        counts.datagrams += 1;
                        *counts.per_vni.entry(p.vni).or_default() += 1;
                    }
                    Err(_) => counts.other += 1,
                }
            }
        })?;
        let addr = bound_rx
            .recv()
            .map_err(|_| std::io::Error::other("the sink thread ended before binding"))??;
        Ok(UdpSink {
            addr,
            counts,
            stop,
            thread: Some(thread),
        })
    }

    pub fn counts(&self) -> SinkCounts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
