//! The event model: one type per line kind of the kernel's mmiotrace log,
//! plus the fields and records mmiotrace adds (see docs/FORMAT.md).

/// Time since the start of tracing, kept in nanoseconds.
///
/// The kernel prints `%u.%06lu` (seconds and microseconds); the text writer
/// truncates to microseconds, the binary format keeps nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub nanos: u64,
}

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp { nanos: 0 };

    #[inline]
    pub fn from_nanos(nanos: u64) -> Self {
        Timestamp { nanos }
    }

    pub fn from_secs_micros(secs: u64, micros: u64) -> Self {
        Timestamp {
            nanos: secs
                .saturating_mul(1_000_000_000)
                .saturating_add(micros.saturating_mul(1000)),
        }
    }

    #[inline]
    pub fn secs(self) -> u64 {
        self.nanos / 1_000_000_000
    }

    #[inline]
    pub fn subsec_micros(self) -> u64 {
        (self.nanos % 1_000_000_000) / 1000
    }
}

/// Direction of a register access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Read,
    Write,
}

/// The value of one access, `width` bytes of it, little-endian as in memory.
///
/// Widths of 1, 2, 4 and 8 bytes are what the kernel can log; 16, 32 and 64
/// (SSE, AVX, AVX-512) are mmiotrace's wide-value extension.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Value {
    bytes: [u8; Value::MAX_WIDTH],
    width: u8,
}

impl Value {
    pub const MAX_WIDTH: usize = 64;

    /// A value of `width` bytes (1, 2, 4 or 8) from the low bytes of `v`.
    #[inline]
    pub fn from_u64(width: u8, v: u64) -> Option<Self> {
        // Masking the integer, not the bytes: the recorder makes one per
        // access, and a byte loop over the rest of the 64 showed up there.
        let masked = match width {
            1 => v & 0xff,
            2 => v & 0xffff,
            4 => v & 0xffff_ffff,
            8 => v,
            _ => return None,
        };
        let mut bytes = [0u8; Self::MAX_WIDTH];
        bytes[..8].copy_from_slice(&masked.to_le_bytes());
        Some(Value { bytes, width })
    }

    /// A value whose width is the length of `le_bytes` (1..=64 and a power of two).
    pub fn from_le_bytes(le_bytes: &[u8]) -> Option<Self> {
        let width = le_bytes.len();
        if !Self::is_valid_width(width) {
            return None;
        }
        let mut bytes = [0u8; Self::MAX_WIDTH];
        bytes[..width].copy_from_slice(le_bytes);
        Some(Value {
            bytes,
            width: width as u8,
        })
    }

    /// Widths a value may have: 1, 2, 4, 8, 16, 32, 64.
    pub fn is_valid_width(width: usize) -> bool {
        width.is_power_of_two() && width <= Self::MAX_WIDTH
    }

    /// A zero value of width 1.
    pub(crate) const ZERO: Value = Value {
        bytes: [0; Value::MAX_WIDTH],
        width: 1,
    };

    /// In place, what [`from_u64`](Self::from_u64) returns: the readers and
    /// the recorder fill a reused event, and building a value and copying
    /// its 65 bytes per access is measurable there. `v` must fit in
    /// `width` (1, 2, 4 or 8) bytes; returns false (and changes nothing)
    /// otherwise.
    #[inline]
    pub fn set_u64(&mut self, width: u8, v: u64) -> bool {
        if !matches!(width, 1 | 2 | 4 | 8) || (width < 8 && v >> (8 * u32::from(width)) != 0) {
            return false;
        }
        if self.width > 8 {
            // Bytes past the width are zero, so that equality and hashing hold.
            self.bytes[8..].fill(0);
        }
        self.bytes[..8].copy_from_slice(&v.to_le_bytes());
        self.width = width;
        true
    }

    /// In place, what [`from_le_bytes`](Self::from_le_bytes) returns;
    /// false (and nothing changed) for a length that is no width.
    #[inline]
    pub fn set_le_bytes(&mut self, le_bytes: &[u8]) -> bool {
        let width = le_bytes.len();
        if !Self::is_valid_width(width) {
            return false;
        }
        self.bytes[..width].copy_from_slice(le_bytes);
        self.bytes[width..].fill(0);
        self.width = width as u8;
        true
    }

    /// In place, a value of `width` (1, 2, 4 or 8) bytes from `v`, which
    /// the caller has masked to that width: [`set_u64`](Self::set_u64)
    /// without its checks, for the binary reader's fast path.
    #[inline(always)]
    pub(crate) fn set_masked_u64(&mut self, width: u8, v: u64) {
        debug_assert!(matches!(width, 1 | 2 | 4 | 8));
        debug_assert!(width == 8 || v >> (8 * u32::from(width)) == 0);
        if self.width > 8 {
            self.bytes[8..].fill(0);
        }
        self.bytes[..8].copy_from_slice(&v.to_le_bytes());
        self.width = width;
    }

    #[inline]
    pub fn width(&self) -> u8 {
        self.width
    }

    /// Little-endian bytes, exactly `width` of them.
    #[inline]
    pub fn as_le_bytes(&self) -> &[u8] {
        &self.bytes[..self.width as usize]
    }

    /// The low 8 bytes as an integer (the whole value for widths up to 8).
    #[inline]
    pub fn low_u64(&self) -> u64 {
        let mut low = [0u8; 8];
        low.copy_from_slice(&self.bytes[..8]);
        u64::from_le_bytes(low)
    }

    /// True for widths above 8 bytes, which the kernel format cannot express.
    #[inline]
    pub fn is_wide(&self) -> bool {
        self.width > 8
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Value({}:0x", self.width)?;
        for b in self.as_le_bytes().iter().rev() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Fields that mmiotrace adds to kernel records. All `None` for a record
/// read from a kernel log; such a record prints byte-identically to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ext {
    /// Global sequence number: gap-free across all threads of one recording.
    pub seq: Option<u64>,
    /// Process id of the thread that made the access (the kernel `pid` field
    /// carries the thread id in mmiotrace's traces).
    pub process: Option<u32>,
    /// A hook of `mmiotrace record --hook` changed or marked this access
    /// (accesses only; docs/HOOKS.md).
    pub hook: Option<Hooked>,
}

impl Ext {
    pub fn is_empty(&self) -> bool {
        self.seq.is_none() && self.process.is_none() && self.hook.is_none()
    }
}

/// What a hook did to an access: the text format's `hook=RULE dev=VALUE`.
/// The access's own value is what the program saw (a read) or wrote (a
/// write); `device` is what the device gave or got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hooked {
    /// The rule's number, from 1 in the rule file's order; 0 for the
    /// plugin of `--hook-lib` or `--model`.
    pub rule: u32,
    /// The value the device gave (a read) or got (a write), at the
    /// access's width; `None` when the device was not accessed (a dropped
    /// write, a read the hook answered, a removed device, a model).
    pub device: Option<u64>,
}

/// `VERSION 20070824`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    pub version: String,
}

/// Number of base address registers a `PCIDEV` line carries.
pub const PCI_BARS: usize = 7;

/// `PCIDEV %02x%02x %04x%04x %x` + 7 BAR starts (with flag bits) + 7 sizes + driver.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PciDev {
    pub bus: u8,
    /// `devfn`: device number << 3 | function.
    pub devfn: u8,
    pub vendor: u16,
    pub device: u16,
    pub irq: u32,
    /// BAR start address, or-ed with the resource flag bits, as the kernel prints it.
    pub bar_start: [u64; PCI_BARS],
    pub bar_size: [u64; PCI_BARS],
    /// Driver name; empty when no driver is bound (the kernel then leaves a trailing space).
    pub driver: String,
}

/// `MAP time id phys virt len pc pid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Map {
    pub time: Timestamp,
    pub map_id: u32,
    pub phys: u64,
    pub virt: u64,
    pub len: u64,
    pub pc: u64,
    pub pid: u32,
    pub ext: Ext,
    /// The mapped file's path (mmiotrace extension; `None` in kernel logs).
    pub path: Option<String>,
}

/// `UNMAP time id pc pid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unmap {
    pub time: Timestamp,
    pub map_id: u32,
    pub pc: u64,
    pub pid: u32,
    pub ext: Ext,
}

/// `R|W width time id phys value pc pid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    pub dir: Direction,
    pub time: Timestamp,
    pub map_id: u32,
    pub phys: u64,
    /// The value; its width is the access width.
    pub value: Value,
    pub pc: u64,
    pub pid: u32,
    pub ext: Ext,
}

impl Access {
    pub fn width(&self) -> u8 {
        self.value.width()
    }

    /// A placeholder the readers overwrite field by field.
    pub(crate) const EMPTY: Access = Access {
        dir: Direction::Read,
        time: Timestamp::ZERO,
        map_id: 0,
        phys: 0,
        value: Value::ZERO,
        pc: 0,
        pid: 0,
        ext: Ext {
            seq: None,
            process: None,
            hook: None,
        },
    };
}

/// `UNKNOWN time id phys b0,b1,b2 pc pid`: an access whose value is not known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unknown {
    pub time: Timestamp,
    pub map_id: u32,
    pub phys: u64,
    /// The first three opcode bytes, as the kernel prints them.
    pub opcode: [u8; 3],
    pub pc: u64,
    pub pid: u32,
    pub ext: Ext,
}

/// `MARK time text`: a user marker (the kernel's `trace_marker`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mark {
    pub time: Timestamp,
    pub text: String,
    pub ext: Ext,
}

/// Events lost by the tracer. The kernel writes `MARK 0.000000 Lost N events.`;
/// mmiotrace writes that same line, so kernel tools see it too, and reads it back as this.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lost {
    pub count: u64,
    pub ext: Ext,
}

/// `REPEAT R|W width time id phys value pc pid count=N len=K end=TIME`:
/// mmiotrace's summary of a polling loop (written by `mmiotrace collapse`).
///
/// Thread `pid` repeated the `len` accesses it made just before this record
/// (counting the accesses that earlier `REPEAT` records stand for) another
/// `count` times, identically: same map, address, direction, width, value
/// and pc. Only those repetitions' individual times and sequence numbers
/// are not kept: `time` and `end` are the times of the first and the last
/// repeated access, `ext.seq` the sequence number of the first.
///
/// `dir`, `map_id`, `phys`, `value` and `pc` describe the *polled* access:
/// the last read of the repeated accesses (the last access if none is a
/// read). `until` is the value that access returned when the loop ended,
/// if it ended because that value changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repeat {
    pub dir: Direction,
    /// Time of the first repeated access.
    pub time: Timestamp,
    /// Time of the last repeated access.
    pub end: Timestamp,
    pub map_id: u32,
    pub phys: u64,
    pub value: Value,
    pub pc: u64,
    pub pid: u32,
    /// Repetitions folded into this record (not counting the first, kept, one).
    pub count: u64,
    /// Accesses per repetition (at least 1).
    pub len: u32,
    /// The polled access's value when the loop ended, if that is why it ended.
    pub until: Option<Value>,
    pub ext: Ext,
}

impl Repeat {
    /// Accesses this record stands for: `count × len`.
    pub fn accesses(&self) -> u64 {
        self.count.saturating_mul(u64::from(self.len))
    }
}

/// One record of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    Version(Version),
    PciDev(PciDev),
    Map(Map),
    Unmap(Unmap),
    Access(Access),
    Unknown(Unknown),
    Mark(Mark),
    Lost(Lost),
    /// mmiotrace's extension: a folded polling loop. Boxed: it is rare, and
    /// twice the size of an access, which every reader copies per event.
    Repeat(Box<Repeat>),
}

impl Event {
    /// Short name of the kind, as used by `stats`: `VERSION`, `PCIDEV`, `MAP`,
    /// `UNMAP`, `R`, `W`, `UNKNOWN`, `MARK`, `LOST`, `REPEAT`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Event::Version(_) => "VERSION",
            Event::PciDev(_) => "PCIDEV",
            Event::Map(_) => "MAP",
            Event::Unmap(_) => "UNMAP",
            Event::Access(a) => match a.dir {
                Direction::Read => "R",
                Direction::Write => "W",
            },
            Event::Unknown(_) => "UNKNOWN",
            Event::Mark(_) => "MARK",
            Event::Lost(_) => "LOST",
            Event::Repeat(_) => "REPEAT",
        }
    }

    /// The event's time; `None` for `VERSION`, `PCIDEV` and `LOST`, which have none.
    /// For a `REPEAT`, the time of its first repeated access.
    pub fn time(&self) -> Option<Timestamp> {
        match self {
            Event::Map(m) => Some(m.time),
            Event::Unmap(u) => Some(u.time),
            Event::Access(a) => Some(a.time),
            Event::Unknown(u) => Some(u.time),
            Event::Mark(m) => Some(m.time),
            Event::Repeat(r) => Some(r.time),
            Event::Version(_) | Event::PciDev(_) | Event::Lost(_) => None,
        }
    }

    /// The extension fields; `None` for `VERSION` and `PCIDEV`.
    pub fn ext(&self) -> Option<&Ext> {
        match self {
            Event::Map(m) => Some(&m.ext),
            Event::Unmap(u) => Some(&u.ext),
            Event::Access(a) => Some(&a.ext),
            Event::Unknown(u) => Some(&u.ext),
            Event::Mark(m) => Some(&m.ext),
            Event::Lost(l) => Some(&l.ext),
            Event::Repeat(r) => Some(&r.ext),
            Event::Version(_) | Event::PciDev(_) => None,
        }
    }

    /// [`Event::ext`], to change.
    pub fn ext_mut(&mut self) -> Option<&mut Ext> {
        match self {
            Event::Map(m) => Some(&mut m.ext),
            Event::Unmap(u) => Some(&mut u.ext),
            Event::Access(a) => Some(&mut a.ext),
            Event::Unknown(u) => Some(&mut u.ext),
            Event::Mark(m) => Some(&mut m.ext),
            Event::Lost(l) => Some(&mut l.ext),
            Event::Repeat(r) => Some(&mut r.ext),
            Event::Version(_) | Event::PciDev(_) => None,
        }
    }

    /// The thread id (the kernel's `pid` field), for the kinds that have one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Event::Map(m) => Some(m.pid),
            Event::Unmap(u) => Some(u.pid),
            Event::Access(a) => Some(a.pid),
            Event::Unknown(u) => Some(u.pid),
            Event::Repeat(r) => Some(r.pid),
            Event::Version(_) | Event::PciDev(_) | Event::Mark(_) | Event::Lost(_) => None,
        }
    }
}
