use super::*;

struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    fn new(len: usize) -> Region {
        // SAFETY: anonymous private mapping, no pointers passed in.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        Region {
            ptr: ptr as *mut u8,
            len,
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what new() mapped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

fn small(drop_when_full: bool) -> Config {
    Config {
        slot_count: 4,
        ring_entries: 512,
        drop_when_full,
    }
}

#[test]
fn push_pop_round_trip_with_payload() {
    let config = small(false);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    let slot = shm.claim_slot(77).expect("slot");
    let record = Record {
        kind: kind::MAP,
        map_id: 3,
        value: 4096,
        ..Record::default()
    };
    let path = b"/dev/shm/some-file-with-a-name-longer-than-sixty-four-bytes-0123456789";
    assert_eq!(shm.push(slot, record, path), PushResult::Pushed);
    // Two entries, and three of 32 bytes for the 71-byte path.
    assert_eq!(shm.pending(slot), 5);
    let popped = shm.pop(slot).expect("record");
    assert_eq!(popped.record.kind, kind::MAP);
    assert_eq!(popped.record.ext, 3);
    assert_eq!(payload_text(&popped.payload), path);
    assert!(shm.pop(slot).is_none());
}

#[test]
fn records_are_numbered_per_ring_and_stamped_on_the_files_clock() {
    let config = small(false);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    assert_eq!(shm.tsc_time(), tsc_is_usable());
    let a = shm.claim_slot(1).expect("slot");
    let b = shm.claim_slot(2).expect("slot");
    assert_ne!(a, b);
    let before = shm.now_stamp();
    for _ in 0..3 {
        shm.push(a, Record::default(), &[]);
        shm.push(b, Record::default(), &[]);
    }
    let after = shm.now_stamp();
    let popped: Vec<Popped> = std::iter::from_fn(|| shm.pop(a))
        .chain(std::iter::from_fn(|| shm.pop(b)))
        .collect();
    let seqs: Vec<u64> = popped.iter().map(|p| p.record.seq).collect();
    assert_eq!(seqs, [0, 2, 4, 0, 2, 4], "two entries a record");
    let times: Vec<u64> = popped.iter().map(|p| p.record.time_ns).collect();
    for (i, p) in popped.iter().enumerate() {
        assert!((before..=after).contains(&p.record.time_ns), "{times:?}");
        assert_eq!(p.record.flags & RECORD_FLAG_TSC != 0, shm.tsc_time());
        // Pushed alternately: ring a's i-th before ring b's i-th.
        if i < 3 {
            assert!(p.record.time_ns <= times[i + 3], "{times:?}");
        }
    }
    assert_eq!(shm.publication(a), (false, 6));
}

#[test]
fn drop_mode_counts_what_it_drops() {
    let config = small(true);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    let slot = shm.claim_slot(5).expect("slot");
    for _ in 0..600 {
        shm.push(slot, Record::default(), &[]);
    }
    // 256 records of two entries each.
    assert_eq!(shm.pending(slot), 512);
    assert_eq!(shm.lost(), 344);
}

#[test]
fn full_ring_waits_for_the_consumer() {
    let config = small(false);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    let slot = shm.claim_slot(9).expect("slot");
    let producer = std::thread::spawn(move || {
        for i in 0..5000u64 {
            let record = Record {
                value: i,
                ..Record::default()
            };
            shm.push(slot, record, &[]);
        }
    });
    // Let the producer fill the ring before consuming anything: its
    // 257th push (two entries a record) must then wait.
    while shm.pending(slot) < 512 {
        std::thread::yield_now();
    }
    let mut next = 0u64;
    while next < 5000 {
        if let Some(popped) = shm.pop(slot) {
            assert_eq!(popped.record.value, next);
            assert_eq!(popped.record.seq, next * RECORD_ENTRIES);
            next += 1;
        } else {
            std::thread::yield_now();
        }
    }
    producer.join().expect("producer");
    assert!(shm.full_waits() > 0);
}

#[test]
fn a_closed_file_never_makes_a_full_ring_wait() {
    let config = small(false);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    let slot = shm.claim_slot(3).expect("slot");
    // Full: 256 records of two entries.
    for _ in 0..256 {
        shm.push(slot, Record::default(), &[]);
    }
    shm.close();
    assert_eq!(
        shm.push(slot, Record::default(), &[]),
        PushResult::Stopped(StopReason::Finished)
    );
    assert_eq!(shm.full_waits(), 0);
    assert_eq!(shm.stop(StopReason::RecorderGone), StopReason::Finished);
}

#[test]
fn the_kernel_tells_the_runtime_that_the_recorder_is_gone() {
    let config = small(false);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    let slot = shm.claim_slot(3).expect("slot");
    assert!(!shm.recorder_gone(), "no announcement: taken as alive");
    let liveness = RecorderLiveness::announce(shm).expect("robust futexes");
    assert!(!shm.recorder_gone());
    assert!(matches!(
        shm.push(slot, Record::default(), &[]),
        PushResult::Pushed
    ));
    // The thread ends: the kernel sets FUTEX_OWNER_DIED in the word.
    drop(liveness);
    assert!(shm.recorder_gone());
    for _ in 0..600 {
        assert_eq!(
            shm.push(slot, Record::default(), &[]),
            PushResult::Stopped(StopReason::RecorderGone),
            "a full ring never waits for a recorder that is gone"
        );
    }
    assert_eq!(shm.stop_reason(), Some(StopReason::RecorderGone));
}

#[test]
fn geometry_limits() {
    let config = |slot_count, ring_entries| Config {
        slot_count,
        ring_entries,
        drop_when_full: false,
    };
    assert!(config(1, 512).check().is_ok());
    assert!(config(MAX_SLOTS, MAX_RING_ENTRIES).check().is_ok());
    for bad in [
        config(0, 512),
        config(1, 0),
        config(1, 511),
        config(MAX_SLOTS + 1, 512),
    ] {
        assert_eq!(bad.check(), Err(ShmError::BadGeometry), "{bad:?}");
    }
    assert_eq!(config(1, u32::MAX).check(), Err(ShmError::BadGeometry));
}

#[test]
fn rejects_foreign_files() {
    let region = Region::new(8192);
    // SAFETY: a zeroed mapping; from_raw only reads the header.
    let result = unsafe { Shm::from_raw(region.ptr, region.len) };
    assert_eq!(result.err(), Some(ShmError::BadMagic));
}

#[test]
fn slots_are_reused_after_release() {
    let config = small(false);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    let slots: Vec<usize> = (1..=4)
        .map(|tid| shm.claim_slot(tid).expect("slot"))
        .collect();
    assert_eq!(shm.claim_slot(99), None);
    shm.release_slot(slots[2]);
    assert_eq!(shm.claim_slot(99), Some(slots[2]));
    assert_eq!(shm.slots_used(), 4);
}

#[test]
fn pop_batch_takes_records_with_payloads_in_order_and_frees_the_ring() {
    let config = small(false);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    let slot = shm.claim_slot(7).expect("slot");
    let path = b"/dev/mem, a path longer than one record so that it takes two continuations";
    let producer = std::thread::spawn(move || {
        for i in 0..5000u64 {
            let record = Record {
                value: i,
                ..Record::default()
            };
            // Every 100th record carries a payload (3 entries in all).
            let payload: &[u8] = if i % 100 == 0 { path } else { &[] };
            shm.push(slot, record, payload);
        }
    });
    let mut popped = Vec::new();
    let mut calls = 0;
    while popped.len() < 5000 {
        let before = popped.len();
        let taken = shm.pop_batch(slot, 64, &mut popped);
        assert_eq!(taken, popped.len() - before);
        assert!(taken <= 64);
        calls += 1;
        if taken == 0 {
            std::thread::yield_now();
        }
    }
    producer.join().expect("producer");
    assert!(calls > 1);
    assert_eq!(shm.pending(slot), 0);
    for (i, p) in popped.iter().enumerate() {
        assert_eq!(p.record.value, i as u64);
        // Its ring position: after the one before and its continuations.
        // (Two entries a record, three for the 75-byte path.)
        assert_eq!(p.record.seq, 2 * i as u64 + 3 * (i as u64).div_ceil(100));
        if i % 100 == 0 {
            assert_eq!(payload_text(&p.payload), path);
        } else {
            assert!(p.payload.is_empty());
        }
    }
    assert_eq!(shm.pop_batch(slot, 64, &mut popped), 0);
}

#[test]
fn consume_stops_at_the_first_record_refused_and_leaves_it() {
    let config = small(false);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    let slot = shm.claim_slot(8).expect("slot");
    for i in 0..10u64 {
        let record = Record {
            value: i,
            ..Record::default()
        };
        shm.push(slot, record, if i == 3 { b"mark" } else { b"" });
    }
    let mut payload = Vec::new();
    let mut seen = Vec::new();
    let taken = shm.consume(slot, usize::MAX, &mut payload, |record, payload| {
        if record.value == 5 {
            return false;
        }
        seen.push((record.value, payload_text(payload).to_vec()));
        true
    });
    assert_eq!(taken, 5);
    assert_eq!(seen[3], (3, b"mark".to_vec()));
    assert!(
        seen.iter()
            .filter(|(v, _)| *v != 3)
            .all(|(_, p)| p.is_empty())
    );
    // Left: records 5 to 9, two entries each (the continuation of 3 went
    // with it).
    assert_eq!(shm.pending(slot), 10);
    assert_eq!(shm.pop(slot).expect("record 5 stayed").record.value, 5);
}

#[test]
fn push_keeps_the_tsc_of_a_record_flagged_with_it() {
    let config = small(false);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    let slot = shm.claim_slot(5).expect("slot");
    let stamped = Record {
        kind: kind::WRITE,
        width: 4,
        flags: RECORD_FLAG_TSC,
        time_ns: 0x1234_5678_9abc,
        ..Record::default()
    };
    shm.push(slot, stamped, &[]);
    // Without the flag, the caller's time_ns is replaced by the clock.
    shm.push(
        slot,
        Record {
            flags: 0,
            ..stamped
        },
        &[],
    );
    let tsc = shm.pop(slot).expect("first").record;
    assert_eq!(
        (tsc.flags, tsc.time_ns),
        (RECORD_FLAG_TSC, 0x1234_5678_9abc)
    );
    let plain = shm.pop(slot).expect("second").record;
    assert_ne!(plain.time_ns, 0x1234_5678_9abc);
    assert!(plain.time_ns <= shm.now_stamp());
    assert_eq!(plain.flags & RECORD_FLAG_TSC != 0, shm.tsc_time());
}

/// A run's record `i`: a one-byte write of `i` at offset `i`.
fn run_record(i: usize, record: &mut Record) {
    record.kind = kind::WRITE;
    record.width = 1;
    record.map_id = 1;
    record.offset = i as u64;
    record.value = i as u64 & 0xff;
    record.tid = 9;
}

#[test]
fn a_run_is_numbered_in_its_ring_after_what_came_before_and_shares_one_time() {
    let config = small(false);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    let slot = shm.claim_slot(9).expect("slot");
    assert_eq!(shm.push(slot, Record::default(), &[]), PushResult::Pushed);
    let (made, result) = shm.push_run(slot, 100, |i, record| {
        if i == 70 {
            return false;
        }
        run_record(i, record);
        true
    });
    assert_eq!((made, result), (70, PushResult::Pushed));
    assert_eq!(
        shm.pending(slot),
        71 * RECORD_ENTRIES,
        "nothing published for what was not made"
    );
    shm.pop(slot).expect("the push before");
    let mut time = None;
    for i in 0..70 {
        let popped = shm.pop(slot).expect("a record of the run");
        let mut expected = Record::default();
        run_record(i, &mut expected);
        expected.seq = (1 + i as u64) * RECORD_ENTRIES;
        expected.time_ns = *time.get_or_insert(popped.record.time_ns);
        if shm.tsc_time() {
            expected.flags |= RECORD_FLAG_TSC;
        }
        assert_eq!(popped.record, expected);
    }
    assert!(shm.pop(slot).is_none());
    // A run longer than half a ring is cut there: 128 records of two
    // entries.
    let (made, _) = shm.push_run(slot, 10_000, |i, record| {
        run_record(i, record);
        true
    });
    assert_eq!(made, 128);
}

#[test]
fn a_run_that_cannot_be_logged_still_makes_every_access_once() {
    let config = small(true);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    let slot = shm.claim_slot(9).expect("slot");
    for _ in 0..250 {
        shm.push(slot, Record::default(), &[]);
    }
    // Drop mode, 12 entries (6 records) of room: the run of 40 is dropped
    // whole.
    let mut calls = Vec::new();
    let (made, result) = shm.push_run(slot, 40, |i, record| {
        calls.push(i);
        run_record(i, record);
        true
    });
    assert_eq!((made, result), (40, PushResult::Dropped));
    assert_eq!(calls, (0..40).collect::<Vec<_>>());
    assert_eq!(shm.lost(), 40);
    assert_eq!(shm.pending(slot), 500);
    shm.close();
    calls.clear();
    let (made, result) = shm.push_run(slot, 5, |i, record| {
        calls.push(i);
        run_record(i, record);
        true
    });
    assert_eq!(
        (made, result),
        (5, PushResult::Stopped(StopReason::Finished))
    );
    assert_eq!(calls, (0..5).collect::<Vec<_>>());
    assert_eq!(shm.pending(slot), 500);
}

/// A small file whose records are stamped with the TSC, as compact
/// records need; `None` (the test is skipped) where the TSC is not usable.
fn file_for_compact_records() -> Option<(Region, Shm)> {
    if !tsc_is_usable() {
        eprintln!("skipped: compact records need a usable TSC");
        return None;
    }
    let config = small(false);
    let region = Region::new(config.total_size());
    // SAFETY: fresh zeroed anonymous mapping of the right size.
    let shm = unsafe { Shm::init(region.ptr, region.len, &config, b"") }.expect("init");
    Some((region, shm))
}

#[test]
fn compact_records_expand_with_the_ids_of_the_rings_last_record_and_wrap_around() {
    let Some((_region, shm)) = file_for_compact_records() else {
        return;
    };
    let slot = shm.claim_slot(41).expect("slot");
    let owner = Record {
        kind: kind::MAP,
        tid: 41,
        pid: 40,
        ..Record::default()
    };
    let key = compact::key(7, 0x1234_5678_9abc).expect("fits");
    assert_eq!(compact::key(1 << 16, 0), None, "map id too large");
    assert_eq!(compact::key(1, 1 << 48), None, "offset too large");
    let value: Vec<u8> = (1..=64).collect();
    // Round the ring several times: records, compact records and vector
    // values land across its end.
    for round in 0..200u64 {
        shm.push(
            slot,
            Record {
                value: round,
                ..owner
            },
            &[],
        );
        let pc = 0x7f00_1234_5000 + round;
        let before = shm.now_stamp();
        let pushed = shm.push_compact(
            slot,
            compact::head(true, 4, 0, pc),
            key,
            &0xdead_beef_u32.to_le_bytes(),
        );
        assert_eq!(pushed, PushResult::Pushed);
        let pushed = shm.push_compact(slot, compact::head(false, 64, 2, pc), key + 8, &value);
        assert_eq!(pushed, PushResult::Pushed);
        let records: Vec<Popped> = std::iter::from_fn(|| shm.pop(slot)).collect();
        assert_eq!(records.len(), 3, "round {round}");
        let store = &records[1].record;
        assert_eq!(
            (store.kind, store.width, store.ext, store.tid, store.pid),
            (kind::WRITE, 4, 0, 41, 40)
        );
        assert_eq!(
            (store.map_id, store.offset, store.value, store.pc),
            (7, 0x1234_5678_9abc, 0xdead_beef, pc)
        );
        assert!(before <= store.time_ns && store.time_ns <= records[2].record.time_ns);
        assert_eq!(store.flags, RECORD_FLAG_TSC | RECORD_FLAG_FAST_PATH);
        assert!(records[1].payload.is_empty());
        let load = &records[2];
        assert_eq!(
            (load.record.kind, load.record.width, load.record.ext),
            (kind::READ, 64, 2)
        );
        assert_eq!(load.record.offset, 0x1234_5678_9abc + 8);
        assert_eq!(load.record.value, 0x0807_0605_0403_0201);
        assert_eq!(load.payload, value);
    }
}

#[test]
fn entries_taken_as_they_are_decode_to_what_consume_gives() {
    let Some((_region, shm)) = file_for_compact_records() else {
        return;
    };
    let (a, b) = (
        shm.claim_slot(5).expect("slot"),
        shm.claim_slot(6).expect("slot"),
    );
    let key = compact::key(3, 0x40).expect("fits");
    let wide: Vec<u8> = (100..164).collect();
    // The same records into both rings, round after round, so that they
    // wrap; ring a is consumed, ring b taken as it is and decoded.
    let mut ids = shm.consumer_ids(b);
    for round in 0..120u64 {
        for slot in [a, b] {
            let owner = Record {
                kind: kind::MARK,
                tid: 50 + round as u32,
                pid: 50,
                value: round,
                ..Record::default()
            };
            shm.push(slot, owner, b"a payload of more than one entry, 45 bytes");
            let head = compact::head(true, 8, 0, 0x1000 + round);
            assert_eq!(
                shm.push_compact(slot, head, key, &round.to_le_bytes()),
                PushResult::Pushed
            );
            let head = compact::head(false, 64, 2, 0x2000 + round);
            assert_eq!(shm.push_compact(slot, head, key, &wide), PushResult::Pushed);
        }
        let consumed: Vec<Popped> = std::iter::from_fn(|| shm.pop(a)).collect();
        let mut bytes = Vec::new();
        assert_eq!(
            shm.take_entries(b, 2, |_| Ok::<(), ()>(())),
            Ok((round * 8, 0))
        );
        let (start, entries) = shm
            .take_entries(b, u64::MAX, |slice| {
                bytes.extend_from_slice(slice);
                Ok::<(), ()>(())
            })
            .expect("taken");
        assert_eq!((start, entries), (round * 8, 8));
        assert_eq!(shm.pending(b), 0);
        let mut decoded = Vec::new();
        let used = decode_entries(&bytes, start, &mut ids, usize::MAX, &mut decoded);
        assert_eq!(used, bytes.len());
        assert_eq!(decoded.len(), 3);
        for (mine, theirs) in decoded.iter().zip(&consumed) {
            let same = |p: &Popped| {
                (
                    p.record.kind,
                    p.record.tid,
                    p.record.value,
                    p.payload.clone(),
                )
            };
            assert_eq!(same(mine), same(theirs), "round {round}");
        }
        assert_eq!(decoded[2].payload, wide);
        assert_eq!(decoded[1].record.tid, 50 + round as u32);
    }
}
