//! IKE_SA_INIT (RFC 7296 section 1.2): the initiator's request and its retries after
//! COOKIE or INVALID_KE_PAYLOAD (at most three), the responder's selection and answer,
//! and NAT detection (section 2.23) with the move to port 4500 when a NAT is seen or
//! UDP encapsulation is forced.

use std::net::{IpAddr, SocketAddr};

use super::{Ctx, Found, Handshake, IkeSa, PpkState, Request, first_error, notify_payload, random};
use crate::consts::{exchange, notify, transform_type as tt};
use crate::crypto::{KeMethod, Suite};
use crate::endpoint::config::PpkPolicy;
use crate::endpoint::events::{DowngradeReason, Event, FailReason};
use crate::keys::IkeKeys;
use crate::message::{Message, Notify, Payload};
use crate::proposal::{self, Preference};

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

/// A status notify without data.
fn flag(kind: u16) -> Payload {
    notify_payload(kind, vec![])
}

impl IkeSa {
    /// A new initiator SA; sends IKE_SA_INIT.
    pub fn initiate(ctx: &mut Ctx<'_>, peer: usize, spi: u64) -> IkeSa {
        let mut sa = IkeSa::blank(peer, true, spi, 0, ctx.peer.remote);
        let hs = sa.hs();
        hs.ni = random(ctx.rng, 32);
        hs.ke_method = ctx
            .peer
            .ike
            .first()
            .and_then(|p| p.chosen(tt::KE))
            .map_or(0, |a| a.id);
        sa.send_init(ctx);
        sa
    }

    fn send_init(&mut self, ctx: &mut Ctx<'_>) {
        let (spi_i, remote) = (self.spi_i, self.remote);
        let hs = self.hs();
        let data = match &hs.init_ke {
            Some((m, data)) if *m == hs.ke_method && hs.ke.is_some() => data.clone(),
            _ => {
                let method =
                    KeMethod::from_id(hs.ke_method).expect("configured KE methods are supported");
                let (secret, data) = ctx.crypto.ke_initiate(method, ctx.rng);
                hs.ke = Some(secret);
                hs.init_ke = Some((hs.ke_method, data.clone()));
                data
            }
        };
        let mut payloads = Vec::new();
        if let Some(c) = &hs.cookie {
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
            method: hs.ke_method,
            data,
        });
        payloads.push(Payload::Nonce(hs.ni.clone()));
        payloads.extend(nat_notifies(spi_i, 0, ctx.local, remote, ctx.peer.nat_t));
        if ctx.peer.fragmentation {
            payloads.push(flag(notify::IKEV2_FRAGMENTATION_SUPPORTED));
        }
        payloads.push(flag(notify::INTERMEDIATE_EXCHANGE_SUPPORTED));
        if ctx.peer.ppk != PpkPolicy::Disabled {
            payloads.push(flag(notify::USE_PPK));
        }
        if ctx.peer.childless {
            payloads.push(flag(notify::CHILDLESS_IKEV2_SUPPORTED));
        }
        self.restart_window();
        let bytes = Message {
            header: self.header(exchange::IKE_SA_INIT, 0, false),
            payloads,
        }
        .encode();
        self.hs().init_request = bytes.clone();
        self.start_request(ctx, Request::Init, vec![bytes]);
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
        let found = Found::of(&msg.payloads);
        let Some(offered) = found.sa else {
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
        let (Some(method), Some(suite)) = (KeMethod::from_id(ke_id), Suite::from_proposal(&chosen))
        else {
            return Err(refuse(notify::NO_PROPOSAL_CHOSEN, vec![]));
        };
        let kei = match found.ke {
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
        let nr = random(ctx.rng, 32);
        sa.suite = Some(suite);
        sa.peer_frag = has(notify::IKEV2_FRAGMENTATION_SUPPORTED) && ctx.peer.fragmentation;
        let use_ppk = has(notify::USE_PPK) && ctx.peer.ppk != PpkPolicy::Disabled;
        let peer_childless = has(notify::CHILDLESS_IKEV2_SUPPORTED);
        let mut payloads = vec![
            Payload::Sa(vec![chosen.to_wire(selection.number, Vec::new())]),
            Payload::Ke {
                method: ke_id,
                data: ker,
            },
            Payload::Nonce(nr.clone()),
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
            payloads.push(flag(notify::IKEV2_FRAGMENTATION_SUPPORTED));
        }
        if peer_intermediate {
            payloads.push(flag(notify::INTERMEDIATE_EXCHANGE_SUPPORTED));
        }
        if use_ppk {
            payloads.push(flag(notify::USE_PPK));
        }
        if peer_childless {
            payloads.push(flag(notify::CHILDLESS_IKEV2_SUPPORTED));
        }
        let response = Message {
            header: sa.header(exchange::IKE_SA_INIT, 0, true),
            payloads,
        }
        .encode();
        let hs = sa.hs();
        *hs = Handshake {
            init_request: bytes.to_vec(),
            init_response: response.clone(),
            ni,
            nr,
            additional_methods: chosen.additional_kes().iter().map(|&(_, m)| m).collect(),
            peer_intermediate,
            peer_childless,
            use_ppk,
            half_open_deadline: Some(ctx.now + ctx.peer.timers.half_open_timeout_ns),
            ..Handshake::new()
        };
        sa.keys = Some(IkeKeys::initial(ctx.crypto, suite, &shared, sa.id()));
        sa.chosen = Some(chosen);
        sa.send_init_response(ctx, response);
        sa.emit_keys(ctx);
        Ok(sa)
    }

    pub(super) fn on_init_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        bytes: &[u8],
    ) -> Result<(), FailReason> {
        if !self.initiator || !matches!(self.request(), Some(Request::Init)) {
            ctx.out.stats.dropped_unexpected += 1;
            return Ok(());
        }
        let Ok(msg) = Message::decode(bytes) else {
            ctx.out.stats.dropped_malformed += 1;
            return Ok(());
        };
        if let Some(c) = msg.notify(notify::COOKIE) {
            return self.retry_init(ctx, bytes.len(), |hs| hs.cookie = Some(c.data.clone()));
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
            let current = self.hs().ke_method;
            if !offered || requested == current || KeMethod::from_id(requested).is_none() {
                return self.hold_init_error(ctx, FailReason::InvalidKePayload { requested });
            }
            return self.retry_init(ctx, bytes.len(), |hs| hs.ke_method = requested);
        }
        match first_error(&msg.payloads) {
            Some(notify::NO_PROPOSAL_CHOSEN) => {
                return self.hold_init_error(ctx, FailReason::NoProposalChosen { by_peer: true });
            }
            Some(n) => return self.hold_init_error(ctx, FailReason::PeerError { notify: n }),
            None => {}
        }
        let found = Found::of(&msg.payloads);
        let (Some(sa_reply), Some((ke_id, ker)), Some(nr)) = (found.sa, found.ke, found.nonce)
        else {
            return self.hold_init_error(
                ctx,
                FailReason::Protocol("IKE_SA_INIT response lacks SA, KE or Nonce"),
            );
        };
        let Some(chosen) = proposal::verify_reply(sa_reply, &ctx.peer.ike) else {
            return self.hold_init_error(
                ctx,
                FailReason::Protocol("IKE_SA_INIT response chose a proposal we did not offer"),
            );
        };
        let suite =
            Suite::from_proposal(&chosen).ok_or(FailReason::NoProposalChosen { by_peer: false })?;
        let ke_method = self.hs().ke_method;
        if chosen.chosen(tt::KE).map(|a| a.id) != Some(ke_method) || ke_id != ke_method {
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
        let hs = self.hs();
        hs.peer_intermediate = msg
            .notify(notify::INTERMEDIATE_EXCHANGE_SUPPORTED)
            .is_some();
        hs.peer_childless = msg.notify(notify::CHILDLESS_IKEV2_SUPPORTED).is_some();
        hs.additional_methods = chosen.additional_kes().iter().map(|&(_, m)| m).collect();
        if !hs.additional_methods.is_empty() && !hs.peer_intermediate {
            return Err(FailReason::Protocol(
                "additional key exchanges without IKE_INTERMEDIATE",
            ));
        }
        if hs
            .additional_methods
            .iter()
            .any(|&m| KeMethod::from_id(m).is_none())
        {
            return Err(FailReason::NoProposalChosen { by_peer: false });
        }
        let shared = hs.complete_ke(ctx, ker, "responder's KE data is invalid")?;
        self.spi_r = msg.header.spi_r;
        let hs = self.hs();
        hs.nr = nr.clone();
        hs.init_response = bytes.to_vec();
        self.suite = Some(suite);
        self.keys = Some(IkeKeys::initial(ctx.crypto, suite, &shared, self.id()));
        self.chosen = Some(chosen);
        self.finish_exchange(ctx, bytes.len(), 1);
        self.emit_keys(ctx);

        let wanted = ctx.peer.ppk != PpkPolicy::Disabled;
        let use_ppk = wanted && msg.notify(notify::USE_PPK).is_some();
        self.hs().use_ppk = use_ppk;
        if wanted && !use_ppk {
            self.go_without_ppk(ctx, FailReason::PpkRejected, DowngradeReason::PeerLacksPpk)?;
        }
        if use_ppk {
            self.hs().ppk = PpkState::Requested {
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

    /// Sends IKE_SA_INIT again after COOKIE or INVALID_KE_PAYLOAD (at most 3 times);
    /// the refused exchange is reported as answered with `response_bytes`.
    /// Keeps an IKE_SA_INIT response's error for later (see `Handshake::init_error`)
    /// and goes on waiting: a forged refusal must not end a negotiation that a valid
    /// answer is about to complete.
    fn hold_init_error(&mut self, ctx: &mut Ctx<'_>, e: FailReason) -> Result<(), FailReason> {
        ctx.out.stats.init_errors_held += 1;
        self.hs().init_error.get_or_insert(e);
        Ok(())
    }

    fn retry_init(
        &mut self,
        ctx: &mut Ctx<'_>,
        response_bytes: usize,
        change: impl FnOnce(&mut Handshake),
    ) -> Result<(), FailReason> {
        let hs = self.hs();
        if hs.init_retries >= 3 {
            return Err(FailReason::Protocol("IKE_SA_INIT refused too often"));
        }
        hs.init_retries += 1;
        hs.init_error = None;
        change(hs);
        self.finish_exchange(ctx, response_bytes, 1);
        self.send_init(ctx);
        Ok(())
    }
}
