//! The client commands of `jobq`: `login`, `submit`, `status`, `logs`, `results` and
//! `cancel`. They talk HTTP to a jobq frontend (`jobq standalone` or `jobq frontend`) and
//! need none of the services' `JOBQ_` settings: only a server URL and a token, from flags,
//! from `JOBQ_URL` / `JOBQ_TOKEN`, or from the saved login.
//!
//! Exit codes, the same for every client command: 0 success, 1 other error (and a failed
//! job with `submit --wait`), 2 usage or configuration, 3 server unreachable, 4 not logged
//! in or token refused, 5 no such job or file, 130 a cancelled job with `submit --wait`.

mod api;
mod credentials;
mod display;
mod jobs;
mod login;
mod results;
mod submit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use jobq_common::idempotency::IdempotencyKey;

use self::api::Api;
use self::credentials::{EnvCredentials, SavedLogin};

/// Exit codes of the client commands, documented in every command's `--help`.
const EXIT_CODES: &str = "\
Exit codes: 0 success, 1 other error, 2 usage or configuration, 3 server unreachable, \
4 not logged in or token expired, 5 no such job or file";

/// How a client command failed; each kind has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// 1: the server refused the request, or anything else.
    Other,
    /// 2: bad arguments or configuration.
    Usage,
    /// 3: no answer from the server.
    Unreachable,
    /// 4: no token, or the server refused it.
    Auth,
    /// 5: no such job or file (or not the caller's).
    NotFound,
}

impl FailureKind {
    pub fn exit_code(self) -> u8 {
        match self {
            FailureKind::Other => 1,
            FailureKind::Usage => 2,
            FailureKind::Unreachable => 3,
            FailureKind::Auth => 4,
            FailureKind::NotFound => 5,
        }
    }
}

/// A client command's error: a message that says what to do, and its kind.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    pub kind: FailureKind,
    pub message: String,
}

impl ClientError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        ClientError {
            kind,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Usage, message)
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Other, message)
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// Where the server is and who the caller is; the same options for every client command.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Server")]
pub struct Connection {
    /// URL of the jobq frontend [default: $JOBQ_URL, else the saved login's, else
    /// http://127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Access token [default: $JOBQ_TOKEN, else the saved login's when it is for the same URL]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the server's JSON instead of human output (for scripts)
    #[arg(long)]
    pub json: bool,
}

/// The client commands, flattened into the `jobq` command list.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Log in to a jobq server and save the token for the other client commands.
    ///
    /// The URL, user and token are saved in ${XDG_CONFIG_HOME:-~/.config}/jobq/login.json,
    /// readable by you only (mode 0600).
    #[command(after_help = EXIT_CODES)]
    Login {
        /// User name (prompted for on a terminal when missing)
        #[arg(long)]
        user: Option<String>,
        /// Password (prompted for, without echo, on a terminal when missing)
        #[arg(long)]
        password: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Submit a job: a git repository URL, arguments and a config text; prints the job id.
    #[command(after_help = submit::SUBMIT_EXIT_CODES)]
    Submit {
        /// Git URL of the job's repository (a local directory is sent as its absolute path)
        #[arg(value_name = "REPO_URL")]
        repo: String,
        /// Arguments for `npm run start --`, split into words like a shell would (never run by one)
        #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
        args: Option<String>,
        /// File whose text becomes the job's config.json (`-` reads standard input)
        #[arg(long, value_name = "FILE", conflicts_with = "config_text")]
        config: Option<PathBuf>,
        /// Text that becomes the job's config.json
        #[arg(long, value_name = "TEXT")]
        config_text: Option<String>,
        /// Wait for the job to end, showing its status; exit with its outcome
        #[arg(long)]
        wait: bool,
        /// Submit at most once with this key (1 to 255 printable ASCII characters): the same
        /// key and job within 24 h print the first submit's job id instead of making another
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<IdempotencyKey>,
        // Boxed: the flags would make this the largest command by far.
        #[command(flatten)]
        schedule: Box<submit::ScheduleFlags>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List your jobs, newest first, or show one job in full.
    #[command(after_help = EXIT_CODES)]
    Status {
        /// Job id; without it, list jobs
        id: Option<String>,
        /// Every user's jobs (needs the admin role)
        #[arg(long)]
        all: bool,
        /// How many jobs to list (at most 100)
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100))]
        limit: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Print a job's output (stdout, or stderr with --stderr).
    #[command(after_help = EXIT_CODES)]
    Logs {
        /// Job id
        id: String,
        /// Keep printing new output until the job ends
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print the job's stderr instead of its stdout
        #[arg(long)]
        stderr: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// List a job's output files, or download them.
    #[command(after_help = results::RESULTS_HELP)]
    Results {
        /// Job id
        id: String,
        /// Output file to download (a path under the job's output/), or `--all`
        #[arg(value_name = "FILE", allow_hyphen_values = true)]
        file: Option<String>,
        /// Folder to download into (default: the current folder); without FILE, download every file
        #[arg(long, short = 'o', value_name = "DIR")]
        output: Option<PathBuf>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Cancel a job: a queued job never starts, a running one is stopped.
    #[command(after_help = EXIT_CODES)]
    Cancel {
        /// Job id
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

/// Runs a client command and turns its outcome into the process exit code.
pub async fn run(command: ClientCommand) -> ExitCode {
    match dispatch(command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jobq: {e}");
            ExitCode::from(e.kind.exit_code())
        }
    }
}

async fn dispatch(command: ClientCommand) -> ClientResult<ExitCode> {
    match command {
        ClientCommand::Login {
            user,
            password,
            connection,
        } => {
            let api = connect(&connection)?;
            login::login(&api, user, password, connection.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Submit {
            repo,
            args,
            config,
            config_text,
            wait,
            idempotency_key,
            schedule,
            connection,
        } => {
            let api = connect(&connection)?;
            let request = submit::SubmitRequest::build(repo, args, config, config_text)?
                .with_schedule(*schedule);
            submit::submit(&api, request, idempotency_key, wait, connection.json).await
        }
        ClientCommand::Status {
            id,
            all,
            limit,
            connection,
        } => {
            let api = connect(&connection)?;
            match id {
                Some(id) => jobs::show(&api, &id, connection.json).await?,
                None => jobs::list(&api, all, limit, connection.json).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Logs {
            id,
            follow,
            stderr,
            connection,
        } => {
            let api = connect(&connection)?;
            jobs::logs(&api, &id, follow, stderr, connection.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Results {
            id,
            file,
            output,
            connection,
        } => {
            let api = connect(&connection)?;
            results::results(&api, &id, file, output, connection.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Cancel { id, connection } => {
            let api = connect(&connection)?;
            jobs::cancel(&api, &id, connection.json).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--idempotency-key`: checked here with the server's rule, so a bad key is a usage error.
fn parse_idempotency_key(text: &str) -> Result<IdempotencyKey, String> {
    text.parse()
        .map_err(|e: jobq_common::idempotency::InvalidKey| e.to_string())
}

/// Resolves the server and token (flags, then environment, then the saved login).
fn connect(flags: &Connection) -> ClientResult<Api> {
    let saved = match SavedLogin::load() {
        Ok(saved) => saved,
        Err(e) => {
            eprintln!("jobq: warning: {e}; ignoring it (run `jobq login` to replace it)");
            None
        }
    };
    let resolved = credentials::resolve(flags, &EnvCredentials::from_env(), saved.as_ref())?;
    Api::new(resolved)
}
