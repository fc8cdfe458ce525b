//! The sockets this gateway holds, by user, and the last leg of an event's way: from the link
//! to every socket of its recipient, each position once.
//!
//! Events arrive from the service at least once (pushed at commit, read again from the outbox
//! after a reattach) and, for one user, possibly out of order when two changes for that user
//! commit at the same instant. Each user here keeps the set of positions already delivered
//! ([`Delivered`]) and drops repeats. A socket that is still being registered buffers what
//! arrives for it; its registration says which position it starts after, and the buffer is
//! filtered by that.
//!
//! A socket costs little while idle: its queue is a `VecDeque` that allocates nothing until an
//! event waits in it, and events are shared frames, encoded once for all sockets of a user.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Frames queued for one socket before it counts as too slow.
pub const SOCKET_QUEUE: usize = 256;
/// Events buffered for a socket while it is being registered.
const PENDING_LIMIT: usize = 64;
/// Positions remembered above a gap before the gap is given up on.
const MAX_ABOVE: usize = 256;

/// An event frame, encoded once and shared by every socket it goes to.
#[derive(Debug)]
pub struct EventFrame {
    pub text: Utf8Bytes,
    /// The event's name (`videochat:…`).
    pub name: &'static str,
    /// The ring a `videochatRequested` is about (so a ring replayed at connect is not shown twice).
    pub ring: Option<String>,
}

/// Positions of one user's events delivered here: everything up to `floor`, and the few above it
/// that arrived before a position below them.
#[derive(Debug, Default, Clone)]
pub struct Delivered {
    floor: u64,
    above: Vec<u64>,
}

impl Delivered {
    pub fn starting_after(floor: u64) -> Self {
        Self {
            floor,
            above: Vec::new(),
        }
    }

    /// The position below which everything was delivered (what a reattach resumes after).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Records `seq`; false if it was delivered before.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq <= self.floor || self.above.contains(&seq) {
            return false;
        }
        if seq == self.floor + 1 {
            self.floor = seq;
            self.above.sort_unstable();
            while let Some(i) = self.above.iter().position(|s| *s == self.floor + 1) {
                self.floor = self.above.remove(i);
            }
        } else {
            self.above.push(seq);
            if self.above.len() > MAX_ABOVE {
                // A position that never came (it cannot, while the user has sockets here; this
                // only bounds memory): treat the gap as closed.
                self.above.sort_unstable();
                self.floor = self.above.remove(0);
                tracing::warn!(floor = self.floor, "gave up waiting for an event position");
            }
        }
        true
    }
}

/// What a socket task drains.
#[derive(Default)]
struct SocketState {
    /// `Some` until the service confirmed the socket: events for it wait here, with positions.
    pending: Option<Vec<(u64, Arc<EventFrame>)>>,
    queue: VecDeque<Arc<EventFrame>>,
    /// Rings shown at connect, so the same ring arriving as an event is not shown again.
    replayed: Vec<String>,
    kicked: bool,
}

/// Everything queued, in order; the queue gives its memory back (an idle socket keeps none).
fn take_queue(state: &mut SocketState) -> Vec<Arc<EventFrame>> {
    let frames: Vec<_> = state.queue.drain(..).collect();
    state.queue.shrink_to_fit();
    frames
}

/// One socket, shared by its task and the registry.
pub struct Socket {
    pub user_id: String,
    pub connection_id: String,
    state: Mutex<SocketState>,
    wake: Notify,
}

impl Socket {
    fn state(&self) -> MutexGuard<'_, SocketState> {
        // Every critical section is a few field updates: a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until there is something to send, or the socket is kicked; returns the frames
    /// (empty when kicked).
    pub async fn next(&self) -> Result<Vec<Arc<EventFrame>>, Kicked> {
        loop {
            let notified = self.wake.notified();
            {
                let mut state = self.state();
                if state.kicked {
                    return Err(Kicked);
                }
                if !state.queue.is_empty() {
                    return Ok(take_queue(&mut state));
                }
            }
            notified.await;
        }
    }

    /// The frames queued right now, without waiting (none when the queue is empty or the
    /// socket was kicked: [`Socket::next`] reports that).
    pub fn take_ready(&self) -> Vec<Arc<EventFrame>> {
        let mut state = self.state();
        if state.kicked || state.queue.is_empty() {
            return Vec::new();
        }
        take_queue(&mut state)
    }

    /// Queues frames for the socket; kicks it when its queue is full.
    fn push(&self, state: &mut SocketState, frame: Arc<EventFrame>) -> bool {
        if let Some(ring) = &frame.ring
            && let Some(i) = state.replayed.iter().position(|r| r == ring)
        {
            state.replayed.swap_remove(i);
            return false;
        }
        if state.queue.len() >= SOCKET_QUEUE {
            if !state.kicked {
                tracing::warn!(connection = %self.connection_id, "socket too slow; closing it");
                metrics::counter!("videochat_gateway_slow_sockets_total").increment(1);
                state.kicked = true;
                self.wake.notify_one();
            }
            return false;
        }
        state.queue.push_back(frame);
        self.wake.notify_one();
        true
    }
}

/// A socket was closed for falling too far behind.
#[derive(Debug)]
pub struct Kicked;

struct UserSockets {
    sockets: Vec<Arc<Socket>>,
    /// `None` until the first socket of the user here is registered.
    delivered: Option<Delivered>,
    /// The delivered floor last reported to the service as seen.
    reported: u64,
}

#[derive(Default)]
pub struct Registry {
    users: Mutex<HashMap<String, UserSockets>>,
    count: AtomicUsize,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, UserSockets>> {
        // Every critical section is a single map operation: a poisoned lock is consistent.
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a socket that is not registered with the service yet; events for its user are
    /// kept for it until [`Registry::registered`]. Returns it and how many sockets the user has.
    pub fn open(&self, user_id: &str, connection_id: &str) -> (Arc<Socket>, usize) {
        let socket = Arc::new(Socket {
            user_id: user_id.to_owned(),
            connection_id: connection_id.to_owned(),
            state: Mutex::new(SocketState {
                pending: Some(Vec::new()),
                ..SocketState::default()
            }),
            wake: Notify::new(),
        });
        let mut users = self.lock();
        let entry = users.entry(user_id.to_owned()).or_insert(UserSockets {
            sockets: Vec::new(),
            delivered: None,
            reported: 0,
        });
        entry.sockets.push(socket.clone());
        let count = entry.sockets.len();
        drop(users);
        self.count.fetch_add(1, Ordering::Relaxed);
        (socket, count)
    }

    /// The service registered the socket: it starts after position `last_seq`, and has been
    /// shown `rings` already.
    pub fn registered(&self, socket: &Socket, last_seq: u64, rings: Vec<String>) {
        let mut users = self.lock();
        let Some(entry) = users.get_mut(&socket.user_id) else {
            return;
        };
        let delivered = entry
            .delivered
            .get_or_insert_with(|| Delivered::starting_after(last_seq));
        let mut state = socket.state();
        state.replayed = rings;
        for (seq, frame) in state.pending.take().unwrap_or_default() {
            // The user's other sockets (if any) had it already; this one needs it if it came
            // after the registration.
            if seq > last_seq {
                delivered.insert(seq);
                socket.push(&mut state, frame);
            }
        }
    }

    /// Removes a socket; returns the user's delivered floor here (0 if nothing was), which the
    /// service records as seen.
    pub fn close(&self, socket: &Socket) -> u64 {
        let mut users = self.lock();
        let mut floor = 0;
        if let Some(entry) = users.get_mut(&socket.user_id) {
            floor = entry.delivered.as_ref().map_or(0, Delivered::floor);
            let before = entry.sockets.len();
            entry
                .sockets
                .retain(|s| s.connection_id != socket.connection_id);
            if entry.sockets.len() < before {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            if entry.sockets.is_empty() {
                users.remove(&socket.user_id);
            }
        }
        floor
    }

    /// Hands an event to every socket of its user, unless that position was delivered before.
    /// Returns how many sockets took it.
    pub fn deliver(&self, user_id: &str, seq: u64, frame: &Arc<EventFrame>) -> usize {
        let mut users = self.lock();
        let Some(entry) = users.get_mut(user_id) else {
            return 0;
        };
        if let Some(delivered) = &mut entry.delivered
            && !delivered.insert(seq)
        {
            metrics::counter!("videochat_gateway_duplicate_events_total").increment(1);
            return 0;
        }
        let mut taken = 0;
        for socket in &entry.sockets {
            let mut state = socket.state();
            match state.pending.as_mut() {
                Some(pending) if pending.len() < PENDING_LIMIT => {
                    pending.push((seq, frame.clone()))
                }
                Some(_) => {
                    state.kicked = true;
                    socket.wake.notify_one();
                }
                None => {
                    if socket.push(&mut state, frame.clone()) {
                        taken += 1;
                    }
                }
            }
        }
        taken
    }

    /// Every registered socket with its user and the position up to which that user's events
    /// were delivered here (what a reattaching link states).
    pub fn snapshot(&self) -> Vec<(String, String, u64)> {
        let users = self.lock();
        let mut out = Vec::new();
        for (user, entry) in users.iter() {
            let Some(delivered) = &entry.delivered else {
                continue;
            };
            for socket in &entry.sockets {
                if socket.state().pending.is_none() {
                    out.push((
                        socket.connection_id.clone(),
                        user.clone(),
                        delivered.floor(),
                    ));
                }
            }
        }
        out
    }

    /// Users whose delivered floor moved since the last call, with that floor (for the
    /// service's seen positions; see the heartbeat in [`crate::link`]).
    pub fn unreported_seen(&self) -> Vec<(String, u64)> {
        let mut users = self.lock();
        let mut out = Vec::new();
        for (user, entry) in users.iter_mut() {
            let floor = entry.delivered.as_ref().map_or(0, Delivered::floor);
            if floor > entry.reported {
                entry.reported = floor;
                out.push((user.clone(), floor));
            }
        }
        out
    }

    /// Users with at least one socket here.
    pub fn users(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn socket_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &'static str, ring: Option<&str>) -> Arc<EventFrame> {
        Arc::new(EventFrame {
            text: Utf8Bytes::from_static("{}"),
            name,
            ring: ring.map(str::to_owned),
        })
    }

    fn drained(socket: &Socket) -> usize {
        let mut state = socket.state();
        let n = state.queue.len();
        state.queue.clear();
        n
    }

    #[test]
    fn positions_are_delivered_once_in_any_order() {
        let mut delivered = Delivered::starting_after(4);
        assert!(!delivered.insert(3));
        assert!(delivered.insert(6));
        assert!(!delivered.insert(6));
        assert_eq!(delivered.floor(), 4);
        assert!(delivered.insert(5));
        assert_eq!(delivered.floor(), 6);
        assert!(!delivered.insert(5));
        assert!(delivered.insert(7));
        assert_eq!(delivered.floor(), 7);
    }

    #[test]
    fn a_pending_socket_gets_only_what_came_after_its_registration() {
        let registry = Registry::default();
        let (socket, _) = registry.open("bob", "c1");
        registry.deliver("bob", 3, &frame("a", None));
        registry.deliver("bob", 4, &frame("b", None));
        assert_eq!(drained(&socket), 0);
        registry.registered(&socket, 3, Vec::new());
        assert_eq!(drained(&socket), 1);
        // 4 was delivered; a second copy (a reattach replay) is dropped.
        assert_eq!(registry.deliver("bob", 4, &frame("b", None)), 0);
        assert_eq!(registry.deliver("bob", 5, &frame("c", None)), 1);
    }

    #[test]
    fn every_socket_of_a_user_gets_each_event_and_a_replayed_ring_is_not_shown_twice() {
        let registry = Registry::default();
        let (one, _) = registry.open("bob", "c1");
        registry.registered(&one, 0, Vec::new());
        let (two, count) = registry.open("bob", "c2");
        assert_eq!(count, 2);
        registry.registered(&two, 0, vec!["vcr_1".into()]);
        assert_eq!(registry.deliver("bob", 1, &frame("ring", Some("vcr_1"))), 1);
        assert_eq!(drained(&one), 1);
        assert_eq!(drained(&two), 0);
        registry.close(&one);
        assert_eq!(registry.socket_count(), 1);
        assert_eq!(registry.snapshot(), vec![("c2".into(), "bob".into(), 1)]);
    }

    #[test]
    fn take_ready_returns_what_is_queued_in_order_without_waiting() {
        let registry = Registry::default();
        let (socket, _) = registry.open("bob", "c1");
        registry.registered(&socket, 0, Vec::new());
        assert!(socket.take_ready().is_empty());
        registry.deliver("bob", 1, &frame("first", None));
        registry.deliver("bob", 2, &frame("second", None));
        let names: Vec<_> = socket.take_ready().iter().map(|f| f.name).collect();
        assert_eq!(names, ["first", "second"]);
        assert!(socket.take_ready().is_empty(), "taken once");
    }

    #[test]
    fn take_ready_leaves_a_kicked_socket_to_next() {
        let registry = Registry::default();
        let (socket, _) = registry.open("bob", "c1");
        registry.registered(&socket, 0, Vec::new());
        for seq in 1..=(SOCKET_QUEUE as u64 + 1) {
            registry.deliver("bob", seq, &frame("x", None));
        }
        assert!(socket.take_ready().is_empty());
        let next = futures_util::FutureExt::now_or_never(socket.next());
        assert!(matches!(next, Some(Err(Kicked))), "next reports the kick");
    }

    #[test]
    fn a_socket_that_falls_behind_is_kicked() {
        let registry = Registry::default();
        let (socket, _) = registry.open("bob", "c1");
        registry.registered(&socket, 0, Vec::new());
        for seq in 1..=(SOCKET_QUEUE as u64 + 1) {
            registry.deliver("bob", seq, &frame("x", None));
        }
        assert!(socket.state().kicked);
    }
}
