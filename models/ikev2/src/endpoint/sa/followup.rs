//! After a rekey's CREATE_CHILD_SA: its additional key exchanges, one IKE_FOLLOWUP_KE
//! exchange each (RFC 9370 section 2.2.4: the responder's ADDITIONAL_KEY_EXCHANGE
//! token echoed in the next request, STATE_NOT_FOUND for an unknown token, no token in
//! the last response), then the new Child SA or IKE SA. Crossing rekeys are settled
//! here once both are complete (RFC 7296 sections 2.8.1 and 2.8.2: the exchange
//! holding the lowest of the four nonces loses, alike on both sides), and a rekeyed IKE
//! SA hands its Child SAs over to its successor.

use super::child::{NewChild, RekeyCollision};
use super::{Ctx, IkeSa, Phase, Request, Suite, first_error, ke_data, notify_payload};
use crate::consts::notify;
use crate::crypto::{KeMethod, KeSecret};
use crate::endpoint::events::{Event, FailReason};
use crate::keys::SaIdentity;
use crate::message::{Header, Payload, find_notify};
use crate::proposal::ProposalSpec;

/// What a CREATE_CHILD_SA makes once all its key exchanges are done.
pub(super) enum Creating {
    /// A Child SA replacing the one whose inbound SPI is `old_spi_in`, or a new one.
    Child {
        old_spi_in: Option<u32>,
        spi_in: u32,
        spi_out: u32,
        chosen: ProposalSpec,
        local_ts: Vec<crate::message::TrafficSelector>,
        remote_ts: Vec<crate::message::TrafficSelector>,
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
pub(super) struct IkeCrossing {
    /// Our rekey, complete.
    ours: Option<Followup>,
    /// Our rekey failed: the peer's goes on as an ordinary rekey.
    ours_failed: bool,
    /// The peer's rekey, complete.
    theirs: Option<Followup>,
}

/// A rekey between its CREATE_CHILD_SA and its last IKE_FOLLOWUP_KE.
pub(super) struct Followup {
    pub creating: Creating,
    /// We sent the CREATE_CHILD_SA request.
    initiated: bool,
    /// Ni and Nr of the CREATE_CHILD_SA.
    nonces: [Vec<u8>; 2],
    /// SK(0), from the CREATE_CHILD_SA's own key exchange.
    shared: Option<Vec<u8>>,
    /// SK(1), SK(2), ... so far.
    additional_secrets: Vec<Vec<u8>>,
    /// Additional key exchange methods still to run, in order.
    remaining: Vec<KeMethod>,
    /// The responder's ADDITIONAL_KEY_EXCHANGE data, echoed in the next request.
    token: Vec<u8>,
    /// As initiator: the secret of the key share in flight.
    secret: Option<KeSecret>,
}

impl Followup {
    /// Right after the CREATE_CHILD_SA: SK(0) known, `remaining` still to run.
    pub(super) fn new(
        creating: Creating,
        initiated: bool,
        nonces: [Vec<u8>; 2],
        shared: Option<Vec<u8>>,
        remaining: Vec<KeMethod>,
        token: Vec<u8>,
    ) -> Self {
        Followup {
            creating,
            initiated,
            nonces,
            shared,
            additional_secrets: Vec::new(),
            remaining,
            token,
            secret: None,
        }
    }

    /// The lower of the exchange's two nonces (octet by octet, a prefix lower).
    fn lowest_nonce(&self) -> &[u8] {
        self.nonces[0].as_slice().min(self.nonces[1].as_slice())
    }
}

impl IkeSa {
    /// After a rekey's key exchange: the next IKE_FOLLOWUP_KE (our request, or waiting
    /// for the peer's), or, when none is left, the new SA.
    pub(super) fn settle(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut f: Followup,
        ours: bool,
    ) -> Result<(), FailReason> {
        let Some(&method) = f.remaining.first() else {
            self.finish_rekey(ctx, f);
            return Ok(());
        };
        if !ours {
            self.peer_rekeys.followup = Some(Box::new(f));
            return Ok(());
        }
        let (secret, data) = ctx.crypto.ke_initiate(method, ctx.rng);
        let payloads = [
            Payload::Ke {
                method: method.id(),
                data,
            },
            notify_payload(notify::ADDITIONAL_KEY_EXCHANGE, f.token.clone()),
        ];
        f.secret = Some(secret);
        self.send_request(ctx, Request::Followup(Box::new(f)), &payloads);
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

    pub(super) fn on_followup_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut f: Followup,
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        if let Some(n) = first_error(payloads) {
            self.rekey_failed(ctx, &f.creating, n);
            return Ok(());
        }
        let ss = f.secret.take().and_then(|secret| {
            let ker = ke_data(payloads, secret.method().id())?;
            ctx.crypto.ke_complete(secret, ker).ok()
        });
        let Some(ss) = ss else {
            self.rekey_failed(ctx, &f.creating, notify::INVALID_KE_PAYLOAD);
            return Ok(());
        };
        f.additional_secrets.push(ss);
        f.remaining.remove(0);
        match find_notify(payloads, notify::ADDITIONAL_KEY_EXCHANGE) {
            Some(token) => f.token = token.data.clone(),
            None if !f.remaining.is_empty() => {
                self.rekey_failed(ctx, &f.creating, notify::INVALID_SYNTAX);
                return Ok(());
            }
            None => {}
        }
        self.settle(ctx, f, true)
    }

    pub(super) fn on_followup_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        let token = find_notify(payloads, notify::ADDITIONAL_KEY_EXCHANGE);
        let pending = (self.peer_rekeys.followup)
            .take_if(|f| token.is_some_and(|t| t.data == f.token) && !f.remaining.is_empty());
        let Some(mut f) = pending else {
            // Nothing pending under that token (RFC 9370 section 2.2.4).
            return self.refuse(ctx, header, notify::STATE_NOT_FOUND, vec![]);
        };
        let method = f.remaining.remove(0);
        let responded = ke_data(payloads, method.id())
            .and_then(|k| ctx.crypto.ke_respond(method, k, ctx.rng).ok());
        let Some((ker, ss)) = responded else {
            let data = method.id().to_be_bytes().to_vec();
            return self.refuse(ctx, header, notify::INVALID_KE_PAYLOAD, data);
        };
        f.additional_secrets.push(ss);
        let mut response = vec![Payload::Ke {
            method: method.id(),
            data: ker,
        }];
        if !f.remaining.is_empty() {
            response.push(notify_payload(
                notify::ADDITIONAL_KEY_EXCHANGE,
                f.token.clone(),
            ));
        }
        self.send_response(ctx, header, &response);
        self.settle(ctx, *f, false)
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
                        additional_secrets: &f.additional_secrets,
                        local_ts,
                        remote_ts,
                    },
                );
                let Some(child) = child else {
                    // Not reached: both sides accepted the proposal, so its AEAD is one
                    // we run.
                    ctx.out.events.push_back(Event::ChildSaFailed {
                        sa: self.our_spi(),
                        notify: notify::NO_PROPOSAL_CHOSEN,
                    });
                    return;
                };
                self.add_child(child.clone());
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
                let collision = collision.or_else(|| {
                    (self.peer_rekeys.child_collision).take_if(|c| c.old_spi_in == old_spi_in)
                });
                // The new SA is in place: delete the old one (RFC 7296 section 2.8).
                // After a collision, the exchange with the lowest of the four nonces
                // lost: its initiator deletes the new SA it made instead, and the
                // winner deletes the old one. Both sides decide alike.
                let ours = f.nonces[0].as_slice().min(f.nonces[1].as_slice());
                let lost = collision.is_some_and(|c| ours < c.lowest_nonce.as_slice());
                let doomed = if lost { spi_in } else { old_spi_in };
                self.send_child_delete(ctx, doomed);
            }
            Creating::Ike { .. } if self.peer_rekeys.ike_crossing.is_some() => {
                let c = (self.peer_rekeys.ike_crossing.as_mut()).expect("checked");
                match f.initiated {
                    true => c.ours = Some(f),
                    false => c.theirs = Some(f),
                }
                if c.ours_failed || (c.ours.is_some() && c.theirs.is_some()) {
                    let c = (self.peer_rekeys.ike_crossing.take()).expect("checked");
                    match (c.ours, c.theirs) {
                        (Some(ours), Some(theirs)) => self.settle_ike_crossing(ctx, ours, theirs),
                        (_, Some(theirs)) => self.finish_rekey(ctx, theirs),
                        _ => {}
                    }
                }
            }
            Creating::Ike { .. } => {
                let initiated = f.initiated;
                if let Some(new) = self.hand_over(ctx, f, true) {
                    ctx.out.new_sas.push(new);
                }
                if initiated {
                    // The successor is in place: the rekey's initiator deletes the old SA.
                    let _ = self.delete(ctx);
                }
            }
        }
    }

    /// Our IKE SA rekey failed. A crossing rekey of the peer's then stands alone.
    pub(super) fn ike_rekey_failed(&mut self, ctx: &mut Ctx<'_>, notify: u16) {
        ctx.out.events.push_back(Event::IkeSaRekeyFailed {
            sa: self.our_spi(),
            notify,
        });
        if let Some(c) = self.peer_rekeys.ike_crossing.as_mut() {
            c.ours_failed = true;
            if let Some(theirs) = c.theirs.take() {
                self.peer_rekeys.ike_crossing = None;
                self.finish_rekey(ctx, theirs);
            }
        }
    }

    /// Both crossing IKE SA rekeys are complete: the exchange holding the lowest of the
    /// four nonces lost. Both successors exist on both sides; the winner's takes the
    /// Child SAs, the loser's is deleted by its initiator, and the winner's initiator
    /// deletes the old SA.
    fn settle_ike_crossing(&mut self, ctx: &mut Ctx<'_>, ours: Followup, theirs: Followup) {
        let lost = ours.lowest_nonce() < theirs.lowest_nonce();
        let (winner, loser) = if lost { (theirs, ours) } else { (ours, theirs) };
        for (f, wins) in [(loser, false), (winner, true)] {
            let initiated = f.initiated;
            let Some(mut new) = self.hand_over(ctx, f, wins) else {
                continue;
            };
            if !wins && initiated {
                let _ = new.delete(ctx);
            }
            ctx.out.new_sas.push(new);
        }
        if !lost {
            let _ = self.delete(ctx);
        }
    }

    /// Creates the successor of this IKE SA that a completed IKE SA rekey `f` made,
    /// keyed `SKEYSEED = prf(SK_d, g^ir | Ni | Nr | SK(1) | ... | SK(k))` under the new
    /// SPIs (initiator's, then responder's, of the rekey exchange) with the proposal
    /// the rekey chose. The successor `takes_over` the Child SAs (and is reported as
    /// the rekeyed SA) unless it lost a crossing.
    fn hand_over(&mut self, ctx: &mut Ctx<'_>, f: Followup, takes_over: bool) -> Option<IkeSa> {
        let Creating::Ike {
            chosen,
            spis: [spi_i, spi_r],
        } = f.creating
        else {
            return None;
        };
        // An IKE SA rekey always runs a key exchange in its CREATE_CHILD_SA.
        let shared = f.shared?;
        let [ni, nr] = f.nonces;
        // The suite the rekey chose (its PRF is the old one: both ends insist on it).
        let suite = Suite::from_proposal(&chosen)?;
        let mut new = IkeSa::blank(self.peer, f.initiated, spi_i, spi_r, self.remote);
        let id = SaIdentity {
            ni: &ni,
            nr: &nr,
            spi_i,
            spi_r,
        };
        let additional: Vec<&[u8]> = f.additional_secrets.iter().map(Vec::as_slice).collect();
        let keys = self
            .ike_keys()
            .rekeyed(ctx.crypto, suite, &shared, &additional, id);
        new.keys = Some(keys);
        new.handshake = None;
        new.phase = Phase::Established;
        new.suite = Some(suite);
        new.chosen = Some(chosen);
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
                keys: *new.ike_keys(),
                keylog: new.keylog(),
            });
        }
        Some(new)
    }
}
