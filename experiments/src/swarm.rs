//! `qsafe swarm` and `qsafe shrink`: swarm testing of the whole simulator. Each seed
//! draws a scenario (topology kind and size, link settings, QKD supply, lifetimes,
//! proposals, PPK policy, traffic, faults, attackers on the path) and runs it with
//! every oracle on; a run that breaks an invariant or panics is written out with the
//! command that replays it. `shrink` takes such a scenario and reduces it (fewer
//! tunnels, faults, attackers, less traffic, a shorter run) while the same invariant
//! still breaks, and writes the smallest it found.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use netsim::{Outputs, World};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sim_core::Tracer;
use toml::{Table, Value};

#[derive(clap::Args)]
pub struct SwarmArgs {
    /// How many seeds, each a scenario.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// The first seed (seeds FIRST..FIRST+SEEDS).
    #[arg(long, default_value_t = 1)]
    pub first: u64,
    /// Start no new run after this much wall time (e.g. `60s`); runs are short.
    #[arg(long)]
    pub budget: Option<sim_core::SimDuration>,
    /// Directory for the scenarios of failing runs (default: out/swarm).
    #[arg(long, default_value = "out/swarm")]
    pub out: PathBuf,
    /// Parallel runs (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
}

#[derive(clap::Args)]
pub struct ShrinkArgs {
    /// A scenario whose run breaks an invariant.
    pub scenario: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write the smallest failing scenario (default: SCENARIO with
    /// `.shrunk.toml`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn pick<'a, T>(rng: &mut ChaCha20Rng, items: &'a [T]) -> &'a T {
    &items[rng.next_u32() as usize % items.len()]
}

fn chance(rng: &mut ChaCha20Rng, percent: u32) -> bool {
    rng.next_u32() % 100 < percent
}

fn dur(s: impl ToString) -> Value {
    Value::String(s.to_string())
}

/// The scenario of swarm seed `seed`, as a scenario file's table.
pub fn draw(seed: u64) -> Table {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5357_4152_4d00);
    let mut t = Table::new();
    t.insert(
        "duration".into(),
        dur(pick(&mut rng, &["5m", "10m", "20m"])),
    );
    t.insert("crypto".into(), Value::String("model".into()));
    let (kind, least, most) = *pick(
        &mut rng,
        &[
            ("point-to-point", 2, 2),
            ("hub-and-spoke", 2, 8),
            ("full-mesh", 3, 4),
            ("chain", 1, 3),
            ("ring", 3, 5),
        ],
    );
    let nodes = (least + rng.next_u32() % (most - least + 1)) as i64;
    let mut topo = Table::new();
    topo.insert("kind".into(), kind.into());
    topo.insert("nodes".into(), nodes.into());
    topo.insert("stagger".into(), dur("1s"));
    let mut link = Table::new();
    link.insert(
        "latency".into(),
        dur(pick(&mut rng, &["1ms", "10ms", "40ms"])),
    );
    link.insert("jitter".into(), dur(pick(&mut rng, &["0s", "2ms"])));
    link.insert(
        "mtu".into(),
        (*pick(&mut rng, &[1280i64, 1500, 9000])).into(),
    );
    let loss = *pick(&mut rng, &[0.0, 0.01, 0.05, 0.15]);
    if loss > 0.0 {
        let mut l = Table::new();
        l.insert("model".into(), "bernoulli".into());
        l.insert("probability".into(), loss.into());
        link.insert("loss".into(), l.into());
    }
    if chance(&mut rng, 20) {
        link.insert("duplicate".into(), 0.02.into());
        link.insert("reorder".into(), 0.05.into());
    }
    topo.insert("link".into(), link.into());
    let ppk = *pick(&mut rng, &["disabled", "optional", "required"]);
    if ppk != "disabled" {
        let mut q = Table::new();
        q.insert(
            "rate_bps".into(),
            (*pick(&mut rng, &[0.5, 2.0, 100.0])).into(),
        );
        q.insert("capacity_bits".into(), 65_536i64.into());
        q.insert(
            "initial_bits".into(),
            (*pick(&mut rng, &[0i64, 512, 8192])).into(),
        );
        topo.insert("qkd".into(), q.into());
    }
    let mut tunnel = Table::new();
    tunnel.insert("ppk".into(), ppk.into());
    let ike = *pick(
        &mut rng,
        &[
            "aes256gcm16-prfsha256-x25519",
            "aes256gcm16-prfsha256-x25519-ke1_mlkem768",
            "aes128gcm16-prfsha256-x25519-ke1_mlkem1024",
        ],
    );
    tunnel.insert("ike".into(), Value::Array(vec![ike.into()]));
    if chance(&mut rng, 50) {
        tunnel.insert(
            "esp".into(),
            Value::Array(vec!["aes256gcm16-x25519".into()]),
        );
        tunnel.insert(
            "child_rekey_time".into(),
            dur(pick(&mut rng, &["30s", "2m"])),
        );
    }
    match rng.next_u32() % 3 {
        0 => {
            tunnel.insert("reauth_time".into(), dur(pick(&mut rng, &["1m", "3m"])));
        }
        1 => {
            tunnel.insert("rekey_time".into(), dur(pick(&mut rng, &["1m", "3m"])));
        }
        _ => {}
    }
    if chance(&mut rng, 30) {
        tunnel.insert("dpd_delay".into(), dur("20s"));
    }
    if chance(&mut rng, 40) {
        let mut tr = Table::new();
        tr.insert("rate_pps".into(), (*pick(&mut rng, &[5.0, 50.0])).into());
        tr.insert(
            "sizes".into(),
            Value::Array(vec![200i64.into(), 1400i64.into()]),
        );
        tunnel.insert("traffic".into(), tr.into());
    }
    topo.insert("tunnel".into(), tunnel.into());
    t.insert("topology".into(), topo.into());
    let first = match kind {
        "hub-and-spoke" => "hub",
        "point-to-point" | "chain" => "gw-b",
        _ => "gw-0",
    };
    if chance(&mut rng, 20) {
        let mut f = Table::new();
        f.insert("kind".into(), "gateway-restart".into());
        f.insert("at".into(), dur("2m"));
        f.insert("gateway".into(), first.into());
        f.insert("down_for".into(), dur("20s"));
        t.insert("fault".into(), Value::Array(vec![f.into()]));
    }
    if chance(&mut rng, 40) {
        let mut a = Table::new();
        a.insert("gateway".into(), first.into());
        a.insert("from".into(), dur("1m"));
        for key in ADVERSARY_ACTIONS {
            if chance(&mut rng, 50) {
                a.insert(key.into(), (*pick(&mut rng, &[0.01, 0.05, 0.2])).into());
            }
        }
        if chance(&mut rng, 25) {
            a.insert("flood_pps".into(), 50.0.into());
        }
        t.insert("adversary".into(), Value::Array(vec![a.into()]));
    }
    t
}

/// The adversary's per-datagram actions a swarm scenario draws (each at a rate).
const ADVERSARY_ACTIONS: [&str; 7] = [
    "drop",
    "duplicate",
    "replay",
    "modify",
    "rewrite",
    "forge",
    "reorder",
];

/// Runs `f` with panics' default report off stderr (they are caught and reported as
/// violations).
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = f();
    std::panic::set_hook(hook);
    out
}

/// What a run of `scenario` with `seed` broke: its invariant violations, or the panic.
pub fn check(scenario: &Table, seed: u64) -> Result<Vec<String>> {
    let cfg = topologies::with_params(scenario, &[], "the swarm scenario")?;
    let world = World::new(cfg, seed, Tracer::new()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        world.run(Outputs {
            rows: results::RowSelection::None,
            ..Outputs::none()
        })
    }));
    Ok(match outcome {
        Ok(r) => r.violations,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            vec![format!("panic: {msg}")]
        }
    })
}

pub fn swarm(args: &SwarmArgs) -> Result<()> {
    let started = Instant::now();
    let budget = args.budget.map(|b| Duration::from_nanos(b.as_nanos()));
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicUsize::new(0);
    let ran = AtomicUsize::new(0);
    let failures: Mutex<Vec<(u64, Vec<String>)>> = Mutex::new(Vec::new());
    let error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    quietly(|| {
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| {
                    loop {
                        // Wall time only decides when to stop starting runs.
                        if budget.is_some_and(|b| started.elapsed() >= b) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                        if i >= args.seeds {
                            break;
                        }
                        let seed = args.first + i;
                        match check(&draw(seed), seed) {
                            Ok(v) if v.is_empty() => {}
                            Ok(v) => failures.lock().expect("not poisoned").push((seed, v)),
                            Err(e) => {
                                error.lock().expect("not poisoned").get_or_insert(e);
                                break;
                            }
                        }
                        ran.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        })
    });
    if let Some(e) = error.into_inner().expect("not poisoned") {
        return Err(e.context("a swarm scenario could not be built"));
    }
    let mut failures = failures.into_inner().expect("not poisoned");
    failures.sort();
    let ran = ran.into_inner();
    for (seed, violations) in &failures {
        fs::create_dir_all(&args.out)?;
        let path = args.out.join(format!("seed-{seed}.toml"));
        let text = format!(
            "# Drawn by `qsafe swarm` from seed {seed}; it broke: {}\n{}",
            violations.join("; ").replace('\n', " "),
            toml::to_string(&draw(*seed))?
        );
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "FAILED seed {seed}: {}\n  reproduce: qsafe run {} --seed {seed}\n  shrink: qsafe shrink {} --seed {seed}",
            violations.join("; "),
            path.display(),
            path.display()
        );
    }
    match failures.len() {
        0 => {
            println!(
                "swarm: all {ran} runs (seeds {}..{}) kept every invariant",
                args.first,
                args.first + ran as u64
            );
            Ok(())
        }
        n => bail!("swarm: {n} of {ran} runs broke an invariant"),
    }
}

/// The kind of a violation, for "the same violation persists": its words, with every
/// word holding a digit (times, SPIs, names' indices) left out.
fn kind(violation: &str) -> String {
    violation
        .split_whitespace()
        .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Smaller variants of a scenario table: each one change.
fn candidates(t: &Table) -> Vec<Table> {
    let mut out = Vec::new();
    // Drop one item of a list (tunnels, gateways' faults, attackers; links and
    // gateways only with what uses them gone).
    for key in ["tunnel", "adversary", "fault"] {
        if let Some(Value::Array(items)) = t.get(key) {
            for i in 0..items.len() {
                let mut c = t.clone();
                let mut items = items.clone();
                items.remove(i);
                c.insert(key.into(), Value::Array(items));
                out.push(c);
            }
        }
    }
    // A shorter run.
    if let Some(d) = t.get("duration").and_then(Value::as_str)
        && let Ok(d) = d.parse::<sim_core::SimDuration>()
        && d.as_nanos() >= 2_000_000_000
    {
        let mut c = t.clone();
        let half = sim_core::SimDuration::from_nanos(d.as_nanos() / 2);
        c.insert("duration".into(), half.to_string().into());
        out.push(c);
    }
    // Less traffic, no attacker actions one by one.
    if let Some(Value::Array(tunnels)) = t.get("tunnel") {
        for (i, tun) in tunnels.iter().enumerate() {
            if tun.get("traffic").is_some() {
                let mut c = t.clone();
                let mut ts = tunnels.clone();
                if let Some(tt) = ts[i].as_table_mut() {
                    tt.remove("traffic");
                }
                c.insert("tunnel".into(), Value::Array(ts));
                out.push(c);
            }
        }
    }
    if let Some(Value::Array(advs)) = t.get("adversary") {
        for (i, a) in advs.iter().enumerate() {
            for &key in ADVERSARY_ACTIONS.iter().chain(&["flood_pps"]) {
                if a.get(key).is_some() {
                    let mut c = t.clone();
                    let mut advs = advs.clone();
                    if let Some(at) = advs[i].as_table_mut() {
                        at.remove(key);
                    }
                    c.insert("adversary".into(), Value::Array(advs));
                    out.push(c);
                }
            }
        }
    }
    out
}

pub fn shrink(args: &ShrinkArgs) -> Result<()> {
    let origin = args.scenario.display().to_string();
    let text = fs::read_to_string(&args.scenario).with_context(|| format!("reading {origin}"))?;
    topologies::parse(&text, &origin)?;
    // Work on the expanded scenario, so that single tunnels can go.
    let (mut current, _) = topologies::expand(text.parse()?).map_err(|e| anyhow::anyhow!(e))?;
    let broken = quietly(|| check(&current, args.seed))?;
    let Some(first) = broken.first() else {
        bail!(
            "{origin} with seed {} breaks no invariant: nothing to shrink",
            args.seed
        );
    };
    let want = kind(first);
    println!("shrink: {origin} breaks `{first}`");
    let size = |t: &Table| toml::to_string(t).map_or(usize::MAX, |s| s.len());
    let mut steps = 0;
    quietly(|| {
        'outer: loop {
            for c in candidates(&current) {
                // A candidate that cannot be built (a link to a tunnel gone, ...) is skipped.
                let Ok(v) = check(&c, args.seed) else {
                    continue;
                };
                if v.iter().any(|x| kind(x) == want) && size(&c) < size(&current) {
                    current = c;
                    steps += 1;
                    continue 'outer;
                }
            }
            break;
        }
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.scenario.with_extension("shrunk.toml"));
    let body = format!(
        "# `qsafe shrink` of {origin} (seed {}): {steps} reductions, still breaks: {first}\n{}",
        args.seed,
        toml::to_string(&current)?
    );
    fs::write(&out, body).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "shrink: {steps} reductions; smallest scenario: {}\n  reproduce: qsafe run {} --seed {}",
        out.display(),
        out.display(),
        args.seed
    );
    Ok(())
}
