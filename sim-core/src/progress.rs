//! A progress bar on stderr for long runs: simulated time against the run's end, events
//! per second, simulated time per wall-clock time, and the time left.
//!
//! Nothing shows for a run that ends within [`QUIET_FOR`], nor when stderr is not a
//! terminal (a CI log or a pipe stays clean). This is the only place in sim-core that
//! reads the wall clock, and it only decides what to draw: nothing it measures reaches
//! results, traces or fingerprints.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::time::SimTime;

/// How long a run goes before its bar appears.
pub const QUIET_FOR: Duration = Duration::from_secs(2);

/// Call [`Progress::tick`] as often as you like: the wall clock is read once every 4096
/// calls, and the bar redrawn at most once per interval.
pub struct Progress {
    started: Instant,
    last_draw: Instant,
    interval: Duration,
    end: SimTime,
    calls: u32,
    /// Created when the run has gone on for [`QUIET_FOR`].
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress towards simulated time `end`, redrawn every `interval` of real time.
    pub fn new(end: SimTime, interval: Duration) -> Self {
        let now = Instant::now();
        Progress {
            started: now,
            last_draw: now,
            interval,
            end,
            calls: 0,
            bar: None,
        }
    }

    /// Reports the state after `events` events at simulated time `now`.
    pub fn tick(&mut self, now: SimTime, events: u64) {
        self.calls = self.calls.wrapping_add(1);
        if !self.calls.is_multiple_of(4096) {
            return;
        }
        let wall = Instant::now();
        if wall.duration_since(self.last_draw) < self.interval
            || wall.duration_since(self.started) < QUIET_FOR
        {
            return;
        }
        self.last_draw = wall;
        self.draw(now, events, wall);
    }

    /// Draws the final state (if a bar was shown) and leaves it on screen.
    pub fn finish(&mut self, now: SimTime, events: u64) {
        if self.bar.is_some() {
            self.draw(now, events, Instant::now());
        }
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }

    fn draw(&mut self, now: SimTime, events: u64, wall: Instant) {
        let end_ms = self.end.as_nanos() / 1_000_000;
        let bar = self.bar.get_or_insert_with(|| {
            let style = ProgressStyle::with_template("{bar:20} {percent:>3}% {msg} ETA {eta}")
                .expect("a valid template");
            let bar = ProgressBar::with_draw_target(Some(end_ms), ProgressDrawTarget::stderr());
            bar.set_style(style);
            bar
        });
        let real = wall.duration_since(self.started).as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{now} of {end}, {speed:.0}x real time, {eps:.2}M events/s,",
            end = self.end,
            speed = now.as_secs_f64() / real,
            eps = events as f64 / real / 1e6,
        ));
        bar.set_position((now.as_nanos() / 1_000_000).min(end_ms));
    }
}
