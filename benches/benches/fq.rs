//! Cost of the flow queue per item: one enqueue plus one dequeue against a steady backlog,
//! with one flow and with 1000 flows, next to a plain `VecDeque` FIFO doing the same (the
//! least any queue costs), so the fair queue's overhead reads off directly as a ratio. For
//! scale: sealing one 1420-byte packet costs ~400 ns (AES-256-GCM, `seal_open` bench).
//!
//! Also: a 64 KiB-superpacket flow beside a 1.4 KiB one (DRR rotations when items are
//! much larger than the quantum), the flood worst case (every arrival finds the queue full
//! and scans all buckets for the fattest flow), and the flow hash of an inner packet.
//! Every benchmark is one item in and one out, so its time is ns per item.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ringway_fq::{inner, Config, DropReason, FlowQueue, Meta};

/// A non-Copy item, as the server's buffer tokens are.
struct Token(#[allow(dead_code)] u32);

fn meta(flow: u32, len: usize) -> Meta {
    Meta {
        flow,
        len,
        ect: false,
    }
}

/// One enqueue and one dequeue per iteration, `flows` flows in turn, a backlog of
/// `backlog` items kept throughout, and the clock moving 1 µs per item (sojourns stay
/// under CoDel's target: nothing is dropped, which the bench asserts).
fn steady(c: &mut Criterion, name: &str, config: Config, flows: &[(u32, usize)], backlog: usize) {
    let start = Instant::now();
    let mut q: FlowQueue<Token> = FlowQueue::new(config).expect("config");
    let mut dropped = 0u64;
    let mut t = 0u64;
    for i in 0..backlog {
        let (flow, len) = flows[i % flows.len()];
        q.enqueue(start, Token(i as u32), meta(flow, len), |_, _| dropped += 1);
    }
    let mut i = backlog;
    c.bench_function(name, |b| {
        b.iter(|| {
            t += 1;
            let now = start + Duration::from_micros(t);
            let (flow, len) = flows[i % flows.len()];
            i += 1;
            q.enqueue(now, Token(i as u32), meta(flow, len), |_, _| dropped += 1);
            black_box(q.dequeue(now, |_, _| dropped += 1))
        });
    });
    assert_eq!(dropped, 0, "{name}: the steady state must not drop");
    assert_eq!(q.len(), backlog);
}

fn fq(c: &mut Criterion) {
    // Baseline: a FIFO of (item, enqueue time), the same backlog as the 1-flow case.
    let start = Instant::now();
    let mut fifo: VecDeque<(Token, Instant)> = (0..64).map(|i| (Token(i), start)).collect();
    let mut t = 0u64;
    c.bench_function("fq/baseline VecDeque FIFO, backlog 64", |b| {
        b.iter(|| {
            t += 1;
            let now = start + Duration::from_micros(t);
            fifo.push_back((Token(t as u32), now));
            black_box(fifo.pop_front().map(|(tok, at)| (tok, now - at)))
        });
    });

    let one = [(1u32, 1420usize)];
    steady(c, "fq/1 flow, backlog 64", Config::default(), &one, 64);

    let many: Vec<(u32, usize)> = (0..1000).map(|f| (f, 1420)).collect();
    steady(
        c,
        "fq/1000 flows, backlog 1000",
        Config::default(),
        &many,
        1000,
    );

    let mixed = [(1u32, 65_536usize), (2, 1420)];
    let config = Config {
        limit_bytes: 64 << 20,
        ..Config::default()
    };
    steady(
        c,
        "fq/64 KiB flow + 1.4 KiB flow, backlog 64",
        config,
        &mixed,
        64,
    );

    // Worst case: every arrival is a new flow and the queue is full, so every enqueue
    // scans the 1024 buckets for the fattest flow and drops its one item.
    let mut q: FlowQueue<Token> = FlowQueue::new(Config::default()).expect("config");
    let mut drops = 0u64;
    for i in 0..1024u32 {
        q.enqueue(start, Token(i), meta(i, 1420), |_, _| drops += 1);
    }
    let mut i = 1024u32;
    c.bench_function("fq/flood: enqueue into a full queue (scan + drop)", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(
                q.enqueue(start, Token(i), meta(i, 1420), |t, why: DropReason| {
                    drops += 1;
                    black_box((t, why));
                }),
            )
        });
    });
    black_box(drops);

    // The per-packet classification a driver adds: flow hash + ECN bits.
    let seed = inner::FlowSeed::from_bytes([42; 16]);
    let mut v4 = vec![0u8; 1420];
    v4[..24].copy_from_slice(&[
        0x45, 0x02, 0x05, 0x8c, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 51, 100, 7, 0x9c,
        0x40, 0x01, 0xbb,
    ]);
    let mut v6 = vec![0u8; 1420];
    v6[0] = 0x60;
    v6[6] = 6;
    v6[8] = 0x20;
    v6[24] = 0x20;
    v6[40..44].copy_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
    c.bench_function("fq/inner::meta, TCP/IPv4", |b| {
        b.iter(|| black_box(inner::meta(black_box(&v4), &seed)))
    });
    c.bench_function("fq/inner::meta, TCP/IPv6", |b| {
        b.iter(|| black_box(inner::meta(black_box(&v6), &seed)))
    });
}

criterion_group! {
    name = benches;
    // Short runs: this is a 2-core shared machine, and these costs are tens of ns.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = fq
}
criterion_main!(benches);
