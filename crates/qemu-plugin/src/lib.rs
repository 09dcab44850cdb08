//! The QEMU TCG plugin that `mmiotrace vm` loads (`-plugin`): for every guest
//! instruction that touches a device, one line in QEMU's log naming the
//! instruction's address, so that the recorder can give each device access
//! its guest pc.
//!
//! QEMU's trace events (`memory_region_ops_read/write`) give the device's
//! view of an access: address, value, size, vCPU. They do not give the pc.
//! The plugin API (version 1, QEMU 7.2 to 8.1) gives the pc of each memory
//! instruction and whether the access went to I/O, but not the value. Both
//! write to QEMU's log from the vCPU's own thread, so in that log, per vCPU:
//!
//! - a memory access's trace events come first (QEMU performs the access),
//!   then the plugin's `mmiotrace-mem` line (memory callbacks run after the
//!   access), which the recorder pairs with the events before it;
//! - a port I/O instruction (`in`, `out`, `ins`, `outs`) has no memory
//!   callback, so an execution callback writes `mmiotrace-pio` before it
//!   runs, and the recorder gives its pc to the port accesses that follow.
//!
//! Line formats (docs/FORMAT.md, "Kernel drivers: `mmiotrace vm`"):
//!
//! ```text
//! mmiotrace-mem cpu 2 pc 0xffffffffc01a2b3c addr 0xfebc0008 size 4 r
//! mmiotrace-mem cpu 3 pc 0xffffffffc0603c75 addr unknown size 4 w
//! mmiotrace-pio cpu 0 pc 0xffffffff81a0b2c4
//! ```
//!
//! `addr unknown`: QEMU could not say where the access went (its TLB entry
//! was flushed during the access, as when the device raised an interrupt).
//!
//! The functions below are QEMU's, resolved against the QEMU executable when
//! it loads the plugin; the declarations follow QEMU's `qemu-plugin.h` for
//! API version 1.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::io::Write;

type PluginId = u64;
type MemInfo = u32;

#[repr(C)]
struct Tb {
    _opaque: [u8; 0],
}
#[repr(C)]
struct Insn {
    _opaque: [u8; 0],
}
#[repr(C)]
struct HwAddr {
    _opaque: [u8; 0],
}

/// `enum qemu_plugin_cb_flags`: the callback reads no guest registers.
const CB_NO_REGS: c_int = 0;
/// `enum qemu_plugin_mem_rw`: loads and stores.
const MEM_RW: c_int = 3;

type TbTransCb = extern "C" fn(PluginId, *mut Tb);
type MemCb = extern "C" fn(c_uint, MemInfo, u64, *mut c_void);
type UdataCb = extern "C" fn(c_uint, *mut c_void);

unsafe extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: TbTransCb);
    fn qemu_plugin_tb_n_insns(tb: *const Tb) -> usize;
    fn qemu_plugin_tb_get_insn(tb: *const Tb, index: usize) -> *mut Insn;
    fn qemu_plugin_insn_data(insn: *const Insn) -> *const c_void;
    fn qemu_plugin_insn_size(insn: *const Insn) -> usize;
    fn qemu_plugin_insn_vaddr(insn: *const Insn) -> u64;
    fn qemu_plugin_register_vcpu_mem_cb(
        insn: *mut Insn,
        cb: MemCb,
        flags: c_int,
        rw: c_int,
        userdata: *mut c_void,
    );
    fn qemu_plugin_register_vcpu_insn_exec_cb(
        insn: *mut Insn,
        cb: UdataCb,
        flags: c_int,
        userdata: *mut c_void,
    );
    fn qemu_plugin_mem_size_shift(info: MemInfo) -> c_uint;
    fn qemu_plugin_mem_is_store(info: MemInfo) -> bool;
    fn qemu_plugin_get_hwaddr(info: MemInfo, vaddr: u64) -> *mut HwAddr;
    fn qemu_plugin_hwaddr_is_io(hwaddr: *const HwAddr) -> bool;
    fn qemu_plugin_hwaddr_phys_addr(hwaddr: *const HwAddr) -> u64;
    fn qemu_plugin_outs(text: *const c_char);
}

/// The plugin API version this plugin was written against; QEMU refuses a
/// plugin whose version it does not support.
#[unsafe(no_mangle)]
pub static qemu_plugin_version: c_int = 1;

/// QEMU's entry point: registers the translation callback.
///
/// # Safety
/// Called by QEMU once, with the id QEMU assigned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    _info: *const c_void,
    _argc: c_int,
    _argv: *mut *mut c_char,
) -> c_int {
    // SAFETY: QEMU calls install with its own id; the callback is a plain
    // function that lives as long as the process.
    unsafe { qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate) };
    0
}

/// Instruments each instruction of a translated block: a memory callback
/// on every one (only an access that reached I/O writes a line), and an
/// execution callback on port I/O instructions. The instruction's address
/// travels as the callbacks' user data.
extern "C" fn on_translate(_id: PluginId, tb: *mut Tb) {
    // SAFETY: `tb` is the block QEMU is translating, valid for this call;
    // instruction handles and their bytes are valid during it too.
    unsafe {
        for index in 0..qemu_plugin_tb_n_insns(tb) {
            let insn = qemu_plugin_tb_get_insn(tb, index);
            let pc = qemu_plugin_insn_vaddr(insn);
            let size = qemu_plugin_insn_size(insn);
            let data = qemu_plugin_insn_data(insn).cast::<u8>();
            let bytes = if data.is_null() {
                &[][..]
            } else {
                std::slice::from_raw_parts(data, size)
            };
            let user = pc as usize as *mut c_void;
            if is_port_io(bytes) {
                qemu_plugin_register_vcpu_insn_exec_cb(insn, on_port_io, CB_NO_REGS, user);
            }
            qemu_plugin_register_vcpu_mem_cb(insn, on_memory, CB_NO_REGS, MEM_RW, user);
        }
    }
}

/// Whether an x86 instruction is `in`, `out`, `ins` or `outs`: legacy
/// prefixes and a REX prefix skipped, then the opcode byte.
fn is_port_io(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let [first, tail @ ..] = rest {
        match first {
            0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {
                rest = tail
            }
            _ => break,
        }
    }
    if let [0x40..=0x4f, tail @ ..] = rest {
        rest = tail;
    }
    matches!(rest.first(), Some(0x6c..=0x6f | 0xe4..=0xe7 | 0xec..=0xef))
}

extern "C" fn on_memory(vcpu: c_uint, info: MemInfo, vaddr: u64, user: *mut c_void) {
    // SAFETY: `info` and `vaddr` are the access QEMU just performed on this
    // vCPU's thread; the handle it returns is valid during this callback.
    let (phys, size, store) = unsafe {
        let hwaddr = qemu_plugin_get_hwaddr(info, vaddr);
        // No answer: the access's TLB entry is gone already (the device
        // raised an interrupt, and that flushed the TLB). It may have been
        // a device access, so the line goes out without an address.
        let phys = if hwaddr.is_null() {
            None
        } else if qemu_plugin_hwaddr_is_io(hwaddr) {
            Some(qemu_plugin_hwaddr_phys_addr(hwaddr))
        } else {
            return;
        };
        (
            phys,
            1u32 << qemu_plugin_mem_size_shift(info),
            qemu_plugin_mem_is_store(info),
        )
    };
    let dir = if store { 'w' } else { 'r' };
    let pc = user as usize;
    match phys {
        Some(phys) => emit(format_args!(
            "mmiotrace-mem cpu {vcpu} pc {pc:#x} addr {phys:#x} size {size} {dir}\n"
        )),
        None => emit(format_args!(
            "mmiotrace-mem cpu {vcpu} pc {pc:#x} addr unknown size {size} {dir}\n"
        )),
    }
}

extern "C" fn on_port_io(vcpu: c_uint, user: *mut c_void) {
    emit(format_args!(
        "mmiotrace-pio cpu {vcpu} pc {:#x}\n",
        user as usize
    ));
}

/// Writes one line to QEMU's log (`-d plugin`), formatted on the stack.
fn emit(args: std::fmt::Arguments<'_>) {
    let mut line = [0u8; 128];
    let mut cursor = std::io::Cursor::new(&mut line[..127]);
    if cursor.write_fmt(args).is_err() {
        return;
    }
    // The buffer was zeroed and the last byte never written: the text is
    // NUL-terminated.
    // SAFETY: a NUL-terminated string that outlives the call.
    unsafe { qemu_plugin_outs(line.as_ptr().cast()) };
}
