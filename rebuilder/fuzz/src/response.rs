//! The `http_response` target: a server stream answering the requests it was asked, cut anywhere.

use super::*;

/// Input of the response-parser target: a server stream (whole, then split and with gaps).
#[derive(Arbitrary, Debug, Clone)]
pub struct ResponseInput {
    pub at_start: bool,
    pub small_caps: bool,
    /// Methods of the requests answered, in order (`true`: HEAD).
    pub heads: Vec<bool>,
    pub cuts: Vec<u16>,
    pub gaps: Vec<(u16, u16)>,
    pub wire: Vec<u8>,
}

/// The pairing side of the response target: attributes every response, records them, and
/// checks that each attributed response is told complete or lost exactly once.
struct Answers {
    heads: Vec<bool>,
    attributed: u64,
    told: u64,
    complete: Vec<HttpResponse>,
    budget: Budget,
    stats: EngineStats,
    max_body: usize,
    /// Bodies and heads kept.
    keep: bool,
}

impl Answering for Answers {
    fn head(&mut self, _at: At) -> Option<Asked> {
        assert_eq!(
            self.attributed, self.told,
            "a head before the last one was told"
        );
        self.attributed += 1;
        let head = if self.heads.is_empty() {
            false
        } else {
            self.heads.remove(0)
        };
        Some(Asked {
            head,
            ..Asked::default()
        })
    }
    fn complete(&mut self, response: Box<HttpResponse>) {
        self.told += 1;
        assert!(response.body.len() <= self.max_body, "body over the cap");
        assert!(response.body.len() as u64 <= response.body_len);
        if self.keep {
            assert_eq!(
                response.body_truncated,
                (response.body.len() as u64) < response.body_len
            );
        } else {
            assert!(response.body.is_empty(), "a body kept though not asked");
            assert!(
                response.headers.is_empty() && response.reason.is_empty(),
                "a head kept though not asked"
            );
            assert_eq!(
                response.body_truncated,
                response.body_len > self.max_body as u64
            );
        }
        self.complete.push(*response);
    }
    fn lost(&mut self, _reason: ResponseMissing) {
        self.told += 1;
    }
    fn desync(&mut self, _reason: ResponseMissing) {}
    fn switched(&mut self) {}
    fn ended(&mut self, _reason: ResponseMissing) {}
    fn budget(&mut self) -> &mut Budget {
        &mut self.budget
    }
    fn stats(&mut self) -> &mut EngineStats {
        &mut self.stats
    }
}

struct ResponseRun {
    parser: ResponseParser,
    answers: Answers,
    limits: ResponseLimits,
    seq: u32,
}

impl ResponseRun {
    fn new(input: &ResponseInput, keep: bool) -> ResponseRun {
        let (limits, budget) = if input.small_caps {
            (
                ResponseLimits {
                    max_header_bytes: 128,
                    max_headers: 6,
                    max_body_bytes: 16,
                    keep_bodies: keep,
                    keep_heads: keep,
                },
                // Tight, with room for a head read past its cap (1,280 bytes held).
                2048,
            )
        } else {
            (
                ResponseLimits {
                    max_header_bytes: 64 * 1024,
                    max_headers: 128,
                    max_body_bytes: 1 << 20,
                    keep_bodies: keep,
                    keep_heads: keep,
                },
                1 << 22,
            )
        };
        ResponseRun {
            parser: ResponseParser::new(input.at_start),
            answers: Answers {
                heads: input.heads.clone(),
                attributed: 0,
                told: 0,
                complete: Vec::new(),
                budget: Budget::new(budget),
                stats: EngineStats::default(),
                max_body: limits.max_body_bytes,
                keep,
            },
            limits,
            seq: 7,
        }
    }
    fn check(&self) {
        assert_eq!(
            self.answers.budget.used,
            self.parser.held(),
            "held is charged"
        );
        assert!(
            self.answers.budget.used <= self.answers.budget.limit,
            "over the budget"
        );
    }
    fn data(&mut self, bytes: &[u8]) {
        let at = At {
            ts_us: 1,
            seq: self.seq,
            ack: Some(1),
        };
        self.seq = self.seq.wrapping_add(bytes.len() as u32);
        let mut ctx = RespCtx {
            limits: &self.limits,
            answering: &mut self.answers,
        };
        self.parser.data(at, bytes, &mut ctx);
        self.check();
    }
    fn gap(&mut self, len: u64) {
        self.seq = self.seq.wrapping_add(len as u32);
        let mut ctx = RespCtx {
            limits: &self.limits,
            answering: &mut self.answers,
        };
        self.parser.gap(len, &mut ctx);
        self.check();
    }
    fn end(&mut self) {
        let mut ctx = RespCtx {
            limits: &self.limits,
            answering: &mut self.answers,
        };
        self.parser
            .end(true, ResponseMissing::ConnectionClosed, &mut ctx);
        assert_eq!(self.answers.budget.used, 0, "the end returns every buffer");
        assert_eq!(
            self.answers.attributed, self.answers.told,
            "every response told once"
        );
    }
}

/// Whole stream vs. the same stream split anywhere: identical responses and counters; then
/// with gaps: nothing panics, accounting stays exact, every response is told once.
pub fn run_response(input: &ResponseInput) {
    let wire = &input.wire;
    let mut whole = ResponseRun::new(input, true);
    whole.data(wire);
    whole.end();
    let points = cut_points(&input.cuts, wire.len());
    let mut split = ResponseRun::new(input, true);
    for w in points.windows(2) {
        split.data(&wire[w[0]..w[1]]);
    }
    split.end();
    if !input.small_caps {
        // (Under a tight budget, how much of a body fits depends on how it grew.)
        assert_eq!(
            split.answers.complete, whole.answers.complete,
            "split points change the responses"
        );
        assert_eq!(
            split.answers.stats, whole.answers.stats,
            "split points change the counters"
        );
    }

    // Bodies measured and heads parsed, neither kept: the same responses but for the body
    // bytes, the reason and the fields; the same counters.
    let mut measured = ResponseRun::new(input, false);
    measured.data(wire);
    measured.end();
    if !input.small_caps {
        let without_kept_parts = |run: &ResponseRun| {
            let mut v = run.answers.complete.clone();
            v.iter_mut().for_each(|r| {
                r.body.clear();
                r.headers.clear();
                r.reason.clear();
            });
            v
        };
        assert_eq!(
            measured.answers.complete,
            without_kept_parts(&whole),
            "keeping bodies and heads changes more than their bytes"
        );
        assert_eq!(
            measured.answers.stats, whole.answers.stats,
            "keeping bodies and heads changes the counters"
        );
    }

    let mut gapped = ResponseRun::new(input, true);
    let mut at = 0usize;
    for &(pos, len) in &input.gaps {
        let pos = (usize::from(pos) % (wire.len() + 1)).max(at);
        gapped.data(&wire[at..pos]);
        gapped.gap(u64::from(len) + 1);
        at = (pos + usize::from(len) + 1).min(wire.len());
    }
    gapped.data(&wire[at..]);
    gapped.end();
}
