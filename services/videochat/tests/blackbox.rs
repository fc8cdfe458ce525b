//! The service's gRPC surface, checked by clients we did not write: Python's `grpcio`,
//! `grpcio-reflection` (v1alpha) and `grpcio-health-checking`, in a virtualenv this test
//! creates under the target directory (once; `pip` needs the package index).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_lists_services_by_reflection_and_calls_health() {
    let (python, here) = python_venv("blackbox");
    let app = TestApp::spawn(Backend::Sqlite).await;
    let output = tokio::process::Command::new(&python)
        .arg(here.join("grpc_check.py"))
        .arg(app.bound.grpc.to_string())
        .arg(SERVICE_TOKEN)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(output.status.success(), "black-box check failed:\n{text}");
    assert!(text.contains("0 failed checks"), "{text}");
    app.stop().await;
}
