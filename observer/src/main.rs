//! `jobq-observer`: the observer service for container images (`jobq observer` does the same),
//! and `jobq-observer simulate`, the elasticity simulator.

use clap::{Parser, Subcommand};
use jobq_common::settings::Settings;
use jobq_common::telemetry;
use jobq_observer::sim;

#[derive(Debug, Parser)]
#[command(
    name = "jobq-observer",
    version,
    about = "jobq observer: observations, scaling, lease reaper"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay the standard load trace under every policy in the discrete-event simulator
    /// and print a Markdown table per scale.
    Simulate {
        /// `small` (≤ 10 workers, as the real bench), `large` (≤ 1,000 workers, 1,000,000
        /// jobs/hour at the step) or `both`.
        #[arg(long, default_value = "both")]
        scale: String,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Target p95 queue wait, seconds.
        #[arg(long)]
        target_wait_secs: Option<f64>,
        /// Policies to compare (default: static-min, static-max, seed, lag, queueing).
        #[arg(long, value_delimiter = ',')]
        policies: Vec<String>,
    },
}

fn simulate(
    scale: &str,
    seed: u64,
    target: Option<f64>,
    policies: &[String],
) -> anyhow::Result<()> {
    let scales: Vec<(&str, sim::SimConfig)> = match scale {
        "small" => vec![("small", sim::SimConfig::small())],
        "large" => vec![("large", sim::SimConfig::large())],
        "both" => vec![
            ("small", sim::SimConfig::small()),
            ("large", sim::SimConfig::large()),
        ],
        other => anyhow::bail!("unknown scale {other:?} (small, large or both)"),
    };
    let names: Vec<String> = if policies.is_empty() {
        sim::POLICIES.iter().map(|p| p.to_string()).collect()
    } else {
        policies.to_vec()
    };
    for (label, mut config) in scales {
        config.seed = seed;
        if let Some(t) = target {
            config.target_wait_secs = t;
        }
        let mut results = Vec::new();
        for name in &names {
            results.push(
                sim::run(&config, name)
                    .ok_or_else(|| anyhow::anyhow!("unknown policy {name:?}"))?,
            );
        }
        println!("### {label} scale\n");
        println!("{}", sim::table(&config, &results));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Simulate {
        scale,
        seed,
        target_wait_secs,
        policies,
    }) = args.command
    {
        return simulate(&scale, seed, target_wait_secs, &policies);
    }
    let settings = Settings::load()?;
    telemetry::init(settings.log_format);
    jobq_observer::run(settings, jobq_common::shutdown::on_signal()).await
}
