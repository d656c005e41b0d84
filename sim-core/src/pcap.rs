//! Packet capture: simulated datagrams written as a pcap file of raw IPv4 packets.
//!
//! Link type 228 (LINKTYPE_IPV4) with nanosecond timestamps; simulated time zero is the
//! Unix epoch. Wireshark and tshark dissect UDP 500/4500 as ISAKMP (IKEv2) and ESP.

use std::io::Write;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use crate::time::SimTime;

pub use pcap_file::PcapError;

/// Writes captured IPv4 packets.
pub struct PcapSink<W: Write> {
    writer: PcapWriter<W>,
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
            packets: 0,
        })
    }

    /// Writes one IPv4 packet (a whole datagram or one fragment) seen at `t`.
    pub fn write(&mut self, t: SimTime, ipv4_packet: &[u8]) -> Result<(), PcapError> {
        let ts = std::time::Duration::from_nanos(t.as_nanos());
        self.writer
            .write_packet(&PcapPacket::new(ts, ipv4_packet.len() as u32, ipv4_packet))?;
        self.packets += 1;
        Ok(())
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    pub fn into_inner(self) -> W {
        self.writer.into_writer()
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
        for (i, f) in ipv4::fragment(&p, 1500).iter().enumerate() {
            sink.write(SimTime::from_nanos(1_000_000_123 + i as u64), f)
                .unwrap();
        }
        assert_eq!(sink.packets(), 2);
        let bytes = sink.into_inner();
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
