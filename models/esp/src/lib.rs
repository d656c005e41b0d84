//! ESP (RFC 4303) with AES-GCM-16 (RFC 4106): the Child SA data plane, sans-IO.
//!
//! ```text
//! SPI(4) | Sequence Number(4) | IV(8) | enc(payload | padding | pad length | next header) | ICV(16)
//! ```
//! The GCM nonce is salt | IV; the AAD is SPI | Seq (or SPI | Seq high | Seq low with
//! ESN, the high half never sent). The IV is the 64-bit sequence counter, as
//! strongSwan's userspace ESP does, so it never repeats under one key. Padding aligns
//! payload + padding + 2 to 4 bytes with the bytes 1, 2, 3.
//!
//! Each SA expands its AES key schedule once, on its first packet (`PreparedAead`), as
//! a kernel SA does, instead of per packet.
//!
//! Inbound SAs keep an anti-replay window (RFC 4303 section 3.4.3; default 64 packets),
//! updated only after the ICV verifies. Lifetimes by bytes and packets are counted on
//! both directions; time limits belong to the driver (it owns the clock).

use std::ops::Range;

use ikev2::crypto::{AeadAlg, AeadKey, CryptoProvider, ICV_LEN, IV_LEN, PreparedAead};
use serde::{Deserialize, Serialize};

/// Bytes of SPI, sequence number and IV before the ciphertext.
pub const HEADER_LEN: usize = 8 + IV_LEN;
/// Next Header values of tunnel mode.
pub const NEXT_IPV4: u8 = 4;
pub const NEXT_IPV6: u8 = 41;

/// Soft and hard limits of one SA, `None` for no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifetime {
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
}

/// What crossing a limit means for the driver (in order of urgency).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LifetimeState {
    Fine,
    /// Time to rekey.
    Soft,
    /// The SA must not carry more traffic.
    Hard,
}

/// Why a packet was not sent or not accepted. Every one is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum EspError {
    #[error("packet too short or not for this SA")]
    Malformed,
    #[error("sequence number already seen or left of the replay window")]
    Replay,
    #[error("integrity check failed")]
    Integrity,
    #[error("padding is not 1, 2, 3, ...")]
    BadPadding,
    #[error("the SA reached its hard lifetime")]
    Expired,
    #[error("the sequence number would wrap")]
    SequenceExhausted,
}

/// Counters of one SA.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EspStats {
    pub packets: u64,
    pub bytes: u64,
    pub replayed: u64,
    pub integrity_failures: u64,
    pub malformed: u64,
    pub expired: u64,
}

/// An outbound SA.
pub struct Outbound {
    pub spi: u32,
    aead: AeadAlg,
    key: AeadKey,
    /// The key with its schedule expanded, made on first use by the provider given.
    prepared: Option<Box<dyn PreparedAead>>,
    esn: bool,
    /// The last sequence number used (0 before the first packet).
    seq: u64,
    pub lifetime: Lifetime,
    pub stats: EspStats,
}

impl Outbound {
    /// `key` is the key followed by the 4-byte salt (the KEYMAT slice for this direction).
    pub fn new(spi: u32, aead: AeadAlg, key: AeadKey, esn: bool, lifetime: Lifetime) -> Self {
        assert_eq!(key.len(), aead.keymat_len(), "ESP key must be key | salt");
        Outbound {
            spi,
            aead,
            key,
            prepared: None,
            esn,
            seq: 0,
            lifetime,
            stats: EspStats::default(),
        }
    }

    /// Encapsulates an inner packet (tunnel mode: an IP packet with `next_header` 4 or 41).
    pub fn seal(
        &mut self,
        c: &dyn CryptoProvider,
        inner: &[u8],
        next_header: u8,
    ) -> Result<Vec<u8>, EspError> {
        if state(&self.lifetime, &self.stats) == LifetimeState::Hard {
            self.stats.expired += 1;
            return Err(EspError::Expired);
        }
        if self.seq >= self.seq_limit() {
            return Err(EspError::SequenceExhausted);
        }
        self.seq += 1;
        let seq = self.seq;
        let pad = (4 - (inner.len() + 2) % 4) % 4;
        let mut out = Vec::with_capacity(HEADER_LEN + inner.len() + pad + 2 + ICV_LEN);
        out.extend_from_slice(&self.spi.to_be_bytes());
        out.extend_from_slice(&(seq as u32).to_be_bytes());
        let iv = seq.to_be_bytes();
        out.extend_from_slice(&iv);
        // Encrypted in place after the header: inner | padding 1, 2, ... | pad length |
        // next header; then the ICV.
        out.extend_from_slice(inner);
        out.extend(1..=pad as u8);
        out.push(pad as u8);
        out.push(next_header);
        let (aead, key) = (self.aead, &self.key);
        let (aad, aad_len) = aad(self.spi, seq, self.esn);
        let icv = self
            .prepared
            .get_or_insert_with(|| c.prepare(aead, key))
            .seal_detached(&iv, &aad[..aad_len], &mut out[HEADER_LEN..]);
        out.extend_from_slice(&icv);
        self.stats.packets += 1;
        self.stats.bytes += inner.len() as u64;
        Ok(out)
    }

    /// The configured limits, and the sequence counter's: an SA must not cycle its
    /// sequence number (RFC 4303 section 3.3.3), so it asks for a rekey when a
    /// sixteenth of its numbers are left (2^28 packets without ESN) and carries nothing
    /// once they are gone.
    pub fn lifetime_state(&self) -> LifetimeState {
        let limit = self.seq_limit();
        let by_sequence = if self.seq >= limit {
            LifetimeState::Hard
        } else if limit - self.seq <= limit / 16 {
            LifetimeState::Soft
        } else {
            LifetimeState::Fine
        };
        state(&self.lifetime, &self.stats).max(by_sequence)
    }

    /// The last sequence number this SA may use.
    fn seq_limit(&self) -> u64 {
        if self.esn { u64::MAX } else { u32::MAX as u64 }
    }

    /// Counts `packets` packets of `bytes` inner bytes in all as if each were sealed,
    /// without encrypting them (a simulator's aggregate traffic mode): lifetimes and the
    /// sequence counter advance exactly as `seal` would advance them.
    pub fn account(&mut self, packets: u64, bytes: u64) -> Result<(), EspError> {
        if state(&self.lifetime, &self.stats) == LifetimeState::Hard {
            self.stats.expired += packets;
            return Err(EspError::Expired);
        }
        if self.seq_limit() - self.seq < packets {
            return Err(EspError::SequenceExhausted);
        }
        self.seq += packets;
        self.stats.packets += packets;
        self.stats.bytes += bytes;
        Ok(())
    }
}

fn aad(spi: u32, seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut a = [0; 12];
    a[..4].copy_from_slice(&spi.to_be_bytes());
    let low = if esn {
        a[4..8].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
        8
    } else {
        4
    };
    a[low..low + 4].copy_from_slice(&(seq as u32).to_be_bytes());
    (a, low + 4)
}

fn state(l: &Lifetime, s: &EspStats) -> LifetimeState {
    let over = |limit: Option<u64>, value: u64| limit.is_some_and(|l| value >= l);
    if over(l.hard_bytes, s.bytes) || over(l.hard_packets, s.packets) {
        LifetimeState::Hard
    } else if over(l.soft_bytes, s.bytes) || over(l.soft_packets, s.packets) {
        LifetimeState::Soft
    } else {
        LifetimeState::Fine
    }
}

/// The anti-replay window of RFC 4303 section 3.4.3 (and Appendix A for ESN): the
/// highest authenticated sequence number and a bitmap of the `size` below it.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    size: u64,
    top: u64,
    /// Bit i set: `top - i` was received (bit 0 is `top` itself).
    bits: Vec<u64>,
}

impl ReplayWindow {
    pub fn new(size: u64) -> Self {
        let size = size.max(32);
        ReplayWindow {
            size,
            top: 0,
            bits: vec![0; size.div_ceil(64) as usize],
        }
    }

    fn get(&self, i: u64) -> bool {
        self.bits[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    fn set(&mut self, i: u64) {
        self.bits[(i / 64) as usize] |= 1 << (i % 64);
    }

    /// The full 64-bit sequence number a received low half stands for (RFC 4303
    /// Appendix A): the candidate nearest to the window.
    pub fn infer(&self, low: u32, esn: bool) -> u64 {
        if !esn {
            return low as u64;
        }
        let top_hi = self.top >> 32;
        let top_lo = self.top as u32;
        let bottom = self.top.saturating_sub(self.size - 1) as u32;
        let hi = if top_lo >= self.size as u32 - 1 {
            // The window lies within one 2^32 block.
            if low >= bottom { top_hi } else { top_hi + 1 }
        } else if low >= bottom {
            top_hi.saturating_sub(1)
        } else {
            top_hi
        };
        (hi << 32) | low as u64
    }

    /// Whether `seq` may be accepted (checked before decryption, as a fast reject).
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            return true;
        }
        let back = self.top - seq;
        back < self.size && !self.get(back)
    }

    /// Records `seq` after its ICV verified.
    pub fn accept(&mut self, seq: u64) {
        if seq > self.top {
            let shift = seq - self.top;
            if shift >= self.size {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                // Shift the bitmap towards higher indices by `shift`, a word at a time.
                // Bits pushed past `size` are never read (`check` looks below `size`).
                let (ws, bs) = ((shift / 64) as usize, (shift % 64) as u32);
                for i in (0..self.bits.len()).rev() {
                    let word = |j: usize| i.checked_sub(j).map_or(0, |k| self.bits[k]);
                    let carry = if bs == 0 {
                        0
                    } else {
                        word(ws + 1) >> (64 - bs)
                    };
                    self.bits[i] = (word(ws) << bs) | carry;
                }
            }
            self.top = seq;
            self.set(0);
        } else {
            let back = self.top - seq;
            self.set(back);
        }
    }
}

/// An inbound SA.
pub struct Inbound {
    pub spi: u32,
    aead: AeadAlg,
    key: AeadKey,
    prepared: Option<Box<dyn PreparedAead>>,
    esn: bool,
    window: ReplayWindow,
    pub lifetime: Lifetime,
    pub stats: EspStats,
}

impl Inbound {
    pub fn new(
        spi: u32,
        aead: AeadAlg,
        key: AeadKey,
        esn: bool,
        window: u64,
        lifetime: Lifetime,
    ) -> Self {
        assert_eq!(key.len(), aead.keymat_len(), "ESP key must be key | salt");
        Inbound {
            spi,
            aead,
            key,
            prepared: None,
            esn,
            window: ReplayWindow::new(window),
            lifetime,
            stats: EspStats::default(),
        }
    }

    /// Decapsulates one ESP packet; returns (a copy of) the inner packet and its Next
    /// Header.
    pub fn open(
        &mut self,
        c: &dyn CryptoProvider,
        packet: &[u8],
    ) -> Result<(Vec<u8>, u8), EspError> {
        let mut buf = packet.to_vec();
        let (inner, next) = self.open_in_place(c, &mut buf)?;
        Ok((buf[inner].to_vec(), next))
    }

    /// Like [`open`](Self::open), but decrypts where the packet lies and returns where
    /// in it the inner packet is: what a receiver that owns the datagram does.
    pub fn open_in_place(
        &mut self,
        c: &dyn CryptoProvider,
        packet: &mut [u8],
    ) -> Result<(Range<usize>, u8), EspError> {
        let r = self.open_inner(c, packet);
        match r {
            Err(EspError::Replay) => self.stats.replayed += 1,
            Err(EspError::Integrity) => self.stats.integrity_failures += 1,
            Err(EspError::Malformed | EspError::BadPadding) => self.stats.malformed += 1,
            Err(EspError::Expired) => self.stats.expired += 1,
            _ => {}
        }
        r
    }

    fn open_inner(
        &mut self,
        c: &dyn CryptoProvider,
        packet: &mut [u8],
    ) -> Result<(Range<usize>, u8), EspError> {
        if packet.len() < HEADER_LEN + 2 + ICV_LEN || packet[..4] != self.spi.to_be_bytes() {
            return Err(EspError::Malformed);
        }
        if state(&self.lifetime, &self.stats) == LifetimeState::Hard {
            return Err(EspError::Expired);
        }
        let low = u32::from_be_bytes(packet[4..8].try_into().expect("4 bytes"));
        let seq = self.window.infer(low, self.esn);
        if !self.window.check(seq) {
            return Err(EspError::Replay);
        }
        let iv: [u8; IV_LEN] = packet[8..HEADER_LEN].try_into().expect("8 bytes");
        let body_len = packet.len() - HEADER_LEN - ICV_LEN;
        let (body, tag) = packet[HEADER_LEN..].split_at_mut(body_len);
        let tag: &[u8; ICV_LEN] = (&*tag).try_into().expect("16 bytes");
        let (aead, key) = (self.aead, &self.key);
        let (aad, aad_len) = aad(self.spi, seq, self.esn);
        self.prepared
            .get_or_insert_with(|| c.prepare(aead, key))
            .open_detached(&iv, &aad[..aad_len], body, tag)
            .map_err(|_| EspError::Integrity)?;
        self.window.accept(seq);
        // The trailer: padding 1, 2, 3, ..., its length, the next header.
        let [.., pad, next] = *body else {
            return Err(EspError::Malformed);
        };
        let end = (body.len() - 2)
            .checked_sub(pad as usize)
            .ok_or(EspError::BadPadding)?;
        if (body[end..body.len() - 2].iter().enumerate()).any(|(i, &b)| b as usize != i + 1) {
            return Err(EspError::BadPadding);
        }
        self.stats.packets += 1;
        self.stats.bytes += end as u64;
        Ok((HEADER_LEN..HEADER_LEN + end, next))
    }

    pub fn lifetime_state(&self) -> LifetimeState {
        state(&self.lifetime, &self.stats)
    }

    /// The inbound half of [`Outbound::account`]: counts packets that arrived intact
    /// without decrypting them (the replay window is not involved).
    pub fn account(&mut self, packets: u64, bytes: u64) -> Result<(), EspError> {
        if state(&self.lifetime, &self.stats) == LifetimeState::Hard {
            self.stats.expired += packets;
            return Err(EspError::Expired);
        }
        self.stats.packets += packets;
        self.stats.bytes += bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikev2::crypto::RealCrypto;
    use proptest::prelude::*;

    /// Near the end of its sequence numbers an SA asks for a rekey, and at the end it
    /// is expired; with ESN the same count is nowhere near the end.
    #[test]
    fn an_sa_near_sequence_exhaustion_asks_for_a_rekey() {
        let (mut out, _) = pair(false, 64);
        let sixteenth = u32::MAX as u64 / 16;
        out.account(u32::MAX as u64 - sixteenth - 1, 0).unwrap();
        assert_eq!(out.lifetime_state(), LifetimeState::Fine);
        out.account(1, 0).unwrap();
        assert_eq!(out.lifetime_state(), LifetimeState::Soft);
        out.account(sixteenth, 0).unwrap();
        assert_eq!(out.lifetime_state(), LifetimeState::Hard);
        assert_eq!(
            out.seal(&RealCrypto, &[0; 40], NEXT_IPV4),
            Err(EspError::SequenceExhausted)
        );
        let (mut esn, _) = pair(true, 64);
        esn.account(u32::MAX as u64, 0).unwrap();
        assert_eq!(esn.lifetime_state(), LifetimeState::Fine);
    }

    fn pair(esn: bool, window: u64) -> (Outbound, Inbound) {
        let key = AeadKey::new(&[7u8; 36]);
        (
            Outbound::new(
                0x1234_5678,
                AeadAlg::AesGcm16_256,
                key,
                esn,
                Lifetime::default(),
            ),
            Inbound::new(
                0x1234_5678,
                AeadAlg::AesGcm16_256,
                key,
                esn,
                window,
                Lifetime::default(),
            ),
        )
    }

    #[test]
    fn round_trip_layout_and_padding() {
        let (mut out, mut inb) = pair(false, 64);
        for len in [0usize, 1, 2, 3, 4, 100, 1400] {
            let inner: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let p = out.seal(&RealCrypto, &inner, NEXT_IPV4).unwrap();
            assert_eq!((p.len() - HEADER_LEN - ICV_LEN) % 4, 0, "aligned to 4");
            assert_eq!(&p[..4], &0x1234_5678u32.to_be_bytes());
            assert_eq!(
                u32::from_be_bytes(p[4..8].try_into().unwrap()) as u64,
                out.seq
            );
            assert_eq!(inb.open(&RealCrypto, &p).unwrap(), (inner, NEXT_IPV4));
        }
        // Overhead of a 1400-byte inner packet: 8 + 8 + 2 (+2 padding) + 16 = 36 bytes.
        let p = out.seal(&RealCrypto, &[0u8; 1400], NEXT_IPV4).unwrap();
        assert_eq!(p.len(), 1400 + 36);
    }

    #[test]
    fn replays_reorders_and_tampering() {
        let (mut out, mut inb) = pair(false, 64);
        let packets: Vec<Vec<u8>> = (0..200)
            .map(|_| out.seal(&RealCrypto, b"data", NEXT_IPV4).unwrap())
            .collect();
        assert!(inb.open(&RealCrypto, &packets[100]).is_ok());
        assert_eq!(inb.open(&RealCrypto, &packets[100]), Err(EspError::Replay));
        // Reordered within the window: accepted once.
        assert!(inb.open(&RealCrypto, &packets[40]).is_ok());
        assert_eq!(inb.open(&RealCrypto, &packets[40]), Err(EspError::Replay));
        // Left of the window (64 below the top, seq 101): rejected.
        assert_eq!(inb.open(&RealCrypto, &packets[36]), Err(EspError::Replay));
        let mut bad = packets[150].clone();
        bad[30] ^= 1;
        assert_eq!(inb.open(&RealCrypto, &bad), Err(EspError::Integrity));
        // A failed ICV does not move the window: the genuine packet still goes through.
        assert!(inb.open(&RealCrypto, &packets[150]).is_ok());
        assert_eq!((inb.stats.replayed, inb.stats.integrity_failures), (3, 1));
        assert_eq!(
            inb.open(&RealCrypto, &packets[0][..20]),
            Err(EspError::Malformed)
        );
    }

    #[test]
    fn lifetimes_go_soft_then_hard() {
        let key = AeadKey::new(&[1u8; 20]);
        let life = Lifetime {
            soft_packets: Some(3),
            hard_packets: Some(5),
            ..Default::default()
        };
        let mut out = Outbound::new(1, AeadAlg::AesGcm16_128, key, false, life);
        let states: Vec<LifetimeState> = (0..5)
            .map(|_| {
                out.seal(&RealCrypto, b"x", NEXT_IPV4).unwrap();
                out.lifetime_state()
            })
            .collect();
        assert_eq!(
            states,
            [
                LifetimeState::Fine,
                LifetimeState::Fine,
                LifetimeState::Soft,
                LifetimeState::Soft,
                LifetimeState::Hard
            ]
        );
        assert_eq!(
            out.seal(&RealCrypto, b"x", NEXT_IPV4),
            Err(EspError::Expired)
        );
    }

    #[test]
    fn accounting_moves_lifetimes_and_sequence_like_sealing() {
        let life = Lifetime {
            soft_bytes: Some(1000),
            hard_bytes: Some(2000),
            ..Default::default()
        };
        let (mut out, mut inb) = pair(false, 64);
        out.lifetime = life;
        inb.lifetime = life;
        out.account(10, 1500).unwrap();
        inb.account(10, 1500).unwrap();
        assert_eq!(out.lifetime_state(), LifetimeState::Soft);
        assert_eq!(inb.lifetime_state(), LifetimeState::Soft);
        // The next sealed packet carries sequence number 11.
        let p = out.seal(&RealCrypto, &[0u8; 600], NEXT_IPV4).unwrap();
        assert_eq!(&p[4..8], &11u32.to_be_bytes());
        assert_eq!(out.account(3, 30), Err(EspError::Expired));
        assert_eq!(out.stats.expired, 3);
        out.seq = u32::MAX as u64 - 1;
        out.stats = EspStats::default();
        assert_eq!(out.account(2, 2), Err(EspError::SequenceExhausted));
    }

    #[test]
    fn esn_crosses_the_32_bit_boundary() {
        let (mut out, mut inb) = pair(true, 64);
        out.seq = u32::MAX as u64 - 2;
        for _ in 0..6 {
            let p = out.seal(&RealCrypto, b"x", NEXT_IPV4).unwrap();
            assert!(inb.open(&RealCrypto, &p).is_ok(), "seq {}", out.seq);
        }
        assert_eq!(out.seq, (1u64 << 32) + 3);
        // Without ESN the counter refuses to wrap.
        let (mut out, _) = pair(false, 64);
        out.seq = u32::MAX as u64;
        assert_eq!(
            out.seal(&RealCrypto, b"x", NEXT_IPV4),
            Err(EspError::SequenceExhausted)
        );
    }

    proptest! {
        /// Against a set of seen numbers: accept iff new and within the window.
        #[test]
        fn window_matches_a_reference(seqs in prop::collection::vec(1u64..400, 1..300), size in prop::sample::select(vec![32u64, 64, 128, 200])) {
            let mut w = ReplayWindow::new(size);
            let mut seen = std::collections::BTreeSet::new();
            let mut top = 0u64;
            for s in seqs {
                let expect = !seen.contains(&s) && (s > top || top - s < size);
                prop_assert_eq!(w.check(s), expect, "seq {} top {}", s, top);
                if expect {
                    w.accept(s);
                    seen.insert(s);
                    top = top.max(s);
                }
            }
        }

        #[test]
        fn open_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
            let (_, mut inb) = pair(false, 64);
            let mut p = 0x1234_5678u32.to_be_bytes().to_vec();
            p.extend(bytes);
            let _ = inb.open(&RealCrypto, &p);
        }
    }
}
