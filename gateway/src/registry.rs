//! The sockets this gateway holds, by user: where events fan out to. This is connection
//! bookkeeping only; presence itself lives in the handshake service.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a socket task is handed to write.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A ready-to-send event frame of type `name`; `ring` is the request id of a
    /// `videochatRequested`.
    Event {
        text: String,
        name: &'static str,
        ring: Option<String>,
    },
}

#[derive(Clone)]
struct Socket {
    connection_id: String,
    sender: mpsc::Sender<Outbound>,
    /// Cancelled to drop a socket that cannot keep up.
    kick: CancellationToken,
}

#[derive(Default)]
pub struct Registry {
    users: Mutex<HashMap<String, Vec<Socket>>>,
}

impl Registry {
    /// Adds a socket; returns how many sockets the user has now.
    pub fn add(
        &self,
        user_id: &str,
        connection_id: &str,
        sender: mpsc::Sender<Outbound>,
        kick: CancellationToken,
    ) -> usize {
        let mut users = self.lock();
        let sockets = users.entry(user_id.to_owned()).or_default();
        sockets.push(Socket {
            connection_id: connection_id.to_owned(),
            sender,
            kick,
        });
        sockets.len()
    }

    pub fn remove(&self, user_id: &str, connection_id: &str) {
        let mut users = self.lock();
        if let Some(sockets) = users.get_mut(user_id) {
            sockets.retain(|s| s.connection_id != connection_id);
            if sockets.is_empty() {
                users.remove(user_id);
            }
        }
    }

    /// Hands an event to every socket of the user. A socket whose queue is full is kicked
    /// (its client reconnects and is told what still rings) rather than buffering without end.
    pub fn deliver(&self, user_id: &str, outbound: &Outbound) -> usize {
        let sockets: Vec<Socket> = self.lock().get(user_id).cloned().unwrap_or_default();
        let mut delivered = 0;
        for socket in sockets {
            match socket.sender.try_send(outbound.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(connection = %socket.connection_id, "socket too slow; closing it");
                    metrics::counter!("videochat_gateway_slow_sockets_total").increment(1);
                    socket.kick.cancel();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        delivered
    }

    /// `(connection_id, user_id)` of every socket, for re-attaching to the service.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .flat_map(|(user, sockets)| {
                sockets
                    .iter()
                    .map(move |s| (s.connection_id.clone(), user.clone()))
            })
            .collect()
    }

    pub fn socket_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Socket>>> {
        // A panic while holding this lock cannot leave the map inconsistent (every critical
        // section is a single map operation), so a poisoned lock is still usable.
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
