//! Cost of routing a packet read from the TUN to its session by inner address
//! (`ringway_server::sessions::Sessions::route_inside`: the destination read from the IPv4
//! header, a hash lookup by address, then one by session id), with 10 and with 10 000
//! sessions up.
//!
//! - `hit`: destinations cycle over every session in a shuffled order, so with 10 000
//!   sessions the lookups do not stay in one cache line;
//! - `miss`: a destination in the pool with no session (counted as `no_route`).
//!
//! The sessions come from real handshakes through the session layer (the client side from
//! `ringway-proto`), so their setup costs a few seconds for 10 000; each iteration is one
//! lookup.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringway_proto::handshake::client::{ClientHandshake, ClientKeys};
use ringway_proto::handshake::{InitPayload, Keypair, Timestamp};
use ringway_proto::wire::handshake::INIT_LEN;
use ringway_proto::{Cipher, Entropy, EntropyError};
use ringway_server::config::{Offload, Peer, Settings, TcpSection, UringSection};
use ringway_server::sessions::{IdSource, Outside, OutsideAction, Sessions};

/// A counter is randomness enough for a benchmark's keys and ids.
struct Counter(u32);

impl IdSource for Counter {
    fn next_id(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(1);
        self.0
    }
}

impl Entropy for Counter {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        IdSource::fill(self, dest);
        Ok(())
    }
}

/// A 32-byte seed unique to `i`.
fn seed(i: u32, tag: u8) -> [u8; 32] {
    let mut s = [tag; 32];
    s[..4].copy_from_slice(&i.to_be_bytes());
    s
}

/// A session layer with `n` sessions, each from a real handshake; their inner addresses.
fn sessions(n: u32) -> (Sessions, Vec<Ipv4Addr>) {
    let server = Keypair::from_random([1; 32]);
    let clients: Vec<Keypair> = (0..n).map(|i| Keypair::from_random(seed(i, 2))).collect();
    let settings = Settings {
        listen_udp: Some("127.0.0.1:0".parse().expect("address")),
        listen_tcp: None,
        udp_socket_buffer: 0,
        secret_key: server.secret.clone(),
        pool: "198.18.0.0/16".parse().expect("pool"),
        tun_name: "bench".into(),
        offload: Offload::Off,
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
        peers: clients
            .iter()
            .enumerate()
            .map(|(i, k)| Peer {
                name: format!("p{i}"),
                public_key: k.public,
                psk: None,
            })
            .collect(),
    };
    let mut s = Sessions::new(&settings);
    let now = Instant::now();
    let mut ids = Counter(0);
    for (i, client) in clients.iter().enumerate() {
        let keys = ClientKeys {
            secret: client.secret.clone(),
            server_public: server.public,
            psk: None,
        };
        let mut init = [0u8; INIT_LEN];
        let payload = InitPayload {
            timestamp: Timestamp { secs: 1, nanos: 0 },
            cipher: None,
        };
        ClientHandshake::initiate(&keys, payload, &mut Counter(i as u32), &mut init)
            .expect("initiate");
        let from = Outside::Udp(SocketAddr::from(([192, 0, 2, 2], 1024 + i as u16)));
        let answered = matches!(
            s.handle_outside(&mut init, from, now, &mut ids),
            OutsideAction::Reply(..)
        );
        assert!(answered, "handshake {i} got no answer");
    }
    assert_eq!(s.len(), n as usize);
    // The pool hands out addresses in order after the server's.
    let addrs = (0..n)
        .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 2)) + i))
        .collect();
    (s, addrs)
}

/// A minimal IPv4 header to `dst`.
fn packet_to(dst: Ipv4Addr) -> [u8; 20] {
    let mut p = [0u8; 20];
    p[0] = 0x45;
    p[12..16].copy_from_slice(&Ipv4Addr::new(198, 18, 0, 1).octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_inside");
    for n in [10u32, 10_000] {
        let (mut s, addrs) = sessions(n);
        // Every session once, in a shuffled order (an LCG permutation: n is coprime to 7919).
        let packets: Vec<[u8; 20]> = (0..addrs.len())
            .map(|i| packet_to(addrs[(i * 7919) % addrs.len()]))
            .collect();
        for p in &packets {
            assert!(s.route_inside(p).is_some(), "every session has a route");
        }
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("hit", n), &n, |b, _| {
            b.iter(|| {
                let p = &packets[i % packets.len()];
                i += 1;
                black_box(s.route_inside(black_box(p)).map(|r| r.to()))
            })
        });
        let nowhere = packet_to(Ipv4Addr::new(198, 18, 255, 254));
        assert!(s.route_inside(&nowhere).is_none());
        group.bench_with_input(BenchmarkId::new("miss", n), &n, |b, _| {
            b.iter(|| black_box(s.route_inside(black_box(&nowhere)).is_none()))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: this is a 2-core shared machine, and a lookup costs nanoseconds.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = route
}
criterion_main!(benches);
