//! Rekeying the IKE SA with CREATE_CHILD_SA (RFC 7296 section 2.18): our request
//! (`SA` with our new SPI, `Ni`, `KEi` of the negotiated method), the peer's (refused
//! with TEMPORARY_FAILURE while a Child SA exchange this SA must still carry is under
//! way, as strongSwan does), and the response. Additional key exchanges and the
//! successor SA follow in [`super::followup`].

use rand_core::CryptoRng;

use crate::proposal::ProposalSpec;

use super::followup::{Creating, Followup};
use super::{
    Ctx, Found, IkeSa, Phase, Request, first_error, ke_data, notify_payload, random, valid_nonce,
};
use crate::consts::{notify, transform_type as tt};
use crate::crypto::{KeMethod, KeSecret, Suite};
use crate::endpoint::events::{FailReason, Start};
use crate::message::{Header, Payload, find_notify};
use crate::proposal::{self, Preference};

use super::child::additional_methods;

/// Our IKE SA rekey in flight: the successor's SPI (ours), our nonce and key share.
pub(super) struct IkeRekey {
    spi: u64,
    ni: Vec<u8>,
    ke: KeSecret,
    /// The proposals offered, in order (the reply names one by number).
    offered: Vec<ProposalSpec>,
}

/// What an IKE SA rekey offers: like strongSwan, every configured IKE proposal in
/// configuration order, each narrowed to the PRF of the SA being rekeyed (it keys
/// SKEYSEED with the old SK_d; both ends keep it, RFC 7296 2.18) and to the key exchange
/// method of the share we send; proposals without them are left out. The SA's own
/// proposal if nothing else remains.
fn rekey_offer(config: &[ProposalSpec], current: &ProposalSpec) -> Vec<ProposalSpec> {
    let (prf, ke) = (current.chosen(tt::PRF), current.chosen(tt::KE));
    let offer: Vec<ProposalSpec> = config
        .iter()
        .filter(|p| p.of(tt::PRF).any(|a| Some(*a) == prf) && p.of(tt::KE).any(|a| Some(*a) == ke))
        .map(|p| {
            let mut p = p.clone();
            p.algorithms.retain(|a| match a.kind {
                tt::PRF => Some(*a) == prf,
                tt::KE => Some(*a) == ke,
                _ => true,
            });
            p
        })
        .collect();
    if offer.is_empty() {
        vec![current.clone()]
    } else {
        offer
    }
}

/// A non-zero IKE SPI.
fn random_ike_spi(rng: &mut dyn CryptoRng) -> u64 {
    loop {
        let mut b = [0u8; 8];
        rng.fill_bytes(&mut b);
        let spi = u64::from_be_bytes(b);
        if spi != 0 {
            return spi;
        }
    }
}

impl IkeSa {
    /// Our IKE SA rekey is in flight: its CREATE_CHILD_SA or an IKE_FOLLOWUP_KE.
    fn ike_rekey_in_flight(&self) -> bool {
        match self.request() {
            Some(Request::IkeRekey(_)) => true,
            Some(Request::Followup(f)) => matches!(f.creating, Creating::Ike { .. }),
            _ => false,
        }
    }

    /// Starts rekeying this IKE SA (RFC 7296 section 2.18):
    /// `SA(our new SPI), Ni, KEi` with the negotiated key exchange method.
    pub fn rekey_ike(&mut self, ctx: &mut Ctx<'_>) -> Result<Start, FailReason> {
        if self.phase != Phase::Established || self.deleting() {
            return Ok(Start::Gone);
        }
        let Some(chosen) = self.chosen.clone() else {
            return Ok(Start::Gone);
        };
        let ke_id = chosen.chosen(tt::KE).map_or(0, |a| a.id);
        let Some(method) = KeMethod::from_id(ke_id) else {
            return Ok(Start::Unsupported);
        };
        if self.window.outstanding.is_some() {
            return Ok(Start::Busy);
        }
        let spi = random_ike_spi(ctx.rng);
        let ni = random(ctx.rng, 32);
        let (ke, data) = ctx.crypto.ke_initiate(method, ctx.rng);
        let offered = rekey_offer(&ctx.peer.ike, &chosen);
        let payloads = [
            Payload::Sa(
                (offered.iter().enumerate())
                    .map(|(i, p)| p.to_wire(i as u8 + 1, spi.to_be_bytes().to_vec()))
                    .collect(),
            ),
            Payload::Nonce(ni.clone()),
            Payload::Ke {
                method: method.id(),
                data,
            },
        ];
        let request = Request::IkeRekey(IkeRekey {
            spi,
            ni,
            ke,
            offered,
        });
        self.send_request(ctx, request, &payloads);
        Ok(Start::Started)
    }

    pub(super) fn on_ike_rekey_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        let ours_running = self.ike_rekey_in_flight();
        let child_exchange = matches!(
            self.request(),
            Some(Request::Child(_) | Request::DeleteChild(_) | Request::Followup(_))
        ) && !ours_running;
        if child_exchange
            || self.peer_rekeys.followup.is_some()
            || self.peer_rekeys.ike_crossing.is_some()
        {
            // Busy with a Child SA rekey or Delete (whose answer the old SA must still
            // carry): the peer retries later (RFC 7296 section 2.25; strongSwan refuses
            // while a Child SA is half-open or being deleted, too).
            return self.refuse(ctx, header, notify::TEMPORARY_FAILURE, vec![]);
        }
        let found = Found::of(payloads);
        if found.nonce.is_some_and(|n| !valid_nonce(&n)) {
            return self.refuse(ctx, header, notify::INVALID_SYNTAX, vec![]);
        }
        let prf = self.suite().prf;
        // Same PRF as before (the old SK_d keys it), and known additional methods.
        let sel = found.sa.and_then(|offered| {
            proposal::select(offered, &ctx.peer.ike, Preference::Initiator).filter(|s| {
                s.peer_spi.len() == 8
                    && additional_methods(&s.chosen).is_some()
                    && Suite::from_proposal(&s.chosen).is_some_and(|suite| suite.prf == prf)
            })
        });
        let (Some(sel), Some(ni)) = (sel, found.nonce.cloned()) else {
            return self.refuse(ctx, header, notify::NO_PROPOSAL_CHOSEN, vec![]);
        };
        let ke_id = sel.chosen.chosen(tt::KE).map_or(0, |a| a.id);
        let (Some(method), Some((m, kei))) = (KeMethod::from_id(ke_id), found.ke) else {
            return self.refuse(ctx, header, notify::NO_PROPOSAL_CHOSEN, vec![]);
        };
        if m != ke_id {
            let data = ke_id.to_be_bytes().to_vec();
            return self.refuse(ctx, header, notify::INVALID_KE_PAYLOAD, data);
        }
        let Ok((ker, shared)) = ctx.crypto.ke_respond(method, kei, ctx.rng) else {
            return self.refuse(ctx, header, notify::INVALID_SYNTAX, vec![]);
        };
        let peer_spi = u64::from_be_bytes(sel.peer_spi[..8].try_into().expect("checked: 8 bytes"));
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
        let remaining = additional_methods(&sel.chosen).unwrap_or_default();
        let token = random(ctx.rng, 8);
        if !remaining.is_empty() {
            response.push(notify_payload(
                notify::ADDITIONAL_KEY_EXCHANGE,
                token.clone(),
            ));
        }
        self.send_response(ctx, header, &response);
        if ours_running {
            // Both sides rekey this IKE SA: both exchanges go on, the nonces decide.
            self.peer_rekeys.ike_crossing = Some(Box::default());
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
            token,
        );
        self.settle(ctx, f, false)
    }

    pub(super) fn on_ike_rekey_response(
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
        let found = Found::of(payloads);
        let chosen = found
            .sa
            .and_then(|reply| proposal::verify_reply(reply, &r.offered));
        let peer_spi = found
            .sa
            .and_then(|reply| reply.first())
            .and_then(|p| <[u8; 8]>::try_from(&p.spi[..]).ok())
            .map(u64::from_be_bytes);
        let ker = ke_data(payloads, r.ke.method().id());
        let (Some(chosen), Some(peer_spi), Some(nr), Some(ker)) =
            (chosen, peer_spi, found.nonce.filter(valid_nonce), ker)
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
            [r.ni, nr.clone()],
            Some(shared),
            remaining,
            find_notify(payloads, notify::ADDITIONAL_KEY_EXCHANGE)
                .map(|n| n.data.clone())
                .unwrap_or_default(),
        );
        self.settle(ctx, f, true)
    }
}
