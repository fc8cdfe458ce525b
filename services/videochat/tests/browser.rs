//! The browser demo end to end in real Chromium: `tests/browser/demo.spec.mjs` drives Debian's
//! `/usr/bin/chromium` with playwright-core (installed under target/ by npm) against the real
//! stack started with the development secret, one scenario per test.
//!
//! Without Chromium the tests say they are skipped, and fail when `CI` is set (`.ci/run`
//! installs Chromium and sets it). Screenshots go to target/tmp/screenshots/, or to docs/img/
//! (the README's pictures) with `UPDATE_SCREENSHOTS=1`, so that an ordinary test run does not
//! rewrite tracked files.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::node::{npm_install, run_node};
use common::*;
use videochat_gateway::config::DEV_JWT_SECRET;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether Chromium is there; without it, skip, or fail under CI.
fn chromium_installed() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{CHROMIUM} is missing, and CI is set: the browser tests must run there \
         (.ci/run installs it with apt-get install -y chromium)"
    );
    eprintln!("skipped: chromium not installed (apt-get install chromium; .ci/run installs it)");
    false
}

fn screenshots() -> PathBuf {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/img")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    }
}

async fn scenario(name: &str, ring_timeout_s: f64) {
    if !chromium_installed() {
        return;
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let deps = npm_install("browser", &here.join("package.json"));
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, handshake| {
        gateway.jwt_secret = DEV_JWT_SECRET.into();
        handshake.ring_timeout_s = ring_timeout_s;
    })
    .await;
    let (passed, printed) = run_node(
        &here.join("demo.spec.mjs"),
        &[name],
        &deps,
        &[
            ("DEMO_URL", format!("http://{}", app.bound.ws)),
            ("RING_TIMEOUT_S", ring_timeout_s.to_string()),
            ("CHROMIUM", CHROMIUM.into()),
            ("SCREENSHOTS", screenshots().display().to_string()),
        ],
        Duration::from_secs(240),
    )
    .await;
    println!("{printed}");
    assert!(passed, "browser scenario {name} failed:\n{printed}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_rings_both_tabs_of_the_callee_and_one_accepts() {
    scenario("call", 30.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_and_a_cancel_show_their_reasons_and_refusals_their_codes() {
    scenario("decline", 30.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_merged_into_a_videochat_and_a_third_user_invited() {
    scenario("merge-invite", 30.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_ring_shows_its_timeout() {
    scenario("timeout", 5.0).await;
}
