//! Entities (nodes, links, devices) with stable names, and their random streams.
//!
//! Every random draw in a run comes from a ChaCha20 stream whose key is derived from
//! (master seed, entity name, purpose). Streams never share state, so adding an entity,
//! or a new purpose on one entity, never shifts another stream's draws. ChaCha20 is a
//! cryptographic generator implementing `rand_core` 0.10's `CryptoRng`, so the same
//! stream can drive ml-kem, x25519-dalek and aes-gcm and a seed reproduces every key.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng, TryRng};
use sha2::{Digest, Sha256};

/// The generator behind every stream of a run.
pub type SimRng = ChaCha20Rng;

/// Derives the stream for `purpose` of the entity `name` under `master_seed`.
///
/// The 32-byte ChaCha key is SHA-256 over a domain tag and the length-prefixed inputs,
/// so ("ab", "c") and ("a", "bc") get unrelated streams.
pub fn stream(master_seed: u64, name: &str, purpose: &str) -> SimRng {
    SimRng::from_seed(stream_key(master_seed, name, purpose))
}

/// The ChaCha key of [`stream`]`(master_seed, name, purpose)`.
pub fn stream_key(master_seed: u64, name: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"qsafe/stream/v1");
    h.update(master_seed.to_be_bytes());
    for part in [name, purpose] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// A stream that makes its generator when first drawn from, with the same draws as
/// [`stream`]. A generator with its block buffer is 300 bytes; a link without faults
/// never draws from its fault stream, and a simulation holds one per link direction.
pub struct LazyStream {
    key: [u8; 32],
    rng: Option<Box<SimRng>>,
}

impl LazyStream {
    pub fn new(master_seed: u64, name: &str, purpose: &str) -> Self {
        LazyStream {
            key: stream_key(master_seed, name, purpose),
            rng: None,
        }
    }

    fn rng(&mut self) -> &mut SimRng {
        self.rng
            .get_or_insert_with(|| Box::new(SimRng::from_seed(self.key)))
    }
}

impl TryRng for LazyStream {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.rng().next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.rng().next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.rng().fill_bytes(dst);
        Ok(())
    }
}

/// A stream with a one-block buffer: 128 bytes where a [`SimRng`] holds 300 (a
/// four-block buffer), with the same draws as [`stream`]. It computes ChaCha20 one block
/// at a time without SIMD, so a draw costs a few nanoseconds more: for streams drawn a
/// few times per datagram, of which a large topology holds several per link.
///
/// Laid out so that a draw reads one cache line (all but one word in sixteen): the
/// index and the words first, in a line of their own, then what only a refill reads.
#[repr(C, align(64))]
pub struct CompactStream {
    /// Next word of `words` to hand out; 16 when used up.
    index: u8,
    words: [u32; 16],
    /// The block the next refill computes.
    block: u64,
    key: [u32; 8],
}

impl CompactStream {
    pub fn new(master_seed: u64, name: &str, purpose: &str) -> Self {
        let key = stream_key(master_seed, name, purpose);
        CompactStream {
            key: std::array::from_fn(|i| {
                u32::from_le_bytes(key[4 * i..4 * i + 4].try_into().expect("4 bytes"))
            }),
            block: 0,
            words: [0; 16],
            index: 16,
        }
    }

    /// The ChaCha20 block function (20 rounds) on block `self.block` of stream 0: the
    /// layout `SimRng` uses, a 64-bit block counter in words 12 and 13 and the 64-bit
    /// stream number in 14 and 15.
    fn refill(&mut self) {
        let mut input = [0u32; 16];
        input[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
        input[4..12].copy_from_slice(&self.key);
        input[12] = self.block as u32;
        input[13] = (self.block >> 32) as u32;
        let mut x = input;
        fn quarter(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
            x[a] = x[a].wrapping_add(x[b]);
            x[d] = (x[d] ^ x[a]).rotate_left(16);
            x[c] = x[c].wrapping_add(x[d]);
            x[b] = (x[b] ^ x[c]).rotate_left(12);
            x[a] = x[a].wrapping_add(x[b]);
            x[d] = (x[d] ^ x[a]).rotate_left(8);
            x[c] = x[c].wrapping_add(x[d]);
            x[b] = (x[b] ^ x[c]).rotate_left(7);
        }
        for _ in 0..10 {
            quarter(&mut x, 0, 4, 8, 12);
            quarter(&mut x, 1, 5, 9, 13);
            quarter(&mut x, 2, 6, 10, 14);
            quarter(&mut x, 3, 7, 11, 15);
            quarter(&mut x, 0, 5, 10, 15);
            quarter(&mut x, 1, 6, 11, 12);
            quarter(&mut x, 2, 7, 8, 13);
            quarter(&mut x, 3, 4, 9, 14);
        }
        for (w, (x, i)) in self.words.iter_mut().zip(x.iter().zip(&input)) {
            *w = x.wrapping_add(*i);
        }
        self.block += 1;
        self.index = 0;
    }

    fn word(&mut self) -> u32 {
        if self.index >= 16 {
            self.refill();
        }
        let w = self.words[self.index as usize];
        self.index += 1;
        w
    }
}

impl TryRng for CompactStream {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.word())
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let low = self.word() as u64;
        Ok(low | (self.word() as u64) << 32)
    }
    /// Word by word, little-endian; a last partial word is used up, as `SimRng` does.
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(4) {
            let w = self.word().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
        Ok(())
    }
}

/// A stream for rare draws (a lifetime's jitter, once an hour), with the same draws as
/// [`stream`]: it keeps only its key and position, 48 bytes, and makes the generator
/// again for every draw (a ChaCha block, about 100 ns).
pub struct ColdStream {
    key: [u8; 32],
    word_pos: u128,
}

impl ColdStream {
    pub fn new(master_seed: u64, name: &str, purpose: &str) -> Self {
        ColdStream {
            key: stream_key(master_seed, name, purpose),
            word_pos: 0,
        }
    }

    /// The cold form of a stream not yet drawn from (one from a stream factory).
    pub fn from_fresh(rng: &SimRng) -> Self {
        debug_assert!(rng.get_word_pos() == 0 && rng.get_stream() == 0);
        ColdStream {
            key: rng.get_seed(),
            word_pos: 0,
        }
    }

    fn draw<T>(&mut self, f: impl FnOnce(&mut SimRng) -> T) -> T {
        let mut rng = SimRng::from_seed(self.key);
        rng.set_word_pos(self.word_pos);
        let out = f(&mut rng);
        self.word_pos = rng.get_word_pos();
        out
    }
}

impl TryRng for ColdStream {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.draw(|r| r.next_u32()))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.draw(|r| r.next_u64()))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.draw(|r| r.fill_bytes(dst));
        Ok(())
    }
}

/// A small index naming one registered entity; the order of simultaneous events is
/// decided by it, so ids are handed out in registration order (callers register in a
/// deterministic order, e.g. sorted by name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityId(pub u32);

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A name was registered twice or is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityError {
    #[error("entity name `{0}` is already registered")]
    Duplicate(String),
    #[error("entity names must be non-empty and printable, got {0:?}")]
    BadName(String),
}

/// The registry of a run's entities.
#[derive(Debug, Default, Clone)]
pub struct Entities {
    /// Each name is stored once, shared by the list and the index: a run at scale has
    /// several entities per tunnel.
    names: Vec<Arc<str>>,
    by_name: BTreeMap<Arc<str>, EntityId>,
}

impl Entities {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `name` (e.g. `gw/berlin-1`, `link/a-b`) and returns its id.
    pub fn register(&mut self, name: &str) -> Result<EntityId, EntityError> {
        if name.is_empty() || name.chars().any(|c| c.is_control()) {
            return Err(EntityError::BadName(name.to_string()));
        }
        if self.by_name.contains_key(name) {
            return Err(EntityError::Duplicate(name.to_string()));
        }
        let id = EntityId(self.names.len() as u32);
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.by_name.insert(name, id);
        Ok(id)
    }

    pub fn name(&self, id: EntityId) -> &str {
        &self.names[id.0 as usize]
    }

    pub fn lookup(&self, name: &str) -> Option<EntityId> {
        self.by_name.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Uniform draws that stay exact and identical on every platform (no floats involved in
/// the decision itself).
pub trait RngExt: Rng {
    /// True with probability `p` (clamped to [0, 1]); one 64-bit draw.
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        // p * 2^64, truncated: the comparison below is exact integer arithmetic.
        let threshold = (p * 18_446_744_073_709_551_616.0) as u64;
        self.next_u64() < threshold
    }

    /// Uniform in `0..=max` (Lemire's multiply-shift; the bias is below 2^-64 * max).
    fn below_or_eq(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        ((self.next_u64() as u128 * (max as u128 + 1)) >> 64) as u64
    }

    /// Uniform float in [0, 1) with 53 random bits (for models such as exponential
    /// inter-arrival times; results derived from it are printed with fixed precision).
    fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Exponentially distributed with mean `mean` (Poisson arrivals), by inversion with
    /// a logarithm made of IEEE additions, multiplications and divisions only: the
    /// platform's libm never decides a draw, so every machine gets the same bits.
    fn exponential(&mut self, mean: f64) -> f64 {
        // 1 - u is in (0, 1]: the logarithm is finite.
        -ln(1.0 - self.unit_f64()) * mean
    }
}

/// Natural logarithm of a positive, finite `x`: `x = m * 2^e` with `m` in [1, 2), then
/// `ln m = 2 atanh(z)`, `z = (m - 1) / (m + 1)` in [0, 1/3], summed to double precision.
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let (mut e, mut m) = (((bits >> 52) & 0x7ff) as i64 - 1023, x);
    if e == -1023 {
        // Subnormal: scale into the normal range first.
        return ln(x * (1u64 << 54) as f64) - 54.0 * std::f64::consts::LN_2;
    }
    m = f64::from_bits((m.to_bits() & !(0x7ff << 52)) | (1023 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let (mut term, mut sum) = (z, 0.0);
    for k in 0..30 {
        sum += term / (2 * k + 1) as f64;
        term *= z2;
    }
    e as f64 * std::f64::consts::LN_2 + 2.0 * sum
}

impl<R: Rng + ?Sized> RngExt for R {}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(seed: u64, name: &str, purpose: &str) -> Vec<u64> {
        let mut r = stream(seed, name, purpose);
        (0..8).map(|_| r.next_u64()).collect()
    }

    proptest::proptest! {
        /// Lazy, cold and compact streams draw exactly what the stream made at once draws, for
        /// any mix of 32-bit, 64-bit and byte draws (across block boundaries too).
        #[test]
        fn lazy_cold_and_compact_streams_draw_the_same(ops in proptest::collection::vec((0u8..3, 0usize..70), 0..200)) {
            let mut eager = stream(5, "link/a", "loss");
            let mut lazy = LazyStream::new(5, "link/a", "loss");
            let mut cold = ColdStream::new(5, "link/a", "loss");
            let mut compact = CompactStream::new(5, "link/a", "loss");
            for (op, n) in ops {
                match op {
                    0 => {
                        let x = eager.next_u32();
                        proptest::prop_assert_eq!(x, lazy.next_u32());
                        proptest::prop_assert_eq!(x, cold.next_u32());
                        proptest::prop_assert_eq!(x, compact.next_u32());
                    }
                    1 => {
                        let x = eager.next_u64();
                        proptest::prop_assert_eq!(x, lazy.next_u64());
                        proptest::prop_assert_eq!(x, cold.next_u64());
                        proptest::prop_assert_eq!(x, compact.next_u64());
                    }
                    _ => {
                        let (mut a, mut b, mut c) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
                        let mut d = vec![0u8; n];
                        eager.fill_bytes(&mut a);
                        lazy.fill_bytes(&mut b);
                        cold.fill_bytes(&mut c);
                        compact.fill_bytes(&mut d);
                        proptest::prop_assert_eq!(&a, &b);
                        proptest::prop_assert_eq!(&a, &c);
                        proptest::prop_assert_eq!(&a, &d);
                    }
                }
            }
        }
    }

    #[test]
    fn streams_depend_only_on_seed_name_purpose() {
        assert_eq!(draws(1, "gw/a", "ike"), draws(1, "gw/a", "ike"));
        assert_ne!(draws(1, "gw/a", "ike"), draws(2, "gw/a", "ike"));
        assert_ne!(draws(1, "gw/a", "ike"), draws(1, "gw/b", "ike"));
        assert_ne!(draws(1, "gw/a", "ike"), draws(1, "gw/a", "esp"));
        // Length prefixes keep the split between name and purpose significant.
        assert_ne!(draws(1, "ab", "c"), draws(1, "a", "bc"));
    }

    #[test]
    fn registering_more_entities_leaves_other_streams_alone() {
        let mut small = Entities::new();
        let a = small.register("gw/a").unwrap();
        let mut big = Entities::new();
        big.register("gw/0").unwrap();
        let a2 = big.register("gw/a").unwrap();
        big.register("gw/z").unwrap();
        // Streams are keyed by name, not by id, so the ids may differ.
        assert_ne!(a, a2);
        assert_eq!(
            draws(7, small.name(a), "loss"),
            draws(7, big.name(a2), "loss")
        );
    }

    #[test]
    fn registry_rejects_duplicates_and_bad_names() {
        let mut e = Entities::new();
        e.register("x").unwrap();
        assert_eq!(e.register("x"), Err(EntityError::Duplicate("x".into())));
        assert!(matches!(e.register(""), Err(EntityError::BadName(_))));
        assert!(matches!(e.register("a\nb"), Err(EntityError::BadName(_))));
        assert_eq!(e.lookup("x"), Some(EntityId(0)));
    }

    #[test]
    fn streams_are_cryptographic_rngs_for_the_crypto_crates() {
        // ml-kem, x25519-dalek and aes-gcm take `rand_core::CryptoRng` (0.10).
        fn takes_crypto_rng<R: rand_core::CryptoRng>(r: &mut R) -> u64 {
            r.next_u64()
        }
        let mut r = stream(1, "gw/a", "ike");
        let first = takes_crypto_rng(&mut r);
        assert_eq!(first, stream(1, "gw/a", "ike").next_u64());
    }

    #[test]
    fn the_portable_logarithm_matches_libm_and_exponentials_have_their_mean() {
        for x in [
            1e-300, 1e-9, 0.1, 0.5, 0.7, 1.0, 1.5, 2.0, 10.0, 12345.678, 1e300,
        ] {
            let (ours, libm) = (super::ln(x), x.ln());
            assert!(
                (ours - libm).abs() <= 4.0 * f64::EPSILON * libm.abs().max(1.0),
                "{x}: {ours} {libm}"
            );
        }
        assert_eq!(super::ln(1.0), 0.0);
        let mut r = stream(3, "e", "x");
        let n = 200_000;
        let mean = (0..n).map(|_| r.exponential(2.0)).sum::<f64>() / n as f64;
        assert!((mean - 2.0).abs() < 0.02, "{mean}");
    }

    #[test]
    fn chance_and_below_or_eq_are_bounded() {
        let mut r = stream(3, "t", "t");
        assert!(!(0..1000).any(|_| r.chance(0.0)));
        assert!((0..1000).all(|_| r.chance(1.0)));
        assert!((0..1000).all(|_| r.below_or_eq(5) <= 5));
        let hits = (0..100_000).filter(|_| r.chance(0.25)).count();
        assert!((24_000..26_000).contains(&hits), "{hits}");
    }
}
