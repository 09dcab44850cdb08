//! VFIO device fds: which PCI device each one is, and their region reads and
//! writes.
//!
//! - A device fd comes from `ioctl(group, VFIO_GROUP_GET_DEVICE_FD, name)`;
//!   the interposed `ioctl` notes the name (`0000:00:04.0`) here.
//! - A mapping of a noted fd is reported with the path
//!   `vfio-device:NAME/REGION` (`bar0`..`bar5`, `config`, `regionN`), from
//!   which the recorder finds the BAR's physical address.
//! - `pread`/`pwrite` of 1, 2, 4 or 8 bytes on a noted fd are device
//!   accesses that vfio-pci performs for the program: each is logged as one
//!   `R`/`W` access, under a `MAP` of its region made the first time (its
//!   virtual address 0: nothing is mapped).
//!
//! vfio-pci places region N at file offset N << 40. An fd number reused
//! after `close` for something else is caught by checking that the fd is
//! still a VFIO device before each use.
//!
//! # Safety
//! Reads the caller's name string and buffers and calls `ioctl`; each block
//! says what it relies on.

use core::ffi::{c_char, c_int};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU32, AtomicU64, Ordering};

use mmiotrace_shm::{Record, kind};

use crate::{init, log, state, sys};

/// `VFIO_GROUP_GET_DEVICE_FD`, `_IO(';', 106)`.
pub const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = 0x3b6a;
/// `VFIO_DEVICE_GET_REGION_INFO`, `_IO(';', 108)`.
const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = 0x3b6c;
/// vfio-pci's region offset shift and its config-space region.
const REGION_SHIFT: u32 = 40;
const CONFIG_REGION: u64 = 7;
/// Regions with a MAP of their own for pread/pwrite (BARs, ROM, config, VGA).
const REGIONS: usize = 9;
const DEVICES: usize = 16;
const NAME_BYTES: usize = 32;

struct Device {
    /// The fd, or -1 when the entry is free.
    fd: AtomicI32,
    name: [AtomicU8; NAME_BYTES],
    name_len: AtomicU8,
    /// The MAP id of each region's pread/pwrite accesses; 0 until the first.
    map_ids: [AtomicU32; REGIONS],
    /// Each region's size, for its MAP.
    sizes: [AtomicU64; REGIONS],
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Device = Device {
    fd: AtomicI32::new(-1),
    name: [const { AtomicU8::new(0) }; NAME_BYTES],
    name_len: AtomicU8::new(0),
    map_ids: [const { AtomicU32::new(0) }; REGIONS],
    sizes: [const { AtomicU64::new(0) }; REGIONS],
};

static DEVICES_TABLE: [Device; DEVICES] = [FREE; DEVICES];
/// Serialises noting devices and making region MAPs (rare, never in a
/// signal handler).
static LOCK: AtomicBool = AtomicBool::new(false);

struct Locked;

impl Locked {
    fn take() -> Locked {
        // SYNC POINT: pairs with the Release store in drop().
        while LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        Locked
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SYNC POINT: pairs with the Acquire exchange in take().
        LOCK.store(false, Ordering::Release);
    }
}

/// `VFIO_GROUP_GET_DEVICE_FD` returned `fd` for the device `name`.
///
/// # Safety
///
/// `name` is the NUL-terminated string the caller passed to the ioctl.
pub unsafe fn note_device_fd(fd: c_int, name: *const c_char) {
    if fd < 0 || name.is_null() {
        return;
    }
    // SAFETY: the ioctl just read the same string successfully.
    let name = unsafe { core::ffi::CStr::from_ptr(name) }.to_bytes();
    if name.len() > NAME_BYTES || name.contains(&b'/') {
        return;
    }
    let _locked = Locked::take();
    let slot = DEVICES_TABLE
        .iter()
        .find(|d| d.fd.load(Ordering::Relaxed) == fd)
        .or_else(|| {
            DEVICES_TABLE.iter().find(|d| {
                d.fd.load(Ordering::Relaxed) < 0 || !is_vfio_device(d.fd.load(Ordering::Relaxed))
            })
        });
    let Some(device) = slot else { return };
    for (dst, &src) in device.name.iter().zip(name) {
        dst.store(src, Ordering::Relaxed);
    }
    device.name_len.store(name.len() as u8, Ordering::Relaxed);
    for (id, size) in device.map_ids.iter().zip(&device.sizes) {
        id.store(0, Ordering::Relaxed);
        size.store(0, Ordering::Relaxed);
    }
    // SYNC POINT: pairs with the Acquire load in find(): the name is
    // written before the fd makes the entry visible.
    device.fd.store(fd, Ordering::Release);
}

fn is_vfio_device(fd: c_int) -> bool {
    let mut path = [0u8; 4096];
    sys::fd_path(fd, &mut path)
        .and_then(|len| path.get(..len))
        .is_some_and(|p| p == b"anon_inode:[vfio-device]")
}

fn find(fd: c_int) -> Option<&'static Device> {
    if fd < 0 {
        return None;
    }
    // SYNC POINT: pairs with the Release store in note_device_fd().
    let device = DEVICES_TABLE
        .iter()
        .find(|d| d.fd.load(Ordering::Acquire) == fd)?;
    is_vfio_device(fd).then_some(device)
}

/// Writes `vfio-device:NAME/REGION` for `offset` of `fd` into `out`; its
/// length, or `None` when `fd` is not a noted VFIO device.
pub fn describe(fd: c_int, offset: u64, out: &mut [u8; 4096]) -> Option<usize> {
    let device = find(fd)?;
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if let Some(slot) = out.get_mut(len) {
                *slot = b;
                len += 1;
            }
        }
    };
    put(b"vfio-device:");
    let name_len = usize::from(device.name_len.load(Ordering::Relaxed));
    for byte in device.name.iter().take(name_len) {
        put(&[byte.load(Ordering::Relaxed)]);
    }
    let region = offset >> REGION_SHIFT;
    match region {
        0..=5 => put(&[b'/', b'b', b'a', b'r', b'0' + region as u8]),
        CONFIG_REGION => put(b"/config"),
        _ => {
            put(b"/region");
            let mut digits = [0u8; 20];
            put(sys::decimal(region, &mut digits));
        }
    }
    Some(len)
}

#[repr(C)]
#[derive(Default)]
struct RegionInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    cap_offset: u32,
    size: u64,
    offset: u64,
}

fn region_size(fd: c_int, index: u32) -> u64 {
    let mut info = RegionInfo {
        argsz: core::mem::size_of::<RegionInfo>() as u32,
        index,
        ..RegionInfo::default()
    };
    // SAFETY: the raw ioctl on the program's VFIO device fd, with a
    // RegionInfo of the size argsz says; it only fills it in.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_ioctl,
            fd,
            VFIO_DEVICE_GET_REGION_INFO,
            &mut info as *mut RegionInfo,
        )
    };
    if ret < 0 {
        1 << REGION_SHIFT
    } else {
        info.size
    }
}

/// After a `pread` (`write` false) or `pwrite` of `len` bytes at `offset`
/// on `fd` returned `ret`: logs it as one device access when it was one.
///
/// # Safety
///
/// `buf` holds `len` bytes (the call just used them).
pub unsafe fn after_region_io(
    fd: c_int,
    buf: *const u8,
    len: usize,
    offset: i64,
    ret: isize,
    write: bool,
) {
    if ret < 0 || ret as usize != len || !matches!(len, 1 | 2 | 4 | 8) || offset < 0 {
        return;
    }
    let Some(device) = find(fd) else { return };
    if !init::enabled() || state::muted() {
        return;
    }
    let offset = offset as u64;
    let region = offset >> REGION_SHIFT;
    let Some(index) = usize::try_from(region).ok().filter(|&r| r < REGIONS) else {
        return;
    };
    let base = region << REGION_SHIFT;
    let mut map_id = device.map_ids[index].load(Ordering::Acquire);
    if map_id == 0 {
        let _locked = Locked::take();
        map_id = device.map_ids[index].load(Ordering::Acquire);
        if map_id == 0 {
            let Some(shm) = state::shm() else { return };
            map_id = shm.next_map_id();
            let size = region_size(fd, index as u32);
            device.sizes[index].store(size, Ordering::Relaxed);
            let mut path = [0u8; 4096];
            let path_len = describe(fd, base, &mut path).unwrap_or(0);
            log::push_outside_handler(
                Record {
                    kind: kind::MAP,
                    map_id,
                    offset: base,
                    value: size,
                    aux: 0,
                    ..Record::default()
                },
                path.get(..path_len).unwrap_or(&[]),
            );
            // SYNC POINT: pairs with the Acquire loads above: the MAP is
            // pushed before any access uses its id.
            device.map_ids[index].store(map_id, Ordering::Release);
        }
    }
    let mut value = [0u8; 8];
    // SAFETY: the caller's buffer of len bytes.
    unsafe { core::ptr::copy_nonoverlapping(buf, value.as_mut_ptr(), len) };
    log::push_outside_handler(
        Record {
            kind: if write { kind::WRITE } else { kind::READ },
            width: len as u8,
            map_id,
            offset: offset - base,
            value: u64::from_le_bytes(value),
            ..Record::default()
        },
        &[],
    );
}
