//! What the generator produces: captured frames, the ground truth of every request, and
//! counters.

use crate::engine::request::HttpRequest;

/// One captured link-layer frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub ts_us: u64,
    /// The captured bytes.
    pub data: Vec<u8>,
    /// The length on the wire (> `data.len()` when the capture cut the frame).
    pub orig_len: u32,
}

/// A request of the ground truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruthRequest {
    /// Connection number (0-based, in order of creation).
    pub conn: u64,
    /// Position of the request on its connection.
    pub index: u32,
    /// Every byte of the request was captured: the engine must emit it (exactly once).
    /// `false`: a byte is missing and the engine must not emit it.
    pub expected: bool,
    /// The request as the engine must report it. `ts_us` is the capture time of the first
    /// emitted frame holding the request's first byte (0 if that byte was never captured).
    /// `request.response` is its response when every byte of it was captured (the engine
    /// may pair it with nothing else), else `None` with the reason in `response_missing`.
    pub request: HttpRequest,
    /// The response's position can be told for sure (see the generator's `truth`): the engine
    /// must pair it. Otherwise it pairs it or reports it missing, never anything else.
    pub response_certain: bool,
}

/// Counters of what the generator produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenStats {
    pub frames: u64,
    pub bytes: u64,
    pub connections: u64,
    pub requests: u64,
    pub requests_expected: u64,
}
