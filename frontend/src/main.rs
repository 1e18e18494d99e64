//! `jobq-frontend`: the REST API as its own binary (container images). Configuration
//! comes from `JOBQ_` variables (see `.env.example`); `--listen` overrides
//! `JOBQ_FRONTEND__LISTEN`.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use jobq_common::settings::Settings;
use jobq_common::telemetry;

#[derive(Debug, Parser)]
#[command(name = "jobq-frontend", version, about = "jobq REST API")]
struct Args {
    /// Address to listen on (default: frontend.listen, 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("jobq-frontend: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
    let addr = args.listen.unwrap_or(settings.frontend.listen);
    match jobq_frontend::run(settings, addr).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "jobq-frontend failed");
            eprintln!("jobq-frontend: {e:#}");
            ExitCode::FAILURE
        }
    }
}
