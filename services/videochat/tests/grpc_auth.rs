//! Internal gRPC authentication (docs/security.md): every method of `Handshake`,
//! `UserDirectory` and `GatewayLink`, called without a credential, with a wrong one, with the
//! other role's and with its own — refused with the right status or served, over the port and
//! in the process (the way `serve`'s own gateway calls). A gateway without a credential gets no
//! stream, so no events. Health needs no credential; reflection follows its setting.

mod common;

use common::*;
use tonic::Code;
use videochat_proto::v1 as pb;
use videochat_proto::v1::gateway_link_client::GatewayLinkClient;
use videochat_proto::v1::handshake_client::HandshakeClient;
use videochat_proto::v1::user_directory_client::UserDirectoryClient;

on_both_backends!(
    every_method_admits_its_own_role_only,
    services_act_for_users_only_when_allowed,
    a_gateway_without_a_credential_receives_nothing,
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Nobody,
    Wrong,
    Gateway,
    Service,
}

impl Caller {
    fn token(self) -> Option<&'static str> {
        match self {
            Caller::Nobody => None,
            Caller::Wrong => Some("not-a-credential-anyone-configured"),
            Caller::Gateway => Some(GATEWAY_TOKEN),
            Caller::Service => Some(SERVICE_TOKEN),
        }
    }
}

const HANDSHAKE_OPERATIONS: [&str; 6] = [
    "RequestDirectVideochat",
    "Invite",
    "AcceptVideochatRequest",
    "DeclineVideochatRequest",
    "MergeToVideochat",
    "ListPendingRings",
];
const SERVICE_ONLY: [&str; 3] = ["CreateVideochat", "UpsertUser", "GetUser"];

fn actor() -> Option<pb::Actor> {
    Some(pb::Actor {
        user_id: "alice".into(),
        idempotency_key: format!("auth-{}", uuid::Uuid::new_v4().simple()),
    })
}

/// How a call reaches the service.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// Over the gRPC port.
    Port,
    /// Into the replica's gRPC stack in this process, as `serve`'s own gateway calls it.
    InProcess,
}

type Channel =
    tonic::service::interceptor::InterceptedService<videochat_gateway::Transport, Bearer>;

async fn channel(app: &TestApp, way: Way, token: Option<&str>) -> Channel {
    let transport = match way {
        Way::Port => videochat_gateway::transport::network(
            tonic::transport::Endpoint::from_shared(app.grpc_url())
                .unwrap()
                .connect()
                .await
                .expect("gRPC port reachable"),
        ),
        Way::InProcess => app.in_process.clone(),
    };
    let bearer = Bearer(token.map(|t| format!("Bearer {t}").parse().unwrap()));
    tonic::service::interceptor::InterceptedService::new(transport, bearer)
}

/// Calls `method` as `caller` over the port: see [`call_by`].
async fn call(app: &TestApp, method: &str, caller: Caller) -> Code {
    call_by(app, Way::Port, method, caller).await
}

/// Calls `method` as `caller`: `Code::Ok`, or the status of the refusal or of the answer. The
/// requests name things that do not exist, so a served call answers NOT_FOUND (never
/// PERMISSION_DENIED, which only a refusal gives here).
async fn call_by(app: &TestApp, way: Way, method: &str, caller: Caller) -> Code {
    let channel = channel(app, way, caller.token()).await;
    let mut handshake = HandshakeClient::new(channel.clone());
    let mut users = UserDirectoryClient::new(channel.clone());
    let result = match method {
        "RequestDirectVideochat" => handshake
            .request_direct_videochat(pb::RequestDirectVideochatRequest {
                actor: actor(),
                target_user: "nobody".into(),
                engine: String::new(),
            })
            .await
            .map(drop),
        "Invite" => handshake
            .invite(pb::InviteRequest {
                actor: actor(),
                target_user: "nobody".into(),
                videochat_id: "vc_missing".into(),
            })
            .await
            .map(drop),
        "AcceptVideochatRequest" => handshake
            .accept_videochat_request(pb::AcceptVideochatRequestRequest {
                actor: actor(),
                videochat_request_id: "vcr_missing".into(),
            })
            .await
            .map(drop),
        "DeclineVideochatRequest" => handshake
            .decline_videochat_request(pb::DeclineVideochatRequestRequest {
                actor: actor(),
                videochat_request_id: "vcr_missing".into(),
            })
            .await
            .map(drop),
        "MergeToVideochat" => handshake
            .merge_to_videochat(pb::MergeToVideochatRequest {
                actor: actor(),
                videochat_id: "vc_missing".into(),
                videochat_request_id: "vcr_missing".into(),
            })
            .await
            .map(drop),
        "ListPendingRings" => handshake
            .list_pending_rings(pb::ListPendingRingsRequest {
                user_id: "alice".into(),
            })
            .await
            .map(drop),
        "CreateVideochat" => handshake
            .create_videochat(pb::CreateVideochatRequest {
                owner_user_id: "nobody".into(),
                videochat_mode: "conference".into(),
                engine: String::new(),
            })
            .await
            .map(drop),
        "UpsertUser" => users
            .upsert_user(pb::UpsertUserRequest {
                user: Some(pb::User {
                    id: "from-a-service".into(),
                    first_name: "Served".into(),
                    ..Default::default()
                }),
            })
            .await
            .map(drop),
        "GetUser" => users
            .get_user(pb::GetUserRequest {
                user_id: "nobody".into(),
            })
            .await
            .map(drop),
        "Attach" => attach(channel).await.map(drop),
        other => panic!("no such method {other}"),
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Attaches as a gateway; the first message it gets, if the stream opens.
async fn attach(channel: Channel) -> Result<Option<pb::ServiceMessage>, tonic::Status> {
    let hello = pb::GatewayMessage {
        kind: Some(pb::gateway_message::Kind::Hello(pb::Hello {
            gateway_id: format!("gw_fake_{}", uuid::Uuid::new_v4().simple()),
            sockets: Vec::new(),
        })),
    };
    // Hello, then the end of the gateway's side: the service answers Welcome and lets go.
    let outgoing = tokio_stream::iter(vec![hello]);
    let mut inbound = GatewayLinkClient::new(channel)
        .attach(outgoing)
        .await?
        .into_inner();
    tokio::time::timeout(DEADLINE, inbound.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no message"))?
}

fn served(code: Code) -> bool {
    !matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

async fn every_method_admits_its_own_role_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut methods: Vec<(&str, &[Caller])> = Vec::new();
    for method in HANDSHAKE_OPERATIONS {
        // The test stacks let services act for users (VIDEOCHAT_GRPC_SERVICES_ACT_FOR_USERS).
        methods.push((method, &[Caller::Gateway, Caller::Service]));
    }
    for method in SERVICE_ONLY {
        methods.push((method, &[Caller::Service]));
    }
    methods.push(("Attach", &[Caller::Gateway]));
    for way in [Way::Port, Way::InProcess] {
        for (method, allowed) in &methods {
            for caller in [Caller::Nobody, Caller::Wrong] {
                assert_eq!(
                    call_by(&app, way, method, caller).await,
                    Code::Unauthenticated,
                    "{method} as {caller:?}, {way:?}"
                );
            }
            for caller in [Caller::Gateway, Caller::Service] {
                let code = call_by(&app, way, method, caller).await;
                if allowed.contains(&caller) {
                    assert!(
                        served(code),
                        "{method} as {caller:?}, {way:?}, was refused: {code:?}"
                    );
                } else {
                    assert_eq!(
                        code,
                        Code::PermissionDenied,
                        "{method} as {caller:?}, {way:?}"
                    );
                }
            }
        }
    }
    // Refusals are counted by reason and service.
    let metrics = http_get(app.bound.metrics, "/metrics").await.unwrap().1;
    for expected in [
        "reason=\"unauthenticated\"",
        "reason=\"permission_denied\"",
        "service=\"GatewayLink\"",
        "service=\"UserDirectory\"",
    ] {
        assert!(
            metrics.lines().any(
                |l| l.starts_with("videochat_grpc_auth_refusals_total") && l.contains(expected)
            ),
            "{expected} not counted"
        );
    }
    app.stop().await;
}

async fn services_act_for_users_only_when_allowed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |_, h| h.grpc_services_act_for_users = false).await;
    for method in HANDSHAKE_OPERATIONS {
        assert_eq!(
            call(&app, method, Caller::Service).await,
            Code::PermissionDenied,
            "{method}"
        );
        assert!(
            served(call(&app, method, Caller::Gateway).await),
            "{method}"
        );
    }
    // Still theirs: the directory and starting videochats.
    for method in SERVICE_ONLY {
        assert!(
            served(call(&app, method, Caller::Service).await),
            "{method}"
        );
    }
    app.stop().await;
}

async fn a_gateway_without_a_credential_receives_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    for caller in [Caller::Nobody, Caller::Wrong, Caller::Service] {
        let attached = tokio::time::timeout(
            DEADLINE,
            attach(channel(&app, Way::Port, caller.token()).await),
        )
        .await
        .expect("refused at once");
        let status = attached.expect_err("no stream opens");
        assert!(
            matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ),
            "{caller:?}: {status:?}"
        );
    }
    // Meanwhile the real gateway is unaffected, and a real gateway credential attaches.
    ring(&mut alice, &mut bob).await;
    let welcome = attach(channel(&app, Way::Port, Some(GATEWAY_TOKEN)).await)
        .await
        .unwrap()
        .expect("a message");
    assert!(matches!(
        welcome.kind,
        Some(pb::service_message::Kind::Welcome(_))
    ));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_credential_and_reflection_follows_its_setting() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    async fn list_services(channel: GrpcChannel) -> Result<Vec<String>, tonic::Status> {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await?
            .into_inner();
        match responses.message().await?.and_then(|r| r.message_response) {
            Some(MessageResponse::ListServicesResponse(list)) => {
                Ok(list.service.into_iter().map(|s| s.name).collect())
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }

    for reflection in [true, false] {
        let app = TestApp::spawn_with(Backend::Sqlite, |_, h| h.grpc_reflection = reflection).await;
        let channel = app.grpc_as(None).await;
        for service in ["", "videochat.handshake.v1.Handshake"] {
            let status = HealthClient::new(channel.clone())
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        match list_services(channel).await {
            Ok(services) => {
                assert!(reflection, "reflection answered while off");
                assert!(
                    services.contains(&"videochat.handshake.v1.Handshake".to_owned()),
                    "{services:?}"
                );
            }
            Err(status) => {
                assert!(!reflection, "reflection refused while on: {status:?}");
                assert_eq!(status.code(), Code::Unimplemented);
            }
        }
        app.stop().await;
    }
}

/// A test certificate or key of `fixtures/grpc-tls/`.
fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/grpc-tls")
        .join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// A TLS channel to `addr` presenting `client` (a certificate of `fixtures/`, if any), with
/// the gateways' credential on every call; `Err` when the connection itself is refused.
async fn tls_channel(
    addr: std::net::SocketAddr,
    client: Option<&str>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem("ca.pem")));
    if let Some(name) = client {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            pem(&format!("{name}.pem")),
            pem(&format!("{name}.key")),
        ));
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect()
        .await?;
    let bearer = Bearer(Some(format!("Bearer {GATEWAY_TOKEN}").parse().unwrap()));
    Ok(tonic::service::interceptor::InterceptedService::new(
        videochat_gateway::transport::network(channel),
        bearer,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_of_the_configured_ca() {
    let app = TestApp::spawn_with(Backend::Sqlite, |g, h| {
        h.grpc_tls_cert_file = Some(fixture("service.pem"));
        h.grpc_tls_key_file = Some(fixture("service.key"));
        h.grpc_tls_client_ca_file = Some(fixture("ca.pem"));
        g.grpc_tls_ca_file = Some(fixture("ca.pem"));
        g.grpc_tls_client_cert_file = Some(fixture("gateway.pem"));
        g.grpc_tls_client_key_file = Some(fixture("gateway.key"));
    })
    .await;
    // The embedded gateway (which calls its replica in the process, not over the port) serves.
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    ring(&mut alice, &mut bob).await;

    // Another gateway with a certificate of the CA and the credential attaches.
    let channel = tls_channel(app.bound.grpc, Some("gateway")).await.unwrap();
    let welcome = attach(channel).await.unwrap().expect("a message");
    assert!(matches!(
        welcome.kind,
        Some(pb::service_message::Kind::Welcome(_))
    ));

    // Without a certificate, with one of another CA, or in plain text: not even health.
    for client in [None, Some("intruder")] {
        let refused = match tls_channel(app.bound.grpc, client).await {
            Err(_) => true,
            Ok(channel) => tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_err(),
        };
        assert!(refused, "{client:?} was served");
    }
    let plain = tonic::transport::Endpoint::from_shared(app.grpc_url())
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_err(),
            "plain HTTP/2 was served"
        );
    }
    app.stop().await;
}
