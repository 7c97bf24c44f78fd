//! `flowc`: the Flow compiler's command line. `flowc check` reports every problem in a set of
//! `.flow` files, for people (colours on a terminal), CI (JSON) and GitHub annotations;
//! `flowc build` compiles a workflow file to a `.flowb` bytecode artifact and `flowc disasm`
//! lists the bytecode of a source file or an artifact; `flowc fmt` rewrites files in the
//! canonical layout (or, with `--check`, lists the ones that are not).

use clap::{Parser, Subcommand, ValueEnum};
use flow_compiler::diagnostics::{formats, render};
use flow_compiler::sources::{FsLoader, SourceLoader, describe_io};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod test_cmd;

#[derive(Parser)]
#[command(name = "flowc", version, about = "The Flow workflow language compiler")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check .flow files (directories are searched for *.flow) and report every problem.
    Check {
        /// Files or directories to check.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// How to print diagnostics.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Exit with status 1 when there are warnings, not only errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Compile a .flow file (and what it imports) to a .flowb bytecode artifact.
    Build {
        /// The root .flow file.
        file: PathBuf,
        /// Where to write the artifact (default: the same name with .flowb).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print the bytecode of a .flow file (compiled first) or of a .flowb artifact.
    Disasm {
        /// A .flow source file or a .flowb artifact.
        file: PathBuf,
    },
    /// Format .flow files in place (directories are searched for *.flow).
    Fmt {
        /// Files or directories to format.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write nothing: list the files that would change, and exit with status 1 if any.
        #[arg(long)]
        check: bool,
    },
    /// Run the `test` blocks of .flow files (directories are searched for *.flow) on the
    /// runtime, with scripted tools, people and time.
    Test {
        /// Files or directories (default: the current directory).
        paths: Vec<PathBuf>,
        /// Run only the tests whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// With --filter: only the test with exactly this name.
        #[arg(long, requires = "filter")]
        exact: bool,
        /// How to report: lines for people, JSON, or JUnit XML for CI systems.
        #[arg(long, value_enum, default_value_t = test_cmd::TestFormat::Human)]
        format: test_cmd::TestFormat,
        /// The project configuration with users and roles (default: the nearest flow.toml
        /// above each test file).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a completion script for a shell: `flowc completions bash > /etc/bash_completion.d/flowc`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
    Github,
}

// Checking allocates many small tree nodes; mimalloc makes that about twice as fast.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit statuses: 0 clean, 1 problems found, 2 usage or I/O error.
const EXIT_PROBLEMS: u8 = 1;
const EXIT_USAGE: u8 = 2;

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
    // Deeply nested input is bounded by the parser, but give the checker room anyway.
    let worker = std::thread::Builder::new()
        .stack_size(256 * 1024 * 1024)
        .spawn(move || run(cli));
    match worker.map(|w| w.join()) {
        Ok(Ok(code)) => code,
        _ => {
            eprintln!("flowc: internal error; please report it with the input that caused it");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check {
            paths,
            format,
            deny_warnings,
        } => check(&paths, format, deny_warnings),
        Command::Build { file, output } => build(&file, output),
        Command::Disasm { file } => disasm(&file),
        Command::Fmt { paths, check } => fmt(&paths, check),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: the generator panics when its output closes early (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "flowc", &mut script);
            let _ = std::io::stdout().write_all(&script);
            ExitCode::SUCCESS
        }
        Command::Test {
            paths,
            filter,
            exact,
            format,
            config,
        } => test(paths, filter.as_deref(), exact, format, config.as_deref()),
    }
}

fn test(
    paths: Vec<PathBuf>,
    filter: Option<&str>,
    exact: bool,
    format: test_cmd::TestFormat,
    config: Option<&Path>,
) -> ExitCode {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths
    };
    let files = match collect_flow_files(&paths) {
        Ok(files) => files,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let options = test_cmd::Options {
        filter,
        exact,
        format,
        config,
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    match test_cmd::run(&files, &FsLoader, &options) {
        Ok((out, err, all_passed)) => {
            eprint!("{err}");
            if std::io::stdout().lock().write_all(out.as_bytes()).is_err() {
                return ExitCode::from(EXIT_USAGE);
            }
            if all_passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_PROBLEMS)
            }
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn check(paths: &[PathBuf], format: Format, deny_warnings: bool) -> ExitCode {
    let files = match collect_flow_files(paths) {
        Ok(files) => files,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let program = match flow_compiler::check_paths(&files, &FsLoader) {
        Ok(program) => program,
        Err(error) => {
            eprintln!("error: cannot read `{}`: {}", error.path, error.reason);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let output = match format {
        Format::Human => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let mut text = render::human(&program.diagnostics, &program.db, color);
            text.push_str(&summary(&program, files.len()));
            eprint!("{text}");
            String::new()
        }
        Format::Json => formats::json(&program.diagnostics, &program.db) + "\n",
        Format::Github => formats::github(&program.diagnostics, &program.db),
    };
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(output.as_bytes()).is_err() {
        return ExitCode::from(EXIT_USAGE);
    }
    let failed = program.errors() > 0 || (deny_warnings && program.warnings() > 0);
    // The process ends here: freeing the trees node by node would only cost time.
    std::mem::forget(program);
    if failed {
        ExitCode::from(EXIT_PROBLEMS)
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks and lowers one root file, printing diagnostics like `flowc check` when there are
/// any. `Err` carries the exit status.
fn compile(file: &Path) -> Result<flow_compiler::bytecode::Module, ExitCode> {
    let path = path_string(file);
    let program = match flow_compiler::check_paths(std::slice::from_ref(&path), &FsLoader) {
        Ok(program) => program,
        Err(error) => {
            eprintln!("error: cannot read `{}`: {}", error.path, error.reason);
            return Err(ExitCode::from(EXIT_USAGE));
        }
    };
    if !program.diagnostics.is_empty() {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let mut text = render::human(&program.diagnostics, &program.db, color);
        text.push_str(&summary(&program, 1));
        eprint!("{text}");
    }
    if program.errors() > 0 {
        return Err(ExitCode::from(EXIT_PROBLEMS));
    }
    let lowered = flow_compiler::lower::lower(&program);
    std::mem::forget(program);
    lowered.map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_PROBLEMS)
    })
}

fn build(file: &Path, output: Option<PathBuf>) -> ExitCode {
    let module = match compile(file) {
        Ok(module) => module,
        Err(code) => return code,
    };
    let output = output.unwrap_or_else(|| file.with_extension("flowb"));
    if let Err(why) = prepare_output(&output) {
        eprintln!("error: cannot write `{}`: {why}", output.display());
        return ExitCode::from(EXIT_USAGE);
    }
    let bytes = flow_compiler::bytecode::encode(&module);
    // Write beside the target, then rename: a reader never sees half an artifact.
    let mut partial = output.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written =
        std::fs::write(&partial, &bytes).and_then(|()| std::fs::rename(&partial, &output));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&partial);
        eprintln!(
            "error: cannot write `{}`: {}",
            output.display(),
            describe_io(&error)
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let count = module.workflows.len();
    eprintln!(
        "wrote {} ({count} workflow{}, sha256 {})",
        output.display(),
        if count == 1 { "" } else { "s" },
        flow_compiler::bytecode::encoding::artifact_hash(&bytes)
    );
    ExitCode::SUCCESS
}

/// Makes `output` writable as an artifact: its folder is created when missing, and what is
/// there already must be a regular file (the rename would replace a device node, a FIFO or a
/// symbolic link with a file, and cannot replace a directory).
fn prepare_output(output: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(output) {
        Ok(metadata) if metadata.is_file() => {}
        Ok(metadata) => {
            let what = if metadata.is_dir() {
                "a directory"
            } else if metadata.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a regular file (a device, FIFO or socket)"
            };
            return Err(format!(
                "it is {what}; flowc build writes only regular files: choose another path with -o"
            ));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(describe_io(&error)),
    }
    match output.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => {
            std::fs::create_dir_all(folder).map_err(|e| {
                format!(
                    "cannot create its folder `{}`: {}",
                    folder.display(),
                    describe_io(&e)
                )
            })
        }
        _ => Ok(()),
    }
}

fn disasm(file: &Path) -> ExitCode {
    let module = if file.extension().is_some_and(|e| e == "flowb") {
        let bytes = match FsLoader.read(&path_string(file)) {
            Ok(bytes) => bytes,
            Err(reason) => {
                eprintln!("error: cannot read `{}`: {reason}", file.display());
                return ExitCode::from(EXIT_USAGE);
            }
        };
        match flow_compiler::bytecode::decode(&bytes) {
            Ok(module) => module,
            Err(error) => {
                eprintln!("error: cannot read `{}`: {error}", file.display());
                return ExitCode::from(EXIT_USAGE);
            }
        }
    } else {
        match compile(file) {
            Ok(module) => module,
            Err(code) => return code,
        }
    };
    let listing = flow_compiler::bytecode::disasm::disassemble(&module);
    if std::io::stdout()
        .lock()
        .write_all(listing.as_bytes())
        .is_err()
    {
        return ExitCode::from(EXIT_USAGE);
    }
    ExitCode::SUCCESS
}

/// `flowc fmt`: 0 when every file is (or now is) formatted, 1 with `--check` when some file
/// would change, 2 when a file cannot be read or written, or a file named on the command
/// line does not parse. Files that do not parse are left as they are; one found by searching
/// a directory is only mentioned (a test corpus holds such files on purpose).
fn fmt(paths: &[PathBuf], check_only: bool) -> ExitCode {
    let mut files: Vec<(String, bool)> = Vec::new();
    for path in paths {
        let named = !path.is_dir();
        match collect_flow_files(std::slice::from_ref(path)) {
            Ok(found) => files.extend(found.into_iter().map(|file| (file, named))),
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|(path, _)| seen.insert(flow_compiler::sources::resolve_import("", path)));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut failed = 0usize;
    let mut skipped = 0usize;
    let mut changed = Vec::new();
    for (path, named) in &files {
        let bytes = match FsLoader.read(path) {
            Ok(bytes) => bytes,
            Err(reason) => {
                eprintln!("error: cannot read `{path}`: {reason}");
                failed += 1;
                continue;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            if *named {
                eprintln!("error: cannot format `{path}`: it is not UTF-8 text");
                failed += 1;
            } else {
                eprintln!("note: skipped `{path}`: it is not UTF-8 text");
                skipped += 1;
            }
            continue;
        };
        let formatted = match flow_compiler::format::format(&text) {
            Ok(formatted) => formatted,
            Err(flow_compiler::format::FormatError::Syntax {
                line,
                column,
                message,
                diagnostics,
            }) => {
                if *named {
                    let mut db = flow_compiler::sources::SourceDb::default();
                    db.add(path.as_str(), text.as_str());
                    eprint!("{}", render::human(&diagnostics, &db, color));
                    eprintln!("error: `{path}` has syntax errors; it was not formatted");
                    failed += 1;
                } else {
                    eprintln!("note: skipped `{path}`: syntax error at {line}:{column}: {message}");
                    skipped += 1;
                }
                continue;
            }
            Err(error) => {
                eprintln!("error: cannot format `{path}`: {error}");
                failed += 1;
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        if !check_only && let Err(error) = write_atomically(Path::new(path), &formatted) {
            eprintln!("error: cannot write `{path}`: {}", describe_io(&error));
            failed += 1;
            continue;
        }
        changed.push(path.clone());
    }
    let mut stdout = std::io::stdout().lock();
    if check_only {
        for path in &changed {
            if writeln!(stdout, "{path}").is_err() {
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let total = files.len();
    let noun = |n: usize| if n == 1 { "file" } else { "files" };
    let skipped = if skipped > 0 {
        format!(", {skipped} skipped")
    } else {
        String::new()
    };
    match (check_only, changed.len()) {
        (true, 0) => eprintln!("checked {total} {}: all formatted{skipped}", noun(total)),
        (true, n) => eprintln!(
            "checked {total} {}: {n} not formatted{skipped} (run `flowc fmt` on {})",
            noun(total),
            if n == 1 { "it" } else { "them" }
        ),
        (false, n) => eprintln!("formatted {total} {}: {n} changed{skipped}", noun(total)),
    }
    if failed > 0 {
        ExitCode::from(EXIT_USAGE)
    } else if check_only && !changed.is_empty() {
        ExitCode::from(EXIT_PROBLEMS)
    } else {
        ExitCode::SUCCESS
    }
}

/// Writes `text` to a temporary file beside `path` (with its permissions) and renames it over
/// `path`: a reader, or a crash, never sees half a file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let temporary = path.with_file_name(format!(
        ".{}.fmt-{}.tmp",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let result = std::fs::write(&temporary, text)
        .and_then(|()| {
            let permissions = std::fs::metadata(path)?.permissions();
            std::fs::set_permissions(&temporary, permissions)
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

fn summary(program: &flow_compiler::Program, checked: usize) -> String {
    let files = if checked == 1 { "file" } else { "files" };
    let notes = match program.notes() {
        0 => String::new(),
        1 => ", 1 note".to_string(),
        n => format!(", {n} notes"),
    };
    match (program.errors(), program.warnings()) {
        (0, 0) => format!("checked {checked} {files}: no problems{notes}\n"),
        (errors, warnings) => format!(
            "checked {checked} {files}: {errors} error{}, {warnings} warning{}{notes}\n",
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        ),
    }
}

/// Expands directories into their `*.flow` files (recursively, sorted); files are kept as given.
fn collect_flow_files(paths: &[PathBuf]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path)
            .map_err(|e| format!("cannot read `{}`: {}", path.display(), describe_io(&e)))?;
        if metadata.is_dir() {
            let before = out.len();
            walk(path, &mut out)
                .map_err(|e| format!("cannot read `{}`: {}", path.display(), describe_io(&e)))?;
            if out.len() == before {
                return Err(format!("no .flow files found in `{}`", path.display()));
            }
        } else {
            out.push(path_string(path));
        }
    }
    // `a.flow` and `./a.flow` are one file.
    let mut seen = std::collections::HashSet::new();
    out.retain(|path| seen.insert(flow_compiler::sources::resolve_import("", path)));
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || name == "target" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "flow") {
            out.push(path_string(&path));
        }
    }
    Ok(())
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}
