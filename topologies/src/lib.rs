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
    // Expanded values have no spans: the line comes from the text, found by the field's
    // path (the item written by hand, or the `[topology]` template that generated it).
    if expanded.1 {
        serde_path_to_error::deserialize(Value::Table(expanded.0)).map_err(|e| {
            let path = e.path().to_string();
            let at = locate(text, &written, &path)
                .map(|(line, why)| format!("line {line}{why}: "))
                .unwrap_or_default();
            fail(
                origin,
                format!("{at}field `{path}`: {}", e.inner().message()),
            )
        })
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

/// Expands `[topology]` into gateways, links, KMEs, QKD links and tunnels. Returns the
/// table and whether anything was generated.
pub fn expand(mut t: Table) -> Result<(Table, bool), String> {
    let Some(topo) = t.remove("topology") else {
        return Ok((t, false));
    };
    let Value::Table(topo) = topo else {
        return Err("`topology` must be a table".into());
    };
    let g = Generated::from(&topo)?;
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
    Ok((t, true))
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

impl Generated {
    fn from(topo: &Table) -> Result<Generated, String> {
        let topo: Topology = serde_path_to_error::deserialize(Value::Table(topo.clone()))
            .map_err(|e| format!("field `topology.{}`: {}", e.path(), e.inner().message()))?;
        let kind = topo.kind;
        if !(1..=100_000).contains(&topo.nodes) {
            return Err("field `topology.nodes`: expected an integer in 1..=100000".into());
        }
        let n = topo.nodes as usize;
        if !(1..=100).contains(&topo.tunnels_per_pair) {
            return Err("field `topology.tunnels_per_pair`: expected an integer in 1..=100".into());
        }
        let per_pair = topo.tunnels_per_pair as usize;
        let (link, qkd, tunnel, kme) = (topo.link, topo.qkd, topo.tunnel, topo.kme);
        let (gateway, hub) = (topo.gateway, topo.hub);
        let stagger = topo.stagger;
        let mut g = Generated::default();
        let gw = |g: &mut Generated, name: &str, i: usize| {
            let addr = format!(
                "10.{}.{}.{}",
                i / 62_500 % 250 + 1,
                i / 250 % 250,
                i % 250 + 1
            );
            let mut t = gateway.clone();
            if name == "hub" {
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
        let names: Vec<String> = (0..n).map(|i| format!("gw-{i}")).collect();
        let kme_of = |name: &str| format!("kme-{name}");
        match kind {
            Kind::PointToPoint => {
                for (i, name) in ["gw-a", "gw-b"].iter().enumerate() {
                    gw(&mut g, name, i);
                }
                ip(&mut g, "gw-a", "gw-b");
                qkd_link(&mut g, &kme_of("gw-a"), &kme_of("gw-b"));
                tun(&mut g, "gw-a", "gw-b");
            }
            Kind::HubAndSpoke => {
                gw(&mut g, "hub", 0);
                for (i, name) in names.iter().enumerate() {
                    gw(&mut g, name, i + 1);
                    ip(&mut g, "hub", name);
                    qkd_link(&mut g, &kme_of(name), &kme_of("hub"));
                    tun(&mut g, name, "hub");
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
                for (i, name) in ["gw-a", "gw-b"].iter().enumerate() {
                    gw(&mut g, name, i);
                }
                ip(&mut g, "gw-a", "gw-b");
                if qkd.is_some() {
                    let mut hops = vec![kme_of("gw-a")];
                    for i in 0..n {
                        let mut k = kme.clone();
                        k.insert("name".into(), s(format!("trusted-{i}")));
                        g.kmes.push(k);
                        hops.push(format!("trusted-{i}"));
                    }
                    hops.push(kme_of("gw-b"));
                    for w in hops.windows(2) {
                        qkd_link(&mut g, &w[0], &w[1]);
                    }
                }
                tun(&mut g, "gw-a", "gw-b");
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
    let written = |path: &str| scenario.contains_key(path.split('.').next().unwrap_or(""));
    let set = |t: &mut Table, before: bool| {
        for (path, v) in params.iter().filter(|(p, _)| written(p) == before) {
            set_path(t, path, v.clone()).map_err(|e| fail(origin, e))?;
        }
        Ok::<(), ScenarioError>(())
    };
    let mut t = scenario.clone();
    set(&mut t, true)?;
    let (mut t, _) = expand(t).map_err(|e| fail(origin, e))?;
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
