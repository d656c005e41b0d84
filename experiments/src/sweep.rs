//! `qsafe sweep SWEEP.toml` and `qsafe merge`: a grid of scenario parameters times
//! seeds, run in parallel on local cores, optionally one shard of it, with one row of
//! results per run.
//!
//! A sweep file names a scenario (relative to the sweep file), the seeds, and a grid of
//! dotted parameter paths (see `topologies::set_path`):
//!
//! ```toml
//! scenario = "demo.toml"
//! seeds = 4                      # 1..=4, or a list such as [7, 81723]
//! [grid]
//! "link.*.params.loss.probability" = [0.0, 0.02, 0.05]
//! "tunnel.*.ppk" = ["optional", "required"]
//! ```
//!
//! Runs are numbered by enumerating the grid in path order and the seeds innermost, so
//! a run's id, parameters and results depend on nothing but the sweep file: not on the
//! number of threads, nor on sharding. `--shard-index I --shard-count N` runs the runs
//! whose number is I modulo N. Each run leaves `runs/<id>/row.json`; a run whose row
//! exists is skipped, so an interrupted sweep resumes. Rows merge by run id into
//! `summary.csv` and `summary.json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use netsim::{Outputs, World};
use results::SweepRow;
use sim_core::Tracer;
use toml::{Table, Value};

use crate::files::write_json;

#[derive(clap::Args)]
pub struct SweepArgs {
    pub sweep: PathBuf,
    /// Directory for results (default: out/<sweep name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Parallel runs (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub shard_index: usize,
    #[arg(long, default_value_t = 1)]
    pub shard_count: usize,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Run seeds 1..=N instead of the file's `seeds`.
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Check the invariants: list every run that broke one, with the command that
    /// replays it, and exit non-zero if any did.
    #[arg(long)]
    pub check: bool,
    /// Do not write report.html and the figures.
    #[arg(long)]
    pub no_report: bool,
}

struct Run {
    id: String,
    seed: u64,
    params: Vec<(String, Value)>,
}

fn plan(sweep: &Table, seeds_override: Option<u64>) -> Result<Vec<Run>> {
    let seeds: Vec<u64> = match sweep.get("seeds") {
        _ if seeds_override.is_some() => (1..=seeds_override.unwrap_or(1).max(1)).collect(),
        None => vec![1],
        Some(Value::Integer(n)) if *n >= 1 => (1..=*n as u64).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_integer().map(|i| i as u64))
            .collect::<Option<_>>()
            .context("`seeds`: integers")?,
        Some(_) => bail!("`seeds`: a count (at least 1) or a list of seeds"),
    };
    let grid: Vec<(String, Vec<Value>)> = match sweep.get("grid") {
        None => Vec::new(),
        Some(Value::Table(t)) => t
            .iter()
            .map(|(k, v)| match v {
                Value::Array(values) if !values.is_empty() => Ok((k.clone(), values.clone())),
                _ => bail!("`grid.\"{k}\"`: a non-empty list of values"),
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!("`grid`: a table of parameter paths"),
    };
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (path, values) in &grid {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values
                    .iter()
                    .map(move |v| [c.clone(), vec![(path.clone(), v.clone())]].concat())
            })
            .collect();
    }
    let mut runs = Vec::new();
    for params in combos {
        for &seed in &seeds {
            runs.push(Run {
                id: format!("{:05}", runs.len()),
                seed,
                params: params.clone(),
            });
        }
    }
    Ok(runs)
}

fn execute(scenario: &Table, origin: &str, run: &Run) -> Result<SweepRow> {
    let mut reproduce = format!("qsafe run {origin} --seed {}", run.seed);
    for (path, v) in &run.params {
        reproduce += &format!(" --set '{path}={v}'");
    }
    let cfg = topologies::with_params(scenario, &run.params, origin)?;
    let r = World::new(cfg, run.seed, Tracer::new())
        .map_err(|e| anyhow::anyhow!("in {origin}, run {}: {e}", run.id))?
        .run(Outputs {
            rows: results::RowSelection::None,
            ..Outputs::none()
        });
    let ms = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e6);
    let sum = |f: fn(&results::TunnelSummary) -> u32| r.tunnels.iter().map(f).sum();
    Ok(SweepRow {
        run_id: run.id.clone(),
        seed: run.seed,
        params: run
            .params
            .iter()
            .map(|(k, v)| (k.clone(), value_text(v)))
            .collect(),
        tunnels: r.tunnels.len(),
        attempts: sum(|t| t.attempts),
        established: sum(|t| t.established),
        failed: sum(|t| t.failed),
        downgrades: sum(|t| t.downgrades),
        keys_drawn: sum(|t| t.keys_drawn),
        keys_wasted: sum(|t| t.keys_wasted),
        key_wait_s: r.tunnels.iter().map(|t| t.key_wait_ns).sum::<u64>() as f64 / 1e9,
        handshake_p50_ms: ms(r.totals.handshake_ns.p50),
        handshake_p95_ms: ms(r.totals.handshake_ns.p95),
        retransmissions: r.totals.retransmissions() as u32,
        availability: r
            .tunnels
            .iter()
            .map(|t| t.availability(r.duration_ns))
            .sum::<f64>()
            / r.tunnels.len().max(1) as f64,
        outages: r.tunnels.iter().map(|t| t.outages.len() as u32).sum(),
        fingerprint: r.fingerprint,
        violations: r.violations,
        reproduce,
    })
}

/// A parameter value as a person writes it: strings bare, everything else as TOML.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn sweep(args: &SweepArgs) -> Result<()> {
    if args.shard_count == 0 || args.shard_index >= args.shard_count {
        bail!("--shard-index must be below --shard-count");
    }
    let text = fs::read_to_string(&args.sweep)
        .with_context(|| format!("reading {}", args.sweep.display()))?;
    let sweep: Table = text
        .parse()
        .with_context(|| format!("in {}", args.sweep.display()))?;
    let scenario_path = match sweep.get("scenario") {
        Some(Value::String(p)) => args.sweep.parent().unwrap_or(Path::new(".")).join(p),
        _ => bail!(
            "in {}: `scenario` (a path) is required",
            args.sweep.display()
        ),
    };
    if let Some(k) = sweep
        .keys()
        .find(|k| !["scenario", "seeds", "grid"].contains(&k.as_str()))
    {
        bail!(
            "in {}: unknown key `{k}` (expected scenario, seeds, grid)",
            args.sweep.display()
        );
    }
    let origin = scenario_path.display().to_string();
    let scenario_text =
        fs::read_to_string(&scenario_path).with_context(|| format!("reading {origin}"))?;
    topologies::parse(&scenario_text, &origin)?; // the scenario itself must be sound
    let scenario: Table = scenario_text.parse()?;
    let runs = plan(&sweep, args.seeds).with_context(|| format!("in {}", args.sweep.display()))?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("out").join(
            args.sweep
                .file_stem()
                .map_or("sweep".into(), |s| s.to_string_lossy().to_string()),
        )
    });
    let todo: Vec<&Run> = runs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % args.shard_count == args.shard_index)
        .map(|(_, r)| r)
        .filter(|r| !out.join("runs").join(&r.id).join("row.json").exists())
        .collect();
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    eprintln!(
        "sweep: {} runs in all, shard {}/{}: {} to run ({} already done), {jobs} at a time",
        runs.len(),
        args.shard_index,
        args.shard_count,
        todo.len(),
        runs.iter()
            .enumerate()
            .filter(|(i, _)| i % args.shard_count == args.shard_index)
            .count()
            - todo.len()
    );
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(todo.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(run) = todo.get(i) else { break };
                    let result = execute(&scenario, &origin, run).and_then(|row| {
                        let dir = out.join("runs").join(&run.id);
                        fs::create_dir_all(&dir)?;
                        write_json(&dir.join("row.json"), &row)
                    });
                    if let Err(e) = result {
                        first_error.lock().expect("not poisoned").get_or_insert(e);
                        break;
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if !args.quiet {
                        eprint!("\r[{n}/{}] runs done", todo.len());
                    }
                }
            });
        }
    });
    if !args.quiet && !todo.is_empty() {
        eprintln!();
    }
    if let Some(e) = first_error.into_inner().expect("not poisoned") {
        return Err(e);
    }
    let rows = merge(&out, std::slice::from_ref(&out))?;
    if !args.no_report {
        println!("report: {}", reports::write_sweep_report(&out)?.display());
    }
    let failing: Vec<&SweepRow> = rows.iter().filter(|r| !r.violations.is_empty()).collect();
    for r in &failing {
        println!(
            "FAILED run {} (seed {}): {}\n  reproduce: {}",
            r.run_id,
            r.seed,
            r.violations.join("; "),
            r.reproduce
        );
    }
    match (failing.len(), args.check) {
        (0, true) => println!("check: all {} runs kept every invariant", rows.len()),
        (0, false) => {}
        (n, _) => bail!("{n} of {} runs broke an invariant", rows.len()),
    }
    Ok(())
}

/// Collects every `runs/*/row.json` under `dirs` into `out/summary.{csv,json}`, sorted
/// by run id (a run present in several directories must agree); returns the rows.
pub fn merge(out: &Path, dirs: &[PathBuf]) -> Result<Vec<SweepRow>> {
    let mut rows: std::collections::BTreeMap<String, SweepRow> = Default::default();
    for dir in dirs {
        let runs = dir.join("runs");
        let Ok(entries) = fs::read_dir(&runs) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path().join("row.json")))
            .collect();
        paths.sort();
        for p in paths {
            let Ok(text) = fs::read_to_string(&p) else {
                continue;
            };
            let row: SweepRow =
                serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))?;
            if let Some(old) = rows.get(&row.run_id)
                && old != &row
            {
                bail!(
                    "run {} differs between directories ({})",
                    row.run_id,
                    p.display()
                );
            }
            rows.insert(row.run_id.clone(), row);
        }
    }
    fs::create_dir_all(out)?;
    let rows: Vec<SweepRow> = rows.into_values().collect();
    write_json(&out.join("summary.json"), &rows)?;
    let params: std::collections::BTreeSet<&String> =
        rows.iter().flat_map(|r| r.params.keys()).collect();
    let mut csv = String::from("run_id,seed");
    for p in &params {
        csv += &format!(",\"{p}\"");
    }
    csv += ",tunnels,attempts,established,failed,downgrades,keys_drawn,keys_wasted,key_wait_s,handshake_p50_ms,handshake_p95_ms,retransmissions,availability,outages,violations,fingerprint\n";
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.3}"));
    for r in &rows {
        csv += &format!("{},{}", r.run_id, r.seed);
        for p in &params {
            csv += &format!(
                ",\"{}\"",
                r.params
                    .get(*p)
                    .map_or(String::new(), |v| v.replace('"', "\"\""))
            );
        }
        csv += &format!(
            ",{},{},{},{},{},{},{},{:.3},{},{},{},{:.6},{},{},{}\n",
            r.tunnels,
            r.attempts,
            r.established,
            r.failed,
            r.downgrades,
            r.keys_drawn,
            r.keys_wasted,
            r.key_wait_s,
            opt(r.handshake_p50_ms),
            opt(r.handshake_p95_ms),
            r.retransmissions,
            r.availability,
            r.outages,
            r.violations.len(),
            r.fingerprint
        );
    }
    fs::write(out.join("summary.csv"), csv)?;
    println!(
        "summary: {} runs in {}",
        rows.len(),
        out.join("summary.csv").display()
    );
    Ok(rows)
}
