//! What only the TCP transport does, against the server's session layer in
//! the loopback fake server: frames split across reads and packed into one,
//! the connection closing or carrying garbage mid-session, reconnecting
//! during the handshake, and the `auto` fallback from UDP. The behaviour TCP
//! shares with UDP is tested over both in `tunnel.rs`.

mod support;

use std::future::pending;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_client::inside::memory::memory;
use ringway_client::outside::{TunnelReceiver, HEADROOM, SEND_BUF_LEN};
use ringway_client::{
    driver, ConnectError, ConnectOptions, DriverError, Received, RecvError, Transport,
    TransportChoice, Tunnel,
};
use ringway_proto::wire;
use support::*;

fn tcp(deadline_ms: u64) -> ConnectOptions {
    quick(TransportChoice::Tcp, deadline_ms)
}

async fn connected_with(server: &FakeServer, opts: &ConnectOptions) -> Tunnel {
    let config = client_config(server.addr, server_keys().public, Some(PSK));
    Tunnel::connect_with(&config, opts).await.unwrap()
}

/// What the next frame was, bounded so a lost frame fails the test instead
/// of hanging it.
async fn next_event(rx: &mut TunnelReceiver) -> Result<Received<'_>, RecvError> {
    tokio::time::timeout(HANG_GUARD, rx.recv())
        .await
        .expect("a frame before the hang guard")
}

fn packet_len(seq: u32) -> usize {
    24 + (seq as usize * 7) % 1376
}

#[tokio::test]
async fn a_thousand_packets_both_ways_at_once_in_odd_chunks() {
    const PACKETS: u32 = 1000;
    let server = FakeServer::start(Options {
        // Prefixes split, frames split anywhere, several frames per chunk.
        tcp_chunks: &[1, 2, 3, 5, 7, 700, 1, 1500, 4096, 13],
        ..Options::default()
    })
    .await;
    let tunnel = connected(&server, TransportChoice::Tcp).await;
    let stats = Arc::clone(tunnel.stats());
    let (mut tx, mut rx) = tunnel.split();
    // Sending and receiving concurrently, with no windows: TCP loses nothing,
    // and a backed-up connection only makes the sender wait.
    let sender = tokio::spawn(async move {
        let mut buf = vec![0u8; SEND_BUF_LEN];
        for seq in 0..PACKETS {
            let len = packet_len(seq);
            let packet = ipv4_packet(CLIENT_ADDR, SERVER_ADDR, seq, len);
            buf[HEADROOM..HEADROOM + len].copy_from_slice(&packet);
            tx.send_packet(&mut buf, len).await.unwrap();
        }
        tx
    });
    for seq in 0..PACKETS {
        let want = echoed(ipv4_packet(CLIENT_ADDR, SERVER_ADDR, seq, packet_len(seq)));
        assert_eq!(next_packet(&mut rx).await, want, "packet {seq}");
    }
    sender.await.unwrap();
    let bytes: u64 = (0..PACKETS).map(|seq| packet_len(seq) as u64).sum();
    let s = stats.snapshot();
    assert_eq!((s.tx_packets, s.tx_bytes), (u64::from(PACKETS), bytes));
    assert_eq!((s.rx_packets, s.rx_bytes), (u64::from(PACKETS), bytes));
    assert_eq!(s.rx_dropped() + s.tx_dropped(), 0, "{s:?}");
    assert_eq!(server.seen.bad_frames.load(Relaxed), 0);
}

#[tokio::test]
async fn frames_split_byte_by_byte() {
    let server = FakeServer::start(Options {
        tcp_chunks: &[1],
        ..Options::default()
    })
    .await;
    let (_tx, mut rx) = connected(&server, TransportChoice::Tcp).await.split();
    let packets: Vec<_> = (0..20)
        .map(|seq| ipv4_packet(SERVER_ADDR, CLIENT_ADDR, seq, 40 + seq as usize))
        .collect();
    server.send_burst(packets.clone());
    for packet in packets {
        assert_eq!(next_packet(&mut rx).await, packet);
    }
}

#[tokio::test]
async fn frames_packed_in_one_write() {
    let server = FakeServer::start(Options::default()).await;
    let (_tx, mut rx) = connected(&server, TransportChoice::Tcp).await.split();
    // Small and full-size packets, about 70 KB in one write: more than one
    // read's buffer, so a frame is also cut at the buffer's end.
    let packets: Vec<_> = (0..100)
        .map(|seq| ipv4_packet(SERVER_ADDR, CLIENT_ADDR, seq, [24, 1420][seq as usize % 2]))
        .collect();
    server.send_burst(packets.clone());
    for packet in packets {
        assert_eq!(next_packet(&mut rx).await, packet);
    }
    assert_eq!(rx.stats().snapshot().rx_dropped(), 0);
}

#[tokio::test]
async fn a_frame_right_behind_the_handshake_response_is_kept() {
    let greeting = ipv4_packet(SERVER_ADDR, CLIENT_ADDR, 1, 100);
    let server = FakeServer::start(Options {
        greeting: Some(greeting.clone()),
        ..Options::default()
    })
    .await;
    let (_tx, mut rx) = connected(&server, TransportChoice::Tcp).await.split();
    assert_eq!(next_packet(&mut rx).await, greeting);
}

#[tokio::test]
async fn server_closing_the_connection_ends_the_receiver_as_session_lost() {
    let server = FakeServer::start(Options::default()).await;
    let (_tx, mut rx) = connected(&server, TransportChoice::Tcp).await.split();
    let packet = ipv4_packet(SERVER_ADDR, CLIENT_ADDR, 1, 100);
    server.send_packet(packet.clone());
    server.close_tcp();
    // What was sent before the close still arrives; then the end.
    assert_eq!(next_packet(&mut rx).await, packet);
    let err = next_event(&mut rx).await.unwrap_err();
    assert!(
        matches!(err, RecvError::Closed | RecvError::ConnectionLost(_)),
        "{err}"
    );
    assert!(err.is_session_lost());
}

#[tokio::test]
async fn a_corrupt_length_ends_the_receiver() {
    let server = FakeServer::start(Options::default()).await;
    let (_tx, mut rx) = connected(&server, TransportChoice::Tcp).await.split();
    server.send_raw_stream(vec![0, 0]);
    let err = next_event(&mut rx).await.unwrap_err();
    assert!(
        matches!(err, RecvError::Corrupt(wire::Error::InvalidField)),
        "{err}"
    );
    assert!(err.is_session_lost());

    // Longer than the session's MTU allows: refused from the prefix alone.
    let server = FakeServer::start(Options::default()).await;
    let (_tx, mut rx) = connected(&server, TransportChoice::Tcp).await.split();
    server.send_raw_stream(vec![0xff, 0xff]);
    let err = next_event(&mut rx).await.unwrap_err();
    assert!(
        matches!(err, RecvError::Corrupt(wire::Error::TooLong)),
        "{err}"
    );
}

#[tokio::test]
async fn driver_forwards_both_ways_and_says_goodbye() {
    let server = FakeServer::start(Options {
        tcp_chunks: &[3, 1000, 1],
        ..Options::default()
    })
    .await;
    let tunnel = connected(&server, TransportChoice::Tcp).await;
    let (inside, mut host) = memory(64);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let driver = tokio::spawn(driver::run(tunnel, inside, async {
        let _ = stopped.await;
    }));
    for seq in 0..100 {
        let packet = ipv4_packet(CLIENT_ADDR, SERVER_ADDR, seq, 60 + seq as usize * 13);
        host.to_tunnel.send(packet.clone()).await.unwrap();
        let back = tokio::time::timeout(HANG_GUARD, host.from_tunnel.recv())
            .await
            .expect("an echo before the hang guard")
            .unwrap();
        assert_eq!(back, echoed(packet));
    }
    stop.send(()).unwrap();
    driver
        .await
        .unwrap()
        .expect("a requested stop is not an error");
    wait_until(|| server.seen.disconnects.load(Relaxed) == 1).await;
    assert_eq!(server.seen.data.load(Relaxed), 100);
}

#[tokio::test]
async fn server_closing_the_connection_ends_the_driver_as_session_lost() {
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected(&server, TransportChoice::Tcp).await;
    let (inside, _host) = memory(8);
    let driver = tokio::spawn(driver::run(tunnel, inside, pending()));
    server.close_tcp();
    let err = tokio::time::timeout(HANG_GUARD, driver)
        .await
        .expect("the driver ends before the hang guard")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, DriverError::Recv(_)), "{err}");
    assert!(err.is_session_lost(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn unanswered_initiations_are_resent_on_the_same_connection() {
    let server = FakeServer::start(Options::default()).await;
    // A server that takes the connection but never answers.
    server.set_silent(true);
    let config = client_config(server.addr, server_keys().public, Some(PSK));
    let err = Tunnel::connect_with(&config, &tcp(600)).await.unwrap_err();
    let ConnectError::Unreachable { attempts, .. } = err else {
        panic!("{err}");
    };
    assert!(attempts >= 3, "{attempts}");
    wait_until(|| server.seen.inits.load(Relaxed) == u64::from(attempts)).await;
    assert_eq!(server.seen.tcp_connections.load(Relaxed), 1);
}

#[tokio::test]
async fn reconnects_when_the_server_drops_the_handshake() {
    let server = FakeServer::start(Options {
        tcp_drop_on_init: 2,
        ..Options::default()
    })
    .await;
    // A resend on the third connection would be answered with a second
    // session, so the retry interval is far longer than a loaded machine
    // needs for one loopback round trip: only the closes may cause retries.
    let opts = ConnectOptions {
        retry_interval: HANG_GUARD,
        deadline: HANG_GUARD * 2,
        ..tcp(0)
    };
    let started = Instant::now();
    let tunnel = connected_with(&server, &opts).await;
    assert!(started.elapsed() < HANG_GUARD, "a close is retried at once");
    assert_eq!(tunnel.session_id(), SESSION_ID);
    assert_eq!(server.seen.tcp_connections.load(Relaxed), 3);
    assert_eq!(server.seen.accepted.load(Relaxed), 1);
    assert_eq!(server.seen.stale_timestamps.load(Relaxed), 0);
}

#[tokio::test]
async fn refused_connections_are_unreachable_and_say_why() {
    let config = client_config(free_port(), server_keys().public, Some(PSK));
    let err = Tunnel::connect_with(&config, &tcp(800)).await.unwrap_err();
    let ConnectError::Unreachable {
        transport,
        attempts,
        last_error,
        ..
    } = &err
    else {
        panic!("{err}");
    };
    // No connection, so no initiation ever went out.
    assert_eq!((*transport, *attempts), (Transport::Tcp, 0));
    assert!(
        last_error.as_deref().unwrap_or("").contains("refused"),
        "{err}"
    );
}

fn auto(udp_for_ms: u64) -> ConnectOptions {
    ConnectOptions {
        transport: TransportChoice::Auto,
        deadline: Duration::from_secs(20),
        retry_interval: Duration::from_millis(100),
        auto_udp_for: Duration::from_millis(udp_for_ms),
        ..ConnectOptions::default()
    }
}

// On the paused clock: how long UDP gets is the code's own deadline, and a
// loaded machine must not make it pass before an answer that is on its way.
#[tokio::test(start_paused = true)]
async fn auto_prefers_udp() {
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected_with(&server, &auto(2_000)).await;
    assert_eq!(tunnel.transport(), Transport::Udp);
    assert_eq!(server.seen.tcp_connections.load(Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn auto_falls_back_to_tcp_when_udp_gets_no_answer() {
    let server = FakeServer::start(Options {
        udp: false,
        ..Options::default()
    })
    .await;
    let tunnel = connected_with(&server, &auto(300)).await;
    assert_eq!(tunnel.transport(), Transport::Tcp);
    let (mut tx, mut rx) = tunnel.split();
    let mut buf = vec![0u8; SEND_BUF_LEN];
    let packet = ipv4_packet(CLIENT_ADDR, SERVER_ADDR, 7, 80);
    buf[HEADROOM..HEADROOM + 80].copy_from_slice(&packet);
    tx.send_packet(&mut buf, 80).await.unwrap();
    assert_eq!(next_packet(&mut rx).await, echoed(packet));
}

#[tokio::test(start_paused = true)]
async fn auto_falls_back_when_no_answer_authenticated_and_still_names_the_mismatch() {
    // Responses that fail to authenticate are no answer (whoever blocks UDP could forge
    // them): auto tries TCP too, and with the mismatch real, reports it.
    let server = FakeServer::start(Options::default()).await;
    let config = client_config(server.addr, server_keys().public, Some([1u8; 32]));
    let err = Tunnel::connect_with(&config, &auto(2_000))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::KeyMismatch { .. }), "{err}");
    assert!(server.seen.tcp_connections.load(Relaxed) >= 1);
}

#[tokio::test(start_paused = true)]
async fn a_forged_reject_over_udp_does_not_stop_auto_from_reaching_the_server_over_tcp() {
    // UDP answers only with a reject (as an attacker blocking UDP could send): TCP works.
    let server = FakeServer::start(Options {
        udp_reject: Some(ringway_proto::wire::handshake::RejectReason::NotAuthorised),
        ..Options::default()
    })
    .await;
    let tunnel = connected_with(&server, &auto(1_000)).await;
    assert_eq!(tunnel.transport(), Transport::Tcp);
}

#[tokio::test(start_paused = true)]
async fn keepalives_over_tcp_then_fails_when_the_server_goes_quiet() {
    // The server never sends anything after the handshake.
    let server = FakeServer::start(Options {
        mute: true,
        ..Options::with_timers(1, 3)
    })
    .await;
    let tunnel = connected(&server, TransportChoice::Tcp).await;
    let (inside, _host) = memory(8);
    let err = driver::run(tunnel, inside, pending())
        .await
        .expect_err("a silent server ends the session");
    assert!(matches!(err, DriverError::ServerStoppedResponding(d) if d == Duration::from_secs(3)));
    assert!(err.is_session_lost());
    let keepalives = server.seen.keepalives.load(Relaxed);
    assert!((2..=3).contains(&keepalives), "{keepalives}");
    // The connection is still up, so the goodbye goes out too.
    wait_until(|| server.seen.disconnects.load(Relaxed) == 1).await;
}
