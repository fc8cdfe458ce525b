//! Where the handshake service is: the replicas behind `VIDEOCHAT_HANDSHAKE_URL`, kept current
//! and healthy in the one balanced [`Channel`] that the unary calls ([`crate::upstream`]) and the
//! event stream ([`crate::link`]) share.
//!
//! The setting lists one or more `http://host:port` endpoints, comma-separated. A host that is
//! an IP address is one replica; a DNS name stands for every address it resolves to, resolved
//! again every `VIDEOCHAT_HANDSHAKE_RESOLVE_S` (a Kubernetes headless Service answers with the
//! addresses of its ready pods). Every address is asked the standard gRPC health check for the
//! `Handshake` service every `VIDEOCHAT_HANDSHAKE_PROBE_MS`.
//!
//! The channel is tonic's `Channel::balance_channel`: tower's power-of-two-choices balancer over
//! one lazily connected HTTP/2 connection per address, fed `Insert`/`Remove` changes from here.
//! It was chosen over a balancer of our own because it *is* a [`Channel`]: the generated
//! clients, unary and streaming alike, take it unchanged, and each new request or stream picks
//! a replica whose connection is ready (one still connecting, e.g. to a vanished pod's
//! address, is passed over). What it does not do — drop a dead replica, retry elsewhere — is
//! done here and in [`crate::upstream`]:
//!
//! - the balancer holds the addresses whose last probe said `SERVING`; when none does, it holds
//!   all of them, so calls fail fast (and are answered 1004) instead of queueing for the whole
//!   deadline for a replica that may not come;
//! - besides the periodic check, each address's health is followed with the streaming `Watch`
//!   call: a replica that dies breaks the stream, one that starts draining says `NOT_SERVING`,
//!   and either leaves the balancer at once — before the event stream's first reattach
//!   (100 ms after it broke), so that lands on a live replica;
//! - a call that failed for want of a replica wakes the prober at once ([`Endpoints::suspect`]),
//!   for what the watch cannot see (an address that stopped answering without closing); the
//!   call itself is retried (see [`crate::upstream`]).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The service whose health decides whether a replica gets calls: a replica going down says
/// `NOT_SERVING` for it as its drain begins.
const PROBED_SERVICE: &str = "videochat.handshake.v1.Handshake";

/// How long one health check or one DNS lookup may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The shortest pause between two probe rounds, however often calls report failures.
const MIN_ROUND_GAP: Duration = Duration::from_millis(20);

/// A malformed `VIDEOCHAT_HANDSHAKE_URL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointsError {
    #[error("no endpoint given (expected http://host:port[,http://host:port…])")]
    Empty,
    #[error("{0:?} is not an endpoint (expected http://host:port)")]
    Invalid(String),
    #[error("{0:?}: only http:// and https:// are supported")]
    Scheme(String),
    #[error("{0:?}: either every endpoint is https:// or none is")]
    MixedSchemes(String),
    #[error(
        "{0:?}: https:// endpoints need TLS settings, and TLS settings need https:// endpoints"
    )]
    Tls(String),
}

/// One entry of `VIDEOCHAT_HANDSHAKE_URL`: an address, or a name standing for several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Set when `host` is an IP address: no lookup needed.
    pub ip: Option<IpAddr>,
}

/// Parses the comma-separated endpoint list (empty entries are ignored).
pub fn parse(list: &str) -> Result<Vec<Target>, EndpointsError> {
    let targets = list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(parse_one)
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err(EndpointsError::Empty);
    }
    Ok(targets)
}

/// Whether the list's endpoints are `https://` (all of them) or `http://` (all of them).
pub fn secure(list: &str) -> Result<bool, EndpointsError> {
    let mut entries = list.split(',').map(str::trim).filter(|e| !e.is_empty());
    let first = entries.next().ok_or(EndpointsError::Empty)?;
    let secure = first.starts_with("https://");
    if entries.any(|entry| entry.starts_with("https://") != secure) {
        return Err(EndpointsError::MixedSchemes(list.to_owned()));
    }
    Ok(secure)
}

fn parse_one(entry: &str) -> Result<Target, EndpointsError> {
    let invalid = || EndpointsError::Invalid(entry.to_owned());
    let uri: http::Uri = entry.parse().map_err(|_| invalid())?;
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        Some(_) => return Err(EndpointsError::Scheme(entry.to_owned())),
        None => return Err(invalid()),
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid());
    }
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(invalid)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    // What follows the host in the authority: nothing, or `:port` (`Uri::port` hides a port
    // that does not fit 16 bits instead of refusing it).
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let after_host = authority
        .rfind(host)
        .map(|at| &authority[at + host.len()..])
        .unwrap_or_default();
    let port = match after_host.strip_prefix(':') {
        None if after_host.is_empty() => default_port,
        None => return Err(invalid()),
        Some(port) => port.parse().map_err(|_| invalid())?,
    };
    Ok(Target {
        host: bare.to_owned(),
        port,
        ip: bare.parse().ok(),
    })
}

/// How often the replica list is refreshed.
#[derive(Debug, Clone, Copy)]
pub struct Refresh {
    /// DNS names are looked up again this often.
    pub resolve_every: Duration,
    /// Every known address is health-checked this often.
    pub probe_every: Duration,
}

/// The handle calls use to report a replica that failed them.
#[derive(Clone)]
pub struct Endpoints {
    wake: Arc<Notify>,
}

impl Endpoints {
    /// The handle of a gateway calling a service in its own process: there is no replica to
    /// probe, so a report wakes nobody.
    pub fn in_process() -> Self {
        Self {
            wake: Arc::new(Notify::new()),
        }
    }

    /// A call failed for want of a replica: probe every address now rather than at the next
    /// round, so that a dead one leaves the balancer before the call's retry.
    pub fn suspect(&self) {
        self.wake.notify_one();
    }
}

/// The balanced channel, the handle for reporting failures, and the task that keeps the
/// balancer's membership current (run it until shutdown; the channel serves nobody without it).
pub fn balanced(
    targets: Vec<Target>,
    endpoint: impl Fn(SocketAddr) -> Endpoint + Send + 'static,
    refresh: Refresh,
) -> (Channel, Endpoints, Discovery) {
    let (channel, changes) = Channel::balance_channel(64);
    let wake = Arc::new(Notify::new());
    let (report, watched) = mpsc::channel(64);
    let discovery = Discovery {
        targets,
        endpoint: Box::new(endpoint),
        refresh,
        changes,
        wake: wake.clone(),
        report,
        watched,
        resolved: HashMap::new(),
        probes: HashMap::new(),
        in_balancer: BTreeSet::new(),
    };
    (channel, Endpoints { wake }, discovery)
}

/// An address's health checker, what it said last, and its watch (aborted when the address
/// goes away).
struct Probe {
    client: HealthClient<Channel>,
    serving: Option<bool>,
    _watch: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves, probes and updates the balancer. See the module documentation.
pub struct Discovery {
    targets: Vec<Target>,
    endpoint: Box<dyn Fn(SocketAddr) -> Endpoint + Send>,
    refresh: Refresh,
    changes: mpsc::Sender<Change<SocketAddr, Endpoint>>,
    wake: Arc<Notify>,
    /// Where the addresses' health watches report (address, serving), as they learn it.
    report: mpsc::Sender<(SocketAddr, bool)>,
    watched: mpsc::Receiver<(SocketAddr, bool)>,
    /// The addresses each target stood for at its last successful lookup.
    resolved: HashMap<usize, Vec<SocketAddr>>,
    probes: HashMap<SocketAddr, Probe>,
    in_balancer: BTreeSet<SocketAddr>,
}

impl Discovery {
    /// Keeps the balancer current until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut next_lookup = Instant::now();
        loop {
            if Instant::now() >= next_lookup {
                self.resolve().await;
                next_lookup = Instant::now() + self.refresh.resolve_every;
            }
            self.probe().await;
            if self.apply().await.is_err() {
                // Every clone of the channel is gone: nobody is left to serve.
                return;
            }
            let round = tokio::time::sleep(self.refresh.probe_every);
            tokio::pin!(round);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => break,
                    _ = &mut round => break,
                    Some((address, serving)) = self.watched.recv() => {
                        // A watch noticed at once: a replica died or began to drain.
                        self.note(address, serving);
                        if self.apply().await.is_err() {
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(MIN_ROUND_GAP) => {}
            }
        }
    }

    /// Looks every name up; a failed lookup keeps what the name stood for before (a DNS
    /// hiccup must not empty the balancer).
    async fn resolve(&mut self) {
        for (index, target) in self.targets.iter().enumerate() {
            let addresses = match target.ip {
                Some(ip) => vec![SocketAddr::new(ip, target.port)],
                None => match lookup(&target.host, target.port).await {
                    Ok(addresses) => addresses,
                    Err(error) => {
                        tracing::warn!(host = %target.host, %error, "cannot resolve a handshake endpoint; keeping its last addresses");
                        continue;
                    }
                },
            };
            self.resolved.insert(index, addresses);
        }
        let known: BTreeSet<SocketAddr> = self.resolved.values().flatten().copied().collect();
        self.probes.retain(|address, _| known.contains(address));
        for address in known {
            if !self.probes.contains_key(&address) {
                let channel = (self.endpoint)(address)
                    .connect_timeout(PROBE_TIMEOUT)
                    .connect_lazy();
                let client = HealthClient::new(channel);
                let watch = tokio::spawn(watch(
                    address,
                    client.clone(),
                    self.report.clone(),
                    self.refresh.probe_every,
                ));
                self.probes.insert(
                    address,
                    Probe {
                        client,
                        serving: None,
                        _watch: AbortOnDrop(watch),
                    },
                );
            }
        }
    }

    /// Health-checks every known address at once.
    async fn probe(&mut self) {
        let checks = self.probes.iter().map(|(address, probe)| {
            let client = probe.client.clone();
            let address = *address;
            async move { (address, check(client).await) }
        });
        for (address, serving) in futures_util::future::join_all(checks).await {
            self.note(address, serving);
        }
    }

    /// Records what a check or a watch said about `address`.
    fn note(&mut self, address: SocketAddr, serving: bool) {
        if let Some(probe) = self.probes.get_mut(&address) {
            if probe.serving != Some(serving) {
                if serving {
                    tracing::info!(%address, "handshake replica serving");
                } else {
                    tracing::warn!(%address, "handshake replica not serving; no calls go there");
                }
            }
            probe.serving = Some(serving);
        }
    }

    /// Brings the balancer to the wanted membership.
    async fn apply(&mut self) -> Result<(), ()> {
        let serving: BTreeSet<SocketAddr> = self
            .probes
            .iter()
            .filter(|(_, probe)| probe.serving != Some(false))
            .map(|(address, _)| *address)
            .collect();
        let known: BTreeSet<SocketAddr> = self.probes.keys().copied().collect();
        let (insert, remove) = plan(&self.in_balancer, &serving, &known);
        for address in remove {
            self.changes
                .send(Change::Remove(address))
                .await
                .map_err(|_| ())?;
            self.in_balancer.remove(&address);
        }
        for address in insert {
            self.changes
                .send(Change::Insert(address, (self.endpoint)(address)))
                .await
                .map_err(|_| ())?;
            self.in_balancer.insert(address);
        }
        metrics::gauge!("videochat_gateway_handshake_replicas", "state" => "serving")
            .set(serving.len() as f64);
        metrics::gauge!("videochat_gateway_handshake_replicas", "state" => "known")
            .set(known.len() as f64);
        Ok(())
    }
}

/// What to insert into and remove from the balancer: it should hold the serving addresses, or
/// every known address when none is serving (fail fast rather than wait).
fn plan(
    current: &BTreeSet<SocketAddr>,
    serving: &BTreeSet<SocketAddr>,
    known: &BTreeSet<SocketAddr>,
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let wanted = if serving.is_empty() { known } else { serving };
    let insert = wanted.difference(current).copied().collect();
    let remove = current.difference(wanted).copied().collect();
    (insert, remove)
}

/// The addresses `host` resolves to (system resolver: /etc/hosts, then DNS).
pub async fn lookup(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let found = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "lookup timed out"))??;
    let mut addresses: Vec<SocketAddr> = found.collect();
    addresses.sort_unstable();
    addresses.dedup();
    Ok(addresses)
}

/// Follows the replica's health with the streaming `Watch` call, so that its death (the
/// stream breaks) or the start of its drain (`NOT_SERVING`) is known at once rather than at the
/// next check. The stream is dropped on anything but `SERVING`: a draining replica waits for
/// its open streams before it exits. Opens it again after `pause`.
async fn watch(
    address: SocketAddr,
    mut client: HealthClient<Channel>,
    report: mpsc::Sender<(SocketAddr, bool)>,
    pause: Duration,
) {
    loop {
        let request = HealthCheckRequest {
            service: PROBED_SERVICE.to_owned(),
        };
        if let Ok(response) = client.watch(request).await {
            let mut updates = response.into_inner();
            while let Ok(Some(update)) = updates.message().await {
                let serving = update.status == ServingStatus::Serving as i32;
                if report.send((address, serving)).await.is_err() {
                    return;
                }
                if !serving {
                    break;
                }
            }
        }
        if report.send((address, false)).await.is_err() {
            return;
        }
        tokio::time::sleep(pause).await;
    }
}

/// Whether the replica says its `Handshake` service is serving, within [`PROBE_TIMEOUT`].
async fn check(mut client: HealthClient<Channel>) -> bool {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: PROBED_SERVICE.to_owned(),
    });
    request.set_timeout(PROBE_TIMEOUT);
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, client.check(request)).await,
        Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
            ip: host.parse().ok(),
        }
    }

    #[test]
    fn a_list_of_endpoints_parses_in_order() {
        assert_eq!(
            parse("http://127.0.0.1:50051").unwrap(),
            vec![target("127.0.0.1", 50051)]
        );
        assert_eq!(
            parse(" http://10.0.0.1:1, http://handshake-headless.videochat.svc:50051/ ,,http://[::1]:7")
                .unwrap(),
            vec![
                target("10.0.0.1", 1),
                target("handshake-headless.videochat.svc", 50051),
                target("::1", 7),
            ]
        );
        assert_eq!(
            parse("http://handshake").unwrap(),
            vec![target("handshake", 80)]
        );
        assert_eq!(
            parse("http://[::1]:7").unwrap()[0].ip,
            Some("::1".parse().unwrap())
        );
        assert_eq!(parse("http://handshake:1").unwrap()[0].ip, None);
    }

    #[test]
    fn malformed_lists_are_refused_naming_the_entry() {
        assert_eq!(parse(""), Err(EndpointsError::Empty));
        assert_eq!(parse(" , "), Err(EndpointsError::Empty));
        assert_eq!(
            parse("http://a:1,handshake:50051"),
            Err(EndpointsError::Invalid("handshake:50051".into()))
        );
        assert_eq!(
            parse("ftp://handshake:443"),
            Err(EndpointsError::Scheme("ftp://handshake:443".into()))
        );
        assert_eq!(parse("https://handshake").unwrap()[0].port, 443);
        assert_eq!(secure("https://a:1, https://b:2"), Ok(true));
        assert_eq!(secure("http://a:1"), Ok(false));
        assert!(matches!(
            secure("http://a:1,https://b:2"),
            Err(EndpointsError::MixedSchemes(_))
        ));
        assert!(matches!(
            parse("http://a:1/x"),
            Err(EndpointsError::Invalid(_))
        ));
        assert!(matches!(
            parse("http://a:99999"),
            Err(EndpointsError::Invalid(_))
        ));
        assert!(matches!(
            parse("http://a:"),
            Err(EndpointsError::Invalid(_))
        ));
    }

    fn set(ports: &[u16]) -> BTreeSet<SocketAddr> {
        ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect()
    }

    #[test]
    fn the_balancer_holds_the_serving_replicas_or_all_when_none_serves() {
        // Start: nothing in the balancer, two serving.
        assert_eq!(
            plan(&set(&[]), &set(&[1, 2]), &set(&[1, 2])),
            (set(&[1, 2]).into_iter().collect(), vec![])
        );
        // One stops serving: it leaves.
        assert_eq!(
            plan(&set(&[1, 2]), &set(&[2]), &set(&[1, 2])),
            (vec![], set(&[1]).into_iter().collect())
        );
        // None serves: every known address is in, so calls fail fast.
        assert_eq!(
            plan(&set(&[2]), &set(&[]), &set(&[1, 2])),
            (set(&[1]).into_iter().collect(), vec![])
        );
        // The name now stands for another address.
        assert_eq!(
            plan(&set(&[1, 2]), &set(&[2, 3]), &set(&[2, 3])),
            (
                set(&[3]).into_iter().collect(),
                set(&[1]).into_iter().collect()
            )
        );
        // Nothing known: nothing in.
        assert_eq!(
            plan(&set(&[1]), &set(&[]), &set(&[])),
            (vec![], set(&[1]).into_iter().collect())
        );
    }

    #[tokio::test]
    async fn a_name_resolves_to_its_addresses() {
        let addresses = lookup("localhost", 50051).await.unwrap();
        assert!(
            addresses.contains(&SocketAddr::from(([127, 0, 0, 1], 50051))),
            "{addresses:?}"
        );
        assert!(
            addresses
                .iter()
                .all(|a| a.port() == 50051 && a.ip().is_loopback())
        );
        assert!(lookup("no-such-host.invalid", 1).await.is_err());
    }
}
