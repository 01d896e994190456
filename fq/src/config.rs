//! The queue's tunables, their defaults and why, checked once at construction.

use std::time::Duration;

/// Tunables of a [`FlowQueue`](crate::FlowQueue). Every field has a default that suits a
/// tunnel endpoint; [`Config::validate`] names the field that is out of range.
///
/// Memory is fixed by `flows` and `limit_items` alone (see
/// [`FlowQueue::memory_bytes`](crate::FlowQueue::memory_bytes)); `limit_bytes` bounds what
/// the queued items stand for in the caller's buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Flow buckets. Inner flows are hashed into them; two flows sharing a bucket share a
    /// queue (and its CoDel state). With 1024, two given flows collide with probability
    /// 1/1024 and some pair among 10 busy flows does ~4 % of the time (the birthday
    /// bound), for ~100 bytes of state per bucket.
    pub flows: u32,
    /// Items queued at most. At the limit an enqueue first drops from the head of the
    /// fattest flow (see `drop_batch`). 1024 full-size packets are ~12 ms at 1 Gbit/s: room
    /// for bursts, while CoDel keeps the standing queue near `target`.
    pub limit_items: u32,
    /// Bytes (the `len`s the caller gave) queued at most, enforced like `limit_items`.
    /// 4 MiB is 64 GSO superpackets of 64 KiB, ~30 ms at 1 Gbit/s. An item longer than
    /// this on its own is refused (handed back as an overflow drop).
    pub limit_bytes: u32,
    /// Bytes a flow may send per deficit-round-robin round. One full-size IP packet (1500,
    /// above the tunnel's 1420-byte inner MTU), as RFC 8290 recommends: a flow that sends
    /// less than this per round counts as sparse and goes first. Items may be larger
    /// (64 KiB GSO superpackets): the flow's deficit then goes negative and it sits out
    /// rounds until it is paid back, so sharing stays fair in bytes whatever the item
    /// sizes; the cost is one list rotation per `quantum` bytes, amortised.
    pub quantum: u32,
    /// CoDel's acceptable standing delay (sojourn time in the queue). 5 ms, as RFC 8289
    /// recommends for an interval of 100 ms: 5-10 % of it.
    pub target: Duration,
    /// CoDel's window: a queue must stay above `target` this long before the first drop,
    /// and the drop rate then grows as `interval / sqrt(count)`. It should be about the
    /// round-trip time of the flows being controlled, because that is how long a sender
    /// takes to react to a drop. Flows through a tunnel have the tunnel's RTT (sub-ms to
    /// tens of ms here) plus whatever lies beyond the far end, so the Internet default of
    /// 100 ms fits them; a tunnel that only carries LAN traffic can use e.g. 20 ms with a
    /// 1 ms target to keep its queues shorter.
    pub interval: Duration,
    /// Mark ECN-capable items CE instead of dropping them (the caller marks, see
    /// [`Dequeued::mark_ce`](crate::Dequeued::mark_ce)). On, as in fq_codel: an ECN-capable
    /// TCP halves its window without losing a packet.
    pub ecn: bool,
    /// CoDel drops or marks nothing while at most this many bytes remain queued behind the
    /// head item (the whole queue's bytes): a lone packet is not a standing queue. One
    /// full-size packet, as fq_codel uses the device MTU.
    pub mtu: u32,
    /// At the limits, drop up to this many items from the fattest flow at once (or until
    /// half its bytes, or a 64th of `limit_bytes`, are gone), so finding the fattest flow
    /// (a scan of all buckets) is paid once per batch, not once per arriving packet. 64,
    /// as fq_codel.
    pub drop_batch: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            flows: 1024,
            limit_items: 1024,
            limit_bytes: 4 << 20,
            quantum: 1500,
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
            ecn: true,
            mtu: 1500,
            drop_batch: 64,
        }
    }
}

/// Largest `flows`: 2^20 buckets (~80 MiB of flow state) is past any sane use.
pub const MAX_FLOWS: u32 = 1 << 20;
/// Largest `limit_items`: 2^24 slots; indices must stay below `u32::MAX`.
pub const MAX_ITEMS: u32 = 1 << 24;
/// Longest `interval` or `target`: an hour (keeps every time sum far from overflow).
pub const MAX_TIME: Duration = Duration::from_secs(3600);

/// A field of [`Config`] out of range: the message names the field and the range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `flows` is 0 or above [`MAX_FLOWS`].
    #[error("fq: `flows` must be 1..={MAX_FLOWS}, got {0}")]
    Flows(u32),
    /// `limit_items` is 0 or above [`MAX_ITEMS`].
    #[error("fq: `limit_items` must be 1..={MAX_ITEMS}, got {0}")]
    LimitItems(u32),
    /// `limit_bytes` is 0.
    #[error("fq: `limit_bytes` must be at least 1")]
    LimitBytes,
    /// `quantum` is 0.
    #[error("fq: `quantum` must be at least 1 byte")]
    Quantum,
    /// `target` is zero or above [`MAX_TIME`].
    #[error("fq: `target` must be above zero and at most an hour, got {0:?}")]
    Target(Duration),
    /// `interval` is zero or above [`MAX_TIME`].
    #[error("fq: `interval` must be above zero and at most an hour, got {0:?}")]
    Interval(Duration),
    /// `drop_batch` is 0.
    #[error("fq: `drop_batch` must be at least 1")]
    DropBatch,
}

impl Config {
    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.flows == 0 || self.flows > MAX_FLOWS {
            return Err(ConfigError::Flows(self.flows));
        }
        if self.limit_items == 0 || self.limit_items > MAX_ITEMS {
            return Err(ConfigError::LimitItems(self.limit_items));
        }
        if self.limit_bytes == 0 {
            return Err(ConfigError::LimitBytes);
        }
        if self.quantum == 0 {
            return Err(ConfigError::Quantum);
        }
        if self.target.is_zero() || self.target > MAX_TIME {
            return Err(ConfigError::Target(self.target));
        }
        if self.interval.is_zero() || self.interval > MAX_TIME {
            return Err(ConfigError::Interval(self.interval));
        }
        if self.drop_batch == 0 {
            return Err(ConfigError::DropBatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_say_what_the_docs_say() {
        let c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.flows, 1024);
        assert_eq!(c.target, Duration::from_millis(5));
        assert_eq!(c.interval, Duration::from_millis(100));
        assert_eq!(c.quantum, 1500);
        assert!(c.ecn);
    }

    #[test]
    fn each_bad_field_is_named() {
        let bad = [
            (
                Config {
                    flows: 0,
                    ..Config::default()
                },
                "`flows`",
            ),
            (
                Config {
                    flows: MAX_FLOWS + 1,
                    ..Config::default()
                },
                "`flows`",
            ),
            (
                Config {
                    limit_items: 0,
                    ..Config::default()
                },
                "`limit_items`",
            ),
            (
                Config {
                    limit_bytes: 0,
                    ..Config::default()
                },
                "`limit_bytes`",
            ),
            (
                Config {
                    quantum: 0,
                    ..Config::default()
                },
                "`quantum`",
            ),
            (
                Config {
                    target: Duration::ZERO,
                    ..Config::default()
                },
                "`target`",
            ),
            (
                Config {
                    interval: MAX_TIME * 2,
                    ..Config::default()
                },
                "`interval`",
            ),
            (
                Config {
                    drop_batch: 0,
                    ..Config::default()
                },
                "`drop_batch`",
            ),
        ];
        for (config, field) in bad {
            let err = config.validate().expect_err(field);
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
    }
}
