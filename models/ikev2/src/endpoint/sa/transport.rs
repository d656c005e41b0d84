//! Moving an IKE SA's messages: the message-ID window (window size 1, RFC 7296 section
//! 2.3), sealing under SK_e with RFC 7383 fragmentation when negotiated, sending,
//! retransmitting on strongSwan's schedule, replaying cached responses, and opening
//! (decrypting and reassembling) what arrives.

use rand_core::CryptoRng;

use super::child::ChildRequest;
use super::followup::Followup;
use super::ike_rekey::IkeRekey;
use super::{Ctx, IkeSa};
use crate::consts::{exchange, payload_type as pt};
use crate::endpoint::events::{Event, ExchangeOutcome, ExchangeStats, FailReason, Transmit};
use crate::endpoint::{EspSpis, skf_number};
use crate::keys::IkeKeys;
use crate::message::{Header, Payload, RawHeader, encode_payloads};
use crate::protect::{self, OpenError, Opened, Reassembler, Reassembly};

/// The initiator's IKE_AUTH candidates: the keys without a PPK, and with it (plus its ID).
pub(super) type AuthKeys = (IkeKeys, Option<(IkeKeys, Vec<u8>)>);

/// Our outstanding request: which exchange, for what, and what its response needs.
pub(super) enum Request {
    Init,
    /// One additional key exchange of the handshake (its secret and `A | P` wait in
    /// the handshake state).
    Intermediate,
    Auth(Box<AuthKeys>),
    /// CREATE_CHILD_SA for a new Child SA or a Child SA rekey.
    Child(ChildRequest),
    /// CREATE_CHILD_SA rekeying this IKE SA.
    IkeRekey(IkeRekey),
    /// One IKE_FOLLOWUP_KE of our rekey (RFC 9370).
    Followup(Box<Followup>),
    /// INFORMATIONAL deleting the Child SA with this inbound SPI.
    DeleteChild(u32),
    /// INFORMATIONAL deleting this IKE SA.
    DeleteIke,
    /// An empty INFORMATIONAL: dead peer detection.
    Liveness,
}

impl Request {
    pub(super) fn exchange(&self) -> u8 {
        match self {
            Request::Init => exchange::IKE_SA_INIT,
            Request::Intermediate => exchange::IKE_INTERMEDIATE,
            Request::Auth(_) => exchange::IKE_AUTH,
            Request::Child(_) | Request::IkeRekey(_) => exchange::CREATE_CHILD_SA,
            Request::Followup(_) => exchange::IKE_FOLLOWUP_KE,
            Request::DeleteChild(_) | Request::DeleteIke | Request::Liveness => {
                exchange::INFORMATIONAL
            }
        }
    }
}

pub(super) struct Outstanding {
    pub request: Request,
    datagrams: Vec<Vec<u8>>,
    tries: u32,
    pub deadline: u64,
    stats: ExchangeStats,
}

/// Message IDs, the request in flight, the last response, and partial fragment sets.
#[derive(Default)]
pub(super) struct Window {
    next_mid: u32,
    pub expected_mid: u32,
    /// Boxed: most of an SA's life has no request in flight.
    pub outstanding: Option<Box<Outstanding>>,
    /// The last response we sent (its message ID, its datagrams), for retransmitted
    /// requests.
    pub cached: Option<(u32, Vec<Vec<u8>>)>,
    reasm_requests: Reassembler,
    reasm_responses: Reassembler,
    /// The SK payload's IV counter.
    iv: u64,
}

impl Window {
    /// Whether a response with this header answers our outstanding request: the same
    /// message ID and the same exchange.
    pub(super) fn answers(&self, h: &Header) -> bool {
        self.outstanding.as_ref().is_some_and(|o| {
            o.stats.message_id == h.message_id && o.request.exchange() == h.exchange
        })
    }

    /// The message ID our next request will have.
    pub(super) fn next_mid(&self) -> u32 {
        self.next_mid
    }

    /// The message ID of the last request we sent.
    pub(super) fn last_mid(&self) -> u32 {
        self.next_mid.wrapping_sub(1)
    }
}

/// A new inbound ESP SPI: random, outside the reserved range 0..255, and not in
/// `in_use` (where it goes).
pub(super) fn new_esp_spi(rng: &mut dyn CryptoRng, in_use: &mut EspSpis) -> u32 {
    loop {
        let spi = rng.next_u32();
        if spi >= 256 && in_use.insert(spi) {
            return spi;
        }
    }
}

impl IkeSa {
    /// The request in flight, if any.
    pub(super) fn request(&self) -> Option<&Request> {
        self.window.outstanding.as_ref().map(|o| &o.request)
    }

    pub(super) fn header(&self, exchange: u8, message_id: u32, response: bool) -> Header {
        let mut f = if self.initiator {
            crate::consts::flags::INITIATOR
        } else {
            0
        };
        if response {
            f |= crate::consts::flags::RESPONSE;
        }
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            exchange,
            flags: f,
            message_id,
        }
    }

    pub(super) fn transmit(&self, ctx: &mut Ctx<'_>, datagrams: &[Vec<u8>]) {
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
    pub(super) fn float(&mut self, natt_port: u16) {
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
        // Room for an ML-KEM-1024 key or ciphertext and the rest: most messages are
        // encoded without growing the vector.
        let mut inner = Vec::with_capacity(2048);
        encode_payloads(payloads, &mut inner);
        let first = payloads.first().map_or(pt::NONE, Payload::kind);
        let aead = self.suite().aead;
        let keys = (self.keys.as_ref()).expect("protected exchanges follow IKE_SA_INIT");
        let key = if self.initiator {
            &keys.sk_ei
        } else {
            &keys.sk_er
        };
        let iv = &mut self.window.iv;
        let datagrams = if self.peer_frag {
            let natt = ctx.peer.nat_t || self.floated;
            let max = protect::max_ike_len(ctx.peer.fragment_size, self.remote.is_ipv6(), natt);
            protect::seal_fragmented(ctx.crypto, aead, key, iv, header, first, &inner, max)
        } else {
            vec![protect::seal(
                ctx.crypto, aead, key, iv, header, first, &inner,
            )]
        };
        // Only IKE_INTERMEDIATE messages go into IntAuth (RFC 9242).
        let ap = match header.exchange {
            exchange::IKE_INTERMEDIATE => protect::intauth_input(header, first, &inner),
            _ => Vec::new(),
        };
        (datagrams, ap)
    }

    /// Sends datagrams as our next request and keeps them for retransmission.
    pub(super) fn start_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: Request,
        datagrams: Vec<Vec<u8>>,
    ) {
        let exchange = request.exchange();
        let message_id = self.window.next_mid;
        self.transmit(ctx, &datagrams);
        ctx.out.events.push_back(Event::ExchangeStarted {
            sa: self.our_spi(),
            exchange,
            message_id,
        });
        let stats = ExchangeStats {
            exchange,
            message_id,
            started_ns: ctx.now,
            request_bytes: datagrams.iter().map(Vec::len).sum(),
            request_fragments: datagrams.len(),
            ..ExchangeStats::default()
        };
        self.window.outstanding = Some(Box::new(Outstanding {
            request,
            datagrams,
            tries: 0,
            deadline: ctx.now + ctx.peer.timers.retransmit_after(0),
            stats,
        }));
        self.window.next_mid += 1;
    }

    /// Starts the first exchange of the message ID space again (IKE_SA_INIT, unprotected).
    pub(super) fn restart_window(&mut self) {
        self.window.next_mid = 0;
    }

    /// Sends a protected request; returns its `A | P` for IntAuth (IKE_INTERMEDIATE;
    /// empty for other exchanges).
    pub(super) fn send_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: Request,
        payloads: &[Payload],
    ) -> Vec<u8> {
        let header = self.header(request.exchange(), self.window.next_mid, false);
        let (datagrams, ap) = self.protect(ctx, &header, payloads);
        self.start_request(ctx, request, datagrams);
        ap
    }

    /// Sends (and caches) a protected response; returns its `A | P` (IKE_INTERMEDIATE;
    /// empty for other exchanges).
    pub(super) fn send_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: &Header,
        payloads: &[Payload],
    ) -> Vec<u8> {
        let header = self.header(request.exchange, request.message_id, true);
        let (datagrams, ap) = self.protect(ctx, &header, payloads);
        self.transmit(ctx, &datagrams);
        self.window.cached = Some((request.message_id, datagrams));
        self.window.expected_mid = request.message_id.wrapping_add(1);
        ap
    }

    /// Sends (and caches) an unprotected response: the responder's IKE_SA_INIT.
    pub(super) fn send_init_response(&mut self, ctx: &mut Ctx<'_>, bytes: Vec<u8>) {
        self.window.expected_mid = 1;
        self.transmit(ctx, &[bytes]);
    }

    /// Answers a request with a single notify and goes on (`Ok`): a refusal that
    /// leaves the IKE SA as it is.
    pub(super) fn refuse(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: &Header,
        kind: u16,
        data: Vec<u8>,
    ) -> Result<(), FailReason> {
        self.send_response(ctx, request, &[super::notify_payload(kind, data)]);
        Ok(())
    }

    /// A retransmitted request: replays the cached response when its first (or only)
    /// part arrives, without decrypting (the keys may have moved on). True if the
    /// request was the cached one.
    pub(super) fn replay_cached(
        &mut self,
        ctx: &mut Ctx<'_>,
        raw: &RawHeader,
        bytes: &[u8],
    ) -> bool {
        let Some((mid, datagrams)) = &self.window.cached else {
            return false;
        };
        if *mid != raw.header.message_id {
            return false;
        }
        if raw.next_payload == pt::SK || skf_number(raw.next_payload, bytes) == Some(1) {
            ctx.out.stats.responses_resent += 1;
            let datagrams = datagrams.clone();
            self.transmit(ctx, &datagrams);
        } else if raw.next_payload != pt::SKF {
            // Not protected, so not a retransmission of anything we answered (the
            // later fragments of one are: the first one had the answer resent).
            ctx.out.stats.dropped_malformed += 1;
        }
        true
    }

    /// Closes the outstanding exchange with the response's size, reports it, and
    /// returns what the request was for.
    pub(super) fn finish_exchange(
        &mut self,
        ctx: &mut Ctx<'_>,
        response_bytes: usize,
        response_fragments: usize,
    ) -> Option<Request> {
        self.end_exchange(
            ctx,
            ExchangeOutcome::Answered,
            response_bytes,
            response_fragments,
        )
    }

    /// Gives up the outstanding exchange, if any, and reports it.
    pub(crate) fn abandon_exchange(&mut self, ctx: &mut Ctx<'_>, outcome: ExchangeOutcome) {
        self.end_exchange(ctx, outcome, 0, 0);
    }

    fn end_exchange(
        &mut self,
        ctx: &mut Ctx<'_>,
        outcome: ExchangeOutcome,
        response_bytes: usize,
        response_fragments: usize,
    ) -> Option<Request> {
        let o = self.window.outstanding.take()?;
        let mut stats = o.stats;
        stats.completed_ns = ctx.now;
        stats.outcome = outcome;
        stats.response_bytes += response_bytes;
        stats.response_fragments += response_fragments;
        ctx.out.events.push_back(Event::Exchange {
            sa: self.our_spi(),
            stats,
        });
        Some(o.request)
    }

    /// Sends the outstanding request again if its time came, or fails the SA after the
    /// last try.
    pub(super) fn retransmit_if_due(&mut self, ctx: &mut Ctx<'_>) -> Result<(), FailReason> {
        let Some(o) = self.window.outstanding.as_mut() else {
            return Ok(());
        };
        if o.deadline > ctx.now {
            return Ok(());
        }
        // An IKE_SA_INIT that drew only errors: no valid answer came in time, so the
        // error stands.
        if matches!(o.request, Request::Init)
            && let Some(e) = self.handshake.as_mut().and_then(|h| h.init_error.take())
        {
            return Err(e);
        }
        let Some(o) = self.window.outstanding.as_mut() else {
            return Ok(());
        };
        if o.tries >= ctx.peer.timers.retransmit_tries {
            return Err(FailReason::RetransmitTimeout {
                exchange: o.stats.exchange,
            });
        }
        o.tries += 1;
        o.stats.retransmissions += 1;
        o.stats.retransmitted_datagrams += o.datagrams.len() as u32;
        o.deadline = ctx.now + ctx.peer.timers.retransmit_after(o.tries);
        ctx.out.stats.retransmissions += 1;
        ctx.out.stats.retransmitted_datagrams += o.datagrams.len() as u64;
        let datagrams = o.datagrams.clone();
        self.transmit(ctx, &datagrams);
        Ok(())
    }

    /// Authenticates, decrypts and (for fragments) reassembles one message; counts what
    /// it drops. Response sizes are added to the outstanding exchange's statistics.
    pub(super) fn open(
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
                    &mut self.window.reasm_responses
                } else {
                    &mut self.window.reasm_requests
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
        if response && let Some(o) = self.window.outstanding.as_mut() {
            o.stats.response_bytes += bytes.len();
            o.stats.response_fragments += 1;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    /// An inbound SPI in use is never handed out again: the draw that hits one is
    /// skipped.
    #[test]
    fn a_new_esp_spi_is_never_one_in_use() {
        let mut first_draws = ChaCha20Rng::seed_from_u64(9);
        let taken = first_draws.next_u32();
        let mut in_use = EspSpis::from_iter([taken]);
        let spi = new_esp_spi(&mut ChaCha20Rng::seed_from_u64(9), &mut in_use);
        assert_ne!(spi, taken);
        assert!(spi >= 256 && in_use.contains(&spi) && in_use.len() == 2);
    }
}
