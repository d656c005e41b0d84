//! What an endpoint is told: per-peer settings (proposals, identities, PSK, traffic
//! selectors, fragment size, PPK policy, timers) and endpoint-wide limits.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use crate::consts::id_type;
use crate::message::TrafficSelector;
use crate::proposal::{ProposalError, ProposalSpec};

/// An IKE identity (IDi/IDr).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    Fqdn(String),
    Ipv4(Ipv4Addr),
    KeyId(Vec<u8>),
}

impl Identity {
    /// (ID Type, Identification Data) as the ID payload carries them.
    pub fn to_wire(&self) -> (u8, Vec<u8>) {
        match self {
            Identity::Fqdn(s) => (id_type::FQDN, s.as_bytes().to_vec()),
            Identity::Ipv4(a) => (id_type::IPV4_ADDR, a.octets().to_vec()),
            Identity::KeyId(k) => (id_type::KEY_ID, k.clone()),
        }
    }

    /// `IDx'`: ID Type, three reserved bytes, data (what AUTH MACs).
    pub fn rest_of_payload(&self) -> Vec<u8> {
        let (t, d) = self.to_wire();
        [&[t, 0, 0, 0][..], &d].concat()
    }
}

impl FromStr for Identity {
    type Err = String;
    /// `10.0.0.1` or `ipv4:10.0.0.1`, `gw.example` or `fqdn:gw.example`, `keyid:0a0b`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(hex) = s.strip_prefix("keyid:") {
            let bytes: Result<Vec<u8>, _> = (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .map_or(Err(()), |h| u8::from_str_radix(h, 16).map_err(|_| ()))
                })
                .collect();
            return bytes
                .map(Identity::KeyId)
                .map_err(|_| format!("`{s}`: keyid takes hex bytes"));
        }
        if let Some(a) = s.strip_prefix("ipv4:") {
            return a
                .parse()
                .map(Identity::Ipv4)
                .map_err(|_| format!("`{s}`: not an IPv4 address"));
        }
        let name = s.strip_prefix("fqdn:").unwrap_or(s);
        if let Ok(a) = name.parse::<Ipv4Addr>()
            && !s.starts_with("fqdn:")
        {
            return Ok(Identity::Ipv4(a));
        }
        if name.is_empty() {
            return Err("empty identity".into());
        }
        Ok(Identity::Fqdn(name.to_string()))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Fqdn(s) => f.write_str(s),
            Identity::Ipv4(a) => write!(f, "{a}"),
            Identity::KeyId(k) => {
                f.write_str("keyid:")?;
                k.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// Whether an IKE SA mixes in a PPK (RFC 8784).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PpkPolicy {
    #[default]
    Disabled,
    /// Use a PPK when both sides can; otherwise come up without one (a downgrade that
    /// the endpoint reports).
    Optional,
    /// No PPK, no IKE SA.
    Required,
}

/// Retransmission and establishment timers, in nanoseconds. Defaults are strongSwan's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timers {
    /// First retransmission timeout (`charon.retransmit_timeout`, 4 s).
    pub retransmit_timeout_ns: u64,
    /// Backoff base in thousandths (`charon.retransmit_base` 1.8 = 1800).
    pub retransmit_base_milli: u32,
    /// Retransmissions before giving up (`charon.retransmit_tries`, 5).
    pub retransmit_tries: u32,
    /// A responder drops an SA that is not established by then (strongSwan: 30 s).
    pub half_open_timeout_ns: u64,
    /// How long an exchange waits for the driver's `provide_ppk` answer.
    pub ppk_timeout_ns: u64,
    /// Dead peer detection (`dpd_delay`): an empty INFORMATIONAL when nothing has been
    /// heard from the peer for this long; a peer that never answers it fails the IKE SA
    /// with a retransmission timeout. `None` (strongSwan's default 0) turns it off.
    pub dpd_delay_ns: Option<u64>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            retransmit_timeout_ns: 4_000_000_000,
            retransmit_base_milli: 1800,
            retransmit_tries: 5,
            half_open_timeout_ns: 30_000_000_000,
            ppk_timeout_ns: 30_000_000_000,
            dpd_delay_ns: None,
        }
    }
}

impl Timers {
    /// The timeout after the `n`th transmission (n = 0 for the first send):
    /// `retransmit_timeout * base^n`, in integer arithmetic.
    pub fn retransmit_after(&self, n: u32) -> u64 {
        let mut t = self.retransmit_timeout_ns as u128;
        for _ in 0..n {
            t = t * self.retransmit_base_milli as u128 / 1000;
        }
        t.min(u64::MAX as u128) as u64
    }

    /// How long an exchange can go unanswered before it fails: the first send and every
    /// retransmission, each with its timeout (165.06 s with strongSwan's defaults).
    pub fn exchange_timeout_ns(&self) -> u64 {
        (0..=self.retransmit_tries)
            .map(|n| self.retransmit_after(n))
            .fold(0u64, u64::saturating_add)
    }
}

/// Everything about one peer.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// A name for events and logs.
    pub name: String,
    /// Where the peer's IKE lives; a responder also recognizes the peer by this address.
    pub remote: SocketAddr,
    pub local_id: Identity,
    pub remote_id: Identity,
    pub psk: Vec<u8>,
    /// IKE proposals in preference order (strongSwan strings). Shared: a hub's peers
    /// mostly have the same lists, which every exchange reads, so one copy stays in
    /// cache instead of one per peer.
    pub ike: Arc<[ProposalSpec]>,
    /// ESP proposals for the Child SA (shared likewise).
    pub esp: Arc<[ProposalSpec]>,
    /// Traffic selectors: our side and the peer's side.
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// Establish the IKE SA without a Child SA (RFC 6023).
    pub childless: bool,
    /// Offer and use IKE fragmentation (RFC 7383).
    pub fragmentation: bool,
    /// Largest IP datagram for a fragment (RFC 7383; strongSwan's default 1280).
    pub fragment_size: usize,
    /// Force UDP encapsulation: NAT detection reports a NAT, so IKE moves to port 4500
    /// with the non-ESP marker after IKE_SA_INIT (strongSwan's `encap = yes`).
    pub nat_t: bool,
    pub ppk: PpkPolicy,
    pub timers: Timers,
}

impl PeerConfig {
    /// A peer with strongSwan-like defaults: the hybrid proposal
    /// `aes256gcm16-prfsha256-x25519-ke1_mlkem768`, ESP `aes256gcm16`, host-to-host
    /// traffic selectors, fragment size 1280, no PPK.
    pub fn new(
        name: &str,
        remote: SocketAddr,
        local_id: Identity,
        remote_id: Identity,
        psk: &[u8],
    ) -> Self {
        let host = |a: IpAddr| TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: a,
            end: a,
        };
        PeerConfig {
            name: name.to_string(),
            remote,
            local_ts: Vec::new(),
            remote_ts: vec![host(remote.ip())],
            local_id,
            remote_id,
            psk: psk.to_vec(),
            ike: Arc::new([
                ProposalSpec::parse_ike("aes256gcm16-prfsha256-x25519-ke1_mlkem768")
                    .expect("valid"),
            ]),
            esp: Arc::new([ProposalSpec::parse_esp("aes256gcm16").expect("valid")]),
            childless: false,
            fragmentation: true,
            fragment_size: 1280,
            nat_t: false,
            ppk: PpkPolicy::Disabled,
            timers: Timers::default(),
        }
    }

    /// Replaces the IKE proposals with parsed strings.
    pub fn with_ike(mut self, proposals: &[&str]) -> Result<Self, ProposalError> {
        self.ike = proposals
            .iter()
            .map(|p| ProposalSpec::parse_ike(p))
            .collect::<Result<Vec<_>, _>>()?
            .into();
        Ok(self)
    }

    /// Replaces the ESP proposals with parsed strings.
    pub fn with_esp(mut self, proposals: &[&str]) -> Result<Self, ProposalError> {
        self.esp = proposals
            .iter()
            .map(|p| ProposalSpec::parse_esp(p))
            .collect::<Result<Vec<_>, _>>()?
            .into();
        Ok(self)
    }

    /// The fragment size that fits a path MTU (IP datagram limit = MTU).
    pub fn fragment_size_for_mtu(mut self, mtu: usize) -> Self {
        self.fragment_size = mtu;
        self
    }
}

/// Endpoint-wide settings.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Our IKE address (source of what we send).
    pub local: SocketAddr,
    /// The UDP encapsulation port, ours and the peers' (RFC 3948: 4500).
    pub natt_port: u16,
    /// Half-open responder SAs beyond which IKE_SA_INIT requests must carry a COOKIE
    /// (strongSwan's `cookie_threshold`, 30).
    pub cookie_threshold: usize,
}

impl EndpointConfig {
    pub fn new(local: SocketAddr) -> Self {
        EndpointConfig {
            local,
            natt_port: 4500,
            cookie_threshold: 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_and_print() {
        assert_eq!(
            "10.0.0.1".parse(),
            Ok(Identity::Ipv4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(
            "fqdn:10.0.0.1".parse(),
            Ok(Identity::Fqdn("10.0.0.1".into()))
        );
        assert_eq!(
            "gw.example".parse(),
            Ok(Identity::Fqdn("gw.example".into()))
        );
        assert_eq!("keyid:0a0b".parse(), Ok(Identity::KeyId(vec![10, 11])));
        assert!("keyid:0g".parse::<Identity>().is_err());
        assert_eq!(Identity::KeyId(vec![10, 11]).to_string(), "keyid:0a0b");
        assert_eq!(
            Identity::Fqdn("a".into()).rest_of_payload(),
            vec![2, 0, 0, 0, b'a']
        );
    }

    #[test]
    fn backoff_follows_strongswan() {
        // Sends at 0, 4, 11.2, 24.16, 47.49, 89.48 s; gives up at 165.06 s.
        let t = Timers::default();
        let mut at = 0u64;
        let mut sends = vec![at];
        for n in 0..=t.retransmit_tries {
            at += t.retransmit_after(n);
            sends.push(at);
        }
        let secs: Vec<u64> = sends.iter().map(|ns| ns / 10_000_000).collect();
        assert_eq!(secs, [0, 400, 1120, 2416, 4748, 8947, 16506]);
    }
}
