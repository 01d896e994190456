//! `Tunnel` over loopback against the server's session layer in the fake
//! server, each test over UDP and over TCP: the handshake through real
//! sockets, both directions of data, junk on the socket, retries while the
//! server is not there yet, and how connecting fails. The protocol's own
//! behaviour (timings, verdicts, rekeys) is tested in memory in
//! `core_pair.rs`; TCP-only behaviour is in `tcp.rs`.

#[macro_use]
mod support;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ringway_client::core::{Event, Lost};
use ringway_client::outside::{HEADROOM, SEND_BUF_LEN};
use ringway_client::{ConnectError, Received, TransportChoice, Tunnel};
use support::*;

over_both!(
    handshake_yields_the_servers_session_config,
    a_thousand_packets_each_way,
    keepalive_and_disconnect_reach_the_server,
    junk_replays_and_forgeries_are_dropped_and_counted,
    server_disconnect_ends_the_session,
    retries_until_the_server_appears,
    psk_mismatch_is_reported_as_such,
    unresolvable_endpoint_fails_fast,
);

over_both_paused!(an_unanswering_server_is_unreachable_at_the_deadline);

async fn handshake_yields_the_servers_session_config(transport: TransportChoice) {
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected(&server, transport).await;
    assert_eq!(
        *tunnel.session_config(),
        expected_config(&server_settings(25, 180))
    );
    assert_eq!(tunnel.session_id(), SESSION_ID);
    assert_eq!(tunnel.server_addr(), server.addr);
    // Connected: the kernel picked the route's source address.
    assert!(tunnel.local_addr().unwrap().ip().is_loopback());
    assert_eq!(server.seen.accepted.load(Relaxed), 1);
    let tcp_connections = u64::from(transport == TransportChoice::Tcp);
    assert_eq!(server.seen.tcp_connections.load(Relaxed), tcp_connections);
}

async fn a_thousand_packets_each_way(transport: TransportChoice) {
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

async fn keepalive_and_disconnect_reach_the_server(transport: TransportChoice) {
    let server = FakeServer::start(Options::default()).await;
    let (mut tx, _rx) = connected(&server, transport).await.split();
    tx.send_keepalive().await.unwrap();
    wait_until(|| server.seen.probes.load(Relaxed) == 1).await;
    tx.send_disconnect().await.unwrap();
    wait_until(|| server.seen.disconnects.load(Relaxed) == 1).await;
    assert_eq!(server.seen.keepalives.load(Relaxed), 1);
    assert_eq!(tx.stats().snapshot().tx_keepalives, 1);
    // Over after the goodbye.
    assert_eq!(tx.session_id(), None);
}

async fn junk_replays_and_forgeries_are_dropped_and_counted(transport: TransportChoice) {
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

async fn server_disconnect_ends_the_session(transport: TransportChoice) {
    let server = FakeServer::start(Options::default()).await;
    let (_tx, mut rx) = connected(&server, transport).await.split();
    server.disconnect();
    let received = tokio::time::timeout(HANG_GUARD, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, Received::Consumed);
    assert_eq!(
        rx.poll_event(),
        Some(Event::SessionLost(Lost::ServerClosed))
    );
}

/// Holds the port while the client starts: counts the client's tries there,
/// so the server starts only once the client has retried.
async fn retries_until_the_server_appears(transport: TransportChoice) {
    let port = free_port();
    let config = client_config(port, server_keys().public, Some(PSK));
    let client =
        tokio::spawn(async move { Tunnel::connect_with(&config, &quick(transport, 20_000)).await });
    match transport {
        TransportChoice::Tcp => {
            // Connections accepted and dropped at once: the client reconnects.
            let listener = tokio::net::TcpListener::bind(port).await.unwrap();
            for _ in 0..2 {
                let (conn, _) = tokio::time::timeout(HANG_GUARD, listener.accept())
                    .await
                    .unwrap()
                    .unwrap();
                drop(conn);
            }
        }
        _ => {
            // Initiations nobody answers: the client sends fresh ones.
            let socket = tokio::net::UdpSocket::bind(port).await.unwrap();
            let mut buf = [0u8; 2048];
            for _ in 0..2 {
                tokio::time::timeout(HANG_GUARD, socket.recv_from(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
    }
    let server = FakeServer::start_on(port, Options::default()).await;
    let tunnel = client
        .await
        .unwrap()
        .expect("connects once the server is up");
    assert_eq!(tunnel.session_id(), SESSION_ID);
    // Every initiation the server saw carried a newer timestamp than the last.
    assert_eq!(server.seen.stale_timestamps.load(Relaxed), 0);
}

async fn an_unanswering_server_is_unreachable_at_the_deadline(transport: TransportChoice) {
    let server = FakeServer::start(Options::default()).await;
    server.set_silent(true);
    let config = client_config(server.addr, server_keys().public, Some(PSK));
    let started = tokio::time::Instant::now();
    let err = Tunnel::connect_with(&config, &quick(transport, 400))
        .await
        .unwrap_err();
    // On the paused clock: exactly at the deadline, after an initiation
    // every 100 ms.
    assert_eq!(started.elapsed(), Duration::from_millis(400));
    let ConnectError::Unreachable {
        attempts,
        transport: over,
        ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(*over, transport_of(transport));
    assert!(*attempts >= 3, "{err}");
    assert!(err.to_string().starts_with("server unreachable"), "{err}");
    // Each initiation the client counted reached the (silent) server.
    wait_until(|| server.seen.inits.load(Relaxed) == u64::from(*attempts)).await;
    assert_eq!(server.seen.accepted.load(Relaxed), 0);
}

async fn psk_mismatch_is_reported_as_such(transport: TransportChoice) {
    let server = FakeServer::start(Options::default()).await;
    let config = client_config(server.addr, server_keys().public, Some([1u8; 32]));
    // Responses that do not authenticate never end the connect early (anyone could forge
    // them): the deadline's verdict names them.
    let err = Tunnel::connect_with(&config, &quick(transport, 1_000))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::KeyMismatch { .. }), "{err}");
    assert!(
        err.to_string().starts_with("server key or psk mismatch"),
        "{err}"
    );
    // The server answered, so the mismatch was the client's to find (a
    // slow answer can cross the next initiation, so maybe more than three).
    assert!(server.seen.accepted.load(Relaxed) >= 3);
}

async fn unresolvable_endpoint_fails_fast(transport: TransportChoice) {
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
