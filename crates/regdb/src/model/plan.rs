//! A register's decoding worked out once ([`DecodePlan`]), and running it
//! over a value into a [`FieldSink`].

/// Bit sets inside bit sets deeper than this are shown as numbers.
pub(super) const MAX_NESTING: usize = 7;

/// A register's decoding worked out for one direction and variant: see
/// [`Database::plan`](super::Database::plan).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodePlan {
    pub(super) width_mask: u64,
    pub(super) steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    Field {
        name: Box<str>,
        low: u8,
        mask: u64,
        show: Show,
    },
    /// The register as a whole.
    Whole(Show),
    /// The following steps, up to the matching `End`, decode `(value & mask) >> low`.
    Begin {
        name: Box<str>,
        low: u8,
        mask: u64,
    },
    End,
    /// These bits of the current value belong to no field.
    Unknown {
        bits: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Show {
    Bool,
    Hex {
        shr: u8,
        add: u64,
    },
    Uint {
        add: u64,
    },
    Int {
        bits: u8,
    },
    Float {
        bits: u8,
    },
    Fixed {
        radix: u8,
        signed: bool,
        bits: u8,
    },
    /// Names by value, sorted by value.
    Enum(Box<[(u64, Box<str>)]>),
}

impl Show {
    #[inline]
    fn value(&self, raw: u64) -> FieldValue<'_> {
        match self {
            Show::Bool => FieldValue::Bool(raw != 0),
            Show::Hex { shr, add } => FieldValue::Hex(raw.wrapping_add(*add) << shr),
            Show::Uint { add } => FieldValue::Uint(raw.wrapping_add(*add)),
            Show::Int { bits } => FieldValue::Int(sign_extend(raw, *bits)),
            Show::Float { bits: 32 } => FieldValue::Float(f64::from(f32::from_bits(raw as u32))),
            Show::Float { bits: 64 } => FieldValue::Float(f64::from_bits(raw)),
            Show::Float { .. } => FieldValue::Hex(raw),
            Show::Fixed {
                radix,
                signed,
                bits,
            } => {
                let whole = if *signed {
                    sign_extend(raw, *bits) as f64
                } else {
                    raw as f64
                };
                FieldValue::Float(whole / (*radix as f64).exp2())
            }
            Show::Enum(names) => match names.binary_search_by_key(&raw, |(v, _)| *v) {
                Ok(i) => FieldValue::Enum(&names[i].1),
                Err(_) => FieldValue::UnknownEnum(raw),
            },
        }
    }
}

impl DecodePlan {
    /// True when decoding adds nothing to the value (a register without
    /// fields or type).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Calls `sink` with each field of `value`.
    #[inline]
    pub fn run<S: FieldSink + ?Sized>(&self, value: u64, sink: &mut S) {
        self.run_part(value, self.width_mask, sink);
    }

    /// Like [`run`](Self::run) for an access that covers only the bits
    /// `seen` of the register (a 16-bit read of the upper half of a 32-bit
    /// register: `value` already shifted into place): the fields that lie
    /// wholly inside those bits.
    pub fn run_part<S: FieldSink + ?Sized>(&self, value: u64, seen: u64, sink: &mut S) {
        let seen = seen & self.width_mask;
        let mut stack = [0u64; MAX_NESTING + 2];
        let mut depth = 0;
        // Nesting depth of a bit set being skipped (partly outside `seen`), or 0.
        let mut skipping = 0usize;
        stack[0] = value & seen;
        for step in &self.steps {
            let current = stack[depth];
            if skipping > 0 {
                match step {
                    Step::Begin { .. } => skipping += 1,
                    Step::End => skipping -= 1,
                    _ => {}
                }
                continue;
            }
            match step {
                Step::Field { mask, .. } | Step::Begin { mask, .. }
                    if depth == 0 && mask & !seen != 0 =>
                {
                    if matches!(step, Step::Begin { .. }) {
                        skipping = 1;
                    }
                }
                Step::Field {
                    name,
                    low,
                    mask,
                    show,
                } => sink.field(name, show.value((current & mask) >> low)),
                Step::Whole(show) => {
                    if seen == self.width_mask {
                        sink.whole(show.value(current));
                    }
                }
                Step::Begin { name, low, mask } => {
                    sink.begin(name);
                    depth += 1;
                    stack[depth] = (current & mask) >> low;
                }
                Step::End => {
                    sink.end();
                    depth = depth.saturating_sub(1);
                }
                Step::Unknown { bits } => {
                    let bits = if depth == 0 { bits & seen } else { *bits };
                    if current & bits != 0 {
                        sink.unknown_bits(current & bits);
                    }
                }
            }
        }
    }
}

fn sign_extend(raw: u64, bits: u8) -> i64 {
    if bits == 0 || bits >= 64 {
        return raw as i64;
    }
    let shift = 64 - u32::from(bits);
    ((raw << shift) as i64) >> shift
}

/// One decoded field value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    Bool(bool),
    Enum(&'a str),
    /// A value the enumeration has no name for.
    UnknownEnum(u64),
    Hex(u64),
    Uint(u64),
    Int(i64),
    Float(f64),
}

/// Receives the decoded fields of a value, in database order.
pub trait FieldSink {
    fn field(&mut self, name: &str, value: FieldValue<'_>);
    /// The register as a whole has a type (an enumeration, a number).
    fn whole(&mut self, value: FieldValue<'_>);
    /// A field that is itself a set of fields; `end` closes it.
    fn begin(&mut self, name: &str);
    fn end(&mut self);
    /// Set bits that no field describes.
    fn unknown_bits(&mut self, bits: u64);
}
