//! What a run writes (`--json`), and `summary`: the runs of one `just bench` side by side, our
//! figures over the peer's, and the targets of issue #7, as a table and one JSON document.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::flat::FlatFigures;
use crate::idle::IdleFigures;
use crate::paced::PacedFigures;
use crate::protocol::Protocol;

/// One scenario run against one server.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// Which server this was, e.g. `ours-sqlite` or `peer-postgres`.
    pub label: String,
    pub protocol: Protocol,
    pub url: String,
    pub started_unix_ms: u64,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "scenario", rename_all = "lowercase")]
pub enum Figures {
    Flat(FlatFigures),
    Paced(PacedFigures),
    Idle(IdleFigures),
}

impl Figures {
    pub fn human(&self) -> String {
        match self {
            Figures::Flat(f) => f.human(),
            Figures::Paced(f) => f.human(),
            Figures::Idle(f) => f.human(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SummaryArgs {
    /// Where to write the combined JSON.
    #[arg(long)]
    pub out: PathBuf,
    /// The label of the baseline the other runs are divided by.
    #[arg(long, default_value = "peer-postgres")]
    pub peer: String,
    /// `key=value` pairs copied into the JSON's `meta` (build label, commit, machine, knobs).
    #[arg(long = "meta", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
    /// Reports written by `--json`.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

fn parse_meta(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

/// The scenarios of one server.
#[derive(Default)]
struct Runs {
    flat: Option<Report>,
    paced: Option<Report>,
    idle: Option<Report>,
}

impl Runs {
    fn flat(&self) -> Option<&FlatFigures> {
        match self.flat.as_ref().map(|r| &r.figures) {
            Some(Figures::Flat(f)) => Some(f),
            _ => None,
        }
    }
    fn paced(&self) -> Option<&PacedFigures> {
        match self.paced.as_ref().map(|r| &r.figures) {
            Some(Figures::Paced(f)) => Some(f),
            _ => None,
        }
    }
    fn idle(&self) -> Option<&IdleFigures> {
        match self.idle.as_ref().map(|r| &r.figures) {
            Some(Figures::Idle(f)) => Some(f),
            _ => None,
        }
    }

    /// The figures the table shows.
    fn columns(&self) -> Vec<Column> {
        let flat = self.flat();
        let paced = self.paced();
        let idle = self.idle();
        let column = |key, header, value| Column { key, header, value };
        vec![
            column(
                "flat_handshakes_per_s",
                "flat handshakes/s",
                flat.map(|f| f.handshakes_per_s),
            ),
            column(
                "flat_errors",
                "flat errors",
                flat.map(|f| f.errors.count as f64),
            ),
            column(
                "flat_ring_p99_ms",
                "flat ring p99 ms",
                flat.map(|f| f.latency_ms.ring.p99),
            ),
            column(
                "flat_accept_p99_ms",
                "flat accept p99 ms",
                flat.map(|f| f.latency_ms.accept.p99),
            ),
            column(
                "paced_handshakes_per_s",
                "paced handshakes/s",
                paced.map(|f| f.handshakes_per_s),
            ),
            column(
                "paced_errors",
                "paced errors",
                paced.map(|f| f.errors.count as f64),
            ),
            column(
                "paced_slips",
                "paced slips",
                paced.map(|f| f.schedule_slips as f64),
            ),
            column(
                "paced_ring_p50_ms",
                "ring p50 ms",
                paced.map(|f| f.latency_ms.ring.p50),
            ),
            column(
                "paced_ring_p99_ms",
                "ring p99 ms",
                paced.map(|f| f.latency_ms.ring.p99),
            ),
            column(
                "paced_accept_p99_ms",
                "accept p99 ms",
                paced.map(|f| f.latency_ms.accept.p99),
            ),
            column(
                "paced_stop_ringing_p99_ms",
                "stop-ringing p99 ms",
                paced.map(|f| f.latency_ms.stop_ringing.p99),
            ),
            column(
                "idle_kib_per_socket",
                "KiB/socket",
                idle.and_then(|f| f.kib_per_socket),
            ),
            column(
                "idle_connects_per_s",
                "connects/s",
                idle.map(|f| f.connects_per_s),
            ),
        ]
    }
}

/// One column of the table: its JSON key, its header, this run's figure.
struct Column {
    key: &'static str,
    header: &'static str,
    value: Option<f64>,
}

/// Columns whose ours/peer ratio is shown (errors and slips are not ratios).
const RATIO_COLUMNS: [&str; 9] = [
    "flat_handshakes_per_s",
    "flat_ring_p99_ms",
    "flat_accept_p99_ms",
    "paced_handshakes_per_s",
    "paced_ring_p99_ms",
    "paced_accept_p99_ms",
    "paced_stop_ringing_p99_ms",
    "idle_kib_per_socket",
    "idle_connects_per_s",
];

pub fn summary(args: &SummaryArgs) -> anyhow::Result<String> {
    let mut labels: Vec<String> = Vec::new();
    let mut runs: BTreeMap<String, Runs> = BTreeMap::new();
    for path in &args.reports {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report: Report =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if !labels.contains(&report.label) {
            labels.push(report.label.clone());
        }
        let entry = runs.entry(report.label.clone()).or_default();
        match report.figures {
            Figures::Flat(_) => entry.flat = Some(report),
            Figures::Paced(_) => entry.paced = Some(report),
            Figures::Idle(_) => entry.idle = Some(report),
        }
    }

    let mut table = String::new();
    let header = runs.values().next().map(Runs::columns).unwrap_or_default();
    table.push_str("| run |");
    for column in &header {
        table.push_str(&format!(" {} |", column.header));
    }
    table.push_str("\n|---|");
    table.push_str(&"---:|".repeat(header.len()));
    table.push('\n');
    for label in &labels {
        table.push_str(&format!("| {label} |"));
        for column in runs[label].columns() {
            table.push_str(&format!(" {} |", cell(column.value)));
        }
        table.push('\n');
    }

    let mut ratios = BTreeMap::new();
    if let Some(peer) = runs.get(&args.peer) {
        let peer_columns = peer.columns();
        table.push_str(&format!(
            "\nours / {} (throughput and connects/s: higher is better; latency and memory: lower is better)\n\n| ratio |",
            args.peer
        ));
        for key in RATIO_COLUMNS {
            let header = header
                .iter()
                .find(|c| c.key == key)
                .map_or(key, |c| c.header);
            table.push_str(&format!(" {header} |"));
        }
        table.push_str("\n|---|");
        table.push_str(&"---:|".repeat(RATIO_COLUMNS.len()));
        table.push('\n');
        for label in labels.iter().filter(|l| **l != args.peer) {
            let ours = runs[label].columns();
            let mut row = BTreeMap::new();
            table.push_str(&format!("| {label} / {} |", args.peer));
            for key in RATIO_COLUMNS {
                let find = |columns: &[Column]| {
                    columns.iter().find(|c| c.key == key).and_then(|c| c.value)
                };
                let ratio = match (find(&ours), find(&peer_columns)) {
                    (Some(o), Some(p)) if p > 0.0 => Some(o / p),
                    _ => None,
                };
                table.push_str(&format!(" {} |", cell(ratio)));
                row.insert(key, ratio);
            }
            table.push('\n');
            ratios.insert(label.clone(), row);
        }
    }

    let mut targets = BTreeMap::new();
    for label in labels.iter().filter(|l| **l != args.peer) {
        let ours = &runs[label];
        let peer_flat = runs.get(&args.peer).and_then(Runs::flat);
        targets.insert(label.clone(), issue_targets(ours, peer_flat));
    }
    if !targets.is_empty() {
        table.push_str("\nissue #7 targets (— : not measured in this run)\n\n");
        for label in labels.iter().filter(|l| **l != args.peer) {
            let checks = targets[label].as_object().into_iter().flatten();
            let verdicts: Vec<String> = checks
                .map(|(name, verdict)| {
                    let verdict = match verdict.as_bool() {
                        Some(true) => "yes",
                        Some(false) => "NO",
                        None => "—",
                    };
                    format!("{name}: {verdict}")
                })
                .collect();
            table.push_str(&format!("- {label}: {}\n", verdicts.join(", ")));
        }
    }

    let mut combined_runs = serde_json::Map::new();
    for (label, r) in runs {
        combined_runs.insert(
            label,
            json!({ "flat": r.flat, "paced": r.paced, "idle": r.idle }),
        );
    }
    let meta: BTreeMap<_, _> = args.meta.iter().cloned().collect();
    let document = json!({
        "meta": meta,
        "peer": args.peer,
        "order": labels,
        "runs": combined_runs,
        "ratios_ours_over_peer": ratios,
        "targets": targets,
        "table": table,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&document)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(table)
}

/// Issue #7's targets, each true, false, or null when its scenario did not run.
fn issue_targets(ours: &Runs, peer_flat: Option<&FlatFigures>) -> Value {
    let flat = ours.flat().map(|f| {
        let beats_peer = peer_flat.map(|p| f.handshakes_per_s >= 1.5 * p.handshakes_per_s);
        beats_peer.map(|b| b && f.errors.count == 0)
    });
    let paced = ours.paced();
    let idle = ours.idle();
    json!({
        "flat_at_least_1_5x_peer_with_0_errors": flat.flatten(),
        "paced_ring_p99_at_most_5ms": paced.map(|p| p.latency_ms.ring.p99 <= 5.0),
        "paced_stop_ringing_p99_at_most_5ms": paced.map(|p| p.latency_ms.stop_ringing.p99 <= 5.0),
        "paced_rate_reached_with_0_errors": paced.map(|p| {
            p.errors.count == 0 && p.schedule_slips == 0 && p.handshakes as f64 >= 0.99 * p.scheduled as f64
        }),
        "idle_at_least_15000_sockets": idle.map(|i| i.opened >= 15_000),
        "idle_at_most_6_kib_per_socket": idle.and_then(|i| i.kib_per_socket.map(|k| k <= 6.0)),
        "idle_at_least_5000_connects_per_s": idle.map(|i| i.connects_per_s >= 5_000.0),
    })
}

fn cell(value: Option<f64>) -> String {
    match value {
        None => "—".to_owned(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}
