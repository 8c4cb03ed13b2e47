//! Per-key serialisation: a key's next event starts only after the
//! previous one has its outcome.
//!
//! A key is *busy* while one of its calls is pending. Events that arrive
//! for a busy key park in a FIFO linked through a slab, and start one by
//! one as their predecessors finish. Keys whose calls finish at once never
//! enter the table, so the synchronous hot path costs one `is_empty`
//! check. Both tables are preallocated: the busy-key map holds at most
//! `max_concurrent_per_worker` keys (one pending call each) and the parked
//! slab at most `ring_capacity` events, and the worker stops taking events
//! before either would grow.

use std::collections::HashMap;

use slab::Slab;

use super::origin::Origin;
use crate::event::Event;

#[derive(Debug, Clone, Copy)]
struct Queue {
    head: Option<usize>,
    tail: Option<usize>,
}

#[derive(Debug)]
struct Parked {
    event: Event,
    origin: Origin,
    next: Option<usize>,
}

#[derive(Debug)]
pub(crate) struct KeyQueues {
    busy: HashMap<u64, Queue>,
    parked: Slab<Parked>,
    parked_cap: usize,
}

impl KeyQueues {
    pub(crate) fn new(max_busy: usize, parked_cap: usize) -> KeyQueues {
        KeyQueues {
            busy: HashMap::with_capacity(max_busy),
            parked: Slab::with_capacity(parked_cap),
            parked_cap,
        }
    }

    #[inline]
    pub(crate) fn is_busy(&self, key: u64) -> bool {
        !self.busy.is_empty() && self.busy.contains_key(&key)
    }

    pub(crate) fn mark_busy(&mut self, key: u64) {
        self.busy.entry(key).or_insert(Queue {
            head: None,
            tail: None,
        });
    }

    /// Parks `event` behind the busy `key`.
    pub(crate) fn park(&mut self, key: u64, event: Event, origin: Origin) {
        let node = self.parked.insert(Parked {
            event,
            origin,
            next: None,
        });
        let q = self
            .busy
            .get_mut(&key)
            .expect("park is only called for a busy key");
        match q.tail {
            Some(t) => self.parked[t].next = Some(node),
            None => q.head = Some(node),
        }
        q.tail = Some(node);
    }

    /// The next parked event of `key`, oldest first. The key stays busy.
    pub(crate) fn pop(&mut self, key: u64) -> Option<(Event, Origin)> {
        let q = self.busy.get_mut(&key)?;
        let node = q.head?;
        let p = self.parked.remove(node);
        q.head = p.next;
        if q.head.is_none() {
            q.tail = None;
        }
        Some((p.event, p.origin))
    }

    /// `key` has no call running and nothing parked.
    pub(crate) fn release(&mut self, key: u64) {
        let q = self.busy.remove(&key);
        debug_assert!(
            q.is_none_or(|q| q.head.is_none()),
            "released a key with parked events"
        );
    }

    pub(crate) fn parked_len(&self) -> usize {
        self.parked.len()
    }

    pub(crate) fn parked_room(&self) -> usize {
        self.parked_cap - self.parked.len()
    }

    /// Every parked event, for cancellation at shutdown.
    pub(crate) fn drain_parked(&mut self) -> impl Iterator<Item = (Event, Origin)> + '_ {
        self.busy.clear();
        self.parked.drain().map(|p| (p.event, p.origin))
    }
}
