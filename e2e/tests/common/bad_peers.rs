//! Misbehaving TCP peers against a server that also serves a good TCP client.
//!
//! A [`Misbehaviour`] says what the bad connections send, by when the server must have ended
//! them and for which reason; [`run`] opens them from the client namespace next to the good
//! client, checks that the good client keeps working while they are open and after they are
//! gone, and only then judges how each connection ended (FIN, RST or another error, each
//! reported as such) and the server's counters, which say *why* it closed them: garbage,
//! the handshake deadline, the connection cap. "At once" is judged by that reason, not by a
//! stopwatch, which a loaded machine would make flaky; time is bounded only by the server's
//! own deadline plus slack. The server's final counters are quoted in every failure.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use ringway_e2e::counters::ServerCounters;
use ringway_e2e::rawtcp::{self, CloseTimes, Closed, RawConn};
use ringway_e2e::TestbedOptions;

use super::{start, SHORT_TRANSFER_BYTES};

/// The handshake deadline the server gets in these tests (`--tcp-handshake-timeout-secs`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// The server's default `tcp.max_connections_per_source`.
const DEFAULT_PER_SOURCE: usize = 32;
/// What ending a connection may take beyond the handshake deadline: the server's timer
/// resolution, our 20 ms polling and a loaded CI machine.
pub const DEADLINE_SLACK: Duration = Duration::from_secs(4);
/// How long after the limit we keep watching, so a late close is reported with its time.
const WATCH_EXTRA: Duration = Duration::from_secs(2);
/// Bound for opening all bad connections.
const OPEN_LIMIT: Duration = Duration::from_secs(20);
/// Seed of the garbage stream (fixed, so failures reproduce).
const GARBAGE_SEED: u64 = 0x6261_645f_7065_6572;
/// A handshake initiation's length (`ringway_proto::wire::handshake::INIT_LEN`) and type byte.
const INIT_LEN: u16 = 152;
const INIT_TYPE: u8 = 1;

/// What the bad connections do and what the server must do about them.
#[derive(Debug, Clone)]
pub struct Misbehaviour {
    /// For messages.
    pub what: String,
    /// How many connections to open.
    pub connections: usize,
    /// Bytes each connection sends right after connecting (then it stays silent).
    pub payload: Vec<u8>,
    /// Extra `ringway-server run` arguments besides the handshake timeout.
    pub server_args: Vec<String>,
    /// Every connection must have ended within this of being opened: the handshake deadline
    /// plus slack, the latest any bad connection may live.
    pub closed_within: Duration,
    /// No admitted connection may be closed sooner than this: the handshake deadline is a
    /// deadline, not a refusal, and a server that closed every connection at once would pass
    /// the upper bound.
    pub not_before: Option<Duration>,
    /// How many connections the server admits (the rest it refuses at accept, at once):
    /// these must all live until `not_before`.
    pub admitted: usize,
    /// The server's counters that must read exactly these values once it has stopped: why it
    /// closed the connections.
    pub reasons: Vec<(&'static str, u64)>,
}

impl Misbehaviour {
    fn new(what: impl Into<String>, connections: usize, payload: Vec<u8>) -> Self {
        Self {
            what: what.into(),
            connections,
            payload,
            server_args: Vec::new(),
            closed_within: HANDSHAKE_TIMEOUT + DEADLINE_SLACK,
            not_before: None,
            admitted: connections,
            reasons: vec![("tcp_closed_handshake_timeout", connections as u64)],
        }
    }

    /// One connection sending 4 KiB of random bytes: not a frame, so closed as garbage as soon
    /// as it is read, not left to the handshake deadline.
    pub fn garbage() -> Self {
        let mut bytes = vec![0u8; 4096];
        StdRng::seed_from_u64(GARBAGE_SEED).fill_bytes(&mut bytes);
        Self {
            reasons: vec![
                ("tcp_closed_garbage", 1),
                ("tcp_closed_handshake_timeout", 0),
            ],
            ..Self::new("4 KiB of random bytes", 1, bytes)
        }
    }

    /// One connection sending a valid length prefix and the first 10 bytes of a handshake
    /// initiation, then nothing: only the handshake deadline can end it.
    pub fn stalled_frame() -> Self {
        let mut bytes = INIT_LEN.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[INIT_TYPE, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]);
        Self {
            not_before: Some(HANDSHAKE_TIMEOUT / 2),
            ..Self::new("a handshake prefix and 10 of its 152 bytes", 1, bytes)
        }
    }

    /// One connection that sends nothing.
    pub fn silent() -> Self {
        Self {
            not_before: Some(HANDSHAKE_TIMEOUT / 2),
            ..Self::new("a silent connection", 1, Vec::new())
        }
    }

    /// `n` connections that send nothing, from the good client's address: the server's
    /// default per-address share (`tcp.max_connections_per_source`, 32) admits 31 beside the
    /// good client's, closed at the handshake deadline; the rest are refused at accept.
    pub fn idle_flood(n: usize) -> Self {
        let admitted = (DEFAULT_PER_SOURCE - 1).min(n);
        Self {
            not_before: Some(HANDSHAKE_TIMEOUT / 2),
            admitted,
            reasons: vec![
                ("tcp_refused_per_source", (n - admitted) as u64),
                ("tcp_closed_handshake_timeout", admitted as u64),
            ],
            ..Self::new(format!("{n} idle connections"), n, Vec::new())
        }
    }

    /// `n` idle connections against `--max-tcp-connections limit`. The good client holds one
    /// of the `limit` places, so `limit - 1` bad ones are admitted (and closed at the handshake
    /// deadline) and the other `n + 1 - limit` are refused at accept.
    pub fn over_limit(limit: usize, n: usize) -> Self {
        let admitted = limit.saturating_sub(1).min(n);
        Self {
            server_args: vec!["--max-tcp-connections".into(), limit.to_string()],
            reasons: vec![
                ("tcp_refused", (n - admitted) as u64),
                ("tcp_closed_handshake_timeout", admitted as u64),
            ],
            ..Self::new(
                format!("{n} idle connections with at most {limit} allowed"),
                n,
                Vec::new(),
            )
        }
    }
}

/// Starts a TCP testbed with the short handshake deadline, checks the good client, opens the
/// bad connections, pings through the good client while they are open, waits for the server
/// to close them, then pings and moves 16 MiB through the good client again.
pub fn run(test: &str, bad: &Misbehaviour) -> Result<()> {
    let opts = TestbedOptions::tcp()
        .server_args([
            "--tcp-handshake-timeout-secs".to_owned(),
            HANDSHAKE_TIMEOUT.as_secs().to_string(),
        ])
        .server_args(bad.server_args.iter().cloned());
    let mut bed = start(opts)?;
    bed.ping(3).context("good client before the bad peers")?;

    let mut conns = rawtcp::connect_many(
        bed.client_ns(),
        bed.server_endpoint(),
        bad.connections,
        OPEN_LIMIT,
    )
    .with_context(|| format!("opening {}", bad.what))?;
    for c in &mut conns {
        send_ignoring_reset(c, &bad.payload)?;
    }
    let watch = bad.closed_within + WATCH_EXTRA;
    let (times, during) = std::thread::scope(|s| {
        let watcher = s.spawn(|| rawtcp::wait_closed(&mut conns, watch));
        let during = bed.ping(5);
        let times = watcher
            .join()
            .unwrap_or_else(|_| bail!("close watcher panicked"));
        (times, during)
    });
    let during = during.context("good client while the bad peers were connected");
    let times = times?;
    let summary = CloseTimes::from_times(&times);
    println!("{test}: {}: {summary}", bad.what);
    drop(conns);

    let after = bed
        .ping(3)
        .and_then(|_| bed.transfer_sha256(SHORT_TRANSFER_BYTES))
        .context("good client after the bad peers");
    if let Ok(report) = &after {
        println!(
            "{test}: good client moved {} bytes in {:?} afterwards",
            report.bytes, report.elapsed
        );
    }

    // Counters are logged on shutdown; stopping here gets them for every message below.
    let stop = bed.stop_server(Duration::from_secs(5));
    let line = bed
        .server_counters()
        .unwrap_or_else(|| "(server logged no counters)".to_owned());
    println!("{test}: {line}");
    let counters = ServerCounters::parse(&line);
    // The cause first, then the counters, as the testbed does with log tails.
    let with_counters = |e: anyhow::Error| anyhow!("{e:#}\n--- server's final log line: {line}");

    during.map_err(with_counters)?;
    after.map_err(with_counters)?;
    stop.map_err(with_counters)?;
    judge(bad, &times, &summary, &counters).map_err(with_counters)?;
    Ok(())
}

/// Sends `payload`; a reset or broken pipe means the server already closed, which the close
/// watch then sees, so it is not an error here.
fn send_ignoring_reset(conn: &mut RawConn, payload: &[u8]) -> Result<()> {
    if payload.is_empty() {
        return Ok(());
    }
    match conn.send(payload) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e).context("sending the bad bytes"),
    }
}

/// Checks how and when the connections ended, and why the server says it ended them.
fn judge(
    bad: &Misbehaviour,
    times: &[Option<Closed>],
    summary: &CloseTimes,
    counters: &ServerCounters,
) -> Result<()> {
    let what = &bad.what;
    if !summary.all_closed() {
        bail!(
            "{what}: {summary}; {} still open {:?} after opening (limit {:?})",
            summary.total - summary.closed,
            bad.closed_within + WATCH_EXTRA,
            bad.closed_within
        );
    }
    if let Some(c) = CloseTimes::first_error(times) {
        bail!(
            "{what}: {summary}; a connection {} {:.2?} after opening, which is not the server \
             closing or resetting it",
            c.how,
            c.after
        );
    }
    if let Some(last) = summary.last.filter(|t| *t > bad.closed_within) {
        bail!(
            "{what}: {summary}; the last one ended {last:.2?} after opening, limit {:?}",
            bad.closed_within
        );
    }
    if let Some(min) = bad.not_before {
        let lasted = times.iter().flatten().filter(|c| c.after >= min).count();
        if lasted < bad.admitted {
            bail!(
                "{what}: {summary}; only {lasted} of the {} admitted lasted {min:?}, before \
                 the {:?} handshake deadline nothing admitted may end",
                bad.admitted,
                HANDSHAKE_TIMEOUT
            );
        }
    }
    let wrong: Vec<String> = bad
        .reasons
        .iter()
        .filter(|(name, want)| counters.get(name) != Some(*want))
        .map(|(name, want)| format!("{name} is {:?}, want {want}", counters.get(name)))
        .collect();
    if !wrong.is_empty() {
        bail!(
            "{what}: {summary}; but the server's reasons are not as expected: {}",
            wrong.join(", ")
        );
    }
    Ok(())
}
