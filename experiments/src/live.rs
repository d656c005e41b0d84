//! `qsafe live`: the same `ikev2` endpoint the simulator runs, driven by tokio over real
//! UDP sockets, for interoperability with real IKEv2 implementations.
//!
//! IKE uses port 500, and port 4500 with the 4-byte non-ESP marker once NAT detection
//! (or forced encapsulation) moves it there. Time comes from the wall clock, which is
//! fine here: live mode is glue, not simulation. Randomness still comes from a seeded
//! ChaCha20 stream (`--seed`), so live runs are reproducible too; that makes live mode
//! a test tool, not a VPN.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ikev2::consts::exchange;
use ikev2::crypto::{CryptoProvider, ModelCrypto, RealCrypto};
use ikev2::endpoint::{
    Endpoint, EndpointConfig, EndpointStats, Event, PeerConfig, Ppk, PpkOutcome, PpkPolicy,
};
use ikev2::message::TrafficSelector;
use kme::client::{Https, KeySource};
use rand_core::SeedableRng;
use serde::Deserialize;
use tokio::net::UdpSocket;

/// The live configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// Our IKE address; ports 500 and 4500 are bound on it.
    pub local: IpAddr,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_natt_port")]
    pub natt_port: u16,
    /// `real` (default) or `model`.
    #[serde(default)]
    pub crypto: Option<String>,
    /// Give up after this long.
    #[serde(default = "default_timeout")]
    pub timeout: sim_core::SimDuration,
    /// Once every SA is done, keep serving peers this long (their rekeys, deletes).
    #[serde(default)]
    pub hold: sim_core::SimDuration,
    #[serde(rename = "peer")]
    pub peers: Vec<LivePeer>,
}

fn default_port() -> u16 {
    500
}
fn default_natt_port() -> u16 {
    4500
}
fn default_timeout() -> sim_core::SimDuration {
    sim_core::SimDuration::from_secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LivePeer {
    pub name: String,
    pub remote: IpAddr,
    #[serde(default = "default_port")]
    pub remote_port: u16,
    pub local_id: String,
    pub remote_id: String,
    pub psk: String,
    pub ike: Vec<String>,
    #[serde(default = "default_esp")]
    pub esp: Vec<String>,
    #[serde(default)]
    pub local_ts: Vec<String>,
    #[serde(default)]
    pub remote_ts: Vec<String>,
    #[serde(default = "default_fragment_size")]
    pub fragment_size: usize,
    /// Force UDP encapsulation on port 4500.
    #[serde(default)]
    pub encap: bool,
    #[serde(default)]
    pub childless: bool,
    /// `disabled`, `optional` or `required`.
    #[serde(default)]
    pub ppk: Option<String>,
    /// The PPK ID this side offers as initiator.
    #[serde(default)]
    pub ppk_id: Option<String>,
    /// Static PPKs by ID, as hex (a stand-in for a QKD key manager).
    #[serde(default)]
    pub ppks: BTreeMap<String, String>,
    /// A QKD key manager to take PPKs from instead (ETSI GS QKD 014 or SKIP over HTTPS
    /// with mutual TLS): as initiator a new key, whose ID goes in PPK_IDENTITY; as
    /// responder the key with the ID the peer sent.
    #[serde(default)]
    pub ppk_source: Option<PpkSource>,
    /// Start the IKE SA (otherwise wait for the peer).
    #[serde(default)]
    pub initiate: bool,
    /// Dead peer detection: an empty INFORMATIONAL after this long without a word.
    #[serde(default)]
    pub dpd_delay: Option<sim_core::SimDuration>,
    /// Rekey the IKE SA this long after it is up (CREATE_CHILD_SA).
    #[serde(default)]
    pub rekey_ike_after: Option<sim_core::SimDuration>,
    /// Rekey the first Child SA this long after it is up (CREATE_CHILD_SA).
    #[serde(default)]
    pub rekey_child_after: Option<sim_core::SimDuration>,
    /// Create one additional Child SA this long after the first is up (CREATE_CHILD_SA
    /// without REKEY_SA).
    #[serde(default)]
    pub create_child_after: Option<sim_core::SimDuration>,
}

/// Where a peer's PPKs come from: `{ etsi014 = "https://HOST:PORT", sae_id, peer_sae_id,
/// ca, cert, key }` or `{ skip = "https://HOST:PORT", sae_id, remote_system_id, ca, cert,
/// key }`. Paths are relative to the working directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpkSource {
    /// An ETSI GS QKD 014 key manager's URL.
    #[serde(default)]
    pub etsi014: Option<String>,
    /// A SKIP key provider's URL.
    #[serde(default)]
    pub skip: Option<String>,
    /// Our SAE ID: the client certificate must name it (its common name).
    pub sae_id: String,
    /// The peer gateway's SAE ID (ETSI 014: the slave we draw for, the master whose key
    /// we fetch).
    #[serde(default)]
    pub peer_sae_id: Option<String>,
    /// The peer's key provider's system ID (SKIP `remoteSystemID`).
    #[serde(default)]
    pub remote_system_id: Option<String>,
    /// The CA that signed the key manager's certificate.
    pub ca: PathBuf,
    /// Our client certificate and its key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The longest wait for the key manager's answer; a timeout counts as a refusal.
    #[serde(default = "default_ppk_timeout")]
    pub timeout: sim_core::SimDuration,
}

fn default_ppk_timeout() -> sim_core::SimDuration {
    sim_core::SimDuration::from_secs(5)
}

impl PpkSource {
    fn key_source(&self, peer: &str) -> Result<KeySource> {
        let named = kme::tls::certificate_name(&self.cert)?;
        if named.as_deref() != Some(self.sae_id.as_str()) {
            bail!(
                "peer {peer}: ppk_source.cert {} names {:?}, not sae_id `{}`",
                self.cert.display(),
                named,
                self.sae_id
            );
        }
        let tls = kme::tls::client(&self.ca, &self.cert, &self.key)?;
        let timeout = Duration::from_nanos(self.timeout.as_nanos());
        let missing = |f: &str| anyhow::anyhow!("peer {peer}: ppk_source needs `{f}`");
        Ok(match (&self.etsi014, &self.skip) {
            (Some(url), None) => KeySource::Etsi014 {
                http: Https::new(url, tls, timeout)?,
                peer_sae: self
                    .peer_sae_id
                    .clone()
                    .ok_or_else(|| missing("peer_sae_id"))?,
            },
            (None, Some(url)) => KeySource::Skip {
                http: Https::new(url, tls, timeout)?,
                remote: self
                    .remote_system_id
                    .clone()
                    .ok_or_else(|| missing("remote_system_id"))?,
            },
            _ => bail!("peer {peer}: ppk_source needs one of `etsi014` and `skip`"),
        })
    }
}

/// What a key manager answered a gateway, for the event loop.
struct Fetched {
    sa: ikev2::endpoint::SaId,
    peer: usize,
    /// The key ID the peer sent (we are the responder), or `None` (we drew).
    asked: Option<String>,
    result: std::result::Result<kme::client::Key, kme::Error>,
    took: Duration,
}

/// An exchange live mode starts on its own at a given time.
#[derive(Clone, Copy)]
enum Action {
    RekeyChild(u32),
    RekeyIke,
    CreateChild,
}

fn default_esp() -> Vec<String> {
    vec!["aes256gcm16".into()]
}
fn default_fragment_size() -> usize {
    1280
}

/// Parses `10.1.0.0/24`, `10.1.0.1` or `10.1.0.1-10.1.0.9` into a selector (any port,
/// any protocol).
pub fn parse_ts(s: &str) -> Result<TrafficSelector> {
    let (start, end): (IpAddr, IpAddr) = if let Some((a, b)) = s.split_once('-') {
        (a.trim().parse()?, b.trim().parse()?)
    } else if let Some((a, len)) = s.split_once('/') {
        let a: std::net::Ipv4Addr = a
            .parse()
            .with_context(|| format!("`{s}`: IPv4 prefixes only"))?;
        let len: u32 = len.parse()?;
        if len > 32 {
            bail!("`{s}`: prefix length over 32");
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let base = u32::from(a) & mask;
        (
            IpAddr::from(std::net::Ipv4Addr::from(base)),
            IpAddr::from(std::net::Ipv4Addr::from(base | !mask)),
        )
    } else {
        let a: IpAddr = s.parse()?;
        (a, a)
    };
    Ok(TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: 65535,
        start,
        end,
    })
}

fn hex(s: &str) -> Result<Vec<u8>> {
    let s = s.trim_start_matches("0x");
    (0..s.len())
        .step_by(2)
        .map(|i| {
            Ok(u8::from_str_radix(
                s.get(i..i + 2).context("odd hex length")?,
                16,
            )?)
        })
        .collect()
}

impl LivePeer {
    fn to_peer(&self) -> Result<PeerConfig> {
        let remote = SocketAddr::new(self.remote, self.remote_port);
        let id = |s: &str| s.parse().map_err(|e: String| anyhow::anyhow!(e));
        let mut p = PeerConfig::new(
            &self.name,
            remote,
            id(&self.local_id)?,
            id(&self.remote_id)?,
            self.psk.as_bytes(),
        );
        let ike: Vec<&str> = self.ike.iter().map(String::as_str).collect();
        let esp: Vec<&str> = self.esp.iter().map(String::as_str).collect();
        p = p.with_ike(&ike)?.with_esp(&esp)?;
        if !self.local_ts.is_empty() {
            p.local_ts = self
                .local_ts
                .iter()
                .map(|t| parse_ts(t))
                .collect::<Result<_>>()?;
        }
        if !self.remote_ts.is_empty() {
            p.remote_ts = self
                .remote_ts
                .iter()
                .map(|t| parse_ts(t))
                .collect::<Result<_>>()?;
        }
        p.fragment_size = self.fragment_size;
        p.nat_t = self.encap;
        p.timers.dpd_delay_ns = self.dpd_delay.map(|d| d.as_nanos());
        p.childless = self.childless;
        p.ppk = match self.ppk.as_deref() {
            None | Some("disabled") => PpkPolicy::Disabled,
            Some("optional") => PpkPolicy::Optional,
            Some("required") => PpkPolicy::Required,
            Some(other) => bail!(
                "peer {}: ppk must be disabled, optional or required, not `{other}`",
                self.name
            ),
        };
        Ok(p)
    }
}

/// Reads and checks a live configuration, naming the file and the field on error.
pub fn load(path: &Path) -> Result<LiveConfig> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let de = toml::Deserializer::parse(&text).with_context(|| format!("in {}", path.display()))?;
    let cfg: LiveConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let line = e
            .inner()
            .span()
            .map(|s| 1 + text[..s.start].matches('\n').count());
        anyhow::anyhow!(
            "in {}: {}field `{}`: {}",
            path.display(),
            line.map(|l| format!("line {l}: ")).unwrap_or_default(),
            e.path(),
            e.inner().message()
        )
    })?;
    Ok(cfg)
}

/// The live configuration of one gateway of a scenario (`qsafe live SCENARIO --gateway
/// NAME`): a peer per tunnel it is part of, with the simulator's identities (gateway
/// names), PSKs, proposals, fragmentation and Child SA rekeying; it initiates the
/// tunnels it initiates in the scenario. PPKs come from QKD key managers, which live
/// mode does not have: a tunnel with PPKs is an error.
pub fn from_scenario(path: &Path, gateway: &str) -> Result<LiveConfig> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let world = topologies::parse(&text, &path.display().to_string())?;
    let address = |name: &str| {
        world
            .gateways
            .iter()
            .find(|g| g.name == name)
            .map(|g| IpAddr::V4(g.address))
    };
    let local = address(gateway)
        .with_context(|| format!("in {}: no gateway named `{gateway}`", path.display()))?;
    let mut peers = Vec::new();
    for (i, t) in world.tunnels.iter().enumerate() {
        let (initiate, other) = if t.initiator == gateway {
            (true, &t.responder)
        } else if t.responder == gateway {
            (false, &t.initiator)
        } else {
            continue;
        };
        if t.ppk != netsim::config::PpkMode::Disabled {
            bail!(
                "in {}: tunnel[{i}].ppk: PPKs come from QKD key managers, which live mode \
                 does not run; write a live configuration with static `ppks` instead",
                path.display()
            );
        }
        peers.push(LivePeer {
            name: t.name.clone(),
            remote: address(other).context("checked by the parser")?,
            remote_port: default_port(),
            local_id: format!("fqdn:{gateway}"),
            remote_id: format!("fqdn:{other}"),
            psk: netsim::tunnel_psk(&t.name),
            ike: t.ike.clone(),
            esp: t.esp.clone(),
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            fragment_size: t.fragment_size,
            encap: false,
            childless: false,
            ppk: None,
            ppk_id: None,
            ppks: BTreeMap::new(),
            ppk_source: None,
            initiate,
            dpd_delay: None,
            rekey_ike_after: if initiate { t.rekey_time } else { None },
            rekey_child_after: if initiate { t.child_rekey_time } else { None },
            create_child_after: None,
        });
    }
    if peers.is_empty() {
        bail!("in {}: gateway `{gateway}` is in no tunnel", path.display());
    }
    Ok(LiveConfig {
        local,
        port: default_port(),
        natt_port: default_natt_port(),
        crypto: None,
        timeout: default_timeout(),
        hold: sim_core::SimDuration::ZERO,
        peers,
    })
}

/// The wall-clock instant `d` from now (live mode's timers).
fn from_now(d: sim_core::SimDuration) -> Instant {
    Instant::now() + Duration::from_nanos(d.as_nanos())
}

/// Runs the gateways of `cfg` until every SA it initiates (or, with no initiator,
/// one SA a peer initiates) is established or failed, or the timeout passes. Returns
/// the number of failures.
pub fn run(cfg: &LiveConfig, seed: u64, keylog: Option<&Path>) -> Result<usize> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cfg, seed, keylog))
}

async fn run_async(cfg: &LiveConfig, seed: u64, keylog: Option<&Path>) -> Result<usize> {
    let peers: Vec<PeerConfig> = cfg
        .peers
        .iter()
        .map(LivePeer::to_peer)
        .collect::<Result<_>>()?;
    let crypto: Box<dyn CryptoProvider> = match cfg.crypto.as_deref() {
        None | Some("real") => Box::new(RealCrypto),
        Some("model") => Box::new(ModelCrypto),
        Some(other) => bail!("crypto must be `real` or `model`, not `{other}`"),
    };
    let local = SocketAddr::new(cfg.local, cfg.port);
    let natt_local = SocketAddr::new(cfg.local, cfg.natt_port);
    let sock = UdpSocket::bind(local)
        .await
        .with_context(|| format!("binding {local}"))?;
    let natt = UdpSocket::bind(natt_local)
        .await
        .with_context(|| format!("binding {natt_local}"))?;
    let rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    println!(
        "qsafe live: IKE on {local} and {natt_local}, crypto {}",
        crypto.name()
    );
    let mut config = EndpointConfig::new(local);
    config.natt_port = cfg.natt_port;
    let mut ep = Endpoint::new(config, peers, crypto, Box::new(rng));
    let mut keylog = match keylog {
        Some(p) => Some(fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };

    let start = Instant::now();
    let now = || start.elapsed().as_nanos() as u64;
    let initiators: Vec<usize> = (0..cfg.peers.len())
        .filter(|&i| cfg.peers[i].initiate)
        .collect();
    for &i in &initiators {
        let sa = ep.initiate(now(), i);
        println!(
            "[{:>8.3}s] {}: initiating IKE SA {sa:016x}",
            now() as f64 / 1e9,
            cfg.peers[i].name
        );
    }
    let wanted = initiators.len().max(1);
    let (mut done, mut failures) = (0usize, 0usize);
    let deadline = start + Duration::from_nanos(cfg.timeout.as_nanos());
    let mut buf = vec![0u8; 65_536];
    let mut finish_at: Option<Instant> = None;
    // Exchanges to start: (when, IKE SA, what).
    let mut rekeys: Vec<(Instant, ikev2::endpoint::SaId, Action)> = Vec::new();
    let mut sa_peer: BTreeMap<ikev2::endpoint::SaId, usize> = BTreeMap::new();
    let mut created: std::collections::BTreeSet<ikev2::endpoint::SaId> = Default::default();
    let mut buf4500 = vec![0u8; 65_536];
    let mut esp_ignored = 0u64;
    // PPK sources (key managers) by peer, and the answers of their fetches.
    let sources: Vec<Option<KeySource>> = cfg
        .peers
        .iter()
        .map(|p| {
            p.ppk_source
                .as_ref()
                .map(|s| s.key_source(&p.name))
                .transpose()
        })
        .collect::<Result<_>>()?;
    let (fetched_tx, mut fetched) = tokio::sync::mpsc::unbounded_channel::<Fetched>();
    loop {
        // Rekeys that are due (the endpoint ignores one while another exchange runs).
        let due = Instant::now();
        for &(_, sa, action) in rekeys.iter().filter(|r| r.0 <= due) {
            let at = now() as f64 / 1e9;
            match action {
                Action::RekeyChild(spi_in) => {
                    println!("[{at:>8.3}s] rekeying Child SA {spi_in:08x}");
                    ep.rekey_child(now(), sa, spi_in);
                }
                Action::RekeyIke => {
                    println!("[{at:>8.3}s] rekeying IKE SA {sa:016x}");
                    ep.rekey_ike(now(), sa);
                }
                Action::CreateChild => {
                    println!("[{at:>8.3}s] creating an additional Child SA");
                    ep.create_child(now(), sa);
                }
            }
        }
        rekeys.retain(|r| r.0 > due);
        // Outputs: datagrams, then events (answering one may queue more datagrams).
        loop {
            while let Some(t) = ep.poll_transmit() {
                if t.src.port() == cfg.natt_port || t.dst.port() == cfg.natt_port {
                    let mut d = vec![0u8; 4];
                    d.extend_from_slice(&t.payload);
                    natt.send_to(&d, t.dst).await?;
                } else {
                    sock.send_to(&t.payload, t.dst).await?;
                }
            }
            let Some(ev) = ep.poll_event() else { break };
            {
                let at = now() as f64 / 1e9;
                match &ev {
                    Event::PpkNeeded { sa, peer, key_id } => {
                        let p = &cfg.peers[*peer];
                        if let Some(source) = sources[*peer].clone() {
                            // Asked of the key manager; the answer comes back through
                            // `fetched` and the endpoint waits for it meanwhile.
                            let asked = key_id
                                .as_ref()
                                .map(|id| String::from_utf8_lossy(id).into_owned());
                            println!(
                                "[{at:>8.3}s] {}: PPK needed, asking the key manager {}",
                                p.name,
                                match &asked {
                                    Some(id) => format!("for key {id}"),
                                    None => "for a new key".into(),
                                }
                            );
                            let (sa, peer, tx) = (*sa, *peer, fetched_tx.clone());
                            tokio::spawn(async move {
                                let t0 = Instant::now();
                                let result = match &asked {
                                    Some(id) => source.key_by_id(id).await,
                                    None => source.new_key().await,
                                };
                                let took = t0.elapsed();
                                let _ = tx.send(Fetched {
                                    sa,
                                    peer,
                                    asked,
                                    result,
                                    took,
                                });
                            });
                            continue;
                        }
                        let id = key_id
                            .clone()
                            .or_else(|| p.ppk_id.as_ref().map(|s| s.as_bytes().to_vec()));
                        let key = id
                            .as_ref()
                            .and_then(|id| p.ppks.get(&String::from_utf8_lossy(id).to_string()));
                        let ppk = match (id, key) {
                            (Some(id), Some(k)) => Some(Ppk { id, key: hex(k)? }),
                            _ => None,
                        };
                        println!(
                            "[{at:>8.3}s] {}: PPK needed, {}",
                            p.name,
                            if ppk.is_some() {
                                "provided"
                            } else {
                                "none available"
                            }
                        );
                        ep.provide_ppk(now(), *sa, ppk);
                    }
                    Event::Keys { entry, .. } => {
                        if let Some(f) = keylog.as_mut() {
                            writeln!(f, "{}", entry.wireshark_line())?;
                        }
                    }
                    Event::ExchangeStarted { .. } => {}
                    Event::Exchange { stats, .. } => println!(
                        "[{at:>8.3}s] {} done: {} B in {} fragment(s) out, {} B in {} in, {} retransmission(s)",
                        exchange::name(stats.exchange).unwrap_or("exchange"),
                        stats.request_bytes,
                        stats.request_fragments,
                        stats.response_bytes,
                        stats.response_fragments,
                        stats.retransmissions
                    ),
                    Event::IkeSaEstablished {
                        sa,
                        peer,
                        proposal,
                        ppk,
                        initiator,
                        keylog: keylog_entry,
                        ..
                    } => {
                        sa_peer.insert(*sa, *peer);
                        if let Some(after) = cfg.peers[*peer].rekey_ike_after {
                            let when = from_now(after);
                            rekeys.push((when, *sa, Action::RekeyIke));
                        }
                        let ppk = match ppk {
                            PpkOutcome::Used { id } => {
                                let id = String::from_utf8_lossy(id);
                                // Wireshark skips `#` lines: the PPK beside the keys.
                                if let Some(f) = keylog.as_mut() {
                                    let k = keylog_entry;
                                    writeln!(f, "# {:016x},{:016x}: PPK {id}", k.spi_i, k.spi_r)?;
                                }
                                format!("used {id}")
                            }
                            PpkOutcome::NotUsed => "not used".into(),
                            PpkOutcome::Downgraded { reason } => format!("DOWNGRADED ({reason:?})"),
                        };
                        println!(
                            "[{at:>8.3}s] {}: IKE SA {sa:016x} established as {}, {proposal}, PPK {ppk}",
                            cfg.peers[*peer].name,
                            if *initiator { "initiator" } else { "responder" }
                        );
                        done += 1;
                    }
                    Event::ChildSaReady { sa, child } => {
                        println!("[{at:>8.3}s] Child SA ready: {child:?}");
                        let peer = sa_peer.get(sa).copied().map(|p| &cfg.peers[p]);
                        if let Some(after) = peer.and_then(|p| p.rekey_child_after) {
                            rekeys.push((from_now(after), *sa, Action::RekeyChild(child.spi_in)));
                        }
                        // One additional Child SA, after the first one only.
                        if let Some(after) = peer.and_then(|p| p.create_child_after)
                            && created.insert(*sa)
                        {
                            rekeys.push((from_now(after), *sa, Action::CreateChild));
                        }
                    }
                    Event::IkeSaRekeyed { old, new, .. } => {
                        if let Some(p) = sa_peer.get(old).copied() {
                            sa_peer.insert(*new, p);
                        }
                        println!("[{at:>8.3}s] IKE SA {old:016x} rekeyed: now {new:016x}")
                    }
                    Event::IkeSaRekeyFailed { sa, notify } => {
                        println!("[{at:>8.3}s] IKE SA {sa:016x} rekey refused: notify {notify}")
                    }
                    Event::IkeSaDeleted { sa, .. } => {
                        println!("[{at:>8.3}s] IKE SA {sa:016x} deleted")
                    }
                    Event::ChildSaRekeyed {
                        old_spi_in, child, ..
                    } => {
                        println!("[{at:>8.3}s] Child SA {old_spi_in:08x} rekeyed: {child:?}")
                    }
                    Event::ChildSaDeleting { .. } => {}
                    Event::ChildSaDeleted { spi_in, .. } => {
                        println!("[{at:>8.3}s] Child SA {spi_in:08x} deleted")
                    }
                    Event::ChildSaFailed { notify, .. } => {
                        println!("[{at:>8.3}s] Child SA refused: notify {notify}")
                    }
                    Event::IkeSaFailed { sa, peer, reason } => {
                        println!(
                            "[{at:>8.3}s] {}: IKE SA {sa:016x} failed: {reason:?}",
                            cfg.peers[*peer].name
                        );
                        done += 1;
                        failures += 1;
                    }
                }
            }
        }
        if done >= wanted && finish_at.is_none() {
            finish_at = Some(from_now(cfg.hold));
        }
        if finish_at.is_some_and(|f| Instant::now() >= f) && rekeys.is_empty() {
            break;
        }
        let wake = ep
            .poll_timeout()
            .map(|t| start + Duration::from_nanos(t))
            .into_iter()
            .chain(rekeys.iter().map(|r| r.0))
            .chain(finish_at)
            .fold(deadline, Instant::min);
        if Instant::now() >= deadline {
            println!("qsafe live: timeout after {}", cfg.timeout);
            print_counts(ep.stats(), esp_ignored);
            return Ok(failures + wanted - done);
        }
        // A receive error (an ICMP error reported on the socket) is logged, never fatal.
        tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let before = ep.stats().clone();
                    ep.handle_datagram(now(), from, &buf[..n]);
                    log_drop(now(), from, n, &before, ep.stats());
                }
                Err(e) => println!("[{:>8.3}s] receive error on {local}: {e}", now() as f64 / 1e9),
            },
            r = natt.recv_from(&mut buf4500) => match r {
                // IKE behind the non-ESP marker; anything else on 4500 is ESP, which
                // live mode does not handle (the kernel or libipsec would).
                Ok((n, from)) if n >= 4 && buf4500[..4] == [0, 0, 0, 0] => {
                    let before = ep.stats().clone();
                    ep.handle_datagram(now(), from, &buf4500[4..n]);
                    log_drop(now(), from, n, &before, ep.stats());
                }
                Ok((n, from)) => {
                    esp_ignored += 1;
                    println!("[{:>8.3}s] ignored {n} bytes of ESP from {from}", now() as f64 / 1e9);
                }
                Err(e) => println!("[{:>8.3}s] receive error on {natt_local}: {e}", now() as f64 / 1e9),
            },
            Some(f) = fetched.recv() => {
                let name = &cfg.peers[f.peer].name;
                let took = f.took.as_secs_f64() * 1e3;
                let ppk = match f.result {
                    Ok((id, key)) => {
                        println!(
                            "[{:>8.3}s] {name}: PPK {id} from the key manager ({} bits) in {took:.1} ms",
                            now() as f64 / 1e9,
                            key.len() * 8
                        );
                        Some(Ppk { id: id.into_bytes(), key })
                    }
                    Err(e) => {
                        println!(
                            "[{:>8.3}s] {name}: no PPK{} after {took:.1} ms: {e} (the peer's PPK policy decides)",
                            now() as f64 / 1e9,
                            f.asked.map(|id| format!(" {id}")).unwrap_or_default()
                        );
                        None
                    }
                };
                ep.provide_ppk(now(), f.sa, ppk);
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                ep.handle_timeout(now());
            }
        }
    }
    print_counts(ep.stats(), esp_ignored);
    Ok(failures)
}

/// What the endpoint refused of one datagram, if anything, as a log line.
fn log_drop(now: u64, from: SocketAddr, n: usize, before: &EndpointStats, after: &EndpointStats) {
    let why = [
        (
            after.dropped_malformed > before.dropped_malformed,
            "malformed",
        ),
        (
            after.dropped_unknown_spi > before.dropped_unknown_spi,
            "unknown SPI",
        ),
        (
            after.dropped_integrity > before.dropped_integrity,
            "failed its integrity check",
        ),
        (
            after.dropped_unexpected > before.dropped_unexpected,
            "unexpected",
        ),
        (
            after.dropped_no_peer > before.dropped_no_peer,
            "from no configured peer",
        ),
        (
            after.init_errors_held > before.init_errors_held,
            "an IKE_SA_INIT error, held",
        ),
    ];
    for (_, what) in why.iter().filter(|w| w.0) {
        println!(
            "[{:>8.3}s] dropped {n} bytes from {from}: {what}",
            now as f64 / 1e9
        );
    }
}

/// The endpoint's counters at the end of a live run.
fn print_counts(s: &EndpointStats, esp_ignored: u64) {
    println!(
        "qsafe live: {} datagrams received; dropped: {} malformed, {} unknown SPI, {} failed \
         integrity, {} unexpected, {} from no peer; {} IKE_SA_INIT errors held; {} ESP ignored",
        s.datagrams_received,
        s.dropped_malformed,
        s.dropped_unknown_spi,
        s.dropped_integrity,
        s.dropped_unexpected,
        s.dropped_no_peer,
        s.init_errors_held,
        esp_ignored
    );
}
