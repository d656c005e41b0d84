//! Simulated time: integer nanoseconds since the start of a run.
//!
//! Floating-point time makes simultaneous events depend on rounding, so the engine never
//! uses it. Durations are written and read as human strings ("250ms", "1.5s", "4h",
//! "1h30m"); parsing is exact (decimal fractions are converted with integer arithmetic)
//! and `parse(display(d)) == d` for every duration.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::str::FromStr;

/// A point in simulated time, in nanoseconds since the run started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimTime(u64);

/// A span of simulated time in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimDuration(u64);

const NS: u64 = 1;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const MIN: u64 = 60 * S;
const H: u64 = 60 * MIN;
const D: u64 = 24 * H;

impl SimTime {
    pub const ZERO: SimTime = SimTime(0);
    pub const MAX: SimTime = SimTime(u64::MAX);

    pub const fn from_nanos(ns: u64) -> Self {
        SimTime(ns)
    }
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Time since the start of the run.
    pub const fn since_start(self) -> SimDuration {
        SimDuration(self.0)
    }
    /// Seconds as a float, for reports and plots only (never for scheduling).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / S as f64
    }
    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: SimTime) -> SimDuration {
        SimDuration(self.0.saturating_sub(earlier.0))
    }
}

impl SimDuration {
    pub const ZERO: SimDuration = SimDuration(0);
    pub const MAX: SimDuration = SimDuration(u64::MAX);

    pub const fn from_nanos(ns: u64) -> Self {
        SimDuration(ns)
    }
    pub const fn from_micros(us: u64) -> Self {
        SimDuration(us * US)
    }
    pub const fn from_millis(ms: u64) -> Self {
        SimDuration(ms * MS)
    }
    pub const fn from_secs(s: u64) -> Self {
        SimDuration(s * S)
    }
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
    /// Seconds as a float, for reports and plots only (never for scheduling).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / S as f64
    }
    pub fn saturating_mul(self, k: u64) -> Self {
        SimDuration(self.0.saturating_mul(k))
    }
}

impl Add<SimDuration> for SimTime {
    type Output = SimTime;
    /// Saturates at `SimTime::MAX` ("never") instead of wrapping.
    fn add(self, d: SimDuration) -> SimTime {
        SimTime(self.0.saturating_add(d.0))
    }
}
impl AddAssign<SimDuration> for SimTime {
    fn add_assign(&mut self, d: SimDuration) {
        *self = *self + d;
    }
}
impl Add for SimDuration {
    type Output = SimDuration;
    fn add(self, d: SimDuration) -> SimDuration {
        SimDuration(self.0.saturating_add(d.0))
    }
}
impl Sub for SimDuration {
    type Output = SimDuration;
    fn sub(self, d: SimDuration) -> SimDuration {
        SimDuration(self.0.saturating_sub(d.0))
    }
}

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationParseError {
    #[error("empty duration (expected e.g. \"250ms\", \"1.5s\", \"4h\")")]
    Empty,
    #[error("`{0}`: expected a number followed by a unit (ns, us, ms, s, m, h, d), e.g. \"250ms\"")]
    Malformed(String),
    #[error("`{text}`: unknown unit `{unit}` (expected ns, us, ms, s, m, h or d)")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}`: more decimal places than nanoseconds can hold")]
    TooPrecise(String),
    #[error("`{0}`: too large (the limit is about 584 years)")]
    Overflow(String),
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => NS,
        "us" | "µs" => US,
        "ms" => MS,
        "s" => S,
        "m" | "min" => MIN,
        "h" => H,
        "d" => D,
        _ => return None,
    })
}

impl FromStr for SimDuration {
    type Err = DurationParseError;

    /// Parses one or more `<number><unit>` terms ("1h30m", "1.5s"); a bare "0" is zero.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        if s.is_empty() {
            return Err(DurationParseError::Empty);
        }
        if s == "0" {
            return Ok(SimDuration::ZERO);
        }
        let malformed = || DurationParseError::Malformed(text.to_string());
        let overflow = || DurationParseError::Overflow(text.to_string());
        let mut total: u64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(malformed)?;
            let (num, tail) = rest.split_at(num_len);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let per = unit_nanos(unit).ok_or_else(|| DurationParseError::UnknownUnit {
                text: text.to_string(),
                unit: unit.to_string(),
            })?;
            let (int_part, frac_part) = match num.split_once('.') {
                Some((i, f)) => (i, f),
                None => (num, ""),
            };
            if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
                return Err(malformed());
            }
            let int: u64 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| overflow())?
            };
            let mut nanos = int.checked_mul(per).ok_or_else(overflow)?;
            // The fraction times the unit must come out in whole nanoseconds.
            if !frac_part.is_empty() {
                if frac_part.len() > 18 {
                    return Err(DurationParseError::TooPrecise(text.to_string()));
                }
                let frac: u128 = frac_part.parse().map_err(|_| malformed())?;
                let scale = 10u128.pow(frac_part.len() as u32);
                let scaled = frac * per as u128;
                if !scaled.is_multiple_of(scale) {
                    return Err(DurationParseError::TooPrecise(text.to_string()));
                }
                nanos = nanos
                    .checked_add((scaled / scale) as u64)
                    .ok_or_else(overflow)?;
            }
            total = total.checked_add(nanos).ok_or_else(overflow)?;
            rest = tail;
        }
        Ok(SimDuration(total))
    }
}

impl fmt::Display for SimDuration {
    /// Whole hours or minutes when exact, otherwise seconds (or ms, us, ns) with as many
    /// decimals as needed, so the text parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        if ns == 0 {
            return f.write_str("0s");
        }
        if ns.is_multiple_of(H) {
            return write!(f, "{}h", ns / H);
        }
        if ns.is_multiple_of(MIN) {
            return write!(f, "{}m", ns / MIN);
        }
        let (per, unit, digits) = if ns >= S {
            (S, "s", 9)
        } else if ns >= MS {
            (MS, "ms", 6)
        } else if ns >= US {
            (US, "us", 3)
        } else {
            return write!(f, "{ns}ns");
        };
        let (int, frac) = (ns / per, ns % per);
        if frac == 0 {
            write!(f, "{int}{unit}")
        } else {
            let frac = format!("{frac:0digits$}");
            write!(f, "{int}.{}{unit}", frac.trim_end_matches('0'))
        }
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.since_start(), f)
    }
}

impl FromStr for SimTime {
    type Err = DurationParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SimTime(s.parse::<SimDuration>()?.0))
    }
}

crate::serde_via_string!(
    SimDuration,
    "duration",
    "a duration: a number and a unit (ns, us, ms, s, m, h, d), or several (\"250ms\", \"1.5s\", \"1h30m\")"
);
crate::serde_via_string!(
    SimTime,
    "time",
    "a time since the run's start, written as a duration (\"90s\", \"2h\")"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> u64 {
        s.parse::<SimDuration>().unwrap().as_nanos()
    }

    #[test]
    fn parses_human_strings() {
        assert_eq!(d("250ms"), 250 * MS);
        assert_eq!(d("1.5s"), 1_500 * MS);
        assert_eq!(d("4h"), 4 * H);
        assert_eq!(d("1h30m"), 90 * MIN);
        assert_eq!(d("0"), 0);
        assert_eq!(d("0.000000001s"), 1);
        assert_eq!(d(".5ms"), 500 * US);
        assert_eq!(d("2d"), 48 * H);
        assert_eq!(d("10us"), 10_000);
    }

    #[test]
    fn rejects_bad_strings() {
        use DurationParseError::*;
        assert_eq!("".parse::<SimDuration>(), Err(Empty));
        assert!(matches!("12".parse::<SimDuration>(), Err(Malformed(_))));
        assert!(matches!("ms".parse::<SimDuration>(), Err(Malformed(_))));
        assert!(matches!(
            "5parsecs".parse::<SimDuration>(),
            Err(UnknownUnit { .. })
        ));
        assert!(matches!(
            "-5s".parse::<SimDuration>(),
            Err(UnknownUnit { .. })
        ));
        assert!(matches!("1.2.3s".parse::<SimDuration>(), Err(Malformed(_))));
        assert!(matches!("0.5ns".parse::<SimDuration>(), Err(TooPrecise(_))));
        assert!(matches!(
            "999999999d".parse::<SimDuration>(),
            Err(Overflow(_))
        ));
    }

    #[test]
    fn prints_human_strings() {
        let show = |ns| SimDuration(ns).to_string();
        assert_eq!(show(0), "0s");
        assert_eq!(show(250 * MS), "250ms");
        assert_eq!(show(1_500 * MS), "1.5s");
        assert_eq!(show(4 * H), "4h");
        assert_eq!(show(90 * MIN), "90m");
        assert_eq!(show(1), "1ns");
        assert_eq!(show(1_234), "1.234us");
        assert_eq!(show(H + 1), "3600.000000001s");
    }

    proptest! {
        #[test]
        fn display_parses_back(ns in any::<u64>()) {
            let dur = SimDuration(ns);
            prop_assert_eq!(dur.to_string().parse::<SimDuration>(), Ok(dur));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,20}") {
            let _ = s.parse::<SimDuration>();
        }
    }
}
