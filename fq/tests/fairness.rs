//! Deficit round robin on a simulated clock: sparse flows go first, backlogged flows share
//! bytes evenly whatever their item sizes, and a flow cannot stay "sparse" by refilling.

mod common;

use std::time::Duration;

use common::{meta, us, Clock, Token};
use ringway_fq::{Config, DropReason, FlowQueue};

const BULK: u32 = 1;
const SPARSE: u32 = 2;

/// One bulk flow kept at 200 queued 1420-byte packets, one sparse flow sending an 84-byte
/// ping every 10 ms halfway between two dequeues, and a send path that takes one item
/// every 100 µs: each ping leaves at the very next dequeue, 50 µs after it arrived, while
/// the bulk flow's packets wait ~20 ms behind their own backlog.
#[test]
fn a_sparse_flow_goes_before_a_bulk_backlog() {
    let mut clock = Clock::new();
    let mut q = FlowQueue::new(Config::default()).expect("config");
    let mut dropped = Vec::new();
    let mut next_id = 0u32;
    let mut bulk_queued = 0usize;
    let mut pings = Vec::new(); // (id, sojourn, sparse, dequeues since it arrived)
    let mut bulk_sojourns = Vec::new();
    let mut waiting_ping: Option<(u32, usize)> = None;

    for tick in 0..20_000usize {
        while bulk_queued < 200 {
            q.enqueue(clock.now(), Token(next_id), meta(BULK, 1420), |t, why| {
                dropped.push((t.0, why))
            });
            next_id += 1;
            bulk_queued += 1;
        }
        clock.advance(us(50));
        if tick % 100 == 50 {
            let id = 1_000_000 + tick as u32;
            q.enqueue(clock.now(), Token(id), meta(SPARSE, 84), |t, why| {
                dropped.push((t.0, why))
            });
            waiting_ping = Some((id, tick));
        }
        clock.advance(us(50));
        let d = q
            .dequeue(clock.now(), |t: Token, why| {
                if t.0 < 1_000_000 {
                    bulk_queued -= 1;
                }
                dropped.push((t.0, why))
            })
            .expect("backlogged");
        if d.item.0 >= 1_000_000 {
            let (id, arrived) = waiting_ping.take().expect("a ping was waiting");
            assert_eq!(d.item.0, id);
            pings.push((id, d.sojourn, d.sparse, tick - arrived));
        } else {
            bulk_queued -= 1;
            bulk_sojourns.push(d.sojourn);
        }
    }

    assert_eq!(pings.len(), 200, "every ping came out");
    for &(id, sojourn, sparse, waited) in &pings {
        assert!(sparse, "ping {id} was not served as sparse");
        assert_eq!(waited, 0, "ping {id} waited {waited} dequeues");
        assert_eq!(sojourn, us(50), "ping {id}");
    }
    assert!(
        dropped.iter().all(|&(id, _)| id < 1_000_000),
        "only bulk packets may be dropped: {dropped:?}"
    );
    bulk_sojourns.sort();
    let median = bulk_sojourns[bulk_sojourns.len() / 2];
    assert!(
        median >= Duration::from_millis(15),
        "bulk packets wait behind their own backlog (median {median:?})"
    );
    let s = q.stats();
    // The bulk flow's first quantum (two packets) went as new, like any flow's.
    assert_eq!(
        s.sparse_dequeues,
        200 + 2,
        "the pings and the bulk flow's first quantum"
    );
    assert_eq!(s.bulk_dequeues, 20_000 - 202);
}

/// Dequeues `n` items from a queue whose flows are kept backlogged by `refill`, at a fixed
/// time (no CoDel), and returns bytes per flow.
fn share(
    q: &mut FlowQueue<Token>,
    flows: &[(u32, usize)],
    dequeues: usize,
) -> std::collections::HashMap<u32, u64> {
    let clock = Clock::new();
    let mut sent = std::collections::HashMap::new();
    let mut queued = std::collections::HashMap::new();
    let no_drops = |t: Token, why: DropReason| panic!("dropped {t:?}: {why:?}");
    for _ in 0..dequeues {
        for &(flow, len) in flows {
            while *queued.entry(flow).or_insert(0) < 8 {
                q.enqueue(clock.now(), Token(flow), meta(flow, len), no_drops);
                *queued.entry(flow).or_insert(0) += 1;
            }
        }
        let d = q.dequeue(clock.now(), no_drops).expect("backlogged");
        *queued.get_mut(&d.item.0).expect("known flow") -= 1;
        *sent.entry(d.item.0).or_insert(0u64) += d.len as u64;
    }
    sent
}

/// A flow of 64 KiB superpackets and a flow of 1.4 KiB packets, both always backlogged,
/// get the same bytes (to within one superpacket and a quantum), with the default 1500
/// quantum and with a 64 KiB one.
#[test]
fn superpackets_and_mtu_packets_share_bytes_evenly() {
    for quantum in [1500, 65_536] {
        let config = Config {
            quantum,
            limit_bytes: 16 << 20,
            ..Config::default()
        };
        let mut q = FlowQueue::new(config).expect("config");
        let sent = share(&mut q, &[(10, 65_536), (11, 1400)], 30_000);
        let (big, small) = (sent[&10], sent[&11]);
        let bound = 65_536 + u64::from(quantum) + 1400;
        assert!(
            big.abs_diff(small) <= bound,
            "quantum {quantum}: 64 KiB flow sent {big}, 1.4 KiB flow sent {small}"
        );
        assert!(
            small > 10_000_000,
            "quantum {quantum}: ran long enough ({small})"
        );
    }
}

/// Ten backlogged flows of full-size packets each get a tenth, to within one packet.
#[test]
fn equal_backlogged_flows_get_equal_shares() {
    let mut q = FlowQueue::new(Config::default()).expect("config");
    let flows: Vec<(u32, usize)> = (100..110).map(|f| (f, 1420)).collect();
    let sent = share(&mut q, &flows, 10_000);
    for (&flow, &bytes) in &sent {
        assert!(
            bytes.abs_diff(1_000 * 1420) <= 1420,
            "flow {flow} sent {bytes} of 10 000 x 1420"
        );
    }
}

/// A flow that empties each time it is served and refills right after its empty turn
/// must pass through the old list (behind every bulk flow) before it may count as new
/// again (RFC 8290 §4.2). Without that, it would re-enter as new at every refill and take
/// every other dequeue from ten bulk flows; with it, it gets no more bytes than any of
/// them.
#[test]
fn a_flow_that_empties_and_refills_gets_no_more_than_its_share() {
    let clock = Clock::new();
    let mut q = FlowQueue::new(Config::default()).expect("config");
    let no_drops = |t: Token, why: DropReason| panic!("dropped {t:?}: {why:?}");
    for flow in 0..10 {
        for _ in 0..4 {
            q.enqueue(clock.now(), Token(flow), meta(flow, 1500), no_drops);
        }
    }
    q.enqueue(
        clock.now(),
        Token(SPARSE + 100),
        meta(SPARSE + 100, 1000),
        no_drops,
    );
    let mut refill_after_next = false;
    let mut refilling = 0u64;
    let mut bulk = 0u64;
    for _ in 0..11_000 {
        let d = q.dequeue(clock.now(), no_drops).expect("backlogged");
        let refill_now = std::mem::take(&mut refill_after_next);
        if d.item.0 == SPARSE + 100 {
            refilling += 1;
            refill_after_next = true;
        } else {
            bulk += 1;
            q.enqueue(clock.now(), Token(d.item.0), meta(d.item.0, 1500), no_drops);
        }
        if refill_now {
            q.enqueue(
                clock.now(),
                Token(SPARSE + 100),
                meta(SPARSE + 100, 1000),
                no_drops,
            );
        }
    }
    // The loophole would give it ~5500 packets (5.5 MB) against ~0.8 MB per bulk flow.
    let (mine, per_bulk) = (refilling * 1000, bulk * 1500 / 10);
    assert!(
        mine <= per_bulk && mine >= per_bulk / 2,
        "the refilling flow sent {mine} B, each bulk flow {per_bulk} B"
    );
}
