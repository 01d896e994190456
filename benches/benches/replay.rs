//! Cost of the replay window (`ringway_proto::replay::ReplayWindow`) per packet: the check
//! before decryption plus the commit after the tag verified, as a session's opener does.
//!
//! - `in order`: counters 0, 1, 2, ... (the common case: the window slides by one);
//! - `reordered`: every block of 64 counters arrives in a shuffled order (UDP reordering
//!   within the window), so most counters land below the top;
//! - `duplicate`: a counter already seen is checked again (a replayed frame: rejected by the
//!   check alone, before any decryption);
//! - `jump`: each counter 5000 past the last (a long loss burst: the window clears every
//!   block).
//!
//! Each iteration is one packet.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ringway_proto::replay::{ReplayError, ReplayWindow};

/// One packet: check, then commit (the tag "verified").
fn accept(w: &mut ReplayWindow, counter: u64) -> Result<(), ReplayError> {
    w.check(counter)?;
    w.commit(counter)
}

/// 0..64 in a fixed shuffled order (an LCG permutation: 5 is coprime to 64).
fn shuffled_block() -> [u64; 64] {
    let mut order = [0u64; 64];
    for (i, o) in order.iter_mut().enumerate() {
        *o = (i as u64 * 5 + 17) % 64;
    }
    order
}

fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay");

    let mut w = ReplayWindow::new();
    let mut next = 0u64;
    group.bench_function("in order", |b| {
        b.iter(|| {
            let counter = next;
            next += 1;
            accept(&mut w, black_box(counter)).expect("the next counter is new")
        })
    });
    assert!(w.check(next).is_ok() && w.check(next - 1).is_err());

    let mut w = ReplayWindow::new();
    let order = shuffled_block();
    let mut i = 0u64;
    group.bench_function("reordered within 64", |b| {
        b.iter(|| {
            let counter = (i / 64) * 64 + order[(i % 64) as usize];
            i += 1;
            accept(&mut w, black_box(counter)).expect("a reordered counter is new")
        })
    });

    let mut w = ReplayWindow::new();
    for counter in 0..4096 {
        accept(&mut w, counter).expect("fresh");
    }
    let mut j = 0u64;
    group.bench_function("duplicate", |b| {
        b.iter(|| {
            // Any of the last 4000 counters: all seen.
            let counter = 4095 - (j % 4000);
            j += 1;
            black_box(accept(&mut w, black_box(counter))).expect_err("a duplicate is refused")
        })
    });

    let mut w = ReplayWindow::new();
    let mut top = 0u64;
    group.bench_function("jump of 5000", |b| {
        b.iter(|| {
            top += 5000;
            accept(&mut w, black_box(top)).expect("a counter past the top is new")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: this is a 2-core shared machine, and these costs are nanoseconds.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = replay
}
criterion_main!(benches);
