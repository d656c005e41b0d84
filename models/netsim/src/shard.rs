//! Regions of a scenario and shards of a run. A region is a set of gateways and key
//! managers that share nothing with the rest: no link, tunnel, key manager or QKD link
//! joins it to another. Regions run alone behave exactly as inside the whole run
//! (every random stream is keyed by entity name, and entities of different regions
//! never exchange an event), so a run can be split by region over machines
//! (`qsafe run --shard-index I --shard-count N`) and merged (`qsafe merge`).

use std::collections::BTreeMap;

use crate::config::{Fault, WorldConfig};

/// Union-find over gateways (0..g) and key managers (g..).
struct Sets(Vec<usize>);

impl Sets {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }

    fn join(&mut self, a: Option<usize>, b: Option<usize>) {
        if let (Some(a), Some(b)) = (a, b) {
            let (ra, rb) = (self.find(a), self.find(b));
            // The lower index stays the root, so regions are named by their first member.
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            self.0[hi] = lo;
        }
    }
}

/// The region of every gateway and key manager (`(gateways, kmes)`), numbered in order
/// of each region's first member (gateways first, in file order).
pub fn regions(cfg: &WorldConfig) -> (Vec<usize>, Vec<usize>) {
    let g = cfg.gateways.len();
    let index = |names: &mut dyn Iterator<Item = &String>| -> BTreeMap<String, usize> {
        names.enumerate().map(|(i, n)| (n.clone(), i)).collect()
    };
    let gw = index(&mut cfg.gateways.iter().map(|x| &x.name));
    let km = index(&mut cfg.kmes.iter().map(|x| &x.name));
    let gwi = |n: &str| gw.get(n).copied();
    let kmi = |n: &str| km.get(n).map(|k| g + k);
    let mut sets = Sets((0..g + cfg.kmes.len()).collect());
    for l in &cfg.links {
        sets.join(gwi(&l.a), gwi(&l.b));
    }
    for t in &cfg.tunnels {
        sets.join(gwi(&t.initiator), gwi(&t.responder));
    }
    for (i, x) in cfg.gateways.iter().enumerate() {
        sets.join(Some(i), x.kme.as_deref().and_then(kmi));
    }
    for q in &cfg.qkd_links {
        sets.join(kmi(&q.a), kmi(&q.b));
    }
    let mut number = BTreeMap::new();
    let all: Vec<usize> = (0..g + cfg.kmes.len())
        .map(|x| {
            let root = sets.find(x);
            let next = number.len();
            *number.entry(root).or_insert(next)
        })
        .collect();
    (all[..g].to_vec(), all[g..].to_vec())
}

/// The part of `cfg` that shard `index` of `count` runs: the regions whose number is
/// `index` modulo `count`, with their gateways, links, key managers, QKD links,
/// tunnels, faults and adversaries, in file order.
pub fn shard(cfg: &WorldConfig, index: usize, count: usize) -> Result<WorldConfig, String> {
    if count == 0 || index >= count {
        return Err(format!(
            "shard index {index} is not below the shard count {count}"
        ));
    }
    let regions = regions(cfg);
    let count_of = region_count(&regions);
    if count_of < count {
        return Err(format!(
            "the scenario has {count_of} independent region(s), fewer than {count} shards"
        ));
    }
    let mut parts = split(cfg, regions, |r| (r % count == index).then_some(0), 1);
    Ok(parts.pop().expect("one part"))
}

/// Every region as a scenario of its own, in region order: the run's settings, the
/// region's gateways, links, key managers, QKD links, tunnels, faults and adversaries
/// in file order.
pub fn by_region(cfg: &WorldConfig) -> Vec<WorldConfig> {
    let regions = regions(cfg);
    let parts = region_count(&regions);
    split(cfg, regions, Some, parts)
}

/// The number of regions.
fn region_count((gateways, kmes): &(Vec<usize>, Vec<usize>)) -> usize {
    gateways.iter().chain(kmes).max().map_or(0, |m| m + 1)
}

/// `parts` scenarios: each item goes to the part `part_of` gives its region (none: it
/// is left out; so is an item that names no gateway or key manager of the scenario).
fn split(
    cfg: &WorldConfig,
    (gw_region, kme_region): (Vec<usize>, Vec<usize>),
    part_of: impl Fn(usize) -> Option<usize>,
    parts: usize,
) -> Vec<WorldConfig> {
    let index = |names: &mut dyn Iterator<Item = &String>, regions: &[usize]| {
        names
            .zip(regions)
            .map(|(n, &r)| (n.clone(), r))
            .collect::<BTreeMap<String, usize>>()
    };
    let gw_part = index(&mut cfg.gateways.iter().map(|g| &g.name), &gw_region);
    let kme_part = index(&mut cfg.kmes.iter().map(|k| &k.name), &kme_region);
    let gw = |n: &str| gw_part.get(n).and_then(|&r| part_of(r));
    let km = |n: &str| kme_part.get(n).and_then(|&r| part_of(r));
    let shell = WorldConfig {
        seed: cfg.seed,
        duration: cfg.duration,
        crypto: cfg.crypto,
        sample_every: cfg.sample_every,
        relay_latency: cfg.relay_latency,
        gateways: Vec::new(),
        links: Vec::new(),
        kmes: Vec::new(),
        qkd_links: Vec::new(),
        tunnels: Vec::new(),
        faults: Vec::new(),
        adversaries: Vec::new(),
    };
    let mut out = vec![shell; parts];
    fn deal<T: Clone>(
        items: &[T],
        part: impl Fn(&T) -> Option<usize>,
        out: &mut [WorldConfig],
        list: impl Fn(&mut WorldConfig) -> &mut Vec<T>,
    ) {
        for x in items {
            if let Some(p) = part(x) {
                list(&mut out[p]).push(x.clone());
            }
        }
    }
    deal(
        &cfg.gateways,
        |g| gw(&g.name),
        &mut out,
        |c| &mut c.gateways,
    );
    deal(&cfg.links, |l| gw(&l.a), &mut out, |c| &mut c.links);
    deal(&cfg.kmes, |k| km(&k.name), &mut out, |c| &mut c.kmes);
    deal(&cfg.qkd_links, |q| km(&q.a), &mut out, |c| &mut c.qkd_links);
    deal(
        &cfg.tunnels,
        |t| gw(&t.initiator),
        &mut out,
        |c| &mut c.tunnels,
    );
    deal(
        &cfg.faults,
        |f| match f {
            Fault::GatewayRestart { gateway, .. } | Fault::CorruptChildKey { gateway, .. } => {
                gw(gateway)
            }
        },
        &mut out,
        |c| &mut c.faults,
    );
    deal(
        &cfg.adversaries,
        |a| gw(&a.gateway),
        &mut out,
        |c| &mut c.adversaries,
    );
    out
}
