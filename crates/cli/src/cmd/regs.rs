//! The register-database options, shared by `decode` and the analysis
//! commands (`stats`, `filter`, `diff`, `export`) so that `--regs`,
//! `--device` and `--chipset` load and bind the same way everywhere.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use mmiotrace_regdb::decode::{DecodeOptions, Decoder, DeviceSpec, Selector};
use mmiotrace_regdb::{Database, Namer};

/// `--regs`, `--device`, `--chipset`, `--db-warnings`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Register names")]
pub struct RegsArgs {
    /// A register database: rules-ng-ng .xml, .svd, or .toml. Repeatable.
    #[arg(long = "regs", value_name = "FILE")]
    regs: Vec<PathBuf>,

    /// Bind mappings to a database: SELECTOR=DATABASE[#DOMAIN][@VARIANT],
    /// as `mmiotrace decode --help` explains. Repeatable.
    #[arg(long = "device", value_name = "SPEC")]
    devices: Vec<String>,

    /// The chipset (rules-ng-ng variant) for every device that a --device
    /// spec gives none, instead of learning it from the trace.
    #[arg(long, value_name = "NAME")]
    chipset: Option<String>,

    /// List every problem found in the databases (overlapping registers in
    /// rules-ng-ng files, where the first definition wins), not just a count.
    #[arg(long)]
    db_warnings: bool,
}

/// The loaded databases and `--device` specs.
#[derive(Debug)]
pub struct Registers {
    dbs: Vec<Database>,
    specs: Vec<DeviceSpec>,
    options: DecodeOptions,
}

impl RegsArgs {
    /// Loads the databases and parses the specs; `None` when the command
    /// line names no database (then `--chipset` is an error).
    pub fn load(&self) -> anyhow::Result<Option<Registers>> {
        let mut dbs: Vec<Database> = Vec::new();
        for path in &self.regs {
            let db = mmiotrace_regdb::load(path)?;
            report_warnings(&db, self.db_warnings);
            dbs.push(db);
        }
        let mut specs = Vec::new();
        for text in &self.devices {
            let before = dbs.len();
            specs.push(DeviceSpec::parse(text, &mut dbs)?);
            for db in &dbs[before..] {
                report_warnings(db, self.db_warnings);
            }
        }
        if dbs.is_empty() {
            if self.chipset.is_some() {
                bail!("no register database: give one with --regs FILE");
            }
            return Ok(None);
        }
        let registers = Registers {
            dbs,
            specs,
            options: DecodeOptions {
                variant: self.chipset.clone(),
            },
        };
        // A --chipset that no database knows is an error before any output.
        registers.decoder()?;
        Ok(Some(registers))
    }
}

impl Registers {
    pub fn decoder(&self) -> anyhow::Result<Decoder<'_>> {
        Ok(Decoder::new(&self.dbs, &self.specs, &self.options)?)
    }

    /// A namer for one pass over one trace.
    pub fn namer(&self) -> anyhow::Result<Namer<'_>> {
        Ok(Namer::new(&self.dbs, &self.specs, &self.options)?)
    }

    /// Whether a --device spec binds an address range (what rwmmio traces,
    /// which have no MAP records, need).
    pub fn binds_a_range(&self) -> bool {
        self.specs
            .iter()
            .any(|spec| matches!(spec.selector, Selector::Range { .. }))
    }
}

/// A namer when databases were given, else `None`.
pub fn namer(registers: Option<&Registers>) -> anyhow::Result<Option<Namer<'_>>> {
    registers.map(Registers::namer).transpose()
}

fn report_warnings(db: &Database, all: bool) {
    if all {
        for warning in &db.warnings {
            eprintln!("mmiotrace: warning: {warning}");
        }
    } else if let Some(first) = db.warnings.first() {
        eprintln!(
            "mmiotrace: warning: {}: {} overlapping register definitions; the first definition wins (--db-warnings lists them all); the first: {first}",
            db.path,
            db.warnings.len()
        );
    }
}
