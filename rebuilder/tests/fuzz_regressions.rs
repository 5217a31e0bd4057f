//! Inputs found by the fuzz targets (`scripts/fuzz.sh`), kept as regression tests of the
//! normal suite. Each names the target and the property that broke.

use rebuilder::{DropReason, Engine, EngineConfig, EngineStats, HttpRequest};
use rebuilder_testkit::frames::TcpConn;

/// Feeds `pieces` as consecutive segments of one connection (SYN first) and returns what came
/// out.
fn run(config: EngineConfig, pieces: &[&[u8]]) -> (Vec<HttpRequest>, EngineStats) {
    let mut engine = Engine::new(config);
    let mut out = Vec::new();
    let mut c = TcpConn::new(5, "10.0.0.1:40000", "10.0.0.2:80", 77);
    let mut datagrams = vec![c.syn()];
    datagrams.extend(pieces.iter().map(|p| c.send(p)));
    for (i, d) in datagrams.iter().enumerate() {
        engine.on_vxlan_payload(1_700_000_000_000_000 + i as u64, d, &mut out);
    }
    engine.finish(&mut out);
    (out, engine.stats().clone())
}

/// http_split: at stream start, "H" then a second piece that makes the head exceed
/// `max_header_bytes` was dropped as `head_too_large` (and the stream kept being scanned for
/// requests), while the same bytes in one piece mark the stream opaque. The verdict is now
/// the same whatever the split: these bytes (no control byte: no evidence of a binary
/// protocol) are no request line, counted once as `bad_request`, and the stream is searched
/// for requests.
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
    let verdict = |s: &EngineStats| {
        (
            s.opaque_flows,
            s.drops(DropReason::BadRequest),
            s.total_drops(),
        )
    };
    assert_eq!(verdict(&whole), verdict(&split));
    assert_eq!(whole.opaque_flows, 0);
    assert_eq!(whole.drops(DropReason::BadRequest), 1, "{whole:?}");
    assert_eq!(whole.total_drops(), 1, "{whole:?}");
    // With a control byte in the first bytes (binary evidence) the stream is opaque, whatever
    // the split.
    let binary = b"HS\x01_____ HTTP/1.1\r\n\r\n";
    let (_, whole) = run(config(), &[binary]);
    let (_, split) = run(config(), &[&binary[..1], &binary[1..]]);
    assert_eq!(verdict(&whole), verdict(&split));
    assert_eq!(whole.opaque_flows, 1);
}

/// http_split: a first line no origin reads (`E` then a control byte where the target
/// starts) followed by a head end past `max_header_bytes` was `head_too_large` in one piece
/// (the cap was checked before the line) and `bad_request` when cut after 32 bytes (the line
/// was judged on its first 16 bytes). The first line is now judged first, at the same point
/// whatever the segmentation.
#[test]
fn a_refused_first_line_is_refused_whatever_the_head_size_and_the_segmentation() {
    let config = || EngineConfig {
        max_header_bytes: 128,
        ..EngineConfig::default()
    };
    let mut wire = b"E ".to_vec();
    wire.extend(std::iter::repeat_n(0x15, 150));
    wire.extend_from_slice(b"x\n\n");
    let (_, whole) = run(config(), &[&wire]);
    let (_, split) = run(config(), &[&wire[..32], &wire[32..]]);
    let (_, tiny) = run(config(), &wire.chunks(5).collect::<Vec<_>>());
    for s in [&whole, &split, &tiny] {
        assert_eq!(s.drops(DropReason::BadRequest), 1, "{s:?}");
        assert_eq!(s.drops(DropReason::HeadTooLarge), 0, "{s:?}");
    }
}
