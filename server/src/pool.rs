//! The pool of inner (tunnel) IPv4 addresses handed to clients.
//!
//! The server's own TUN takes the first host address; clients get the others.
//! Addresses are returned to the pool when a session ends, and a peer that
//! reconnects while its old session is still known keeps its address.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network in CIDR notation, e.g. `198.18.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    network: u32,
    prefix_len: u8,
}

/// A CIDR string that is not a usable pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid pool {0:?}: expected an IPv4 network like 198.18.0.0/24 with a prefix from /8 to /30"
)]
pub struct PoolParseError(String);

impl FromStr for Ipv4Net {
    type Err = PoolParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PoolParseError(s.to_string());
        let (addr, len) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.trim().parse().map_err(|_| err())?;
        let prefix_len: u8 = len.trim().parse().map_err(|_| err())?;
        if !(8..=30).contains(&prefix_len) {
            return Err(err());
        }
        let mask = u32::MAX << (32 - prefix_len);
        Ok(Ipv4Net {
            network: u32::from(addr) & mask,
            prefix_len,
        })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix_len)
    }
}

impl Ipv4Net {
    /// Prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Number of host addresses (excluding network and broadcast).
    pub fn hosts(&self) -> u32 {
        (1u32 << (32 - self.prefix_len)) - 2
    }

    /// The first host address: the server's own.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    /// Whether `addr` lies in this network.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix_len);
        u32::from(addr) & mask == self.network
    }
}

/// Which client addresses are in use.
#[derive(Debug)]
pub struct IpPool {
    net: Ipv4Net,
    /// One entry per client address (hosts after the server's).
    used: Vec<bool>,
    next: usize,
}

impl IpPool {
    /// A pool over `net`, with the first host reserved for the server.
    pub fn new(net: Ipv4Net) -> Self {
        let clients = net.hosts().saturating_sub(1) as usize;
        IpPool {
            net,
            used: vec![false; clients],
            next: 0,
        }
    }

    /// The network this pool hands out.
    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    fn addr_of(&self, idx: usize) -> Ipv4Addr {
        // Index 0 is network + 2: network + 1 is the server.
        Ipv4Addr::from(self.net.network + 2 + idx as u32)
    }

    fn index_of(&self, addr: Ipv4Addr) -> Option<usize> {
        let off = u32::from(addr).checked_sub(self.net.network + 2)? as usize;
        (off < self.used.len()).then_some(off)
    }

    /// Takes a free address, or `None` when the pool is exhausted. Rotates
    /// through the pool so a just-released address is not reused at once.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let n = self.used.len();
        for i in 0..n {
            let idx = (self.next + i) % n;
            if !self.used[idx] {
                self.used[idx] = true;
                self.next = (idx + 1) % n;
                return Some(self.addr_of(idx));
            }
        }
        None
    }

    /// Takes `preferred` if it is free, else any free address: a peer that
    /// comes back keeps the address its applications and firewall rules know.
    pub fn allocate_preferring(&mut self, preferred: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(idx) = preferred.and_then(|a| self.index_of(a)) {
            if !self.used[idx] {
                self.used[idx] = true;
                return Some(self.addr_of(idx));
            }
        }
        self.allocate()
    }

    /// Returns an address to the pool. Unknown addresses are ignored.
    pub fn release(&mut self, addr: Ipv4Addr) {
        if let Some(idx) = self.index_of(addr) {
            self.used[idx] = false;
        }
    }

    /// How many addresses are handed out.
    pub fn in_use(&self) -> usize {
        self.used.iter().filter(|u| **u).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let n: Ipv4Net = "198.18.0.7/24".parse().unwrap();
        assert_eq!(n.to_string(), "198.18.0.0/24");
        assert_eq!(n.first_host(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(n.hosts(), 254);
        assert!(n.contains(Ipv4Addr::new(198, 18, 0, 200)));
        assert!(!n.contains(Ipv4Addr::new(198, 18, 1, 1)));
        for bad in [
            "198.18.0.0",
            "198.18.0.0/31",
            "198.18.0.0/4",
            "x/24",
            "1.2.3.4/x",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allocates_after_server_and_exhausts() {
        let mut p = IpPool::new("198.18.0.0/30".parse().unwrap());
        // /30: hosts .1 (server) and .2 (the only client address).
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!(p.allocate(), None);
        p.release(Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(198, 18, 0, 2)));
        p.release(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.in_use(), 1);
    }

    #[test]
    fn preferred_address_when_free() {
        let mut p = IpPool::new("198.18.0.0/24".parse().unwrap());
        let a = p.allocate().unwrap();
        p.release(a);
        assert_eq!(p.allocate_preferring(Some(a)), Some(a));
        // Taken: any other address.
        let b = p.allocate_preferring(Some(a)).unwrap();
        assert_ne!(a, b);
        // Outside the pool: ignored.
        assert!(p
            .allocate_preferring(Some(Ipv4Addr::new(10, 0, 0, 1)))
            .is_some());
    }

    #[test]
    fn rotates_through_addresses() {
        let mut p = IpPool::new("198.18.0.0/24".parse().unwrap());
        let a = p.allocate().unwrap();
        p.release(a);
        let b = p.allocate().unwrap();
        assert_ne!(a, b);
    }
}
