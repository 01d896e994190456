//! CoDel at the head of a flow, on a simulated clock: nothing is dropped while the
//! sojourn time stays under target or goes above it for less than an interval; a standing
//! queue is dropped from (or marked) on the control law's schedule until it is gone.

mod common;

use std::time::Duration;

use common::{ms, Clock, Token};
use ringway_fq::{Config, DropReason, FlowQueue, Meta};

const FLOW: u32 = 7;
const LEN: usize = 1420;

fn roomy() -> Config {
    Config {
        limit_items: 100_000,
        limit_bytes: u32::MAX,
        ..Config::default()
    }
}

/// What happened to each item, with the simulated time it happened at.
#[derive(Debug, Default)]
struct Log {
    drops: Vec<(u32, DropReason, Duration)>,
    marks: Vec<(u32, Duration)>,
    sojourns: Vec<(Duration, Duration)>, // (when, sojourn)
}

/// One flow; every millisecond, `arrivals(t_ms)` items arrive and one is dequeued.
/// Item ids count up from 0; `ect(id)` says which are ECN-capable.
fn run(
    config: Config,
    initial: usize,
    millis: u64,
    arrivals: impl Fn(u64) -> usize,
    ect: impl Fn(u32) -> bool,
) -> (Log, FlowQueue<Token>) {
    let mut clock = Clock::new();
    let mut q = FlowQueue::new(config).expect("config");
    let mut log = Log::default();
    let mut id = 0u32;
    let mut add = |q: &mut FlowQueue<Token>, clock: &Clock, n: usize| {
        for _ in 0..n {
            let meta = Meta {
                flow: FLOW,
                len: LEN,
                ect: ect(id),
            };
            let out = q.enqueue(clock.now(), Token(id), meta, |t, why| {
                panic!("{t:?} dropped on enqueue: {why:?}")
            });
            assert_eq!(out, ringway_fq::Enqueued::Queued);
            id += 1;
        }
    };
    add(&mut q, &clock, initial);
    for t in 0..millis {
        clock.advance(ms(1));
        add(&mut q, &clock, arrivals(t));
        let now = clock.now;
        if let Some(d) = q.dequeue(clock.now(), |tok, why| log.drops.push((tok.0, why, now))) {
            if d.mark_ce {
                log.marks.push((d.item.0, now));
            }
            log.sojourns.push((now, d.sojourn));
        }
    }
    (log, q)
}

#[test]
fn no_drops_while_the_sojourn_stays_under_target() {
    // Four packets always queued ahead: 4 ms of standing delay, for ten seconds.
    let (log, q) = run(roomy(), 4, 10_000, |_| 1, |_| false);
    assert_eq!(log.drops, vec![], "under target");
    assert_eq!(log.marks, vec![]);
    // The four queued at the start leave after 1..4 ms, everything after them at 4 ms.
    assert!(
        log.sojourns[4..].iter().all(|&(_, s)| s == ms(4)),
        "4 ms each"
    );
    assert_eq!(q.stats().dropped_codel, 0);
}

#[test]
fn a_burst_above_target_for_less_than_an_interval_is_not_dropped() {
    // 60 packets at once every 300 ms, drained at one per ms: the sojourn climbs to
    // 60 ms each time but is above 5 ms for only ~55 ms, under the 100 ms interval.
    let (log, _) = run(
        roomy(),
        0,
        10_000,
        |t| if t % 300 == 0 { 60 } else { 0 },
        |_| false,
    );
    let worst = log.sojourns.iter().map(|&(_, s)| s).max().expect("some");
    assert!(worst >= ms(55), "the bursts did queue ({worst:?})");
    assert_eq!(
        log.drops,
        vec![],
        "a transient queue is not a standing queue"
    );
}

/// The drop times the control law asks for, from the first drop at `t1`: the k-th drop is
/// due `interval * (1 + 1/sqrt(2) + ... + 1/sqrt(k-1))` after it.
fn schedule(t1: Duration, interval: Duration, drops: usize) -> Vec<Duration> {
    let mut due = vec![t1];
    let mut t = t1.as_secs_f64();
    for count in 1..drops {
        t += interval.as_secs_f64() / (count as f64).sqrt();
        due.push(Duration::from_secs_f64(t));
    }
    due
}

#[test]
fn a_growing_standing_queue_is_dropped_from_on_the_control_laws_schedule() {
    // Two arrivals per dequeue: the queue, and its sojourn time, grow without end.
    let (log, q) = run(roomy(), 0, 3_000, |_| 2, |_| false);
    // The sojourn first reaches 5 ms at t = 11 ms (the item that arrived at 6 ms);
    // dropping may start only once that lasted a full interval.
    let above = log
        .sojourns
        .iter()
        .find(|&&(_, s)| s >= ms(5))
        .expect("went above target")
        .0;
    let t1 = log.drops.first().expect("dropped").2;
    assert_eq!(
        t1,
        above + ms(101),
        "first dequeue strictly after above + interval"
    );
    assert!(log.drops.iter().all(|d| d.1 == DropReason::Codel));
    let due = schedule(t1, ms(100), log.drops.len());
    for (k, (&(id, _, at), want)) in log.drops.iter().zip(&due).enumerate() {
        // Dequeues happen every ms, so a drop lands on the first one at or after its time.
        assert!(
            at >= *want && at < *want + ms(1),
            "drop {k} (item {id}) at {at:?}, due {want:?}"
        );
    }
    // With gaps of 100, 70.7, 57.7, 50, ... ms the 3 s run holds ~ (3000-111)^2/(4 * 100^2)
    // + 1 ≈ 210 drops; the exact number follows from the schedule checked above.
    assert!(log.drops.len() > 150, "{} drops", log.drops.len());
    let gaps: Vec<_> = log.drops.windows(2).map(|w| w[1].2 - w[0].2).collect();
    assert!(gaps[0] == ms(100) && gaps[1] < gaps[0] && gaps[10] < gaps[1]);
    assert_eq!(q.stats().dropped_codel, log.drops.len() as u64);
}

#[test]
fn a_standing_queue_is_drained_to_target_and_then_left_alone() {
    // 30 packets ahead and one in, one out per ms: a 30 ms standing queue that only
    // drops can shrink. CoDel must bring it under 5 ms (4 packets) and then stop.
    let (log, q) = run(roomy(), 30, 10_000, |_| 1, |_| false);
    let n = log.drops.len();
    assert_eq!(n, 26, "30 queued, 4 left under target: {:?}", log.drops);
    let last_drop = log.drops[n - 1].2;
    assert!(
        last_drop < ms(1000),
        "drained within a second ({last_drop:?})"
    );
    let after: Vec<_> = log
        .sojourns
        .iter()
        .filter(|&&(t, _)| t > last_drop)
        .collect();
    assert!(after.len() > 8_000);
    assert!(after.iter().all(|&&(_, s)| s == ms(4)), "settled at 4 ms");
    assert_eq!(q.len(), 4);
}

#[test]
fn with_ecn_ect_items_are_marked_and_not_ect_items_dropped() {
    // Same growing queue; even ids are ECT, odd ones are not.
    let (log, q) = run(roomy(), 0, 3_000, |_| 2, |id| id % 2 == 0);
    assert!(log.marks.len() > 20 && log.drops.len() > 20, "{log:?}");
    assert!(
        log.marks.iter().all(|&(id, _)| id % 2 == 0),
        "marks only ECT"
    );
    assert!(
        log.drops.iter().all(|&(id, _, _)| id % 2 == 1),
        "drops only Not-ECT"
    );
    let s = q.stats();
    assert_eq!(s.marked_ce, log.marks.len() as u64);
    assert_eq!(s.dropped_codel, log.drops.len() as u64);

    // All ECT: the same schedule, but every signal is a mark and nothing is lost.
    let (marked, q) = run(roomy(), 0, 3_000, |_| 2, |_| true);
    assert_eq!(marked.drops, vec![]);
    let t1 = marked.marks[0].1;
    for (k, (&(id, at), want)) in marked
        .marks
        .iter()
        .zip(&schedule(t1, ms(100), marked.marks.len()))
        .enumerate()
    {
        assert!(
            at >= *want && at < *want + ms(1),
            "mark {k} (item {id}) at {at:?}"
        );
    }
    assert_eq!(q.stats().dequeued, 3_000);
}

#[test]
fn with_ecn_off_ect_items_are_dropped() {
    let config = Config {
        ecn: false,
        ..roomy()
    };
    let (log, q) = run(config, 0, 3_000, |_| 2, |_| true);
    assert_eq!(log.marks, vec![]);
    assert!(log.drops.len() > 150);
    assert_eq!(q.stats().marked_ce, 0);
}

#[test]
fn a_flow_with_little_queued_behind_its_head_is_never_dropped() {
    // One packet at a time, each waiting 50 ms before the send path takes it: a long
    // sojourn, but nothing stands behind it (at most `mtu` bytes), so no drop can help.
    let mut clock = Clock::new();
    let mut q = FlowQueue::new(roomy()).expect("config");
    for i in 0..200 {
        let meta = Meta {
            flow: FLOW,
            len: LEN,
            ect: false,
        };
        q.enqueue(clock.now(), Token(i), meta, |t, _| panic!("{t:?}"));
        clock.advance(ms(50));
        let d = q
            .dequeue(clock.now(), |t, why| panic!("{t:?} dropped: {why:?}"))
            .expect("one queued");
        assert_eq!((d.item, d.sojourn), (Token(i), ms(50)));
    }
}

#[test]
fn a_standing_queue_that_returns_soon_resumes_near_the_last_drop_rate() {
    // Episode 1: a 30 ms standing queue drained by ~26 drops within the first second.
    // Episode 2 at 1.5 s (15 intervals later, inside the 16-interval memory): 30 more
    // packets at once. Its drops must start near the rate that ended episode 1, not at
    // one per interval again.
    let (log, _) = run(
        roomy(),
        30,
        3_000,
        |t| if t == 1_500 { 31 } else { 1 },
        |_| false,
    );
    let second: Vec<Duration> = log
        .drops
        .iter()
        .map(|d| d.2)
        .filter(|&t| t > ms(1_500))
        .collect();
    assert!(second.len() >= 2, "episode 2 dropped: {second:?}");
    let gap = second[1] - second[0];
    assert!(gap < ms(40), "resumed at a gap of {gap:?}, not 100 ms");

    // The same second burst with no history starts at one drop per interval.
    let (fresh, _) = run(
        roomy(),
        4,
        3_000,
        |t| if t == 1_500 { 31 } else { 1 },
        |_| false,
    );
    let d: Vec<Duration> = fresh.drops.iter().map(|d| d.2).collect();
    assert!(d.len() >= 2, "{d:?}");
    assert_eq!(d[1] - d[0], ms(100));
}
