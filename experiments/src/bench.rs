//! `qsafe bench`: what simulation costs on this machine, as one table.
//!
//! - Scale: the day of `scenarios/scale-day.toml` (model crypto, no rows kept) at each
//!   size asked for: wall time, events and IKE exchanges per second, memory per tunnel,
//!   and the wall time's growth beside the tunnels'. Each size runs `--repeat` times,
//!   in rounds of one run of every size (the row shows the run of median wall time,
//!   its growth the median over rounds of its wall time over the first size's in the
//!   same round, so that the machine's drift over minutes is not counted as growth),
//!   each run in a process of its own
//!   (`qsafe bench --scale-row N`), so its peak resident memory is its own: the
//!   whole process, scenario parsing included, less that of the same process running a
//!   single spoke, per tunnel.
//! - Crypto floor: a rekey-heavy half hour with real crypto, where every
//!   gateway carries the CPU model with the costs `qsafe calibrate` measures, just now,
//!   in this process, and cores enough that jobs hardly wait: the gateways' busy time is
//!   then the bare crypto of exactly the run's operations, and wall / floor is what the
//!   simulator costs around it. The same run with model crypto (`--repeat` times, the
//!   run of median wall time shown) gives the simulator's own cost per exchange.
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
use crate::regions::{Regions, run_by_region};

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
    /// Regions of the by-region row: that many copies of the first scale row's hub,
    /// run region by region (`qsafe run --by-region`) on every core; 0 or 1: no such
    /// row. [default: 10; with `--scale-row`, 1]
    #[arg(long)]
    pub regions: Option<u64>,
    /// Rounds of the scale rows, each running every row once; a row shows its middle
    /// run by wall time, and the middle of its growths over the rounds (the larger
    /// middle one of an even number): wall times vary by 10 % and more from run to run.
    /// The heavy half hour with model crypto runs as many times (its middle run shown).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeat: u64,
    /// Run only the scale row with this many spokes and print its figures on one line
    /// (how `qsafe bench` measures each row in a process of its own).
    #[arg(long, hide = true)]
    pub scale_row: Option<u64>,
}

/// One scale row's figures, as a `--scale-row` process prints them.
struct ScaleRow {
    secs: f64,
    events: u64,
    exchanges: u64,
    peak_rss: u64,
}

/// Runs the scale day with `spokes` spokes here (`regions` hubs of them, region by
/// region, if more than one) and prints its [`ScaleRow`].
fn scale_row(spokes: u64, hours: u64, regions: u64) -> Result<()> {
    let sets = [
        ("topology.nodes", (spokes + 1).to_string()),
        ("duration", format!("\"{hours}h\"")),
        ("topology.regions", regions.max(1).to_string()),
    ];
    let (r, secs) = if regions > 1 {
        let regional = topologies::RegionalScenario::new(SCALE, "qsafe bench", &params(&sets)?)?
            .context("the scale day has regions")?;
        let start = Instant::now();
        let built = |cfg| World::new(cfg, 1, Tracer::new()).map_err(|e| anyhow::anyhow!("{e}"));
        let r = run_by_region(
            &Regions::Generated(regional),
            RowSelection::None,
            None,
            false,
            &built,
            |_| Ok(()),
        )?;
        (r, start.elapsed().as_secs_f64())
    } else {
        timed(scenario(SCALE, &sets)?)?
    };
    println!(
        "scale-row {secs} {} {} {}",
        r.events,
        exchanges(&r),
        peak_rss_bytes()
    );
    Ok(())
}

/// Runs [`scale_row`] in a new process of this program.
fn scale_row_apart(spokes: u64, hours: u64, regions: u64) -> Result<ScaleRow> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "--scale-row", &spokes.to_string()])
        .args(["--hours", &hours.to_string()])
        .args(["--regions", &regions.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = (text.lines().find_map(|l| l.strip_prefix("scale-row "))).with_context(|| {
        format!(
            "the {spokes}-spoke row: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let f: Vec<&str> = line.split(' ').collect();
    let bad = || anyhow::anyhow!("the {spokes}-spoke row printed `{line}`");
    anyhow::ensure!(f.len() == 4, bad());
    Ok(ScaleRow {
        secs: f[0].parse().map_err(|_| bad())?,
        events: f[1].parse().map_err(|_| bad())?,
        exchanges: f[2].parse().map_err(|_| bad())?,
        peak_rss: f[3].parse().map_err(|_| bad())?,
    })
}

/// One run: its results and wall seconds.
fn timed(cfg: WorldConfig) -> Result<(Results, f64)> {
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
    Ok((r, secs))
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

fn params(sets: &[(&str, String)]) -> Result<Vec<(String, toml::Value)>> {
    sets.iter()
        .map(|(k, v)| topologies::parse_assignment(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!(e))
}

fn scenario(text: &str, sets: &[(&str, String)]) -> Result<WorldConfig> {
    let table = text.parse().context("the bench scenario")?;
    Ok(topologies::with_params(
        &table,
        &params(sets)?,
        "qsafe bench",
    )?)
}

/// The middle value by `key` (the larger middle one of an even number).
fn middle<T>(mut values: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    values.sort_by(|a, b| key(a).total_cmp(&key(b)));
    values.swap_remove(values.len() / 2)
}

fn exchanges(r: &Results) -> u64 {
    r.totals.exchanges.iter().map(|e| e.count).sum()
}

pub fn command(args: &BenchArgs) -> Result<()> {
    if let Some(n) = args.scale_row {
        return scale_row(n, args.hours, args.regions.unwrap_or(1));
    }
    println!(
        "| run | tunnels | simulated h | wall s | events/s | exchanges/s | crypto floor s | wall / floor | peak RSS MiB | KiB per tunnel | wall growth | tunnel growth |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = scale_row_apart(1, args.hours, 1)?.peak_rss;
    // The scale rows, then the first size again as regions run by region.
    let regions = args.regions.unwrap_or(10);
    let by_region = (regions > 1).then(|| args.spokes.first().map(|&n| (n, regions)));
    let rows: Vec<(u64, u64)> = (args.spokes.iter().map(|&n| (n, 1)))
        .chain(by_region.flatten())
        .collect();
    // Round by round, every row once per round: the machine's speed drifts over
    // minutes, and a growth taken within one round sees the same machine.
    let mut runs: Vec<Vec<ScaleRow>> = rows.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.repeat {
        for (&(spokes, regions), runs) in rows.iter().zip(&mut runs) {
            runs.push(scale_row_apart(spokes, args.hours, regions)?);
        }
    }
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n0 = rows.first().map_or(1, |&(n, r)| n * r);
    for (&(spokes, regions), row_runs) in rows.iter().zip(&runs) {
        let growths = (row_runs.iter().zip(&runs[0])).map(|(r, first)| r.secs / first.secs);
        let growth = middle(growths.collect(), |&g| g);
        let row = middle(row_runs.iter().collect(), |r| r.secs);
        let (n, secs) = (spokes * regions, row.secs);
        let run = match regions {
            1 => "scale-day, model crypto".to_string(),
            r => format!("scale-day, {r} regions by region, {jobs} threads"),
        };
        println!(
            "| {run} | {n} | {} | {secs:.2} | {:.0} | {:.0} | - | - | {:.1} | {:.1} | {growth:.2}x | {:.0}x |",
            args.hours,
            row.events as f64 / secs,
            row.exchanges as f64 / secs,
            row.peak_rss as f64 / (1 << 20) as f64,
            row.peak_rss.saturating_sub(base) as f64 / 1024.0 / n as f64,
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
    let (r, secs) = timed(real)?;
    let floor = r.cpus.iter().map(|c| c.busy_ns).sum::<u64>() as f64 / 1e9;
    let longest_wait = r.cpus.iter().map(|c| c.max_wait_ns).max().unwrap_or(0);
    let n = args.heavy_spokes;
    println!(
        "| heavy rekeying, real crypto | {n} | 0.5 | {secs:.2} | {:.0} | {:.0} | {floor:.2} | {:.2}x | - | - | - | - |",
        r.events as f64 / secs,
        exchanges(&r) as f64 / secs,
        secs / floor,
    );
    // A third of a second, where one slow tick of the machine shows: the run of median
    // wall time of `--repeat`.
    let models = (0..args.repeat)
        .map(|_| {
            let mut model = scenario(HEAVY, std::slice::from_ref(&nodes))?;
            model.crypto = CryptoMode::Model;
            timed(model)
        })
        .collect::<Result<Vec<_>>>()?;
    let (m, model_secs) = middle(models, |&(_, secs)| secs);
    println!(
        "| heavy rekeying, model crypto | {n} | 0.5 | {model_secs:.2} | {:.0} | {:.0} | - | - | - | - | - | - |",
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
