//! `videochat client`, the real binary against a real stack: call (waiting for the answer,
//! `--no-wait`, Ctrl-C cancels), listen, accept, decline, invite, merge; readable and `--json`
//! output; exit codes, with the error code and message on a refusal.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_videochat");

fn client(app: &TestApp, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("client")
        .args(["--url", &app.ws_url()])
        .args(args)
        .env("VIDEOCHAT_JWT_SECRET", SECRET)
        .env_remove("VIDEOCHAT_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs a client command to the end: (exit code, stdout, stderr).
async fn run(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(DEADLINE, client(app, args).output())
        .await
        .unwrap_or_else(|_| panic!("`client {args:?}` did not finish"))
        .unwrap();
    (
        output.status.code().expect("exited, not killed"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// A client command still running, read line by line.
struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

impl Running {
    fn spawn(app: &TestApp, args: &[&str]) -> Self {
        let mut child = client(app, args).spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        Self {
            child,
            stdout,
            stderr,
        }
    }

    async fn stdout_line(&mut self) -> String {
        tokio::time::timeout(DEADLINE, self.stdout.next_line())
            .await
            .expect("a line on stdout in time")
            .unwrap()
            .expect("stdout still open")
    }

    /// Reads stderr until a line containing `needle` (the client's notes say what it waits for).
    async fn stderr_until(&mut self, needle: &str) -> String {
        loop {
            let line = tokio::time::timeout(DEADLINE, self.stderr.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} on stderr in time"))
                .unwrap()
                .unwrap_or_else(|| panic!("stderr ended before {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Ctrl-C.
    fn interrupt(&self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; returns the code and the rest of stdout.
    async fn finish(mut self) -> (i32, String) {
        let mut rest = String::new();
        tokio::time::timeout(DEADLINE, async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                rest.push_str(&line);
                rest.push('\n');
            }
        })
        .await
        .expect("stdout closes when the client exits");
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the client exits")
            .unwrap();
        (status.code().expect("exited, not killed"), rest)
    }
}

/// The request id at the end of "calling bob: request vcr_…".
fn request_id_of(line: &str) -> String {
    let id = line.rsplit(' ').next().unwrap().to_owned();
    assert!(id.starts_with("vcr_"), "{line}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_waits_for_the_answer_and_prints_the_credentials() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut bob = app.connect("bob").await;
    let mut alice = Running::spawn(
        &app,
        &["--as", "alice", "--name", "Alice Liddell", "call", "bob"],
    );

    let line = alice.stdout_line().await;
    assert!(line.starts_with("calling bob: request "), "{line}");
    let request_id = request_id_of(&line);
    alice.stderr_until("waiting for an answer").await;
    let ring = bob.event(REQUESTED).await;
    assert_eq!(ring["data"]["videochatRequestId"], request_id.as_str());
    // --name travelled as token claims.
    assert_eq!(ring["data"]["user"]["firstName"], "Alice");
    assert_eq!(ring["data"]["user"]["lastName"], "Liddell");

    let mine = ok(&bob
        .request(
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": request_id }),
        )
        .await);
    let (code, rest) = alice.finish().await;
    assert_eq!(code, 0, "{rest}");
    assert!(rest.starts_with("accepted\n"), "{rest}");
    let videochat = mine["videochatId"].as_str().unwrap();
    assert!(
        rest.contains(&format!(
            "videochat     {videochat} (mode videochat, engine livekit)"
        )),
        "{rest}"
    );
    assert!(rest.contains("identity      alice (uid 1)"), "{rest}");
    assert!(
        rest.contains("permissions   isModerator isOwner isPromoted isParticipant"),
        "{rest}"
    );
    assert!(rest.contains("token expires "), "{rest}");
    assert!(
        rest.contains("livekit meet  https://meet.livekit.io/custom?liveKitUrl=ws%3A%2F%2Flocalhost%3A7880&token=eyJ"),
        "{rest}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_json_prints_the_response_and_the_ending_frame_and_exits_2_when_declined() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut bob = app.connect("bob").await;
    let mut alice = Running::spawn(&app, &["--as", "alice", "--json", "call", "bob"]);

    let response: Value = serde_json::from_str(&alice.stdout_line().await).unwrap();
    assert_eq!(response["type"], "videochat:requestDirectVideochat");
    assert_eq!(response["error"]["status"], false);
    let request_id = response["data"]["videochatRequestId"].clone();
    assert_eq!(
        bob.event(REQUESTED).await["data"]["videochatRequestId"],
        request_id
    );
    ok(&bob
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": request_id }),
        )
        .await);
    let (code, rest) = alice.finish().await;
    assert_eq!(code, 2, "a declined call is not answered: {rest}");
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.len(), 1, "one frame per line: {rest}");
    let ending: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(ending["type"], DECLINED);
    assert_eq!(
        ending["data"],
        json!({ "videochatRequestId": request_id, "reason": "declined" })
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_a_ringing_call() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut bob = app.connect("bob").await;
    let mut alice = Running::spawn(&app, &["--as", "alice", "call", "bob"]);
    let request_id = request_id_of(&alice.stdout_line().await);
    alice.stderr_until("Ctrl-C cancels the call").await;
    bob.event(REQUESTED).await;

    alice.interrupt();
    let ended = bob.event(DECLINED).await;
    assert_eq!(
        ended["data"],
        json!({ "videochatRequestId": request_id, "reason": "cancelled" })
    );
    let (code, rest) = alice.finish().await;
    assert_eq!(code, 130, "{rest}");
    assert_eq!(rest, format!("cancelled {request_id}\n"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_no_wait_prints_the_request_id_and_leaves_the_ring_ringing() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut bob = app.connect("bob").await;
    let (code, out, err) = run(&app, &["--as", "alice", "call", "bob", "--no-wait"]).await;
    assert_eq!(code, 0, "{err}");
    let request_id = request_id_of(out.trim_end());
    assert!(
        err.contains(&format!(
            "cancel with: videochat client --as alice decline {request_id}"
        )),
        "{err}"
    );
    assert_eq!(
        bob.event(REQUESTED).await["data"]["videochatRequestId"],
        request_id.as_str()
    );
    // The ring outlives the client's socket.
    ok(&bob
        .request(
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": request_id }),
        )
        .await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_rings_and_what_becomes_of_them_until_ctrl_c() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut listen = Running::spawn(&app, &["--as", "bob", "listen"]);
    listen.stderr_until("listening as bob").await;
    let mut alice = app.connect("alice").await;

    // A ring, then alice hangs up.
    let first = ok(&alice
        .request(
            "videochat:requestDirectVideochat",
            json!({ "targetUser": "bob" }),
        )
        .await)["videochatRequestId"]
        .as_str()
        .unwrap()
        .to_owned();
    let line = listen.stdout_line().await;
    assert!(
        line.starts_with(&format!(
            "ringing: {first} from alice Tester (alice) — direct call, "
        )),
        "{line}"
    );
    assert!(line.ends_with(" s left"), "{line}");
    assert_eq!(
        listen.stdout_line().await,
        format!("  accept:  videochat client --as bob accept {first}")
    );
    assert_eq!(
        listen.stdout_line().await,
        format!("  decline: videochat client --as bob decline {first}")
    );
    ok(&alice
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": first }),
        )
        .await);
    assert_eq!(
        listen.stdout_line().await,
        format!("ended: {first} cancelled (the caller hung up first)")
    );

    // Another ring, accepted by a second device of bob's (a one-shot `accept`).
    let second = ok(&alice
        .request(
            "videochat:requestDirectVideochat",
            json!({ "targetUser": "bob" }),
        )
        .await)["videochatRequestId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        listen
            .stdout_line()
            .await
            .starts_with(&format!("ringing: {second} "))
    );
    let (code, out, err) = run(&app, &["--as", "bob", "accept", &second]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("accepted {second}\n")), "{out}");
    assert!(out.contains("identity      bob (uid 2)"), "{out}");
    assert!(
        out.contains("permissions   isPromoted isParticipant\n"),
        "{out}"
    );
    alice.event(DIRECT_ACCEPTED).await;
    loop {
        // The ring's accept/decline hints come first.
        let line = listen.stdout_line().await;
        if line.starts_with("answered:") {
            assert_eq!(
                line,
                format!("answered: {second} was accepted on one of your devices")
            );
            break;
        }
    }

    listen.interrupt();
    let (code, rest) = listen.finish().await;
    assert_eq!(code, 0, "{rest}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_json_prints_every_frame_including_the_rings_replayed_at_connect() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let request_id = ring(&mut alice, &mut bob).await;

    let mut listen = Running::spawn(&app, &["--as", "bob", "--json", "listen"]);
    let replayed: Value = serde_json::from_str(&listen.stdout_line().await).unwrap();
    assert_eq!(replayed["type"], REQUESTED);
    assert_eq!(replayed["data"]["videochatRequestId"], request_id);
    // A replay of the live ring, or — when bob's other socket got it less than the delivery
    // report interval ago — the ring event itself under its position.
    let id = replayed["event"]["id"].as_str().unwrap();
    assert!(
        id.starts_with("replay_") || id.parse::<u64>().is_ok(),
        "{id}"
    );

    ok(&alice
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": request_id }),
        )
        .await);
    let line = listen.stdout_line().await;
    assert!(!line.contains('\n') && line.starts_with('{'), "{line}");
    let ended: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ended["type"], DECLINED);
    assert_eq!(ended["data"]["reason"], "cancelled");
    assert_eq!(
        ended["error"],
        json!({ "status": false, "code": 0, "message": "" })
    );

    listen.interrupt();
    let (code, rest) = listen.finish().await;
    assert_eq!((code, rest.as_str()), (0, ""));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_merge_invite_and_decline_as_one_shot_commands() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;
    let mut dave = app.connect("dave").await;

    // bob accepts alice's call from the command line.
    let first = ring(&mut alice, &mut bob).await;
    let first = first.as_str().unwrap();
    let (code, out, err) = run(&app, &["--as", "bob", "accept", first]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("accepted {first}\n")), "{out}");
    let videochat = alice.event(DIRECT_ACCEPTED).await["data"]["videochatId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        out.contains(&format!("videochat     {videochat} ")),
        "{out}"
    );

    // carol calls bob; bob merges her into the videochat (--json: the response, as received).
    let second = ring(&mut carol, &mut bob).await;
    let second = second.as_str().unwrap();
    let (code, out, err) = run(
        &app,
        &["--as", "bob", "--json", "merge", &videochat, second],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let response: Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert_eq!(response["type"], "videochat:mergeToVideochat");
    assert_eq!(response["error"]["status"], false);
    assert!(response.get("data").is_none(), "{out}");
    assert_eq!(
        carol.event(DIRECT_ACCEPTED).await["data"]["videochatId"],
        videochat.as_str()
    );

    // alice invites dave; dave says no from the command line.
    let (code, out, err) = run(&app, &["--as", "alice", "invite", "dave", &videochat]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("inviting dave into {videochat}: request vcr_")),
        "{out}"
    );
    let invitation = request_id_of(out.trim_end());
    let ring = dave.event(REQUESTED).await;
    assert_eq!(ring["data"]["videochatRequestId"], invitation.as_str());
    assert_eq!(ring["data"]["videochatId"], videochat.as_str());
    assert_eq!(ring["data"]["counter"], 3);
    let (code, out, err) = run(&app, &["--as", "dave", "decline", &invitation]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("declined {invitation}")), "{out}");
    assert_eq!(alice.event(DECLINED).await["data"]["reason"], "declined");

    // bob's history, from the command line: the merged call from carol, the accepted one from
    // alice; pages of one point to the next.
    let (code, out, err) = run(&app, &["--as", "bob", "calls"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("from carol") && lines[0].contains("merged"),
        "{out}"
    );
    assert!(lines[0].ends_with(second), "{out}");
    assert!(
        lines[1].contains("from alice") && lines[1].contains("accepted"),
        "{out}"
    );
    let (code, out, err) = run(&app, &["--as", "bob", "calls", "--limit", "1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("older: videochat client --as bob calls --before "),
        "{out}"
    );
    let (code, _, err) = run(&app, &["--as", "bob", "calls", "--limit", "0"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("error 1002"), "{err}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_exit_1_with_the_code_and_message() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let _alice = app.connect("alice").await;

    // Unknown user.
    let (code, out, err) = run(&app, &["--as", "alice", "call", "nobody"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(err.starts_with("error 1021 (user not found): "), "{err}");
    assert_eq!(out, "");

    // Known but offline: erin was here once.
    app.connect("erin").await.close().await;
    let (code, _, err) = run(&app, &["--as", "alice", "call", "erin"]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error 10011 (user not available): "),
        "{err}"
    );

    // --json: the refusal frame, as received, on stdout.
    let (code, out, _) = run(&app, &["--as", "alice", "--json", "call", "nobody"]).await;
    assert_eq!(code, 1);
    let frame: Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(frame["error"]["status"], true);
    assert_eq!(frame["error"]["code"], 1021);
    assert!(frame.get("data").is_none());

    // Someone else's ring.
    let (code, _, err) = run(&app, &["--as", "alice", "accept", "vcr_0000000000000000"]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error 10012 (request not found): "),
        "{err}"
    );

    // A token the gateway does not accept: no socket at all.
    let (code, _, err) = run(&app, &["--token", "not-a-jwt", "listen"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 401"), "{err}");
    app.stop().await;
}
