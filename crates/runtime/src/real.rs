//! The libc functions the runtime shadows, found with `dlsym(RTLD_NEXT)`.
//!
//! # Safety
//!
//! `dlsym` takes a C string, and a found address becomes a callable
//! function only by a transmute to its C signature, which the caller of
//! [`RealFn::function`] names.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sys;

/// A libc function the runtime shadows, found once with `dlsym(RTLD_NEXT)`.
#[derive(Debug)]
pub struct RealFn {
    /// NUL-terminated.
    name: &'static [u8],
    addr: AtomicUsize,
}

impl RealFn {
    const fn new(name: &'static [u8]) -> RealFn {
        RealFn {
            name,
            addr: AtomicUsize::new(0),
        }
    }

    /// The real function's address. Resolved when the runtime is loaded
    /// ([`resolve_all`]); only a call that comes before that resolves here.
    pub fn get(&self) -> Option<usize> {
        let addr = self.addr.load(Ordering::Relaxed);
        if addr != 0 {
            return Some(addr);
        }
        // SAFETY: a NUL-terminated name; RTLD_NEXT finds the definition
        // after this library's, i.e. libc's.
        let found = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr().cast()) } as usize;
        self.addr.store(found, Ordering::Relaxed);
        (found != 0).then_some(found)
    }

    /// The real function as a function pointer of type `F`, or `None`
    /// (with `errno` set) if libc has none.
    ///
    /// # Safety
    ///
    /// `F` is the function's C signature.
    pub unsafe fn function<F: Copy>(&self) -> Option<F> {
        let Some(addr) = self.get() else {
            sys::set_errno(libc::ENOSYS);
            return None;
        };
        // SAFETY: F is a function pointer type of the symbol's signature
        // (the caller's contract), and `addr` is that symbol.
        Some(unsafe { core::mem::transmute_copy::<usize, F>(&addr) })
    }
}

pub static PTHREAD_CREATE: RealFn = RealFn::new(b"pthread_create\0");
pub static READ: RealFn = RealFn::new(b"read\0");
pub static WRITE: RealFn = RealFn::new(b"write\0");
pub static PREAD: RealFn = RealFn::new(b"pread64\0");
pub static PWRITE: RealFn = RealFn::new(b"pwrite64\0");
pub static READV: RealFn = RealFn::new(b"readv\0");
pub static WRITEV: RealFn = RealFn::new(b"writev\0");
pub static PREADV: RealFn = RealFn::new(b"preadv64\0");
pub static PWRITEV: RealFn = RealFn::new(b"pwritev64\0");
pub static SENDTO: RealFn = RealFn::new(b"sendto\0");
pub static RECVFROM: RealFn = RealFn::new(b"recvfrom\0");
pub static SENDMSG: RealFn = RealFn::new(b"sendmsg\0");
pub static RECVMSG: RealFn = RealFn::new(b"recvmsg\0");
pub static IOCTL: RealFn = RealFn::new(b"ioctl\0");
pub static CHK_FAIL: RealFn = RealFn::new(b"__chk_fail\0");

/// Resolves every real function, when the runtime is loaded: later calls,
/// which may come from signal handlers, never enter `dlsym`.
pub fn resolve_all() {
    for real in [
        &PTHREAD_CREATE,
        &READ,
        &WRITE,
        &PREAD,
        &PWRITE,
        &READV,
        &WRITEV,
        &PREADV,
        &PWRITEV,
        &SENDTO,
        &RECVFROM,
        &SENDMSG,
        &RECVMSG,
        &IOCTL,
        &CHK_FAIL,
    ] {
        real.get();
    }
}
