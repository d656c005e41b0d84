//! One direction of a link: the decisions a path makes about each datagram.
//!
//! `Channel::send` is sans-IO: given the time and a datagram, it decides everything that
//! will happen to it (queueing, serialization, fragmentation, loss, delay, faults) and
//! returns the deliveries for the caller to schedule. All draws come from the channel's
//! own streams ("loss", "delay", "faults" of its entity name), so one channel's traffic
//! never shifts another's.

use std::net::SocketAddrV4;
use std::sync::Arc;

use serde::Serialize;
use sim_core::ipv4::{self, IPV4_HEADER_LEN, MAX_UDP_PAYLOAD, UDP_HEADER_LEN};
use sim_core::{RngExt, SimDuration, SimTime, TraceEvent, entity};

use crate::config::{LinkConfig, LossModel, Oversize};

/// A UDP datagram between two IPv4 endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: Vec<u8>,
}

impl Datagram {
    /// Size of the unfragmented IPv4 packet carrying it.
    pub fn ip_len(&self) -> usize {
        IPV4_HEADER_LEN + UDP_HEADER_LEN + self.payload.len()
    }
}

/// A datagram arriving at the far end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub at: SimTime,
    pub datagram: Datagram,
}

/// An IPv4 packet (whole datagram or fragment) as it left the sender, for capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WirePacket {
    pub at: SimTime,
    pub bytes: Vec<u8>,
}

/// Why a datagram did not arrive. Every drop is counted under exactly one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The link was down when the datagram was sent or when it would have arrived.
    LinkDown,
    /// The sender's queue was full (tail drop).
    QueueFull,
    /// The (unfragmented) packet was lost.
    Loss,
    /// One or more fragments were lost: reassembly timed out at the receiver.
    FragmentLost,
    /// The last fragment arrived after the receiver's reassembly timeout.
    ReassemblyTimeout,
    /// Above the MTU on a path that drops oversize packets.
    TooBig,
    /// Fragmented on a path that discards IP fragments.
    FragmentsFiltered,
    /// Larger than any IPv4 UDP datagram can be.
    Oversized,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::LinkDown,
        DropReason::QueueFull,
        DropReason::Loss,
        DropReason::FragmentLost,
        DropReason::ReassemblyTimeout,
        DropReason::TooBig,
        DropReason::FragmentsFiltered,
        DropReason::Oversized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::LinkDown => "link_down",
            DropReason::QueueFull => "queue_full",
            DropReason::Loss => "loss",
            DropReason::FragmentLost => "fragment_lost",
            DropReason::ReassemblyTimeout => "reassembly_timeout",
            DropReason::TooBig => "too_big",
            DropReason::FragmentsFiltered => "fragments_filtered",
            DropReason::Oversized => "oversized",
        }
    }
}

/// Totals for one direction. In declaration order (see [`Channel`]): the first four are
/// bumped by every datagram.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[repr(C)]
pub struct ChannelStats {
    pub datagrams_sent: u64,
    pub payload_bytes_sent: u64,
    pub datagrams_delivered: u64,
    pub payload_bytes_delivered: u64,
    /// IPv4 packets put on the wire (fragments count one each) and their bytes.
    pub wire_packets: u64,
    pub wire_bytes: u64,
    pub datagrams_fragmented: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    /// Drops by reason, in [`DropReason::ALL`] order.
    pub drops: [u64; 8],
}

impl ChannelStats {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
    pub fn total_dropped(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// What the channel traces.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum ChannelEvent {
    Sent {
        bytes: usize,
        fragments: usize,
        arrival_ns: u64,
        copies: u8,
        corrupted: bool,
    },
    Dropped {
        bytes: usize,
        reason: DropReason,
    },
}

impl TraceEvent for ChannelEvent {
    fn kind(&self) -> &'static str {
        match self {
            ChannelEvent::Sent { .. } => "link.send",
            ChannelEvent::Dropped { .. } => "link.drop",
        }
    }

    /// By hand: one of these is traced for every datagram.
    fn write_json(&self, out: &mut Vec<u8>) -> bool {
        use sim_core::trace::push_decimal;
        match *self {
            ChannelEvent::Sent {
                bytes,
                fragments,
                arrival_ns,
                copies,
                corrupted,
            } => {
                out.extend_from_slice(b"{\"bytes\":");
                push_decimal(out, bytes as u64);
                out.extend_from_slice(b",\"fragments\":");
                push_decimal(out, fragments as u64);
                out.extend_from_slice(b",\"arrival_ns\":");
                push_decimal(out, arrival_ns);
                out.extend_from_slice(b",\"copies\":");
                push_decimal(out, copies as u64);
                out.extend_from_slice(if corrupted {
                    b",\"corrupted\":true}"
                } else {
                    b",\"corrupted\":false}"
                });
            }
            ChannelEvent::Dropped { bytes, reason } => {
                out.extend_from_slice(b"{\"bytes\":");
                push_decimal(out, bytes as u64);
                out.extend_from_slice(b",\"reason\":\"");
                out.extend_from_slice(reason.as_str().as_bytes());
                out.extend_from_slice(b"\"}");
            }
        }
        true
    }
}

/// One direction of a link.
///
/// Laid out for a topology of thousands of links, where a channel is cold when a datagram
/// comes: what every datagram reads and writes (configuration, wire state, the first
/// counters) shares the first cache line, the other counters it bumps the second, and
/// each random stream draws from a line of its own.
#[repr(C)]
pub struct Channel {
    /// Shared: a topology's links mostly have one configuration, and it is large.
    cfg: Arc<LinkConfig>,
    /// When the wire finishes sending what is already queued.
    busy_until: SimTime,
    /// Arrival of the last in-order datagram (jitter never reorders).
    last_arrival: SimTime,
    next_ip_ident: u16,
    /// Gilbert-Elliott state.
    in_bad_state: bool,
    capture: bool,
    stats: ChannelStats,
    /// Lazy: most links have no faults and never draw from it.
    fault_rng: entity::LazyStream,
    /// Compact: drawn for every datagram, and a topology has two channels per link.
    loss_rng: entity::CompactStream,
    delay_rng: entity::CompactStream,
}

// The first four counters end the first cache line (see `Channel`).
const _: () = assert!(std::mem::offset_of!(Channel, stats) == 32);

impl Channel {
    /// A channel named `name` (its entity name, e.g. `link/a-b/a>b`) whose streams
    /// derive from `seed`. The configuration must be valid.
    pub fn new(cfg: impl Into<Arc<LinkConfig>>, seed: u64, name: &str) -> Self {
        let cfg = cfg.into();
        debug_assert!(cfg.validate().is_ok(), "validate the configuration first");
        Channel {
            cfg,
            loss_rng: entity::CompactStream::new(seed, name, "loss"),
            delay_rng: entity::CompactStream::new(seed, name, "delay"),
            fault_rng: entity::LazyStream::new(seed, name, "faults"),
            in_bad_state: false,
            busy_until: SimTime::ZERO,
            last_arrival: SimTime::ZERO,
            next_ip_ident: 0,
            capture: false,
            stats: ChannelStats::default(),
        }
    }

    /// Also produce the wire image of every packet sent (see [`Channel::send`]).
    pub fn set_capture(&mut self, on: bool) {
        self.capture = on;
    }

    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &ChannelStats {
        &self.stats
    }

    /// Offers `dgram` to the channel at `now`. Deliveries (none, one, or two for a
    /// duplicate) are appended to `deliveries`; with capture on, the IPv4 packets that
    /// left the sender (fragments included, lost ones too) are appended to `wire`.
    /// Returns the event to trace.
    pub fn send(
        &mut self,
        now: SimTime,
        dgram: Datagram,
        deliveries: &mut Vec<Delivery>,
        wire: &mut Vec<WirePacket>,
    ) -> ChannelEvent {
        let bytes = dgram.payload.len();
        self.stats.datagrams_sent += 1;
        self.stats.payload_bytes_sent += bytes as u64;
        match self.transmit(now, dgram, deliveries, wire) {
            Ok(ev) => ev,
            Err(reason) => {
                self.stats.drops[reason as usize] += 1;
                ChannelEvent::Dropped { bytes, reason }
            }
        }
    }

    fn transmit(
        &mut self,
        now: SimTime,
        dgram: Datagram,
        deliveries: &mut Vec<Delivery>,
        wire: &mut Vec<WirePacket>,
    ) -> Result<ChannelEvent, DropReason> {
        if dgram.payload.len() > MAX_UDP_PAYLOAD {
            return Err(DropReason::Oversized);
        }
        if !self.cfg.is_up(now) {
            return Err(DropReason::LinkDown);
        }
        let ip_len = dgram.ip_len();
        let fragmented = ip_len > self.cfg.mtu as usize;
        if fragmented && self.cfg.oversize == Oversize::Drop {
            return Err(DropReason::TooBig);
        }
        let mtu = self.cfg.mtu;
        let ip_payload = ip_len - IPV4_HEADER_LEN;
        let fragment_count = ipv4::fragment_payload_sizes(ip_payload, mtu).count();
        let wire_bytes = ip_len + (fragment_count - 1) * IPV4_HEADER_LEN;

        // Queue and serialization: the datagram's packets go out back to back.
        let start = now.max(self.busy_until);
        if let Some(bw) = self.cfg.bandwidth {
            let backlog = bw.bytes_in(start.saturating_since(now));
            if backlog + wire_bytes as u64 > self.cfg.queue_limit_bytes {
                return Err(DropReason::QueueFull);
            }
        }
        let ident = self.next_ip_ident;
        self.next_ip_ident = self.next_ip_ident.wrapping_add(1);
        if self.capture {
            let packet = ipv4::udp_packet(dgram.src, dgram.dst, ident, &dgram.payload);
            let mut t = start;
            for bytes in ipv4::fragment(&packet, mtu) {
                let ser = self.serialization(bytes.len());
                wire.push(WirePacket { at: t, bytes });
                t += ser;
            }
        }
        self.stats.wire_packets += fragment_count as u64;
        self.stats.wire_bytes += wire_bytes as u64;
        if fragmented {
            self.stats.datagrams_fragmented += 1;
        }

        // Each packet on the wire departs, is lost or not, and arrives after a delay.
        let mut departed = start;
        let mut lost = false;
        let mut first_arrival = SimTime::MAX;
        let mut last_arrival = SimTime::ZERO;
        for size in ipv4::fragment_payload_sizes(ip_payload, mtu) {
            departed += self.serialization(IPV4_HEADER_LEN + size);
            lost |= self.draw_loss();
            let jitter = self.delay_rng.below_or_eq(self.cfg.jitter.as_nanos());
            let arrival = departed + self.cfg.latency + SimDuration::from_nanos(jitter);
            first_arrival = first_arrival.min(arrival);
            last_arrival = last_arrival.max(arrival);
        }
        self.busy_until = departed;

        if fragmented && self.cfg.oversize == Oversize::DropFragments {
            return Err(DropReason::FragmentsFiltered);
        }
        if lost {
            return Err(if fragmented {
                DropReason::FragmentLost
            } else {
                DropReason::Loss
            });
        }
        if fragmented && last_arrival.saturating_since(first_arrival) > self.cfg.reassembly_timeout
        {
            return Err(DropReason::ReassemblyTimeout);
        }

        let mut arrival = last_arrival;
        if self.fault_rng.chance(self.cfg.reorder) {
            arrival += self.cfg.reorder_delay;
            self.stats.reordered += 1;
        } else {
            arrival = arrival.max(self.last_arrival);
            self.last_arrival = arrival;
        }
        if !self.cfg.is_up(arrival) {
            return Err(DropReason::LinkDown);
        }

        let mut dgram = dgram;
        let corrupted = !dgram.payload.is_empty() && self.fault_rng.chance(self.cfg.corrupt);
        if corrupted {
            let bit = self
                .fault_rng
                .below_or_eq(dgram.payload.len() as u64 * 8 - 1);
            dgram.payload[(bit / 8) as usize] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
        }
        let duplicate = self.fault_rng.chance(self.cfg.duplicate);
        let copies = 1 + duplicate as u8;
        self.stats.datagrams_delivered += copies as u64;
        self.stats.payload_bytes_delivered += copies as u64 * dgram.payload.len() as u64;
        let bytes = dgram.payload.len();
        if duplicate {
            self.stats.duplicated += 1;
            // The copy trails the original by one serialization time (at least 1 us).
            let gap = self.serialization(ip_len).max(SimDuration::from_micros(1));
            deliveries.push(Delivery {
                at: arrival,
                datagram: dgram.clone(),
            });
            deliveries.push(Delivery {
                at: arrival + gap,
                datagram: dgram,
            });
        } else {
            deliveries.push(Delivery {
                at: arrival,
                datagram: dgram,
            });
        }
        Ok(ChannelEvent::Sent {
            bytes,
            fragments: fragment_count,
            arrival_ns: arrival.as_nanos(),
            copies,
            corrupted,
        })
    }

    fn serialization(&self, bytes: usize) -> SimDuration {
        self.cfg
            .bandwidth
            .map_or(SimDuration::ZERO, |bw| bw.serialization(bytes))
    }

    /// One packet's loss draw; moves the Gilbert-Elliott chain.
    fn draw_loss(&mut self) -> bool {
        match self.cfg.loss {
            LossModel::None => false,
            LossModel::Bernoulli { probability } => self.loss_rng.chance(probability),
            LossModel::GilbertElliott {
                good_to_bad,
                bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let (p_loss, p_move) = if self.in_bad_state {
                    (loss_bad, bad_to_good)
                } else {
                    (loss_good, good_to_bad)
                };
                let lost = self.loss_rng.chance(p_loss);
                if self.loss_rng.chance(p_move) {
                    self.in_bad_state = !self.in_bad_state;
                }
                lost
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_json_by_hand_is_what_serde_json_writes() {
        let mut events = vec![
            ChannelEvent::Sent {
                bytes: 0,
                fragments: 1,
                arrival_ns: 0,
                copies: 1,
                corrupted: false,
            },
            ChannelEvent::Sent {
                bytes: 65_507,
                fragments: 45,
                arrival_ns: u64::MAX,
                copies: 2,
                corrupted: true,
            },
        ];
        events.extend(DropReason::ALL.iter().map(|&reason| ChannelEvent::Dropped {
            bytes: 1_249,
            reason,
        }));
        for e in events {
            let mut ours = Vec::new();
            assert!(e.write_json(&mut ours));
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&e).unwrap()
            );
        }
    }
}
