//! Random operation sequences against a simple model: one FIFO per bucket. Whatever the
//! queue decides (which flow goes next, what CoDel or the limits drop), every item that
//! leaves must be the oldest of its bucket, every item comes back exactly once, the
//! limits hold after every step, the counters add up, and nothing panics.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::{Clock, Token};
use proptest::prelude::*;
use ringway_fq::{Config, DropReason, Enqueued, FlowQueue, Meta};

#[derive(Debug, Clone)]
enum Op {
    Enqueue { flow: u32, len: usize, ect: bool },
    Dequeue,
    Advance(Duration),
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u32..12, prop_oneof![0usize..3000, Just(65_536), Just(0)], any::<bool>())
            .prop_map(|(flow, len, ect)| Op::Enqueue { flow, len, ect }),
        6 => Just(Op::Dequeue),
        3 => (0u64..40_000).prop_map(|us| Op::Advance(Duration::from_micros(us))),
        1 => Just(Op::Clear),
    ]
}

/// Tight limits (the overflow paths) or roomy ones (standing queues for CoDel).
fn config() -> impl Strategy<Value = Config> {
    let limits = prop_oneof![
        (1u32..24, 1u32..40_000),
        (64u32..256, 100_000u32..1_000_000),
    ];
    (
        1u32..6,
        limits,
        1u32..70_000,
        (1u64..20, 1u64..200),
        any::<bool>(),
        0u32..2000,
        1u32..8,
    )
        .prop_map(
            |(flows, (items, bytes), quantum, (target, interval), ecn, mtu, batch)| Config {
                flows,
                limit_items: items,
                limit_bytes: bytes,
                quantum,
                target: Duration::from_millis(target),
                interval: Duration::from_millis(interval),
                ecn,
                mtu,
                drop_batch: batch,
            },
        )
}

/// What the model knows about a queued item.
#[derive(Debug, Clone, Copy)]
struct Item {
    id: u32,
    len: usize,
    ect: bool,
}

struct Model {
    buckets: Vec<VecDeque<Item>>,
    /// Per id: 0 queued or never seen, 1 out.
    out: Vec<bool>,
}

impl Model {
    fn total(&self) -> (u64, u64) {
        let items = self.buckets.iter().map(|b| b.len() as u64).sum();
        let bytes = self.buckets.iter().flatten().map(|i| i.len as u64).sum();
        (items, bytes)
    }

    /// `id` left the queue: it must be the oldest of some bucket.
    fn leave(&mut self, id: u32) -> Result<Item, TestCaseError> {
        prop_assert!(!self.out[id as usize], "item {} came back twice", id);
        self.out[id as usize] = true;
        let bucket = self
            .buckets
            .iter_mut()
            .find(|b| b.iter().any(|i| i.id == id));
        let Some(bucket) = bucket else {
            return Err(TestCaseError::fail(format!("item {id} was not queued")));
        };
        let head = bucket.pop_front().expect("non-empty");
        prop_assert_eq!(head.id, id, "left out of FIFO order");
        Ok(head)
    }
}

fn check(ops: &[Op], config: &Config) -> Result<ringway_fq::Stats, TestCaseError> {
    let mut clock = Clock::new();
    let mut q = FlowQueue::new(config.clone()).expect("valid config");
    let memory = q.memory_bytes();
    let mut m = Model {
        buckets: vec![VecDeque::new(); config.flows as usize],
        out: vec![false; ops.len()],
    };
    let mut dropped: Vec<(Token, DropReason)> = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        let id = n as u32;
        match *op {
            Op::Enqueue { flow, len, ect } => {
                let meta = Meta { flow, len, ect };
                let r = q.enqueue(clock.now(), Token(id), meta, |t, why| {
                    dropped.push((t, why))
                });
                if r == Enqueued::Refused {
                    prop_assert!(len > config.limit_bytes as usize);
                    prop_assert_eq!(dropped.pop(), Some((Token(id), DropReason::Overflow)));
                    m.out[n] = true;
                } else {
                    prop_assert!(len <= config.limit_bytes as usize);
                }
                let made_room = dropped.len();
                for (t, why) in dropped.drain(..) {
                    prop_assert_eq!(why, DropReason::Overflow);
                    m.leave(t.0)?;
                }
                match r {
                    Enqueued::Queued => prop_assert_eq!(made_room, 0),
                    Enqueued::QueuedAfterDrop { dropped } => {
                        prop_assert_eq!(made_room, dropped as usize);
                        prop_assert!(dropped > 0);
                    }
                    Enqueued::Refused => {}
                }
                if r != Enqueued::Refused {
                    m.buckets[(flow % config.flows) as usize].push_back(Item { id, len, ect });
                }
            }
            Op::Dequeue => {
                let before = m.total().0;
                let d = q.dequeue(clock.now(), |t, why| dropped.push((t, why)));
                for (t, why) in dropped.drain(..) {
                    prop_assert_eq!(why, DropReason::Codel);
                    let item = m.leave(t.0)?;
                    prop_assert!(!(config.ecn && item.ect), "an ECT item dropped with ECN on");
                }
                match d {
                    None => prop_assert_eq!(before, 0, "None with items queued"),
                    Some(d) => {
                        let item = m.leave(d.item.0)?;
                        prop_assert_eq!(d.len, item.len);
                        if d.mark_ce {
                            prop_assert!(config.ecn && item.ect, "marked a Not-ECT item");
                        }
                    }
                }
            }
            Op::Advance(dt) => clock.advance(dt),
            Op::Clear => {
                let mut flushed = Vec::new();
                q.clear(|t| flushed.push(t.0));
                for id in flushed {
                    m.leave(id)?;
                }
                prop_assert!(q.is_empty());
            }
        }
        let (items, bytes) = m.total();
        let s = q.stats();
        prop_assert_eq!((s.items, s.bytes), (items, bytes), "after {:?}", op);
        prop_assert!(s.items <= u64::from(config.limit_items));
        prop_assert!(s.bytes <= u64::from(config.limit_bytes));
        prop_assert!(s.peak_items <= u64::from(config.limit_items));
        prop_assert_eq!(s.enqueued, s.dequeued + s.dropped() + s.flushed + s.items);
        prop_assert_eq!(s.dequeued, s.sparse_dequeues + s.bulk_dequeues);
        prop_assert!(s.active_flows >= m.buckets.iter().filter(|b| !b.is_empty()).count() as u64);
        prop_assert!(s.active_flows <= u64::from(config.flows));
        prop_assert_eq!(q.memory_bytes(), memory);
    }
    // Whatever is left comes back too.
    let mut flushed = Vec::new();
    q.clear(|t| flushed.push(t.0));
    for id in flushed {
        m.leave(id)?;
    }
    let enqueued = ops
        .iter()
        .filter(|o| matches!(o, Op::Enqueue { .. }))
        .count();
    prop_assert_eq!(
        m.out.iter().filter(|&&o| o).count(),
        enqueued,
        "every item came back"
    );
    Ok(q.stats().clone())
}

/// How often each path was taken over all cases, so the test cannot pass by never
/// reaching CoDel, the limits or `clear`.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    codel_drops: u64,
    marks: u64,
    overflow_drops: u64,
    refused: u64,
    flushed: u64,
}

#[test]
fn random_operations_keep_every_invariant() {
    let seen = std::cell::Cell::new(Seen::default());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    });
    let strategy = (config(), proptest::collection::vec(op(), 1..300));
    let result = runner.run(&strategy, |(config, ops)| {
        let s = check(&ops, &config)?;
        let mut t = seen.get();
        t.codel_drops += s.dropped_codel;
        t.marks += s.marked_ce;
        t.overflow_drops += s.dropped_overflow;
        t.refused +=
            u64::from(ops.iter().any(
                |o| matches!(o, Op::Enqueue { len, .. } if *len > config.limit_bytes as usize),
            ));
        t.flushed += s.flushed;
        seen.set(t);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = seen.get();
    assert!(
        t.codel_drops > 0 && t.marks > 0 && t.overflow_drops > 0 && t.refused > 0 && t.flushed > 0,
        "some path was never exercised: {t:?}"
    );
}
