//! What `qsafe run` and `qsafe probe` write into their output directory besides their
//! results: the manifest that says how to reproduce the run, JSON files, and the trace
//! and capture sinks. One place, so every command's files look alike.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sim_core::pcap::PcapSink;
use sim_core::{TraceFilter, Tracer};

/// `manifest.json`: which program ran what, with which seed, and the command that
/// replays it.
#[derive(Serialize)]
pub struct Manifest<'a> {
    qsafe_version: &'static str,
    experiment: &'a str,
    scenario: &'a str,
    scenario_sha256: String,
    seed: u64,
    /// The crypto provider (simulator runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    crypto: Option<&'a str>,
    fingerprint: String,
    reproduce: &'a str,
    /// Scenario keys left out that took their default (`qsafe explain KEY` says what
    /// each means), by key with `*` for list items (simulator runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defaults_applied: Option<std::collections::BTreeMap<String, String>>,
}

impl<'a> Manifest<'a> {
    /// The manifest of a run of `experiment` on the scenario `scenario` (its text
    /// `text`) with `seed`.
    pub fn new(
        experiment: &'a str,
        scenario: &'a str,
        text: &str,
        seed: u64,
        crypto: Option<&'a str>,
        fingerprint: String,
        reproduce: &'a str,
    ) -> Self {
        Manifest {
            qsafe_version: env!("CARGO_PKG_VERSION"),
            experiment,
            scenario,
            scenario_sha256: Sha256::digest(text.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            seed,
            crypto,
            fingerprint,
            reproduce,
            defaults_applied: None,
        }
    }
}

pub fn create(path: &Path) -> Result<fs::File> {
    fs::File::create(path).with_context(|| format!("creating {}", path.display()))
}

/// Writes `value` as pretty JSON with a final newline, streamed to the file: a large
/// run's results.json would otherwise be held in memory whole, beside the results.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut out = BufWriter::new(create(path)?);
    let mut write = || -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut out, value)?;
        out.write_all(b"\n")?;
        out.flush()
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// The run's tracer: with a filter, trace lines go to `out/trace.jsonl`.
pub fn tracer(out: &Path, filter: Option<&str>) -> Result<Tracer> {
    Ok(match filter {
        Some(f) => {
            let filter: TraceFilter = f.parse()?;
            let file = BufWriter::new(create(&out.join("trace.jsonl"))?);
            Tracer::with_output(filter, Box::new(file))
        }
        None => Tracer::new(),
    })
}

/// A capture into `out/capture.pcap`, if asked for.
pub fn capture(out: &Path, on: bool) -> Result<Option<PcapSink<Box<dyn Write>>>> {
    if !on {
        return Ok(None);
    }
    let w: Box<dyn Write> = Box::new(BufWriter::new(create(&out.join("capture.pcap"))?));
    Ok(Some(PcapSink::new(w)?))
}
