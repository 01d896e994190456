//! Plain TCP connections to the server's outside port, for playing a misbehaving peer.
//!
//! The real client always speaks the protocol; these sockets let a test send what no client
//! would (random bytes, half a frame, nothing at all) and then watch when the server gives up
//! on the connection. Sockets are opened from inside a testbed namespace (see
//! [`Netns::run_inside`]) and closed when dropped, so nothing outlives the test.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

/// Bound for one connect; the server is one veth hop away, so this is generous.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound for one write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often [`wait_closed`] looks at every connection.
const CLOSE_POLL: Duration = Duration::from_millis(20);

/// One connection we opened, and when.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    opened: Instant,
}

impl RawConn {
    /// When the connect completed; close times are measured from here.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// Our end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Writes all of `bytes` (bounded by a write timeout).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        self.stream.write_all(bytes)
    }
}

/// Opens `n` connections to `addr` from inside `ns`, one after another; fails if any connect
/// fails or if they have not all connected within `limit`.
pub fn connect_many(
    ns: &Netns,
    addr: SocketAddr,
    n: usize,
    limit: Duration,
) -> Result<Vec<RawConn>> {
    let deadline = Instant::now() + limit;
    // The thread bounds itself by `deadline` plus at most one connect timeout.
    ns.run_inside(
        limit + CONNECT_TIMEOUT + Duration::from_secs(1),
        move || {
            let mut conns = Vec::with_capacity(n);
            for i in 0..n {
                if Instant::now() >= deadline {
                    bail!("only {i} of {n} connections to {addr} opened within {limit:?}");
                }
                let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                    .with_context(|| format!("connection {} of {n} to {addr}", i + 1))?;
                conns.push(RawConn {
                    stream,
                    opened: Instant::now(),
                });
            }
            Ok(conns)
        },
    )
}

/// Opens one connection to `addr` from inside `ns`.
pub fn connect(ns: &Netns, addr: SocketAddr) -> Result<RawConn> {
    let mut conns = connect_many(ns, addr, 1, CONNECT_TIMEOUT)?;
    conns.pop().context("connect_many returned nothing")
}

/// Waits until the peer has closed every connection in `conns` (a read sees end-of-stream or
/// an error such as a reset), or until `limit` passes.
///
/// Returns, per connection, the time from [`RawConn::opened`] until the close was seen (at
/// 20 ms resolution), or `None` if it was still open at the end. Data the peer sends
/// is read and discarded.
pub fn wait_closed(conns: &mut [RawConn], limit: Duration) -> Result<Vec<Option<Duration>>> {
    for c in conns.iter() {
        c.stream
            .set_nonblocking(true)
            .context("making a watched socket non-blocking")?;
    }
    let deadline = Instant::now() + limit;
    let mut closed = vec![None; conns.len()];
    let mut buf = [0u8; 4096];
    loop {
        for (c, when) in conns.iter_mut().zip(closed.iter_mut()) {
            if when.is_some() {
                continue;
            }
            if peer_closed(&mut c.stream, &mut buf) {
                *when = Some(c.opened.elapsed());
            }
        }
        if closed.iter().all(Option::is_some) || Instant::now() >= deadline {
            return Ok(closed);
        }
        std::thread::sleep(CLOSE_POLL);
    }
}

/// Drains what is readable now; `true` once the stream has ended or failed.
fn peer_closed(stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    loop {
        match stream.read(buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// A summary of [`wait_closed`]'s result, for assertions and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseTimes {
    /// Connections watched.
    pub total: usize,
    /// How many the peer closed.
    pub closed: usize,
    /// The earliest close, if any.
    pub first: Option<Duration>,
    /// The latest close, if any.
    pub last: Option<Duration>,
}

impl CloseTimes {
    /// Summarises per-connection close times.
    pub fn from_times(times: &[Option<Duration>]) -> Self {
        let seen = times.iter().flatten();
        Self {
            total: times.len(),
            closed: seen.clone().count(),
            first: seen.clone().min().copied(),
            last: seen.max().copied(),
        }
    }

    /// Whether the peer closed every connection.
    pub fn all_closed(&self) -> bool {
        self.closed == self.total
    }

    /// How many closed within `limit` of being opened.
    pub fn closed_within(times: &[Option<Duration>], limit: Duration) -> usize {
        times.iter().flatten().filter(|t| **t <= limit).count()
    }
}

impl fmt::Display for CloseTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} closed by the server", self.closed, self.total)?;
        if let (Some(first), Some(last)) = (self.first, self.last) {
            write!(f, ", after {first:.2?} to {last:.2?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Shutdown, TcpListener};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn summarises_close_times() {
        let times = [Some(ms(2100)), None, Some(ms(1900)), Some(ms(2500))];
        let s = CloseTimes::from_times(&times);
        assert_eq!((s.total, s.closed), (4, 3));
        assert_eq!((s.first, s.last), (Some(ms(1900)), Some(ms(2500))));
        assert!(!s.all_closed());
        assert_eq!(CloseTimes::closed_within(&times, ms(2200)), 2);
        assert_eq!(
            s.to_string(),
            "3 of 4 closed by the server, after 1.90s to 2.50s"
        );
        let none = CloseTimes::from_times(&[None]);
        assert_eq!(none.to_string(), "0 of 1 closed by the server");
        assert!(CloseTimes::from_times(&[]).all_closed());
    }

    /// Over loopback in the test's own namespace: a close by the peer is seen, an open
    /// connection is reported open once the limit passes, and data does not count as a close.
    #[test]
    fn wait_closed_tells_closed_from_open() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns: Vec<RawConn> = (0..2)
            .map(|_| RawConn {
                stream: TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).unwrap(),
                opened: Instant::now(),
            })
            .collect();
        let (mut first, _) = listener.accept().unwrap();
        let (second, _) = listener.accept().unwrap();
        conns[0].send(b"hello").unwrap();
        first.write_all(b"some data first").unwrap();
        first.shutdown(Shutdown::Both).unwrap();
        let start = Instant::now();
        let times = wait_closed(&mut conns, ms(300)).unwrap();
        assert!(start.elapsed() >= ms(300), "returned before the limit");
        assert!(times[0].is_some_and(|t| t < ms(300)), "{times:?}");
        assert_eq!(times[1], None);
        drop(second);
        let times = wait_closed(&mut conns[1..], Duration::from_secs(5)).unwrap();
        assert!(times[0].is_some(), "{times:?}");
    }
}
