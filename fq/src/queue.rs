//! The flow queue: items in a preallocated slab, threaded into per-flow FIFOs by index;
//! flows threaded into two scheduling lists (new = sparse, old = bulk) by index; deficit
//! round robin over the lists and CoDel at the head of the chosen flow.
//!
//! ```text
//!  enqueue ─▶ bucket = flow % flows ─▶ flow's FIFO tail        dequeue: first flow of
//!              idle flow? ─▶ tail of new_flows, deficit = quantum     new_flows, else old_flows
//!  over a limit? drop a batch from the head of the fattest flow       deficit <= 0: += quantum,
//!                                                                       to tail of old_flows
//!                                                                     CoDel pops its head (drop
//!                                                                       or mark if standing queue)
//!                                                                     emptied: to old_flows if it
//!                                                                       was new, else retired
//! ```
//!
//! A flow that empties while on the new list moves to the old list instead of leaving:
//! otherwise a flow that sends one packet per round would stay "new" forever and starve
//! the old ones (RFC 8290 §4.2). All links are `u32` indices, `NIL` for none.
//!
//! `dequeue_ready` passes over a flow whose head the caller cannot take now (its outlet is
//! full): to the back of the old list, deficit and head untouched, so one full outlet
//! neither stalls the others nor loses its place in line.

use std::fmt;
use std::time::{Duration, Instant};

use crate::codel::{control_law, CodelParams, CodelVars};
use crate::config::{Config, ConfigError};
use crate::stats::{DropReason, Stats};

const NIL: u32 = u32::MAX;

/// What the queue needs to know about an item besides the item itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The item's flow: a hash of the inner 5-tuple ([`inner::flow_hash`](crate::inner::flow_hash)).
    /// Reduced modulo `flows`; any `u32` is accepted.
    pub flow: u32,
    /// The item's size in bytes: what DRR charges and `limit_bytes` counts.
    pub len: usize,
    /// The item is ECN-capable (ECT(0) or ECT(1)): CoDel may ask for a CE mark instead of
    /// dropping it. Only say so when marking the item would succeed.
    pub ect: bool,
}

/// An item leaving the queue the regular way.
#[derive(Debug)]
pub struct Dequeued<T> {
    /// The item.
    pub item: T,
    /// Its `len` as enqueued.
    pub len: usize,
    /// CoDel chose this item to signal congestion and it is ECN-capable: the caller must
    /// set CE on it ([`inner::mark_ce`](crate::inner::mark_ce)) before sealing.
    pub mark_ce: bool,
    /// Time from its enqueue to this dequeue.
    pub sojourn: Duration,
    /// It came from a sparse (new) flow rather than a bulk (old) one.
    pub sparse: bool,
}

/// How an enqueue went. Any item dropped on the way went to the sink first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued; nothing else moved.
    Queued,
    /// Queued after `dropped` items from the head of the fattest flow (possibly the
    /// item's own) went to the sink with [`DropReason::Overflow`].
    QueuedAfterDrop {
        /// How many.
        dropped: u32,
    },
    /// The item is longer than `limit_bytes` on its own: it went straight to the sink with
    /// [`DropReason::Overflow`], and the queue is unchanged.
    Refused,
}

/// One queued item and what the queue remembers about it.
struct Entry<T> {
    item: T,
    since: Instant,
    len: u32,
    ect: bool,
}

/// A slab cell: an item (if in use) and the next cell of its flow's FIFO, or of the free
/// list when empty.
struct Slot<T> {
    entry: Option<Entry<T>>,
    next: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    Idle,
    New,
    Old,
}

/// A flow bucket: its FIFO of slots, its DRR and CoDel state, its link in a list.
#[derive(Debug, Clone, Copy)]
struct Flow {
    head: u32,
    tail: u32,
    deficit: i64,
    list: List,
    next: u32,
    codel: CodelVars,
}

impl Flow {
    const IDLE: Flow = Flow {
        head: NIL,
        tail: NIL,
        deficit: 0,
        list: List::Idle,
        next: NIL,
        codel: CodelVars {
            count: 0,
            lastcount: 0,
            dropping: false,
            drop_next: None,
            first_above: None,
        },
    };
}

/// A singly linked list of flows, threaded through `Flow::next`.
#[derive(Debug, Clone, Copy)]
struct FlowList {
    head: u32,
    tail: u32,
}

impl FlowList {
    const EMPTY: FlowList = FlowList {
        head: NIL,
        tail: NIL,
    };

    fn is_empty(&self) -> bool {
        self.head == NIL
    }

    fn push_back(&mut self, flows: &mut [Flow], f: u32) {
        flows[f as usize].next = NIL;
        if self.tail == NIL {
            self.head = f;
        } else {
            flows[self.tail as usize].next = f;
        }
        self.tail = f;
    }

    fn pop_front(&mut self, flows: &mut [Flow]) -> u32 {
        let f = self.head;
        debug_assert_ne!(f, NIL, "pop_front of an empty flow list");
        self.head = flows[f as usize].next;
        if self.head == NIL {
            self.tail = NIL;
        }
        flows[f as usize].next = NIL;
        f
    }
}

/// Per-flow fair queue with CoDel, generic over the queued item.
///
/// The queue never drops an item itself: every item handed to [`enqueue`](Self::enqueue)
/// comes back exactly once, from [`dequeue`](Self::dequeue), from the `sink` of either
/// call with a [`DropReason`], or from [`clear`](Self::clear). That is why dropping goes
/// through a caller-supplied `FnMut(T, DropReason)` rather than `Drop`: the server's items
/// are buffer tokens that must return to their pool. A sink (rather than a returned list)
/// keeps the call allocation-free when a batch or a CoDel run drops several items.
///
/// All memory is allocated by [`new`](Self::new); nothing grows afterwards. No method
/// reads a clock: each takes `now`. No method panics, whatever the `Meta` or the order of
/// calls (`now` going backwards reads as zero sojourn).
pub struct FlowQueue<T> {
    config: Config,
    codel: CodelParams,
    slots: Vec<Slot<T>>,
    free: u32,
    flows: Vec<Flow>,
    /// Per flow `bytes << 32 | items`, apart from `flows` so the fattest-flow scan reads
    /// 8 bytes per bucket and compares bytes first, then items (zero-length items count).
    weight: Vec<u64>,
    new_flows: FlowList,
    old_flows: FlowList,
    stats: Stats,
}

impl<T> fmt::Debug for FlowQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowQueue")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T> FlowQueue<T> {
    /// A queue with all its memory: `limit_items` slots and `flows` buckets.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let n = config.limit_items;
        let slots = (0..n)
            .map(|i| Slot {
                entry: None,
                next: if i + 1 < n { i + 1 } else { NIL },
            })
            .collect();
        Ok(FlowQueue {
            codel: CodelParams {
                target: config.target,
                interval: config.interval,
                mtu: u64::from(config.mtu),
            },
            slots,
            free: 0,
            flows: vec![Flow::IDLE; config.flows as usize],
            weight: vec![0; config.flows as usize],
            new_flows: FlowList::EMPTY,
            old_flows: FlowList::EMPTY,
            stats: Stats::default(),
            config,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.stats.items as usize
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.stats.items == 0
    }

    /// Bytes queued (the sum of the queued items' `len`).
    pub fn bytes(&self) -> u64 {
        self.stats.bytes
    }

    /// Heap memory held, fixed at construction (the items' own heap data, if any, aside).
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot<T>>()
            + self.flows.capacity() * std::mem::size_of::<Flow>()
            + self.weight.capacity() * std::mem::size_of::<u64>()
    }

    /// Queues `item` at the tail of its flow. If that would pass `limit_items` or
    /// `limit_bytes`, first drops batches from the head of the fattest flow into `sink`
    /// (fq_codel's policy: the flow hogging the queue pays, head first so its sender
    /// hears of it soonest) until the item fits.
    pub fn enqueue(
        &mut self,
        now: Instant,
        item: T,
        meta: Meta,
        mut sink: impl FnMut(T, DropReason),
    ) -> Enqueued {
        self.stats.enqueued += 1;
        self.stats.enqueued_bytes += meta.len as u64;
        let len = match u32::try_from(meta.len) {
            Ok(len) if len <= self.config.limit_bytes => len,
            _ => {
                self.stats.dropped_overflow += 1;
                self.stats.dropped_overflow_bytes += meta.len as u64;
                sink(item, DropReason::Overflow);
                return Enqueued::Refused;
            }
        };
        let mut dropped = 0u32;
        while self.stats.items >= u64::from(self.config.limit_items)
            || self.stats.bytes + u64::from(len) > u64::from(self.config.limit_bytes)
        {
            let n = self.drop_from_fattest(&mut sink);
            if n == 0 {
                // Unreachable: over a limit means something is queued, and the fattest
                // flow of a non-empty queue has an item. Refuse rather than corrupt.
                debug_assert!(false, "over a limit with nothing to drop");
                self.stats.dropped_overflow += 1;
                self.stats.dropped_overflow_bytes += u64::from(len);
                sink(item, DropReason::Overflow);
                return Enqueued::Refused;
            }
            dropped += n;
        }

        let slot = self.free;
        let cell = &mut self.slots[slot as usize];
        self.free = cell.next;
        debug_assert!(cell.entry.is_none(), "free slot {slot} holds an item");
        cell.entry = Some(Entry {
            item,
            since: now,
            len,
            ect: meta.ect,
        });
        cell.next = NIL;

        let f = (meta.flow % self.config.flows) as usize;
        let flow = &mut self.flows[f];
        if flow.tail == NIL {
            flow.head = slot;
        } else {
            self.slots[flow.tail as usize].next = slot;
        }
        flow.tail = slot;
        self.weight[f] += (u64::from(len) << 32) + 1;
        if flow.list == List::Idle {
            flow.list = List::New;
            flow.deficit = i64::from(self.config.quantum);
            self.new_flows.push_back(&mut self.flows, f as u32);
            self.stats.active_flows += 1;
            self.stats.flow_activations += 1;
        }

        let s = &mut self.stats;
        s.items += 1;
        s.bytes += u64::from(len);
        s.peak_items = s.peak_items.max(s.items);
        s.peak_bytes = s.peak_bytes.max(s.bytes);
        if dropped == 0 {
            Enqueued::Queued
        } else {
            Enqueued::QueuedAfterDrop { dropped }
        }
    }

    /// The next item by deficit round robin: sparse (new) flows first, then bulk (old)
    /// flows, each allowed `quantum` bytes per round. CoDel runs at the head of the chosen
    /// flow: items it drops go to `sink` with [`DropReason::Codel`], an ECN-capable item
    /// it picks comes back with `mark_ce` set. `None` only when the queue is empty.
    ///
    /// Call it when the item can be sent right away (a tx slot is free, the socket is
    /// writable): the sojourn CoDel judges is measured here.
    pub fn dequeue(
        &mut self,
        now: Instant,
        sink: impl FnMut(T, DropReason),
    ) -> Option<Dequeued<T>> {
        self.dequeue_ready(now, |_| true, sink)
    }

    /// [`dequeue`](Self::dequeue), passing over flows whose head item the caller cannot
    /// take now (`ready` says `false`: the item's own outlet is full, while others may
    /// have room). A passed-over flow goes to the back of the old list with its deficit
    /// and its head untouched (CoDel judges it when it does leave, sojourn and all).
    /// `None` when the queue is empty or every flow's head is not ready.
    ///
    /// `ready` sees the head; if CoDel then drops it, the next item of the same flow
    /// comes out unasked, so the caller must be able to take one item more than it said.
    pub fn dequeue_ready(
        &mut self,
        now: Instant,
        mut ready: impl FnMut(&T) -> bool,
        mut sink: impl FnMut(T, DropReason),
    ) -> Option<Dequeued<T>> {
        // The first flow passed over, and whether any flow got a top-up (was ready) since
        // it was: meeting it again with none means every flow is blocked.
        let mut first_passed: Option<u32> = None;
        let mut topped = false;
        loop {
            let (list, f) = if !self.new_flows.is_empty() {
                (List::New, self.new_flows.head)
            } else if !self.old_flows.is_empty() {
                (List::Old, self.old_flows.head)
            } else {
                return None;
            };
            let fi = f as usize;
            let head = self.flows[fi].head;
            let blocked = head != NIL
                && self.slots[head as usize]
                    .entry
                    .as_ref()
                    .is_some_and(|e| !ready(&e.item));
            if blocked {
                match first_passed {
                    Some(first) if first == f && !topped => return None,
                    Some(first) if first == f => topped = false,
                    Some(_) => {}
                    None => first_passed = Some(f),
                }
                self.unlink_front(list);
                self.flows[fi].list = List::Old;
                self.old_flows.push_back(&mut self.flows, f);
                continue;
            }
            if self.flows[fi].deficit <= 0 {
                // Spent its share this round: top it up and send it to the back.
                self.flows[fi].deficit += i64::from(self.config.quantum);
                self.unlink_front(list);
                self.flows[fi].list = List::Old;
                self.old_flows.push_back(&mut self.flows, f);
                topped = true;
                continue;
            }
            match self.codel_pop(fi, now, &mut sink) {
                Some((entry, mark_ce)) => {
                    self.flows[fi].deficit -= i64::from(entry.len);
                    let s = &mut self.stats;
                    s.dequeued += 1;
                    s.dequeued_bytes += u64::from(entry.len);
                    if list == List::New {
                        s.sparse_dequeues += 1;
                    } else {
                        s.bulk_dequeues += 1;
                    }
                    if mark_ce {
                        s.marked_ce += 1;
                    }
                    return Some(Dequeued {
                        item: entry.item,
                        len: entry.len as usize,
                        mark_ce,
                        sojourn: now.saturating_duration_since(entry.since),
                        sparse: list == List::New,
                    });
                }
                None => {
                    // Empty. A new flow goes through the old list once before it may be
                    // new again, so it cannot starve the old flows by always refilling.
                    self.unlink_front(list);
                    if list == List::New && !self.old_flows.is_empty() {
                        self.flows[fi].list = List::Old;
                        self.old_flows.push_back(&mut self.flows, f);
                    } else {
                        self.flows[fi].list = List::Idle;
                        self.stats.active_flows -= 1;
                    }
                }
            }
        }
    }

    /// Drops a batch from the head of the fattest flow into `sink`, as an enqueue over the
    /// limits does: for a caller whose own buffers ran out before the queue's limits did
    /// (items of different sizes from different pools). Returns how many went; 0 only when
    /// the queue is empty.
    pub fn drop_fattest(&mut self, mut sink: impl FnMut(T, DropReason)) -> u32 {
        self.drop_from_fattest(&mut sink)
    }

    /// Hands every queued item to `f` (flow by flow, each in FIFO order) and resets all
    /// flows: for a session that ends or a driver that stops.
    pub fn clear(&mut self, mut f: impl FnMut(T)) {
        for fi in 0..self.flows.len() {
            while let Some(entry) = self.pop_head(fi) {
                self.stats.flushed += 1;
                f(entry.item);
            }
            self.flows[fi] = Flow::IDLE;
        }
        self.new_flows = FlowList::EMPTY;
        self.old_flows = FlowList::EMPTY;
        self.stats.active_flows = 0;
    }

    fn unlink_front(&mut self, list: List) {
        match list {
            List::New => self.new_flows.pop_front(&mut self.flows),
            List::Old => self.old_flows.pop_front(&mut self.flows),
            List::Idle => {
                debug_assert!(false, "unlink from no list");
                NIL
            }
        };
    }

    /// Takes the head item of flow `fi` off its FIFO and frees its slot.
    fn pop_head(&mut self, fi: usize) -> Option<Entry<T>> {
        let flow = &mut self.flows[fi];
        let slot = flow.head;
        if slot == NIL {
            return None;
        }
        let cell = &mut self.slots[slot as usize];
        let entry = cell.entry.take();
        flow.head = cell.next;
        if flow.head == NIL {
            flow.tail = NIL;
        }
        cell.next = self.free;
        self.free = slot;
        debug_assert!(entry.is_some(), "linked slot {slot} holds no item");
        let entry = entry?;
        self.weight[fi] -= (u64::from(entry.len) << 32) + 1;
        self.stats.items -= 1;
        self.stats.bytes -= u64::from(entry.len);
        Some(entry)
    }

    /// Drops a batch from the head of the fattest flow: up to `drop_batch` items, stopping
    /// once half its bytes, or a 64th of `limit_bytes`, are gone. Returns how many went.
    ///
    /// The byte cap matters for large items: 64 GSO superpackets are 4 MiB, and a batch
    /// that size is a loss burst no sender needs (measured: four bulk streams lost 1-2 %
    /// of their packets to it). With full-size packets the cap is above 64 of them, so a
    /// batch is fq_codel's.
    fn drop_from_fattest(&mut self, sink: &mut impl FnMut(T, DropReason)) -> u32 {
        let Some((fi, &w)) = self.weight.iter().enumerate().max_by_key(|&(_, w)| *w) else {
            return 0;
        };
        let threshold = ((w >> 32) / 2).min(u64::from(self.config.limit_bytes / 64).max(1));
        let mut n = 0u32;
        let mut bytes = 0u64;
        while let Some(entry) = self.pop_head(fi) {
            n += 1;
            bytes += u64::from(entry.len);
            self.stats.dropped_overflow += 1;
            self.stats.dropped_overflow_bytes += u64::from(entry.len);
            sink(entry.item, DropReason::Overflow);
            if n >= self.config.drop_batch || bytes >= threshold {
                break;
            }
        }
        if n > 0 {
            self.stats.overflow_batches += 1;
        }
        n
    }

    /// CoDel's dequeue (RFC 8289 §5.5 and Linux's `codel_dequeue`) on flow `fi`: the head
    /// item, unless the flow has kept a standing queue for an interval, in which case
    /// drops (or one mark) are due on the control law's schedule. Returns the item and
    /// whether to mark it, or `None` when the flow is empty (or CoDel's drops emptied it).
    fn codel_pop(
        &mut self,
        fi: usize,
        now: Instant,
        sink: &mut impl FnMut(T, DropReason),
    ) -> Option<(Entry<T>, bool)> {
        let p = self.codel;
        let ecn = self.config.ecn;
        let Some(mut entry) = self.pop_head(fi) else {
            self.flows[fi].codel.on_empty();
            return None;
        };
        let remaining = self.stats.bytes;
        let drop = self.flows[fi]
            .codel
            .should_drop(&p, entry.since, remaining, now);
        let v = self.flows[fi].codel;

        if v.dropping {
            if !drop {
                // Sojourn back under target: leave the dropping state.
                self.flows[fi].codel.dropping = false;
                return Some((entry, false));
            }
            let mut drop_next = v.drop_next.unwrap_or(now);
            if now < drop_next {
                return Some((entry, false));
            }
            // One drop per due time; a large backlog can make several due at once.
            let mut count = v.count;
            loop {
                count = count.saturating_add(1);
                self.flows[fi].codel.count = count;
                if ecn && entry.ect {
                    drop_next = control_law(drop_next, p.interval, count);
                    self.flows[fi].codel.drop_next = Some(drop_next);
                    return Some((entry, true));
                }
                self.drop_codel(entry, sink);
                let Some(next) = self.pop_head(fi) else {
                    self.flows[fi].codel.on_empty();
                    return None;
                };
                entry = next;
                let remaining = self.stats.bytes;
                let codel = &mut self.flows[fi].codel;
                if !codel.should_drop(&p, entry.since, remaining, now) {
                    codel.dropping = false;
                    return Some((entry, false));
                }
                drop_next = control_law(drop_next, p.interval, count);
                codel.drop_next = Some(drop_next);
                if now < drop_next {
                    return Some((entry, false));
                }
            }
        }

        if !drop {
            return Some((entry, false));
        }
        // Entering the dropping state: this item is the first signal.
        let mut result = None;
        if ecn && entry.ect {
            result = Some((entry, true));
        } else {
            self.drop_codel(entry, sink);
            if let Some(next) = self.pop_head(fi) {
                let remaining = self.stats.bytes;
                // For its effect on `first_above` only, as in Linux.
                self.flows[fi]
                    .codel
                    .should_drop(&p, next.since, remaining, now);
                result = Some((next, false));
            } else {
                self.flows[fi].codel.first_above = None;
            }
        }
        let codel = &mut self.flows[fi].codel;
        codel.dropping = true;
        // If the queue went bad again soon after the last dropping state, resume near the
        // drop rate that controlled it then rather than from one drop per interval.
        let delta = codel.count.wrapping_sub(codel.lastcount);
        let recent = codel
            .drop_next
            .is_some_and(|t| now.saturating_duration_since(t) < p.interval * 16);
        codel.count = if delta > 1 && recent { delta } else { 1 };
        codel.lastcount = codel.count;
        codel.drop_next = Some(control_law(now, p.interval, codel.count));
        result
    }

    fn drop_codel(&mut self, entry: Entry<T>, sink: &mut impl FnMut(T, DropReason)) {
        self.stats.dropped_codel += 1;
        self.stats.dropped_codel_bytes += u64::from(entry.len);
        sink(entry.item, DropReason::Codel);
    }
}
