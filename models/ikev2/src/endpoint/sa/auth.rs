//! IKE_AUTH: PSK authentication over the signed octets of RFC 7296 section 2.15 (with
//! IntAuth after IKE_INTERMEDIATE), RFC 8784 PPKs (asked of the driver by event; the
//! key ID sent as PPK_ID_FIXED; `required` fails without one, `optional` goes on with
//! NO_PPK_AUTH and reports the downgrade), and the first Child SA.

use super::child::NewChild;
use super::transport::{AuthKeys, new_esp_spi};
use super::{Ctx, Found, IkeSa, Phase, PpkState, Request, first_error, notify_payload};
use crate::consts::{auth_method, notify, ppk_id_type, transform_type as tt};
use crate::crypto::AeadAlg;
use crate::endpoint::config::PpkPolicy;
use crate::endpoint::events::{DowngradeReason, Event, FailReason, Ppk, PpkOutcome};
use crate::keys::{IkeKeys, SignedOctets, psk_auth};
use crate::message::{Header, Payload, find_notify};
use crate::proposal::{self, Preference, ProposalSpec};

/// Errors in an IKE_AUTH response about the first Child SA only: the IKE SA comes up
/// without it (RFC 7296 section 2.21.2).
const CHILD_SA_ERRORS: [u16; 5] = [
    notify::NO_PROPOSAL_CHOSEN,
    notify::TS_UNACCEPTABLE,
    notify::SINGLE_PAIR_REQUIRED,
    notify::INTERNAL_ADDRESS_FAILURE,
    notify::FAILED_CP_REQUIRED,
];

impl IkeSa {
    /// The AUTH data of one side: `prf(prf(PSK, "Key Pad for IKEv2"), <signed octets>)`.
    fn auth(
        &self,
        ctx: &Ctx<'_>,
        sk_p: &[u8],
        as_initiator: bool,
        id_rest: &[u8],
        mid: u32,
    ) -> Vec<u8> {
        let hs = self
            .handshake
            .as_ref()
            .expect("IKE_AUTH runs in the handshake");
        let int_auth = hs.int_auth.for_auth(mid);
        let o = if as_initiator {
            SignedOctets {
                real_message: &hs.init_request,
                peer_nonce: &hs.nr,
                id_rest,
                int_auth: &int_auth,
            }
        } else {
            SignedOctets {
                real_message: &hs.init_response,
                peer_nonce: &hs.ni,
                id_rest,
                int_auth: &int_auth,
            }
        };
        psk_auth(ctx.crypto, self.suite().prf, &ctx.peer.psk, sk_p, o)
    }

    /// The SA goes on without the PPK it wanted: a downgrade, or `fail` if the PPK is
    /// required.
    pub(super) fn go_without_ppk(
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

    pub(super) fn send_auth(&mut self, ctx: &mut Ctx<'_>) -> Result<(), FailReason> {
        let keys = *self.ike_keys();
        let ppk = match std::mem::replace(&mut self.hs().ppk, PpkState::NotWanted) {
            PpkState::Have(p) => Some(p),
            PpkState::Unavailable => {
                self.go_without_ppk(ctx, FailReason::PpkUnavailable, DowngradeReason::NoKeyHere)?;
                None
            }
            _ => None,
        };
        let mid = self.window.next_mid();
        let id_rest = ctx.peer.local_id.rest_of_payload();
        let prf = self.suite().prf;
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
        if !(ctx.peer.childless && self.hs().peer_childless) {
            let spi = new_esp_spi(ctx.rng, &mut ctx.out.esp_spis);
            self.hs().child_spi = spi;
            payloads.push(Payload::Sa(super::child::esp_offer(
                &ctx.peer.esp,
                spi,
                false,
            )));
            payloads.push(Payload::TsI(super::child::local_ts(ctx)));
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
        self.send_request(ctx, Request::Auth(Box::new((keys, mixed))), &payloads);
        Ok(())
    }

    pub(super) fn on_auth_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: Header,
        payloads: Vec<Payload>,
    ) -> Result<(), FailReason> {
        let hs = self.hs();
        if hs.done_additional < hs.additional_methods.len() {
            self.refuse(ctx, &header, notify::INVALID_SYNTAX, vec![])?;
            return Err(FailReason::Protocol(
                "IKE_AUTH before every additional key exchange",
            ));
        }
        self.select_peer_by_id(ctx, &payloads);
        let ppk_id = find_notify(&payloads, notify::PPK_IDENTITY).map(|n| n.data.clone());
        if self.hs().use_ppk
            && let Some(id) = ppk_id
        {
            // Only PPK_ID_FIXED is accepted (as strongSwan and libreswan do).
            if id.first() == Some(&ppk_id_type::FIXED) && id.len() > 1 {
                let key_id = id[1..].to_vec();
                let hs = self.hs();
                hs.pending_auth = Some((header, payloads));
                hs.ppk = PpkState::Requested {
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

    /// Several peer configurations may share the peer's address (several tunnels between
    /// two gateways): the initiator's ID says which one this IKE SA is for, as strongSwan
    /// picks its peer config by identities in IKE_AUTH. (IKE_SA_INIT was answered with
    /// the first configuration for the address; its proposals should agree.)
    fn select_peer_by_id(&mut self, ctx: &mut Ctx<'_>, payloads: &[Payload]) {
        let Some((id_type, id)) = Found::of(payloads).idi else {
            return;
        };
        let wanted = (id_type, id.clone());
        if ctx.peer.remote_id.to_wire() == wanted {
            return;
        }
        let address = ctx.peer.remote.ip();
        let peers = ctx.peers;
        if let Some(p) = peers
            .iter()
            .position(|c| c.remote.ip() == address && c.remote_id.to_wire() == wanted)
        {
            self.peer = p;
            ctx.peer = &peers[p];
        }
    }

    /// The driver's PPK answer.
    pub fn on_ppk(&mut self, ctx: &mut Ctx<'_>, ppk: Option<Ppk>) -> Result<(), FailReason> {
        let Some(hs) = self.handshake.as_mut() else {
            return Ok(()); // a late answer: the SA is up already
        };
        if !matches!(hs.ppk, PpkState::Requested { .. }) {
            return Ok(()); // a late or unasked answer
        }
        if self.initiator {
            hs.ppk = match ppk {
                Some(p) => PpkState::Have(p),
                None if ctx.peer.ppk == PpkPolicy::Required => {
                    return Err(FailReason::PpkUnavailable);
                }
                None => PpkState::Unavailable,
            };
            let ready = self.window.outstanding.is_none()
                && hs.done_additional == hs.additional_methods.len();
            return if ready && self.phase == Phase::Initiating {
                self.send_auth(ctx)
            } else {
                Ok(())
            };
        }
        hs.ppk = PpkState::NotWanted;
        match hs.pending_auth.take() {
            Some((header, payloads)) => self.finish_auth(ctx, header, payloads, ppk.map(|p| p.key)),
            None => Ok(()),
        }
    }

    /// Responder: answers an IKE_AUTH request with AUTHENTICATION_FAILED; the SA fails.
    fn fail_auth(&mut self, ctx: &mut Ctx<'_>, request: &Header) -> Result<(), FailReason> {
        self.refuse(ctx, request, notify::AUTHENTICATION_FAILED, vec![])?;
        Err(FailReason::AuthenticationFailed { by_peer: false })
    }

    /// Responder: the keys the initiator's AUTH verifies under (with the PPK when there
    /// is one, else through NO_PPK_AUTH when our policy allows), with the PPK outcome;
    /// `None` if it verifies under none.
    fn verified_keys(
        &mut self,
        ctx: &Ctx<'_>,
        payloads: &[Payload],
        auth: &[u8],
        mid: u32,
        ppk: Option<Vec<u8>>,
    ) -> Option<IkeKeys> {
        let id_rest = ctx.peer.remote_id.rest_of_payload();
        let keys = *self.ike_keys();
        let prf = self.suite().prf;
        let use_ppk = self.hs().use_ppk;
        let ppk_sent = find_notify(payloads, notify::PPK_IDENTITY)
            .map(|n| n.data.get(1..).unwrap_or_default().to_vec());
        let no_ppk_auth = find_notify(payloads, notify::NO_PPK_AUTH).map(|n| n.data.clone());
        let verify = |sa: &Self, k: &IkeKeys, data: &[u8]| {
            sa.auth(ctx, &k.sk_pi, true, &id_rest, mid) == data
        };
        let mixed = ppk.map(|key| keys.mix_ppk_rfc8784(ctx.crypto, prf, &key));
        match (&mixed, use_ppk && ppk_sent.is_some()) {
            (Some(m), true) if verify(self, m, auth) => {
                self.ppk_outcome = PpkOutcome::Used {
                    id: ppk_sent.unwrap_or_default(),
                };
                mixed
            }
            (_, true) => {
                // No key for the ID, or a different one: only NO_PPK_AUTH can save it.
                let fallback = ctx.peer.ppk == PpkPolicy::Optional
                    && no_ppk_auth.as_ref().is_some_and(|d| verify(self, &keys, d));
                if !fallback {
                    return None;
                }
                self.ppk_outcome = PpkOutcome::Downgraded {
                    reason: DowngradeReason::PeerHadNoKey,
                };
                Some(keys)
            }
            (_, false) => {
                // `required` means no IKE SA without a PPK: not when the initiator sent
                // no PPK_IDENTITY, nor when it never offered USE_PPK at all.
                if ctx.peer.ppk == PpkPolicy::Required {
                    return None;
                }
                if !verify(self, &keys, auth) {
                    return None;
                }
                if use_ppk || ctx.peer.ppk != PpkPolicy::Disabled {
                    let reason = if use_ppk {
                        DowngradeReason::NoKeyHere
                    } else {
                        DowngradeReason::PeerLacksPpk
                    };
                    self.ppk_outcome = PpkOutcome::Downgraded { reason };
                }
                Some(keys)
            }
        }
    }

    /// Responder: verifies the initiator's AUTH, answers, installs the Child SA.
    fn finish_auth(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: Header,
        payloads: Vec<Payload>,
        ppk: Option<Vec<u8>>,
    ) -> Result<(), FailReason> {
        let mid = header.message_id;
        let found = Found::of(&payloads);
        let expected_id = ctx.peer.remote_id.to_wire();
        let (Some((id_type, id_data)), Some(auth)) = (found.idi, found.auth) else {
            return self.fail_auth(ctx, &header);
        };
        if (id_type, id_data) != (expected_id.0, &expected_id.1) {
            return self.fail_auth(ctx, &header);
        }
        let Some(final_keys) = self.verified_keys(ctx, &payloads, auth, mid, ppk) else {
            return self.fail_auth(ctx, &header);
        };
        self.keys = Some(final_keys);

        let our_id = ctx.peer.local_id.rest_of_payload();
        let our_auth = self.auth(ctx, &self.ike_keys().sk_pr, false, &our_id, mid);
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
        if let Some(offered) = found.sa {
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
                    && s.chosen
                        .chosen(tt::ENCR)
                        .and_then(|a| AeadAlg::from_algorithm(&a))
                        .is_some()
            });
            let ts_i = super::child::narrow(found.tsi.map_or(&[][..], |v| v), &ctx.peer.remote_ts);
            let ts_r = super::child::narrow(
                found.tsr.map_or(&[][..], |v| v),
                &super::child::local_ts(ctx),
            );
            match sel {
                None => response.push(notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])),
                Some(_) if ts_i.is_empty() || ts_r.is_empty() => {
                    response.push(notify_payload(notify::TS_UNACCEPTABLE, vec![]))
                }
                Some(s) => {
                    let spi_in = new_esp_spi(ctx.rng, &mut ctx.out.esp_spis);
                    let spi_out = u32::from_be_bytes(s.peer_spi[..4].try_into().expect("4 bytes"));
                    response.push(Payload::Sa(vec![
                        s.chosen.to_wire(s.number, spi_in.to_be_bytes().to_vec()),
                    ]));
                    response.push(Payload::TsI(ts_i.clone()));
                    response.push(Payload::TsR(ts_r.clone()));
                    let hs = self.hs();
                    let (ni, nr) = (hs.ni.clone(), hs.nr.clone());
                    child = self.child_sa(
                        ctx,
                        NewChild {
                            chosen: &s.chosen,
                            spi_in,
                            spi_out,
                            initiated: false,
                            nonces: [&ni, &nr],
                            shared: None,
                            additional_secrets: &[],
                            local_ts: ts_r,
                            remote_ts: ts_i,
                        },
                    );
                }
            }
        }
        if matches!(self.ppk_outcome, PpkOutcome::Used { .. }) {
            response.push(notify_payload(notify::PPK_IDENTITY, vec![]));
        }
        self.send_response(ctx, &header, &response);
        self.established(ctx);
        if let Some(child) = child {
            self.add_child(child.clone());
            ctx.out.events.push_back(Event::ChildSaReady {
                sa: self.spi_r,
                child,
            });
        }
        Ok(())
    }

    pub(super) fn on_auth_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        (plain, mixed): AuthKeys,
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        match first_error(payloads) {
            Some(notify::AUTHENTICATION_FAILED) => {
                return Err(FailReason::AuthenticationFailed { by_peer: true });
            }
            Some(n) if CHILD_SA_ERRORS.contains(&n) => {}
            None => {}
            Some(n) => return Err(FailReason::PeerError { notify: n }),
        }
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
        let found = Found::of(payloads);
        let expected_id = ctx.peer.remote_id.to_wire();
        let id_ok = found
            .idr
            .is_some_and(|(t, d)| (t, d) == (expected_id.0, &expected_id.1));
        let id_rest = ctx.peer.remote_id.rest_of_payload();
        let mid = self.window.last_mid();
        let auth_ok = found
            .auth
            .is_some_and(|a| *a == self.auth(ctx, &keys.sk_pr, false, &id_rest, mid));
        if !(id_ok && auth_ok) {
            return Err(FailReason::AuthenticationFailed { by_peer: false });
        }
        self.keys = Some(keys);
        let hs = self.hs();
        let (ni, nr, spi_in) = (hs.ni.clone(), hs.nr.clone(), hs.child_spi);
        self.established(ctx);
        if let Some(n) = CHILD_SA_ERRORS
            .into_iter()
            .find(|&k| find_notify(payloads, k).is_some())
        {
            ctx.out.events.push_back(Event::ChildSaFailed {
                sa: self.spi_i,
                notify: n,
            });
            return Ok(());
        }
        if let (Some(reply), Some(tsi), Some(tsr)) = (found.sa, found.tsi, found.tsr) {
            let ours: Vec<ProposalSpec> = ctx
                .peer
                .esp
                .iter()
                .map(ProposalSpec::without_key_exchange)
                .collect();
            let chosen = proposal::verify_reply(reply, &ours);
            let peer_spi = reply
                .first()
                .and_then(|p| <[u8; 4]>::try_from(&p.spi[..]).ok())
                .map(u32::from_be_bytes);
            let child = match (chosen, peer_spi) {
                (Some(c), Some(spi_out)) => self.child_sa(
                    ctx,
                    NewChild {
                        chosen: &c,
                        spi_in,
                        spi_out,
                        initiated: true,
                        nonces: [&ni, &nr],
                        shared: None,
                        additional_secrets: &[],
                        local_ts: tsi.clone(),
                        remote_ts: tsr.clone(),
                    },
                ),
                _ => None,
            };
            match child {
                Some(child) => {
                    self.add_child(child.clone());
                    ctx.out.events.push_back(Event::ChildSaReady {
                        sa: self.spi_i,
                        child,
                    });
                }
                None => ctx.out.events.push_back(Event::ChildSaFailed {
                    sa: self.spi_i,
                    notify: notify::NO_PROPOSAL_CHOSEN,
                }),
            }
        }
        Ok(())
    }
}
