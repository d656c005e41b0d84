//! What an endpoint tells its driver: datagrams to send, and events for drivers,
//! keylogs and studies.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::crypto::{AeadAlg, AeadKey};
use crate::keys::IkeKeys;
use crate::message::TrafficSelector;

/// An IKE SA, named by our own SPI.
pub type SaId = u64;

/// A datagram to send (an IKE message, without the non-ESP marker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// A PPK as the driver hands it over: the QKD key ID sent as PPK_ID, and the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Ppk {
    pub id: Vec<u8>,
    pub key: Vec<u8>,
}

impl fmt::Debug for Ppk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Ppk {{ id: {:?}, key: <{} bytes> }}",
            String::from_utf8_lossy(&self.id),
            self.key.len()
        )
    }
}

/// What became of the PPK when an IKE SA came up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PpkOutcome {
    /// PPKs were not configured or not negotiated, and none was wanted.
    NotUsed,
    /// The PPK with this ID was mixed into the keys (RFC 8784).
    Used { id: Vec<u8> },
    /// PPK was wanted (policy optional) but the SA came up without it.
    Downgraded { reason: DowngradeReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DowngradeReason {
    /// The peer did not offer USE_PPK.
    PeerLacksPpk,
    /// Our driver had no key to give (e.g. an empty QKD pool).
    NoKeyHere,
    /// The peer had no key for the ID, or a different one.
    PeerHadNoKey,
}

/// Why an IKE SA failed. "Peer" reasons come from the other side's notify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    NoProposalChosen {
        by_peer: bool,
    },
    /// The peer asked for a key exchange method we did not offer.
    InvalidKePayload {
        requested: u16,
    },
    AuthenticationFailed {
        by_peer: bool,
    },
    /// No response after every retransmission.
    RetransmitTimeout {
        exchange: u8,
    },
    /// A responder SA not established within the half-open timeout.
    HalfOpenTimeout,
    /// PPK required but none is available here.
    PpkUnavailable,
    /// PPK required but the peer does not support PPKs or did not use ours.
    PpkRejected,
    /// The peer sent an error notify we do not handle specifically.
    PeerError {
        notify: u16,
    },
    /// The peer broke the protocol in a way that ends the SA.
    Protocol(&'static str),
}

/// Keys of one IKE SA key set, in the form Wireshark's IKEv2 decryption table takes.
#[derive(Clone, PartialEq, Eq)]
pub struct KeylogEntry {
    pub spi_i: u64,
    pub spi_r: u64,
    pub sk_ei: AeadKey,
    pub sk_er: AeadKey,
    pub aead: AeadAlg,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl KeylogEntry {
    /// One record of Wireshark's `ikev2_decryption_table` (Preferences > Protocols >
    /// ISAKMP > IKEv2 Decryption Table), as its UAT file holds it: SPIs, SK_ei and SK_er
    /// (with their salt) as bare hex, the quoted encryption algorithm, empty SK_ai/SK_ar,
    /// integrity NONE. `tshark -o uat:ikev2_decryption_table:<line>` takes it as is
    /// (checked by experiments/tests/wireshark_keylog.rs).
    pub fn wireshark_line(&self) -> String {
        let encr = match self.aead {
            AeadAlg::AesGcm16_128 => "AES-GCM-128 with 16 octet ICV [RFC5282]",
            AeadAlg::AesGcm16_256 => "AES-GCM-256 with 16 octet ICV [RFC5282]",
        };
        format!(
            "{:016x},{:016x},{},{},\"{encr}\",,,\"NONE [RFC4306]\"",
            self.spi_i,
            self.spi_r,
            hex(&self.sk_ei),
            hex(&self.sk_er)
        )
    }
}

impl fmt::Debug for KeylogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeylogEntry {{ spi_i: {:016x}, spi_r: {:016x}, .. }}",
            self.spi_i, self.spi_r
        )
    }
}

/// A Child SA's data-plane keys and selectors. `encr_*` are key | 4-byte salt. Cloned
/// into every event about it, so its keys are inline and its copies share the name of
/// its proposal.
#[derive(Clone, PartialEq, Eq)]
pub struct ChildSa {
    /// Our inbound SPI (the peer sends with it) and the peer's.
    pub spi_in: u32,
    pub spi_out: u32,
    pub proposal: Arc<str>,
    pub aead: AeadAlg,
    /// Extended (64-bit) sequence numbers were negotiated (RFC 4303 section 2.2.1).
    pub esn: bool,
    pub encr_in: AeadKey,
    pub encr_out: AeadKey,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
}

impl ChildSa {
    /// One record of Wireshark's ESP SA table (`esp_sa`) for the packets this side sends
    /// from `local` to `remote` (`outbound`) or receives (`!outbound`); with
    /// `esp.enable_encryption_decode` tshark decrypts them (checked by
    /// experiments/tests/wireshark_keylog.rs).
    pub fn wireshark_esp_line(
        &self,
        local: std::net::IpAddr,
        remote: std::net::IpAddr,
        outbound: bool,
    ) -> String {
        let (src, dst, spi, key) = if outbound {
            (local, remote, self.spi_out, &self.encr_out)
        } else {
            (remote, local, self.spi_in, &self.encr_in)
        };
        let family = if src.is_ipv4() { "IPv4" } else { "IPv6" };
        format!(
            "\"{family}\",\"{src}\",\"{dst}\",\"0x{spi:08x}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"",
            hex(key)
        )
    }
}

impl fmt::Debug for ChildSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ChildSa {{ spi_in: {:08x}, spi_out: {:08x}, {} }}",
            self.spi_in, self.spi_out, self.proposal
        )
    }
}

/// How an exchange we initiated ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExchangeOutcome {
    /// Its response arrived.
    #[default]
    Answered,
    /// No response after every retransmission: the IKE SA failed.
    TimedOut,
    /// The IKE SA failed for another reason while the request was outstanding, or was
    /// deleted or replaced under it.
    Abandoned,
    /// Still waiting for its response when the driver stopped ([`crate::endpoint::Endpoint::finish`]).
    Unfinished,
}

impl ExchangeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeOutcome::Answered => "answered",
            ExchangeOutcome::TimedOut => "timed out",
            ExchangeOutcome::Abandoned => "abandoned",
            ExchangeOutcome::Unfinished => "unfinished",
        }
    }
}

/// Byte and fragment counts of one exchange we initiated: every exchange ends in one
/// [`Event::Exchange`], answered or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    pub exchange: u8,
    pub message_id: u32,
    pub started_ns: u64,
    /// When the response completed it, or when it was given up.
    pub completed_ns: u64,
    pub outcome: ExchangeOutcome,
    /// One copy of the request (retransmissions are counted separately).
    pub request_bytes: usize,
    pub request_fragments: usize,
    pub response_bytes: usize,
    pub response_fragments: usize,
    /// Times the request was sent again (once per resend, however many fragments).
    pub retransmissions: u32,
    /// Datagrams those resends took (fragments each count).
    pub retransmitted_datagrams: u32,
}

/// What became of a request to start an exchange (a rekey).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Started,
    /// Another request of the IKE SA is outstanding (window size 1): ask again later.
    Busy,
    /// No such IKE SA or Child SA, or it is being deleted.
    Gone,
    /// Not possible for this SA (a key exchange method we cannot run).
    Unsupported,
}

/// Everything an endpoint reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The driver must answer with `provide_ppk`: as initiator (`key_id: None`) with a
    /// fresh key and its ID, as responder with the key stored under `key_id`.
    PpkNeeded {
        sa: SaId,
        peer: usize,
        key_id: Option<Vec<u8>>,
    },
    /// A new key set (after IKE_SA_INIT and after each RFC 9370 update), for keylogs.
    Keys {
        sa: SaId,
        entry: KeylogEntry,
    },
    /// We sent the first request of an exchange.
    ExchangeStarted {
        sa: SaId,
        exchange: u8,
        message_id: u32,
    },
    /// An exchange we initiated completed.
    Exchange {
        sa: SaId,
        stats: ExchangeStats,
    },
    IkeSaEstablished {
        sa: SaId,
        peer: usize,
        initiator: bool,
        proposal: String,
        ppk: PpkOutcome,
        keys: IkeKeys,
        keylog: KeylogEntry,
    },
    ChildSaReady {
        sa: SaId,
        child: ChildSa,
    },
    /// The IKE SA is up but its first Child SA was refused (notify type), or a
    /// CREATE_CHILD_SA we started was refused.
    ChildSaFailed {
        sa: SaId,
        notify: u16,
    },
    /// A Child SA was rekeyed (RFC 7296 section 2.8): `child` replaces the one whose
    /// inbound SPI was `old_spi_in`; the old one stays until deleted.
    ChildSaRekeyed {
        sa: SaId,
        old_spi_in: u32,
        child: ChildSa,
    },
    /// The IKE SA was rekeyed (RFC 7296 section 2.18): `new` (our SPI of the successor)
    /// takes over its Child SAs; the old one is deleted next ([`Event::IkeSaDeleted`]).
    IkeSaRekeyed {
        old: SaId,
        new: SaId,
        keys: IkeKeys,
        keylog: KeylogEntry,
    },
    /// Our IKE SA rekey was refused (notify type) or its response was unusable; the old
    /// SA goes on.
    IkeSaRekeyFailed {
        sa: SaId,
        notify: u16,
    },
    /// We sent a Delete for the Child SA `spi_in`: stop sending on it (its inbound half
    /// stays until [`Event::ChildSaDeleted`], when the peer answered).
    ChildSaDeleting {
        sa: SaId,
        spi_in: u32,
    },
    /// A Child SA was deleted; `spi_in` is our inbound SPI of it.
    ChildSaDeleted {
        sa: SaId,
        spi_in: u32,
    },
    IkeSaFailed {
        sa: SaId,
        peer: usize,
        reason: FailReason,
    },
    /// The IKE SA was deleted (by us, or by the peer's Delete).
    IkeSaDeleted {
        sa: SaId,
        peer: usize,
        by_peer: bool,
    },
}

/// Counters of what the endpoint received and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointStats {
    pub datagrams_received: u64,
    /// Not an IKE message we can parse.
    pub dropped_malformed: u64,
    /// No SA with these SPIs.
    pub dropped_unknown_spi: u64,
    /// Failed the ICV (altered, or sealed with other keys).
    pub dropped_integrity: u64,
    /// Old or unexpected Message IDs, or messages for the wrong state.
    pub dropped_unexpected: u64,
    /// IKE_SA_INIT from an address with no peer configuration.
    pub dropped_no_peer: u64,
    /// IKE_SA_INIT responses that refused us or did not fit our request: unauthenticated,
    /// so held while a valid response may still come (RFC 7296 2.21.1).
    pub init_errors_held: u64,
    /// Requests sent again (once per resend), and the datagrams that took.
    pub retransmissions: u64,
    pub retransmitted_datagrams: u64,
    pub responses_resent: u64,
    pub cookies_sent: u64,
    /// The most responder SAs half open (IKE_SA_INIT answered, not yet established) at
    /// once: past `cookie_threshold`, new requests get COOKIEs.
    pub half_open_peak: u64,
}
