//! Tables as Parquet files that pandas (`pd.read_parquet`) and polars
//! (`pl.read_parquet`) read directly: named columns of numbers or text, each value
//! optional (a metric that does not apply is null, not zero), written as one row group,
//! uncompressed. The file format only (the `parquet` crate without arrow).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{LogicalType, Repetition, Type as Physical};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

/// One column's values.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    Float(Vec<Option<f64>>),
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Float(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::Text(v) => v.len(),
        }
    }
}

/// A named column.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub values: Values,
}

impl Column {
    pub fn new(name: impl Into<String>, values: Values) -> Self {
        Column {
            name: name.into(),
            values,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Format {
        path: String,
        source: parquet::errors::ParquetError,
    },
    #[error(
        "writing {path}: column `{column}` has {len} values (or another type), the first has {rows}"
    )]
    Ragged {
        path: String,
        column: String,
        len: usize,
        rows: usize,
    },
}

/// The present values and the definition levels (1 present, 0 null) of a column.
fn split<T: Clone>(v: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
    let present = v.iter().flatten().cloned().collect();
    let levels = v.iter().map(|x| x.is_some() as i16).collect();
    (present, levels)
}

/// A column's type, for a file's schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Float,
    Int,
    Text,
}

impl Values {
    fn kind(&self) -> Kind {
        match self {
            Values::Float(_) => Kind::Float,
            Values::Int(_) => Kind::Int,
            Values::Text(_) => Kind::Text,
        }
    }
}

/// A Parquet file written a row group at a time, so that a table of any length goes
/// out in bounded memory.
pub struct Writer {
    path: String,
    columns: Vec<(String, Kind)>,
    inner: SerializedFileWriter<File>,
}

impl Writer {
    /// Creates `path` for columns of these names and kinds (every value optional).
    pub fn create(path: &Path, columns: &[(&str, Kind)]) -> Result<Writer, ParquetError> {
        let shown = path.display().to_string();
        let format = |source| ParquetError::Format {
            path: shown.clone(),
            source,
        };
        let fields = columns
            .iter()
            .map(|&(name, kind)| {
                let (physical, logical) = match kind {
                    Kind::Float => (Physical::DOUBLE, None),
                    Kind::Int => (Physical::INT64, None),
                    Kind::Text => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
                };
                Type::primitive_type_builder(name, physical)
                    .with_repetition(Repetition::OPTIONAL)
                    .with_logical_type(logical)
                    .build()
                    .map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(format)?;
        let schema = Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .map_err(format)?;
        let file = File::create(path).map_err(|source| ParquetError::Io {
            path: shown.clone(),
            source,
        })?;
        let props = Arc::new(WriterProperties::builder().build());
        let inner = SerializedFileWriter::new(file, Arc::new(schema), props).map_err(format)?;
        Ok(Writer {
            path: shown.clone(),
            columns: columns.iter().map(|&(n, k)| (n.to_string(), k)).collect(),
            inner,
        })
    }

    /// Appends one row group: one value list per column, in the schema's order, all of
    /// one length.
    pub fn write_group(&mut self, values: &[Values]) -> Result<(), ParquetError> {
        let rows = values.first().map_or(0, Values::len);
        for ((name, kind), v) in self.columns.iter().zip(values) {
            if v.len() != rows || v.kind() != *kind {
                return Err(ParquetError::Ragged {
                    path: self.path.clone(),
                    column: name.clone(),
                    len: v.len(),
                    rows,
                });
            }
        }
        let format = |source| ParquetError::Format {
            path: self.path.clone(),
            source,
        };
        let mut group = self.inner.next_row_group().map_err(format)?;
        for v in values {
            let mut w = group
                .next_column()
                .map_err(format)?
                .expect("a writer per schema column");
            match v {
                Values::Float(v) => {
                    let (values, levels) = split(v);
                    w.typed::<DoubleType>()
                        .write_batch(&values, Some(&levels), None)
                        .map_err(format)?;
                }
                Values::Int(v) => {
                    let (values, levels) = split(v);
                    w.typed::<Int64Type>()
                        .write_batch(&values, Some(&levels), None)
                        .map_err(format)?;
                }
                Values::Text(v) => {
                    let (values, levels) = split(v);
                    let bytes: Vec<ByteArray> = values
                        .iter()
                        .map(|s| ByteArray::from(s.as_bytes()))
                        .collect();
                    w.typed::<ByteArrayType>()
                        .write_batch(&bytes, Some(&levels), None)
                        .map_err(format)?;
                }
            }
            w.close().map_err(format)?;
        }
        group.close().map_err(format)?;
        Ok(())
    }

    /// Writes the footer.
    pub fn close(self) -> Result<(), ParquetError> {
        let path = self.path;
        self.inner
            .close()
            .map(|_| ())
            .map_err(|source| ParquetError::Format { path, source })
    }
}

/// Writes `columns` (all of one length) to `path` as one row group.
pub fn write(path: &Path, columns: &[Column]) -> Result<(), ParquetError> {
    let kinds: Vec<(&str, Kind)> = columns
        .iter()
        .map(|c| (c.name.as_str(), c.values.kind()))
        .collect();
    let mut w = Writer::create(path, &kinds)?;
    let values: Vec<Values> = columns.iter().map(|c| c.values.clone()).collect();
    w.write_group(&values)?;
    w.close()
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    #[test]
    fn a_table_reads_back_with_its_names_types_and_nulls() {
        let path =
            std::env::temp_dir().join(format!("qsafe-parquet-{}.parquet", std::process::id()));
        let columns = [
            Column::new(
                "run_id",
                Values::Text(vec![Some("00000".into()), Some("00001".into())]),
            ),
            Column::new("seed", Values::Int(vec![Some(1), Some(2)])),
            Column::new(
                "link.*.params.loss.probability",
                Values::Text(vec![Some("0.05".into()), None]),
            ),
            Column::new(
                "handshake_p50_ms:mean_over_seeds",
                Values::Float(vec![Some(131.5), None]),
            ),
        ];
        write(&path, &columns).unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let rows: Vec<Vec<(String, Field)>> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| {
                r.unwrap()
                    .get_column_iter()
                    .map(|(n, f)| (n.clone(), f.clone()))
                    .collect()
            })
            .collect();
        assert_eq!(rows[0][0], ("run_id".into(), Field::Str("00000".into())));
        assert_eq!(rows[1][1], ("seed".into(), Field::Long(2)));
        assert_eq!(rows[0][2].0, "link.*.params.loss.probability");
        assert_eq!(rows[1][2].1, Field::Null);
        assert_eq!(
            rows[0][3],
            (
                "handshake_p50_ms:mean_over_seeds".into(),
                Field::Double(131.5)
            )
        );
        assert_eq!(rows[1][3].1, Field::Null);
        let ragged = [
            Column::new("a", Values::Int(vec![Some(1)])),
            Column::new("b", Values::Int(vec![])),
        ];
        assert!(matches!(
            write(&path, &ragged),
            Err(ParquetError::Ragged { .. })
        ));
        let _ = std::fs::remove_file(&path);
    }
}
