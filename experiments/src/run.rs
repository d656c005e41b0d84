//! `qsafe run SCENARIO`: one simulation of a scenario file; results as JSON and CSV, a
//! manifest, optional trace and capture, a summary, the fingerprint, and the command
//! that reproduces the run.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use netsim::{Keylog, Outputs, Results, World, WorldConfig};
use results::TrafficSummary;

use crate::files::{self, Manifest, write_json};
use crate::regions::{Regions, run_by_region};
use serde::Serialize;
use sim_core::Tracer;

/// The demo scenario, compiled in so that `cargo run --release` needs no files.
pub const DEMO: &str = include_str!("../scenarios/demo.toml");

#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenario file (TOML); the built-in demo when omitted.
    pub scenario: Option<PathBuf>,
    /// Master seed (default: the scenario's `seed`, else 1).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Set a scenario parameter by dotted path, as sweeps do (repeatable):
    /// `--set 'link.*.params.loss.probability=0.05'`, `--set 'tunnel.*.ppk="required"'`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Directory for results (default: out/<scenario name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write trace.jsonl with the lines this filter selects (`all`, or e.g.
    /// `entity=gw/*,kind=ike.*,from=10s,until=1m`).
    #[arg(long)]
    pub trace: Option<String>,
    /// Write capture.pcap with every IPv4 packet put on a link.
    #[arg(long)]
    pub pcap: bool,
    /// Write the keys that decrypt the capture as Wireshark's decryption tables:
    /// wireshark/ikev2_decryption_table and wireshark/esp_sa (copy them into a
    /// Wireshark profile, or point XDG_CONFIG_HOME at DIR; enable ESP decryption).
    #[arg(long)]
    pub keylog: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Do not write report.html and the figures.
    #[arg(long)]
    pub no_report: bool,
    /// Rows written as they happen to handshakes.csv, exchanges.csv, key_requests.csv
    /// and pool_levels.csv: `all`, `sample` (the rows of about 1,000 tunnels and the
    /// pool levels of about 100 QKD links), or `none`. results.json holds the totals
    /// over every row either way.
    #[arg(long, default_value = "all")]
    pub rows: results::RowSelection,
    /// Run only shard I of `--shard-count` N: the scenario's independent regions
    /// (gateways and key managers nothing joins to the rest) whose number is I modulo
    /// N. `qsafe merge OUT DIRS...` puts the shards' results together.
    #[arg(long, value_name = "I", requires = "shard_count")]
    pub shard_index: Option<usize>,
    #[arg(long, value_name = "N", requires = "shard_index")]
    pub shard_count: Option<usize>,
    /// Run each independent region as a simulation of its own, `--jobs` at a time, and
    /// merge their results in region order as `qsafe merge` merges shards (the same
    /// tunnels, counters and totals; `events` and the fingerprint are the parts').
    /// A `[topology]` with `regions` and nothing written by hand is expanded one region
    /// at a time. No trace, capture or key log.
    #[arg(long, conflicts_with_all = ["trace", "pcap", "keylog", "event_costs"])]
    pub by_region: bool,
    /// Regions run at once with `--by-region` (default: the machine's cores).
    #[arg(long, requires = "by_region")]
    pub jobs: Option<usize>,
    /// Print to stderr where the run's wall time went, by kind of event: a diagnostic
    /// of this machine, kept out of the results.
    #[arg(long)]
    pub event_costs: bool,
}

pub fn command(args: &RunArgs, default_out: &str) -> Result<()> {
    let (text, origin) = match &args.scenario {
        Some(p) => (
            fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (DEMO.to_string(), "built-in demo".to_string()),
    };
    let params = args
        .set
        .iter()
        .map(|a| topologies::parse_assignment(a).map_err(|e| anyhow::anyhow!("--set {e}")))
        .collect::<Result<Vec<_>>>()?;
    // A topology of regions run region by region is never expanded as a whole.
    let regional = match args.by_region {
        true => topologies::RegionalScenario::new(&text, &origin, &params)?,
        false => None,
    };
    let (mut cfg, defaults) = match &regional {
        Some(r) => (None, topologies::explain::defaults_applied(&r.expanded(0)?)),
        None => {
            // Expanded once (a large topology is most of the memory before the run).
            // Should it fail, the file as written is checked for an error with a line
            // number first.
            let located = || topologies::parse(&text, &origin).err();
            let table: toml::Table = match text.parse() {
                Ok(t) => t,
                Err(e) => return Err(located().map_or_else(|| e.into(), Into::into)),
            };
            let expanded = match topologies::expanded_with_params(&table, &params, &origin) {
                Ok(t) => t,
                Err(e) => return Err(located().unwrap_or(e).into()),
            };
            drop(table);
            let defaults = topologies::explain::defaults_applied(&expanded);
            match topologies::from_table(expanded) {
                Ok(cfg) => (Some(cfg), defaults),
                Err(e) => match located() {
                    Some(e) => return Err(e.into()),
                    None => bail!("in {origin}: {e}"),
                },
            }
        }
    };
    if let (Some(i), Some(n), Some(c)) = (args.shard_index, args.shard_count, cfg.as_mut()) {
        *c = netsim::shard::shard(c, i, n).map_err(|e| anyhow::anyhow!("in {origin}: {e}"))?;
        println!(
            "shard {i} of {n}: {} gateways, {} tunnels, {} key managers",
            c.gateways.len(),
            c.tunnels.len(),
            c.kmes.len()
        );
    }
    let scenario_seed = match (&cfg, &regional) {
        (Some(c), _) => c.seed,
        (None, Some(r)) => r.region(0)?.seed,
        (None, None) => None,
    };
    let seed = args.seed.or(scenario_seed).unwrap_or(1);
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .scenario
            .as_ref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().to_string());
        PathBuf::from("out").join(stem.as_deref().unwrap_or(default_out))
    });
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let built = |cfg: WorldConfig| {
        World::new(cfg, seed, Tracer::new()).map_err(|e| {
            let at = topologies::line_of(&text, &e.field)
                .map(|(line, why)| format!("line {line}{why}: "))
                .unwrap_or_default();
            anyhow::anyhow!("in {origin}: {at}{e}")
        })
    };
    if args.by_region {
        let mut rows = results::CsvRows::create(&out)?;
        let parts = match (regional, cfg) {
            (Some(r), _) => Regions::Generated(r),
            (None, Some(cfg)) => {
                drop(built(cfg.clone())?); // errors name the whole scenario's fields
                Regions::Split(netsim::shard::by_region(&cfg))
            }
            (None, None) => unreachable!("a scenario is either regional or whole"),
        };
        let mut csvs = SummaryCsvs::create(&out)?;
        let results = run_by_region(&parts, args.rows, args.jobs, !args.quiet, &built, |r| {
            r.rows.drain_into(&mut rows);
            csvs.add(r)
        })?;
        csvs.finish()?;
        rows.finish()?;
        results::rows::write_parquet(&out)?;
        return finish_run(args, &out, &origin, &text, seed, defaults, results);
    }
    let cfg = cfg.expect("not regional");
    let tracer = files::tracer(&out, args.trace.as_deref())?;
    let world = built(cfg)?;
    let mut pcap = files::capture(&out, args.pcap)?;
    let mut keylog = Keylog::default();
    let mut rows = results::CsvRows::create(&out)?;
    let mut costs = netsim::EventCosts::default();
    let results = world.run(Outputs {
        tracer,
        pcap: pcap.as_mut(),
        keylog: args.keylog.then_some(&mut keylog),
        progress: !args.quiet,
        rows: args.rows,
        row_sink: Some(&mut rows),
        costs: args.event_costs.then_some(&mut costs),
    });
    if args.event_costs {
        eprint!("{}", event_costs_table(&costs));
    }
    rows.finish()?;
    results::rows::write_parquet(&out)?;
    if let Some(p) = pcap {
        p.finish()?.flush().context("writing capture.pcap")?;
    }
    if args.keylog {
        let dir = out.join("wireshark");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, lines) in [
            ("ikev2_decryption_table", &keylog.ike),
            ("esp_sa", &keylog.esp),
        ] {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            fs::write(dir.join(name), text)
                .with_context(|| format!("writing {}", dir.join(name).display()))?;
        }
    }

    let mut csvs = SummaryCsvs::create(&out)?;
    csvs.add(&results)?;
    csvs.finish()?;
    finish_run(args, &out, &origin, &text, seed, defaults, results)
}

/// `--event-costs`: the kinds of event by the wall time they took, largest first.
fn event_costs_table(costs: &netsim::EventCosts) -> String {
    let mut rows = costs.rows().to_vec();
    rows.sort_by(|a, b| b.wall.cmp(&a.wall).then(a.kind.cmp(b.kind)));
    let total: f64 = rows.iter().map(|r| r.wall.as_secs_f64()).sum();
    let events: u64 = rows.iter().map(|r| r.events).sum();
    let mut t = format!(
        "wall time by kind of event (this machine's, not a result):\n{:<26} {:>11} {:>9} {:>7} {:>9}\n",
        "kind", "events", "wall s", "share", "µs/event"
    );
    let line = |kind: &str, events: u64, secs: f64| {
        format!(
            "{kind:<26} {events:>11} {secs:>9.3} {:>6.1}% {:>9.2}\n",
            100.0 * secs / total.max(f64::MIN_POSITIVE),
            1e6 * secs / events.max(1) as f64
        )
    };
    for r in &rows {
        t += &line(r.kind, r.events, r.wall.as_secs_f64());
    }
    t + &line("all", events, total)
}

/// Writes what every run writes (manifest, results, tables, report) and tells the user.
fn finish_run(
    args: &RunArgs,
    out: &Path,
    origin: &str,
    text: &str,
    seed: u64,
    defaults: Vec<(String, String)>,
    results: Results,
) -> Result<()> {
    let mut reproduce = match &args.scenario {
        Some(p) => format!("qsafe run {} --seed {seed}", p.display()),
        None => format!("qsafe run --seed {seed}"),
    };
    for a in &args.set {
        reproduce += &format!(" --set '{a}'");
    }
    if args.by_region {
        reproduce += " --by-region";
    }
    let mut manifest = Manifest::new(
        "run",
        origin,
        text,
        seed,
        Some(&results.crypto),
        results.fingerprint.clone(),
        &reproduce,
    );
    manifest.defaults_applied = Some(defaults.into_iter().collect());
    write_json(&out.join("manifest.json"), &manifest)?;
    write_json(&out.join("results.json"), &results)?;
    print_summary(&results);
    println!("results: {}", out.display());
    if !args.no_report {
        let report = reports::write_report(out)?;
        println!("report: {}", report.display());
    }
    println!("fingerprint: {}", results.fingerprint);
    println!("reproduce: {reproduce}");
    if !results.violations.is_empty() {
        anyhow::bail!(
            "seed {seed} broke {} invariant(s): {}; reproduce: {reproduce}",
            results.violations.len(),
            results.violations.join("; ")
        );
    }
    Ok(())
}

/// Tunnels listed one per line in the summary; the rest are in tunnels.csv.
const SHOWN_TUNNELS: usize = 40;

pub fn print_summary(r: &Results) {
    println!("crypto: {}   events: {}", r.crypto, r.events);
    println!(
        "{:<12} {:>8} {:>6} {:>6} {:>10} {:>6} {:>7} {:>10} {:>9} {:>8} {:>12}",
        "tunnel",
        "attempts",
        "estab.",
        "failed",
        "downgrade",
        "keys",
        "wasted",
        "key wait",
        "available",
        "outages",
        "mean hs"
    );
    for t in r.tunnels.iter().take(SHOWN_TUNNELS) {
        let mean = (t.established > 0).then(|| {
            format!(
                "{:.1} ms",
                t.handshake_ns as f64 / t.established as f64 / 1e6
            )
        });
        println!(
            "{:<12} {:>8} {:>6} {:>6} {:>10} {:>6} {:>7} {:>9.1}s {:>8.2}% {:>8} {:>12}",
            t.tunnel,
            t.attempts,
            t.established,
            t.failed,
            t.downgrades,
            t.keys_drawn,
            t.keys_wasted,
            t.key_wait_ns as f64 / 1e9,
            100.0 * t.availability(r.duration_ns),
            t.outages.len(),
            mean.as_deref().unwrap_or("-")
        );
    }
    if r.tunnels.len() > SHOWN_TUNNELS {
        println!(
            "... and {} more tunnels (tunnels.csv)",
            r.tunnels.len() - SHOWN_TUNNELS
        );
    }
    let hs = &r.totals.handshake_ns;
    if let (Some(p50), Some(p99)) = (hs.p50, hs.p99) {
        let error = match hs.relative_error {
            0.0 => String::new(),
            e => format!(" (within {:.1}%)", 100.0 * e),
        };
        println!(
            "handshakes: {} established, IKE time p50 {:.1} ms, p99 {:.1} ms{error}",
            hs.count,
            p50 as f64 / 1e6,
            p99 as f64 / 1e6
        );
    }
    let q = &r.qkd;
    println!(
        "qkd: {} keys delivered, {} fetched, {} wasted, {} requests refused, {} relay hops",
        q.keys_delivered, q.keys_fetched, q.keys_wasted, q.requests_refused, q.relay_keys
    );
    let count = |x: &str| r.totals.exchange(x).count;
    let ike_rekeys: u32 = r.tunnels.iter().map(|t| t.ike_rekeys).sum();
    println!(
        "rekeys: {} CREATE_CHILD_SA ({ike_rekeys} of them IKE SA rekeys), {} IKE_FOLLOWUP_KE",
        count("CREATE_CHILD_SA"),
        count("IKE_FOLLOWUP_KE")
    );
    if !r.traffic.is_empty() {
        let sum = |f: fn(&TrafficSummary) -> u64| r.traffic.iter().map(f).sum::<u64>();
        let (offered, delivered) = (sum(|f| f.offered_packets), sum(|f| f.delivered_packets));
        let lost: Vec<String> = TrafficSummary::losses(&TrafficSummary {
            no_sa: sum(|f| f.no_sa),
            lost_on_link: sum(|f| f.lost_on_link),
            unknown_spi: sum(|f| f.unknown_spi),
            expired: sum(|f| f.expired),
            replayed: sum(|f| f.replayed),
            integrity_failures: sum(|f| f.integrity_failures),
            malformed: sum(|f| f.malformed),
            ..TrafficSummary::default()
        })
        .iter()
        .map(|(label, n)| format!("{label} {n}"))
        .collect();
        println!(
            "esp: {delivered} of {offered} packets delivered ({:.3}%); lost: {}; {} volume rekeys, {} hard expiries",
            100.0 * delivered as f64 / offered.max(1) as f64,
            lost.join(", "),
            sum(|f| f.volume_rekeys as u64),
            sum(|f| f.hard_expiries as u64),
        );
        let copies = sum(|f| f.copies_arrived);
        if copies > 0 {
            println!(
                "esp copies (duplicates, replays, forgeries): {copies} arrived, {} delivered in place of a lost first arrival",
                sum(|f| f.copies_delivered)
            );
        }
    }
    for a in &r.adversaries {
        println!(
            "adversary at {}: saw {}, dropped {}, delayed {}, reordered {}, duplicated {}, replayed {}, flipped {}, rewrote {}, forged {}, flooded {}",
            a.gateway,
            a.seen,
            a.dropped,
            a.delayed,
            a.reordered,
            a.duplicated,
            a.replayed,
            a.modified,
            a.rewritten,
            a.forged,
            a.injected
        );
    }
}

/// The summary tables as CSV beside results.json: per tunnel, gateway, link direction,
/// QKD pool half and traffic flow (the row files were written during the run). Rows are
/// converted and written one at a time, as results come in (a run's, or region after
/// region's): a million tunnels' tables never exist as JSON.
struct SummaryCsvs {
    tables: [CsvTable; 5],
}

impl SummaryCsvs {
    fn create(out: &Path) -> Result<Self> {
        let table = |name: &str| CsvTable::create(out.join(format!("{name}.csv")));
        Ok(SummaryCsvs {
            tables: [
                table("tunnels")?,
                table("gateways")?,
                table("links")?,
                table("qkd_links")?,
                table("traffic")?,
            ],
        })
    }

    /// Writes the rows of `r`'s tables.
    fn add(&mut self, r: &Results) -> Result<()> {
        fn value<T: Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).expect("results serialize")
        }
        let gateway = |(name, stats): &(String, results::EndpointStats)| {
            let mut row = serde_json::json!({ "gateway": name });
            if let (Some(row), serde_json::Value::Object(s)) = (row.as_object_mut(), value(stats)) {
                row.extend(s);
            }
            row
        };
        // Drops by reason as named columns.
        let link = |l: &results::LinkSummary| {
            let mut v = value(l);
            let drops: serde_json::Map<String, serde_json::Value> = link::DropReason::ALL
                .iter()
                .map(|d| (d.as_str().to_string(), l.stats.dropped(*d).into()))
                .collect();
            v["stats"]["drops"] = drops.into();
            v
        };
        let [tunnels, gateways, links, pools, traffic] = &mut self.tables;
        r.tunnels.iter().try_for_each(|t| tunnels.row(value(t)))?;
        r.endpoints
            .iter()
            .try_for_each(|g| gateways.row(gateway(g)))?;
        r.links.iter().try_for_each(|l| links.row(link(l)))?;
        r.pools.iter().try_for_each(|p| pools.row(value(p)))?;
        r.traffic.iter().try_for_each(|f| traffic.row(value(f)))
    }

    fn finish(self) -> Result<()> {
        self.tables.into_iter().try_for_each(CsvTable::finish)
    }
}

/// One CSV file of rows that are JSON objects: a column per field in field order,
/// nested objects as `outer.inner`, lists as their JSON text; strings quoted when they
/// need it. The first row's fields make the header.
struct CsvTable {
    path: PathBuf,
    w: std::io::BufWriter<fs::File>,
    rows: u64,
    keys: Vec<String>,
    values: Vec<String>,
}

impl CsvTable {
    fn create(path: PathBuf) -> Result<Self> {
        let file =
            fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        Ok(CsvTable {
            path,
            w: std::io::BufWriter::new(file),
            rows: 0,
            keys: Vec::new(),
            values: Vec::new(),
        })
    }

    fn row(&mut self, row: serde_json::Value) -> Result<()> {
        use std::io::Write;
        // Keys only for the header: every row has the same fields.
        fn flatten(
            prefix: &str,
            v: &serde_json::Value,
            keys: &mut Option<&mut Vec<String>>,
            values: &mut Vec<String>,
        ) {
            match v {
                serde_json::Value::Object(o) => {
                    for (k, v) in o {
                        let key = match (keys.is_some(), prefix.is_empty()) {
                            (false, _) => String::new(),
                            (true, true) => k.clone(),
                            (true, false) => format!("{prefix}.{k}"),
                        };
                        flatten(&key, v, keys, values);
                    }
                    return;
                }
                serde_json::Value::String(s) => values.push(quote(s)),
                serde_json::Value::Null => values.push(String::new()),
                other => values.push(quote(&other.to_string())),
            }
            if let Some(keys) = keys {
                keys.push(quote(prefix));
            }
        }
        fn quote(s: &str) -> String {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        }
        self.values.clear();
        let header = self.rows == 0;
        flatten(
            "",
            &row,
            &mut header.then_some(&mut self.keys),
            &mut self.values,
        );
        let written = (|| {
            if header {
                writeln!(self.w, "{}", self.keys.join(","))?;
            }
            writeln!(self.w, "{}", self.values.join(","))
        })();
        self.rows += 1;
        written.with_context(|| format!("writing {}", self.path.display()))
    }

    fn finish(mut self) -> Result<()> {
        std::io::Write::flush(&mut self.w)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// `qsafe merge OUT RUN_DIRS...` for the shards of one run (`--shard-index`): one
/// results.json with every shard's tunnels, pools, links, gateways, traffic and
/// attackers, the counters summed, and the totals recomputed from the shards' rows
/// (so they are exactly a single run's where the regions are independent; every shard
/// must have kept all its rows). The row files are concatenated. The fingerprint is a
/// hash of the shards' fingerprints in the order given, not a single run's.
pub fn merge_runs(out: &Path, dirs: &[PathBuf]) -> Result<Results> {
    let mut merge = results::merge::Merge::default();
    let mut rows = results::Rows::default();
    for dir in dirs {
        let path = dir.join("results.json");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let r: Results =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        if r.totals.rows != results::RowSelection::All {
            bail!(
                "{}: merging recomputes the totals from the rows; run every shard with --rows all",
                dir.display()
            );
        }
        let mut shard_rows = results::Rows::read_csv(dir)?;
        let mut totals = results::TotalsBuilder::default();
        shard_rows
            .handshakes
            .iter()
            .for_each(|h| totals.handshake(h));
        shard_rows.exchanges.iter().for_each(|e| totals.exchange(e));
        shard_rows
            .key_requests
            .iter()
            .for_each(|k| totals.key_request(k));
        merge
            .add(r, &totals)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        shard_rows.drain_into(&mut rows);
    }
    let merged = merge.finish(results::RowSelection::All);
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut csv = results::CsvRows::create(out)?;
    rows.drain_into(&mut csv);
    csv.finish()?;
    results::rows::write_parquet(out)?;
    write_json(&out.join("results.json"), &merged)?;
    Ok(merged)
}
