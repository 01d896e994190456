//! End-to-end tests of what the `ringway` client does on its own: reconnecting when the server
//! restarts (and saying so in `ringway status` and its `--stats` lines), cleaning up every
//! route and address it added when stopped (split tunnel with a configured route, and
//! `--full-tunnel`; on SIGTERM, SIGINT and after an error), and keeping the route to the server
//! outside the tunnel in full-tunnel mode, also while it reconnects.
//!
//! Each test compares the client namespace before the client started with after it stopped
//! ([`NetState`]); the clients use the testbed's status sockets, never the host's /run.
//!
//! Same prerequisites and rules as `udp_tunnel.rs`: root, `ip`, `ping` and the release
//! binaries; SKIPPED without them unless `CI` is set; one testbed at a time.

mod common;

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use ringway_e2e::harness::{self, Scenario};
use ringway_e2e::netstate::{self, NetState};
use ringway_e2e::ping::Reply;
use ringway_e2e::snmp::Snmp;
use ringway_e2e::testbed::TUN_NAME;
use ringway_e2e::{
    ClientHandle, ClientOptions, Signal, Testbed, TestbedOptions, Transport, SERVER_TUNNEL_IP,
};

/// Traffic must flow again within this long of the server being back: the client's longest
/// pause between reconnect attempts (the 15 s backoff cap plus 20 % jitter), one initiation
/// retry interval (1 s), and slack for a loaded machine.
const RESUME_LIMIT: Duration = Duration::from_secs(30);
/// Attempts the client must have made against the stopped server before it starts again, so
/// that the restart meets a client in the middle of reconnecting.
const REFUSED_ATTEMPTS: i64 = 2;
/// Bound for the client to notice the server left (its Disconnect arrives at once) and for
/// [`REFUSED_ATTEMPTS`] attempts (one initiation a second over UDP; over TCP a refused
/// connect, then a pause from 1 s up).
const NOTICE_LIMIT: Duration = Duration::from_secs(30);
/// Interval of the background ping that watches a restart.
const STREAM_INTERVAL: Duration = Duration::from_millis(200);
/// Bytes of the transfer that proves the resumed tunnel carries data intact.
const TRANSFER_BYTES: u64 = 16 << 20;
/// The client's outside interface, and the server's outside address through it.
const CLIENT_VETH: &str = "veth-rw-c";
const SERVER_OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Addresses that only a full tunnel sends into the TUN: one in TEST-NET-3 and one in the
/// pool that no client has.
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const POOL_OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 77);
/// A split-tunnel route from the config's `routes` key.
const EXTRA_ROUTE: &str = "203.0.113.0/24";
/// `ringway up`'s exit status when the session is lost with `--no-reconnect`.
const SESSION_LOST: i32 = 8;
/// How long a client may take to notice a failure and exit.
const ERROR_EXIT_LIMIT: Duration = Duration::from_secs(10);
/// How long the client may take to put its routes in place once its TUN is up (it does so
/// at once; the bound is for a loaded machine).
const ROUTES_LIMIT: Duration = Duration::from_secs(10);
/// Bound for the background ping's first replies (one every 200 ms) before the restart.
const FIRST_REPLIES_LIMIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    harness::main([
        Scenario::testbed("udp_server_restart_traffic_resumes", &["ping"], |t| {
            server_restart(t, Transport::Udp)
        }),
        Scenario::testbed("tcp_server_restart_traffic_resumes", &["ping"], |t| {
            server_restart(t, Transport::Tcp)
        }),
        Scenario::testbed(
            "sigterm_removes_tun_routes_and_addresses",
            &["ping"],
            split_tunnel_cleanup,
        ),
        Scenario::testbed("udp_full_tunnel_keeps_outside_route", &["ping"], |t| {
            full_tunnel(t, Transport::Udp, Signal::Term)
        }),
        // SIGINT here, SIGTERM over UDP: both must clean up.
        Scenario::testbed("tcp_full_tunnel_keeps_outside_route", &["ping"], |t| {
            full_tunnel(t, Transport::Tcp, Signal::Int)
        }),
        Scenario::testbed(
            "full_tunnel_cleans_up_when_the_session_is_lost",
            &["ping"],
            |t| full_tunnel_error(t, Breakage::ServerGone),
        ),
        Scenario::testbed(
            "full_tunnel_client_exits_when_its_tun_is_deleted",
            &["ping"],
            |t| full_tunnel_error(t, Breakage::TunDeleted),
        ),
    ])
}

/// How [`full_tunnel_error`] makes a running client fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breakage {
    /// `--no-reconnect`, then the server stops: the session is lost (exit status 8).
    ServerGone,
    /// The TUN device is deleted under the client (`ip link del`): reading it fails.
    TunDeleted,
}

/// The server restarts under a running client; a background ping watches the gap. The server
/// comes back once the client reports it is reconnecting and the kernel has refused
/// [`REFUSED_ATTEMPTS`] of its attempts. The client must keep its TUN (same device, same
/// address), reconnect by itself within [`RESUME_LIMIT`], carry a SHA-256 checked transfer
/// afterwards, and report the new session and the reconnect in `ringway status`.
fn server_restart(test: &str, transport: Transport) -> Result<()> {
    let started = Instant::now();
    let opts = TestbedOptions::new(transport).client_args(["--stats", "1"]);
    let mut bed = common::start(opts)?;
    let client = bed.primary_client();
    let tun_before = tun_identity(&bed, &client)?;
    bed.ping(2)?;
    let status_before = bed.client_status(&client)?;
    expect_status(&status_before, "connected", 0)?;

    let stream = bed.ping_stream_from(&client, STREAM_INTERVAL, Duration::from_secs(60))?;
    wait_replies(
        &stream,
        |r| r.len() >= 3,
        FIRST_REPLIES_LIMIT,
        "before the restart",
    )?;

    let stopped = bed.stop_server(Duration::from_secs(5))?;
    ensure!(
        stopped.status.success(),
        "server exited with {} on SIGTERM",
        stopped.status
    );
    let down_at = SystemTime::now();
    let res = wait_refused_attempts(&mut bed, &client, transport);
    let refused = bed.explain(res)?;
    println!(
        "{test}: the client is reconnecting; {refused} of its attempts refused after {:?}",
        down_at.elapsed().unwrap_or_default()
    );
    // Still there while the server is away: the client retries, it does not give up.
    if let Some(status) = bed.client().try_status()? {
        bail!(
            "the client exited ({status}) when the server went away; log:\n{}",
            bed.client().log_tail(30)
        );
    }
    ensure!(
        tun_identity(&bed, &client)? == tun_before,
        "the client's TUN changed while the server was away"
    );

    bed.start_server()?;
    let up_at = SystemTime::now();
    let res = wait_replies(
        &stream,
        |r| r.iter().any(|reply| reply.at > up_at),
        RESUME_LIMIT,
        "after the restart",
    );
    bed.explain(res)?;
    let replies = stream.stop()?;
    let before = replies.iter().filter(|r| r.at < down_at).count();
    let first_after = replies
        .iter()
        .find(|r| r.at > up_at)
        .context("no reply after the restart")?;
    let resumed_after = first_after.at.duration_since(up_at).unwrap_or_default();
    let while_down = replies
        .iter()
        .filter(|r| r.at >= down_at && r.at <= up_at)
        .count();
    println!(
        "{test}: {before} replies before the stop, {while_down} while down, first reply after the \
         restart {resumed_after:?} after the server was back (seq {})",
        first_after.seq
    );

    let report = bed.transfer_sha256(TRANSFER_BYTES)?;
    println!(
        "{test}: after the restart {} bytes in {:?}, sha256 {}",
        report.bytes, report.elapsed, report.sha256
    );
    ensure!(
        tun_identity(&bed, &client)? == tun_before,
        "the client's TUN changed across the restart"
    );
    bed.ensure_running()?;

    // `ringway status` tells the story: connected again, over a new session, after a reconnect.
    let status_after = bed.client_status(&client)?;
    println!("{test}: status after the restart: {status_after}");
    expect_status(&status_after, "connected", 1)?;
    ensure!(
        status_after["session_id"] != status_before["session_id"],
        "the session id is still {} after the server restarted",
        status_after["session_id"]
    );
    // `--stats 1` printed live lines all along (to stdout, which shares the client's log).
    let log = ringway_e2e::process::tail(bed.client().log_path(), 400);
    let stats_lines = log
        .lines()
        .filter(|l| l.starts_with("tx ") || l.starts_with("[reconnecting] tx "))
        .count();
    ensure!(
        stats_lines >= 1,
        "only {stats_lines} `--stats` lines in the client's log:\n{}",
        bed.client().log_tail(30)
    );
    println!("{test}: done in {:?}", started.elapsed());
    Ok(())
}

/// A split-tunnel client (with an extra route from its config) started into a clean namespace;
/// after SIGTERM its TUN is gone and the namespace is exactly as before.
fn split_tunnel_cleanup(test: &str) -> Result<()> {
    let started = Instant::now();
    let mut bed = common::start_without_client(TestbedOptions::udp())?;
    let before = NetState::capture(bed.client_ns())?;

    let opts = ClientOptions::new(Transport::Udp, TUN_NAME)
        .without_source_rule()
        .config_line(format!("routes = [\"{EXTRA_ROUTE}\"]"));
    let client = bed.add_client_with(opts)?;
    wait_route_via(&mut bed, ELSEWHERE, TUN_NAME)?;
    let during = NetState::capture(bed.client_ns())?;
    let added = before.changes(&during);
    println!(
        "{test}: the client changed:\n{}",
        netstate::describe(&added)
    );
    ensure!(
        !during.lines_mentioning(TUN_NAME).is_empty(),
        "no trace of {TUN_NAME} while the client runs"
    );
    // Split tunnel: the outside stays outside, only the pool and the configured route go in.
    expect_route(&bed, SERVER_OUTSIDE_IP, CLIENT_VETH)?;
    expect_route(&bed, SERVER_TUNNEL_IP, TUN_NAME)?;
    expect_route(&bed, ELSEWHERE, TUN_NAME)?;
    let outside = Ipv4Addr::new(198, 51, 100, 7);
    let route = netstate::route_get(bed.client_ns(), outside);
    ensure!(
        route.as_ref().map_or(true, |r| r.dev != TUN_NAME),
        "{outside} goes into the TUN in split-tunnel mode: {route:?}"
    );
    bed.ping_from(&client, 3)?;

    stop_and_check_clean(&mut bed, &client, Signal::Term, &before, test)?;
    println!("{test}: done in {:?}", started.elapsed());
    Ok(())
}

/// `--full-tunnel`: the route to the server stays on the veth, everything else goes into the
/// TUN, the tunnel works and survives a server restart, and stopping with `signal` removes
/// every route and address the client added.
fn full_tunnel(test: &str, transport: Transport, signal: Signal) -> Result<()> {
    let started = Instant::now();
    let mut bed = common::start_without_client(TestbedOptions::new(transport))?;
    let before = NetState::capture(bed.client_ns())?;
    let opts = ClientOptions::new(transport, TUN_NAME)
        .args(["--full-tunnel"])
        .without_source_rule();
    let client = bed.add_client_with(opts)?;
    wait_route_via(&mut bed, ELSEWHERE, TUN_NAME)?;
    let during = NetState::capture(bed.client_ns())?;
    println!(
        "{test}: the client changed:\n{}",
        netstate::describe(&before.changes(&during))
    );
    check_full_tunnel_routes(&bed)?;
    bed.ping_from(&client, 3)?;

    // Traffic for elsewhere really enters the TUN (the server has no route for it and drops
    // it inside its own namespace, so nothing leaves the testbed).
    let counters = bed.tun_counters(&client)?;
    let _ = ringway_e2e::process::run(
        bed.client_ns().command("ping").args([
            "-n",
            "-q",
            "-c",
            "1",
            "-W",
            "1",
            &ELSEWHERE.to_string(),
        ]),
        Duration::from_secs(10),
    )?;
    let sent = bed.tun_counters(&client)?.since(&counters);
    ensure!(
        sent.tx_bytes > 0,
        "a ping to {ELSEWHERE} did not enter {TUN_NAME}: {sent:?}"
    );

    // Reconnecting must go around the tunnel, by the host route to the server.
    bed.restart_server(Duration::from_secs(5))?;
    let resumed = bed.wait_for_reply_from(&client, RESUME_LIMIT)?;
    println!("{test}: traffic resumed {resumed:?} after the server restarted");
    check_full_tunnel_routes(&bed)?;

    stop_and_check_clean(&mut bed, &client, signal, &before, test)?;
    println!("{test}: done in {:?}", started.elapsed());
    Ok(())
}

/// A full-tunnel client that fails while running (see [`Breakage`]) exits with an error, its
/// `ringway:` line last, and still takes away everything it added, including what the kernel
/// does not remove with the TUN (the host route to the server).
fn full_tunnel_error(test: &str, breakage: Breakage) -> Result<()> {
    let started = Instant::now();
    let mut bed = common::start_without_client(TestbedOptions::udp())?;
    let before = NetState::capture(bed.client_ns())?;
    let mut opts = ClientOptions::new(Transport::Udp, TUN_NAME)
        .args(["--full-tunnel"])
        .without_source_rule();
    if breakage == Breakage::ServerGone {
        opts = opts.args(["--no-reconnect"]);
    }
    let client = bed.add_client_with(opts)?;
    wait_route_via(&mut bed, ELSEWHERE, TUN_NAME)?;
    check_full_tunnel_routes(&bed)?;
    bed.ping_from(&client, 1)?;

    let (what, want) = match breakage {
        Breakage::ServerGone => {
            bed.stop_server(Duration::from_secs(5))?;
            ("the server stopped", Some(SESSION_LOST))
        }
        Breakage::TunDeleted => {
            bed.client_ns().ip(&["link", "del", TUN_NAME])?;
            ("its TUN was deleted", None)
        }
    };
    let process = bed.client_process(&client)?;
    let Some(status) = process.wait_timeout(ERROR_EXIT_LIMIT)? else {
        bail!(
            "the client still runs {ERROR_EXIT_LIMIT:?} after {what}; log:\n{}",
            process.log_tail(30)
        );
    };
    let tail = process.log_tail(5);
    println!("{test}: the client exited {status} after {what}; last lines:\n{tail}");
    match want {
        Some(code) => ensure!(
            status.code() == Some(code),
            "the client exited {status} after {what}, want status {code}"
        ),
        None => ensure!(
            !status.success(),
            "the client exited successfully after {what}"
        ),
    }
    let last = tail.lines().last().unwrap_or_default();
    ensure!(
        last.starts_with("ringway: "),
        "the client's last line is not its `ringway:` error line: {last:?}"
    );
    expect_clean(&bed, &before)?;
    println!("{test}: done in {:?}", started.elapsed());
    Ok(())
}

/// Fails unless a `ringway status --json` report has `state` and at least `reconnects`.
fn expect_status(report: &serde_json::Value, state: &str, reconnects: u64) -> Result<()> {
    ensure!(
        report["state"] == state,
        "status says {}, want {state:?}: {report}",
        report["state"]
    );
    let got = report["reconnects"]
        .as_u64()
        .with_context(|| format!("no reconnect count in {report}"))?;
    ensure!(
        got >= reconnects,
        "status counts {got} reconnects, want at least {reconnects}: {report}"
    );
    ensure!(
        report["counters"]["tx_packets"].as_u64().unwrap_or(0) > 0,
        "status counts no packets sent: {report}"
    );
    Ok(())
}

/// The routes `--full-tunnel` promises, as the kernel resolves them.
fn check_full_tunnel_routes(bed: &Testbed) -> Result<()> {
    expect_route(bed, SERVER_OUTSIDE_IP, CLIENT_VETH)?;
    for dst in [
        ELSEWHERE,
        POOL_OTHER,
        SERVER_TUNNEL_IP,
        Ipv4Addr::new(1, 1, 1, 1),
    ] {
        expect_route(bed, dst, TUN_NAME)?;
    }
    let on_tun = bed
        .client_ns()
        .ip(&["-4", "route", "show", "dev", TUN_NAME])?;
    for half in ["0.0.0.0/1", "128.0.0.0/1"] {
        ensure!(
            on_tun.lines().any(|l| l.starts_with(half)),
            "no {half} route on {TUN_NAME}; its routes:\n{on_tun}"
        );
    }
    Ok(())
}

/// Sends `signal` to the client, which must exit 0 within the shutdown limit and leave the
/// namespace as it was in `before`.
fn stop_and_check_clean(
    bed: &mut Testbed,
    client: &ClientHandle,
    signal: Signal,
    before: &NetState,
    test: &str,
) -> Result<()> {
    let process = bed.client_process(client)?;
    process.ensure_running()?;
    let start = Instant::now();
    process.signal(signal)?;
    let Some(status) = process.wait_timeout(common::CLIENT_SHUTDOWN_LIMIT)? else {
        bail!(
            "the client still runs {:?} after {signal:?}; log:\n{}",
            common::CLIENT_SHUTDOWN_LIMIT,
            process.log_tail(30)
        );
    };
    println!(
        "{test}: the client exited {status} {:?} after {signal:?}",
        start.elapsed()
    );
    ensure!(
        status.success(),
        "the client exited {status} after {signal:?}, want 0; log:\n{}",
        process.log_tail(30)
    );
    expect_clean(bed, before)
}

/// The client namespace is as it was before the client started: no TUN, no address, route or
/// rule left.
fn expect_clean(bed: &Testbed, before: &NetState) -> Result<()> {
    ensure!(
        netstate::link_index(bed.client_ns(), TUN_NAME)?.is_none(),
        "{TUN_NAME} still exists after the client exited"
    );
    let after = NetState::capture(bed.client_ns())?;
    let left = before.changes(&after);
    ensure!(
        left.is_empty(),
        "the client left changes behind:\n{}",
        netstate::describe(&left)
    );
    Ok(())
}

/// Fails unless the kernel in the client namespace routes `dst` out of `dev`.
fn expect_route(bed: &Testbed, dst: Ipv4Addr, dev: &str) -> Result<()> {
    let route = netstate::route_get(bed.client_ns(), dst)?;
    ensure!(
        route.dev == dev,
        "{dst} goes via {} ({route:?}), want {dev}; routes:\n{}",
        route.dev,
        bed.client_ns()
            .ip(&["-4", "route", "show", "table", "all"])
            .unwrap_or_default()
    );
    Ok(())
}

/// Waits (bounded) until the client has put its routes in place: `dst` goes via `dev`.
fn wait_route_via(bed: &mut Testbed, dst: Ipv4Addr, dev: &str) -> Result<()> {
    let deadline = Instant::now() + ROUTES_LIMIT;
    loop {
        let route = netstate::route_get(bed.client_ns(), dst);
        if route.as_ref().is_ok_and(|r| r.dev == dev) {
            return Ok(());
        }
        bed.ensure_running()?;
        if Instant::now() >= deadline {
            let e = anyhow::anyhow!(
                "{dst} does not go via {dev} within {ROUTES_LIMIT:?} of the client being up \
                 (now: {route:?})"
            );
            return bed.explain(Err(e));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `ringway status` says the client is reconnecting, then until the kernel has
/// refused [`REFUSED_ATTEMPTS`] of its attempts since (datagrams to the closed port counted in
/// the server's namespace over UDP, failed connects in the client's over TCP; once it is
/// reconnecting the client sends nothing else there). Returns how many were refused.
fn wait_refused_attempts(
    bed: &mut Testbed,
    client: &ClientHandle,
    transport: Transport,
) -> Result<i64> {
    let deadline = Instant::now() + NOTICE_LIMIT;
    loop {
        let status = bed.client_status(client)?;
        if status["state"] == "reconnecting" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the client still says {} {NOTICE_LIMIT:?} after the server stopped: {status}",
            status["state"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ns, counter) = match transport {
        Transport::Udp => (bed.server_ns(), "Udp.NoPorts"),
        Transport::Tcp => (bed.client_ns(), "Tcp.AttemptFails"),
    };
    let before = Snmp::read(ns)?;
    loop {
        let refused = Snmp::read(ns)?.delta(&before, counter);
        if refused >= REFUSED_ATTEMPTS {
            return Ok(refused);
        }
        ensure!(
            Instant::now() < deadline,
            "only {refused} attempts of the client refused ({counter} in {}) within \
             {NOTICE_LIMIT:?} of the server stopping",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls the background ping's replies until `done` holds, for at most `limit`.
fn wait_replies(
    stream: &ringway_e2e::PingStream,
    done: impl Fn(&[Reply]) -> bool,
    limit: Duration,
    when: &str,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if done(&stream.replies()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "no echo replies {when} within {limit:?}; the ping's last lines:\n{}",
                stream.log_tail(10)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The TUN device of `client` as (interface index, address): both stay the same while the
/// client keeps its TUN across a reconnect.
fn tun_identity(bed: &Testbed, client: &ClientHandle) -> Result<(u64, String)> {
    let index = netstate::link_index(bed.client_ns(), client.tun_name())?
        .with_context(|| format!("{} does not exist", client.tun_name()))?;
    let addr = bed
        .client_ns()
        .ip(&["-4", "-o", "addr", "show", "dev", client.tun_name()])?;
    let inet = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok((index, inet))
}
