//! What a mapped path says about the hardware behind it: the physical address
//! of a mapping (for `MAP` lines) and the PCI device (for `PCIDEV` lines).
//!
//! The rules, documented in docs/FORMAT.md:
//! - `/dev/mem`: the file offset is the physical address;
//! - sysfs `resourceN` of a PCI device: BAR N's start plus the offset;
//! - `/dev/uioN`: the offset selects map `offset / page size`, whose `addr` is the base;
//! - `vfio-device:DEVICE/REGION` (a VFIO device fd, named so by the runtime):
//!   BAR N's start plus the offset within region `barN`; the config-space
//!   offset for `config`; the offset within the region for any other;
//! - anything else: the file offset.

use std::fs;
use std::path::{Path, PathBuf};

use mmiotrace_trace::{PCI_BARS, PciDev};

/// Where a mapped file sits in the physical address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    DevMem,
    PciResource {
        device_dir: PathBuf,
        bar: usize,
    },
    Uio {
        name: String,
    },
    Vfio {
        device_dir: PathBuf,
        region: VfioRegion,
    },
    Other,
}

/// Which region of a VFIO device a mapping or access is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfioRegion {
    Bar(usize),
    Config,
    Other,
}

/// vfio-pci places region N at file offset N << 40.
const VFIO_REGION_MASK: u64 = (1 << 40) - 1;

impl Backing {
    /// The PCI device's sysfs directory, where the backing names one.
    pub fn pci_device_dir(&self) -> Option<PathBuf> {
        match self {
            Backing::PciResource { device_dir, .. } | Backing::Vfio { device_dir, .. } => {
                Some(device_dir.clone())
            }
            Backing::Uio { name } => {
                let dir = PathBuf::from(format!("/sys/class/uio/{name}/device"));
                dir.join("vendor").exists().then_some(dir)
            }
            Backing::DevMem | Backing::Other => None,
        }
    }
}

pub fn classify(path: &str) -> Backing {
    if path == "/dev/mem" {
        return Backing::DevMem;
    }
    if let Some(name) = path.strip_prefix("/dev/")
        && name.starts_with("uio")
        && name[3..].bytes().all(|b| b.is_ascii_digit())
        && name.len() > 3
    {
        return Backing::Uio {
            name: name.to_owned(),
        };
    }
    if let Some(rest) = path.strip_prefix("vfio-device:")
        && let Some((device, region)) = rest.split_once('/')
        && !device.is_empty()
        && !device.contains("..")
    {
        let region = match region {
            "config" => VfioRegion::Config,
            _ => match region
                .strip_prefix("bar")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(bar) if bar < PCI_BARS => VfioRegion::Bar(bar),
                _ => VfioRegion::Other,
            },
        };
        return Backing::Vfio {
            device_dir: PathBuf::from("/sys/bus/pci/devices").join(device),
            region,
        };
    }
    let file = Path::new(path);
    if path.starts_with("/sys/")
        && let (Some(parent), Some(name)) = (file.parent(), file.file_name())
        && let Some(bar) = name.to_str().and_then(|n| n.strip_prefix("resource"))
        && let Some(bar) = bar.strip_suffix("_wc").or(Some(bar))
        && let Ok(bar) = bar.parse::<usize>()
        && bar < PCI_BARS
        && parent.join("vendor").exists()
    {
        return Backing::PciResource {
            device_dir: parent.to_owned(),
            bar,
        };
    }
    Backing::Other
}

/// BAR start, end and flags from a device's sysfs `resource` file.
fn read_resources(device_dir: &Path) -> Option<Vec<(u64, u64, u64)>> {
    let text = fs::read_to_string(device_dir.join("resource")).ok()?;
    text.lines()
        .map(|line| {
            let mut fields = line.split_whitespace().map(parse_hex);
            Some((fields.next()??, fields.next()??, fields.next()??))
        })
        .collect()
}

fn parse_hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

/// The physical address of the byte at `offset` in the mapped file.
pub fn phys_address(backing: &Backing, offset: u64) -> u64 {
    match backing {
        Backing::DevMem | Backing::Other => offset,
        Backing::PciResource { device_dir, bar } => read_resources(device_dir)
            .and_then(|res| res.get(*bar).map(|r| r.0))
            .map_or(offset, |start| start.wrapping_add(offset)),
        Backing::Uio { name } => {
            let map = offset / page_size();
            fs::read_to_string(format!("/sys/class/uio/{name}/maps/map{map}/addr"))
                .ok()
                .and_then(|text| parse_hex(&text))
                .unwrap_or(offset)
        }
        Backing::Vfio { device_dir, region } => {
            let within = offset & VFIO_REGION_MASK;
            match region {
                VfioRegion::Bar(bar) => read_resources(device_dir)
                    .and_then(|res| res.get(*bar).map(|r| r.0))
                    .map_or(within, |start| start.wrapping_add(within)),
                VfioRegion::Config | VfioRegion::Other => within,
            }
        }
    }
}

/// The `PCIDEV` line for a device's sysfs directory, as the kernel prints it.
pub fn pci_device(device_dir: &Path) -> Option<PciDev> {
    let dir = fs::canonicalize(device_dir).ok()?;
    // The directory is named domain:bus:device.function, e.g. 0000:01:00.0.
    let name = dir.file_name()?.to_str()?;
    let mut parts = name.rsplitn(2, ':');
    let (dev_fn, domain_bus) = (parts.next()?, parts.next()?);
    let bus = u8::from_str_radix(domain_bus.rsplit(':').next()?, 16).ok()?;
    let (dev, func) = dev_fn.split_once('.')?;
    let devfn = (u8::from_str_radix(dev, 16).ok()? << 3) | u8::from_str_radix(func, 16).ok()?;
    let read_hex = |file: &str| {
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| parse_hex(&t))
    };
    let vendor = read_hex("vendor")? as u16;
    let device = read_hex("device")? as u16;
    let irq = fs::read_to_string(dir.join("irq"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let resources = read_resources(&dir).unwrap_or_default();
    let mut bar_start = [0u64; PCI_BARS];
    let mut bar_size = [0u64; PCI_BARS];
    for (i, &(start, end, flags)) in resources.iter().take(PCI_BARS).enumerate() {
        // The kernel prints start | (flags & PCI_REGION_FLAG_MASK) and end - start + 1.
        bar_start[i] = start | (flags & 0xf);
        bar_size[i] = if start < end { end - start + 1 } else { 0 };
    }
    let driver = fs::read_link(dir.join("driver"))
        .ok()
        .and_then(|link| link.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    Some(PciDev {
        bus,
        devfn,
        vendor,
        device,
        irq,
        bar_start,
        bar_size,
        driver,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_device_paths() {
        assert_eq!(classify("/dev/mem"), Backing::DevMem);
        assert_eq!(
            classify("/dev/uio3"),
            Backing::Uio {
                name: "uio3".into()
            }
        );
        assert_eq!(classify("/dev/uiox"), Backing::Other);
        assert_eq!(
            classify("vfio-device:0000:00:04.0/bar0"),
            Backing::Vfio {
                device_dir: "/sys/bus/pci/devices/0000:00:04.0".into(),
                region: VfioRegion::Bar(0)
            }
        );
        assert_eq!(
            classify("vfio-device:0000:00:04.0/config"),
            Backing::Vfio {
                device_dir: "/sys/bus/pci/devices/0000:00:04.0".into(),
                region: VfioRegion::Config
            }
        );
        assert_eq!(
            phys_address(
                &classify("vfio-device:0000:00:04.0/config"),
                (7 << 40) + 0x10
            ),
            0x10
        );
        assert_eq!(classify("vfio-device:/bar0"), Backing::Other);
        assert_eq!(classify("/dev/shm/bar0"), Backing::Other);
        assert_eq!(classify("/sys/devices/none/resource0"), Backing::Other);
        assert_eq!(phys_address(&Backing::DevMem, 0xfee0_0000), 0xfee0_0000);
        assert_eq!(phys_address(&Backing::Other, 0x1000), 0x1000);
    }

    #[test]
    fn reads_a_fake_sysfs_device() {
        let root = std::env::temp_dir().join(format!("mmiotrace-sysfs-{}", std::process::id()));
        let dir = root.join("0000:03:00.1");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("vendor"), "0x10de\n").expect("write");
        fs::write(dir.join("device"), "0x1c82\n").expect("write");
        fs::write(dir.join("irq"), "16\n").expect("write");
        fs::write(
            dir.join("resource"),
            "0x00000000fd000000 0x00000000fdffffff 0x0000000000040200\n\
             0x00000000e0000000 0x00000000efffffff 0x000000000014220c\n",
        )
        .expect("write");
        let dev = pci_device(&dir).expect("device");
        assert_eq!(
            (dev.bus, dev.devfn, dev.vendor, dev.device, dev.irq),
            (3, 1, 0x10de, 0x1c82, 16)
        );
        assert_eq!(dev.bar_start[0], 0xfd00_0000);
        assert_eq!(dev.bar_start[1], 0xe000_000c);
        assert_eq!(dev.bar_size[0], 0x100_0000);
        assert_eq!(dev.bar_size[2], 0);
        assert_eq!(dev.driver, "");
        // classify() only accepts paths under /sys; the BAR lookup is the same.
        let backing = Backing::PciResource {
            device_dir: dir.clone(),
            bar: 1,
        };
        assert_eq!(phys_address(&backing, 0x40), 0xe000_0040);
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
