//! The results of independent parts of one run put together: the regions of a run
//! that ran as separate simulations (`qsafe run --by-region`), or its shards
//! (`qsafe merge`). Every part's tunnels, pools, links, gateways, traffic and attackers
//! are listed in the order the parts are added, the counters summed, and the totals
//! merged from the parts' totals (sums, and quantile sketches that are the same
//! whichever way their values were split). Where the parts share nothing, everything but
//! `events` and the fingerprint is what one simulation of the whole gives: each part
//! also runs the run's own periodic events, and the fingerprint is a hash of the parts'
//! fingerprints in order (`merged:<sha256>`), not a hash of one interleaved trace.

use sha2::{Digest, Sha256};

use crate::{Results, RowSelection, TotalsBuilder};

#[derive(Default)]
pub struct Merge {
    merged: Results,
    totals: TotalsBuilder,
    fingerprints: Sha256,
    parts: usize,
}

impl Merge {
    /// Adds the next part: its results and the builder of its totals. Fails, adding
    /// nothing, if its seed, crypto or duration differ from the first part's.
    pub fn add(&mut self, part: Results, totals: &TotalsBuilder) -> Result<(), String> {
        let m = &mut self.merged;
        if self.parts > 0
            && (part.seed, &part.crypto, part.duration_ns) != (m.seed, &m.crypto, m.duration_ns)
        {
            return Err(format!(
                "seed {}, crypto {} or duration {} ns differ from the first part's ({}, {}, {} ns)",
                part.seed, part.crypto, part.duration_ns, m.seed, m.crypto, m.duration_ns
            ));
        }
        self.parts += 1;
        self.totals.merge(totals);
        self.fingerprints.update(part.fingerprint.as_bytes());
        m.seed = part.seed;
        m.crypto = part.crypto;
        m.duration_ns = part.duration_ns;
        m.events += part.events;
        m.tunnels.extend(part.tunnels);
        m.traffic.extend(part.traffic);
        m.pools.extend(part.pools);
        m.links.extend(part.links);
        m.endpoints.extend(part.endpoints);
        m.cpus.extend(part.cpus);
        m.adversaries.extend(part.adversaries);
        m.violations.extend(part.violations);
        let (q, p) = (&mut m.qkd, &part.qkd);
        q.keys_delivered += p.keys_delivered;
        q.keys_fetched += p.keys_fetched;
        q.keys_wasted += p.keys_wasted;
        q.requests_refused += p.requests_refused;
        q.relay_keys += p.relay_keys;
        Ok(())
    }

    /// Parts added so far.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// The whole, its totals saying which rows the parts wrote.
    pub fn finish(self, rows: RowSelection) -> Results {
        let mut merged = self.merged;
        merged.totals = self.totals.finish(rows);
        let hex: String = self
            .fingerprints
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        merged.fingerprint = format!("merged:{hex}");
        merged
    }
}
