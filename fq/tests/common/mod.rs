//! Shared by the integration tests: a non-Copy item, a simulated clock, a drop recorder,
//! packet builders and a textbook checksum written independently of the crate.
#![allow(dead_code)] // each test binary uses a different part

use std::time::{Duration, Instant};

use ringway_fq::{DropReason, Meta};

/// An item the queue must hand back: neither `Copy` nor `Clone`, like the server's
/// buffer tokens.
#[derive(Debug, PartialEq, Eq)]
pub struct Token(pub u32);

/// Simulated time: one real `Instant` read at the start, then offsets.
pub struct Clock {
    base: Instant,
    pub now: Duration,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            base: Instant::now(),
            now: Duration::ZERO,
        }
    }

    pub fn now(&self) -> Instant {
        self.base + self.now
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }
}

/// Drops seen by a sink, in order.
#[derive(Debug, Default)]
pub struct Drops(pub Vec<(u32, DropReason, Duration)>);

impl Drops {
    /// A sink that records (at time zero).
    pub fn sink(&mut self) -> impl FnMut(Token, DropReason) + '_ {
        move |t, why| self.0.push((t.0, why, Duration::ZERO))
    }

    pub fn count(&self, why: DropReason) -> usize {
        self.0.iter().filter(|d| d.1 == why).count()
    }
}

pub fn meta(flow: u32, len: usize) -> Meta {
    Meta {
        flow,
        len,
        ect: false,
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// RFC 1071 the slow way: 16-bit big-endian words summed in a u32 with end-around carry.
pub fn textbook_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in header.chunks(2) {
        let word = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
        sum += word;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    !(sum as u16)
}

/// An IPv4 packet: 20-byte header with a valid checksum, then `l4` (e.g. ports first).
pub fn ipv4(tos: u8, proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
    let len = 20 + l4.len();
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[1] = tos;
    p[2..4].copy_from_slice(&(len.min(65535) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..].copy_from_slice(l4);
    let c = textbook_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

/// An IPv6 packet with traffic class `tc`, extension headers `ext` (already chained: the
/// first byte of each is its next header) starting with `next`, then `l4`.
pub fn ipv6(tc: u8, next: u8, src: [u8; 16], dst: [u8; 16], ext: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60 | (tc >> 4);
    p[1] = (tc << 4) | 0x0a; // and some flow label bits
    p[2] = 0xbc;
    p[3] = 0xde;
    let plen = ext.len() + l4.len();
    p[4..6].copy_from_slice(&(plen.min(65535) as u16).to_be_bytes());
    p[6] = next;
    p[7] = 64;
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    p.extend_from_slice(ext);
    p.extend_from_slice(l4);
    p
}

/// TCP/UDP-style first bytes: source port, destination port, then `rest` zero bytes.
pub fn ports(sport: u16, dport: u16, rest: usize) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(4 + rest);
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.resize(4 + rest, 0);
    l4
}
