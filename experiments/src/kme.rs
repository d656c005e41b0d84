//! `qsafe kme`: serves the key managers of a scenario over HTTPS with mutual TLS
//! (ETSI GS QKD 014 or SKIP, as each `[[kme]]` says) until stopped, with the pools
//! filling in real time and the scenario's key manager and QKD link schedules
//! followed in wall-clock time; `--make-certs DIR` writes a test PKI for them and for the
//! scenario's gateways (the SAEs). Live, not deterministic: see the `kme` crate.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kme::certs::{self, Role};
use kme::server::{self, Api, Shared};
use link::LinkState;
use netsim::WorldConfig;
use netsim::config::KeyApi;
use tokio::net::TcpListener;

#[derive(clap::Args)]
pub struct KmeArgs {
    /// Scenario whose key managers (`[[kme]]`), QKD links and gateways (their SAEs) to
    /// serve.
    scenario: PathBuf,
    /// Serve key manager NAME on ADDR (repeatable), e.g. `kme-a=127.0.0.1:8443`.
    #[arg(long = "listen", value_name = "NAME=ADDR")]
    listen: Vec<String>,
    /// The certificates: DIR/ca.pem and DIR/server-NAME.pem/.key (`--make-certs` writes
    /// them).
    #[arg(long, value_name = "DIR")]
    certs: Option<PathBuf>,
    /// Write a test CA, a server certificate per key manager and a client certificate
    /// per gateway (its common name is the SAE ID) into DIR, then exit.
    #[arg(long, value_name = "DIR")]
    make_certs: Option<PathBuf>,
    /// Another name or address the key managers' certificates are valid for
    /// (repeatable; localhost, 127.0.0.1 and ::1 always are).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Seed of the pools' key streams and supply.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this long (default: serve until killed).
    #[arg(long, value_name = "DURATION")]
    serve_for: Option<sim_core::SimDuration>,
}

pub fn command(args: &KmeArgs) -> Result<()> {
    let origin = args.scenario.display().to_string();
    let text = fs::read_to_string(&args.scenario).with_context(|| format!("reading {origin}"))?;
    let world = topologies::parse(&text, &origin)?;
    if let Some(dir) = &args.make_certs {
        let kmes: Vec<&str> = world.kmes.iter().map(|k| k.name.as_str()).collect();
        let saes: Vec<&str> = world
            .gateways
            .iter()
            .filter(|g| g.kme.is_some())
            .map(|g| g.name.as_str())
            .collect();
        let hosts: Vec<&str> = args.hosts.iter().map(String::as_str).collect();
        let written = certs::make(dir, &kmes, &saes, &hosts)?;
        println!(
            "qsafe kme: wrote {} files to {}",
            written.len(),
            dir.display()
        );
        return Ok(());
    }
    let Some(dir) = &args.certs else {
        bail!("--certs DIR is needed to serve (write one with --make-certs DIR)");
    };
    if args.listen.is_empty() {
        bail!("nothing to serve: give --listen NAME=ADDR for each key manager to serve");
    }
    let net = netsim::qkd_network(&world, args.seed).with_context(|| format!("in {origin}"))?;
    let mut serving = Vec::new();
    for l in &args.listen {
        let (name, addr) = l
            .split_once('=')
            .with_context(|| format!("--listen {l}: expected NAME=ADDR"))?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("--listen {l}: `{addr}` is not an address:port"))?;
        let Some(index) = world.kmes.iter().position(|k| k.name == name) else {
            bail!("--listen {l}: {origin} has no key manager named `{name}`");
        };
        let api = match world.kmes[index].api {
            KeyApi::Etsi014 => Api::Etsi014,
            KeyApi::Skip => Api::Skip,
        };
        let (cert, key) = certs::paths(dir, Role::Kme, name);
        // SKIP has no status code for a missing certificate: the handshake needs one.
        let tls = kme::tls::server(&certs::ca_path(dir), &cert, &key, api == Api::Skip)?;
        serving.push((server::Kme { index, api, tls }, addr, name.to_string()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shared = Shared::new(net);
        let log: server::Log = Arc::new(|line| println!("{line}"));
        for (kme, addr, name) in serving {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let api = match kme.api {
                Api::Etsi014 => "ETSI GS QKD 014",
                Api::Skip => "SKIP",
            };
            println!(
                "qsafe kme: {name} serves {api} on https://{}",
                listener.local_addr()?
            );
            tokio::spawn(server::serve(shared.clone(), kme, listener, log.clone()));
        }
        tokio::spawn(follow_schedules(shared.clone(), schedules(&world)));
        println!("qsafe kme: live mode, not deterministic: pools fill in wall-clock time");
        match args.serve_for {
            Some(d) => tokio::time::sleep(std::time::Duration::from_nanos(d.as_nanos())).await,
            None => std::future::pending::<()>().await,
        }
        Ok(())
    })
}

/// What a schedule switches: a key manager or a QKD link, by index.
#[derive(Clone, Copy, Debug)]
enum Switch {
    Kme(usize, bool),
    QkdLink(usize, bool),
}

/// The scenario's key manager and QKD link schedules, in time order (ns from start).
fn schedules(world: &WorldConfig) -> Vec<(u64, Switch)> {
    let up = |s: LinkState| s == LinkState::Up;
    let kmes = world.kmes.iter().enumerate().flat_map(|(k, c)| {
        c.schedule
            .iter()
            .map(move |t| (t.at.as_nanos(), Switch::Kme(k, up(t.state))))
    });
    let links = world.qkd_links.iter().enumerate().flat_map(|(l, c)| {
        c.schedule
            .iter()
            .map(move |t| (t.at.as_nanos(), Switch::QkdLink(l, up(t.state))))
    });
    let mut all: Vec<_> = kmes.chain(links).collect();
    all.sort_by_key(|&(at, _)| at);
    all
}

/// Applies each switch when its time (from the server's start) comes, as the simulator
/// does at that simulated time: a key manager down answers 503, a QKD link down adds
/// no key.
async fn follow_schedules(shared: Arc<Shared>, switches: Vec<(u64, Switch)>) {
    for (at, switch) in switches {
        let when = shared.start + std::time::Duration::from_nanos(at);
        tokio::time::sleep_until(when.into()).await;
        let now = shared.start.elapsed().as_nanos() as u64;
        let mut net = shared.net.lock().expect("not poisoned");
        let (what, up) = match switch {
            Switch::Kme(k, up) => {
                net.kmes[k].up = up;
                (format!("key manager {}", net.kmes[k].id), up)
            }
            Switch::QkdLink(l, up) => {
                net.links[l].set_up(now, up);
                (format!("QKD link {}", net.links[l].name), up)
            }
        };
        let state = if up { "up" } else { "down" };
        println!("[{:>9.3}s] schedule: {what} {state}", now as f64 / 1e9);
    }
}
