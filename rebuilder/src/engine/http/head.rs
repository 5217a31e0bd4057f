//! Reading a complete request head (request line and header section) the way the common
//! origins do.
//!
//! Two paths give the same result:
//! - **fast**: `httparse` with `allow_multiple_spaces_in_request_line_delimiters` into a stack
//!   array of [`STACK_FIELDS`] fields; it accepts the heads every origin accepts (and bare LF
//!   line ends, leading empty lines, any token method);
//! - **lenient**: our own reader, used when `httparse` refuses the head (or it has more
//!   fields than the stack array). On top of the request-line grammar of [`super::grammar`] it
//!   accepts what some origin accepts and `httparse` does not, each flagged with its
//!   [`Anomaly`]: obs-fold continuation lines joined with one space (Apache, Go), `CR CR LF`
//!   line ends (nginx), control bytes in values (nginx), header names with bytes outside the
//!   token set (nginx ignores such a field; it is kept here so that the analyzer sees it).
//!   It refuses what every origin refuses: a space, HTAB or control byte in a name or before
//!   the colon, a line without colon, a first line that starts with a space, NUL anywhere,
//!   a CR that does not end a line.
//!
//! Fields past `max_headers` are not kept (the request is flagged [`Anomaly::TooManyHeaders`])
//! but still count for framing: a Content-Length in field 1,001 still frames the body.

use std::mem::MaybeUninit;

use super::framing::FieldFacts;
use super::grammar::{Methods, RequestLine, is_tchar, request_line, text};
use crate::engine::request::Fields;
use crate::engine::stats::{Anomalies, Anomaly};

/// Fields parsed by the fast path (more: the lenient path).
pub(super) const STACK_FIELDS: usize = 128;

/// A head read in full.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) major: u8,
    pub(super) minor: u8,
    pub(super) simple: bool,
    /// At most `max_headers` fields, in order, names as sent.
    pub(super) headers: Fields,
    /// Framing and connection facts over every field (kept or not).
    pub(super) facts: FieldFacts,
    pub(super) anomalies: Anomalies,
    /// Bytes of the input that belong to this head.
    pub(super) len: usize,
}

/// Why a head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The first line is not a request line.
    RequestLine,
    /// The header section has a line no origin accepts: the whole head is consumed.
    Fields,
}

/// Reads the complete head `head` (it ends with its empty line, or is a complete HTTP/0.9
/// line). `max_headers` fields are kept; none, and no target, when not `keep`
/// (`HttpLimits::keep_heads`: the facts and anomalies are read all the same).
pub(super) fn read_head(head: &[u8], max_headers: usize, keep: bool) -> Result<Head, Refused> {
    if let Some(h) = fast(head, max_headers, keep) {
        return Ok(h);
    }
    let mut h = lenient(head, max_headers)?;
    if !keep {
        h.target = String::new();
        h.headers = Fields::new();
    }
    Ok(h)
}

/// [`read_head`] for the heads httparse reads (`None`: the others).
pub(super) fn fast(head: &[u8], max_headers: usize, keep: bool) -> Option<Head> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let mut config = httparse::ParserConfig::default();
    config.allow_multiple_spaces_in_request_line_delimiters(true);
    let len = match config.parse_request_with_uninit_headers(&mut req, head, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let (method, path, minor) = (req.method?, req.path?, req.version?);
    let mut anomalies = Anomalies::NONE;
    // Several spaces between the parts (accepted by the option): the target does not start
    // right after the method, or the head is longer than a single-spaced line would be.
    let offset = |s: &str| s.as_ptr() as usize - head.as_ptr() as usize;
    let line_start = offset(method);
    if offset(path) != line_start + method.len() + 1
        || head.get(offset(path) + path.len()..offset(path) + path.len() + 2) != Some(b" H")
    {
        anomalies.insert(Anomaly::MultipleSpaces);
    }
    let mut facts = FieldFacts::default();
    for h in req.headers.iter() {
        facts.observe(h.name.as_bytes(), h.value);
    }
    if req.headers.len() > max_headers {
        anomalies.insert(Anomaly::TooManyHeaders);
    }
    let (target, headers) = if keep {
        let kept = &req.headers[..req.headers.len().min(max_headers)];
        let fields = Fields::collect_sized(kept.iter().map(|h| (h.name, h.value)));
        (path.to_owned(), fields)
    } else {
        (String::new(), Fields::new())
    };
    Some(Head {
        method: method.to_owned(),
        target,
        major: 1,
        minor,
        simple: false,
        headers,
        facts,
        anomalies,
        len,
    })
}

/// Index of the next LF at or after `from`.
fn next_lf(bytes: &[u8], from: usize) -> Option<usize> {
    memchr::memchr(b'\n', &bytes[from..]).map(|i| from + i)
}

fn lenient(head: &[u8], max_headers: usize) -> Result<Head, Refused> {
    // Leading empty lines are skipped (RFC 9112 §2.2; every origin but Go).
    let start = head
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let line = match request_line(&head[start..], Methods::Token) {
        Ok(l) => l,
        Err(_) => return Err(Refused::RequestLine),
    };
    let RequestLine {
        method,
        target,
        major,
        minor,
        simple,
        mut anomalies,
        len: line_len,
    } = line;
    let (target, encoded) = text(target);
    if encoded {
        anomalies.insert(Anomaly::TargetObsText);
    }
    let mut out = Head {
        method: String::from_utf8_lossy(method).into_owned(),
        target,
        major,
        minor,
        simple,
        headers: Fields::new(),
        facts: FieldFacts::default(),
        anomalies,
        len: start + line_len,
    };
    if simple {
        return Ok(out);
    }
    // Fields as (name, value) of the head, values owned only when obs-fold joined them.
    let mut fields: Vec<(&[u8], std::borrow::Cow<'_, [u8]>)> = Vec::new();
    let mut pos = start + line_len;
    loop {
        let Some(lf) = next_lf(head, pos) else {
            return Err(Refused::Fields);
        };
        let raw = &head[pos..lf];
        pos = lf + 1;
        let crs = raw.iter().rev().take_while(|&&b| b == b'\r').count();
        let line = &raw[..raw.len() - crs];
        if crs > 1 {
            out.anomalies.insert(Anomaly::CrLineEnd);
        }
        if line.contains(&b'\r') || line.contains(&0) {
            return Err(Refused::Fields);
        }
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // obs-fold: joined to the previous field with one space (Apache, Go).
            let Some((_, value)) = fields.last_mut() else {
                return Err(Refused::Fields);
            };
            out.anomalies.insert(Anomaly::ObsFold);
            let more = line.trim_ascii();
            let v = value.to_mut();
            if !v.is_empty() && !more.is_empty() {
                v.push(b' ');
            }
            v.extend_from_slice(more);
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(Refused::Fields);
        };
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|&b| b <= b' ' || b == 0x7f) {
            return Err(Refused::Fields);
        }
        if !name.iter().all(|&b| is_tchar(b)) {
            out.anomalies.insert(Anomaly::InvalidHeaderName);
        }
        let value = trim_ows(&line[colon + 1..]);
        if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
            out.anomalies.insert(Anomaly::CtlInValue);
        }
        fields.push((name, std::borrow::Cow::Borrowed(value)));
    }
    out.len = pos;
    let kept = &fields[..fields.len().min(max_headers)];
    let (names, values) = kept.iter().fold((0, 0), |(n, v), (name, value)| {
        (n + name.len(), v + value.len())
    });
    out.headers = Fields::with_capacity(kept.len(), names, values);
    for (i, (name, value)) in fields.into_iter().enumerate() {
        out.facts.observe(name, &value);
        if i < max_headers {
            let (name, _) = text(name);
            out.headers.push(&name, &value);
        } else {
            out.anomalies.insert(Anomaly::TooManyHeaders);
        }
    }
    Ok(out)
}

/// `value` without leading and trailing SP / HTAB.
pub(super) fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &value[start..end]
}

/// `line` without its LF and the CRs before it.
pub(super) fn trail_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    &line[..line.len() - line.iter().rev().take_while(|&&b| b == b'\r').count()]
}

/// Reads one trailer line (without its line end): `(name, value)`; a line that is not
/// `name: value` is kept whole as the name with an empty value (nginx skips trailer lines
/// without looking at them, Go keeps odd ones): the flag says so.
pub(super) fn trailer_field(line: &[u8]) -> (String, Vec<u8>, bool) {
    let line = trail_line_end(line);
    match memchr::memchr(b':', line) {
        Some(c) if c > 0 && line[..c].iter().all(|&b| b > b' ' && b != 0x7f) => {
            let (name, odd) = text(&line[..c]);
            let odd = odd || !line[..c].iter().all(|&b| is_tchar(b));
            (name, trim_ows(&line[c + 1..]).to_vec(), odd)
        }
        _ => (text(line).0, Vec::new(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(head: &[u8]) -> Head {
        read_head(head, 1000, true).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn lenient_only(head: &[u8]) -> Head {
        lenient(head, 1000).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn both_paths_read_an_ordinary_head_the_same() {
        let head = b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 3\r\n\r\n";
        let f = fast(head, 1000, true).unwrap();
        let l = lenient_only(head);
        for h in [&f, &l] {
            assert_eq!(
                (h.method.as_str(), h.target.as_str(), h.minor),
                ("POST", "/p?q=1", 1)
            );
            assert_eq!(h.headers.len(), 3);
            assert_eq!(h.headers.get(2), Some(("Content-Length", &b"3"[..])));
            assert_eq!(h.len, head.len());
            assert!(h.anomalies.is_empty());
            assert_eq!(h.facts.content_length(), Some(3));
        }
        let spaced = b"GET   /a  HTTP/1.1\r\n\r\n";
        assert!(
            fast(spaced, 10, true)
                .unwrap()
                .anomalies
                .contains(Anomaly::MultipleSpaces)
        );
        assert!(
            lenient_only(spaced)
                .anomalies
                .contains(Anomaly::MultipleSpaces)
        );
        let single = b"GET /a HTTP/1.1\r\n\r\n";
        assert!(fast(single, 10, true).unwrap().anomalies.is_empty());
    }

    #[test]
    fn lenient_heads_keep_what_some_origin_keeps() {
        let h = read(b"GET / HTTP/1.1\r\nFoo: x\r\n  y\r\nBar:\r\n\tz\r\n\r\n");
        assert_eq!(h.headers.get(0).unwrap().1, b"x y");
        assert_eq!(h.headers.get(1).unwrap().1, b"z");
        assert!(h.anomalies.contains(Anomaly::ObsFold));
        let h = read(b"GET / HTTP/1.1\r\nFoo@: 1\r\nFoo_Bar: 2\r\nX: a\x01b\r\nY: c\r\r\n\r\n");
        assert_eq!(h.headers.len(), 4);
        assert_eq!(h.headers.get(0).unwrap().0, "Foo@");
        assert_eq!(h.headers.get(3).unwrap().1, b"c");
        for a in [
            Anomaly::InvalidHeaderName,
            Anomaly::CtlInValue,
            Anomaly::CrLineEnd,
        ] {
            assert!(h.anomalies.contains(a), "{a}");
        }
        let h = read(b"GET /\xe9 HTTP/1.2  \r\nFoo\xe9: v\r\n\r\n");
        assert_eq!(h.target, "/%E9");
        assert_eq!(h.headers.get(0).unwrap().0, "Foo%E9");
        assert_eq!((h.major, h.minor), (1, 2));
        let h = read(b"GET /nine\r\n");
        assert!(h.simple && h.headers.is_empty() && h.len == 11);
    }

    #[test]
    fn heads_no_origin_accepts_are_refused() {
        for head in [
            &b"GET / HTTP/1.1\r\nFoo Bar: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nFoo\x01: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nFoo : x\r\n\r\n",
            b"GET / HTTP/1.1\r\n: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nFoo x\r\n\r\n",
            b"GET / HTTP/1.1\r\n Foo: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nFoo: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nFoo: a\rb\r\n\r\n",
        ] {
            assert_eq!(
                read_head(head, 100, true).unwrap_err(),
                Refused::Fields,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        assert_eq!(
            read_head(b"hello there\r\nX: y\r\n\r\n", 100, true).unwrap_err(),
            Refused::RequestLine
        );
    }

    #[test]
    fn fields_past_the_cap_are_not_kept_but_still_frame_the_body() {
        let mut head = b"POST / HTTP/1.1\r\n".to_vec();
        for i in 0..300 {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 7\r\n\r\n");
        let h = read_head(&head, 200, true).unwrap();
        assert_eq!(h.headers.len(), 200);
        assert!(h.anomalies.contains(Anomaly::TooManyHeaders));
        assert_eq!(h.facts.content_length(), Some(7));
        let small = read_head(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 2, true).unwrap();
        assert_eq!(small.headers.len(), 2);
        assert!(small.anomalies.contains(Anomaly::TooManyHeaders));
    }

    #[test]
    fn trailer_lines_are_read_leniently() {
        assert_eq!(
            trailer_field(b"X-T: v \r"),
            ("X-T".into(), b"v".to_vec(), false)
        );
        assert_eq!(
            trailer_field(b"Bad Name: v"),
            ("Bad Name: v".into(), vec![], true)
        );
        assert_eq!(
            trailer_field(b"GET /x HTTP/1.1"),
            ("GET /x HTTP/1.1".into(), vec![], true)
        );
    }

    /// Request lines near the edge of what is accepted: token and non-token methods, one to
    /// three spaces or a tab, targets with control, DEL, space and high bytes (long enough for
    /// httparse's 16- and 32-byte scans), versions
    /// written many ways, bare LF, CR CR LF and trailing spaces.
    fn edgy_line() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let method = prop_oneof![
            proptest::string::string_regex("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,8}")
                .unwrap()
                .prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..6),
        ];
        let sep = prop_oneof![
            6 => Just(&b" "[..]),
           1 => Just(&b"  "[..]),
           1 => Just(&b"   "[..]),
           1 => Just(&b"\t"[..]),
           1 => Just(&b" \t"[..]),
           1 => Just(&b""[..]),
        ];
        let target = prop_oneof![
            proptest::collection::vec(
                prop_oneof![
                    Just(b'/'),
                    Just(b'a'),
                    Just(b'%'),
                    Just(b'?'),
                    Just(0xe9),
                    Just(0x7f),
                    any::<u8>()
                ],
                0..40,
            ),
            Just(b"/".to_vec()),
        ];
        let version = prop_oneof![
            6 => Just(&b"HTTP/1.1"[..]),
            3 => Just(&b"HTTP/1.0"[..]),
           1 => Just(&b"HTTP/1.10"[..]),
           1 => Just(&b"HTTP/1.2"[..]),
           1 => Just(&b"HTTP/2.0"[..]),
           1 => Just(&b"HTTP/0.9"[..]),
           1 => Just(&b"HTTP/10.0"[..]),
           1 => Just(&b"http/1.1"[..]),
           1 => Just(&b"HTTP/1."[..]),
           1 => Just(&b"HTTP/1.1 "[..]),
           1 => Just(&b""[..]),
        ];
        let end = prop_oneof![
            Just(&b"\r\n"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r\r\n"[..]),
            Just(&b" \r\n"[..]),
        ];
        (method, sep.clone(), target, sep, version, end)
            .prop_map(|(m, a, t, b, v, e)| [&m[..], a, &t[..], b, v, e].concat())
    }

    proptest::proptest! {
        /// The parser skips judging the first line on its own when the fast path reads the
        /// whole head: that is only right if every head the fast path reads starts with a
        /// line the grammar takes for a request line with a version.
        #[test]
        fn every_head_the_fast_path_reads_starts_with_a_request_line_the_grammar_accepts(
            line in edgy_line(),
            fields in proptest::prop_oneof![
                proptest::strategy::Just(&b""[..]),
                proptest::strategy::Just(&b"Host: h\r\n"[..]),
            ],
        ) {
            let head = [&line[..], fields, b"\r\n"].concat();
            // The parser skips empty lines between messages before it reads a head.
            let skip = head.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            let head = &head[skip..];
            if fast(head, 100, true).is_some() {
                // The parser tries the fast path only on such a first line.
                proptest::prop_assert!(super::super::ends_like_http1(head));
                let lf = memchr::memchr(b'\n', head).unwrap();
                let judged = request_line(&head[..=lf], Methods::Token);
                proptest::prop_assert!(
                    matches!(judged, Ok(ref l) if !l.simple),
                    "{:?}: {judged:?}",
                    String::from_utf8_lossy(head)
                );
            }
        }
    }
}
