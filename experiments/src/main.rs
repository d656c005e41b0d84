//! `qsafe`: the command-line front end of the simulator.
//!
//! With no arguments it runs the built-in demo scenario and writes its results under
//! `out/demo`.

// jemalloc rather than the C library's allocator: a run allocates and frees small
// objects (messages, payloads, events) at a high rate, which jemalloc does about 10 %
// faster (`qsafe bench`, 1,000 and 10,000 spokes). Which allocator runs cannot change a
// result: nothing reads addresses.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: freed pages go back to the system after half
/// a second rather than ten, so that the resident memory follows what a run holds
/// (1,000 spokes: 15.3 KiB per tunnel rather than 16.3, for 2 % of the speed); the heap
/// and jemalloc's own tables go in 2 MiB pages where the kernel gives them (transparent
/// huge pages in `madvise` mode or `always`): a hub of thousands of tunnels looks its
/// state up all over a heap far larger than the cache, and with 4 KiB pages every such
/// lookup also misses the address translation (99,999 spokes about 7 % faster, 10,000
/// within the noise; 6 MB more for the process, the same per tunnel: see the README).
#[repr(transparent)]
struct MallocConf(*const u8);
// SAFETY: a pointer to a static, NUL-terminated string that nothing writes.
unsafe impl Sync for MallocConf {}
#[used]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(
    c"thp:always,metadata_thp:always,dirty_decay_ms:500,muzzy_decay_ms:0"
        .as_ptr()
        .cast(),
);

mod bench;
mod calibrate;
mod files;
mod kme;
mod live;
mod regions;
mod run;
mod swarm;
mod sweep;

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use link::probe::{self, Outputs, ProbeConfig, ProbeReport};

use crate::files::{Manifest, write_json};

/// The link-probe example, compiled in for `qsafe probe` without a file.
const PROBE_DEMO: &str = include_str!("../scenarios/demo-link.toml");

#[derive(Parser)]
#[command(
    name = "qsafe",
    version,
    about = "Deterministic simulator for quantum-safe IPsec networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a scenario: gateways, links, QKD key managers, tunnels.
    Run(run::RunArgs),
    /// Run a grid of scenario parameters times seeds, in parallel, optionally one shard.
    Sweep(sweep::SweepArgs),
    /// Write DIR/report.html (and DIR/figures/) from the results of a run in DIR
    /// (results.json) or of a sweep (runs.json).
    Report { dir: PathBuf },
    /// Write a scenario file of a generated topology with every gateway, link, key
    /// manager and tunnel spelled out, ready to edit or run: `qsafe generate
    /// hub-and-spoke --nodes 300 --set 'topology.tunnel.ppk="required"'`.
    Generate {
        /// point-to-point, hub-and-spoke, full-mesh, chain, ring or random.
        kind: String,
        /// Spokes, mesh size, trusted nodes of a chain, ring or graph size.
        #[arg(long, default_value_t = 2)]
        nodes: i64,
        #[arg(long, default_value = "1h")]
        duration: String,
        /// Set a parameter by dotted path before generating (repeatable), e.g.
        /// `topology.link.mtu=1280` or `topology.qkd.rate_bps=1000`.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
        /// Write here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Swarm testing: a random scenario per seed (topology, links, QKD, lifetimes,
    /// proposals, PPK policy, traffic, faults, attackers), each run with every oracle;
    /// lists every run that broke an invariant or panicked with its replay command.
    Swarm(swarm::SwarmArgs),
    /// Reduce a scenario whose run breaks an invariant (fewer tunnels, faults,
    /// attackers, less traffic, a shorter run) while the same invariant still breaks.
    Shrink(swarm::ShrinkArgs),
    /// Compare runs or sweeps side by side: every metric with its difference from the
    /// first, and the handshake-time and time-to-up distributions overlaid, as
    /// OUT/report.html (a sweep contributes one series per grid point).
    Compare {
        #[arg(required = true, num_args = 2..)]
        dirs: Vec<PathBuf>,
        /// Directory for the comparison (default: out/compare).
        #[arg(long, default_value = "out/compare")]
        out: PathBuf,
    },
    /// Merge the runs of sweep directories (e.g. one per shard) into OUT/runs.csv and
    /// the grid point table OUT/summary.csv; or the shards of one run (directories with
    /// results.json, from `qsafe run --shard-index`) into OUT/results.json.
    Merge {
        out: PathBuf,
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Characterize a link: two hosts exchange numbered UDP probes over it and measure
    /// loss, bursts, latency and goodput.
    Probe(RunArgs),
    /// Run gateways over real UDP sockets (ports 500 and 4500) with the simulator's IKEv2
    /// code, e.g. against strongSwan. Exits non-zero if an IKE SA fails.
    Live(LiveArgs),
    /// Serve a scenario's QKD key managers over HTTPS with mutual TLS (ETSI GS QKD 014
    /// or SKIP), pools filling in real time, for live gateways and other clients;
    /// `--make-certs DIR` writes a test CA and certificates first.
    Kme(kme::KmeArgs),
    /// Every scenario key with its type, default and meaning (`qsafe explain
    /// tunnel.rekey_time`: that key; `qsafe explain tunnel`: every tunnel key; `qsafe
    /// explain metrics`: what sweeps report).
    Explain {
        /// A key or the start of one (`topology`, `link.*.params.loss`), or `metrics`.
        key: Option<String>,
    },
    /// Measure the crypto costs of the CPU model on this machine and print them as a
    /// gateway's `cpu = { ... }` for a scenario file.
    Calibrate,
    /// What simulation costs on this machine, as one table: a day of a hub and spoke at
    /// several sizes (scale), and a rekey-heavy hour against its bare crypto (floor).
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct LiveArgs {
    /// Live configuration (TOML): local address and peers; with `--gateway`, a scenario.
    config: PathBuf,
    /// Run this gateway of a scenario file over real sockets, at its scenario address.
    #[arg(long)]
    gateway: Option<String>,
    /// IKE port (default 500, or the live configuration's).
    #[arg(long)]
    port: Option<u16>,
    /// NAT-T port (default 4500, or the live configuration's).
    #[arg(long)]
    natt_port: Option<u16>,
    /// Keep serving peers this long after every SA is up (their rekeys and deletes).
    #[arg(long)]
    hold: Option<sim_core::SimDuration>,
    /// Seed of the random stream (SPIs, nonces, keys): live mode is a test tool.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the IKE keys in Wireshark's IKEv2 decryption table format.
    #[arg(long)]
    keylog: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Probe configuration (TOML); the built-in demo when omitted.
    config: Option<PathBuf>,
    /// Master seed: the same seed reproduces the run bit for bit.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for results.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write trace.jsonl with the lines this filter selects, e.g.
    /// `all` or `entity=link/*,kind=link.drop,from=10s,until=1m`.
    #[arg(long)]
    trace: Option<String>,
    /// Write capture.pcap with every IPv4 packet put on the wire.
    #[arg(long)]
    pcap: bool,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, outermost context first: "in FILE: line N: field `x`: ...".
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Run(args)) => run::command(&args, "run"),
        Some(Command::Sweep(args)) => sweep::sweep(&args),
        Some(Command::Report { dir }) => {
            let report = match dir.join("runs.json").exists() {
                true => reports::write_sweep_report(&dir)?,
                false => reports::write_report(&dir)?,
            };
            println!("report: {}", report.display());
            Ok(())
        }
        Some(Command::Swarm(args)) => swarm::swarm(&args),
        Some(Command::Shrink(args)) => swarm::shrink(&args),
        Some(Command::Compare { dirs, out }) => {
            let report = reports::compare::write_compare(&out, &dirs)?;
            print!("{}", fs::read_to_string(out.join("compare.md"))?);
            println!("report: {}", report.display());
            Ok(())
        }
        // Shards of one run hold results.json; sweeps hold runs/.
        Some(Command::Merge { out, dirs })
            if dirs.iter().all(|d| d.join("results.json").exists()) =>
        {
            let r = run::merge_runs(&out, &dirs)?;
            println!(
                "merged {} shards: {} tunnels, {} handshakes; {}",
                dirs.len(),
                r.tunnels.len(),
                r.totals.time_to_up_ns.count,
                out.join("results.json").display()
            );
            Ok(())
        }
        Some(Command::Merge { out, dirs }) => sweep::merge(&out, &dirs).map(|_| ()),
        Some(Command::Generate {
            kind,
            nodes,
            duration,
            set,
            out,
        }) => generate(&kind, nodes, &duration, &set, out.as_deref()),
        Some(Command::Probe(args)) => probe_command(&args),
        Some(Command::Explain { key }) => explain(key.as_deref().unwrap_or("")),
        Some(Command::Bench(args)) => bench::command(&args),
        Some(Command::Calibrate) => {
            println!("# measured on this machine (real crypto, medians); paste into a [[gateway]]");
            println!("{}", calibrate::scenario_line(&calibrate::measure()));
            Ok(())
        }
        Some(Command::Kme(args)) => kme::command(&args),
        Some(Command::Live(args)) => {
            let mut cfg = match &args.gateway {
                Some(g) => live::from_scenario(&args.config, g)?,
                None => live::load(&args.config)?,
            };
            if let Some(p) = args.port {
                cfg.port = p;
                // A scenario's gateways all listen on the same port.
                if args.gateway.is_some() {
                    cfg.peers.iter_mut().for_each(|peer| peer.remote_port = p);
                }
            }
            cfg.natt_port = args.natt_port.unwrap_or(cfg.natt_port);
            cfg.hold = args.hold.unwrap_or(cfg.hold);
            let failures = live::run(&cfg, args.seed, args.keylog.as_deref())?;
            if failures > 0 {
                anyhow::bail!("{failures} IKE SA(s) failed or timed out");
            }
            Ok(())
        }
        None => run::command(
            &run::RunArgs {
                scenario: None,
                seed: None,
                set: Vec::new(),
                out: None,
                trace: None,
                pcap: false,
                keylog: false,
                quiet: false,
                no_report: false,
                rows: Default::default(),
                shard_index: None,
                shard_count: None,
                by_region: false,
                jobs: None,
                event_costs: false,
            },
            "demo",
        ),
    }
}

fn explain(key: &str) -> Result<()> {
    if key == "metrics" {
        for m in results::metrics::all() {
            println!(
                "{}  ({}, {})\n    {}",
                m.name(),
                m.unit,
                m.statistic.word(),
                m.about
            );
        }
        return Ok(());
    }
    let keys = topologies::explain::find(key);
    if keys.is_empty() {
        anyhow::bail!("no scenario key `{key}` (`qsafe explain` lists them all)");
    }
    print!("{}", topologies::explain::render_keys(&keys));
    Ok(())
}

fn probe_command(args: &RunArgs) -> Result<()> {
    let (text, scenario) = match &args.config {
        Some(path) => (
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (PROBE_DEMO.to_string(), "built-in probe example".to_string()),
    };
    let cfg = parse_probe_config(&text).with_context(|| format!("in {scenario}"))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out/probe"));
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let tracer = files::tracer(&out, args.trace.as_deref())?;
    let mut pcap = files::capture(&out, args.pcap)?;
    let report = probe::run(
        &cfg,
        args.seed,
        Outputs {
            tracer,
            pcap: pcap.as_mut(),
            progress: !args.quiet,
        },
    )?;
    if let Some(p) = pcap {
        use std::io::Write;
        p.finish()?.flush().context("writing capture.pcap")?;
    }

    let reproduce = match &args.config {
        Some(path) => format!("qsafe probe {} --seed {}", path.display(), args.seed),
        None => format!("qsafe probe --seed {}", args.seed),
    };
    let manifest = Manifest::new(
        "probe",
        &scenario,
        &text,
        args.seed,
        None,
        report.fingerprint.to_string(),
        &reproduce,
    );
    write_json(&out.join("manifest.json"), &manifest)?;
    write_json(&out.join("results.json"), &report)?;
    print_summary(&report);
    println!("results: {}", out.display());
    println!("fingerprint: {}", report.fingerprint);
    println!("reproduce: {reproduce}");
    Ok(())
}

/// Parses and validates a probe configuration; errors name the field and, when the
/// parser knows it, the line.
fn parse_probe_config(text: &str) -> Result<ProbeConfig> {
    let de = toml::Deserializer::parse(text)?;
    let cfg: ProbeConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let line = e
            .inner()
            .span()
            .map(|span| format!("line {}: ", 1 + text[..span.start].matches('\n').count()))
            .unwrap_or_default();
        anyhow::anyhow!("{line}field `{}`: {}", e.path(), e.inner().message())
    })?;
    cfg.validate()?;
    Ok(cfg)
}

fn print_summary(r: &ProbeReport) {
    println!(
        "{:<9} {:>8} {:>8} {:>7} {:>6} {:>10} {:>10} {:>12}  drops",
        "direction", "sent", "received", "loss", "burst", "p50 ms", "p99 ms", "goodput"
    );
    for d in &r.directions {
        let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.3}", v as f64 / 1e6));
        let drops: Vec<String> = link::DropReason::ALL
            .iter()
            .filter(|&&why| d.link.dropped(why) > 0)
            .map(|&why| format!("{}={}", why.as_str(), d.link.dropped(why)))
            .collect();
        println!(
            "{:<9} {:>8} {:>8} {:>6.2}% {:>6.2} {:>10} {:>10} {:>8.3} Mb/s  {}",
            d.direction,
            d.probes_sent,
            d.probes_received,
            100.0 * d.loss_rate,
            d.mean_loss_burst,
            ms(d.latency_ns.p50),
            ms(d.latency_ns.p99),
            d.goodput_bps / 1e6,
            drops.join(" ")
        );
    }
}

/// `qsafe generate`: a topology expanded into a scenario file (checked before writing).
fn generate(
    kind: &str,
    nodes: i64,
    duration: &str,
    set: &[String],
    out: Option<&std::path::Path>,
) -> Result<()> {
    let mut t = toml::Table::new();
    t.insert("duration".into(), duration.into());
    let mut topo = toml::Table::new();
    topo.insert("kind".into(), kind.into());
    topo.insert("nodes".into(), nodes.into());
    t.insert("topology".into(), topo.into());
    for a in set {
        let (path, value) =
            topologies::parse_assignment(a).map_err(|e| anyhow::anyhow!("--set {e}"))?;
        topologies::set_path(&mut t, &path, value).map_err(|e| anyhow::anyhow!("--set {e}"))?;
    }
    let (expanded, _) = topologies::expand(t).map_err(|e| anyhow::anyhow!(e))?;
    topologies::from_generated(expanded.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let text = format!(
        "# Generated by `qsafe generate {kind} --nodes {nodes}{}`.\n{}",
        set.iter()
            .map(|a| format!(" --set '{a}'"))
            .collect::<String>(),
        toml::to_string(&expanded)?
    );
    topologies::parse(&text, "the generated scenario")?;
    match out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
