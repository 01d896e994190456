//! The client's protocol core against the server's real session layer, in
//! memory, on a simulated clock: every protocol behaviour of the client, with
//! exact times and counts, and nothing that can flake (see `support::pair`).

#[macro_use]
mod support;

use std::time::Duration;

use ringway_client::core::timers::QUIET_REHANDSHAKE;
use ringway_client::core::{ConnectFailure, Event, Lost, Refused, SessionOptions};
use ringway_proto::handshake::client::ClientKeys;
use ringway_proto::wire::handshake::RejectReason;
use ringway_proto::wire::FrameType;
use support::pair::{all_of, first_of, Dir, Pair, PairConfig};
use support::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A pair connected at the start of the simulation, with the given server
/// timers (keepalive, idle timeout, rekey).
fn connected(keepalive: u16, idle: u16, rekey: u16) -> Pair {
    let mut pair = Pair::new(PairConfig {
        settings: settings(
            &[("client", client_keys().public, Some(PSK))],
            keepalive,
            idle,
            rekey,
        ),
        ..PairConfig::default()
    });
    assert!(pair.connect(secs(1)), "{:?}", pair.event_list());
    pair
}

fn to_server(seq: u32) -> Vec<u8> {
    ipv4_packet(CLIENT_ADDR, SERVER_ADDR, seq, 100 + (seq as usize % 1300))
}

fn to_client(seq: u32) -> Vec<u8> {
    ipv4_packet(SERVER_ADDR, CLIENT_ADDR, seq, 100 + (seq as usize % 1300))
}

fn rekeys(pair: &Pair) -> usize {
    pair.event_list()
        .iter()
        .filter(|e| matches!(e, Event::Rekeyed { .. }))
        .count()
}

#[test]
fn handshake_takes_one_round_trip_and_brings_the_servers_config() {
    let mut pair = Pair::default_pair();
    assert!(pair.connect(secs(1)));
    // One initiation out, one response back: connected after one round trip.
    assert_eq!(pair.elapsed(), ms(20));
    assert_eq!(pair.count(Dir::ToServer, FrameType::HandshakeInit), 1);
    let settings = server_settings(10, 60);
    assert_eq!(
        pair.event_list(),
        [Event::Connected {
            session_id: SESSION_ID,
            config: expected_config(&settings)
        }]
    );
    assert_eq!(pair.client.session_id(), Some(SESSION_ID));
    assert_eq!(pair.server.len(), 1);
    assert_eq!(pair.server.counters.handshakes, 1);
}

#[test]
fn data_both_ways_in_order_and_intact() {
    let mut pair = connected(10, 60, 0);
    for seq in 0..200 {
        pair.client_send(&to_server(seq)).unwrap();
        assert!(pair.server_send(&to_client(seq)));
    }
    pair.run_for(ms(100));
    assert_eq!(pair.server_rx, (0..200).map(to_server).collect::<Vec<_>>());
    assert_eq!(pair.client_rx, (0..200).map(to_client).collect::<Vec<_>>());
    let s = pair.client_stats();
    assert_eq!((s.rx_packets, s.rx_dropped()), (200, 0));
    assert_eq!(pair.server.counters.drops(), 0);
}

#[test]
fn outbound_packets_are_checked_before_sealing() {
    let mut pair = Pair::default_pair();
    // Not connected yet: nothing to seal with.
    assert_eq!(pair.client_send(&to_server(1)), Err(Refused::NoSession));
    assert!(pair.connect(secs(1)));
    let mut v6 = to_server(2);
    v6[0] = 0x60;
    assert_eq!(pair.client_send(&v6), Err(Refused::NotIpv4));
    let huge = ipv4_packet(CLIENT_ADDR, SERVER_ADDR, 3, 70_000);
    assert_eq!(pair.client_send(&huge), Err(Refused::TooLarge));
    // And inbound: only packets for our inner address come out.
    let elsewhere = ipv4_packet(SERVER_ADDR, std::net::Ipv4Addr::new(198, 18, 0, 9), 4, 60);
    // The server routes by destination, so this one it would not even send;
    // a misrouted packet can only come from a confused server.
    assert!(!pair.server_send(&elsewhere));
    let s = pair.client_stats();
    assert_eq!(
        (
            s.tx_dropped_no_session,
            s.tx_dropped_not_ipv4,
            s.tx_dropped_too_large
        ),
        (1, 1, 1)
    );
}

#[test]
fn a_lost_initiation_is_sent_again_after_the_retry_interval() {
    let mut pair = Pair::default_pair();
    pair.to_server.drop_if = Some(first_of(FrameType::HandshakeInit, 2));
    assert!(pair.connect(secs(5)));
    assert_eq!(
        pair.sent_at(FrameType::HandshakeInit),
        [ms(0), secs(1), secs(2)]
    );
    assert_eq!(pair.elapsed(), secs(2) + ms(20));
    assert_eq!(pair.server.counters.handshakes, 1);
}

#[test]
fn a_lost_response_is_answered_by_the_next_initiation() {
    let mut pair = Pair::default_pair();
    pair.to_client.drop_if = Some(first_of(FrameType::HandshakeResp, 1));
    assert!(pair.connect(secs(5)));
    assert_eq!(pair.elapsed(), secs(1) + ms(20));
    // The server answered both (the second initiation is newer) and keeps the
    // client's one current session; traffic uses it.
    assert_eq!(pair.server.counters.handshakes, 2);
    assert_eq!(pair.server.len(), 1);
    pair.client_send(&to_server(1)).unwrap();
    assert!(pair.server_send(&to_client(1)));
    pair.run_for(ms(50));
    assert_eq!((pair.server_rx.len(), pair.client_rx.len()), (1, 1));
}

#[test]
fn an_unanswered_connect_ends_at_its_deadline_as_unreachable() {
    let mut pair = Pair::default_pair();
    pair.to_server.blackhole = true;
    pair.run_for(secs(15));
    assert_eq!(
        pair.event_list(),
        [Event::ConnectFailed(ConnectFailure::Unreachable {
            waited: secs(10),
            attempts: 10,
            last_error: None
        })]
    );
    assert_eq!(pair.event_at(|_| true), Some(secs(10)));
    assert!(pair.client.is_closed());
    assert_eq!(pair.client.poll_timeout(), None);
}

#[test]
fn a_client_the_server_does_not_list_is_told_so_at_the_deadline() {
    let mut pair = Pair::new(PairConfig {
        settings: settings(&[("someone", other_keys().public, None)], 10, 60, 0),
        ..PairConfig::default()
    });
    pair.run_for(secs(15));
    // Rejects are hints: the client keeps trying until the deadline, then
    // says why nothing came of it.
    assert_eq!(
        pair.event_list(),
        [Event::ConnectFailed(ConnectFailure::NotAuthorised)]
    );
    assert_eq!(pair.event_at(|_| true), Some(secs(10)));
    assert_eq!(pair.count(Dir::ToServer, FrameType::HandshakeInit), 10);
    assert_eq!(pair.client_stats().rx_rejects, 10);
}

#[test]
fn a_wrong_server_key_is_told_so_at_the_deadline() {
    let mut pair = Pair::new(PairConfig {
        keys: ClientKeys {
            secret: client_keys().secret,
            server_public: other_keys().public,
            psk: Some(PSK),
        },
        ..PairConfig::default()
    });
    pair.run_for(secs(15));
    assert_eq!(
        pair.event_list(),
        [Event::ConnectFailed(ConnectFailure::UnknownServerKey)]
    );
    assert_eq!(pair.server.counters.drop_handshake_invalid, 10);
}

#[test]
fn a_forged_reject_does_not_stop_a_genuine_answer() {
    let mut pair = Pair::default_pair();
    // An attacker answers every initiation with a reject before the server can.
    pair.forge_reject = Some(RejectReason::NotAuthorised);
    assert!(pair.connect(secs(1)));
    assert_eq!(pair.elapsed(), ms(20));
    assert_eq!(pair.client_stats().rx_rejects, 1);
}

#[test]
fn forged_responses_do_not_make_the_client_give_up_while_genuine_ones_follow() {
    let mut pair = Pair::default_pair();
    // Three forgeries ahead of every genuine answer.
    pair.forge_responses = 3;
    assert!(pair.connect(secs(1)));
    assert_eq!(pair.elapsed(), ms(20));
    assert_eq!(pair.count(Dir::ToServer, FrameType::HandshakeInit), 1);
    assert_eq!(pair.client_stats().rx_dropped_auth, 3);
}

#[test]
fn forgeries_alone_never_end_the_connect_before_its_deadline() {
    let mut pair = Pair::default_pair();
    pair.forge_responses = 1;
    // The genuine answers never arrive.
    pair.to_client.drop_if = Some(all_of(FrameType::HandshakeResp));
    pair.run_for(secs(15));
    // Anyone on the path can forge a failing response to every initiation: the client keeps
    // trying until its deadline, and only then says what the answers were.
    assert_eq!(
        pair.event_list(),
        [Event::ConnectFailed(ConnectFailure::KeyMismatch)]
    );
    assert_eq!(pair.event_at(|_| true), Some(secs(10)));
    assert_eq!(pair.count(Dir::ToServer, FrameType::HandshakeInit), 10);
}

#[test]
fn a_genuine_answer_after_many_forged_initiations_still_connects() {
    let mut pair = Pair::default_pair();
    pair.forge_responses = 1;
    // Six initiations get only a forgery (their genuine answers are lost); the seventh's
    // genuine answer arrives.
    pair.to_client.drop_if = Some(first_of(FrameType::HandshakeResp, 6));
    assert!(pair.connect(secs(10)));
    assert_eq!(pair.count(Dir::ToServer, FrameType::HandshakeInit), 7);
}

#[test]
fn a_psk_mismatch_is_a_key_mismatch_at_the_deadline() {
    let mut pair = Pair::new(PairConfig {
        keys: ClientKeys {
            secret: client_keys().secret,
            server_public: server_keys().public,
            psk: Some([1u8; 32]),
        },
        ..PairConfig::default()
    });
    pair.run_for(secs(15));
    assert_eq!(
        pair.event_list(),
        [Event::ConnectFailed(ConnectFailure::KeyMismatch)]
    );
    assert_eq!(pair.event_at(|_| true), Some(secs(10)));
    // The server accepted each initiation; the mismatch is the client's to find.
    assert_eq!(pair.server.counters.handshakes, 10);
}

#[test]
fn rtt_comes_from_probe_echoes() {
    let mut pair = Pair::new(PairConfig {
        session: SessionOptions {
            probe_every: Some(secs(1)),
            ..SessionOptions::default()
        },
        ..PairConfig::default()
    });
    pair.latency = ms(15);
    assert!(pair.connect(secs(1)));
    assert_eq!(pair.client_stats().rtt, None);
    pair.run_for(ms(1500));
    // The first probe left at 1 s after connecting, its echo came 30 ms later.
    let s = pair.client_stats();
    assert_eq!(s.rtt, Some(ms(30)));
    assert_eq!(s.srtt, Some(ms(30)));
    assert_eq!(
        s.tx_keepalives, 0,
        "the pair counts no sends; the driver does"
    );
    assert_eq!(pair.count(Dir::ToServer, FrameType::Keepalive), 1);
    pair.latency = ms(55);
    pair.run_for(ms(1000));
    let s = pair.client_stats();
    assert_eq!(s.rtt, Some(ms(110)));
    assert_eq!(s.srtt, Some(ms(30) * 7 / 8 + ms(110) / 8));
}

#[test]
fn probes_follow_the_keepalive_interval_however_busy() {
    let mut pair = connected(10, 60, 0);
    // A packet every 100 ms for 35 s: never idle, still a probe every 10 s.
    for seq in 0..350 {
        pair.client_send(&to_server(seq)).unwrap();
        pair.run_for(ms(100));
    }
    let probes: Vec<Duration> = pair.sent_at(FrameType::Keepalive);
    assert_eq!(
        probes,
        [secs(10) + ms(20), secs(20) + ms(20), secs(30) + ms(20)]
    );
}

#[test]
fn the_session_expires_when_nothing_arrives_for_the_idle_timeout() {
    let mut pair = connected(10, 60, 0);
    let connected_at = pair.elapsed();
    // The server is gone: nothing comes back, whatever the client sends.
    pair.to_client.blackhole = true;
    pair.run_for(secs(120));
    let lost = pair
        .event_at(|e| matches!(e, Event::SessionLost(_)))
        .unwrap();
    assert_eq!(lost, connected_at + secs(60));
    assert_eq!(
        pair.event_list().last(),
        Some(&Event::SessionLost(Lost::ServerSilent(secs(60))))
    );
    // On the way, it tried to re-handshake in place: first at keepalive + 5 s
    // of silence, then after pauses doubling from 1 s.
    let inits = pair.sent_at(FrameType::HandshakeInit);
    let quiet = connected_at + secs(10) + QUIET_REHANDSHAKE;
    assert_eq!(inits[0], ms(0));
    assert_eq!(inits[1..], [0, 1, 3, 7, 15, 31].map(|s| quiet + secs(s)));
    assert!(!pair.client.is_established());
    assert_eq!(pair.client.poll_timeout(), None);
    // A goodbye is still possible (the server may hear it even if we cannot
    // hear the server).
    pair.client.close(pair.now);
    pair.to_client.blackhole = false;
    pair.run_for(ms(50));
    assert_eq!(pair.count(Dir::ToServer, FrameType::Disconnect), 1);
}

#[test]
fn a_restarted_server_is_rejoined_in_place_after_the_quiet_period() {
    let mut pair = connected(10, 60, 0);
    pair.server_echo = true;
    pair.client_send(&to_server(1)).unwrap();
    pair.run_for(secs(1));
    assert_eq!(pair.client_rx.len(), 1);
    let last_heard = pair.client.last_received().unwrap();
    pair.restart_server();
    // Traffic into the void: the new server knows no such session.
    for seq in 2..40 {
        pair.client_send(&to_server(seq)).unwrap();
        pair.run_for(ms(500));
    }
    assert!(pair.server.counters.drop_unknown_session > 0);
    let rekeyed = pair
        .event_at(|e| matches!(e, Event::Rekeyed { .. }))
        .expect("a re-handshake in place");
    // Silence for a keepalive interval plus the quiet period, then one round trip.
    assert_eq!(
        rekeyed,
        (last_heard - pair.start) + secs(10) + QUIET_REHANDSHAKE + ms(20)
    );
    assert!(!pair
        .event_list()
        .iter()
        .any(|e| matches!(e, Event::SessionLost(_))));
    // Traffic resumes over the new session.
    let before = pair.client_rx.len();
    pair.client_send(&to_server(100)).unwrap();
    pair.run_for(ms(50));
    assert_eq!(pair.client_rx.len(), before + 1);
    assert_eq!(pair.server.len(), 1);
}

#[test]
fn rekeys_under_continuous_traffic_lose_nothing() {
    // The server asks for a rekey every 5 s.
    let mut pair = connected(10, 60, 5);
    let mut seq = 0;
    // A packet each way every 10 ms for 60 s of simulated time.
    for _ in 0..6000 {
        pair.client_send(&to_server(seq)).unwrap();
        assert!(pair.server_send(&to_client(seq)));
        seq += 1;
        pair.run_for(ms(10));
    }
    pair.run_for(ms(100));
    let n = rekeys(&pair);
    // Every 5 s plus up to a twentieth of it in jitter.
    assert!((10..=12).contains(&n), "{n} rekeys");
    assert_eq!(
        pair.server_rx.len(),
        seq as usize,
        "lost client-to-server packets"
    );
    assert_eq!(
        pair.client_rx.len(),
        seq as usize,
        "lost server-to-client packets"
    );
    assert_eq!(pair.server_rx, (0..seq).map(to_server).collect::<Vec<_>>());
    assert_eq!(pair.client_rx, (0..seq).map(to_client).collect::<Vec<_>>());
    assert_eq!(pair.client_stats().rx_dropped(), 0);
    assert_eq!(pair.server.counters.drops(), 0);
    assert_eq!(pair.server.len(), 1);
    // Same address throughout.
    assert!(pair.event_list().iter().all(|e| match e {
        Event::Rekeyed { config, .. } | Event::Connected { config, .. } =>
            config.client_addr == CLIENT_ADDR,
        _ => false,
    }));
}

#[test]
fn rekeys_survive_reordering_across_the_switch() {
    let mut pair = connected(10, 60, 5);
    // A fifth of the frames each way arrive 30 ms late (three packet gaps).
    for faults in [&mut pair.to_server, &mut pair.to_client] {
        faults.reorder = 0.2;
        faults.reorder_by = ms(30);
    }
    let mut seq = 0;
    for _ in 0..2000 {
        pair.client_send(&to_server(seq)).unwrap();
        assert!(pair.server_send(&to_client(seq)));
        seq += 1;
        pair.run_for(ms(10));
    }
    pair.run_for(ms(200));
    assert!(rekeys(&pair) >= 3);
    // Out of order, but every one of them (the replay window and the old
    // session's keys take care of stragglers); a delayed handshake response
    // can cost the frames the server sent under the new session before it
    // arrived, and nothing else.
    let mut got = pair.server_rx.clone();
    got.sort();
    let mut want: Vec<_> = (0..seq).map(to_server).collect();
    want.sort();
    assert_eq!(got, want);
    let lost = seq as usize - pair.client_rx.len();
    let s = pair.client_stats();
    assert_eq!(s.rx_dropped_wrong_session as usize, lost, "{s:?}");
    assert!(lost <= 3 * rekeys(&pair), "lost {lost}");
}

#[test]
fn a_lost_rekey_response_is_retried_with_doubling_pauses() {
    let mut pair = Pair::new(PairConfig {
        settings: settings(&[("client", client_keys().public, Some(PSK))], 100, 600, 20),
        ..PairConfig::default()
    });
    assert!(pair.connect(secs(1)));
    // The first three answers to rekeys are lost.
    pair.to_client.drop_if = Some(first_of(FrameType::HandshakeResp, 3));
    pair.run_until(secs(60), |p| rekeys(p) == 1);
    let inits = pair.sent_at(FrameType::HandshakeInit);
    // Connect, then the scheduled rekey at 20 s (+ jitter up to 1 s), then
    // retries 1, 2 and 4 s apart.
    assert_eq!(inits.len(), 5, "{inits:?}");
    let first = inits[1];
    assert!(first >= secs(20) && first <= secs(21) + ms(20), "{first:?}");
    assert_eq!(
        inits[2..],
        [first + secs(1), first + secs(3), first + secs(7)]
    );
    assert_eq!(pair.elapsed(), first + secs(7) + ms(20));
}

#[test]
fn duplicated_and_tampered_frames_are_dropped_and_counted() {
    let mut pair = connected(10, 60, 0);
    pair.to_client.duplicate = 0.5;
    for seq in 0..100 {
        assert!(pair.server_send(&to_client(seq)));
    }
    pair.run_for(ms(50));
    assert_eq!(pair.client_rx, (0..100).map(to_client).collect::<Vec<_>>());
    let replays = pair.client_stats().rx_dropped_replay;
    assert!(replays > 20, "{replays}");

    pair.to_client.duplicate = 0.0;
    pair.to_client.tamper = 1.0;
    for seq in 100..200 {
        assert!(pair.server_send(&to_client(seq)));
    }
    pair.run_for(ms(50));
    // A flipped bit anywhere: the header is authenticated too, so each is
    // refused (by the tag, the session id or the frame checks); none gets in.
    assert_eq!(pair.client_rx.len(), 100);
    assert_eq!(pair.client_stats().rx_dropped() - replays, 100);
}

#[test]
fn lossy_paths_deliver_what_arrives_and_stay_connected() {
    let mut pair = Pair::default_pair();
    for faults in [&mut pair.to_server, &mut pair.to_client] {
        faults.loss = 0.3;
    }
    assert!(pair.connect(secs(10)));
    pair.server_echo = true;
    for seq in 0..1000 {
        pair.client_send(&to_server(seq)).unwrap();
        pair.run_for(ms(50));
    }
    assert!(pair.client.is_established());
    // About half make the round trip; each one that does is intact.
    let n = pair.client_rx.len();
    assert!((300..700).contains(&n), "{n}");
    for p in &pair.client_rx {
        let seq = u32::from_be_bytes(p[20..24].try_into().unwrap());
        assert_eq!(*p, echoed(to_server(seq)));
    }
}

#[test]
fn a_server_disconnect_ends_the_session() {
    let mut pair = connected(10, 60, 0);
    let now = pair.now;
    let mut frames = Vec::new();
    pair.server.disconnect_all(now, |o| {
        if let ringway_server::sessions::TimerOutput::Send(_, b) = o {
            frames.push(b.to_vec());
        }
    });
    for f in frames {
        pair.inject(Dir::ToClient, f, ms(10));
    }
    pair.run_for(ms(20));
    assert_eq!(
        pair.event_list().last(),
        Some(&Event::SessionLost(Lost::ServerClosed))
    );
    assert!(pair.client.is_closed());
    // The server closed it: no goodbye back.
    pair.client.close(pair.now);
    pair.run_for(ms(20));
    assert_eq!(pair.count(Dir::ToServer, FrameType::Disconnect), 0);
}

#[test]
fn closing_tells_the_server() {
    let mut pair = connected(10, 60, 0);
    pair.client.close(pair.now);
    pair.run_for(ms(20));
    assert_eq!(pair.server.counters.sessions_disconnected, 1);
    assert!(pair.server.is_empty());
    assert!(pair.client.is_closed());
    assert_eq!(pair.client_send(&to_server(1)), Err(Refused::NoSession));
}

#[test]
fn a_path_change_sends_a_probe_at_once() {
    let mut pair = connected(10, 60, 0);
    pair.run_for(secs(3));
    assert_eq!(pair.count(Dir::ToServer, FrameType::Keepalive), 0);
    pair.client.handle_path_change(pair.now);
    pair.run_for(ms(50));
    assert_eq!(pair.sent_at(FrameType::Keepalive), [ms(20) + secs(3)]);
    assert_eq!(pair.client_stats().rtt, Some(ms(20)));
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut pair = Pair::new(PairConfig {
            seed,
            settings: settings(&[("client", client_keys().public, Some(PSK))], 10, 60, 5),
            ..PairConfig::default()
        });
        pair.to_client.loss = 0.1;
        pair.to_server.loss = 0.1;
        pair.connect(secs(10));
        for seq in 0..300 {
            let _ = pair.client_send(&to_server(seq));
            pair.run_for(ms(50));
        }
        (pair.log.clone(), pair.event_list())
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7).0, run(8).0);
}
