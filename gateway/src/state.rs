//! What every connection of the gateway shares: configuration, the two ways to the service,
//! the sockets held, and the shutdown signal. Kept apart from the server and the socket tasks
//! so that neither depends on the other.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::GatewayConfig;
use crate::link::Link;
use crate::origin::OriginPolicy;
use crate::registry::Registry;
use crate::upstream::Upstream;

pub struct Shared {
    pub config: GatewayConfig,
    /// Client requests (unary calls).
    pub upstream: Upstream,
    /// Presence out, events in.
    pub link: Arc<Link>,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    pub auth: Authenticator,
    /// Which browser origins may upgrade.
    pub origins: OriginPolicy,
    /// True while the link is attached.
    pub ready: watch::Receiver<bool>,
    pub metrics: PrometheusHandle,
    /// Caps the sockets held at once.
    pub sockets: Arc<Semaphore>,
}
