//! `sink`: a webhook endpoint for benchmarks that answers every request `204 No Content` at
//! once and counts them, so `just bench` can measure the service with webhooks on
//! (`BENCH_TARGETS=… sqlite-webhooks postgres-webhooks`) without the endpoint being the limit.
//! Prints how many requests it answered when stopped (SIGTERM or Ctrl-C).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:18484")]
    addr: SocketAddr,
}

pub async fn run(args: &SinkArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.addr).await?;
    let answered = Arc::new(AtomicU64::new(0));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!("sink listening on {}", args.addr);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let _ = stream.set_nodelay(true);
        let answered = answered.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let answered = answered.clone();
                async move {
                    // Read the body, as a real endpoint would.
                    let _ = request.into_body().collect().await;
                    answered.fetch_add(1, Ordering::Relaxed);
                    let mut response = Response::new(Empty::<Bytes>::new());
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    println!(
        "sink answered {} webhook requests, using {:.2} s of CPU",
        answered.load(Ordering::Relaxed),
        own_cpu_seconds()
    );
    Ok(())
}

/// CPU time (user + system) this process used, from /proc (Linux; 0 elsewhere), so a bench on
/// one machine can tell the endpoint's share of the CPU from the service's.
fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces, inside parentheses).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}
