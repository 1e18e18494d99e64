//! `jobq-worker`: the worker service for container images (`jobq worker` does the same).

use clap::Parser;
use jobq_common::settings::Settings;
use jobq_common::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "jobq-worker",
    version,
    about = "jobq worker: runs jobs from Kafka"
)]
struct Args {
    /// Jobs run at once (default: worker.slots, else the number of cores).
    #[arg(long)]
    slots: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    jobq_worker::shim::run_if_requested();
    tokio::runtime::Runtime::new()?.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load()?;
    telemetry::init(settings.log_format);
    let slots = args.slots.unwrap_or_else(|| settings.worker_slots());
    jobq_worker::run(settings, slots, jobq_common::shutdown::on_signal()).await
}
