//! `dequeue_ready`: a flow whose outlet is full is passed over, not served and not
//! dropped; the others go on; nothing comes out once every head is blocked; and the
//! passed-over flow leaves in order once its outlet has room.

mod common;

use common::{meta, Clock, Token};
use ringway_fq::{Config, FlowQueue};

const BLOCKED: u32 = 1;
const OPEN: u32 = 2;

/// Items `0..n` of flow `BLOCKED` and `100..100 + n` of flow `OPEN`.
fn two_flows(n: u32, len: usize) -> (Clock, FlowQueue<Token>) {
    let clock = Clock::new();
    let mut q = FlowQueue::new(Config::default()).expect("config");
    for i in 0..n {
        q.enqueue(clock.now(), Token(i), meta(BLOCKED, len), |_, _| {
            panic!("dropped")
        });
        q.enqueue(clock.now(), Token(100 + i), meta(OPEN, len), |_, _| {
            panic!("dropped")
        });
    }
    (clock, q)
}

#[test]
fn a_blocked_flow_is_passed_over_and_then_leaves_in_order() {
    // Items larger than a quantum: every dequeue spends the flow's deficit, so the open
    // flow needs a top-up between its items while the blocked one keeps being passed.
    let (clock, mut q) = two_flows(5, 4000);
    let open = |t: &Token| t.0 >= 100;
    let mut out = Vec::new();
    while let Some(d) = q.dequeue_ready(clock.now(), open, |_, _| panic!("dropped")) {
        out.push(d.item.0);
    }
    assert_eq!(out, [100, 101, 102, 103, 104]);
    assert_eq!(q.len(), 5, "the blocked flow lost nothing");
    // Still blocked: nothing, however often asked.
    for _ in 0..3 {
        assert!(q
            .dequeue_ready(clock.now(), |_| false, |_, _| panic!("dropped"))
            .is_none());
    }
    let mut out = Vec::new();
    while let Some(d) = q.dequeue_ready(clock.now(), |_| true, |_, _| panic!("dropped")) {
        out.push(d.item.0);
    }
    assert_eq!(out, [0, 1, 2, 3, 4]);
    assert!(q.is_empty());
}

#[test]
fn a_flow_that_unblocks_midway_shares_again() {
    let (clock, mut q) = two_flows(6, 1000);
    let mut room = 0u32;
    let mut out = Vec::new();
    for step in 0..12 {
        if step == 4 {
            room = 3;
        }
        let ready = |t: &Token| t.0 >= 100 || room > 0;
        let Some(d) = q.dequeue_ready(clock.now(), ready, |_, _| panic!("dropped")) else {
            break;
        };
        if d.item.0 < 100 {
            room -= 1;
        }
        out.push(d.item.0);
    }
    let blocked: Vec<_> = out.iter().copied().filter(|&i| i < 100).collect();
    assert_eq!(
        blocked,
        [0, 1, 2],
        "in order, and only while there was room"
    );
    assert_eq!(
        out.len(),
        9,
        "the open flow's six and the blocked flow's three"
    );
    assert_eq!(q.len(), 3);
}
