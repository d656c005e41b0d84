//! Reading a run directory back as the tests look at it.

use std::path::Path;

use serde_json::Value;

/// `dir/results.json` with the run's rows (from their CSV files) under `handshakes`,
/// `exchanges`, `key_requests` and `pool_samples`.
pub fn read_run(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("results.json")).unwrap();
    let mut r: Value = serde_json::from_str(&text).unwrap();
    let rows = results::Rows::read_csv(dir).unwrap();
    r["handshakes"] = serde_json::to_value(&rows.handshakes).unwrap();
    r["exchanges"] = serde_json::to_value(&rows.exchanges).unwrap();
    r["key_requests"] = serde_json::to_value(&rows.key_requests).unwrap();
    r["pool_samples"] = serde_json::to_value(&rows.pool_samples).unwrap();
    r
}
