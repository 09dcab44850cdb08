//! One parser per record type (R/W, REPEAT, MAP, UNMAP, UNKNOWN, MARK,
//! PCIDEV, VERSION), each reading its fields in order, and the escapes of
//! MARK texts and MAP paths.

use super::fields::Cursor;
use super::{LineError, LineResult};
use crate::event::*;
use crate::num::hex_digit_value;
use crate::text_writer::parse_lost_text;

impl Cursor<'_> {
    /// `R|W width time id 0xphys 0xvalue 0xpc pid [ext]`, or the VR/VW form,
    /// into `a` field by field.
    #[inline]
    pub(super) fn access(&mut self, dir: Direction, wide: bool, a: &mut Access) -> LineResult<()> {
        self.space_before("width")?;
        let width_at = self.i;
        let width = self.dec_u64("width")?;
        let width = match (wide, width) {
            (false, 1 | 2 | 4 | 8) | (true, 16 | 32 | 64) => width as u8,
            (false, _) => {
                return Err(self.err_at(
                    width_at,
                    "the width must be 1, 2, 4 or 8 (wider accesses use VR/VW lines)",
                ));
            }
            (true, _) => {
                return Err(self.err_at(width_at, "the width of a VR/VW line must be 16, 32 or 64"));
            }
        };
        a.dir = dir;
        a.time = self.field_time()?;
        a.map_id = self.field_dec_u32("map id")?;
        a.phys = self.field_0x("physical address")?;
        if wide {
            a.value = self.field_wide_value(width)?;
        } else {
            let value_at = self.i + 1;
            let raw = self.field_0x("value")?;
            if !a.value.set_u64(width, raw) {
                return Err(
                    self.err_at(value_at, format!("the value does not fit in {width} bytes"))
                );
            }
        }
        a.pc = self.field_0x("pc")?;
        a.pid = self.field_dec_u32("pid")?;
        (a.ext, _) = self.ext_tokens(false)?;
        if let Some(device) = a.ext.hook.and_then(|hook| hook.device) {
            let width = a.value.width();
            if width < 8 && device >> (8 * u32::from(width)) != 0 {
                return Err(self.err(format!("the dev= value does not fit in {width} bytes")));
            }
        }
        Ok(())
    }

    /// `REPEAT R|W width time id 0xphys 0xvalue 0xpc pid count=N len=K
    /// end=TIME [seq=N] [proc=N] [until=0xV]`, the keys in any order.
    pub(super) fn repeat(&mut self) -> LineResult<Event> {
        self.space_before("direction")?;
        let dir = match self.peek() {
            Some(b'R') => Direction::Read,
            Some(b'W') => Direction::Write,
            _ => {
                return Err(self.err(format!(
                    "expected R or W after REPEAT, found {}",
                    self.found()
                )));
            }
        };
        self.i += 1;
        self.end_of_field("direction")?;
        self.space_before("width")?;
        let width_at = self.i;
        let width = self.dec_u64("width")?;
        if !Value::is_valid_width(width as usize) || width == 0 {
            return Err(self.err_at(width_at, "the width must be 1, 2, 4, 8, 16, 32 or 64"));
        }
        let width = width as u8;
        let time = self.field_time()?;
        let map_id = self.field_dec_u32("map id")?;
        let phys = self.field_0x("physical address")?;
        self.space_before("value")?;
        let value = self.value(width)?;
        let pc = self.field_0x("pc")?;
        let pid = self.field_dec_u32("pid")?;
        let (mut count, mut len, mut end, mut until) = (None, None, None, None);
        let mut ext = Ext::default();
        while !(self.i >= self.s.len() || self.rest_is_blank()) {
            self.space_before("key=value field")?;
            let key_start = self.i;
            while self.peek().is_some_and(|b| b.is_ascii_lowercase()) {
                self.i += 1;
            }
            let key = &self.s[key_start..self.i];
            if self.peek() != Some(b'=') || key.is_empty() {
                return Err(self.err_at(
                    key_start,
                    "expected a key=value field (count=, len=, end=, seq=, proc= or until=)",
                ));
            }
            self.i += 1;
            let duplicate = match key {
                b"count" => count.replace(self.dec_u64("count= value")?).is_some(),
                b"len" => {
                    let at = self.i;
                    let n = self.dec_u32("len= value")?;
                    if n == 0 {
                        return Err(self.err_at(at, "len= must be at least 1"));
                    }
                    len.replace(n).is_some()
                }
                b"end" => end.replace(self.time()?).is_some(),
                b"seq" => ext.seq.replace(self.dec_u64("seq= value")?).is_some(),
                b"proc" => ext.process.replace(self.dec_u32("proc= value")?).is_some(),
                b"until" => until.replace(self.value(width)?).is_some(),
                _ => {
                    return Err(self.err_at(
                        key_start,
                        format!(
                            "unknown field \"{}=\" on a REPEAT line",
                            String::from_utf8_lossy(key)
                        ),
                    ));
                }
            };
            if duplicate {
                return Err(self.err_at(
                    key_start,
                    format!("duplicate {}= field", String::from_utf8_lossy(key)),
                ));
            }
        }
        let (Some(count), Some(len), Some(end)) = (count, len, end) else {
            return Err(self.err("a REPEAT line needs count=, len= and end="));
        };
        Ok(Event::Repeat(Box::new(Repeat {
            dir,
            time,
            end,
            map_id,
            phys,
            value,
            pc,
            pid,
            count,
            len,
            until,
            ext,
        })))
    }

    /// `MAP time id 0xphys 0xvirt 0xlen 0xpc pid [ext] [path=]`.
    pub(super) fn map(&mut self) -> LineResult<Event> {
        let time = self.field_time()?;
        let map_id = self.field_dec_u32("map id")?;
        let phys = self.field_0x("physical address")?;
        let virt = self.field_0x("virtual address")?;
        let len = self.field_0x("length")?;
        let pc = self.field_0x("pc")?;
        let pid = self.field_dec_u32("pid")?;
        let (ext, path) = self.ext_tokens(true)?;
        Ok(Event::Map(Map {
            time,
            map_id,
            phys,
            virt,
            len,
            pc,
            pid,
            ext,
            path,
        }))
    }

    /// `UNMAP time id 0xpc pid [ext]`.
    pub(super) fn unmap(&mut self) -> LineResult<Event> {
        let time = self.field_time()?;
        let map_id = self.field_dec_u32("map id")?;
        let pc = self.field_0x("pc")?;
        let pid = self.field_dec_u32("pid")?;
        let (ext, _) = self.ext_tokens(false)?;
        Ok(Event::Unmap(Unmap {
            time,
            map_id,
            pc,
            pid,
            ext,
        }))
    }

    /// `UNKNOWN time id 0xphys b0,b1,b2 0xpc pid [ext]`.
    pub(super) fn unknown(&mut self) -> LineResult<Event> {
        let time = self.field_time()?;
        let map_id = self.field_dec_u32("map id")?;
        let phys = self.field_0x("physical address")?;
        self.space_before("opcode bytes")?;
        let mut opcode = [0u8; 3];
        for (k, byte) in opcode.iter_mut().enumerate() {
            if k > 0 {
                if self.peek() != Some(b',') {
                    return Err(self.err(format!(
                        "expected \",\" between opcode bytes, found {}",
                        self.found()
                    )));
                }
                self.i += 1;
            }
            let start = self.i;
            let mut value: u64 = 0;
            while let Some(d) = self.peek().and_then(hex_digit_value) {
                value = (value << 4) | u64::from(d);
                self.i += 1;
                if self.i - start > 2 {
                    break;
                }
            }
            if self.i - start != 2 {
                return Err(self.err_at(start, "expected an opcode byte as 2 hex digits"));
            }
            *byte = value as u8;
        }
        self.end_of_field("opcode bytes")?;
        let pc = self.field_0x("pc")?;
        let pid = self.field_dec_u32("pid")?;
        let (ext, _) = self.ext_tokens(false)?;
        Ok(Event::Unknown(Unknown {
            time,
            map_id,
            phys,
            opcode,
            pc,
            pid,
            ext,
        }))
    }

    /// A lost-events line whose count does not fit in 64 bits.
    pub(super) fn lost_overflow(&self, text_start: usize) -> LineError {
        self.err_at(
            text_start + "Lost ".len(),
            "the lost-event count does not fit in 64 bits",
        )
    }

    /// `MARK time text`, the lost-events line, and their extended forms.
    pub(super) fn mark(&mut self) -> LineResult<Event> {
        let time = self.field_time()?;
        // The text runs to the end of the line; a missing separator means an empty text.
        if self.peek().is_some_and(|b| b != b' ') {
            return Err(self.err(format!(
                "expected a space before the MARK text, found {}",
                self.found()
            )));
        }
        let text_start = (self.i + 1).min(self.s.len());
        let text = &self.s[text_start..];
        if let Some(tab) = memchr::memrchr(b'\t', text)
            && let Ok(ext) = parse_mark_ext(&text[tab + 1..])
        {
            let escaped = &text[..tab];
            if time.nanos == 0
                && let Some(count) = parse_lost_text(escaped)
            {
                let count = count.ok_or_else(|| self.lost_overflow(text_start))?;
                return Ok(Event::Lost(Lost { count, ext }));
            }
            let text =
                unescape_mark(escaped).map_err(|(k, msg)| self.err_at(text_start + k, msg))?;
            let text = String::from_utf8(text).map_err(|e| {
                self.err_at(
                    text_start + e.utf8_error().valid_up_to(),
                    "the MARK text is not valid UTF-8",
                )
            })?;
            return Ok(Event::Mark(Mark { time, text, ext }));
        }
        if time.nanos == 0
            && let Some(count) = parse_lost_text(text)
        {
            let count = count.ok_or_else(|| self.lost_overflow(text_start))?;
            return Ok(Event::Lost(Lost {
                count,
                ext: Ext::default(),
            }));
        }
        let text = std::str::from_utf8(text).map_err(|e| {
            self.err_at(
                text_start + e.valid_up_to(),
                "the MARK text is not valid UTF-8",
            )
        })?;
        Ok(Event::Mark(Mark {
            time,
            text: text.to_owned(),
            ext: Ext::default(),
        }))
    }

    /// `PCIDEV bbdd vvvvdddd irq` + 7 BAR starts + 7 sizes + ` driver`.
    pub(super) fn pcidev(&mut self) -> LineResult<Event> {
        let busdevfn = self.field_hex_fixed("bus and devfn", 4)?;
        let ids = self.field_hex_fixed("vendor and device id", 8)?;
        let irq_at = self.i + 1;
        let irq = self.field_hex("irq")?;
        let irq = u32::try_from(irq)
            .map_err(|_| self.err_at(irq_at, "the irq does not fit in 32 bits"))?;
        let mut bar_start = [0u64; PCI_BARS];
        for v in &mut bar_start {
            *v = self.field_hex("BAR start")?;
        }
        let mut bar_size = [0u64; PCI_BARS];
        for v in &mut bar_size {
            *v = self.field_hex("BAR size")?;
        }
        // " driver"; the kernel leaves just the space when no driver is bound,
        // and a log whose trailing spaces were stripped has not even that.
        let mut driver = String::new();
        if self.peek() == Some(b' ') {
            self.i += 1;
            let start = self.i;
            while self.peek().is_some_and(|b| b != b' ' && b != b'\t') {
                self.i += 1;
            }
            driver = std::str::from_utf8(&self.s[start..self.i])
                .map_err(|e| {
                    self.err_at(
                        start + e.valid_up_to(),
                        "the driver name is not valid UTF-8",
                    )
                })?
                .to_owned();
            if driver.bytes().any(crate::text_writer::is_control) {
                return Err(self.err_at(start, "the driver name contains control characters"));
            }
        }
        if !self.rest_is_blank() {
            return Err(self.err(format!(
                "expected the end of the line after the driver name, found {}",
                self.found()
            )));
        }
        Ok(Event::PciDev(PciDev {
            bus: (busdevfn >> 8) as u8,
            devfn: busdevfn as u8,
            vendor: (ids >> 16) as u16,
            device: ids as u16,
            irq,
            bar_start,
            bar_size,
            driver,
        }))
    }

    /// `VERSION <token>`.
    pub(super) fn version(&mut self) -> LineResult<Event> {
        self.space_before("version")?;
        let start = self.i;
        while self.peek().is_some_and(|b| b != b' ' && b != b'\t') {
            self.i += 1;
        }
        if self.i == start {
            return Err(self.err("expected a version string"));
        }
        let version = std::str::from_utf8(&self.s[start..self.i])
            .map_err(|e| self.err_at(start + e.valid_up_to(), "the version is not valid UTF-8"))?;
        if version.bytes().any(crate::text_writer::is_control) {
            return Err(self.err_at(start, "the version contains control characters"));
        }
        if !self.rest_is_blank() {
            return Err(self.err(format!(
                "expected the end of the line after the version, found {}",
                self.found()
            )));
        }
        Ok(Event::Version(Version {
            version: version.to_owned(),
        }))
    }

    /// ` key=value` tokens after the kernel fields, then optional trailing blanks.
    #[inline]
    pub(super) fn ext_tokens(&mut self, allow_path: bool) -> LineResult<(Ext, Option<String>)> {
        let mut ext = Ext::default();
        let mut path = None;
        // `dev=`: `Some(None)` for `dev=none`; and where the keys were.
        let mut device: Option<Option<u64>> = None;
        let mut hook_key_at = (0, 0);
        loop {
            if self.i >= self.s.len() || self.rest_is_blank() {
                return self
                    .hook_fields(ext, device, hook_key_at)
                    .map(|ext| (ext, path));
            }
            if self.peek() != Some(b' ') {
                return Err(self.err(format!(
                    "expected a space and a key=value field, found {}",
                    self.found()
                )));
            }
            self.i += 1;
            let key_start = self.i;
            while self.peek().is_some_and(|b| b.is_ascii_lowercase()) {
                self.i += 1;
            }
            let key = &self.s[key_start..self.i];
            if self.peek() != Some(b'=') || key.is_empty() {
                return Err(self.err_at(
                    key_start,
                    "expected a key=value field (seq=, proc= or path=)",
                ));
            }
            self.i += 1;
            let duplicate = match key {
                b"seq" => ext.seq.is_some(),
                b"proc" => ext.process.is_some(),
                b"path" if allow_path => path.is_some(),
                b"hook" if !allow_path => ext.hook.is_some(),
                b"dev" if !allow_path => device.is_some(),
                _ => {
                    return Err(self.err_at(
                        key_start,
                        format!(
                            "unknown extension field \"{}=\" on this line",
                            String::from_utf8_lossy(key)
                        ),
                    ));
                }
            };
            if duplicate {
                return Err(self.err_at(
                    key_start,
                    format!("duplicate {}= field", String::from_utf8_lossy(key)),
                ));
            }
            match key {
                b"seq" => ext.seq = Some(self.dec_u64("seq= value")?),
                b"proc" => ext.process = Some(self.dec_u32("proc= value")?),
                b"hook" => {
                    hook_key_at.0 = key_start;
                    let rule = self.dec_u32("hook= rule number")?;
                    ext.hook = Some(crate::Hooked { rule, device: None });
                }
                b"dev" => {
                    hook_key_at.1 = key_start;
                    device = Some(self.device_value()?);
                }
                _ => {
                    let start = self.i;
                    while self.peek().is_some_and(|b| b != b' ' && b != b'\t') {
                        self.i += 1;
                    }
                    let decoded = percent_decode(&self.s[start..self.i]).map_err(|k| {
                        self.err_at(start + k, "expected two hex digits after \"%\" in the path")
                    })?;
                    let decoded = String::from_utf8(decoded).map_err(|e| {
                        self.err_at(
                            start,
                            format!(
                                "the path is not valid UTF-8 (at byte {})",
                                e.utf8_error().valid_up_to()
                            ),
                        )
                    })?;
                    path = Some(decoded);
                }
            }
        }
    }
}

impl Cursor<'_> {
    /// `dev=`'s value: `0xHEX` or `none`.
    fn device_value(&mut self) -> LineResult<Option<u64>> {
        if self.s.get(self.i..self.i + 4) == Some(b"none") {
            self.i += 4;
            self.end_of_field("dev= value")?;
            return Ok(None);
        }
        self.expect_0x("dev= value")?;
        self.hex_digits("dev= value", true).map(Some)
    }

    /// `hook=` and `dev=` come together.
    fn hook_fields(
        &self,
        mut ext: Ext,
        device: Option<Option<u64>>,
        (hook_at, dev_at): (usize, usize),
    ) -> LineResult<Ext> {
        match (&mut ext.hook, device) {
            (Some(hook), Some(device)) => hook.device = device,
            (None, None) => {}
            (Some(_), None) => {
                return Err(self.err_at(
                    hook_at,
                    "a hook= field needs a dev= field (the device's value, or none)",
                ));
            }
            (None, Some(_)) => return Err(self.err_at(dev_at, "a dev= field needs a hook= field")),
        }
        Ok(ext)
    }
}

/// The token list after the tab of an extended MARK line: `seq=N proc=N`,
/// space-separated, possibly empty. `Err` if it is anything else.
fn parse_mark_ext(tokens: &[u8]) -> Result<Ext, ()> {
    let mut ext = Ext::default();
    if tokens.is_empty() {
        return Ok(ext);
    }
    for token in tokens.split(|&b| b == b' ') {
        let (key, value) = match memchr::memchr(b'=', token) {
            Some(eq) => (&token[..eq], &token[eq + 1..]),
            None => return Err(()),
        };
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let number = value.iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        match (key, number) {
            (b"seq", Some(n)) if ext.seq.is_none() => ext.seq = Some(n),
            (b"proc", Some(n)) if ext.process.is_none() => {
                ext.process = Some(u32::try_from(n).map_err(|_| ())?)
            }
            _ => return Err(()),
        }
    }
    Ok(ext)
}

/// Undoes the MARK escapes `\\` and `\xHH`. `Err((index, why))` otherwise.
fn unescape_mark(escaped: &[u8]) -> Result<Vec<u8>, (usize, &'static str)> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut k = 0;
    while k < escaped.len() {
        let b = escaped[k];
        if b != b'\\' {
            out.push(b);
            k += 1;
            continue;
        }
        match escaped.get(k + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                k += 2;
            }
            Some(b'x') => {
                let hi = escaped.get(k + 2).copied().and_then(hex_digit_value);
                let lo = escaped.get(k + 3).copied().and_then(hex_digit_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err((k, "expected two hex digits after \"\\x\" in the MARK text")),
                }
                k += 4;
            }
            _ => return Err((k, "expected \"\\\\\" or \"\\xHH\" in the escaped MARK text")),
        }
    }
    Ok(out)
}

/// Undoes `%HH`. `Err(index)` for a malformed escape.
fn percent_decode(escaped: &[u8]) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut k = 0;
    while k < escaped.len() {
        if escaped[k] == b'%' {
            let hi = escaped.get(k + 1).copied().and_then(hex_digit_value);
            let lo = escaped.get(k + 2).copied().and_then(hex_digit_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(k),
            }
            k += 3;
        } else {
            out.push(escaped[k]);
            k += 1;
        }
    }
    Ok(out)
}
