//! Per-packet cost of the data path's cryptography: seal in place (TUN to
//! network) and open in place (network to TUN), for both AEADs at small, MTU
//! and large payloads. Pairs of sessions come from a real in-memory handshake so
//! the keys are derived exactly as in production.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringway_proto::handshake::client::{ClientHandshake, ClientKeys};
use ringway_proto::handshake::server::Responder;
use ringway_proto::handshake::{InitPayload, Keypair, Timestamp};
use ringway_proto::wire::handshake::{INIT_LEN, RESP_LEN};
use ringway_proto::wire::transport::{HEADER_LEN, OVERHEAD};
use ringway_proto::{Cipher, Entropy, EntropyError, Session, SessionConfig};

/// Fixed bytes are randomness enough for a benchmark's keys.
struct Fixed(u8);

impl Entropy for Fixed {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        self.0 = self.0.wrapping_add(1);
        dest.fill(self.0);
        Ok(())
    }
}

fn session_pair(cipher: Cipher) -> (Session, Session) {
    let server = Keypair::from_random([1; 32]);
    let client = Keypair::from_random([2; 32]);
    let keys = ClientKeys {
        secret: client.secret,
        server_public: server.public,
        psk: None,
    };
    let mut init = [0u8; INIT_LEN];
    let payload = InitPayload {
        timestamp: Timestamp { secs: 1, nanos: 0 },
        cipher: Some(cipher),
    };
    let mut hs =
        ClientHandshake::initiate(&keys, payload, &mut Fixed(1), &mut init).expect("initiate");
    let config = SessionConfig {
        cipher,
        client_addr: Ipv4Addr::new(198, 18, 0, 2),
        prefix_len: 24,
        server_addr: Ipv4Addr::new(198, 18, 0, 1),
        mtu: 1420,
        keepalive_secs: 25,
        idle_timeout_secs: 180,
        rekey_after_secs: 0,
    };
    let now = Instant::now();
    let mut resp = [0u8; RESP_LEN];
    let server_session = Responder::new(server.secret)
        .read_init(&init, &mut Fixed(100))
        .expect("read_init")
        .accept(None, 7, &config, now, &mut resp)
        .expect("accept");
    let (client_session, _) = hs.handle_response(&resp, now).expect("response");
    (client_session, server_session)
}

fn seal_open(c: &mut Criterion) {
    let now = Instant::now();
    for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
        let mut group = c.benchmark_group(format!("seal_open/{}", cipher.name()));
        for size in [64usize, 1420, 8192] {
            group.throughput(Throughput::Bytes(size as u64));
            let (mut tx, mut rx) = session_pair(cipher);
            let mut buf = vec![0xa5u8; size + OVERHEAD];
            group.bench_with_input(BenchmarkId::new("seal", size), &size, |b, &size| {
                b.iter(|| black_box(tx.sealer.seal_data(&mut buf, size, now).expect("seal")));
            });
            // Open needs a fresh counter each time (the replay window refuses
            // repeats), so each iteration seals then opens; seal alone is above.
            let mut frame = vec![0u8; size + OVERHEAD];
            group.bench_with_input(BenchmarkId::new("seal+open", size), &size, |b, &size| {
                b.iter(|| {
                    frame[HEADER_LEN..HEADER_LEN + size].fill(0x5a);
                    let n = tx.sealer.seal_data(&mut frame, size, now).expect("seal");
                    black_box(rx.opener.open(&mut frame[..n], now).expect("open"));
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
