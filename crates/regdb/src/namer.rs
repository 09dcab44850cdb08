//! Register names alone, for the commands that only label accesses
//! (`stats`, `filter`, `diff`, `export`): a [`Decoder`] followed event by
//! event, keeping just the name of each access's register.
//!
//! It binds mappings exactly as `decode` does (it is the same decoder, fed
//! the same events), learns the chipset the same way, and shares its
//! bounded cache of resolved addresses, so a name costs a hash lookup.

use std::io;
use std::sync::Arc;

use mmiotrace_trace::{Event, Map, Timestamp};

use crate::decode::{Binding, DecodeOptions, DecodeSink, DecodedAccess, Decoder, DeviceSpec};
use crate::error::Result;
use crate::model::Database;

/// Names the register of each access of a trace; see the module
/// documentation.
#[derive(Debug)]
pub struct Namer<'a> {
    decoder: Decoder<'a>,
    last: LastName,
}

/// The sink that keeps the name of the latest access's register.
#[derive(Debug, Default)]
struct LastName {
    name: Option<Arc<str>>,
}

impl DecodeSink for LastName {
    fn access(&mut self, access: &DecodedAccess<'_>) -> io::Result<()> {
        self.name = access.register.map(|r| Arc::clone(&r.name));
        Ok(())
    }
    fn map(&mut self, _: &Map, _: Option<(&Binding, &Database)>) -> io::Result<()> {
        Ok(())
    }
    fn variant(&mut self, _: Timestamp, _: &Binding, _: &str, _: &str, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn other(&mut self, _: &Event) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> Namer<'a> {
    pub fn new(
        dbs: &'a [Database],
        specs: &'a [DeviceSpec],
        options: &DecodeOptions,
    ) -> Result<Self> {
        Ok(Namer {
            decoder: Decoder::new(dbs, specs, options)?,
            last: LastName::default(),
        })
    }

    /// Takes the next event of the trace (every event, in order: MAP and
    /// PCIDEV records decide what later accesses are decoded with) and
    /// returns the name of its register: for R, W, UNKNOWN and REPEAT
    /// records to a register the databases know, `PMC.ID`, `EERD+0x2` (an
    /// access inside a register); `None` for anything else.
    pub fn name(&mut self, event: &Event) -> Option<&Arc<str>> {
        self.last.name = None;
        // LastName's callbacks cannot fail.
        let _ = self.decoder.feed(event, &mut self.last);
        self.last.name.as_ref()
    }
}

/// The register of a name that [`Namer::name`] returned: `EERD` for
/// `EERD+0x2`, the name itself when the access starts at the register.
pub fn register_of(name: &str) -> &str {
    match name.rsplit_once("+0x") {
        Some((register, within))
            if !within.is_empty() && within.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            register
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use mmiotrace_trace::{Access, Direction, Ext, Value};

    const MAP: &str = r#"
        name = "dev"
        [registers]
        CTRL = 0x0
        STATUS = 0x8
    "#;

    fn access(map_id: u32, phys: u64, width: u8) -> Event {
        Event::Access(Access {
            dir: Direction::Read,
            time: Timestamp::ZERO,
            map_id,
            phys,
            value: Value::from_u64(width, 1).unwrap(),
            pc: 0,
            pid: 1,
            ext: Ext::default(),
        })
    }

    #[test]
    fn names_follow_the_maps_and_partial_accesses_keep_their_register() {
        let db = crate::toml_map::parse(Arc::from("dev.toml"), "dev", MAP).unwrap();
        let dbs = [db];
        let mut namer = Namer::new(&dbs, &[], &DecodeOptions::default()).unwrap();
        let map = Event::Map(Map {
            time: Timestamp::ZERO,
            map_id: 1,
            phys: 0x1000,
            virt: 0,
            len: 0x100,
            pc: 0,
            pid: 1,
            path: None,
            ext: Ext::default(),
        });
        assert_eq!(namer.name(&map), None);
        let name = |namer: &mut Namer<'_>, e: &Event| namer.name(e).map(|n| n.to_string());
        assert_eq!(
            name(&mut namer, &access(1, 0x1008, 4)).as_deref(),
            Some("STATUS")
        );
        let partial = name(&mut namer, &access(1, 0x100a, 2)).unwrap();
        assert_eq!(partial, "STATUS+0x2");
        assert_eq!(register_of(&partial), "STATUS");
        assert_eq!(name(&mut namer, &access(1, 0x1004, 4)), None);
        assert_eq!(
            register_of("PGRAPH.GPC[2].TPC[0].CONFIG"),
            "PGRAPH.GPC[2].TPC[0].CONFIG"
        );
    }
}
