//! A Postgres server of one test's own, for fault tests that stop and start the database
//! (which the machine's shared server, used by every other test, must never see).
//!
//! Uses the machine's server binaries (`initdb`, `pg_ctl` from the newest
//! `/usr/lib/postgresql/<version>/bin`): a data directory under the system temp dir, a free
//! port on 127.0.0.1, the Unix socket in the same temp dir, trust authentication for user
//! `postgres`, and `fsync` off (the data is thrown away; the machine does not crash, only the
//! server). Commits stay synchronous: a fault test checks that nothing committed is lost. `initdb` refuses to run as root, so
//! when the test runs as root (CI containers) every server command runs as the `postgres`
//! user through `runuser`, and the directory is handed to that user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

/// A private Postgres server; stopped and deleted when dropped.
pub struct PrivatePg {
    server: Arc<Server>,
}

/// Where the cluster lives and how to run its commands (shared with the blocking pool).
struct Server {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    /// Run the server's commands as the `postgres` user (the test runs as root).
    as_postgres: bool,
}

impl PrivatePg {
    /// Creates a cluster and starts it.
    pub async fn start_new() -> Self {
        let server = tokio::task::spawn_blocking(Server::create)
            .await
            .expect("private Postgres set-up");
        Self {
            server: Arc::new(server),
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.server.port
        )
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Starts the server again and waits until it accepts connections.
    pub async fn start(&self) {
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || server.start())
            .await
            .unwrap();
    }

    /// `pg_ctl stop -m immediate`: the server exits at once, without a checkpoint, as in a
    /// crash; every connection breaks.
    pub async fn stop_immediate(&self) {
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .unwrap();
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::fs::remove_dir_all(&self.server.dir);
    }
}

impl Server {
    fn create() -> Self {
        let dir = std::env::temp_dir().join(format!("vc-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let server = Self {
            dir,
            port,
            bin: server_binaries(),
            as_postgres: running_as_root(),
        };
        if server.as_postgres {
            let chown = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&server.dir)
                .output()
                .expect("chown runs");
            assert!(chown.status.success(), "chown: {}", text(&chown));
        }
        let init = server.run(
            "initdb",
            &[
                "-D",
                path(&server.data()),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
        );
        assert!(init.status.success(), "initdb failed: {}", text(&init));
        server.start();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command
            .args(args)
            // Keep the server from inheriting the test's PG* settings or locale.
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env("LC_ALL", "C")
            .output()
            .unwrap_or_else(|e| panic!("{} cannot run: {e}", program.display()))
    }

    fn start(&self) {
        let log = self.dir.join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c max_connections=50",
            self.port,
            self.dir.display()
        );
        let started = self.run(
            "pg_ctl",
            &[
                "-D",
                path(&self.data()),
                "-l",
                path(&log),
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        assert!(
            started.status.success(),
            "pg_ctl start failed: {}\n{}",
            text(&started),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn stop(&self) {
        if !self.data().join("postmaster.pid").exists() {
            return;
        }
        let _ = self.run(
            "pg_ctl",
            &["-D", path(&self.data()), "-m", "immediate", "-w", "stop"],
        );
    }
}

/// The newest server's binaries under /usr/lib/postgresql.
fn server_binaries() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (a private Postgres needs the server binaries)",
                root.display()
            )
        })
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| panic!("no /usr/lib/postgresql/<version>/bin/initdb"))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn path(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
