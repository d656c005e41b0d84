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
//!
//! [[plot]]                       # optional: the figures (see `reports::sweep::PlotSpec`)
//! y = "availability"
//! x = "link.*.params.loss.probability"
//! by = "tunnel.*.ppk"
//! ```
//!
//! Runs are numbered by enumerating the grid in path order and the seeds innermost, so
//! a run's id, parameters and results depend on nothing but the sweep file: not on the
//! number of threads, nor on sharding. `--shard-index I --shard-count N` runs the runs
//! whose number is I modulo N. Each run leaves `runs/<id>/results.json` and then
//! `runs/<id>/row.json`, every metric of the run with a hash of its input (expanded
//! scenario, parameters, seed, version). A resumed sweep skips a run whose row holds
//! the same hash and refuses to mix in one that does not (`--force` reruns it). Rows
//! merge by run id into `runs.{csv,json}` and the grid point table `summary.{csv,json}`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use netsim::{Outputs, World};
use results::{Results, SweepRow};
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
    /// Rerun the runs the directory holds from a different scenario or parameters
    /// (without it, the sweep refuses to mix them).
    #[arg(long)]
    pub force: bool,
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

/// A hash of what makes a run: its expanded scenario (parameters set), its seed and
/// the simulator's version.
fn input_hash(scenario: &Table, origin: &str, run: &Run) -> Result<String> {
    use sha2::Digest;
    let expanded = topologies::expanded_with_params(scenario, &run.params, origin)?;
    let mut h = sha2::Sha256::new();
    h.update(toml::to_string(&expanded)?.as_bytes());
    h.update(format!(
        "\nseed = {}\nqsafe = {}\n",
        run.seed,
        env!("CARGO_PKG_VERSION")
    ));
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs one grid point and seed; returns its row and its results (without rows).
/// The sweep file's `[[plot]]` entries, checked against its grid.
fn plots(sweep: &Table, runs: &[Run]) -> Result<Vec<reports::sweep::PlotSpec>> {
    let Some(v) = sweep.get("plot") else {
        return Ok(Vec::new());
    };
    let specs: Vec<reports::sweep::PlotSpec> = v
        .clone()
        .try_into()
        .map_err(|e| anyhow::anyhow!("`plot`: {}", e.to_string().trim()))?;
    let params: Vec<String> = runs
        .first()
        .map(|r| r.params.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    reports::sweep::check_plots(&params, &specs).map_err(|e| anyhow::anyhow!("`plot`: {e}"))?;
    Ok(specs)
}

fn execute(scenario: &Table, origin: &str, run: &Run) -> Result<(SweepRow, Results)> {
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
    let row = SweepRow {
        run_id: run.id.clone(),
        seed: run.seed,
        params: run
            .params
            .iter()
            .map(|(k, v)| (k.clone(), value_text(v)))
            .collect(),
        input: input_hash(scenario, origin, run)?,
        metrics: results::metrics::of_run(&r),
        fingerprint: r.fingerprint.clone(),
        violations: r.violations.clone(),
        reproduce,
    };
    Ok((row, r))
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
        .find(|k| !["scenario", "seeds", "grid", "plot"].contains(&k.as_str()))
    {
        bail!(
            "in {}: unknown key `{k}` (expected scenario, seeds, grid, plot)",
            args.sweep.display()
        );
    }
    let origin = scenario_path.display().to_string();
    let scenario_text =
        fs::read_to_string(&scenario_path).with_context(|| format!("reading {origin}"))?;
    topologies::parse(&scenario_text, &origin)?; // the scenario itself must be sound
    let scenario: Table = scenario_text.parse()?;
    let runs = plan(&sweep, args.seeds).with_context(|| format!("in {}", args.sweep.display()))?;
    let plots = plots(&sweep, &runs).with_context(|| format!("in {}", args.sweep.display()))?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("out").join(
            args.sweep
                .file_stem()
                .map_or("sweep".into(), |s| s.to_string_lossy().to_string()),
        )
    });
    let mine: Vec<&Run> = runs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % args.shard_count == args.shard_index)
        .map(|(_, r)| r)
        .collect();
    // A run already in the directory is reused only if it was made from the same input.
    let mut todo = Vec::new();
    let mut stale = Vec::new();
    for run in mine.iter().copied() {
        let path = out.join("runs").join(&run.id).join("row.json");
        if !path.exists() {
            todo.push(run);
            continue;
        }
        let recorded = fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<SweepRow>(&t).ok())
            .map(|row| row.input);
        if recorded != Some(input_hash(&scenario, &origin, run)?) {
            stale.push(run.id.as_str());
            todo.push(run);
        }
    }
    if !stale.is_empty() && !args.force {
        bail!(
            "{} of the runs in {} were made from a different scenario, parameters, seed or \
             qsafe version than this sweep gives now (runs {}{}); rerun them with --force, \
             or choose another --out",
            stale.len(),
            out.display(),
            stale[..stale.len().min(5)].join(", "),
            if stale.len() > 5 { ", ..." } else { "" }
        );
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    eprintln!(
        "sweep: {} runs in all, shard {}/{}: {} to run ({} already done{}), {jobs} at a time",
        runs.len(),
        args.shard_index,
        args.shard_count,
        todo.len(),
        mine.len() - todo.len(),
        match stale.len() {
            0 => String::new(),
            n => format!(", {n} stale rerun"),
        }
    );
    // Wall time only for the progress line's estimate; nothing reaches results.
    let started = std::time::Instant::now();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(todo.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(run) = todo.get(i) else { break };
                    let result = execute(&scenario, &origin, run).and_then(|(row, r)| {
                        let dir = out.join("runs").join(&run.id);
                        fs::create_dir_all(&dir)?;
                        write_json(&dir.join("results.json"), &r)?;
                        // Last: a run with a row is complete.
                        write_json(&dir.join("row.json"), &row)
                    });
                    if let Err(e) = result {
                        first_error.lock().expect("not poisoned").get_or_insert(e);
                        break;
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if !args.quiet {
                        let left =
                            started.elapsed().as_secs_f64() / n as f64 * (todo.len() - n) as f64;
                        eprint!(
                            "\r[{n}/{}] runs done, about {left:.0} s left   ",
                            todo.len()
                        );
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
    fs::create_dir_all(&out)?;
    write_json(&out.join("plots.json"), &plots)?;
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

/// Collects every `runs/*/row.json` under `dirs` into `out/runs.{csv,json}` and the
/// grid point table `out/summary.{csv,json}`, sorted by run id (a run present in
/// several directories must agree); returns the rows.
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
    let points = reports::sweep::write_tables(out, &rows)?;
    println!(
        "summary: {} runs, {} grid points in {}",
        rows.len(),
        points.len(),
        out.join("summary.csv").display()
    );
    Ok(rows)
}
