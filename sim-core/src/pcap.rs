//! Packet capture: simulated datagrams written as a pcap file of raw IPv4 packets.
//!
//! Link type 228 (LINKTYPE_IPV4) with nanosecond timestamps; simulated time zero is the
//! Unix epoch. Wireshark and tshark dissect UDP 500/4500 as ISAKMP (IKEv2) and ESP.
//!
//! Packets may be handed over ahead of their wire time (a link decides at send time
//! when each queued fragment will leave), so the sink holds them and writes them in
//! time order once the simulation clock has passed them: call [`PcapSink::advance`]
//! as time moves on. Ties keep the order in which packets were handed over.

use std::collections::BTreeMap;
use std::io::Write;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use crate::time::SimTime;

pub use pcap_file::PcapError;

/// Writes captured IPv4 packets.
pub struct PcapSink<W: Write> {
    writer: PcapWriter<W>,
    /// Packets not yet written, by (time, arrival order).
    pending: BTreeMap<(SimTime, u64), Vec<u8>>,
    packets: u64,
}

impl<W: Write> PcapSink<W> {
    pub fn new(out: W) -> Result<Self, PcapError> {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: 65_535,
            datalink: DataLink::IPV4,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::Little,
        };
        Ok(PcapSink {
            writer: PcapWriter::with_header(out, header)?,
            pending: BTreeMap::new(),
            packets: 0,
        })
    }

    /// Captures one IPv4 packet (a whole datagram or one fragment) on the wire at `t`.
    pub fn capture(&mut self, t: SimTime, ipv4_packet: Vec<u8>) {
        self.pending.insert((t, self.packets), ipv4_packet);
        self.packets += 1;
    }

    /// Writes every packet captured at or before `now`: the caller promises that no
    /// packet earlier than `now` will be captured later.
    pub fn advance(&mut self, now: SimTime) -> Result<(), PcapError> {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((t, _), packet) = entry.remove_entry();
            let ts = std::time::Duration::from_nanos(t.as_nanos());
            self.writer
                .write_packet(&PcapPacket::new(ts, packet.len() as u32, &packet))?;
        }
        Ok(())
    }

    /// Packets captured so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Writes what is still held and returns the output.
    pub fn finish(mut self) -> Result<W, PcapError> {
        self.advance(SimTime::MAX)?;
        Ok(self.writer.into_writer())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4;
    use pcap_file::pcap::PcapReader;

    #[test]
    fn written_packets_read_back() {
        let p = ipv4::udp_packet(
            "10.0.0.1:500".parse().unwrap(),
            "10.0.0.2:500".parse().unwrap(),
            1,
            &[0u8; 2000],
        );
        let mut sink = PcapSink::new(Vec::new()).unwrap();
        // Handed over out of order: written in time order.
        let frags = ipv4::fragment(&p, 1500);
        sink.capture(SimTime::from_nanos(1_000_000_124), frags[1].clone());
        sink.capture(SimTime::from_nanos(1_000_000_123), frags[0].clone());
        sink.advance(SimTime::from_nanos(1_000_000_123)).unwrap();
        assert_eq!(sink.packets(), 2);
        let bytes = sink.finish().unwrap();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().datalink, DataLink::IPV4);
        let first = r.next_packet().unwrap().unwrap();
        assert_eq!(first.timestamp.as_nanos(), 1_000_000_123);
        assert!(ipv4::Ipv4Header::parse(&first.data).unwrap().more_fragments);
        let second = r.next_packet().unwrap().unwrap();
        assert_eq!(second.data.len(), 20 + 2008 - 1480);
        assert!(r.next_packet().is_none());
    }
}
