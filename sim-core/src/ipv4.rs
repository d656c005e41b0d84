//! IPv4/UDP packets as they appear on the wire, with RFC 791 fragmentation.
//!
//! The simulator moves UDP payloads around; this module turns them into the exact bytes a
//! real stack would send (so a capture opens in Wireshark and dissects IKE on 500/4500
//! and ESP), and says how a datagram splits into fragments under an MTU.

use std::net::{Ipv4Addr, SocketAddrV4};

pub const IPV4_HEADER_LEN: usize = 20;
pub const UDP_HEADER_LEN: usize = 8;
/// Largest UDP payload an IPv4 datagram can carry (65535 - 20 - 8).
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// The smallest MTU every IPv4 link must carry (RFC 791).
pub const MIN_MTU: u32 = 68;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ESP: u8 = 50;
const DEFAULT_TTL: u8 = 64;
const FLAG_MF: u16 = 0x2000;

/// The Internet checksum (RFC 1071) of `data`, continuing from the partial sum `initial`.
fn ones_complement_sum(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u32) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum of `data` (0 when `data` already contains a valid checksum).
pub fn checksum(data: &[u8]) -> u16 {
    fold(ones_complement_sum(data, 0))
}

/// Sizes of the IP payload carried by each fragment when an IP payload of
/// `ip_payload_len` bytes crosses a link with this `mtu`: every fragment but the last
/// carries a multiple of 8 bytes. One element means no fragmentation.
pub fn fragment_payload_sizes(ip_payload_len: usize, mtu: u32) -> impl Iterator<Item = usize> {
    let max = (mtu as usize).saturating_sub(IPV4_HEADER_LEN) & !7;
    let max = max.max(8);
    let fits = ip_payload_len + IPV4_HEADER_LEN <= mtu as usize;
    let count = if fits {
        1
    } else {
        ip_payload_len.div_ceil(max)
    };
    (0..count).map(move |i| {
        if fits {
            ip_payload_len
        } else {
            (ip_payload_len - i * max).min(max)
        }
    })
}

/// Builds the IPv4 packet carrying `payload` from `src` to `dst` over UDP, with a valid
/// header checksum and UDP checksum. `ident` is the IP identification field.
///
/// # Panics
/// If `payload` is longer than [`MAX_UDP_PAYLOAD`]; callers drop such datagrams first.
pub fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, ident: u16, payload: &[u8]) -> Vec<u8> {
    udp_packet_padded(src, dst, ident, payload, 0)
}

/// [`udp_packet`] whose payload is `payload` followed by `zeros` zero bytes, without the
/// caller building it: the zeros add nothing to the checksum, which skips them.
///
/// # Panics
/// If the payload is larger than [`MAX_UDP_PAYLOAD`].
pub fn udp_packet_padded(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    ident: u16,
    payload: &[u8],
    zeros: usize,
) -> Vec<u8> {
    assert!(
        payload.len() + zeros <= MAX_UDP_PAYLOAD,
        "UDP payload too large"
    );
    let udp_len = UDP_HEADER_LEN + payload.len() + zeros;
    let mut p = Vec::with_capacity(IPV4_HEADER_LEN + udp_len);
    write_ipv4_header(&mut p, *src.ip(), *dst.ip(), PROTO_UDP, ident, 0, udp_len);
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // UDP checksum over the pseudo-header, the UDP header and the data.
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.ip().octets());
    pseudo[4..8].copy_from_slice(&dst.ip().octets());
    pseudo[9] = PROTO_UDP;
    pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let sum = ones_complement_sum(&p[IPV4_HEADER_LEN..], ones_complement_sum(&pseudo, 0));
    let mut c = fold(sum);
    if c == 0 {
        c = 0xffff; // zero means "no checksum" in UDP
    }
    p[IPV4_HEADER_LEN + 6..IPV4_HEADER_LEN + 8].copy_from_slice(&c.to_be_bytes());
    p.resize(IPV4_HEADER_LEN + udp_len, 0);
    p
}

/// Builds an IPv4 packet carrying `payload` as IP protocol `protocol` (e.g. 50 for
/// ESP not encapsulated in UDP).
///
/// # Panics
/// If the packet would exceed 65,535 bytes.
pub fn ip_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ident: u16,
    payload: &[u8],
) -> Vec<u8> {
    assert!(
        payload.len() <= 65_535 - IPV4_HEADER_LEN,
        "IP payload too large"
    );
    let mut p = Vec::with_capacity(IPV4_HEADER_LEN + payload.len());
    write_ipv4_header(&mut p, src, dst, protocol, ident, 0, payload.len());
    p.extend_from_slice(payload);
    p
}

fn write_ipv4_header(
    p: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ident: u16,
    flags_fragment: u16,
    payload_len: usize,
) {
    let start = p.len();
    p.push(0x45); // version 4, IHL 5
    p.push(0);
    p.extend_from_slice(&((IPV4_HEADER_LEN + payload_len) as u16).to_be_bytes());
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&flags_fragment.to_be_bytes());
    p.push(DEFAULT_TTL);
    p.push(protocol);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p[start..start + IPV4_HEADER_LEN]);
    p[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
}

/// Splits an unfragmented IPv4 `packet` (as built by [`udp_packet`] or [`ip_packet`]) into fragments no
/// larger than `mtu`, each with its own header and checksum. Returns the packet itself
/// when it fits.
pub fn fragment(packet: &[u8], mtu: u32) -> Vec<Vec<u8>> {
    let header = Ipv4Header::parse(packet).expect("fragment() takes packets we built");
    let payload = &packet[IPV4_HEADER_LEN..header.total_len as usize];
    let mut out = Vec::new();
    let mut offset = 0;
    for size in fragment_payload_sizes(payload.len(), mtu) {
        if size == payload.len() {
            out.push(packet.to_vec());
            break;
        }
        let more = offset + size < payload.len();
        let flags = (if more { FLAG_MF } else { 0 }) | (offset / 8) as u16;
        let mut f = Vec::with_capacity(IPV4_HEADER_LEN + size);
        write_ipv4_header(
            &mut f,
            header.src,
            header.dst,
            header.protocol,
            header.ident,
            flags,
            size,
        );
        f.extend_from_slice(&payload[offset..offset + size]);
        out.push(f);
        offset += size;
    }
    out
}

/// The fields of an IPv4 header we check when reading packets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Header {
    pub total_len: u16,
    pub ident: u16,
    pub more_fragments: bool,
    /// Fragment offset in bytes.
    pub fragment_offset: usize,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4Error {
    #[error("packet of {0} bytes is shorter than an IPv4 header")]
    Truncated(usize),
    #[error("not IPv4 with a 20-byte header (first byte {0:#04x})")]
    NotPlainIpv4(u8),
    #[error("header checksum does not verify")]
    BadChecksum,
    #[error("total length {total} disagrees with the {actual} bytes present")]
    BadLength { total: usize, actual: usize },
}

impl Ipv4Header {
    /// Parses and checks a 20-byte IPv4 header (no options) at the start of `packet`.
    pub fn parse(packet: &[u8]) -> Result<Self, Ipv4Error> {
        if packet.len() < IPV4_HEADER_LEN {
            return Err(Ipv4Error::Truncated(packet.len()));
        }
        if packet[0] != 0x45 {
            return Err(Ipv4Error::NotPlainIpv4(packet[0]));
        }
        if checksum(&packet[..IPV4_HEADER_LEN]) != 0 {
            return Err(Ipv4Error::BadChecksum);
        }
        let total = u16::from_be_bytes([packet[2], packet[3]]);
        if (total as usize) < IPV4_HEADER_LEN || total as usize > packet.len() {
            return Err(Ipv4Error::BadLength {
                total: total as usize,
                actual: packet.len(),
            });
        }
        let ff = u16::from_be_bytes([packet[6], packet[7]]);
        Ok(Ipv4Header {
            total_len: total,
            ident: u16::from_be_bytes([packet[4], packet[5]]),
            more_fragments: ff & FLAG_MF != 0,
            fragment_offset: ((ff & 0x1fff) as usize) * 8,
            protocol: packet[9],
            src: Ipv4Addr::from([packet[12], packet[13], packet[14], packet[15]]),
            dst: Ipv4Addr::from([packet[16], packet[17], packet[18], packet[19]]),
        })
    }
}

/// Checks the UDP checksum of an unfragmented UDP-in-IPv4 packet.
pub fn udp_checksum_ok(packet: &[u8]) -> bool {
    let Ok(h) = Ipv4Header::parse(packet) else {
        return false;
    };
    let udp = &packet[IPV4_HEADER_LEN..h.total_len as usize];
    if h.protocol != PROTO_UDP || udp.len() < UDP_HEADER_LEN {
        return false;
    }
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&h.src.octets());
    pseudo[4..8].copy_from_slice(&h.dst.octets());
    pseudo[9] = PROTO_UDP;
    pseudo[10..12].copy_from_slice(&(udp.len() as u16).to_be_bytes());
    fold(ones_complement_sum(udp, ones_complement_sum(&pseudo, 0))) == 0
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_padded_packet_is_the_packet_of_its_whole_payload() {
        let (src, dst) = (
            "10.0.0.1:9".parse().unwrap(),
            "10.9.8.7:4500".parse().unwrap(),
        );
        for (head, zeros) in [
            (&b""[..], 0),
            (b"\x01\x02\x03", 5),
            (b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", 964),
            (b"\x7f", 0),
        ] {
            let mut whole = head.to_vec();
            whole.resize(head.len() + zeros, 0);
            assert_eq!(
                udp_packet_padded(src, dst, 77, head, zeros),
                udp_packet(src, dst, 77, &whole)
            );
        }
    }

    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // The worked example of RFC 1071 section 3: sum 0xddf2, checksum !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn builds_a_valid_udp_packet() {
        let p = udp_packet(addr("10.0.0.1:500"), addr("10.0.0.2:500"), 7, b"hello ike");
        assert_eq!(p.len(), 20 + 8 + 9);
        let h = Ipv4Header::parse(&p).unwrap();
        assert_eq!((h.total_len, h.ident, h.protocol), (37, 7, 17));
        assert!(!h.more_fragments);
        assert!(udp_checksum_ok(&p));
        let mut bad = p.clone();
        bad[30] ^= 1;
        assert!(!udp_checksum_ok(&bad));
    }

    #[test]
    fn fragments_reassemble_to_the_original() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let p = udp_packet(addr("192.0.2.1:4500"), addr("192.0.2.2:4500"), 99, &payload);
        let frags = fragment(&p, 1280);
        assert_eq!(frags.len(), 3);
        let sizes: Vec<usize> = fragment_payload_sizes(3008, 1280).collect();
        assert_eq!(sizes, [1256, 1256, 496]);
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 1280);
            let h = Ipv4Header::parse(f).unwrap();
            assert_eq!(h.ident, 99);
            assert_eq!(h.more_fragments, i < 2);
            assert_eq!(h.fragment_offset, joined.len());
            joined.extend_from_slice(&f[20..]);
        }
        assert_eq!(joined, p[20..]);
        assert_eq!(fragment(&p, 9000), vec![p.clone()]);
    }

    proptest! {
        #[test]
        fn fragment_sizes_cover_the_payload(len in 0usize..65_515, mtu in MIN_MTU..9_000u32) {
            let sizes: Vec<usize> = fragment_payload_sizes(len, mtu).collect();
            prop_assert_eq!(sizes.iter().sum::<usize>(), len);
            for (i, s) in sizes.iter().enumerate() {
                prop_assert!(s + IPV4_HEADER_LEN <= mtu as usize);
                if i + 1 < sizes.len() { prop_assert_eq!(s % 8, 0); }
            }
        }

        #[test]
        fn header_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Ipv4Header::parse(&bytes);
            let _ = udp_checksum_ok(&bytes);
        }
    }
}
