//! Key pools: secret key produced at a rate into a finite store, one pool per QKD link.
//!
//! Both ends of a link hold the same key material. To guarantee that simultaneous draws
//! at the two ends never hand out the same key, each link's key stream is split in two
//! halves with separate owners (split ownership): end 0 delivers new keys only from its
//! half, end 1 only from the other, and each half fills at its share of the link rate.
//! The alternative, master/slave roles, needs the slave to ask the master for every
//! key (a KME-to-KME round trip inside the IKE exchange) and serialises both ends on one
//! store; split ownership needs no coordination, at the cost of stranding key in one
//! half when demand is one-sided (the `share` setting moves the split).
//!
//! Levels are integer bits; production is integer arithmetic over nanoseconds (rates in
//! millibits per second) with the remainder carried, so a pool's level is exact and
//! identical on every platform.
//!
//! Key arrives in one of two ways ([`Supply`]): continuously at the configured rate
//! (`fixed`, for teaching and for checking arithmetic), or in blocks of `block_bits` at
//! random times, the rate on average (`poisson`, as a QKD device's post-processing
//! delivers it). The pool only takes the blocks ([`PoolHalf::deposit`]); the link draws
//! when they arrive (`crate::blocks`).

use rand_chacha::ChaCha20Rng;
use rand_core::Rng;
use serde::{Deserialize, Serialize};
use sim_core::entity::ColdStream;

/// A secret key rate derived from fiber length: the secret key rate of decoy-state BB84
/// far below its distance cutoff is proportional to the channel transmittance
/// `eta = 10^(-alpha * L / 10)`, so
/// `rate(L) = reference_bps * 10^(-alpha * (L - reference_km) / 10)`.
/// With `alpha = 0.2 dB/km` the rate halves every 15 km. The model ignores the
/// detector-noise cutoff, so it overstates rates near the maximum distance.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FiberRate {
    /// The link's fiber length.
    pub length_km: f64,
    /// The measured rate at `reference_km`.
    pub reference_bps: u64,
    /// The length at which `reference_bps` was measured.
    pub reference_km: f64,
    /// Fiber attenuation.
    #[serde(default = "default_loss")]
    pub loss_db_per_km: f64,
}

fn default_loss() -> f64 {
    0.2
}

impl FiberRate {
    /// Rounded to whole bits per second, so that the one libm call (`powf`) cannot
    /// make two platforms differ.
    pub fn bits_per_second(&self) -> u64 {
        let db = self.loss_db_per_km * (self.length_km - self.reference_km);
        (self.reference_bps as f64 * 10f64.powf(-db / 10.0))
            .round()
            .max(0.0) as u64
    }
}

/// How key arrives in a pool.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Supply {
    /// Continuously, exactly at the rate.
    Fixed,
    /// In blocks of `block_bits`, as a Poisson process with the rate as its mean.
    #[default]
    Poisson,
}

/// A pool's configuration (one QKD link).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Secret key rate in bit/s (when `fiber` is not given); fractions allowed
    /// (`1.5`), kept to a thousandth.
    #[serde(default)]
    pub rate_bps: f64,
    /// `poisson` (default): key arrives in blocks at random times; `fixed`: at exactly
    /// the rate, continuously.
    #[serde(default)]
    pub supply: Supply,
    /// The size of a key block with `poisson` supply (default: `key_size_bits`).
    #[serde(default)]
    pub block_bits: Option<u64>,
    /// Derive the rate from fiber length instead.
    #[serde(default)]
    pub fiber: Option<FiberRate>,
    /// Total capacity of the link's store, in bits (split between the halves).
    pub capacity_bits: u64,
    /// Bits in the store at time zero.
    #[serde(default)]
    pub initial_bits: u64,
    /// Default key size (ETSI `key_size`), in bits.
    #[serde(default = "default_key_size")]
    pub key_size_bits: u32,
    /// Below this many keys (of `key_size_bits`) a half reports Warning.
    #[serde(default)]
    pub warning_below_keys: u64,
    /// After running empty, a half refuses requests (Charging) until it holds this many
    /// keys again; 1 means no hysteresis.
    #[serde(default = "one")]
    pub resume_at_keys: u64,
    /// Keys delivered at one end but not fetched at the other within this time are
    /// discarded (and counted as wasted). Unset: kept forever.
    #[serde(default)]
    pub max_key_age_ns: Option<u64>,
    /// Share of the rate and capacity owned by end `a` (end 0), in thousandths. Each
    /// end delivers new keys only from its own share, so the
    /// end whose gateways initiate should own the key: 1000 if only `a`'s draw, 0 if
    /// only `b`'s, 500 if both. Unset: the simulator decides from the tunnels that draw
    /// over the link, and the library takes 500.
    #[serde(default)]
    pub share_permille: Option<u32>,
}

fn default_key_size() -> u32 {
    256
}
fn one() -> u64 {
    1
}

impl PoolConfig {
    /// The link's secret key rate in millibits per second.
    pub fn rate_millibits(&self) -> u64 {
        match &self.fiber {
            Some(f) => f.bits_per_second() * 1000,
            None => (self.rate_bps * 1000.0).round().max(0.0) as u64,
        }
    }

    /// The key block size with `poisson` supply.
    pub fn block(&self) -> u64 {
        self.block_bits.unwrap_or(self.key_size_bits as u64).max(1)
    }

    /// The share of end 0, in thousandths.
    pub fn share(&self) -> u32 {
        self.share_permille.unwrap_or(500)
    }

    /// A pool of `rate_bps` and `capacity_bits` with `fixed` supply, starting empty,
    /// 256-bit keys, shared evenly.
    pub fn fixed(rate_bps: f64, capacity_bits: u64) -> Self {
        PoolConfig {
            rate_bps,
            supply: Supply::Fixed,
            block_bits: None,
            fiber: None,
            capacity_bits,
            initial_bits: 0,
            key_size_bits: 256,
            warning_below_keys: 0,
            resume_at_keys: 1,
            max_key_age_ns: None,
            share_permille: None,
        }
    }
}

/// A pool half's state, as key managers report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolState {
    Ready,
    /// Fewer keys than the warning threshold.
    Warning,
    /// Ran empty and refuses requests until the resume threshold is reached.
    Charging,
    /// Not one key of the default size.
    Empty,
}

/// Counters of one half.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    pub generated_bits: u64,
    /// Produced while the half was full, and lost.
    pub overflow_bits: u64,
    pub delivered_keys: u64,
    pub delivered_bits: u64,
    pub refused_requests: u64,
}

/// One owner's half of a link's store.
pub struct PoolHalf {
    /// Continuous production in millibits per second (0 with `poisson` supply, whose
    /// blocks are deposited).
    rate_millibits: u64,
    /// The link's nominal rate share, in millibits per second, as reported.
    nominal_millibits: u64,
    /// Not producing (the QKD link is down).
    paused: bool,
    capacity_bits: u64,
    level_bits: u64,
    /// Production not yet whole bits, in millibit-nanoseconds per second (< 1e12).
    carry: u64,
    updated_ns: u64,
    charging: bool,
    key_size: u32,
    warning_below: u64,
    resume_at: u64,
    /// Key bytes and key IDs of this half: the link's shared stream for this owner
    /// (cold: drawn once per key).
    stream: ColdStream,
    pub stats: PoolStats,
}

/// Millibit-nanoseconds per second in a bit.
const UNIT: u128 = 1_000_000_000_000;

impl PoolHalf {
    pub(crate) fn new(cfg: &PoolConfig, share_permille: u32, stream: ChaCha20Rng) -> Self {
        let share = |x: u64| (x as u128 * share_permille as u128 / 1000) as u64;
        let nominal = share(cfg.rate_millibits());
        PoolHalf {
            rate_millibits: match cfg.supply {
                Supply::Fixed => nominal,
                Supply::Poisson => 0,
            },
            nominal_millibits: nominal,
            paused: false,
            capacity_bits: share(cfg.capacity_bits),
            level_bits: share(cfg.initial_bits).min(share(cfg.capacity_bits)),
            carry: 0,
            updated_ns: 0,
            charging: false,
            key_size: cfg.key_size_bits,
            warning_below: cfg.warning_below_keys,
            resume_at: cfg.resume_at_keys.max(1),
            stream: ColdStream::from_fresh(&stream),
            stats: PoolStats::default(),
        }
    }

    /// Brings the level up to `now`.
    pub fn advance(&mut self, now_ns: u64) {
        if now_ns <= self.updated_ns {
            return;
        }
        let rate = if self.paused { 0 } else { self.rate_millibits };
        let units = rate as u128 * (now_ns - self.updated_ns) as u128 + self.carry as u128;
        self.updated_ns = now_ns;
        self.carry = (units % UNIT) as u64;
        self.deposit((units / UNIT).min(u64::MAX as u128) as u64);
    }

    /// Adds `bits` of new key (a block), up to the capacity; the rest overflows.
    pub fn deposit(&mut self, bits: u64) {
        self.stats.generated_bits += bits;
        let room = self.capacity_bits - self.level_bits;
        self.stats.overflow_bits += bits.saturating_sub(room);
        self.level_bits += bits.min(room);
        if self.charging && self.level_bits / self.key_size as u64 >= self.resume_at {
            self.charging = false;
        }
    }

    /// Stops or restarts continuous production (the QKD link went down or came back),
    /// from `now`.
    pub fn set_paused(&mut self, now_ns: u64, paused: bool) {
        self.advance(now_ns);
        self.paused = paused;
    }

    pub fn level_bits(&self) -> u64 {
        self.level_bits
    }

    /// The half's nominal share of the link rate, in bit/s.
    pub fn rate_bps(&self) -> f64 {
        self.nominal_millibits as f64 / 1000.0
    }

    pub fn capacity_bits(&self) -> u64 {
        self.capacity_bits
    }

    /// (key size in bits, warning below this many keys, refusing after empty until
    /// this many keys): the thresholds of the half's state machine.
    pub fn thresholds(&self) -> (u32, u64, u64) {
        (self.key_size, self.warning_below, self.resume_at)
    }

    /// Keys of the default size available now (what ETSI's `stored_key_count` reports).
    pub fn stored_keys(&self) -> u64 {
        if self.charging {
            0
        } else {
            self.level_bits / self.key_size as u64
        }
    }

    pub fn state(&self) -> PoolState {
        let keys = self.level_bits / self.key_size as u64;
        if self.charging {
            PoolState::Charging
        } else if keys == 0 {
            PoolState::Empty
        } else if keys < self.warning_below {
            PoolState::Warning
        } else {
            PoolState::Ready
        }
    }

    /// Whether `bits` can be taken now (after `advance`).
    pub fn can_take(&self, bits: u64) -> bool {
        !self.charging && self.level_bits >= bits
    }

    /// Takes `bits` and returns that much key material with a fresh key ID (16 bytes,
    /// turned into a UUID or hex ID by the API). Call `can_take` first.
    pub(crate) fn take(&mut self, bits: u64) -> ([u8; 16], Vec<u8>) {
        debug_assert!(self.can_take(bits));
        self.level_bits -= bits;
        if self.level_bits / (self.key_size as u64) == 0 && self.resume_at > 1 {
            self.charging = true;
        }
        self.stats.delivered_keys += 1;
        self.stats.delivered_bits += bits;
        let mut id = [0u8; 16];
        self.stream.fill_bytes(&mut id);
        // Version 4, variant 1: the bytes print as an RFC 4122 UUID and parse back.
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        let mut key = vec![0u8; (bits / 8) as usize];
        self.stream.fill_bytes(&mut key);
        (id, key)
    }

    /// A refused request, counted.
    pub(crate) fn refuse(&mut self) {
        self.stats.refused_requests += 1;
    }
}

/// RFC 4122 text form of a key ID (whose version and variant bits are already set).
pub fn uuid_text(b: [u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    const SEC: u64 = 1_000_000_000;

    fn half(cfg: &PoolConfig) -> PoolHalf {
        PoolHalf::new(cfg, 1000, ChaCha20Rng::seed_from_u64(1))
    }

    #[test]
    fn level_is_rate_times_time_up_to_capacity() {
        let mut p = half(&PoolConfig::fixed(1000.0, 50_000));
        p.advance(SEC / 3);
        assert_eq!(p.level_bits(), 333);
        p.advance(SEC);
        assert_eq!(p.level_bits(), 1000, "no bit lost to rounding");
        p.advance(40 * SEC);
        assert_eq!(p.level_bits(), 40_000);
        p.advance(100 * SEC);
        assert_eq!(p.level_bits(), 50_000);
        assert_eq!(p.stats.generated_bits, 100_000);
        assert_eq!(p.stats.overflow_bits, 50_000);
    }

    #[test]
    fn thresholds_change_state_where_configured() {
        let mut cfg = PoolConfig::fixed(256.0, 1 << 20);
        cfg.warning_below_keys = 3;
        cfg.resume_at_keys = 2;
        let mut p = half(&cfg);
        assert_eq!(p.state(), PoolState::Empty);
        p.advance(SEC);
        assert_eq!((p.stored_keys(), p.state()), (1, PoolState::Warning));
        p.advance(3 * SEC);
        assert_eq!(p.state(), PoolState::Ready);
        for _ in 0..3 {
            assert!(p.can_take(256));
            p.take(256);
        }
        // Empty now, and charging: refuses until 2 keys are back.
        assert_eq!(p.state(), PoolState::Charging);
        p.advance(4 * SEC);
        assert!(!p.can_take(256));
        p.advance(5 * SEC);
        assert_eq!(p.state(), PoolState::Warning);
        assert!(p.can_take(256));
    }

    #[test]
    fn fractional_rates_produce_exactly_on_average() {
        // 1.5 bit/s: 3 bits every 2 s, none lost to rounding.
        let mut p = half(&PoolConfig::fixed(1.5, 50_000));
        p.advance(SEC);
        assert_eq!(p.level_bits(), 1);
        p.advance(2 * SEC);
        assert_eq!(p.level_bits(), 3);
        p.advance(1000 * SEC);
        assert_eq!(p.level_bits(), 1500);
        assert_eq!(p.rate_bps(), 1.5);
    }

    #[test]
    fn poisson_supply_produces_only_what_is_deposited() {
        let mut cfg = PoolConfig::fixed(1000.0, 4096);
        cfg.supply = Supply::Poisson;
        let mut p = half(&cfg);
        p.advance(100 * SEC);
        assert_eq!(p.level_bits(), 0);
        p.deposit(3000);
        p.deposit(3000);
        assert_eq!((p.level_bits(), p.stats.overflow_bits), (4096, 1904));
        assert_eq!(p.rate_bps(), 1000.0);
    }

    #[test]
    fn a_paused_half_produces_nothing() {
        let mut p = half(&PoolConfig::fixed(1000.0, 1 << 20));
        p.set_paused(SEC, true);
        p.set_paused(3 * SEC, false);
        p.advance(4 * SEC);
        assert_eq!(p.level_bits(), 2000);
    }

    #[test]
    fn fiber_rate_follows_transmittance() {
        let rate = |km| {
            FiberRate {
                length_km: km,
                reference_bps: 10_000,
                reference_km: 10.0,
                loss_db_per_km: 0.2,
            }
            .bits_per_second()
        };
        assert_eq!(rate(10.0), 10_000);
        assert_eq!(rate(25.0), 5012); // 3 dB more loss: about half
        assert_eq!(rate(60.0), 1000); // 10 dB: a tenth
    }

    #[test]
    fn key_ids_are_version_4_uuids() {
        let mut p = half(&PoolConfig::fixed(1000.0, 50_000));
        p.advance(SEC);
        let u = uuid_text(p.take(256).0);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    }
}
