//! The `user_data` codec: every submission carries which path, which slot and
//! which generation it belongs to, so its completion finds its owner.
//!
//! ```text
//!  63      56 55                  32 31                              0
//! +----------+----------------------+--------------------------------+
//! |   path   |  generation (24 bit) |            slot                |
//! +----------+----------------------+--------------------------------+
//! ```
//!
//! A slot's generation advances each time it is armed, so a completion that
//! arrives late (after a cancel, say) can never be taken for the slot's newer
//! request.

/// Which I/O path a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Path {
    /// A read from the TUN device.
    TunRx = 1,
    /// A receive on the UDP socket.
    UdpRx = 2,
    /// A send: UDP sendmsg or TUN write.
    Tx = 3,
    /// The periodic timer.
    Timer = 4,
    /// The signalfd read that asks for shutdown.
    Signal = 5,
    /// A cancel request (its own completion carries nothing we need).
    Cancel = 6,
    /// A poll waiting for the TUN to become readable after EAGAIN.
    TunPoll = 7,
    /// The multishot accept on the TCP listener.
    Accept = 8,
    /// A receive on a TCP connection (slot = connection index).
    TcpRx = 9,
    /// A send on a TCP connection (slot = connection index).
    TcpTx = 10,
    /// The multishot receive on the UDP socket (offload: buffers from a provided ring).
    UdpRxMulti = 11,
    /// The multishot read on the TUN (offload: buffers from a provided ring).
    TunRxMulti = 12,
}

impl Path {
    /// Every path, in tag order.
    pub const ALL: [Path; 12] = [
        Path::TunRx,
        Path::UdpRx,
        Path::Tx,
        Path::Timer,
        Path::Signal,
        Path::Cancel,
        Path::TunPoll,
        Path::Accept,
        Path::TcpRx,
        Path::TcpTx,
        Path::UdpRxMulti,
        Path::TunRxMulti,
    ];

    /// Whether one submission on this path may complete many times: such a
    /// request stays in flight (and counted) while its completions carry the
    /// "more" flag, and ends with the first one that does not.
    pub const fn is_multishot(self) -> bool {
        matches!(
            self,
            Path::Accept | Path::TunPoll | Path::UdpRxMulti | Path::TunRxMulti
        )
    }

    fn from_u8(b: u8) -> Option<Self> {
        // Tags run 1..=12 in `ALL` order (a test holds this), so the tag is an index.
        Path::ALL.get(usize::from(b).wrapping_sub(1)).copied()
    }
}

/// Generations wrap at 24 bits.
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserData {
    /// The path.
    pub path: Path,
    /// The slot index within the path's table.
    pub slot: u32,
    /// The slot's generation when the request was armed.
    pub generation: u32,
}

impl UserData {
    /// Packs into the 64-bit value io_uring carries.
    pub fn encode(self) -> u64 {
        (u64::from(self.path as u8) << 56)
            | (u64::from(self.generation & GENERATION_MASK) << 32)
            | u64::from(self.slot)
    }

    /// Unpacks; `None` for values we never produced.
    pub fn decode(v: u64) -> Option<Self> {
        Some(UserData {
            path: Path::from_u8((v >> 56) as u8)?,
            generation: ((v >> 32) as u32) & GENERATION_MASK,
            slot: v as u32,
        })
    }
}

/// The next generation after `g`, wrapping within 24 bits.
pub fn next_generation(g: u32) -> u32 {
    (g + 1) & GENERATION_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_path_and_extremes() {
        for path in Path::ALL {
            for (slot, generation) in [(0, 0), (u32::MAX, GENERATION_MASK), (17, 99)] {
                let u = UserData {
                    path,
                    slot,
                    generation,
                };
                assert_eq!(UserData::decode(u.encode()), Some(u));
            }
        }
        assert_eq!(UserData::decode(0), None);
        assert_eq!(UserData::decode(0xff << 56), None);
    }

    #[test]
    fn all_lists_every_tag_once_and_only_accept_poll_and_the_multishot_receives_are_multishot() {
        let tags: Vec<u8> = Path::ALL.iter().map(|p| *p as u8).collect();
        assert_eq!(tags, (1..=12).collect::<Vec<u8>>());
        let multishot: Vec<Path> = Path::ALL.into_iter().filter(|p| p.is_multishot()).collect();
        assert_eq!(
            multishot,
            [
                Path::TunPoll,
                Path::Accept,
                Path::UdpRxMulti,
                Path::TunRxMulti
            ]
        );
    }

    #[test]
    fn generation_wraps() {
        assert_eq!(next_generation(GENERATION_MASK), 0);
        assert_eq!(next_generation(1), 2);
    }
}
