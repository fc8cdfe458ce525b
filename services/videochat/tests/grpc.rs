//! Internal services calling the handshake service directly over gRPC (a real tonic client), on
//! both stores.

mod common;

use common::*;
use serde_json::json;
use tonic_types::StatusExt;
use videochat_proto::v1 as pb;

on_both_backends!(
    application_errors_carry_the_contract_code_in_error_info,
    full_profiles_from_the_directory_reach_the_rings,
    invitees_into_a_conference_are_participants_not_promoted,
    bad_rpc_fields_are_invalid_argument_naming_the_field,
);

fn code(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get("code").cloned())
        .unwrap_or_default()
}

fn actor(user: &str, key: &str) -> Option<pb::Actor> {
    Some(pb::Actor {
        user_id: user.into(),
        idempotency_key: key.into(),
    })
}

async fn application_errors_carry_the_contract_code_in_error_info(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.handshake_client().await;
    let status = client
        .request_direct_videochat(pb::RequestDirectVideochatRequest {
            actor: actor("alice", "k1"),
            target_user: "nobody".into(),
            engine: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(code(&status), "1021");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.domain, "videochat.handshake.v1");
    assert_eq!(info.reason, "ERROR_CODE_TARGET_USER_NOT_FOUND");

    let status = client
        .accept_videochat_request(pb::AcceptVideochatRequestRequest {
            actor: actor("alice", "k2"),
            videochat_request_id: "vcr_missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(code(&status), "10012");

    let _bob = app.connect("bob").await;
    let _alice = app.connect("alice").await;
    let ring = client
        .request_direct_videochat(pb::RequestDirectVideochatRequest {
            actor: actor("alice", "k3"),
            target_user: "bob".into(),
            engine: "twilio-not-a-thing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(ring.code(), tonic::Code::InvalidArgument);
    assert_eq!(code(&ring), "1002");
    app.stop().await;
}

async fn full_profiles_from_the_directory_reach_the_rings(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut users = app.users_client().await;
    let profile = pb::User {
        id: "alice".into(),
        first_name: "Alice".into(),
        last_name: "Liddell".into(),
        privacy_mode: 1,
        avatar: "https://example.test/a.png".into(),
        avatar_3d: Some(pb::Avatar3D {
            asset_id: "asset-1".into(),
            asset_skins: [("hair".to_string(), "red".to_string())].into(),
            avatar_url: "https://models.example.test/a.glb".into(),
            avatar_user_id: "rpm-1".into(),
        }),
        company_name: "Wonderland".into(),
        company_title: "Explorer".into(),
    };
    users
        .upsert_user(pb::UpsertUserRequest {
            user: Some(profile.clone()),
        })
        .await
        .unwrap();
    let fetched = users
        .get_user(pb::GetUserRequest {
            user_id: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.user.as_ref(), Some(&profile));
    assert!(!fetched.available);
    let missing = users
        .get_user(pb::GetUserRequest {
            user_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&missing), "1021");

    // A socket whose token has no profile claims keeps the directory's profile.
    let bare = videochat_gateway::auth::sign_dev_token(SECRET, "alice", None, 600).unwrap();
    let mut alice = Client::connect(&app.ws_url(), "alice", &bare).await;
    let mut bob = app.connect("bob").await;
    ok(&alice
        .request(
            "videochat:requestDirectVideochat",
            json!({ "targetUser": "bob" }),
        )
        .await);
    let ring = bob.event(REQUESTED).await;
    let user = &ring["data"]["user"];
    assert_eq!(user["firstName"], "Alice");
    assert_eq!(user["privacyMode"], 1);
    assert_eq!(user["companyName"], "Wonderland");
    assert_eq!(user["companyTitle"], "Explorer");
    assert_eq!(user["avatar3D"]["assetId"], "asset-1");
    assert_eq!(user["avatar3D"]["assetSkins"]["hair"], "red");
    assert_eq!(
        user["avatar3D"]["avatarUrl"],
        "https://models.example.test/a.glb"
    );
    assert_eq!(user["avatar3D"]["avatarUserId"], "rpm-1");
    assert!(
        users
            .get_user(pb::GetUserRequest {
                user_id: "alice".into()
            })
            .await
            .unwrap()
            .into_inner()
            .available
    );
    app.stop().await;
}

async fn invitees_into_a_conference_are_participants_not_promoted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut host = app.connect("host").await;
    let mut guest = app.connect("guest").await;
    let mut client = app.handshake_client().await;
    let owner = client
        .create_videochat(pb::CreateVideochatRequest {
            owner_user_id: "host".into(),
            videochat_mode: "conference".into(),
            engine: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap();
    assert_eq!(owner.videochat_mode, "conference");
    assert!(owner.permissions.unwrap().is_owner);

    let invite = ok(&host
        .request(
            "videochat:invite",
            json!({ "targetUser": "guest", "videochatId": owner.videochat_id }),
        )
        .await);
    let ring = guest.event(REQUESTED).await;
    assert_eq!(ring["data"]["counter"], 1);
    let creds = ok(&guest
        .request(
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": invite["videochatRequestId"] }),
        )
        .await);
    assert_eq!(creds["videochatMode"], "conference");
    assert_eq!(creds["permissions"]["isParticipant"], true);
    assert_eq!(creds["permissions"]["isPromoted"], false);
    let claims = livekit_api::access_token::TokenVerifier::with_api_key("devkey", "secret")
        .verify(creds["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        claims.video.can_publish,
        Some(false),
        "not promoted: may not speak"
    );
    assert_eq!(claims.video.can_subscribe, Some(true));

    let bad_mode = client
        .create_videochat(pb::CreateVideochatRequest {
            owner_user_id: "host".into(),
            videochat_mode: "party".into(),
            engine: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&bad_mode), "1002");
    app.stop().await;
}

async fn bad_rpc_fields_are_invalid_argument_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.handshake_client().await;
    let status = client
        .decline_videochat_request(pb::DeclineVideochatRequestRequest {
            actor: None,
            videochat_request_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(code(&status), "1002");
    let status = client
        .decline_videochat_request(pb::DeclineVideochatRequestRequest {
            actor: actor("alice", ""),
            videochat_request_id: "x".into(),
        })
        .await
        .unwrap_err();
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "actor.idempotency_key");

    let mut users = app.users_client().await;
    let status = users
        .upsert_user(pb::UpsertUserRequest {
            user: Some(pb::User {
                id: "alice".into(),
                privacy_mode: 2,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&status), "1002");
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "user.privacy_mode");
    let missing = users
        .get_user(pb::GetUserRequest {
            user_id: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&missing), "1021", "the refused profile was not stored");
    app.stop().await;
}
