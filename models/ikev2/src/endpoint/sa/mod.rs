//! One IKE SA's state machine. The endpoint finds the SA; this module decides.
//!
//! The state is grouped by lifetime: what the SA keeps while it lives (SPIs, peer,
//! negotiated suite and keys, Child SAs), the [`Handshake`] (IKE_SA_INIT through
//! IKE_AUTH, dropped once the SA is established), the message-ID [`Window`] (our one
//! outstanding request as a typed [`Request`], the cached response, reassembly), and
//! the peer's rekeys in progress ([`PeerRekeys`]). Each exchange has its own module:
//! [`transport`] (sealing, sending, retransmitting, opening), [`init`] (IKE_SA_INIT with
//! NAT detection and cookies), [`intermediate`], [`auth`] (IKE_AUTH with PPKs),
//! [`child`] (Child SA create, rekey, delete, traffic selectors), [`ike_rekey`],
//! [`followup`] (IKE_FOLLOWUP_KE, crossings, hand-over) and [`informational`] (Delete,
//! liveness). This file holds the state and the dispatch of messages and timers.

mod auth;
mod child;
mod followup;
mod ike_rekey;
mod informational;
mod init;
mod intermediate;
mod transport;

use std::net::SocketAddr;

use rand_core::CryptoRng;

use super::Outputs;
use super::config::{EndpointConfig, PeerConfig};
use super::events::{ChildSa, Event, ExchangeOutcome, FailReason, KeylogEntry, Ppk, PpkOutcome};
use crate::consts::{exchange, notify};
use crate::crypto::{CryptoProvider, KeSecret, Suite};
use crate::keys::{IkeKeys, IntAuth, SaIdentity};
use crate::message::{DecodeErrorKind, Header, Notify, Payload, RawHeader, TrafficSelector};
use crate::proposal::ProposalSpec;
use crate::protect;

use followup::{Followup, IkeCrossing};
use transport::{Request, Window};

/// What an SA method needs besides the SA itself.
pub(crate) struct Ctx<'a> {
    pub now: u64,
    pub crypto: &'a dyn CryptoProvider,
    pub rng: &'a mut dyn CryptoRng,
    pub peer: &'a PeerConfig,
    /// Every peer configuration of the endpoint (a responder may switch to another
    /// with the same address once the initiator's ID is known).
    pub peers: &'a [PeerConfig],
    pub local: SocketAddr,
    /// Our port for UDP encapsulation, and the peer's (4500 unless configured).
    pub natt_port: u16,
    pub out: &'a mut Outputs,
}

impl<'a> Ctx<'a> {
    pub fn new(
        now: u64,
        crypto: &'a dyn CryptoProvider,
        rng: &'a mut dyn CryptoRng,
        peers: &'a [PeerConfig],
        peer: usize,
        config: &EndpointConfig,
        out: &'a mut Outputs,
    ) -> Self {
        Ctx {
            now,
            crypto,
            rng,
            peer: &peers[peer],
            peers,
            local: config.local,
            natt_port: config.natt_port,
            out,
        }
    }
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

/// Where the PPK of the IKE_AUTH exchange stands.
enum PpkState {
    NotWanted,
    Requested { deadline: u64 },
    Have(Ppk),
    Unavailable,
}

/// What only the initial exchanges (IKE_SA_INIT, IKE_INTERMEDIATE, IKE_AUTH) need;
/// dropped when the SA is established. Successors of an IKE SA rekey have none.
struct Handshake {
    /// The IKE_SA_INIT request and response as sent (RealMessage1/2).
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// The secret of our key share in flight (IKE_SA_INIT or IKE_INTERMEDIATE).
    ke: Option<KeSecret>,
    /// The key exchange method of IKE_SA_INIT.
    ke_method: u16,
    /// The key share our IKE_SA_INIT carried, by method: a retry after a COOKIE sends
    /// it again (RFC 7296 2.6: every payload but the COOKIE unchanged).
    init_ke: Option<(u16, Vec<u8>)>,
    cookie: Option<Vec<u8>>,
    init_retries: u8,
    /// The first error an IKE_SA_INIT response brought (a refusal, or an answer that
    /// does not fit our request). It is unauthenticated, so the initiator keeps waiting
    /// for a valid response until its request's retransmission is due, and only then
    /// fails with it (RFC 7296 2.21.1).
    init_error: Option<FailReason>,
    /// The negotiated additional key exchange methods (RFC 9370), and how many ran.
    additional_methods: Vec<u16>,
    done_additional: usize,
    int_auth: IntAuth,
    /// `A | P` of our outstanding IKE_INTERMEDIATE request.
    intauth_request: Vec<u8>,
    peer_intermediate: bool,
    peer_childless: bool,
    use_ppk: bool,
    ppk: PpkState,
    /// Responder: the IKE_AUTH request waiting for the driver's PPK.
    pending_auth: Option<(Header, Vec<Payload>)>,
    /// Our inbound SPI of the first Child SA.
    child_spi: u32,
    /// A responder not established by then gives up.
    half_open_deadline: Option<u64>,
}

impl Handshake {
    fn new() -> Self {
        Handshake {
            init_request: Vec::new(),
            init_response: Vec::new(),
            ni: Vec::new(),
            nr: Vec::new(),
            ke: None,
            ke_method: 0,
            init_ke: None,
            cookie: None,
            init_retries: 0,
            init_error: None,
            additional_methods: Vec::new(),
            done_additional: 0,
            int_auth: IntAuth::default(),
            intauth_request: Vec::new(),
            peer_intermediate: false,
            peer_childless: false,
            use_ppk: false,
            ppk: PpkState::NotWanted,
            pending_auth: None,
            child_spi: 0,
            half_open_deadline: None,
        }
    }

    /// The shared secret of our key share in flight and the responder's `data`.
    fn complete_ke(
        &mut self,
        ctx: &Ctx<'_>,
        data: &[u8],
        invalid: &'static str,
    ) -> Result<Vec<u8>, FailReason> {
        let secret = (self.ke.take()).ok_or(FailReason::Protocol("no key exchange in progress"))?;
        (ctx.crypto.ke_complete(secret, data)).map_err(|_| FailReason::Protocol(invalid))
    }
}

/// Rekeys the peer started that are still in progress (ours live in the outstanding
/// [`Request`]), and crossings of ours with the peer's that are still to settle. The
/// larger ones are boxed: an SA seldom has them, and it has them for a round trip.
#[derive(Default)]
struct PeerRekeys {
    /// The peer's rekey of a Child SA that crossed ours.
    child_collision: Option<child::RekeyCollision>,
    /// The peer's IKE SA rekey that crossed ours.
    ike_crossing: Option<Box<IkeCrossing>>,
    /// The peer's rekey in its IKE_FOLLOWUP_KE exchanges.
    followup: Option<Box<Followup>>,
}

pub(crate) struct IkeSa {
    pub peer: usize,
    /// Original initiator of this IKE SA.
    pub initiator: bool,
    pub spi_i: u64,
    pub spi_r: u64,
    pub remote: SocketAddr,
    /// The address its IKE_SA_INIT came from or went to (`remote` may move later, to
    /// port 4500 or behind a NAT): the responder's key in the endpoint's index.
    pub init_remote: SocketAddr,
    pub phase: Phase,
    /// The deadline under which the endpoint's timer index holds this SA.
    pub indexed: Option<u64>,
    chosen: Option<ProposalSpec>,
    suite: Option<Suite>,
    keys: Option<IkeKeys>,
    ppk_outcome: PpkOutcome,
    /// The peer supports RFC 7383 fragmentation (and so do we).
    peer_frag: bool,
    /// A NAT was detected in IKE_SA_INIT.
    nat: bool,
    /// IKE has moved to port 4500 (RFC 3948 port floating).
    floated: bool,
    handshake: Option<Box<Handshake>>,
    window: Window,
    /// Child SAs of this IKE SA: new ones appended, old ones kept until deleted.
    children: Vec<ChildSa>,
    /// Inbound SPIs of Child SAs already replaced by a rekey (kept until deleted, never
    /// rekeyed again).
    superseded: Vec<u32>,
    peer_rekeys: PeerRekeys,
    /// A failed responder lingers until then to replay its error response.
    closing_until: Option<u64>,
    /// When the next liveness check is due (dead peer detection on).
    dpd_at: Option<u64>,
}

impl IkeSa {
    /// Hints where its Child SAs lie (see `Endpoint::locate_sa`).
    pub(crate) fn locate_children(&self, mut hint: impl FnMut(*const u8, usize)) {
        hint(
            self.children.as_ptr() as *const u8,
            std::mem::size_of_val(self.children.as_slice()),
        );
    }

    /// Files a new Child SA. One more slot, not the vector's usual four: an IKE SA
    /// holds one Child SA, two while one is rekeyed, and a hub holds thousands.
    fn add_child(&mut self, child: ChildSa) {
        self.children.reserve_exact(1);
        self.children.push(child);
    }
}

fn random(rng: &mut dyn CryptoRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

fn notify_payload(kind: u16, data: Vec<u8>) -> Payload {
    Payload::Notify(Notify::new(kind, data))
}

fn first_error(payloads: &[Payload]) -> Option<u16> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if crate::consts::notify::is_error(n.kind) => Some(n.kind),
        _ => None,
    })
}

/// The payloads of a message that the exchanges look up, each the first of its kind:
/// IDs, AUTH, SA, traffic selectors, nonce and key exchange.
struct Found<'a> {
    idi: Option<(u8, &'a Vec<u8>)>,
    idr: Option<(u8, &'a Vec<u8>)>,
    auth: Option<&'a Vec<u8>>,
    sa: Option<&'a Vec<crate::message::Proposal>>,
    tsi: Option<&'a Vec<TrafficSelector>>,
    tsr: Option<&'a Vec<TrafficSelector>>,
    nonce: Option<&'a Vec<u8>>,
    /// The first KE payload: (method, data).
    ke: Option<(u16, &'a Vec<u8>)>,
}

impl<'a> Found<'a> {
    fn of(payloads: &'a [Payload]) -> Self {
        let mut f = Found {
            idi: None,
            idr: None,
            auth: None,
            sa: None,
            tsi: None,
            tsr: None,
            nonce: None,
            ke: None,
        };
        for p in payloads {
            match p {
                Payload::IdI { id_type, data } => _ = f.idi.get_or_insert((*id_type, data)),
                Payload::IdR { id_type, data } => _ = f.idr.get_or_insert((*id_type, data)),
                Payload::Auth { data, .. } => _ = f.auth.get_or_insert(data),
                Payload::Sa(props) => _ = f.sa.get_or_insert(props),
                Payload::TsI(t) => _ = f.tsi.get_or_insert(t),
                Payload::TsR(t) => _ = f.tsr.get_or_insert(t),
                Payload::Nonce(n) => _ = f.nonce.get_or_insert(n),
                Payload::Ke { method, data } => _ = f.ke.get_or_insert((*method, data)),
                _ => {}
            }
        }
        f
    }
}

/// A nonce of a length RFC 7296 section 2.10 allows: 16 to 256 octets.
fn valid_nonce(n: &&Vec<u8>) -> bool {
    (16..=256).contains(&n.len())
}

/// The data of the first KE payload of method `method`.
fn ke_data(payloads: &[Payload], method: u16) -> Option<&Vec<u8>> {
    payloads.iter().find_map(|p| match p {
        Payload::Ke { method: m, data } if *m == method => Some(data),
        _ => None,
    })
}

impl IkeSa {
    fn blank(peer: usize, initiator: bool, spi_i: u64, spi_r: u64, remote: SocketAddr) -> Self {
        IkeSa {
            peer,
            initiator,
            spi_i,
            spi_r,
            remote,
            init_remote: remote,
            phase: if initiator {
                Phase::Initiating
            } else {
                Phase::Responding
            },
            indexed: None,
            chosen: None,
            suite: None,
            keys: None,
            ppk_outcome: PpkOutcome::NotUsed,
            peer_frag: false,
            nat: false,
            floated: false,
            handshake: Some(Box::new(Handshake::new())),
            window: Window::default(),
            children: Vec::new(),
            superseded: Vec::new(),
            peer_rekeys: PeerRekeys::default(),
            closing_until: None,
            dpd_at: None,
        }
    }

    /// The handshake state; only handlers of the initial exchanges call it, and those
    /// run only before the SA is established (by phase or by the outstanding request).
    fn hs(&mut self) -> &mut Handshake {
        self.handshake
            .as_mut()
            .expect("initial exchanges run before the SA is established")
    }

    /// The IKE_SA_INIT request and response, while the handshake runs.
    pub(crate) fn init_messages(&self) -> Option<(&[u8], &[u8])> {
        self.handshake
            .as_ref()
            .map(|h| (&h.init_request[..], &h.init_response[..]))
    }

    fn suite(&self) -> Suite {
        self.suite
            .expect("the suite is negotiated before any protected exchange")
    }

    fn ike_keys(&self) -> &IkeKeys {
        self.keys
            .as_ref()
            .expect("keys are derived before any protected exchange")
    }

    /// The nonces and SPIs that IKE_SA_INIT's key derivations take.
    fn id(&self) -> SaIdentity<'_> {
        let hs = self
            .handshake
            .as_ref()
            .expect("initial keys are derived in the handshake");
        SaIdentity {
            ni: &hs.ni,
            nr: &hs.nr,
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
        let k = self.ike_keys();
        KeylogEntry {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            sk_ei: k.sk_ei,
            sk_er: k.sk_er,
            aead: self.suite().aead,
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
        let (ppk, half_open) = match self.handshake.as_deref() {
            Some(hs) => (
                match hs.ppk {
                    PpkState::Requested { deadline } => Some(deadline),
                    _ => None,
                },
                hs.half_open_deadline
                    .filter(|_| self.phase == Phase::Responding),
            ),
            None => (None, None),
        };
        [
            self.window.outstanding.as_ref().map(|o| o.deadline),
            half_open,
            ppk,
            self.closing_until,
            self.dpd_at.filter(|_| self.liveness_possible()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Ends the SA: the exchange in flight is given up, an event, and the SA goes (or
    /// lingers to replay an error response).
    pub fn fail(&mut self, ctx: &mut Ctx<'_>, reason: FailReason) {
        let outcome = match reason {
            FailReason::RetransmitTimeout { .. } => ExchangeOutcome::TimedOut,
            _ => ExchangeOutcome::Abandoned,
        };
        self.abandon_exchange(ctx, outcome);
        ctx.out.events.push_back(Event::IkeSaFailed {
            sa: self.our_spi(),
            peer: self.peer,
            reason,
        });
        if let Some(hs) = self.handshake.as_mut() {
            hs.pending_auth = None;
            hs.ppk = PpkState::NotWanted;
        }
        if self.window.cached.is_some() && !self.initiator {
            self.phase = Phase::Closing;
            self.closing_until = Some(ctx.now + ctx.peer.timers.half_open_timeout_ns);
        } else {
            self.phase = Phase::Gone;
        }
    }

    /// The SA is up: the handshake state goes, dead peer detection starts.
    fn established(&mut self, ctx: &mut Ctx<'_>) {
        self.phase = Phase::Established;
        self.handshake = None;
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
            keys: *self.ike_keys(),
            keylog: self.keylog(),
        });
    }

    // ----- dispatch ---------------------------------------------------------------------

    /// A message of this SA arrived from `from` (the endpoint matched its SPIs).
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
            if self.replay_cached(ctx, &raw, bytes) {
                return Ok(());
            }
            let awaits_ppk = self
                .handshake
                .as_ref()
                .is_some_and(|hs| hs.pending_auth.is_some());
            if self.phase == Phase::Closing
                || h.message_id != self.window.expected_mid
                || awaits_ppk
            {
                ctx.out.stats.dropped_unexpected += 1;
                return Ok(());
            }
        } else if !self.window.answers(&h) {
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
        let payloads = match protect::decode_inner(first, &inner) {
            Ok(p) => p,
            // RFC 7296 section 2.5: a request with a critical payload we do not know is
            // refused with UNSUPPORTED_CRITICAL_PAYLOAD, and the IKE SA goes on.
            Err(e)
                if !header.is_response()
                    && let DecodeErrorKind::UnsupportedCriticalPayload(kind) = e.kind =>
            {
                return self.refuse(
                    ctx,
                    &header,
                    notify::UNSUPPORTED_CRITICAL_PAYLOAD,
                    vec![kind],
                );
            }
            Err(_) => {
                return Err(FailReason::Protocol(
                    "authenticated message with undecodable payloads",
                ));
            }
        };
        if header.is_response() {
            let Some(request) = self.finish_exchange(ctx, 0, 0) else {
                return Ok(());
            };
            match request {
                // IKE_SA_INIT is not protected: handled above.
                Request::Init => Ok(()),
                Request::Intermediate => {
                    self.on_intermediate_response(ctx, &header, first, &inner, &payloads)
                }
                Request::Auth(keys) => self.on_auth_response(ctx, *keys, &payloads),
                Request::Child(r) => self.on_create_child_response(ctx, r, &payloads),
                Request::IkeRekey(r) => self.on_ike_rekey_response(ctx, r, &payloads),
                Request::Followup(f) => self.on_followup_response(ctx, *f, &payloads),
                Request::DeleteChild(spi_in) => {
                    self.on_delete_child_response(ctx, spi_in);
                    Ok(())
                }
                Request::DeleteIke => {
                    self.on_delete_response(ctx);
                    Ok(())
                }
                Request::Liveness => Ok(()),
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
                    self.on_informational_request(ctx, &header, &payloads);
                    Ok(())
                }
                _ => {
                    ctx.out.stats.dropped_unexpected += 1;
                    Ok(())
                }
            }
        }
    }

    /// Runs this SA's timers that are due.
    pub fn on_timeout(&mut self, ctx: &mut Ctx<'_>) -> Result<(), FailReason> {
        let now = ctx.now;
        if self.closing_until.is_some_and(|t| t <= now) {
            self.phase = Phase::Gone;
            return Ok(());
        }
        self.retransmit_if_due(ctx)?;
        let (half_open, ppk_due) = match self.handshake.as_deref() {
            Some(hs) => (
                hs.half_open_deadline.is_some_and(|t| t <= now),
                matches!(hs.ppk, PpkState::Requested { deadline } if deadline <= now),
            ),
            None => (false, false),
        };
        if self.phase == Phase::Responding && half_open {
            return Err(FailReason::HalfOpenTimeout);
        }
        if ppk_due {
            return self.on_ppk(ctx, None);
        }
        if self.dpd_at.is_some_and(|t| t <= now) {
            return self.check_liveness(ctx);
        }
        Ok(())
    }
}
