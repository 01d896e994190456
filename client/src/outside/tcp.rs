//! The TCP outside: the same frames as over UDP, each behind a 2-byte
//! big-endian length, on one connection to the same host and port.
//!
//! For networks that let only TCP out. [`connect`] connects (with
//! `TCP_NODELAY`: every frame is a packet someone is waiting for) and runs
//! the core's handshake over the stream much as over UDP: the core sends a
//! fresh initiation every retry interval, on the same connection while it
//! lasts. A connect that fails, or a connection that closes or carries
//! garbage, is replaced after a pause that doubles each time
//! ([`Backoff`](crate::backoff::Backoff)), until the core's deadline; each
//! new connection carries a fresh initiation. (The server closes a connection
//! that sends garbage or has not finished a handshake within its own deadline.)
//!
//! Once established, each direction owns its half of the connection. The
//! sender writes each frame with one `write_all` of prefix, header and packet,
//! contiguous in the caller's buffer (a split superpacket's frames, each with
//! its prefix, all in one `write_all`); the receiver reads with a
//! [`FrameReader`](super::stream::FrameReader) and opens each frame where it
//! lies. There is no queue in between: while the connection is backed up the
//! write waits, and so does the next read from the TUN, whose own bounded
//! queue then drops packets for the inner flows to retransmit (TCP in TCP: the
//! inner connections see loss and back off, instead of a queue growing).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringway_proto::wire::stream::encode_prefix;
use ringway_proto::wire::transport::{MAX_FRAME_LEN, OVERHEAD};
use ringway_proto::wire::STREAM_PREFIX_LEN;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;
use tokio::time::{sleep_until, timeout_at};

use super::stream::FrameReader;
use super::{
    connect_progress, new_core, ConnectError, ConnectOptions, Connecting, Link, SendError,
    Transport, Tunnel,
};
use crate::backoff::Backoff;
use crate::config::ClientConfig;
use crate::core::{Core, Refused, MAX_CONTROL_LEN};

/// The first pause before connecting again (or the retry interval, if shorter).
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// Handshakes with `server` over TCP until `deadline`, reconnecting as needed.
pub(super) async fn connect(
    config: &ClientConfig,
    server: SocketAddr,
    opts: &ConnectOptions,
    deadline: Instant,
) -> Result<Tunnel, ConnectError> {
    let mut core = new_core(config, opts, deadline);
    // Pauses between connections: doubling up to four retry intervals.
    let first = FIRST_PAUSE.min(opts.retry_interval);
    let mut pauses = Backoff::doubling(first, (opts.retry_interval * 4).max(first));
    loop {
        match attempt(&mut core, server, deadline).await? {
            Some(link) => return Tunnel::new(link, server, core),
            None => {
                let pause = pauses.next_delay();
                tracing::debug!(%server, ?pause, "connecting again after a pause");
                // The core's own deadline still runs meanwhile.
                let until = (crate::now() + pause).min(deadline);
                loop {
                    let wake = core.poll_timeout().unwrap_or(until).min(until);
                    sleep_until(wake.into()).await;
                    core.handle_timeout(crate::now());
                    connect_progress(&mut core, server, Transport::Tcp)?;
                    if crate::now() >= until {
                        break;
                    }
                }
            }
        }
    }
}

/// One connection: connects, then runs the core's handshake on it.
///
/// `Ok(None)` when the connect failed or the connection closed or broke
/// (reported to the core, for its verdict); the core's verdict as an error.
async fn attempt(
    core: &mut Core,
    server: SocketAddr,
    deadline: Instant,
) -> Result<Option<Link>, ConnectError> {
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
        Err(_) => {
            // The deadline: let the core say so.
            core.handle_timeout(crate::now());
            connect_progress(core, server, Transport::Tcp)?;
            return Ok(None);
        }
        Ok(Err(e)) => {
            core.handle_io_error(&e);
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
    // A new connection: an initiation on it (the one still owed, or a fresh one).
    core.handle_path_change(crate::now());
    match handshake_on(core, &mut reader, &mut writer, server, deadline).await? {
        Ok(()) => {
            let mtu = core
                .session_config()
                .map_or(MAX_FRAME_LEN, |c| usize::from(c.mtu));
            let max_frame = (mtu + OVERHEAD).min(MAX_FRAME_LEN);
            Ok(Some(Link::Tcp {
                reader: reader.into_session(max_frame),
                writer,
            }))
        }
        Err(lost) => {
            core.handle_io_error(&lost);
            Ok(None)
        }
    }
}

/// Runs the core on one connection until it connects (`Ok(Ok)`), the
/// connection fails (`Ok(Err)`, with why) or the core gives up (`Err`).
async fn handshake_on(
    core: &mut Core,
    reader: &mut FrameReader<OwnedReadHalf>,
    writer: &mut OwnedWriteHalf,
    server: SocketAddr,
    deadline: Instant,
) -> Result<Result<(), String>, ConnectError> {
    let mut control = [0u8; STREAM_PREFIX_LEN + MAX_CONTROL_LEN];
    loop {
        while let Some(t) = core.poll_transmit(crate::now(), &mut control[STREAM_PREFIX_LEN..]) {
            tracing::debug!(%server, transport = "TCP", "sending handshake initiation");
            let write = transmit(writer, &mut control[..STREAM_PREFIX_LEN + t.len]);
            match timeout_at(deadline.into(), write).await {
                Err(_) => {
                    return Ok(Err(
                        "the initiation was still being written at the deadline".into(),
                    ))
                }
                Ok(Err(e)) => return Ok(Err(e.to_string())),
                Ok(Ok(())) => {}
            }
        }
        if let Connecting::Connected = connect_progress(core, server, Transport::Tcp)? {
            return Ok(Ok(()));
        }
        let Some(wake) = core.poll_timeout() else {
            connect_progress(core, server, Transport::Tcp)?;
            return Ok(Err("the handshake ended".into()));
        };
        tokio::select! {
            frame = reader.next_frame() => match frame {
                Ok(frame) => {
                    core.handle_frame(frame, crate::now());
                }
                Err(e) => return Ok(Err(e.to_string())),
            },
            () = sleep_until(wake.into()) => core.handle_timeout(crate::now()),
        }
    }
}

/// Writes frames that already carry their length prefixes, lying back to back
/// in `frames` (a split superpacket), with one `write_all`. Not cancel-safe, as
/// [`transmit`] is not.
pub(super) async fn write_frames(
    writer: &mut OwnedWriteHalf,
    frames: &[u8],
) -> Result<(), SendError> {
    writer
        .write_all(frames)
        .await
        .map_err(SendError::ConnectionLost)
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
    let prefix = encode_prefix(frame_len).map_err(|_| Refused::TooLarge)?;
    buf[..STREAM_PREFIX_LEN].copy_from_slice(&prefix);
    writer
        .write_all(buf)
        .await
        .map_err(SendError::ConnectionLost)
}
