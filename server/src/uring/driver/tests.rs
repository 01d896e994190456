//! The driver in a real ring, without root: a blocking Unix datagram
//! socketpair stands in for the TUN (reads stay in flight until a packet
//! arrives, as on a real TUN), and another one is the stop trigger. Each test
//! steps the loop one round at a time and looks at exactly what happened.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use io_uring::opcode;
use ringway_proto::{Cipher, Keypair};

use super::*;
use crate::config::{FairQueue, Settings, TcpSection, UringSection};
use crate::uring::user_data::GENERATION_MASK;

const TUN_SLOTS: u32 = 16;
const TX_SLOTS: u32 = 8;
/// Rounds a test may take to see what it waits for: each round waits for at
/// least one completion, so this bounds a test that would otherwise hang.
const MAX_ROUNDS: usize = 10_000;

struct Rig {
    driver: Driver,
    /// Our end of the TUN stand-in.
    inside: UnixDatagram,
    /// Our end of the stop trigger.
    stop: UnixDatagram,
    // The driver's ends: open for as long as the driver lives.
    _theirs: (UnixDatagram, UnixDatagram),
}

fn settings() -> Settings {
    Settings {
        listen_udp: None,
        listen_tcp: None,
        udp_socket_buffer: 0,
        secret_key: Keypair::from_random([3; 32]).secret,
        pool: "198.18.0.0/24".parse().unwrap(),
        tun_name: "unused".into(),
        offload: crate::inside::tun::Offload::Off,
        mtu: 1420,
        keepalive_secs: 25,
        idle_timeout_secs: 180,
        cipher: Cipher::Aes256Gcm,
        rekey_after_secs: 0,
        uring: UringSection::default(),
        fair_queue: None,
        io: Default::default(),
        state_file: std::path::PathBuf::from("/nonexistent/last-handshakes"),
        tcp: TcpSection::default(),
        peers: Vec::new(),
    }
}

fn rig() -> Rig {
    rig_with(None)
}

fn rig_with(fair_queue: Option<FairQueue>) -> Rig {
    let (tun, inside) = UnixDatagram::pair().unwrap();
    let (signal, stop) = UnixDatagram::pair().unwrap();
    let tunables = Tunables {
        // The smallest ring these slots allow: 16 + 1 + 8 + 4 requests.
        ring_entries: 32,
        tun_rx_slots: TUN_SLOTS,
        udp_rx_slots: 1,
        tx_slots: TX_SLOTS,
        sqpoll_idle_ms: 0,
        offload_buffers: 0,
        fair_queue,
    };
    let limits = TcpLimits {
        max_connections: 1,
        max_per_source: 1,
        handshake_timeout: Duration::from_secs(10),
        send_queue_bytes: 1 << 16,
        rx_buffer_bytes: 4096,
        max_frame: 1500,
        socket_send_buffer: 0,
        socket_recv_buffer: 0,
        idle_timeout: Duration::from_secs(180),
    };
    let fds = Fds {
        tun: tun.as_raw_fd(),
        udp: None,
        tcp_listener: None,
        signal: signal.as_raw_fd(),
    };
    let driver = Driver::new(
        &tunables,
        limits,
        DataPath::plain(1420),
        fds,
        Sessions::new(&settings()),
    )
    .unwrap();
    Rig {
        driver,
        inside,
        stop,
        _theirs: (tun, signal),
    }
}

impl Rig {
    /// Steps the loop until `done` holds; fails if the loop ends first.
    fn turn_until(&mut self, what: &str, done: impl Fn(&Driver) -> bool) {
        for _ in 0..MAX_ROUNDS {
            if done(&self.driver) {
                return;
            }
            assert!(
                self.driver.turn().unwrap(),
                "the loop ended while waiting for {what}"
            );
        }
        panic!("{what} did not happen in {MAX_ROUNDS} rounds");
    }

    /// Asks the loop to stop and steps it to the end.
    fn stop(&mut self) {
        self.stop.send(b"x").unwrap();
        for _ in 0..MAX_ROUNDS {
            if !self.driver.turn().unwrap() {
                return;
            }
        }
        panic!("the loop did not end in {MAX_ROUNDS} rounds");
    }

    /// Queues a no-op carrying `user_data`, as a stray or late completion would.
    fn queue_nop(&mut self, user_data: u64) {
        let e = opcode::Nop::new().build().user_data(user_data);
        // SAFETY: a no-op carries no pointer.
        unsafe { self.driver.ctx.io.queue.push(e) };
    }

    fn armed_reads(&self) -> Vec<UserData> {
        self.driver.tun.in_flight().collect()
    }
}

/// An IPv4 header and some payload, to a destination no session owns.
fn unrouted_packet() -> Vec<u8> {
    let mut p = vec![0u8; 60];
    p[0] = 0x45;
    p[16..20].copy_from_slice(&[198, 18, 0, 99]);
    p
}

/// Timer, signal read and every TUN read.
const STARTED: usize = TUN_SLOTS as usize + 2;

fn idle_usage() -> RingUsage {
    RingUsage {
        in_flight: 0,
        free_buffers: (TUN_SLOTS + TX_SLOTS) as usize,
        buffers: (TUN_SLOTS + TX_SLOTS) as usize,
        free_large_buffers: 0,
        large_buffers: 0,
        free_tx_slots: TX_SLOTS as usize,
        tx_slots: TX_SLOTS as usize,
    }
}

#[test]
fn a_stale_generation_completion_is_ignored() {
    let mut r = rig();
    r.driver.start();
    let reads = r.armed_reads();
    assert_eq!(reads.len(), TUN_SLOTS as usize);
    let target = reads[0];
    let stale = UserData {
        generation: (target.generation + GENERATION_MASK) & GENERATION_MASK,
        ..target
    };
    r.queue_nop(stale.encode());
    r.turn_until("the stale completion", |d| {
        d.io_counters().stale_completions == 1
    });
    // The slot's own read is still armed, under the same generation, and the
    // stray completion was retired like any request.
    assert_eq!(r.armed_reads(), reads);
    assert_eq!(r.driver.usage().in_flight, STARTED);
    assert_eq!(r.driver.usage().free_tx_slots, TX_SLOTS as usize);

    // The reads still work: a packet is read (and dropped: no session).
    r.inside.send(&unrouted_packet()).unwrap();
    r.turn_until("the packet", |d| d.sessions().counters.drop_no_route == 1);
    assert_eq!(r.driver.usage().in_flight, STARTED);

    r.stop();
    assert_eq!(r.driver.usage(), idle_usage());
    assert_eq!(r.driver.io_counters().stale_completions, 1);
    assert_eq!(r.driver.release(), Release::Freed);
}

#[test]
fn unknown_completions_are_counted_and_a_full_queue_spills_into_the_backlog() {
    let mut r = rig();
    r.driver.start();
    // Far more than the 32-entry submission queue holds at once.
    let strays = 100;
    for _ in 0..strays {
        r.queue_nop(0);
    }
    assert_eq!(r.driver.usage().in_flight, STARTED + strays);
    r.turn_until("every stray completion", |d| {
        d.io_counters().unknown_completions == strays as u64
    });
    assert_eq!(r.driver.usage().in_flight, STARTED);
    // Shutdown does not wait for them.
    r.stop();
    assert_eq!(r.driver.usage(), idle_usage());
}

#[test]
fn the_in_flight_count_is_exact_after_a_run() {
    let mut r = rig();
    r.driver.start();
    for i in 0..50 {
        r.inside.send(&unrouted_packet()).unwrap();
        r.turn_until("the packet", |d| {
            d.sessions().counters.drop_no_route == i + 1
        });
        assert_eq!(r.driver.usage().in_flight, STARTED);
    }
    r.stop();
    assert_eq!(r.driver.usage(), idle_usage());
    assert_eq!(r.driver.io_counters().io_errors, 0);
    assert_eq!(r.driver.release(), Release::Freed);
}

#[test]
fn memory_is_leaked_not_freed_when_the_kernel_still_holds_requests() {
    let mut r = rig();
    r.driver.start();
    // Submit without waiting: the reads, the timer and the signal read are
    // now the kernel's.
    let d = &mut r.driver;
    d.ctx.io.queue.flush(&mut d.ring.submission());
    d.ring.submit().unwrap();
    assert_eq!(d.ctx.io.queue.in_kernel(), STARTED);
    assert_eq!(d.release(), Release::Leaked { in_kernel: STARTED });
    // Dropping the driver takes the same path (and closes the ring first).
    drop(r.driver);
    // The descriptors the requests used are still fine to use.
    r.inside.send(&unrouted_packet()).unwrap();
}

#[test]
fn a_driver_that_never_ran_frees_its_memory() {
    let mut r = rig();
    assert_eq!(r.driver.release(), Release::Freed);
    // Queued but never submitted is not the kernel's either.
    r.driver.start();
    assert_eq!(r.driver.usage().in_flight, STARTED);
    assert_eq!(r.driver.release(), Release::Freed);
}

/// An IPv4 packet of `len` bytes with protocol `proto` and UDP-style source port `sport`.
fn inner_packet(proto: u8, sport: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&[198, 18, 0, 2]);
    p[16..20].copy_from_slice(&[198, 18, 0, 1]);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p
}

#[test]
fn a_ping_overtakes_a_bulk_backlog_waiting_for_the_tun() {
    let fq = FairQueue {
        tun_writes_in_flight: 1,
        ..FairQueue::default()
    };
    let mut r = rig_with(Some(fq));
    r.driver.start();
    // 30 bulk packets opened in one round, then a ping: all queued, none written yet.
    let bulk = inner_packet(17, 5001, 1400);
    let ping = inner_packet(1, 0, 84);
    for p in std::iter::repeat_n(&bulk, 30).chain([&ping]) {
        r.driver.ctx.io.write_tun_copy(p);
    }
    assert_eq!(r.driver.io_counters().tun_tx_writes, 0);
    assert_eq!(r.driver.usage().free_tx_slots, TX_SLOTS as usize);
    // The round ends: one write starts, and each completion lets the next one go.
    r.driver.ctx.io.pump_inside();
    r.inside.set_nonblocking(true).unwrap();
    let mut order = Vec::new();
    let mut buf = [0u8; 2048];
    for _ in 0..MAX_ROUNDS {
        while let Ok(n) = r.inside.recv(&mut buf) {
            order.push(buf[9]);
            assert_eq!(n, if buf[9] == 1 { 84 } else { 1400 });
        }
        if order.len() == 31 {
            break;
        }
        assert!(r.driver.turn().unwrap());
        let q = r.driver.ctx.io.inside_queue.as_ref().unwrap();
        assert!(q.in_flight() <= 1, "{} TUN writes in flight", q.in_flight());
    }
    // The bulk flow's first quantum (two packets) went, then the ping, long before the
    // 28 bulk packets queued ahead of it.
    let at = order.iter().position(|&proto| proto == 1).unwrap();
    assert!(at <= 2, "the ping was write {at} of {}", order.len());
    let c = r.driver.io_counters();
    assert_eq!(c.tun_tx_writes, 31);
    assert_eq!(c.fq_inside.enqueued, 31);
    assert_eq!(c.fq_inside.dequeued, 31);
    assert_eq!(c.fq_inside.peak, 31);
    assert!(c.fq_inside.sparse >= 1);
    r.stop();
    // One small buffer per slot of each direction's queue.
    let idle = RingUsage {
        free_buffers: idle_usage().free_buffers + 2 * 1024,
        buffers: idle_usage().buffers + 2 * 1024,
        ..idle_usage()
    };
    assert_eq!(r.driver.usage(), idle);
    assert_eq!(r.driver.release(), Release::Freed);
}

#[test]
fn queued_tun_writes_give_their_buffers_back_when_the_loop_ends() {
    let mut r = rig_with(Some(FairQueue::default()));
    r.driver.start();
    for _ in 0..40 {
        r.driver
            .ctx
            .io
            .write_tun_copy(&inner_packet(17, 5001, 1400));
    }
    // Queued, none written: 40 buffers held, no tx slot.
    assert_eq!(r.driver.ctx.io.inside_queue.as_ref().unwrap().len(), 40);
    let usage = r.driver.usage();
    assert_eq!(usage.free_tx_slots, TX_SLOTS as usize);
    assert_eq!(usage.free_buffers, usage.buffers - TUN_SLOTS as usize - 40);
    // The loop ends with them still queued (nothing was ever submitted).
    r.driver.finish();
    assert_eq!(r.driver.ctx.io.inside_queue.as_ref().unwrap().len(), 0);
    let usage = r.driver.usage();
    assert_eq!(usage.free_buffers, usage.buffers - TUN_SLOTS as usize);
    assert_eq!(r.driver.io_counters().fq_inside.enqueued, 40);
    assert_eq!(r.driver.release(), Release::Freed);
}
