//! The driver: moves packets between the inside and the tunnel until told to
//! stop or until the session dies.
//!
//! ```text
//!            outbound task                              inbound task
//!  inside ── read ─▶ seal in place ─▶ send     recv ─▶ open in place ─▶ write ── inside
//!            keepalive when nothing sent          idle timeout when nothing received
//! ```
//!
//! One task per direction, each owning its half of the session and one buffer
//! reused for every packet (the outbound task's, with [`HEADROOM`] in front of
//! the packet; the inbound one inside the receiver). Neither knows the
//! transport: over TCP a backed-up connection makes the outbound send wait,
//! and with it the next read from the inside, which is all the flow control a
//! client needs.
//!
//! The timers are lazy: a timer that fires looks at when the last frame
//! actually went out (or came in) and either acts or re-arms for the new due
//! time, so the per-packet path never touches a timer.
//! All times come from tokio's clock ([`crate::now`]), so tests can pause it.

use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use ringway_proto::wire::transport::TAG_LEN;
use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{sleep_until, timeout};

use crate::inside::{Inside, InsideReader, InsideWriter};
use crate::ip;
use crate::outside::{
    Event, RecvError, SendError, Tunnel, TunnelReceiver, TunnelSender, HEADROOM, SEND_BUF_LEN,
};
use crate::stats::inc;

/// How long the outbound task gets to send its disconnect when stopping.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Why the driver stopped without being asked to.
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
}

/// What the outbound task does when told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Tell the server we are leaving.
    Disconnect,
    /// The server already knows (it closed the session).
    Quietly,
}

/// Forwards packets both ways until `shutdown` completes (then sends the server
/// a disconnect and returns `Ok`) or the session fails.
///
/// Both tasks have finished when this returns, so the inside's halves are
/// dropped and the caller can tear the inside down.
pub async fn run<I: Inside>(
    tunnel: Tunnel,
    inside: I,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DriverError> {
    let config = *tunnel.session_config();
    let (sender, receiver) = tunnel.split();
    let (reader, writer) = inside.split();
    let (stop_tx, stop_rx) = oneshot::channel();
    let mut outbound = tokio::spawn(outbound(sender, reader, config.keepalive(), stop_rx));
    let mut inbound = tokio::spawn(inbound(
        receiver,
        writer,
        config.idle_timeout(),
        config.client_addr,
    ));

    enum Ended {
        Shutdown,
        Inbound(Result<(), DriverError>),
        Outbound(Result<(), DriverError>),
    }
    tokio::pin!(shutdown);
    let ended = tokio::select! {
        () = &mut shutdown => Ended::Shutdown,
        r = &mut inbound => Ended::Inbound(joined(r)),
        r = &mut outbound => Ended::Outbound(joined(r)),
    };
    match ended {
        Ended::Shutdown => {
            cancel(inbound).await;
            stop_outbound(outbound, stop_tx, Stop::Disconnect).await
        }
        Ended::Inbound(result) => {
            let how = match result {
                // The server knows, or there is no connection left to tell it on.
                Err(DriverError::ServerClosed)
                | Err(DriverError::Recv(RecvError::Closed | RecvError::ConnectionLost(_))) => {
                    Stop::Quietly
                }
                _ => Stop::Disconnect,
            };
            // The inbound failure is the news; the outbound's exit is not.
            let _ = stop_outbound(outbound, stop_tx, how).await;
            result
        }
        // The outbound task told the server itself, where it could.
        Ended::Outbound(result) => {
            cancel(inbound).await;
            result
        }
    }
}

/// A task's result, with a panic or cancellation as an error.
fn joined(r: Result<Result<(), DriverError>, JoinError>) -> Result<(), DriverError> {
    r.unwrap_or_else(|e| Err(DriverError::Task(e.to_string())))
}

/// Aborts a task and waits until it is gone, so what it held is dropped.
async fn cancel(task: JoinHandle<Result<(), DriverError>>) {
    task.abort();
    let _ = task.await;
}

/// Asks the outbound task to stop (after its disconnect, if `how` says so) and
/// waits for it a bounded time.
async fn stop_outbound(
    mut task: JoinHandle<Result<(), DriverError>>,
    stop: oneshot::Sender<Stop>,
    how: Stop,
) -> Result<(), DriverError> {
    // An error means the task already ended; awaiting it below says how.
    let _ = stop.send(how);
    match timeout(STOP_GRACE, &mut task).await {
        Ok(r) => joined(r),
        Err(_) => {
            tracing::warn!("outbound task did not stop within {STOP_GRACE:?}; aborting it");
            cancel(task).await;
            Ok(())
        }
    }
}

/// Inside to outside: read a packet into the buffer past the headroom, seal it
/// in place, send it; keepalives when idle.
async fn outbound<R: InsideReader>(
    mut sender: TunnelSender,
    mut reader: R,
    keepalive: Duration,
    mut stop: oneshot::Receiver<Stop>,
) -> Result<(), DriverError> {
    let mut buf = vec![0u8; SEND_BUF_LEN].into_boxed_slice();
    let packet_end = buf.len() - TAG_LEN;
    let stats = std::sync::Arc::clone(sender.stats());
    let timer = sleep_until((sender.last_sent() + keepalive).into());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            how = &mut stop => {
                // A dropped sender means the driver is gone: say goodbye too.
                if how.unwrap_or(Stop::Disconnect) == Stop::Disconnect {
                    say_goodbye(&mut sender).await;
                }
                return Ok(());
            }
            () = &mut timer => {
                if crate::now() >= sender.last_sent() + keepalive {
                    sender.send_keepalive().await.map_err(DriverError::Send)?;
                }
                timer.as_mut().reset((sender.last_sent() + keepalive).into());
            }
            read = reader.read_packet(&mut buf[HEADROOM..packet_end]) => {
                let len = match read {
                    Ok(len) => len,
                    Err(e) => {
                        say_goodbye(&mut sender).await;
                        return Err(DriverError::InsideRead(e));
                    }
                };
                if !ip::is_ipv4(&buf[HEADROOM..HEADROOM + len]) {
                    inc(&stats.tx.dropped_not_ipv4);
                    continue;
                }
                if let Err(e) = sender.send_packet(&mut buf, len).await {
                    if e.is_fatal() {
                        return Err(DriverError::Send(e));
                    }
                    tracing::debug!(error = %e, len, "dropped an outbound packet");
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

/// Outside to inside: receive a frame, open it in place, write the packet; fail
/// when the server has been silent for the idle timeout.
async fn inbound<W: InsideWriter>(
    mut receiver: TunnelReceiver,
    mut writer: W,
    idle_timeout: Duration,
    our_addr: Ipv4Addr,
) -> Result<(), DriverError> {
    let stats = std::sync::Arc::clone(receiver.stats());
    let timer = sleep_until((receiver.last_received() + idle_timeout).into());
    tokio::pin!(timer);
    let mut warned_write = false;
    loop {
        tokio::select! {
            biased;
            () = &mut timer => {
                let due = receiver.last_received() + idle_timeout;
                if crate::now() >= due {
                    return Err(DriverError::ServerStoppedResponding(idle_timeout));
                }
                timer.as_mut().reset(due.into());
            }
            event = receiver.recv() => match event.map_err(DriverError::Recv)? {
                Event::Packet(packet) => {
                    if ip::ipv4_destination(packet) != Some(our_addr) {
                        inc(&stats.rx.dropped_not_for_us);
                        continue;
                    }
                    match writer.write_packet(packet).await {
                        Ok(()) => {}
                        Err(e) if is_transient_write(&e) => {
                            inc(&stats.rx.inside_write_errors);
                            if !std::mem::replace(&mut warned_write, true) {
                                tracing::warn!(error = %e, "the TUN refused a packet (is it down?); dropping");
                            }
                        }
                        Err(e) => return Err(DriverError::InsideWrite(e)),
                    }
                }
                Event::Keepalive | Event::Dropped(_) => {}
                Event::Disconnected => return Err(DriverError::ServerClosed),
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
    ) || is_eio(e)
}

#[cfg(target_os = "linux")]
fn is_eio(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EIO)
}

#[cfg(not(target_os = "linux"))]
fn is_eio(_: &io::Error) -> bool {
    false
}
