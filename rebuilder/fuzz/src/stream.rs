//! The `reassembly_segments` target: segments in any order, overlap and loss into one stream.

use super::*;

/// Input of the reassembly target.
#[derive(Arbitrary, Debug, Clone)]
pub struct StreamInput {
    pub tiny_caps: bool,
    pub isn: u32,
    pub ops: Vec<StreamOp>,
}

/// One reassembly event.
#[derive(Arbitrary, Debug, Clone)]
pub enum StreamOp {
    Segment {
        /// Offset from the ISN (sequence = ISN + offset, wrapping).
        offset: u16,
        /// Far outside any window instead.
        wild: Option<u32>,
        len: u16,
        /// Bytes cut off the end (PacketLength).
        missing: u8,
        syn: bool,
        fin: bool,
        /// Carries the alternative content (a conflicting overlap).
        conflicting: bool,
    },
    Timer(u16),
    Close,
}

/// The true content at sequence number `s`, and the conflicting alternative.
fn content(s: u32, conflicting: bool) -> u8 {
    let b = (s.wrapping_mul(2_654_435_761) >> 24) as u8;
    if conflicting { !b } else { b }
}

struct Recorder {
    budget: Budget,
    /// Sequence number of the next byte the sink expects (known once the start is known).
    cursor: Option<u32>,
    ends: u32,
    delivered: u64,
    gap_bytes: u64,
    /// Sequence ranges written with conflicting content.
    conflicts: Vec<(u32, u32)>,
    /// The first broken invariant seen by the sink.
    err: Option<String>,
}

impl Sink for Recorder {
    fn data(&mut self, at: At, bytes: &[u8]) {
        assert_eq!(self.ends, 0, "data after end");
        let c = self.cursor.expect("start known before data");
        assert_eq!(at.seq, c, "data delivered at its sequence number");
        for (i, b) in bytes.iter().enumerate() {
            let s = c.wrapping_add(i as u32);
            if *b == content(s, false) {
                continue;
            }
            let conflicted = self
                .conflicts
                .iter()
                .any(|&(a, e)| seq_diff(s, a) >= 0 && seq_diff(e, s) > 0);
            if !(conflicted && *b == content(s, true)) {
                self.err = Some(format!("foreign byte at seq {s}"));
            }
        }
        self.cursor = Some(c.wrapping_add(bytes.len() as u32));
        self.delivered += bytes.len() as u64;
    }
    fn gap(&mut self, len: u64) {
        assert_eq!(self.ends, 0, "gap after end");
        assert!(len > 0 && len < 1 << 32, "gap of {len}");
        let c = self.cursor.expect("start known before a gap");
        self.cursor = Some(c.wrapping_add(len as u32));
        self.gap_bytes += len;
    }
    fn end(&mut self) {
        self.ends += 1;
        assert_eq!(self.ends, 1, "end delivered twice");
    }
    fn budget(&mut self) -> &mut Budget {
        &mut self.budget
    }
}

/// Any sequence of segments: only true (or conflicting-overlap) bytes delivered, each
/// position at most once and in order, `end` at most once (exactly once after close), the
/// budget always equal to the buffered bytes and back to 0 at the end; with no conflicting
/// segment, the bytes delivered are exactly the true content.
pub fn run_stream(input: &StreamInput) {
    let limits = if input.tiny_caps {
        StreamLimits {
            max_ooo_bytes: 300,
            max_ooo_segments: 4,
            gap_skip_bytes: 200,
            gap_timeout_us: 1_000,
            gap_timeout_after_fin_us: 100,
            acked_hole_grace_us: 10,
        }
    } else {
        StreamLimits {
            max_ooo_bytes: 256 * 1024,
            max_ooo_segments: 128,
            gap_skip_bytes: 64 * 1024,
            gap_timeout_us: 500_000,
            gap_timeout_after_fin_us: 50_000,
            acked_hole_grace_us: 20_000,
        }
    };
    let mut rec = Recorder {
        budget: Budget::new(if input.tiny_caps { 500 } else { 32 << 20 }),
        cursor: None,
        ends: 0,
        delivered: 0,
        gap_bytes: 0,
        conflicts: Vec::new(),
        err: None,
    };
    let mut stream = Stream::new();
    let mut now = 1u64;
    let mut payload = Vec::new();
    for op in &input.ops {
        now += 1;
        match op {
            StreamOp::Segment {
                offset,
                wild,
                len,
                missing,
                syn,
                fin,
                conflicting,
            } => {
                let seq = wild.unwrap_or(input.isn.wrapping_add(u32::from(*offset)));
                let len = usize::from(*len) % 3000;
                let missing = u32::from(*missing).min(len as u32);
                let start = if *syn { seq.wrapping_add(1) } else { seq };
                payload.clear();
                payload.extend(
                    (0..len - missing as usize)
                        .map(|i| content(start.wrapping_add(i as u32), *conflicting)),
                );
                if *conflicting {
                    rec.conflicts.push((start, start.wrapping_add(len as u32)));
                }
                let seg = Segment {
                    ts_us: now,
                    seq,
                    ack: None,
                    syn: *syn,
                    fin: *fin,
                    payload: &payload,
                    missing,
                };
                if stream.is_new_connection(&seg) {
                    // The engine starts a new stream here; this harness stops.
                    break;
                }
                if rec.cursor.is_none() && (*syn || len > 0) {
                    rec.cursor = Some(start);
                }
                let before = stream.buffered_bytes();
                let pushed = stream.push(seg, &limits, &mut rec);
                if pushed == Pushed::OverBudget {
                    assert_eq!(
                        stream.buffered_bytes(),
                        before,
                        "an over-budget segment is dropped"
                    );
                }
            }
            StreamOp::Timer(dt) => {
                now += u64::from(*dt);
                stream.on_timer(now, &limits, &mut rec);
            }
            StreamOp::Close => stream.close(&mut rec),
        }
        assert_eq!(
            rec.budget.used,
            stream.buffered_bytes(),
            "budget == buffered bytes"
        );
        assert!(stream.buffered_bytes() <= limits.max_ooo_bytes);
        if let Some(e) = &rec.err {
            panic!("{e}");
        }
    }
    stream.close(&mut rec);
    assert_eq!(rec.ends, 1, "end delivered exactly once");
    assert_eq!(rec.budget.used, 0, "close releases the buffer");
    if let Some(e) = &rec.err {
        panic!("{e}");
    }
}
