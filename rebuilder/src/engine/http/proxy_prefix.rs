//! A PROXY protocol header (v1 line or v2 binary, [`crate::engine::proxy`]) at the start of a
//! stream whose SYN was seen: buffered until recognised, stripped, its source kept as the
//! requests' client when the stream's sender is a trusted peer (`proxy_protocol_from`; from
//! any other peer the header is stripped, counted as `proxy_header_untrusted` and the TCP
//! peer stays the client: a direct client cannot name another address); a malformed one is
//! counted and the stream goes on as the policy says (see the module documentation of
//! [`super`]).

use super::state::{Ctx, Parser, ParserState};
use crate::engine::proxy;
use crate::engine::stats::DropReason;

impl Parser {
    /// The first bytes of a stream that may be a PROXY header: buffered (at most
    /// [`proxy::MAX_PREFIX`] bytes) until [`proxy::parse`] decides, then the header is
    /// stripped and the bytes after it are parsed from the start state.
    pub(super) fn proxy_header<'i>(&mut self, input: &'i [u8], ctx: &mut Ctx<'_>) -> &'i [u8] {
        let take = input.len().min(proxy::MAX_PREFIX - self.buf.len());
        if !self.may_grow(take, ctx) {
            // The budget cannot hold the stream's first bytes: with none held, the stream is
            // parsed from its start state without the PROXY check (a header there is then
            // parsed as a request would be); bytes already held are lost (`over_budget`).
            if self.buf.is_empty() {
                self.state = ParserState::Head;
            } else {
                let resync = ParserState::Sync { line_start: false };
                self.drop_message(DropReason::OverBudget, resync, ctx);
            }
            return input;
        }
        self.buf.extend_from_slice(&input[..take]);
        let rest = &input[take..];
        let (span, next) = match proxy::parse(&self.buf) {
            proxy::Parsed::Incomplete => {
                self.account(ctx.budget);
                return rest;
            }
            proxy::Parsed::NotProxy => (
                proxy::Span {
                    consumed: 0,
                    skip: 0,
                },
                ParserState::Head,
            ),
            proxy::Parsed::Header(h) => {
                if ctx
                    .limits
                    .proxy_protocol_from
                    .contains(ctx.meta.client().ip())
                {
                    ctx.stats.proxy_headers += 1;
                    self.proxied = h.source.map(Box::new);
                } else {
                    ctx.stats.count_drop(DropReason::ProxyHeaderUntrusted);
                }
                (h.span, ParserState::Head)
            }
            proxy::Parsed::Malformed(Some(span)) => {
                ctx.stats.count_drop(DropReason::ProxyHeaderMalformed);
                (span, ParserState::Head)
            }
            proxy::Parsed::Malformed(None) => {
                ctx.stats.count_drop(DropReason::ProxyHeaderMalformed);
                // Nothing marks the end of the header: only clear request lines count.
                self.first_message = false;
                (
                    proxy::Span {
                        consumed: 0,
                        skip: 0,
                    },
                    ParserState::Sync { line_start: false },
                )
            }
        };
        let after = self.buf.split_off(span.consumed);
        self.buf.clear();
        self.state = if span.skip > 0 {
            // v2 TLVs: skipped as they stream past; the start state follows.
            ParserState::Body {
                remaining: span.skip,
                discard: true,
            }
        } else {
            next
        };
        self.account(ctx.budget);
        if !after.is_empty() {
            self.data(self.msg_ts, &after, ctx);
        }
        rest
    }
}
