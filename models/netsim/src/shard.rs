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
    let (gw_region, kme_region) = regions(cfg);
    let regions = gw_region
        .iter()
        .chain(&kme_region)
        .max()
        .map_or(0, |m| m + 1);
    if regions < count {
        return Err(format!(
            "the scenario has {regions} independent region(s), fewer than {count} shards"
        ));
    }
    let mine = |r: usize| r % count == index;
    let gw_in: BTreeMap<&str, bool> = cfg
        .gateways
        .iter()
        .zip(&gw_region)
        .map(|(g, &r)| (g.name.as_str(), mine(r)))
        .collect();
    let kme_in: BTreeMap<&str, bool> = cfg
        .kmes
        .iter()
        .zip(&kme_region)
        .map(|(k, &r)| (k.name.as_str(), mine(r)))
        .collect();
    let gw = |n: &str| gw_in.get(n).copied().unwrap_or(false);
    let km = |n: &str| kme_in.get(n).copied().unwrap_or(false);
    let mut out = cfg.clone();
    out.gateways.retain(|g| gw(&g.name));
    out.links.retain(|l| gw(&l.a));
    out.kmes.retain(|k| km(&k.name));
    out.qkd_links.retain(|q| km(&q.a));
    out.tunnels.retain(|t| gw(&t.initiator));
    out.faults.retain(|f| match f {
        Fault::GatewayRestart { gateway, .. } | Fault::CorruptChildKey { gateway, .. } => {
            gw(gateway)
        }
    });
    out.adversaries.retain(|a| gw(&a.gateway));
    Ok(out)
}
