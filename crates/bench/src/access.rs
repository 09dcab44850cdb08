//! The measured loop, shared by every row: one 4-byte load and one 4-byte
//! store per iteration, each a single `mov` with a fixed encoding, so that
//! every row times exactly the same instructions and the floor's signal
//! handler knows how far to skip.
//!
//! # Safety
//!
//! This module maps a file and runs inline assembly on the mapping. The
//! mapping is owned by [`SharedPage`] and unmapped on drop; the loop only
//! touches its first four bytes. The buffer rows' [`SharedBuffer`] maps a
//! whole file and touches it through raw pointers and `memcpy`, inside
//! its length.

use std::arch::asm;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use anyhow::Context;

/// `mov eax, dword ptr [rdi]` is `8b 07`, `mov dword ptr [rdi], esi` is
/// `89 37`: both two bytes long.
/// (`encodings_are_two_bytes` below checks it.)
pub const ACCESS_INSN_LEN: usize = 2;

pub const PAGE_SIZE: usize = 4096;

/// The store of [`SharedBuffer::store32_pass_long`]: a macro, so that the
/// encoding test assembles the very same text.
macro_rules! buffer_store32_long_insn {
    () => {
        "mov dword ptr [rdi + 0x100], eax"
    };
}

/// The load of [`SharedBuffer::load64_pass_long`].
macro_rules! buffer_load64_long_insn {
    () => {
        "mov rdx, qword ptr [rdi + 0x100]"
    };
}

/// The instruction of [`SharedPage::insn_loop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsnLoop {
    /// `cmp dword [rdi], esi`: emulated (the CPU computes the flags on copies).
    Cmp,
    /// `movdqu xmm0, [rdi]` then `movdqu [rdi], xmm0`: emulated on the
    /// signal frame's XSAVE area (two accesses per iteration).
    Movdqu,
    /// `lock add dword [rdi], esi`: displaced, under the stripe lock.
    LockAdd,
    /// `addps xmm0, [rdi]`: displaced with the x87/SSE/AVX state switched.
    Addps,
}

/// One page of a file, mapped `MAP_SHARED` read/write: what a driver gets
/// from mmap of a device resource.
#[derive(Debug)]
pub struct SharedPage {
    base: NonNull<u32>,
}

impl SharedPage {
    pub fn map(file: &File) -> anyhow::Result<Self> {
        // SAFETY: a new mapping at an address the kernel chooses (no
        // MAP_FIXED), so nothing existing is replaced; the fd is open.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap of the benchmark page");
        }
        let base = NonNull::new(addr.cast()).context("mmap returned null")?;
        Ok(Self { base })
    }

    pub fn address_range(&self) -> std::ops::Range<usize> {
        let start = self.base.as_ptr() as usize;
        start..start + PAGE_SIZE
    }

    /// Makes the page inaccessible, so that every access faults.
    pub fn protect_none(&self) -> std::io::Result<()> {
        // SAFETY: changes protection of exactly the page this object owns.
        match unsafe { libc::mprotect(self.base.as_ptr().cast(), PAGE_SIZE, libc::PROT_NONE) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    /// Runs `iterations` load+store pairs on the first word of the page, the
    /// store writing the iteration number. The caller must make sure that a
    /// fault on the page, if it is protected, is handled (a tracer, or
    /// [`crate::floor`]'s handler); an unhandled one kills the process, which
    /// is not unsound.
    pub fn access_loop(&self, iterations: u32) {
        let word = self.base.as_ptr();
        for i in 0..iterations {
            // SAFETY: `word` points at the live mapping owned by `self`; the
            // asm reads 4 aligned bytes there and clobbers only eax.
            unsafe {
                asm!("mov eax, dword ptr [rdi]", in("rdi") word, out("eax") _, options(nostack, preserves_flags));
            }
            // SAFETY: as above; it writes 4 aligned bytes there.
            unsafe {
                asm!("mov dword ptr [rdi], esi", in("rdi") word, in("esi") i, options(nostack, preserves_flags));
            }
        }
    }

    /// [`SharedPage::access_loop`] with 6-byte encodings (a 32-bit
    /// displacement, so that `record --patch` can patch both sites).
    pub fn access_loop_long(&self, iterations: u32) {
        let below = (self.base.as_ptr() as usize).wrapping_sub(0x100);
        for i in 0..iterations {
            // SAFETY: `below + 0x100` is the first word of the live mapping
            // owned by `self`; the asm reads 4 aligned bytes there and
            // clobbers only eax.
            unsafe {
                asm!("mov eax, dword ptr [rdi + 0x100]", in("rdi") below, out("eax") _, options(nostack, preserves_flags));
            }
            // SAFETY: as above; it writes 4 aligned bytes there.
            unsafe {
                asm!("mov dword ptr [rdi + 0x100], esi", in("rdi") below, in("esi") i, options(nostack, preserves_flags));
            }
        }
    }

    /// Runs `iterations` load+store pairs on word `word` of the page (a
    /// register of its own per thread in the capture rows), each a single
    /// `mov` as in [`SharedPage::access_loop`].
    pub fn access_loop_at(&self, word: usize, iterations: u32) {
        let word = self.word(word);
        for i in 0..iterations {
            // SAFETY: `word` points into the live mapping owned by `self`
            // (checked by word()); 4 aligned bytes are read, eax clobbered.
            unsafe {
                asm!("mov eax, dword ptr [rdi]", in("rdi") word, out("eax") _, options(nostack, preserves_flags));
            }
            // SAFETY: as above; 4 aligned bytes are written.
            unsafe {
                asm!("mov dword ptr [rdi], esi", in("rdi") word, in("esi") i, options(nostack, preserves_flags));
            }
        }
    }

    /// Runs `iterations` read-modify-writes `add dword ptr [rdi], esi` on the
    /// first word, adding the iteration number: the instruction the
    /// emulator does not perform itself (displaced execution).
    pub fn add_loop(&self, iterations: u32) {
        let word = self.base.as_ptr();
        for i in 0..iterations {
            // SAFETY: `word` points at the live mapping owned by `self`; the
            // asm reads and writes 4 aligned bytes there and sets flags.
            unsafe {
                asm!("add dword ptr [rdi], esi", in("rdi") word, in("esi") i, options(nostack));
            }
        }
    }

    /// Runs `iterations` of one instruction of `kind` on the first 16
    /// bytes of the page: the other paths of the runtime (emulated compare
    /// and vector move, displaced locked and SSE instructions).
    pub fn insn_loop(&self, kind: InsnLoop, iterations: u32) {
        let word = self.base.as_ptr();
        for i in 0..iterations {
            // SAFETY: `word` points at the live mapping owned by `self`, a
            // page (16-byte aligned); each asm reads and/or writes its
            // first 4 or 16 bytes, and clobbers only the flags and xmm0.
            unsafe {
                match kind {
                    InsnLoop::Cmp => {
                        asm!("cmp dword ptr [rdi], esi", in("rdi") word, in("esi") i, options(nostack))
                    }
                    InsnLoop::Movdqu => asm!(
                        "movdqu xmm0, xmmword ptr [rdi]",
                        "movdqu xmmword ptr [rdi], xmm0",
                        in("rdi") word, out("xmm0") _, options(nostack, preserves_flags)
                    ),
                    InsnLoop::LockAdd => {
                        asm!("lock add dword ptr [rdi], esi", in("rdi") word, in("esi") i, options(nostack))
                    }
                    InsnLoop::Addps => {
                        asm!("addps xmm0, xmmword ptr [rdi]", in("rdi") word, out("xmm0") _, options(nostack, preserves_flags))
                    }
                }
            }
        }
    }

    /// Writes `value` to every word of the page with one `rep stosd`: one
    /// fault, and under the tracer 1024 events, to load the recorder.
    pub fn fill(&self, value: u32) {
        // SAFETY: rdi..rdi+4*rcx is exactly the page owned by `self`; DF is
        // clear (the ABI guarantees it at function boundaries and asm
        // blocks); rdi and rcx are declared clobbered.
        unsafe {
            asm!(
                "rep stosd",
                inout("rdi") self.base.as_ptr() => _,
                inout("rcx") PAGE_SIZE / 4 => _,
                in("eax") value,
                options(nostack, preserves_flags),
            );
        }
    }

    /// One 4-byte load from word `word`.
    pub fn load(&self, word: usize) -> u32 {
        let value: u32;
        // SAFETY: as in access_loop_at.
        unsafe {
            asm!("mov eax, dword ptr [rdi]", in("rdi") self.word(word), out("eax") value, options(nostack, preserves_flags));
        }
        value
    }

    /// One 4-byte store to word `word`.
    pub fn store(&self, word: usize, value: u32) {
        // SAFETY: as in access_loop_at.
        unsafe {
            asm!("mov dword ptr [rdi], esi", in("rdi") self.word(word), in("esi") value, options(nostack, preserves_flags));
        }
    }

    fn word(&self, word: usize) -> *mut u32 {
        assert!(word < PAGE_SIZE / 4, "word {word} is outside the page");
        self.base.as_ptr().wrapping_add(word)
    }
}

// SAFETY: the page is shared memory that the loops touch only with single
// `mov`/`add` instructions through raw pointers; no Rust reference into it
// exists, so concurrent accesses from several threads are no data race in
// Rust's sense (they are what a device register sees). The mapping lives
// until `self` drops, which the borrow checker keeps after every thread.
unsafe impl Sync for SharedPage {}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map`; no pointer into it
        // outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), PAGE_SIZE) };
    }
}

/// A whole file mapped `MAP_SHARED` read/write and populated: the buffer
/// rows' stand-in for a GPU buffer (a command buffer, a texture) that a
/// driver maps from the device. Populating it keeps first-touch page
/// faults out of the untraced loops, which then time the accesses alone.
#[derive(Debug)]
pub struct SharedBuffer {
    base: NonNull<u8>,
    len: usize,
}

impl SharedBuffer {
    pub fn map(file: &File) -> anyhow::Result<Self> {
        let len = usize::try_from(file.metadata()?.len()).context("buffer file too large")?;
        anyhow::ensure!(len > 0, "the buffer file is empty");
        // SAFETY: a new mapping at an address the kernel chooses (no
        // MAP_FIXED), so nothing existing is replaced; the fd is open.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap of the benchmark buffer");
        }
        let base = NonNull::new(addr.cast()).context("mmap returned null")?;
        Ok(Self { base, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Stores `count` consecutive 4-byte words from the start, word i
    /// getting `i + add`: a command buffer being filled, one volatile
    /// `mov` per word (the compiler may neither merge nor vectorise them).
    pub fn store32_pass(&self, count: usize, add: u32) {
        assert!(count * 4 <= self.len, "{count} words do not fit the buffer");
        let words = self.base.as_ptr().cast::<u32>();
        for i in 0..count {
            // SAFETY: word i lies inside the live mapping owned by `self`
            // (asserted above) and is 4-byte aligned (the mapping is
            // page-aligned); no Rust reference into the mapping exists.
            unsafe { words.add(i).write_volatile((i as u32).wrapping_add(add)) };
        }
    }

    /// Loads `count` consecutive 8-byte words from the start, one volatile
    /// `mov` each, and returns their wrapping sum.
    pub fn load64_pass(&self, count: usize) -> u64 {
        assert!(count * 8 <= self.len, "{count} words do not fit the buffer");
        let words = self.base.as_ptr().cast::<u64>();
        (0..count).fold(0u64, |sum, i| {
            // SAFETY: as in store32_pass, for 8 aligned bytes.
            sum.wrapping_add(unsafe { words.add(i).read_volatile() })
        })
    }

    /// [`SharedBuffer::store32_pass`] as one loop of assembly whose store,
    /// `mov dword ptr [rdi + 0x100], eax` (`89 87 00 01 00 00`), has a
    /// 32-bit displacement: 6 bytes, long enough for `record --patch`
    /// (the compiled loop's stores are 3 to 5 bytes). One store site.
    pub fn store32_pass_long(&self, count: usize, add: u32) {
        assert!(count * 4 <= self.len, "{count} words do not fit the buffer");
        if count == 0 {
            return;
        }
        let below = (self.base.as_ptr() as usize).wrapping_sub(0x100);
        // SAFETY: `below + 0x100` is the start of the live mapping owned
        // by `self`; the loop stores `count` consecutive aligned words
        // from there, all inside it (asserted above; count > 0, so `dec`
        // reaches 0). No Rust reference into the mapping exists; the asm
        // clobbers only the registers it declares and the flags.
        unsafe {
            asm!(
                "2:",
                buffer_store32_long_insn!(),
                "inc eax",
                "add rdi, 4",
                "dec rcx",
                "jnz 2b",
                inout("rdi") below => _,
                inout("rcx") count => _,
                inout("eax") add => _,
                options(nostack),
            );
        }
    }

    /// [`SharedBuffer::load64_pass`] as one loop of assembly whose load,
    /// `mov rdx, qword ptr [rdi + 0x100]` (`48 8b 97 00 01 00 00`), has a
    /// 32-bit displacement: 7 bytes, patchable (the compiled loop folds
    /// its loads into `add r15, [r14 + rax*8 + disp8]`, which patching
    /// does not handle). One load site.
    pub fn load64_pass_long(&self, count: usize) -> u64 {
        assert!(count * 8 <= self.len, "{count} words do not fit the buffer");
        if count == 0 {
            return 0;
        }
        let below = (self.base.as_ptr() as usize).wrapping_sub(0x100);
        let sum: u64;
        // SAFETY: as in store32_pass_long: `count` aligned 8-byte loads
        // from the start of the live mapping, all inside it.
        unsafe {
            asm!(
                "2:",
                buffer_load64_long_insn!(),
                "add rax, rdx",
                "add rdi, 8",
                "dec rcx",
                "jnz 2b",
                inout("rdi") below => _,
                inout("rcx") count => _,
                inout("rax") 0u64 => sum,
                out("rdx") _,
                options(nostack, readonly),
            );
        }
        sum
    }

    /// Copies `source` to the start of the buffer with glibc's `memcpy`,
    /// an unmodified library routine: whatever instructions it picks for
    /// this size and CPU (vector or non-temporal stores, `rep movsb`).
    pub fn memcpy_from(&self, source: &[u8]) {
        assert!(
            source.len() <= self.len,
            "the source is larger than the buffer"
        );
        // SAFETY: the destination is the live mapping owned by `self`,
        // at least `source.len()` bytes long (asserted above); a private
        // heap slice cannot overlap it.
        unsafe {
            libc::memcpy(
                self.base.as_ptr().cast(),
                source.as_ptr().cast(),
                source.len(),
            )
        };
    }
}

/// Copies `from` into `to` (the same length) with glibc's `memcpy`, not
/// the compiler's inlined copy: the routine a traced program shares.
pub fn glibc_memcpy(to: &mut [u8], from: &[u8]) {
    assert_eq!(
        to.len(),
        from.len(),
        "memcpy of slices of different lengths"
    );
    // SAFETY: two live slices of the same length; `to` is borrowed
    // mutably, so they cannot overlap.
    unsafe { libc::memcpy(to.as_mut_ptr().cast(), from.as_ptr().cast(), to.len()) };
}

impl SharedBuffer {
    /// Copies `count` blocks of `block` bytes with glibc's `memcpy`, one
    /// call each, to block after block of the buffer: block i from block
    /// (i + rep) % n of `source` (n blocks).
    pub fn copy_blocks(&self, source: &[u8], block: usize, count: usize, rep: usize) {
        let blocks = source.len() / block;
        assert!(
            blocks > 0 && count * block <= self.len,
            "the blocks do not fit the buffer"
        );
        for i in 0..count {
            let from = &source[(i + rep) % blocks * block..][..block];
            // SAFETY: block i lies inside the live mapping owned by `self`
            // (asserted above); a private heap slice cannot overlap it.
            unsafe {
                libc::memcpy(
                    self.base.as_ptr().add(i * block).cast(),
                    from.as_ptr().cast(),
                    block,
                )
            };
        }
    }
}

impl Drop for SharedBuffer {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map`; no pointer into it
        // outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A one-page file for the benchmark to map, removed on drop.
#[derive(Debug)]
pub struct PageFile {
    pub path: std::path::PathBuf,
    pub file: File,
}

impl PageFile {
    pub fn create(label: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir()
            .canonicalize()
            .context("cannot resolve the temporary directory")?;
        let path = dir.join(format!(
            "mmiotrace-bench-{}-{label}.page",
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("{}: cannot create", path.display()))?;
        file.set_len(PAGE_SIZE as u64)?;
        Ok(Self { path, file })
    }

    /// A file holding `contents` (written, so that its blocks exist and
    /// sit in the page cache before anything maps it).
    pub fn with_contents(label: &str, contents: &[u8]) -> anyhow::Result<Self> {
        let page = Self::create(label)?;
        page.file.set_len(0)?;
        std::io::Write::write_all(&mut &page.file, contents)
            .with_context(|| format!("{}: cannot write", page.path.display()))?;
        Ok(page)
    }
}

impl Drop for PageFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back the bytes the assembler emits for the loop's two `mov`s,
    /// which the floor handler skips by `ACCESS_INSN_LEN`.
    #[test]
    fn encodings_are_two_bytes() {
        let (load, load_end, store, store_end): (*const u8, *const u8, *const u8, *const u8);
        // SAFETY: only computes addresses of code; the movs are jumped over
        // and never run.
        unsafe {
            asm!(
                "lea {load}, [rip + 2f]",
                "lea {load_end}, [rip + 3f]",
                "lea {store}, [rip + 3f]",
                "lea {store_end}, [rip + 4f]",
                "jmp 4f",
                "2:",
                "mov eax, dword ptr [rdi]",
                "3:",
                "mov dword ptr [rdi], esi",
                "4:",
                load = out(reg) load,
                load_end = out(reg) load_end,
                store = out(reg) store,
                store_end = out(reg) store_end,
                options(nostack),
            );
        }
        // SAFETY: both ranges lie in this function's code, which is mapped
        // readable.
        let (load, store) = unsafe {
            (
                std::slice::from_raw_parts(load, load_end.offset_from(load) as usize),
                std::slice::from_raw_parts(store, store_end.offset_from(store) as usize),
            )
        };
        assert_eq!(load, [0x8b, 0x07]);
        assert_eq!(store, [0x89, 0x37]);
        assert_eq!(load.len(), ACCESS_INSN_LEN);
    }

    /// The buffer loops' patchable encodings: `record --patch` patches
    /// sites of 5 bytes or more with a displacement and no RIP or stack
    /// base.
    #[test]
    fn buffer_long_encodings_are_patchable() {
        let (store, store_end, load, load_end): (*const u8, *const u8, *const u8, *const u8);
        // SAFETY: only computes addresses of code; the movs are jumped over
        // and never run.
        unsafe {
            asm!(
                "lea {store}, [rip + 2f]",
                "lea {store_end}, [rip + 3f]",
                "lea {load}, [rip + 3f]",
                "lea {load_end}, [rip + 4f]",
                "jmp 4f",
                "2:",
                buffer_store32_long_insn!(),
                "3:",
                buffer_load64_long_insn!(),
                "4:",
                store = out(reg) store,
                store_end = out(reg) store_end,
                load = out(reg) load,
                load_end = out(reg) load_end,
                options(nostack),
            );
        }
        // SAFETY: both ranges lie in this function's code, which is mapped
        // readable.
        let (store, load) = unsafe {
            (
                std::slice::from_raw_parts(store, store_end.offset_from(store) as usize),
                std::slice::from_raw_parts(load, load_end.offset_from(load) as usize),
            )
        };
        assert_eq!(store, [0x89, 0x87, 0x00, 0x01, 0x00, 0x00]);
        assert_eq!(load, [0x48, 0x8b, 0x97, 0x00, 0x01, 0x00, 0x00]);
    }

    #[test]
    fn buffer_long_loops_store_and_load_every_word() {
        let file =
            PageFile::with_contents("long-loops", &[0xff; 2 * PAGE_SIZE]).expect("a buffer file");
        let buffer = SharedBuffer::map(&file.file).expect("the buffer mapped");
        buffer.store32_pass_long(1000, 7);
        buffer.store32_pass_long(0, 1);
        drop(buffer);
        let contents = std::fs::read(&file.path).expect("the buffer file read");
        for (i, word) in contents.chunks_exact(4).enumerate() {
            let word = u32::from_le_bytes(word.try_into().expect("4 bytes"));
            let expected = if i < 1000 { i as u32 + 7 } else { u32::MAX };
            assert_eq!(word, expected, "word {i}");
        }
        let buffer = SharedBuffer::map(&file.file).expect("the buffer mapped");
        // 1000 words of i + 7, then 24 of 0xffff_ffff, as 512 8-byte loads.
        let low_and_high = |i: u64| {
            let word = |j: u64| if j < 1000 { j + 7 } else { u64::from(u32::MAX) };
            word(2 * i) | word(2 * i + 1) << 32
        };
        assert_eq!(
            buffer.load64_pass_long(512),
            (0..512).fold(0u64, |acc, i| acc.wrapping_add(low_and_high(i)))
        );
        assert_eq!(buffer.load64_pass_long(0), 0);
    }
}
