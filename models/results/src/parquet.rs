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
    #[error("writing {path}: column `{column}` has {len} values, the first has {rows}")]
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

/// Writes `columns` (all of one length) to `path`.
pub fn write(path: &Path, columns: &[Column]) -> Result<(), ParquetError> {
    let shown = || path.display().to_string();
    let format = |source| ParquetError::Format {
        path: shown(),
        source,
    };
    let rows = columns.first().map_or(0, |c| c.values.len());
    if let Some(c) = columns.iter().find(|c| c.values.len() != rows) {
        return Err(ParquetError::Ragged {
            path: shown(),
            column: c.name.clone(),
            len: c.values.len(),
            rows,
        });
    }
    let fields = columns
        .iter()
        .map(|c| {
            let (physical, logical) = match c.values {
                Values::Float(_) => (Physical::DOUBLE, None),
                Values::Int(_) => (Physical::INT64, None),
                Values::Text(_) => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
            };
            Type::primitive_type_builder(&c.name, physical)
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
        path: shown(),
        source,
    })?;
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema), props).map_err(format)?;
    let mut group = writer.next_row_group().map_err(format)?;
    for c in columns {
        let mut w = group
            .next_column()
            .map_err(format)?
            .expect("a writer per schema column");
        match &c.values {
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
    writer.close().map_err(format)?;
    Ok(())
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
