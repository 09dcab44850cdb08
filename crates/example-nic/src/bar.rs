//! The driver's view of BAR0: one `MAP_SHARED` mapping, accessed only with
//! volatile loads and stores of explicit widths, as a kernel driver's
//! `readl`/`writel` would. These are the accesses `mmiotrace record` traces.
//!
//! # Safety
//!
//! This is the only module of the driver that dereferences raw pointers. Every
//! access goes through [`Bar::ptr`], which checks that the access lies inside
//! the mapping and is naturally aligned; the mapping lives as long as the
//! `Bar`. Another thread (the device model) changes the same bytes through the
//! file, which is why every access is volatile and none is ever cached.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use anyhow::{Context, bail};

#[derive(Debug)]
pub struct Bar {
    base: NonNull<u8>,
    len: usize,
}

impl Bar {
    /// Maps `len` bytes of `file` read/write and shared, like a PCI resource.
    pub fn map(file: &File, len: usize) -> anyhow::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (no MAP_FIXED), so no
        // existing memory is replaced; the fd is valid for the call.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap of BAR0 failed");
        }
        let Some(base) = NonNull::new(addr.cast::<u8>()) else {
            bail!("mmap of BAR0 returned a null mapping");
        };
        Ok(Self { base, len })
    }

    fn ptr<T>(&self, offset: usize) -> *mut T {
        let width = size_of::<T>();
        assert!(
            offset.checked_add(width).is_some_and(|end| end <= self.len),
            "BAR access at {offset:#x} (width {width}) is outside the {:#x}-byte BAR",
            self.len
        );
        assert!(
            offset % width == 0,
            "misaligned {width}-byte BAR access at {offset:#x}"
        );
        // SAFETY: offset + width <= len, checked above, so the result stays
        // inside the mapping.
        unsafe { self.base.as_ptr().add(offset).cast::<T>() }
    }

    pub fn read8(&self, offset: usize) -> u8 {
        // SAFETY: `ptr` checked bounds and alignment; the mapping is live and
        // readable while `self` exists.
        unsafe { self.ptr::<u8>(offset).read_volatile() }
    }
    pub fn read16(&self, offset: usize) -> u16 {
        // SAFETY: as in `read8`.
        unsafe { self.ptr::<u16>(offset).read_volatile() }
    }
    pub fn read32(&self, offset: usize) -> u32 {
        // SAFETY: as in `read8`.
        unsafe { self.ptr::<u32>(offset).read_volatile() }
    }
    pub fn read64(&self, offset: usize) -> u64 {
        // SAFETY: as in `read8`.
        unsafe { self.ptr::<u64>(offset).read_volatile() }
    }
    pub fn write8(&self, offset: usize, value: u8) {
        // SAFETY: `ptr` checked bounds and alignment; the mapping is live and
        // writable while `self` exists, and nothing in this process holds a
        // Rust reference to it.
        unsafe { self.ptr::<u8>(offset).write_volatile(value) }
    }
    pub fn write16(&self, offset: usize, value: u16) {
        // SAFETY: as in `write8`.
        unsafe { self.ptr::<u16>(offset).write_volatile(value) }
    }
    pub fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as in `write8`.
        unsafe { self.ptr::<u32>(offset).write_volatile(value) }
    }
    pub fn write64(&self, offset: usize, value: u64) {
        // SAFETY: as in `write8`.
        unsafe { self.ptr::<u64>(offset).write_volatile(value) }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `map`, and no
        // pointer into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
