//! Capture files: streaming pcap / pcapng reading (with byte offsets for errors) and pcap writing.
//!
//! [`CaptureReader`] reads with a bounded buffer (a record may not exceed
//! [`MAX_RECORD_BYTES`]), so a multi-gigabyte capture replays in constant memory. Every error
//! names the byte offset of the record that could not be read; the packets before it have
//! already been returned.
//!
//! Link types: Ethernet frames are returned as they are. Raw IPv4/IPv6 (DLT_RAW, LINKTYPE_IPV4/6),
//! Linux cooked captures (SLL, SLL2) and BSD loopback (NULL) get a synthetic Ethernet header in
//! place of their own, so the engine (which takes Ethernet frames) can read captures made with
//! `tcpdump -i any` or on tunnel devices too.

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapParser, PcapWriter};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, PcapError, TsResolution};
use std::io::{Read, Write};

/// Upper bound of one record (pcap packet record or pcapng block).
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Bytes read at a time (the buffer grows for a larger record). 64 KiB keeps what was just
/// copied in by the kernel in the core's cache when the engine reads it: on the bench capture
/// 2-4 % less user CPU than 256 KiB (interleaved runs, docs/engine.md).
const READ_CHUNK: usize = 64 * 1024;

/// Packets a [`CapturedPacket`] shows ahead of itself ([`CapturedPacket::next_frames`]): the
/// replay's prefetch uses two (three made no difference on the bench capture).
pub const LOOK_AHEAD: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("I/O error at byte offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("not a pcap or pcapng file (magic {magic:02x?} at byte offset 0)")]
    UnknownFormat { magic: Vec<u8> },
    #[error("malformed {format} record at byte offset {offset}: {reason}")]
    Malformed {
        format: &'static str,
        offset: u64,
        reason: String,
    },
    #[error(
        "truncated {format} file: record at byte offset {offset} is incomplete ({available} bytes left at end of file)"
    )]
    Truncated {
        format: &'static str,
        offset: u64,
        available: usize,
    },
    #[error("{format} record at byte offset {offset} is {len} bytes, over the {max}-byte limit")]
    RecordTooLarge {
        format: &'static str,
        offset: u64,
        len: usize,
        max: usize,
    },
    #[error("writing the capture: {0}")]
    Write(String),
}

impl CaptureError {
    /// The byte offset the error refers to, when there is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            CaptureError::Io { offset, .. }
            | CaptureError::Malformed { offset, .. }
            | CaptureError::Truncated { offset, .. }
            | CaptureError::RecordTooLarge { offset, .. } => Some(*offset),
            CaptureError::UnknownFormat { .. } => Some(0),
            CaptureError::Write(_) => None,
        }
    }
}

/// Which container the file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFormat {
    Pcap,
    PcapNg,
}

impl CaptureFormat {
    fn name(self) -> &'static str {
        match self {
            CaptureFormat::Pcap => "pcap",
            CaptureFormat::PcapNg => "pcapng",
        }
    }
}

/// One packet of a capture, borrowed from the reader's buffer.
#[derive(Debug)]
pub struct CapturedPacket<'a> {
    /// Capture time, µs since the UNIX epoch.
    pub ts_us: u64,
    /// An Ethernet frame (other link types are given a synthetic Ethernet header).
    pub frame: &'a [u8],
    /// Length on the wire of the original frame (its own link layer).
    pub orig_len: u32,
    /// Byte offset of the packet's record in the file.
    pub offset: u64,
    /// The frames of the next [`LOOK_AHEAD`] packets, each when it is already in the reader's
    /// buffer (pcap files with Ethernet frames; each only with those before it): a look ahead
    /// for prefetching, not consumed.
    pub next_frames: [Option<&'a [u8]>; LOOK_AHEAD],
}

/// The length (16-byte header + captured bytes) of the pcap record at the start of `data`, as
/// its header declares it; `None` while the header is not all there.
fn pcap_record_len(data: &[u8], endianness: pcap_file::Endianness) -> Option<usize> {
    let raw: [u8; 4] = data.get(8..12)?.try_into().ok()?;
    let len = match endianness {
        pcap_file::Endianness::Big => u32::from_be_bytes(raw),
        pcap_file::Endianness::Little => u32::from_le_bytes(raw),
    };
    Some(16 + len as usize)
}

/// Packets skipped because their link type can't be turned into an Ethernet frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    pub packets: u64,
    pub unsupported_link_type: u64,
    pub non_packet_blocks: u64,
}

/// A packet found in the buffer: (range start, length, ts µs or u64::MAX, orig_len, link).
type PacketAt = (usize, usize, u64, u32, DataLink);

struct NgInterface {
    link: DataLink,
    /// Timestamp units per second.
    units_per_sec: u64,
}

enum Parser {
    Pcap {
        parser: PcapParser,
        link: DataLink,
        nanos: bool,
    },
    PcapNg {
        parser: PcapNgParser,
        interfaces: Vec<NgInterface>,
    },
}

/// Streaming reader of pcap and pcapng files.
pub struct CaptureReader<R: Read> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    parser: Parser,
    format: CaptureFormat,
    /// Synthetic-Ethernet output for non-Ethernet link types.
    converted: Vec<u8>,
    last_ts_us: u64,
    stats: ReaderStats,
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header and detects the format.
    pub fn new(src: R) -> Result<Self, CaptureError> {
        let mut reader = CaptureReader {
            src,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            parser: Parser::Pcap {
                parser: dummy_pcap_parser(),
                link: DataLink::ETHERNET,
                nanos: false,
            },
            format: CaptureFormat::Pcap,
            converted: Vec::new(),
            last_ts_us: 0,
            stats: ReaderStats::default(),
        };
        while reader.end < 4 && !reader.eof {
            reader.fill()?;
        }
        let magic = reader.buf[..reader.end.min(4)].to_vec();
        let is_ng = magic == [0x0a, 0x0d, 0x0d, 0x0a];
        let is_pcap = matches!(
            magic.as_slice(),
            [0xa1, 0xb2, 0xc3, 0xd4]
                | [0xd4, 0xc3, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0x3c, 0x4d]
                | [0x4d, 0x3c, 0xb2, 0xa1]
        );
        if !is_ng && !is_pcap {
            return Err(CaptureError::UnknownFormat { magic });
        }
        reader.format = if is_ng {
            CaptureFormat::PcapNg
        } else {
            CaptureFormat::Pcap
        };
        loop {
            let data = &reader.buf[reader.start..reader.end];
            let parsed = if is_ng {
                PcapNgParser::new(data).map(|(rem, p)| {
                    (
                        data.len() - rem.len(),
                        Parser::PcapNg {
                            parser: p,
                            interfaces: Vec::new(),
                        },
                    )
                })
            } else {
                PcapParser::new(data).map(|(rem, p)| {
                    let header = p.header();
                    let consumed = data.len() - rem.len();
                    (
                        consumed,
                        Parser::Pcap {
                            parser: p,
                            link: header.datalink,
                            nanos: header.ts_resolution == TsResolution::NanoSecond,
                        },
                    )
                })
            };
            match parsed {
                Ok((consumed, parser)) => {
                    reader.start += consumed;
                    reader.parser = parser;
                    return Ok(reader);
                }
                Err(PcapError::IncompleteBuffer) => reader.need_more(0)?,
                Err(e) => return Err(reader.malformed(e)),
            }
        }
    }

    pub fn format(&self) -> CaptureFormat {
        self.format
    }

    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// Byte offset of the next unread record.
    pub fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    fn malformed(&self, e: PcapError) -> CaptureError {
        CaptureError::Malformed {
            format: self.format.name(),
            offset: self.offset(),
            reason: e.to_string(),
        }
    }

    /// Reads more bytes; `record_len` (0 if unknown) is the size the current record needs.
    fn need_more(&mut self, record_len: usize) -> Result<(), CaptureError> {
        if record_len > MAX_RECORD_BYTES {
            return Err(CaptureError::RecordTooLarge {
                format: self.format.name(),
                offset: self.offset(),
                len: record_len,
                max: MAX_RECORD_BYTES,
            });
        }
        if self.eof {
            return Err(CaptureError::Truncated {
                format: self.format.name(),
                offset: self.offset(),
                available: self.end - self.start,
            });
        }
        self.fill()
    }

    fn fill(&mut self) -> Result<(), CaptureError> {
        if self.start > 0 && (self.end == self.buf.len() || self.start > self.buf.len() / 2) {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(MAX_RECORD_BYTES + 64);
            if grown <= self.buf.len() {
                return Err(CaptureError::RecordTooLarge {
                    format: self.format.name(),
                    offset: self.offset(),
                    len: self.buf.len(),
                    max: MAX_RECORD_BYTES,
                });
            }
            self.buf.resize(grown, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CaptureError::Io {
                        offset: self.base + self.end as u64,
                        source,
                    });
                }
            }
        }
    }

    /// Declared length of the record at `start`, if its header is in the buffer.
    fn peek_record_len(&self) -> usize {
        let data = &self.buf[self.start..self.end];
        match &self.parser {
            Parser::Pcap { parser, .. } => {
                if data.len() < 16 {
                    return 16;
                }
                pcap_record_len(data, parser.header().endianness).unwrap_or(16)
            }
            Parser::PcapNg { parser, .. } => {
                if data.len() < 8 {
                    return 8;
                }
                let raw: [u8; 4] = data[4..8].try_into().expect("4 bytes");
                let block_type: [u8; 4] = data[0..4].try_into().expect("4 bytes");
                if block_type == [0x0a, 0x0d, 0x0d, 0x0a] && data.len() >= 12 {
                    // A new section: its own byte-order magic decides.
                    return if data[8..12] == [0x1a, 0x2b, 0x3c, 0x4d] {
                        u32::from_be_bytes(raw) as usize
                    } else {
                        u32::from_le_bytes(raw) as usize
                    };
                }
                match parser.section().endianness {
                    pcap_file::Endianness::Big => u32::from_be_bytes(raw) as usize,
                    pcap_file::Endianness::Little => u32::from_le_bytes(raw) as usize,
                }
            }
        }
    }

    /// The frames of the next [`LOOK_AHEAD`] records, each if it is a whole pcap record of an
    /// Ethernet capture already in the buffer (and every one before it is).
    fn peek_ethernet_frames(&self) -> [Option<&[u8]>; LOOK_AHEAD] {
        let mut frames = [None; LOOK_AHEAD];
        let Parser::Pcap { parser, link, .. } = &self.parser else {
            return frames;
        };
        if *link != DataLink::ETHERNET {
            return frames;
        }
        let endianness = parser.header().endianness;
        let mut data = &self.buf[self.start..self.end];
        for frame in &mut frames {
            let Some(record) = pcap_record_len(data, endianness).and_then(|n| data.get(..n)) else {
                break;
            };
            *frame = Some(&record[16..]);
            data = &data[record.len()..];
        }
        frames
    }

    /// The next packet, `Ok(None)` at a clean end of file.
    pub fn next_packet(&mut self) -> Result<Option<CapturedPacket<'_>>, CaptureError> {
        let (abs, len, ts_us, orig_len, offset, converted) = loop {
            if self.start == self.end {
                if self.eof {
                    return Ok(None);
                }
                self.fill()?;
                continue;
            }
            let offset = self.offset();
            let data = &self.buf[self.start..self.end];
            let data_ptr = data.as_ptr() as usize;
            // (consumed bytes, packet: (range in data, ts, orig_len, link) or None for a non-packet block)
            let step: Result<(usize, Option<PacketAt>), PcapError> = match &mut self.parser {
                Parser::Pcap {
                    parser,
                    link,
                    nanos,
                } => parser.next_raw_packet(data).map(|(rem, raw)| {
                    let consumed = data.len() - rem.len();
                    let at = raw.data.as_ptr() as usize - data_ptr;
                    let frac = u64::from(raw.ts_frac);
                    let us = if *nanos { frac / 1000 } else { frac };
                    let ts = u64::from(raw.ts_sec) * 1_000_000 + us;
                    (
                        consumed,
                        Some((at, raw.data.len(), ts, raw.orig_len, *link)),
                    )
                }),
                Parser::PcapNg { parser, interfaces } => {
                    match parser.next_block(data) {
                        Ok((rem, block)) => {
                            let consumed = data.len() - rem.len();
                            let packet = match block {
                                Block::SectionHeader(_) => {
                                    interfaces.clear();
                                    None
                                }
                                Block::InterfaceDescription(idb) => {
                                    let mut units_per_sec = 1_000_000u64;
                                    for opt in &idb.options {
                                        if let InterfaceDescriptionOption::IfTsResol(r) = opt {
                                            units_per_sec = ts_units_per_sec(*r);
                                        }
                                    }
                                    interfaces.push(NgInterface {
                                        link: idb.linktype,
                                        units_per_sec,
                                    });
                                    None
                                }
                                Block::EnhancedPacket(epb) => {
                                    let iface = interfaces.get(epb.interface_id as usize);
                                    let (link, ups) = iface
                                        .map_or((DataLink::ETHERNET, 1_000_000), |i| {
                                            (i.link, i.units_per_sec)
                                        });
                                    // pcap-file reports the raw timestamp units as nanoseconds.
                                    let units = epb.timestamp.as_nanos() as u64;
                                    let ts = units_to_us(units, ups);
                                    let at = epb.data.as_ptr() as usize - data_ptr;
                                    Some((at, epb.data.len(), ts, epb.original_len, link))
                                }
                                Block::SimplePacket(spb) => {
                                    let link =
                                        interfaces.first().map_or(DataLink::ETHERNET, |i| i.link);
                                    let at = spb.data.as_ptr() as usize - data_ptr;
                                    Some((at, spb.data.len(), u64::MAX, spb.original_len, link))
                                }
                                Block::Packet(pb) => {
                                    let iface = interfaces.get(usize::from(pb.interface_id));
                                    let (link, ups) = iface
                                        .map_or((DataLink::ETHERNET, 1_000_000), |i| {
                                            (i.link, i.units_per_sec)
                                        });
                                    let ts = units_to_us(pb.timestamp, ups);
                                    let at = pb.data.as_ptr() as usize - data_ptr;
                                    Some((at, pb.data.len(), ts, pb.original_len, link))
                                }
                                _ => None,
                            };
                            Ok((consumed, packet))
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match step {
                Ok((consumed, None)) => {
                    self.start += consumed;
                    self.stats.non_packet_blocks += 1;
                }
                Ok((consumed, Some((at, len, ts, orig_len, link)))) => {
                    let abs = self.start + at;
                    self.start += consumed;
                    let ts_us = if ts == u64::MAX { self.last_ts_us } else { ts };
                    self.last_ts_us = ts_us;
                    self.stats.packets += 1;
                    match to_ethernet(link, &self.buf[abs..abs + len], &mut self.converted) {
                        Some(converted) => break (abs, len, ts_us, orig_len, offset, converted),
                        None => self.stats.unsupported_link_type += 1,
                    }
                }
                Err(PcapError::IncompleteBuffer) => {
                    let need = self.peek_record_len();
                    self.need_more(need)?;
                }
                Err(e) => return Err(self.malformed(e)),
            }
        };
        let frame: &[u8] = if converted {
            &self.converted
        } else {
            &self.buf[abs..abs + len]
        };
        Ok(Some(CapturedPacket {
            ts_us,
            frame,
            orig_len,
            offset,
            next_frames: self.peek_ethernet_frames(),
        }))
    }
}

fn dummy_pcap_parser() -> PcapParser {
    let mut header = Vec::new();
    PcapHeader::default()
        .write_to(&mut header)
        .expect("writing to a Vec");
    PcapParser::new(&header).expect("a default header parses").1
}

fn ts_units_per_sec(resol: u8) -> u64 {
    let exp = u32::from(resol & 0x7f).min(19);
    if resol & 0x80 != 0 {
        1u64 << exp.min(63)
    } else {
        10u64.pow(exp)
    }
}

fn units_to_us(units: u64, units_per_sec: u64) -> u64 {
    if units_per_sec == 1_000_000 {
        return units;
    }
    ((u128::from(units) * 1_000_000) / u128::from(units_per_sec.max(1))) as u64
}

/// Puts a synthetic Ethernet header on a non-Ethernet frame. `Some(false)`: already Ethernet
/// (use the input); `Some(true)`: converted into `out`; `None`: unsupported link type.
fn to_ethernet(link: DataLink, raw: &[u8], out: &mut Vec<u8>) -> Option<bool> {
    let ethertype_of_ip = |b: &[u8]| match b.first().map(|v| v >> 4) {
        Some(4) => Some(0x0800u16),
        Some(6) => Some(0x86dd),
        _ => None,
    };
    let (ethertype, payload) = match link {
        DataLink::ETHERNET => return Some(false),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => (ethertype_of_ip(raw)?, raw),
        DataLink::LINUX_SLL => {
            if raw.len() < 16 {
                return None;
            }
            (u16::from_be_bytes([raw[14], raw[15]]), &raw[16..])
        }
        DataLink::LINUX_SLL2 => {
            if raw.len() < 20 {
                return None;
            }
            (u16::from_be_bytes([raw[0], raw[1]]), &raw[20..])
        }
        DataLink::NULL | DataLink::LOOP => {
            if raw.len() < 4 {
                return None;
            }
            (ethertype_of_ip(&raw[4..])?, &raw[4..])
        }
        _ => return None,
    };
    out.clear();
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(payload);
    Some(true)
}

/// Writes frames into a pcap (Ethernet, µs timestamps, snaplen 65535). Returns the frame count.
pub fn write_pcap<W: Write>(
    frames: impl IntoIterator<Item = crate::offline::synth::Frame>,
    out: W,
) -> Result<u64, CaptureError> {
    let mut writer = PcapStream::new(out)?;
    let mut n = 0;
    for f in frames {
        writer.write(&f)?;
        n += 1;
    }
    writer.finish()?;
    Ok(n)
}

/// An incremental pcap writer (Ethernet, µs timestamps, snaplen 65535).
pub struct PcapStream<W: Write> {
    writer: PcapWriter<W>,
}

impl<W: Write> PcapStream<W> {
    pub fn new(out: W) -> Result<Self, CaptureError> {
        let header = PcapHeader {
            snaplen: 65535,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            ..PcapHeader::default()
        };
        let writer =
            PcapWriter::with_header(out, header).map_err(|e| CaptureError::Write(e.to_string()))?;
        Ok(PcapStream { writer })
    }

    pub fn write(&mut self, f: &crate::offline::synth::Frame) -> Result<(), CaptureError> {
        let orig = f.orig_len.max(f.data.len() as u32).min(65535);
        let packet = PcapPacket::new(std::time::Duration::from_micros(f.ts_us), orig, &f.data);
        self.writer
            .write_packet(&packet)
            .map_err(|e| CaptureError::Write(e.to_string()))?;
        Ok(())
    }

    pub fn finish(self) -> Result<W, CaptureError> {
        let mut w = self.writer.into_writer();
        w.flush().map_err(|e| CaptureError::Write(e.to_string()))?;
        Ok(w)
    }
}

/// Writes frames into a pcapng file (one Ethernet interface). With `nanos` the interface
/// declares nanosecond timestamps (`if_tsresol` = 9), otherwise the default microseconds.
pub fn write_pcapng<W: Write>(
    frames: impl IntoIterator<Item = crate::offline::synth::Frame>,
    out: W,
    nanos: bool,
) -> Result<u64, CaptureError> {
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    let err = |e: PcapError| CaptureError::Write(e.to_string());
    let mut writer = PcapNgWriter::new(out).map_err(err)?;
    let options = if nanos {
        vec![InterfaceDescriptionOption::IfTsResol(9)]
    } else {
        vec![]
    };
    writer
        .write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options,
        })
        .map_err(err)?;
    let mut n = 0;
    for f in frames {
        // pcap-file stores the raw timestamp units given as nanoseconds.
        let units = if nanos { f.ts_us * 1000 } else { f.ts_us };
        let block = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: std::time::Duration::from_nanos(units),
            original_len: f.orig_len.max(f.data.len() as u32),
            data: std::borrow::Cow::Borrowed(&f.data),
            options: vec![],
        };
        writer.write_pcapng_block(block).map_err(err)?;
        n += 1;
    }
    writer
        .into_inner()
        .flush()
        .map_err(|e| CaptureError::Write(e.to_string()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::synth::{SynthConfig, generate};

    fn sample_pcap() -> (Vec<u8>, Vec<crate::offline::synth::Frame>) {
        let (frames, _) = generate(SynthConfig {
            connections: 3,
            ..SynthConfig::default()
        });
        let mut file = Vec::new();
        write_pcap(frames.clone(), &mut file).unwrap();
        (file, frames)
    }

    #[test]
    fn a_written_pcap_reads_back_identically() {
        let (file, frames) = sample_pcap();
        let mut reader = CaptureReader::new(&file[..]).unwrap();
        let mut got = Vec::new();
        while let Some(p) = reader.next_packet().unwrap() {
            got.push((p.ts_us, p.frame.to_vec()));
        }
        let want: Vec<_> = frames.into_iter().map(|f| (f.ts_us, f.data)).collect();
        assert_eq!(got, want);
    }

    /// A source that hands out at most `.1` bytes per read.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_small_read_buffer_still_reads_every_packet() {
        let (file, frames) = sample_pcap();
        let mut reader = CaptureReader::new(Trickle(&file, 7)).unwrap();
        let mut n = 0;
        while reader.next_packet().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, frames.len());
    }

    #[test]
    fn the_look_ahead_is_the_next_packets_when_they_are_buffered_and_nothing_else() {
        let (file, frames) = sample_pcap();
        let check = |src: Box<dyn Read + '_>, ahead_always: bool| {
            let mut reader = CaptureReader::new(src).unwrap();
            let mut i = 0;
            let mut ahead = 0;
            while let Some(p) = reader.next_packet().unwrap() {
                for (k, f) in p.next_frames.iter().enumerate() {
                    match f {
                        Some(f) => {
                            assert!(k == 0 || p.next_frames[k - 1].is_some(), "in order");
                            assert_eq!(*f, &frames[i + 1 + k].data[..], "{k} ahead of {i}");
                            ahead += usize::from(k == 0);
                        }
                        None if ahead_always && i + 1 + k < frames.len() => {
                            panic!("packet {i}: nothing {k} ahead in a whole buffer")
                        }
                        None => {}
                    }
                }
                i += 1;
            }
            assert_eq!(i, frames.len());
            if ahead_always {
                assert_eq!(
                    ahead,
                    frames.len() - 1,
                    "every packet but the last looks ahead"
                );
            }
            ahead
        };
        check(Box::new(&file[..]), true);
        // Records cut by the reads: a look ahead only when the next record is whole.
        let trickled = check(Box::new(Trickle(&file, 97)), false);
        assert!(trickled < frames.len() - 1);
        // pcapng: none.
        let mut ng = Vec::new();
        write_pcapng(frames.clone(), &mut ng, false).unwrap();
        assert_eq!(check(Box::new(&ng[..]), false), 0);
    }

    #[test]
    fn a_truncated_file_names_the_offset_of_the_cut_record() {
        let (file, frames) = sample_pcap();
        let cut = &file[..file.len() - 10];
        let mut reader = CaptureReader::new(cut).unwrap();
        let mut n = 0;
        let err = loop {
            match reader.next_packet() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert_eq!(n, frames.len() - 1);
        let last_len = 16 + frames.last().unwrap().data.len();
        assert_eq!(err.offset(), Some((file.len() - last_len) as u64));
        assert!(err.to_string().contains("offset"), "{err}");
    }

    #[test]
    fn pcapng_reads_back_with_microsecond_and_nanosecond_resolution() {
        let (_, frames) = sample_pcap();
        for nanos in [false, true] {
            let mut file = Vec::new();
            write_pcapng(frames.clone(), &mut file, nanos).unwrap();
            let mut reader = CaptureReader::new(&file[..]).unwrap();
            assert_eq!(reader.format(), CaptureFormat::PcapNg);
            let mut got = Vec::new();
            while let Some(p) = reader.next_packet().unwrap() {
                got.push((p.ts_us, p.frame.to_vec()));
            }
            let want: Vec<_> = frames.iter().map(|f| (f.ts_us, f.data.clone())).collect();
            assert_eq!(got, want, "nanos={nanos}");
        }
    }

    #[test]
    fn a_corrupt_pcapng_block_names_its_offset() {
        let (_, frames) = sample_pcap();
        let mut file = Vec::new();
        write_pcapng(frames, &mut file, false).unwrap();
        // Section header block length at offset 4; the IDB follows it; corrupt the first EPB's
        // trailing length (so initial != trailer).
        let shb_len = u32::from_le_bytes(file[4..8].try_into().unwrap()) as usize;
        let idb_len =
            u32::from_le_bytes(file[shb_len + 4..shb_len + 8].try_into().unwrap()) as usize;
        let epb = shb_len + idb_len;
        let epb_len = u32::from_le_bytes(file[epb + 4..epb + 8].try_into().unwrap()) as usize;
        file[epb + epb_len - 4] ^= 0xff;
        let mut reader = CaptureReader::new(&file[..]).unwrap();
        let err = reader.next_packet().unwrap_err();
        assert_eq!(err.offset(), Some(epb as u64), "{err}");
    }

    #[test]
    fn garbage_is_not_a_capture() {
        let err = CaptureReader::new(&b"hello world, not a pcap"[..])
            .err()
            .unwrap();
        assert!(matches!(err, CaptureError::UnknownFormat { .. }), "{err}");
    }

    #[test]
    fn an_absurd_record_length_is_an_error_not_an_allocation() {
        let (mut file, _) = sample_pcap();
        // First record's incl_len (native endianness) := 0xffff_fff0.
        file[24 + 8..24 + 12].copy_from_slice(&0xffff_fff0u32.to_ne_bytes());
        let mut reader = CaptureReader::new(&file[..]).unwrap();
        let err = reader.next_packet().unwrap_err();
        assert_eq!(err.offset(), Some(24));
    }

    #[test]
    fn raw_ip_link_type_gets_an_ethernet_header() {
        let mut out = Vec::new();
        let ip = [0x45u8, 0, 0, 20];
        assert_eq!(to_ethernet(DataLink::RAW, &ip, &mut out), Some(true));
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        assert_eq!(&out[14..], &ip);
    }
}
