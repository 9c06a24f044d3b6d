//! The tidy table of a sweep: one row per point and scheme (or policy), written as CSV and as
//! Parquet with the same values.
//!
//! Cells arrive as text (the commands' CSV printers) and each column gets one type from all its
//! cells: integer when every non-empty cell parses as an `i64`, float when every one parses as an
//! `f64`, text otherwise; an empty cell is a null. The CSV prints integers and floats from those
//! parsed values (floats in Rust's shortest round-trip form), so reading either file gives the
//! same numbers.

use crate::SweepError;
use parquet::basic::{Compression, ConvertedType, Repetition, Type as PhysicalType};
use parquet::data_type::ByteArray;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use std::sync::Arc;

/// A column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 64-bit signed integers.
    Int,
    /// 64-bit floats.
    Float,
    /// UTF-8 text.
    Text,
}

/// A table of text cells whose columns are typed on output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tidy {
    /// Column names.
    pub header: Vec<String>,
    /// Rows, each as long as the header.
    pub rows: Vec<Vec<String>>,
}

impl Tidy {
    /// The type of column `c` (see the module docs).
    pub fn kind(&self, c: usize) -> Kind {
        let cells = || {
            self.rows
                .iter()
                .map(|r| r[c].as_str())
                .filter(|s| !s.is_empty())
        };
        if cells().all(|s| s.parse::<i64>().is_ok()) {
            Kind::Int
        } else if cells().all(|s| s.parse::<f64>().is_ok()) {
            Kind::Float
        } else {
            Kind::Text
        }
    }

    /// The CSV document: header line, then one line per row.
    pub fn to_csv(&self) -> Result<Vec<u8>, SweepError> {
        let kinds: Vec<Kind> = (0..self.header.len()).map(|c| self.kind(c)).collect();
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.header)?;
        for r in &self.rows {
            let cells = r.iter().zip(&kinds).map(|(s, k)| match k {
                _ if s.is_empty() => String::new(),
                Kind::Int => s.parse::<i64>().map(|v| v.to_string()).unwrap_or_default(),
                Kind::Float => s.parse::<f64>().map(|v| v.to_string()).unwrap_or_default(),
                Kind::Text => s.clone(),
            });
            w.write_record(cells)?;
        }
        w.into_inner()
            .map_err(|e| SweepError::Csv(e.into_error().into()))
    }

    /// The Parquet file: one row group, uncompressed, every column optional (empty cells are
    /// nulls); integers INT64, floats DOUBLE, text BYTE_ARRAY (UTF8).
    pub fn to_parquet(&self) -> Result<Vec<u8>, SweepError> {
        let kinds: Vec<Kind> = (0..self.header.len()).map(|c| self.kind(c)).collect();
        let fields = self
            .header
            .iter()
            .zip(&kinds)
            .map(|(name, k)| {
                let b = match k {
                    Kind::Int => Type::primitive_type_builder(name, PhysicalType::INT64),
                    Kind::Float => Type::primitive_type_builder(name, PhysicalType::DOUBLE),
                    Kind::Text => Type::primitive_type_builder(name, PhysicalType::BYTE_ARRAY)
                        .with_converted_type(ConvertedType::UTF8),
                };
                Ok(Arc::new(b.with_repetition(Repetition::OPTIONAL).build()?))
            })
            .collect::<Result<Vec<_>, SweepError>>()?;
        let schema = Arc::new(
            Type::group_type_builder("sweep")
                .with_fields(fields)
                .build()?,
        );
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::UNCOMPRESSED)
                .set_created_by(format!("compromis {}", crate::provenance::VERSION))
                .build(),
        );
        let mut out = Vec::new();
        let mut writer = SerializedFileWriter::new(&mut out, schema, props)?;
        let mut rg = writer.next_row_group()?;
        let mut c = 0;
        while let Some(mut col) = rg.next_column()? {
            let cells: Vec<&str> = self.rows.iter().map(|r| r[c].as_str()).collect();
            let defs: Vec<i16> = cells.iter().map(|s| i16::from(!s.is_empty())).collect();
            let present = cells.iter().filter(|s| !s.is_empty());
            use parquet::column::writer::ColumnWriter as W;
            match col.untyped() {
                W::Int64ColumnWriter(w) => {
                    let v: Vec<i64> = present.map(|s| s.parse().unwrap_or_default()).collect();
                    w.write_batch(&v, Some(&defs), None)?;
                }
                W::DoubleColumnWriter(w) => {
                    let v: Vec<f64> = present.map(|s| s.parse().unwrap_or_default()).collect();
                    w.write_batch(&v, Some(&defs), None)?;
                }
                W::ByteArrayColumnWriter(w) => {
                    let v: Vec<ByteArray> = present.map(|s| ByteArray::from(*s)).collect();
                    w.write_batch(&v, Some(&defs), None)?;
                }
                _ => unreachable!("only INT64, DOUBLE and BYTE_ARRAY columns are declared"),
            }
            col.close()?;
            c += 1;
        }
        rg.close()?;
        writer.close()?;
        Ok(out)
    }
}

/// Reads a Parquet file written by [`Tidy::to_parquet`] back as text cells (integers and floats
/// printed as the CSV prints them; nulls empty). Used by tests and `compromis sweep merge` checks.
pub fn read_parquet(bytes: Vec<u8>) -> Result<Tidy, SweepError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))?;
    let header = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let mut rows = Vec::new();
    for row in reader.get_row_iter(None)? {
        let row = row?;
        rows.push(
            row.get_column_iter()
                .map(|(_, f)| match f {
                    Field::Null => String::new(),
                    Field::Long(v) => v.to_string(),
                    Field::Double(v) => v.to_string(),
                    Field::Str(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        );
    }
    Ok(Tidy { header, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tidy {
        Tidy {
            header: vec![
                "point".into(),
                "scheme".into(),
                "overhead".into(),
                "gap".into(),
            ],
            rows: vec![
                vec!["0".into(), "ept".into(), "0.250000".into(), "".into()],
                vec!["1".into(), "a,b".into(), "3".into(), "7".into()],
            ],
        }
    }

    #[test]
    fn columns_are_typed() {
        let t = sample();
        assert_eq!(t.kind(0), Kind::Int);
        assert_eq!(t.kind(1), Kind::Text);
        assert_eq!(t.kind(2), Kind::Float);
        assert_eq!(t.kind(3), Kind::Int);
        let csv = String::from_utf8(t.to_csv().unwrap()).unwrap();
        assert_eq!(
            csv,
            "point,scheme,overhead,gap\n0,ept,0.25,\n1,\"a,b\",3,7\n"
        );
    }

    #[test]
    fn parquet_reads_back_as_the_csv() {
        let t = sample();
        let back = read_parquet(t.to_parquet().unwrap()).unwrap();
        let bytes = t.to_csv().unwrap();
        let mut r = csv::Reader::from_reader(&bytes[..]);
        let csv_rows: Vec<Vec<String>> = r
            .records()
            .map(|x| x.unwrap().iter().map(str::to_owned).collect())
            .collect();
        assert_eq!(back.header, t.header);
        assert_eq!(back.rows, csv_rows);
        // Deterministic bytes.
        assert_eq!(t.to_parquet().unwrap(), t.to_parquet().unwrap());
    }
}
