//! The limits: a flood of distinct flows never grows the queue's memory or passes a limit,
//! and every item comes back exactly once; the fattest flow pays for the room, head first.

mod common;

use common::{meta, us, Clock, Drops, Token};
use ringway_fq::{Config, DropReason, Enqueued, FlowQueue};

/// 100 000 distinct flows (one packet each, random sizes), a dequeue for every four
/// arrivals: the queue sits at its limits the whole time.
#[test]
fn a_flood_of_distinct_flows_stays_within_fixed_memory_and_loses_nothing() {
    const N: u32 = 100_000;
    let mut clock = Clock::new();
    let config = Config::default();
    let mut q = FlowQueue::new(config.clone()).expect("config");
    let memory = q.memory_bytes();
    // Where each item went: 0 = not yet, 1 = dequeued, 2 = dropped, 3 = flushed.
    let mut fate = vec![0u8; N as usize];
    let mut settle = |id: u32, how: u8| {
        let f = &mut fate[id as usize];
        assert_eq!(*f, 0, "item {id} came back twice");
        *f = how;
    };
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for id in 0..N {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let flow = rng as u32;
        let len = 40 + (rng >> 40) as usize % 1461;
        let mut drops = Vec::new();
        q.enqueue(clock.now(), Token(id), meta(flow, len), |t, why| {
            drops.push((t, why))
        });
        for (t, why) in drops {
            assert_eq!(why, DropReason::Overflow);
            settle(t.0, 2);
        }
        if id % 4 == 0 {
            let mut drops = Vec::new();
            if let Some(d) = q.dequeue(clock.now(), |t, why| drops.push((t, why))) {
                settle(d.item.0, 1);
            }
            for (t, _) in drops {
                settle(t.0, 2);
            }
        }
        let s = q.stats();
        assert!(s.items <= u64::from(config.limit_items), "{s:?}");
        assert!(s.bytes <= u64::from(config.limit_bytes), "{s:?}");
        assert!(s.active_flows <= u64::from(config.flows), "{s:?}");
        clock.advance(us(1));
    }
    assert_eq!(q.memory_bytes(), memory, "no growth");
    let s = q.stats().clone();
    assert_eq!(s.peak_items, u64::from(config.limit_items), "it was full");
    assert!(s.dropped_overflow > 70_000, "{s:?}");
    q.clear(|t| settle(t.0, 3));
    assert!(q.is_empty());
    assert_eq!(q.stats().active_flows, 0);

    let count = |how| fate.iter().filter(|&&f| f == how).count() as u64;
    assert_eq!(count(0), 0, "every item came back");
    let s = q.stats();
    assert_eq!(count(1), s.dequeued);
    assert_eq!(count(2), s.dropped());
    assert_eq!(count(3), s.flushed);
    assert_eq!(s.enqueued, u64::from(N));
    assert_eq!(s.enqueued, s.dequeued + s.dropped() + s.flushed + s.items);
}

#[test]
fn the_fattest_flow_pays_from_its_head_in_batches() {
    let clock = Clock::new();
    let config = Config {
        limit_items: 1000,
        drop_batch: 64,
        ..Config::default()
    };
    let mut q = FlowQueue::new(config).expect("config");
    let mut drops = Drops::default();
    // A fat flow of 900 items (ids 0..900), then 100 thin flows of one item each.
    for id in 0..900 {
        assert_eq!(
            q.enqueue(clock.now(), Token(id), meta(5, 1000), drops.sink()),
            Enqueued::Queued
        );
    }
    for id in 900..1000 {
        assert_eq!(
            q.enqueue(clock.now(), Token(id), meta(id, 100), drops.sink()),
            Enqueued::Queued
        );
    }
    // Full. The next arrival (a thin flow) makes room: a batch of 64 from the fat head.
    let out = q.enqueue(clock.now(), Token(1000), meta(1000, 100), drops.sink());
    assert_eq!(out, Enqueued::QueuedAfterDrop { dropped: 64 });
    let ids: Vec<u32> = drops.0.iter().map(|d| d.0).collect();
    assert_eq!(
        ids,
        (0..64).collect::<Vec<_>>(),
        "oldest first, fat flow only"
    );
    assert_eq!(drops.count(DropReason::Overflow), 64);
    // The batch left room: the next 63 arrivals drop nothing.
    for id in 1001..1064 {
        assert_eq!(
            q.enqueue(clock.now(), Token(id), meta(id, 100), drops.sink()),
            Enqueued::Queued
        );
    }
    assert_eq!(q.stats().overflow_batches, 1);
    assert_eq!(q.len(), 1000);
}

#[test]
fn a_batch_stops_once_half_the_fattest_flows_bytes_are_gone() {
    let clock = Clock::new();
    let config = Config {
        limit_items: 10,
        ..Config::default()
    };
    let mut q = FlowQueue::new(config).expect("config");
    let mut dropped = Vec::new();
    for id in 0..10 {
        q.enqueue(clock.now(), Token(id), meta(1, 1000), |t, _| {
            dropped.push(t.0)
        });
    }
    // 10 000 bytes in the flow: the batch stops after 5 items (5 000 bytes).
    let out = q.enqueue(clock.now(), Token(10), meta(2, 10), |t, _| {
        dropped.push(t.0)
    });
    assert_eq!(out, Enqueued::QueuedAfterDrop { dropped: 5 });
    assert_eq!(dropped, vec![0, 1, 2, 3, 4]);
}

#[test]
fn the_byte_limit_holds_and_an_item_too_big_for_it_is_refused() {
    let clock = Clock::new();
    let config = Config {
        limit_bytes: 10_000,
        ..Config::default()
    };
    let mut q = FlowQueue::new(config).expect("config");
    let mut drops = Vec::new();
    let out = q.enqueue(clock.now(), Token(0), meta(1, 10_001), |t, why| {
        drops.push((t, why))
    });
    assert_eq!(out, Enqueued::Refused);
    assert_eq!(drops, vec![(Token(0), DropReason::Overflow)]);
    assert!(q.is_empty());
    assert_eq!(q.stats().dropped_overflow, 1);
    assert_eq!(q.stats().enqueued, 1);

    drops.clear();
    for id in 1..=9 {
        q.enqueue(clock.now(), Token(id), meta(1, 1000), |t, why| {
            drops.push((t, why))
        });
    }
    assert!(drops.is_empty());
    // 9 000 queued; 5 000 more need the fat flow to give up 4 000. A batch stops at a
    // 64th of the byte limit (156 bytes), so each gives up one 1 000-byte item: exactly
    // the four needed, leaving 5 000 + 5 000, the limit, which fits.
    let out = q.enqueue(clock.now(), Token(10), meta(2, 5000), |t, why| {
        drops.push((t, why))
    });
    assert_eq!(out, Enqueued::QueuedAfterDrop { dropped: 4 });
    assert_eq!(q.bytes(), 10_000);
    // One byte more does not fit.
    let out = q.enqueue(clock.now(), Token(12), meta(3, 1), |t, why| {
        drops.push((t, why))
    });
    assert!(matches!(out, Enqueued::QueuedAfterDrop { .. }));
    assert!(q.bytes() <= 10_000);
}

#[test]
fn a_caller_out_of_its_own_buffers_can_make_room_from_the_fattest_flow() {
    let clock = Clock::new();
    let mut q = FlowQueue::new(Config::default()).expect("config");
    let mut drops = Drops::default();
    assert_eq!(q.drop_fattest(drops.sink()), 0, "nothing to drop");
    for id in 0..10 {
        q.enqueue(clock.now(), Token(id), meta(1, 1000), drops.sink());
    }
    q.enqueue(clock.now(), Token(10), meta(2, 100), drops.sink());
    // Half the fat flow's bytes go, oldest first; the thin flow keeps its item.
    assert_eq!(q.drop_fattest(drops.sink()), 5);
    let ids: Vec<u32> = drops.0.iter().map(|d| d.0).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4]);
    assert_eq!(drops.count(DropReason::Overflow), 5);
    assert_eq!(q.stats().dropped_overflow, 5);
    assert_eq!(q.len(), 6);
}

#[test]
fn a_batch_of_large_items_stops_at_a_64th_of_the_byte_limit() {
    let clock = Clock::new();
    let config = Config {
        limit_bytes: 64 * 65536,
        ..Config::default()
    };
    let mut q = FlowQueue::new(config).expect("config");
    let mut drops = Drops::default();
    // One flow of 64 KiB superpackets fills the byte limit.
    for id in 0..64 {
        q.enqueue(clock.now(), Token(id), meta(1, 65536), drops.sink());
    }
    assert_eq!(drops.count(DropReason::Overflow), 0);
    // The next one makes room by dropping one item (64 KiB, the cap), not half the flow.
    let out = q.enqueue(clock.now(), Token(64), meta(1, 65536), drops.sink());
    assert_eq!(out, Enqueued::QueuedAfterDrop { dropped: 1 });
    assert_eq!(q.len(), 64);
}
