//! `jobq`: the services and the client in one binary.

mod client;
mod standalone;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jobq_common::kafka::KafkaAdmin;
use jobq_common::mongo::MongoJobStore;
use jobq_common::oidc::OidcClient;
use jobq_common::s3::S3ArtifactStore;
use jobq_common::settings::Settings;
use jobq_common::{PortResult, telemetry};

#[derive(Debug, Parser)]
#[command(name = "jobq", version, about = "jobq: an elastic job queue")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the effective configuration (defaults, file, JOBQ_ variables); secrets redacted.
    Config,
    /// Check that Kafka, MongoDB, S3 and the identity provider answer with this configuration.
    Check,
    /// Serve the REST API until SIGINT or SIGTERM.
    Frontend {
        /// Address to listen on (default: frontend.listen, 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run jobs from Kafka until SIGINT or SIGTERM (then drain and hand back).
    Worker {
        /// Jobs run at once (default: worker.slots, else the number of cores).
        #[arg(long)]
        slots: Option<usize>,
    },
    /// Observe the queue, scale the workers and re-queue jobs of lost workers.
    Observer,
    /// Everything in one process on embedded backends: no Kafka, MongoDB, S3 or Keycloak.
    Standalone {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where state, artifacts and the token key live (default: standalone.data_dir, ./jobq-data).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// A fixed number of in-process workers (default: the observer sizes the pool between
        /// observer.min_workers and observer.max_workers).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Try the job sandbox of this host, or measure what it costs a job.
    Sandbox {
        #[command(subcommand)]
        action: SandboxAction,
    },
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum SandboxAction {
    /// Run `node --version` in a job sandbox built from the settings, as a worker does at start.
    Check,
    /// Start a job `--runs` times each way (directly, through the job shim, in the sandbox),
    /// interleaved, and print the time to its first line of output.
    Bench {
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
}

fn main() -> ExitCode {
    // A worker runs each job under its own executable as the job shim.
    jobq_worker::shim::run_if_requested();
    // The observer counts the worker group's members in a child of its own executable.
    jobq_common::kafka::group_members_if_requested();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("jobq: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn exit_with(what: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobq {what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    // Client commands need only a server URL and a token, none of the services' settings.
    let command = match cli.command {
        Command::Client(command) => return client::run(command).await,
        command => command,
    };
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("jobq: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
    match command {
        Command::Config => {
            println!("{settings:#?}");
            ExitCode::SUCCESS
        }
        Command::Check => check(&settings).await,
        Command::Frontend { listen } => {
            let addr = listen.unwrap_or(settings.frontend.listen);
            exit_with("frontend", jobq_frontend::run(settings, addr).await)
        }
        Command::Worker { slots } => {
            let slots = slots.unwrap_or_else(|| settings.worker_slots());
            let shutdown = jobq_common::shutdown::on_signal();
            exit_with("worker", jobq_worker::run(settings, slots, shutdown).await)
        }
        Command::Standalone {
            listen,
            data_dir,
            workers,
        } => {
            let options = standalone::Options {
                listen,
                data_dir: data_dir.unwrap_or_else(|| settings.standalone.data_dir.clone()),
                workers,
            };
            exit_with("standalone", standalone::run(settings, options).await)
        }
        Command::Observer => {
            let shutdown = jobq_common::shutdown::on_signal();
            exit_with("observer", jobq_observer::run(settings, shutdown).await)
        }
        Command::Sandbox { action } => exit_with("sandbox", sandbox(&settings, action).await),
        Command::Client(_) => {
            unreachable!("client commands are dispatched before the settings load")
        }
    }
}

async fn sandbox(settings: &Settings, action: SandboxAction) -> anyhow::Result<()> {
    use jobq_worker::probe;
    use jobq_worker::sandbox::Sandbox;
    let work = tempfile::Builder::new().prefix("jobq-sandbox-").tempdir()?;
    match action {
        SandboxAction::Check => {
            let sandbox = Sandbox::from_settings(&settings.worker)?;
            probe::check(&sandbox, work.path()).await?;
            println!("ok: a job runs in the sandbox ({})", sandbox.describe());
        }
        SandboxAction::Bench { runs } => {
            let runs = runs.max(1);
            let package = r#"{"name":"bench","version":"1.0.0","scripts":{"start":"node -e \"console.log('first line')\""}}"#;
            let jobs: [(&str, Vec<std::ffi::OsString>, Option<&str>); 2] = [
                (
                    "node -e (a job's first line)",
                    vec![
                        "node".into(),
                        "-e".into(),
                        "console.log('first line')".into(),
                    ],
                    None,
                ),
                (
                    "npm run start (its banner)",
                    vec!["npm".into(), "run".into(), "start".into()],
                    Some(package),
                ),
            ];
            println!(
                "sandbox cost per job: spawn to first line of stdout, {runs} runs each, interleaved; load average {}",
                std::fs::read_to_string("/proc/loadavg")
                    .unwrap_or_default()
                    .trim()
            );
            println!(
                "sandbox: {}",
                Sandbox::from_settings(&settings.worker)?.describe()
            );
            for (name, command, package_json) in jobs {
                let rows =
                    probe::bench(&settings.worker, work.path(), runs, &command, package_json)
                        .await?;
                println!("\n{name}");
                println!("  {:<32} {:>10} {:>10}", "started", "median ms", "p90 ms");
                let median = |row: &probe::BenchRow, q: f64| {
                    let mut v: Vec<f64> = row
                        .first_line
                        .iter()
                        .map(|d| d.as_secs_f64() * 1000.0)
                        .collect();
                    v.sort_by(f64::total_cmp);
                    v[((v.len() - 1) as f64 * q).round() as usize]
                };
                for row in &rows {
                    println!(
                        "  {:<32} {:>10.1} {:>10.1}",
                        row.label,
                        median(row, 0.5),
                        median(row, 0.9)
                    );
                }
                let (bare, off, on) = (
                    median(&rows[0], 0.5),
                    median(&rows[1], 0.5),
                    median(&rows[2], 0.5),
                );
                println!(
                    "  the sandbox adds {:.1} ms (median) to this job's start; the job shim without it {:.1} ms",
                    on - off,
                    off - bare
                );
            }
        }
    }
    Ok(())
}

async fn check(settings: &Settings) -> ExitCode {
    let mut ok = true;
    let mut report = |name: &str, result: PortResult<String>| match result {
        Ok(detail) => println!("{name:<8} ok      {detail}"),
        Err(e) => {
            ok = false;
            println!("{name:<8} FAILED  {e}");
        }
    };
    let kafka = async {
        let admin = KafkaAdmin::new(&settings.kafka.brokers)?;
        let partitions = admin.partition_count(&settings.kafka.jobs_topic).await;
        Ok(match partitions {
            Ok(n) => format!(
                "{} ({} has {n} partitions)",
                settings.kafka.brokers, settings.kafka.jobs_topic
            ),
            Err(_) => format!(
                "{} (topic {} not created yet)",
                settings.kafka.brokers, settings.kafka.jobs_topic
            ),
        })
    };
    report("kafka", kafka.await);
    let mongo = async {
        MongoJobStore::connect(&settings.mongo).await?;
        Ok(format!("database {}", settings.mongo.database))
    };
    report("mongo", mongo.await);
    let s3 = async {
        S3ArtifactStore::connect(&settings.s3).await?;
        Ok(format!(
            "{} bucket {}",
            settings.s3.endpoint, settings.s3.bucket
        ))
    };
    report("s3", s3.await);
    let oidc = async {
        let keys = OidcClient::new(settings.oidc.clone()).ready().await?;
        Ok(format!("{} ({keys} signing keys)", settings.oidc.issuer))
    };
    report("oidc", oidc.await);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
