//! `qsafe explain`: every key a scenario file may hold, with its type, default and
//! meaning, read from the JSON schema of the same types the parser deserializes
//! (`netsim::WorldConfig` and [`Topology`]) and their doc comments, so the list cannot
//! drift from what the parser accepts. Also: which defaults a given scenario relied on.

use serde_json::Value as Json;
use toml::{Table, Value};

use crate::Topology;

/// One scenario key.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// Dotted, with `*` for any item of a list: `tunnel.*.rekey_time`.
    pub path: String,
    /// `duration`, `integer`, `"real" | "model"`, `table`, `list of tables`, ...
    pub ty: String,
    /// The value used when the key is left out (`None`: required, or no value).
    pub default: Option<String>,
    pub required: bool,
    /// For keys of one variant of a tagged table: `kind = "gateway-restart"`.
    pub when: Option<String>,
    pub about: String,
}

/// Every key, scenario keys first, then `[topology]`.
pub fn keys() -> Vec<Key> {
    let mut out = Vec::new();
    for (schema, prefix) in [
        (schemars::schema_for!(netsim::WorldConfig), ""),
        (schemars::schema_for!(Topology), "topology"),
    ] {
        let root = schema.as_value().clone();
        let defs = root.get("$defs").cloned().unwrap_or(Json::Null);
        if !prefix.is_empty() {
            out.push(Key {
                path: prefix.into(),
                ty: "table".into(),
                default: None,
                required: false,
                when: None,
                about: text(&root),
            });
        }
        Walk {
            defs: &defs,
            out: &mut out,
        }
        .object(&root, prefix, None);
    }
    out
}

/// A schema's doc text on one line, without rustdoc's link brackets.
fn text(node: &Json) -> String {
    node.get("description")
        .and_then(Json::as_str)
        .unwrap_or("")
        .replace("[`", "`")
        .replace("`]", "`")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

struct Walk<'a> {
    defs: &'a Json,
    out: &'a mut Vec<Key>,
}

/// The schema a `$ref` points to (or the node itself).
fn resolve<'a>(defs: &'a Json, node: &'a Json) -> &'a Json {
    match node.get("$ref").and_then(Json::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| defs.get(name))
            .map_or(node, |d| resolve(defs, d)),
        None => node,
    }
}

/// `node` without its `null` alternative (an `Option`), resolved.
fn strip_null<'a>(defs: &'a Json, node: &'a Json) -> &'a Json {
    if let Some(any) = node.get("anyOf").and_then(Json::as_array) {
        let rest: Vec<&Json> = any
            .iter()
            .filter(|a| a.get("type").and_then(Json::as_str) != Some("null"))
            .collect();
        if let [one] = rest.as_slice() {
            return resolve(defs, one);
        }
    }
    resolve(defs, node)
}

impl<'a> Walk<'a> {
    /// The properties of an object schema, each a key under `path`.
    fn object(&mut self, node: &Json, path: &str, when: Option<&str>) {
        let node = resolve(self.defs, node);
        let required: Vec<&str> = node
            .get("required")
            .and_then(Json::as_array)
            .map(|r| r.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        let Some(props) = node.get("properties").and_then(Json::as_object) else {
            return;
        };
        for (name, prop) in props {
            self.property(
                prop,
                &join(path, name),
                required.contains(&name.as_str()),
                when,
            );
        }
    }

    fn property(&mut self, prop: &Json, path: &str, required: bool, when: Option<&str>) {
        let defs = self.defs;
        let target = strip_null(defs, prop);
        // The field's own doc comment, else its type's.
        let about = match text(prop) {
            // A value type's own text (a duration's syntax) does not say what the key is.
            t if t.is_empty() && target.get("format").is_none() => text(target),
            t => t,
        };
        let mut key = Key {
            path: path.to_string(),
            ty: String::new(),
            default: prop.get("default").map(render),
            required,
            when: when.map(str::to_string),
            about,
        };
        let items = target
            .get("items")
            .map(|i| strip_null(defs, i))
            .filter(|_| target.get("type").and_then(Json::as_str) == Some("array"));
        if let Some(items) = items.filter(|i| is_table(i)) {
            key.ty = "list of tables".into();
            if key.about.is_empty() {
                key.about = text(items);
            }
            self.out.push(key);
            self.table(items, &format!("{path}.*"), when);
        } else if is_table(target) {
            key.ty = "table".into();
            // Its keys show their own defaults.
            key.default = key.default.filter(|d| d == "none");
            self.out.push(key);
            self.table(target, path, when);
        } else {
            key.ty = match items {
                Some(i) => format!("list of {}", leaf_type(i)),
                None => leaf_type(target),
            };
            if key.ty == "table" {
                key.default = key.default.filter(|d| d == "none");
            }
            if let Some(variants) = variants(target) {
                key.about = format!("{} ({variants}.)", key.about.trim_end_matches('.'));
            }
            self.out.push(key);
        }
    }

    /// A table: its properties, or for a tagged enum its tag (once, with every value)
    /// and then each variant's other keys.
    fn table(&mut self, node: &Json, path: &str, when: Option<&str>) {
        let Some(alts) = node.get("oneOf").and_then(Json::as_array) else {
            return self.object(node, path, when);
        };
        let alts: Vec<&Json> = alts.iter().map(|a| resolve(self.defs, a)).collect();
        // The tag: the property every variant fixes to a constant.
        let tag_of = |alt: &Json| {
            alt.get("properties")?
                .as_object()?
                .iter()
                .find_map(|(k, v)| Some((k.clone(), v.get("const")?.clone(), text(alt))))
        };
        let tags: Vec<(String, Json, String)> = alts.iter().filter_map(|a| tag_of(a)).collect();
        if let Some((name, _, _)) = tags.first() {
            self.out.push(Key {
                path: join(path, name),
                ty: tags
                    .iter()
                    .map(|t| render(&t.1))
                    .collect::<Vec<_>>()
                    .join(" | "),
                default: None,
                required: true,
                when: None,
                about: tags
                    .iter()
                    .map(|(_, v, about)| format!("{}: {}", render(v), about.trim_end_matches('.')))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        for (alt, tag) in alts.iter().zip(&tags) {
            let mut untagged = (*alt).clone();
            if let Some(p) = untagged.get_mut("properties").and_then(Json::as_object_mut) {
                p.remove(&tag.0);
            }
            let when = format!("{} = {}", tag.0, render(&tag.1));
            self.object(&untagged, path, Some(&when));
        }
    }
}

/// An object with named keys, or a choice of such objects (a tagged enum).
fn is_table(node: &Json) -> bool {
    node.get("properties").is_some()
        || node
            .get("oneOf")
            .and_then(Json::as_array)
            .is_some_and(|alts| alts.iter().all(|a| a.get("properties").is_some()))
}

/// A value's type in words: a format (`duration`), a choice of strings, or its JSON type.
fn leaf_type(node: &Json) -> String {
    if let Some(f) = node.get("format").and_then(Json::as_str)
        && ["duration", "time", "bandwidth", "ipv4"].contains(&f)
    {
        return f.to_string();
    }
    let consts: Vec<String> = match (node.get("enum"), node.get("oneOf")) {
        (Some(Json::Array(e)), _) => e.iter().map(render).collect(),
        (_, Some(Json::Array(alts))) => alts
            .iter()
            .filter_map(|a| {
                a.get("const").map(render).or_else(|| {
                    a.get("enum")
                        .and_then(Json::as_array)
                        .map(|e| e.iter().map(render).collect::<Vec<_>>().join(" | "))
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    if !consts.is_empty() {
        return consts.join(" | ");
    }
    match node.get("type") {
        Some(Json::String(t)) if t == "object" => "table".into(),
        Some(Json::String(t)) => t.clone(),
        Some(Json::Array(ts)) => ts
            .iter()
            .filter_map(Json::as_str)
            .filter(|t| *t != "null")
            .map(|t| if t == "object" { "table" } else { t })
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "value".into(),
    }
}

/// The meanings of a choice's values, where its variants have doc comments.
fn variants(node: &Json) -> Option<String> {
    let alts = node.get("oneOf").and_then(Json::as_array)?;
    let docs: Vec<String> = alts
        .iter()
        .filter_map(|a| {
            let value = a
                .get("const")
                .map(render)
                .or_else(|| a.get("enum")?.as_array()?.first().map(render))?;
            let t = text(a);
            (!t.is_empty()).then(|| format!("{value}: {}", t.trim_end_matches('.')))
        })
        .collect();
    (!docs.is_empty()).then(|| docs.join("; "))
}

/// A JSON value as TOML would write it.
fn render(v: &Json) -> String {
    match v {
        Json::Null => "none".into(),
        Json::String(s) => format!("\"{s}\""),
        Json::Array(a) => format!("[{}]", a.iter().map(render).collect::<Vec<_>>().join(", ")),
        Json::Object(o) => format!(
            "{{ {} }}",
            o.iter()
                .map(|(k, v)| format!("{k} = {}", render(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// `tunnel[3].ppk`, `tunnel.3.ppk` and `tunnel.ppk` all name `tunnel.*.ppk`.
fn normalize(path: &str) -> String {
    path.replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|p| !p.is_empty() && *p != "*" && p.parse::<usize>().is_err())
        .collect::<Vec<_>>()
        .join(".")
}

/// The keys `query` names: the key itself and everything under it (any spelling of
/// list positions), or every key when it is empty.
pub fn find(query: &str) -> Vec<Key> {
    let q = normalize(query);
    keys()
        .into_iter()
        .filter(|k| {
            let p = normalize(&k.path);
            q.is_empty() || p == q || p.starts_with(&format!("{q}."))
        })
        .collect()
}

/// The keys as a person reads them: path, type, default, then the meaning indented.
pub fn render_keys(keys: &[Key]) -> String {
    let mut s = String::new();
    for k in keys {
        let mut head = format!("{}  ({}", k.path, k.ty);
        match (&k.default, k.required) {
            (_, true) => head += ", required",
            (Some(d), _) => head += &format!(", default {d}"),
            (None, false) => {}
        }
        head += ")";
        if let Some(w) = &k.when {
            head += &format!("  [when {w}]");
        }
        s += &head;
        s += "\n";
        if !k.about.is_empty() {
            for line in wrap(&k.about, 84) {
                s += &format!("    {line}\n");
            }
        }
    }
    s
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line at least");
        if !last.is_empty() && last.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// The keys of the expanded scenario `t` left out where they have a default: the
/// defaults this scenario relied on, as (path with `*`, default), each path once.
pub fn defaults_applied(t: &Table) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for k in keys()
        .into_iter()
        .filter(|k| k.default.is_some() && !k.path.starts_with("topology"))
    {
        if k.when.is_some() {
            continue;
        }
        if missing_in(t, &k.path.split('.').collect::<Vec<_>>())
            && !out.iter().any(|(p, _)| *p == k.path)
        {
            out.push((k.path.clone(), k.default.clone().unwrap_or_default()));
        }
    }
    out
}

/// Whether some item that the path's parents reach lacks the last key.
fn missing_somewhere(v: &Value, parts: &[&str]) -> bool {
    match (parts, v) {
        (["*", rest @ ..], Value::Array(items)) => items.iter().any(|i| missing_somewhere(i, rest)),
        (_, Value::Table(t)) => missing_in(t, parts),
        _ => false,
    }
}

/// [`missing_somewhere`] for a table, which it reads in place (the expanded scenario
/// of a large topology is big: no copy of it per key).
fn missing_in(t: &Table, parts: &[&str]) -> bool {
    match parts {
        [] => false,
        [last] => !t.contains_key(*last),
        // An absent table with defaults inside: its parent key reports it.
        [first, rest @ ..] => t
            .get(*first)
            .is_some_and(|child| missing_somewhere(child, rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_type_and_a_meaning() {
        let keys = keys();
        assert!(keys.len() > 100, "{}", keys.len());
        let undocumented: Vec<&str> = keys
            .iter()
            .filter(|k| k.about.is_empty() || k.about.starts_with('(') || k.ty.is_empty())
            .map(|k| k.path.as_str())
            .collect();
        assert!(
            undocumented.is_empty(),
            "keys without a doc comment: {undocumented:?}"
        );
    }

    #[test]
    fn keys_carry_their_types_and_defaults() {
        let k = |p: &str| {
            find(p)
                .into_iter()
                .find(|k| k.path == p)
                .unwrap_or_else(|| panic!("{p}"))
        };
        assert_eq!(k("duration").ty, "duration");
        assert!(k("duration").required);
        assert_eq!(
            k("tunnel.*.ike").default.as_deref(),
            Some("[\"aes256gcm16-prfsha256-x25519-ke1_mlkem768\"]")
        );
        assert_eq!(k("crypto").ty, "\"real\" | \"model\"");
        assert_eq!(k("topology.stagger").default.as_deref(), Some("\"37ms\""));
        assert_eq!(k("link.*.params").ty, "table");
        assert_eq!(k("gateway").ty, "list of tables");
        // Any spelling of a list position finds the key.
        assert_eq!(find("tunnel[2].ppk"), find("tunnel.*.ppk"));
        assert_eq!(find("tunnel.ppk").len(), 1);
    }
}
