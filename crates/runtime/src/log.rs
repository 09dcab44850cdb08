//! Every record the runtime logs goes through [`push`]: from the handlers,
//! which already know their thread's slot, or from [`push_outside_handler`]
//! (mappings, marks, copies made for system calls).

use mmiotrace_shm::{MAX_PAYLOAD, PushResult, Record, Shm, kind};

use crate::state;
use crate::sys::SignalsBlocked;
use crate::threads;

/// Logs `record` (and its payload) to `slot`'s ring. Async-signal-safe.
pub fn push(shm: &Shm, slot: usize, record: Record, payload: &[u8]) {
    if let PushResult::Stopped(reason) = shm.push(slot, record, payload) {
        state::tracing_stopped(shm, reason);
    }
}

/// Logs `record` from outside the handlers: the calling thread's slot and
/// ids, with the asynchronous signals blocked so that no handler on this
/// thread pushes to the same ring meanwhile. Nothing when tracing is off
/// or muted.
pub fn push_outside_handler(record: Record, payload: &[u8]) {
    let Some(shm) = state::shm().filter(|_| !state::muted()) else {
        return;
    };
    let _blocked = SignalsBlocked::new();
    let me = threads::me(&shm);
    let payload = payload.get(..payload.len().min(MAX_PAYLOAD)).unwrap_or(&[]);
    push(
        &shm,
        me.slot,
        Record {
            tid: me.tid,
            pid: me.pid,
            ..record
        },
        payload,
    );
}

/// Pushes a MARK record with `text`, cut visibly to
/// [`mmiotrace_shm::MAX_MARK_LEN`] bytes if it is longer.
pub fn mark(text: &[u8]) {
    let mut clipped = [0u8; mmiotrace_shm::MAX_MARK_LEN];
    let len = mmiotrace_shm::clip_mark(text, text.len() as u64, &mut clipped);
    push_outside_handler(
        Record {
            kind: kind::MARK,
            ..Record::default()
        },
        clipped.get(..len).unwrap_or(&[]),
    );
}
