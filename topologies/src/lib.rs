//! Scenario files: TOML that a person writes, expanded into a `netsim::WorldConfig`.
//!
//! A scenario lists gateways, links, key managers, QKD links and tunnels by hand, or
//! asks a generator for them with a `[topology]` table:
//!
//! ```toml
//! [topology]
//! kind = "hub-and-spoke"      # point-to-point, hub-and-spoke, full-mesh, chain, ring, random
//! nodes = 300                 # spokes, mesh size, trusted nodes of a chain, ring size, graph size
//! link = { latency = "10ms", mtu = 1280 }                  # every IP link
//! qkd = { rate_bps = 1000, capacity_bits = 1048576 }       # every QKD link (omit: no QKD)
//! tunnel = { ppk = "required", reauth_time = "10m" }      # every tunnel
//! gateway = { cpu = { cores = 4 } }                        # every gateway
//! hub = { cpu = { cores = 1 } }                            # the hub, after `gateway`
//! tunnels_per_pair = 2        # tunnels between each pair of gateways (default 1)
//! ```
//!
//! Generated items are appended to any written by hand. Expansion works on the TOML
//! value, so the same dotted paths address written and generated parameters alike
//! (sweeps use [`set_path`]), and errors still name the file, the line and the field.

use std::collections::{BTreeMap, BTreeSet};

pub mod explain;

use netsim::WorldConfig;
use toml::{Table, Value};

/// A scenario could not be used; the message names the place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScenarioError(pub String);

fn fail(origin: &str, msg: impl std::fmt::Display) -> ScenarioError {
    ScenarioError(format!("in {origin}: {msg}"))
}

/// Parses scenario text (with an optional `[topology]`) into a world configuration.
pub fn parse(text: &str, origin: &str) -> Result<WorldConfig, ScenarioError> {
    let value: Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(origin, one_line(&e.to_string())))?;
    let written = value.clone();
    let expanded = expand(value).map_err(|e| fail(origin, e))?;
    if expanded.1 {
        deserialize_located(expanded.0, text, &written, origin)
    } else {
        let de =
            toml::Deserializer::parse(text).map_err(|e| fail(origin, one_line(&e.to_string())))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let line = e
                .inner()
                .span()
                .map(|s| 1 + text[..s.start].matches('\n').count());
            let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
            fail(
                origin,
                format!("{at}field `{}`: {}", e.path(), e.inner().message()),
            )
        })
    }
}

/// Deserializes an expanded scenario; an error names the line of `text` (whose table is
/// `written`) that the field comes from.
fn deserialize_located(
    expanded: Table,
    text: &str,
    written: &Table,
    origin: &str,
) -> Result<WorldConfig, ScenarioError> {
    // Expanded values have no spans: the line comes from the text, found by the field's
    // path (the item written by hand, or the `[topology]` template that generated it).
    serde_path_to_error::deserialize(Value::Table(expanded)).map_err(|e| {
        let path = e.path().to_string();
        let at = locate(text, written, &path)
            .map(|(line, why)| format!("line {line}{why}: "))
            .unwrap_or_default();
        fail(
            origin,
            format!("{at}field `{path}`: {}", e.inner().message()),
        )
    })
}

/// A scenario that is a `[topology]` of several regions and nothing written by hand
/// ([`generated_regions`]), with its parameters set: each region is expanded only when
/// it is wanted, so a million tunnels in a thousand regions never exist as one table.
pub struct RegionalScenario {
    text: String,
    origin: String,
    written: Table,
    params: Vec<(String, Value)>,
    pub regions: usize,
}

impl RegionalScenario {
    /// `None` if the scenario (with `params` set) has one region, or items written by
    /// hand.
    pub fn new(
        text: &str,
        origin: &str,
        params: &[(String, Value)],
    ) -> Result<Option<RegionalScenario>, ScenarioError> {
        let written: Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(origin, one_line(&e.to_string())))?;
        // Parameters of the topology itself (`topology.regions`) count.
        let mut set = written.clone();
        for (path, v) in params.iter().filter(|(p, _)| p.starts_with("topology.")) {
            set_path(&mut set, path, v.clone()).map_err(|e| fail(origin, e))?;
        }
        let regions = generated_regions(&set).map_err(|e| fail(origin, e))?;
        Ok(regions.filter(|&n| n > 1).map(|regions| RegionalScenario {
            text: text.to_string(),
            origin: origin.to_string(),
            written,
            params: params.to_vec(),
            regions,
        }))
    }

    /// Region `r`, expanded, with the parameters set.
    pub fn expanded(&self, r: usize) -> Result<Table, ScenarioError> {
        expanded_with_params_in(&self.written, &self.params, &self.origin, Some(r))
    }

    /// Region `r`'s configuration; an error names the file, the line and the field.
    pub fn region(&self, r: usize) -> Result<WorldConfig, ScenarioError> {
        deserialize_located(self.expanded(r)?, &self.text, &self.written, &self.origin)
    }
}

/// The line of scenario `text` that the field at `path` (`tunnel[3].responder`, as
/// configuration errors name fields) comes from, and a note if a `[topology]` template
/// generated it.
pub fn line_of(text: &str, path: &str) -> Option<(usize, String)> {
    locate(text, &text.parse().ok()?, path)
}

/// The line of scenario `text` an error at `path` (`tunnel[3].ppk`) of the expanded
/// scenario comes from: the hand-written item's key, or for a generated item the
/// `[topology]` template it was made from (with a note saying so).
fn locate(text: &str, written: &Table, path: &str) -> Option<(usize, String)> {
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    let key = rest.split(['.', '[']).next().unwrap_or("");
    let (section, index) = match head.split_once('[') {
        Some((name, i)) => (name, i.trim_end_matches(']').parse::<usize>().ok()?),
        None => (head, 0),
    };
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    // Within the block that starts at `start`, the line assigning `key`.
    let key_in_block = |start: usize| {
        lines[start + 1..]
            .iter()
            .take_while(|l| !l.starts_with('['))
            .position(|l| {
                !key.is_empty()
                    && l.starts_with(key)
                    && l[key.len()..].trim_start().starts_with('=')
            })
            .map(|i| start + 1 + i)
    };
    let written_items = written
        .get(section)
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if index < written_items {
        let header = format!("[[{section}]]");
        let start = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == header)
            .nth(index)?
            .0;
        return Some((1 + key_in_block(start).unwrap_or(start), String::new()));
    }
    let template = match section {
        "link" => "link",
        "qkd_link" => "qkd",
        "kme" => "kme",
        "tunnel" => "tunnel",
        "gateway" => "gateway",
        _ => "",
    };
    let topo = lines.iter().position(|l| *l == "[topology]")?;
    let note = format!(" (`topology.{template}`, which generated `{head}`)");
    if let Some(sub) = lines
        .iter()
        .position(|l| *l == format!("[topology.{template}]"))
    {
        return Some((1 + key_in_block(sub).unwrap_or(sub), note));
    }
    let line = lines[topo + 1..]
        .iter()
        .take_while(|l| !l.starts_with('['))
        .position(|l| {
            !template.is_empty()
                && l.starts_with(template)
                && l[template.len()..].trim_start().starts_with('=')
        })
        .map_or(topo, |i| topo + 1 + i);
    let note = if line == topo {
        format!(" (the `[topology]` that generated `{head}`)")
    } else {
        note
    };
    Some((1 + line, note))
}

fn one_line(s: &str) -> String {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Deserializes an already expanded table, naming the field of any error.
pub fn from_table(t: Table) -> Result<WorldConfig, String> {
    serde_path_to_error::deserialize(Value::Table(t))
        .map_err(|e| format!("field `{}`: {}", e.path(), e.inner().message()))
}

/// Deserializes a scenario generated from a `[topology]` alone (`qsafe generate`): an
/// error names the template key the user wrote (`topology.qkd.capacity_bits`), not the
/// generated item (`qkd_link[0].pool`) of a file they have not seen.
pub fn from_generated(t: Table) -> Result<WorldConfig, String> {
    serde_path_to_error::deserialize(Value::Table(t)).map_err(|e| {
        let path = e.path().to_string();
        format!(
            "field `{}`: {}",
            template_of(&path).unwrap_or(path),
            e.inner().message()
        )
    })
}

/// The `[topology]` key that generates the field at `path` (`link[4].params.mtu` ->
/// `topology.link.mtu`), if a template does.
pub fn template_of(path: &str) -> Option<String> {
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    let section = head.split('[').next()?;
    let (template, inner) = match section {
        "link" => ("link", rest.strip_prefix("params").unwrap_or(rest)),
        "qkd_link" => ("qkd", rest.strip_prefix("pool").unwrap_or(rest)),
        "tunnel" | "kme" | "gateway" => (section, rest),
        _ => return None,
    };
    let inner = inner.trim_start_matches('.');
    Some(match inner {
        "" => format!("topology.{template}"),
        _ => format!("topology.{template}.{inner}"),
    })
}

/// Expands `[topology]` into gateways, links, KMEs, QKD links and tunnels (every
/// region of it, in order). Returns the table and whether anything was generated.
pub fn expand(mut t: Table) -> Result<(Table, bool), String> {
    let Some(topo) = t.remove("topology") else {
        return Ok((t, false));
    };
    let topo = Topology::from_value(topo)?;
    for r in 0..topo.regions as usize {
        append(&mut t, Generated::region(&topo, r)?)?;
    }
    Ok((t, true))
}

/// The number of regions of a scenario that is a `[topology]` alone (nothing written by
/// hand that could join its regions): each can then be expanded by itself
/// ([`expand_region`]) and run as its own simulation. `None` for any other scenario.
pub fn generated_regions(t: &Table) -> Result<Option<usize>, String> {
    let Some(topo) = t.get("topology") else {
        return Ok(None);
    };
    let written = [
        "gateway",
        "link",
        "kme",
        "qkd_link",
        "tunnel",
        "fault",
        "adversary",
    ]
    .iter()
    .any(|k| t.contains_key(*k));
    if written {
        return Ok(None);
    }
    Ok(Some(Topology::from_value(topo.clone())?.regions as usize))
}

/// The scenario with only region `r` of its `[topology]` expanded: what [`expand`]
/// generates for that region, with the same names, addresses and parameters.
pub fn expand_region(mut t: Table, r: usize) -> Result<Table, String> {
    let topo = t
        .remove("topology")
        .ok_or("the scenario has no `[topology]`")?;
    let topo = Topology::from_value(topo)?;
    append(&mut t, Generated::region(&topo, r)?)?;
    Ok(t)
}

/// Appends generated items after those of the same kind written by hand.
fn append(t: &mut Table, g: Generated) -> Result<(), String> {
    for (key, items) in [
        ("gateway", g.gateways),
        ("link", g.links),
        ("kme", g.kmes),
        ("qkd_link", g.qkd_links),
        ("tunnel", g.tunnels),
    ] {
        let entry = t.entry(key).or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(list) = entry else {
            return Err(format!("`{key}` must be an array of tables"));
        };
        list.extend(items.into_iter().map(Value::Table));
    }
    Ok(())
}

#[derive(Default)]
struct Generated {
    gateways: Vec<Table>,
    links: Vec<Table>,
    kmes: Vec<Table>,
    qkd_links: Vec<Table>,
    tunnels: Vec<Table>,
}

fn table(pairs: &[(&str, Value)]) -> Table {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn s(x: impl Into<String>) -> Value {
    Value::String(x.into())
}

/// What `[topology]` generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Two gateways, `gw-a` and `gw-b`, one tunnel.
    PointToPoint,
    /// A `hub` and `nodes` spokes, a tunnel from each spoke to the hub.
    HubAndSpoke,
    /// `nodes` gateways, a tunnel between every pair.
    FullMesh,
    /// Two gateways with a direct IP link whose QKD keys cross `nodes` trusted nodes.
    Chain,
    /// `nodes` gateways in a cycle, a tunnel between neighbours.
    Ring,
    /// A connected random graph of `nodes` gateways (G(n, p), then joined).
    Random,
}

/// A table of keys given to every generated item of one kind.
type Template = BTreeMap<String, serde_json::Value>;

/// The `[topology]` table: a generator, its size, and templates for what it generates.
#[derive(Clone, Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub kind: Kind,
    /// Spokes of a hub, gateways of a mesh, ring or random graph, trusted nodes of a
    /// chain (1 to 100,000).
    #[serde(default = "two")]
    pub nodes: u32,
    /// Copies of the topology that share nothing (1 to 10,000): region `r` names its
    /// gateways and key managers `r<r>-...` (`r0-hub`, `r0-gw-7`, `kme-r0-hub`) and takes
    /// the next block of addresses; each starts its tunnels from time 0. One region (the
    /// default) keeps the plain names. Regions can run as separate simulations
    /// (`qsafe run --by-region`).
    #[serde(default = "one")]
    pub regions: u32,
    /// Every IP link's `params` (the keys of `link.*.params`).
    #[serde(default)]
    #[schemars(with = "Template")]
    pub link: Table,
    /// Every QKD link's `pool` (the keys of `qkd_link.*.pool`); without it, no QKD
    /// links and no key managers.
    #[serde(default)]
    #[schemars(with = "Option<Template>")]
    pub qkd: Option<Table>,
    /// Every tunnel (the keys of `tunnel.*` but `name`, `initiator` and `responder`).
    #[serde(default)]
    #[schemars(with = "Template")]
    pub tunnel: Table,
    /// Every key manager (the keys of `kme.*` but `name`).
    #[serde(default)]
    #[schemars(with = "Template")]
    pub kme: Table,
    /// Every gateway (the keys of `gateway.*` but `name`, `address` and `kme`).
    #[serde(default)]
    #[schemars(with = "Template")]
    pub gateway: Table,
    /// The hub of a hub-and-spoke, over `gateway`.
    #[serde(default)]
    #[schemars(with = "Template")]
    pub hub: Table,
    /// Tunnels between each pair of gateways (1 to 100).
    #[serde(default = "one")]
    pub tunnels_per_pair: u32,
    /// `random`: the probability of each possible IP link (0 to 1).
    #[serde(default = "edge_probability")]
    pub edge_probability: f64,
    /// `random`: the seed of the graph (not of the run).
    #[serde(default = "one_u64")]
    pub graph_seed: u64,
    /// Tunnel k starts at k times this, unless its template sets `start`.
    #[serde(default = "stagger")]
    pub stagger: sim_core::SimDuration,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn one_u64() -> u64 {
    1
}
fn edge_probability() -> f64 {
    0.3
}
fn stagger() -> sim_core::SimDuration {
    sim_core::SimDuration::from_nanos(37_000_000)
}

impl Topology {
    /// Reads and checks a `[topology]` table.
    fn from_value(topo: Value) -> Result<Topology, String> {
        if !topo.is_table() {
            return Err("`topology` must be a table".into());
        }
        let topo: Topology = serde_path_to_error::deserialize(topo)
            .map_err(|e| format!("field `topology.{}`: {}", e.path(), e.inner().message()))?;
        if !(1..=100_000).contains(&topo.nodes) {
            return Err("field `topology.nodes`: expected an integer in 1..=100000".into());
        }
        if !(1..=100).contains(&topo.tunnels_per_pair) {
            return Err("field `topology.tunnels_per_pair`: expected an integer in 1..=100".into());
        }
        if !(1..=10_000).contains(&topo.regions) {
            return Err("field `topology.regions`: expected an integer in 1..=10000".into());
        }
        if topo.regions as usize * topo.gateways_per_region() > MAX_GATEWAYS {
            return Err(format!(
                "field `topology.regions`: {} regions of {} gateways are more than the {MAX_GATEWAYS} addresses there are",
                topo.regions,
                topo.gateways_per_region()
            ));
        }
        Ok(topo)
    }

    fn gateways_per_region(&self) -> usize {
        match self.kind {
            Kind::PointToPoint | Kind::Chain => 2,
            Kind::HubAndSpoke => self.nodes as usize + 1,
            Kind::FullMesh | Kind::Ring | Kind::Random => self.nodes as usize,
        }
    }
}

/// Generated gateways get addresses 10.a.b.c with a in 1..=250, b in 0..250, c in 1..=250.
const MAX_GATEWAYS: usize = 250 * 250 * 250;

impl Generated {
    /// Region `r` of the topology.
    fn region(topo: &Topology, r: usize) -> Result<Generated, String> {
        let kind = topo.kind;
        let n = topo.nodes as usize;
        let per_pair = topo.tunnels_per_pair as usize;
        let topo = topo.clone();
        // One region keeps the names it always had; several are told apart by a prefix.
        let prefix = if topo.regions == 1 {
            String::new()
        } else {
            format!("r{r}-")
        };
        let first_address = r * topo.gateways_per_region();
        let (link, qkd, tunnel, kme) = (topo.link, topo.qkd, topo.tunnel, topo.kme);
        let (gateway, hub) = (topo.gateway, topo.hub);
        let stagger = topo.stagger;
        let mut g = Generated::default();
        let hub_name = format!("{prefix}hub");
        let gw = |g: &mut Generated, name: &str, i: usize| {
            let i = first_address + i;
            let addr = format!(
                "10.{}.{}.{}",
                i / 62_500 % 250 + 1,
                i / 250 % 250,
                i % 250 + 1
            );
            let mut t = gateway.clone();
            if name == hub_name {
                t.extend(hub.clone());
            }
            t.insert("name".into(), s(name));
            t.insert("address".into(), s(addr));
            if qkd.is_some() {
                t.insert("kme".into(), s(format!("kme-{name}")));
                let mut k = kme.clone();
                k.insert("name".into(), s(format!("kme-{name}")));
                g.kmes.push(k);
            }
            g.gateways.push(t);
        };
        let ip = |g: &mut Generated, a: &str, b: &str| {
            g.links.push(table(&[
                ("a", s(a)),
                ("b", s(b)),
                ("params", Value::Table(link.clone())),
            ]))
        };
        let qkd_link = |g: &mut Generated, a: &str, b: &str| {
            if let Some(pool) = &qkd {
                g.qkd_links.push(table(&[
                    ("a", s(a)),
                    ("b", s(b)),
                    ("pool", Value::Table(pool.clone())),
                ]));
            }
        };
        let tun = |g: &mut Generated, a: &str, b: &str| {
            for k in 0..per_pair {
                let i = g.tunnels.len() as u64;
                let mut t = tunnel.clone();
                let name = match k {
                    0 => format!("{a}-{b}"),
                    k => format!("{a}-{b}-{k}"),
                };
                t.insert("name".into(), s(name));
                t.insert("initiator".into(), s(a));
                t.insert("responder".into(), s(b));
                t.entry("start").or_insert_with(|| {
                    s(sim_core::SimDuration::from_nanos(stagger.as_nanos() * i).to_string())
                });
                g.tunnels.push(t);
            }
        };
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}gw-{i}")).collect();
        let [a, b] = ["gw-a", "gw-b"].map(|x| format!("{prefix}{x}"));
        let kme_of = |name: &str| format!("kme-{name}");
        match kind {
            Kind::PointToPoint => {
                gw(&mut g, &a, 0);
                gw(&mut g, &b, 1);
                ip(&mut g, &a, &b);
                qkd_link(&mut g, &kme_of(&a), &kme_of(&b));
                tun(&mut g, &a, &b);
            }
            Kind::HubAndSpoke => {
                gw(&mut g, &hub_name, 0);
                for (i, name) in names.iter().enumerate() {
                    gw(&mut g, name, i + 1);
                    ip(&mut g, &hub_name, name);
                    qkd_link(&mut g, &kme_of(name), &kme_of(&hub_name));
                    tun(&mut g, name, &hub_name);
                }
            }
            Kind::FullMesh | Kind::Ring => {
                for (i, name) in names.iter().enumerate() {
                    gw(&mut g, name, i);
                }
                let pairs: Vec<(usize, usize)> = if kind == Kind::Ring {
                    (0..n)
                        .map(|i| (i, (i + 1) % n))
                        .filter(|(a, b)| a < b || (n > 2 && *b == 0))
                        .collect()
                } else {
                    (0..n)
                        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
                        .collect()
                };
                for (a, b) in pairs {
                    ip(&mut g, &names[a], &names[b]);
                    qkd_link(&mut g, &kme_of(&names[a]), &kme_of(&names[b]));
                    tun(&mut g, &names[a], &names[b]);
                }
            }
            Kind::Chain => {
                // Two gateways with a direct IP link; their keys cross `nodes` trusted nodes.
                gw(&mut g, &a, 0);
                gw(&mut g, &b, 1);
                ip(&mut g, &a, &b);
                if qkd.is_some() {
                    let mut hops = vec![kme_of(&a)];
                    for i in 0..n {
                        let name = format!("{prefix}trusted-{i}");
                        let mut k = kme.clone();
                        k.insert("name".into(), s(name.clone()));
                        g.kmes.push(k);
                        hops.push(name);
                    }
                    hops.push(kme_of(&b));
                    for w in hops.windows(2) {
                        qkd_link(&mut g, &w[0], &w[1]);
                    }
                }
                tun(&mut g, &a, &b);
            }
            Kind::Random => {
                let p = topo.edge_probability;
                if !(0.0..=1.0).contains(&p) {
                    return Err("field `topology.edge_probability`: must be within [0, 1]".into());
                }
                let seed = topo.graph_seed;
                for (i, name) in names.iter().enumerate() {
                    gw(&mut g, name, i);
                }
                for (a, b) in random_connected_graph(n, p, seed) {
                    ip(&mut g, &names[a], &names[b]);
                    qkd_link(&mut g, &kme_of(&names[a]), &kme_of(&names[b]));
                    tun(&mut g, &names[a], &names[b]);
                }
            }
        }
        Ok(g)
    }
}

/// G(n, p) from a seeded splitmix stream, then joined into one component (each
/// component's lowest node linked to the previous component's) so every gateway is
/// reachable. Edges come out sorted.
pub fn random_connected_graph(n: usize, p: f64, seed: u64) -> Vec<(usize, usize)> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    };
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            if next() < p {
                edges.push((a, b));
            }
        }
    }

    let mut uf = petgraph::unionfind::UnionFind::new(n);
    for &(a, b) in &edges {
        uf.union(a, b);
    }
    // The lowest node of each component, in order.
    let mut seen = BTreeSet::new();
    let firsts: Vec<usize> = (0..n).filter(|&i| seen.insert(uf.find(i))).collect();
    for w in firsts.windows(2) {
        edges.push((w[0].min(w[1]), w[0].max(w[1])));
    }
    edges.sort_unstable();
    edges.dedup();
    edges
}

/// A scenario with parameters set by dotted path (a sweep's grid point, or `qsafe run
/// --set`). Paths into what the file writes (and into `topology`) apply before the
/// topology is expanded; paths into generated items (`link.*...` of a generated
/// topology) after, so both reach every item.
pub fn with_params(
    scenario: &Table,
    params: &[(String, Value)],
    origin: &str,
) -> Result<WorldConfig, ScenarioError> {
    from_table(expanded_with_params(scenario, params, origin)?).map_err(|e| fail(origin, e))
}

/// The table [`with_params`] deserializes: the scenario with its parameters set and
/// its `[topology]` expanded.
pub fn expanded_with_params(
    scenario: &Table,
    params: &[(String, Value)],
    origin: &str,
) -> Result<Table, ScenarioError> {
    expanded_with_params_in(scenario, params, origin, None)
}

/// [`expanded_with_params`] with only region `r` of the `[topology]` expanded (for a
/// scenario that [`generated_regions`] can split), or all of it (`None`).
pub fn expanded_with_params_in(
    scenario: &Table,
    params: &[(String, Value)],
    origin: &str,
    region: Option<usize>,
) -> Result<Table, ScenarioError> {
    let written = |path: &str| scenario.contains_key(path.split('.').next().unwrap_or(""));
    let set = |t: &mut Table, before: bool| {
        for (path, v) in params.iter().filter(|(p, _)| written(p) == before) {
            set_path(t, path, v.clone()).map_err(|e| fail(origin, e))?;
        }
        Ok::<(), ScenarioError>(())
    };
    let mut t = scenario.clone();
    set(&mut t, true)?;
    let mut t = match region {
        None => expand(t).map_err(|e| fail(origin, e))?.0,
        Some(r) => expand_region(t, r).map_err(|e| fail(origin, e))?,
    };
    set(&mut t, false)?;
    Ok(t)
}

/// Parses `PATH=VALUE` (the value in TOML syntax; a bare word is taken as a string).
pub fn parse_assignment(text: &str) -> Result<(String, Value), String> {
    let (path, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected PATH=VALUE"))?;
    let value = value.trim();
    let parsed = format!("v = {value}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(value.to_string()));
    Ok((path.trim().to_string(), parsed))
}

/// Sets the value at a dotted path (`link.0.params.mtu`, `topology.nodes`, or with `*`
/// for every element of an array: `tunnel.*.ppk`), creating tables as needed.
pub fn set_path(t: &mut Table, path: &str, v: Value) -> Result<(), String> {
    fn walk(cur: &mut Value, parts: &[&str], v: &Value, path: &str) -> Result<(), String> {
        let Some((head, rest)) = parts.split_first() else {
            *cur = v.clone();
            return Ok(());
        };
        match cur {
            Value::Table(t) => {
                let next = t
                    .entry(head.to_string())
                    .or_insert_with(|| Value::Table(Table::new()));
                walk(next, rest, v, path)
            }
            Value::Array(a) if *head == "*" => {
                a.iter_mut().try_for_each(|e| walk(e, rest, v, path))
            }
            Value::Array(a) => {
                let i: usize = head
                    .parse()
                    .map_err(|_| format!("`{path}`: `{head}` is not an array index"))?;
                let len = a.len();
                let e = a
                    .get_mut(i)
                    .ok_or_else(|| format!("`{path}`: index {i} past the {len} elements"))?;
                walk(e, rest, v, path)
            }
            _ => Err(format!(
                "`{path}`: `{head}` goes into a value that is not a table or array"
            )),
        }
    }
    let parts: Vec<&str> = path.split('.').collect();
    let mut root = Value::Table(std::mem::take(t));
    let r = walk(&mut root, &parts, &v, path);
    let Value::Table(back) = root else {
        unreachable!("root stays a table")
    };
    *t = back;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(text: &str) -> WorldConfig {
        parse(text, "test.toml").unwrap()
    }

    #[test]
    fn regions_are_named_apart_and_expand_one_at_a_time() {
        let text = "duration = \"1m\"\n[topology]\nkind = \"hub-and-spoke\"\nnodes = 2\nregions = 3\nqkd = { rate_bps = 1000, capacity_bits = 65536 }\nhub = { cpu = { cores = 2 } }";
        let all = world(text);
        let names: Vec<&str> = all.gateways.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "r0-hub", "r0-gw-0", "r0-gw-1", "r1-hub", "r1-gw-0", "r1-gw-1", "r2-hub",
                "r2-gw-0", "r2-gw-1"
            ]
        );
        let addresses: BTreeSet<String> =
            all.gateways.iter().map(|g| g.address.to_string()).collect();
        assert_eq!(addresses.len(), 9, "every gateway its own address");
        assert_eq!(all.tunnels[2].name, "r1-gw-0-r1-hub");
        assert_eq!(
            all.tunnels[2].start, all.tunnels[0].start,
            "regions start alike"
        );
        assert_eq!(all.kmes[3].name, "kme-r1-hub");
        assert!(all.gateways[3].cpu.is_some() && all.gateways[4].cpu.is_none());
        assert_eq!(netsim::shard::regions(&all).0, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
        // Region by region: the same items, in the same order, as the whole.
        let table: Table = text.parse().unwrap();
        assert_eq!(generated_regions(&table), Ok(Some(3)));
        let mut joined: Vec<String> = Vec::new();
        for r in 0..3 {
            let one = from_table(expand_region(table.clone(), r).unwrap()).unwrap();
            assert_eq!(netsim::shard::regions(&one).0, [0, 0, 0]);
            joined.extend(one.tunnels.iter().map(|t| format!("{t:?}")));
        }
        let whole: Vec<String> = all.tunnels.iter().map(|t| format!("{t:?}")).collect();
        assert_eq!(joined, whole);
        // Anything written by hand could join regions: no splitting then.
        let written: Table = format!("{text}\n[[gateway]]\nname = \"x\"\naddress = \"10.9.9.9\"")
            .parse()
            .unwrap();
        assert_eq!(generated_regions(&written), Ok(None));
        let e = parse(&text.replace("regions = 3", "regions = 0"), "t.toml").unwrap_err();
        assert!(e.0.contains("topology.regions"), "{e}");
    }

    #[test]
    fn generators_build_the_shapes() {
        let hub = world(
            "duration = \"1m\"\n[topology]\nkind = \"hub-and-spoke\"\nnodes = 300\nqkd = { rate_bps = 1000, capacity_bits = 65536 }\ntunnel = { ppk = \"required\" }",
        );
        assert_eq!(
            (
                hub.gateways.len(),
                hub.links.len(),
                hub.kmes.len(),
                hub.qkd_links.len(),
                hub.tunnels.len()
            ),
            (301, 300, 301, 300, 300)
        );
        assert!(hub.tunnels.iter().all(|t| t.responder == "hub"));
        let mesh = world("duration = \"1m\"\n[topology]\nkind = \"full-mesh\"\nnodes = 5");
        assert_eq!(
            (mesh.links.len(), mesh.tunnels.len(), mesh.kmes.len()),
            (10, 10, 0)
        );
        let ring = world("duration = \"1m\"\n[topology]\nkind = \"ring\"\nnodes = 6");
        assert_eq!(ring.links.len(), 6);
        let chain = world(
            "duration = \"1m\"\n[topology]\nkind = \"chain\"\nnodes = 3\nqkd = { rate_bps = 1000, capacity_bits = 65536 }",
        );
        assert_eq!(
            (chain.kmes.len(), chain.qkd_links.len(), chain.tunnels.len()),
            (5, 4, 1)
        );
        let random = world(
            "duration = \"1m\"\n[topology]\nkind = \"random\"\nnodes = 40\nedge_probability = 0.02",
        );
        assert_eq!(random.gateways.len(), 40);
        // Joined into one component: at least n - 1 edges.
        assert!(random.links.len() >= 39);
    }

    #[test]
    fn random_graphs_are_connected_and_reproducible() {
        for seed in 0..20 {
            let e = random_connected_graph(30, 0.05, seed);
            assert_eq!(e, random_connected_graph(30, 0.05, seed));
            let mut uf = petgraph::unionfind::UnionFind::new(30);
            for &(a, b) in &e {
                uf.union(a, b);
            }
            assert!((1..30).all(|i| uf.equiv(0, i)), "seed {seed}");
        }
    }

    #[test]
    fn paths_set_written_and_generated_values() {
        let mut t: Table = "duration = \"1m\"\n[[link]]\na = \"x\"\nb = \"y\"\n[[tunnel]]\nname = \"t\"\n[[tunnel]]\nname = \"u\"".parse().unwrap();
        set_path(&mut t, "link.0.params.mtu", Value::Integer(576)).unwrap();
        set_path(&mut t, "tunnel.*.ppk", s("optional")).unwrap();
        set_path(&mut t, "topology.nodes", Value::Integer(4)).unwrap();
        assert_eq!(t["link"][0]["params"]["mtu"].as_integer(), Some(576));
        assert_eq!(t["tunnel"][1]["ppk"].as_str(), Some("optional"));
        assert!(set_path(&mut t, "link.5.params", Value::Integer(1)).is_err());
        assert!(set_path(&mut t, "duration.x", Value::Integer(1)).is_err());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = parse(
            "duration = \"1m\"\n[[gateway]]\nname = \"a\"\naddress = \"nope\"",
            "s.toml",
        )
        .unwrap_err()
        .0;
        assert!(
            e.contains("s.toml") && e.contains("line 4") && e.contains("gateway[0].address"),
            "{e}"
        );
        let e = parse("duration = \"1m\"\n[topology]\nkind = \"star\"", "s.toml")
            .unwrap_err()
            .0;
        assert!(e.contains("topology.kind"), "{e}");
        let e = parse(
            "duration = \"1m\"\n[topology]\nkind = \"ring\"\nlink = { mtu = \"big\" }",
            "s.toml",
        )
        .unwrap_err()
        .0;
        assert!(
            e.contains("line 4 (`topology.link`, which generated `link[0]`)"),
            "{e}"
        );
        assert!(e.contains("link[0].params.mtu"), "{e}");
        // With a topology, hand-written items still get their own line...
        let e = parse(
            "duration = \"1m\"\n[topology]\nkind = \"ring\"\n[[tunnel]]\nname = \"t\"\ninitiator = \"gw-0\"\nresponder = \"gw-1\"\nppk = \"maybe\"\n",
            "s.toml",
        )
        .unwrap_err()
        .0;
        assert!(e.contains("line 8: field `tunnel[0].ppk`"), "{e}");
        // ... and a template in its own table points at the key in it.
        let e = parse(
            "duration = \"1m\"\n[topology]\nkind = \"ring\"\nnodes = 3\n[topology.tunnel]\nreauth_time = \"1m\"\nppk = \"maybe\"\n",
            "s.toml",
        )
        .unwrap_err()
        .0;
        assert!(
            e.contains("line 7 (`topology.tunnel`, which generated `tunnel[0]`)")
                && e.contains("tunnel[0].ppk"),
            "{e}"
        );
        let e = parse("duration = \"1m\"\nspeed = 3", "s.toml")
            .unwrap_err()
            .0;
        assert!(e.contains("line 2") && e.contains("speed"), "{e}");
        let e = parse("duration = \n", "s.toml").unwrap_err().0;
        assert!(e.contains("s.toml") && e.contains("line 1"), "{e}");
    }
}
