//! `jobq-observer`: the observer service for container images (`jobq observer` does the same).

use clap::Parser;
use jobq_common::settings::Settings;
use jobq_common::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "jobq-observer",
    version,
    about = "jobq observer: observations, scaling, lease reaper"
)]
struct Args {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Args::parse();
    let settings = Settings::load()?;
    telemetry::init(settings.log_format);
    jobq_observer::run(settings, jobq_common::shutdown::on_signal()).await
}
