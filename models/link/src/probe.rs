//! Link characterization: two hosts exchange numbered, timestamped UDP probes over a
//! link for a while, and the receivers measure what the link did to them.
//!
//! This is the smallest complete simulation on sim-core: entities, a seeded stream per
//! channel, the event loop, trace and fingerprint, metrics and optional capture. The
//! measurements come from the probe bytes the receiver actually got (sequence number
//! and send time inside the payload), not from the link's own bookkeeping, so tests
//! built on it check the link model from the outside.

use std::io::Write;
use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};
use sim_core::metrics::HistogramSummary;
use sim_core::pcap::{PcapError, PcapSink};
use sim_core::progress::Progress;
use sim_core::{EntityId, Fingerprint, SimDuration, SimTime, Simulation, TraceEvent, Tracer};

use crate::channel::{Channel, ChannelStats, Datagram, Delivery, WirePacket};
use crate::config::{ConfigError, LinkConfig};

/// What to send over which link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    pub link: LinkConfig,
    pub duration: SimDuration,
    /// Time between probes, per direction.
    pub interval: SimDuration,
    /// UDP payload per probe (at least 16 bytes: sequence number and send time).
    pub payload_bytes: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            link: LinkConfig::default(),
            duration: SimDuration::from_secs(60),
            interval: SimDuration::from_millis(10),
            payload_bytes: 1200,
        }
    }
}

impl ProbeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.link.validate().map_err(|e| ConfigError {
            field: format!("link.{}", e.field),
            problem: e.problem,
        })?;
        let bad = |field: &str, problem: &str| ConfigError {
            field: field.into(),
            problem: problem.into(),
        };
        if self.interval.is_zero() {
            return Err(bad("interval", "must be positive"));
        }
        if self.payload_bytes < PROBE_HEADER {
            return Err(bad(
                "payload_bytes",
                "must be at least 16 (sequence number and time)",
            ));
        }
        Ok(())
    }
}

const PROBE_HEADER: usize = 16;

/// What one receiving host measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DirectionReport {
    pub direction: String,
    pub probes_sent: u64,
    pub probes_received: u64,
    /// Copies beyond the first of a probe.
    pub duplicates_received: u64,
    /// Received after a higher-numbered probe.
    pub out_of_order: u64,
    pub loss_rate: f64,
    /// Mean length of a run of consecutive lost probes.
    pub mean_loss_burst: f64,
    pub latency_ns: HistogramSummary,
    /// Payload bits received per second of simulated time.
    pub goodput_bps: f64,
    pub link: ChannelStats,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeReport {
    pub seed: u64,
    pub duration: SimDuration,
    pub events: u64,
    pub directions: Vec<DirectionReport>,
    #[serde(serialize_with = "as_hex")]
    pub fingerprint: Fingerprint,
}

fn as_hex<S: serde::Serializer>(f: &Fingerprint, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(f)
}

enum Event {
    /// Host `from` sends its next probe.
    Send {
        from: usize,
    },
    Arrive {
        to: usize,
        datagram: Datagram,
    },
}

#[derive(Serialize)]
struct Received {
    seq: u64,
    latency_ns: u64,
}
impl TraceEvent for Received {
    fn kind(&self) -> &'static str {
        "probe.recv"
    }
}

struct Host {
    entity: EntityId,
    addr: SocketAddrV4,
    /// Channel from this host to the other one.
    out: Channel,
    out_entity: EntityId,
    next_seq: u64,
    /// Probes received from the peer, by sequence number.
    received: Vec<u8>,
    highest: Option<u64>,
    out_of_order: u64,
}

/// Where a run's optional outputs go.
pub struct Outputs<'a, W: Write> {
    /// Every trace line goes here (and into the fingerprint).
    pub tracer: Tracer,
    /// Every IPv4 packet put on the wire, fragments included.
    pub pcap: Option<&'a mut PcapSink<W>>,
    /// A progress line on stderr.
    pub progress: bool,
}

impl Outputs<'static, std::io::Sink> {
    /// Fingerprint only: no trace file, no capture, no progress line.
    pub fn none() -> Self {
        Outputs {
            tracer: Tracer::new(),
            pcap: None,
            progress: false,
        }
    }
}

/// Runs the probe experiment.
pub fn run<W: Write>(
    cfg: &ProbeConfig,
    seed: u64,
    outputs: Outputs<'_, W>,
) -> Result<ProbeReport, RunError> {
    let Outputs {
        tracer,
        mut pcap,
        progress,
    } = outputs;
    cfg.validate()?;
    let mut sim = Simulation::<Event>::with_tracer(seed, tracer);
    let addrs: [SocketAddrV4; 2] = [
        "10.0.0.1:5001".parse().unwrap(),
        "10.0.0.2:5001".parse().unwrap(),
    ];
    let mut hosts = Vec::new();
    for (i, (me, peer)) in [("a", "b"), ("b", "a")].into_iter().enumerate() {
        let entity = sim.register(&format!("host/{me}")).expect("fresh names");
        let name = format!("link/a-b/{me}>{peer}");
        let out_entity = sim.register(&name).expect("fresh names");
        let mut out = Channel::new(cfg.link.clone(), seed, &name);
        out.set_capture(pcap.is_some());
        hosts.push(Host {
            entity,
            addr: addrs[i],
            out,
            out_entity,
            next_seq: 0,
            received: Vec::new(),
            highest: None,
            out_of_order: 0,
        });
    }
    let latency: Vec<_> = ["a>b", "b>a"]
        .iter()
        .map(|d| sim.metrics.histogram(&format!("link/a-b/{d}/latency_ns")))
        .collect();
    let end = SimTime::ZERO + cfg.duration;
    for (i, h) in hosts.iter().enumerate() {
        sim.schedule(h.entity, SimDuration::ZERO, Event::Send { from: i });
    }

    let mut deliveries: Vec<Delivery> = Vec::new();
    let mut wire: Vec<WirePacket> = Vec::new();
    let mut progress = progress.then(|| Progress::new(end, std::time::Duration::from_millis(500)));
    while let Some(ev) = sim.next_event_until(end) {
        let now = sim.now();
        if let Some(p) = progress.as_mut() {
            p.tick(now, sim.events_processed());
        }
        match ev.event {
            Event::Send { from } => {
                let to = 1 - from;
                let h = &mut hosts[from];
                let mut payload = vec![0u8; cfg.payload_bytes];
                payload[..8].copy_from_slice(&h.next_seq.to_be_bytes());
                payload[8..16].copy_from_slice(&now.as_nanos().to_be_bytes());
                h.next_seq += 1;
                let dgram = Datagram {
                    src: h.addr,
                    dst: addrs[to],
                    payload,
                };
                let traced = h.out.send(now, dgram, &mut deliveries, &mut wire);
                let (me, chan) = (h.entity, h.out_entity);
                sim.trace(chan, &traced);
                for d in deliveries.drain(..) {
                    sim.schedule_at(
                        chan,
                        d.at,
                        Event::Arrive {
                            to,
                            datagram: d.datagram,
                        },
                    );
                }
                if let Some(sink) = pcap.as_deref_mut() {
                    for p in wire.drain(..) {
                        sink.capture(p.at, p.bytes);
                    }
                    sink.advance(now)?;
                }
                sim.schedule(me, cfg.interval, Event::Send { from });
            }
            Event::Arrive { to, datagram } => {
                let p = &datagram.payload;
                let seq = u64::from_be_bytes(p[..8].try_into().expect("16-byte header"));
                let sent = u64::from_be_bytes(p[8..16].try_into().expect("16-byte header"));
                let latency_ns = now.as_nanos().saturating_sub(sent);
                // A corrupted header can claim any number; count only plausible ones.
                if seq < hosts[1 - to].next_seq {
                    let h = &mut hosts[to];
                    if h.received.len() <= seq as usize {
                        h.received.resize(seq as usize + 1, 0);
                    }
                    h.received[seq as usize] = h.received[seq as usize].saturating_add(1);
                    if h.highest.is_some_and(|hi| seq < hi) {
                        h.out_of_order += 1;
                    }
                    h.highest = h.highest.max(Some(seq));
                    sim.metrics.record(latency[1 - to], latency_ns);
                }
                let entity = hosts[to].entity;
                sim.trace(entity, &Received { seq, latency_ns });
            }
        }
    }

    let events = sim.events_processed();
    if let Some(p) = progress.as_mut() {
        p.finish(sim.now(), events);
    }
    let directions = (0..2)
        .map(|from| {
            let (tx, rx) = (&hosts[from], &hosts[1 - from]);
            direction_report(
                ["a>b", "b>a"][from],
                tx,
                rx,
                sim.metrics.histogram_ref(latency[from]).summary(),
                cfg.duration,
            )
        })
        .collect();
    let fingerprint = sim.trace.fingerprint();
    let tracer = std::mem::take(&mut sim.trace);
    tracer.finish().map_err(RunError::Trace)?;
    Ok(ProbeReport {
        seed,
        duration: cfg.duration,
        events,
        directions,
        fingerprint,
    })
}

fn direction_report(
    name: &str,
    tx: &Host,
    rx: &Host,
    latency_ns: HistogramSummary,
    duration: SimDuration,
) -> DirectionReport {
    // Probes still in flight at the end count as neither received nor lost.
    let sent = tx.next_seq;
    let settled = rx.highest.map_or(0, |h| h + 1);
    let got = |s: u64| rx.received.get(s as usize).copied().unwrap_or(0);
    let received = (0..sent).filter(|&s| got(s) > 0).count() as u64;
    let duplicates = (0..sent).map(|s| got(s).saturating_sub(1) as u64).sum();
    let (mut lost, mut bursts, mut in_burst) = (0u64, 0u64, false);
    for s in 0..settled {
        let missing = got(s) == 0;
        lost += missing as u64;
        bursts += (missing && !in_burst) as u64;
        in_burst = missing;
    }
    let payload = tx.out.stats().payload_bytes_sent / sent.max(1);
    DirectionReport {
        direction: name.to_string(),
        probes_sent: sent,
        probes_received: received,
        duplicates_received: duplicates,
        out_of_order: rx.out_of_order,
        loss_rate: if settled == 0 {
            0.0
        } else {
            lost as f64 / settled as f64
        },
        mean_loss_burst: if bursts == 0 {
            0.0
        } else {
            lost as f64 / bursts as f64
        },
        latency_ns,
        goodput_bps: (received * payload * 8) as f64 / duration.as_secs_f64().max(1e-9),
        link: tx.out.stats().clone(),
    }
}

/// A probe run could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("writing the capture: {0}")]
    Pcap(#[from] PcapError),
    #[error("writing the trace: {0}")]
    Trace(std::io::Error),
}
