//! The TCP outside: the same frames as over UDP, each behind a 2-byte
//! big-endian length, on one connection to the same host and port.
//!
//! For networks that let only TCP out. [`connect`] connects (with
//! `TCP_NODELAY`: every frame is a packet someone is waiting for) and
//! handshakes over the stream much as over UDP: send a fresh initiation, wait
//! up to the retry interval for its answer, send another on the same
//! connection if none came. A connect that fails, or a connection that closes
//! or carries garbage, is replaced after a pause that doubles each time
//! ([`Backoff`]), until the deadline. (The server closes a connection that
//! sends garbage or has not finished a handshake within its own deadline.)
//!
//! Once established, each direction owns its half of the connection. The
//! sender writes each frame with one `write_all` of prefix, header and packet,
//! contiguous in the caller's buffer; the receiver reads with a
//! [`FrameReader`](super::stream::FrameReader) and opens each frame where it
//! lies. There is no queue in between: while the connection is backed up the
//! write waits, and so does the next read from the TUN, whose own bounded
//! queue then drops packets for the inner flows to retransmit (TCP in TCP: the
//! inner connections see loss and back off, instead of a queue growing).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringway_proto::session::SealError;
use ringway_proto::wire::stream::encode_prefix;
use ringway_proto::wire::transport::{MAX_FRAME_LEN, OVERHEAD};
use ringway_proto::wire::STREAM_PREFIX_LEN;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpSocket;
use tokio::time::{sleep_until, timeout_at};

use super::handshake::{ConnectError, Handshaker};
use super::stream::FrameReader;
use super::{ConnectOptions, Link, SendError, Transport, Tunnel};
use crate::config::ClientConfig;

/// The first pause before connecting again.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// Handshakes with `server` over TCP until `deadline`, reconnecting as needed.
pub(super) async fn connect(
    config: &ClientConfig,
    server: SocketAddr,
    opts: &ConnectOptions,
    deadline: Instant,
) -> Result<Tunnel, ConnectError> {
    let mut hs = Handshaker::new(config, server, Transport::Tcp);
    let mut backoff = Backoff::new(opts.retry_interval);
    while crate::now() < deadline {
        if let Some(tunnel) = attempt(&mut hs, server, opts, deadline).await? {
            return Ok(tunnel);
        }
        let pause = backoff.next_pause();
        tracing::debug!(%server, ?pause, "connecting again after a pause");
        sleep_until((crate::now() + pause).min(deadline).into()).await;
    }
    Err(hs.give_up())
}

/// One connection: connects, then handshakes on it until `deadline`.
///
/// `Ok(None)` when the connect failed or the connection closed or broke
/// (recorded in `hs`), or the deadline passed.
async fn attempt(
    hs: &mut Handshaker,
    server: SocketAddr,
    opts: &ConnectOptions,
    deadline: Instant,
) -> Result<Option<Tunnel>, ConnectError> {
    let socket = match server {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|source| ConnectError::Socket {
        server,
        transport: Transport::Tcp,
        source,
    })?;
    let stream = match timeout_at(deadline.into(), socket.connect(server)).await {
        Err(_) => return Ok(None),
        Ok(Err(e)) => {
            hs.record_io_error(&e);
            return Ok(None);
        }
        Ok(Ok(stream)) => stream,
    };
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    tracing::debug!(%server, local = ?stream.local_addr().ok(), "TCP connected");
    let (read, mut writer) = stream.into_split();
    // Exact: nothing past the response is read with the handshake's limits.
    let mut reader = FrameReader::exact(read);

    while crate::now() < deadline {
        let init = hs.initiate()?;
        match timeout_at(deadline.into(), transmit(&mut writer, init)).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) => {
                hs.record_io_error(&e);
                return Ok(None);
            }
            Ok(Ok(())) => {}
        }
        let retry_at = (crate::now() + opts.retry_interval).min(deadline);
        // As over UDP, a stray or a failed response does not end the wait.
        loop {
            let frame = match timeout_at(retry_at.into(), reader.next_frame()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    hs.record_io_error(&e);
                    return Ok(None);
                }
                Ok(Ok(frame)) => frame,
            };
            if let Some((session, session_config)) = hs.handle_frame(frame)? {
                let max_frame = (usize::from(session_config.mtu) + OVERHEAD).min(MAX_FRAME_LEN);
                let link = Link::Tcp {
                    reader: reader.into_session(max_frame),
                    writer,
                };
                let initiator = hs.initiator().clone();
                return Ok(Some(Tunnel::new(
                    link,
                    server,
                    session,
                    session_config,
                    initiator,
                )));
            }
        }
    }
    Ok(None)
}

/// Writes the frame at `buf[STREAM_PREFIX_LEN..]` with its length prefix in
/// front, in `buf[..STREAM_PREFIX_LEN]`, as one write.
///
/// Not cancel-safe (a frame cut short would desynchronise the stream): the
/// driver never races it, and a connection whose write was abandoned is
/// dropped, not reused.
pub(super) async fn transmit(writer: &mut OwnedWriteHalf, buf: &mut [u8]) -> Result<(), SendError> {
    let frame_len = buf.len().saturating_sub(STREAM_PREFIX_LEN);
    // Sealing already bounds a frame to what a prefix can say.
    let prefix = encode_prefix(frame_len).map_err(|_| SealError::PayloadTooLarge)?;
    buf[..STREAM_PREFIX_LEN].copy_from_slice(&prefix);
    writer
        .write_all(buf)
        .await
        .map_err(SendError::ConnectionLost)
}

/// Pauses between connections: doubling from [`FIRST_PAUSE`] (or the retry
/// interval, if shorter) up to four retry intervals.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(retry_interval: Duration) -> Self {
        let first = FIRST_PAUSE.min(retry_interval);
        Backoff {
            next: first,
            max: (retry_interval * 4).max(first),
        }
    }

    fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (pause * 2).min(self.max);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pauses(retry_interval: Duration, n: usize) -> Vec<u64> {
        let mut b = Backoff::new(retry_interval);
        (0..n).map(|_| b.next_pause().as_millis() as u64).collect()
    }

    #[test]
    fn backoff_doubles_up_to_four_retry_intervals() {
        assert_eq!(
            pauses(Duration::from_secs(1), 8),
            [100, 200, 400, 800, 1600, 3200, 4000, 4000]
        );
        assert_eq!(
            pauses(Duration::from_millis(50), 5),
            [50, 100, 200, 200, 200]
        );
        assert_eq!(pauses(Duration::ZERO, 2), [0, 0]);
    }
}
