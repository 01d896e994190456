//! What the queue did, as plain counters a driver can print per direction.

/// Why an item left the queue without being dequeued. Every dropped item is handed back
/// to the caller's sink with one of these, so the caller recycles its buffer and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The queue was at `limit_items` or `limit_bytes`: the item came from the head of the
    /// fattest flow to make room for an arriving one (or was the arriving item itself,
    /// when it is longer than `limit_bytes` on its own).
    Overflow,
    /// CoDel: the item's flow kept a standing queue above `target` for an `interval`, and
    /// the item was not ECN-capable (or ECN is off).
    Codel,
}

/// Counters since construction (`u64`, never reset) and gauges of the present state.
///
/// Conservation holds at every moment:
/// `enqueued == dequeued + dropped_overflow + dropped_codel + flushed + items`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Items handed to `enqueue`, including any refused at once.
    pub enqueued: u64,
    /// Their bytes.
    pub enqueued_bytes: u64,
    /// Items returned by `dequeue`.
    pub dequeued: u64,
    /// Their bytes.
    pub dequeued_bytes: u64,
    /// Of the dequeued items, those that came from a sparse (new) flow: ping, DNS, ACKs,
    /// interactive traffic, the first quantum of anything that was idle.
    pub sparse_dequeues: u64,
    /// Of the dequeued items, those that came from a bulk (old) flow.
    pub bulk_dequeues: u64,
    /// Items dropped with [`DropReason::Overflow`].
    pub dropped_overflow: u64,
    /// Their bytes.
    pub dropped_overflow_bytes: u64,
    /// Times the limits forced a batch drop (each drops 1..=`drop_batch` items).
    pub overflow_batches: u64,
    /// Items dropped with [`DropReason::Codel`].
    pub dropped_codel: u64,
    /// Their bytes.
    pub dropped_codel_bytes: u64,
    /// Dequeued items the caller was told to mark CE (instead of CoDel dropping them).
    pub marked_ce: u64,
    /// Items handed back by `clear`.
    pub flushed: u64,
    /// Times an idle flow became active (joined the new-flows list).
    pub flow_activations: u64,
    /// Items queued now.
    pub items: u64,
    /// Bytes queued now.
    pub bytes: u64,
    /// Most items ever queued at once.
    pub peak_items: u64,
    /// Most bytes ever queued at once.
    pub peak_bytes: u64,
    /// Flows in the scheduler now (queued items, or just emptied and not yet retired).
    pub active_flows: u64,
}

impl Stats {
    /// Items dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_overflow + self.dropped_codel
    }
}
