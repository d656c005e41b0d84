//! A scenario run region by region (`qsafe run --by-region`): each independent region
//! (see `netsim::shard`) a simulation of its own, several at once on threads of their
//! own, their results merged in region order (`results::merge`).

use anyhow::Result;
use netsim::results::RowSelection;
use netsim::{Outputs, Results, World, WorldConfig};
use sim_core::Tracer;

/// The regions of a `--by-region` run.
pub enum Regions {
    /// A topology of regions, each expanded when its turn comes.
    Generated(topologies::RegionalScenario),
    /// A scenario split into its regions.
    Split(Vec<WorldConfig>),
}

impl Regions {
    pub fn count(&self) -> usize {
        match self {
            Regions::Generated(r) => r.regions,
            Regions::Split(parts) => parts.len(),
        }
    }

    fn config(&self, r: usize) -> Result<WorldConfig> {
        Ok(match self {
            Regions::Generated(g) => g.region(r)?,
            Regions::Split(parts) => parts[r].clone(),
        })
    }

    /// The tunnels and QKD links of the whole, which `--rows sample` picks from.
    fn sizes(&self) -> Result<(usize, usize)> {
        let of = |c: &WorldConfig| (c.tunnels.len(), c.qkd_links.len());
        Ok(match self {
            Regions::Generated(g) => {
                // Every region of a topology is the same size.
                let (t, q) = of(&g.region(0)?);
                (t * g.regions, q * g.regions)
            }
            Regions::Split(parts) => parts
                .iter()
                .map(of)
                .fold((0, 0), |(t, q), (a, b)| (t + a, q + b)),
        })
    }
}

/// Runs every region as its own simulation, `jobs` at a time (default: the cores) on
/// threads of their own (one simulation stays on one thread), and merges their results
/// in region order, handing each region's to `each` first (its rows are still in it):
/// the same bytes whatever the number of jobs. `built` makes a region's world.
pub fn run_by_region(
    regions: &Regions,
    rows: RowSelection,
    jobs: Option<usize>,
    progress: bool,
    built: &(dyn Fn(WorldConfig) -> Result<World> + Sync),
    mut each: impl FnMut(&mut Results) -> Result<()>,
) -> Result<Results> {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = regions.count();
    let sample_of = regions.sizes()?;
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let run_one = |r: usize| -> Result<(Results, results::TotalsBuilder)> {
        let world = built(regions.config(r)?)?;
        let outputs = Outputs {
            tracer: Tracer::new(),
            pcap: None,
            keylog: None,
            progress: false,
            rows,
            row_sink: None,
            costs: None,
        };
        Ok(world.run_part(outputs, sample_of))
    };
    let mut progress = RegionProgress::new(count, progress);
    let mut merge = results::merge::Merge::default();
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..jobs {
            let (tx, next, run_one) = (tx.clone(), &next, &run_one);
            scope.spawn(move || {
                loop {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    if r >= count || tx.send((r, run_one(r))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Regions finish out of order; they are merged in order.
        let mut waiting = BTreeMap::new();
        for (r, done) in rx {
            waiting.insert(r, done);
            while let Some(done) = waiting.remove(&merge.parts()) {
                let r = merge.parts();
                let part = done.and_then(|(mut results, totals)| {
                    each(&mut results)?;
                    merge.add(results, &totals).map_err(|e| anyhow::anyhow!(e))
                });
                if let Err(e) = part {
                    next.store(count, Ordering::Relaxed); // the workers stop
                    return Err(e.context(format!("region {r}")));
                }
                progress.done(merge.parts());
            }
        }
        Ok(())
    })?;
    Ok(merge.finish(rows))
}

/// Regions done, on stderr when it is a terminal.
struct RegionProgress {
    count: usize,
    started: std::time::Instant,
    shown: bool,
}

impl RegionProgress {
    fn new(count: usize, wanted: bool) -> Self {
        use std::io::IsTerminal;
        RegionProgress {
            count,
            started: std::time::Instant::now(),
            shown: wanted && std::io::stderr().is_terminal(),
        }
    }

    fn done(&mut self, done: usize) {
        if !self.shown {
            return;
        }
        let spent = self.started.elapsed().as_secs_f64();
        let left = spent / done as f64 * (self.count - done) as f64;
        eprint!(
            "\r{done} of {} regions, {spent:.0} s, about {left:.0} s to go   ",
            self.count
        );
        if done == self.count {
            eprintln!();
        }
    }
}
