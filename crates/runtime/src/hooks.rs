//! Hooks (`record --hook`, `--hook-lib`, `--model`; docs/HOOKS.md): what
//! a rule or the plugin does to one access, decided inside the SIGSEGV
//! handler before the access is performed on the alias.
//!
//! The recorder compiles the rules into the hook file (`mmiotrace_shm::hooks`)
//! and names it in `MMIOTRACE_HOOKS`; [`load`] maps it shared, so the
//! per-rule counters are common to every thread and process, and loads
//! the plugin with `dlopen`, both when the configuration is loaded (the
//! first traced mapping), outside any handler. When a mapping is armed,
//! [`note_map`] works out which rules' path globs match it and keeps that
//! mask by map id, so the handler never matches a path. Per access,
//! [`decide`] reads the mask and the table, and [`Hook::before`] /
//! [`Hook::after_read`] say what the access becomes: nothing here
//! allocates or locks.
//!
//! # Safety
//!
//! The hook file is mapped with a raw `mmap` and read as the shm crate's
//! layout; the plugin is loaded with `dlopen` and its functions are called
//! through pointers that `dlsym` returned, with the C ABI that
//! include/mmiotrace_hook.h declares.

use core::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use mmiotrace_shm::hooks::{self as layout, Fired, HookTable, action, mask};

use crate::msg::Msg;
use crate::{config, sys};

/// The plugin's answer (include/mmiotrace_hook.h).
const PLUGIN_MODIFIED: c_int = 1;
const PLUGIN_DROP: c_int = 2;
const PLUGIN_BEFORE: u8 = 0;
const PLUGIN_AFTER: u8 = 1;
/// `mmiotrace_hook_access.abi_version`.
const PLUGIN_ABI_VERSION: u32 = 1;

/// What the plugin's access function is handed (include/mmiotrace_hook.h).
#[repr(C)]
struct PluginAccess {
    abi_version: u32,
    map_id: u32,
    offset: u64,
    value: u64,
    width: u8,
    /// 0 read, 1 write.
    dir: u8,
    phase: u8,
    reserved: u8,
    tid: u32,
}

type AccessFn = unsafe extern "C" fn(*mut PluginAccess) -> c_int;
type MapFn = unsafe extern "C" fn(u32, *const c_char, u64, u64);

/// The mapped hook table's address; 0 without hooks.
static TABLE: AtomicUsize = AtomicUsize::new(0);
/// The plugin's `mmiotrace_hook_access`; 0 without a plugin.
static PLUGIN_ACCESS: AtomicUsize = AtomicUsize::new(0);
/// The plugin's optional `mmiotrace_hook_map`.
static PLUGIN_MAP: AtomicUsize = AtomicUsize::new(0);

/// Map ids whose rule masks are kept (the most recent mappings).
const MAP_SLOTS: usize = 1024;
/// Per map id modulo [`MAP_SLOTS`]: the map id, and the mask of the rules
/// whose path glob matches its path.
static MAP_IDS: [AtomicU32; MAP_SLOTS] = [const { AtomicU32::new(0) }; MAP_SLOTS];
static MAP_RULES: [AtomicU64; MAP_SLOTS] = [const { AtomicU64::new(0) }; MAP_SLOTS];

fn table() -> Option<&'static HookTable> {
    let addr = TABLE.load(Ordering::Acquire);
    if addr == 0 {
        return None;
    }
    // SAFETY: set by load() to a checked, shared, never unmapped mapping
    // of the hook file; its shared fields are atomics.
    Some(unsafe { &*(addr as *const HookTable) })
}

/// Whether a hook file is loaded (rules, a plugin or a model).
pub fn active() -> bool {
    table().is_some()
}

/// Whether `--model` is on: traced mappings get anonymous memory as
/// their alias, and the plugin answers for the device.
pub fn model() -> bool {
    table().is_some_and(HookTable::model)
}

/// Maps the hook file named by `MMIOTRACE_HOOKS` and loads its plugin.
/// Called once, while the configuration loads. A hook file that cannot be
/// used turns tracing off: running the program without the faults the
/// user asked for would be a lie.
pub fn load() -> bool {
    let mut path = [0u8; config::VALUE_BYTES];
    let Some((path, len)) = config::hooks_path(&mut path) else {
        return true;
    };
    match map_table(path, len) {
        Ok(table) => {
            TABLE.store(table as *const HookTable as usize, Ordering::Release);
            match table.lib_path() {
                Some(lib) => load_plugin(lib),
                None => true,
            }
        }
        Err(what) => {
            Msg::new()
                .text("tracing is OFF: cannot use the hook file ")
                .bytes(path)
                .text(": ")
                .text(what)
                .emit();
            false
        }
    }
}

fn map_table(path: &[u8], len: usize) -> Result<&'static HookTable, &'static str> {
    let mut buf = [0u8; config::VALUE_BYTES + 1];
    let with_nul = buf
        .get_mut(..path.len() + 1)
        .filter(|_| len == path.len())
        .ok_or("path too long")?;
    if let Some(dst) = with_nul.get_mut(..path.len()) {
        dst.copy_from_slice(path);
    }
    let fd = sys::open(with_nul, libc::O_RDWR | libc::O_CLOEXEC).map_err(|_| "cannot open it")?;
    let size = sys::file_size(fd).map_err(|_| "cannot size it");
    let mapped = size.and_then(|size| {
        // SAFETY: a fresh shared mapping at an address the kernel picks.
        unsafe {
            sys::mmap(
                0,
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        }
        .map(|base| (base, size as usize))
        .map_err(|_| "cannot map it")
    });
    sys::close(fd);
    let (base, size) = mapped?;
    // SAFETY: base..base+size is a shared read-write mapping that the
    // runtime never unmaps.
    unsafe { HookTable::from_raw(base as *mut u8, size) }
}

fn load_plugin(lib: &[u8]) -> bool {
    let mut buf = [0u8; layout::MAX_LIB_PATH + 1];
    let Some(with_nul) = buf.get_mut(..lib.len() + 1) else {
        return false;
    };
    if let Some(dst) = with_nul.get_mut(..lib.len()) {
        dst.copy_from_slice(lib);
    }
    // SAFETY: a NUL-terminated path; dlopen runs the plugin's
    // constructors here, outside any signal handler.
    let handle = unsafe { libc::dlopen(with_nul.as_ptr().cast(), libc::RTLD_NOW) };
    let access = if handle.is_null() {
        core::ptr::null_mut()
    } else {
        // SAFETY: a handle dlopen returned and a NUL-terminated name.
        unsafe { libc::dlsym(handle, c"mmiotrace_hook_access".as_ptr()) }
    };
    if access.is_null() {
        Msg::new()
            .text("tracing is OFF: the hook plugin ")
            .bytes(lib)
            .text(" cannot be loaded or has no mmiotrace_hook_access function")
            .emit();
        return false;
    }
    // SAFETY: as above.
    let map: *mut c_void = unsafe { libc::dlsym(handle, c"mmiotrace_hook_map".as_ptr()) };
    PLUGIN_MAP.store(map as usize, Ordering::Relaxed);
    PLUGIN_ACCESS.store(access as usize, Ordering::Release);
    true
}

/// A mapping was armed as `map_id`: keeps which rules may act on it, and
/// tells the plugin. Called before any access to it can fault.
pub fn note_map(map_id: u32, path: &[u8], file_offset: u64, len: u64) {
    let Some(table) = table() else { return };
    let slot = map_id as usize % MAP_SLOTS;
    if let (Some(id), Some(rules)) = (MAP_IDS.get(slot), MAP_RULES.get(slot)) {
        rules.store(table.rules_for_path(path), Ordering::Relaxed);
        // SYNC POINT: pairs with the Acquire load in decide(): a handler
        // that sees the id sees its mask.
        id.store(map_id, Ordering::Release);
    }
    let map = PLUGIN_MAP.load(Ordering::Relaxed);
    if map != 0 {
        let mut name = [0u8; config::VALUE_BYTES + 1];
        let n = path.len().min(config::VALUE_BYTES);
        if let (Some(dst), Some(src)) = (name.get_mut(..n), path.get(..n)) {
            dst.copy_from_slice(src);
        }
        // SAFETY: dlsym's pointer to the plugin's mmiotrace_hook_map, with
        // the header's signature; `name` is NUL-terminated and outlives
        // the call.
        unsafe {
            let map: MapFn = core::mem::transmute::<usize, MapFn>(map);
            map(map_id, name.as_ptr().cast(), file_offset, len);
        }
    }
}

/// Who acts on an access.
#[derive(Debug, Clone, Copy)]
enum Actor {
    Rule(Fired),
    Plugin(AccessFn),
}

/// A hook that may act on one access.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    actor: Actor,
    map_id: u32,
    offset: u64,
    width: u8,
    write: bool,
    tid: u32,
    /// Set once the hook changed or marked the access.
    marked: bool,
    /// `--model`: the plugin is the device, so what it answers is the
    /// device's value, not a change to be marked.
    model: bool,
}

/// What the access becomes, before it is performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Perform it on the device; a write writes this value.
    Device { write_value: u64 },
    /// Leave the device alone; a read returns this value.
    NoDevice { read_value: u64 },
    /// Leave the device alone and send the thread SIGBUS.
    BusError,
}

/// The hook of an access of `width` (1 to 8) bytes at `offset` in map
/// `map_id`, if any: the first rule that fires, else the plugin.
/// `since_start_ns` is the time since recording started.
pub fn decide(
    map_id: u32,
    offset: u64,
    width: u8,
    write: bool,
    since_start_ns: impl FnOnce() -> u64,
    tid: u32,
) -> Option<Hook> {
    let table = table()?;
    let actor = rule(table, map_id, offset, width, write, since_start_ns)
        .map(Actor::Rule)
        .or_else(|| {
            {
                let plugin = PLUGIN_ACCESS.load(Ordering::Acquire);
                // SAFETY: a non-zero value is dlsym's pointer to the plugin's
                // mmiotrace_hook_access, whose signature the header fixes.
                (plugin != 0).then(|| unsafe { core::mem::transmute::<usize, AccessFn>(plugin) })
            }
            .map(Actor::Plugin)
        })?;
    Some(Hook {
        actor,
        map_id,
        offset,
        width,
        write,
        tid,
        marked: matches!(actor, Actor::Rule(_)),
        model: table.model(),
    })
}

fn rule(
    table: &HookTable,
    map_id: u32,
    offset: u64,
    width: u8,
    write: bool,
    since_start_ns: impl FnOnce() -> u64,
) -> Option<Fired> {
    if table.rule_count == 0 {
        return None;
    }
    let slot = map_id as usize % MAP_SLOTS;
    // SYNC POINT: pairs with the Release store in note_map().
    if MAP_IDS.get(slot)?.load(Ordering::Acquire) != map_id {
        return None;
    }
    let rules = MAP_RULES.get(slot)?.load(Ordering::Relaxed);
    if rules == 0 {
        return None;
    }
    table.decide(rules, map_id, offset, width, write, since_start_ns())
}

impl Hook {
    /// The rule number for the trace (0: the plugin), when the hook
    /// changed or marked the access.
    pub fn mark(&self) -> Option<u32> {
        match self.actor {
            Actor::Rule(fired) => Some(fired.rule),
            Actor::Plugin(_) => (self.marked && !self.model).then_some(layout::PLUGIN_RULE),
        }
    }

    fn all_ones(&self) -> u64 {
        mask(u64::MAX, self.width)
    }

    /// What the access becomes; `value` is a write's value. Sleeps here
    /// for a delay rule.
    pub fn before(&mut self, value: u64) -> Plan {
        let fired = match self.actor {
            Actor::Rule(fired) => fired,
            Actor::Plugin(plugin) => return self.plugin_before(plugin, value),
        };
        let keep = Plan::Device { write_value: value };
        match fired.action {
            action::VALUE | action::SEQUENCE if self.write => Plan::Device {
                write_value: mask(fired.value, self.width),
            },
            action::VALUE | action::SEQUENCE => Plan::NoDevice {
                read_value: mask(fired.value, self.width),
            },
            action::BITS if self.write => Plan::Device {
                write_value: fired.apply_bits(value, self.width),
            },
            action::DROP if self.write => Plan::NoDevice { read_value: 0 },
            action::REMOVE => Plan::NoDevice {
                read_value: self.all_ones(),
            },
            action::SIGBUS => Plan::BusError,
            action::DELAY => {
                sys::sleep_micros(fired.delay_ns.div_ceil(1000));
                keep
            }
            _ => keep,
        }
    }

    /// The value the program reads, from the value the device gave.
    pub fn after_read(&mut self, device: u64) -> u64 {
        match self.actor {
            Actor::Rule(fired) if fired.action == action::BITS => {
                fired.apply_bits(device, self.width)
            }
            Actor::Rule(_) => device,
            Actor::Plugin(plugin) => {
                let (answer, value) = self.call(plugin, PLUGIN_AFTER, device);
                if answer == PLUGIN_MODIFIED {
                    self.marked = true;
                    mask(value, self.width)
                } else {
                    device
                }
            }
        }
    }

    fn plugin_before(&mut self, plugin: AccessFn, value: u64) -> Plan {
        let (answer, new) = self.call(plugin, PLUGIN_BEFORE, if self.write { value } else { 0 });
        let new = mask(new, self.width);
        match answer {
            PLUGIN_MODIFIED if self.write => {
                self.marked = true;
                Plan::Device { write_value: new }
            }
            PLUGIN_MODIFIED => {
                self.marked = true;
                Plan::NoDevice { read_value: new }
            }
            PLUGIN_DROP => {
                self.marked = true;
                Plan::NoDevice {
                    read_value: self.all_ones(),
                }
            }
            _ => Plan::Device { write_value: value },
        }
    }

    fn call(&self, plugin: AccessFn, phase: u8, value: u64) -> (c_int, u64) {
        let mut access = PluginAccess {
            abi_version: PLUGIN_ABI_VERSION,
            map_id: self.map_id,
            offset: self.offset,
            value,
            width: self.width,
            dir: u8::from(self.write),
            phase,
            reserved: 0,
            tid: self.tid,
        };
        // SAFETY: the plugin's function with the header's signature, given
        // a valid struct that lives for the call.
        let answer = unsafe { plugin(&mut access) };
        (answer, access.value)
    }
}
