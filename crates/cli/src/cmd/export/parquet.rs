//! Apache Parquet through the parquet crate's column writer (no Arrow, no
//! compression codecs: a small build), one row group of up to
//! [`ROW_GROUP`] rows buffered at a time.

use std::fs::File;
use std::sync::Arc;

use anyhow::Context as _;
use mmiotrace_trace::Event;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::Exporter;
use super::table::{Row, hex, narrow};

/// Rows per row group: what is held in memory at once.
pub const ROW_GROUP: usize = 65_536;

/// The schema, in the order of [`super::table::COLUMNS`]. Unsigned
/// integers are stored in signed physical types with an unsigned
/// annotation, which readers honour.
const SCHEMA: &str = "
message mmiotrace_event {
    required binary kind (UTF8);
    optional int64 time_ns (INTEGER(64,false));
    optional int64 end_ns (INTEGER(64,false));
    optional int64 seq (INTEGER(64,false));
    optional int32 process (INTEGER(32,false));
    optional int32 pid (INTEGER(32,false));
    optional int32 map_id (INTEGER(32,false));
    optional int64 phys (INTEGER(64,false));
    optional binary reg (UTF8);
    optional int32 width (INTEGER(8,false));
    optional int64 value (INTEGER(64,false));
    optional binary value_hex (UTF8);
    optional int64 pc (INTEGER(64,false));
    optional int64 count (INTEGER(64,false));
    optional int32 len (INTEGER(32,false));
    optional int64 size (INTEGER(64,false));
    optional binary until (UTF8);
    optional binary text (UTF8);
}";

/// One column's values of the row group being built: the non-null values
/// and a definition level per row (1 present, 0 null).
#[derive(Debug, Default)]
struct Column<T> {
    values: Vec<T>,
    levels: Vec<i16>,
}

impl<T> Column<T> {
    fn push(&mut self, value: Option<T>) {
        match value {
            Some(v) => {
                self.values.push(v);
                self.levels.push(1);
            }
            None => self.levels.push(0),
        }
    }

    fn clear(&mut self) {
        self.values.clear();
        self.levels.clear();
    }
}

#[derive(Debug, Default)]
struct RowGroup {
    kind: Column<ByteArray>,
    time_ns: Column<i64>,
    end_ns: Column<i64>,
    seq: Column<i64>,
    process: Column<i32>,
    pid: Column<i32>,
    map_id: Column<i32>,
    phys: Column<i64>,
    reg: Column<ByteArray>,
    width: Column<i32>,
    value: Column<i64>,
    value_hex: Column<ByteArray>,
    pc: Column<i64>,
    count: Column<i64>,
    len: Column<i32>,
    size: Column<i64>,
    until: Column<ByteArray>,
    text: Column<ByteArray>,
    rows: usize,
}

// The unsigned values keep their bits in the signed physical types.
fn u64_bits(v: Option<u64>) -> Option<i64> {
    v.map(|v| v as i64)
}

fn u32_bits(v: Option<u32>) -> Option<i32> {
    v.map(|v| v as i32)
}

fn bytes(s: Option<&str>) -> Option<ByteArray> {
    s.map(|s| ByteArray::from(s.as_bytes().to_vec()))
}

impl RowGroup {
    fn push(&mut self, row: &Row<'_>) {
        self.kind.push(bytes(Some(row.kind)));
        self.time_ns.push(u64_bits(row.time_ns));
        self.end_ns.push(u64_bits(row.end_ns));
        self.seq.push(u64_bits(row.seq));
        self.process.push(u32_bits(row.process));
        self.pid.push(u32_bits(row.pid));
        self.map_id.push(u32_bits(row.map_id));
        self.phys.push(u64_bits(row.phys));
        self.reg.push(bytes(row.reg));
        self.width.push(row.width.map(i32::from));
        self.value
            .push(u64_bits(row.value.as_ref().and_then(narrow)));
        self.value_hex
            .push(bytes(row.value.as_ref().map(hex).as_deref()));
        self.pc.push(u64_bits(row.pc));
        self.count.push(u64_bits(row.count));
        self.len.push(u32_bits(row.len));
        self.size.push(u64_bits(row.size));
        self.until
            .push(bytes(row.until.as_ref().map(hex).as_deref()));
        self.text.push(bytes(row.text.as_deref()));
        self.rows += 1;
    }
}

pub struct ParquetExporter {
    writer: SerializedFileWriter<File>,
    group: RowGroup,
    name: String,
}

impl ParquetExporter {
    /// Writes to `file`, named `name` in messages.
    pub fn new(file: File, name: String) -> anyhow::Result<ParquetExporter> {
        let schema = Arc::new(parse_message_type(SCHEMA).expect("the schema above is valid"));
        let properties = Arc::new(WriterProperties::builder().build());
        let writer = SerializedFileWriter::new(file, schema, properties)
            .with_context(|| format!("cannot write to {name}"))?;
        Ok(ParquetExporter {
            writer,
            group: RowGroup::default(),
            name,
        })
    }

    /// Writes the buffered rows as one row group.
    fn write_group(&mut self) -> parquet::errors::Result<()> {
        if self.group.rows == 0 {
            return Ok(());
        }
        let g = &mut self.group;
        let mut row_group = self.writer.next_row_group()?;
        macro_rules! column {
            ($field:ident, $type:ty) => {{
                let mut column = row_group
                    .next_column()?
                    .expect("the schema has this column");
                column.typed::<$type>().write_batch(
                    &g.$field.values,
                    Some(&g.$field.levels),
                    None,
                )?;
                column.close()?;
                g.$field.clear();
            }};
        }
        // In schema order.
        column!(kind, ByteArrayType);
        column!(time_ns, Int64Type);
        column!(end_ns, Int64Type);
        column!(seq, Int64Type);
        column!(process, Int32Type);
        column!(pid, Int32Type);
        column!(map_id, Int32Type);
        column!(phys, Int64Type);
        column!(reg, ByteArrayType);
        column!(width, Int32Type);
        column!(value, Int64Type);
        column!(value_hex, ByteArrayType);
        column!(pc, Int64Type);
        column!(count, Int64Type);
        column!(len, Int32Type);
        column!(size, Int64Type);
        column!(until, ByteArrayType);
        column!(text, ByteArrayType);
        row_group.close()?;
        g.rows = 0;
        Ok(())
    }
}

impl Exporter for ParquetExporter {
    fn event(&mut self, event: &Event, reg: Option<&str>) -> anyhow::Result<()> {
        self.group.push(&Row::of(event, reg));
        if self.group.rows >= ROW_GROUP {
            self.write_group()
                .with_context(|| format!("cannot write to {}", self.name))?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.write_group()
            .with_context(|| format!("cannot write to {}", self.name))?;
        self.writer
            .close()
            .with_context(|| format!("cannot write to {}", self.name))?;
        Ok(())
    }
}
