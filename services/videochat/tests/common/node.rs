//! npm packages for the checks written in JavaScript (the browser demo's end-to-end tests, the
//! AsyncAPI frame check), installed once per target directory like the Python virtualenvs, and
//! re-installed when their `package.json` changes. Needs node and npm, and the npm registry the
//! first time.

use std::path::{Path, PathBuf};

/// Installs the dependencies of `package_json` into `target/tmp/<name>-node/` and returns that
/// directory (scripts find their packages there through `NODE_DEPS`).
pub fn npm_install(name: &str, package_json: &Path) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-node"));
    std::fs::create_dir_all(&dir).unwrap();
    // Tests of one binary run in parallel, and nextest runs each in a process of its own.
    let lock = std::fs::File::create(dir.join(".install-lock")).unwrap();
    lock.lock().unwrap();
    let wanted = std::fs::read_to_string(package_json)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", package_json.display()));
    let stamp = dir.join("package.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        std::fs::write(dir.join("package.json"), &wanted).unwrap();
        let status = std::process::Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-package-lock",
                // No install scripts: nothing here needs one, and some phone home.
                "--ignore-scripts",
                "--loglevel=error",
            ])
            .current_dir(&dir)
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "npm install in {} failed ({status:?}): this check needs node and npm, and the npm \
             registry the first time",
            dir.display()
        );
        std::fs::write(&stamp, wanted).unwrap();
    }
    dir
}

/// Runs `node <script> <args>` with `NODE_DEPS` pointing at `deps`; returns whether it
/// succeeded, and everything it printed.
pub async fn run_node(
    script: &Path,
    args: &[&str],
    deps: &Path,
    env: &[(&str, String)],
    deadline: std::time::Duration,
) -> (bool, String) {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script)
        .args(args)
        .env("NODE_DEPS", deps)
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(deadline, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish within {deadline:?}", script.display()))
        .unwrap_or_else(|e| panic!("cannot run node (is it installed?): {e}"));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}
