//! Rows as they happen: a run hands every handshake attempt, exchange, key request and
//! pool sample to a [`RowSink`] the moment it ends, so that no run keeps its rows in
//! memory unless it asks to ([`Rows`], what tests and sweeps use). [`CsvRows`] writes
//! them to one CSV file per kind (a header of field names, one line per row) that
//! pandas, polars and spreadsheets read as they are; [`Rows::read_csv`] reads them back.
//! [`write_parquet`] turns each file into Parquet beside it when the run ends, a row
//! group of at most [`PARQUET_GROUP`] rows at a time, so memory stays bounded.

use std::fs::File;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::parquet::Kind::{self, Int, Text};
use crate::parquet::{self, Values};
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
    #[error(transparent)]
    Parquet(#[from] parquet::ParquetError),
    #[error("{path}: line {line}: `{value}` in column `{column}` is not an integer")]
    NotAnInteger {
        path: String,
        line: u64,
        column: String,
        value: String,
    },
}

/// The columns of each row file, in field order, with their Parquet kinds (integers
/// are `Int`; an empty integer cell is null; text stays text, empty included). A test
/// checks them against the CSV headers the row types write.
pub const ROW_COLUMNS: [&[(&str, Kind)]; 4] = [
    &[
        ("tunnel", Text),
        ("attempt", Int),
        ("ike_sa", Text),
        ("why", Text),
        ("requested_ns", Int),
        ("key_wait_ns", Int),
        ("ike_started_ns", Int),
        ("ended_ns", Int),
        ("outcome", Text),
        ("duration_ns", Int),
        ("time_to_up_ns", Int),
        ("proposal", Text),
        ("ppk", Text),
        ("ppk_id", Text),
        ("retransmissions", Int),
        ("bytes_sent", Int),
        ("bytes_received", Int),
        ("fragments_sent", Int),
        ("fragments_received", Int),
    ],
    &[
        ("tunnel", Text),
        ("gateway", Text),
        ("ike_sa", Text),
        ("exchange", Text),
        ("started_ns", Int),
        ("completed_ns", Int),
        ("outcome", Text),
        ("request_bytes", Int),
        ("request_fragments", Int),
        ("response_bytes", Int),
        ("response_fragments", Int),
        ("retransmissions", Int),
        ("retransmitted_datagrams", Int),
    ],
    &[
        ("time_ns", Int),
        ("gateway", Text),
        ("tunnel", Text),
        ("kme", Text),
        ("api", Text),
        ("op", Text),
        ("status", Int),
        ("latency_ns", Int),
    ],
    &[
        ("time_ns", Int),
        ("link", Text),
        ("owner", Text),
        ("level_bits", Int),
        ("generated_bits", Int),
    ],
];

/// Rows per Parquet row group.
pub const PARQUET_GROUP: usize = 65_536;

/// Writes `X.parquet` beside each row file `X.csv` of `dir` (those that exist), read
/// back a group of rows at a time.
pub fn write_parquet(dir: &Path) -> Result<(), RowsError> {
    for (name, columns) in ROW_FILES.iter().zip(ROW_COLUMNS) {
        let csv_path = dir.join(name);
        if csv_path.exists() {
            csv_to_parquet(
                &csv_path,
                &csv_path.with_extension("parquet"),
                columns,
                PARQUET_GROUP,
            )?;
        }
    }
    Ok(())
}

fn csv_to_parquet(
    csv_path: &Path,
    out: &Path,
    columns: &[(&str, Kind)],
    group_rows: usize,
) -> Result<(), RowsError> {
    let shown = || csv_path.display().to_string();
    let csv_err = |source| RowsError::Csv {
        path: shown(),
        source,
    };
    let mut reader = csv::Reader::from_path(csv_path).map_err(csv_err)?;
    let mut writer = parquet::Writer::create(out, columns)?;
    let empty = || -> Vec<Values> {
        columns
            .iter()
            .map(|(_, k)| match k {
                Int => Values::Int(Vec::new()),
                _ => Values::Text(Vec::new()),
            })
            .collect()
    };
    let mut group = empty();
    let mut rows = 0;
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(csv_err)?;
        for ((cell, values), (name, _)) in record.iter().zip(&mut group).zip(columns) {
            match values {
                Values::Int(v) if cell.is_empty() => v.push(None),
                Values::Int(v) => {
                    v.push(Some(cell.parse().map_err(|_| RowsError::NotAnInteger {
                        path: shown(),
                        line: line as u64 + 2,
                        column: name.to_string(),
                        value: cell.to_string(),
                    })?))
                }
                Values::Text(v) => v.push(Some(cell.to_string())),
                Values::Float(v) => v.push(cell.parse().ok()),
            }
        }
        rows += 1;
        if rows == group_rows {
            writer.write_group(&std::mem::replace(&mut group, empty()))?;
            rows = 0;
        }
    }
    if rows > 0 {
        writer.write_group(&group)?;
    }
    writer.close()?;
    Ok(())
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
            Ok::<_, RowsError>((path.display().to_string(), w))
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

#[cfg(test)]
mod tests {
    use super::*;
    use ::parquet::file::reader::{FileReader, SerializedFileReader};
    use ::parquet::record::Field;

    /// The CSV header a row type writes.
    fn header<T: Serialize>(row: &T) -> Vec<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(row).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        text.lines()
            .next()
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_parquet_columns_are_the_row_types_fields() {
        let headers = [
            header(&HandshakeRow::default()),
            header(&ExchangeRow::default()),
            header(&KeyRequestRow::default()),
            header(&PoolSample::default()),
        ];
        for (h, columns) in headers.iter().zip(ROW_COLUMNS) {
            let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
            assert_eq!(h, &names);
        }
    }

    #[test]
    fn row_files_become_parquet_in_groups_with_their_types_and_nulls() {
        let dir = std::env::temp_dir().join(format!("qsafe-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut csv = CsvRows::create(&dir).unwrap();
        for i in 0..5u64 {
            csv.handshake(&HandshakeRow {
                tunnel: format!("t{i}"),
                attempt: i as u32,
                time_to_up_ns: (i % 2 == 0).then_some(i * 1000),
                ppk_id: String::new(),
                ..HandshakeRow::default()
            });
        }
        csv.finish().unwrap();
        let (from, to) = (dir.join("handshakes.csv"), dir.join("handshakes.parquet"));
        csv_to_parquet(&from, &to, ROW_COLUMNS[0], 2).unwrap();
        let reader = SerializedFileReader::new(File::open(&to).unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 3);
        let rows: Vec<_> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows.len(), 5);
        let field = |r: usize, name: &str| {
            rows[r]
                .get_column_iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, f)| f.clone())
                .unwrap()
        };
        assert_eq!(field(3, "tunnel"), Field::Str("t3".into()));
        assert_eq!(field(3, "attempt"), Field::Long(3));
        assert_eq!(field(2, "time_to_up_ns"), Field::Long(2000));
        assert_eq!(field(3, "time_to_up_ns"), Field::Null);
        assert_eq!(field(4, "ppk_id"), Field::Str(String::new()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
