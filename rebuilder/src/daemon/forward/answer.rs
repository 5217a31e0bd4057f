//! Reading the upstream's answers on a keep-alive connection: the status and where each
//! response ends (RFC 9112 §6.3), so that the connection can carry the next request. The
//! head is parsed with `httparse`; bodies are read and discarded.
//!
//! - interim 1xx responses (`100 Continue` for a forwarded `Expect`) are skipped; a `101`
//!   ends the connection (the upstream switched protocols);
//! - no body: a HEAD request, 204, 304, a 2xx to CONNECT (a tunnel: the connection is not
//!   reused); else `Transfer-Encoding` ending in `chunked`, else `Content-Length`, else the
//!   body runs to the end of the connection;
//! - the connection is reused unless the response says `Connection: close` (or is HTTP/1.0
//!   without keep-alive), its body ran to the end, or it was a 101.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::engine::http::parse_chunk_size;

/// Largest response head or chunk-size line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Most response header fields.
const MAX_FIELDS: usize = 128;

/// How reading an answer failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum AnswerError {
    #[error("upstream closed the connection before answering")]
    Closed,
    #[error("malformed response from the upstream: {0}")]
    Malformed(&'static str),
    #[error("I/O error reading the upstream's answer: {0}")]
    Io(#[from] std::io::Error),
    #[error("no complete answer in time")]
    Timeout,
}

/// One answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Answer {
    pub(super) status: u16,
    /// The connection can carry the next request.
    pub(super) reusable: bool,
}

/// Bytes read from the connection and not consumed yet.
#[derive(Debug, Default)]
pub(super) struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
}

impl ReadBuf {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads more bytes; `Ok(false)` at the end of the connection.
    async fn fill<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut R,
        deadline: Instant,
    ) -> Result<bool, AnswerError> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // Into the spare capacity: nothing is zeroed first (a 16 KiB memset per read was 3 %
        // of the forwarding thread), and what was not read is not part of the buffer.
        self.buf.reserve(16 * 1024);
        let read = tokio::time::timeout_at(deadline.into(), io.read_buf(&mut self.buf)).await;
        match read {
            Ok(Ok(n)) => Ok(n > 0),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(AnswerError::Timeout),
        }
    }

    /// Whether bytes the upstream sent are waiting (none should be, between answers).
    pub(super) fn is_empty(&self) -> bool {
        self.data().is_empty()
    }
}

/// Framing of a response body.
enum Body {
    None,
    Length(u64),
    Chunked,
    ToEnd,
}

/// What the request an answer is for changes about its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Asked {
    /// HEAD: no body.
    pub(crate) head: bool,
    /// CONNECT: a 2xx opens a tunnel (no body, the connection is done).
    pub(crate) connect: bool,
}

/// Reads the next answer (skipping interim responses) and its body, before `deadline`.
pub(super) async fn read_answer<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    rb: &mut ReadBuf,
    asked: Asked,
    deadline: Instant,
) -> Result<Answer, AnswerError> {
    loop {
        let (status, body, mut reusable, head_len) = loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
            let mut resp = httparse::Response::new(&mut fields);
            match resp.parse(rb.data()) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let version = resp.version.unwrap_or(1);
                    let (body, reusable) = framing(status, version, resp.headers, asked);
                    break (status, body, reusable, n);
                }
                Ok(httparse::Status::Partial) => {
                    if rb.data().len() > MAX_LINE {
                        return Err(AnswerError::Malformed("response head too large"));
                    }
                    if !rb.fill(io, deadline).await? {
                        return Err(if rb.is_empty() {
                            AnswerError::Closed
                        } else {
                            AnswerError::Malformed("connection closed inside a response head")
                        });
                    }
                }
                Err(_) => return Err(AnswerError::Malformed("invalid response head")),
            }
        };
        rb.consume(head_len);
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        if status == 101 || (asked.connect && (200..300).contains(&status)) {
            reusable = false;
        }
        match body {
            Body::None => {}
            Body::Length(n) => skip(io, rb, n, deadline).await?,
            Body::Chunked => skip_chunked(io, rb, deadline).await?,
            Body::ToEnd => {
                reusable = false;
                while rb.fill(io, deadline).await? {
                    rb.consume(rb.data().len());
                }
                rb.consume(rb.data().len());
            }
        }
        return Ok(Answer { status, reusable });
    }
}

fn framing(
    status: u16,
    version: u8,
    fields: &[httparse::Header<'_>],
    asked: Asked,
) -> (Body, bool) {
    let mut close = false;
    let mut keep_alive = false;
    let mut chunked = None;
    let mut length = None;
    let tokens = |v: &[u8]| -> Vec<Vec<u8>> {
        v.split(|&b| b == b',')
            .map(|t| t.trim_ascii().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    };
    for f in fields {
        if f.name.eq_ignore_ascii_case("connection") {
            let t = tokens(f.value);
            close |= t.iter().any(|t| t == b"close");
            keep_alive |= t.iter().any(|t| t == b"keep-alive");
        } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = tokens(f.value).last().map(|t| t == b"chunked");
        } else if f.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(f.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
        }
    }
    let reusable = !close && (version >= 1 || keep_alive);
    let body = if asked.head
        || (asked.connect && (200..300).contains(&status))
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Body::None
    } else if let Some(c) = chunked {
        if c { Body::Chunked } else { Body::ToEnd }
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::ToEnd
    };
    (body, reusable)
}

async fn skip<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    rb: &mut ReadBuf,
    mut n: u64,
    deadline: Instant,
) -> Result<(), AnswerError> {
    loop {
        let have = (rb.data().len() as u64).min(n);
        rb.consume(have as usize);
        n -= have;
        if n == 0 {
            return Ok(());
        }
        if !rb.fill(io, deadline).await? {
            return Err(AnswerError::Malformed(
                "connection closed inside a response body",
            ));
        }
    }
}

/// The line at the start of the buffer (its LF included), reading more as needed.
async fn line<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    rb: &mut ReadBuf,
    deadline: Instant,
) -> Result<usize, AnswerError> {
    loop {
        if let Some(lf) = memchr::memchr(b'\n', rb.data()) {
            return Ok(lf + 1);
        }
        if rb.data().len() > MAX_LINE {
            return Err(AnswerError::Malformed("response chunk line too long"));
        }
        if !rb.fill(io, deadline).await? {
            return Err(AnswerError::Malformed(
                "connection closed inside a chunked body",
            ));
        }
    }
}

async fn skip_chunked<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    rb: &mut ReadBuf,
    deadline: Instant,
) -> Result<(), AnswerError> {
    loop {
        let n = line(io, rb, deadline).await?;
        let size = parse_chunk_size(&rb.data()[..n])
            .ok_or(AnswerError::Malformed("invalid chunk size in a response"))?;
        rb.consume(n);
        if size == 0 {
            // Trailer section up to the empty line.
            loop {
                let n = line(io, rb, deadline).await?;
                let empty = matches!(&rb.data()[..n], b"\n" | b"\r\n");
                rb.consume(n);
                if empty {
                    return Ok(());
                }
            }
        }
        skip(io, rb, size, deadline).await?;
        let n = line(io, rb, deadline).await?;
        if !matches!(&rb.data()[..n], b"\n" | b"\r\n") {
            return Err(AnswerError::Malformed(
                "chunk data not followed by its line end",
            ));
        }
        rb.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn answers(wire: &[u8], asked: &[Asked]) -> Vec<Result<Answer, String>> {
        let (mut client, mut server) = tokio::io::duplex(64);
        let wire = wire.to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // Small writes: every boundary is crossed.
            for c in wire.chunks(7) {
                if server.write_all(c).await.is_err() {
                    return;
                }
            }
        });
        let mut rb = ReadBuf::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        for &h in asked {
            let a = read_answer(&mut client, &mut rb, h, deadline).await;
            let stop = a.is_err();
            out.push(a.map_err(|e| e.to_string()));
            if stop {
                break;
            }
        }
        out
    }

    fn ok(status: u16, reusable: bool) -> Result<Answer, String> {
        Ok(Answer { status, reusable })
    }

    const GET: Asked = Asked {
        head: false,
        connect: false,
    };
    const HEAD: Asked = Asked {
        head: true,
        connect: false,
    };
    const CONNECT: Asked = Asked {
        head: false,
        connect: true,
    };

    #[tokio::test]
    async fn pipelined_answers_of_every_framing_are_delimited() {
        let wire =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n\
HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno";
        let got = answers(wire, &[GET, GET, GET, HEAD, GET]).await;
        assert_eq!(
            got,
            vec![
                ok(200, true),
                ok(201, true),
                ok(204, true),
                ok(200, true),
                ok(503, false),
            ]
        );
    }

    #[tokio::test]
    async fn bodies_to_the_end_upgrades_and_old_versions_end_the_connection() {
        let got = answers(b"HTTP/1.1 200 OK\r\n\r\nall of it", &[GET]).await;
        assert_eq!(got, vec![ok(200, false)]);
        let got = answers(b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n", &[GET]).await;
        assert_eq!(got, vec![ok(101, false)]);
        let got = answers(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", &[GET]).await;
        assert_eq!(got, vec![ok(200, false)]);
        let got = answers(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            &[GET],
        )
        .await;
        assert_eq!(got, vec![ok(200, true)]);
    }

    #[tokio::test]
    async fn a_tunnel_opened_by_connect_has_no_body_and_ends_the_connection() {
        let got = answers(b"HTTP/1.1 200 Connection Established\r\n\r\n", &[CONNECT]).await;
        assert_eq!(got, vec![ok(200, false)]);
        let got = answers(
            b"HTTP/1.1 405 Not Allowed\r\nContent-Length: 0\r\n\r\n",
            &[CONNECT],
        )
        .await;
        assert_eq!(got, vec![ok(405, true)]);
    }

    #[tokio::test]
    async fn a_closed_or_broken_answer_is_an_error() {
        let got = answers(b"", &[GET]).await;
        assert!(
            matches!(&got[0], Err(e) if e.contains("before answering")),
            "{got:?}"
        );
        let got = answers(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", &[GET]).await;
        assert!(got[0].is_err());
        let got = answers(b"NOT HTTP\r\n\r\n", &[GET]).await;
        assert!(got[0].is_err());
        let got = answers(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            &[GET],
        )
        .await;
        assert!(got[0].is_err(), "an empty chunk-size line is no size");
    }
}
