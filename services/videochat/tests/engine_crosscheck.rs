//! Our tokens, checked by code we did not write: LiveKit's `livekit-api` verifier, Agora's
//! reference `AccessToken2` builder and parser (`agoraiotools`), Twilio's `twilio` library and
//! PyJWT. Runs `tests/engines/crosscheck.py` in a virtualenv this test creates under the target
//! directory (once; `pip` needs the package index).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use videochat_handshake::engine::agora::{self, AgoraEngine, RtcToken};
use videochat_handshake::engine::livekit::LivekitEngine;
use videochat_handshake::engine::twilio::TwilioEngine;
use videochat_handshake::engine::{Engine, Grant};

const AGORA_APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
const AGORA_CERTIFICATE: &str = "5CFd2fd1755d40ecb72977518be15d3b";

/// Runs the checker on `cases`; returns (success, output).
fn crosscheck(python: &Path, here: &Path, cases: &Value) -> (bool, String) {
    let mut child = Command::new(python)
        .arg(here.join("crosscheck.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn grant<'a>(room: &'a str, identity: &'a str, uid: u32, can_publish: bool) -> Grant<'a> {
    Grant {
        room,
        identity,
        uid,
        display_name: "Ada Lovelace",
        can_publish,
        can_subscribe: true,
        issued_at: now(),
        ttl: Duration::from_secs(6 * 3600),
    }
}

fn cases() -> Value {
    let livekit = LivekitEngine::new("ws://localhost:7880".into(), "devkey".into(), "secret");
    let livekit_cases: Vec<Value> = [("speaker", true), ("listener", false)]
        .into_iter()
        .map(|(identity, can_publish)| {
            let token = livekit
                .credentials(&grant("vc_lk", identity, 1, can_publish))
                .unwrap()
                .token;
            json!({ "token": token, "api_key": "devkey", "api_secret": "secret", "identity": identity,
                    "room": "vc_lk", "name": "Ada Lovelace", "can_publish": can_publish })
        })
        .collect();

    // Agora: the published vector's inputs, with and without publish rights and uid 0; and
    // tokens minted by the engine (random salt, read back from the token for the comparison).
    let mut agora_cases = Vec::new();
    for (uid, publish) in [(2_882_341_273u32, false), (2_882_341_273, true), (0, false)] {
        let token = RtcToken {
            app_id: AGORA_APP_ID,
            app_certificate: AGORA_CERTIFICATE,
            channel: "7d72365eb983485397e3e3f9d460bdda",
            uid,
            publish,
            issue_ts: 1_111_111,
            salt: 1,
            expire: 600,
        }
        .build()
        .unwrap();
        agora_cases.push(json!({ "token": token, "app_id": AGORA_APP_ID, "app_certificate": AGORA_CERTIFICATE,
            "channel": "7d72365eb983485397e3e3f9d460bdda", "uid": uid, "issue_ts": 1_111_111, "salt": 1,
            "expire": 600, "can_publish": publish, "fixed_salt": true }));
    }
    let engine = AgoraEngine::new(AGORA_APP_ID.into(), AGORA_CERTIFICATE.into()).unwrap();
    for (uid, publish) in [(1u32, true), (2, false)] {
        let token = engine
            .credentials(&grant("vc_agora", "user", uid, publish))
            .unwrap()
            .token;
        let parsed = agora::parse::parse(&token).unwrap();
        agora_cases.push(
            json!({ "token": token, "app_id": AGORA_APP_ID, "app_certificate": AGORA_CERTIFICATE,
            "channel": "vc_agora", "uid": uid, "issue_ts": parsed.issue_ts, "salt": parsed.salt,
            "expire": 6 * 3600, "can_publish": publish, "fixed_salt": true }),
        );
    }

    let twilio = TwilioEngine::new(
        "AC00000000000000000000000000000000".into(),
        "SK00000000000000000000000000000000".into(),
        "twilio-api-key-secret-0123456789abcdef",
    );
    let issued = grant("vc_twilio", "grace", 1, true);
    let token = twilio.credentials(&issued).unwrap().token;
    let twilio_cases = vec![
        json!({ "token": token, "account_sid": "AC00000000000000000000000000000000",
        "api_key_sid": "SK00000000000000000000000000000000", "api_key_secret": "twilio-api-key-secret-0123456789abcdef",
        "identity": "grace", "room": "vc_twilio", "iat": issued.issued_at, "ttl": 6 * 3600 }),
    ];

    json!({ "livekit": livekit_cases, "agora": agora_cases, "twilio": twilio_cases })
}

#[test]
fn the_engines_own_libraries_accept_our_tokens() {
    let (python, here) = common::python_venv("engines");
    let (ok, output) = crosscheck(&python, &here, &cases());
    println!("{output}");
    assert!(ok, "cross-check failed:\n{output}");
    assert!(
        output.contains("8 tokens,") && output.contains(" 0 failed"),
        "{output}"
    );

    // The checker is not vacuous: a tampered token of each engine fails it.
    let mut tampered = cases();
    for engine in ["livekit", "twilio"] {
        let token = tampered[engine][0]["token"].as_str().unwrap().to_owned();
        let (body, signature) = token.rsplit_once('.').unwrap();
        let mut signature = signature.to_owned();
        let last = if signature.ends_with('A') { 'B' } else { 'A' };
        signature.pop();
        signature.push(last);
        tampered[engine][0]["token"] = json!(format!("{body}.{signature}"));
    }
    tampered["agora"][0]["app_certificate"] = json!("0".repeat(32));
    let (ok, output) = crosscheck(&python, &here, &tampered);
    assert!(!ok, "tampered tokens passed:\n{output}");
    assert!(output.contains("FAIL livekit"), "{output}");
    assert!(output.contains("FAIL twilio"), "{output}");
    assert!(output.contains("FAIL agora"), "{output}");
}
