//! The driver: moves packets and time between the inside, the tunnel and its
//! core, and keeps doing so across sessions. It decides nothing about the
//! protocol; the [`core`](crate::core) does.
//!
//! ```text
//!            outbound task                              inbound task
//!  inside ── read ─▶ core.seal_packet ─▶ send   recv ─▶ core.handle_frame ─▶ write ── inside
//!            core timers: handle_timeout,              a consumed frame: read the
//!            poll_transmit ─▶ send; path check         core's events, wake the other task
//! ```
//!
//! One task per direction, each owning its half of the inside for the
//! driver's whole life and, while a session is attached, its half of the
//! tunnel; the halves share the session's core behind a mutex that is held
//! for one batch of seals or opens at a time, never across an await. Buffers
//! are allocated once per task and reused for every packet (the outbound
//! task's, with [`HEADROOM`] in front of the packet; the inbound one inside
//! the receiver). Neither knows the transport: over TCP a backed-up
//! connection makes the outbound send wait, and with it the next read from
//! the inside, which is all the flow control a client needs.
//!
//! With an inside that speaks `virtio_net_hdr` ([`Inside::offloads`]; a TUN
//! with `--offload auto`) both tasks batch, through
//! [`inside::offload`](crate::inside::offload):
//!
//! ```text
//!  outbound: read [hdr][superpacket] ─▶ plain: seal in place, send
//!                                    └▶ split at a stride ─▶ seal all (one lock) ─▶ one GSO send / TCP write
//!  inbound:  recv_batch (GRO, many frames, opened under one lock) ─▶ coalesce ─▶ one write per superpacket;
//!            a packet that joins nothing: a zero header in front of it, written in place
//! ```
//!
//! Without it, one packet per read and per write, as before.
//!
//! A [`Driver`] starts with no session; [`Driver::attach`] hands it one (a
//! fresh [`Tunnel`]), and when that session ends the tasks drop their halves
//! and report it ([`DriverEvent::SessionEnded`]), then wait for the next
//! attach. Meanwhile the inside stays open: packets read from it are counted
//! and dropped, so a TUN keeps its address and routes while the
//! [`supervisor`](crate::supervisor) reconnects. A rekey needs no attach: the
//! core swaps keys in place ([`DriverEvent::Rekeyed`]). [`run`] is the simple
//! case: one session, until it ends or `shutdown`.
//!
//! The outbound task's timer is lazy: it sleeps until the core's
//! [`poll_timeout`](crate::core::Core::poll_timeout) (or the next path
//! check), and the core, asked at that time, either acts or names a later
//! time, so the per-packet path never touches a timer. The one decision that
//! needs I/O is the path check: every [`PATH_CHECK_EVERY`] the task checks
//! that our local address still exists (roaming: over UDP a fresh socket, and
//! the core sends a probe from it; over TCP the session is lost).
//!
//! All times come from tokio's clock ([`crate::now`]), so tests can pause it.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_offload::{Output, VNET_HDR_LEN};
use ringway_proto::wire::transport::{MAX_FRAME_LEN, TAG_LEN};
use ringway_proto::SessionConfig;
use tokio::sync::{mpsc, Notify};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{sleep_until, timeout};

use crate::backlog::{InBacklog, OutBacklog, QueueOptions, DRAIN_BURST};
use crate::core::{Event, Lost, Refused};
use crate::inside::offload::{lone_packet, Gro, Outbound, Segmenter};
use crate::inside::{Inside, InsideReader, InsideWriter, Offloads};
use crate::outside::{
    RecvError, SendError, Tunnel, TunnelReceiver, TunnelSender, HEADROOM, MAX_RECV_BATCH,
    SEND_BUF_LEN,
};
use crate::stats::{bump, inc, Stats};

/// Writes the inbound task may owe its receives before writing goes first: receiving
/// first drains the socket (the kernel's FIFO) into the fair queue, but a task that only
/// received would let the queue grow to its limit and drop (measured: four bulk streams
/// lost 1 % of their packets that way). 32 items are about 2 MiB of superpackets.
const WRITES_OWED_HIGH: usize = 32;

/// How long the outbound task gets to send its disconnect when stopping.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How often the outbound task checks that our local address still exists.
pub const PATH_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Why a session (or the driver) stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Nothing authenticated arrived for the session's idle timeout.
    #[error("server stopped responding: nothing received for {0:?}")]
    ServerStoppedResponding(Duration),
    /// The server sent a disconnect.
    #[error("the server closed the session")]
    ServerClosed,
    /// The session used up its send counter (far beyond any real session's
    /// life): a new one is needed.
    #[error("the session used up its counter")]
    SessionWornOut,
    /// Our side could not go on (no randomness for a rekey).
    #[error("the session failed on our side: {0}")]
    Internal(String),
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

impl From<Lost> for DriverError {
    fn from(lost: Lost) -> Self {
        match lost {
            Lost::ServerSilent(idle) => DriverError::ServerStoppedResponding(idle),
            Lost::ServerClosed => DriverError::ServerClosed,
            Lost::CounterExhausted => DriverError::SessionWornOut,
            Lost::Internal(why) => DriverError::Internal(why),
        }
    }
}

impl DriverError {
    /// Whether the session itself ended (as opposed to a local failure): the
    /// server went quiet or said goodbye, the session wore out, or its
    /// connection closed or broke.
    pub fn is_session_lost(&self) -> bool {
        match self {
            DriverError::ServerStoppedResponding(_)
            | DriverError::ServerClosed
            | DriverError::SessionWornOut => true,
            DriverError::Recv(e) => e.is_session_lost(),
            DriverError::Send(e) => e.is_session_lost(),
            _ => false,
        }
    }

    /// Whether the server should be told we are leaving: not when it closed
    /// the session, nor when there is no connection (or session) left to
    /// tell it on.
    pub fn wants_goodbye(&self) -> bool {
        !matches!(
            self,
            DriverError::ServerClosed
                | DriverError::SessionWornOut
                | DriverError::Send(_)
                | DriverError::Task(_)
                | DriverError::Recv(RecvError::Closed | RecvError::ConnectionLost(_))
        )
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
    /// Starts both tasks on `inside`, with no session yet, each with its fair
    /// queue ([`QueueOptions::default`]); counters go to `stats`.
    pub fn start<I: Inside>(inside: I, stats: Arc<Stats>) -> Driver {
        Self::start_with(inside, stats, Some(QueueOptions::default()))
    }

    /// [`start`](Self::start) with the queues `queue` says (`None`: none, each
    /// read sent and each packet written at once, so waiting happens in the
    /// kernel's FIFOs).
    pub fn start_with<I: Inside>(
        inside: I,
        stats: Arc<Stats>,
        queue: Option<QueueOptions>,
    ) -> Driver {
        let offloads = inside.offloads();
        let (reader, writer) = inside.split();
        let (to_outbound, out_rx) = mpsc::unbounded_channel();
        let (to_inbound, in_rx) = mpsc::unbounded_channel();
        let (report_tx, reports) = mpsc::unbounded_channel();
        // The inbound task wakes the outbound one when a frame changed the
        // core (a rekey completed, an answer arrived), so its timer follows.
        let wake = Arc::new(Notify::new());
        let outbound = tokio::spawn(outbound(
            reader,
            offloads,
            queue.clone(),
            out_rx,
            report_tx.clone(),
            Arc::clone(&stats),
            Arc::clone(&wake),
        ));
        let inbound = tokio::spawn(inbound(
            writer,
            offloads,
            queue,
            in_rx,
            report_tx,
            Arc::clone(&stats),
            wake,
        ));
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
        let (sender, receiver) = tunnel.with_stats(Arc::clone(&self.stats)).split();
        // A send fails only once a task is gone, which `next_event` reports.
        let _ = self.to_outbound.send(OutCommand::Attach {
            sender: Box::new(sender),
            generation: self.generation,
        });
        let _ = self.to_inbound.send(InCommand::Attach {
            receiver: Box::new(receiver),
            generation: self.generation,
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
    let stats = Arc::clone(tunnel.stats());
    let mut driver = Driver::start(inside, stats);
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

/// Turns the core's events into reports for the driver; `false` once the
/// session is over (its end reported).
fn report_events(
    mut next: impl FnMut() -> Option<Event>,
    generation: u64,
    reports: &mpsc::UnboundedSender<Report>,
    warned_reject: &mut bool,
) -> bool {
    let mut alive = true;
    while let Some(event) = next() {
        let kind = match event {
            Event::Rekeyed { session_id, config } => {
                tracing::info!(session_id, "rekeyed");
                ReportKind::Rekeyed { session_id, config }
            }
            Event::SessionLost(lost) => {
                alive = false;
                ReportKind::Ended(lost.into())
            }
            Event::Rejected(reason) => {
                if !std::mem::replace(warned_reject, true) {
                    tracing::warn!(
                        ?reason,
                        "the server refused our rekey; the session carries on until it ends"
                    );
                }
                continue;
            }
            // Connecting is over before a tunnel is attached.
            Event::Connected { .. } | Event::ConnectFailed(_) => continue,
        };
        let _ = reports.send(Report { generation, kind });
    }
    alive
}

/// The outbound task's session.
#[derive(Debug)]
struct OutSession {
    sender: TunnelSender,
    generation: u64,
    next_path_check: Instant,
    warned_reject: bool,
    /// The largest packet the session carries (its MTU): where superpackets are cut.
    mtu: usize,
}

impl OutSession {
    /// When the timer should next fire: the core's next timeout, or the next
    /// path check.
    fn due(&self) -> Instant {
        self.sender
            .poll_timeout()
            .map_or(self.next_path_check, |t| t.min(self.next_path_check))
    }

    /// Does whatever is due at `now`.
    async fn on_timer(&mut self, now: Instant) -> Result<(), SendError> {
        if now >= self.next_path_check {
            self.next_path_check = now + PATH_CHECK_EVERY;
            self.sender.check_path().await?;
        }
        self.sender.handle_timeout().await
    }

    /// Sends what the core owes and reports what it says; `false` once the
    /// session is over.
    async fn settle(&mut self, reports: &mpsc::UnboundedSender<Report>) -> Result<bool, SendError> {
        self.sender.flush().await?;
        if let Some(config) = self.sender.session_config() {
            // A rekey may bring another MTU.
            self.mtu = usize::from(config.mtu);
        }
        let sender = &self.sender;
        Ok(report_events(
            || sender.poll_event(),
            self.generation,
            reports,
            &mut self.warned_reject,
        ))
    }
}

/// Inside to outside: read a packet into the buffer past the headroom, seal it
/// in place, send it; the core's timers. Without a session, packets read are
/// counted and dropped.
///
/// With `offloads.vnet_hdr` each read is `[header][packet]`, landing so that
/// the packet starts at [`HEADROOM`] as a bare read does; a superpacket is cut
/// by the [`Segmenter`] and its packets sealed and sent as one batch.
///
/// With a `queue`, reads go into an [`OutBacklog`] first (alternating with sends
/// while the inside has more, [`DRAIN_BURST`]) and are sealed and sent from there, sparse
/// flows first: the TUN's own FIFO stays short, so a ping never waits behind a
/// bulk upload's backlog.
async fn outbound<R: InsideReader>(
    mut reader: R,
    offloads: Offloads,
    queue: Option<QueueOptions>,
    mut commands: mpsc::UnboundedReceiver<OutCommand>,
    reports: mpsc::UnboundedSender<Report>,
    stats: Arc<Stats>,
    wake: Arc<Notify>,
) {
    let vnet = offloads.vnet_hdr;
    // Bare: as large as one frame's packet. With the header: a 64 KiB superpacket.
    let (mut buf, read_at, read_end) = if vnet {
        let len = HEADROOM + MAX_FRAME_LEN + TAG_LEN;
        (vec![0u8; len], HEADROOM - VNET_HDR_LEN, len - TAG_LEN)
    } else {
        (vec![0u8; SEND_BUF_LEN], HEADROOM, SEND_BUF_LEN - TAG_LEN)
    };
    let mut backlog = queue.and_then(|q| match OutBacklog::new(&q, buf.len(), read_at) {
        Ok(b) => Some(b),
        Err(e) => {
            // Options are validated before the driver starts: a bug if it shows.
            tracing::warn!(error = %e, "outbound queue off");
            None
        }
    });
    let mut reads_in_a_row = 0u32;
    let mut segmenter = vnet.then(Segmenter::new);
    let mut session: Option<OutSession> = None;
    let report = |generation, kind| {
        let _ = reports.send(Report { generation, kind });
    };
    let timer = sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    loop {
        let queued = backlog.as_ref().is_some_and(|b| !b.is_empty()) && session.is_some();
        // What happened to the session in this round, if it needs settling.
        let settled = tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(OutCommand::Attach { sender, generation }) => {
                    let mtu = sender
                        .session_config()
                        .map_or(MAX_FRAME_LEN, |c| usize::from(c.mtu));
                    let s = OutSession {
                        sender: *sender,
                        generation,
                        next_path_check: crate::now() + PATH_CHECK_EVERY,
                        warned_reject: false,
                        mtu,
                    };
                    timer.as_mut().reset(s.due().into());
                    session = Some(s);
                    continue;
                }
                Some(OutCommand::Detach { goodbye }) => {
                    if let Some(b) = backlog.as_mut() {
                        b.clear(&stats);
                    }
                    if let Some(mut s) = session.take() {
                        if goodbye {
                            say_goodbye(&mut s.sender).await;
                        }
                    }
                    continue;
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
            () = wake.notified(), if session.is_some() => {
                let Some(s) = session.as_mut() else { continue };
                s.settle(&reports).await
            }
            () = &mut timer, if session.is_some() => {
                let Some(s) = session.as_mut() else { continue };
                match s.on_timer(crate::now()).await {
                    Ok(()) => s.settle(&reports).await,
                    Err(e) => Err(e),
                }
            }
            // The queue has had its share of reads: send one.
            () = std::future::ready(()), if queued && reads_in_a_row >= DRAIN_BURST => {
                reads_in_a_row = 0;
                match send_queued(&mut backlog, &mut session, &mut segmenter, read_at, &stats, &reports).await {
                    None => continue,
                    Some(settled) => settled,
                }
            }
            read = reader.read_packet(&mut buf[read_at..read_end]), if backlog.as_ref().is_none_or(OutBacklog::can_take) => {
                let n = match read {
                    Ok(n) => n,
                    Err(e) => {
                        if let Some(s) = session.as_mut() {
                            say_goodbye(&mut s.sender).await;
                        }
                        report(0, ReportKind::InsideFailed(DriverError::InsideRead(e)));
                        return;
                    }
                };
                inc(&stats.tx.tun_reads);
                let Some(s) = session.as_mut() else {
                    inc(&stats.tx.tun_packets);
                    inc(&stats.tx.dropped_no_session);
                    continue;
                };
                if let Some(b) = backlog.as_mut() {
                    let packet = HEADROOM..read_at + n;
                    b.push(&mut buf, read_at, n, packet, crate::now(), &stats);
                    reads_in_a_row += 1;
                    continue;
                }
                match send_read(s, &mut buf, n, read_at, segmenter.as_mut(), &stats, &reports).await {
                    None => continue,
                    Some(settled) => settled,
                }
            }
            // Nothing more to read right now: send what waits.
            () = std::future::ready(()), if queued => {
                reads_in_a_row = 0;
                match send_queued(&mut backlog, &mut session, &mut segmenter, read_at, &stats, &reports).await {
                    None => continue,
                    Some(settled) => settled,
                }
            }
        };
        let Some(s) = session.as_mut() else { continue };
        match settled {
            Ok(true) => timer.as_mut().reset(s.due().into()),
            // The end is reported; the driver detaches us.
            Ok(false) => timer.as_mut().reset(s.next_path_check.into()),
            Err(e) => {
                report(s.generation, ReportKind::Ended(DriverError::Send(e)));
                if let Some(b) = backlog.as_mut() {
                    b.clear(&stats);
                }
                session = None;
            }
        }
    }
}

/// Sends the next read the queue gives up (see [`outbound`] and [`send_read`]).
async fn send_queued(
    backlog: &mut Option<OutBacklog>,
    session: &mut Option<OutSession>,
    segmenter: &mut Option<Segmenter>,
    read_at: usize,
    stats: &Stats,
    reports: &mpsc::UnboundedSender<Report>,
) -> Option<Result<bool, SendError>> {
    let (Some(b), Some(s)) = (backlog.as_mut(), session.as_mut()) else {
        return None;
    };
    let popped = b.pop(crate::now(), HEADROOM, stats)?;
    let sent = send_read(
        s,
        b.buf(popped.idx),
        popped.len,
        read_at,
        segmenter.as_mut(),
        stats,
        reports,
    )
    .await;
    b.release(popped.idx);
    sent
}

/// Seals and sends one read of `n` bytes at `buf[read_at..]` (with the
/// segmenter: cut first). Errors about the packet are counted and dropped
/// (`None`: nothing to settle, so the per-packet path touches no timer); when
/// the session ended or failed, what [`OutSession::settle`] says.
async fn send_read(
    s: &mut OutSession,
    buf: &mut [u8],
    n: usize,
    read_at: usize,
    segmenter: Option<&mut Segmenter>,
    stats: &Stats,
    reports: &mpsc::UnboundedSender<Report>,
) -> Option<Result<bool, SendError>> {
    let sent = match segmenter {
        None => {
            inc(&stats.tx.tun_packets);
            s.sender.send_packet(buf, n).await
        }
        Some(segmenter) => {
            let layout = s.sender.segment_layout(s.mtu);
            match segmenter.prepare(&mut buf[read_at..read_at + n], &layout) {
                Ok(Outbound::Ready) => {
                    inc(&stats.tx.tun_packets);
                    s.sender.send_packet(buf, n - VNET_HDR_LEN).await
                }
                Ok(Outbound::Split(segs)) => {
                    bump(&stats.tx.tun_packets, segs.count() as u64);
                    s.sender.send_segments(segmenter.out(), &segs).await
                }
                Err(e) => {
                    inc(&stats.tx.tun_packets);
                    inc(&stats.tx.dropped_offload);
                    if e.is_misuse() {
                        tracing::warn!(error = %e, "cannot segment a read (a bug)");
                    } else {
                        tracing::debug!(error = %e, n, "dropped a read that cannot be segmented");
                    }
                    return None;
                }
            }
        }
    };
    match sent {
        Ok(()) => None,
        // The session ended under us: the core says why.
        Err(SendError::Refused(Refused::NoSession)) => Some(s.settle(reports).await),
        Err(e) if e.is_fatal() => Some(Err(e)),
        Err(e) => {
            tracing::debug!(error = %e, n, "dropped an outbound packet");
            None
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
    warned_reject: bool,
}

/// What the inbound task does after an event.
enum Next {
    Carry,
    End(DriverError),
    Fail(DriverError),
}

/// Outside to inside: receive a batch of frames, let the core open them in
/// place, write the packets (coalesced, with `offloads.vnet_hdr`).
///
/// With a `queue`, opened packets go into an [`InBacklog`] first (up to
/// receives alternate with writes while the socket has more, [`DRAIN_BURST`]) and are written
/// from there in bursts, sparse flows first: the socket's receive buffer, a FIFO,
/// stays short, so a ping's echo never waits behind a bulk download's backlog.
async fn inbound<W: InsideWriter>(
    writer: W,
    offloads: Offloads,
    queue: Option<QueueOptions>,
    mut commands: mpsc::UnboundedReceiver<InCommand>,
    reports: mpsc::UnboundedSender<Report>,
    stats: Arc<Stats>,
    wake: Arc<Notify>,
) {
    let mut out = InsideOut {
        writer,
        gro: crate::inside::offload::gro(&offloads),
        stats,
        warned: false,
    };
    let vnet = out.gro.is_some();
    let mut backlog = queue.and_then(|q| match InBacklog::new(&q, MAX_RECV_BATCH, vnet) {
        Ok(b) => Some(b),
        Err(e) => {
            // Options are validated before the driver starts: a bug if it shows.
            tracing::warn!(error = %e, "inbound queue off");
            None
        }
    });
    let mut recvs_in_a_row = 0u32;
    // Items queued by receives and not yet matched by a write.
    let mut owed = 0usize;
    let mut session: Option<InSession> = None;
    loop {
        let Some(s) = session.as_mut() else {
            match commands.recv().await {
                Some(InCommand::Attach {
                    receiver,
                    generation,
                }) => {
                    session = Some(InSession {
                        receiver: *receiver,
                        generation,
                        warned_reject: false,
                    })
                }
                Some(InCommand::Detach) => {}
                None => return,
            }
            continue;
        };
        let generation = s.generation;
        let queued = backlog.as_ref().is_some_and(|b| !b.is_empty());
        let next = tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(InCommand::Attach { receiver, generation }) => {
                    session = Some(InSession {
                        receiver: *receiver,
                        generation,
                        warned_reject: false,
                    });
                    Next::Carry
                }
                Some(InCommand::Detach) => {
                    if let Some(b) = backlog.as_mut() {
                        b.clear(&out.stats);
                    }
                    session = None;
                    Next::Carry
                }
                None => return,
            },
            // The queue has had its share of receives, or the writes have fallen too far
            // behind them: write.
            () = std::future::ready(()), if queued && (recvs_in_a_row >= DRAIN_BURST || owed >= WRITES_OWED_HIGH) => {
                recvs_in_a_row = 0;
                owed = owed.saturating_sub(1);
                out.write_queued(&mut backlog).await
            }
            received = s.receiver.recv_batch() => match received {
                Err(e) => Next::End(DriverError::Recv(e)),
                Ok(batch) => {
                    let consumed = batch.consumed();
                    let (buf, packets) = batch.into_parts();
                    let written = match backlog.as_mut() {
                        None => out.write_batch(buf, packets).await,
                        Some(b) => {
                            recvs_in_a_row += 1;
                            owed += b.push_batch(out.gro.as_mut(), buf, packets, crate::now(), &out.stats);
                            Ok(())
                        }
                    };
                    match written {
                        Err(e) => Next::Fail(e),
                        Ok(()) if consumed => {
                            let receiver = &s.receiver;
                            let alive = report_events(|| receiver.poll_event(), generation, &reports, &mut s.warned_reject);
                            // The outbound task's timer follows the core's.
                            wake.notify_one();
                            if !alive {
                                // The end is reported; the driver detaches us.
                                session = None;
                            }
                            Next::Carry
                        }
                        Ok(()) => Next::Carry,
                    }
                }
            },
            // Nothing more to receive right now: write what waits.
            () = std::future::ready(()), if queued => {
                recvs_in_a_row = 0;
                owed = owed.saturating_sub(1);
                out.write_queued(&mut backlog).await
            }
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
        if session.is_none() {
            if let Some(b) = backlog.as_mut() {
                b.clear(&out.stats);
            }
        }
    }
}

/// The inbound task's side of the inside: the writer and, with
/// `virtio_net_hdr`, the coalescer.
struct InsideOut<W> {
    writer: W,
    gro: Option<Gro>,
    stats: Arc<Stats>,
    /// A refused write was logged already.
    warned: bool,
}

impl<W: InsideWriter> InsideOut<W> {
    /// Writes the next item the queue gives up: a superpacket or one packet.
    async fn write_queued(&mut self, backlog: &mut Option<InBacklog>) -> Next {
        let Some(b) = backlog.as_mut() else {
            return Next::Carry;
        };
        let Some((idx, segments)) = b.pop(crate::now(), &self.stats) else {
            return Next::Carry;
        };
        let written = write_one(
            &mut self.writer,
            b.bytes(idx),
            segments,
            &self.stats,
            &mut self.warned,
        )
        .await;
        b.release(idx);
        match written {
            Ok(()) => Next::Carry,
            Err(e) => Next::Fail(e),
        }
    }

    /// Writes a batch's packets (ranges into `buf`, each with scratch room in
    /// front): one write per packet without the header; with it, one per
    /// superpacket the coalescer makes, and the rest where they lie behind a
    /// zero header. Fails only when the inside is gone.
    async fn write_batch(
        &mut self,
        buf: &mut [u8],
        packets: &[std::ops::Range<usize>],
    ) -> Result<(), DriverError> {
        let Some(gro) = self.gro.as_mut() else {
            for packet in packets {
                write_one(
                    &mut self.writer,
                    &buf[packet.clone()],
                    1,
                    &self.stats,
                    &mut self.warned,
                )
                .await?;
            }
            return Ok(());
        };
        let mut at = 0;
        while at < packets.len() {
            let taken = gro.push(buf, &packets[at..], at);
            gro.flush();
            for i in 0..gro.writes().len() {
                match gro.writes()[i] {
                    Output::Buffer {
                        slot,
                        len,
                        segments,
                    } => {
                        let bytes = gro.buffer(slot, len);
                        write_one(
                            &mut self.writer,
                            bytes,
                            segments,
                            &self.stats,
                            &mut self.warned,
                        )
                        .await?;
                    }
                    Output::Input { tag } => {
                        let Some(packet) = usize::try_from(tag).ok().and_then(|t| packets.get(t))
                        else {
                            debug_assert!(false, "a tag we never gave: {tag}");
                            continue;
                        };
                        let Some(bytes) = lone_packet(buf, packet.clone()) else {
                            debug_assert!(false, "no room for the header in front of {packet:?}");
                            continue;
                        };
                        write_one(&mut self.writer, bytes, 1, &self.stats, &mut self.warned)
                            .await?;
                    }
                }
            }
            if taken == 0 {
                // A flushed batch takes at least one packet: cannot happen.
                debug_assert!(false, "the coalescer took nothing after a flush");
                break;
            }
            at += taken;
        }
        Ok(())
    }
}

/// One write of `packets` packets to the inside; a refusal that concerns the
/// packet or the link's state is counted and dropped, anything else is the
/// inside failing.
async fn write_one<W: InsideWriter>(
    writer: &mut W,
    bytes: &[u8],
    packets: usize,
    stats: &Stats,
    warned: &mut bool,
) -> Result<(), DriverError> {
    match writer.write_packet(bytes).await {
        Ok(()) => {
            inc(&stats.rx.tun_writes);
            bump(&stats.rx.tun_packets, packets as u64);
            Ok(())
        }
        Err(e) if is_transient_tun_write(&e) => {
            bump(&stats.rx.inside_write_errors, packets as u64);
            if !std::mem::replace(warned, true) {
                tracing::warn!(error = %e, "the TUN refused a packet (is it down?); dropping");
            }
            Ok(())
        }
        Err(e) => Err(DriverError::InsideWrite(e)),
    }
}

/// TUN write errors that concern one packet or the link's current state, not
/// the device: `EIO` while the link is administratively down, `EINVAL` for a
/// packet the kernel will not take.
fn is_transient_tun_write(e: &io::Error) -> bool {
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
        assert!(!DriverError::SessionWornOut.wants_goodbye());
        assert!(!DriverError::Recv(RecvError::Closed).wants_goodbye());
        assert!(DriverError::InsideRead(io::ErrorKind::BrokenPipe.into()).wants_goodbye());
        assert!(
            !DriverError::Send(SendError::ConnectionLost(io::ErrorKind::BrokenPipe.into()))
                .wants_goodbye()
        );
    }

    #[test]
    fn lost_sessions_map_to_driver_errors() {
        let idle = Duration::from_secs(3);
        assert!(matches!(
            DriverError::from(Lost::ServerSilent(idle)),
            DriverError::ServerStoppedResponding(d) if d == idle
        ));
        assert!(DriverError::from(Lost::ServerClosed).is_session_lost());
        assert!(DriverError::from(Lost::CounterExhausted).is_session_lost());
        assert!(!DriverError::from(Lost::Internal("x".into())).is_session_lost());
    }
}
