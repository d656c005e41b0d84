//! The IKEv2 wire codec: header and payloads (RFC 7296 section 3, RFC 7383 SKF).
//!
//! Decoding checks every length against the bytes present before reading, so no input
//! can make it panic; a failure is a [`DecodeError`] that says what was wrong and at
//! which byte offset. Encoding is canonical (reserved bits zero, substructure flags
//! derived from position), so for every canonically encoded message
//! `Message::decode(b)?.encode() == b`.
//!
//! SK and SKF payloads stay opaque here (IV, ciphertext and ICV as one byte string);
//! [`crate::protect`] seals and opens them.
//!
//! Past 800 lines on purpose: each payload's decoding and encoding are two matches
//! over the same enum, kept in one file so a change to one is made beside the other.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::consts::{payload_type as pt, ts_type};

/// Length of the IKE header.
pub const HEADER_LEN: usize = 28;
/// Length of the generic payload header.
pub const GENERIC_HEADER_LEN: usize = 4;
const IKEV2_VERSION: u8 = 0x20;

/// What went wrong, where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset} (in {context})")]
pub struct DecodeError {
    /// Offset from the start of the IKE header.
    pub offset: usize,
    /// The structure being read, e.g. "SA proposal".
    pub context: &'static str,
    pub kind: DecodeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("length field `{field}` = {value} is impossible")]
    BadLength { field: &'static str, value: usize },
    #[error("IKE major version {0} is not supported")]
    UnsupportedMajorVersion(u8),
    #[error("unknown payload type {0} is marked critical")]
    UnsupportedCriticalPayload(u8),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("{0} bytes follow the last payload")]
    TrailingBytes(usize),
}

/// A bounds-checked cursor; every read either succeeds or returns a [`DecodeError`].
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` within the message, for error reports.
    base: usize,
    context: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize, context: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            base,
            context,
        }
    }

    fn err(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            offset: self.base + self.pos,
            context: self.context,
            kind,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.err(DecodeErrorKind::Truncated {
                needed: n,
                available: self.remaining(),
            }));
        }
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn rest(&mut self) -> &'a [u8] {
        let b = &self.buf[self.pos..];
        self.pos = self.buf.len();
        b
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    /// A sub-reader over the next `len` bytes, for a length-delimited structure.
    fn sub(&mut self, len: usize, context: &'static str) -> Result<Reader<'a>, DecodeError> {
        let base = self.base + self.pos;
        let buf = self.bytes(len)?;
        Ok(Reader::new(buf, base, context))
    }
}

/// The IKE header, without the two fields the encoder derives (Next Payload, Length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    pub exchange: u8,
    pub flags: u8,
    pub message_id: u32,
}

/// The fields of a header as they are on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawHeader {
    pub header: Header,
    pub next_payload: u8,
    pub length: u32,
}

impl Header {
    pub fn is_response(&self) -> bool {
        self.flags & crate::consts::flags::RESPONSE != 0
    }

    /// Set by the original initiator of the IKE SA.
    pub fn from_initiator(&self) -> bool {
        self.flags & crate::consts::flags::INITIATOR != 0
    }

    /// Parses the 28-byte header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<RawHeader, DecodeError> {
        let mut r = Reader::new(bytes, 0, "IKE header");
        let spi_i = r.u64()?;
        let spi_r = r.u64()?;
        let next_payload = r.u8()?;
        let version = r.u8()?;
        if version >> 4 != 2 {
            r.pos -= 1;
            return Err(r.err(DecodeErrorKind::UnsupportedMajorVersion(version >> 4)));
        }
        let exchange = r.u8()?;
        let flags = r.u8()?;
        let message_id = r.u32()?;
        let length = r.u32()?;
        if (length as usize) < HEADER_LEN {
            r.pos -= 4;
            return Err(r.err(DecodeErrorKind::BadLength {
                field: "Length",
                value: length as usize,
            }));
        }
        Ok(RawHeader {
            header: Header {
                spi_i,
                spi_r,
                exchange,
                flags,
                message_id,
            },
            next_payload,
            length,
        })
    }

    /// Appends the header with the given Next Payload and Length.
    pub fn emit(&self, next_payload: u8, length: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(next_payload);
        out.push(IKEV2_VERSION);
        out.push(self.exchange);
        out.push(self.flags);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
    }
}

/// A transform attribute: TV (2-byte value) or TLV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribute {
    Tv { kind: u16, value: u16 },
    Tlv { kind: u16, value: Vec<u8> },
}

/// One transform of a proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transform {
    pub kind: u8,
    pub id: u16,
    pub attributes: Vec<Attribute>,
}

impl Transform {
    pub fn new(kind: u8, id: u16) -> Self {
        Transform {
            kind,
            id,
            attributes: Vec::new(),
        }
    }

    /// The Key Length attribute in bits, if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Tv { kind, value } if *kind == crate::consts::attribute::KEY_LENGTH => {
                Some(*value)
            }
            _ => None,
        })
    }
}

/// A proposal substructure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub number: u8,
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

/// A traffic selector (types 7 and 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficSelector {
    pub ip_protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start: IpAddr,
    pub end: IpAddr,
}

/// Notify payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub kind: u16,
    pub data: Vec<u8>,
}

impl Notify {
    /// A notify about no particular SA.
    pub fn new(kind: u16, data: Vec<u8>) -> Self {
        Notify {
            protocol: 0,
            spi: Vec::new(),
            kind,
            data,
        }
    }
}

/// Every payload we encode and decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Sa(Vec<Proposal>),
    Ke {
        method: u16,
        data: Vec<u8>,
    },
    Nonce(Vec<u8>),
    Notify(Notify),
    Delete {
        protocol: u8,
        spi_size: u8,
        spis: Vec<Vec<u8>>,
    },
    IdI {
        id_type: u8,
        data: Vec<u8>,
    },
    IdR {
        id_type: u8,
        data: Vec<u8>,
    },
    Auth {
        method: u8,
        data: Vec<u8>,
    },
    TsI(Vec<TrafficSelector>),
    TsR(Vec<TrafficSelector>),
    /// Encrypted payload: `first` is the type of the first inner payload; `body` is
    /// IV | ciphertext | ICV.
    Sk {
        first: u8,
        body: Vec<u8>,
    },
    /// Encrypted fragment (RFC 7383).
    Skf {
        first: u8,
        number: u16,
        total: u16,
        body: Vec<u8>,
    },
    VendorId(Vec<u8>),
    /// A payload we do not interpret (CERT, CP, EAP, or an unknown type with C = 0).
    Other {
        kind: u8,
        critical: bool,
        body: Vec<u8>,
    },
}

impl Payload {
    /// The payload type number.
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Sa(_) => pt::SA,
            Payload::Ke { .. } => pt::KE,
            Payload::Nonce(_) => pt::NONCE,
            Payload::Notify(_) => pt::NOTIFY,
            Payload::Delete { .. } => pt::DELETE,
            Payload::IdI { .. } => pt::IDI,
            Payload::IdR { .. } => pt::IDR,
            Payload::Auth { .. } => pt::AUTH,
            Payload::TsI(_) => pt::TSI,
            Payload::TsR(_) => pt::TSR,
            Payload::Sk { .. } => pt::SK,
            Payload::Skf { .. } => pt::SKF,
            Payload::VendorId(_) => pt::VENDOR_ID,
            Payload::Other { kind, .. } => *kind,
        }
    }

    fn is_encrypted(&self) -> bool {
        matches!(self, Payload::Sk { .. } | Payload::Skf { .. })
    }

    /// Appends generic header and body; `next` is the following payload's type.
    pub fn emit(&self, next: u8, out: &mut Vec<u8>) {
        let start = out.len();
        let (next, critical) = match self {
            Payload::Sk { first, .. } | Payload::Skf { first, .. } => (*first, false),
            Payload::Other { critical, .. } => (next, *critical),
            _ => (next, false),
        };
        out.push(next);
        out.push(if critical { 0x80 } else { 0 });
        out.extend_from_slice(&[0, 0]);
        self.emit_body(out);
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Sa(proposals) => {
                for (i, p) in proposals.iter().enumerate() {
                    emit_proposal(p, i + 1 == proposals.len(), out);
                }
            }
            Payload::Ke { method, data } => {
                out.extend_from_slice(&method.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(data);
            }
            Payload::Nonce(d) | Payload::VendorId(d) => out.extend_from_slice(d),
            Payload::Notify(n) => {
                out.push(n.protocol);
                out.push(n.spi.len() as u8);
                out.extend_from_slice(&n.kind.to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Payload::Delete {
                protocol,
                spi_size,
                spis,
            } => {
                out.push(*protocol);
                out.push(*spi_size);
                out.extend_from_slice(&(spis.len() as u16).to_be_bytes());
                for s in spis {
                    out.extend_from_slice(s);
                }
            }
            Payload::IdI { id_type, data } | Payload::IdR { id_type, data } => {
                out.extend_from_slice(&[*id_type, 0, 0, 0]);
                out.extend_from_slice(data);
            }
            Payload::Auth { method, data } => {
                out.extend_from_slice(&[*method, 0, 0, 0]);
                out.extend_from_slice(data);
            }
            Payload::TsI(ts) | Payload::TsR(ts) => {
                out.extend_from_slice(&[ts.len() as u8, 0, 0, 0]);
                for t in ts {
                    emit_selector(t, out);
                }
            }
            Payload::Sk { body, .. } => out.extend_from_slice(body),
            Payload::Skf {
                number,
                total,
                body,
                ..
            } => {
                out.extend_from_slice(&number.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(body);
            }
            Payload::Other { body, .. } => out.extend_from_slice(body),
        }
    }
}

fn emit_proposal(p: &Proposal, last: bool, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[if last { 0 } else { 2 }, 0, 0, 0]);
    out.push(p.number);
    out.push(p.protocol);
    out.push(p.spi.len() as u8);
    out.push(p.transforms.len() as u8);
    out.extend_from_slice(&p.spi);
    for (i, t) in p.transforms.iter().enumerate() {
        let tstart = out.len();
        let last_t = i + 1 == p.transforms.len();
        out.extend_from_slice(&[if last_t { 0 } else { 3 }, 0, 0, 0, t.kind, 0]);
        out.extend_from_slice(&t.id.to_be_bytes());
        for a in &t.attributes {
            match a {
                Attribute::Tv { kind, value } => {
                    out.extend_from_slice(&(0x8000 | kind).to_be_bytes());
                    out.extend_from_slice(&value.to_be_bytes());
                }
                Attribute::Tlv { kind, value } => {
                    out.extend_from_slice(&(kind & 0x7fff).to_be_bytes());
                    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
                    out.extend_from_slice(value);
                }
            }
        }
        let tlen = (out.len() - tstart) as u16;
        out[tstart + 2..tstart + 4].copy_from_slice(&tlen.to_be_bytes());
    }
    let len = (out.len() - start) as u16;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn emit_selector(t: &TrafficSelector, out: &mut Vec<u8>) {
    let (kind, len) = match t.start {
        IpAddr::V4(_) => (ts_type::IPV4_ADDR_RANGE, 16u16),
        IpAddr::V6(_) => (ts_type::IPV6_ADDR_RANGE, 40u16),
    };
    out.push(kind);
    out.push(t.ip_protocol);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&t.start_port.to_be_bytes());
    out.extend_from_slice(&t.end_port.to_be_bytes());
    for a in [t.start, t.end] {
        match a {
            IpAddr::V4(v) => out.extend_from_slice(&v.octets()),
            IpAddr::V6(v) => out.extend_from_slice(&v.octets()),
        }
    }
}

/// Whether a payload type is one RFC 7296/7383 defines (so its critical bit is moot).
fn is_defined_type(t: u8) -> bool {
    (pt::SA..=pt::EAP).contains(&t) || t == pt::SKF
}

/// Parses a payload chain that starts with a payload of type `first` and must fill
/// `bytes` exactly. `base` is the offset of `bytes` in the message, for errors.
pub fn decode_payloads(first: u8, bytes: &[u8], base: usize) -> Result<Vec<Payload>, DecodeError> {
    let mut r = Reader::new(bytes, base, "payload chain");
    let mut next = first;
    // Room for a typical message's payloads at once, rather than growing by doubling.
    let mut payloads = Vec::with_capacity(8);
    while next != pt::NONE {
        let kind = next;
        r.context = context_of(kind);
        let header_at = r.pos;
        next = r.u8()?;
        let critical = r.u8()? & 0x80 != 0;
        let len = r.u16()? as usize;
        if len < GENERIC_HEADER_LEN {
            r.pos = header_at + 2;
            return Err(r.err(DecodeErrorKind::BadLength {
                field: "Payload Length",
                value: len,
            }));
        }
        let body = r.sub(len - GENERIC_HEADER_LEN, context_of(kind))?;
        if critical && !is_defined_type(kind) {
            r.pos = header_at;
            return Err(r.err(DecodeErrorKind::UnsupportedCriticalPayload(kind)));
        }
        let payload = decode_body(kind, next, critical, body)?;
        if payload.is_encrypted() {
            // For SK/SKF the Next Payload field names the first inner payload, and
            // nothing may follow: leftover bytes are reported as trailing.
            next = pt::NONE;
        }
        payloads.push(payload);
    }
    if r.remaining() > 0 {
        return Err(r.err(DecodeErrorKind::TrailingBytes(r.remaining())));
    }
    Ok(payloads)
}

fn context_of(kind: u8) -> &'static str {
    match kind {
        pt::SA => "SA payload",
        pt::KE => "KE payload",
        pt::NONCE => "Nonce payload",
        pt::NOTIFY => "Notify payload",
        pt::DELETE => "Delete payload",
        pt::IDI | pt::IDR => "ID payload",
        pt::AUTH => "AUTH payload",
        pt::TSI | pt::TSR => "TS payload",
        pt::SK => "SK payload",
        pt::SKF => "SKF payload",
        pt::VENDOR_ID => "Vendor ID payload",
        _ => "payload",
    }
}

fn decode_body(
    kind: u8,
    next: u8,
    critical: bool,
    mut r: Reader<'_>,
) -> Result<Payload, DecodeError> {
    Ok(match kind {
        pt::SA => Payload::Sa(decode_proposals(&mut r)?),
        pt::KE => {
            let method = r.u16()?;
            r.u16()?;
            Payload::Ke {
                method,
                data: r.rest().to_vec(),
            }
        }
        pt::NONCE => Payload::Nonce(r.rest().to_vec()),
        pt::NOTIFY => {
            let protocol = r.u8()?;
            let spi_size = r.u8()? as usize;
            let kind = r.u16()?;
            let spi = r.bytes(spi_size)?.to_vec();
            Payload::Notify(Notify {
                protocol,
                spi,
                kind,
                data: r.rest().to_vec(),
            })
        }
        pt::DELETE => {
            let protocol = r.u8()?;
            let spi_size = r.u8()?;
            let count = r.u16()? as usize;
            let mut spis = Vec::new();
            for _ in 0..count {
                spis.push(r.bytes(spi_size as usize)?.to_vec());
            }
            if r.remaining() > 0 {
                return Err(r.err(DecodeErrorKind::TrailingBytes(r.remaining())));
            }
            Payload::Delete {
                protocol,
                spi_size,
                spis,
            }
        }
        pt::IDI | pt::IDR => {
            let id_type = r.u8()?;
            r.bytes(3)?;
            let data = r.rest().to_vec();
            if kind == pt::IDI {
                Payload::IdI { id_type, data }
            } else {
                Payload::IdR { id_type, data }
            }
        }
        pt::AUTH => {
            let method = r.u8()?;
            r.bytes(3)?;
            Payload::Auth {
                method,
                data: r.rest().to_vec(),
            }
        }
        pt::TSI | pt::TSR => {
            let count = r.u8()? as usize;
            r.bytes(3)?;
            let mut ts = Vec::with_capacity(count.min(16));
            for _ in 0..count {
                ts.push(decode_selector(&mut r)?);
            }
            if r.remaining() > 0 {
                return Err(r.err(DecodeErrorKind::TrailingBytes(r.remaining())));
            }
            if kind == pt::TSI {
                Payload::TsI(ts)
            } else {
                Payload::TsR(ts)
            }
        }
        pt::SK => Payload::Sk {
            first: next,
            body: r.rest().to_vec(),
        },
        pt::SKF => {
            let number = r.u16()?;
            let total = r.u16()?;
            if number == 0 || number > total {
                r.pos -= 4;
                return Err(r.err(DecodeErrorKind::Invalid(
                    "SKF fragment number must be within 1..=total",
                )));
            }
            Payload::Skf {
                first: next,
                number,
                total,
                body: r.rest().to_vec(),
            }
        }
        pt::VENDOR_ID => Payload::VendorId(r.rest().to_vec()),
        _ => Payload::Other {
            kind,
            critical,
            body: r.rest().to_vec(),
        },
    })
}

fn decode_proposals(r: &mut Reader<'_>) -> Result<Vec<Proposal>, DecodeError> {
    let mut proposals = Vec::new();
    loop {
        let at = r.pos;
        let last = r.u8()?;
        r.u8()?;
        let len = r.u16()? as usize;
        if len < 8 {
            r.pos = at + 2;
            return Err(r.err(DecodeErrorKind::BadLength {
                field: "Proposal Length",
                value: len,
            }));
        }
        let mut p = r.sub(len - 4, "SA proposal")?;
        let number = p.u8()?;
        let protocol = p.u8()?;
        let spi_size = p.u8()? as usize;
        let count = p.u8()? as usize;
        let spi = p.bytes(spi_size)?.to_vec();
        let mut transforms = Vec::with_capacity(count);
        for i in 0..count {
            transforms.push(decode_transform(&mut p, i + 1 == count)?);
        }
        if p.remaining() > 0 {
            return Err(p.err(DecodeErrorKind::TrailingBytes(p.remaining())));
        }
        proposals.push(Proposal {
            number,
            protocol,
            spi,
            transforms,
        });
        match last {
            0 if r.remaining() == 0 => return Ok(proposals),
            2 if r.remaining() > 0 => continue,
            _ => {
                r.pos = at;
                return Err(r.err(DecodeErrorKind::Invalid(
                    "proposal Last Substruc disagrees with the payload length",
                )));
            }
        }
    }
}

fn decode_transform(r: &mut Reader<'_>, expect_last: bool) -> Result<Transform, DecodeError> {
    let at = r.pos;
    let last = r.u8()?;
    if last != if expect_last { 0 } else { 3 } {
        r.pos = at;
        return Err(r.err(DecodeErrorKind::Invalid(
            "transform Last Substruc disagrees with Num Transforms",
        )));
    }
    r.u8()?;
    let len = r.u16()? as usize;
    if len < 8 {
        r.pos = at + 2;
        return Err(r.err(DecodeErrorKind::BadLength {
            field: "Transform Length",
            value: len,
        }));
    }
    let mut t = r.sub(len - 4, "SA transform")?;
    let kind = t.u8()?;
    t.u8()?;
    let id = t.u16()?;
    let mut attributes = Vec::new();
    while t.remaining() > 0 {
        let af_kind = t.u16()?;
        let kind = af_kind & 0x7fff;
        if af_kind & 0x8000 != 0 {
            attributes.push(Attribute::Tv {
                kind,
                value: t.u16()?,
            });
        } else {
            let n = t.u16()? as usize;
            attributes.push(Attribute::Tlv {
                kind,
                value: t.bytes(n)?.to_vec(),
            });
        }
    }
    Ok(Transform {
        kind,
        id,
        attributes,
    })
}

fn decode_selector(r: &mut Reader<'_>) -> Result<TrafficSelector, DecodeError> {
    let at = r.pos;
    let kind = r.u8()?;
    let ip_protocol = r.u8()?;
    let len = r.u16()? as usize;
    let addr_len = match (kind, len) {
        (ts_type::IPV4_ADDR_RANGE, 16) => 4,
        (ts_type::IPV6_ADDR_RANGE, 40) => 16,
        _ => {
            r.pos = at;
            return Err(r.err(DecodeErrorKind::Invalid(
                "traffic selector is neither IPv4 (type 7, length 16) nor IPv6 (type 8, length 40)",
            )));
        }
    };
    let start_port = r.u16()?;
    let end_port = r.u16()?;
    let mut addr = || -> Result<IpAddr, DecodeError> {
        let b = r.bytes(addr_len)?;
        Ok(if addr_len == 4 {
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).expect("4 bytes")))
        } else {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes")))
        })
    };
    let start = addr()?;
    let end = addr()?;
    Ok(TrafficSelector {
        ip_protocol,
        start_port,
        end_port,
        start,
        end,
    })
}

/// A whole IKE message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Decodes one IKE message that fills `bytes` exactly (no non-ESP marker).
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let raw = Header::parse(bytes)?;
        let length = raw.length as usize;
        if length != bytes.len() {
            return Err(DecodeError {
                offset: 24,
                context: "IKE header",
                kind: DecodeErrorKind::BadLength {
                    field: "Length",
                    value: length,
                },
            });
        }
        let payloads = decode_payloads(raw.next_payload, &bytes[HEADER_LEN..], HEADER_LEN)?;
        Ok(Message {
            header: raw.header,
            payloads,
        })
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.header.emit(
            self.payloads.first().map_or(pt::NONE, Payload::kind),
            0,
            &mut out,
        );
        encode_payloads(&self.payloads, &mut out);
        let len = out.len() as u32;
        out[24..28].copy_from_slice(&len.to_be_bytes());
        out
    }

    /// The first notify of type `kind`.
    pub fn notify(&self, kind: u16) -> Option<&Notify> {
        find_notify(&self.payloads, kind)
    }
}

/// Appends a payload chain (each payload's Next Payload names the one after it).
pub fn encode_payloads(payloads: &[Payload], out: &mut Vec<u8>) {
    for (i, p) in payloads.iter().enumerate() {
        let next = payloads.get(i + 1).map_or(pt::NONE, Payload::kind);
        p.emit(next, out);
    }
}

/// The first notify of type `kind` in `payloads`.
pub fn find_notify(payloads: &[Payload], kind: u16) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == kind => Some(n),
        _ => None,
    })
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = crate::consts::exchange::name(self.exchange);
        write!(
            f,
            "{} {} MID {} SPIs {:016x}_i {:016x}_r",
            name.map_or_else(|| format!("exchange {}", self.exchange), str::to_string),
            if self.is_response() {
                "response"
            } else {
                "request"
            },
            self.message_id,
            self.spi_i,
            self.spi_r
        )
    }
}

#[cfg(test)]
mod tests;
