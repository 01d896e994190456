//! The little the client needs to know about the IP packets it carries.
//!
//! The tunnel is IPv4-only. The TUN still hands us the odd IPv6 packet (router
//! solicitations, MLD) when the kernel has IPv6 on for it; those are dropped
//! before sealing, as the server would drop them anyway. Inbound, a packet is
//! written to the TUN only if it is IPv4 and addressed to the address the server
//! assigned us: a server, or anything that holds the session key, must not be
//! able to inject packets for other local addresses through the tunnel.
//!
//! The two fields read here (version and destination) in the IPv4 header:
//!
//! ```text
//!  0       4       8               16                              32
//! +-------+-------+---------------+-------------------------------+
//! |version|  IHL  |      TOS      |         total length          |
//! +-------+-------+---------------+-------------------------------+
//! |   id, flags, TTL, protocol, checksum (bytes 4..12, unread)    |
//! +---------------------------------------------------------------+
//! |            source address (bytes 12..16, unread)              |
//! +---------------------------------------------------------------+
//! |             destination address (bytes 16..20)                |
//! +---------------------------------------------------------------+
//! ```

use std::net::Ipv4Addr;

/// Bytes in an IPv4 header without options.
pub const IPV4_MIN_HEADER: usize = 20;

/// Whether `packet` starts like an IPv4 packet (version 4, room for a header).
pub fn is_ipv4(packet: &[u8]) -> bool {
    packet.len() >= IPV4_MIN_HEADER && packet[0] >> 4 == 4
}

/// The destination of an IPv4 packet, or `None` if it is not one.
pub fn ipv4_destination(packet: &[u8]) -> Option<Ipv4Addr> {
    if !is_ipv4(packet) {
        return None;
    }
    let d: [u8; 4] = packet[16..20].try_into().ok()?;
    Some(Ipv4Addr::from(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(dst: [u8; 4]) -> [u8; 20] {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn reads_destination() {
        assert_eq!(
            ipv4_destination(&v4([198, 18, 0, 2])),
            Some(Ipv4Addr::new(198, 18, 0, 2))
        );
    }

    #[test]
    fn rejects_other_versions_and_short_packets() {
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        assert!(!is_ipv4(&v6));
        assert_eq!(ipv4_destination(&v6), None);
        assert!(!is_ipv4(&v4([1, 2, 3, 4])[..19]));
        assert!(!is_ipv4(&[]));
    }
}
