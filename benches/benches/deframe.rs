//! Cost of the TCP stream deframer (`ringway_proto::wire::stream::FrameAssembler`) per frame:
//! a stream of length-prefixed frames is fed in reads and every complete frame is taken in
//! place, as the server's TCP path and the client's stream reader do.
//!
//! Per frame size (a pure ACK, a small packet, a full 1420-byte packet, a 16 KiB frame), the
//! same stream arrives three ways:
//!
//! - `packed`: 64 KiB reads, so frames lie back to back and only one per read straddles it;
//! - `odd reads`: reads of 1021 bytes (prime), so most boundaries fall inside a frame or its
//!   prefix and the partial tail moves to the front before the next read;
//! - `split prefix`: every read ends one byte into a length prefix, the worst case for the
//!   prefix parser (one read per frame, each leaving half a prefix behind).
//!
//! Each iteration feeds a whole stream of 64 frames, so the time per element is per frame;
//! it includes the copy of each read into the assembler's buffer (what a `recv` would do).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringway_proto::wire::stream::{encode_prefix, FrameAssembler, STREAM_PREFIX_LEN};

/// Frames per stream (one iteration).
const FRAMES: usize = 64;
/// The assembler's buffer: the server's default `tcp.rx_buffer_bytes`.
const CAPACITY: usize = 80 * 1024;
/// The largest frame a session accepts.
const MAX_FRAME: usize = u16::MAX as usize;

/// `FRAMES` frames of `len` bytes with their prefixes.
fn stream(len: usize) -> Vec<u8> {
    let mut s = Vec::with_capacity(FRAMES * (len + STREAM_PREFIX_LEN));
    for i in 0..FRAMES {
        s.extend_from_slice(&encode_prefix(len).expect("frame length"));
        s.extend((0..len).map(|j| (i + j) as u8));
    }
    s
}

/// Read sizes that end each read one byte into the next frame's prefix.
fn split_prefix_reads(len: usize) -> Vec<usize> {
    let frame = len + STREAM_PREFIX_LEN;
    // The first read takes the first frame and one byte of the second prefix; every later
    // one the rest of that prefix, the frame, and one byte of the next prefix.
    let mut reads = vec![frame + 1];
    reads.extend(std::iter::repeat_n(frame, FRAMES - 2));
    reads.push(frame - 1);
    reads
}

/// Feeds `data` in reads of the sizes `reads` yields (cycled), taking every frame; returns
/// the frames' total length.
fn deframe(asm: &mut FrameAssembler, data: &[u8], reads: &[usize]) -> usize {
    let (mut at, mut total) = (0, 0);
    let mut sizes = reads.iter().cycle();
    while at < data.len() {
        let spare = asm.spare_mut();
        let want = *sizes.next().expect("cycled");
        let n = want.min(spare.len()).min(data.len() - at);
        spare[..n].copy_from_slice(&data[at..at + n]);
        asm.commit(n);
        at += n;
        while let Some(frame) = asm.next_frame().expect("valid stream") {
            total += black_box(frame).len();
        }
    }
    total
}

fn deframer(c: &mut Criterion) {
    let mut group = c.benchmark_group("deframe");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for len in [40usize, 200, 1452, 16 * 1024] {
        let data = stream(len);
        let cases: [(&str, Vec<usize>); 3] = [
            ("packed", vec![64 * 1024]),
            ("odd reads", vec![1021]),
            ("split prefix", split_prefix_reads(len)),
        ];
        for (name, reads) in cases {
            let mut asm = FrameAssembler::new(CAPACITY, MAX_FRAME);
            assert_eq!(deframe(&mut asm, &data, &reads), FRAMES * len, "{name}");
            assert_eq!(asm.buffered(), 0);
            group.bench_with_input(BenchmarkId::new(name, len), &data, |b, data| {
                b.iter(|| deframe(&mut asm, data, &reads))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: this is a 2-core shared machine.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = deframer
}
criterion_main!(benches);
