//! Link configuration: what a path does to datagrams. Every type derives serde so that
//! scenario files can hold it; [`LinkConfig::validate`] and [`LinkConfig::from_toml`]
//! turn bad values into a [`ConfigError`] that names the field.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sim_core::ipv4::MIN_MTU;
use sim_core::{SimDuration, SimTime};

/// One direction of a link (both directions share a configuration unless a scenario
/// gives them different ones).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub latency: SimDuration,
    /// Extra delay drawn uniformly from `[0, jitter]` per packet. Jitter alone never
    /// reorders: a packet is not delivered before the one sent ahead of it.
    pub jitter: SimDuration,
    /// Serialization rate; `None` means unlimited (no serialization delay, no queue).
    pub bandwidth: Option<Bandwidth>,
    /// Bytes that may wait for the wire; a datagram that does not fit is tail-dropped.
    pub queue_limit_bytes: u64,
    /// Largest IPv4 packet the path carries, headers included.
    pub mtu: u32,
    /// What happens to an IPv4 packet larger than the MTU.
    pub oversize: Oversize,
    /// How long the receiver keeps an incomplete fragment set (Linux: 30 s).
    pub reassembly_timeout: SimDuration,
    /// Packet loss: `{ model = "bernoulli", probability = 0.01 }` or a Gilbert-Elliott
    /// burst model.
    pub loss: LossModel,
    /// Probability that a datagram is held back by `reorder_delay`, letting later
    /// datagrams overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_delay: SimDuration,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that one random bit of a delivered datagram's payload is flipped.
    pub corrupt: f64,
    /// Up/down transitions in time order; the link starts up.
    pub schedule: Vec<Transition>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: SimDuration::from_millis(10),
            jitter: SimDuration::ZERO,
            bandwidth: None,
            queue_limit_bytes: 256 * 1024,
            mtu: 1500,
            oversize: Oversize::Fragment,
            reassembly_timeout: SimDuration::from_secs(30),
            loss: LossModel::None,
            reorder: 0.0,
            reorder_delay: SimDuration::from_millis(1),
            duplicate: 0.0,
            corrupt: 0.0,
            schedule: Vec::new(),
        }
    }
}

/// Behaviour of the path for IPv4 packets above the MTU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Oversize {
    /// The sender fragments (RFC 791); the datagram is lost if any fragment is.
    Fragment,
    /// The packet is dropped (DF set, no PMTU feedback modelled).
    Drop,
    /// The sender fragments, but a middlebox on the path discards every fragment.
    DropFragments,
}

/// Packet loss.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "model", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LossModel {
    /// No loss.
    None,
    /// Each packet is lost independently with `probability`.
    Bernoulli {
        /// The chance that a packet is lost (0 to 1).
        probability: f64,
    },
    /// Two-state Markov bursts. Per packet: lost with the current state's loss
    /// probability, then the state moves. With `loss_good = 0` and `loss_bad = 1` the
    /// mean burst is `1 / bad_to_good` packets and the loss rate
    /// `good_to_bad / (good_to_bad + bad_to_good)`.
    GilbertElliott {
        /// Per packet, the chance of moving from the good state to the bad.
        good_to_bad: f64,
        /// Per packet, the chance of moving from the bad state back to the good.
        bad_to_good: f64,
        /// Loss probability in the good state.
        #[serde(default)]
        loss_good: f64,
        /// Loss probability in the bad state.
        #[serde(default = "one")]
        loss_bad: f64,
    },
}

fn one() -> f64 {
    1.0
}

impl LossModel {
    /// The long-run fraction of packets lost.
    pub fn expected_loss(&self) -> f64 {
        match *self {
            LossModel::None => 0.0,
            LossModel::Bernoulli { probability } => probability,
            LossModel::GilbertElliott {
                good_to_bad,
                bad_to_good,
                loss_good,
                loss_bad,
            } => {
                if good_to_bad + bad_to_good == 0.0 {
                    return loss_good;
                }
                let bad = good_to_bad / (good_to_bad + bad_to_good);
                bad * loss_bad + (1.0 - bad) * loss_good
            }
        }
    }
}

/// A change of link state at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// When the state changes.
    pub at: SimTime,
    /// The state from then on.
    pub state: LinkState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// Carries traffic (or produces key).
    Up,
    /// Carries nothing.
    Down,
}

/// A data rate in bits per second, written "2kbps", "10Mbps", "1.5Gbit/s".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bandwidth(pub u64);

impl Bandwidth {
    pub fn bits_per_second(self) -> u64 {
        self.0
    }

    /// Time to put `bytes` on the wire, rounded up to the nanosecond.
    pub fn serialization(self, bytes: usize) -> SimDuration {
        let ns = (bytes as u128 * 8 * 1_000_000_000).div_ceil(self.0 as u128);
        SimDuration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }

    /// Bytes the wire drains in `d`.
    pub fn bytes_in(self, d: SimDuration) -> u64 {
        (d.as_nanos() as u128 * self.0 as u128 / 8_000_000_000) as u64
    }
}

impl FromStr for Bandwidth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let per: u64 = match unit.trim() {
            "bps" | "bit/s" => 1,
            "kbps" | "kbit/s" => 1_000,
            "Mbps" | "Mbit/s" => 1_000_000,
            "Gbps" | "Gbit/s" => 1_000_000_000,
            other => {
                return Err(format!(
                    "`{s}`: unknown unit `{other}` (expected bps, kbps, Mbps or Gbps)"
                ));
            }
        };
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{s}`: expected a number followed by a unit, e.g. \"10Mbps\""))?;
        let bps = (value * per as f64).round();
        if !(1.0..1e19).contains(&bps) {
            return Err(format!("`{s}`: must be at least 1 bps"));
        }
        Ok(Bandwidth(bps as u64))
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (per, unit) in [
            (1_000_000_000, "Gbps"),
            (1_000_000, "Mbps"),
            (1_000, "kbps"),
        ] {
            if b >= per && b.is_multiple_of(per) {
                return write!(f, "{}{unit}", b / per);
            }
        }
        write!(f, "{b}bps")
    }
}

sim_core::serde_via_string!(
    Bandwidth,
    "bandwidth",
    "a bit rate: a number and bps, kbps, Mbps or Gbps (\"10Mbps\")"
);

/// A configuration value is unusable; `field` is its dotted path (e.g. `loss.probability`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("link configuration: `{field}`: {problem}")]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

fn err(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        problem: problem.into(),
    }
}

fn probability(field: &str, p: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(err(
            field,
            format!("must be a probability within [0, 1], got {p}"),
        ))
    }
}

impl LinkConfig {
    /// Parses a configuration from TOML, then validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| err("(document)", e.to_string()))?;
        let cfg: LinkConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            err(&field, e.into_inner().message().to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value that serde's types cannot rule out.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mtu < MIN_MTU || self.mtu > 65_535 {
            return Err(err(
                "mtu",
                format!("must be within [{MIN_MTU}, 65535] bytes, got {}", self.mtu),
            ));
        }
        if self.reassembly_timeout.is_zero() {
            return Err(err("reassembly_timeout", "must be positive"));
        }
        match self.loss {
            LossModel::None => {}
            LossModel::Bernoulli { probability: p } => probability("loss.probability", p)?,
            LossModel::GilbertElliott {
                good_to_bad,
                bad_to_good,
                loss_good,
                loss_bad,
            } => {
                probability("loss.good_to_bad", good_to_bad)?;
                probability("loss.bad_to_good", bad_to_good)?;
                probability("loss.loss_good", loss_good)?;
                probability("loss.loss_bad", loss_bad)?;
            }
        }
        probability("reorder", self.reorder)?;
        probability("duplicate", self.duplicate)?;
        probability("corrupt", self.corrupt)?;
        if self.reorder > 0.0 && self.reorder_delay.is_zero() {
            return Err(err("reorder_delay", "must be positive when reorder > 0"));
        }
        if let Some(bad) = self.schedule.windows(2).position(|w| w[0].at > w[1].at) {
            return Err(err(
                &format!("schedule[{}].at", bad + 1),
                "transitions must be in time order",
            ));
        }
        Ok(())
    }

    /// Whether the link is up at `t` according to the schedule.
    pub fn is_up(&self, t: SimTime) -> bool {
        let n = self.schedule.partition_point(|tr| tr.at <= t);
        n == 0 || self.schedule[n - 1].state == LinkState::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses_from_toml() {
        let cfg = LinkConfig::from_toml(
            r#"
            latency = "25ms"
            jitter = "2ms"
            bandwidth = "10Mbps"
            mtu = 1280
            oversize = "drop-fragments"
            loss = { model = "gilbert-elliott", good_to_bad = 0.01, bad_to_good = 0.25 }
            duplicate = 0.001
            schedule = [{ at = "10s", state = "down" }, { at = "12s", state = "up" }]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.latency, SimDuration::from_millis(25));
        assert_eq!(cfg.bandwidth, Some(Bandwidth(10_000_000)));
        assert_eq!(cfg.oversize, Oversize::DropFragments);
        assert!((cfg.loss.expected_loss() - 0.01 / 0.26).abs() < 1e-12);
        assert!(cfg.is_up("9.999s".parse().unwrap()));
        assert!(!cfg.is_up("10s".parse().unwrap()));
        assert!(cfg.is_up("12s".parse().unwrap()));
    }

    fn field_of(text: &str) -> String {
        LinkConfig::from_toml(text).unwrap_err().field
    }

    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(field_of("mtu = 0"), "mtu");
        assert_eq!(field_of("mtu = -5"), "mtu");
        assert_eq!(field_of("mtu = 40"), "mtu");
        assert_eq!(field_of("latency = \"fast\""), "latency");
        assert_eq!(field_of("latency = \"-3ms\""), "latency");
        assert_eq!(
            field_of("loss = { model = \"bernoulli\", probability = 1.5 }"),
            "loss.probability"
        );
        assert_eq!(
            field_of(
                "loss = { model = \"gilbert-elliott\", good_to_bad = -0.1, bad_to_good = 0.5 }"
            ),
            "loss.good_to_bad"
        );
        assert_eq!(field_of("duplicate = 2.0"), "duplicate");
        assert_eq!(field_of("bandwidth = \"fast\""), "bandwidth");
        assert_eq!(field_of("colour = \"red\""), "colour");
        assert_eq!(
            field_of(
                "schedule = [{ at = \"5s\", state = \"down\" }, { at = \"1s\", state = \"up\" }]"
            ),
            "schedule[1].at"
        );
        let e = LinkConfig::from_toml("mtu = 0").unwrap_err();
        assert!(e.to_string().contains("mtu"), "{e}");
    }

    #[test]
    fn bandwidth_strings() {
        assert_eq!("2kbps".parse::<Bandwidth>(), Ok(Bandwidth(2_000)));
        assert_eq!(
            "1.5Gbit/s".parse::<Bandwidth>(),
            Ok(Bandwidth(1_500_000_000))
        );
        assert!("0bps".parse::<Bandwidth>().is_err());
        assert!("10 furlongs".parse::<Bandwidth>().is_err());
        assert_eq!(Bandwidth(10_000_000).to_string(), "10Mbps");
        assert_eq!(Bandwidth(1_500).to_string(), "1500bps");
        assert_eq!(
            Bandwidth(8_000).serialization(1000),
            SimDuration::from_secs(1)
        );
        assert_eq!(
            Bandwidth(8_000).bytes_in(SimDuration::from_millis(500)),
            500
        );
    }
}
