//! The simulation itself: gateways running the `ikev2` endpoint exchange real IKE
//! datagrams over link-model channels; key managers serve QKD keys through ETSI 014 or
//! SKIP (real JSON requests and responses, each with its latency); everything is driven
//! by one `sim_core::Simulation` event loop.
//!
//! This file holds the world's state, the run loop and the dispatch of simulator and
//! endpoint events. The jobs live in their own modules: `build` (scenario to world,
//! with its checks), `tunnels` (handshake attempts, up and down bookkeeping, rekey
//! schedules), `keys` (the gateways' QKD key client: ETSI 014 and SKIP requests,
//! waits and retries), `traffic` (ESP traffic and Child SA lifetimes), `net`
//! (gateways' datagrams on the links), `faults`, `oracle` (the invariant checks)
//! and `output` (trace lines, keylog, results).

mod adversary;
mod build;
mod costs;
mod faults;
mod keys;
mod net;
mod oracle;
mod output;
mod traffic;
mod tunnels;

pub use build::{BuildError, qkd_network, tunnel_psk};
pub use costs::{EventCost, EventCosts};
pub use output::Keylog;

use std::io::Write;
use std::net::IpAddr;

use ikev2::crypto::CryptoProvider;
use ikev2::endpoint::{Event, SaId};
use link::{Datagram, Delivery, WirePacket};
use qkd::QkdNetwork;
use sim_core::hash::FastMap;
use sim_core::pcap::PcapSink;
use sim_core::progress::Progress;
use sim_core::{EntityId, SimDuration, SimTime, Simulation, Tracer};

use crate::config::WorldConfig;
use crate::dataplane::DataPlane;
use crate::results::{Results, RowSelection, RowSink, TotalsBuilder};
use keys::Kme;
use net::{Gateway, SimLink};
use oracle::Oracle;
use tunnels::Tunnel;

/// The simulator's events.
///
/// Every pending event is one of these, and a run at scale holds several per tunnel:
/// the largest variant sets the size of all, so indices are 32-bit here (a simulation
/// has far fewer than 2^32 links, tunnels and gateways) and rare large fields are boxed.
enum Ev {
    Deliver {
        link: u32,
        dir: u8,
        datagram: Datagram,
        /// The tunnel an ESP packet belongs to.
        tunnel: Option<u32>,
        /// Already past the adversaries in front of the gateway (what they let through
        /// late, and their own copies).
        screened: bool,
        /// Not the first arrival of a datagram its sender sent: a duplicate (the link's
        /// or an attacker's), a replay or a forgery. The ESP data plane counts these
        /// apart, so every packet offered ends in exactly one outcome.
        copy: bool,
    },
    /// The next IKE_SA_INIT of an adversary's flood.
    Flood {
        adversary: usize,
    },
    GatewayTimer {
        gw: usize,
    },
    /// A gateway's CPU finished a job: it goes on with what the job's inputs produced.
    Resume {
        gw: usize,
    },
    /// A datagram a gateway's CPU finished producing goes out.
    Send {
        gw: usize,
        dst: std::net::SocketAddrV4,
        payload: Vec<u8>,
    },
    TunnelStart {
        tunnel: usize,
        why: &'static str,
    },
    /// The tunnel initiator's periodic rekey of the Child SA `spi_in`, on the IKE SA
    /// that is up then.
    TimedChildRekey {
        tunnel: usize,
        spi_in: u32,
    },
    /// Time to rekey the tunnel's IKE SA `sa` (if it is still the one that is up).
    IkeRekey {
        tunnel: usize,
        sa: SaId,
    },
    /// Time to re-authenticate the tunnel's IKE SA line that was due then.
    Reauthenticate {
        tunnel: usize,
        due: SimTime,
    },
    /// The hard limit of the tunnel's IKE SA `sa`.
    IkeSaExpire {
        tunnel: usize,
        sa: SaId,
    },
    /// The initiator's key request (`enc_keys` or `/key`) reaches its KME (`served`:
    /// and its turn came at a KME that serves one at a time).
    KeyDraw {
        tunnel: usize,
        asked: SimTime,
        retries: u32,
        served: bool,
    },
    /// A gateway's key cache for peer `peer` asks its KME for `number` keys (answered
    /// now).
    KeyRefill {
        gw: usize,
        peer: usize,
        asked: SimTime,
        retries: u32,
    },
    /// The responder's fetch by key ID reaches its KME.
    KeyFetch {
        gw: usize,
        sa: SaId,
        tunnel: usize,
        key_id: Box<[u8]>,
        asked: SimTime,
        retries: u32,
        served: bool,
    },
    KmeSwitch {
        kme: usize,
        up: bool,
    },
    /// A QKD link stops producing key, or starts again.
    QkdLinkSwitch {
        link: usize,
        up: bool,
    },
    Sample,
    /// The next packet of a tunnel's traffic in direction `dir` (0: from the initiator).
    Packet {
        tunnel: usize,
        dir: usize,
    },
    /// Aggregate traffic: count the packets of the last tick.
    AggregateTick {
        tunnel: usize,
    },
    /// Gateway `gw` rekeys its Child SA `spi_in` on the IKE SA that holds it: a soft
    /// volume limit (`volume`), a refused or busy earlier rekey, or the responder's own
    /// periodic rekey.
    GatewayChildRekey {
        gw: usize,
        spi_in: u32,
        volume: bool,
    },
    /// Delete the Child SA `spi_in` of gateway `gw`: it reached a hard limit.
    ChildExpire {
        gw: usize,
        spi_in: u32,
    },
    /// Traffic and no Child SA: the initiator asks for a new one on its IKE SA (as
    /// strongSwan's trap policies do).
    CreateChild {
        tunnel: usize,
    },
    /// The gateway reboots (loses all state), or comes back up after it.
    GatewayDown {
        gw: usize,
        down_for: SimDuration,
    },
    GatewayUp {
        gw: usize,
    },
    CorruptNextChild {
        gw: usize,
    },
    /// The invariant oracle looks at a Child SA pair again after a change to it.
    CheckPair {
        gw: usize,
        spi_in: u32,
        since: SimTime,
    },
    /// The invariant oracle looks at a negotiation in progress.
    CheckStuck {
        tunnel: usize,
        attempt: u32,
    },
}

// Kept small on purpose (see `Ev`): a variant that grows it fails the build here.
const _: () = assert!(std::mem::size_of::<Ev>() <= 56);

/// Optional outputs of a run.
pub struct Outputs<'a> {
    pub tracer: Tracer,
    pub pcap: Option<&'a mut PcapSink<Box<dyn Write>>>,
    pub keylog: Option<&'a mut Keylog>,
    pub progress: bool,
    /// Which rows to keep, and where they go as they happen (`None`: into the results).
    pub rows: RowSelection,
    pub row_sink: Option<&'a mut dyn RowSink>,
    /// Wall time by kind of event, when asked for (a diagnostic: never in the results).
    pub costs: Option<&'a mut EventCosts>,
}

impl Outputs<'_> {
    pub fn none() -> Self {
        Outputs {
            tracer: Tracer::new(),
            pcap: None,
            keylog: None,
            progress: false,
            rows: RowSelection::All,
            row_sink: None,
            costs: None,
        }
    }
}

pub struct World {
    sim: Simulation<Ev>,
    /// The world itself, as the source of its own events.
    entity: EntityId,
    cfg: WorldConfig,
    gateways: Vec<Gateway>,
    links: Vec<SimLink>,
    /// (gateway, destination address) -> (link, direction).
    routes: FastMap<(usize, IpAddr), (usize, usize)>,
    tunnels: Vec<Tunnel>,
    /// (gateway, SA) -> tunnel.
    sa_tunnel: FastMap<(usize, SaId), usize>,
    kmes: Vec<Kme>,
    qkd: QkdNetwork,
    /// (gateway, peer gateway) -> the gateway's cached keys for that peer.
    caches: FastMap<(usize, usize), keys::KeyCache>,
    rows: output::RowBuffer,
    /// Scratch buffers of the links: deliveries to schedule, datagrams to capture.
    deliveries: Vec<Delivery>,
    wire: Vec<WirePacket>,
    oracle: Oracle,
    dp: DataPlane,
    adversaries: Vec<adversary::Adversary>,
    /// Seals and opens ESP (the gateways' endpoints own their providers).
    esp_crypto: Box<dyn CryptoProvider>,
    keylog: Option<Keylog>,
    /// The run is over: gateways act on everything at once, whatever their CPU owes.
    ending: bool,
}

impl World {
    /// Runs to the configured duration and returns the results.
    pub fn run(self, outputs: Outputs<'_>) -> Results {
        self.run_inner(outputs, None, None)
    }

    /// Runs one part of a larger run (a region of it, see [`crate::shard`]), whose
    /// results go into a [`crate::results::merge::Merge`]: also returns the builder of
    /// its totals, and `--rows sample` picks from `sample_of` (the whole run's tunnels
    /// and QKD links, by index within this part) so that the parts together keep about
    /// as many rows as the whole would.
    pub fn run_part(
        self,
        outputs: Outputs<'_>,
        sample_of: (usize, usize),
    ) -> (Results, TotalsBuilder) {
        let mut totals = TotalsBuilder::default();
        let results = self.run_inner(outputs, Some(sample_of), Some(&mut totals));
        (results, totals)
    }

    fn run_inner(
        mut self,
        outputs: Outputs<'_>,
        sample_of: Option<(usize, usize)>,
        totals: Option<&mut TotalsBuilder>,
    ) -> Results {
        let Outputs {
            tracer,
            mut pcap,
            keylog,
            progress,
            rows,
            mut row_sink,
            costs,
        } = outputs;
        let (of_tunnels, of_links) =
            sample_of.unwrap_or((self.tunnels.len(), self.qkd.links.len()));
        self.rows = output::RowBuffer::new(rows, of_tunnels, of_links, self.qkd.links.len());
        self.sim.trace = tracer;
        self.keylog = keylog.as_ref().map(|_| Keylog::default());
        let capture = pcap.is_some();
        for l in &mut self.links {
            for c in &mut l.channels {
                c.set_capture(capture);
            }
        }
        let end = SimTime::ZERO + self.cfg.duration;
        let mut progress =
            progress.then(|| Progress::new(end, std::time::Duration::from_millis(500)));
        let mut stopwatch = costs::Stopwatch::new(costs);
        while let Some(ev) = self.sim.next_event_until(end) {
            let kind = stopwatch.kind(&ev.event);
            self.prefetch_next();
            self.handle(ev.event);
            self.watch_changed_pairs();
            if let Some(sink) = row_sink.as_deref_mut() {
                self.rows.flush(sink);
            }
            if let Some(sink) = pcap.as_deref_mut() {
                for p in self.wire.drain(..) {
                    sink.capture(p.at, p.bytes);
                }
                // Capture errors surface when the sink is finished.
                let _ = sink.advance(self.sim.now());
            }
            if let Some(p) = progress.as_mut() {
                p.tick(self.sim.now(), self.sim.events_processed());
            }
            stopwatch.lap(kind);
        }
        if let Some(p) = progress.as_mut() {
            p.finish(self.sim.now(), self.sim.events_processed());
        }
        if let (Some(out), Some(mine)) = (keylog, self.keylog.take()) {
            *out = mine;
        }
        let mut results = self.results(totals);
        if let Some(sink) = row_sink {
            results.rows.drain_into(sink);
        }
        results
    }

    /// Ends the run's trace (flushing its file) and returns the tracer's verdict.
    pub fn finish_trace(tracer: Tracer) -> std::io::Result<sim_core::Fingerprint> {
        tracer.finish()
    }

    fn now_ns(&self) -> u64 {
        self.sim.now().as_nanos()
    }

    /// Schedules `ev` after `after` on behalf of the world itself.
    fn schedule_world(&mut self, after: SimDuration, ev: Ev) {
        self.sim.schedule(self.entity, after, ev);
    }

    /// Starts loading the state the next event will touch (its gateway, IKE SA,
    /// link and tunnel), so that those cache misses overlap the current event's work
    /// (see `sim_core::prefetch`).
    fn prefetch_next(&mut self) {
        use sim_core::prefetch::{prefetch, prefetch_range};
        let (gw, sa) = match self.sim.peek_event() {
            Some(Ev::Deliver {
                link,
                dir,
                datagram,
                ..
            }) => {
                let l = &self.links[*link as usize];
                prefetch(l);
                let gw = l.ends[1 - *dir as usize];
                let sa = match datagram.dst.port() {
                    crate::dataplane::ESP_PORT => None,
                    _ => self.gateways[gw].ep.sa_of_datagram(&datagram.payload),
                };
                (gw, sa)
            }
            Some(Ev::GatewayTimer { gw }) => (*gw, self.gateways[*gw].ep.next_timer_sa()),
            Some(
                Ev::TimedChildRekey { tunnel, .. }
                | Ev::IkeRekey { tunnel, .. }
                | Ev::Reauthenticate { tunnel, .. },
            ) => {
                let t = &self.tunnels[*tunnel];
                if let Some((_, link, _)) = self.gateways[t.initiator].sole_route {
                    prefetch(&self.links[link as usize]);
                }
                (t.initiator, t.current)
            }
            Some(Ev::KeyDraw { tunnel, .. }) => {
                prefetch(&self.tunnels[*tunnel]);
                return;
            }
            _ => return,
        };
        let g = &self.gateways[gw];
        prefetch(g);
        if let Some(peer) = sa.and_then(|sa| g.ep.locate_sa(sa, prefetch_range))
            && let Some(&t) = g.peer_tunnel.get(peer)
        {
            prefetch(&self.tunnels[t]);
            self.dp.locate(t, prefetch_range);
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                link,
                dir,
                datagram,
                tunnel,
                screened,
                copy,
            } => self.deliver(
                link as usize,
                dir as usize,
                datagram,
                tunnel.map(|t| t as usize),
                screened,
                copy,
            ),
            Ev::Flood { adversary } => self.flood(adversary),
            Ev::GatewayTimer { gw } => self.gateway_timer(gw),
            Ev::Resume { gw } => self.drain(gw),
            Ev::Send { gw, dst, payload } => {
                // A gateway that rebooted meanwhile sends nothing it made before.
                if !self.gateways[gw].down {
                    self.send_from(gw, net::IKE_PORT, dst, payload, None);
                }
            }
            Ev::TunnelStart { tunnel, why } => self.start_attempt(tunnel, why),
            Ev::TimedChildRekey { tunnel, spi_in } => self.timed_child_rekey(tunnel, spi_in),
            Ev::IkeRekey { tunnel, sa } => self.rekey_ike(tunnel, sa),
            Ev::Reauthenticate { tunnel, due } => self.reauthenticate(tunnel, due),
            Ev::IkeSaExpire { tunnel, sa } => self.ike_sa_expire(tunnel, sa),
            ev @ (Ev::KeyDraw { served: false, .. } | Ev::KeyFetch { served: false, .. }) => {
                self.queue_at_kme(ev)
            }
            Ev::KeyDraw {
                tunnel,
                asked,
                retries,
                ..
            } => self.key_draw(tunnel, asked, retries),
            Ev::KeyFetch {
                gw,
                sa,
                tunnel,
                key_id,
                asked,
                retries,
                ..
            } => self.key_fetch(gw, sa, tunnel, key_id.into_vec(), asked, retries),
            Ev::KmeSwitch { kme, up } => self.kme_switch(kme, up),
            Ev::KeyRefill {
                gw,
                peer,
                asked,
                retries,
            } => self.key_refill(gw, peer, asked, retries),
            Ev::QkdLinkSwitch { link, up } => self.qkd_link_switch(link, up),
            Ev::Sample => {
                self.sample_pools();
                self.schedule_world(self.cfg.sample_every, Ev::Sample);
            }
            Ev::Packet { tunnel, dir } => self.send_packet(tunnel, dir),
            Ev::AggregateTick { tunnel } => self.aggregate_tick(tunnel),
            Ev::GatewayChildRekey { gw, spi_in, volume } => self.rekey_child(gw, spi_in, volume),
            Ev::ChildExpire { gw, spi_in } => self.child_expire(gw, spi_in),
            Ev::GatewayDown { gw, down_for } => self.gateway_down(gw, down_for),
            Ev::CreateChild { tunnel } => self.create_child(tunnel),
            Ev::GatewayUp { gw } => self.gateway_up(gw),
            Ev::CorruptNextChild { gw } => self.gateways[gw].corrupt_next = true,
            Ev::CheckPair { gw, spi_in, since } => self.check_pair(gw, spi_in, since),
            Ev::CheckStuck { tunnel, attempt } => self.check_stuck(tunnel, attempt),
        }
    }

    /// One event of gateway `gw`'s endpoint: the oracle, the data plane and the keylog
    /// see every one; then the tunnel bookkeeping and the key client act on it.
    fn on_endpoint_event(&mut self, gw: usize, mut ev: Event) {
        if let Event::ChildSaReady { child, .. } | Event::ChildSaRekeyed { child, .. } = &mut ev
            && std::mem::take(&mut self.gateways[gw].corrupt_next)
        {
            child.encr_out[0] ^= 1;
        }
        self.oracle.check_ike_keys(self.sim.now(), &ev);
        let g = &self.gateways[gw];
        self.oracle
            .check_required_ppk(self.sim.now(), &g.name, &g.peer_cfgs, &ev);
        // The tunnel whose up state this event may change.
        let touched = match &ev {
            Event::IkeSaEstablished { peer, .. }
            | Event::IkeSaFailed { peer, .. }
            | Event::IkeSaDeleted { peer, .. } => Some(self.gateways[gw].peer_tunnel[*peer]),
            Event::ChildSaReady { sa, .. }
            | Event::ChildSaRekeyed { sa, .. }
            | Event::ChildSaDeleting { sa, .. }
            | Event::ChildSaDeleted { sa, .. } => self.sa_tunnel.get(&(gw, *sa)).copied(),
            _ => None,
        };
        self.update_data_plane(gw, &ev);
        self.record_keys(gw, &ev);
        match ev {
            Event::PpkNeeded { sa, peer, key_id } => self.ppk_needed(gw, sa, peer, key_id),
            Event::Exchange { sa, stats } => self.exchange_done(gw, sa, stats),
            Event::IkeSaEstablished {
                sa,
                initiator: true,
                proposal,
                ppk,
                keylog,
                ..
            } => self.tunnel_established(gw, sa, proposal, ppk, keylog),
            Event::IkeSaEstablished { sa, peer, .. } => {
                // Responder side: remember the SA for its exchanges and deletes.
                let t = self.gateways[gw].peer_tunnel[peer];
                self.sa_tunnel.insert((gw, sa), t);
            }
            Event::IkeSaFailed { sa, reason, .. } => self.ike_sa_failed(gw, sa, reason),
            Event::IkeSaDeleted { sa, by_peer, .. } => self.ike_sa_deleted(gw, sa, by_peer),
            Event::ChildSaReady { sa, child } | Event::ChildSaRekeyed { sa, child, .. } => {
                self.child_sa_up(gw, sa, &child)
            }
            Event::IkeSaRekeyed { old, new, .. } => self.ike_sa_rekeyed(gw, old, new),
            Event::ExchangeStarted { sa, .. } => self.exchange_started(gw, sa),
            Event::ChildSaFailed { sa, .. } => self.child_sa_refused(gw, sa),
            Event::IkeSaRekeyFailed { sa, .. } => self.ike_rekey_refused(gw, sa),
            Event::Keys { .. } | Event::ChildSaDeleting { .. } | Event::ChildSaDeleted { .. } => {}
        }
        if let Some(t) = touched {
            self.refresh_up(t);
        }
    }
}
