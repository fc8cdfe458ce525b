//! Which attached gateway holds sockets of which user, and the push of events to them.
//!
//! Routes change with the presence messages on each gateway's link (a socket opened, closed, or
//! a reattach with the complete set); a route exists before the socket's registration commits,
//! so no event committed after it can miss the gateway. Pushing never waits: a gateway whose
//! link cannot take more is cut off, reattaches, and is sent again what it missed from the
//! outbox.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use videochat_proto::v1 as pb;

use crate::domain::UserId;

/// Messages queued towards one gateway before it counts as too slow.
pub const LINK_BUFFER: usize = 4096;

pub type LinkSender = mpsc::Sender<Result<pb::ServiceMessage, Status>>;

/// Identifies one attached link (a gateway may reattach; each attachment is a new link).
pub type LinkId = u64;

/// An attached gateway's outgoing stream.
struct Link {
    sender: LinkSender,
    /// Cancelled when the gateway cannot keep up: the link ends and the gateway reattaches.
    cut: CancellationToken,
    /// While a reattached gateway is sent what it missed, live events wait here so that each
    /// user's events still arrive in order.
    held: Mutex<Option<Vec<pb::Event>>>,
}

/// The gateways holding a user's sockets, with how many sockets each.
#[derive(Clone, Debug)]
enum Route {
    One(LinkId, u32),
    Many(Vec<(LinkId, u32)>),
}

impl Route {
    fn links(&self) -> impl Iterator<Item = LinkId> + '_ {
        let (one, many) = match self {
            Route::One(link, _) => (Some(*link), &[][..]),
            Route::Many(links) => (None, links.as_slice()),
        };
        one.into_iter().chain(many.iter().map(|(link, _)| *link))
    }

    fn add(&mut self, link: LinkId) {
        match self {
            Route::One(l, n) if *l == link => *n += 1,
            Route::One(l, n) => *self = Route::Many(vec![(*l, *n), (link, 1)]),
            Route::Many(links) => match links.iter_mut().find(|(l, _)| *l == link) {
                Some((_, n)) => *n += 1,
                None => links.push((link, 1)),
            },
        }
    }

    /// Removes one socket on `link` (or all of them); true when no socket is left.
    fn remove(&mut self, link: LinkId, all: bool) -> bool {
        match self {
            Route::One(l, n) if *l == link => {
                *n = if all { 0 } else { n.saturating_sub(1) };
                *n == 0
            }
            Route::One(..) => false,
            Route::Many(links) => {
                if let Some(i) = links.iter().position(|(l, _)| *l == link) {
                    let n = &mut links[i].1;
                    *n = if all { 0 } else { n.saturating_sub(1) };
                    if *n == 0 {
                        links.swap_remove(i);
                    }
                }
                match links.as_slice() {
                    [] => true,
                    [(l, n)] => {
                        *self = Route::One(*l, *n);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

#[derive(Default)]
struct Routes {
    links: HashMap<LinkId, Link>,
    users: HashMap<UserId, Route>,
    next: LinkId,
}

/// The replica's attached gateways and the users they serve.
#[derive(Default)]
pub struct Hub {
    routes: RwLock<Routes>,
}

impl Hub {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Routes> {
        // Every critical section leaves the maps consistent (single inserts and removals).
        self.routes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Routes> {
        self.routes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Attaches a gateway's stream, holding live events until [`Hub::release`].
    pub fn attach(&self, sender: LinkSender, cut: CancellationToken) -> LinkId {
        let mut routes = self.write();
        routes.next += 1;
        let id = routes.next;
        routes.links.insert(
            id,
            Link {
                sender,
                cut,
                held: Mutex::new(Some(Vec::new())),
            },
        );
        id
    }

    /// Sends the events held since [`Hub::attach`] and lets later ones through at once.
    pub fn release(&self, link: LinkId) {
        let routes = self.read();
        let Some(entry) = routes.links.get(&link) else {
            return;
        };
        let held = entry
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .unwrap_or_default();
        if !held.is_empty() {
            send(entry, held);
        }
    }

    /// Forgets a link and every route through it.
    pub fn detach(&self, link: LinkId) {
        let mut routes = self.write();
        routes.links.remove(&link);
        routes.users.retain(|_, route| !route.remove(link, true));
    }

    /// A socket of `user` is on `link`.
    pub fn add_socket(&self, link: LinkId, user: &UserId) {
        let mut routes = self.write();
        match routes.users.get_mut(user) {
            Some(route) => route.add(link),
            None => {
                routes.users.insert(user.clone(), Route::One(link, 1));
            }
        }
    }

    /// A socket of `user` on `link` closed.
    pub fn remove_socket(&self, link: LinkId, user: &UserId) {
        let mut routes = self.write();
        if let Some(route) = routes.users.get_mut(user)
            && route.remove(link, false)
        {
            routes.users.remove(user);
        }
    }

    /// Sends each event to every attached gateway holding a socket of its recipient, one
    /// message per gateway. Never waits; returns how many gateway messages were sent.
    pub fn deliver(&self, events: &[pb::Event]) -> usize {
        if events.is_empty() {
            return 0;
        }
        let routes = self.read();
        let mut per_link: Vec<(LinkId, Vec<pb::Event>)> = Vec::new();
        for event in events {
            let Some(route) = routes.users.get(event.recipient_user_id.as_str()) else {
                continue;
            };
            for link in route.links() {
                match per_link.iter_mut().find(|(l, _)| *l == link) {
                    Some((_, batch)) => batch.push(event.clone()),
                    None => per_link.push((link, vec![event.clone()])),
                }
            }
        }
        let sent = per_link.len();
        for (link, batch) in per_link {
            if let Some(entry) = routes.links.get(&link) {
                let mut held = entry
                    .held
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                match held.as_mut() {
                    Some(waiting) => waiting.extend(batch),
                    None => {
                        drop(held);
                        send(entry, batch);
                    }
                }
            }
        }
        sent
    }

    /// How many gateways are attached.
    pub fn links(&self) -> usize {
        self.read().links.len()
    }
}

fn send(link: &Link, events: Vec<pb::Event>) {
    let message = pb::ServiceMessage {
        kind: Some(pb::service_message::Kind::Events(pb::EventBatch { events })),
    };
    match link.sender.try_send(Ok(message)) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!("gateway link too slow; cutting it off (it reattaches and catches up)");
            metrics::counter!("videochat_links_cut_total").increment(1);
            link.cut.cancel();
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(to: &str, seq: u64) -> pb::Event {
        pb::Event {
            seq,
            recipient_user_id: to.to_owned(),
            ..Default::default()
        }
    }

    fn received(rx: &mut mpsc::Receiver<Result<pb::ServiceMessage, Status>>) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Ok(Ok(message)) = rx.try_recv() {
            if let Some(pb::service_message::Kind::Events(batch)) = message.kind {
                seqs.extend(batch.events.iter().map(|e| e.seq));
            }
        }
        seqs
    }

    #[test]
    fn events_reach_the_gateways_of_their_recipient_only() {
        let hub = Hub::default();
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        let a = hub.attach(tx_a, CancellationToken::new());
        let b = hub.attach(tx_b, CancellationToken::new());
        hub.release(a);
        hub.release(b);
        let bob = UserId::parse("bob").unwrap();
        hub.add_socket(a, &bob);
        hub.add_socket(b, &bob);
        hub.add_socket(b, &bob);
        hub.add_socket(b, &UserId::parse("carol").unwrap());
        assert_eq!(hub.deliver(&[event("bob", 1), event("dave", 1)]), 2);
        hub.deliver(&[event("carol", 4)]);
        assert_eq!(received(&mut rx_a), vec![1]);
        assert_eq!(received(&mut rx_b), vec![1, 4]);
        // One of bob's two sockets on b closes: b still gets bob's events.
        hub.remove_socket(b, &bob);
        hub.deliver(&[event("bob", 2)]);
        assert_eq!(received(&mut rx_b), vec![2]);
        hub.detach(a);
        hub.remove_socket(b, &bob);
        assert_eq!(hub.deliver(&[event("bob", 3)]), 0);
    }

    #[test]
    fn a_link_holds_live_events_until_released() {
        let hub = Hub::default();
        let (tx, mut rx) = mpsc::channel(8);
        let link = hub.attach(tx, CancellationToken::new());
        hub.add_socket(link, &UserId::parse("bob").unwrap());
        hub.deliver(&[event("bob", 7)]);
        assert!(received(&mut rx).is_empty());
        hub.release(link);
        assert_eq!(received(&mut rx), vec![7]);
    }

    #[test]
    fn a_link_that_cannot_keep_up_is_cut_off() {
        let hub = Hub::default();
        let (tx, _rx) = mpsc::channel(1);
        let cut = CancellationToken::new();
        let link = hub.attach(tx, cut.clone());
        hub.release(link);
        hub.add_socket(link, &UserId::parse("bob").unwrap());
        hub.deliver(&[event("bob", 1)]);
        assert!(!cut.is_cancelled());
        hub.deliver(&[event("bob", 2)]);
        assert!(cut.is_cancelled());
    }
}
