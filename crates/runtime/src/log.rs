//! Every record the runtime logs goes through [`push`]: from the handlers,
//! which already know their thread's slot, or from [`push_outside_handler`]
//! (mappings, marks, copies made for system calls).

use std::sync::atomic::{Ordering, compiler_fence};

use mmiotrace_shm::{MAX_PAYLOAD, PushResult, Record, Shm, kind};

use crate::state;
use crate::sys::SignalsBlocked;
use crate::{threads, tls};

/// Logs `record` (and its payload) to `slot`'s ring. Async-signal-safe and
/// re-entrant: a patched site's trampoline pushes with signals deliverable,
/// so a signal handler that makes a traced access may interrupt a push into
/// the same ring. That nested push goes into a ring slot borrowed for it
/// (the ring is single-producer), then given back; the recorder merges the
/// rings by time.
pub fn push(shm: &Shm, slot: usize, record: Record, payload: &[u8]) {
    in_slot(shm, slot, record.tid, &mut |slot| {
        ((), shm.push(slot, record, payload))
    });
}

/// Logs a run of up to `max` records that `each` makes one by one, each
/// right after its access ([`Shm::push_run`]: one time for the run).
/// Re-entrant as [`push`]. Returns
/// how many records `each` made; it is called for every one of them even
/// when they cannot be logged. `tid` is the calling thread's.
pub fn push_run(
    shm: &Shm,
    slot: usize,
    tid: u32,
    max: usize,
    each: &mut dyn FnMut(usize, &mut Record) -> bool,
) -> usize {
    in_slot(shm, slot, tid, &mut |slot| {
        shm.push_run(slot, max, &mut *each)
    })
    .unwrap_or(0)
}

/// Runs `push` on `slot` with the slot's flag of a push under way set
/// (`tls::SlotBlock`: only the slot's owner thread, the signal handlers
/// that interrupt it, and a patched site's fast path set it), or, when it
/// is set already (a handler interrupted a push of this thread), on a
/// slot borrowed for it and given back; stops tracing when the push says
/// that nobody drains the rings any more. `None` for a slot out of range.
fn in_slot<R>(
    shm: &Shm,
    slot: usize,
    tid: u32,
    push: &mut dyn FnMut(usize) -> (R, PushResult),
) -> Option<R> {
    let pushing = tls::pushing(slot)?;
    // Same thread: a handler that interrupts between the load and the
    // store runs its whole push first (the fences keep the compiler from
    // moving the ring's writes outside the flag).
    if pushing.load(Ordering::Relaxed) {
        let borrowed = threads::borrow_slot(shm, tid);
        let done = in_slot(shm, borrowed, tid, push);
        shm.release_slot(borrowed);
        return done;
    }
    pushing.store(true, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    let (done, result) = push(slot);
    compiler_fence(Ordering::SeqCst);
    pushing.store(false, Ordering::Relaxed);
    if result == PushResult::Pushed {
        tls::note_logged(slot);
    }
    if let PushResult::Stopped(reason) = result {
        state::tracing_stopped(shm, reason);
    }
    Some(done)
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
