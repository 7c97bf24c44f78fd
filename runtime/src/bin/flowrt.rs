//! `flowrt`: runs compiled workflows durably on the embedded SQLite store.
//!
//! `flowrt run` deploys a program (a `.flow` file is compiled first), starts a run and drives
//! it until it completes, fails or waits; `flowrt worker` drives every run that can make
//! progress (woken timers included); the other commands show runs and their timelines.

use clap::{Args, Parser, Subcommand};
use flow_compiler::bytecode;
use flow_compiler::diagnostics::{Code, Diagnostic, render};
use flow_compiler::sources::{FsLoader, read_regular_file, show_size};
use flow_compiler::span::Span;
use flow_runtime::audit;
use flow_runtime::config::Config;
use flow_runtime::engine::{Engine, EngineError};
use flow_runtime::gates::Action;
use flow_runtime::history::WaitingOn;
use flow_runtime::ops::{self, Caller, OpError, RunQuery};
use flow_runtime::store::{EventKind, RunRecord, RunStatus};
use flow_runtime::telemetry::{self, LogFormat};
use flow_runtime::views::{EventView, GateView, RunView};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_WAITING: u8 = 10;

#[derive(Parser)]
#[command(name = "flowrt", version, about = "Run Flow workflows durably")]
struct Cli {
    /// The database (default: .flow/flow.db under the current directory).
    #[arg(long, global = true, env = "FLOW_DB")]
    db: Option<PathBuf>,
    /// The project config: users, roles, notification hooks (default: ./flow.toml if present).
    #[arg(long, global = true, env = "FLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Give a new database a test clock that `flowrt clock advance` moves.
    #[arg(long, global = true)]
    test_clock: bool,
    /// How logs are written on stderr: human or json (one object a line). Logs are off
    /// unless FLOW_LOG (or RUST_LOG) sets a level, e.g. FLOW_LOG=info.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Deploy, start a run and drive it until it completes, fails or waits.
    /// Exit status: 0 completed, 1 failed, 10 waiting, 2 usage, input or config error.
    Run(StartArgs),
    /// Deploy and start a run without driving it (a worker will).
    Start(StartArgs),
    /// Drive every run that can make progress, and fire due timers.
    Worker {
        /// Exit when nothing can make progress now, instead of waiting for timers.
        #[arg(long)]
        once: bool,
        /// How many tool calls may be in progress at once, each on a thread of its own (the
        /// worker drives other runs meanwhile).
        #[arg(long, default_value_t = DEFAULT_TOOL_THREADS)]
        tool_threads: usize,
    },
    /// List runs, newest first: id, status, workflow, when it started, and its outcome (the
    /// result's variant or a summary of it, the error, what it waits for).
    Runs {
        /// Only runs with this status (runnable, waiting, completed, failed, cancelled), or
        /// `needs_attention`: the runs an operator must look at (an undo block failed).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs started within this long (`1d`, `2h`) or since this time (RFC 3339).
        #[arg(long, value_name = "DURATION|TIME")]
        since: Option<String>,
        /// At most this many runs (the newest).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Show one run.
    Status {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Show a run's timeline.
    History {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run that has not finished.
    Cancel {
        run: String,
        /// Who cancels it (default: $USER).
        #[arg(long = "as")]
        user: Option<String>,
        /// End the run at once, without running the undo blocks of the steps it took
        /// (`let x = step undo { … }`); by default they run first, latest first.
        #[arg(long)]
        no_compensate: bool,
    },
    /// Record that what made a run need attention (an undo block that failed) was handled:
    /// the run leaves `flowrt runs --status needs_attention`, the note stays in its trail.
    Resolve {
        run: String,
        /// How it was handled (required): kept in the run's trail.
        #[arg(long)]
        note: String,
        /// Who resolves it (default: $USER); with flow.toml, that user needs role operator.
        #[arg(long = "as")]
        user: Option<String>,
    },
    /// The gates and inputs waiting for a person (with --as: those that user may decide).
    Approvals {
        #[arg(long = "as")]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Approve a gate. Exit status 3 when the decision is refused.
    Approve(DecideArgs),
    /// Reject a gate (a comment is required). Exit status 3 when refused.
    Reject(DecideArgs),
    /// Supply the value a run waits for. Exit status 3 when refused.
    Input {
        run: String,
        name: String,
        #[arg(long = "as")]
        user: String,
        /// The value as JSON, or @FILE.
        #[arg(long)]
        value: String,
        /// Record the input but leave driving the run to a worker.
        #[arg(long)]
        no_drive: bool,
        /// Refuse the input unless the request still shows what had this hash.
        #[arg(long)]
        expect_hash: Option<String>,
    },
    /// Evaluate a query of a running run (`query name -> T { … }` in its workflow) on its
    /// last durable point; nothing is changed. Exit status 3 when refused.
    Query {
        run: String,
        name: String,
        /// Print the whole view (`run`, `query`, `value`, `at`) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a signal to a run (it is queued until the run waits for it). Exit status 3 when
    /// refused.
    Signal {
        run: String,
        /// The signal's name, as the workflow's `accepts` clause declares it.
        name: String,
        /// The value as JSON, or @FILE (default: none, for a signal that carries no value).
        #[arg(long)]
        value: Option<String>,
        /// Who sends it: a user of flow.toml.
        #[arg(
            long = "as",
            required_unless_present = "system",
            conflicts_with = "system"
        )]
        user: Option<String>,
        /// Send it as system NAME (what `from system("NAME")` allows).
        #[arg(long)]
        system: Option<String>,
        /// Record the signal but leave driving the run to a worker.
        #[arg(long)]
        no_drive: bool,
    },
    /// Show or move the test clock of a database created with --test-clock.
    Clock {
        #[command(subcommand)]
        action: ClockAction,
    },
    /// The tamper-evident audit trail: `audit RUN`, `audit verify [RUN] [--anchor FILE]`,
    /// `audit anchor`, `audit export`, `audit refusals`.
    Audit(AuditArgs),
    /// Compile and record programs so that the API can start their workflows.
    Deploy {
        /// `.flow` source files or `.flowb` artifacts.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Serve the HTTP API and the web inbox, and drive runs (see spec/server.md). Stops on
    /// SIGTERM or SIGINT after the requests and the step in progress.
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// The most connections open at once (lowered to fit the limit of open files).
        #[arg(long, default_value_t = 512)]
        max_connections: usize,
        /// How long a request's headers may take to arrive (also how long a kept-alive
        /// connection may wait idle), and then its body.
        #[arg(long, default_value = "10s")]
        header_timeout: String,
        /// How many tool calls may be in progress at once, each on a thread of its own (the
        /// engine thread, which answers requests, never makes one).
        #[arg(long, default_value_t = DEFAULT_TOOL_THREADS)]
        tool_threads: usize,
        /// Programs to deploy first.
        files: Vec<PathBuf>,
    },
    /// Move an installation from SQLite to PostgreSQL: runs, waiting gates, timers, history
    /// with its audit chain, tokens; verified on the target afterwards. Stop the workers
    /// first; start them on the new store after.
    MigrateStore {
        /// The SQLite database: `sqlite:PATH` or a path.
        #[arg(long)]
        from: String,
        /// The PostgreSQL database: `postgres://user:password@host/db` (it must hold no runs).
        #[arg(long)]
        to: String,
    },
    /// The project configuration: `flowrt config check [FILE.flow…]` lists what in flow.toml
    /// is likely a mistake for the deployed programs (and FILEs): sections naming no tool or
    /// workflow, unset `${env:…}`, users without roles, roles nothing mentions. Exit status 1
    /// when it finds any (or the file does not load).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Secret keys: `flowrt key generate` prints a fresh one (64 hexadecimal digits) for
    /// FLOW_SECRET_KEY or FLOW_AUDIT_KEY.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Print a completion script for a shell: `flowrt completions bash > /etc/bash_completion.d/flowrt`.
    Completions { shell: clap_complete::Shell },
    /// API tokens for `flowrt serve`.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Check flow.toml (or --config) against the deployed programs and these files.
    Check {
        /// `.flow` sources or `.flowb` artifacts to check it against too (not deployed).
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Print a fresh random key (64 hexadecimal digits).
    Generate,
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token for a user of flow.toml (or, with --scrape, one that reads only
    /// /metrics and /openapi.json); the token is printed once, on stdout.
    Create {
        #[arg(required_unless_present_any = ["scrape", "system"], conflicts_with = "scrape")]
        user: Option<String>,
        /// A token for a monitoring system: GET /metrics and GET /openapi.json, nothing else.
        #[arg(long)]
        scrape: bool,
        /// A token for system NAME: it sends the signals whose senders name `system("NAME")`,
        /// nothing else.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["scrape", "user"])]
        system: Option<String>,
        /// Expire after this long, e.g. 30d or 12h (default: never).
        #[arg(long)]
        expires: Option<String>,
        /// A note to tell tokens apart, e.g. `ci` or `inbox`.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// The tokens (never the tokens themselves): id, user, name, created, expires, revoked.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (from `token list`); it stops working at once.
    Revoke { id: String },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AuditArgs {
    #[command(subcommand)]
    action: Option<AuditAction>,
    /// Show this run's trail, one record a line.
    run: Option<String>,
    /// One JSON object a line.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the keyed chain of one run's trail, or of every run's and the numbering of the
    /// runs. Exit 1 when broken.
    Verify {
        run: Option<String>,
        /// Also prove that nothing this anchor (from `audit anchor`) covers was removed or
        /// changed since.
        #[arg(long)]
        anchor: Option<PathBuf>,
    },
    /// Verify everything, then print a signed anchor of the whole trail (JSON) to keep
    /// elsewhere, for `audit verify --anchor FILE`. Exit 1 (and no anchor) when broken.
    Anchor,
    /// Requests the server refused that concern no run (those that do are in the run's
    /// trail), most recent first.
    Refusals {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Every run's trail as JSON lines (for a SIEM or an archive).
    Export {
        /// Only records at or after this time (RFC 3339, e.g. 2026-11-23T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
    },
}

#[derive(Args)]
struct DecideArgs {
    run: String,
    gate: String,
    #[arg(long = "as")]
    user: String,
    #[arg(long)]
    comment: Option<String>,
    /// Record the decision but leave driving the run to a worker.
    #[arg(long)]
    no_drive: bool,
    /// Refuse the decision unless the gate still shows what had this hash (from `approvals`).
    #[arg(long)]
    expect_hash: Option<String>,
}

#[derive(Subcommand)]
enum ClockAction {
    /// Print the clock's time.
    Show,
    /// Move the clock forward, e.g. `25h`, and fire what came due.
    Advance { by: String },
}

#[derive(Args)]
struct StartArgs {
    /// A `.flow` source file or a `.flowb` artifact.
    file: PathBuf,
    /// The workflow to run (needed when the program has several).
    #[arg(long)]
    workflow: Option<String>,
    /// The input: a JSON object with one field per parameter, or @FILE to read it from a file.
    #[arg(long)]
    input: Option<String>,
    /// Who starts the run (default: $USER).
    #[arg(long = "as")]
    user: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// `flowrt run` keeps driving a run that waits only on a timer due within this long
    /// (a `sleep`, a retry's back-off), also in a child run; `0s` stops at the first wait.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    max_wait: String,
}

/// A failure of the command itself: printed on stderr, exit status 2.
struct Usage(String);

impl From<EngineError> for Usage {
    fn from(e: EngineError) -> Self {
        Usage(e.to_string())
    }
}

/// An operation's error as `flowrt` words it: a refusal by the rules is `Refused` (exit
/// status 3), anything else a failure of the command (exit status 2).
enum Failed {
    Refused(String),
    Usage(Usage),
}

impl From<OpError> for Failed {
    fn from(error: OpError) -> Failed {
        match error {
            OpError::Forbidden { why, .. } => Failed::Refused(why),
            OpError::Refused { refusal, .. } => Failed::Refused(refusal.to_string()),
            OpError::NoSuchRun(run) => Failed::Usage(Usage(format!(
                "no run with id {run}; `flowrt runs` lists them"
            ))),
            OpError::Finished { run, .. } => Failed::Usage(Usage(format!(
                "run {run} has already finished; nothing to cancel"
            ))),
            OpError::RejectWithoutComment => {
                Failed::Usage(Usage("reject needs --comment saying why".to_string()))
            }
            other => Failed::Usage(Usage(other.to_string())),
        }
    }
}

impl From<OpError> for Usage {
    /// For operations with no refusal to tell apart (they read as the operator).
    fn from(error: OpError) -> Usage {
        match Failed::from(error) {
            Failed::Refused(why) => Usage(why),
            Failed::Usage(usage) => usage,
        }
    }
}

/// The value of an operation, or the exit status of its refusal: `refused: WHY` on stderr,
/// exit status 3.
fn allowed<T>(result: Result<T, OpError>) -> Result<Result<T, ExitCode>, Usage> {
    match result.map_err(Failed::from) {
        Ok(value) => Ok(Ok(value)),
        Err(Failed::Refused(why)) => {
            eprintln!("refused: {why}");
            Ok(Err(ExitCode::from(EXIT_REFUSED)))
        }
        Err(Failed::Usage(usage)) => Err(usage),
    }
}

/// Who the reading commands (`runs`, `status`, `history`, `audit`) read as: the operator, who
/// may read every run.
const OPERATOR: Caller<'static> = Caller::Operator("operator");

/// Who a command acts as: `--as USER` with a flow.toml is that user, under the API's rules;
/// otherwise the operator (whoever may run flowrt on this database), recorded as USER, or as
/// `operator` (normally $USER) without `--as`.
fn caller<'a>(user: Option<&'a str>, operator: &'a str, has_config: bool) -> Caller<'a> {
    match user {
        Some(user) if has_config => Caller::User(user),
        Some(user) => Caller::Operator(user),
        None => Caller::Operator(operator),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Spans are exported, and logs written, until the provider is shut down: after the
    // command, so that a run's last spans are flushed before the process exits.
    let telemetry = match telemetry::init(&telemetry::Settings::from_env(cli.log_format)) {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    };
    telemetry.shutdown();
    code
}

/// This machine's name, so that claims say which machine holds them.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// What every command needs: the database, its key, the clock and the configuration.
struct Setup {
    db: PathBuf,
    test_clock: bool,
    config: Option<PathBuf>,
}

fn run(cli: Cli) -> Result<ExitCode, Usage> {
    let setup = Setup {
        db: cli.db.unwrap_or_else(|| PathBuf::from(".flow/flow.db")),
        test_clock: cli.test_clock,
        config: cli.config,
    };
    // The server builds its engine on a thread of its own (an engine is not `Send`).
    if let Command::Serve {
        addr,
        max_connections,
        header_timeout,
        tool_threads,
        files,
    } = cli.command
    {
        let limits = serve_limits(max_connections, &header_timeout)?;
        return serve(setup, &addr, limits, tool_threads, files);
    }
    if let Command::MigrateStore { from, to } = &cli.command {
        return migrate_store(from, to);
    }
    // Commands that need no database.
    match &cli.command {
        Command::Key {
            action: KeyAction::Generate,
        } => {
            say(format_args!(
                "{}",
                flow_runtime::secrets::SecretKey::generate().to_hex()
            ));
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            // Into memory first: the generator panics when its output closes early (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "flowrt", &mut script);
            let _ = std::io::stdout().write_all(&script);
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    if let Command::Config {
        action: ConfigAction::Check { files },
    } = &cli.command
    {
        return config_check(&setup, files);
    }
    let (mut engine, has_config) = open_engine(&setup, only_reads(&cli.command))?;
    if drives_runs(&cli.command) {
        engine.keep_claims_alive(&setup.db.to_string_lossy())?;
    }
    dispatch(engine, has_config, cli.command)
}

/// Whether the command may drive runs, and so hold claims that must stay alive while it does
/// (a tool call can take longer than the lease).
fn drives_runs(command: &Command) -> bool {
    match command {
        Command::Run(_)
        | Command::Worker { .. }
        | Command::Cancel { .. }
        | Command::Approve(_)
        | Command::Reject(_)
        | Command::Input { .. }
        | Command::Signal { .. }
        | Command::Serve { .. } => true,
        Command::Query { .. } => false,
        Command::Clock { action } => matches!(action, ClockAction::Advance { .. }),
        Command::Deploy { .. }
        | Command::Token { .. }
        | Command::Start(_)
        | Command::Runs { .. }
        | Command::Status { .. }
        | Command::History { .. }
        | Command::Approvals { .. }
        | Command::Resolve { .. }
        | Command::Audit(_)
        | Command::MigrateStore { .. }
        | Command::Config { .. }
        | Command::Key { .. }
        | Command::Completions { .. } => false,
    }
}

/// Whether the command only reads the database: it works when flow.toml has an error (with a
/// warning), so that an operator can look at runs while fixing the file.
fn only_reads(command: &Command) -> bool {
    match command {
        Command::Runs { .. }
        | Command::Status { .. }
        | Command::History { .. }
        | Command::Query { .. } => true,
        Command::Audit(_) => true,
        Command::Run(_)
        | Command::Start(_)
        | Command::Worker { .. }
        | Command::Cancel { .. }
        | Command::Resolve { .. }
        | Command::Approvals { .. }
        | Command::Approve(_)
        | Command::Reject(_)
        | Command::Input { .. }
        | Command::Signal { .. }
        | Command::Clock { .. }
        | Command::Deploy { .. }
        | Command::Serve { .. }
        | Command::MigrateStore { .. }
        | Command::Config { .. }
        | Command::Key { .. }
        | Command::Completions { .. }
        | Command::Token { .. } => false,
    }
}

/// The project configuration `--config` names, else `flow.toml` here if there is one.
fn load_config(setup: &Setup) -> Result<Option<Config>, flow_runtime::config::ConfigError> {
    match &setup.config {
        Some(path) => Config::load(path).map(Some),
        None => Config::load_optional(Path::new("flow.toml")),
    }
}

fn open_engine(setup: &Setup, lenient: bool) -> Result<(Engine, bool), Usage> {
    let db = &setup.db;
    let spec = db.to_string_lossy();
    let shown = if flow_runtime::store::postgres::is_postgres_url(&spec) {
        flow_runtime::store::postgres::without_password(&spec)
    } else {
        spec.to_string()
    };
    let store = flow_runtime::store::open(&spec)
        .map_err(|e| Usage(format!("cannot open the database {shown}: {e}")))?;
    // Secrets in checkpoints are sealed with the database's key (see spec/runtime.md); read
    // once the database is known to be one, so that no key file appears beside anything else.
    let key = flow_runtime::secrets::SecretKey::for_store(&spec).map_err(Usage)?;
    // The audit trail is signed with FLOW_AUDIT_KEY, or a key derived from the secret key.
    let audit_key = audit::AuditKey::from_env()
        .map_err(Usage)?
        .unwrap_or_else(|| audit::AuditKey::derive(&key));
    flow_runtime::secrets::install(key);
    audit::key::install(audit_key);
    // Unique to this engine: the machine, the process, when, and which of its engines.
    static ENGINES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let owner = format!(
        "flowrt-{}-{}-{}-{}",
        hostname(),
        std::process::id(),
        flow_runtime::clock::Clock::system().now(),
        ENGINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut engine = Engine::new(store, owner);
    if let Ok(lease) = std::env::var("FLOW_LEASE_MS") {
        let lease = lease
            .parse::<i64>()
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                Usage(format!(
                    "FLOW_LEASE_MS={lease}: expected a positive number of milliseconds"
                ))
            })?;
        engine.set_lease(lease);
    }
    engine.load_clock()?;
    if setup.test_clock {
        engine.enable_test_clock()?;
    }
    // A database from before the gate index: index its open gates once (a no-op after).
    engine.index_open_gates()?;
    let config = match load_config(setup) {
        Ok(config) => config,
        Err(error) if lenient => {
            eprintln!(
                "warning: {error}; this command only reads the database, so it goes on without the configuration"
            );
            None
        }
        Err(error) => return Err(Usage(error.to_string())),
    };
    let has_config = config.is_some();
    engine.set_config(config.unwrap_or_else(Config::empty));
    Ok((engine, has_config))
}

fn dispatch(mut engine: Engine, has_config: bool, command: Command) -> Result<ExitCode, Usage> {
    match command {
        Command::Deploy { files } => {
            let code = deploy(&mut engine, &files)?;
            warn_unknown_sections(&mut engine, has_config, false)?;
            Ok(code)
        }
        Command::Token { action } => token(&mut engine, has_config, action),
        Command::Serve { .. }
        | Command::MigrateStore { .. }
        | Command::Config { .. }
        | Command::Key { .. }
        | Command::Completions { .. } => Err(Usage("handled before the engine opens".into())),
        Command::Run(args) => start(&mut engine, args, true, has_config),
        Command::Start(args) => start(&mut engine, args, false, has_config),
        Command::Worker { once, tool_threads } => {
            engine.run_effects_in_pool(tool_threads, None)?;
            worker(&mut engine, once)
        }
        Command::Runs {
            status,
            workflow,
            since,
            limit,
            json,
        } => {
            let now = engine.now();
            let query = run_query(status.as_deref(), workflow, since.as_deref(), limit, now)?;
            runs(&mut engine, &query, json)
        }
        Command::Status { run, json } => status(&mut engine, &run, json),
        Command::History { run, json } => history(&mut engine, &run, json),
        Command::Cancel {
            run,
            user,
            no_compensate,
        } => {
            if let Some(user) = &user {
                known_user(&engine, has_config, user)?;
            }
            cancel(
                &mut engine,
                &run,
                user.as_deref(),
                has_config,
                !no_compensate,
            )
        }
        Command::Resolve { run, note, user } => {
            if let Some(user) = &user {
                known_user(&engine, has_config, user)?;
            }
            let operator = default_user();
            let who = caller(user.as_deref(), &operator, has_config);
            if let Err(code) = allowed(ops::resolve(&mut engine, who, &run, &note))? {
                return Ok(code);
            }
            say(format_args!("run {run} resolved: {}", note.trim()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Approvals { user, json } => {
            approvals(&mut engine, user.as_deref(), has_config, json)
        }
        Command::Approve(args) => {
            let action = Action::Approve {
                comment: args.comment.clone().unwrap_or_default(),
            };
            decide(&mut engine, &args, action)
        }
        Command::Reject(args) => {
            let action = ops::reject(args.comment.clone())?;
            decide(&mut engine, &args, action)
        }
        Command::Input {
            run,
            name,
            user,
            value,
            no_drive,
            expect_hash,
        } => {
            let value = read_input(Some(&value), "--value")?;
            let args = DecideArgs {
                run,
                gate: name,
                user,
                comment: None,
                no_drive,
                expect_hash,
            };
            decide(&mut engine, &args, Action::Input { value })
        }
        Command::Query { run, name, json } => {
            let view = match allowed(ops::query(&mut engine, OPERATOR, &run, &name))? {
                Ok(view) => view,
                Err(refused) => return Ok(refused),
            };
            let shown = if json {
                serde_json::to_string_pretty(&view)
            } else {
                serde_json::to_string_pretty(&view.value)
            };
            say(format_args!("{}", shown.unwrap_or_default()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Signal {
            run,
            name,
            value,
            user,
            system,
            no_drive,
        } => {
            let value = match value {
                Some(value) => read_input(Some(&value), "--value")?,
                None => serde_json::Value::Null,
            };
            let sender = match (user, system) {
                (Some(user), _) => {
                    known_user(&engine, has_config, &user)?;
                    user
                }
                (None, Some(system)) => flow_runtime::tokens::system_identity(&system),
                (None, None) => {
                    return Err(Usage(
                        "name the sender with --as USER or --system NAME".into(),
                    ));
                }
            };
            signal(
                &mut engine,
                &run,
                &name,
                &value,
                &sender,
                has_config,
                !no_drive,
            )
        }
        Command::Clock { action } => clock(&mut engine, action),
        Command::Audit(args) => audit(&mut engine, args),
    }
}

fn default_user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "operator".to_string())
}

/// The program to deploy: an artifact's bytes, and the compiled sources when we have them
/// (to render runtime errors against the source).
struct Loaded {
    artifact: Vec<u8>,
    program: Option<flow_compiler::Program>,
}

fn load(file: &Path) -> Result<Loaded, Usage> {
    let shown = file.display();
    if file.extension().is_some_and(|e| e == "flowb") {
        let artifact = read_regular_file(file, MAX_ARTIFACT_BYTES)
            .map_err(|why| Usage(format!("cannot read {shown}: {why}")))?;
        bytecode::decode(&artifact).map_err(|e| Usage(format!("cannot read {shown}: {e}")))?;
        return Ok(Loaded {
            artifact,
            program: None,
        });
    }
    let path = file.to_string_lossy().replace('\\', "/");
    let program = flow_compiler::check_paths(&[path], &FsLoader)
        .map_err(|e| Usage(format!("cannot read {}: {}", e.path, e.reason)))?;
    if program.errors() > 0 {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        eprint!(
            "{}",
            render::human(&program.diagnostics, &program.db, color)
        );
        return Err(Usage(format!(
            "{shown} does not compile ({} error(s)); fix it and run again",
            program.errors()
        )));
    }
    let module = flow_compiler::lower::lower(&program)
        .map_err(|e| Usage(format!("cannot compile {shown}: {e}")))?;
    Ok(Loaded {
        artifact: bytecode::encode(&module),
        program: Some(program),
    })
}

/// The largest `.flowb` artifact `flowrt` reads.
const MAX_ARTIFACT_BYTES: u64 = 64 << 20;
/// The largest JSON value `--input` / `--value` take (inline or `@FILE`); the server's
/// request bodies have the same bound.
const MAX_INPUT_BYTES: u64 = 16 << 20;

fn read_input(input: Option<&str>, flag: &str) -> Result<serde_json::Value, Usage> {
    let (text, origin) = match input {
        None => return Ok(serde_json::json!({})),
        Some(arg) => match arg.strip_prefix('@') {
            Some(path) => (
                read_regular_file(Path::new(path), MAX_INPUT_BYTES)
                    .and_then(|bytes| {
                        String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
                    })
                    .map_err(|why| Usage(format!("{flag}: cannot read {path}: {why}")))?,
                format!("{flag} @{path}"),
            ),
            None if arg.len() as u64 > MAX_INPUT_BYTES => {
                return Err(Usage(format!(
                    "{flag} is longer than the {} flowrt reads",
                    show_size(MAX_INPUT_BYTES)
                )));
            }
            None => (arg.to_string(), flag.to_string()),
        },
    };
    flow_runtime::vm::value::parse_strict_json(text.as_bytes()).map_err(|e| {
        Usage(format!(
            "{origin} is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

fn start(
    engine: &mut Engine,
    args: StartArgs,
    drive: bool,
    has_config: bool,
) -> Result<ExitCode, Usage> {
    let input = read_input(args.input.as_deref(), "--input")?;
    let loaded = load(&args.file)?;
    let (version, module) = engine.deploy(&loaded.artifact)?;
    warn_unknown_sections(engine, has_config, true)?;
    let workflow = match args.workflow {
        Some(name) => name,
        None => match module.entry_workflows().collect::<Vec<_>>().as_slice() {
            [only] => only.name.clone(),
            many => {
                return Err(Usage(format!(
                    "{} has several workflows; choose one with --workflow ({})",
                    args.file.display(),
                    many.iter()
                        .map(|w| w.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        },
    };
    let max_wait = flow_runtime::vm::value::parse_duration(&args.max_wait).ok_or_else(|| {
        Usage(format!(
            "--max-wait: `{}` is not a duration (like 30s, 5m, 0s)",
            args.max_wait
        ))
    })?;
    // With --as the rules of the API apply: a known user who may start the workflow
    // (`[workflows.NAME] starters`). Without it the command acts as the operator (whoever may
    // run flowrt on this database), recorded as $USER.
    if let Some(user) = &args.user {
        if user.trim().is_empty() {
            return Err(Usage("--as needs a user name".to_string()));
        }
        known_user(engine, has_config, user)?;
    }
    let operator = default_user();
    let what = ops::Start {
        workflow: &workflow,
        version: Some(&version),
        input: &input,
    };
    let who = caller(args.user.as_deref(), &operator, has_config);
    let run = match allowed(ops::start(engine, who, &what))? {
        Ok(run) => run,
        Err(refused) => return Ok(refused),
    };
    if !drive {
        report_started(&run, &workflow, args.json);
        return Ok(ExitCode::SUCCESS);
    }
    let mut run = run;
    let mut status = engine.drive(&run)?;
    loop {
        match status {
            // `continue as`: the run goes on as its successor, which is what is reported.
            RunStatus::Continued => {
                run = flow_runtime::engine::successor_of(&run);
                status = engine.drive(&run)?;
            }
            RunStatus::Waiting => match wait_for_short_timer(engine, &run, max_wait)? {
                Some(next) => status = next,
                None => break,
            },
            _ => break,
        }
    }
    let record = engine
        .store()
        .run(&run)
        .map_err(|e| Usage(e.to_string()))?
        .ok_or_else(|| Usage(format!("run {run} vanished")))?;
    report(engine, &record, loaded.program.as_ref(), &module, args.json)?;
    Ok(match status {
        RunStatus::Completed | RunStatus::Continued => ExitCode::SUCCESS,
        RunStatus::Failed | RunStatus::Cancelled => ExitCode::from(EXIT_FAILED),
        RunStatus::Waiting | RunStatus::Runnable => ExitCode::from(EXIT_WAITING),
    })
}

/// When `run` (or the child it waits for, and so on) waits on a timer due within `max_wait`:
/// sleeps until it is due, says so on stderr, drives the run that waits, and returns the
/// status of `run` then. `None` when the wait is for a person or longer than `max_wait`.
fn wait_for_short_timer(
    engine: &mut Engine,
    run: &str,
    max_wait: i64,
) -> Result<Option<RunStatus>, Usage> {
    let mut waiting = run.to_string();
    let mut parent: Option<String> = None;
    // Follow the chain of children down to the run whose timer everything waits for.
    let (sleeper, due) = loop {
        let record = engine
            .store()
            .run(&waiting)
            .map_err(|e| Usage(e.to_string()))?
            .ok_or_else(|| Usage(format!("run {waiting} vanished")))?;
        match (record.status, record.waiting()) {
            (RunStatus::Waiting, Some(WaitingOn::Timer)) => {
                break (waiting, record.wake_at.unwrap_or(0));
            }
            (RunStatus::Waiting, Some(WaitingOn::Child { run })) => {
                parent = Some(waiting);
                waiting = run;
            }
            // A child that can go on, or one that ended while its parent was not woken yet.
            (RunStatus::Runnable, _) => break (waiting, 0),
            (status, _) if status.is_final() && parent.is_some() => {
                break (parent.unwrap_or_default(), 0);
            }
            _ => return Ok(None),
        }
    };
    let left = due - engine.now();
    if left > max_wait {
        return Ok(None);
    }
    if left > 0 {
        eprintln!(
            "run {sleeper} waits {} for a timer; flowrt run goes on when it fires (--max-wait {})",
            flow_runtime::vm::value::format_duration(left),
            flow_runtime::vm::value::format_duration(max_wait)
        );
        std::thread::sleep(std::time::Duration::from_millis(left as u64));
    }
    // Another process (a worker) may be driving it right now: let it, and look again.
    match engine.drive(&sleeper) {
        Ok(_) | Err(EngineError::Claimed(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let status = engine
        .store()
        .run(run)
        .map_err(|e| Usage(e.to_string()))?
        .ok_or_else(|| Usage(format!("run {run} vanished")))?
        .status;
    if status == RunStatus::Waiting && sleeper != run {
        // The child finished or waits on; its parent is woken by the engine when it ends.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(Some(status))
}

fn report_started(run: &str, workflow: &str, json: bool) {
    if json {
        say(format_args!(
            "{}",
            serde_json::json!({ "id": run, "workflow": workflow, "status": "runnable" })
        ));
    } else {
        say(format_args!(
            "run {run} started ({workflow}); `flowrt worker` will drive it"
        ));
    }
}

/// A run as `--json` shows it: as `GET /api/runs/{id}` does, field for field (with its input
/// and open gate).
fn run_json(engine: &mut Engine, run: &str) -> Result<String, Usage> {
    let shown = ops::show_run(engine, OPERATOR, run)?;
    serde_json::to_string(&shown).map_err(|e| Usage(e.to_string()))
}

/// Prints a view as one line of JSON.
fn say_json(view: &impl serde::Serialize) -> Result<(), Usage> {
    let text = serde_json::to_string(view).map_err(|e| Usage(e.to_string()))?;
    say(format_args!("{text}"));
    Ok(())
}

fn report(
    engine: &mut Engine,
    record: &RunRecord,
    program: Option<&flow_compiler::Program>,
    module: &bytecode::Module,
    json: bool,
) -> Result<(), Usage> {
    if json {
        // As `GET /api/runs` lists it (scripts read its `id` and `status`; `status --json`
        // adds the input and the open gate).
        say_json(&RunView::of(engine, record)?)?;
        return Ok(());
    }
    match record.status {
        RunStatus::Completed => {
            say(format_args!("run {} completed", record.id));
            say(format_args!(
                "{}",
                record.output.as_deref().unwrap_or("null")
            ));
        }
        RunStatus::Failed => {
            say(format_args!("run {} failed", record.id));
            eprint!("{}", render_failure(record, program, module));
        }
        RunStatus::Waiting => say(format_args!(
            "run {} is waiting ({})",
            record.id,
            record.waiting_on.as_deref().unwrap_or("?")
        )),
        other => say(format_args!("run {} is {}", record.id, other.as_str())),
    }
    Ok(())
}

/// The failure as a diagnostic on the source line when the source is at hand.
fn render_failure(
    record: &RunRecord,
    program: Option<&flow_compiler::Program>,
    _module: &bytecode::Module,
) -> String {
    let error = record.error.clone().unwrap_or_else(|| "failed".to_string());
    let Some(program) = program else {
        return format!("error: {error}\n");
    };
    // The stored error ends with "(at FILE:LINE:COLUMN)".
    let location = error
        .rsplit_once(" (at ")
        .and_then(|(message, at)| Some((message, at.strip_suffix(')')?)));
    let Some((message, at)) = location else {
        return format!("error: {error}\n");
    };
    let mut parts = at.rsplitn(3, ':');
    let (Some(column), Some(line), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        return format!("error: {error}\n");
    };
    let (Ok(line), Ok(column), Some(file_id)) = (
        line.parse::<usize>(),
        column.parse::<usize>(),
        program.db.find(file),
    ) else {
        return format!("error: {error}\n");
    };
    let source = program.db.file(file_id);
    let Some(line_start) = source.line_index.line_start(line.saturating_sub(1)) else {
        return format!("error: {error}\n");
    };
    let offset = source.text[line_start..]
        .char_indices()
        .nth(column.saturating_sub(1))
        .map(|(i, _)| line_start + i)
        .unwrap_or(line_start);
    let end = source.text[offset..]
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map(|(i, _)| offset + i.max(1))
        .unwrap_or(source.text.len());
    let (kind, detail) = message.split_once(": ").unwrap_or(("Failed", message));
    let diagnostic = Diagnostic::error(
        RUN_FAILED,
        file_id,
        Span::new(offset, end),
        detail.to_string(),
    )
    .with_message(format!("Run {} failed: {kind}", record.id))
    .with_help(format!(
        "`flowrt history {}` shows every step the run took",
        record.id
    ));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    render::human(&[diagnostic], &program.db, color)
}

/// Prints a line on stdout. A closed pipe (`flowrt runs | head -1`) ends the output quietly
/// instead of panicking.
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}").is_err() {
        std::process::exit(0);
    }
}

const EXIT_REFUSED: u8 = 3;

fn audit(engine: &mut Engine, args: AuditArgs) -> Result<ExitCode, Usage> {
    match (args.action, args.run) {
        (Some(AuditAction::Verify { run, anchor }), _) => {
            audit_verify(engine, run.as_deref(), anchor.as_deref())
        }
        (Some(AuditAction::Anchor), _) => audit_anchor(engine),
        (Some(AuditAction::Refusals { limit }), _) => {
            let refusals = engine
                .store()
                .refusals(limit)
                .map_err(|e| Usage(e.to_string()))?;
            if refusals.is_empty() {
                say(format_args!("no refused requests"));
            }
            for r in refusals {
                // A row stands for `count` refusals of one client (repeats are counted).
                let from = if r.client.is_empty() {
                    String::new()
                } else {
                    format!(" from {}", r.client)
                };
                let times = if r.count > 1 {
                    format!(
                        " [{} times{from}, the last at {}]",
                        r.count,
                        flow_runtime::vm::value::format_time(r.last_at)
                    )
                } else if from.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", from.trim_start())
                };
                say(format_args!(
                    "{} {} {} {}: {}{times}",
                    flow_runtime::vm::value::format_time(r.at),
                    r.status,
                    r.who,
                    r.request,
                    r.reason
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        (Some(AuditAction::Export { since, workflow }), _) => {
            let since = match since {
                Some(text) => {
                    Some(flow_runtime::vm::value::parse_time(&text).ok_or_else(|| {
                        Usage(format!(
                            "--since {text}: expected a time like 2026-11-23T00:00:00Z"
                        ))
                    })?)
                }
                None => None,
            };
            let mut records = engine
                .store()
                .runs(None)
                .map_err(|e| Usage(e.to_string()))?;
            records.reverse();
            for record in records {
                if workflow.as_deref().is_some_and(|w| w != record.workflow) {
                    continue;
                }
                let events = engine
                    .store()
                    .history(&record.id)
                    .map_err(|e| Usage(e.to_string()))?;
                for event in events.iter().filter(|e| since.is_none_or(|t| e.at >= t)) {
                    say(format_args!(
                        "{}",
                        audit::export_record(&record.id, &record.workflow, &record.version, event)
                    ));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, Some(run)) => {
            let trail = ops::audit(engine, OPERATOR, &run)?;
            for record in &trail.records {
                if args.json {
                    say(format_args!("{record}"));
                } else {
                    let text = |field: &str| record[field].as_str().unwrap_or_default();
                    let hash = text("hash");
                    say(format_args!(
                        "{:>4}  {}  {:<16} {:<20} {}  {}",
                        record["seq"].as_i64().unwrap_or_default(),
                        text("at"),
                        text("event"),
                        text("step"),
                        &hash[..12.min(hash.len())],
                        record["data"]
                    ));
                }
            }
            // As the API's `verified`: a trail shown is never taken for intact when it is not.
            if let Some(problem) = &trail.problem {
                eprintln!(
                    "warning: the trail of run {run} does not verify: {problem} (`flowrt audit verify {run}`)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, None) => Err(Usage(
            "audit needs a run id, or `verify [RUN]`, or `export`".to_string(),
        )),
    }
}

fn audit_verify(
    engine: &mut Engine,
    run: Option<&str>,
    anchor: Option<&Path>,
) -> Result<ExitCode, Usage> {
    let anchor = anchor.map(read_anchor).transpose()?;
    if let Some(run) = run
        && engine
            .store()
            .run(run)
            .map_err(|e| Usage(e.to_string()))?
            .is_none()
        && engine
            .store()
            .audit_head(run)
            .map_err(|e| Usage(e.to_string()))?
            .is_none()
        && anchor
            .as_ref()
            .is_none_or(|a| a.heads.iter().all(|h| h.run != run))
    {
        find(engine, run)?;
    }
    let report = audit::check::check(engine.store(), run, anchor.as_ref())
        .map_err(|e| Usage(e.to_string()))?;
    print_report(&report)
}

/// The intact trails, then the breaks; exit 1 when there are any.
fn print_report(report: &audit::check::Report) -> Result<ExitCode, Usage> {
    for line in &report.intact {
        say(format_args!("{line}"));
    }
    for broken in &report.breaks {
        say(format_args!("BROKEN {broken}"));
    }
    if !report.breaks.is_empty() {
        eprintln!(
            "the audit trail failed verification in {} place(s)",
            report.breaks.len()
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

fn read_anchor(path: &Path) -> Result<audit::anchor::Anchor, Usage> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Usage(format!("cannot read the anchor {}: {e}", path.display())))?;
    audit::anchor::Anchor::parse(audit::key::current(), &text)
        .map_err(|why| Usage(format!("the anchor {}: {why}", path.display())))
}

fn audit_anchor(engine: &mut Engine) -> Result<ExitCode, Usage> {
    let report =
        audit::check::check(engine.store(), None, None).map_err(|e| Usage(e.to_string()))?;
    if !report.breaks.is_empty() {
        for broken in &report.breaks {
            eprintln!("BROKEN {broken}");
        }
        eprintln!(
            "refusing to anchor an audit trail that does not verify (see `flowrt audit verify`)"
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let anchor = audit::anchor::Anchor::sign(
        audit::key::current(),
        flow_runtime::vm::value::format_time(engine.now()),
        report.installation.as_ref(),
        report.runs,
    );
    say(format_args!("{}", anchor.to_pretty()));
    eprintln!(
        "anchored {} run(s) and {} record(s); keep this file outside the database, and check it with `flowrt audit verify --anchor FILE`",
        anchor.heads.len(),
        anchor.records
    );
    Ok(ExitCode::SUCCESS)
}

/// With a `flow.toml`, every `--as` must name one of its users.
/// Deploys each file; prints each version with its workflows.
/// Warns about `[tools.NAME]` and `[workflows.NAME]` sections that name nothing deployed: a
/// typo there silently leaves the real tool unconfigured.
///
/// `flowrt run` of one file under a project's `flow.toml` (which configures the tools of every
/// program of the project) says only what is surely a typo: a section one edit away from a
/// tool of the deployed programs that has no section of its own. `deploy` and `serve`, which
/// stand for the project, say every one (as `flowrt config check` does).
fn warn_unknown_sections(
    engine: &mut Engine,
    has_config: bool,
    only_typos: bool,
) -> Result<(), Usage> {
    if !has_config {
        return Ok(());
    }
    let deployed = engine.deployed()?;
    let programs: Vec<&bytecode::Module> = deployed.iter().map(|m| m.as_ref()).collect();
    let config = engine.config();
    for lint in config.lint(&programs) {
        let typo = lint
            .near
            .as_ref()
            .is_some_and(|near| !config.tools.contains_key(near));
        if lint.kind == flow_runtime::config::LintKind::UnknownSection && (typo || !only_typos) {
            eprintln!("warning: {}", lint.message);
        }
    }
    Ok(())
}

/// `flowrt config check`: every likely mistake of the configuration, one per line.
fn config_check(setup: &Setup, files: &[PathBuf]) -> Result<ExitCode, Usage> {
    let config = match load_config(setup) {
        Ok(Some(config)) => config,
        Ok(None) => {
            return Err(Usage(
                "no flow.toml here; name one with --config".to_string(),
            ));
        }
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    let mut programs = Vec::new();
    // The deployed programs, when there is a database to read them from.
    let spec = setup.db.to_string_lossy().to_string();
    let has_database = flow_runtime::store::postgres::is_postgres_url(&spec) || setup.db.exists();
    if has_database {
        let (mut engine, _) = open_engine(setup, true)?;
        programs.extend(engine.deployed()?);
    }
    for file in files {
        let loaded = load(file)?;
        let module = bytecode::decode(&loaded.artifact)
            .map_err(|e| Usage(format!("cannot read {}: {e}", file.display())))?;
        programs.push(std::rc::Rc::new(module));
    }
    let modules: Vec<&bytecode::Module> = programs.iter().map(|m| m.as_ref()).collect();
    let lints = config.lint(&modules);
    for lint in &lints {
        say(format_args!("warning: {}", lint.message));
    }
    if lints.is_empty() {
        say(format_args!(
            "{}: no problems found ({} program(s) checked)",
            config.origin,
            modules.len()
        ));
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_FAILED))
    }
}

fn deploy(engine: &mut Engine, files: &[PathBuf]) -> Result<ExitCode, Usage> {
    for file in files {
        let loaded = load(file)?;
        let (version, module) = engine.deploy(&loaded.artifact)?;
        let names: Vec<&str> = module.entry_workflows().map(|w| w.name.as_str()).collect();
        say(format_args!(
            "deployed {} as {version}: {}",
            file.display(),
            names.join(", ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn token(engine: &mut Engine, has_config: bool, action: TokenAction) -> Result<ExitCode, Usage> {
    let now = engine.now();
    match action {
        TokenAction::Create {
            user,
            scrape,
            system,
            expires,
            name,
        } => {
            let principal = scrape || system.is_some();
            let user = match (user, scrape, system) {
                (_, true, _) => flow_runtime::tokens::SCRAPER.to_string(),
                (_, _, Some(system)) if system.trim().is_empty() || system.trim() != system => {
                    return Err(Usage(format!(
                        "--system `{system}`: name the system, without spaces around it"
                    )));
                }
                (_, _, Some(system)) => flow_runtime::tokens::system_identity(&system),
                (Some(user), false, None) => user,
                (None, false, None) => {
                    return Err(Usage(
                        "name the token's user, or give --scrape or --system NAME".into(),
                    ));
                }
            };
            if !principal && (!has_config || engine.config().user(&user).is_none()) {
                return Err(Usage(format!(
                    "unknown user `{user}`: a token acts as a user of flow.toml (add `[users.{user}]`)"
                )));
            }
            let expires_in = match expires {
                Some(text) => Some(
                    flow_runtime::vm::value::parse_duration(&text)
                        .filter(|ms| *ms > 0)
                        .ok_or_else(|| {
                            Usage(format!(
                                "--expires {text}: expected a duration like 30d or 12h"
                            ))
                        })?,
                ),
                None => None,
            };
            let (token, record) =
                flow_runtime::tokens::create(engine.store(), &user, &name, expires_in, now)
                    .map_err(|e| Usage(e.to_string()))?;
            eprintln!(
                "token {} for {user}{}; it is shown only now:",
                record.id,
                record
                    .expires_at
                    .map(|at| format!(", expires {}", flow_runtime::vm::value::format_time(at)))
                    .unwrap_or_default()
            );
            say(format_args!("{token}"));
        }
        TokenAction::List { json } => {
            let tokens = engine.store().tokens().map_err(|e| Usage(e.to_string()))?;
            let time = |at: Option<i64>| at.map(flow_runtime::vm::value::format_time);
            if json {
                let items: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id, "user": t.user, "name": t.name,
                            "created_at": flow_runtime::vm::value::format_time(t.created_at),
                            "expires_at": time(t.expires_at),
                            "revoked_at": time(t.revoked_at),
                        })
                    })
                    .collect();
                say(format_args!("{}", serde_json::Value::Array(items)));
                return Ok(ExitCode::SUCCESS);
            }
            if tokens.is_empty() {
                say(format_args!("no tokens"));
            }
            for t in tokens {
                let state = match (t.revoked_at, t.expires_at) {
                    (Some(at), _) => {
                        format!("revoked {}", flow_runtime::vm::value::format_time(at))
                    }
                    (None, Some(at)) if at <= now => {
                        format!("expired {}", flow_runtime::vm::value::format_time(at))
                    }
                    (None, Some(at)) => {
                        format!("expires {}", flow_runtime::vm::value::format_time(at))
                    }
                    (None, None) => "does not expire".to_string(),
                };
                say(format_args!(
                    "{} {} {} created {}, {state}",
                    t.id,
                    t.user,
                    if t.name.is_empty() { "-" } else { &t.name },
                    flow_runtime::vm::value::format_time(t.created_at)
                ));
            }
        }
        TokenAction::Revoke { id } => {
            if !engine
                .store()
                .revoke_token(&id, now)
                .map_err(|e| Usage(e.to_string()))?
            {
                return Err(Usage(format!(
                    "no live token with id `{id}` (see `flowrt token list`)"
                )));
            }
            say(format_args!("revoked {id}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn migrate_store(from: &str, to: &str) -> Result<ExitCode, Usage> {
    use flow_runtime::store::postgres::{is_postgres_url, without_password};
    if !is_postgres_url(to) {
        return Err(Usage(format!(
            "--to {to}: expected a PostgreSQL URL, postgres://user:password@host/database"
        )));
    }
    if is_postgres_url(from) {
        return Err(Usage(
            "--from must be a SQLite database (sqlite:PATH or a path)".into(),
        ));
    }
    let path = Path::new(from.strip_prefix("sqlite:").unwrap_or(from));
    // The trail is copied as it is, signed with the source's audit key, and verified with it.
    if path.is_file() {
        audit::key::install(audit::AuditKey::for_store(from).map_err(Usage)?);
    }
    let moved = flow_runtime::store::migrate::sqlite_to_postgres(path, to).map_err(|e| {
        Usage(format!(
            "the move failed and changed nothing on the target: {e}"
        ))
    })?;
    say(format_args!(
        "moved {} run(s) with {} history record(s), {} open gate(s), {} version(s), {} token(s), {} refusal(s) and {} setting(s) from {} to {}; every audit chain verifies on the target",
        moved.runs,
        moved.events,
        moved.gates,
        moved.versions,
        moved.tokens,
        moved.refusals,
        moved.settings,
        path.display(),
        without_password(to)
    ));
    eprintln!(
        "the secret key of {} must be given to every worker as FLOW_SECRET_KEY",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The connection limits `--max-connections` and `--header-timeout` ask for.
fn serve_limits(
    max_connections: usize,
    header_timeout: &str,
) -> Result<flow_runtime::server::Limits, Usage> {
    if max_connections == 0 {
        return Err(Usage("--max-connections 0: expected at least 1".into()));
    }
    let timeout = flow_runtime::vm::value::parse_duration(header_timeout)
        .and_then(|ms| u64::try_from(ms).ok())
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            Usage(format!(
                "--header-timeout {header_timeout}: expected a duration like 10s or 500ms"
            ))
        })?;
    Ok(flow_runtime::server::Limits {
        max_connections,
        header_timeout: std::time::Duration::from_millis(timeout),
    })
}

/// `flowrt serve`: deploys the files, then serves until a signal.
/// The tool calls a worker or server makes at once unless told otherwise.
const DEFAULT_TOOL_THREADS: usize = 16;

fn serve(
    setup: Setup,
    addr: &str,
    limits: flow_runtime::server::Limits,
    tool_threads: usize,
    files: Vec<PathBuf>,
) -> Result<ExitCode, Usage> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
        Usage(format!(
            "--addr {addr}: expected an address like 127.0.0.1:8080"
        ))
    })?;
    // Deploy (and report bad files) before listening.
    {
        let (mut engine, has_config) = open_engine(&setup, false)?;
        if !files.is_empty() {
            deploy(&mut engine, &files)?;
        }
        warn_unknown_sections(&mut engine, has_config, false)?;
    }
    flow_runtime::server::serve(
        addr,
        limits,
        tool_threads,
        move || {
            let (mut engine, _) = open_engine(&setup, false).map_err(|Usage(why)| why)?;
            engine
                .keep_claims_alive(&setup.db.to_string_lossy())
                .map_err(|e| e.to_string())?;
            Ok(engine)
        },
        |bound, limits| {
            eprintln!(
                "flowrt serve: listening on http://{bound} (API, inbox at /); at most {} connections, headers within {} ms",
                limits.max_connections,
                limits.header_timeout.as_millis()
            )
        },
    )
    .map_err(Usage)?;
    eprintln!("flowrt serve: stopped");
    Ok(ExitCode::SUCCESS)
}

fn known_user(engine: &Engine, has_config: bool, user: &str) -> Result<(), Usage> {
    if has_config && engine.config().user(user).is_none() {
        return Err(Usage(format!(
            "unknown user `{user}`: flow.toml lists the users (add `[users.{user}]` to it)"
        )));
    }
    Ok(())
}

fn approvals(
    engine: &mut Engine,
    user: Option<&str>,
    has_config: bool,
    json: bool,
) -> Result<ExitCode, Usage> {
    if let Some(user) = user {
        known_user(engine, has_config, user)?;
    }
    let pending = ops::pending(engine, user)?;
    if json {
        say_json(&pending)?;
        return Ok(ExitCode::SUCCESS);
    }
    if pending.is_empty() {
        say(format_args!(
            "nothing is waiting{}",
            user.map(|u| format!(" for {u}")).unwrap_or_default()
        ));
    }
    for p in &pending {
        say(format_args!("{}", gate_line(p)));
    }
    Ok(ExitCode::SUCCESS)
}

/// A gate on one line, for a person.
fn gate_line(p: &GateView) -> String {
    format!(
        "{} {} `{}` in {} ({}): {} (started by {}, opened {}{})",
        p.run,
        p.kind,
        p.gate,
        p.workflow,
        p.approvers,
        p.prompt.as_deref().unwrap_or("no prompt"),
        p.started_by,
        flow_runtime::vm::value::format_time(p.opened_at),
        p.deadline
            .map(|d| format!(", deadline {}", flow_runtime::vm::value::format_time(d)))
            .unwrap_or_default()
    )
}

fn decide(engine: &mut Engine, args: &DecideArgs, action: Action) -> Result<ExitCode, Usage> {
    let (run, gate) = (args.run.as_str(), args.gate.as_str());
    let expect = args.expect_hash.as_deref();
    let decided = ops::decide(
        engine,
        run,
        gate,
        &args.user,
        action,
        expect,
        !args.no_drive,
    );
    let decided = match allowed(decided)? {
        Ok(decided) => decided,
        Err(refused) => return Ok(refused),
    };
    match (decided.decision, decided.run_status) {
        ("recorded", _) => say(format_args!(
            "recorded; `{gate}` needs {} more approval(s)",
            decided.remaining
        )),
        (_, None) => say(format_args!(
            "decided; run {run} will go on when a worker drives it"
        )),
        (_, Some(status)) => {
            let record = find(engine, run)?;
            say(format_args!(
                "decided; run {run} is now {status}{}",
                record
                    .waiting_on
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn signal(
    engine: &mut Engine,
    run: &str,
    name: &str,
    value: &serde_json::Value,
    sender: &str,
    has_config: bool,
    drive: bool,
) -> Result<ExitCode, Usage> {
    // A system acts under the senders' rule like a user; without a flow.toml the operator
    // sends as whoever they name.
    let who = if has_config || flow_runtime::tokens::system_of(sender).is_some() {
        Caller::User(sender)
    } else {
        Caller::Operator(sender)
    };
    let sent = match ops::signal(engine, who, run, name, value, drive) {
        Err(OpError::Forbidden {
            run: Some(run),
            why,
        }) => {
            // Like the API, the refusal is kept in the run's trail.
            let request = format!("flowrt signal {run} {name}");
            let event = ops::refusal_event(engine.now(), sender, &request, 403, &why);
            engine
                .store()
                .note(&run, &event)
                .map_err(|e| Usage(e.to_string()))?;
            eprintln!("refused: {why}");
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        other => match allowed(other)? {
            Ok(sent) => sent,
            Err(refused) => return Ok(refused),
        },
    };
    match (sent.taken_now, sent.run_status) {
        (false, _) => say(format_args!(
            "signal `{name}` #{} queued; run {run} takes it when it waits for `{name}`",
            sent.number
        )),
        (true, None) => say(format_args!(
            "signal `{name}` #{} sent; run {run} will go on when a worker drives it",
            sent.number
        )),
        (true, Some(status)) => {
            let record = find(engine, run)?;
            say(format_args!(
                "signal `{name}` #{} sent; run {run} is now {status}{}",
                sent.number,
                record
                    .waiting_on
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn clock(engine: &mut Engine, action: ClockAction) -> Result<ExitCode, Usage> {
    match action {
        ClockAction::Show => {
            say(format_args!(
                "{}",
                flow_runtime::vm::value::format_time(engine.now())
            ));
        }
        ClockAction::Advance { by } => {
            let ms = flow_runtime::vm::value::parse_duration(&by).ok_or_else(|| {
                Usage(format!(
                    "`{by}` is not a duration; write it like 30s, 25h or 2d"
                ))
            })?;
            let now = engine.advance_clock(ms)?;
            let driven = engine.work_once()?;
            say(format_args!(
                "the clock is now {}; {driven} run(s) went on",
                flow_runtime::vm::value::format_time(now)
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

const RUN_FAILED: Code = Code {
    id: "R0001",
    title: "Run failed",
};

fn worker(engine: &mut Engine, once: bool) -> Result<ExitCode, Usage> {
    let mut drove_once = 0;
    loop {
        let driven = match engine.work_once() {
            Ok(driven) => driven,
            Err(error) if once => return Err(error.into()),
            // The database went away (a PostgreSQL restart, a network cut): keep the worker
            // and try again; what it had claimed is taken back up, by it or another worker,
            // from the last commit.
            Err(error) => {
                eprintln!("worker: {error}; retrying in 1 s");
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
        };
        if once {
            // Calls still in progress end before the worker does.
            if engine.calls_in_flight() > 0 {
                drove_once += driven;
                engine.wait_for_calls(std::time::Duration::from_millis(100));
                continue;
            }
            // So do notifications due soon: retries, and rows a dead process left claimed.
            let soon = flow_runtime::notify::RetryPolicy::default().worst_case();
            if let Some(wait) = engine.next_notification_within(soon.as_millis() as i64)? {
                drove_once += driven;
                std::thread::sleep(std::time::Duration::from_millis(wait.clamp(1, 100) as u64));
                continue;
            }
            let driven = drove_once + driven;
            eprintln!("worker: drove {driven} run(s); nothing else can make progress now");
            return Ok(ExitCode::SUCCESS);
        }
        let next = match engine.store().next_wake() {
            Ok(next) => next,
            Err(error) => {
                eprintln!("worker: {error}; retrying in 1 s");
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
        };
        let now = engine.now();
        // Poll often enough to pick up runs whose claim expired (after a crash) or that
        // another process started.
        let pause = next.map(|at| (at - now).clamp(10, 100)).unwrap_or(100);
        // A tool call that finishes meanwhile ends the pause.
        engine.wait_for_calls(std::time::Duration::from_millis(pause as u64));
    }
}

/// Which runs `flowrt runs` lists, from its flags.
fn run_query(
    status: Option<&str>,
    workflow: Option<String>,
    since: Option<&str>,
    limit: Option<usize>,
    now: i64,
) -> Result<RunQuery, Usage> {
    let since = match since {
        Some(text) => Some(
            flow_runtime::vm::value::parse_duration(text)
                .map(|ago| now - ago)
                .or_else(|| flow_runtime::vm::value::parse_time(text))
                .ok_or_else(|| {
                    Usage(format!(
                        "--since {text}: expected a duration (`1d`, `2h`) or a time (`2026-12-01T09:00:00Z`)"
                    ))
                })?,
        ),
        None => None,
    };
    let mut query = RunQuery {
        workflow,
        since,
        limit,
        ..RunQuery::default()
    };
    if let Some(text) = status {
        query
            .filter_status(text)
            .map_err(|why| Usage(format!("--status {text}: {why}")))?;
    }
    Ok(query)
}

fn runs(engine: &mut Engine, query: &RunQuery, json: bool) -> Result<ExitCode, Usage> {
    let runs = ops::list_runs(engine, OPERATOR, query)?;
    if json {
        say_json(&runs)?;
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        say(format_args!("no runs"));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = runs
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.status.to_string(),
                r.workflow.clone(),
                flow_runtime::vm::value::format_time(r.created_at),
                outcome(r),
            ]
        })
        .collect();
    let header = ["run", "status", "workflow", "started", "outcome"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            text.push_str(&format!("{cell:<width$}  "));
        }
        text.trim_end().to_string()
    };
    say(format_args!("{}", line(header)));
    for row in &rows {
        say(format_args!("{}", line(row.each_ref().map(String::as_str))));
    }
    Ok(ExitCode::SUCCESS)
}

/// How a run ended or where it stands, in a few words: the variant of an enum result
/// (`Released`, as the inbox shows it), else a summary of the result; the error; what it
/// waits for.
fn outcome(run: &RunView) -> String {
    if let Some(why) = &run.needs_attention {
        return shorten(&format!("needs attention: {why}"));
    }
    match RunStatus::parse(run.status) {
        Some(RunStatus::Completed) => match &run.outcome {
            Some(variant) => variant.clone(),
            None => shorten(&summary(
                run.output.as_ref().unwrap_or(&serde_json::Value::Null),
            )),
        },
        Some(RunStatus::Failed) => shorten(
            run.error
                .as_deref()
                .and_then(|e| e.lines().find(|l| !l.trim().is_empty()))
                .unwrap_or("failed"),
        ),
        Some(RunStatus::Cancelled) => "cancelled".to_string(),
        Some(RunStatus::Continued) => format!(
            "continued as {}",
            flow_runtime::engine::successor_of(&run.id)
        ),
        _ => run.waiting_on.clone().unwrap_or_default(),
    }
}

fn find(engine: &mut Engine, run: &str) -> Result<RunRecord, Usage> {
    engine
        .store()
        .run(run)
        .map_err(|e| Usage(e.to_string()))?
        .ok_or_else(|| Usage(format!("no run with id {run}; `flowrt runs` lists them")))
}

fn status(engine: &mut Engine, run: &str, json: bool) -> Result<ExitCode, Usage> {
    if json {
        say(format_args!("{}", run_json(engine, run)?));
        return Ok(ExitCode::SUCCESS);
    }
    let shown = ops::show_run(engine, OPERATOR, run)?.run.to_json();
    if let Some(object) = shown.as_object() {
        for (key, value) in object {
            // Times are shown as dates to a person, as milliseconds to a program.
            let text = match (key.ends_with("_at"), value.as_i64(), value.as_str()) {
                (true, Some(ms), _) => flow_runtime::vm::value::format_time(ms),
                (_, _, Some(text)) => text.to_string(),
                _ => value.to_string(),
            };
            if !value.is_null() {
                say(format_args!("{key:<11} {text}"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn history(engine: &mut Engine, run: &str, json: bool) -> Result<ExitCode, Usage> {
    let events: Vec<EventView> = ops::history(engine, OPERATOR, run)?;
    if json {
        say_json(&events)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Column widths follow the content, so long step names stay aligned.
    let rows: Vec<[String; 9]> = events
        .iter()
        .map(|e| {
            let data = &e.data;
            let who = data
                .get("by")
                .and_then(|b| b.as_str())
                .unwrap_or_default()
                .to_string();
            [
                e.seq.to_string(),
                flow_runtime::vm::value::format_time(e.at),
                e.kind.to_string(),
                e.step.clone().unwrap_or_default(),
                e.attempt.map(|a| a.to_string()).unwrap_or_default(),
                e.line.map(|l| l.to_string()).unwrap_or_default(),
                e.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default(),
                who,
                event_details(e.kind, data),
            ]
        })
        .collect();
    let header = [
        "seq", "time", "event", "step", "attempt", "line", "duration", "who", "details",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 9]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            // Numbers right-aligned, text left-aligned.
            if matches!(i, 0 | 4 | 5 | 6) {
                text.push_str(&format!("{cell:>width$}  "));
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_string()
    };
    say(format_args!("{}", line(header)));
    for row in &rows {
        say(format_args!("{}", line(row.each_ref().map(String::as_str))));
    }
    Ok(ExitCode::SUCCESS)
}

/// The most of a value or message the human timeline shows in its details column.
const DETAIL_CHARS: usize = 100;

/// What the human timeline says about an event besides its columns: the decision and its
/// comment, the error, a summary of the output, when a timer is due.
fn event_details(kind: EventKind, data: &serde_json::Value) -> String {
    let text = |field: &str| data.get(field).and_then(|v| v.as_str()).unwrap_or_default();
    let value = |field: &str| data.get(field).map(summary).unwrap_or_default();
    let detail = match kind {
        EventKind::GateDecided => {
            let verdict = match data.get("approved").and_then(|a| a.as_bool()) {
                Some(true) => "approved".to_string(),
                Some(false) => "rejected".to_string(),
                None => format!("value {}", value("value")),
            };
            match text("comment") {
                "" => verdict,
                comment => format!("{verdict}: {comment:?}"),
            }
        }
        EventKind::ApprovalRecorded => match text("comment") {
            "" => "approved, more approvals needed".to_string(),
            comment => format!("approved, more approvals needed: {comment:?}"),
        },
        EventKind::StepFailed | EventKind::RunFailed => {
            format!("{}: {}", text("kind"), text("message"))
        }
        EventKind::StepTimedOut => "the time limit passed".to_string(),
        EventKind::StepCompleted | EventKind::RunCompleted | EventKind::ChildCompleted => {
            format!("→ {}", value("output"))
        }
        EventKind::ChildFailed => text("error").to_string(),
        EventKind::StepResumed => format!("again, key {}", text("idempotency_key")),
        EventKind::TimerSet => format!("until {}", text("until")),
        EventKind::GateOpened => {
            let approvers = text("approvers");
            match text("deadline") {
                "" => format!("for {approvers}"),
                deadline => format!("for {approvers}, deadline {deadline}"),
            }
        }
        EventKind::GateEscalated => format!("to {}", text("to")),
        EventKind::NotifyFailed => text("error").to_string(),
        EventKind::Audit => summary(data),
        EventKind::RequestRefused => text("reason").to_string(),
        EventKind::SignalReceived => format!(
            "#{} from {}: {}",
            value("number"),
            text("by"),
            summary(&data["value"])
        ),
        EventKind::SignalTaken => format!("#{} (from {})", value("number"), text("by")),
        EventKind::ParallelStarted => {
            let number = |field: &str| data.get(field).and_then(|n| n.as_u64());
            match (number("max"), number("branches")) {
                (Some(max), Some(branches)) if max < branches => {
                    format!("{branches} branches, at most {max} at once")
                }
                _ => format!("{} branches", value("branches")),
            }
        }
        EventKind::BranchStarted => format!("run {}", text("run")),
        EventKind::BranchCompleted => format!("run {} → {}", text("run"), value("output")),
        EventKind::BranchFailed => format!("run {}: {}", text("run"), text("error")),
        EventKind::BranchesCancelled => format!("{} ({})", value("runs"), text("why")),
        EventKind::ParallelCompleted => format!("{} branches ended", value("branches")),
        EventKind::CompensationStarted => match text("run") {
            "" => format!("{} by {}", text("why"), text("by")),
            run => format!("run {run}"),
        },
        EventKind::Compensated => format!("run {}", text("run")),
        EventKind::CompensationFailed => format!("run {}: {}", text("run"), text("error")),
        EventKind::AttentionResolved => format!("by {}: {}", text("by"), text("note")),
        _ => String::new(),
    };
    shorten(&detail)
}

/// A value on one line: JSON text, strings without their quotes.
fn summary(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn shorten(text: &str) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= DETAIL_CHARS {
        return one_line;
    }
    let cut: String = one_line.chars().take(DETAIL_CHARS - 1).collect();
    format!("{cut}…")
}

/// Cancels `run`: as `--as USER` under the API's rule (only who started it, or who may start
/// its workflow; a refusal is recorded in the run's trail), else as the operator.
fn cancel(
    engine: &mut Engine,
    run: &str,
    user: Option<&str>,
    has_config: bool,
    compensate: bool,
) -> Result<ExitCode, Usage> {
    let operator = default_user();
    let who = caller(user, &operator, has_config);
    match ops::cancel_with(engine, who, run, compensate) {
        Ok(()) => {
            // A run with undo blocks runs them first; one that waits (an undo at a gate)
            // ends cancelled once they are done.
            let status = engine
                .store()
                .run(run)
                .ok()
                .flatten()
                .map(|r| r.status.as_str().to_string())
                .unwrap_or_default();
            if status == "cancelled" {
                say(format_args!("run {run} cancelled"));
            } else {
                say(format_args!(
                    "run {run} is being cancelled: its undo blocks run first ({status})"
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(OpError::Forbidden {
            run: Some(run),
            why,
        }) => {
            let event = ops::refusal_event(
                engine.now(),
                who.name(),
                &format!("flowrt cancel {run}"),
                403,
                &why,
            );
            engine
                .store()
                .note(&run, &event)
                .map_err(|e| Usage(e.to_string()))?;
            eprintln!("refused: {why}");
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        Err(other) => Err(other.into()),
    }
}
