//! The fast path of a trampoline: one load or store on the alias, logged
//! straight into the thread's ring, in machine code with no call, no
//! vector state and no system call (docs/ARCHITECTURE.md, "Patched
//! sites"). Anything it does not handle it leaves, with every register
//! and flag as it found them, to the trampoline's general path.
//!
//! In order:
//!
//! 1. step over the red zone; save RAX, RCX, RDX, RSI, RDI and R9-R11;
//!    the operand's address in RCX (a store's value in R9) while every
//!    other register still holds the program's value; the arithmetic
//!    flags in R11 (`lahf`, `seto`: far cheaper than `pushf`/`popf`);
//! 2. the thread's slot block from its thread block (`fs:`), none yet, or
//!    a fast path or push of this thread under way (a signal handler
//!    interrupted it): general path;
//! 3. the thread block's and the slot's busy flags set; the site's cached
//!    range entry: live, holding the whole access, permitting it; room
//!    in the ring (by the read position seen last; else the file not
//!    stopped, the recorder not gone, and room by the ring's own);
//!    otherwise general path;
//! 4. the access on the alias, with one `mov` of its width; a load's
//!    value into the thread block's value;
//! 5. the record written, a compact one (`mmiotrace_shm::compact`: one
//!    32-byte ring entry; the time is the raw TSC, which the recorder
//!    converts), the time read with the ring's stamping flag set,
//!    `write_pos` stored: published; the flags cleared;
//! 6. flags and registers back; a load runs the site's instruction with
//!    its memory operand rewritten to the value in the thread block
//!    (so `movzx`, `cmp`, `test` behave exactly as they do), and clears
//!    the thread block's flag; back after the site.
//!
//! A read-modify-write (`add [mem], reg`, `inc [mem]`, ...) is a load
//! whose instruction, run on the thread block's value, is followed by a
//! second half: the value stored to the alias with one `mov` of its
//! width and logged, the flags the instruction set kept. The device sees
//! a read and then a write, as on the fault path (which runs such an
//! instruction displaced, on a copy of the value).

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use mmiotrace_shm::{ENTRY_SIZE, RawLayout, compact};

use super::asm::{Asm, Mem, Size};
use crate::ranges::entry_at;
use crate::tls::{slot_at, thread_at};
use crate::{emulate, stub};

const RAX: u8 = 0;
const RCX: u8 = 1;
const RDX: u8 = 2;
const RSI: u8 = 6;
const RDI: u8 = 7;
const R9: u8 = 9;
const R10: u8 = 10;
const R11: u8 = 11;

/// The registers the fast path uses, in the order it pushes them (every
/// one saved and restored costs two instructions of the fast path's
/// some 90: RCX keeps the operand's address until it becomes the offset).
const SCRATCH: [u8; 8] = [RAX, RCX, RDX, RSI, RDI, R9, R10, R11];
/// The first of them, pushed before the check for an untraced address.
const EARLY: usize = 3;

/// Offsets of the words of a compact record (`mmiotrace_shm::compact`).
mod compact_at {
    pub const HEAD: i32 = 0;
    pub const TIME: i32 = 8;
    pub const KEY: i32 = 16;
    pub const VALUE: i32 = 24;
}
const _: () = assert!(ENTRY_SIZE == 32);

/// Where the stack slot of scratch register `reg` is, after the pushes.
fn saved_at(reg: u8) -> Option<i32> {
    let pushed = SCRATCH.iter().position(|&r| r == reg)?;
    Some(8 * (SCRATCH.len() - 1 - pushed) as i32)
}

/// What the fast path needs to know beyond the instruction.
pub struct SiteInfo {
    /// The site's address.
    pub pc: u64,
    /// The original instruction's bytes.
    pub original: [u8; 16],
    /// The address of the site's cached range entry (`Site::range`).
    pub cache: u64,
    /// The thread block's offset from the thread pointer.
    pub thread_block: i32,
}

/// Labels of the ways out to the general path: the `jcc`s to bind there.
pub struct Exits {
    /// Outside every range ever traced: straight to the original
    /// instruction.
    pub untraced: [usize; 2],
    /// Before any flag was set.
    pub before_flags: [usize; 4],
    pub before_flags_len: usize,
    /// After both busy flags were set.
    pub after_flags: [usize; 12],
    pub after_flags_len: usize,
}

impl Exits {
    fn new() -> Exits {
        Exits {
            untraced: [0; 2],
            before_flags: [0; 4],
            before_flags_len: 0,
            after_flags: [0; 12],
            after_flags_len: 0,
        }
    }

    fn early(&mut self, at: usize) -> Option<()> {
        *self.before_flags.get_mut(self.before_flags_len)? = at;
        self.before_flags_len += 1;
        Some(())
    }

    fn late(&mut self, at: usize) -> Option<()> {
        *self.after_flags.get_mut(self.after_flags_len)? = at;
        self.after_flags_len += 1;
        Some(())
    }
}

/// How the access is made.
enum Access {
    /// The memory operand is read; the instruction, rewritten, runs after.
    Load(stub::Rewritten),
    /// Read, then written: the instruction, rewritten, runs between.
    ReadModifyWrite(stub::Rewritten),
    /// A vector load: the instruction on `[rdx]` (the alias), then its
    /// register stored to the thread block's value for the record.
    VectorLoad {
        on_alias: stub::Rewritten,
        register_out: stub::Rewritten,
        aligned: bool,
    },
    /// A vector store: the instruction on `[rdx]`, then on the thread
    /// block's value for the record.
    VectorStore {
        on_alias: stub::Rewritten,
        on_value: stub::Rewritten,
        aligned: bool,
    },
    /// An AVX-512 move under an opmask: the instruction on `[rdx]` (the
    /// alias), then its register stored whole to the thread block's value;
    /// one record per selected element (`mask`, the opmask's number).
    Masked {
        on_alias: stub::Rewritten,
        register_out: stub::Rewritten,
        aligned: bool,
        store: bool,
        element: usize,
        mask: u8,
    },
    /// `mov [mem], reg`: the register (its number).
    StoreRegister(u8),
    /// `mov [mem], imm`: the value, cut to the width.
    StoreImmediate(u64),
}

fn access_of(insn: &Instruction, site: &SiteInfo) -> Option<Access> {
    let value = site.thread_block + thread_at::VALUE;
    if let Some(element) = super::masked_vector_move(insn) {
        let store = insn.op0_kind() == OpKind::Memory;
        let register = if store {
            insn.op1_register()
        } else {
            insn.op0_register()
        };
        let mask = u8::try_from(insn.op_mask() as usize - Register::K0 as usize).ok()?;
        return Some(Access::Masked {
            on_alias: stub::rewrite_rdx(&site.original, insn)?,
            register_out: vector_store_fs(register, value)?,
            aligned: aligned_move(insn),
            store,
            element,
            mask: (1..8).contains(&mask).then_some(mask)?,
        });
    }
    if super::vector_move(insn) {
        let on_alias = stub::rewrite_rdx(&site.original, insn)?;
        let aligned = aligned_move(insn);
        return Some(if insn.op0_kind() == OpKind::Memory {
            Access::VectorStore {
                on_alias,
                on_value: stub::rewrite_fs(&site.original, insn, value)?,
                aligned,
            }
        } else {
            Access::VectorLoad {
                on_alias,
                register_out: vector_store_fs(insn.op0_register(), value)?,
                aligned,
            }
        });
    }
    let store = insn.mnemonic() == Mnemonic::Mov && insn.op0_kind() == OpKind::Memory;
    if !store {
        let rewritten =
            stub::rewrite_fs(&site.original, insn, site.thread_block + thread_at::VALUE)?;
        return Some(if super::read_modify_write(insn) {
            Access::ReadModifyWrite(rewritten)
        } else {
            Access::Load(rewritten)
        });
    }
    let width = insn.memory_size().size();
    let mask = if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    };
    match insn.op1_kind() {
        OpKind::Register => {
            let number = emulate::gpr_index(insn.op1_register().full_register())?;
            Some(Access::StoreRegister(u8::try_from(number).ok()?))
        }
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate32to64 => Some(Access::StoreImmediate(insn.immediate(1) & mask)),
        _ => None,
    }
}

/// Whether `insn` is a vector move that requires an aligned operand (and
/// raises #GP at the site otherwise, mask or no mask).
fn aligned_move(insn: &Instruction) -> bool {
    matches!(
        insn.mnemonic(),
        Mnemonic::Movaps
            | Mnemonic::Movapd
            | Mnemonic::Movdqa
            | Mnemonic::Vmovaps
            | Mnemonic::Vmovapd
            | Mnemonic::Vmovdqa
            | Mnemonic::Vmovdqa32
            | Mnemonic::Vmovdqa64
    )
}

/// Emits the fast path of `insn` (a site `patchable()` accepted), which
/// jumps back to `back` when done; returns the exits to the general path,
/// which the caller binds ([`emit_exits`]). `None` for a form it does not
/// handle (nothing emitted that matters: the caller starts over).
pub fn emit(code: &mut Asm, insn: &Instruction, site: &SiteInfo, back: u64) -> Option<Exits> {
    let width = insn.memory_size().size();
    let access = access_of(insn, site)?;
    let vector = matches!(
        access,
        Access::VectorLoad { .. } | Access::VectorStore { .. } | Access::Masked { .. }
    );
    // A general register's width (a vector move's is 16 or 32 bytes).
    let size = if vector {
        Size::Quad
    } else {
        Size::of_width(width)?
    };
    let mut exits = Exits::new();
    let thread = |at: i32| Mem::Fs(site.thread_block + at);

    // 1. The address and the flags with three registers saved; an
    // address outside every range ever traced (a site that copies to
    // plain memory too, such as glibc's `memcpy`) runs the original
    // instruction at once, at the cost of these few instructions. Then
    // the other registers, a store's value in R9, the flags in R11; the
    // address stays in RCX.
    exits.untraced = emit_untraced_check(code, insn)?;
    for &reg in SCRATCH.iter().skip(EARLY) {
        code.push(reg);
    }
    match access {
        Access::StoreRegister(reg) => match saved_at(reg) {
            Some(at) => code.load64(R9, Mem::Base(4, at)),
            None => code.mov_reg(R9, reg),
        },
        Access::StoreImmediate(value) => code.mov_imm64(R9, value),
        _ => {}
    }
    code.emit(&[0x44, 0x0f, 0xb7, 0xd8]); // movzx r11d, ax

    // 2. The slot block; no fast path or push of this thread under way.
    code.load64(RDI, thread(thread_at::SLOT_BLOCK));
    code.test_self(RDI);
    exits.early(code.jcc_forward(0x4))?; // jz
    code.cmp_byte_imm(thread(thread_at::BUSY), 0);
    exits.early(code.jcc_forward(0x5))?; // jnz
    code.cmp_byte_imm(Mem::Base(RDI, slot_at::PUSHING), 0);
    exits.early(code.jcc_forward(0x5))?;

    // 3. Flags set; the range, the file, the ring.
    code.store_byte_imm(thread(thread_at::BUSY), 1);
    code.store_byte_imm(Mem::Base(RDI, slot_at::PUSHING), 1);
    code.mov_imm64(RSI, site.cache);
    code.load64(RSI, Mem::Base(RSI, 0));
    code.test_self(RSI);
    exits.late(code.jcc_forward(0x4))?;
    code.cmp_dword_imm(Mem::Base(RSI, entry_at::STATE), entry_at::LIVE);
    exits.late(code.jcc_forward(0x5))?;
    // An aligned vector move on an unaligned address: the general path
    // runs the instruction itself, which raises its #GP at the site.
    if let Access::VectorLoad { aligned: true, .. }
    | Access::VectorStore { aligned: true, .. }
    | Access::Masked { aligned: true, .. } = access
    {
        code.op_reg(Size::Quad, false, &[0xf7], 0, RCX); // test rcx, width - 1
        code.emit(&((width - 1) as u32).to_le_bytes());
        exits.late(code.jcc_forward(0x5))?;
    }
    // rcx = address - start: below len, and len - rcx >= width.
    code.alu_load(0x2b, RCX, Mem::Base(RSI, entry_at::START));
    code.alu_load(0x3b, RCX, Mem::Base(RSI, entry_at::LEN));
    exits.late(code.jcc_forward(0x3))?; // jae
    code.lea(RDX, RCX, width as i32);
    code.alu_load(0x3b, RDX, Mem::Base(RSI, entry_at::LEN));
    exits.late(code.jcc_forward(0x7))?; // ja
    // The protection allows the access: every bit of `needed` in it.
    let needed = match access {
        Access::Masked { store: true, .. } => libc::PROT_WRITE,
        Access::Load(_) | Access::VectorLoad { .. } | Access::Masked { .. } => libc::PROT_READ,
        Access::ReadModifyWrite(_) => libc::PROT_READ | libc::PROT_WRITE,
        Access::StoreRegister(_) | Access::StoreImmediate(_) | Access::VectorStore { .. } => {
            libc::PROT_WRITE
        }
    };
    if needed.count_ones() == 1 {
        code.test_dword_imm(Mem::Base(RSI, entry_at::PROT), needed as u32);
        exits.late(code.jcc_forward(0x4))?; // jz
    } else {
        code.op_mem(
            Size::Dword,
            false,
            &[0x8b],
            RDX,
            Mem::Base(RSI, entry_at::PROT),
        );
        code.op_reg(Size::Dword, false, &[0xf7], 2, RDX); // not edx
        code.op_reg(Size::Dword, false, &[0xf7], 0, RDX); // test edx, needed
        code.emit(&(needed as u32).to_le_bytes());
        exits.late(code.jcc_forward(0x5))?;
    }
    // rax = write_pos; full when write_pos + entries - read_pos >
    // ring_entries, with the read_pos seen last, and then with the ring's
    // own. A read-modify-write needs room for two records; a vector
    // move's record has its value in the entries after it.
    //
    // Only then is the file looked at: stopped, or its recorder gone, the
    // general path says so and logs nothing. Until then records go into a
    // ring that nobody may read again, at most a ring's worth of them:
    // the program is the same either way, and the common case is spared
    // the header's two loads and tests.
    let rmw = matches!(access, Access::ReadModifyWrite(_));
    let ext = match access {
        Access::VectorLoad { .. } | Access::VectorStore { .. } => width.div_ceil(ENTRY_SIZE),
        _ => 0,
    };
    // A masked move: a record for each element, at most.
    let more = match access {
        Access::Masked { element, .. } => (width / element) as i32 - 1,
        Access::ReadModifyWrite(_) => 1,
        _ => ext as i32,
    };
    code.load64(R10, Mem::Base(RDI, slot_at::SLOT_HEADER));
    code.load64(RAX, Mem::Base(R10, RawLayout::WRITE_POS as i32));
    code.mov_reg(RDX, RAX);
    code.alu_load(0x2b, RDX, Mem::Base(RDI, slot_at::READ_POS_SEEN));
    if more != 0 {
        code.lea(RDX, RDX, more);
    }
    code.alu_load(0x3b, RDX, Mem::Base(RDI, slot_at::RING_ENTRIES));
    let room = code.jcc_forward(0x2); // jb
    code.load64(RDX, Mem::Base(RDI, slot_at::HEADER));
    code.cmp_dword_imm(Mem::Base(RDX, RawLayout::STOPPED as i32), 0);
    exits.late(code.jcc_forward(0x5))?;
    code.test_dword_imm(
        Mem::Base(RDX, RawLayout::RECORDER_ALIVE as i32),
        RawLayout::RECORDER_GONE,
    );
    exits.late(code.jcc_forward(0x5))?;
    code.load64(RDX, Mem::Base(R10, RawLayout::READ_POS as i32));
    code.store64(Mem::Base(RDI, slot_at::READ_POS_SEEN), RDX);
    code.op_reg(Size::Quad, false, &[0xf7], 3, RDX); // neg rdx
    code.op_reg(Size::Quad, false, &[0x01], RAX, RDX); // add rdx, rax
    if more != 0 {
        code.lea(RDX, RDX, more);
    }
    code.alu_load(0x3b, RDX, Mem::Base(RDI, slot_at::RING_ENTRIES));
    exits.late(code.jcc_forward(0x3))?;
    code.bind(room);

    // 4. The access: rdx = the alias address; r9 = the value.
    code.load64(RDX, Mem::Base(RSI, entry_at::ALIAS));
    code.op_reg(Size::Quad, false, &[0x01], RCX, RDX); // add rdx, rcx
    match access {
        Access::Load(_) | Access::ReadModifyWrite(_) => {
            code.load_zero_extended(size, R9, Mem::Base(RDX, 0));
            code.store64(thread(thread_at::VALUE), R9);
            if rmw {
                code.store64(thread(thread_at::RMW_ALIAS), RDX);
            }
        }
        Access::StoreRegister(_) | Access::StoreImmediate(_) => {
            code.store_sized(size, Mem::Base(RDX, 0), R9);
            code.zero_extend(size, R9);
        }
        Access::VectorLoad {
            on_alias,
            register_out,
            ..
        } => {
            code.emit(on_alias.bytes.get(..on_alias.len)?);
            code.emit(register_out.bytes.get(..register_out.len)?);
            code.load64(R9, thread(thread_at::VALUE));
        }
        Access::VectorStore {
            on_alias, on_value, ..
        } => {
            code.emit(on_alias.bytes.get(..on_alias.len)?);
            code.emit(on_value.bytes.get(..on_value.len)?);
            code.load64(R9, thread(thread_at::VALUE));
        }
        Access::Masked {
            on_alias,
            register_out,
            store,
            element,
            mask,
            ..
        } => {
            code.emit(on_alias.bytes.get(..on_alias.len)?);
            code.emit(register_out.bytes.get(..register_out.len)?);
            // 5. Its records, published.
            emit_masked_records(code, site, width / element, element, mask, store)?;
        }
    }

    if !matches!(access, Access::Masked { .. }) {
        // 5. The compact record at ring index (write_pos & mask), in RSI (the
        // range's key taken first), a vector's value in the entries after it,
        // published.
        let write = matches!(
            access,
            Access::StoreRegister(_) | Access::StoreImmediate(_) | Access::VectorStore { .. }
        );
        code.alu_load(0x03, RCX, Mem::Base(RSI, entry_at::COMPACT));
        record_at_write_pos(code);
        code.store64(Mem::Base(RSI, compact_at::VALUE), R9);
        code.store64(Mem::Base(RSI, compact_at::KEY), RCX);
        if rmw {
            code.store64(thread(thread_at::RMW_KEY), RCX);
        }
        code.mov_imm64(RCX, compact::head(write, width as u8, ext as u8, site.pc));
        code.store64(Mem::Base(RSI, compact_at::HEAD), RCX);
        for entry in 0..ext {
            // The value whole, zero past its width; each entry at its own
            // ring index (the ring may wrap between them).
            code.lea(RDX, RAX, 1 + entry as i32);
            code.alu_load(0x23, RDX, Mem::Base(RDI, slot_at::MASK));
            code.shl(RDX, 5);
            code.alu_load(0x03, RDX, Mem::Base(RDI, slot_at::RECORDS));
            for qword in 0..4i32 {
                let at = entry as i32 * 4 + qword;
                if (at as usize) < width / 8 {
                    code.load64(RCX, thread(thread_at::VALUE + 8 * at));
                    code.store64(Mem::Base(RDX, 8 * qword), RCX);
                } else {
                    code.store64_imm(Mem::Base(RDX, 8 * qword), 0);
                }
            }
        }
        publish(code, 1 + ext as u8);
        if rmw {
            // Set again until the store: the alias stays mapped meanwhile.
            code.store_byte_imm(Mem::Base(RDI, slot_at::PUSHING), 1);
        }
    }

    // 6. Back to the program's state; a load's instruction (and a
    // read-modify-write's store); back.
    match access {
        Access::Load(rewritten) => {
            restore(code);
            code.emit(rewritten.bytes.get(..rewritten.len)?);
            code.store_byte_imm(thread(thread_at::BUSY), 0);
        }
        Access::VectorLoad { .. } | Access::VectorStore { .. } | Access::Masked { .. } => {
            code.store_byte_imm(thread(thread_at::BUSY), 0);
            restore(code);
        }
        Access::ReadModifyWrite(rewritten) => {
            restore(code);
            code.emit(rewritten.bytes.get(..rewritten.len)?);
            emit_store_half(code, size, site, width);
        }
        Access::StoreRegister(_) | Access::StoreImmediate(_) => {
            code.store_byte_imm(thread(thread_at::BUSY), 0);
            restore(code);
        }
    }
    code.jmp(back)?;
    Some(exits)
}

/// The records of a masked move whose register is in the thread block's
/// value (and the range entry in RSI, the offset in RCX, `write_pos` in
/// RAX, the ring checked for room for every element): one compact record
/// for each element the opmask selects, in element order, as the fault
/// path logs them (one access of the element's width each), all with one
/// time; published together, the slot's flag cleared. The head and the
/// first element's key are kept on the stack meanwhile; R10 is reloaded.
fn emit_masked_records(
    code: &mut Asm,
    site: &SiteInfo,
    elements: usize,
    element: usize,
    mask: u8,
    write: bool,
) -> Option<()> {
    let scale: u8 = match element {
        1 => 0,
        2 => 1,
        4 => 2,
        8 => 3,
        _ => return None,
    };
    code.alu_load(0x03, RCX, Mem::Base(RSI, entry_at::COMPACT));
    code.push(RCX); // [rsp + 8]: the key of element 0
    code.mov_imm64(RDX, compact::head(write, element as u8, 0, site.pc));
    code.push(RDX); // [rsp]: the head
    code.store64_imm(Mem::Base(R10, RawLayout::STAMPING as i32), 1);
    code.mov_reg(R9, RAX);
    code.emit(&[0x0f, 0x31]); // rdtsc
    code.shl(RDX, 32);
    code.op_reg(Size::Quad, false, &[0x09], RDX, RAX); // or rax, rdx
    // rcx = the opmask, cut to the elements: kmovw (AVX512F) when it has
    // 16 bits at most, kmovq (AVX512BW, which byte and word elements need
    // anyway) for 32 or 64.
    if elements <= 16 {
        code.emit(&[0xc5, 0xf8, 0x93, 0xc8 | mask]); // kmovw ecx, k
    } else {
        code.emit(&[0xc4, 0xe1, 0xfb, 0x93, 0xc8 | mask]); // kmovq rcx, k
    }
    if elements < 64 {
        code.mov_imm64(RDX, (1u64 << elements) - 1);
        code.op_reg(Size::Quad, false, &[0x21], RDX, RCX); // and rcx, rdx
    }
    let top = code.here();
    code.test_self(RCX);
    let done = code.jcc_forward(0x4); // jz
    code.emit(&[0xf3, 0x48, 0x0f, 0xbc, 0xd1]); // tzcnt rdx, rcx
    code.mov_reg(RSI, R9);
    code.alu_load(0x23, RSI, Mem::Base(RDI, slot_at::MASK));
    code.shl(RSI, 5);
    code.alu_load(0x03, RSI, Mem::Base(RDI, slot_at::RECORDS));
    code.store64(Mem::Base(RSI, compact_at::TIME), RAX);
    code.load64(R10, Mem::Base(4, 0));
    code.store64(Mem::Base(RSI, compact_at::HEAD), R10);
    code.load64(R10, Mem::Base(4, 8));
    code.emit(&[0x4d, 0x8d, 0x14, (scale << 6) | (2 << 3) | 2]); // lea r10, [r10 + rdx*element]
    code.store64(Mem::Base(RSI, compact_at::KEY), R10);
    // r10 = the element, zero-extended: fs:[value + rdx*element].
    let value = site.thread_block + thread_at::VALUE;
    let sib = (scale << 6) | (2 << 3) | 5;
    match element {
        1 => code.emit(&[0x64, 0x44, 0x0f, 0xb6, 0x14, sib]), // movzx r10d, byte
        2 => code.emit(&[0x64, 0x44, 0x0f, 0xb7, 0x14, sib]), // movzx r10d, word
        4 => code.emit(&[0x64, 0x44, 0x8b, 0x14, sib]),       // mov r10d
        _ => code.emit(&[0x64, 0x4c, 0x8b, 0x14, sib]),       // mov r10
    }
    code.emit(&value.to_le_bytes());
    code.store64(Mem::Base(RSI, compact_at::VALUE), R10);
    code.lea(R9, R9, 1);
    code.lea(RDX, RCX, -1);
    code.op_reg(Size::Quad, false, &[0x21], RDX, RCX); // and rcx, rdx: the next
    code.jmp(top)?;
    code.bind(done);
    code.lea_rsp(16);
    code.load64(R10, Mem::Base(RDI, slot_at::SLOT_HEADER));
    // SYNC POINT: as in publish().
    code.store64(Mem::Base(R10, RawLayout::WRITE_POS as i32), R9);
    code.store64_imm(Mem::Base(R10, RawLayout::STAMPING as i32), 0);
    code.store_byte_imm(Mem::Base(RDI, slot_at::PUSHING), 0);
    Some(())
}

/// RSI = the entry at `write_pos` (RAX): `entries + (write_pos & mask) * 32`.
fn record_at_write_pos(code: &mut Asm) {
    code.mov_reg(RSI, RAX);
    code.alu_load(0x23, RSI, Mem::Base(RDI, slot_at::MASK));
    code.shl(RSI, 5);
    code.alu_load(0x03, RSI, Mem::Base(RDI, slot_at::RECORDS));
}

/// The rest of a push whose compact record at RSI has every word but the
/// time, and is followed by its value's entries (`entries` in all): the
/// slot's stamping flag set, the time read, `write_pos` (RAX, in the slot
/// header at R10) advanced and published, the flag cleared; the slot's
/// flag of a push under way cleared. Uses RDX and R9.
fn publish(code: &mut Asm, entries: u8) {
    // Set before the time is read: the recorder merges the rings by time
    // and waits for a ring whose producer is stamping (Shm::publication).
    code.store64_imm(Mem::Base(R10, RawLayout::STAMPING as i32), 1);
    code.lea(R9, RAX, i32::from(entries));
    code.emit(&[0x0f, 0x31]); // rdtsc
    code.shl(RDX, 32);
    code.op_reg(Size::Quad, false, &[0x09], RDX, RAX); // or rax, rdx
    code.store64(Mem::Base(RSI, compact_at::TIME), RAX);
    // SYNC POINT: pairs with the Acquire loads of write_pos in
    // Shm::consume() and Shm::publication() (a plain store is a release
    // store on x86), and so does the flag's clearing after it.
    code.store64(Mem::Base(R10, RawLayout::WRITE_POS as i32), R9);
    code.store64_imm(Mem::Base(R10, RawLayout::STAMPING as i32), 0);
    code.store_byte_imm(Mem::Base(RDI, slot_at::PUSHING), 0);
}

/// The second half of a read-modify-write, after its instruction ran on
/// the thread block's value: that value stored to the alias and logged
/// (the ring had room for both records, and the slot's flag stayed set),
/// the flags the instruction left kept.
fn emit_store_half(code: &mut Asm, size: Size, site: &SiteInfo, width: usize) {
    let thread = |at: i32| Mem::Fs(site.thread_block + at);
    save_registers(code);
    save_flags(code);
    code.load64(RDI, thread(thread_at::SLOT_BLOCK));
    code.load_zero_extended(size, R9, thread(thread_at::VALUE));
    code.load64(RDX, thread(thread_at::RMW_ALIAS));
    code.store_sized(size, Mem::Base(RDX, 0), R9);
    code.load64(R10, Mem::Base(RDI, slot_at::SLOT_HEADER));
    code.load64(RAX, Mem::Base(R10, RawLayout::WRITE_POS as i32));
    record_at_write_pos(code);
    code.store64(Mem::Base(RSI, compact_at::VALUE), R9);
    code.load64(RCX, thread(thread_at::RMW_KEY));
    code.store64(Mem::Base(RSI, compact_at::KEY), RCX);
    code.mov_imm64(RCX, compact::head(true, width as u8, 0, site.pc));
    code.store64(Mem::Base(RSI, compact_at::HEAD), RCX);
    publish(code, 1);
    code.store_byte_imm(thread(thread_at::BUSY), 0);
    restore(code);
}

/// `movdqu fs:[offset], xmmN` or `vmovdqu fs:[offset], ymmN` (N < 16),
/// or `vmovdqu64 fs:[offset], xmmN/ymmN/zmmN` (EVEX, for ZMM and for
/// N >= 16): a vector load's register, stored for its record. Checked by
/// decoding.
fn vector_store_fs(register: Register, offset: i32) -> Option<stub::Rewritten> {
    let number = u8::try_from(register.number()).ok().filter(|&n| n < 32)?;
    let mut bytes = [0u8; 16];
    let mut len = 0;
    let mut put = |part: &[u8]| {
        for &byte in part {
            if let Some(slot) = bytes.get_mut(len) {
                *slot = byte;
            }
            len += 1;
        }
    };
    put(&[0x64]);
    let code = if register.is_zmm() || number >= 16 {
        // EVEX.L'L.F3.0F.W1 7F /r. P0: ~R ~X ~B ~R' 0 0 m m (map 0F);
        // P1: W ~vvvv 1 p p (F3); P2: z L'L b ~V' a a a (no mask).
        let (length, code) = if register.is_zmm() {
            (2u8, Code::EVEX_Vmovdqu64_zmmm512_k1z_zmm)
        } else if register.is_ymm() {
            (1, Code::EVEX_Vmovdqu64_ymmm256_k1z_ymm)
        } else if register.is_xmm() {
            (0, Code::EVEX_Vmovdqu64_xmmm128_k1z_xmm)
        } else {
            return None;
        };
        let not = |bit: u8| u8::from(bit == 0);
        put(&[
            0x62,
            (not((number >> 3) & 1) << 7)
                | (1 << 6)
                | (1 << 5)
                | (not((number >> 4) & 1) << 4)
                | 0b01,
            0b1111_1110,
            (length << 5) | (1 << 3),
            0x7f,
        ]);
        code
    } else if register.is_xmm() {
        put(&[0xf3]);
        if number >= 8 {
            put(&[0x44]);
        }
        put(&[0x0f, 0x7f]);
        Code::Movdqu_xmmm128_xmm
    } else if register.is_ymm() {
        // VEX2: ~R, vvvv = 1111 (none), L = 1 (256 bits), pp = F3.
        put(&[
            0xc5,
            (u8::from(number < 8) << 7) | (0b1111 << 3) | (1 << 2) | 0b10,
            0x7f,
        ]);
        Code::VEX_Vmovdqu_ymmm256_ymm
    } else {
        return None;
    };
    put(&[((number & 7) << 3) | 0b100, 0x25]);
    put(&offset.to_le_bytes());
    let out = stub::Rewritten { bytes, len };
    let copy = Decoder::new(64, bytes.get(..len)?, DecoderOptions::NONE).decode();
    let right = copy.len() == len
        && copy.code() == code
        && copy.op1_register() == register
        && copy.op_mask() == Register::None
        && copy.segment_prefix() == Register::FS
        && copy.memory_base() == Register::None
        && copy.memory_index() == Register::None
        && copy.memory_displacement64() == offset as i64 as u64;
    right.then_some(out)
}

/// Below the red zone, the scratch registers pushed.
fn save_registers(code: &mut Asm) {
    code.lea_rsp(-128);
    for &reg in SCRATCH.iter() {
        code.push(reg);
    }
}

/// The arithmetic flags into R11 (`lahf`, `seto`), undone by [`restore`].
fn save_flags(code: &mut Asm) {
    code.emit(&[0x9f, 0x0f, 0x90, 0xc0]); // lahf; seto al
    code.emit(&[0x44, 0x0f, 0xb7, 0xd8]); // movzx r11d, ax
}

/// The flags from R11, the scratch registers, the stack pointer.
fn restore(code: &mut Asm) {
    code.emit(&[0x44, 0x89, 0xd8]); // mov eax, r11d
    code.emit(&[0x04, 0x7f]); // add al, 0x7f: OF back
    code.emit(&[0x9e]); // sahf
    for &reg in SCRATCH.iter().rev() {
        code.pop(reg);
    }
    code.lea_rsp(128);
}

/// The check a trampoline starts with: the red zone stepped over, RAX,
/// RCX and RDX pushed, the operand's address in RCX, the flags in AX
/// (`lahf`, `seto`); an address below the lowest start or at or above the
/// highest end of every range ever traced (`ranges::bounds_address`)
/// jumps to the returned labels (see [`emit_untraced_exit`]).
pub fn emit_untraced_check(code: &mut Asm, insn: &Instruction) -> Option<[usize; 2]> {
    code.lea_rsp(-128);
    for &reg in SCRATCH.iter().take(EARLY) {
        code.push(reg);
    }
    super::emit_lea(code, insn, RCX)?;
    code.emit(&[0x9f, 0x0f, 0x90, 0xc0]); // lahf; seto al
    code.mov_imm64(RDX, crate::ranges::bounds_address() as u64);
    code.alu_load(0x3b, RCX, Mem::Base(RDX, 0)); // cmp rcx, [lowest start]
    let below = code.jcc_forward(0x2); // jb
    code.alu_load(0x3b, RCX, Mem::Base(RDX, 8)); // cmp rcx, [highest end]
    let above = code.jcc_forward(0x3); // jae
    Some([below, above])
}

/// Undoes [`emit_untraced_check`]: the flags from AX (as `restore` does
/// from R11), the three registers, the stack pointer.
pub fn emit_untraced_undo(code: &mut Asm) {
    code.emit(&[0x04, 0x7f]); // add al, 0x7f: OF back
    code.emit(&[0x9e]); // sahf
    for &reg in SCRATCH.iter().take(EARLY).rev() {
        code.pop(reg);
    }
    code.lea_rsp(128);
}

/// The way out of [`emit_untraced_check`] for an untraced address, bound
/// here: everything undone, a jump to the trampoline's copy of the
/// original instruction. Returns where that jump's displacement is, for
/// the caller to bind there.
pub fn emit_untraced_exit(code: &mut Asm, untraced: [usize; 2]) -> usize {
    for at in untraced {
        code.bind(at);
    }
    emit_untraced_undo(code);
    code.jmp_forward()
}

/// The ways out of the fast path, bound here: an untraced address (see
/// [`emit_untraced_exit`]; returns where its jump's displacement is); the
/// flags cleared that were set, everything restored, and the general
/// path follows.
pub fn emit_exits(code: &mut Asm, exits: &Exits, thread_block: i32) -> usize {
    let to_original = emit_untraced_exit(code, exits.untraced);
    for &at in exits.after_flags.iter().take(exits.after_flags_len) {
        code.bind(at);
    }
    code.store_byte_imm(Mem::Base(RDI, slot_at::PUSHING), 0);
    code.store_byte_imm(Mem::Fs(thread_block + thread_at::BUSY), 0);
    for &at in exits.before_flags.iter().take(exits.before_flags_len) {
        code.bind(at);
    }
    restore(code);
    to_original
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    const AT: u64 = 0x7000_0000_0000;

    /// The fast path and exits of the instruction `bytes`, disassembled.
    fn listing(bytes: &[u8]) -> (Vec<String>, usize) {
        let insn = Decoder::with_ip(64, bytes, AT - 0x1000, DecoderOptions::NONE).decode();
        let mut original = [0u8; 16];
        original[..bytes.len()].copy_from_slice(bytes);
        let site = SiteInfo {
            pc: AT - 0x1000,
            original,
            cache: 0x1234_5678,
            thread_block: -0x100,
        };
        let mut code = Asm::new(AT);
        let exits = emit(&mut code, &insn, &site, AT - 0x1000 + bytes.len() as u64).expect("emit");
        let to_original = emit_exits(&mut code, &exits, site.thread_block);
        code.bind(to_original);
        let mut decoder = Decoder::with_ip(64, code.bytes(), AT, DecoderOptions::NONE);
        let mut lines = Vec::new();
        let mut formatter = IntelFormatter::new();
        for insn in decoder.iter() {
            assert!(!insn.is_invalid(), "invalid encoding at {:#x}", insn.ip());
            let mut text = String::new();
            formatter.format(&insn, &mut text);
            lines.push(text);
        }
        (lines, code.len)
    }

    #[test]
    fn a_load_decodes_as_written_and_fits_the_trampoline() {
        // mov eax, [rbx+0x100]
        let (lines, len) = listing(&[0x8b, 0x83, 0, 1, 0, 0]);
        let text = lines.join("\n");
        for expected in [
            "lea rcx,[rbx+100h]",
            "sub rcx,[rsi+",
            "lahf",
            "seto al",
            "movzx r11d,ax",
            "mov rdi,fs:[0FFFFFFFFFFFFFF48h]",
            "cmp byte ptr fs:[0FFFFFFFFFFFFFF40h],0",
            "mov byte ptr [rdi],1",
            "mov r9d,[rdx]",
            "mov fs:[0FFFFFFFFFFFFFF00h],r9",
            "mov qword ptr [r10+48h],1",
            "rdtsc",
            "mov qword ptr [r10+48h],0",
            "sahf",
            "mov eax,fs:[0FFFFFFFFFFFFFF00h]",
        ] {
            assert!(text.contains(expected), "no `{expected}` in\n{text}");
        }
        assert!(!text.contains("lock"), "a locked instruction in\n{text}");
        assert!(len + 400 < super::super::RECORD_AT, "{len} bytes");
    }

    #[test]
    fn a_masked_move_logs_each_selected_element() {
        crate::access::detect();
        if crate::access::max_chunk() < 64 {
            eprintln!("skipped: no 64-byte accesses (AVX-512) here");
            return;
        }
        // vmovdqu8 [rbx+0x100]{k1}, zmm1: 64 byte elements.
        let store = [0x62, 0xf1, 0x7f, 0x49, 0x7f, 0x8b, 0x00, 0x01, 0x00, 0x00];
        let insn = Decoder::with_ip(64, &store, 0, DecoderOptions::NONE).decode();
        assert_eq!(insn.code(), Code::EVEX_Vmovdqu8_zmmm512_k1z_zmm);
        assert_eq!(insn.op_mask(), Register::K1);
        assert_eq!(super::super::masked_vector_move(&insn), Some(1));
        let (lines, _) = listing(&store);
        let text = lines.join("\n");
        for expected in [
            "vmovdqu8 [rdx]{k1},zmm1",
            "vmovdqu64 fs:[0FFFFFFFFFFFFFF00h],zmm1",
            "kmovq rcx,k1",
            "tzcnt rdx,rcx",
            "lea r10,[r10+rdx]",
            "movzx r10d,byte ptr fs:[rdx*1-100h]",
            "lea rdx,[rcx-1]",
            "and rcx,rdx",
        ] {
            assert!(text.contains(expected), "no `{expected}` in\n{text}");
        }
        // vmovdqu32 ymm2{k3}{z}, [rbx+0x40]: 8 dword elements.
        let load = [0x62, 0xf1, 0x7e, 0xab, 0x6f, 0x93, 0x40, 0x00, 0x00, 0x00];
        let insn = Decoder::with_ip(64, &load, 0, DecoderOptions::NONE).decode();
        assert_eq!(insn.code(), Code::EVEX_Vmovdqu32_ymm_k1z_ymmm256);
        assert!(insn.zeroing_masking());
        assert_eq!(super::super::masked_vector_move(&insn), Some(4));
        let (lines, _) = listing(&load);
        let text = lines.join("\n");
        for expected in [
            "vmovdqu32 ymm2{k3}{z},[rdx]",
            "kmovw ecx,k3",
            "and rcx,rdx",
            "lea r10,[r10+rdx*4]",
            "mov r10d,fs:[rdx*4-100h]",
        ] {
            assert!(text.contains(expected), "no `{expected}` in\n{text}");
        }
    }

    #[test]
    fn every_vector_register_has_its_store_to_the_thread_block() {
        // The encoding is checked by decoding inside: None is a wrong one.
        for base in [Register::XMM0, Register::YMM0, Register::ZMM0] {
            for n in 0..32 {
                let register = Register::try_from(base as usize + n).expect("register");
                assert!(vector_store_fs(register, -0x1c0).is_some(), "{register:?}");
            }
        }
    }

    #[test]
    fn a_store_of_a_scratch_register_takes_its_saved_value() {
        // mov [rbx+0x100], sil: rsi is saved at rsp+32
        let (lines, _) = listing(&[0x40, 0x88, 0xb3, 0, 1, 0, 0]);
        let text = lines.join("\n");
        assert!(text.contains("mov r9,[rsp+20h]"), "{text}");
        assert!(text.contains("mov [rdx],r9b"), "{text}");
        assert!(text.contains("movzx r9d,r9b"), "{text}");
        // mov qword [rcx+8], -2: the immediate, sign-extended
        let (lines, _) = listing(&[0x48, 0xc7, 0x41, 0x08, 0xfe, 0xff, 0xff, 0xff]);
        let text = lines.join("\n");
        assert!(text.contains("mov r9,0FFFFFFFFFFFFFFFEh"), "{text}");
        assert!(text.contains("mov [rdx],r9\n"), "{text}");
    }
}
