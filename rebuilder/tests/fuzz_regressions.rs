//! Inputs found by the fuzz targets (`scripts/fuzz.sh`), kept as regression tests of the
//! normal suite. Each names the target and the property that broke.

use etherparse::PacketBuilder;
use rebuilder::{Engine, EngineConfig, EngineStats, HttpRequest};

/// Feeds `pieces` as consecutive segments of one connection (SYN first) and returns what came
/// out.
fn run(config: EngineConfig, pieces: &[&[u8]]) -> (Vec<HttpRequest>, EngineStats) {
    let mut engine = Engine::new(config);
    let mut out = Vec::new();
    let mut seq = 77u32;
    let mut now = 1_700_000_000_000_000u64;
    let mut send = |engine: &mut Engine, seq: u32, syn: bool, p: &[u8]| {
        now += 1;
        let mut tcp = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, seq, 65535);
        tcp = if syn { tcp.syn() } else { tcp.ack(1) };
        let mut frame = Vec::new();
        tcp.write(&mut frame, p).unwrap();
        let d = rebuilder::engine::encap::vxlan::encapsulate(5, &frame);
        engine.on_vxlan_payload(now, &d, &mut out);
    };
    send(&mut engine, seq, true, b"");
    seq += 1;
    for p in pieces {
        send(&mut engine, seq, false, p);
        seq += p.len() as u32;
    }
    engine.finish(&mut out);
    (out, engine.stats().clone())
}

/// http_split: at stream start, "H" then a second piece that makes the head exceed
/// `max_header_bytes` was dropped as `head_too_large` (and the stream kept being scanned for
/// requests), while the same bytes in one piece mark the stream opaque. The verdict is now
/// the same whatever the split.
#[test]
fn the_opaque_verdict_at_stream_start_does_not_depend_on_segmentation() {
    let config = || EngineConfig {
        max_header_bytes: 128,
        ..EngineConfig::default()
    };
    let mut wire = b"HS______\xff\xff\xff\xff".to_vec();
    wire.extend(std::iter::repeat_n(0xdf, 200));
    let (out1, whole) = run(config(), &[&wire]);
    let (out2, split) = run(config(), &[&wire[..1], &wire[1..]]);
    assert!(out1.is_empty() && out2.is_empty());
    assert_eq!(whole.opaque_flows, 1);
    assert_eq!(split.opaque_flows, 1);
    assert_eq!(split.total_drops(), 0, "{split:?}");
    assert_eq!(whole.total_drops(), 0, "{whole:?}");
}
