//! Bulk data integrity through the tunnel, checked with SHA-256 on both ends.
//!
//! Throughput tools only count bytes; this moves a known pseudo-random stream over a plain TCP
//! connection and compares digests, so corruption, truncation or duplication anywhere in the
//! tunnel fails the test. It runs in-process: one thread enters the server namespace and
//! listens, another enters the client namespace and sends. `setns(CLONE_NEWNET)` affects only
//! the calling thread, so the test's main thread stays in the root namespace.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::netns::Netns;
use crate::path::TunnelPath;
use crate::sys;

/// Per-operation socket timeout: a stalled tunnel fails within this, not at the deadline.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Size of each write and read.
const CHUNK: usize = 64 * 1024;

/// What a successful transfer moved.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferReport {
    /// Bytes received (equal to bytes sent).
    pub bytes: u64,
    /// Hex SHA-256 of the stream (equal on both ends).
    pub sha256: String,
    /// Time from the first connect attempt until the receiver saw end-of-stream.
    pub elapsed: Duration,
}

impl TransferReport {
    /// Goodput in gigabits per second.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// How the sending socket of a transfer differs from a plain one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferOptions {
    /// IPv4 options every segment the sender sends carries (`IP_OPTIONS`, a multiple of 4
    /// bytes, at most 40): packets no offload may merge with their neighbours.
    pub ip_options: Vec<u8>,
}

/// Sends `bytes` of data generated from `seed` along `path`, from a socket bound to the client's
/// inside address to a listener on the server's, and checks that both ends hash the same
/// stream; all within `deadline`.
pub fn transfer_sha256(
    path: &TunnelPath<'_>,
    bytes: u64,
    seed: u64,
    deadline: Duration,
) -> Result<TransferReport> {
    transfer_sha256_with(path, bytes, seed, deadline, &TransferOptions::default())
}

/// Like [`transfer_sha256`], with the sender's socket set up as `options` says. For the other
/// direction, pass the path with its ends swapped ([`TunnelPath::reversed`]).
pub fn transfer_sha256_with(
    path: &TunnelPath<'_>,
    bytes: u64,
    seed: u64,
    deadline: Duration,
    options: &TransferOptions,
) -> Result<TransferReport> {
    let TunnelPath {
        server_ns,
        server_ip,
        client_ns,
        client_ip,
    } = *path;
    let start = Instant::now();
    let end = start + deadline;
    // Open the namespace files here so a bad namespace fails before any thread starts.
    let open = |ns: &Netns| {
        File::open(ns.path()).with_context(|| format!("opening {}", ns.path().display()))
    };
    let (server_fd, client_fd) = (open(server_ns)?, open(client_ns)?);

    // Set when this function returns, so a receiver still waiting for a sender that already
    // gave up stops within one poll or one read timeout instead of at the deadline.
    let cancel = Cancel::default();
    let receiver_cancel = cancel.flag();
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let (rx_done, rx_result) = mpsc::channel();
    let (tx_done, tx_result) = mpsc::channel();
    std::thread::Builder::new()
        .name("transfer-receiver".into())
        .spawn(move || {
            let res = receive(&server_fd, server_ip, &addr_tx, end, &receiver_cancel);
            let _ = rx_done.send(res);
        })
        .context("spawning receiver thread")?;
    let ip_options = options.ip_options.clone();
    std::thread::Builder::new()
        .name("transfer-sender".into())
        .spawn(move || {
            let source = Source {
                ns: &client_fd,
                ip: client_ip,
                ip_options: &ip_options,
            };
            let _ = tx_done.send(send(&source, &addr_rx, bytes, seed, end));
        })
        .context("spawning sender thread")?;

    // The threads bound themselves by `end` and socket timeouts; the main thread adds a little
    // slack and, if that passes, leaves them to finish on their own.
    let wait = |rx: &mpsc::Receiver<Result<Side>>, who: &str| -> Result<Side> {
        let left = end.saturating_duration_since(Instant::now()) + IO_TIMEOUT;
        rx.recv_timeout(left)
            .map_err(|_| anyhow::anyhow!("{who} did not finish within the {deadline:?} deadline"))?
            .with_context(|| format!("{who} failed"))
    };
    let sent = wait(&tx_result, "sender");
    if sent.is_err() {
        cancel.set();
    }
    let received = wait(&rx_result, "receiver");
    // When both fail, either may hold the cause (a receiver that cannot bind makes the sender
    // fail too, a sender that cannot connect makes the receiver give up), so report both.
    let (sent, received) = match (sent, received) {
        (Ok(s), Ok(r)) => (s, r),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(s), Err(r)) => bail!("{s:#}; and {r:#}"),
    };
    let elapsed = received.finished.duration_since(start);
    ensure!(
        sent.bytes == bytes,
        "sender wrote {} of {bytes} bytes",
        sent.bytes
    );
    ensure!(
        received.bytes == sent.bytes,
        "receiver got {} bytes, sender sent {}",
        received.bytes,
        sent.bytes
    );
    ensure!(
        received.sha256 == sent.sha256,
        "SHA-256 mismatch: sent {}, received {}",
        sent.sha256,
        received.sha256
    );
    Ok(TransferReport {
        bytes,
        sha256: sent.sha256,
        elapsed,
    })
}

/// One end's view of the stream.
#[derive(Debug)]
struct Side {
    bytes: u64,
    sha256: String,
    finished: Instant,
}

/// Receiver thread body: listen in the server namespace, hash everything until EOF.
fn receive(
    ns: &File,
    ip: Ipv4Addr,
    addr_tx: &mpsc::Sender<SocketAddr>,
    end: Instant,
    cancel: &AtomicBool,
) -> Result<Side> {
    sys::enter_netns(ns).context("entering server namespace")?;
    let listener = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
    let addr = listener.local_addr()?;
    addr_tx.send(addr).context("sender thread is gone")?;
    // Accept without blocking forever: a sender that never connects must not hang the test.
    listener.set_nonblocking(true)?;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if cancel.load(Ordering::Relaxed) {
                    bail!("cancelled while waiting for a connection on {addr}");
                }
                if Instant::now() >= end {
                    bail!("no connection on {addr} before the deadline");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        if Instant::now() >= end {
            bail!("deadline passed after receiving {bytes} bytes");
        }
        if cancel.load(Ordering::Relaxed) {
            bail!("cancelled after receiving {bytes} bytes");
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("read after {bytes} bytes")),
        };
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(Side {
        bytes,
        sha256: hex(&hasher.finalize()),
        finished: Instant::now(),
    })
}

/// Where the sender connects from: a namespace and an address in it, and the IPv4 options
/// its segments carry.
struct Source<'a> {
    ns: &'a File,
    ip: Ipv4Addr,
    ip_options: &'a [u8],
}

/// Sender thread body: connect from the client's address in its namespace, stream seeded
/// random data.
fn send(
    source: &Source<'_>,
    addr_rx: &mpsc::Receiver<SocketAddr>,
    bytes: u64,
    seed: u64,
    end: Instant,
) -> Result<Side> {
    sys::enter_netns(source.ns).context("entering client namespace")?;
    let addr = addr_rx
        .recv_timeout(end.saturating_duration_since(Instant::now()))
        .context("receiver never reported its address")?;
    let mut stream = connect_from(source.ip, addr, source.ip_options)
        .with_context(|| format!("connecting {} -> {addr} through the tunnel", source.ip))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < bytes {
        if Instant::now() >= end {
            bail!("deadline passed after sending {sent} of {bytes} bytes");
        }
        let n = usize::try_from(bytes - sent).map_or(CHUNK, |left| left.min(CHUNK));
        rng.fill_bytes(&mut buf[..n]);
        hasher.update(&buf[..n]);
        stream
            .write_all(&buf[..n])
            .with_context(|| format!("write after {sent} bytes"))?;
        sent += n as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .context("shutdown(write)")?;
    Ok(Side {
        bytes: sent,
        sha256: hex(&hasher.finalize()),
        finished: Instant::now(),
    })
}

/// A TCP connection to `addr` from `source` (std cannot bind before connecting), its segments
/// carrying `ip_options` if there are any.
fn connect_from(
    source: Ipv4Addr,
    addr: SocketAddr,
    ip_options: &[u8],
) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if !ip_options.is_empty() {
        sys::set_ip_options(&socket, ip_options)?;
    }
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
    Ok(socket.into())
}

/// A flag shared with the receiver thread, raised when the owner is dropped.
#[derive(Debug, Default)]
struct Cancel(Arc<AtomicBool>);

impl Cancel {
    fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        self.set();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
    }
}
