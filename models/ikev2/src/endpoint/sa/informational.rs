//! INFORMATIONAL exchanges: Deletes of the IKE SA and of Child SAs in both roles (RFC
//! 7296 section 1.4.1: the responder answers with its own SPIs of the same pairs), and
//! dead peer detection as strongSwan's `dpd_delay` does it (an empty request after a
//! quiet spell; a peer that never answers fails the SA on the retransmission schedule).

use super::child::esp_spi;
use super::{Ctx, IkeSa, Phase, Request};
use crate::consts::protocol;
use crate::endpoint::events::{Event, FailReason};
use crate::message::{Header, Payload};

impl IkeSa {
    /// We sent a Delete for this IKE SA.
    pub(super) fn deleting(&self) -> bool {
        matches!(self.request(), Some(Request::DeleteIke))
    }

    /// Deletes an established IKE SA (and its Child SAs) with an INFORMATIONAL Delete;
    /// anything else is dropped at once.
    pub fn delete(&mut self, ctx: &mut Ctx<'_>) -> Result<(), FailReason> {
        if self.phase != Phase::Established || self.window.outstanding.is_some() {
            self.phase = Phase::Gone;
            ctx.out.events.push_back(Event::IkeSaDeleted {
                sa: self.our_spi(),
                peer: self.peer,
                by_peer: false,
            });
            return Ok(());
        }
        let delete = Payload::Delete {
            protocol: protocol::IKE,
            spi_size: 0,
            spis: Vec::new(),
        };
        self.send_request(ctx, Request::DeleteIke, &[delete]);
        Ok(())
    }

    /// The peer answered our Delete of this IKE SA.
    pub(super) fn on_delete_response(&mut self, ctx: &mut Ctx<'_>) {
        self.phase = Phase::Gone;
        ctx.out.events.push_back(Event::IkeSaDeleted {
            sa: self.our_spi(),
            peer: self.peer,
            by_peer: false,
        });
    }

    /// The peer answered our Delete of the Child SA with inbound SPI `spi_in`.
    pub(super) fn on_delete_child_response(&mut self, ctx: &mut Ctx<'_>, spi_in: u32) {
        if let Some(i) = self.children.iter().position(|c| c.spi_in == spi_in) {
            self.remove_child(ctx, i);
        }
    }

    /// The peer's INFORMATIONAL: Deletes of Child SAs or of the IKE SA, or an empty
    /// liveness check. Always answered.
    pub(super) fn on_informational_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        payloads: &[Payload],
    ) {
        let esp_spis: Vec<&Vec<u8>> = payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Delete {
                    protocol: protocol::ESP,
                    spis,
                    ..
                } => Some(spis),
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
        self.send_response(ctx, header, &reply);
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
    }

    /// The peer deletes Child SAs (their inbound SPIs = our outbound ones): answer with
    /// our inbound SPIs of the same pairs, unless we are deleting them ourselves.
    fn delete_children(&mut self, ctx: &mut Ctx<'_>, peer_spis: &[&Vec<u8>]) -> Vec<Vec<u8>> {
        let deleting = self.deleting_child();
        let mut ours = Vec::new();
        for spi in peer_spis.iter().filter_map(|s| esp_spi(s)) {
            if let Some(i) = self.children.iter().position(|c| c.spi_out == spi) {
                let c = self.remove_child(ctx, i);
                if deleting != Some(c.spi_in) {
                    ours.push(c.spi_in.to_be_bytes().to_vec());
                }
            }
        }
        ours
    }

    /// An authenticated message arrived: the peer is alive, the next check moves on.
    pub(super) fn heard_from_peer(&mut self, ctx: &Ctx<'_>) {
        self.dpd_at = ctx
            .peer
            .timers
            .dpd_delay_ns
            .map(|d| ctx.now.saturating_add(d));
    }

    /// A liveness check can go out now (window size 1: not beside another request).
    pub(super) fn liveness_possible(&self) -> bool {
        self.phase == Phase::Established && self.window.outstanding.is_none()
    }

    /// Sends an empty INFORMATIONAL request; its response proves the peer alive, and no
    /// response after every retransmission fails the SA. Ignored while another request
    /// is outstanding (that one tests liveness already).
    pub fn check_liveness(&mut self, ctx: &mut Ctx<'_>) -> Result<(), FailReason> {
        if self.liveness_possible() {
            self.dpd_at = None;
            self.send_request(ctx, Request::Liveness, &[]);
        }
        Ok(())
    }
}
