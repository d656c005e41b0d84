//! IKE_INTERMEDIATE (RFC 9242) carrying the additional key exchanges of RFC 9370, one
//! exchange per negotiated method. After each, the keys are updated
//! (`SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr)`) and the exchange is chained into
//! IntAuth. IntAuth must be computed with the SK_p keys in force *before* the
//! exchange's own key update (strongSwan and libreswan agree; deriving the new keys
//! first breaks AUTH).

use super::{Ctx, IkeSa, PpkState, Request, first_error, ke_data};
use crate::consts::notify;
use crate::crypto::KeMethod;
use crate::endpoint::events::FailReason;
use crate::message::{Header, Payload};
use crate::protect;

impl IkeSa {
    /// Initiator: the next IKE_INTERMEDIATE, or IKE_AUTH once the PPK question is settled.
    pub(super) fn next_step(&mut self, ctx: &mut Ctx<'_>) -> Result<(), FailReason> {
        let hs = self.hs();
        if let Some(&method_id) = hs.additional_methods.get(hs.done_additional) {
            let method = KeMethod::from_id(method_id)
                .ok_or(FailReason::NoProposalChosen { by_peer: false })?;
            let (secret, data) = ctx.crypto.ke_initiate(method, ctx.rng);
            hs.ke = Some(secret);
            let ke = Payload::Ke {
                method: method_id,
                data,
            };
            let ap = self.send_request(ctx, Request::Intermediate, &[ke]);
            self.hs().intauth_request = ap;
            return Ok(());
        }
        match self.hs().ppk {
            PpkState::Requested { .. } => Ok(()), // IKE_AUTH waits for provide_ppk
            _ => self.send_auth(ctx),
        }
    }

    pub(super) fn on_intermediate_response(
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
        let hs = self.hs();
        let method = (hs.additional_methods.get(hs.done_additional).copied())
            .ok_or(FailReason::Protocol("no key exchange in progress"))?;
        let ker = ke_data(payloads, method).ok_or(FailReason::Protocol(
            "IKE_INTERMEDIATE response lacks the KE payload",
        ))?;
        let shared = hs.complete_ke(ctx, ker, "responder's additional KE data is invalid")?;
        let request_ap = std::mem::take(&mut hs.intauth_request);
        let response_ap = protect::intauth_input(header, first, inner);
        self.update_keys(ctx, &request_ap, &response_ap, &shared);
        self.next_step(ctx)
    }

    pub(super) fn on_intermediate_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        first: u8,
        inner: &[u8],
        payloads: &[Payload],
    ) -> Result<(), FailReason> {
        let request_ap = protect::intauth_input(header, first, inner);
        let hs = self.hs();
        let Some(&method) = hs.additional_methods.get(hs.done_additional) else {
            self.refuse(ctx, header, notify::INVALID_SYNTAX, vec![])?;
            return Err(FailReason::Protocol(
                "IKE_INTERMEDIATE beyond the negotiated key exchanges",
            ));
        };
        let responded = ke_data(payloads, method).and_then(|kei| {
            let method = KeMethod::from_id(method)?;
            ctx.crypto.ke_respond(method, kei, ctx.rng).ok()
        });
        let Some((ker, shared)) = responded else {
            self.refuse(ctx, header, notify::INVALID_SYNTAX, vec![])?;
            return Err(FailReason::Protocol(
                "IKE_INTERMEDIATE request with a missing or invalid KE",
            ));
        };
        let response_ap = self.send_response(ctx, header, &[Payload::Ke { method, data: ker }]);
        self.update_keys(ctx, &request_ap, &response_ap, &shared);
        Ok(())
    }

    /// Chains IntAuth with the keys in force during the exchange, then applies the
    /// RFC 9370 update (in that order, see the module comment).
    fn update_keys(
        &mut self,
        ctx: &mut Ctx<'_>,
        request_ap: &[u8],
        response_ap: &[u8],
        shared: &[u8],
    ) {
        let suite = self.suite();
        let keys = *self.ike_keys();
        let hs = self.hs();
        hs.int_auth.add_exchange(
            ctx.crypto,
            suite.prf,
            &keys.sk_pi,
            &keys.sk_pr,
            request_ap,
            response_ap,
        );
        self.keys = Some(keys.after_additional_ke(ctx.crypto, suite, shared, self.id()));
        self.hs().done_additional += 1;
        self.emit_keys(ctx);
    }
}
