//! `qsafe bench`: what simulation costs on this machine, as one table.
//!
//! - Scale: the day of `scenarios/scale-day.toml` (model crypto, no rows kept) at each
//!   size asked for: wall time, events and IKE exchanges per second, peak memory per
//!   tunnel, and the wall time's growth beside the tunnels'.
//! - Crypto floor: a rekey-heavy half hour with real crypto, where every
//!   gateway carries the CPU model with the costs `qsafe calibrate` measures, just now,
//!   in this process, and cores enough that jobs hardly wait: the gateways' busy time is
//!   then the bare crypto of exactly the run's operations, and wall / floor is what the
//!   simulator costs around it. The same run with model crypto gives the simulator's
//!   own cost per exchange.
//!
//! Wall-clock time and the process's memory are read here, as in `calibrate`, to
//! measure the machine; no simulation result depends on them.

use std::time::Instant;

use anyhow::{Context, Result};
use netsim::config::CryptoMode;
use netsim::cpu::CpuConfig;
use netsim::results::RowSelection;
use netsim::{Outputs, Results, World, WorldConfig};
use sim_core::Tracer;

use crate::calibrate;

const SCALE: &str = include_str!("../scenarios/scale-day.toml");

/// The crypto-heavy half hour: every tunnel re-keys its IKE SA each minute (ML-KEM-768 in
/// IKE_FOLLOWUP_KE) and its Child SA every 30 s (ML-KEM-768 PFS).
const HEAVY: &str = r#"
duration = "30m"
[topology]
kind = "hub-and-spoke"
nodes = 201
link = { latency = "15ms", mtu = 1280, loss = { model = "bernoulli", probability = 0.01 } }
qkd = { rate_bps = 2000, capacity_bits = 1048576, initial_bits = 524288 }
tunnel = { ppk = "required", rekey_time = "1m", rand_time = "0s", over_time = "1h", esp = ["aes256gcm16-mlkem768"], child_rekey_time = "30s", child_rand_time = "0s", child_life_time = "0s" }
"#;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Spokes of the scale rows (the hub is one more gateway).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub spokes: Vec<u64>,
    /// Simulated hours of the scale rows.
    #[arg(long, default_value_t = 24)]
    pub hours: u64,
    /// Spokes of the crypto-floor rows.
    #[arg(long, default_value_t = 200)]
    pub heavy_spokes: u64,
}

/// One run: its results, wall seconds, and the growth of the process's peak memory.
fn timed(cfg: WorldConfig) -> Result<(Results, f64, u64)> {
    let before = peak_rss_bytes();
    let start = Instant::now();
    let world = World::new(cfg, 1, Tracer::new()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let r = world.run(Outputs {
        rows: RowSelection::None,
        ..Outputs::none()
    });
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        r.violations.is_empty(),
        "invariants broken: {:?}",
        r.violations
    );
    Ok((r, secs, peak_rss_bytes().saturating_sub(before)))
}

/// The process's peak resident memory (Linux `VmHWM`), 0 where unknown.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn scenario(text: &str, sets: &[(&str, String)]) -> Result<WorldConfig> {
    let params = sets
        .iter()
        .map(|(k, v)| topologies::parse_assignment(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!(e))?;
    let table = text.parse().context("the bench scenario")?;
    Ok(topologies::with_params(&table, &params, "qsafe bench")?)
}

fn exchanges(r: &Results) -> u64 {
    r.totals.exchanges.iter().map(|e| e.count).sum()
}

pub fn command(args: &BenchArgs) -> Result<()> {
    println!(
        "| run | tunnels | simulated h | wall s | events/s | exchanges/s | crypto floor s | wall / floor | peak KiB per tunnel | wall growth | tunnel growth |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut first: Option<(u64, f64)> = None;
    for &n in &args.spokes {
        let cfg = scenario(
            SCALE,
            &[
                ("topology.nodes", (n + 1).to_string()),
                ("duration", format!("\"{}h\"", args.hours)),
            ],
        )?;
        let (r, secs, bytes) = timed(cfg)?;
        let (n0, s0) = *first.get_or_insert((n, secs));
        println!(
            "| scale-day, model crypto | {n} | {} | {secs:.2} | {:.0} | {:.0} | - | - | {:.1} | {:.2}x | {:.0}x |",
            args.hours,
            r.events as f64 / secs,
            exchanges(&r) as f64 / secs,
            bytes as f64 / 1024.0 / n as f64,
            secs / s0,
            n as f64 / n0 as f64,
        );
    }
    // The floor: costs measured now; cores enough that jobs (a few ms each, a few per
    // second at the hub) hardly ever wait for one another (the longest wait is printed).
    let costs = calibrate::measure();
    let nodes = ("topology.nodes", (args.heavy_spokes + 1).to_string());
    let mut real = scenario(HEAVY, std::slice::from_ref(&nodes))?;
    for g in &mut real.gateways {
        g.cpu = Some(CpuConfig {
            cores: 64,
            costs: costs.clone(),
        });
    }
    let (r, secs, _) = timed(real)?;
    let floor = r.cpus.iter().map(|c| c.busy_ns).sum::<u64>() as f64 / 1e9;
    let longest_wait = r.cpus.iter().map(|c| c.max_wait_ns).max().unwrap_or(0);
    let n = args.heavy_spokes;
    println!(
        "| heavy rekeying, real crypto | {n} | 0.5 | {secs:.2} | {:.0} | {:.0} | {floor:.2} | {:.2}x | - | - | - |",
        r.events as f64 / secs,
        exchanges(&r) as f64 / secs,
        secs / floor,
    );
    let mut model = scenario(HEAVY, &[nodes])?;
    model.crypto = CryptoMode::Model;
    let (m, model_secs, _) = timed(model)?;
    println!(
        "| heavy rekeying, model crypto | {n} | 0.5 | {model_secs:.2} | {:.0} | {:.0} | - | - | - | - | - |",
        m.events as f64 / model_secs,
        exchanges(&m) as f64 / model_secs,
    );
    println!(
        "\nmodel crypto runs the heavy half hour {:.1}x as fast as real crypto; the simulator's own cost: {:.1} us per IKE exchange (model-crypto wall time / exchanges); the longest wait for a core in the floor run: {:.3} ms",
        secs / model_secs,
        model_secs * 1e6 / exchanges(&m) as f64,
        longest_wait as f64 / 1e6
    );
    Ok(())
}
