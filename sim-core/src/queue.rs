//! The event queue: a total order `(time, source entity, per-source sequence)` and
//! cancellable timers.
//!
//! Ordering: among events at the same instant, the one whose source entity has the lower
//! id goes first, and one source's events go in the order it scheduled them. That order
//! follows from the model alone, never from insertion accidents or hashing.
//!
//! Structure: a radix heap on time (events are never scheduled before the last one taken
//! out, which is the monotone property a radix heap needs) plus a small binary heap of
//! the keys (source, sequence) of the events at the current instant. Each event is moved
//! between buckets at most ~64 times and the buckets are chunked vectors scanned in
//! order, so with a million pending events it touches memory far more kindly than a
//! binary heap of the same events (see `cargo bench -p sim-core`). A bucket that crowds
//! with events (hourly timers, at a hub of thousands) fills fixed-size chunks, and
//! drained chunks are kept for the next bucket to fill: it grows without copying what it
//! holds or faulting in fresh pages.
//!
//! Peeking, and skipping cancelled timers, can move the radix base past the time of the
//! last event actually taken out; events scheduled in that gap (still in the future of
//! the model) wait in a small `early` heap that always drains first.
//!
//! Timers: `schedule_timer` returns a [`TimerId`]; `cancel` marks its slot dead in O(1)
//! without touching the queue. The stale entry is skipped when it surfaces, and the queue
//! is compacted when stale entries outnumber live ones, so frequently re-armed timers
//! (retransmission, lifetimes) cannot make it grow without bound.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::entity::EntityId;
use crate::time::SimTime;

const NO_TIMER: u32 = u32::MAX;
const BUCKETS: usize = 65;
/// Bytes of one bucket chunk.
const CHUNK_BYTES: usize = 4096;

/// A handle to a pending timer; stale handles (fired or cancelled) are harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    slot: u32,
    generation: u32,
}

/// An event taken out of the queue.
#[derive(Debug)]
pub struct Scheduled<E> {
    pub time: SimTime,
    /// The entity that scheduled it.
    pub source: EntityId,
    /// Set when the event was scheduled as a timer.
    pub timer: Option<TimerId>,
    pub event: E,
}

struct Entry<E> {
    time: u64,
    seq: u64,
    source: u32,
    timer_slot: u32,
    event: E,
}

/// Entries at the current instant, yielded lowest (source, seq) first. The heap holds
/// only those keys and each entry's slot in `entries`: the entries are large (the model's
/// event), and a heap moves its items at every level of every push and pop.
struct Now<E> {
    keys: BinaryHeap<Reverse<(u32, u64, u32)>>,
    /// Emptied slot by slot as keys come out; cleared when the instant has none left.
    entries: Vec<Option<Entry<E>>>,
}

impl<E> Now<E> {
    fn new() -> Self {
        Now {
            keys: BinaryHeap::new(),
            entries: Vec::new(),
        }
    }

    fn push(&mut self, e: Entry<E>) {
        let slot = self.entries.len() as u32;
        self.keys.push(Reverse((e.source, e.seq, slot)));
        self.entries.push(Some(e));
    }

    fn peek(&self) -> Option<&Entry<E>> {
        let Reverse((.., slot)) = self.keys.peek()?;
        self.entries[*slot as usize].as_ref()
    }

    fn pop(&mut self) -> Option<Entry<E>> {
        let Reverse((.., slot)) = self.keys.pop()?;
        let e = self.entries[slot as usize].take();
        if self.keys.is_empty() {
            self.entries.clear();
        }
        e
    }

    fn retain(&mut self, mut live: impl FnMut(&Entry<E>) -> bool) {
        let entries = &mut self.entries;
        self.keys.retain(|Reverse((.., slot))| {
            let e = &mut entries[*slot as usize];
            let keep = e.as_ref().is_some_and(&mut live);
            if !keep {
                *e = None;
            }
            keep
        });
        if self.keys.is_empty() {
            self.entries.clear();
        }
    }
}

/// Entries before the radix base, ordered so that the lowest (time, source, seq) is
/// yielded first.
struct Early<E>(Entry<E>);

impl<E> PartialEq for Early<E> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl<E> Eq for Early<E> {}
impl<E> PartialOrd for Early<E> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<E> Ord for Early<E> {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.0.time, o.0.source, o.0.seq).cmp(&(self.0.time, self.0.source, self.0.seq))
    }
}

/// A radix bucket: its entries in chunks of [`EventQueue::CHUNK`], filled in order, so
/// that a crowded bucket grows without moving what it holds. New entries go into `tail`,
/// which grows as a vector does up to a chunk (a bucket of a few entries stays small, in
/// few cache lines and pages); a full tail joins `full`.
struct Bucket<E> {
    full: Vec<Vec<Entry<E>>>,
    tail: Vec<Entry<E>>,
}

impl<E> Default for Bucket<E> {
    fn default() -> Self {
        Bucket {
            full: Vec::new(),
            tail: Vec::new(),
        }
    }
}

impl<E> Bucket<E> {
    fn is_empty(&self) -> bool {
        self.tail.is_empty() && self.full.is_empty()
    }

    fn min_time(&self) -> Option<u64> {
        let min = |chunk: &[Entry<E>]| chunk.iter().map(|e| e.time).min();
        (self.full.iter().filter_map(|c| min(c)))
            .chain(min(&self.tail))
            .min()
    }
}

#[derive(Clone, Copy)]
struct TimerSlot {
    generation: u32,
    /// (source, seq) of the queue entry that is this timer's live occurrence.
    armed: Option<(u32, u64)>,
}

/// A monotone priority queue of events of type `E`.
pub struct EventQueue<E> {
    /// Time of the last event taken out; no event may be scheduled before it.
    popped: u64,
    /// The radix base: every entry in `current` and `buckets` is at or after it.
    last: u64,
    /// Entries at `last`.
    current: Now<E>,
    /// Entries in `popped..last`; they all come before everything else.
    early: BinaryHeap<Early<E>>,
    buckets: Vec<Bucket<E>>,
    /// Empty chunks (with room for [`Self::CHUNK`] entries) for buckets to fill; no more
    /// than the entries pending would fill.
    spare: Vec<Vec<Entry<E>>>,
    /// Bit `i - 1` is set when bucket `i` (1..=64) is non-empty.
    occupied: u64,
    entries: usize,
    stale: usize,
    next_seq: Vec<u64>,
    timers: Vec<TimerSlot>,
    free_timers: Vec<u32>,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> EventQueue<E> {
    /// Entries per bucket chunk (a byte more each: no division by zero for events of no
    /// size).
    const CHUNK: usize = match CHUNK_BYTES / (1 + std::mem::size_of::<Entry<E>>()) {
        0 => 1,
        n => n,
    };

    pub fn new() -> Self {
        EventQueue {
            popped: 0,
            last: 0,
            current: Now::new(),
            early: BinaryHeap::new(),
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            spare: Vec::new(),
            occupied: 0,
            entries: 0,
            stale: 0,
            next_seq: Vec::new(),
            timers: Vec::new(),
            free_timers: Vec::new(),
        }
    }

    /// Live events pending (cancelled timers excluded).
    pub fn len(&self) -> usize {
        self.entries - self.stale
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The earliest time at which an event may still be scheduled.
    pub fn horizon(&self) -> SimTime {
        SimTime::from_nanos(self.popped)
    }

    /// Schedules `event` at `time` on behalf of `source`.
    ///
    /// # Panics
    /// If `time` is before the last event taken out: the model tried to change the past.
    pub fn schedule(&mut self, time: SimTime, source: EntityId, event: E) {
        self.push(time, source, NO_TIMER, event);
    }

    /// Like [`schedule`](Self::schedule), but the event can be cancelled until it fires.
    pub fn schedule_timer(&mut self, time: SimTime, source: EntityId, event: E) -> TimerId {
        let slot = match self.free_timers.pop() {
            Some(slot) => slot,
            None => {
                self.timers.push(TimerSlot {
                    generation: 0,
                    armed: None,
                });
                (self.timers.len() - 1) as u32
            }
        };
        let seq = self.push(time, source, slot, event);
        let t = &mut self.timers[slot as usize];
        t.armed = Some((source.0, seq));
        TimerId {
            slot,
            generation: t.generation,
        }
    }

    /// Cancels a pending timer; returns false if it already fired or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let Some(t) = self.timers.get_mut(id.slot as usize) else {
            return false;
        };
        if t.generation != id.generation || t.armed.is_none() {
            return false;
        }
        self.release_timer(id.slot);
        self.stale += 1;
        if self.stale > 4096 && self.stale * 2 > self.entries {
            self.compact();
        }
        true
    }

    /// Whether `id` is still pending.
    pub fn is_pending(&self, id: TimerId) -> bool {
        self.timers
            .get(id.slot as usize)
            .is_some_and(|t| t.generation == id.generation && t.armed.is_some())
    }

    /// The time of the next live event, without taking it out.
    pub fn peek_time(&mut self) -> Option<SimTime> {
        loop {
            if let Some(top) = self.early.peek() {
                if self.is_live(&top.0) {
                    return Some(SimTime::from_nanos(top.0.time));
                }
                let Early(e) = self.early.pop().expect("peeked");
                self.drop_stale(e);
                continue;
            }
            if let Some(top) = self.current.peek() {
                if self.is_live(top) {
                    return Some(SimTime::from_nanos(top.time));
                }
                let e = self.current.pop().expect("peeked");
                self.drop_stale(e);
                continue;
            }
            if !self.refill() {
                return None;
            }
        }
    }

    /// The next live event, without taking it out (see [`peek_time`](Self::peek_time)).
    pub fn peek(&mut self) -> Option<&E> {
        self.peek_time()?;
        match self.early.peek() {
            Some(Early(e)) => Some(&e.event),
            None => self.current.peek().map(|e| &e.event),
        }
    }

    /// Takes out the next live event in `(time, source, sequence)` order.
    pub fn pop(&mut self) -> Option<Scheduled<E>> {
        loop {
            let next = if self.early.is_empty() {
                self.current.pop()
            } else {
                self.early.pop().map(|Early(e)| e)
            };
            if let Some(e) = next {
                if !self.is_live(&e) {
                    self.drop_stale(e);
                    continue;
                }
                self.entries -= 1;
                self.popped = e.time;
                let timer = (e.timer_slot != NO_TIMER).then(|| {
                    let generation = self.timers[e.timer_slot as usize].generation;
                    self.release_timer(e.timer_slot);
                    TimerId {
                        slot: e.timer_slot,
                        generation,
                    }
                });
                return Some(Scheduled {
                    time: SimTime::from_nanos(e.time),
                    source: EntityId(e.source),
                    timer,
                    event: e.event,
                });
            }
            if !self.refill() {
                return None;
            }
        }
    }

    fn push(&mut self, time: SimTime, source: EntityId, timer_slot: u32, event: E) -> u64 {
        let time = time.as_nanos();
        assert!(
            time >= self.popped,
            "event scheduled at {time} ns, before the current time {} ns",
            self.popped
        );
        let s = source.0 as usize;
        if s >= self.next_seq.len() {
            self.next_seq.resize(s + 1, 0);
        }
        let seq = self.next_seq[s];
        self.next_seq[s] += 1;
        self.entries += 1;
        self.place(Entry {
            time,
            seq,
            source: source.0,
            timer_slot,
            event,
        });
        seq
    }

    #[inline(always)]
    fn place(&mut self, e: Entry<E>) {
        if e.time < self.last {
            self.early.push(Early(e));
            return;
        }
        let diff = e.time ^ self.last;
        if diff == 0 {
            self.current.push(e);
        } else {
            let b = 64 - diff.leading_zeros() as usize;
            self.push_to(b, e);
            self.occupied |= 1 << (b - 1);
        }
    }

    /// Appends `e` to bucket `b`, in its tail chunk or, when that is full, a new one.
    #[inline]
    fn push_to(&mut self, b: usize, e: Entry<E>) {
        if self.buckets[b].tail.len() >= Self::CHUNK {
            self.new_tail(b);
        }
        self.buckets[b].tail.push(e);
    }

    /// Bucket `b`'s full tail joins its full chunks, and a spare chunk becomes its tail.
    /// Out of line: rare, and `place`, which runs for every move, stays small enough to
    /// be inlined.
    #[cold]
    #[inline(never)]
    fn new_tail(&mut self, b: usize) {
        let next = (self.spare.pop()).unwrap_or_else(|| Vec::with_capacity(Self::CHUNK));
        let bucket = &mut self.buckets[b];
        bucket.full.push(std::mem::replace(&mut bucket.tail, next));
    }

    /// Takes back an emptied chunk, unless the spares would outgrow what is pending.
    fn recycle(&mut self, chunk: Vec<Entry<E>>) {
        debug_assert!(chunk.is_empty());
        if chunk.capacity() >= Self::CHUNK
            && self.spare.len() <= self.entries / Self::CHUNK + BUCKETS
        {
            self.spare.push(chunk);
        }
    }

    /// Moves the entries of `chunk` to where they belong now; cancelled timers end here
    /// rather than moving down (stale is for good: a slot's new timer has a new sequence
    /// number), and the order of the live ones is theirs.
    #[inline(always)]
    fn move_down(&mut self, chunk: &mut Vec<Entry<E>>) {
        for e in chunk.drain(..) {
            if self.is_live(&e) {
                self.place(e);
            } else {
                self.drop_stale(e);
            }
        }
    }

    /// Moves the entries of the lowest non-empty bucket down, making its minimum time
    /// the new `last`. Returns false when nothing is left.
    fn refill(&mut self) -> bool {
        if self.occupied == 0 {
            return false;
        }
        let b = self.occupied.trailing_zeros() as usize + 1;
        self.occupied &= !(1 << (b - 1));
        let mut bucket = std::mem::take(&mut self.buckets[b]);
        self.last = bucket.min_time().expect("occupied bucket");
        // Its entries all go to lower buckets (or the current instant): none comes back.
        for mut chunk in bucket.full.drain(..) {
            self.move_down(&mut chunk);
            self.recycle(chunk);
        }
        // The tail stays, empty, for the next time the bucket fills.
        self.move_down(&mut bucket.tail);
        self.buckets[b] = bucket;
        true
    }

    fn is_live(&self, e: &Entry<E>) -> bool {
        e.timer_slot == NO_TIMER
            || self.timers[e.timer_slot as usize].armed == Some((e.source, e.seq))
    }

    fn drop_stale(&mut self, _e: Entry<E>) {
        self.entries -= 1;
        self.stale -= 1;
    }

    fn release_timer(&mut self, slot: u32) {
        let t = &mut self.timers[slot as usize];
        t.armed = None;
        t.generation = t.generation.wrapping_add(1);
        self.free_timers.push(slot);
    }

    /// Drops every cancelled entry; O(pending), amortized over the cancels that made it
    /// necessary.
    fn compact(&mut self) {
        for b in 1..BUCKETS {
            let mut bucket = std::mem::take(&mut self.buckets[b]);
            let tail = std::mem::take(&mut bucket.tail);
            for mut chunk in bucket.full.drain(..).chain([tail]) {
                for e in chunk.drain(..) {
                    if self.is_live(&e) {
                        self.push_to(b, e);
                    }
                }
                self.recycle(chunk);
            }
        }
        let timers = &self.timers;
        let live = |e: &Entry<E>| {
            e.timer_slot == NO_TIMER
                || timers[e.timer_slot as usize].armed == Some((e.source, e.seq))
        };
        self.current.retain(live);
        self.early.retain(|n| live(&n.0));
        self.occupied = 0;
        for (b, bucket) in self.buckets.iter().enumerate().skip(1) {
            if !bucket.is_empty() {
                self.occupied |= 1 << (b - 1);
            }
        }
        self.entries -= self.stale;
        self.stale = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(ns: u64) -> SimTime {
        SimTime::from_nanos(ns)
    }

    #[test]
    fn orders_by_time_then_source_then_sequence() {
        let mut q = EventQueue::new();
        q.schedule(t(10), EntityId(2), "c1");
        q.schedule(t(10), EntityId(1), "b1");
        q.schedule(t(5), EntityId(9), "a");
        q.schedule(t(10), EntityId(2), "c2");
        q.schedule(t(10), EntityId(1), "b2");
        let got: Vec<_> = std::iter::from_fn(|| q.pop()).map(|s| s.event).collect();
        assert_eq!(got, ["a", "b1", "b2", "c1", "c2"]);
    }

    #[test]
    fn cancelled_timers_never_fire_and_handles_go_stale() {
        let mut q = EventQueue::new();
        let a = q.schedule_timer(t(5), EntityId(0), 'a');
        let b = q.schedule_timer(t(6), EntityId(0), 'b');
        assert!(q.cancel(a));
        assert!(!q.cancel(a), "second cancel is a no-op");
        assert_eq!(q.len(), 1);
        // The freed slot is reused; the old handle must not cancel the new timer.
        let c = q.schedule_timer(t(7), EntityId(0), 'c');
        assert!(!q.cancel(a));
        assert!(q.is_pending(c));
        let first = q.pop().unwrap();
        assert_eq!((first.event, first.timer), ('b', Some(b)));
        assert!(!q.is_pending(b));
        assert_eq!(q.pop().unwrap().event, 'c');
        assert!(q.pop().is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn compaction_bounds_memory_under_constant_rearming() {
        let mut q = EventQueue::new();
        let mut id = q.schedule_timer(t(1_000_000), EntityId(0), 0u32);
        for i in 1..100_000u32 {
            q.cancel(id);
            id = q.schedule_timer(t(1_000_000 + i as u64), EntityId(0), i);
        }
        assert_eq!(q.len(), 1);
        assert!(q.entries < 10_000, "stale entries kept: {}", q.entries);
        assert_eq!(q.pop().unwrap().event, 99_999);
    }

    #[test]
    fn crowded_buckets_keep_the_order_across_chunks_and_compaction() {
        // Far more events than a chunk holds, in shuffled times, most of them cancelled
        // (enough to compact the queue on the way).
        let n = 10_000u64;
        assert!(n > 50 * EventQueue::<u64>::CHUNK as u64);
        let time = |i: u64| 1_000_000 + (i * 7919) % n;
        let mut q = EventQueue::new();
        let ids: Vec<_> = (0..n)
            .map(|i| q.schedule_timer(t(time(i)), EntityId((i % 3) as u32), i))
            .collect();
        let cancelled = |i: u64| i.is_multiple_of(2) || i.is_multiple_of(7);
        for i in (0..n).filter(|&i| cancelled(i)) {
            assert!(q.cancel(ids[i as usize]));
        }
        let got: Vec<u64> = std::iter::from_fn(|| q.pop()).map(|s| s.event).collect();
        let mut want: Vec<u64> = (0..n).filter(|&i| !cancelled(i)).collect();
        want.sort_by_key(|&i| time(i));
        assert_eq!(got, want);
    }

    #[test]
    fn events_may_land_between_the_last_pop_and_a_peek() {
        let mut q = EventQueue::new();
        q.schedule(t(100), EntityId(0), "late");
        assert_eq!(q.peek_time(), Some(t(100)));
        // The queue has looked ahead to 100, but nothing was taken out yet.
        q.schedule(t(50), EntityId(1), "b");
        q.schedule(t(50), EntityId(0), "a");
        q.schedule(t(70), EntityId(0), "c");
        let got: Vec<_> = std::iter::from_fn(|| q.pop()).map(|s| s.event).collect();
        assert_eq!(got, ["a", "b", "c", "late"]);
    }

    #[test]
    #[should_panic(expected = "before the current time")]
    fn scheduling_into_the_past_is_refused() {
        let mut q = EventQueue::new();
        q.schedule(t(10), EntityId(0), ());
        q.pop();
        q.schedule(t(9), EntityId(0), ());
    }

    proptest! {
        /// Against a reference model (sort by key) under interleaved pushes, pops,
        /// cancels and peeks (which look ahead, and so must change no order).
        #[test]
        fn matches_a_sorted_reference(ops in prop::collection::vec((0u8..5, 0u64..50, 0u32..4), 1..300)) {
            let mut q = EventQueue::new();
            let mut reference: Vec<(u64, u32, u64, usize)> = Vec::new();
            let mut seqs = [0u64; 4];
            let mut timers: Vec<(TimerId, usize)> = Vec::new();
            let mut now = 0u64;
            for (n, (op, dt, src)) in ops.into_iter().enumerate() {
                match op {
                    0 | 1 => {
                        let time = now + dt;
                        let seq = seqs[src as usize];
                        seqs[src as usize] += 1;
                        if op == 0 {
                            q.schedule(t(time), EntityId(src), n);
                        } else {
                            timers.push((q.schedule_timer(t(time), EntityId(src), n), n));
                        }
                        reference.push((time, src, seq, n));
                    }
                    2 => {
                        if let Some((id, n)) = timers.pop() {
                            let pending = reference.iter().any(|r| r.3 == n);
                            prop_assert_eq!(q.cancel(id), pending);
                            reference.retain(|r| r.3 != n);
                        }
                    }
                    4 => {
                        reference.sort();
                        prop_assert_eq!(q.peek().copied(), reference.first().map(|e| e.3));
                    }
                    _ => {
                        reference.sort();
                        let expect = if reference.is_empty() { None } else { Some(reference.remove(0)) };
                        let got = q.pop();
                        prop_assert_eq!(got.as_ref().map(|s| s.event), expect.map(|e| e.3));
                        if let Some(s) = got { now = s.time.as_nanos(); }
                    }
                }
                prop_assert_eq!(q.len(), reference.len());
            }
        }
    }
}
