//! Keeping the tunnel up against the loopback fake server (the server's
//! session layer): reconnecting after the server goes quiet or restarts,
//! rekeys reaching the supervisor, rejects, roaming to a fresh UDP socket,
//! and RTT from probe echoes, as the tokio side runs them. Everything that
//! waits runs on tokio's paused clock. The protocol decisions behind these
//! (when to re-handshake, rekey, give up) are tested exactly in
//! `core_pair.rs`.

#[macro_use]
mod support;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use ringway_client::backoff::BackoffPolicy;
use ringway_client::inside::memory::{memory, MemoryHost};
use ringway_client::outside::{HEADROOM, SEND_BUF_LEN};
use ringway_client::status::{ConnState, LiveStatus};
use ringway_client::{
    driver, ConnectError, ConnectOptions, Notice, Received, SessionOptions, Supervisor,
    SupervisorOptions, TransportChoice, Tunnel,
};
use support::*;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

over_both_paused!(
    reconnects_after_the_server_goes_quiet_and_comes_back,
    survives_a_server_restart_on_the_same_port,
    rekeys_reach_the_supervisor_and_traffic_flows_on,
    a_wrong_server_key_is_reported_from_the_reject,
    an_unlisted_client_is_reported_as_not_authorised,
);

fn connect_opts(transport: TransportChoice, deadline: Duration) -> ConnectOptions {
    quick(transport, deadline.as_millis() as u64)
}

/// A supervisor running on its own task, reporting what it notices.
struct Running {
    notices: mpsc::UnboundedReceiver<Notice>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    status: Arc<LiveStatus>,
}

impl Running {
    async fn start(
        server: &FakeServer,
        transport: TransportChoice,
        inside_capacity: usize,
    ) -> (Running, MemoryHost) {
        let tunnel = connected(server, transport).await;
        let config = client_config(server.addr, server_keys().public, Some(PSK));
        let (inside, host) = memory(inside_capacity);
        let opts = SupervisorOptions {
            connect: connect_opts(transport, Duration::from_secs(1)),
            backoff: BackoffPolicy {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
                jitter: 0.2,
            },
            ..SupervisorOptions::default()
        };
        let mut supervisor = Supervisor::start(config, tunnel, inside, opts);
        let status = Arc::clone(supervisor.status());
        let (notices_tx, notices) = mpsc::unbounded_channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    notice = supervisor.next() => match notice {
                        Ok(n) => {
                            let _ = notices_tx.send(n);
                        }
                        Err(e) => panic!("supervisor failed: {e}"),
                    }
                }
            }
            supervisor.stop().await;
        });
        (
            Running {
                notices,
                stop: Some(stop),
                task,
                status,
            },
            host,
        )
    }

    /// Waits (up to `within` of tokio time) for a notice matching `want`,
    /// returning the ones before it.
    async fn wait_for(&mut self, within: Duration, want: impl Fn(&Notice) -> bool) -> Vec<Notice> {
        let mut before = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notice = tokio::time::timeout_at(deadline, self.notices.recv())
                .await
                .unwrap_or_else(|_| panic!("no such notice within {within:?}; saw {before:?}"))
                .expect("supervisor gone");
            if want(&notice) {
                return before;
            }
            before.push(notice);
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// Sends a packet in and expects its echo back within `within`.
async fn echoes(host: &mut MemoryHost, seq: u32, within: Duration) -> bool {
    let packet = ipv4_packet(CLIENT_ADDR, SERVER_ADDR, seq, 100);
    host.to_tunnel.send(packet.clone()).await.unwrap();
    let want = echoed(packet);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, host.from_tunnel.recv()).await {
            Ok(Some(p)) if p == want => return true,
            Ok(Some(_)) => continue,
            _ => return false,
        }
    }
}

fn quick_timers() -> Options {
    // Keepalive 1 s, idle timeout 3 s.
    Options::with_timers(1, 3)
}

async fn reconnects_after_the_server_goes_quiet_and_comes_back(transport: TransportChoice) {
    let server = FakeServer::start(quick_timers()).await;
    let (mut running, mut host) = Running::start(&server, transport, 64).await;
    assert!(echoes(&mut host, 1, Duration::from_secs(2)).await);

    server.set_silent(true);
    // Quiet for the idle timeout: lost, then attempts that fail while it stays quiet.
    running
        .wait_for(Duration::from_secs(10), |n| matches!(n, Notice::Lost(_)))
        .await;
    assert_eq!(running.status.state(), ConnState::Reconnecting);
    let before = running
        .wait_for(Duration::from_secs(30), |n| {
            matches!(n, Notice::RetryFailed { attempt: 2, .. })
        })
        .await;
    assert!(
        before.iter().all(|n| matches!(
            n,
            Notice::RetryFailed {
                error: ConnectError::Unreachable { .. },
                ..
            }
        )),
        "{before:?}"
    );
    // Packets sent meanwhile are dropped and counted, not queued.
    let packet = ipv4_packet(CLIENT_ADDR, SERVER_ADDR, 2, 100);
    host.to_tunnel.send(packet).await.unwrap();
    wait_until(|| running.status.stats().snapshot().tx_dropped_no_session >= 1).await;

    server.set_silent(false);
    running
        .wait_for(Duration::from_secs(30), |n| {
            matches!(n, Notice::Reconnected { .. })
        })
        .await;
    assert_eq!(running.status.state(), ConnState::Connected);
    assert!(echoes(&mut host, 3, Duration::from_secs(2)).await);
    let report = running.status.report();
    assert_eq!(report.reconnects, 1);
    assert_eq!(report.transport, transport_of(transport).as_str());
    // The counters run on across sessions.
    assert_eq!(report.counters.rx_packets, 2);
    running.stop().await;
    wait_until(|| server.seen.disconnects.load(Relaxed) >= 1).await;
}

async fn survives_a_server_restart_on_the_same_port(transport: TransportChoice) {
    let server = FakeServer::start(quick_timers()).await;
    let (mut running, mut host) = Running::start(&server, transport, 64).await;
    assert!(echoes(&mut host, 1, Duration::from_secs(2)).await);

    let addr = server.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server = FakeServer::start_on(addr, quick_timers()).await;
    // Over UDP the client notices the silence and re-handshakes in place (or
    // reconnects); over TCP the connection reset ends the session. Either way
    // traffic resumes without anyone doing anything.
    let mut resumed = false;
    for seq in 2..60 {
        if echoes(&mut host, seq, Duration::from_secs(1)).await {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "no echo through the restarted server");
    assert!(server.seen.accepted.load(Relaxed) >= 1);
    // The client never stopped: the notices say how it got there.
    let mut notices = Vec::new();
    while let Ok(n) = running.notices.try_recv() {
        notices.push(n);
    }
    assert!(
        notices
            .iter()
            .any(|n| matches!(n, Notice::Reconnected { .. } | Notice::Rekeyed { .. })),
        "{notices:?}"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_udp_server_is_rejoined_in_place_before_the_idle_timeout() {
    // Keepalive 1 s, idle timeout 60 s: the restart shows as silence long
    // before the session would expire.
    let opts = || Options::with_timers(1, 60);
    let server = FakeServer::start(opts()).await;
    let (mut running, mut host) = Running::start(&server, TransportChoice::Udp, 64).await;
    assert!(echoes(&mut host, 1, Duration::from_secs(2)).await);
    let addr = server.stop().await;
    let server = FakeServer::start_on(addr, opts()).await;
    let started = tokio::time::Instant::now();
    // Nothing heard for keepalive + 5 s: a fresh initiation on the same
    // socket, which the new server answers.
    let before = running
        .wait_for(Duration::from_secs(20), |n| {
            matches!(n, Notice::Rekeyed { .. })
        })
        .await;
    assert!(before.is_empty(), "{before:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(echoes(&mut host, 2, Duration::from_secs(2)).await);
    assert_eq!(server.seen.accepted.load(Relaxed), 1);
    assert_eq!(running.status.report().reconnects, 0);
    running.stop().await;
}

async fn rekeys_reach_the_supervisor_and_traffic_flows_on(transport: TransportChoice) {
    // The server asks for a rekey every second.
    let settings = settings(&[("client", client_keys().public, Some(PSK))], 25, 180, 1);
    let server = FakeServer::start(Options {
        settings,
        ..Options::default()
    })
    .await;
    let (mut running, mut host) = Running::start(&server, transport, 64).await;
    // Traffic across several rekeys: an echo every 100 ms for 5 s.
    let mut echoed_back = 0;
    for seq in 0..50 {
        if echoes(&mut host, seq, Duration::from_millis(100)).await {
            echoed_back += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rekeys = 0;
    while let Ok(n) = running.notices.try_recv() {
        match n {
            Notice::Rekeyed { config, previous } => {
                assert_eq!(config.client_addr, previous.client_addr);
                rekeys += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Every second plus up to 50 ms of jitter.
    assert!((4..=5).contains(&rekeys), "{rekeys} rekeys");
    // Zero loss across rekeys is the core's, tested in `core_pair.rs`; here
    // the traffic simply keeps flowing.
    assert!(echoed_back >= 45, "{echoed_back} of 50 echoes");
    let report = running.status.report();
    assert_eq!(report.rekeys, rekeys);
    assert_eq!(report.reconnects, 0);
    assert_ne!(report.session_id, SESSION_ID);
    running.stop().await;
}

async fn a_wrong_server_key_is_reported_from_the_reject(transport: TransportChoice) {
    let server = FakeServer::start(Options::default()).await;
    let config = client_config(server.addr, other_keys().public, Some(PSK));
    let err = Tunnel::connect_with(
        &config,
        &connect_opts(transport, Duration::from_millis(800)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ConnectError::UnknownServerKey { .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("server key mismatch"), "{err}");
    assert!(server.seen.rejects.load(Relaxed) >= 1);
}

async fn an_unlisted_client_is_reported_as_not_authorised(transport: TransportChoice) {
    let server = FakeServer::start(Options {
        settings: settings(&[("someone", other_keys().public, None)], 25, 180, 0),
        ..Options::default()
    })
    .await;
    let config = client_config(server.addr, server_keys().public, Some(PSK));
    let err = Tunnel::connect_with(
        &config,
        &connect_opts(transport, Duration::from_millis(800)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::NotAuthorised { .. }), "{err}");
    assert!(err.to_string().starts_with("not authorised"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn without_rejects_silence_is_still_unreachable() {
    let server = FakeServer::start(Options {
        rejects: false,
        ..Options::default()
    })
    .await;
    let config = client_config(server.addr, other_keys().public, Some(PSK));
    let err = Tunnel::connect_with(
        &config,
        &connect_opts(TransportChoice::Udp, Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::Unreachable { .. }), "{err}");
}

#[tokio::test]
async fn roaming_to_a_fresh_udp_socket_keeps_the_session() {
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected(&server, TransportChoice::Udp).await;
    let (mut tx, mut rx) = tunnel.split();
    let mut buf = vec![0u8; SEND_BUF_LEN];
    let mut send = |seq: u32| {
        let packet = ipv4_packet(CLIENT_ADDR, SERVER_ADDR, seq, 100);
        buf[HEADROOM..HEADROOM + 100].copy_from_slice(&packet);
        (echoed(packet), buf.clone())
    };

    let (want, mut b) = send(1);
    tx.send_packet(&mut b, 100).await.unwrap();
    assert_eq!(next_packet(&mut rx).await, want);
    let before = tx.local_addr().unwrap();
    assert_eq!(*server.seen.last_udp_from.lock().unwrap(), Some(before));

    let after = tx.rebind().await.unwrap().expect("a fresh socket");
    assert_ne!(after, before);
    assert_eq!(tx.local_addr().unwrap(), after);
    // The same session, from the new address, answered on the new socket.
    for seq in 2..20 {
        let (want, mut b) = send(seq);
        tx.send_packet(&mut b, 100).await.unwrap();
        assert_eq!(next_packet(&mut rx).await, want);
    }
    assert_eq!(*server.seen.last_udp_from.lock().unwrap(), Some(after));
    assert_eq!(server.seen.accepted.load(Relaxed), 1);
    assert_eq!(tx.stats().snapshot().tx_rebinds, 1);
    // The core sent a probe from the new socket at once.
    wait_until(|| server.seen.probes.load(Relaxed) == 1).await;
    // The path is fine: nothing to do.
    tx.check_path().await.unwrap();
    assert_eq!(tx.stats().snapshot().tx_rebinds, 1);
}

#[tokio::test]
async fn tcp_cannot_roam() {
    let server = FakeServer::start(Options::default()).await;
    let (mut tx, _rx) = connected(&server, TransportChoice::Tcp).await.split();
    assert_eq!(tx.rebind().await.unwrap(), None);
    tx.check_path().await.unwrap();
}

#[tokio::test]
async fn keepalives_are_probes_and_echoes_give_the_rtt() {
    let server = FakeServer::start(Options::default()).await;
    let (mut tx, mut rx) = connected(&server, TransportChoice::Udp).await.split();
    assert_eq!(tx.stats().snapshot().rtt, None);
    tx.send_keepalive().await.unwrap();
    let received = tokio::time::timeout(HANG_GUARD, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, Received::Consumed);
    let s = rx.stats().snapshot();
    let rtt = s.rtt.expect("an RTT sample");
    assert_eq!(s.srtt, Some(rtt));
    assert_eq!(server.seen.probes.load(Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn the_driver_probes_every_interval_even_when_busy() {
    let server = FakeServer::start(Options::default()).await;
    let config = client_config(server.addr, server_keys().public, Some(PSK));
    let opts = ConnectOptions {
        session: SessionOptions {
            probe_every: Some(Duration::from_secs(2)),
            ..SessionOptions::default()
        },
        ..connect_opts(TransportChoice::Udp, Duration::from_secs(10))
    };
    let tunnel = Tunnel::connect_with(&config, &opts).await.unwrap();
    let stats = Arc::clone(tunnel.stats());
    let (inside, mut host) = memory(64);
    let busy = async {
        // Traffic every 100 ms for 10 s: never idle long enough for a keepalive.
        for seq in 0..100 {
            host.to_tunnel
                .send(ipv4_packet(CLIENT_ADDR, SERVER_ADDR, seq, 60))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            while host.from_tunnel.try_recv().is_ok() {}
        }
    };
    driver::run(tunnel, inside, busy).await.unwrap();
    // At 2, 4, 6, 8 and 10 s (the last as the busy loop ends: maybe).
    let probes = server.seen.probes.load(Relaxed);
    assert!((4..=5).contains(&probes), "{probes} probes in 10 s");
    assert!(stats.snapshot().rtt.is_some());
}
