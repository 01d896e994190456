//! The driver: moves packets between the inside and the tunnel, and keeps
//! doing so across sessions.
//!
//! ```text
//!            outbound task                              inbound task
//!  inside ── read ─▶ seal in place ─▶ send     recv ─▶ open in place ─▶ write ── inside
//!            keepalive/probe when idle            idle timeout when nothing received
//!            rekey when due, path check           rekey answers, probe echoes
//! ```
//!
//! One task per direction, each owning its half of the inside for the
//! driver's whole life and, while a session is attached, its half of the
//! session; one buffer per task is reused for every packet (the outbound
//! task's, with [`HEADROOM`] in front of the packet; the inbound one inside
//! the receiver). Neither knows the transport: over TCP a backed-up
//! connection makes the outbound send wait, and with it the next read from
//! the inside, which is all the flow control a client needs.
//!
//! A [`Driver`] starts with no session; [`Driver::attach`] hands it one (a
//! fresh [`Tunnel`]), and when that session ends the tasks drop their halves
//! and report it ([`DriverEvent::SessionEnded`]), then wait for the next
//! attach. Meanwhile the inside stays open: packets read from it are counted
//! and dropped, so a TUN keeps its address and routes while the
//! [`supervisor`](crate::supervisor) reconnects. A rekey needs no attach: the
//! session's halves swap keys in place ([`DriverEvent::Rekeyed`]).
//! [`run`] is the simple case: one session, until it ends or `shutdown`.
//!
//! The outbound task's timer is lazy: when it fires it looks at when the last
//! frame actually went out (or came in) and either acts or re-arms for the new
//! due time, so the per-packet path never touches a timer. It covers:
//!
//! - keepalives, each carrying an RTT probe, after a keepalive interval
//!   without sending, and a probe at least every [`DriverOptions::probe_every`];
//! - the rekey the server asked for (`rekey_after`, plus a little jitter),
//!   retried with a doubling pause until it completes;
//! - a re-handshake in place when nothing at all has arrived for a keepalive
//!   interval plus [`QUIET_REHANDSHAKE`]: a live server answers our probes
//!   within a keepalive interval, so silence means it restarted (and forgot
//!   the session) or the path broke; a restarted server answers the fresh
//!   initiation and traffic resumes without waiting out the idle timeout;
//! - a check every [`PATH_CHECK_EVERY`] that our local address still exists
//!   (roaming: over UDP a fresh socket and a probe; over TCP the session is lost).
//!
//! All times come from tokio's clock ([`crate::now`]), so tests can pause it.

use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_proto::wire::transport::TAG_LEN;
use ringway_proto::SessionConfig;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{sleep_until, timeout};

use crate::backoff::Rng;
use crate::inside::{Inside, InsideReader, InsideWriter};
use crate::ip;
use crate::outside::{
    Event, RecvError, SendError, Tunnel, TunnelReceiver, TunnelSender, HEADROOM, SEND_BUF_LEN,
};
use crate::stats::{inc, Stats};

/// How long the outbound task gets to send its disconnect when stopping.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// With nothing received for a keepalive interval plus this, re-handshake in
/// place (see the module doc).
pub const QUIET_REHANDSHAKE: Duration = Duration::from_secs(5);

/// How often the outbound task checks that our local address still exists.
pub const PATH_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The longest pause between a rekey's initiations.
const REKEY_RETRY_MAX: Duration = Duration::from_secs(30);

/// The most a scheduled rekey is put off by jitter.
const REKEY_JITTER_MAX: Duration = Duration::from_secs(30);

/// Why a session (or the driver) stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Nothing authenticated arrived for the session's idle timeout.
    #[error("server stopped responding: nothing received for {0:?}")]
    ServerStoppedResponding(Duration),
    /// The server sent a disconnect.
    #[error("the server closed the session")]
    ServerClosed,
    /// Reading packets from the inside failed (e.g. the TUN was deleted).
    #[error("reading from the TUN failed: {0}")]
    InsideRead(io::Error),
    /// Writing packets to the inside failed.
    #[error("writing to the TUN failed: {0}")]
    InsideWrite(io::Error),
    /// Sending to the server failed for good.
    #[error(transparent)]
    Send(SendError),
    /// Receiving from the server failed for good (over TCP: the connection
    /// closed or broke).
    #[error(transparent)]
    Recv(RecvError),
    /// A direction's task panicked or was cancelled: a bug.
    #[error("tunnel task failed: {0}")]
    Task(String),
}

impl DriverError {
    /// Whether the session itself ended (as opposed to a local failure): the
    /// server went quiet or said goodbye, or its connection closed or broke.
    pub fn is_session_lost(&self) -> bool {
        match self {
            DriverError::ServerStoppedResponding(_) | DriverError::ServerClosed => true,
            DriverError::Recv(e) => e.is_session_lost(),
            DriverError::Send(e) => e.is_session_lost(),
            _ => false,
        }
    }

    /// Whether the server should be told we are leaving: not when it closed
    /// the session, nor when there is no connection left to tell it on.
    pub fn wants_goodbye(&self) -> bool {
        !matches!(
            self,
            DriverError::ServerClosed
                | DriverError::Send(_)
                | DriverError::Task(_)
                | DriverError::Recv(RecvError::Closed | RecvError::ConnectionLost(_))
        )
    }
}

/// Tunables of the timers.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Send an RTT probe at least this often, busy or not; `None` (and
    /// anything longer) means every keepalive interval.
    pub probe_every: Option<Duration>,
    /// The first pause before a rekey's initiation is sent again; it doubles
    /// up to 30 s.
    pub rekey_retry: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            probe_every: None,
            rekey_retry: Duration::from_secs(1),
        }
    }
}

/// What the driver has to tell its owner.
#[derive(Debug)]
pub enum DriverEvent {
    /// The attached session ended. The driver has let go of it (and told the
    /// server, where that makes sense) and forwards nothing until the next
    /// [`Driver::attach`].
    SessionEnded(DriverError),
    /// The session was rekeyed in place; traffic flows on.
    Rekeyed {
        /// The new session's id.
        session_id: u32,
        /// What the server assigned this time.
        config: SessionConfig,
    },
    /// The inside failed, or a task died: stop the driver.
    Failed(DriverError),
}

/// The two forwarding tasks, with or without a session.
#[derive(Debug)]
pub struct Driver {
    outbound: Option<JoinHandle<()>>,
    inbound: Option<JoinHandle<()>>,
    to_outbound: mpsc::UnboundedSender<OutCommand>,
    to_inbound: mpsc::UnboundedSender<InCommand>,
    reports: mpsc::UnboundedReceiver<Report>,
    generation: u64,
    attached: bool,
    stats: Arc<Stats>,
}

#[derive(Debug)]
enum OutCommand {
    Attach {
        sender: Box<TunnelSender>,
        generation: u64,
    },
    Detach {
        goodbye: bool,
    },
    Stop {
        goodbye: bool,
    },
}

#[derive(Debug)]
enum InCommand {
    Attach {
        receiver: Box<TunnelReceiver>,
        generation: u64,
        config: SessionConfig,
    },
    Detach,
}

/// What a task tells the driver.
#[derive(Debug)]
struct Report {
    generation: u64,
    kind: ReportKind,
}

#[derive(Debug)]
enum ReportKind {
    Ended(DriverError),
    Rekeyed {
        session_id: u32,
        config: SessionConfig,
    },
    InsideFailed(DriverError),
}

impl Driver {
    /// Starts both tasks on `inside`, with no session yet; counters go to `stats`.
    pub fn start<I: Inside>(inside: I, stats: Arc<Stats>, opts: DriverOptions) -> Driver {
        let (reader, writer) = inside.split();
        let (to_outbound, out_rx) = mpsc::unbounded_channel();
        let (to_inbound, in_rx) = mpsc::unbounded_channel();
        let (report_tx, reports) = mpsc::unbounded_channel();
        let outbound = tokio::spawn(outbound(
            reader,
            out_rx,
            report_tx.clone(),
            Arc::clone(&stats),
            opts,
        ));
        let inbound = tokio::spawn(inbound(writer, in_rx, report_tx, Arc::clone(&stats)));
        Driver {
            outbound: Some(outbound),
            inbound: Some(inbound),
            to_outbound,
            to_inbound,
            reports,
            generation: 0,
            attached: false,
            stats,
        }
    }

    /// The counters every attached session counts into.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Whether a session is attached.
    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// Hands the tasks a session (replacing any attached one without a word
    /// to its server); its counters go to the driver's [`Stats`].
    pub fn attach(&mut self, tunnel: Tunnel) {
        self.generation += 1;
        let config = *tunnel.session_config();
        let (sender, receiver) = tunnel.with_stats(Arc::clone(&self.stats)).split();
        // A send fails only once a task is gone, which `next_event` reports.
        let _ = self.to_outbound.send(OutCommand::Attach {
            sender: Box::new(sender),
            generation: self.generation,
        });
        let _ = self.to_inbound.send(InCommand::Attach {
            receiver: Box::new(receiver),
            generation: self.generation,
            config,
        });
        self.attached = true;
    }

    /// Lets go of the session, telling its server if `goodbye`.
    pub fn detach(&mut self, goodbye: bool) {
        let _ = self.to_outbound.send(OutCommand::Detach { goodbye });
        let _ = self.to_inbound.send(InCommand::Detach);
        self.attached = false;
    }

    /// Waits for the next thing worth knowing. A session that ended is
    /// already detached when this returns. Cancel-safe.
    pub async fn next_event(&mut self) -> DriverEvent {
        loop {
            let Driver {
                outbound,
                inbound,
                reports,
                ..
            } = self;
            let report = tokio::select! {
                biased;
                report = reports.recv() => report,
                joined = join_some(outbound) => {
                    match finished(outbound, joined) {
                        Some(e) => return DriverEvent::Failed(e),
                        None => continue,
                    }
                }
                joined = join_some(inbound) => {
                    match finished(inbound, joined) {
                        Some(e) => return DriverEvent::Failed(e),
                        None => continue,
                    }
                }
            };
            let Some(Report { generation, kind }) = report else {
                return DriverEvent::Failed(DriverError::Task("both tasks ended".into()));
            };
            match kind {
                ReportKind::InsideFailed(e) => return DriverEvent::Failed(e),
                _ if generation != self.generation || !self.attached => continue,
                ReportKind::Ended(e) => {
                    self.detach(e.wants_goodbye());
                    return DriverEvent::SessionEnded(e);
                }
                ReportKind::Rekeyed { session_id, config } => {
                    return DriverEvent::Rekeyed { session_id, config }
                }
            }
        }
    }

    /// Stops both tasks, first telling the server we leave if `goodbye` and a
    /// session is attached. When this returns both tasks are gone, so the
    /// inside's halves are dropped and the caller can tear the inside down.
    pub async fn stop(mut self, goodbye: bool) {
        let _ = self.to_outbound.send(OutCommand::Stop { goodbye });
        if let Some(task) = self.inbound.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some(mut task) = self.outbound.take() {
            if timeout(STOP_GRACE, &mut task).await.is_err() {
                tracing::warn!("outbound task did not stop within {STOP_GRACE:?}; aborting it");
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        for task in [self.outbound.take(), self.inbound.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// Waits for a task if there is one; never completes otherwise.
async fn join_some(task: &mut Option<JoinHandle<()>>) -> Result<(), JoinError> {
    match task.as_mut() {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

/// A task finished: forget its handle; a failure if it panicked.
fn finished(
    task: &mut Option<JoinHandle<()>>,
    joined: Result<(), JoinError>,
) -> Option<DriverError> {
    *task = None;
    joined.err().map(|e| DriverError::Task(e.to_string()))
}

/// Forwards packets both ways over one session until `shutdown` completes
/// (then sends the server a disconnect and returns `Ok`) or the session
/// fails. Rekeys the server asks for happen in place.
///
/// Both tasks have finished when this returns, so the inside's halves are
/// dropped and the caller can tear the inside down.
pub async fn run<I: Inside>(
    tunnel: Tunnel,
    inside: I,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DriverError> {
    run_with(tunnel, inside, shutdown, DriverOptions::default()).await
}

/// [`run`] with tunables.
pub async fn run_with<I: Inside>(
    tunnel: Tunnel,
    inside: I,
    shutdown: impl Future<Output = ()>,
    opts: DriverOptions,
) -> Result<(), DriverError> {
    let stats = Arc::clone(tunnel.stats());
    let mut driver = Driver::start(inside, stats, opts);
    driver.attach(tunnel);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                driver.stop(true).await;
                return Ok(());
            }
            event = driver.next_event() => match event {
                DriverEvent::SessionEnded(e) => {
                    // Detached already, with a goodbye where it made sense.
                    driver.stop(false).await;
                    return Err(e);
                }
                DriverEvent::Failed(e) => {
                    let goodbye = e.wants_goodbye();
                    driver.stop(goodbye).await;
                    return Err(e);
                }
                DriverEvent::Rekeyed { .. } => {}
            }
        }
    }
}

/// The outbound task's session and its timers.
#[derive(Debug)]
struct OutSession {
    sender: TunnelSender,
    generation: u64,
    keepalive: Duration,
    probe_every: Duration,
    rekey_retry: Duration,
    /// When the scheduled rekey is due (`None`: the server asked for none).
    rekey_at: Option<Instant>,
    /// The session start `rekey_at` was computed from.
    scheduled_for: Instant,
    last_probe: Instant,
    next_path_check: Instant,
}

impl OutSession {
    fn new(sender: TunnelSender, generation: u64, opts: &DriverOptions, rng: &mut Rng) -> Self {
        let now = crate::now();
        let mut s = OutSession {
            scheduled_for: sender.session_started(),
            sender,
            generation,
            keepalive: Duration::ZERO,
            probe_every: Duration::ZERO,
            rekey_retry: opts.rekey_retry.max(Duration::from_millis(1)),
            rekey_at: None,
            last_probe: now,
            next_path_check: now + PATH_CHECK_EVERY,
        };
        s.schedule(opts.probe_every, rng);
        s
    }

    /// Sets the timers from the current session's config.
    fn schedule(&mut self, probe_every: Option<Duration>, rng: &mut Rng) {
        let config = *self.sender.session_config();
        self.keepalive = config.keepalive().max(Duration::from_millis(1));
        self.probe_every = probe_every.map_or(self.keepalive, |p| {
            p.clamp(Duration::from_millis(1), self.keepalive)
        });
        self.scheduled_for = self.sender.session_started();
        self.rekey_at = config.rekey_after().map(|after| {
            let jitter = rng.up_to((after / 20).min(REKEY_JITTER_MAX));
            self.scheduled_for + after + jitter
        });
    }

    /// The pause before the next initiation of a rekey that sent `n`.
    fn rekey_pause(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(16);
        (self.rekey_retry * (1 << doublings)).min(REKEY_RETRY_MAX)
    }

    /// When the timer should next fire.
    fn due(&self) -> Instant {
        let mut due = (self.sender.last_sent() + self.keepalive)
            .min(self.last_probe + self.probe_every)
            .min(self.next_path_check);
        match self.sender.rekey_in_progress() {
            Some(r) => due = due.min(r.last_sent + self.rekey_pause(r.initiations)),
            None => {
                if let Some(at) = self.rekey_at {
                    due = due.min(at);
                }
                due = due.min(self.quiet_at());
            }
        }
        due
    }

    /// When silence from the server starts to look like it forgot us.
    fn quiet_at(&self) -> Instant {
        self.sender.last_received() + self.keepalive + QUIET_REHANDSHAKE
    }

    /// Does whatever is due at `now`.
    async fn on_timer(
        &mut self,
        now: Instant,
        probe_every: Option<Duration>,
        rng: &mut Rng,
    ) -> Result<(), SendError> {
        self.sender.poll_rekey();
        if self.sender.session_started() != self.scheduled_for {
            self.schedule(probe_every, rng);
        }
        let rekey = match self.sender.rekey_in_progress() {
            Some(r) => (now >= r.last_sent + self.rekey_pause(r.initiations)).then_some("retry"),
            None if self.rekey_at.is_some_and(|at| now >= at) => Some("scheduled"),
            None if now >= self.quiet_at() => Some("server quiet"),
            None => None,
        };
        if let Some(why) = rekey {
            tracing::debug!(
                why,
                session_id = self.sender.session_id(),
                "re-handshaking in place"
            );
            self.sender.start_rekey().await?;
        }
        let mut probe_now = false;
        if now >= self.next_path_check {
            self.next_path_check = now + PATH_CHECK_EVERY;
            // A fresh socket: tell the server where we are now.
            probe_now = self.sender.check_path()?;
        }
        if probe_now
            || now >= self.sender.last_sent() + self.keepalive
            || now >= self.last_probe + self.probe_every
        {
            self.sender.send_keepalive().await?;
            self.last_probe = now;
        }
        Ok(())
    }
}

/// Inside to outside: read a packet into the buffer past the headroom, seal it
/// in place, send it; the timers above. Without a session, packets read are
/// counted and dropped.
async fn outbound<R: InsideReader>(
    mut reader: R,
    mut commands: mpsc::UnboundedReceiver<OutCommand>,
    reports: mpsc::UnboundedSender<Report>,
    stats: Arc<Stats>,
    opts: DriverOptions,
) {
    let mut buf = vec![0u8; SEND_BUF_LEN].into_boxed_slice();
    let packet_end = buf.len() - TAG_LEN;
    let mut rng = Rng::from_entropy();
    let mut session: Option<OutSession> = None;
    let report = |generation, kind| {
        let _ = reports.send(Report { generation, kind });
    };
    let timer = sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(OutCommand::Attach { sender, generation }) => {
                    let s = OutSession::new(*sender, generation, &opts, &mut rng);
                    timer.as_mut().reset(s.due().into());
                    session = Some(s);
                }
                Some(OutCommand::Detach { goodbye }) => {
                    if let Some(mut s) = session.take() {
                        if goodbye {
                            say_goodbye(&mut s.sender).await;
                        }
                    }
                }
                Some(OutCommand::Stop { goodbye }) => {
                    if let (Some(s), true) = (session.as_mut(), goodbye) {
                        say_goodbye(&mut s.sender).await;
                    }
                    return;
                }
                // The driver was dropped without a stop: leave politely.
                None => {
                    if let Some(s) = session.as_mut() {
                        say_goodbye(&mut s.sender).await;
                    }
                    return;
                }
            },
            () = &mut timer, if session.is_some() => {
                let Some(s) = session.as_mut() else { continue };
                match s.on_timer(crate::now(), opts.probe_every, &mut rng).await {
                    Ok(()) => timer.as_mut().reset(s.due().into()),
                    Err(e) => {
                        report(s.generation, ReportKind::Ended(DriverError::Send(e)));
                        session = None;
                    }
                }
            }
            read = reader.read_packet(&mut buf[HEADROOM..packet_end]) => {
                let len = match read {
                    Ok(len) => len,
                    Err(e) => {
                        if let Some(s) = session.as_mut() {
                            say_goodbye(&mut s.sender).await;
                        }
                        report(0, ReportKind::InsideFailed(DriverError::InsideRead(e)));
                        return;
                    }
                };
                if !ip::is_ipv4(&buf[HEADROOM..HEADROOM + len]) {
                    inc(&stats.tx.dropped_not_ipv4);
                    continue;
                }
                let Some(s) = session.as_mut() else {
                    inc(&stats.tx.dropped_no_session);
                    continue;
                };
                if let Err(e) = s.sender.send_packet(&mut buf, len).await {
                    if e.is_fatal() {
                        report(s.generation, ReportKind::Ended(DriverError::Send(e)));
                        session = None;
                    } else {
                        tracing::debug!(error = %e, len, "dropped an outbound packet");
                    }
                }
            }
        }
    }
}

/// Best-effort disconnect on the way out.
async fn say_goodbye(sender: &mut TunnelSender) {
    match sender.send_disconnect().await {
        Ok(()) => tracing::debug!("sent disconnect"),
        Err(e) => tracing::debug!(error = %e, "could not send disconnect"),
    }
}

/// The inbound task's session.
#[derive(Debug)]
struct InSession {
    receiver: TunnelReceiver,
    generation: u64,
    idle_timeout: Duration,
    our_addr: Ipv4Addr,
    warned_reject: bool,
}

impl InSession {
    /// The inbound side of a newly attached session.
    fn attach(receiver: TunnelReceiver, generation: u64, config: &SessionConfig) -> Self {
        InSession {
            receiver,
            generation,
            idle_timeout: config.idle_timeout(),
            our_addr: config.client_addr,
            warned_reject: false,
        }
    }

    /// When the session counts as lost if nothing more arrives.
    fn idle_deadline(&self) -> tokio::time::Instant {
        (self.receiver.last_received() + self.idle_timeout).into()
    }
}

/// What the inbound task does after an event.
enum Next {
    Carry,
    End(DriverError),
    Fail(DriverError),
}

/// Outside to inside: receive a frame, open it in place, write the packet; end
/// the session when the server has been silent for the idle timeout.
async fn inbound<W: InsideWriter>(
    mut writer: W,
    mut commands: mpsc::UnboundedReceiver<InCommand>,
    reports: mpsc::UnboundedSender<Report>,
    stats: Arc<Stats>,
) {
    let mut session: Option<InSession> = None;
    let timer = sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut warned_write = false;
    loop {
        let Some(s) = session.as_mut() else {
            match commands.recv().await {
                Some(InCommand::Attach {
                    receiver,
                    generation,
                    config,
                }) => {
                    let attached = InSession::attach(*receiver, generation, &config);
                    timer.as_mut().reset(attached.idle_deadline());
                    session = Some(attached);
                }
                Some(InCommand::Detach) => {}
                None => return,
            }
            continue;
        };
        let generation = s.generation;
        let next = tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(InCommand::Attach { receiver, generation, config }) => {
                    let attached = InSession::attach(*receiver, generation, &config);
                    timer.as_mut().reset(attached.idle_deadline());
                    session = Some(attached);
                    Next::Carry
                }
                Some(InCommand::Detach) => {
                    session = None;
                    Next::Carry
                }
                None => return,
            },
            () = &mut timer => {
                let due = s.receiver.last_received() + s.idle_timeout;
                if crate::now() >= due {
                    Next::End(DriverError::ServerStoppedResponding(s.idle_timeout))
                } else {
                    timer.as_mut().reset(due.into());
                    Next::Carry
                }
            }
            event = s.receiver.recv() => match event {
                Err(e) => Next::End(DriverError::Recv(e)),
                Ok(Event::Packet(packet)) => {
                    if ip::ipv4_destination(packet) != Some(s.our_addr) {
                        inc(&stats.rx.dropped_not_for_us);
                        Next::Carry
                    } else {
                        match writer.write_packet(packet).await {
                            Ok(()) => Next::Carry,
                            Err(e) if is_transient_write(&e) => {
                                inc(&stats.rx.inside_write_errors);
                                if !std::mem::replace(&mut warned_write, true) {
                                    tracing::warn!(error = %e, "the TUN refused a packet (is it down?); dropping");
                                }
                                Next::Carry
                            }
                            Err(e) => Next::Fail(DriverError::InsideWrite(e)),
                        }
                    }
                }
                Ok(Event::Keepalive | Event::Dropped(_)) => Next::Carry,
                Ok(Event::Disconnected) => Next::End(DriverError::ServerClosed),
                Ok(Event::Rekeyed { session_id, config }) => {
                    tracing::info!(session_id, "rekeyed");
                    s.our_addr = config.client_addr;
                    s.idle_timeout = config.idle_timeout();
                    let _ = reports.send(Report {
                        generation,
                        kind: ReportKind::Rekeyed { session_id, config },
                    });
                    Next::Carry
                }
                Ok(Event::Rejected(reason)) => {
                    if !std::mem::replace(&mut s.warned_reject, true) {
                        tracing::warn!(?reason, "the server refused our rekey; the session carries on until it ends");
                    }
                    Next::Carry
                }
            },
        };
        match next {
            Next::Carry => {}
            Next::End(e) => {
                let _ = reports.send(Report {
                    generation,
                    kind: ReportKind::Ended(e),
                });
                session = None;
            }
            Next::Fail(e) => {
                let _ = reports.send(Report {
                    generation,
                    kind: ReportKind::InsideFailed(e),
                });
                return;
            }
        }
    }
}

/// TUN write errors that concern one packet or the link's current state, not
/// the device: `EIO` while the link is administratively down, `EINVAL` for a
/// packet the kernel will not take.
fn is_transient_write(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    ) || crate::platform::is_eio(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goodbyes_only_where_someone_listens() {
        assert!(DriverError::ServerStoppedResponding(Duration::from_secs(1)).wants_goodbye());
        assert!(!DriverError::ServerClosed.wants_goodbye());
        assert!(!DriverError::Recv(RecvError::Closed).wants_goodbye());
        assert!(DriverError::InsideRead(io::ErrorKind::BrokenPipe.into()).wants_goodbye());
        assert!(
            !DriverError::Send(SendError::ConnectionLost(io::ErrorKind::BrokenPipe.into()))
                .wants_goodbye()
        );
    }
}
