//! Engine throughput: events per second through `Simulation` (tracing off) against a bare
//! `BinaryHeap` holding the same events with the same total order, measured in the same
//! run, at 1k, 100k and 1M pending events (the classic "hold" model: take the earliest
//! event, schedule one new event a random delay later).
//!
//! Run with `cargo bench -p sim-core`. The figure that matters is the ratio.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::Instant;

use sim_core::{EntityId, SimDuration, Simulation};

const SOURCES: u32 = 64;
/// Mean delay between an event and the one it schedules: 1 ms.
const MEAN_DELAY_NS: u64 = 1_000_000;

/// xorshift64*: the same cheap delay sequence for both contenders.
struct Delays(u64);
impl Delays {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (2 * MEAN_DELAY_NS)
    }
}

fn engine(pending: usize, events: u64) -> (f64, u64) {
    let mut sim = Simulation::<u64>::new(1);
    let ids: Vec<EntityId> = (0..SOURCES)
        .map(|i| sim.register(&format!("e{i}")).unwrap())
        .collect();
    let mut d = Delays(0x9e37_79b9_7f4a_7c15);
    for i in 0..pending as u64 {
        sim.schedule(
            ids[(i % SOURCES as u64) as usize],
            SimDuration::from_nanos(d.next()),
            i,
        );
    }
    let mut check = 0u64;
    let start = Instant::now();
    for _ in 0..events {
        let ev = sim.next_event().expect("hold model never runs dry");
        check = check.wrapping_add(ev.event ^ ev.time.as_nanos());
        let src = ids[(ev.event % SOURCES as u64) as usize];
        sim.schedule(
            src,
            SimDuration::from_nanos(d.next()),
            ev.event.wrapping_mul(31) + 1,
        );
    }
    (
        events as f64 / start.elapsed().as_secs_f64(),
        black_box(check),
    )
}

fn bare_heap(pending: usize, events: u64) -> (f64, u64) {
    let mut heap = BinaryHeap::with_capacity(pending + 1);
    let mut seqs = [0u64; SOURCES as usize];
    let mut d = Delays(0x9e37_79b9_7f4a_7c15);
    let mut push = |heap: &mut BinaryHeap<_>, now: u64, src: u32, payload: u64, delay: u64| {
        let seq = seqs[src as usize];
        seqs[src as usize] += 1;
        heap.push(Reverse((now + delay, src, seq, payload)));
    };
    for i in 0..pending as u64 {
        push(&mut heap, 0, (i % SOURCES as u64) as u32, i, d.next());
    }
    let mut check = 0u64;
    let start = Instant::now();
    for _ in 0..events {
        let Reverse((time, _src, _seq, payload)) = heap.pop().expect("never dry");
        check = check.wrapping_add(payload ^ time);
        let src = (payload % SOURCES as u64) as u32;
        push(&mut heap, time, src, payload.wrapping_mul(31) + 1, d.next());
    }
    (
        events as f64 / start.elapsed().as_secs_f64(),
        black_box(check),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` passes `--bench`-less args; keep that run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    println!("engine throughput, hold model, mean delay 1ms, {SOURCES} sources");
    println!(
        "{:>10} {:>16} {:>16} {:>8}",
        "pending", "engine ev/s", "BinaryHeap ev/s", "ratio"
    );
    for &pending in &[1_000usize, 100_000, 1_000_000] {
        let events = if quick {
            10_000
        } else {
            (4 * pending as u64).max(4_000_000)
        };
        let rounds = if quick { 1 } else { 5 };
        let (mut e, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (re, ce) = engine(pending, events);
            let (rb, cb) = bare_heap(pending, events);
            // Both must have processed the same events in the same order.
            assert_eq!(ce, cb, "engine and heap disagree on event order");
            e.push(re);
            b.push(rb);
        }
        let (e, b) = (median(e), median(b));
        println!("{pending:>10} {e:>16.0} {b:>16.0} {:>7.2}x", e / b);
    }
}
