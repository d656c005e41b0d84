//! SK and SKF protection (RFC 5282 AES-GCM in IKEv2, RFC 7383 fragmentation) and the
//! reassembly of fragment sets.
//!
//! Messages carry no unprotected payloads before SK (we never send any); padding is the
//! single Pad Length byte, as strongSwan and libreswan send, and any padding is accepted
//! on receipt. IVs come from a per-key counter owned by the caller, so they never repeat
//! and a seed reproduces them.

use crate::consts::payload_type as pt;
use crate::crypto::{AeadAlg, CryptoError, CryptoProvider, ICV_LEN, IV_LEN};
use crate::message::{
    DecodeError, GENERIC_HEADER_LEN, HEADER_LEN, Header, Payload, decode_payloads,
};

/// SKF header: generic header, Fragment Number, Total Fragments.
const SKF_HEADER_LEN: usize = 8;
/// Bytes an SK-protected message adds to its inner payloads with AES-GCM-16:
/// IKE header, SK header, IV, Pad Length and ICV (28 + 4 + 8 + 1 + 16).
pub const SK_OVERHEAD: usize = HEADER_LEN + GENERIC_HEADER_LEN + IV_LEN + 1 + ICV_LEN;
/// The same for each SKF fragment (28 + 8 + 8 + 1 + 16).
pub const SKF_OVERHEAD: usize = HEADER_LEN + SKF_HEADER_LEN + IV_LEN + 1 + ICV_LEN;

/// The largest IKE message (no non-ESP marker) that fits an IP datagram of
/// `ip_limit` bytes, as strongSwan sizes fragments: the limit less the IP header (20
/// or 40), the UDP header (8) and, on port 4500, the non-ESP marker (4).
pub fn max_ike_len(ip_limit: usize, ipv6: bool, natt: bool) -> usize {
    ip_limit
        .saturating_sub(if ipv6 { 40 } else { 20 })
        .saturating_sub(8)
        .saturating_sub(if natt { 4 } else { 0 })
}

/// Why a protected message could not be opened. All of these mean "drop silently".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("message has no SK or SKF payload")]
    NotProtected,
    #[error("SK/SKF payload is shorter than IV and ICV")]
    TooShort,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("pad length exceeds the plaintext")]
    BadPadding,
}

fn iv_bytes(counter: &mut u64) -> [u8; IV_LEN] {
    let iv = counter.to_be_bytes();
    *counter += 1;
    iv
}

/// Seals `inner` (an encoded payload chain starting with a payload of type `first`) as
/// one SK-protected message. `key` is SK_e (key | salt); `iv_counter` advances by one.
pub fn seal(
    c: &dyn CryptoProvider,
    aead: AeadAlg,
    key: &[u8],
    iv_counter: &mut u64,
    header: &Header,
    first: u8,
    inner: &[u8],
) -> Vec<u8> {
    let total = SK_OVERHEAD + inner.len();
    let mut out = Vec::with_capacity(total);
    header.emit(pt::SK, total as u32, &mut out);
    out.push(first);
    out.push(0);
    out.extend_from_slice(&((total - HEADER_LEN) as u16).to_be_bytes());
    seal_body(c, aead, key, iv_counter, inner, &mut out);
    debug_assert_eq!(out.len(), total);
    out
}

/// Appends IV | encrypted (`inner` | Pad Length 0) | ICV to `out`, which holds the
/// message up to the SK or SKF payload's body (the AAD), encrypting in place.
fn seal_body(
    c: &dyn CryptoProvider,
    aead: AeadAlg,
    key: &[u8],
    iv_counter: &mut u64,
    inner: &[u8],
    out: &mut Vec<u8>,
) {
    let iv = iv_bytes(iv_counter);
    let aad_len = out.len();
    out.extend_from_slice(&iv);
    out.extend_from_slice(inner);
    out.push(0); // Pad Length
    let (aad, body) = out.split_at_mut(aad_len);
    let icv = c.seal_detached(aead, key, &iv, aad, &mut body[iv.len()..]);
    out.extend_from_slice(&icv);
}

/// Seals `inner` as one message if it fits `max_ike` bytes, or else as an SKF fragment
/// set (RFC 7383) whose fragments each fit. Returns the messages in fragment order.
#[allow(clippy::too_many_arguments)]
pub fn seal_fragmented(
    c: &dyn CryptoProvider,
    aead: AeadAlg,
    key: &[u8],
    iv_counter: &mut u64,
    header: &Header,
    first: u8,
    inner: &[u8],
    max_ike: usize,
) -> Vec<Vec<u8>> {
    if SK_OVERHEAD + inner.len() <= max_ike {
        return vec![seal(c, aead, key, iv_counter, header, first, inner)];
    }
    let cap = max_ike.saturating_sub(SKF_OVERHEAD).max(1);
    let chunks: Vec<&[u8]> = inner.chunks(cap).collect();
    let count = chunks.len() as u16;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let number = i as u16 + 1;
            let total = SKF_OVERHEAD + chunk.len();
            let mut out = Vec::with_capacity(total);
            header.emit(pt::SKF, total as u32, &mut out);
            out.push(if number == 1 { first } else { pt::NONE });
            out.push(0);
            out.extend_from_slice(&((total - HEADER_LEN) as u16).to_be_bytes());
            out.extend_from_slice(&number.to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
            seal_body(c, aead, key, iv_counter, chunk, &mut out);
            out
        })
        .collect()
}

/// A protected message after decryption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// An SK message: the type of the first inner payload and the inner chain.
    Whole {
        header: Header,
        first: u8,
        inner: Vec<u8>,
    },
    /// One SKF fragment.
    Fragment {
        header: Header,
        number: u16,
        total: u16,
        first: u8,
        chunk: Vec<u8>,
    },
}

/// Authenticates and decrypts one SK or SKF message with `key` (the peer's SK_e).
pub fn open(
    c: &dyn CryptoProvider,
    aead: AeadAlg,
    key: &[u8],
    bytes: &[u8],
) -> Result<Opened, OpenError> {
    let mut msg = crate::message::Message::decode(bytes)?;
    // The SK or SKF payload is last; its body (decoded into a vector of its own) is
    // decrypted in place.
    let Some(last) = msg.payloads.pop() else {
        return Err(OpenError::NotProtected);
    };
    let (mut buf, frag) = match last {
        Payload::Sk { first, body } => (body, (first, None)),
        Payload::Skf {
            first,
            number,
            total,
            body,
        } => (body, (first, Some((number, total)))),
        _ => return Err(OpenError::NotProtected),
    };
    if buf.len() < IV_LEN + ICV_LEN + 1 {
        return Err(OpenError::TooShort);
    }
    // AAD: everything from the IKE header through the SK/SKF header.
    let aad_len = bytes.len() - buf.len();
    let iv: [u8; IV_LEN] = buf[..IV_LEN].try_into().expect("length checked");
    buf.drain(..IV_LEN);
    c.open(aead, key, &iv, &bytes[..aad_len], &mut buf)?;
    let pad = *buf.last().ok_or(OpenError::BadPadding)? as usize;
    if pad + 1 > buf.len() {
        return Err(OpenError::BadPadding);
    }
    buf.truncate(buf.len() - pad - 1);
    Ok(match frag {
        (first, None) => Opened::Whole {
            header: msg.header,
            first,
            inner: buf,
        },
        (first, Some((number, total))) => Opened::Fragment {
            header: msg.header,
            number,
            total,
            first,
            chunk: buf,
        },
    })
}

/// Parses a decrypted inner payload chain.
pub fn decode_inner(first: u8, inner: &[u8]) -> Result<Vec<Payload>, DecodeError> {
    // Offsets in errors count from the start of the plaintext.
    decode_payloads(first, inner, 0)
}

/// RFC 9242's `A | P` for IntAuth: the message as if it had been sent unfragmented and
/// without unprotected payloads, i.e. the IKE header with Next Payload = SK and
/// Length = 32 + len(P), the SK header with Payload Length = 4 + len(P), then `P`.
pub fn intauth_input(header: &Header, first: u8, inner: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(HEADER_LEN + GENERIC_HEADER_LEN + inner.len());
    header.emit(
        pt::SK,
        (HEADER_LEN + GENERIC_HEADER_LEN + inner.len()) as u32,
        &mut a,
    );
    a.push(first);
    a.push(0);
    a.extend_from_slice(&((GENERIC_HEADER_LEN + inner.len()) as u16).to_be_bytes());
    a.extend_from_slice(inner);
    a
}

/// Limits of one reassembly buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyLimits {
    pub max_fragments: u16,
    pub max_bytes: usize,
    /// Incomplete sets older than this (in nanoseconds) are discarded.
    pub timeout_ns: u64,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_fragments: 64,
            max_bytes: 64 * 1024,
            timeout_ns: 30_000_000_000,
        }
    }
}

/// What a fragment did to the reassembly buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reassembly {
    /// Stored; more fragments are needed.
    Incomplete,
    /// All fragments are in: the inner chain of the whole message.
    Complete {
        header: Header,
        first: u8,
        inner: Vec<u8>,
    },
    /// Already have this fragment number: ignored.
    Duplicate,
    /// Total Fragments lower than the set being collected: dropped (RFC 7383 2.6.2).
    StaleTotal,
    /// The set would exceed the limits: everything stored was discarded.
    OverLimit,
}

struct Pending {
    header: Header,
    total: u16,
    first: u8,
    chunks: Vec<Option<Vec<u8>>>,
    bytes: usize,
    started_ns: u64,
}

/// Collects the authenticated fragments of one message (one buffer per direction of an
/// IKE SA; the caller passes only fragments of the Message ID it currently expects).
#[derive(Default)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    /// Boxed: an IKE SA holds two reassemblers for its whole life, and a fragment set
    /// is in them for a round trip now and then.
    pending: Option<Box<Pending>>,
    expired: u64,
}

impl Reassembler {
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            pending: None,
            expired: 0,
        }
    }

    /// Adds one authenticated fragment received at `now_ns`.
    pub fn insert(
        &mut self,
        now_ns: u64,
        header: Header,
        number: u16,
        total: u16,
        first: u8,
        chunk: Vec<u8>,
    ) -> Reassembly {
        self.expire(now_ns);
        if total == 0 || number == 0 || number > total || total > self.limits.max_fragments {
            self.pending = None;
            return Reassembly::OverLimit;
        }
        let restart = match &self.pending {
            None => true,
            // Another message: this buffer belongs to the newest one.
            Some(p)
                if p.header.message_id != header.message_id
                    || p.header.exchange != header.exchange =>
            {
                true
            }
            // The sender re-fragmented smaller: start over with the new total.
            Some(p) if total > p.total => true,
            Some(p) if total < p.total => return Reassembly::StaleTotal,
            Some(_) => false,
        };
        if restart {
            self.pending = Some(Box::new(Pending {
                header,
                total,
                first: pt::NONE,
                chunks: vec![None; total as usize],
                bytes: 0,
                started_ns: now_ns,
            }));
        }
        let p = self.pending.as_mut().expect("just ensured");
        let slot = &mut p.chunks[number as usize - 1];
        if slot.is_some() {
            return Reassembly::Duplicate;
        }
        p.bytes += chunk.len();
        if p.bytes > self.limits.max_bytes {
            self.pending = None;
            return Reassembly::OverLimit;
        }
        *slot = Some(chunk);
        if number == 1 {
            p.first = first;
        }
        if p.chunks.iter().any(Option::is_none) {
            return Reassembly::Incomplete;
        }
        let p = self.pending.take().expect("complete set");
        let mut inner = Vec::with_capacity(p.bytes);
        for chunk in p.chunks.into_iter().flatten() {
            inner.extend_from_slice(&chunk);
        }
        Reassembly::Complete {
            header: p.header,
            first: p.first,
            inner,
        }
    }

    /// Discards an incomplete set older than the timeout.
    pub fn expire(&mut self, now_ns: u64) {
        if let Some(p) = &self.pending
            && now_ns.saturating_sub(p.started_ns) > self.limits.timeout_ns
        {
            self.pending = None;
            self.expired += 1;
        }
    }

    /// Incomplete sets discarded by the timeout so far.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    pub fn is_collecting(&self) -> bool {
        self.pending.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{exchange, flags};
    use crate::crypto::{KeMethod, ModelCrypto, RealCrypto};
    use crate::message::encode_payloads;
    use proptest::prelude::*;

    fn header(mid: u32) -> Header {
        Header {
            spi_i: 0xaaaa,
            spi_r: 0xbbbb,
            exchange: exchange::IKE_INTERMEDIATE,
            flags: flags::INITIATOR,
            message_id: mid,
        }
    }

    fn ke_inner(method: KeMethod, initiator: bool) -> Vec<u8> {
        let len = if initiator {
            method.initiator_len()
        } else {
            method.responder_len()
        };
        let mut out = Vec::new();
        encode_payloads(
            &[Payload::Ke {
                method: method.id(),
                data: vec![0x5a; len],
            }],
            &mut out,
        );
        out
    }

    const KEY: [u8; 36] = [3; 36];

    /// One KE payload in SK: IKE header 28, SK header 4, IV 8, the KE payload (8 + the
    /// public key or ciphertext: 1184/1088, 1568/1568, 800/768 bytes), pad length 1,
    /// ICV 16.
    #[test]
    fn intermediate_sizes_match_the_arithmetic() {
        let c = RealCrypto;
        let mut iv = 0;
        for (method, req, resp) in [
            (KeMethod::MlKem768, 1249, 1153),
            (KeMethod::MlKem1024, 1633, 1633),
            (KeMethod::MlKem512, 865, 833),
        ] {
            let m = seal(
                &c,
                AeadAlg::AesGcm16_256,
                &KEY,
                &mut iv,
                &header(1),
                pt::KE,
                &ke_inner(method, true),
            );
            assert_eq!(m.len(), req, "{method:?} request");
            let m = seal(
                &c,
                AeadAlg::AesGcm16_256,
                &KEY,
                &mut iv,
                &header(1),
                pt::KE,
                &ke_inner(method, false),
            );
            assert_eq!(m.len(), resp, "{method:?} response");
        }
    }

    #[test]
    fn fragment_counts_match_the_arithmetic() {
        // (IP limit, IPv6, NAT-T, inner KE payload) -> fragments and their inner sizes.
        let c = ModelCrypto;
        type Case = (usize, bool, bool, KeMethod, bool, &'static [usize]);
        let cases: &[Case] = &[
            (1280, false, false, KeMethod::MlKem768, true, &[1192]),
            (1280, false, false, KeMethod::MlKem1024, true, &[1191, 385]),
            (1280, true, false, KeMethod::MlKem768, true, &[1171, 21]),
            (1280, true, false, KeMethod::MlKem768, false, &[1096]),
            (1500, false, false, KeMethod::MlKem1024, false, &[1411, 165]),
            (1500, true, false, KeMethod::MlKem1024, true, &[1391, 185]),
            (
                576,
                false,
                false,
                KeMethod::MlKem768,
                true,
                &[487, 487, 218],
            ),
            (
                576,
                false,
                false,
                KeMethod::MlKem768,
                false,
                &[487, 487, 122],
            ),
            (
                576,
                false,
                false,
                KeMethod::MlKem1024,
                true,
                &[487, 487, 487, 115],
            ),
            (1280, false, true, KeMethod::MlKem768, true, &[1187, 5]),
        ];
        for &(limit, v6, natt, method, initiator, expect) in cases {
            let max = max_ike_len(limit, v6, natt);
            let mut iv = 0;
            let msgs = seal_fragmented(
                &c,
                AeadAlg::AesGcm16_256,
                &KEY,
                &mut iv,
                &header(1),
                pt::KE,
                &ke_inner(method, initiator),
                max,
            );
            let sizes: Vec<usize> = msgs
                .iter()
                .map(|m| {
                    m.len()
                        - if msgs.len() == 1 {
                            SK_OVERHEAD
                        } else {
                            SKF_OVERHEAD
                        }
                })
                .collect();
            assert_eq!(
                sizes, expect,
                "limit {limit} v6 {v6} natt {natt} {method:?}"
            );
            assert!(msgs.iter().all(|m| m.len() <= max));
            assert_eq!(iv, msgs.len() as u64, "one fresh IV per message");
        }
        // ML-KEM-1024 at 1280/IPv4: IKE messages of 1252 and 446 bytes.
        let mut iv = 0;
        let msgs = seal_fragmented(
            &c,
            AeadAlg::AesGcm16_256,
            &KEY,
            &mut iv,
            &header(1),
            pt::KE,
            &ke_inner(KeMethod::MlKem1024, true),
            max_ike_len(1280, false, false),
        );
        assert_eq!(msgs.iter().map(Vec::len).collect::<Vec<_>>(), [1252, 446]);
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let c = RealCrypto;
        let inner = ke_inner(KeMethod::MlKem1024, true);
        let mut iv = 7;
        let msgs = seal_fragmented(
            &c,
            AeadAlg::AesGcm16_256,
            &KEY,
            &mut iv,
            &header(3),
            pt::KE,
            &inner,
            548,
        );
        assert_eq!(msgs.len(), 4);
        let mut r = Reassembler::default();
        let mut done = None;
        for (i, m) in msgs.iter().enumerate().rev() {
            let Opened::Fragment {
                header,
                number,
                total,
                first,
                chunk,
            } = open(&c, AeadAlg::AesGcm16_256, &KEY, m).unwrap()
            else {
                panic!("expected a fragment")
            };
            assert_eq!((number as usize, total), (i + 1, 4));
            match r.insert(0, header, number, total, first, chunk) {
                Reassembly::Incomplete => {}
                Reassembly::Complete { first, inner, .. } => done = Some((first, inner)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(done, Some((pt::KE, inner.clone())));
        // Any altered byte fails authentication, header bytes included (they are AAD).
        for at in [0, 19, 30, 40, msgs[0].len() - 1] {
            let mut bad = msgs[0].clone();
            bad[at] ^= 0x10;
            assert!(
                open(&c, AeadAlg::AesGcm16_256, &KEY, &bad).is_err(),
                "byte {at}"
            );
        }
        // Whole message; the peer's different key fails.
        let whole = seal(
            &c,
            AeadAlg::AesGcm16_256,
            &KEY,
            &mut iv,
            &header(3),
            pt::KE,
            &inner,
        );
        assert!(matches!(
            open(&c, AeadAlg::AesGcm16_256, &KEY, &whole).unwrap(),
            Opened::Whole { first: pt::KE, .. }
        ));
        assert_eq!(
            open(&c, AeadAlg::AesGcm16_256, &[4; 36], &whole),
            Err(OpenError::Crypto(CryptoError::Integrity))
        );
        let Opened::Whole { inner: got, .. } =
            open(&c, AeadAlg::AesGcm16_256, &KEY, &whole).unwrap()
        else {
            unreachable!()
        };
        assert_eq!(decode_inner(pt::KE, &got).unwrap().len(), 1);
    }

    #[test]
    fn intauth_input_rewrites_lengths_and_next_payload() {
        // ML-KEM-768 request: P = 8 + 1184 = 1192 bytes, A = 28 + 4 = 32 bytes,
        // IKE Length 1224 and SK Payload Length 1196 (on the wire 1249 and 1221).
        let inner = ke_inner(KeMethod::MlKem768, true);
        let ap = intauth_input(&header(1), pt::KE, &inner);
        assert_eq!(ap.len(), 32 + 1192);
        assert_eq!(ap[16], pt::SK);
        assert_eq!(u32::from_be_bytes(ap[24..28].try_into().unwrap()), 1224);
        assert_eq!(
            (ap[28], u16::from_be_bytes([ap[30], ap[31]])),
            (pt::KE, 1196)
        );
        assert_eq!(&ap[32..], &inner[..]);
    }

    fn frag(
        r: &mut Reassembler,
        now: u64,
        mid: u32,
        n: u16,
        total: u16,
        data: &[u8],
    ) -> Reassembly {
        r.insert(
            now,
            header(mid),
            n,
            total,
            if n == 1 { pt::KE } else { 0 },
            data.to_vec(),
        )
    }

    #[test]
    fn reassembly_follows_rfc7383() {
        let mut r = Reassembler::default();
        assert_eq!(frag(&mut r, 0, 1, 2, 3, b"b"), Reassembly::Incomplete);
        assert_eq!(frag(&mut r, 0, 1, 2, 3, b"b"), Reassembly::Duplicate);
        // Lower total: dropped. Higher total: the sender re-fragmented, start over.
        assert_eq!(frag(&mut r, 0, 1, 1, 2, b"x"), Reassembly::StaleTotal);
        assert_eq!(frag(&mut r, 0, 1, 1, 4, b"A"), Reassembly::Incomplete);
        for (n, d) in [(2, b"B"), (3, b"C")] {
            assert_eq!(frag(&mut r, 0, 1, n, 4, d), Reassembly::Incomplete);
        }
        match frag(&mut r, 0, 1, 4, 4, b"D") {
            Reassembly::Complete { first, inner, .. } => {
                assert_eq!((first, inner), (pt::KE, b"ABCD".to_vec()))
            }
            other => panic!("{other:?}"),
        }
        // Incomplete sets expire.
        assert_eq!(frag(&mut r, 0, 2, 1, 2, b"A"), Reassembly::Incomplete);
        r.expire(31_000_000_000);
        assert!(!r.is_collecting());
        assert_eq!(r.expired(), 1);
        // Limits.
        let mut small = Reassembler::new(ReassemblyLimits {
            max_fragments: 4,
            max_bytes: 3,
            timeout_ns: 1,
        });
        assert_eq!(frag(&mut small, 0, 1, 1, 5, b"A"), Reassembly::OverLimit);
        assert_eq!(frag(&mut small, 0, 1, 1, 2, b"AAAA"), Reassembly::OverLimit);
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = open(&ModelCrypto, AeadAlg::AesGcm16_256, &KEY, &bytes);
        }

        #[test]
        fn reassembler_never_panics(ops in prop::collection::vec((0u32..3, any::<u16>(), any::<u16>(), 0usize..100), 0..50)) {
            let mut r = Reassembler::default();
            for (i, (mid, n, total, len)) in ops.into_iter().enumerate() {
                let _ = r.insert(i as u64, header(mid), n, total, 0, vec![0; len]);
            }
        }

        #[test]
        fn any_split_reassembles(inner in prop::collection::vec(any::<u8>(), 1..3000), max in 300usize..1500, order in any::<u64>()) {
            let c = ModelCrypto;
            let mut iv = 0;
            let mut msgs = seal_fragmented(&c, AeadAlg::AesGcm16_128, &[1; 20], &mut iv, &header(9), pt::KE, &inner, max);
            // Deliver in a scrambled order, with a duplicate.
            let k = msgs.len();
            msgs.rotate_left((order as usize) % k);
            msgs.push(msgs[0].clone());
            let mut r = Reassembler::default();
            let mut got = None;
            for m in &msgs {
                match open(&c, AeadAlg::AesGcm16_128, &[1; 20], m).unwrap() {
                    Opened::Whole { inner, .. } => got = Some(inner),
                    Opened::Fragment { header, number, total, first, chunk } => {
                        if let Reassembly::Complete { inner, first, .. } = r.insert(0, header, number, total, first, chunk) {
                            prop_assert_eq!(first, pt::KE);
                            got = Some(inner);
                        }
                    }
                }
            }
            prop_assert_eq!(got, Some(inner));
        }
    }
}
