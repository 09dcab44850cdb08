//! Phase markers: when the program runs under `mmiotrace record`, the runtime
//! exports `mmiotrace_runtime_mark`, and a call to it puts a `MARK` line into
//! the trace. Untraced, the symbol is absent and marking does nothing.
//!
//! # Safety
//!
//! The symbol is looked up by name, so its type is taken on trust: the
//! runtime documents it as `extern "C" fn(*const c_char)`, taking a
//! NUL-terminated string that it copies before returning.

/// Calls `mmiotrace_runtime_mark` when the program runs under the tracer, so
/// that the trace shows which phase of the driver each access belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Marker {
    mark: Option<unsafe extern "C" fn(*const libc::c_char)>,
}

impl Marker {
    pub fn lookup() -> Self {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no
        // preconditions.
        let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mmiotrace_runtime_mark".as_ptr()) };
        let mark = (!symbol.is_null()).then(|| {
            // SAFETY: the runtime exports this symbol as
            // `extern "C" fn(*const c_char)`; a data pointer and a function
            // pointer have the same size on every target this builds for.
            unsafe {
                std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn(*const libc::c_char)>(
                    symbol,
                )
            }
        });
        Self { mark }
    }

    pub fn mark(&self, phase: &std::ffi::CStr) {
        if let Some(mark) = self.mark {
            // SAFETY: `phase` is NUL-terminated and outlives the call, which
            // is all the runtime's marker needs.
            unsafe { mark(phase.as_ptr()) }
        }
    }
}
