//! `Tunnel` against the in-process fake server over loopback, each test over
//! UDP and over TCP: handshake, both directions of data, junk, retries, and
//! the ways connecting fails. TCP-only behaviour is in `tcp.rs`.

#[macro_use]
mod support;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ringway_client::outside::{TunnelReceiver, HEADROOM, SEND_BUF_LEN};
use ringway_client::{ConnectError, ConnectOptions, Event, Transport, Tunnel};
use support::*;

over_both!(
    handshake_yields_the_servers_session_config,
    a_thousand_packets_each_way,
    keepalive_and_disconnect_reach_the_server,
    junk_replays_and_forgeries_are_dropped_and_counted,
    server_disconnect_is_an_event,
    retries_with_fresh_initiations_until_the_server_appears,
    wrong_server_key_is_unreachable_within_the_deadline,
    psk_mismatch_is_reported_as_such,
    unresolvable_endpoint_fails_fast,
);

fn quick(transport: Transport, deadline_ms: u64) -> ConnectOptions {
    ConnectOptions {
        transport,
        deadline: Duration::from_millis(deadline_ms),
        retry_interval: Duration::from_millis(100),
        ..ConnectOptions::default()
    }
}

async fn connected(server: &FakeServer, transport: Transport) -> Tunnel {
    let config = client_config(server.addr, server_keys().public, Some(PSK));
    let tunnel = Tunnel::connect_with(&config, &quick(transport, 5_000))
        .await
        .unwrap();
    assert_eq!(tunnel.transport(), transport);
    tunnel
}

/// Receives the next data packet, skipping other events; bounded so a lost
/// packet fails the test instead of hanging it.
async fn next_packet(rx: &mut TunnelReceiver) -> Vec<u8> {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a packet within 5 s")
            .unwrap();
        if let Event::Packet(packet) = event {
            return packet.to_vec();
        }
    }
}

async fn handshake_yields_the_servers_session_config(transport: Transport) {
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected(&server, transport).await;
    assert_eq!(*tunnel.session_config(), session_config(25, 180));
    assert_eq!(tunnel.session_id(), SESSION_ID);
    assert_eq!(tunnel.server_addr(), server.addr);
    // Connected: the kernel picked the route's source address.
    assert!(tunnel.local_addr().unwrap().ip().is_loopback());
    assert_eq!(server.seen.accepted.load(Relaxed), 1);
    let tcp_connections = u64::from(transport == Transport::Tcp);
    assert_eq!(server.seen.tcp_connections.load(Relaxed), tcp_connections);
}

async fn a_thousand_packets_each_way(transport: Transport) {
    const PACKETS: u32 = 1000;
    const WINDOW: u32 = 50;
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected(&server, transport).await;
    let stats = std::sync::Arc::clone(tunnel.stats());
    let (mut tx, mut rx) = tunnel.split();
    let mut send_buf = vec![0u8; SEND_BUF_LEN];
    let mut bytes = 0u64;
    // In windows, so neither socket's receive queue can overflow on loopback.
    for window in 0..PACKETS / WINDOW {
        let seqs = window * WINDOW..(window + 1) * WINDOW;
        for seq in seqs.clone() {
            let len = 24 + (seq as usize * 7) % 1376;
            let packet = ipv4_packet(CLIENT_ADDR, SERVER_ADDR, seq, len);
            send_buf[HEADROOM..HEADROOM + len].copy_from_slice(&packet);
            tx.send_packet(&mut send_buf, len).await.unwrap();
            bytes += len as u64;
        }
        for seq in seqs {
            let len = 24 + (seq as usize * 7) % 1376;
            let want = echoed(ipv4_packet(CLIENT_ADDR, SERVER_ADDR, seq, len));
            assert_eq!(next_packet(&mut rx).await, want, "packet {seq}");
        }
    }
    assert_eq!(server.seen.data.load(Relaxed), u64::from(PACKETS));
    let s = stats.snapshot();
    assert_eq!((s.tx_packets, s.tx_bytes), (u64::from(PACKETS), bytes));
    assert_eq!((s.rx_packets, s.rx_bytes), (u64::from(PACKETS), bytes));
    assert_eq!(s.rx_dropped() + s.tx_dropped(), 0);
}

async fn keepalive_and_disconnect_reach_the_server(transport: Transport) {
    let server = FakeServer::start(Options::default()).await;
    let (mut tx, _rx) = connected(&server, transport).await.split();
    let before = tx.last_sent();
    tx.send_keepalive().await.unwrap();
    assert!(tx.last_sent() >= before);
    tx.send_disconnect().await.unwrap();
    wait_until(|| server.seen.disconnects.load(Relaxed) == 1).await;
    assert_eq!(server.seen.keepalives.load(Relaxed), 1);
    assert_eq!(tx.stats().snapshot().tx_keepalives, 1);
}

async fn junk_replays_and_forgeries_are_dropped_and_counted(transport: Transport) {
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected(&server, transport).await;
    let (_tx, mut rx) = tunnel.split();

    // Garbage, a stray handshake response, a frame for another session, and a
    // frame with a flipped tag bit, each followed by nothing the client accepts.
    server.send_raw(b"not a frame".to_vec());
    let mut stray = vec![0u8; ringway_proto::wire::handshake::RESP_LEN];
    stray[0] = 2;
    server.send_raw(stray);
    let mut other_session = vec![0u8; 64];
    other_session[0] = 3;
    other_session[4..8].copy_from_slice(&(SESSION_ID + 1).to_be_bytes());
    server.send_raw(other_session);
    let mut forged = vec![0u8; 64];
    forged[0] = 3;
    forged[4..8].copy_from_slice(&SESSION_ID.to_be_bytes());
    forged[15] = 200; // counter 200: unused, so it fails on the tag, not the window
    server.send_raw(forged);
    // A genuine packet sent twice: the copy is a replay.
    let packet = ipv4_packet(SERVER_ADDR, CLIENT_ADDR, 7, 100);
    server.send_packet_twice(packet.clone());
    server.send_packet(ipv4_packet(SERVER_ADDR, CLIENT_ADDR, 8, 100));

    assert_eq!(next_packet(&mut rx).await, packet);
    let last = next_packet(&mut rx).await;
    assert_eq!(last, ipv4_packet(SERVER_ADDR, CLIENT_ADDR, 8, 100));
    let s = rx.stats().snapshot();
    assert_eq!(s.rx_packets, 2);
    assert_eq!(s.rx_dropped_malformed, 2, "{s:?}");
    assert_eq!(s.rx_dropped_wrong_session, 1, "{s:?}");
    assert_eq!(s.rx_dropped_auth, 1, "{s:?}");
    assert_eq!(s.rx_dropped_replay, 1, "{s:?}");
}

async fn server_disconnect_is_an_event(transport: Transport) {
    let server = FakeServer::start(Options::default()).await;
    let (_tx, mut rx) = connected(&server, transport).await.split();
    server.disconnect();
    let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event, Event::Disconnected);
}

async fn retries_with_fresh_initiations_until_the_server_appears(transport: Transport) {
    // Reserve a port, free it, and start the server there only after the client began.
    let port = free_port();
    let config = client_config(port, server_keys().public, Some(PSK));
    let client =
        tokio::spawn(async move { Tunnel::connect_with(&config, &quick(transport, 5_000)).await });
    tokio::time::sleep(Duration::from_millis(350)).await;
    let server = FakeServer::start_on(port, Options::default()).await;
    let tunnel = client
        .await
        .unwrap()
        .expect("connects once the server is up");
    assert_eq!(tunnel.session_id(), SESSION_ID);
    // Every initiation the server saw carried a newer timestamp than the last.
    assert_eq!(server.seen.stale_timestamps.load(Relaxed), 0);
}

async fn wrong_server_key_is_unreachable_within_the_deadline(transport: Transport) {
    let server = FakeServer::start(Options::default()).await;
    // Pinning a key the server does not hold: it cannot check mac1 and stays silent.
    let config = client_config(server.addr, other_keys().public, Some(PSK));
    let started = Instant::now();
    let err = Tunnel::connect_with(&config, &quick(transport, 400))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, ConnectError::Unreachable { attempts, .. } if attempts >= 3),
        "{err}"
    );
    assert!(err.to_string().starts_with("server unreachable"), "{err}");
    assert!(
        err.to_string().contains(&format!("over {transport}")),
        "{err}"
    );
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(server.seen.accepted.load(Relaxed), 0);
}

async fn psk_mismatch_is_reported_as_such(transport: Transport) {
    let server = FakeServer::start(Options::default()).await;
    let config = client_config(server.addr, server_keys().public, Some([1u8; 32]));
    let started = Instant::now();
    // A long deadline: three failed responses end it long before.
    let err = Tunnel::connect_with(&config, &quick(transport, 10_000))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::KeyMismatch { .. }), "{err}");
    assert!(
        err.to_string().starts_with("server key or psk mismatch"),
        "{err}"
    );
    // Ended by the failed responses, well before the 10 s deadline (generous
    // bound: this machine is shared and timings are noisy).
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "{took:?}");
    // The server answered, so the mismatch was the client's to find. A slow
    // response can cross a retransmission, so the server may see one more.
    assert!(server.seen.accepted.load(Relaxed) >= 3);
}

async fn unresolvable_endpoint_fails_fast(transport: Transport) {
    let mut config = client_config(
        "127.0.0.1:9".parse().unwrap(),
        server_keys().public,
        Some(PSK),
    );
    config.endpoint = "host.invalid:51820".into();
    let err = Tunnel::connect_with(&config, &quick(transport, 400))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Resolve { .. }), "{err}");
}
