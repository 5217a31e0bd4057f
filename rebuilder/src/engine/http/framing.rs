//! Message framing (RFC 9112 §6, §7): where a head ends, how long its body is
//! (`Transfer-Encoding` / `Content-Length`), and the chunked coding — chunk-size lines, chunk
//! data ends and the trailer section, whose fields are appended to the request's headers.

use memchr::memchr;

use super::state::{Ctx, Parser, ParserState};
use crate::engine::stats::DropReason;

const MAX_CHUNK_LINE: usize = 1024;

/// Length of the head in `prev ++ input` counted in `input` bytes, if its end (an empty
/// line) is there. `prev` holds the last (up to 2) bytes already buffered.
pub(super) fn head_end(prev: &[u8], input: &[u8]) -> Option<usize> {
    let at = |i: usize| -> Option<u8> {
        if i < prev.len() {
            Some(prev[i])
        } else {
            input.get(i - prev.len()).copied()
        }
    };
    let end_after_lf = |i: usize| -> Option<usize> {
        match at(i + 1) {
            Some(b'\n') => Some(i + 2),
            Some(b'\r') if at(i + 2) == Some(b'\n') => Some(i + 3),
            _ => None,
        }
    };
    for i in 0..prev.len() {
        if prev[i] == b'\n'
            && let Some(e) = end_after_lf(i)
        {
            return Some(e - prev.len());
        }
    }
    for lf in memchr::memchr_iter(b'\n', input) {
        if let Some(e) = end_after_lf(lf + prev.len()) {
            return Some(e - prev.len());
        }
    }
    None
}

pub(super) fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if end == 0 || end > 15 {
        return None;
    }
    let rest = &line[end..];
    let rest_ok = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .is_none_or(|p| rest[p] == b';');
    if !rest_ok {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..end]).ok()?, 16).ok()
}

/// Body framing from the header fields.
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
}

pub(super) fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, ()> {
    let mut te_last: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if let Some(last) = h
                .value
                .split(|&b| b == b',')
                .map(|c| c.trim_ascii())
                .rfind(|c| !c.is_empty())
            {
                te_last = Some(last);
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for v in h.value.split(|&b| b == b',') {
                let v = v.trim_ascii();
                if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                    return Err(());
                }
                let n: u64 = std::str::from_utf8(v)
                    .map_err(|_| ())?
                    .parse()
                    .map_err(|_| ())?;
                if length.is_some_and(|l| l != n) {
                    return Err(());
                }
                length = Some(n);
            }
        }
    }
    match te_last {
        Some(c) if c.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
        Some(_) => Err(()),
        None => Ok(length.map_or(Framing::None, Framing::Length)),
    }
}

pub(super) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

impl Parser {
    pub(super) fn chunk_size<'i>(&mut self, input: &'i [u8], ctx: &mut Ctx<'_>) -> &'i [u8] {
        let (take, complete) = match memchr(b'\n', input) {
            Some(j) => (j + 1, true),
            None => (input.len(), false),
        };
        if self.buf.len() + take > MAX_CHUNK_LINE {
            self.drop_message(
                DropReason::BadRequest,
                ParserState::Sync { line_start: false },
                ctx,
            );
            return &input[take..];
        }
        if !complete && ctx.budget.used + take > ctx.budget.limit {
            self.drop_message(
                DropReason::OverBudget,
                ParserState::Sync { line_start: false },
                ctx,
            );
            return &input[take..];
        }
        if !complete {
            self.buf.extend_from_slice(input);
            self.account(ctx.budget);
            return &[];
        }
        let size = if self.buf.is_empty() {
            parse_chunk_size(&input[..take])
        } else {
            self.buf.extend_from_slice(&input[..take]);
            parse_chunk_size(&self.buf)
        };
        self.buf.clear();
        match size {
            None => self.drop_message(
                DropReason::BadRequest,
                ParserState::Sync { line_start: true },
                ctx,
            ),
            Some(0) => self.state = ParserState::Trailers { line_start: 0 },
            Some(n) => self.state = ParserState::ChunkData { remaining: n },
        }
        self.account(ctx.budget);
        &input[take..]
    }

    pub(super) fn trailers<'i>(
        &mut self,
        line_start: usize,
        input: &'i [u8],
        ctx: &mut Ctx<'_>,
    ) -> &'i [u8] {
        let (take, complete) = match memchr(b'\n', input) {
            Some(j) => (j + 1, true),
            None => (input.len(), false),
        };
        if !self.may_buffer(take, ctx.limits.max_header_bytes, false, ctx) {
            return &input[take..];
        }
        self.buf.extend_from_slice(&input[..take]);
        self.account(ctx.budget);
        if !complete {
            return &[];
        }
        let line = &self.buf[line_start..];
        if line != b"\r\n" && line != b"\n" {
            self.state = ParserState::Trailers {
                line_start: self.buf.len(),
            };
            return &input[take..];
        }
        if line_start > 0 {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            match httparse::parse_headers(&self.buf, &mut fields) {
                Ok(httparse::Status::Complete((_, parsed))) => {
                    if let Some(p) = self.pending.as_mut() {
                        p.req
                            .headers
                            .extend(parsed.iter().map(|h| (h.name.to_owned(), h.value.to_vec())));
                    }
                }
                Err(httparse::Error::TooManyHeaders) => {
                    self.drop_message(
                        DropReason::TooManyHeaders,
                        ParserState::Sync { line_start: true },
                        ctx,
                    );
                    return &input[take..];
                }
                _ => {
                    self.drop_message(
                        DropReason::BadRequest,
                        ParserState::Sync { line_start: true },
                        ctx,
                    );
                    return &input[take..];
                }
            }
        }
        self.buf.clear();
        self.emit(ctx);
        self.account(ctx.budget);
        &input[take..]
    }
}
