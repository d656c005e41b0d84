//! Child SAs: their keys (`KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr)`), traffic selectors
//! and narrowing (RFC 7296 section 2.9), and CREATE_CHILD_SA for an additional Child
//! SA or a Child SA rekey (section 2.8) in both roles, with PFS when the ESP proposal
//! names a key exchange. A rekey of the same Child SA by both sides at once is
//! settled by nonces once both exchanges are done (section 2.8.1, in [`super::followup`]).
//! Deleting one Child SA starts here too.

use std::net::IpAddr;

use super::followup::{Creating, Followup};
use super::transport::new_esp_spi;
use super::{
    Ctx, Found, IkeSa, Phase, Request, first_error, ke_data, notify_payload, random, valid_nonce,
};
use crate::consts::{notify, protocol, transform_type as tt};
use crate::crypto::{AeadAlg, AeadKey, KeMethod, KeSecret};
use crate::endpoint::events::{ChildSa, Event, FailReason, Start};
use crate::keys::child_keymat;
use crate::message::{Header, Notify, Payload, TrafficSelector, find_notify};
use crate::proposal::{self, Preference, ProposalSpec};

/// Our CREATE_CHILD_SA: the Child SA it replaces (none for an additional Child SA), our
/// new inbound SPI, our nonce and key exchange.
pub(super) struct ChildRequest {
    pub old_spi_in: Option<u32>,
    spi_in: u32,
    ni: Vec<u8>,
    ke: Option<KeSecret>,
    /// Sent again with the method an INVALID_KE_PAYLOAD asked for (once only).
    ke_retry: bool,
}

/// The peer rekeyed a Child SA while our own rekey of it was in flight (RFC 7296
/// section 2.8.1): settled when our exchange completes.
pub(super) struct RekeyCollision {
    pub old_spi_in: u32,
    /// The lower of the peer's exchange's two nonces.
    pub lowest_nonce: Vec<u8>,
}

/// What a new Child SA's keys are derived from.
pub(super) struct NewChild<'a> {
    pub chosen: &'a ProposalSpec,
    pub spi_in: u32,
    pub spi_out: u32,
    /// We initiated the exchange that creates it (our key is the I->R half).
    pub initiated: bool,
    /// Ni and Nr of that exchange.
    pub nonces: [&'a [u8]; 2],
    /// The exchange's new key exchange secret (PFS), if any.
    pub shared: Option<&'a [u8]>,
    /// Secrets of its additional key exchanges (IKE_FOLLOWUP_KE), in order.
    pub additional_secrets: &'a [Vec<u8>],
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
}

/// The known methods of a proposal's additional key exchanges, or `None`.
pub(super) fn additional_methods(chosen: &ProposalSpec) -> Option<Vec<KeMethod>> {
    chosen
        .additional_kes()
        .iter()
        .map(|&(_, m)| KeMethod::from_id(m))
        .collect()
}

/// The ESP proposals as wire proposals with SPI `spi`, optionally without key exchange
/// transforms (inside IKE_AUTH).
pub(super) fn esp_offer(
    esp: &[ProposalSpec],
    spi: u32,
    with_ke: bool,
) -> Vec<crate::message::Proposal> {
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

/// Whether a selected ESP proposal has an SPI of 4 bytes and an AEAD we run.
fn usable_esp(s: &proposal::Selection) -> bool {
    s.peer_spi.len() == 4
        && s.chosen
            .chosen(tt::ENCR)
            .and_then(|a| AeadAlg::from_algorithm(&a))
            .is_some()
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

/// Our side's traffic selectors: as configured, or our own address.
pub(super) fn local_ts(ctx: &Ctx<'_>) -> Vec<TrafficSelector> {
    if ctx.peer.local_ts.is_empty() {
        vec![host_ts(ctx.local.ip())]
    } else {
        ctx.peer.local_ts.clone()
    }
}

/// The overlap of two selector lists (RFC 7296 section 2.9: the responder may narrow,
/// never widen).
pub(super) fn narrow(
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

/// The ESP SPI a Delete payload names, if it is 4 bytes long.
pub(super) fn esp_spi(spi: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(spi).ok().map(u32::from_be_bytes)
}

impl IkeSa {
    /// KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr): I->R key | R->I key, "I" being the
    /// initiator of the exchange that creates the Child SA. `None` if the proposal
    /// names no AEAD we run.
    pub(super) fn child_sa(&self, ctx: &Ctx<'_>, n: NewChild<'_>) -> Option<ChildSa> {
        let aead = AeadAlg::from_algorithm(&n.chosen.chosen(tt::ENCR)?)?;
        let len = aead.keymat_len();
        let km = child_keymat(
            ctx.crypto,
            self.suite().prf,
            &self.ike_keys().sk_d,
            n.shared,
            n.nonces,
            &n.additional_secrets
                .iter()
                .map(Vec::as_slice)
                .collect::<Vec<_>>(),
            2 * len,
        );
        let (i_to_r, r_to_i) = km.split_at(len);
        let (encr_out, encr_in) = if n.initiated {
            (i_to_r, r_to_i)
        } else {
            (r_to_i, i_to_r)
        };
        Some(ChildSa {
            spi_in: n.spi_in,
            spi_out: n.spi_out,
            proposal: n.chosen.to_string().into(),
            aead,
            esn: n
                .chosen
                .chosen(tt::ESN)
                .is_some_and(|a| a.id == crate::consts::esn::ESN),
            encr_in: AeadKey::new(encr_in),
            encr_out: AeadKey::new(encr_out),
            local_ts: n.local_ts,
            remote_ts: n.remote_ts,
        })
    }

    /// Removes the Child SA at `index` (its Delete is done, or the peer lost it) and
    /// reports it.
    pub(super) fn remove_child(&mut self, ctx: &mut Ctx<'_>, index: usize) -> ChildSa {
        let c = self.children.remove(index);
        self.superseded.retain(|s| *s != c.spi_in);
        ctx.out.esp_spis.remove(&c.spi_in);
        ctx.out.events.push_back(Event::ChildSaDeleted {
            sa: self.our_spi(),
            spi_in: c.spi_in,
        });
        c
    }

    /// The inbound SPIs of its Child SAs.
    pub(crate) fn child_spis(&self) -> impl Iterator<Item = u32> + '_ {
        self.children.iter().map(|c| c.spi_in)
    }

    /// The inbound SPI of the Child SA our request in flight deletes.
    pub(super) fn deleting_child(&self) -> Option<u32> {
        match self.request() {
            Some(Request::DeleteChild(spi_in)) => Some(*spi_in),
            _ => None,
        }
    }

    /// The Child SA (by inbound SPI) our rekey in flight replaces, in its
    /// CREATE_CHILD_SA or its IKE_FOLLOWUP_KE exchanges.
    fn child_rekey_in_flight(&self) -> Option<u32> {
        match self.request() {
            Some(Request::Child(r)) => r.old_spi_in,
            Some(Request::Followup(f)) => match f.creating {
                Creating::Child { old_spi_in, .. } => old_spi_in,
                Creating::Ike { .. } => None,
            },
            _ => None,
        }
    }

    /// Starts rekeying the Child SA with inbound SPI `spi_in` (RFC 7296 section 2.8),
    /// with a new key exchange when the ESP proposal names one (PFS).
    pub fn rekey_child(&mut self, ctx: &mut Ctx<'_>, spi_in: u32) -> Result<Start, FailReason> {
        let Some(old) = self.children.iter().find(|c| c.spi_in == spi_in).cloned() else {
            return Ok(Start::Gone); // no such Child SA (any more)
        };
        if self.superseded.contains(&spi_in) {
            return Ok(Start::Gone); // replaced already, its Delete to come
        }
        let peer_rekeys_it = self.peer_rekeys.followup.as_ref().is_some_and(
            |f| matches!(f.creating, Creating::Child { old_spi_in: Some(o), .. } if o == spi_in),
        );
        if peer_rekeys_it {
            return Ok(Start::Busy); // the peer's rekey of it is in its IKE_FOLLOWUP_KE
        }
        self.start_child(ctx, Some(old), None)
    }

    /// Starts a CREATE_CHILD_SA for an additional Child SA with the configured traffic
    /// selectors (RFC 7296 section 1.3.1), PFS as for rekeys.
    pub fn create_child(&mut self, ctx: &mut Ctx<'_>) -> Result<Start, FailReason> {
        self.start_child(ctx, None, None)
    }

    /// Sends CREATE_CHILD_SA for a new Child SA (replacing `old`, if any), with a key
    /// share of the first configured method, or of `ke_retry`'s after the peer asked
    /// for it.
    fn start_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        old: Option<ChildSa>,
        ke_retry: Option<KeMethod>,
    ) -> Result<Start, FailReason> {
        if self.phase != Phase::Established || self.deleting() {
            return Ok(Start::Gone);
        }
        if self.window.outstanding.is_some() {
            return Ok(Start::Busy); // window size 1: the driver asks again later
        }
        let ni = random(ctx.rng, 32);
        let new_spi = new_esp_spi(ctx.rng, &mut ctx.out.esp_spis);
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
        let ke_method = ke_retry.or_else(|| {
            ctx.peer
                .esp
                .first()
                .and_then(|p| p.chosen(tt::KE))
                .map(|a| a.id)
                .and_then(KeMethod::from_id)
        });
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
            None => (local_ts(ctx), ctx.peer.remote_ts.clone()),
        };
        payloads.push(Payload::TsI(ts_i));
        payloads.push(Payload::TsR(ts_r));
        let request = ChildRequest {
            old_spi_in: old.map(|o| o.spi_in),
            spi_in: new_spi,
            ni,
            ke,
            ke_retry: ke_retry.is_some(),
        };
        self.send_request(ctx, Request::Child(request), &payloads);
        Ok(Start::Started)
    }

    pub(super) fn on_create_child_request(
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
        let rekeyed = payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.kind == notify::REKEY_SA && n.protocol == protocol::ESP => {
                esp_spi(&n.spi)
            }
            _ => None,
        });
        let found = Found::of(&payloads);
        let ni = found.nonce.filter(valid_nonce).cloned();
        let (Some(offered), Some(ni)) = (found.sa, ni) else {
            return self.refuse(ctx, &header, notify::INVALID_SYNTAX, vec![]);
        };
        // A rekey names the SA it replaces; without REKEY_SA it is an additional one.
        let old = match rekeyed {
            None => None,
            Some(old_spi_out) => match self.children.iter().find(|c| c.spi_out == old_spi_out) {
                Some(c) => Some(c.clone()),
                None => return self.refuse(ctx, &header, notify::CHILD_SA_NOT_FOUND, vec![]),
            },
        };
        let old_spi_in = old.as_ref().map(|o| o.spi_in);
        if (old_spi_in.is_some() && self.deleting_child() == old_spi_in)
            || self.peer_rekeys.followup.is_some()
        {
            // Our rekey of it is done and its Delete on the way, or the peer's previous
            // rekey is still in its IKE_FOLLOWUP_KE exchanges.
            return self.refuse(ctx, &header, notify::TEMPORARY_FAILURE, vec![]);
        }
        let Some(sel) = proposal::select(offered, &ctx.peer.esp, Preference::Initiator)
            .filter(|s| usable_esp(s) && additional_methods(&s.chosen).is_some())
        else {
            return self.refuse(ctx, &header, notify::NO_PROPOSAL_CHOSEN, vec![]);
        };
        let remaining = additional_methods(&sel.chosen).unwrap_or_default();
        let mut shared = None;
        let mut response_ke = None;
        if let Some(method) = sel
            .chosen
            .chosen(tt::KE)
            .filter(|a| a.id != crate::consts::ke::NONE)
        {
            let responded = ke_data(&payloads, method.id).and_then(|k| {
                KeMethod::from_id(method.id).and_then(|m| ctx.crypto.ke_respond(m, k, ctx.rng).ok())
            });
            let Some((ker, ss)) = responded else {
                let data = method.id.to_be_bytes().to_vec();
                return self.refuse(ctx, &header, notify::INVALID_KE_PAYLOAD, data);
            };
            response_ke = Some(Payload::Ke {
                method: method.id,
                data: ker,
            });
            shared = Some(ss);
        }
        let (ours_i, ours_r) = match &old {
            Some(old) => (old.remote_ts.clone(), old.local_ts.clone()),
            None => (ctx.peer.remote_ts.clone(), local_ts(ctx)),
        };
        let ts_i = narrow(found.tsi.map_or(&[][..], |v| v), &ours_i);
        let ts_r = narrow(found.tsr.map_or(&[][..], |v| v), &ours_r);
        if ts_i.is_empty() || ts_r.is_empty() {
            return self.refuse(ctx, &header, notify::TS_UNACCEPTABLE, vec![]);
        }
        let nr = random(ctx.rng, 32);
        let spi_in = new_esp_spi(ctx.rng, &mut ctx.out.esp_spis);
        let spi_out = u32::from_be_bytes(sel.peer_spi[..4].try_into().expect("checked: 4 bytes"));
        let mut response = vec![
            Payload::Sa(vec![
                sel.chosen
                    .to_wire(sel.number, spi_in.to_be_bytes().to_vec()),
            ]),
            Payload::Nonce(nr.clone()),
        ];
        if !remaining.is_empty() && shared.is_none() {
            // Additional key exchanges with no first one: never seen in the wild.
            return self.refuse(ctx, &header, notify::NO_PROPOSAL_CHOSEN, vec![]);
        }
        response.extend(response_ke);
        response.push(Payload::TsI(ts_i.clone()));
        response.push(Payload::TsR(ts_r.clone()));
        let token = random(ctx.rng, 8);
        if !remaining.is_empty() {
            response.push(notify_payload(
                notify::ADDITIONAL_KEY_EXCHANGE,
                token.clone(),
            ));
        }
        self.send_response(ctx, &header, &response);
        if let Some(old_spi_in) = old_spi_in.filter(|o| self.child_rekey_in_flight() == Some(*o)) {
            // Both sides rekey the same Child SA: both exchanges complete, and the
            // nonces decide which new SA stays once ours is done.
            self.peer_rekeys.child_collision = Some(RekeyCollision {
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
            token,
        );
        self.settle(ctx, f, false)
    }

    /// The method an INVALID_KE_PAYLOAD answer to our request `r` asks for, if we
    /// offered it, sent another, and have not retried already.
    fn asked_ke_method(
        &self,
        ctx: &Ctx<'_>,
        r: &ChildRequest,
        payloads: &[Payload],
    ) -> Option<KeMethod> {
        let sent = r.ke.as_ref()?.method().id();
        let asked = payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.kind == notify::INVALID_KE_PAYLOAD => {
                n.data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
            }
            _ => None,
        })?;
        let offered = (ctx.peer.esp.iter()).any(|p| p.of(tt::KE).any(|a| a.id == asked));
        (!r.ke_retry && offered && asked != sent)
            .then(|| KeMethod::from_id(asked))
            .flatten()
    }

    pub(super) fn on_create_child_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        r: ChildRequest,
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        // Whatever becomes of ours, a crossing rekey is settled now.
        let collision = (self.peer_rekeys.child_collision.take())
            .filter(|c| Some(c.old_spi_in) == r.old_spi_in);
        let failed = |sa: &mut Self, ctx: &mut Ctx<'_>, notify: u16| {
            ctx.out.events.push_back(Event::ChildSaFailed {
                sa: sa.our_spi(),
                notify,
            });
            Ok(())
        };
        if let Some(n) = first_error(payloads) {
            if n == notify::INVALID_KE_PAYLOAD
                && let Some(method) = self.asked_ke_method(ctx, &r, payloads)
            {
                // RFC 7296 section 1.3: the same request with the method asked for.
                ctx.out.esp_spis.remove(&r.spi_in);
                let old = (r.old_spi_in)
                    .and_then(|o| self.children.iter().find(|c| c.spi_in == o).cloned());
                if r.old_spi_in.is_none() || old.is_some() {
                    self.start_child(ctx, old, Some(method))?;
                    return Ok(());
                }
            }
            failed(self, ctx, n)?;
            // The peer does not hold the Child SA we tried to rekey (its Delete crossed
            // our request, or it answered our rekey and lost the pair since): neither
            // should we (RFC 7296 section 2.25).
            if let (notify::CHILD_SA_NOT_FOUND, Some(old)) = (n, r.old_spi_in)
                && let Some(i) = self.children.iter().position(|c| c.spi_in == old)
            {
                self.remove_child(ctx, i);
            }
            return Ok(());
        }
        let found = Found::of(payloads);
        let chosen = found
            .sa
            .and_then(|reply| proposal::verify_reply(reply, &ctx.peer.esp));
        let spi_out = found
            .sa
            .and_then(|reply| reply.first())
            .and_then(|p| esp_spi(&p.spi));
        let (Some(chosen), Some(spi_out), Some(nr), Some(tsi), Some(tsr)) = (
            chosen,
            spi_out,
            found.nonce.filter(valid_nonce),
            found.tsi,
            found.tsr,
        ) else {
            return failed(self, ctx, notify::NO_PROPOSAL_CHOSEN);
        };
        let mut shared = None;
        if let Some(secret) = r.ke {
            let ker = ke_data(payloads, secret.method().id());
            let ss = ker.and_then(|k| ctx.crypto.ke_complete(secret, k).ok());
            if ss.is_none() {
                return failed(self, ctx, notify::INVALID_KE_PAYLOAD);
            }
            shared = ss;
        }
        let Some(remaining) = additional_methods(&chosen) else {
            return failed(self, ctx, notify::NO_PROPOSAL_CHOSEN);
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
            [r.ni, nr.clone()],
            shared,
            remaining,
            find_notify(payloads, notify::ADDITIONAL_KEY_EXCHANGE)
                .map(|n| n.data.clone())
                .unwrap_or_default(),
        );
        self.settle(ctx, f, true)
    }

    /// Deletes one Child SA (its hard lifetime ran out) with an INFORMATIONAL Delete of
    /// our inbound SPI; [`Event::ChildSaDeleted`] follows the peer's answer.
    pub fn delete_child(&mut self, ctx: &mut Ctx<'_>, spi_in: u32) -> Result<Start, FailReason> {
        if self.phase != Phase::Established
            || self.deleting()
            || !self.children.iter().any(|c| c.spi_in == spi_in)
        {
            return Ok(Start::Gone);
        }
        if self.window.outstanding.is_some() {
            return Ok(Start::Busy);
        }
        self.send_child_delete(ctx, spi_in);
        Ok(Start::Started)
    }

    /// Sends the INFORMATIONAL Delete of the Child SA with inbound SPI `spi_in`, after
    /// telling the driver to stop sending on it.
    pub(super) fn send_child_delete(&mut self, ctx: &mut Ctx<'_>, spi_in: u32) {
        let delete = Payload::Delete {
            protocol: protocol::ESP,
            spi_size: 4,
            spis: vec![spi_in.to_be_bytes().to_vec()],
        };
        ctx.out.events.push_back(Event::ChildSaDeleting {
            sa: self.our_spi(),
            spi_in,
        });
        self.send_request(ctx, Request::DeleteChild(spi_in), &[delete]);
    }
}
