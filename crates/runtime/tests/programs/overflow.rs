//! A Rust program's stack overflow under the runtime: std's handler must
//! still report it (the runtime installs its handler after std's and
//! chains to it). Usage: overflow FILE
#![allow(unconditional_recursion)]

use std::os::fd::AsRawFd;

unsafe extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
}

fn recurse(n: u64) -> u64 {
    let buf = [n; 64];
    std::hint::black_box(&buf);
    recurse(n + 1).wrapping_add(buf[3])
}

fn main() {
    let path = std::env::args().nth(1).expect("FILE");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
    // PROT_READ|PROT_WRITE, MAP_SHARED
    let dev = unsafe { mmap(std::ptr::null_mut(), 4096, 3, 1, file.as_raw_fd(), 0) };
    assert_ne!(dev as isize, -1);
    unsafe { std::ptr::write_volatile(dev as *mut u32, 7) };
    println!("{}", recurse(0));
}
