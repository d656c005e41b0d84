//! Typed trace events, written as JSON lines, and the run fingerprint.
//!
//! Models define their own event types (`#[derive(Serialize)]` plus [`TraceEvent`]).
//! Every event recorded goes, as a compact binary record, into a SHA-256 over the whole
//! run: the fingerprint. The record is
//!
//! ```text
//! t: u64 LE (ns) | entity id: u32 LE | kind length: u8 | kind | data (crate::canonical)
//! ```
//!
//! so two runs agree on the fingerprint exactly when they agree on every traced event
//! (entity ids follow from the scenario: entities are registered in model order). A
//! binary record rather than the JSON line because every event of a run is hashed:
//! it is a third of the bytes and needs no decimal formatting. A [`TraceFilter`]
//! selects which events are also written out as JSON lines
//!
//! ```text
//! {"t":<ns>,"entity":"<name>","kind":"<kind>","data":{...}}
//! ```
//!
//! (fields in declaration order, integer time); it never changes the fingerprint.

use std::fmt;
use std::io::{self, Write};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::canonical;
use crate::entity::EntityId;
use crate::time::SimTime;

/// An event a model can record in the trace.
pub trait TraceEvent: Serialize {
    /// A dotted name such as `link.drop` or `ike.established`; used by filters.
    fn kind(&self) -> &'static str;

    /// Appends the event as JSON, byte for byte what serde_json writes for it, and
    /// returns true; for events so frequent (a link's, per datagram) that serde's
    /// generic path shows in the profile of a traced run. By default returns false:
    /// serde_json writes it.
    fn write_json(&self, _out: &mut Vec<u8>) -> bool {
        false
    }
}

/// SHA-256 over a run's canonical trace.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Which trace lines get written out: entity globs, kind globs and a time window.
/// Empty lists match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceFilter {
    pub entities: Vec<String>,
    pub kinds: Vec<String>,
    pub from: Option<SimTime>,
    pub until: Option<SimTime>,
}

/// A trace filter string could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "trace filter `{clause}`: {problem} (expected comma-separated entity=GLOB, kind=GLOB, from=TIME, until=TIME, or `all`)"
)]
pub struct FilterParseError {
    pub clause: String,
    pub problem: String,
}

impl std::str::FromStr for TraceFilter {
    type Err = FilterParseError;

    /// Parses e.g. `entity=gw/*,kind=ike.*,kind=link.drop,from=10s,until=1m`.
    /// Repeated `entity` or `kind` clauses are alternatives.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut f = TraceFilter::default();
        for clause in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if clause == "all" {
                continue;
            }
            let err = |problem: String| FilterParseError {
                clause: clause.to_string(),
                problem,
            };
            let (key, value) = clause
                .split_once('=')
                .ok_or_else(|| err("missing `=`".into()))?;
            match key.trim() {
                "entity" => f.entities.push(value.trim().to_string()),
                "kind" => f.kinds.push(value.trim().to_string()),
                "from" => f.from = Some(value.parse().map_err(|e| err(format!("{e}")))?),
                "until" | "to" => f.until = Some(value.parse().map_err(|e| err(format!("{e}")))?),
                other => return Err(err(format!("unknown key `{other}`"))),
            }
        }
        Ok(f)
    }
}

impl TraceFilter {
    /// Whether a line with this time, entity and kind is written out. `until` is
    /// exclusive.
    pub fn matches(&self, t: SimTime, entity: &str, kind: &str) -> bool {
        self.from.is_none_or(|from| t >= from)
            && self.until.is_none_or(|until| t < until)
            && (self.entities.is_empty() || self.entities.iter().any(|g| glob(g, entity)))
            && (self.kinds.is_empty() || self.kinds.iter().any(|g| glob(g, kind)))
    }
}

/// Shell-style glob with `*` (any run of characters) and `?` (one character).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Records trace events: hashes every one, writes the ones the filter selects.
pub struct Tracer {
    hasher: Sha256,
    events: u64,
    filter: TraceFilter,
    sink: Option<Box<dyn Write>>,
    written: u64,
    write_error: Option<io::Error>,
    /// The record being hashed, then the line being written.
    line: Vec<u8>,
}

impl Default for Tracer {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracer {
    /// A tracer that only fingerprints.
    pub fn new() -> Self {
        Tracer {
            hasher: Sha256::new(),
            events: 0,
            filter: TraceFilter::default(),
            sink: None,
            written: 0,
            write_error: None,
            line: Vec::with_capacity(256),
        }
    }

    /// Also writes the lines `filter` selects to `sink` (e.g. a buffered file).
    pub fn with_output(filter: TraceFilter, sink: Box<dyn Write>) -> Self {
        Tracer {
            filter,
            sink: Some(sink),
            ..Tracer::new()
        }
    }

    /// Records one event of `entity` (whose name `name` gives, asked only when the line
    /// is written out) at `t`.
    pub fn record<'n, T: TraceEvent + ?Sized>(
        &mut self,
        t: SimTime,
        entity: EntityId,
        name: impl FnOnce() -> &'n str,
        event: &T,
    ) {
        let kind = event.kind();
        // The canonical record: time, entity, kind, then the data (see the module doc).
        let record = &mut self.line;
        record.clear();
        record.extend_from_slice(&t.as_nanos().to_le_bytes());
        record.extend_from_slice(&entity.0.to_le_bytes());
        record.push(kind.len() as u8);
        record.extend_from_slice(kind.as_bytes());
        if let Err(e) = canonical::encode(event, record) {
            // Our derived types cannot fail; should one, its error is what is hashed.
            record.extend_from_slice(e.to_string().as_bytes());
        }
        self.hasher.update(&*record);
        self.events += 1;
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        let entity = name();
        if self.write_error.is_some() || !self.filter.matches(t, entity, kind) {
            return;
        }
        let line = &mut self.line;
        line.clear();
        // Written by hand up to the data, byte for byte what serde_json writes.
        line.extend_from_slice(b"{\"t\":");
        push_decimal(line, t.as_nanos());
        line.extend_from_slice(b",\"entity\":");
        push_json_str(line, entity);
        line.extend_from_slice(b",\"kind\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"data\":");
        if !event.write_json(line) && serde_json::to_writer(&mut *line, event).is_err() {
            line.extend_from_slice(b"null");
        }
        line.extend_from_slice(b"}\n");
        match sink.write_all(line) {
            Ok(()) => self.written += 1,
            Err(e) => self.write_error = Some(e),
        }
    }

    /// Events recorded so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Lines written to the output so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The fingerprint of everything recorded so far (the tracer keeps going).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.hasher.clone().finalize().into())
    }

    /// Flushes the output and returns the fingerprint, or the first write error.
    pub fn finish(mut self) -> io::Result<Fingerprint> {
        if let Some(e) = self.write_error.take() {
            return Err(e);
        }
        if let Some(sink) = self.sink.as_mut() {
            sink.flush()?;
        }
        Ok(self.fingerprint())
    }
}

/// Appends `n` in decimal, as serde_json writes it.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `s` as a JSON string, as serde_json writes it: entity names have nothing
/// to escape (no control characters), unless one holds a quote or a backslash.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_head_is_what_serde_json_writes() {
        for n in [0, 7, 10, 999, 1_000_000_007, u64::MAX] {
            let mut ours = Vec::new();
            push_decimal(&mut ours, n);
            assert_eq!(ours, serde_json::to_vec(&n).unwrap());
        }
        for name in [
            "gw/hub",
            "link/a-b/a>b",
            "q\"uote",
            "back\\slash",
            "überall/ø",
            "",
        ] {
            let mut ours = Vec::new();
            push_json_str(&mut ours, name);
            assert_eq!(ours, serde_json::to_vec(name).unwrap(), "{name}");
        }
    }
    use crate::time::SimDuration;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[derive(Serialize)]
    struct Drop {
        reason: &'static str,
        bytes: u32,
    }
    impl TraceEvent for Drop {
        fn kind(&self) -> &'static str {
            "link.drop"
        }
    }
    #[derive(Serialize)]
    struct Up;
    impl TraceEvent for Up {
        fn kind(&self) -> &'static str {
            "ike.up"
        }
    }

    #[derive(Clone, Default)]
    struct Shared(Rc<RefCell<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob("gw/*", "gw/berlin-1"));
        assert!(glob("*", ""));
        assert!(glob("link.*", "link.drop"));
        assert!(!glob("link.*", "ike.up"));
        assert!(glob("gw/?", "gw/a"));
        assert!(!glob("gw/?", "gw/ab"));
        assert!(glob("*-*-1", "gw/a-b-1"));
        assert!(!glob("a*b", "a"));
    }

    #[test]
    fn writes_canonical_lines_and_filters_without_changing_the_fingerprint() {
        let out = Shared::default();
        let filter: TraceFilter = "entity=link/*,kind=link.*,from=1s".parse().unwrap();
        let mut filtered = Tracer::with_output(filter, Box::new(out.clone()));
        let mut plain = Tracer::new();
        for tr in [&mut filtered, &mut plain] {
            let d = Drop {
                reason: "loss",
                bytes: 1200,
            };
            tr.record(
                SimTime::from_nanos(500_000_000),
                EntityId(1),
                || "link/a-b",
                &d,
            );
            tr.record(
                SimTime::from_nanos(1_000_000_000),
                EntityId(1),
                || "link/a-b",
                &d,
            );
            tr.record(
                SimTime::from_nanos(1_000_000_000),
                EntityId(2),
                || "gw/a",
                &Up,
            );
        }
        assert_eq!(filtered.events(), 3);
        assert_eq!(filtered.written(), 1);
        assert_eq!(
            String::from_utf8(out.0.borrow().clone()).unwrap(),
            "{\"t\":1000000000,\"entity\":\"link/a-b\",\"kind\":\"link.drop\",\"data\":{\"reason\":\"loss\",\"bytes\":1200}}\n"
        );
        assert_eq!(filtered.fingerprint(), plain.fingerprint());
        let before = plain.fingerprint();
        plain.record(SimTime::from_nanos(2), EntityId(2), || "gw/a", &Up);
        assert_ne!(plain.fingerprint(), before);
        assert_eq!(plain.fingerprint().to_string().len(), 64);
    }

    #[test]
    fn filter_strings_parse_and_reject() {
        let f: TraceFilter = "entity=gw/*, kind=ike.*, kind=link.drop, until=1m"
            .parse()
            .unwrap();
        assert_eq!(f.entities, ["gw/*"]);
        assert_eq!(f.kinds, ["ike.*", "link.drop"]);
        assert_eq!(f.until, Some("60s".parse().unwrap()));
        assert!(f.matches(SimTime::from_nanos(0), "gw/x", "link.drop"));
        assert!(!f.matches("60s".parse().unwrap(), "gw/x", "link.drop"));
        assert_eq!(
            "all".parse::<TraceFilter>().unwrap(),
            TraceFilter::default()
        );
        assert!("colour=red".parse::<TraceFilter>().is_err());
        assert!("from=soon".parse::<TraceFilter>().is_err());
        assert!("entity".parse::<TraceFilter>().is_err());
        let w: TraceFilter = "from=1s,until=2s".parse().unwrap();
        assert!(w.matches(SimTime::ZERO + SimDuration::from_millis(1500), "x", "y"));
        assert!(!w.matches(SimTime::ZERO + SimDuration::from_millis(999), "x", "y"));
    }
}
