//! A progress line on stderr for long runs: simulated time, speed relative to real time,
//! and events per second.
//!
//! This is the only place in sim-core that reads the wall clock, and it only decides
//! when to print: nothing it measures reaches results, traces or fingerprints.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::time::SimTime;

/// Prints at most once per interval; call [`Progress::tick`] as often as you like.
pub struct Progress {
    started: Instant,
    last_print: Instant,
    interval: Duration,
    end: SimTime,
    calls: u32,
    printed: bool,
}

impl Progress {
    /// Progress towards simulated time `end`, printed every `interval` of real time.
    pub fn new(end: SimTime, interval: Duration) -> Self {
        let now = Instant::now();
        Progress {
            started: now,
            last_print: now,
            interval,
            end,
            calls: 0,
            printed: false,
        }
    }

    /// Reports the state after `events` events at simulated time `now`. Cheap: the wall
    /// clock is read once every 4096 calls.
    pub fn tick(&mut self, now: SimTime, events: u64) {
        self.calls = self.calls.wrapping_add(1);
        if !self.calls.is_multiple_of(4096) {
            return;
        }
        let wall = Instant::now();
        if wall.duration_since(self.last_print) < self.interval {
            return;
        }
        self.last_print = wall;
        self.print(now, events, wall);
    }

    /// Prints the final line (if any line was printed) and ends it.
    pub fn finish(&mut self, now: SimTime, events: u64) {
        if self.printed {
            self.print(now, events, Instant::now());
            eprintln!();
        }
    }

    fn print(&mut self, now: SimTime, events: u64, wall: Instant) {
        let real = wall.duration_since(self.started).as_secs_f64().max(1e-9);
        let pct = if self.end.as_nanos() == 0 {
            100.0
        } else {
            100.0 * now.as_secs_f64() / self.end.as_secs_f64()
        };
        let line = format!(
            "\r[{pct:5.1}%] simulated {now} of {end}  {speed:.0}x real time  {eps:.2}M events/s  ",
            end = self.end,
            speed = now.as_secs_f64() / real,
            eps = events as f64 / real / 1e6,
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
        self.printed = true;
    }
}
