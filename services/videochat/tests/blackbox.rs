//! The service's gRPC surface, checked by clients we did not write: Python's `grpcio`,
//! `grpcio-reflection` (v1alpha) and `grpcio-health-checking`, in a virtualenv this test
//! creates under the target directory (once; `pip` needs the package index).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/blackbox")
}

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("grpc-blackbox-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.installed");
    let requirements = std::fs::read_to_string(here().join("requirements.txt")).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "python3 -m venv failed: the black-box check needs python3 with venv and pip"
    );
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(here().join("requirements.txt"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "pip install -r tests/blackbox/requirements.txt failed"
    );
    std::fs::write(&stamp, requirements).unwrap();
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_lists_services_by_reflection_and_calls_health() {
    let python = python();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let output = tokio::process::Command::new(&python)
        .arg(here().join("grpc_check.py"))
        .arg(app.bound.grpc.to_string())
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
