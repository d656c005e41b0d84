//! Rows as they happen: a run hands every handshake attempt, exchange, key request and
//! pool sample to a [`RowSink`] the moment it ends, so that no run keeps its rows in
//! memory unless it asks to ([`Rows`], what tests and sweeps use). [`CsvRows`] writes
//! them to one CSV file per kind (a header of field names, one line per row) that
//! pandas, polars and spreadsheets read as they are; [`Rows::read_csv`] reads them back.

use std::fs::File;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{ExchangeRow, HandshakeRow, KeyRequestRow};

/// One half of a QKD link's pool at a sample time; a half is written when its level or
/// its generated total changed since its previous row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolSample {
    pub time_ns: u64,
    pub link: String,
    /// The KME that owns (draws from) this half.
    pub owner: String,
    pub level_bits: u64,
    /// Bits generated into the half so far.
    pub generated_bits: u64,
}

/// Which rows a run writes: every row, a sample (every k-th tunnel, k chosen so that
/// about 1,000 tunnels are kept, with their handshakes, exchanges and key requests;
/// about 100 QKD links' pool samples), or none (summaries only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowSelection {
    #[default]
    All,
    Sample,
    None,
}

impl std::str::FromStr for RowSelection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(RowSelection::All),
            "sample" => Ok(RowSelection::Sample),
            "none" => Ok(RowSelection::None),
            _ => Err(format!("`{s}`: rows are `all`, `sample` or `none`")),
        }
    }
}

/// Where rows go as they happen.
pub trait RowSink {
    fn handshake(&mut self, row: &HandshakeRow);
    fn exchange(&mut self, row: &ExchangeRow);
    fn key_request(&mut self, row: &KeyRequestRow);
    fn pool_sample(&mut self, row: &PoolSample);
}

/// Rows kept in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    pub handshakes: Vec<HandshakeRow>,
    pub exchanges: Vec<ExchangeRow>,
    pub key_requests: Vec<KeyRequestRow>,
    pub pool_samples: Vec<PoolSample>,
}

impl RowSink for Rows {
    fn handshake(&mut self, row: &HandshakeRow) {
        self.handshakes.push(row.clone());
    }
    fn exchange(&mut self, row: &ExchangeRow) {
        self.exchanges.push(row.clone());
    }
    fn key_request(&mut self, row: &KeyRequestRow) {
        self.key_requests.push(row.clone());
    }
    fn pool_sample(&mut self, row: &PoolSample) {
        self.pool_samples.push(row.clone());
    }
}

/// The row files of a run directory.
pub const ROW_FILES: [&str; 4] = [
    "handshakes.csv",
    "exchanges.csv",
    "key_requests.csv",
    "pool_levels.csv",
];

#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error("{path}: {source}")]
    Csv { path: String, source: csv::Error },
}

/// csv buffers its writes itself.
type Writer = csv::Writer<File>;

/// Rows written to CSV files as they come (buffered).
pub struct CsvRows {
    files: [(String, Writer); 4],
    /// The first write error, reported by [`CsvRows::finish`].
    error: Option<RowsError>,
}

impl CsvRows {
    /// Creates (or truncates) the row files in `dir`.
    pub fn create(dir: &Path) -> Result<Self, RowsError> {
        let open = |name: &str| {
            let path = dir.join(name);
            let w = csv::Writer::from_path(&path).map_err(|source| RowsError::Csv {
                path: path.display().to_string(),
                source,
            })?;
            Ok((path.display().to_string(), w))
        };
        let [a, b, c, d] = ROW_FILES;
        Ok(CsvRows {
            files: [open(a)?, open(b)?, open(c)?, open(d)?],
            error: None,
        })
    }

    fn write<T: Serialize>(&mut self, file: usize, row: &T) {
        let (path, w) = &mut self.files[file];
        if let Err(source) = w.serialize(row)
            && self.error.is_none()
        {
            self.error = Some(RowsError::Csv {
                path: path.clone(),
                source,
            });
        }
    }

    /// Flushes the files; the first error of the run, if any.
    pub fn finish(mut self) -> Result<(), RowsError> {
        for (path, w) in &mut self.files {
            if let Err(e) = w.flush()
                && self.error.is_none()
            {
                self.error = Some(RowsError::Csv {
                    path: path.clone(),
                    source: e.into(),
                });
            }
        }
        self.error.map_or(Ok(()), Err)
    }
}

impl RowSink for CsvRows {
    fn handshake(&mut self, row: &HandshakeRow) {
        self.write(0, row);
    }
    fn exchange(&mut self, row: &ExchangeRow) {
        self.write(1, row);
    }
    fn key_request(&mut self, row: &KeyRequestRow) {
        self.write(2, row);
    }
    fn pool_sample(&mut self, row: &PoolSample) {
        self.write(3, row);
    }
}

impl Rows {
    /// Reads the row files of `dir`; a file that is not there gives no rows (the run
    /// wrote none of that kind).
    pub fn read_csv(dir: &Path) -> Result<Rows, RowsError> {
        fn read<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<Vec<T>, RowsError> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(Vec::new());
            }
            let err = |source| RowsError::Csv {
                path: path.display().to_string(),
                source,
            };
            let mut r = csv::Reader::from_path(&path).map_err(err)?;
            r.deserialize().collect::<Result<Vec<T>, _>>().map_err(err)
        }
        let [a, b, c, d] = ROW_FILES;
        Ok(Rows {
            handshakes: read(dir, a)?,
            exchanges: read(dir, b)?,
            key_requests: read(dir, c)?,
            pool_samples: read(dir, d)?,
        })
    }

    /// Moves every row into `sink`.
    pub fn drain_into(&mut self, sink: &mut dyn RowSink) {
        for r in self.handshakes.drain(..) {
            sink.handshake(&r);
        }
        for r in self.exchanges.drain(..) {
            sink.exchange(&r);
        }
        for r in self.key_requests.drain(..) {
            sink.key_request(&r);
        }
        for r in self.pool_samples.drain(..) {
            sink.pool_sample(&r);
        }
    }
}
