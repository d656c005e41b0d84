//! One IKE SA's handshake state machine. The endpoint finds the SA; this file decides.

use std::net::{IpAddr, SocketAddr};

use rand_core::CryptoRng;

use super::config::{EndpointConfig, PeerConfig, PpkPolicy};
use super::events::{
    ChildSa, DowngradeReason, Event, ExchangeStats, FailReason, KeylogEntry, Ppk, PpkOutcome,
    Start, Transmit,
};
use super::{Outputs, skf_number};
use crate::consts::{
    auth_method, exchange, flags, notify, payload_type as pt, ppk_id_type, protocol,
    transform_type as tt,
};
use crate::crypto::{AeadAlg, CryptoProvider, KeMethod, KeSecret, Suite};
use crate::keys::{IkeKeys, IntAuth, SaIdentity, SignedOctets, child_keymat, psk_auth};
use crate::message::{
    Header, Message, Notify, Payload, RawHeader, TrafficSelector, encode_payloads, find_notify,
};
use crate::proposal::{self, Preference, ProposalSpec};
use crate::protect::{self, OpenError, Opened, Reassembler, Reassembly};

/// What an SA method needs besides the SA itself.
pub(crate) struct Ctx<'a> {
    pub now: u64,
    pub crypto: &'a dyn CryptoProvider,
    pub rng: &'a mut dyn CryptoRng,
    pub peer: &'a PeerConfig,
    pub local: SocketAddr,
    /// Our port for UDP encapsulation, and the peer's (4500 unless configured).
    pub natt_port: u16,
    pub out: &'a mut Outputs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Original initiator, before IKE_AUTH completes.
    Initiating,
    /// Original responder, before IKE_AUTH completes.
    Responding,
    Established,
    /// Failed after sending an error response: kept only to replay it.
    Closing,
    /// To be removed.
    Gone,
}

enum PpkState {
    NotWanted,
    Requested { deadline: u64 },
    Have(Ppk),
    Unavailable,
}

/// A CREATE_CHILD_SA for a Child SA we started: the SA it replaces (none for an
/// additional Child SA), our new inbound SPI, our nonce and key exchange.
struct ChildRekey {
    old_spi_in: Option<u32>,
    spi_in: u32,
    ni: Vec<u8>,
    ke: Option<KeSecret>,
}

/// Our IKE SA rekey in progress: the successor's SPI (ours), our nonce and key share.
struct IkeRekey {
    spi: u64,
    ni: Vec<u8>,
    ke: KeSecret,
}

/// What a CREATE_CHILD_SA makes once all its key exchanges are done.
enum Creating {
    /// A Child SA replacing the one whose inbound SPI is `old_spi_in`, or a new one.
    Child {
        old_spi_in: Option<u32>,
        spi_in: u32,
        spi_out: u32,
        chosen: ProposalSpec,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
        /// With our own rekey: a crossing rekey by the peer to settle.
        collision: Option<RekeyCollision>,
    },
    /// The successor IKE SA under the new SPIs (the rekey initiator's, then the
    /// responder's).
    Ike {
        chosen: ProposalSpec,
        spis: [u64; 2],
    },
}

/// Two rekeys of this IKE SA that crossed (RFC 7296 section 2.8.2): both run to the
/// end (with their IKE_FOLLOWUP_KE exchanges), then the lowest of the four nonces
/// decides, alike on both sides. The Child SAs stay with the old SA until then.
#[derive(Default)]
struct IkeCrossing {
    /// Our rekey, complete.
    ours: Option<Followup>,
    /// Our rekey failed: the peer's goes on as an ordinary rekey.
    ours_failed: bool,
    /// The peer's rekey, complete.
    theirs: Option<Followup>,
}

/// A rekey between its CREATE_CHILD_SA and its last IKE_FOLLOWUP_KE (RFC 9370: one
/// exchange per additional key exchange).
struct Followup {
    creating: Creating,
    /// We sent the CREATE_CHILD_SA request.
    initiated: bool,
    /// Ni and Nr of the CREATE_CHILD_SA.
    nonces: [Vec<u8>; 2],
    /// SK(0), from the CREATE_CHILD_SA's own key exchange.
    shared: Option<Vec<u8>>,
    /// SK(1), SK(2), ... so far.
    additional: Vec<Vec<u8>>,
    /// Additional key exchange methods still to run, in order.
    remaining: Vec<KeMethod>,
    /// The responder's ADDITIONAL_KEY_EXCHANGE data, echoed in the next request.
    link: Vec<u8>,
    /// As initiator: the secret of the key share in flight.
    secret: Option<KeSecret>,
}

impl Followup {
    /// Right after the CREATE_CHILD_SA: SK(0) known, `remaining` still to run.
    fn new(
        creating: Creating,
        initiated: bool,
        nonces: [Vec<u8>; 2],
        shared: Option<Vec<u8>>,
        remaining: Vec<KeMethod>,
        link: Vec<u8>,
    ) -> Self {
        Followup {
            creating,
            initiated,
            nonces,
            shared,
            additional: Vec::new(),
            remaining,
            link,
            secret: None,
        }
    }
}

/// The known methods of a proposal's additional key exchanges, or `None`.
fn additional_methods(chosen: &ProposalSpec) -> Option<Vec<KeMethod>> {
    chosen
        .additional_kes()
        .iter()
        .map(|&(_, m)| KeMethod::from_id(m))
        .collect()
}

/// The peer rekeyed a Child SA while our own rekey of it was in flight (RFC 7296
/// section 2.8.1): settled when our exchange completes.
struct RekeyCollision {
    old_spi_in: u32,
    /// The lower of the peer's exchange's two nonces.
    lowest_nonce: Vec<u8>,
}

/// What a new Child SA's keys are derived from.
struct NewChild<'a> {
    chosen: &'a ProposalSpec,
    spi_in: u32,
    spi_out: u32,
    /// We initiated the exchange that creates it (our key is the I->R half).
    initiated: bool,
    /// Ni and Nr of that exchange.
    nonces: [&'a [u8]; 2],
    /// The exchange's new key exchange secret (PFS), if any.
    shared: Option<&'a [u8]>,
    /// Secrets of its additional key exchanges (IKE_FOLLOWUP_KE), in order.
    additional: &'a [Vec<u8>],
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
}

/// The ESP proposals as wire proposals with SPI `spi`, optionally without key exchange
/// transforms (inside IKE_AUTH).
fn esp_offer(esp: &[ProposalSpec], spi: u32, with_ke: bool) -> Vec<crate::message::Proposal> {
    esp.iter()
        .enumerate()
        .map(|(i, p)| {
            let p = if with_ke {
                p.clone()
            } else {
                p.without_key_exchange()
            };
            p.to_wire(i as u8 + 1, spi.to_be_bytes().to_vec())
        })
        .collect()
}

/// The initiator's IKE_AUTH candidates: the keys without a PPK, and with it (plus its ID).
type AuthKeys = (IkeKeys, Option<(IkeKeys, Vec<u8>)>);

struct Outstanding {
    datagrams: Vec<Vec<u8>>,
    tries: u32,
    deadline: u64,
    stats: ExchangeStats,
}

pub(crate) struct IkeSa {
    pub peer: usize,
    /// Original initiator of this IKE SA.
    pub initiator: bool,
    pub spi_i: u64,
    pub spi_r: u64,
    pub remote: SocketAddr,
    pub phase: Phase,
    pub indexed: Option<u64>,
    /// The IKE_SA_INIT request and response as sent (RealMessage1/2).
    pub init_request: Vec<u8>,
    pub init_response: Vec<u8>,
    closing_until: Option<u64>,
    half_open_deadline: Option<u64>,
    chosen: Option<ProposalSpec>,
    suite: Option<Suite>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    keys: Option<IkeKeys>,
    ke: Option<KeSecret>,
    ke_method: u16,
    cookie: Option<Vec<u8>>,
    init_retries: u8,
    additional: Vec<u16>,
    done_additional: usize,
    int_auth: IntAuth,
    /// `A | P` of our outstanding IKE_INTERMEDIATE request.
    intauth_request: Vec<u8>,
    peer_frag: bool,
    peer_intermediate: bool,
    peer_childless: bool,
    use_ppk: bool,
    ppk: PpkState,
    ppk_outcome: PpkOutcome,
    /// Initiator: the keys without and with the PPK, and the PPK ID, until IKE_AUTH ends.
    auth_keys: Option<AuthKeys>,
    /// Responder: the IKE_AUTH request waiting for the driver's PPK.
    pending_auth: Option<(Header, Vec<Payload>)>,
    next_mid: u32,
    expected_mid: u32,
    outstanding: Option<Outstanding>,
    cached: Option<(u32, Vec<Vec<u8>>)>,
    reasm_requests: Reassembler,
    reasm_responses: Reassembler,
    iv: u64,
    child_spi: u32,
    /// Child SAs of this IKE SA: new ones appended, old ones kept until deleted.
    children: Vec<ChildSa>,
    /// Inbound SPIs of Child SAs already replaced by a rekey (kept until deleted, never
    /// rekeyed again).
    superseded: Vec<u32>,
    /// Our CREATE_CHILD_SA in progress.
    rekey: Option<ChildRekey>,
    /// The peer's rekey that crossed ours.
    collision: Option<RekeyCollision>,
    /// The peer's IKE SA rekey that crossed ours.
    ike_crossing: Option<IkeCrossing>,
    /// Our CREATE_CHILD_SA rekeying this IKE SA.
    ike_rekey: Option<IkeRekey>,
    /// Our rekey in its IKE_FOLLOWUP_KE exchanges.
    followup: Option<Followup>,
    /// The peer's rekey in its IKE_FOLLOWUP_KE exchanges.
    peer_followup: Option<Followup>,
    /// Our Delete of a Child SA in progress (its inbound SPI).
    deleting_child: Option<u32>,
    /// A NAT was detected in IKE_SA_INIT.
    nat: bool,
    /// We sent a Delete for this IKE SA.
    deleting: bool,
    /// When the next liveness check is due (dead peer detection on).
    dpd_at: Option<u64>,
    /// IKE has moved to port 4500 (RFC 3948 port floating).
    floated: bool,
}

fn random(rng: &mut dyn CryptoRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// A nonzero ESP SPI outside the reserved range 1..255.
/// A non-zero IKE SPI.
fn random_ike_spi(rng: &mut dyn CryptoRng) -> u64 {
    loop {
        let spi = u64::from_be_bytes(random(rng, 8).try_into().expect("8 bytes"));
        if spi != 0 {
            return spi;
        }
    }
}

fn random_esp_spi(rng: &mut dyn CryptoRng) -> u32 {
    loop {
        let spi = rng.next_u32();
        if spi >= 256 {
            return spi;
        }
    }
}

/// RFC 7296 section 2.23: `SHA-1(SPIi | SPIr | IP | port)`.
fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(spi_i.to_be_bytes());
    h.update(spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(addr.port().to_be_bytes());
    h.finalize().to_vec()
}

/// Whether the NAT_DETECTION notifies of `msg` show a NAT: ours (the destination hash
/// does not match our address) or the peer's (no source hash matches the address it
/// came from). `None` when the peer sent no NAT detection at all.
fn nat_detected(msg: &Message, spi_r: u64, local: SocketAddr, remote: SocketAddr) -> Option<bool> {
    let spi_i = msg.header.spi_i;
    let dst = msg.notify(notify::NAT_DETECTION_DESTINATION_IP)?;
    let here = dst.data != nat_hash(spi_i, spi_r, local);
    let there = !msg.payloads.iter().any(|p| {
        matches!(p, Payload::Notify(n) if n.kind == notify::NAT_DETECTION_SOURCE_IP
            && n.data == nat_hash(spi_i, spi_r, remote))
    });
    Some(here || there)
}

/// The NAT_DETECTION notifies for a message from `local` to `remote`. With `force`,
/// the source hash is deliberately wrong so that the peer sees a NAT and both sides
/// move to UDP encapsulation on port 4500 (what strongSwan's `encap = yes` does).
fn nat_notifies(
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
    force: bool,
) -> [Payload; 2] {
    let source = if force {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        local
    };
    [
        notify_payload(
            notify::NAT_DETECTION_SOURCE_IP,
            nat_hash(spi_i, spi_r, source),
        ),
        notify_payload(
            notify::NAT_DETECTION_DESTINATION_IP,
            nat_hash(spi_i, spi_r, remote),
        ),
    ]
}

fn notify_payload(kind: u16, data: Vec<u8>) -> Payload {
    Payload::Notify(Notify::new(kind, data))
}

fn first_error(payloads: &[Payload]) -> Option<u16> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if notify::is_error(n.kind) => Some(n.kind),
        _ => None,
    })
}

/// The payloads of an IKE_AUTH message: IDs, AUTH data, the Child SA proposals and
/// traffic selectors.
struct AuthPayloads<'a> {
    idi: Option<(u8, &'a Vec<u8>)>,
    idr: Option<(u8, &'a Vec<u8>)>,
    auth: Option<&'a Vec<u8>>,
    esp: Option<&'a Vec<crate::message::Proposal>>,
    tsi: Option<&'a Vec<TrafficSelector>>,
    tsr: Option<&'a Vec<TrafficSelector>>,
}

impl<'a> AuthPayloads<'a> {
    fn of(payloads: &'a [Payload]) -> Self {
        let mut a = AuthPayloads {
            idi: None,
            idr: None,
            auth: None,
            esp: None,
            tsi: None,
            tsr: None,
        };
        for p in payloads {
            match p {
                Payload::IdI { id_type, data } => a.idi = Some((*id_type, data)),
                Payload::IdR { id_type, data } => a.idr = Some((*id_type, data)),
                Payload::Auth { data, .. } => a.auth = Some(data),
                Payload::Sa(props) => a.esp = Some(props),
                Payload::TsI(t) => a.tsi = Some(t),
                Payload::TsR(t) => a.tsr = Some(t),
                _ => {}
            }
        }
        a
    }
}

fn host_ts(a: IpAddr) -> TrafficSelector {
    TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: 65535,
        start: a,
        end: a,
    }
}

/// The overlap of two selector lists (RFC 7296 section 2.9: the responder may narrow,
/// never widen).
pub(crate) fn narrow(
    offered: &[TrafficSelector],
    ours: &[TrafficSelector],
) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for o in offered {
        for m in ours {
            if o.start.is_ipv4() != m.start.is_ipv4() {
                continue;
            }
            let proto = match (o.ip_protocol, m.ip_protocol) {
                (0, p) | (p, 0) => p,
                (a, b) if a == b => a,
                _ => continue,
            };
            let t = TrafficSelector {
                ip_protocol: proto,
                start_port: o.start_port.max(m.start_port),
                end_port: o.end_port.min(m.end_port),
                start: o.start.max(m.start),
                end: o.end.min(m.end),
            };
            if t.start <= t.end && t.start_port <= t.end_port && !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

impl<'a> Ctx<'a> {
    pub fn new(
        now: u64,
        crypto: &'a dyn CryptoProvider,
        rng: &'a mut dyn CryptoRng,
        peer: &'a PeerConfig,
        config: &EndpointConfig,
        out: &'a mut Outputs,
    ) -> Self {
        Ctx {
            now,
            crypto,
            rng,
            peer,
            local: config.local,
            natt_port: config.natt_port,
            out,
        }
    }
}

impl IkeSa {
    fn blank(peer: usize, initiator: bool, spi_i: u64, spi_r: u64, remote: SocketAddr) -> Self {
        IkeSa {
            peer,
            initiator,
            spi_i,
            spi_r,
            remote,
            phase: if initiator {
                Phase::Initiating
            } else {
                Phase::Responding
            },
            indexed: None,
            init_request: Vec::new(),
            init_response: Vec::new(),
            closing_until: None,
            half_open_deadline: None,
            chosen: None,
            suite: None,
            ni: Vec::new(),
            nr: Vec::new(),
            keys: None,
            ke: None,
            ke_method: 0,
            cookie: None,
            init_retries: 0,
            additional: Vec::new(),
            done_additional: 0,
            int_auth: IntAuth::default(),
            intauth_request: Vec::new(),
            peer_frag: false,
            peer_intermediate: false,
            peer_childless: false,
            use_ppk: false,
            ppk: PpkState::NotWanted,
            ppk_outcome: PpkOutcome::NotUsed,
            auth_keys: None,
            pending_auth: None,
            next_mid: 0,
            expected_mid: 0,
            outstanding: None,
            cached: None,
            reasm_requests: Reassembler::default(),
            reasm_responses: Reassembler::default(),
            iv: 0,
            child_spi: 0,
            children: Vec::new(),
            superseded: Vec::new(),
            rekey: None,
            collision: None,
            ike_crossing: None,
            ike_rekey: None,
            followup: None,
            peer_followup: None,
            deleting_child: None,
            nat: false,
            deleting: false,
            dpd_at: None,
            floated: false,
        }
    }

    fn id(&self) -> SaIdentity<'_> {
        SaIdentity {
            ni: &self.ni,
            nr: &self.nr,
            spi_i: self.spi_i,
            spi_r: self.spi_r,
        }
    }

    pub(crate) fn peer_spi(&self) -> u64 {
        if self.initiator {
            self.spi_r
        } else {
            self.spi_i
        }
    }

    pub(crate) fn our_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    fn keylog(&self) -> KeylogEntry {
        let k = self
            .keys
            .as_ref()
            .expect("keys exist once IKE_SA_INIT is done");
        KeylogEntry {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            sk_ei: k.sk_ei.clone(),
            sk_er: k.sk_er.clone(),
            aead: self.suite.expect("suite negotiated").aead,
        }
    }

    fn emit_keys(&self, ctx: &mut Ctx<'_>) {
        ctx.out.events.push_back(Event::Keys {
            sa: self.our_spi(),
            entry: self.keylog(),
        });
    }

    /// The earliest timer of this SA.
    pub fn next_deadline(&self) -> Option<u64> {
        let ppk = match self.ppk {
            PpkState::Requested { deadline } => Some(deadline),
            _ => None,
        };
        let half_open = self
            .half_open_deadline
            .filter(|_| self.phase == Phase::Responding);
        [
            self.outstanding.as_ref().map(|o| o.deadline),
            half_open,
            ppk,
            self.closing_until,
            self.dpd_at.filter(|_| self.liveness_possible()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn header(&self, exchange: u8, message_id: u32, response: bool) -> Header {
        let mut f = if self.initiator { flags::INITIATOR } else { 0 };
        if response {
            f |= flags::RESPONSE;
        }
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            exchange,
            flags: f,
            message_id,
        }
    }

    fn transmit(&self, ctx: &mut Ctx<'_>, datagrams: &[Vec<u8>]) {
        let mut src = ctx.local;
        if self.floated {
            src.set_port(ctx.natt_port);
        }
        for d in datagrams {
            ctx.out.transmits.push_back(Transmit {
                src,
                dst: self.remote,
                payload: d.clone(),
            });
        }
    }

    /// Moves IKE to port 4500: from now on the driver adds the non-ESP marker.
    fn float(&mut self, natt_port: u16) {
        self.floated = true;
        self.remote.set_port(natt_port);
    }

    /// Seals inner payloads under our SK_e, fragmented when negotiated and needed.
    fn protect(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        payloads: &[Payload],
    ) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut inner = Vec::new();
        encode_payloads(payloads, &mut inner);
        let first = payloads.first().map_or(pt::NONE, Payload::kind);
        let keys = self
            .keys
            .as_ref()
            .expect("protected exchanges follow IKE_SA_INIT");
        let key = if self.initiator {
            &keys.sk_ei
        } else {
            &keys.sk_er
        };
        let aead = self.suite.expect("negotiated").aead;
        let datagrams = if self.peer_frag {
            let natt = ctx.peer.nat_t || self.floated;
            let max = protect::max_ike_len(ctx.peer.fragment_size, self.remote.is_ipv6(), natt);
            protect::seal_fragmented(
                ctx.crypto,
                aead,
                key,
                &mut self.iv,
                header,
                first,
                &inner,
                max,
            )
        } else {
            vec![protect::seal(
                ctx.crypto,
                aead,
                key,
                &mut self.iv,
                header,
                first,
                &inner,
            )]
        };
        (datagrams, protect::intauth_input(header, first, &inner))
    }

    fn start_request(&mut self, ctx: &mut Ctx<'_>, exchange: u8, datagrams: Vec<Vec<u8>>) {
        self.transmit(ctx, &datagrams);
        ctx.out.events.push_back(Event::ExchangeStarted {
            sa: self.our_spi(),
            exchange,
            message_id: self.next_mid,
        });
        let stats = ExchangeStats {
            exchange,
            message_id: self.next_mid,
            started_ns: ctx.now,
            request_bytes: datagrams.iter().map(Vec::len).sum(),
            request_fragments: datagrams.len(),
            ..ExchangeStats::default()
        };
        self.outstanding = Some(Outstanding {
            datagrams,
            tries: 0,
            deadline: ctx.now + ctx.peer.timers.retransmit_after(0),
            stats,
        });
        self.next_mid += 1;
    }

    /// Sends a protected request; returns its `A | P` for IntAuth.
    fn send_request(&mut self, ctx: &mut Ctx<'_>, exchange: u8, payloads: &[Payload]) -> Vec<u8> {
        let header = self.header(exchange, self.next_mid, false);
        let (datagrams, ap) = self.protect(ctx, &header, payloads);
        self.start_request(ctx, exchange, datagrams);
        ap
    }

    /// Sends (and caches) a protected response; returns its `A | P`.
    fn send_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: &Header,
        payloads: &[Payload],
    ) -> Vec<u8> {
        let header = self.header(request.exchange, request.message_id, true);
        let (datagrams, ap) = self.protect(ctx, &header, payloads);
        self.transmit(ctx, &datagrams);
        self.cached = Some((request.message_id, datagrams));
        self.expected_mid = request.message_id.wrapping_add(1);
        ap
    }

    /// Ends the SA: an event, and the SA goes (or lingers to replay an error response).
    pub fn fail(&mut self, ctx: &mut Ctx<'_>, reason: FailReason) {
        ctx.out.events.push_back(Event::IkeSaFailed {
            sa: self.our_spi(),
            peer: self.peer,
            reason,
        });
        self.outstanding = None;
        self.pending_auth = None;
        self.ppk = PpkState::NotWanted;
        if self.cached.is_some() && !self.initiator {
            self.phase = Phase::Closing;
            self.closing_until = Some(ctx.now + ctx.peer.timers.half_open_timeout_ns);
        } else {
            self.phase = Phase::Gone;
        }
    }

    // ----- IKE_SA_INIT -----------------------------------------------------------

    /// A new initiator SA; sends IKE_SA_INIT.
    pub fn initiate(ctx: &mut Ctx<'_>, peer: usize, spi: u64) -> IkeSa {
        let mut sa = IkeSa::blank(peer, true, spi, 0, ctx.peer.remote);
        sa.ni = random(ctx.rng, 32);
        sa.ke_method = ctx
            .peer
            .ike
            .first()
            .and_then(|p| p.chosen(tt::KE))
            .map_or(0, |a| a.id);
        sa.send_init(ctx);
        sa
    }

    fn send_init(&mut self, ctx: &mut Ctx<'_>) {
        let method =
            KeMethod::from_id(self.ke_method).expect("configured KE methods are supported");
        let (secret, data) = ctx.crypto.ke_initiate(method, ctx.rng);
        self.ke = Some(secret);
        let mut payloads = Vec::new();
        if let Some(c) = &self.cookie {
            payloads.push(notify_payload(notify::COOKIE, c.clone()));
        }
        let proposals = ctx
            .peer
            .ike
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_wire(i as u8 + 1, Vec::new()));
        payloads.push(Payload::Sa(proposals.collect()));
        payloads.push(Payload::Ke {
            method: self.ke_method,
            data,
        });
        payloads.push(Payload::Nonce(self.ni.clone()));
        payloads.extend(nat_notifies(
            self.spi_i,
            0,
            ctx.local,
            self.remote,
            ctx.peer.nat_t,
        ));
        if ctx.peer.fragmentation {
            payloads.push(notify_payload(
                notify::IKEV2_FRAGMENTATION_SUPPORTED,
                vec![],
            ));
        }
        payloads.push(notify_payload(
            notify::INTERMEDIATE_EXCHANGE_SUPPORTED,
            vec![],
        ));
        if ctx.peer.ppk != PpkPolicy::Disabled {
            payloads.push(notify_payload(notify::USE_PPK, vec![]));
        }
        if ctx.peer.childless {
            payloads.push(notify_payload(notify::CHILDLESS_IKEV2_SUPPORTED, vec![]));
        }
        self.next_mid = 0;
        let bytes = Message {
            header: self.header(exchange::IKE_SA_INIT, 0, false),
            payloads,
        }
        .encode();
        self.init_request = bytes.clone();
        self.start_request(ctx, exchange::IKE_SA_INIT, vec![bytes]);
    }

    /// A responder SA from an IKE_SA_INIT request, or the notify to refuse it with.
    pub fn respond(
        ctx: &mut Ctx<'_>,
        peer: usize,
        spi: u64,
        from: SocketAddr,
        msg: &Message,
        bytes: &[u8],
        ni: Vec<u8>,
    ) -> Result<IkeSa, Notify> {
        let refuse = |kind, data| Notify::new(kind, data);
        let offered = msg.payloads.iter().find_map(|p| match p {
            Payload::Sa(props) => Some(props),
            _ => None,
        });
        let Some(offered) = offered else {
            return Err(refuse(notify::INVALID_SYNTAX, vec![]));
        };
        let has = |kind| msg.notify(kind).is_some();
        let peer_intermediate = has(notify::INTERMEDIATE_EXCHANGE_SUPPORTED);
        let selection = proposal::select(offered, &ctx.peer.ike, Preference::Initiator)
            .filter(|s| Suite::from_proposal(&s.chosen).is_some())
            .filter(|s| {
                s.chosen
                    .additional_kes()
                    .iter()
                    .all(|&(_, m)| KeMethod::from_id(m).is_some())
            })
            .filter(|s| peer_intermediate || s.chosen.additional_kes().is_empty());
        let Some(selection) = selection else {
            return Err(refuse(notify::NO_PROPOSAL_CHOSEN, vec![]));
        };
        let chosen = selection.chosen;
        let ke_id = chosen.chosen(tt::KE).map_or(0, |a| a.id);
        let Some(method) = KeMethod::from_id(ke_id) else {
            return Err(refuse(notify::NO_PROPOSAL_CHOSEN, vec![]));
        };
        let kei = msg.payloads.iter().find_map(|p| match p {
            Payload::Ke { method, data } => Some((*method, data)),
            _ => None,
        });
        let kei = match kei {
            Some((m, data)) if m == ke_id => data,
            _ => {
                return Err(refuse(
                    notify::INVALID_KE_PAYLOAD,
                    ke_id.to_be_bytes().to_vec(),
                ));
            }
        };
        let Ok((ker, shared)) = ctx.crypto.ke_respond(method, kei, ctx.rng) else {
            return Err(refuse(notify::INVALID_SYNTAX, vec![]));
        };
        let mut sa = IkeSa::blank(peer, false, msg.header.spi_i, spi, from);
        sa.ni = ni;
        sa.nr = random(ctx.rng, 32);
        sa.suite = Suite::from_proposal(&chosen);
        sa.additional = chosen.additional_kes().iter().map(|&(_, m)| m).collect();
        sa.peer_frag = has(notify::IKEV2_FRAGMENTATION_SUPPORTED) && ctx.peer.fragmentation;
        sa.peer_intermediate = peer_intermediate;
        sa.peer_childless = has(notify::CHILDLESS_IKEV2_SUPPORTED);
        sa.use_ppk = has(notify::USE_PPK) && ctx.peer.ppk != PpkPolicy::Disabled;
        let mut payloads = vec![
            Payload::Sa(vec![chosen.to_wire(selection.number, Vec::new())]),
            Payload::Ke {
                method: ke_id,
                data: ker,
            },
            Payload::Nonce(sa.nr.clone()),
        ];
        if let Some(nat) = nat_detected(msg, 0, ctx.local, from) {
            sa.nat = nat || ctx.peer.nat_t;
            payloads.extend(nat_notifies(
                sa.spi_i,
                sa.spi_r,
                ctx.local,
                from,
                ctx.peer.nat_t,
            ));
        }
        if sa.peer_frag {
            payloads.push(notify_payload(
                notify::IKEV2_FRAGMENTATION_SUPPORTED,
                vec![],
            ));
        }
        if peer_intermediate {
            payloads.push(notify_payload(
                notify::INTERMEDIATE_EXCHANGE_SUPPORTED,
                vec![],
            ));
        }
        if sa.use_ppk {
            payloads.push(notify_payload(notify::USE_PPK, vec![]));
        }
        if sa.peer_childless {
            payloads.push(notify_payload(notify::CHILDLESS_IKEV2_SUPPORTED, vec![]));
        }
        let response = Message {
            header: sa.header(exchange::IKE_SA_INIT, 0, true),
            payloads,
        }
        .encode();
        sa.keys = Some(IkeKeys::initial(
            ctx.crypto,
            sa.suite.expect("checked"),
            &shared,
            sa.id(),
        ));
        sa.chosen = Some(chosen);
        sa.init_request = bytes.to_vec();
        sa.init_response = response.clone();
        sa.expected_mid = 1;
        sa.half_open_deadline = Some(ctx.now + ctx.peer.timers.half_open_timeout_ns);
        sa.transmit(ctx, &[response]);
        sa.emit_keys(ctx);
        Ok(sa)
    }

    fn on_init_response(&mut self, ctx: &mut Ctx<'_>, bytes: &[u8]) -> Result<(), FailReason> {
        let awaiting = self
            .outstanding
            .as_ref()
            .is_some_and(|o| o.stats.exchange == exchange::IKE_SA_INIT);
        if !self.initiator || !awaiting {
            ctx.out.stats.dropped_unexpected += 1;
            return Ok(());
        }
        let Ok(msg) = Message::decode(bytes) else {
            ctx.out.stats.dropped_malformed += 1;
            return Ok(());
        };
        if let Some(c) = msg.notify(notify::COOKIE) {
            self.retry_init(ctx, |sa| sa.cookie = Some(c.data.clone()))?;
            return Ok(());
        }
        if let Some(n) = msg.notify(notify::INVALID_KE_PAYLOAD) {
            let requested = n
                .data
                .get(..2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            let offered = ctx
                .peer
                .ike
                .iter()
                .any(|p| p.of(tt::KE).any(|a| a.id == requested));
            if !offered || requested == self.ke_method || KeMethod::from_id(requested).is_none() {
                return Err(FailReason::InvalidKePayload { requested });
            }
            self.retry_init(ctx, |sa| sa.ke_method = requested)?;
            return Ok(());
        }
        match first_error(&msg.payloads) {
            Some(notify::NO_PROPOSAL_CHOSEN) => {
                return Err(FailReason::NoProposalChosen { by_peer: true });
            }
            Some(n) => return Err(FailReason::PeerError { notify: n }),
            None => {}
        }
        let mut sa_reply = None;
        let mut ker = None;
        let mut nr = None;
        for p in &msg.payloads {
            match p {
                Payload::Sa(props) => sa_reply = Some(props),
                Payload::Ke { method, data } => ker = Some((*method, data)),
                Payload::Nonce(n) => nr = Some(n),
                _ => {}
            }
        }
        let (Some(sa_reply), Some((ke_id, ker)), Some(nr)) = (sa_reply, ker, nr) else {
            return Err(FailReason::Protocol(
                "IKE_SA_INIT response lacks SA, KE or Nonce",
            ));
        };
        let chosen = proposal::verify_reply(sa_reply, &ctx.peer.ike).ok_or(
            FailReason::Protocol("IKE_SA_INIT response chose a proposal we did not offer"),
        )?;
        let suite =
            Suite::from_proposal(&chosen).ok_or(FailReason::NoProposalChosen { by_peer: false })?;
        if chosen.chosen(tt::KE).map(|a| a.id) != Some(self.ke_method) || ke_id != self.ke_method {
            return Err(FailReason::Protocol(
                "responder's KE method differs from ours",
            ));
        }
        if msg.header.spi_r == 0 || !(16..=256).contains(&nr.len()) {
            return Err(FailReason::Protocol("bad responder SPI or nonce"));
        }
        self.peer_frag = msg.notify(notify::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
        self.nat = nat_detected(&msg, msg.header.spi_r, ctx.local, self.remote).unwrap_or(false);
        if self.nat || ctx.peer.nat_t {
            self.float(ctx.natt_port);
        }
        self.peer_intermediate = msg
            .notify(notify::INTERMEDIATE_EXCHANGE_SUPPORTED)
            .is_some();
        self.peer_childless = msg.notify(notify::CHILDLESS_IKEV2_SUPPORTED).is_some();
        self.additional = chosen.additional_kes().iter().map(|&(_, m)| m).collect();
        if !self.additional.is_empty() && !self.peer_intermediate {
            return Err(FailReason::Protocol(
                "additional key exchanges without IKE_INTERMEDIATE",
            ));
        }
        if self
            .additional
            .iter()
            .any(|&m| KeMethod::from_id(m).is_none())
        {
            return Err(FailReason::NoProposalChosen { by_peer: false });
        }
        let secret = self.ke.take().expect("KE sent with IKE_SA_INIT");
        let shared = ctx
            .crypto
            .ke_complete(secret, ker)
            .map_err(|_| FailReason::Protocol("responder's KE data is invalid"))?;
        self.spi_r = msg.header.spi_r;
        self.nr = nr.clone();
        self.suite = Some(suite);
        self.keys = Some(IkeKeys::initial(ctx.crypto, suite, &shared, self.id()));
        self.chosen = Some(chosen);
        self.init_response = bytes.to_vec();
        self.finish_exchange(ctx, bytes.len(), 1);
        self.emit_keys(ctx);

        let wanted = ctx.peer.ppk != PpkPolicy::Disabled;
        self.use_ppk = wanted && msg.notify(notify::USE_PPK).is_some();
        if wanted && !self.use_ppk {
            self.go_without_ppk(ctx, FailReason::PpkRejected, DowngradeReason::PeerLacksPpk)?;
        }
        if self.use_ppk {
            self.ppk = PpkState::Requested {
                deadline: ctx.now + ctx.peer.timers.ppk_timeout_ns,
            };
            ctx.out.events.push_back(Event::PpkNeeded {
                sa: self.spi_i,
                peer: self.peer,
                key_id: None,
            });
        }
        self.next_step(ctx)
    }

    /// Sends IKE_SA_INIT again after COOKIE or INVALID_KE_PAYLOAD (at most 3 times).
    fn retry_init(
        &mut self,
        ctx: &mut Ctx<'_>,
        change: impl FnOnce(&mut Self),
    ) -> Result<(), FailReason> {
        if self.init_retries >= 3 {
            return Err(FailReason::Protocol("IKE_SA_INIT refused too often"));
        }
        self.init_retries += 1;
        change(self);
        self.send_init(ctx);
        Ok(())
    }

    /// Closes the outstanding exchange with the response's size and reports it.
    fn finish_exchange(
        &mut self,
        ctx: &mut Ctx<'_>,
        response_bytes: usize,
        response_fragments: usize,
    ) {
        if let Some(o) = self.outstanding.take() {
            let mut stats = o.stats;
            stats.completed_ns = ctx.now;
            stats.response_bytes += response_bytes;
            stats.response_fragments += response_fragments;
            ctx.out.events.push_back(Event::Exchange {
                sa: self.our_spi(),
                stats,
            });
        }
    }

    /// Initiator: the next IKE_INTERMEDIATE, or IKE_AUTH once the PPK question is settled.
    fn next_step(&mut self, ctx: &mut Ctx<'_>) -> Result<(), FailReason> {
        if self.done_additional < self.additional.len() {
            let method_id = self.additional[self.done_additional];
            let method = KeMethod::from_id(method_id).expect("checked at negotiation");
            let (secret, data) = ctx.crypto.ke_initiate(method, ctx.rng);
            self.ke = Some(secret);
            self.intauth_request = self.send_request(
                ctx,
                exchange::IKE_INTERMEDIATE,
                &[Payload::Ke {
                    method: method_id,
                    data,
                }],
            );
            return Ok(());
        }
        match self.ppk {
            PpkState::Requested { .. } => Ok(()), // IKE_AUTH waits for provide_ppk
            _ => self.send_auth(ctx),
        }
    }

    // ----- protected messages ---------------------------------------------------------

    pub fn on_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        raw: RawHeader,
        bytes: &[u8],
        from: SocketAddr,
    ) -> Result<(), FailReason> {
        let h = raw.header;
        if h.exchange == exchange::IKE_SA_INIT {
            return self.on_init_response(ctx, bytes);
        }
        if !h.is_response() {
            // A retransmitted request: replay the cached response when its first (or
            // only) part arrives, without decrypting (the keys may have moved on).
            if let Some((mid, datagrams)) = &self.cached
                && *mid == h.message_id
            {
                if raw.next_payload == pt::SK || skf_number(raw.next_payload, bytes) == Some(1) {
                    ctx.out.stats.responses_resent += 1;
                    let datagrams = datagrams.clone();
                    self.transmit(ctx, &datagrams);
                }
                return Ok(());
            }
            if self.phase == Phase::Closing
                || h.message_id != self.expected_mid
                || self.pending_auth.is_some()
            {
                ctx.out.stats.dropped_unexpected += 1;
                return Ok(());
            }
        } else if self
            .outstanding
            .as_ref()
            .is_none_or(|o| o.stats.message_id != h.message_id)
        {
            ctx.out.stats.dropped_unexpected += 1;
            return Ok(());
        }
        let Some((header, first, inner)) = self.open(ctx, bytes, h.is_response()) else {
            return Ok(());
        };
        // Behind a NAT, follow the peer to the address its authenticated messages come
        // from (RFC 7296 section 2.23).
        if self.nat && from != self.remote {
            self.remote = from;
            self.floated = from.port() == ctx.natt_port;
        }
        self.heard_from_peer(ctx);
        let payloads = protect::decode_inner(first, &inner)
            .map_err(|_| FailReason::Protocol("authenticated message with undecodable payloads"))?;
        if header.is_response() {
            self.finish_exchange(ctx, 0, 0);
            match header.exchange {
                exchange::IKE_INTERMEDIATE => {
                    self.on_intermediate_response(ctx, &header, first, &inner, &payloads)
                }
                exchange::IKE_AUTH => self.on_auth_response(ctx, &payloads),
                exchange::CREATE_CHILD_SA => self.on_create_child_response(ctx, &payloads),
                exchange::IKE_FOLLOWUP_KE => self.on_followup_response(ctx, &payloads),
                exchange::INFORMATIONAL if self.deleting_child.is_some() => {
                    let spi_in = self.deleting_child.take().expect("checked");
                    if let Some(i) = self.children.iter().position(|c| c.spi_in == spi_in) {
                        self.children.remove(i);
                        self.superseded.retain(|s| *s != spi_in);
                        ctx.out.events.push_back(Event::ChildSaDeleted {
                            sa: self.our_spi(),
                            spi_in,
                        });
                    }
                    Ok(())
                }
                exchange::INFORMATIONAL if self.deleting => {
                    self.phase = Phase::Gone;
                    ctx.out.events.push_back(Event::IkeSaDeleted {
                        sa: self.our_spi(),
                        peer: self.peer,
                        by_peer: false,
                    });
                    Ok(())
                }
                _ => Ok(()),
            }
        } else {
            match (header.exchange, self.phase) {
                (exchange::IKE_INTERMEDIATE, Phase::Responding) => {
                    self.on_intermediate_request(ctx, &header, first, &inner, &payloads)
                }
                (exchange::IKE_AUTH, Phase::Responding) => {
                    self.on_auth_request(ctx, header, payloads)
                }
                (exchange::CREATE_CHILD_SA, Phase::Established) => {
                    self.on_create_child_request(ctx, header, payloads)
                }
                (exchange::IKE_FOLLOWUP_KE, Phase::Established) => {
                    self.on_followup_request(ctx, &header, &payloads)
                }
                (exchange::INFORMATIONAL, Phase::Established) => {
                    let esp_spis: Vec<Vec<u8>> = payloads
                        .iter()
                        .filter_map(|p| match p {
                            Payload::Delete {
                                protocol: protocol::ESP,
                                spis,
                                ..
                            } => Some(spis.clone()),
                            _ => None,
                        })
                        .flatten()
                        .collect();
                    let ours = self.delete_children(ctx, &esp_spis);
                    let reply: Vec<Payload> = if ours.is_empty() {
                        Vec::new()
                    } else {
                        vec![Payload::Delete {
                            protocol: protocol::ESP,
                            spi_size: 4,
                            spis: ours,
                        }]
                    };
                    self.send_response(ctx, &header, &reply);
                    let delete_ike = payloads.iter().any(|p| {
                        matches!(
                            p,
                            Payload::Delete {
                                protocol: protocol::IKE,
                                ..
                            }
                        )
                    });
                    if delete_ike {
                        self.phase = Phase::Gone;
                        ctx.out.events.push_back(Event::IkeSaDeleted {
                            sa: self.our_spi(),
                            peer: self.peer,
                            by_peer: true,
                        });
                    }
                    Ok(())
                }
                _ => {
                    ctx.out.stats.dropped_unexpected += 1;
                    Ok(())
                }
            }
        }
    }

    /// Authenticates, decrypts and (for fragments) reassembles one message; counts what
    /// it drops. Response sizes are added to the outstanding exchange's statistics.
    fn open(
        &mut self,
        ctx: &mut Ctx<'_>,
        bytes: &[u8],
        response: bool,
    ) -> Option<(Header, u8, Vec<u8>)> {
        let keys = self.keys.as_ref()?;
        let sent_by_initiator = !self.initiator;
        let key = if sent_by_initiator {
            &keys.sk_ei
        } else {
            &keys.sk_er
        };
        let aead = self.suite?.aead;
        let opened = match protect::open(ctx.crypto, aead, key, bytes) {
            Ok(o) => o,
            Err(OpenError::Crypto(_)) => {
                ctx.out.stats.dropped_integrity += 1;
                return None;
            }
            Err(_) => {
                ctx.out.stats.dropped_malformed += 1;
                return None;
            }
        };
        let result = match opened {
            Opened::Whole {
                header,
                first,
                inner,
            } => Some((header, first, inner)),
            Opened::Fragment {
                header,
                number,
                total,
                first,
                chunk,
            } => {
                let reasm = if response {
                    &mut self.reasm_responses
                } else {
                    &mut self.reasm_requests
                };
                match reasm.insert(ctx.now, header, number, total, first, chunk) {
                    Reassembly::Incomplete => None,
                    Reassembly::Complete {
                        header,
                        first,
                        inner,
                    } => Some((header, first, inner)),
                    Reassembly::Duplicate | Reassembly::StaleTotal | Reassembly::OverLimit => {
                        ctx.out.stats.dropped_unexpected += 1;
                        return None;
                    }
                }
            }
        };
        if response && let Some(o) = self.outstanding.as_mut() {
            o.stats.response_bytes += bytes.len();
            o.stats.response_fragments += 1;
        }
        result
    }

    // ----- IKE_INTERMEDIATE ---------------------------------------------------------

    fn on_intermediate_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        first: u8,
        inner: &[u8],
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        if let Some(n) = first_error(payloads) {
            return Err(FailReason::PeerError { notify: n });
        }
        let method = self.additional[self.done_additional];
        let ker = payloads.iter().find_map(|p| match p {
            Payload::Ke { method: m, data } if *m == method => Some(data),
            _ => None,
        });
        let ker = ker.ok_or(FailReason::Protocol(
            "IKE_INTERMEDIATE response lacks the KE payload",
        ))?;
        let secret = self
            .ke
            .take()
            .ok_or(FailReason::Protocol("no key exchange in progress"))?;
        let shared = ctx
            .crypto
            .ke_complete(secret, ker)
            .map_err(|_| FailReason::Protocol("responder's additional KE data is invalid"))?;
        let response_ap = protect::intauth_input(header, first, inner);
        self.update_keys(ctx, &self.intauth_request.clone(), &response_ap, &shared);
        self.next_step(ctx)
    }

    fn on_intermediate_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        first: u8,
        inner: &[u8],
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        let request_ap = protect::intauth_input(header, first, inner);
        let Some(&method) = self.additional.get(self.done_additional) else {
            self.send_response(
                ctx,
                header,
                &[notify_payload(notify::INVALID_SYNTAX, vec![])],
            );
            return Err(FailReason::Protocol(
                "IKE_INTERMEDIATE beyond the negotiated key exchanges",
            ));
        };
        let kei = payloads.iter().find_map(|p| match p {
            Payload::Ke { method: m, data } if *m == method => Some(data),
            _ => None,
        });
        let responded = kei.and_then(|kei| {
            ctx.crypto
                .ke_respond(KeMethod::from_id(method).expect("negotiated"), kei, ctx.rng)
                .ok()
        });
        let Some((ker, shared)) = responded else {
            self.send_response(
                ctx,
                header,
                &[notify_payload(notify::INVALID_SYNTAX, vec![])],
            );
            return Err(FailReason::Protocol(
                "IKE_INTERMEDIATE request with a missing or invalid KE",
            ));
        };
        let response_ap = self.send_response(ctx, header, &[Payload::Ke { method, data: ker }]);
        self.update_keys(ctx, &request_ap, &response_ap, &shared);
        Ok(())
    }

    /// Chains IntAuth with the keys in force during the exchange, then applies the
    /// RFC 9370 update (in that order: pitfall 11).
    fn update_keys(
        &mut self,
        ctx: &mut Ctx<'_>,
        request_ap: &[u8],
        response_ap: &[u8],
        shared: &[u8],
    ) {
        let suite = self.suite.expect("negotiated");
        let keys = self.keys.as_ref().expect("derived");
        self.int_auth.add_exchange(
            ctx.crypto,
            suite.prf,
            &keys.sk_pi,
            &keys.sk_pr,
            request_ap,
            response_ap,
        );
        self.keys = Some(keys.after_additional_ke(ctx.crypto, suite, shared, self.id()));
        self.done_additional += 1;
        self.emit_keys(ctx);
    }

    // ----- IKE_AUTH -------------------------------------------------------------------

    fn auth(
        &self,
        ctx: &Ctx<'_>,
        sk_p: &[u8],
        as_initiator: bool,
        id_rest: &[u8],
        mid: u32,
    ) -> Vec<u8> {
        let int_auth = self.int_auth.for_auth(mid);
        let o = if as_initiator {
            SignedOctets {
                real_message: &self.init_request,
                peer_nonce: &self.nr,
                id_rest,
                int_auth: &int_auth,
            }
        } else {
            SignedOctets {
                real_message: &self.init_response,
                peer_nonce: &self.ni,
                id_rest,
                int_auth: &int_auth,
            }
        };
        psk_auth(
            ctx.crypto,
            self.suite.expect("negotiated").prf,
            &ctx.peer.psk,
            sk_p,
            o,
        )
    }

    fn local_ts(&self, ctx: &Ctx<'_>) -> Vec<TrafficSelector> {
        if ctx.peer.local_ts.is_empty() {
            vec![host_ts(ctx.local.ip())]
        } else {
            ctx.peer.local_ts.clone()
        }
    }

    /// The SA goes on without the PPK it wanted: a downgrade, or `fail` if the PPK is
    /// required.
    fn go_without_ppk(
        &mut self,
        ctx: &Ctx<'_>,
        fail: FailReason,
        reason: DowngradeReason,
    ) -> Result<(), FailReason> {
        if ctx.peer.ppk == PpkPolicy::Required {
            return Err(fail);
        }
        self.ppk_outcome = PpkOutcome::Downgraded { reason };
        Ok(())
    }

    fn send_auth(&mut self, ctx: &mut Ctx<'_>) -> Result<(), FailReason> {
        let keys = self.keys.clone().expect("derived");
        let ppk = match std::mem::replace(&mut self.ppk, PpkState::NotWanted) {
            PpkState::Have(p) => Some(p),
            PpkState::Unavailable => {
                self.go_without_ppk(ctx, FailReason::PpkUnavailable, DowngradeReason::NoKeyHere)?;
                None
            }
            _ => None,
        };
        let mid = self.next_mid;
        let id_rest = ctx.peer.local_id.rest_of_payload();
        let prf = self.suite.expect("negotiated").prf;
        let mixed = ppk.map(|p| (keys.mix_ppk_rfc8784(ctx.crypto, prf, &p.key), p.id));
        let auth_keys = mixed.as_ref().map_or(&keys, |(k, _)| k);
        let auth = self.auth(ctx, &auth_keys.sk_pi, true, &id_rest, mid);
        let (id_type, id_data) = ctx.peer.local_id.to_wire();
        let (rid_type, rid_data) = ctx.peer.remote_id.to_wire();
        let mut payloads = vec![
            Payload::IdI {
                id_type,
                data: id_data,
            },
            Payload::IdR {
                id_type: rid_type,
                data: rid_data,
            },
            Payload::Auth {
                method: auth_method::SHARED_KEY_MIC,
                data: auth,
            },
        ];
        if !(ctx.peer.childless && self.peer_childless) {
            self.child_spi = random_esp_spi(ctx.rng);
            payloads.push(Payload::Sa(esp_offer(&ctx.peer.esp, self.child_spi, false)));
            payloads.push(Payload::TsI(self.local_ts(ctx)));
            payloads.push(Payload::TsR(ctx.peer.remote_ts.clone()));
        }
        if let Some((_, id)) = &mixed {
            payloads.push(notify_payload(
                notify::PPK_IDENTITY,
                [&[ppk_id_type::FIXED][..], id].concat(),
            ));
            if ctx.peer.ppk == PpkPolicy::Optional {
                let no_ppk = self.auth(ctx, &keys.sk_pi, true, &id_rest, mid);
                payloads.push(notify_payload(notify::NO_PPK_AUTH, no_ppk));
            }
        }
        self.auth_keys = Some((keys, mixed));
        self.send_request(ctx, exchange::IKE_AUTH, &payloads);
        Ok(())
    }

    fn on_auth_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: Header,
        payloads: Vec<Payload>,
    ) -> Result<(), FailReason> {
        if self.done_additional < self.additional.len() {
            self.send_response(
                ctx,
                &header,
                &[notify_payload(notify::INVALID_SYNTAX, vec![])],
            );
            return Err(FailReason::Protocol(
                "IKE_AUTH before every additional key exchange",
            ));
        }
        let ppk_id = find_notify(&payloads, notify::PPK_IDENTITY).map(|n| n.data.clone());
        if self.use_ppk
            && let Some(id) = ppk_id
        {
            // Only PPK_ID_FIXED is accepted (as strongSwan and libreswan do).
            if id.first() == Some(&ppk_id_type::FIXED) && id.len() > 1 {
                let key_id = id[1..].to_vec();
                self.pending_auth = Some((header, payloads));
                self.ppk = PpkState::Requested {
                    deadline: ctx.now + ctx.peer.timers.ppk_timeout_ns,
                };
                ctx.out.events.push_back(Event::PpkNeeded {
                    sa: self.spi_r,
                    peer: self.peer,
                    key_id: Some(key_id),
                });
                return Ok(());
            }
        }
        self.finish_auth(ctx, header, payloads, None)
    }

    /// The driver's PPK answer.
    pub fn on_ppk(&mut self, ctx: &mut Ctx<'_>, ppk: Option<Ppk>) -> Result<(), FailReason> {
        if !matches!(self.ppk, PpkState::Requested { .. }) {
            return Ok(()); // a late or unasked answer
        }
        if self.initiator {
            self.ppk = match ppk {
                Some(p) => PpkState::Have(p),
                None if ctx.peer.ppk == PpkPolicy::Required => {
                    return Err(FailReason::PpkUnavailable);
                }
                None => PpkState::Unavailable,
            };
            let ready = self.outstanding.is_none() && self.done_additional == self.additional.len();
            return if ready && self.phase == Phase::Initiating {
                self.send_auth(ctx)
            } else {
                Ok(())
            };
        }
        self.ppk = PpkState::NotWanted;
        match self.pending_auth.take() {
            Some((header, payloads)) => self.finish_auth(ctx, header, payloads, ppk.map(|p| p.key)),
            None => Ok(()),
        }
    }

    /// Responder: verifies the initiator's AUTH (with the PPK when there is one, else
    /// through NO_PPK_AUTH when our policy allows), answers, installs the Child SA.
    fn finish_auth(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: Header,
        payloads: Vec<Payload>,
        ppk: Option<Vec<u8>>,
    ) -> Result<(), FailReason> {
        let mid = header.message_id;
        let AuthPayloads {
            idi,
            auth,
            esp,
            tsi,
            tsr,
            ..
        } = AuthPayloads::of(&payloads);
        let expected_id = ctx.peer.remote_id.to_wire();
        let fail_auth = |sa: &mut Self, ctx: &mut Ctx<'_>| {
            sa.send_response(
                ctx,
                &header,
                &[notify_payload(notify::AUTHENTICATION_FAILED, vec![])],
            );
            Err(FailReason::AuthenticationFailed { by_peer: false })
        };
        let (Some((id_type, id_data)), Some(auth)) = (idi, auth) else {
            return fail_auth(self, ctx);
        };
        if (id_type, id_data) != (expected_id.0, &expected_id.1) {
            return fail_auth(self, ctx);
        }
        let id_rest = ctx.peer.remote_id.rest_of_payload();
        let keys = self.keys.clone().expect("derived");
        let prf = self.suite.expect("negotiated").prf;
        let ppk_sent = find_notify(&payloads, notify::PPK_IDENTITY).map(|n| n.data[1..].to_vec());
        let no_ppk_auth = find_notify(&payloads, notify::NO_PPK_AUTH).map(|n| n.data.clone());
        let verify = |sa: &Self, k: &IkeKeys, data: &[u8]| {
            sa.auth(ctx, &k.sk_pi, true, &id_rest, mid) == data
        };

        let mixed = ppk.map(|key| keys.mix_ppk_rfc8784(ctx.crypto, prf, &key));
        let final_keys = match (&mixed, self.use_ppk && ppk_sent.is_some()) {
            (Some(m), true) if verify(self, m, auth) => {
                self.ppk_outcome = PpkOutcome::Used {
                    id: ppk_sent.clone().unwrap_or_default(),
                };
                m.clone()
            }
            (_, true) => {
                // No key for the ID, or a different one: only NO_PPK_AUTH can save it.
                let fallback = ctx.peer.ppk == PpkPolicy::Optional
                    && no_ppk_auth.as_ref().is_some_and(|d| verify(self, &keys, d));
                if !fallback {
                    return fail_auth(self, ctx);
                }
                self.ppk_outcome = PpkOutcome::Downgraded {
                    reason: DowngradeReason::PeerHadNoKey,
                };
                keys
            }
            (_, false) => {
                if self.use_ppk && ctx.peer.ppk == PpkPolicy::Required {
                    return fail_auth(self, ctx);
                }
                if !verify(self, &keys, auth) {
                    return fail_auth(self, ctx);
                }
                if self.use_ppk || ctx.peer.ppk != PpkPolicy::Disabled {
                    let reason = if self.use_ppk {
                        DowngradeReason::NoKeyHere
                    } else {
                        DowngradeReason::PeerLacksPpk
                    };
                    self.ppk_outcome = PpkOutcome::Downgraded { reason };
                }
                keys
            }
        };
        self.keys = Some(final_keys);

        let our_id = ctx.peer.local_id.rest_of_payload();
        let our_auth = self.auth(
            ctx,
            &self.keys.as_ref().expect("set").sk_pr,
            false,
            &our_id,
            mid,
        );
        let (id_type, id_data) = ctx.peer.local_id.to_wire();
        let mut response = vec![
            Payload::IdR {
                id_type,
                data: id_data,
            },
            Payload::Auth {
                method: auth_method::SHARED_KEY_MIC,
                data: our_auth,
            },
        ];
        let mut child = None;
        if let Some(offered) = esp {
            // The first Child SA is created without a key exchange: ignore KE transforms.
            let offered: Vec<crate::message::Proposal> = offered
                .iter()
                .map(|p| {
                    ProposalSpec::from_wire(p)
                        .without_key_exchange()
                        .to_wire(p.number, p.spi.clone())
                })
                .collect();
            let ours: Vec<ProposalSpec> = ctx
                .peer
                .esp
                .iter()
                .map(ProposalSpec::without_key_exchange)
                .collect();
            let sel = proposal::select(&offered, &ours, Preference::Initiator).filter(|s| {
                s.peer_spi.len() == 4
                    && AeadAlg::from_algorithm(&s.chosen.chosen(tt::ENCR).expect("ENCR")).is_some()
            });
            let ts_i = narrow(tsi.map_or(&[][..], |v| v), &ctx.peer.remote_ts);
            let ts_r = narrow(tsr.map_or(&[][..], |v| v), &self.local_ts(ctx));
            match sel {
                None => response.push(notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])),
                Some(_) if ts_i.is_empty() || ts_r.is_empty() => {
                    response.push(notify_payload(notify::TS_UNACCEPTABLE, vec![]))
                }
                Some(s) => {
                    self.child_spi = random_esp_spi(ctx.rng);
                    let peer_spi = u32::from_be_bytes(s.peer_spi[..4].try_into().expect("4 bytes"));
                    response.push(Payload::Sa(vec![
                        s.chosen
                            .to_wire(s.number, self.child_spi.to_be_bytes().to_vec()),
                    ]));
                    response.push(Payload::TsI(ts_i.clone()));
                    response.push(Payload::TsR(ts_r.clone()));
                    let (ni, nr) = (self.ni.clone(), self.nr.clone());
                    child = Some(self.child_sa(
                        ctx,
                        NewChild {
                            chosen: &s.chosen,
                            spi_in: self.child_spi,
                            spi_out: peer_spi,
                            initiated: false,
                            nonces: [&ni, &nr],
                            shared: None,
                            additional: &[],
                            local_ts: ts_r,
                            remote_ts: ts_i,
                        },
                    ));
                }
            }
        }
        if matches!(self.ppk_outcome, PpkOutcome::Used { .. }) {
            response.push(notify_payload(notify::PPK_IDENTITY, vec![]));
        }
        self.send_response(ctx, &header, &response);
        self.established(ctx);
        if let Some(child) = child {
            self.children.push(child.clone());
            ctx.out.events.push_back(Event::ChildSaReady {
                sa: self.spi_r,
                child,
            });
        }
        Ok(())
    }

    fn on_auth_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        match first_error(payloads) {
            Some(notify::AUTHENTICATION_FAILED) => {
                return Err(FailReason::AuthenticationFailed { by_peer: true });
            }
            Some(notify::NO_PROPOSAL_CHOSEN | notify::TS_UNACCEPTABLE) | None => {}
            Some(n) => return Err(FailReason::PeerError { notify: n }),
        }
        let (plain, mixed) = self.auth_keys.take().expect("IKE_AUTH sent");
        let ppk_confirmed = find_notify(payloads, notify::PPK_IDENTITY).is_some();
        let keys = match mixed {
            Some((m, id)) if ppk_confirmed => {
                self.ppk_outcome = PpkOutcome::Used { id };
                m
            }
            Some(_) => {
                self.go_without_ppk(ctx, FailReason::PpkRejected, DowngradeReason::PeerHadNoKey)?;
                plain
            }
            None => plain,
        };
        let AuthPayloads {
            idr,
            auth,
            esp,
            tsi,
            tsr,
            ..
        } = AuthPayloads::of(payloads);
        let expected_id = ctx.peer.remote_id.to_wire();
        let id_ok = idr.is_some_and(|(t, d)| (t, d) == (expected_id.0, &expected_id.1));
        let id_rest = ctx.peer.remote_id.rest_of_payload();
        let mid = self.next_mid - 1;
        let auth_ok = auth.is_some_and(|a| *a == self.auth(ctx, &keys.sk_pr, false, &id_rest, mid));
        if !(id_ok && auth_ok) {
            return Err(FailReason::AuthenticationFailed { by_peer: false });
        }
        self.keys = Some(keys);
        self.established(ctx);
        if let Some(n) = [notify::NO_PROPOSAL_CHOSEN, notify::TS_UNACCEPTABLE]
            .into_iter()
            .find(|&k| find_notify(payloads, k).is_some())
        {
            ctx.out.events.push_back(Event::ChildSaFailed {
                sa: self.spi_i,
                notify: n,
            });
            return Ok(());
        }
        if let (Some(reply), Some(tsi), Some(tsr)) = (esp, tsi, tsr) {
            let ours: Vec<ProposalSpec> = ctx
                .peer
                .esp
                .iter()
                .map(ProposalSpec::without_key_exchange)
                .collect();
            let chosen = proposal::verify_reply(reply, &ours).filter(|c| {
                c.chosen(tt::ENCR)
                    .and_then(|a| AeadAlg::from_algorithm(&a))
                    .is_some()
            });
            let peer_spi = reply
                .first()
                .and_then(|p| <[u8; 4]>::try_from(&p.spi[..]).ok())
                .map(u32::from_be_bytes);
            match (chosen, peer_spi) {
                (Some(c), Some(spi)) => {
                    let (ni, nr) = (self.ni.clone(), self.nr.clone());
                    let child = self.child_sa(
                        ctx,
                        NewChild {
                            chosen: &c,
                            spi_in: self.child_spi,
                            spi_out: spi,
                            initiated: true,
                            nonces: [&ni, &nr],
                            shared: None,
                            additional: &[],
                            local_ts: tsi.clone(),
                            remote_ts: tsr.clone(),
                        },
                    );
                    self.children.push(child.clone());
                    ctx.out.events.push_back(Event::ChildSaReady {
                        sa: self.spi_i,
                        child,
                    });
                }
                _ => ctx.out.events.push_back(Event::ChildSaFailed {
                    sa: self.spi_i,
                    notify: notify::NO_PROPOSAL_CHOSEN,
                }),
            }
        }
        Ok(())
    }

    /// KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr): I->R key | R->I key, "I" being the
    /// initiator of the exchange that creates the Child SA.
    fn child_sa(&self, ctx: &Ctx<'_>, n: NewChild<'_>) -> ChildSa {
        let aead =
            AeadAlg::from_algorithm(&n.chosen.chosen(tt::ENCR).expect("ENCR")).expect("checked");
        let keys = self.keys.as_ref().expect("derived");
        let len = aead.keymat_len();
        let prf = self.suite.expect("negotiated").prf;
        let km = child_keymat(
            ctx.crypto,
            prf,
            &keys.sk_d,
            n.shared,
            n.nonces,
            &n.additional.iter().map(Vec::as_slice).collect::<Vec<_>>(),
            2 * len,
        );
        let (i_to_r, r_to_i) = km.split_at(len);
        let (encr_out, encr_in) = if n.initiated {
            (i_to_r, r_to_i)
        } else {
            (r_to_i, i_to_r)
        };
        ChildSa {
            spi_in: n.spi_in,
            spi_out: n.spi_out,
            proposal: n.chosen.to_string(),
            aead,
            encr_in: encr_in.to_vec(),
            encr_out: encr_out.to_vec(),
            local_ts: n.local_ts,
            remote_ts: n.remote_ts,
        }
    }

    // ----- CREATE_CHILD_SA: Child SA rekeying ------------------------------------

    /// Starts rekeying the Child SA with inbound SPI `spi_in` (RFC 7296 section 2.8),
    /// with a new key exchange when the ESP proposal names one (PFS).
    pub fn rekey_child(&mut self, ctx: &mut Ctx<'_>, spi_in: u32) -> Result<Start, FailReason> {
        let Some(old) = self.children.iter().find(|c| c.spi_in == spi_in).cloned() else {
            return Ok(Start::Gone); // no such Child SA (any more)
        };
        if self.superseded.contains(&spi_in) {
            return Ok(Start::Gone); // replaced already, its Delete to come
        }
        let peer_rekeys_it = self.peer_followup.as_ref().is_some_and(
            |f| matches!(f.creating, Creating::Child { old_spi_in: Some(o), .. } if o == spi_in),
        );
        if peer_rekeys_it {
            return Ok(Start::Busy); // the peer's rekey of it is in its IKE_FOLLOWUP_KE
        }
        self.start_child(ctx, Some(old))
    }

    /// Starts a CREATE_CHILD_SA for an additional Child SA with the configured traffic
    /// selectors (RFC 7296 section 1.3.1), PFS as for rekeys.
    pub fn create_child(&mut self, ctx: &mut Ctx<'_>) -> Result<Start, FailReason> {
        self.start_child(ctx, None)
    }

    fn start_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        old: Option<ChildSa>,
    ) -> Result<Start, FailReason> {
        if self.phase != Phase::Established || self.deleting {
            return Ok(Start::Gone);
        }
        if self.outstanding.is_some()
            || self.rekey.is_some()
            || self.ike_rekey.is_some()
            || self.followup.is_some()
        {
            return Ok(Start::Busy); // window size 1: the driver asks again later
        }
        let ni = random(ctx.rng, 32);
        let new_spi = random_esp_spi(ctx.rng);
        let mut payloads = Vec::new();
        if let Some(old) = &old {
            payloads.push(Payload::Notify(Notify {
                protocol: protocol::ESP,
                spi: old.spi_in.to_be_bytes().to_vec(),
                kind: notify::REKEY_SA,
                data: Vec::new(),
            }));
        }
        payloads.push(Payload::Sa(esp_offer(&ctx.peer.esp, new_spi, true)));
        payloads.push(Payload::Nonce(ni.clone()));
        let ke_method = ctx
            .peer
            .esp
            .first()
            .and_then(|p| p.chosen(tt::KE))
            .map(|a| a.id)
            .and_then(KeMethod::from_id);
        let ke = ke_method.map(|m| {
            let (secret, data) = ctx.crypto.ke_initiate(m, ctx.rng);
            payloads.push(Payload::Ke {
                method: m.id(),
                data,
            });
            secret
        });
        let (ts_i, ts_r) = match &old {
            Some(old) => (old.local_ts.clone(), old.remote_ts.clone()),
            None => (self.local_ts(ctx), ctx.peer.remote_ts.clone()),
        };
        payloads.push(Payload::TsI(ts_i));
        payloads.push(Payload::TsR(ts_r));
        self.rekey = Some(ChildRekey {
            old_spi_in: old.map(|o| o.spi_in),
            spi_in: new_spi,
            ni,
            ke,
        });
        self.send_request(ctx, exchange::CREATE_CHILD_SA, &payloads);
        Ok(Start::Started)
    }

    fn on_create_child_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: Header,
        payloads: Vec<Payload>,
    ) -> Result<(), FailReason> {
        let rekeys_ike = payloads.iter().any(|p| {
            matches!(p, Payload::Sa(props) if props.first().is_some_and(|p| p.protocol == protocol::IKE))
        });
        if rekeys_ike {
            return self.on_ike_rekey_request(ctx, &header, &payloads);
        }
        let refuse = |sa: &mut Self, ctx: &mut Ctx<'_>, kind: u16, data: Vec<u8>| {
            sa.send_response(ctx, &header, &[notify_payload(kind, data)]);
            Ok(())
        };
        let rekeyed = payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.kind == notify::REKEY_SA && n.protocol == protocol::ESP => {
                <[u8; 4]>::try_from(&n.spi[..]).ok().map(u32::from_be_bytes)
            }
            _ => None,
        });
        let AuthPayloads { esp, tsi, tsr, .. } = AuthPayloads::of(&payloads);
        let ni = payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let (Some(offered), Some(ni)) = (esp, ni) else {
            return refuse(self, ctx, notify::INVALID_SYNTAX, vec![]);
        };
        // A rekey names the SA it replaces; without REKEY_SA it is an additional one.
        let old = match rekeyed {
            None => None,
            Some(old_spi_out) => match self.children.iter().find(|c| c.spi_out == old_spi_out) {
                Some(c) => Some(c.clone()),
                None => return refuse(self, ctx, notify::CHILD_SA_NOT_FOUND, vec![]),
            },
        };
        let old_spi_in = old.as_ref().map(|o| o.spi_in);
        if (old_spi_in.is_some() && self.deleting_child == old_spi_in)
            || self.peer_followup.is_some()
        {
            // Our rekey of it is done and its Delete on the way, or the peer's previous
            // rekey is still in its IKE_FOLLOWUP_KE exchanges.
            return refuse(self, ctx, notify::TEMPORARY_FAILURE, vec![]);
        }
        let Some(sel) =
            proposal::select(offered, &ctx.peer.esp, Preference::Initiator).filter(|s| {
                s.peer_spi.len() == 4
                    && s.chosen
                        .chosen(tt::ENCR)
                        .and_then(|a| AeadAlg::from_algorithm(&a))
                        .is_some()
                    && additional_methods(&s.chosen).is_some()
            })
        else {
            return refuse(self, ctx, notify::NO_PROPOSAL_CHOSEN, vec![]);
        };
        let remaining = additional_methods(&sel.chosen).expect("filtered");
        let mut shared = None;
        let mut response_ke = None;
        if let Some(method) = sel
            .chosen
            .chosen(tt::KE)
            .filter(|a| a.id != crate::consts::ke::NONE)
        {
            let kei = payloads.iter().find_map(|p| match p {
                Payload::Ke { method: m, data } if *m == method.id => Some(data),
                _ => None,
            });
            let responded = kei.and_then(|k| {
                KeMethod::from_id(method.id).and_then(|m| ctx.crypto.ke_respond(m, k, ctx.rng).ok())
            });
            let Some((ker, ss)) = responded else {
                return refuse(
                    self,
                    ctx,
                    notify::INVALID_KE_PAYLOAD,
                    method.id.to_be_bytes().to_vec(),
                );
            };
            response_ke = Some(Payload::Ke {
                method: method.id,
                data: ker,
            });
            shared = Some(ss);
        }
        let (ours_i, ours_r) = match &old {
            Some(old) => (old.remote_ts.clone(), old.local_ts.clone()),
            None => (ctx.peer.remote_ts.clone(), self.local_ts(ctx)),
        };
        let ts_i = narrow(tsi.map_or(&[][..], |v| v), &ours_i);
        let ts_r = narrow(tsr.map_or(&[][..], |v| v), &ours_r);
        if ts_i.is_empty() || ts_r.is_empty() {
            return refuse(self, ctx, notify::TS_UNACCEPTABLE, vec![]);
        }
        let nr = random(ctx.rng, 32);
        let spi_in = random_esp_spi(ctx.rng);
        let spi_out = u32::from_be_bytes(sel.peer_spi[..4].try_into().expect("4 bytes"));
        let mut response = vec![
            Payload::Sa(vec![
                sel.chosen
                    .to_wire(sel.number, spi_in.to_be_bytes().to_vec()),
            ]),
            Payload::Nonce(nr.clone()),
        ];
        if !remaining.is_empty() && shared.is_none() {
            // Additional key exchanges with no first one: never seen in the wild.
            return refuse(self, ctx, notify::NO_PROPOSAL_CHOSEN, vec![]);
        }
        response.extend(response_ke);
        response.push(Payload::TsI(ts_i.clone()));
        response.push(Payload::TsR(ts_r.clone()));
        let link = random(ctx.rng, 8);
        if !remaining.is_empty() {
            response.push(notify_payload(
                notify::ADDITIONAL_KEY_EXCHANGE,
                link.clone(),
            ));
        }
        self.send_response(ctx, &header, &response);
        let ours_in_flight = self.rekey.as_ref().and_then(|r| r.old_spi_in).or(self
            .followup
            .as_ref()
            .and_then(|f| match f.creating {
                Creating::Child { old_spi_in, .. } => old_spi_in,
                Creating::Ike { .. } => None,
            }));
        if let Some(old_spi_in) = old_spi_in.filter(|o| ours_in_flight == Some(*o)) {
            // Both sides rekey the same Child SA: both exchanges complete, and the
            // nonces decide which new SA stays once ours is done.
            self.collision = Some(RekeyCollision {
                old_spi_in,
                lowest_nonce: ni.clone().min(nr.clone()),
            });
        }
        let f = Followup::new(
            Creating::Child {
                old_spi_in,
                spi_in,
                spi_out,
                chosen: sel.chosen,
                local_ts: ts_r,
                remote_ts: ts_i,
                collision: None,
            },
            false,
            [ni, nr],
            shared,
            remaining,
            link,
        );
        self.settle(ctx, f, false)
    }

    fn on_create_child_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        if let Some(r) = self.ike_rekey.take() {
            return self.on_ike_rekey_response(ctx, r, payloads);
        }
        let Some(r) = self.rekey.take() else {
            return Ok(());
        };
        // Whatever becomes of ours, a crossing rekey is settled now.
        let collision = self
            .collision
            .take()
            .filter(|c| Some(c.old_spi_in) == r.old_spi_in);
        if let Some(n) = first_error(payloads) {
            ctx.out.events.push_back(Event::ChildSaFailed {
                sa: self.our_spi(),
                notify: n,
            });
            // The peer does not hold the Child SA we tried to rekey (its Delete crossed
            // our request, or it answered our rekey and lost the pair since): neither
            // should we (RFC 7296 section 2.25).
            if let (notify::CHILD_SA_NOT_FOUND, Some(old)) = (n, r.old_spi_in)
                && let Some(i) = self.children.iter().position(|c| c.spi_in == old)
            {
                self.children.remove(i);
                self.superseded.retain(|s| *s != old);
                ctx.out.events.push_back(Event::ChildSaDeleted {
                    sa: self.our_spi(),
                    spi_in: old,
                });
            }
            return Ok(());
        }
        let AuthPayloads { esp, tsi, tsr, .. } = AuthPayloads::of(payloads);
        let nr = payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let chosen = esp.and_then(|reply| proposal::verify_reply(reply, &ctx.peer.esp));
        let spi_out = esp
            .and_then(|reply| reply.first())
            .and_then(|p| <[u8; 4]>::try_from(&p.spi[..]).ok())
            .map(u32::from_be_bytes);
        let (Some(chosen), Some(spi_out), Some(nr), Some(tsi), Some(tsr)) =
            (chosen, spi_out, nr, tsi, tsr)
        else {
            ctx.out.events.push_back(Event::ChildSaFailed {
                sa: self.our_spi(),
                notify: notify::NO_PROPOSAL_CHOSEN,
            });
            return Ok(());
        };
        let mut shared = None;
        if let Some(secret) = r.ke {
            let ker = payloads.iter().find_map(|p| match p {
                Payload::Ke { method, data } if *method == secret.method().id() => Some(data),
                _ => None,
            });
            let ss = ker.and_then(|k| ctx.crypto.ke_complete(secret, k).ok());
            if ss.is_none() {
                ctx.out.events.push_back(Event::ChildSaFailed {
                    sa: self.our_spi(),
                    notify: notify::INVALID_KE_PAYLOAD,
                });
                return Ok(());
            }
            shared = ss;
        }
        let Some(remaining) = additional_methods(&chosen) else {
            ctx.out.events.push_back(Event::ChildSaFailed {
                sa: self.our_spi(),
                notify: notify::NO_PROPOSAL_CHOSEN,
            });
            return Ok(());
        };
        let f = Followup::new(
            Creating::Child {
                old_spi_in: r.old_spi_in,
                spi_in: r.spi_in,
                spi_out,
                chosen,
                local_ts: tsi.clone(),
                remote_ts: tsr.clone(),
                collision,
            },
            true,
            [r.ni, nr],
            shared,
            remaining,
            find_notify(payloads, notify::ADDITIONAL_KEY_EXCHANGE)
                .map(|n| n.data.clone())
                .unwrap_or_default(),
        );
        self.settle(ctx, f, true)
    }

    /// The peer deletes Child SAs (their inbound SPIs = our outbound ones): answer with
    /// our inbound SPIs of the same pairs, unless we are deleting them ourselves.
    fn delete_children(&mut self, ctx: &mut Ctx<'_>, peer_spis: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut ours = Vec::new();
        for spi in peer_spis {
            let Ok(spi) = <[u8; 4]>::try_from(&spi[..]).map(u32::from_be_bytes) else {
                continue;
            };
            if let Some(i) = self.children.iter().position(|c| c.spi_out == spi) {
                let c = self.children.remove(i);
                self.superseded.retain(|s| *s != c.spi_in);
                if self.deleting_child != Some(c.spi_in) {
                    ours.push(c.spi_in.to_be_bytes().to_vec());
                }
                ctx.out.events.push_back(Event::ChildSaDeleted {
                    sa: self.our_spi(),
                    spi_in: c.spi_in,
                });
            }
        }
        ours
    }

    fn established(&mut self, ctx: &mut Ctx<'_>) {
        self.phase = Phase::Established;
        self.half_open_deadline = None;
        self.heard_from_peer(ctx);
        ctx.out.events.push_back(Event::IkeSaEstablished {
            sa: self.our_spi(),
            peer: self.peer,
            initiator: self.initiator,
            proposal: self
                .chosen
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            ppk: self.ppk_outcome.clone(),
            keys: self.keys.clone().expect("derived"),
            keylog: self.keylog(),
        });
    }

    /// Deletes an established IKE SA (and its Child SAs) with an INFORMATIONAL Delete;
    /// anything else is dropped at once.
    pub fn delete(&mut self, ctx: &mut Ctx<'_>) -> Result<(), FailReason> {
        if self.phase != Phase::Established || self.outstanding.is_some() {
            self.phase = Phase::Gone;
            ctx.out.events.push_back(Event::IkeSaDeleted {
                sa: self.our_spi(),
                peer: self.peer,
                by_peer: false,
            });
            return Ok(());
        }
        self.deleting = true;
        let delete = Payload::Delete {
            protocol: protocol::IKE,
            spi_size: 0,
            spis: Vec::new(),
        };
        self.send_request(ctx, exchange::INFORMATIONAL, &[delete]);
        Ok(())
    }

    /// Deletes one Child SA (its hard lifetime ran out) with an INFORMATIONAL Delete of
    /// our inbound SPI; [`Event::ChildSaDeleted`] follows the peer's answer.
    pub fn delete_child(&mut self, ctx: &mut Ctx<'_>, spi_in: u32) -> Result<Start, FailReason> {
        if self.phase != Phase::Established
            || self.deleting
            || !self.children.iter().any(|c| c.spi_in == spi_in)
        {
            return Ok(Start::Gone);
        }
        if self.outstanding.is_some() || self.deleting_child.is_some() {
            return Ok(Start::Busy);
        }
        let delete = Payload::Delete {
            protocol: protocol::ESP,
            spi_size: 4,
            spis: vec![spi_in.to_be_bytes().to_vec()],
        };
        self.deleting_child = Some(spi_in);
        ctx.out.events.push_back(Event::ChildSaDeleting {
            sa: self.our_spi(),
            spi_in,
        });
        self.send_request(ctx, exchange::INFORMATIONAL, &[delete]);
        Ok(Start::Started)
    }

    // ----- CREATE_CHILD_SA: IKE SA rekeying ---------------------------------------

    /// Starts rekeying this IKE SA (RFC 7296 section 2.18):
    /// `SA(our new SPI), Ni, KEi` with the negotiated key exchange method.
    pub fn rekey_ike(&mut self, ctx: &mut Ctx<'_>) -> Result<Start, FailReason> {
        if self.phase != Phase::Established || self.deleting {
            return Ok(Start::Gone);
        }
        let chosen = self.chosen.clone().expect("negotiated");
        let ke_id = chosen.chosen(tt::KE).map_or(0, |a| a.id);
        let Some(method) = KeMethod::from_id(ke_id) else {
            return Ok(Start::Unsupported);
        };
        if self.outstanding.is_some()
            || self.rekey.is_some()
            || self.ike_rekey.is_some()
            || self.followup.is_some()
        {
            return Ok(Start::Busy);
        }
        let spi = random_ike_spi(ctx.rng);
        let ni = random(ctx.rng, 32);
        let (ke, data) = ctx.crypto.ke_initiate(method, ctx.rng);
        let payloads = [
            Payload::Sa(vec![chosen.to_wire(1, spi.to_be_bytes().to_vec())]),
            Payload::Nonce(ni.clone()),
            Payload::Ke {
                method: method.id(),
                data,
            },
        ];
        self.ike_rekey = Some(IkeRekey { spi, ni, ke });
        self.send_request(ctx, exchange::CREATE_CHILD_SA, &payloads);
        Ok(Start::Started)
    }

    fn on_ike_rekey_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        let refuse = |sa: &mut Self, ctx: &mut Ctx<'_>, kind: u16, data: Vec<u8>| {
            sa.send_response(ctx, header, &[notify_payload(kind, data)]);
            Ok(())
        };
        let ours_running = self.ike_rekey.is_some()
            || self
                .followup
                .as_ref()
                .is_some_and(|f| matches!(f.creating, Creating::Ike { .. }));
        if self.rekey.is_some()
            || self.deleting_child.is_some()
            || self.peer_followup.is_some()
            || self.ike_crossing.is_some()
            || (self.followup.is_some() && !ours_running)
        {
            // Busy with a Child SA rekey or Delete (whose answer the old SA must still
            // carry): the peer retries later (RFC 7296 section 2.25; strongSwan refuses
            // while a Child SA is half-open or being deleted, too).
            return refuse(self, ctx, notify::TEMPORARY_FAILURE, vec![]);
        }
        let offered = AuthPayloads::of(payloads)
            .esp
            .expect("checked by the caller");
        let ni = payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let kei = payloads.iter().find_map(|p| match p {
            Payload::Ke { method, data } => Some((*method, data)),
            _ => None,
        });
        let prf = self.suite.expect("negotiated").prf;
        // Same PRF as before (the old SK_d keys it), and known additional methods.
        let sel = proposal::select(offered, &ctx.peer.ike, Preference::Initiator).filter(|s| {
            s.peer_spi.len() == 8
                && additional_methods(&s.chosen).is_some()
                && Suite::from_proposal(&s.chosen).is_some_and(|suite| suite.prf == prf)
        });
        let (Some(sel), Some(ni)) = (sel, ni) else {
            return refuse(self, ctx, notify::NO_PROPOSAL_CHOSEN, vec![]);
        };
        let ke_id = sel.chosen.chosen(tt::KE).map_or(0, |a| a.id);
        let (Some(method), Some((m, kei))) = (KeMethod::from_id(ke_id), kei) else {
            return refuse(self, ctx, notify::NO_PROPOSAL_CHOSEN, vec![]);
        };
        if m != ke_id {
            return refuse(
                self,
                ctx,
                notify::INVALID_KE_PAYLOAD,
                ke_id.to_be_bytes().to_vec(),
            );
        }
        let Ok((ker, shared)) = ctx.crypto.ke_respond(method, kei, ctx.rng) else {
            return refuse(self, ctx, notify::INVALID_SYNTAX, vec![]);
        };
        let peer_spi = u64::from_be_bytes(sel.peer_spi[..8].try_into().expect("8 bytes"));
        let spi = random_ike_spi(ctx.rng);
        let nr = random(ctx.rng, 32);
        let mut response = vec![
            Payload::Sa(vec![
                sel.chosen.to_wire(sel.number, spi.to_be_bytes().to_vec()),
            ]),
            Payload::Nonce(nr.clone()),
            Payload::Ke {
                method: ke_id,
                data: ker,
            },
        ];
        let remaining = additional_methods(&sel.chosen).expect("filtered");
        let link = random(ctx.rng, 8);
        if !remaining.is_empty() {
            response.push(notify_payload(
                notify::ADDITIONAL_KEY_EXCHANGE,
                link.clone(),
            ));
        }
        self.send_response(ctx, header, &response);
        if ours_running {
            // Both sides rekey this IKE SA: both exchanges go on, the nonces decide.
            self.ike_crossing = Some(IkeCrossing::default());
        }
        let f = Followup::new(
            Creating::Ike {
                chosen: sel.chosen,
                spis: [peer_spi, spi],
            },
            false,
            [ni, nr],
            Some(shared),
            remaining,
            link,
        );
        self.settle(ctx, f, false)
    }

    fn on_ike_rekey_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        r: IkeRekey,
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        let failed = |sa: &mut Self, ctx: &mut Ctx<'_>, notify: u16| {
            sa.ike_rekey_failed(ctx, notify);
            Ok(())
        };
        if let Some(n) = first_error(payloads) {
            return failed(self, ctx, n);
        }
        let ours = [self.chosen.clone().expect("negotiated")];
        let reply = AuthPayloads::of(payloads).esp;
        let chosen = reply.and_then(|reply| proposal::verify_reply(reply, &ours));
        let peer_spi = reply
            .and_then(|reply| reply.first())
            .and_then(|p| <[u8; 8]>::try_from(&p.spi[..]).ok())
            .map(u64::from_be_bytes);
        let nr = payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let ker = payloads.iter().find_map(|p| match p {
            Payload::Ke { method, data } if *method == r.ke.method().id() => Some(data),
            _ => None,
        });
        let (Some(chosen), Some(peer_spi), Some(nr), Some(ker)) = (chosen, peer_spi, nr, ker)
        else {
            return failed(self, ctx, notify::NO_PROPOSAL_CHOSEN);
        };
        let Ok(shared) = ctx.crypto.ke_complete(r.ke, ker) else {
            return failed(self, ctx, notify::INVALID_KE_PAYLOAD);
        };
        let Some(remaining) = additional_methods(&chosen) else {
            return failed(self, ctx, notify::NO_PROPOSAL_CHOSEN);
        };
        let f = Followup::new(
            Creating::Ike {
                chosen,
                spis: [r.spi, peer_spi],
            },
            true,
            [r.ni, nr],
            Some(shared),
            remaining,
            find_notify(payloads, notify::ADDITIONAL_KEY_EXCHANGE)
                .map(|n| n.data.clone())
                .unwrap_or_default(),
        );
        self.settle(ctx, f, true)
    }

    // ----- IKE_FOLLOWUP_KE (RFC 9370) -----------------------------------------------

    /// After a rekey's key exchange: the next IKE_FOLLOWUP_KE (our request, or waiting
    /// for the peer's), or, when none is left, the new SA.
    fn settle(&mut self, ctx: &mut Ctx<'_>, mut f: Followup, ours: bool) -> Result<(), FailReason> {
        let Some(&method) = f.remaining.first() else {
            self.finish_rekey(ctx, f);
            return Ok(());
        };
        if !ours {
            self.peer_followup = Some(f);
            return Ok(());
        }
        let (secret, data) = ctx.crypto.ke_initiate(method, ctx.rng);
        let payloads = [
            Payload::Ke {
                method: method.id(),
                data,
            },
            notify_payload(notify::ADDITIONAL_KEY_EXCHANGE, f.link.clone()),
        ];
        f.secret = Some(secret);
        self.followup = Some(f);
        self.send_request(ctx, exchange::IKE_FOLLOWUP_KE, &payloads);
        Ok(())
    }

    fn rekey_failed(&mut self, ctx: &mut Ctx<'_>, creating: &Creating, notify: u16) {
        match creating {
            Creating::Child { .. } => ctx.out.events.push_back(Event::ChildSaFailed {
                sa: self.our_spi(),
                notify,
            }),
            Creating::Ike { .. } => self.ike_rekey_failed(ctx, notify),
        }
    }

    /// Our IKE SA rekey failed. A crossing rekey of the peer's then stands alone.
    fn ike_rekey_failed(&mut self, ctx: &mut Ctx<'_>, notify: u16) {
        ctx.out.events.push_back(Event::IkeSaRekeyFailed {
            sa: self.our_spi(),
            notify,
        });
        if let Some(c) = self.ike_crossing.as_mut() {
            c.ours_failed = true;
            if let Some(theirs) = c.theirs.take() {
                self.ike_crossing = None;
                self.finish_rekey(ctx, theirs);
            }
        }
    }

    /// Both crossing IKE SA rekeys are complete: the exchange holding the lowest of the
    /// four nonces lost. Both successors exist on both sides; the winner's takes the
    /// Child SAs, the loser's is deleted by its initiator, and the winner's initiator
    /// deletes the old SA.
    fn settle_ike_crossing(&mut self, ctx: &mut Ctx<'_>, ours: Followup, theirs: Followup) {
        let lowest = |f: &Followup| f.nonces[0].as_slice().min(f.nonces[1].as_slice()).to_vec();
        let lost = lowest(&ours) < lowest(&theirs);
        let (winner, loser) = if lost { (theirs, ours) } else { (ours, theirs) };
        for (f, wins) in [(loser, false), (winner, true)] {
            let Creating::Ike { chosen, spis } = f.creating else {
                unreachable!("only IKE SA rekeys cross here")
            };
            let shared = f.shared.expect("an IKE SA rekey always has a key exchange");
            let mut new = self.hand_over(
                ctx,
                chosen,
                spis,
                f.nonces,
                (shared, f.additional),
                f.initiated,
                wins,
            );
            if !wins && f.initiated {
                let _ = new.delete(ctx);
            }
            ctx.out.new_sas.push(new);
        }
        if !lost {
            let _ = self.delete(ctx);
        }
    }

    fn on_followup_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        let Some(mut f) = self.followup.take() else {
            return Ok(());
        };
        if let Some(n) = first_error(payloads) {
            self.rekey_failed(ctx, &f.creating, n);
            return Ok(());
        }
        let secret = f.secret.take().expect("a key share is in flight");
        let method = secret.method().id();
        let ker = payloads.iter().find_map(|p| match p {
            Payload::Ke { method: m, data } if *m == method => Some(data),
            _ => None,
        });
        let Some(ss) = ker.and_then(|k| ctx.crypto.ke_complete(secret, k).ok()) else {
            self.rekey_failed(ctx, &f.creating, notify::INVALID_KE_PAYLOAD);
            return Ok(());
        };
        f.additional.push(ss);
        f.remaining.remove(0);
        match find_notify(payloads, notify::ADDITIONAL_KEY_EXCHANGE) {
            Some(link) => f.link = link.data.clone(),
            None if !f.remaining.is_empty() => {
                self.rekey_failed(ctx, &f.creating, notify::INVALID_SYNTAX);
                return Ok(());
            }
            None => {}
        }
        self.settle(ctx, f, true)
    }

    fn on_followup_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        let link = find_notify(payloads, notify::ADDITIONAL_KEY_EXCHANGE);
        let Some(mut f) = self
            .peer_followup
            .take_if(|f| link.is_some_and(|l| l.data == f.link))
        else {
            // Nothing pending under that link (RFC 9370 section 2.2.4).
            self.send_response(
                ctx,
                header,
                &[notify_payload(notify::STATE_NOT_FOUND, vec![])],
            );
            return Ok(());
        };
        let method = f.remaining.remove(0);
        let kei = payloads.iter().find_map(|p| match p {
            Payload::Ke { method: m, data } if *m == method.id() => Some(data),
            _ => None,
        });
        let Some((ker, ss)) = kei.and_then(|k| ctx.crypto.ke_respond(method, k, ctx.rng).ok())
        else {
            let data = method.id().to_be_bytes().to_vec();
            self.send_response(
                ctx,
                header,
                &[notify_payload(notify::INVALID_KE_PAYLOAD, data)],
            );
            return Ok(());
        };
        f.additional.push(ss);
        let mut response = vec![Payload::Ke {
            method: method.id(),
            data: ker,
        }];
        if !f.remaining.is_empty() {
            response.push(notify_payload(
                notify::ADDITIONAL_KEY_EXCHANGE,
                f.link.clone(),
            ));
        }
        self.send_response(ctx, header, &response);
        self.settle(ctx, f, false)
    }

    /// Every key exchange of a rekey is done: the new Child SA or IKE SA, and, from the
    /// rekey's initiator, the Delete of the old one.
    fn finish_rekey(&mut self, ctx: &mut Ctx<'_>, f: Followup) {
        match f.creating {
            Creating::Child {
                old_spi_in,
                spi_in,
                spi_out,
                chosen,
                local_ts,
                remote_ts,
                collision,
            } => {
                let child = self.child_sa(
                    ctx,
                    NewChild {
                        chosen: &chosen,
                        spi_in,
                        spi_out,
                        initiated: f.initiated,
                        nonces: [&f.nonces[0], &f.nonces[1]],
                        shared: f.shared.as_deref(),
                        additional: &f.additional,
                        local_ts,
                        remote_ts,
                    },
                );
                self.children.push(child.clone());
                let Some(old_spi_in) = old_spi_in else {
                    ctx.out.events.push_back(Event::ChildSaReady {
                        sa: self.our_spi(),
                        child,
                    });
                    return;
                };
                self.superseded.push(old_spi_in);
                ctx.out.events.push_back(Event::ChildSaRekeyed {
                    sa: self.our_spi(),
                    old_spi_in,
                    child,
                });
                if !f.initiated {
                    return;
                }
                // A crossing rekey whose request came late (during our IKE_FOLLOWUP_KE
                // exchanges, after a retransmission) is settled here too.
                let collision =
                    collision.or_else(|| self.collision.take_if(|c| c.old_spi_in == old_spi_in));
                // The new SA is in place: delete the old one (RFC 7296 section 2.8).
                // After a collision, the exchange with the lowest of the four nonces
                // (octet by octet, a prefix lower) lost: its initiator deletes the new
                // SA it made instead, and the winner deletes the old one. Both sides
                // decide alike.
                let ours = f.nonces[0].as_slice().min(f.nonces[1].as_slice());
                let lost = collision.is_some_and(|c| ours < c.lowest_nonce.as_slice());
                let doomed = if lost { spi_in } else { old_spi_in };
                let delete = Payload::Delete {
                    protocol: protocol::ESP,
                    spi_size: 4,
                    spis: vec![doomed.to_be_bytes().to_vec()],
                };
                self.deleting_child = Some(doomed);
                ctx.out.events.push_back(Event::ChildSaDeleting {
                    sa: self.our_spi(),
                    spi_in: doomed,
                });
                self.send_request(ctx, exchange::INFORMATIONAL, &[delete]);
            }
            Creating::Ike { .. } if self.ike_crossing.is_some() => {
                let c = self.ike_crossing.as_mut().expect("checked");
                match f.initiated {
                    true => c.ours = Some(f),
                    false => c.theirs = Some(f),
                }
                if c.ours_failed || (c.ours.is_some() && c.theirs.is_some()) {
                    let c = self.ike_crossing.take().expect("checked");
                    match (c.ours, c.theirs) {
                        (Some(ours), Some(theirs)) => self.settle_ike_crossing(ctx, ours, theirs),
                        (_, Some(theirs)) => self.finish_rekey(ctx, theirs),
                        _ => {}
                    }
                }
            }
            Creating::Ike { chosen, spis } => {
                let shared = f.shared.expect("an IKE SA rekey always has a key exchange");
                let secrets = (shared, f.additional);
                let new = self.hand_over(ctx, chosen, spis, f.nonces, secrets, f.initiated, true);
                ctx.out.new_sas.push(new);
                if f.initiated {
                    // The successor is in place: the rekey's initiator deletes the old SA.
                    let _ = self.delete(ctx);
                }
            }
        }
    }

    /// Creates a successor of this IKE SA, keyed
    /// `SKEYSEED = prf(SK_d, g^ir | Ni | Nr | SK(1) | ... | SK(k))` under the new SPIs
    /// (initiator's, then responder's, of the rekey exchange). The successor `takes_over`
    /// the Child SAs (and is reported as the rekeyed SA) unless it lost a crossing.
    #[allow(clippy::too_many_arguments)]
    fn hand_over(
        &mut self,
        ctx: &mut Ctx<'_>,
        chosen: ProposalSpec,
        [spi_i, spi_r]: [u64; 2],
        [ni, nr]: [Vec<u8>; 2],
        (shared, additional): (Vec<u8>, Vec<Vec<u8>>),
        initiator: bool,
        takes_over: bool,
    ) -> IkeSa {
        let suite = self.suite.expect("negotiated");
        let mut new = IkeSa::blank(self.peer, initiator, spi_i, spi_r, self.remote);
        let id = SaIdentity {
            ni: &ni,
            nr: &nr,
            spi_i,
            spi_r,
        };
        let keys = self.keys.as_ref().expect("derived");
        let additional: Vec<&[u8]> = additional.iter().map(Vec::as_slice).collect();
        new.keys = Some(keys.rekeyed(ctx.crypto, suite, &shared, &additional, id));
        new.phase = Phase::Established;
        new.suite = Some(suite);
        new.chosen = Some(chosen);
        new.ni = ni;
        new.nr = nr;
        new.nat = self.nat;
        new.floated = self.floated;
        new.peer_frag = self.peer_frag;
        new.ppk_outcome = self.ppk_outcome.clone();
        new.heard_from_peer(ctx);
        new.emit_keys(ctx);
        if takes_over {
            new.children = std::mem::take(&mut self.children);
            new.superseded = std::mem::take(&mut self.superseded);
            ctx.out.events.push_back(Event::IkeSaRekeyed {
                old: self.our_spi(),
                new: new.our_spi(),
                keys: new.keys.clone().expect("derived"),
                keylog: new.keylog(),
            });
        }
        new
    }

    // ----- liveness -------------------------------------------------------------------

    /// An authenticated message arrived: the peer is alive, the next check moves on.
    fn heard_from_peer(&mut self, ctx: &Ctx<'_>) {
        self.dpd_at = ctx
            .peer
            .timers
            .dpd_delay_ns
            .map(|d| ctx.now.saturating_add(d));
    }

    /// A liveness check can go out now (window size 1: not beside another request).
    fn liveness_possible(&self) -> bool {
        self.phase == Phase::Established && self.outstanding.is_none() && !self.deleting
    }

    /// Sends an empty INFORMATIONAL request; its response proves the peer alive, and no
    /// response after every retransmission fails the SA. Ignored while another request
    /// is outstanding (that one tests liveness already).
    pub fn check_liveness(&mut self, ctx: &mut Ctx<'_>) -> Result<(), FailReason> {
        if self.liveness_possible() {
            self.dpd_at = None;
            self.send_request(ctx, exchange::INFORMATIONAL, &[]);
        }
        Ok(())
    }

    // ----- timers ---------------------------------------------------------------------

    pub fn on_timeout(&mut self, ctx: &mut Ctx<'_>) -> Result<(), FailReason> {
        let now = ctx.now;
        if self.closing_until.is_some_and(|t| t <= now) {
            self.phase = Phase::Gone;
            return Ok(());
        }
        if let Some(o) = self.outstanding.as_mut()
            && o.deadline <= now
        {
            if o.tries >= ctx.peer.timers.retransmit_tries {
                return Err(FailReason::RetransmitTimeout {
                    exchange: o.stats.exchange,
                });
            }
            o.tries += 1;
            o.stats.retransmissions += 1;
            o.deadline = now + ctx.peer.timers.retransmit_after(o.tries);
            ctx.out.stats.retransmissions += 1;
            let datagrams = o.datagrams.clone();
            self.transmit(ctx, &datagrams);
        }
        if self.phase == Phase::Responding && self.half_open_deadline.is_some_and(|t| t <= now) {
            return Err(FailReason::HalfOpenTimeout);
        }
        if let PpkState::Requested { deadline } = self.ppk
            && deadline <= now
        {
            return self.on_ppk(ctx, None);
        }
        if self.dpd_at.is_some_and(|t| t <= now) {
            return self.check_liveness(ctx);
        }
        Ok(())
    }
}
