//! Who may call what on the gRPC port: one tower layer in front of every service.
//!
//! Callers present `authorization: Bearer <credential>`. A credential belongs to one role:
//!
//! * a **gateway** may attach a `GatewayLink` and run the `Handshake` operations, naming the
//!   user it authenticated as the actor;
//! * an **internal service** may use the `UserDirectory` and `CreateVideochat`, and the other
//!   `Handshake` operations only where `VIDEOCHAT_GRPC_SERVICES_ACT_FOR_USERS` allows it.
//!
//! Health (and reflection, when it is served) needs no credential: probes and tools reach it
//! without secrets, and it tells nothing about users. Anything else without a known credential
//! is `UNAUTHENTICATED`; a known credential of the wrong role is `PERMISSION_DENIED`. The reason
//! is logged and counted (`videochat_grpc_auth_refusals_total{reason, service}`), and the caller
//! is told no more than the status.
//!
//! This runs on every handshake, so the check is cheap: one SHA-256 of the presented header
//! value compared in constant time with the digests computed at start-up, no allocation.
//! (Comparing digests rather than the strings keeps even a credential's length from leaking
//! through timing.) Mutual TLS, when configured, is checked earlier by the TLS handshake itself
//! (see `server.rs`); it decides who may connect at all, the bearer credential what they may do.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use crate::config::{GrpcAuth, HandshakeConfig};

/// The kind of caller a credential stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Service,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Service => "service",
        }
    }
}

/// What a call needs, by its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Health and reflection.
    Open,
    /// Only these roles.
    Roles(&'static [Role]),
}

const HEALTH: &str = "/grpc.health.v1.Health/";
const REFLECTION: &str = "/grpc.reflection.";
const GATEWAY_LINK: &str = "/videochat.handshake.v1.GatewayLink/";
const USER_DIRECTORY: &str = "/videochat.handshake.v1.UserDirectory/";
const HANDSHAKE: &str = "/videochat.handshake.v1.Handshake/";
const CREATE_VIDEOCHAT: &str = "/videochat.handshake.v1.Handshake/CreateVideochat";
const LIST_CALLS: &str = "/videochat.handshake.v1.Handshake/ListCalls";
const ENGINE_EVENTS: &str = "/videochat.handshake.v1.EngineEvents/";
const WEBHOOK_DELIVERIES: &str = "/videochat.handshake.v1.WebhookDeliveries/";
/// Push devices: gateways register them for their users' sockets, services for anyone.
const PUSH_DEVICES: [&str; 2] = [
    "/videochat.handshake.v1.UserDirectory/RegisterPushDevice",
    "/videochat.handshake.v1.UserDirectory/UnregisterPushDevice",
];

const GATEWAYS: &[Role] = &[Role::Gateway];
const SERVICES: &[Role] = &[Role::Service];
const BOTH: &[Role] = &[Role::Gateway, Role::Service];

/// The credentials and rules of one replica, built once at start-up.
pub struct Policy {
    /// `VIDEOCHAT_GRPC_AUTH=none`: every caller passes, in every role.
    open: bool,
    gateways: Vec<[u8; 32]>,
    services: Vec<[u8; 32]>,
    services_act_for_users: bool,
}

/// Why a call is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credential, or one nobody configured.
    Unauthenticated,
    /// A known credential whose role may not call this method.
    PermissionDenied(Role),
}

impl Policy {
    pub fn from_config(config: &HandshakeConfig) -> Self {
        let digests = |tokens: &[crate::config::Secret]| {
            tokens
                .iter()
                .map(|t| t.expose().trim())
                .filter(|t| !t.is_empty())
                .map(|t| digest(format!("Bearer {t}").as_bytes()))
                .collect()
        };
        Self {
            open: config.grpc_auth == GrpcAuth::None,
            gateways: digests(&config.grpc_gateway_tokens),
            services: digests(&config.grpc_service_tokens),
            services_act_for_users: config.grpc_services_act_for_users,
        }
    }

    /// Whether anything but health can be called at all.
    pub fn accepts_anyone(&self) -> bool {
        self.open || !self.gateways.is_empty() || !self.services.is_empty()
    }

    fn access(&self, path: &str) -> Access {
        if path.starts_with(HEALTH) || path.starts_with(REFLECTION) {
            Access::Open
        } else if path.starts_with(GATEWAY_LINK) {
            Access::Roles(GATEWAYS)
        } else if PUSH_DEVICES.contains(&path) {
            Access::Roles(BOTH)
        } else if path.starts_with(USER_DIRECTORY)
            || path == CREATE_VIDEOCHAT
            || path.starts_with(WEBHOOK_DELIVERIES)
        {
            Access::Roles(SERVICES)
        } else if path == LIST_CALLS || path.starts_with(ENGINE_EVENTS) {
            // History is read for users by gateways and by internal services; engine webhooks
            // are signed by the engine, whoever forwards them.
            Access::Roles(BOTH)
        } else if path.starts_with(HANDSHAKE) && !self.services_act_for_users {
            Access::Roles(GATEWAYS)
        } else {
            // The other Handshake operations when services may act for users, and paths that
            // exist nowhere (any caller who authenticates learns they are UNIMPLEMENTED).
            Access::Roles(BOTH)
        }
    }

    /// The role of the presented `authorization` value, if it is a configured credential.
    fn role(&self, authorization: Option<&[u8]>) -> Option<Role> {
        let presented = digest(authorization?);
        // Every configured credential is compared, so timing does not say which one matched.
        let mut gateway = subtle::Choice::from(0);
        for known in &self.gateways {
            gateway |= known.ct_eq(&presented);
        }
        let mut service = subtle::Choice::from(0);
        for known in &self.services {
            service |= known.ct_eq(&presented);
        }
        if bool::from(gateway) {
            Some(Role::Gateway)
        } else if bool::from(service) {
            Some(Role::Service)
        } else {
            None
        }
    }

    /// Decides a call: `Ok(role)` (none for open paths or with checking off) or why not.
    pub fn check(&self, path: &str, authorization: Option<&[u8]>) -> Result<Option<Role>, Refusal> {
        if self.open {
            return Ok(None);
        }
        let Access::Roles(allowed) = self.access(path) else {
            return Ok(None);
        };
        let role = self.role(authorization).ok_or(Refusal::Unauthenticated)?;
        if allowed.contains(&role) {
            Ok(Some(role))
        } else {
            Err(Refusal::PermissionDenied(role))
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The gRPC service a path names, as a bounded metrics label.
fn service_label(path: &str) -> &'static str {
    if path.starts_with(GATEWAY_LINK) {
        "GatewayLink"
    } else if path.starts_with(USER_DIRECTORY) {
        "UserDirectory"
    } else if path.starts_with(HANDSHAKE) {
        "Handshake"
    } else if path.starts_with(ENGINE_EVENTS) {
        "EngineEvents"
    } else if path.starts_with(WEBHOOK_DELIVERIES) {
        "WebhookDeliveries"
    } else {
        "other"
    }
}

/// Puts [`Policy`] in front of every gRPC service; the caller's [`Role`] goes into the request's
/// extensions for the handlers.
#[derive(Clone)]
pub struct AuthLayer {
    policy: Arc<Policy>,
}

impl AuthLayer {
    pub fn new(policy: Arc<Policy>) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    policy: Arc<Policy>,
}

type Response = http::Response<tonic::body::Body>;

impl<S, B> Service<http::Request<B>> for Authorize<S>
where
    S: Service<http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        match self.policy.check(path, authorization) {
            Ok(role) => {
                if let Some(role) = role {
                    request.extensions_mut().insert(role);
                }
                Either::Left(self.inner.call(request))
            }
            Err(refusal) => {
                let service = service_label(path);
                let status = match refusal {
                    Refusal::Unauthenticated => {
                        tracing::warn!(
                            path,
                            credential = if authorization.is_some() {
                                "unknown"
                            } else {
                                "missing"
                            },
                            "gRPC call refused: unauthenticated"
                        );
                        metrics::counter!("videochat_grpc_auth_refusals_total", "reason" => "unauthenticated", "service" => service)
                            .increment(1);
                        tonic::Status::unauthenticated("a valid credential is required")
                    }
                    Refusal::PermissionDenied(role) => {
                        tracing::warn!(
                            path,
                            role = role.as_str(),
                            "gRPC call refused: this role may not call it"
                        );
                        metrics::counter!("videochat_grpc_auth_refusals_total", "reason" => "permission_denied", "service" => service)
                            .increment(1);
                        tonic::Status::permission_denied("this credential may not call this method")
                    }
                };
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        handshake: HandshakeConfig,
    }

    fn policy(args: &[&str]) -> Policy {
        let config = Args::try_parse_from(std::iter::once("handshake").chain(args.iter().copied()))
            .unwrap()
            .handshake;
        Policy::from_config(&config)
    }

    const TOKENS: &[&str] = &[
        "--grpc-gateway-tokens",
        "gw-old,gw-new",
        "--grpc-service-tokens",
        "svc",
    ];

    #[test]
    fn each_path_admits_its_roles_only() {
        let policy = policy(TOKENS);
        let check = |path: &str, token: Option<&str>| {
            let header = token.map(|t| format!("Bearer {t}"));
            policy.check(path, header.as_deref().map(str::as_bytes))
        };
        let link = "/videochat.handshake.v1.GatewayLink/Attach";
        let ring = "/videochat.handshake.v1.Handshake/RequestDirectVideochat";
        let users = "/videochat.handshake.v1.UserDirectory/GetUser";
        assert_eq!(check(link, Some("gw-old")), Ok(Some(Role::Gateway)));
        assert_eq!(check(link, Some("gw-new")), Ok(Some(Role::Gateway)));
        assert_eq!(
            check(link, Some("svc")),
            Err(Refusal::PermissionDenied(Role::Service))
        );
        assert_eq!(check(link, None), Err(Refusal::Unauthenticated));
        assert_eq!(check(link, Some("gw")), Err(Refusal::Unauthenticated));
        assert_eq!(check(ring, Some("gw-new")), Ok(Some(Role::Gateway)));
        assert_eq!(
            check(ring, Some("svc")),
            Err(Refusal::PermissionDenied(Role::Service))
        );
        assert_eq!(check(users, Some("svc")), Ok(Some(Role::Service)));
        assert_eq!(
            check(users, Some("gw-old")),
            Err(Refusal::PermissionDenied(Role::Gateway))
        );
        assert_eq!(check("/grpc.health.v1.Health/Check", None), Ok(None));
        // The scheme is part of the credential's header value.
        assert_eq!(
            policy.check(link, Some(b"gw-old")),
            Err(Refusal::Unauthenticated)
        );
    }

    #[test]
    fn push_devices_admit_both_roles_and_webhook_admin_only_services() {
        let policy = policy(TOKENS);
        let register = "/videochat.handshake.v1.UserDirectory/RegisterPushDevice";
        let admin = "/videochat.handshake.v1.WebhookDeliveries/RetryDeliveries";
        assert_eq!(
            policy.check(register, Some(b"Bearer gw-old")),
            Ok(Some(Role::Gateway))
        );
        assert_eq!(
            policy.check(register, Some(b"Bearer svc")),
            Ok(Some(Role::Service))
        );
        assert_eq!(policy.check(register, None), Err(Refusal::Unauthenticated));
        assert_eq!(
            policy.check(admin, Some(b"Bearer svc")),
            Ok(Some(Role::Service))
        );
        assert_eq!(
            policy.check(admin, Some(b"Bearer gw-new")),
            Err(Refusal::PermissionDenied(Role::Gateway))
        );
        assert_eq!(policy.check(admin, None), Err(Refusal::Unauthenticated));
    }

    #[test]
    fn services_may_act_for_users_only_when_allowed() {
        let mut args = TOKENS.to_vec();
        args.push("--grpc-services-act-for-users");
        let policy = policy(&args);
        let ring = "/videochat.handshake.v1.Handshake/AcceptVideochatRequest";
        assert_eq!(
            policy.check(ring, Some(b"Bearer svc")),
            Ok(Some(Role::Service))
        );
        assert_eq!(
            policy.check(
                "/videochat.handshake.v1.Handshake/CreateVideochat",
                Some(b"Bearer gw-old")
            ),
            Err(Refusal::PermissionDenied(Role::Gateway))
        );
    }

    #[test]
    fn with_checking_off_everyone_passes_and_with_nothing_configured_nobody() {
        let off = policy(&["--grpc-auth", "none"]);
        assert!(off.accepts_anyone());
        assert_eq!(
            off.check("/videochat.handshake.v1.GatewayLink/Attach", None),
            Ok(None)
        );
        let nothing = policy(&["--grpc-gateway-tokens", " "]);
        assert!(!nothing.accepts_anyone());
        assert_eq!(
            nothing.check(
                "/videochat.handshake.v1.GatewayLink/Attach",
                Some(b"Bearer ")
            ),
            Err(Refusal::Unauthenticated)
        );
    }
}
