//! Reaching a PCI device's BAR from user space, the four ways drivers do:
//! sysfs `resourceN`, `/dev/mem`, UIO and VFIO.
//!
//! # Safety
//! This module maps device memory and calls the VFIO ioctls, so it needs
//! `unsafe`; every block says what it relies on. Register accesses are
//! volatile loads and stores of the access's own width, so each one is one
//! instruction the tracer sees.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};

/// How the BAR is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// mmap of /sys/bus/pci/devices/DEV/resource0
    Sysfs,
    /// mmap of /dev/mem at the BAR's physical address
    Devmem,
    /// mmap of /dev/uioN (uio_pci_generic bound), map 0
    Uio,
    /// VFIO: container, group, device fd, region 0 mmap'd (vfio-pci bound)
    Vfio,
    /// VFIO without mmap: every access a pread/pwrite on the device fd
    VfioRw,
}

/// Register access, whatever the path to the device.
pub trait Regs {
    fn read32(&self, offset: usize) -> u32;
    fn write32(&self, offset: usize, value: u32);
    fn read16(&self, offset: usize) -> u16;
    fn read64(&self, offset: usize) -> u64;
}

/// A BAR mapped into this process.
#[derive(Debug)]
pub struct MappedBar {
    base: *mut u8,
    len: usize,
    /// What was mapped, for the driver's report.
    pub source: String,
    // Kept open for as long as the mapping lives: the uio and VFIO fds also
    // carry interrupts and region reads.
    _file: Option<File>,
    _vfio: Option<Vfio>,
}

// SAFETY: the mapping is device memory shared by design; every access is a
// volatile load or store, as a driver's threads do.
unsafe impl Sync for MappedBar {}
// SAFETY: as above: nothing ties the mapping to the thread that made it.
unsafe impl Send for MappedBar {}

impl MappedBar {
    pub fn len(&self) -> usize {
        self.len
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        assert!(
            offset + std::mem::size_of::<T>() <= self.len && offset % std::mem::size_of::<T>() == 0,
            "register offset {offset:#x} outside the BAR or misaligned"
        );
        // SAFETY: inside the mapping, checked above.
        unsafe { self.base.add(offset).cast() }
    }
}

impl Regs for MappedBar {
    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: an aligned register inside the mapped BAR.
        unsafe { self.at::<u32>(offset).read_volatile() }
    }
    fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as read32.
        unsafe { self.at::<u32>(offset).write_volatile(value) }
    }
    fn read16(&self, offset: usize) -> u16 {
        // SAFETY: as read32.
        unsafe { self.at::<u16>(offset).read_volatile() }
    }
    fn read64(&self, offset: usize) -> u64 {
        // SAFETY: as read32.
        unsafe { self.at::<u64>(offset).read_volatile() }
    }
}

impl Drop for MappedBar {
    fn drop(&mut self) {
        // SAFETY: the mapping this value made; nothing uses it afterwards.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn device_dir(device: &str) -> PathBuf {
    PathBuf::from("/sys/bus/pci/devices").join(device)
}

/// BAR `bar`'s start and size from sysfs.
pub fn bar_resource(device: &str, bar: usize) -> Result<(u64, u64)> {
    let path = device_dir(device).join("resource");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let line = text
        .lines()
        .nth(bar)
        .with_context(|| format!("{}: no line for BAR {bar}", path.display()))?;
    let mut fields = line.split_whitespace().map(|f| {
        u64::from_str_radix(f.trim_start_matches("0x"), 16)
            .with_context(|| format!("{}: bad field {f:?}", path.display()))
    });
    let start = fields.next().context("empty line")??;
    let end = fields.next().context("no end")??;
    ensure!(start != 0, "{device}: BAR {bar} is not assigned");
    Ok((start, end - start + 1))
}

fn map_file(file: &File, len: usize, offset: u64) -> Result<*mut u8> {
    // SAFETY: a new shared mapping of a device file at an address the kernel
    // picks; failure is reported.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("mmap");
    }
    Ok(base.cast())
}

fn open_rw(path: &str, sync: bool) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if sync {
        options.custom_flags(libc::O_SYNC);
    }
    options
        .open(path)
        .with_context(|| format!("cannot open {path}"))
}

/// Maps BAR 0 of `device` (`0000:00:04.0`) the way `via` says.
pub fn map_bar0(device: &str, via: Via) -> Result<MappedBar> {
    let (start, size) = bar_resource(device, 0)?;
    let len = size as usize;
    match via {
        Via::Sysfs => {
            let path = format!("/sys/bus/pci/devices/{device}/resource0");
            let file = open_rw(&path, true)?;
            let base = map_file(&file, len, 0).with_context(|| path.clone())?;
            Ok(MappedBar {
                base,
                len,
                source: path,
                _file: Some(file),
                _vfio: None,
            })
        }
        Via::Devmem => {
            let file = open_rw("/dev/mem", true)?;
            let base = map_file(&file, len, start).context("/dev/mem")?;
            Ok(MappedBar {
                base,
                len,
                source: format!("/dev/mem at {start:#x}"),
                _file: Some(file),
                _vfio: None,
            })
        }
        Via::Uio => {
            let uio = uio_name(device)?;
            let path = format!("/dev/{uio}");
            let file = open_rw(&path, false)?;
            let base = map_file(&file, len, 0).with_context(|| path.clone())?;
            Ok(MappedBar {
                base,
                len,
                source: format!("{path} map 0"),
                _file: Some(file),
                _vfio: None,
            })
        }
        Via::Vfio => {
            let vfio = Vfio::open(device)?;
            let region = vfio.region(0)?;
            ensure!(
                region.flags & VFIO_REGION_INFO_FLAG_MMAP != 0,
                "VFIO region 0 cannot be mapped"
            );
            let base = map_file(&vfio.device, region.size as usize, region.offset)
                .context("mmap of the VFIO region")?;
            Ok(MappedBar {
                base,
                len: region.size as usize,
                source: format!("VFIO {device} region 0"),
                _file: None,
                _vfio: Some(vfio),
            })
        }
        Via::VfioRw => bail!("VFIO without mmap has no mapping (use VfioRegs)"),
    }
}

/// The uio device a PCI device is bound to, e.g. `uio0`.
pub fn uio_name(device: &str) -> Result<String> {
    let dir = device_dir(device).join("uio");
    let entry = fs::read_dir(&dir)
        .with_context(|| format!("{}: is uio_pci_generic bound?", dir.display()))?
        .next()
        .with_context(|| format!("{}: no uio device", dir.display()))??;
    Ok(entry.file_name().to_string_lossy().into_owned())
}

/// uio_pci_generic's interrupt interface: the uio fd counts interrupts;
/// its handler masks INTx, and the driver unmasks it by clearing the
/// INTx-disable bit of the PCI command register (config space, in sysfs).
#[derive(Debug)]
pub struct UioIrq {
    file: File,
    config: File,
}

/// The PCI command register and its INTx-disable bit.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_INTX_DISABLE: u16 = 1 << 10;

impl UioIrq {
    pub fn open(device: &str) -> Result<Self> {
        let path = format!("/dev/{}", uio_name(device)?);
        let config = format!("/sys/bus/pci/devices/{device}/config");
        Ok(UioIrq {
            file: open_rw(&path, false)?,
            config: open_rw(&config, false)?,
        })
    }

    pub fn unmask(&self) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let mut command = [0u8; 2];
        self.config
            .read_exact_at(&mut command, PCI_COMMAND)
            .context("read the PCI command register")?;
        let command = u16::from_le_bytes(command) & !PCI_COMMAND_INTX_DISABLE;
        self.config
            .write_all_at(&command.to_le_bytes(), PCI_COMMAND)
            .context("write the PCI command register")?;
        Ok(())
    }

    /// Waits up to `timeout_ms` for an interrupt; its running count.
    pub fn wait(&self, timeout_ms: i32) -> Result<Option<u32>> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack.
        let ready = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        ensure!(ready >= 0, "poll: {}", std::io::Error::last_os_error());
        if ready == 0 {
            return Ok(None);
        }
        let mut count: u32 = 0;
        // SAFETY: reads 4 bytes into a local.
        let n = unsafe { libc::read(self.file.as_raw_fd(), (&mut count as *mut u32).cast(), 4) };
        ensure!(
            n == 4,
            "read of the uio fd: {}",
            std::io::Error::last_os_error()
        );
        Ok(Some(count))
    }
}

// From linux/vfio.h.
const VFIO_API_VERSION: i32 = 0;
const VFIO_TYPE1_IOMMU: libc::c_ulong = 1;
const VFIO_GET_API_VERSION: libc::c_ulong = 0x3b64;
const VFIO_CHECK_EXTENSION: libc::c_ulong = 0x3b65;
const VFIO_SET_IOMMU: libc::c_ulong = 0x3b66;
const VFIO_GROUP_GET_STATUS: libc::c_ulong = 0x3b67;
const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = 0x3b68;
const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = 0x3b6a;
const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = 0x3b6c;
const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;
const VFIO_REGION_INFO_FLAG_MMAP: u32 = 4;
/// vfio-pci's config-space region.
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RegionInfo {
    argsz: u32,
    pub flags: u32,
    pub index: u32,
    cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

/// An open VFIO device: its container, group and device fds.
#[derive(Debug)]
pub struct Vfio {
    _container: OwnedFd,
    _group: OwnedFd,
    device: File,
}

fn ioctl_ok(what: &str, ret: libc::c_int) -> Result<libc::c_int> {
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| what.to_owned());
    }
    Ok(ret)
}

impl Vfio {
    pub fn open(device: &str) -> Result<Self> {
        let group_link = device_dir(device).join("iommu_group");
        let group = fs::read_link(&group_link)
            .with_context(|| format!("{}: is there an IOMMU?", group_link.display()))?;
        let group = group
            .file_name()
            .context("iommu_group link")?
            .to_string_lossy()
            .into_owned();
        let container = File::options()
            .read(true)
            .write(true)
            .open("/dev/vfio/vfio")
            .context("/dev/vfio/vfio")?;
        let group_path = format!("/dev/vfio/{group}");
        let group_file = File::options()
            .read(true)
            .write(true)
            .open(&group_path)
            .with_context(|| format!("{group_path}: is vfio-pci bound?"))?;
        let cfd = container.as_raw_fd();
        let gfd = group_file.as_raw_fd();
        // SAFETY: ioctls on fds this function owns, with the argument types
        // linux/vfio.h gives them.
        unsafe {
            let version = ioctl_ok(
                "VFIO_GET_API_VERSION",
                libc::ioctl(cfd, VFIO_GET_API_VERSION),
            )?;
            ensure!(version == VFIO_API_VERSION, "VFIO API version {version}");
            let type1 = ioctl_ok(
                "VFIO_CHECK_EXTENSION",
                libc::ioctl(cfd, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU),
            )?;
            ensure!(type1 == 1, "no type 1 IOMMU");
            let mut status = [8u32, 0u32];
            ioctl_ok(
                "VFIO_GROUP_GET_STATUS",
                libc::ioctl(gfd, VFIO_GROUP_GET_STATUS, status.as_mut_ptr()),
            )?;
            ensure!(
                status[1] & VFIO_GROUP_FLAGS_VIABLE != 0,
                "VFIO group {group} is not viable (bind every device in it to vfio-pci)"
            );
            ioctl_ok(
                "VFIO_GROUP_SET_CONTAINER",
                libc::ioctl(gfd, VFIO_GROUP_SET_CONTAINER, &cfd),
            )?;
            ioctl_ok(
                "VFIO_SET_IOMMU",
                libc::ioctl(cfd, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU),
            )?;
            let name = CString::new(device)?;
            let dfd = ioctl_ok(
                "VFIO_GROUP_GET_DEVICE_FD",
                libc::ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD, name.as_ptr()),
            )?;
            Ok(Vfio {
                _container: OwnedFd::from(container),
                _group: OwnedFd::from(group_file),
                device: File::from_raw_fd(dfd),
            })
        }
    }

    pub fn region(&self, index: u32) -> Result<RegionInfo> {
        let mut info = RegionInfo {
            argsz: std::mem::size_of::<RegionInfo>() as u32,
            index,
            ..RegionInfo::default()
        };
        // SAFETY: the device fd this value owns and a RegionInfo of the
        // size argsz says.
        ioctl_ok("VFIO_DEVICE_GET_REGION_INFO", unsafe {
            libc::ioctl(
                self.device.as_raw_fd(),
                VFIO_DEVICE_GET_REGION_INFO,
                &mut info,
            )
        })?;
        Ok(info)
    }

    /// Reads `buf.len()` bytes of region `region` at `offset` with pread.
    pub fn pread(&self, region: &RegionInfo, offset: u64, buf: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let n = self
            .device
            .read_at(buf, region.offset + offset)
            .context("pread of the VFIO device")?;
        ensure!(n == buf.len(), "short pread: {n} of {}", buf.len());
        Ok(())
    }

    pub fn pwrite(&self, region: &RegionInfo, offset: u64, buf: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let n = self
            .device
            .write_at(buf, region.offset + offset)
            .context("pwrite of the VFIO device")?;
        ensure!(n == buf.len(), "short pwrite: {n} of {}", buf.len());
        Ok(())
    }
}

/// Registers reached with pread/pwrite on the VFIO device fd (no mapping).
#[derive(Debug)]
pub struct VfioRegs {
    pub vfio: Vfio,
    pub bar0: RegionInfo,
}

impl VfioRegs {
    pub fn open(device: &str) -> Result<Self> {
        let vfio = Vfio::open(device)?;
        let bar0 = vfio.region(0)?;
        Ok(VfioRegs { vfio, bar0 })
    }

    fn read<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut buf = [0u8; N];
        self.vfio
            .pread(&self.bar0, offset as u64, &mut buf)
            .unwrap_or_else(|e| panic!("register {offset:#x}: {e:#}"));
        buf
    }
}

impl Regs for VfioRegs {
    fn read32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.read(offset))
    }
    fn write32(&self, offset: usize, value: u32) {
        self.vfio
            .pwrite(&self.bar0, offset as u64, &value.to_le_bytes())
            .unwrap_or_else(|e| panic!("register {offset:#x}: {e:#}"));
    }
    fn read16(&self, offset: usize) -> u16 {
        u16::from_le_bytes(self.read(offset))
    }
    fn read64(&self, offset: usize) -> u64 {
        u64::from_le_bytes(self.read(offset))
    }
}
