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

/// How the peer ended a connection, as our end saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// An orderly close: a read returned end-of-stream (the peer sent FIN).
    Fin,
    /// The peer reset the connection (RST), e.g. closing with unread data in its buffer.
    Reset,
    /// Some other error ended it (a timeout, an unreachable host): not the peer's doing.
    Error(ErrorKind),
}

impl Ending {
    /// Whether the peer ended it (FIN or RST), rather than the network or our side.
    pub fn by_peer(self) -> bool {
        matches!(self, Self::Fin | Self::Reset)
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fin => f.write_str("closed (FIN)"),
            Self::Reset => f.write_str("reset (RST)"),
            Self::Error(kind) => write!(f, "failed ({kind})"),
        }
    }
}

/// When and how one watched connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Time from [`RawConn::opened`] until the end was seen (20 ms resolution).
    pub after: Duration,
    /// How it ended.
    pub how: Ending,
}

/// Waits until every connection in `conns` has ended (end-of-stream, a reset or another
/// error), or until `limit` passes.
///
/// Returns, per connection, when and how it ended, or `None` if it was still open at the end.
/// Data the peer sends is read and discarded.
pub fn wait_closed(conns: &mut [RawConn], limit: Duration) -> Result<Vec<Option<Closed>>> {
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
            if let Some(how) = ending(&mut c.stream, &mut buf) {
                *when = Some(Closed {
                    after: c.opened.elapsed(),
                    how,
                });
            }
        }
        if closed.iter().all(Option::is_some) || Instant::now() >= deadline {
            return Ok(closed);
        }
        std::thread::sleep(CLOSE_POLL);
    }
}

/// Drains what is readable now; `Some` once the stream has ended, saying how.
fn ending(stream: &mut TcpStream, buf: &mut [u8]) -> Option<Ending> {
    loop {
        match stream.read(buf) {
            Ok(0) => return Some(Ending::Fin),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(Ending::Reset),
            Err(e) => return Some(Ending::Error(e.kind())),
        }
    }
}

/// A summary of [`wait_closed`]'s result, for assertions and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseTimes {
    /// Connections watched.
    pub total: usize,
    /// How many ended, in any way.
    pub closed: usize,
    /// How many of those the peer closed with FIN.
    pub fin: usize,
    /// How many the peer reset.
    pub reset: usize,
    /// How many ended with another error (see [`Ending::Error`]).
    pub failed: usize,
    /// The earliest end, if any.
    pub first: Option<Duration>,
    /// The latest end, if any.
    pub last: Option<Duration>,
}

impl CloseTimes {
    /// Summarises per-connection endings.
    pub fn from_times(times: &[Option<Closed>]) -> Self {
        let seen = times.iter().flatten();
        let count = |f: fn(&Ending) -> bool| seen.clone().filter(|c| f(&c.how)).count();
        Self {
            total: times.len(),
            closed: seen.clone().count(),
            fin: count(|h| *h == Ending::Fin),
            reset: count(|h| *h == Ending::Reset),
            failed: count(|h| matches!(h, Ending::Error(_))),
            first: seen.clone().map(|c| c.after).min(),
            last: seen.map(|c| c.after).max(),
        }
    }

    /// Whether every connection ended, in any way.
    pub fn all_closed(&self) -> bool {
        self.closed == self.total
    }

    /// Whether the peer ended every connection (FIN or RST; no other error).
    pub fn all_by_peer(&self) -> bool {
        self.fin + self.reset == self.total
    }

    /// How many ended within `limit` of being opened.
    pub fn closed_within(times: &[Option<Closed>], limit: Duration) -> usize {
        times.iter().flatten().filter(|c| c.after <= limit).count()
    }

    /// The first ending that was not the peer's doing, if any.
    pub fn first_error(times: &[Option<Closed>]) -> Option<Closed> {
        times.iter().flatten().find(|c| !c.how.by_peer()).copied()
    }
}

impl fmt::Display for CloseTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} ended: {} closed (FIN), {} reset (RST), {} failed otherwise",
            self.closed, self.total, self.fin, self.reset, self.failed
        )?;
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
        let c = |n, how| Some(Closed { after: ms(n), how });
        let times = [
            c(2100, Ending::Fin),
            None,
            c(1900, Ending::Reset),
            c(2500, Ending::Error(ErrorKind::TimedOut)),
        ];
        let s = CloseTimes::from_times(&times);
        assert_eq!(
            (s.total, s.closed, s.fin, s.reset, s.failed),
            (4, 3, 1, 1, 1)
        );
        assert_eq!((s.first, s.last), (Some(ms(1900)), Some(ms(2500))));
        assert!(!s.all_closed() && !s.all_by_peer());
        assert_eq!(CloseTimes::closed_within(&times, ms(2200)), 2);
        assert_eq!(
            CloseTimes::first_error(&times).map(|c| c.how),
            Some(Ending::Error(ErrorKind::TimedOut))
        );
        assert_eq!(
            s.to_string(),
            "3 of 4 ended: 1 closed (FIN), 1 reset (RST), 1 failed otherwise, after 1.90s to 2.50s"
        );
        let none = CloseTimes::from_times(&[None]);
        assert_eq!(
            none.to_string(),
            "0 of 1 ended: 0 closed (FIN), 0 reset (RST), 0 failed otherwise"
        );
        assert!(CloseTimes::from_times(&[]).all_closed());
        assert!(CloseTimes::from_times(&[c(1, Ending::Fin), c(2, Ending::Reset)]).all_by_peer());
    }

    /// Over loopback in the test's own namespace: a close by the peer is seen as FIN, an open
    /// connection is reported open once the limit passes, data does not count as a close, and
    /// a reset is told apart from a close.
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
        assert_eq!(times[0].map(|c| c.how), Some(Ending::Fin), "{times:?}");
        assert_eq!(times[1], None);
        // Closing with unread data in the receive buffer makes the kernel send a reset.
        conns[1].send(b"unread").unwrap();
        let mut probe = [0u8; 1];
        second
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        second.peek(&mut probe).unwrap();
        drop(second);
        let times = wait_closed(&mut conns[1..], Duration::from_secs(5)).unwrap();
        assert_eq!(times[0].map(|c| c.how), Some(Ending::Reset), "{times:?}");
    }
}
