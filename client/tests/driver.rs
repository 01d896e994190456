//! The driver between an in-memory inside and the loopback fake server (the
//! server's session layer): forwarding, shutdown, and the core's timers as
//! the driver runs them. The timer tests run on tokio's paused clock, so
//! seconds of protocol time pass without sleeping.

mod support;

use std::future::pending;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use ringway_client::inside::memory::memory;
use ringway_client::{driver, DriverError, TransportChoice};
use support::*;
use tokio::sync::oneshot;

#[tokio::test]
async fn forwards_both_ways_filters_and_says_goodbye() {
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected(&server, TransportChoice::Udp).await;
    let stats = Arc::clone(tunnel.stats());
    let (inside, mut host) = memory(64);
    let (stop, stopped) = oneshot::channel::<()>();
    let driver = tokio::spawn(driver::run(tunnel, inside, async {
        let _ = stopped.await;
    }));

    // Echoed through the server and back to the host.
    for seq in 0..100 {
        let packet = ipv4_packet(CLIENT_ADDR, SERVER_ADDR, seq, 60 + seq as usize);
        host.to_tunnel.send(packet.clone()).await.unwrap();
        let back = tokio::time::timeout(HANG_GUARD, host.from_tunnel.recv())
            .await
            .expect("an echo before the hang guard")
            .unwrap();
        assert_eq!(back, echoed(packet));
    }

    // Not IPv4: never leaves (the core refuses it).
    let mut v6 = vec![0u8; 60];
    v6[0] = 0x60;
    host.to_tunnel.send(v6.clone()).await.unwrap();
    // A packet the server sends of its own accord arrives too.
    let marker = ipv4_packet(SERVER_ADDR, CLIENT_ADDR, 99, 40);
    server.send_packet(marker.clone());
    let got = tokio::time::timeout(HANG_GUARD, host.from_tunnel.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, marker);
    wait_until(|| stats.snapshot().tx_dropped_not_ipv4 == 1).await;

    stop.send(()).unwrap();
    driver
        .await
        .unwrap()
        .expect("a requested stop is not an error");
    wait_until(|| server.seen.disconnects.load(Relaxed) == 1).await;
    assert_eq!(server.seen.data.load(Relaxed), 100);
    let s = stats.snapshot();
    assert_eq!(s.tx_packets, 100);
    assert_eq!(s.tx_dropped_not_ipv4, 1);
    assert_eq!(s.rx_packets, 101);
    assert_eq!(s.rx_dropped(), 0);
    // Both tasks are gone: the driver's ends of the inside are closed.
    assert!(host.to_tunnel.is_closed());
}

#[tokio::test(start_paused = true)]
async fn keepalives_while_idle_then_fails_when_the_server_goes_quiet() {
    // The server never sends anything after the handshake.
    let opts = Options {
        mute: true,
        ..Options::with_timers(1, 3)
    };
    let server = FakeServer::start(opts).await;
    let tunnel = connected(&server, TransportChoice::Udp).await;
    let (inside, _host) = memory(8);
    let started = tokio::time::Instant::now();
    let err = driver::run(tunnel, inside, pending())
        .await
        .expect_err("a silent server ends the session");
    assert!(matches!(err, DriverError::ServerStoppedResponding(d) if d == Duration::from_secs(3)));
    assert_eq!(
        err.to_string(),
        "server stopped responding: nothing received for 3s"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    // A keepalive per idle second (at 1 s and 2 s; at 3 s the session is
    // over first), and a goodbye.
    wait_until(|| server.seen.disconnects.load(Relaxed) == 1).await;
    assert_eq!(server.seen.keepalives.load(Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn a_server_that_keeps_talking_keeps_the_session() {
    // The server's session layer sends a keepalive every idle second.
    let opts = Options {
        echo: false,
        ..Options::with_timers(1, 3)
    };
    let server = FakeServer::start(opts).await;
    let tunnel = connected(&server, TransportChoice::Udp).await;
    let stats = Arc::clone(tunnel.stats());
    let (inside, _host) = memory(8);
    // Thirty idle timeouts' worth of protocol time.
    driver::run(tunnel, inside, tokio::time::sleep(Duration::from_secs(90)))
        .await
        .expect("keepalives from the server keep the session alive");
    assert!(stats.snapshot().rx_keepalives >= 80);
    assert!(server.seen.keepalives.load(Relaxed) >= 80);
}

#[tokio::test]
async fn server_disconnect_ends_the_driver_quietly() {
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected(&server, TransportChoice::Udp).await;
    let (inside, _host) = memory(8);
    let driver = tokio::spawn(driver::run(tunnel, inside, pending()));
    server.disconnect();
    let err = tokio::time::timeout(HANG_GUARD, driver)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, DriverError::ServerClosed), "{err}");
    assert!(err.is_session_lost());
    // The server closed it: no disconnect back.
    assert_eq!(server.seen.disconnects.load(Relaxed), 0);
}

#[tokio::test]
async fn a_closed_inside_is_an_error_and_the_server_is_told() {
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected(&server, TransportChoice::Udp).await;
    let (inside, host) = memory(8);
    drop(host);
    let err = driver::run(tunnel, inside, pending()).await.unwrap_err();
    assert!(matches!(err, DriverError::InsideRead(_)), "{err}");
    wait_until(|| server.seen.disconnects.load(Relaxed) == 1).await;
}
