//! The hook table: the rules of `mmiotrace record --hook`, compiled by the
//! recorder into a fixed-size file that every traced process maps shared
//! (docs/HOOKS.md).
//!
//! # Layout
//!
//! One `#[repr(C)]` [`HookTable`], [`HookTable::SIZE`] bytes: magic,
//! version, the rule count, the plugin's path, the values of every
//! `values = [...]` sequence, and [`MAX_RULES`] rules. Everything the
//! recorder writes is written before the program starts and never changes;
//! the per-rule counters are atomics that every thread of every traced
//! process updates, so "the 3rd read" counts across all of them.
//!
//! [`HookTable::decide`] is what the runtime's SIGSEGV handler calls for
//! each access: it reads the table and updates counters with single atomic
//! operations, and never allocates, locks or formats.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// First bytes of a hook file.
pub const HOOK_MAGIC: [u8; 8] = *b"MMIOHOOK";
/// Bumped on any change of the layout below.
pub const HOOK_VERSION: u32 = 1;
/// Environment variable with the hook file's path.
pub const ENV_HOOKS: &str = "MMIOTRACE_HOOKS";
/// Most rules a file may hold (a mapping's matching rules are a 64-bit mask).
pub const MAX_RULES: usize = 64;
/// Most values all `values = [...]` sequences may hold together.
pub const MAX_VALUES: usize = 1024;
/// Longest path glob of a rule.
pub const MAX_GLOB: usize = 512;
/// Longest path of a plugin.
pub const MAX_LIB_PATH: usize = 4096;
/// The rule number that marks an access changed by the plugin (rules are
/// numbered from 1 in file order).
pub const PLUGIN_RULE: u32 = 0;

/// `HookTable::flags`: a plugin is to be loaded from `lib_path`.
pub const FLAG_PLUGIN: u32 = 1;
/// `HookTable::flags`: `--model`: traced mappings have no device behind
/// them; every access goes to the plugin, and what it passes goes to
/// anonymous memory.
pub const FLAG_MODEL: u32 = 2;

/// What a rule does when it fires.
pub mod action {
    /// Nothing: the access is only marked.
    pub const PASS: u32 = 0;
    /// A read returns `value` without reading the device; a write writes
    /// `value` instead of the program's value.
    pub const VALUE: u32 = 1;
    /// A read returns the next value of the rule's sequence (the last one
    /// again once it is used up), without reading the device.
    pub const SEQUENCE: u32 = 2;
    /// The value read (or to be written) has `clear` cleared, `set` set and
    /// `flip` flipped, in that order.
    pub const BITS: u32 = 3;
    /// A write is not performed.
    pub const DROP: u32 = 4;
    /// The access is performed `delay_ns` later.
    pub const DELAY: u32 = 5;
    /// From this access on, every access to the rule's mappings behaves as
    /// on a removed device: reads return all ones, writes are dropped.
    pub const REMOVE: u32 = 6;
    /// The access is not performed; the thread gets SIGBUS.
    pub const SIGBUS: u32 = 7;
}

/// `HookRule::dir`.
pub mod dir {
    pub const ANY: u32 = 0;
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
}

/// One compiled rule. The recorder fills the plain fields; the atomics
/// start at zero.
#[repr(C)]
#[derive(Debug)]
pub struct HookRule {
    pub action: u32,
    /// [`dir`]`::*`.
    pub dir: u32,
    /// Access width in bytes; 0 matches any.
    pub width: u32,
    /// Map id; 0 matches any.
    pub map_id: u32,
    /// Offsets `offset_start..offset_end` in the mapping; an access
    /// matches when it starts inside.
    pub offset_start: u64,
    pub offset_end: u64,
    /// The rule acts only on the accesses it matches after the first
    /// `after` (counted across threads and processes)...
    pub after: u64,
    /// ...and on at most `times` of them (`u64::MAX`: no limit).
    pub times: u64,
    /// Nanoseconds since recording started before which the rule matches
    /// nothing.
    pub after_time_ns: u64,
    pub value: u64,
    pub set: u64,
    pub clear: u64,
    pub flip: u64,
    pub delay_ns: u64,
    /// The rule's sequence: `values[values_start..values_start+values_len]`.
    pub values_start: u32,
    pub values_len: u32,
    /// Length of `glob`; 0 matches every traced mapping.
    pub glob_len: u32,
    _reserved: u32,
    pub glob: [u8; MAX_GLOB],
    /// Accesses that met the rule's conditions (the count `after` and
    /// `times` refer to).
    matched: AtomicU64,
    /// Accesses the rule acted on.
    fired: AtomicU64,
    /// Non-zero once a `remove` rule has fired.
    removed: AtomicU32,
    _reserved2: u32,
}

/// The whole hook file.
#[repr(C)]
#[derive(Debug)]
pub struct HookTable {
    pub magic: [u8; 8],
    pub version: u32,
    pub rule_count: u32,
    /// [`FLAG_PLUGIN`], [`FLAG_MODEL`].
    pub flags: u32,
    pub lib_path_len: u32,
    pub lib_path: [u8; MAX_LIB_PATH],
    pub values: [u64; MAX_VALUES],
    pub rules: [HookRule; MAX_RULES],
}

const _: () = assert!(std::mem::size_of::<HookRule>() % 8 == 0);

/// What [`HookTable::decide`] chose for one access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    /// The rule's number: its index in the table plus one.
    pub rule: u32,
    /// [`action`]`::*`; a removed device is [`action::REMOVE`].
    pub action: u32,
    /// For [`action::VALUE`] and [`action::SEQUENCE`]: the value.
    pub value: u64,
    pub set: u64,
    pub clear: u64,
    pub flip: u64,
    pub delay_ns: u64,
}

impl Fired {
    /// `value` changed as a [`action::BITS`] rule says, cut to `width` bytes.
    pub fn apply_bits(&self, value: u64, width: u8) -> u64 {
        mask(((value & !self.clear) | self.set) ^ self.flip, width)
    }
}

/// `value` cut to `width` bytes.
pub fn mask(value: u64, width: u8) -> u64 {
    if width >= 8 {
        value
    } else {
        value & ((1u64 << (8 * u32::from(width))) - 1)
    }
}

impl HookRule {
    /// Accesses that met the rule's conditions so far.
    pub fn matched(&self) -> u64 {
        self.matched.load(Ordering::Relaxed)
    }

    /// Accesses the rule acted on so far.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }

    fn glob(&self) -> &[u8] {
        self.glob.get(..self.glob_len as usize).unwrap_or(&[])
    }

    /// The conditions of the mapping alone (its path was checked when it
    /// was mapped, into the mask).
    fn matches_map(&self, map_id: u32) -> bool {
        self.map_id == 0 || self.map_id == map_id
    }

    fn matches_access(&self, offset: u64, width: u8, write: bool, now_ns: u64) -> bool {
        let dir_ok = match self.dir {
            dir::READ => !write,
            dir::WRITE => write,
            _ => true,
        };
        dir_ok
            && (self.width == 0 || self.width == u32::from(width))
            && offset >= self.offset_start
            && offset < self.offset_end
            && now_ns >= self.after_time_ns
    }
}

impl HookTable {
    /// Bytes of the file.
    pub const SIZE: usize = std::mem::size_of::<HookTable>();

    /// A zeroed table of the current version, on the heap (it is large).
    pub fn new_boxed() -> Box<HookTable> {
        let layout = std::alloc::Layout::new::<HookTable>();
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) } as *mut HookTable;
        if raw.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `raw` is a fresh allocation of HookTable's layout, and
        // every field of HookTable is an integer, an array of integers or
        // an atomic integer, for all of which zero is valid.
        let mut table = unsafe { Box::from_raw(raw) };
        table.magic = HOOK_MAGIC;
        table.version = HOOK_VERSION;
        table
    }

    /// The table's bytes, to write the file.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: HookTable is repr(C) plain data of SIZE bytes with no
        // padding that matters to a reader (padding bytes are whatever the
        // zeroed allocation held: zero).
        unsafe { std::slice::from_raw_parts(self as *const HookTable as *const u8, Self::SIZE) }
    }

    /// The table in a mapped hook file, after checking its magic, version
    /// and size.
    ///
    /// # Safety
    ///
    /// `base..base+len` must be a readable and writable shared mapping that
    /// stays mapped for `'a`.
    pub unsafe fn from_raw<'a>(base: *mut u8, len: usize) -> Result<&'a HookTable, &'static str> {
        if len < Self::SIZE {
            return Err("the hook file is too small");
        }
        if (base as usize) % std::mem::align_of::<HookTable>() != 0 {
            return Err("the hook file is misaligned");
        }
        // SAFETY: aligned and large enough (checked above); the caller
        // keeps it mapped; the shared fields are atomics.
        let table = unsafe { &*(base as *const HookTable) };
        if table.magic != HOOK_MAGIC {
            return Err("not an mmiotrace hook file");
        }
        if table.version != HOOK_VERSION {
            return Err(
                "hook file layout version differs (runtime and recorder from different builds)",
            );
        }
        Ok(table)
    }

    /// The rules in use.
    pub fn rules(&self) -> &[HookRule] {
        self.rules
            .get(..(self.rule_count as usize).min(MAX_RULES))
            .unwrap_or(&[])
    }

    /// The plugin's path, when there is one.
    pub fn lib_path(&self) -> Option<&[u8]> {
        (self.flags & FLAG_PLUGIN != 0)
            .then(|| self.lib_path.get(..self.lib_path_len as usize))
            .flatten()
    }

    /// Whether `--model` is on.
    pub fn model(&self) -> bool {
        self.flags & FLAG_MODEL != 0
    }

    /// The rules (bit i for rule index i) whose path glob matches `path`:
    /// computed when a mapping is armed, kept with its map id.
    pub fn rules_for_path(&self, path: &[u8]) -> u64 {
        let mut mask = 0u64;
        for (index, rule) in self.rules().iter().enumerate() {
            if rule.glob_len == 0 || crate::glob::matches(rule.glob(), path) {
                mask |= 1 << index;
            }
        }
        mask
    }

    /// The rule that acts on one access, if any: the first, in file order,
    /// whose conditions the access meets and whose count window
    /// (`after`, `times`) includes it. Every rule whose conditions the
    /// access meets counts it, whichever acts. `rules` is the mapping's
    /// mask from [`rules_for_path`](Self::rules_for_path); `now_ns` the time
    /// since recording started. Allocation-free and lock-free.
    pub fn decide(
        &self,
        rules: u64,
        map_id: u32,
        offset: u64,
        width: u8,
        write: bool,
        now_ns: u64,
    ) -> Option<Fired> {
        let mut chosen: Option<Fired> = None;
        let mut pending = rules;
        while pending != 0 {
            let index = pending.trailing_zeros() as usize;
            pending &= pending - 1;
            let Some(rule) = self.rules().get(index) else {
                break;
            };
            if !rule.matches_map(map_id) {
                continue;
            }
            // SYNC POINT: pairs with the Release store below: a device
            // removed by one thread is removed for all.
            if rule.action == action::REMOVE && rule.removed.load(Ordering::Acquire) != 0 {
                if chosen.is_none() {
                    rule.fired.fetch_add(1, Ordering::Relaxed);
                    chosen = Some(fired(index, rule, action::REMOVE, 0));
                }
                continue;
            }
            if !rule.matches_access(offset, width, write, now_ns) {
                continue;
            }
            // One atomic increment gives each access its place among the
            // rule's matches, across threads and processes.
            let place = rule.matched.fetch_add(1, Ordering::Relaxed);
            let in_window = place >= rule.after && place - rule.after < rule.times;
            if !in_window || chosen.is_some() {
                continue;
            }
            let nth_firing = rule.fired.fetch_add(1, Ordering::Relaxed);
            let value = match rule.action {
                action::SEQUENCE => {
                    let last = u64::from(rule.values_len.saturating_sub(1));
                    let at = rule.values_start as usize + nth_firing.min(last) as usize;
                    self.values.get(at).copied().unwrap_or(0)
                }
                _ => rule.value,
            };
            if rule.action == action::REMOVE {
                // SYNC POINT: pairs with the Acquire load above.
                rule.removed.store(1, Ordering::Release);
            }
            chosen = Some(fired(index, rule, rule.action, value));
        }
        chosen
    }
}

fn fired(index: usize, rule: &HookRule, action: u32, value: u64) -> Fired {
    Fired {
        rule: index as u32 + 1,
        action,
        value,
        set: rule.set,
        clear: rule.clear,
        flip: rule.flip,
        delay_ns: rule.delay_ns,
    }
}

impl HookRule {
    /// A rule that matches every access and passes it; the recorder
    /// narrows it.
    pub fn set_defaults(&mut self) {
        self.action = action::PASS;
        self.dir = dir::ANY;
        self.width = 0;
        self.map_id = 0;
        self.offset_start = 0;
        self.offset_end = u64::MAX;
        self.after = 0;
        self.times = u64::MAX;
    }

    /// Sets the path glob; false when it is longer than [`MAX_GLOB`].
    pub fn set_glob(&mut self, glob: &[u8]) -> bool {
        let Some(dst) = self.glob.get_mut(..glob.len()) else {
            return false;
        };
        dst.copy_from_slice(glob);
        self.glob_len = glob.len() as u32;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &[fn(&mut HookRule)]) -> Box<HookTable> {
        let mut table = HookTable::new_boxed();
        for (i, build) in rules.iter().enumerate() {
            table.rules[i].set_defaults();
            build(&mut table.rules[i]);
        }
        table.rule_count = rules.len() as u32;
        table
    }

    #[test]
    fn the_nth_match_fires_once_and_every_match_is_counted() {
        let t = table(&[|r| {
            r.dir = dir::READ;
            r.offset_start = 8;
            r.offset_end = 12;
            r.after = 2;
            r.times = 1;
            r.action = action::VALUE;
            r.value = 7;
        }]);
        let mask = t.rules_for_path(b"/dev/mem");
        assert_eq!(mask, 1);
        let mut fired = Vec::new();
        for i in 0..5 {
            assert_eq!(
                t.decide(mask, 1, 8, 4, true, 0),
                None,
                "writes do not match"
            );
            assert_eq!(
                t.decide(mask, 1, 12, 4, false, 0),
                None,
                "outside the range"
            );
            fired.push(t.decide(mask, 1, 8, 4, false, 0).map(|f| (i, f.value)));
        }
        assert_eq!(fired, [None, None, Some((2, 7)), None, None]);
        assert_eq!((t.rules[0].matched(), t.rules[0].fired()), (5, 1));
    }

    #[test]
    fn sequences_repeat_their_last_value_and_globs_select_mappings() {
        let mut t = table(&[|r| {
            r.action = action::SEQUENCE;
            r.values_start = 1;
            r.values_len = 2;
        }]);
        assert!(t.rules[0].set_glob(b"/dev/shm/nic-*"));
        t.values[1] = 10;
        t.values[2] = 20;
        assert_eq!(t.rules_for_path(b"/dev/mem"), 0);
        let mask = t.rules_for_path(b"/dev/shm/nic-bar0");
        let values: Vec<_> = (0..4)
            .map(|_| t.decide(mask, 3, 0, 4, false, 0).map(|f| f.value))
            .collect();
        assert_eq!(values, [Some(10), Some(20), Some(20), Some(20)]);
    }

    #[test]
    fn a_removed_device_stays_removed_for_every_access_to_its_map() {
        let t = table(&[|r| {
            r.action = action::REMOVE;
            r.dir = dir::WRITE;
            r.offset_start = 0x3818;
            r.offset_end = 0x381c;
            r.map_id = 2;
        }]);
        let mask = t.rules_for_path(b"x");
        assert_eq!(t.decide(mask, 2, 0x8, 4, false, 0), None);
        let trigger = t.decide(mask, 2, 0x3818, 4, true, 0).map(|f| f.action);
        assert_eq!(trigger, Some(action::REMOVE));
        let after = t.decide(mask, 2, 0x8, 4, false, 0).map(|f| f.action);
        assert_eq!(after, Some(action::REMOVE));
        assert_eq!(t.decide(mask, 1, 0x8, 4, false, 0), None, "another map");
    }

    #[test]
    fn the_first_rule_acts_and_later_ones_still_count_and_time_gates() {
        let t = table(&[
            |r| {
                r.action = action::BITS;
                r.set = 0x100;
                r.flip = 1;
                r.after_time_ns = 1000;
            },
            |r| r.action = action::PASS,
        ]);
        let mask = t.rules_for_path(b"x");
        assert_eq!(t.decide(mask, 1, 0, 2, false, 999).map(|f| f.rule), Some(2));
        let first = t.decide(mask, 1, 0, 2, false, 1000).expect("rule 1 fires");
        assert_eq!(first.rule, 1);
        assert_eq!(first.apply_bits(0xff0f, 1), 0x0e);
        assert_eq!(first.apply_bits(0xff0f, 2), 0xff0e);
        assert_eq!(t.rules[1].matched(), 2);
    }
}
