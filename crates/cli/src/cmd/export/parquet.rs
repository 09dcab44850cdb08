//! Apache Parquet through the parquet crate's column writer (no Arrow),
//! zstd-compressed, in two files: the accesses, whose columns are all
//! required (no nulls, so pandas keeps `uint64` values as integers), and
//! every other event, in the wide table of [`super::table::COLUMNS`]. Each
//! buffers one row group of up to [`ROW_GROUP`] rows at a time.

use std::fs::File;
use std::sync::Arc;

use anyhow::Context as _;
use mmiotrace_trace::{Access, Direction, Event};
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::Exporter;
use super::table::{Row, hex, narrow};

/// Rows per row group: what is held in memory at once, per file.
pub const ROW_GROUP: usize = 65_536;

/// zstd's level: 3, its own default, compresses the benchmark trace to a
/// ninth of the uncompressed file; higher levels gain little and cost time.
const ZSTD_LEVEL: i32 = 3;

/// The accesses (R and W). Unsigned integers are stored in signed physical
/// types with an unsigned annotation, which readers honour.
const ACCESS_SCHEMA: &str = "
message mmiotrace_access {
    required int64 time_ns (INTEGER(64,false));
    required int64 seq (INTEGER(64,false));
    required int32 process (INTEGER(32,false));
    required int32 pid (INTEGER(32,false));
    required int32 map_id (INTEGER(32,false));
    required int64 phys (INTEGER(64,false));
    required binary dir (UTF8);
    required int32 width (INTEGER(8,false));
    required int64 value (INTEGER(64,false));
    required binary value_hex (UTF8);
    required int64 pc (INTEGER(64,false));
    optional binary reg (UTF8);
}";

/// Every other event, in the order of [`super::table::COLUMNS`].
const EVENT_SCHEMA: &str = "
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

/// What the files say about where they come from, as key-value metadata.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The trace read, as named on the command line.
    pub source: String,
    /// "text" or "binary".
    pub source_format: &'static str,
}

/// The `time_base` metadata: what `time_ns` and `end_ns` count.
const TIME_BASE: &str = "nanoseconds of the trace's own clock, as its timestamps give them: \
     since `mmiotrace record` started (CLOCK_MONOTONIC) for mmiotrace's traces, \
     the kernel's trace clock for the kernel's mmiotrace logs; \
     text traces carry microseconds (the last 3 digits are 0)";

fn properties(table: &str, provenance: &Provenance) -> Arc<WriterProperties> {
    let metadata = [
        ("mmiotrace.table", table),
        ("mmiotrace.source", &provenance.source),
        ("mmiotrace.source_format", provenance.source_format),
        ("mmiotrace.version", crate::VERSION),
        ("mmiotrace.time_base", TIME_BASE),
    ]
    .into_iter()
    .map(|(key, value)| KeyValue::new(key.to_string(), value.to_string()))
    .collect();
    let zstd = ZstdLevel::try_new(ZSTD_LEVEL).expect("3 is a zstd level");
    Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(zstd))
            .set_key_value_metadata(Some(metadata))
            .build(),
    )
}

/// One nullable column's values of the row group being built: the non-null
/// values and a definition level per row (1 present, 0 null).
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
struct AccessGroup {
    time_ns: Vec<i64>,
    seq: Vec<i64>,
    process: Vec<i32>,
    pid: Vec<i32>,
    map_id: Vec<i32>,
    phys: Vec<i64>,
    dir: Vec<ByteArray>,
    width: Vec<i32>,
    value: Vec<i64>,
    value_hex: Vec<ByteArray>,
    pc: Vec<i64>,
    reg: Column<ByteArray>,
    rows: usize,
}

#[derive(Debug, Default)]
struct EventGroup {
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

fn byte_array(s: &str) -> ByteArray {
    ByteArray::from(s.as_bytes().to_vec())
}

impl AccessGroup {
    /// `index`: the event's position in the trace, the seq of traces that
    /// have none (the kernel's).
    fn push(&mut self, a: &Access, reg: Option<&str>, index: u64) {
        self.time_ns.push(a.time.nanos as i64);
        self.seq.push(a.ext.seq.unwrap_or(index) as i64);
        self.process.push(a.ext.process.unwrap_or(a.pid) as i32);
        self.pid.push(a.pid as i32);
        self.map_id.push(a.map_id as i32);
        self.phys.push(a.phys as i64);
        self.dir.push(byte_array(match a.dir {
            Direction::Read => "R",
            Direction::Write => "W",
        }));
        self.width.push(i32::from(a.width()));
        self.value.push(a.value.low_u64() as i64);
        self.value_hex.push(byte_array(&hex(&a.value)));
        self.pc.push(a.pc as i64);
        self.reg.push(bytes(reg));
        self.rows += 1;
    }
}

impl EventGroup {
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

/// One output file: its writer, its name for messages.
struct Table {
    writer: SerializedFileWriter<File>,
    name: String,
}

impl Table {
    fn new(
        file: File,
        name: String,
        schema: &str,
        table: &str,
        provenance: &Provenance,
    ) -> anyhow::Result<Table> {
        let schema = Arc::new(parse_message_type(schema).expect("the schemas above are valid"));
        let writer = SerializedFileWriter::new(file, schema, properties(table, provenance))
            .with_context(|| format!("cannot write to {name}"))?;
        Ok(Table { writer, name })
    }
}

/// Writes one buffered column; `$levels` is `Some` for nullable columns.
macro_rules! column {
    ($row_group:ident, $type:ty, $values:expr, $levels:expr) => {{
        let mut column = $row_group
            .next_column()?
            .expect("the schema has this column");
        column
            .typed::<$type>()
            .write_batch($values, $levels, None)?;
        column.close()?;
    }};
}

impl AccessGroup {
    fn write(&mut self, table: &mut Table) -> parquet::errors::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut rg = table.writer.next_row_group()?;
        // In schema order.
        column!(rg, Int64Type, &self.time_ns, None);
        column!(rg, Int64Type, &self.seq, None);
        column!(rg, Int32Type, &self.process, None);
        column!(rg, Int32Type, &self.pid, None);
        column!(rg, Int32Type, &self.map_id, None);
        column!(rg, Int64Type, &self.phys, None);
        column!(rg, ByteArrayType, &self.dir, None);
        column!(rg, Int32Type, &self.width, None);
        column!(rg, Int64Type, &self.value, None);
        column!(rg, ByteArrayType, &self.value_hex, None);
        column!(rg, Int64Type, &self.pc, None);
        column!(rg, ByteArrayType, &self.reg.values, Some(&self.reg.levels));
        rg.close()?;
        self.time_ns.clear();
        self.seq.clear();
        self.process.clear();
        self.pid.clear();
        self.map_id.clear();
        self.phys.clear();
        self.dir.clear();
        self.width.clear();
        self.value.clear();
        self.value_hex.clear();
        self.pc.clear();
        self.reg.clear();
        self.rows = 0;
        Ok(())
    }
}

impl EventGroup {
    fn write(&mut self, table: &mut Table) -> parquet::errors::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut rg = table.writer.next_row_group()?;
        macro_rules! nullable {
            ($field:ident, $type:ty) => {{
                column!(rg, $type, &self.$field.values, Some(&self.$field.levels));
                self.$field.clear();
            }};
        }
        // In schema order.
        nullable!(kind, ByteArrayType);
        nullable!(time_ns, Int64Type);
        nullable!(end_ns, Int64Type);
        nullable!(seq, Int64Type);
        nullable!(process, Int32Type);
        nullable!(pid, Int32Type);
        nullable!(map_id, Int32Type);
        nullable!(phys, Int64Type);
        nullable!(reg, ByteArrayType);
        nullable!(width, Int32Type);
        nullable!(value, Int64Type);
        nullable!(value_hex, ByteArrayType);
        nullable!(pc, Int64Type);
        nullable!(count, Int64Type);
        nullable!(len, Int32Type);
        nullable!(size, Int64Type);
        nullable!(until, ByteArrayType);
        nullable!(text, ByteArrayType);
        rg.close()?;
        self.rows = 0;
        Ok(())
    }
}

pub struct ParquetExporter {
    accesses: Table,
    access_rows: AccessGroup,
    events: Table,
    event_rows: EventGroup,
    /// Events read so far.
    index: u64,
}

impl ParquetExporter {
    /// Writes the accesses to `accesses` and the other events to `events`,
    /// each with its name for messages.
    pub fn new(
        accesses: (File, String),
        events: (File, String),
        provenance: &Provenance,
    ) -> anyhow::Result<ParquetExporter> {
        Ok(ParquetExporter {
            accesses: Table::new(
                accesses.0,
                accesses.1,
                ACCESS_SCHEMA,
                "accesses",
                provenance,
            )?,
            access_rows: AccessGroup::default(),
            events: Table::new(events.0, events.1, EVENT_SCHEMA, "events", provenance)?,
            event_rows: EventGroup::default(),
            index: 0,
        })
    }
}

impl Exporter for ParquetExporter {
    fn event(&mut self, event: &Event, reg: Option<&str>) -> anyhow::Result<()> {
        if let Event::Access(a) = event {
            self.access_rows.push(a, reg, self.index);
            if self.access_rows.rows >= ROW_GROUP {
                self.access_rows
                    .write(&mut self.accesses)
                    .with_context(|| format!("cannot write to {}", self.accesses.name))?;
            }
        } else {
            self.event_rows.push(&Row::of(event, reg));
            if self.event_rows.rows >= ROW_GROUP {
                self.event_rows
                    .write(&mut self.events)
                    .with_context(|| format!("cannot write to {}", self.events.name))?;
            }
        }
        self.index += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let ParquetExporter {
            mut accesses,
            mut access_rows,
            mut events,
            mut event_rows,
            ..
        } = *self;
        access_rows
            .write(&mut accesses)
            .with_context(|| format!("cannot write to {}", accesses.name))?;
        event_rows
            .write(&mut events)
            .with_context(|| format!("cannot write to {}", events.name))?;
        for table in [accesses, events] {
            table
                .writer
                .close()
                .with_context(|| format!("cannot write to {}", table.name))?;
        }
        Ok(())
    }
}
