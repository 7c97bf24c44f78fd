//! The project configuration file, `flow.toml`: who the users are, which roles they hold,
//! where notifications go when a human step opens or escalates, how `http` and `llm` tools
//! reach their servers, and how long tools may take.
//!
//! ```toml
//! [users.alice]
//! roles = ["customs"]
//!
//! [users.omar]
//! roles = ["ops_manager"]
//!
//! [[notify]]
//! webhook = "http://127.0.0.1:9000/hook"
//! command = "sh notify.sh"
//!
//! [tools.check_docs]
//! base_url = "https://customs.example.com"
//! headers = { Authorization = "Bearer ${env:CUSTOMS_TOKEN}" }
//! timeout = "10s"
//! ca_file = "certs/customs-ca.pem"       # trusted besides the system's roots
//! client_cert = "certs/flowrt.pem"       # mutual TLS, with its key:
//! client_key = "certs/flowrt.key"
//!
//! [workflows.cargo_release]
//! starters = ["clerk"]
//! readers = ["compliance"]
//!
//! [llm]
//! base_url = "http://127.0.0.1:9100/v1"
//! api_key = "${env:MISTRAL_API_KEY}"
//! timeout = "60s"
//!
//! [exec]
//! timeout = "10m"
//! ```
//!
//! TLS file paths are relative to the directory of `flow.toml`; each file is read and checked
//! when the file is loaded (a missing file, PEM that is not a certificate or key, a key that
//! does not belong to its certificate, a certificate without its key are errors at the key's
//! line). `[llm]` and `[[notify]]` webhooks take the same three keys.
//!
//! Header values and the API key may reference environment variables with `${env:NAME}`; they
//! are read when the tool is called (a missing variable is then an error naming the tool and
//! the variable), and their values are secrets: never recorded, never shown.
//!
//! Every mistake in the file is a [`ConfigError`] that names the file, line and column
//! (`flow.toml:3:9: roles must be a list of strings`). Unknown keys are refused, with a
//! "did you mean" for near misses, so that a typo never silently disables a rule.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use crate::http_client::TlsFiles;

/// The file name looked up in the current directory when no `--config` is given.
pub const DEFAULT_FILE: &str = "flow.toml";
/// The largest `flow.toml` read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A loaded project configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Notification hooks, in file order (a `[[notify]]` entry with both a webhook and a command
    /// gives two hooks: the webhook first).
    pub notify: Vec<NotifyHook>,
    /// Settings of tools by name (`[tools.NAME]`): base URL, headers, time limit.
    pub tools: BTreeMap<String, ToolConfig>,
    /// The chat-completions endpoint of `llm` tools (`[llm]`).
    pub llm: Option<LlmConfig>,
    /// Settings of every `exec` tool (`[exec]`).
    pub exec: ExecConfig,
    /// Who may start each workflow (`[workflows.NAME] starters = ["role", …]`); a workflow
    /// not listed may be started by any configured user.
    pub starters: BTreeMap<String, Vec<String>>,
    /// Roles that may read every run of a workflow through the server (`[workflows.NAME]
    /// readers = ["role", …]`), besides those who may read any run (spec/server.md).
    pub readers: BTreeMap<String, Vec<String>>,
    /// Where the configuration came from (a path, or a label such as `<empty>`).
    pub origin: String,
}

/// A likely mistake in a valid configuration ([`Config::lint`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lint {
    pub kind: LintKind,
    pub message: String,
    /// For an unknown `[tools.NAME]`: the deployed tool it is a near miss of, if any.
    pub near: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LintKind {
    /// `[tools.NAME]` or `[workflows.NAME]` names nothing in the programs (a typo).
    UnknownSection,
    /// An `${env:VAR}` that is not set in this environment.
    UnsetVariable,
    UserWithoutRoles,
    /// A role users hold that nothing mentions.
    UnusedRole,
}

impl Lint {
    fn new(kind: LintKind, message: String) -> Lint {
        Lint {
            kind,
            message,
            near: None,
        }
    }
}

/// How a tool is called (`[tools.NAME]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolConfig {
    /// `http://host[:port][/prefix]`: an `http` tool's path is appended to it.
    pub base_url: Option<String>,
    /// Extra request headers, in file order; the values may reference the environment.
    pub headers: Vec<(String, EnvTemplate)>,
    /// The longest one call may take, in milliseconds, unless a `timeout` block allows less.
    pub timeout_ms: Option<u64>,
    /// `ca_file`, `client_cert`, `client_key`: for `https://` URLs.
    pub tls: TlsFiles,
}

/// The OpenAI-compatible chat-completions endpoint used by `llm` tools (`[llm]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LlmConfig {
    /// `http://host[:port]/v1`: requests go to `{base_url}/chat/completions`.
    pub base_url: Option<String>,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<EnvTemplate>,
    /// The longest one call may take, in milliseconds, unless a `timeout` block allows less.
    pub timeout_ms: Option<u64>,
    /// `ca_file`, `client_cert`, `client_key`: for an `https://` endpoint.
    pub tls: TlsFiles,
}

/// What applies to every `exec` tool (`[exec]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecConfig {
    /// The longest one call may take, in milliseconds, for a tool without a `timeout` of
    /// its own (`[tools.NAME] timeout`), unless a `timeout` block allows less.
    pub timeout_ms: Option<u64>,
}

/// A configuration string that may reference environment variables, like
/// `Bearer ${env:CUSTOMS_TOKEN}`. It is resolved when it is used, so a variable set after
/// `flow.toml` was written is seen, and a missing one is reported where it matters.
///
/// Its `Debug` form shows the variables it reads, never its text: a literal header value
/// may be a secret too.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvTemplate {
    parts: Vec<TemplatePart>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TemplatePart {
    Text(String),
    Env(String),
}

/// A resolved [`EnvTemplate`].
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The text with the variables' values in place.
    pub value: String,
    /// The values read from the environment.
    pub from_env: Vec<String>,
}

impl fmt::Debug for EnvTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvTemplate")
            .field("env", &self.variables().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolved(<secret>)")
    }
}

impl EnvTemplate {
    /// Parses `text`; every `${` must start a `${env:NAME}` reference.
    pub fn parse(text: &str) -> Result<EnvTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(TemplatePart::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(
                    "`${` is not closed: write `${env:NAME}` to use an environment variable"
                        .to_string(),
                );
            };
            let inner = &after[..end];
            let Some(name) = inner.strip_prefix("env:") else {
                return Err(format!(
                    "`${{{inner}}}`: only environment variables can be used here, as `${{env:NAME}}`"
                ));
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "`${{env:{name}}}`: an environment variable name is letters, digits and `_`, not starting with a digit"
                ));
            }
            parts.push(TemplatePart::Env(name.to_string()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_string()));
        }
        Ok(EnvTemplate { parts })
    }

    /// The environment variables it reads, in order.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Env(name) => Some(name.as_str()),
            TemplatePart::Text(_) => None,
        })
    }

    /// The text with each variable's value from `lookup`; `Err(name)` names the first
    /// variable that is not set.
    pub fn resolve(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<Resolved, String> {
        let mut value = String::new();
        let mut from_env = Vec::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(text) => value.push_str(text),
                TemplatePart::Env(name) => {
                    let found = lookup(name).ok_or_else(|| name.clone())?;
                    value.push_str(&found);
                    from_env.push(found);
                }
            }
        }
        Ok(Resolved { value, from_env })
    }
}

/// One user of the project.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// The roles this user holds, in file order, without duplicates.
    pub roles: Vec<String>,
}

/// Where a notification is delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyHook {
    /// An HTTP POST of the JSON message to an `http://` or `https://` URL (with the entry's
    /// `ca_file`, `client_cert` and `client_key`).
    Webhook { url: String, tls: TlsFiles },
    /// `sh -c COMMAND` with the JSON message on standard input.
    Command { command: String },
}

impl fmt::Display for NotifyHook {
    /// `webhook http://…` or `command …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyHook::Webhook { url, .. } => write!(f, "webhook {url}"),
            NotifyHook::Command { command } => write!(f, "command {command}"),
        }
    }
}

/// A configuration that could not be read or is malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or label) the configuration came from.
    pub origin: String,
    /// 1-based line of the mistake, when it is tied to a place in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the mistake.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `flow.toml:3:9: roles must be a list of strings`, or `flow.toml: cannot read …` when the
    /// mistake has no place in the file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "{}:{line}:{column}: {}", self.origin, self.message)
            }
            (Some(line), None) => write!(f, "{}:{line}: {}", self.origin, self.message),
            _ => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// No users, no hooks.
    pub fn empty() -> Config {
        Config {
            users: BTreeMap::new(),
            notify: Vec::new(),
            tools: BTreeMap::new(),
            llm: None,
            exec: ExecConfig::default(),
            starters: BTreeMap::new(),
            readers: BTreeMap::new(),
            origin: "<empty>".to_string(),
        }
    }

    /// The time limit `flow.toml` gives the `exec` tool `tool`: its own `[tools.NAME]
    /// timeout`, else `[exec] timeout`.
    pub fn exec_timeout_ms(&self, tool: &str) -> Option<u64> {
        self.tools
            .get(tool)
            .and_then(|t| t.timeout_ms)
            .or(self.exec.timeout_ms)
    }

    /// Whether `user` may start `workflow`: a configured user holding one of the workflow's
    /// `starters` roles (any configured user when the workflow names none).
    pub fn may_start(&self, user: &str, workflow: &str) -> Result<(), String> {
        let Some(account) = self.users.get(user) else {
            return Err(format!("{user} is not a user of {}", self.origin));
        };
        match self.starters.get(workflow) {
            None => Ok(()),
            Some(roles) if roles.iter().any(|r| account.roles.contains(r)) => Ok(()),
            Some(roles) => Err(format!(
                "{user} may not start `{workflow}`: it needs role {}",
                roles.join(" or ")
            )),
        }
    }

    /// What in this configuration is likely a mistake, given the programs it serves: a
    /// `[tools.NAME]` or `[workflows.NAME]` section that names nothing in them (a typo
    /// silently leaves the real tool unconfigured), an `${env:VAR}` that is not set, a user
    /// without roles, a role that neither the programs nor `starters`/`readers` mention. Each
    /// is one line, meant as a warning: the file itself is valid.
    pub fn lint(&self, programs: &[&flow_compiler::bytecode::Module]) -> Vec<Lint> {
        use std::collections::BTreeSet;
        let origin = &self.origin;
        let tools: BTreeSet<&str> = programs
            .iter()
            .flat_map(|m| m.tools.iter().map(|t| t.name.as_str()))
            .collect();
        let workflows: BTreeSet<&str> = programs
            .iter()
            .flat_map(|m| m.entry_workflows().map(|w| w.name.as_str()))
            .collect();
        let texts: BTreeSet<&str> = programs
            .iter()
            .flat_map(|m| m.constants.iter())
            .filter_map(|c| match c {
                flow_compiler::bytecode::Constant::Str(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let mut problems = Vec::new();
        let unknown = |kind: &str, name: &str, known: &BTreeSet<&str>| {
            let hint = flow_compiler::diagnostics::did_you_mean(name, known.iter().copied())
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            format!(
                "{origin}: [{kind}.{name}] names no {kind_one} of the deployed programs{hint}",
                kind_one = &kind[..kind.len() - 1]
            )
        };
        if !programs.is_empty() {
            for name in self.tools.keys().filter(|n| !tools.contains(n.as_str())) {
                problems.push(Lint {
                    near: flow_compiler::diagnostics::did_you_mean(name, tools.iter().copied())
                        .map(str::to_string),
                    ..Lint::new(LintKind::UnknownSection, unknown("tools", name, &tools))
                });
            }
            let sections: BTreeSet<&String> =
                self.starters.keys().chain(self.readers.keys()).collect();
            for name in sections
                .into_iter()
                .filter(|n| !workflows.contains(n.as_str()))
            {
                problems.push(Lint::new(
                    LintKind::UnknownSection,
                    unknown("workflows", name, &workflows),
                ));
            }
        }
        let templates = self
            .tools
            .iter()
            .flat_map(|(tool, c)| {
                c.headers
                    .iter()
                    .map(move |(h, t)| (format!("[tools.{tool}] header {h}"), t))
            })
            .chain(
                self.llm
                    .iter()
                    .flat_map(|l| l.api_key.iter().map(|t| ("[llm] api_key".to_string(), t))),
            );
        for (place, template) in templates {
            for variable in template.variables() {
                if std::env::var_os(variable).is_none() {
                    problems.push(Lint::new(
                        LintKind::UnsetVariable,
                        format!(
                            "{origin}: {place} reads ${{env:{variable}}}, which is not set here"
                        ),
                    ));
                }
            }
        }
        for (name, user) in &self.users {
            if user.roles.is_empty() {
                problems.push(Lint::new(
                    LintKind::UserWithoutRoles,
                    format!("{origin}: user `{name}` holds no roles: they may start runs but decide nothing"),
                ));
            }
        }
        if !programs.is_empty() {
            let named: BTreeSet<&str> = self
                .starters
                .values()
                .chain(self.readers.values())
                .flatten()
                .map(String::as_str)
                .collect();
            let held: BTreeSet<&str> = self
                .users
                .values()
                .flat_map(|u| u.roles.iter().map(String::as_str))
                .collect();
            for role in held {
                if !texts.contains(role) && !named.contains(role) && role != "auditor" {
                    problems.push(Lint::new(LintKind::UnusedRole, format!("{origin}: role `{role}` is held by users but no deployed program, starters or readers mention it")));
                }
            }
        }
        problems
    }

    /// Whether `user` holds one of the `readers` roles of `workflow` (the role, when so).
    pub fn reader_role(&self, user: &str, workflow: &str) -> Option<&str> {
        let account = self.users.get(user)?;
        self.readers
            .get(workflow)?
            .iter()
            .find(|r| account.roles.contains(r))
            .map(String::as_str)
    }

    /// Loads and checks the file at `path` (TLS file paths in it are relative to its
    /// directory) (a regular file of at most [`MAX_CONFIG_BYTES`]). A missing file is an error; see
    /// [`Config::load_optional`] for the default location, where a missing file is fine.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text =
            flow_compiler::sources::read_regular_file(path, MAX_CONFIG_BYTES).and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
            });
        match text {
            Ok(text) => {
                let dir = path.parent().unwrap_or_else(|| Path::new(""));
                Parser {
                    text: &text,
                    origin: &origin,
                    dir,
                }
                .document()
            }
            Err(why) => Err(ConfigError {
                origin,
                line: None,
                column: None,
                message: format!("cannot read the configuration: {why}"),
            }),
        }
    }

    /// Like [`Config::load`], but a file that does not exist is `Ok(None)`.
    pub fn load_optional(path: &Path) -> Result<Option<Config>, ConfigError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => Config::load(path).map(Some),
        }
    }

    /// Parses and checks configuration text; `origin` names it in errors. TLS file paths are
    /// relative to the current directory.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let parser = Parser {
            text,
            origin,
            dir: Path::new(""),
        };
        parser.document()
    }

    /// The user with this name.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Whether `user` exists and holds `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.user(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// The names of the users holding `role`, sorted.
    pub fn users_with_role(&self, role: &str) -> Vec<&str> {
        self.users
            .iter()
            .filter(|(_, u)| u.roles.iter().any(|r| r == role))
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// 1-based line and column (in characters) of a byte offset in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word_l = word.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for &c in candidates {
        let distance = flow_compiler::diagnostics::edit_distance(&word_l, c);
        let prefix = word_l
            .chars()
            .zip(c.chars())
            .take_while(|(a, b)| a == b)
            .count();
        let close = distance <= (c.chars().count() / 3).max(1)
            || prefix >= 4
            || (prefix >= 3 && (word_l.starts_with(c) || c.starts_with(word_l.as_str())));
        if close && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Entries of a table in the order they appear in the file.
fn in_file_order<'t, 'i>(
    table: &'t DeTable<'i>,
) -> Vec<(
    &'t Spanned<toml::de::DeString<'i>>,
    &'t Spanned<DeValue<'i>>,
)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

fn describe(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

struct Parser<'a> {
    text: &'a str,
    origin: &'a str,
    /// What relative file paths are relative to.
    dir: &'a Path,
}

const TOP_KEYS: &[&str] = &["users", "notify", "tools", "llm", "exec", "workflows"];
const WORKFLOW_KEYS: &[&str] = &["starters", "readers"];
const TOOL_KEYS: &[&str] = &[
    "base_url",
    "headers",
    "timeout",
    "ca_file",
    "client_cert",
    "client_key",
];
const LLM_KEYS: &[&str] = &[
    "base_url",
    "api_key",
    "timeout",
    "ca_file",
    "client_cert",
    "client_key",
];
const EXEC_KEYS: &[&str] = &["timeout"];
/// Headers that flowrt sets itself and a configuration may not replace.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "idempotency-key",
];
const USER_KEYS: &[&str] = &["roles"];
const NOTIFY_KEYS: &[&str] = &["webhook", "command", "ca_file", "client_cert", "client_key"];

/// The TLS keys of one section as written: each path and the place of its value.
#[derive(Default)]
struct TlsKeys {
    ca_file: Option<(PathBuf, Range<usize>)>,
    client_cert: Option<(PathBuf, Range<usize>)>,
    client_key: Option<(PathBuf, Range<usize>)>,
}

impl TlsKeys {
    fn set(
        &mut self,
        parser: &Parser<'_>,
        key: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<(), ConfigError> {
        let entry = Some((parser.path(key, value)?, value.span()));
        match key {
            "ca_file" => self.ca_file = entry,
            "client_cert" => self.client_cert = entry,
            _ => self.client_key = entry,
        }
        Ok(())
    }

    /// The first key given, and its place.
    fn first(&self) -> Option<(&'static str, Range<usize>)> {
        [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ]
        .into_iter()
        .find_map(|(key, entry)| entry.as_ref().map(|(_, span)| (key, span.clone())))
    }
}

impl Parser<'_> {
    fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = line_column(self.text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError {
            origin: self.origin.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        self.error(Some(span), message)
    }

    fn unknown_key(
        &self,
        key: &Spanned<toml::de::DeString<'_>>,
        in_what: &str,
        known: &[&str],
    ) -> ConfigError {
        let name = key.get_ref().as_ref();
        let hint = match (in_what, name) {
            ("a [[notify]] entry", "url" | "http" | "hook") => Some("webhook"),
            ("a [[notify]] entry", "cmd" | "exec" | "run" | "script") => Some("command"),
            ("the configuration", "user") => Some("users"),
            ("the configuration", "tool") => Some("tools"),
            ("the configuration", "model" | "openai" | "mistral") => Some("llm"),
            (_, "url" | "base" | "endpoint" | "baseurl" | "base-url")
                if known.contains(&"base_url") =>
            {
                Some("base_url")
            }
            (_, "header") => Some("headers"),
            (_, "key" | "token" | "apikey" | "api-key") if known.contains(&"api_key") => {
                Some("api_key")
            }
            _ => did_you_mean(name, known),
        };
        let expected = known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let message = match hint {
            Some(h) => format!("unknown key `{name}` in {in_what}; did you mean `{h}`?"),
            None => format!("unknown key `{name}` in {in_what}; expected one of {expected}"),
        };
        self.at(key.span(), message)
    }

    fn document(&self) -> Result<Config, ConfigError> {
        let root = DeTable::parse(self.text).map_err(|e| {
            let message = e.message().trim().to_string();
            self.error(e.span(), format!("invalid TOML: {message}"))
        })?;
        let mut config = Config {
            users: BTreeMap::new(),
            notify: Vec::new(),
            tools: BTreeMap::new(),
            llm: None,
            exec: ExecConfig::default(),
            starters: BTreeMap::new(),
            readers: BTreeMap::new(),
            origin: self.origin.to_string(),
        };
        for (key, value) in in_file_order(root.get_ref()) {
            match key.get_ref().as_ref() {
                "users" => config.users = self.users(value)?,
                "notify" => config.notify = self.notify(value)?,
                "tools" => config.tools = self.tools(value)?,
                "llm" => config.llm = Some(self.llm(value)?),
                "exec" => config.exec = self.exec(value)?,
                "workflows" => (config.starters, config.readers) = self.workflows(value)?,
                _ => return Err(self.unknown_key(key, "the configuration", TOP_KEYS)),
            }
        }
        Ok(config)
    }

    fn users(&self, value: &Spanned<DeValue<'_>>) -> Result<BTreeMap<String, User>, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "users must be a table of users, like [users.alice], not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        let mut users = BTreeMap::new();
        for (key, user) in in_file_order(table) {
            let name = key.get_ref().as_ref();
            if name.trim().is_empty() {
                return Err(self.at(key.span(), "a user name must not be empty"));
            }
            if name.trim() != name {
                return Err(self.at(
                    key.span(),
                    format!("user name `{name}` must not start or end with spaces"),
                ));
            }
            // `@…` names the server's own principals (a scrape token is `@scrape`).
            if name.starts_with('@') {
                return Err(self.at(
                    key.span(),
                    format!("user name `{name}` must not start with `@`: those name tokens that are no person"),
                ));
            }
            // `system:…` is what a system's token acts as (`flowrt token create --system`).
            if crate::tokens::system_of(name).is_some() {
                return Err(self.at(
                    key.span(),
                    format!("user name `{name}` must not start with `{}`: that names a system, whose tokens are made with `flowrt token create --system NAME`", crate::tokens::SYSTEM_PREFIX),
                ));
            }
            users.insert(name.to_string(), self.user(name, user)?);
        }
        Ok(users)
    }

    fn user(&self, name: &str, value: &Spanned<DeValue<'_>>) -> Result<User, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "user `{name}` must be a table, like [users.{name}] with roles = [\"…\"], not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        let mut user = User::default();
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "roles" => user.roles = self.roles(value)?,
                _ => {
                    return Err(self.unknown_key(key, &format!("user `{name}`"), USER_KEYS));
                }
            }
        }
        Ok(user)
    }

    /// `[workflows.NAME] starters = ["role", …]`, `readers = ["role", …]`: the starters and
    /// the readers of each workflow.
    #[allow(clippy::type_complexity)]
    fn workflows(
        &self,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<(BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>), ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                "workflows must be a table of workflows, like [workflows.cargo_release]",
            ));
        };
        let mut starters = BTreeMap::new();
        let mut readers = BTreeMap::new();
        for (key, entry) in in_file_order(table) {
            let name = key.get_ref().as_ref();
            let DeValue::Table(settings) = entry.get_ref() else {
                return Err(self.at(
                    entry.span(),
                    format!("workflow `{name}` must be a table, like [workflows.{name}] with starters = [\"…\"]"),
                ));
            };
            for (setting, value) in in_file_order(settings) {
                match setting.get_ref().as_ref() {
                    "starters" => {
                        starters.insert(name.to_string(), self.roles(value)?);
                    }
                    "readers" => {
                        readers.insert(name.to_string(), self.roles(value)?);
                    }
                    _ => {
                        return Err(self.unknown_key(
                            setting,
                            &format!("workflow `{name}`"),
                            WORKFLOW_KEYS,
                        ));
                    }
                }
            }
        }
        Ok((starters, readers))
    }

    fn roles(&self, value: &Spanned<DeValue<'_>>) -> Result<Vec<String>, ConfigError> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.at(value.span(), "roles must be a list of strings"));
        };
        let mut roles: Vec<String> = Vec::new();
        for item in items.iter() {
            let DeValue::String(role) = item.get_ref() else {
                return Err(self.at(
                    item.span(),
                    format!(
                        "roles must be a list of strings; this is {}",
                        describe(item.get_ref())
                    ),
                ));
            };
            if role.trim().is_empty() {
                return Err(self.at(item.span(), "a role must not be empty"));
            }
            if role.trim() != role.as_ref() {
                return Err(self.at(
                    item.span(),
                    format!("role `{role}` must not start or end with spaces"),
                ));
            }
            if !roles.iter().any(|r| r == role.as_ref()) {
                roles.push(role.to_string());
            }
        }
        Ok(roles)
    }

    fn notify(&self, value: &Spanned<DeValue<'_>>) -> Result<Vec<NotifyHook>, ConfigError> {
        let entries: &DeArray<'_> = match value.get_ref() {
            DeValue::Array(entries) => entries,
            DeValue::Table(_) => {
                return Err(self.at(
                    value.span(),
                    "notify must be a list of hooks: write [[notify]] (with two brackets) for each hook",
                ));
            }
            other => {
                return Err(self.at(
                    value.span(),
                    format!(
                        "notify must be a list of hooks, each a [[notify]] table with a webhook or a command, not {}",
                        describe(other)
                    ),
                ));
            }
        };
        let mut hooks = Vec::new();
        for entry in entries.iter() {
            let DeValue::Table(table) = entry.get_ref() else {
                return Err(self.at(
                    entry.span(),
                    format!(
                        "each notify hook must be a table with a webhook or a command, not {}",
                        describe(entry.get_ref())
                    ),
                ));
            };
            let mut webhook = None;
            let mut command = None;
            let mut tls = TlsKeys::default();
            for (key, value) in in_file_order(table) {
                match key.get_ref().as_ref() {
                    "webhook" => webhook = Some(self.webhook(value)?),
                    "command" => command = Some(self.command(value)?),
                    name @ ("ca_file" | "client_cert" | "client_key") => {
                        tls.set(self, name, value)?;
                    }
                    _ => return Err(self.unknown_key(key, "a [[notify]] entry", NOTIFY_KEYS)),
                }
            }
            if webhook.is_none() && command.is_none() {
                return Err(self.at(
                    entry.span(),
                    "a [[notify]] entry needs a webhook = \"http://…\" or a command = \"…\"",
                ));
            }
            if webhook.is_none()
                && let Some((key, span)) = tls.first()
            {
                return Err(self.at(
                    span,
                    format!("{key} applies to a webhook, and this [[notify]] entry has none: add webhook = \"https://…\" or move {key} to the entry that has it"),
                ));
            }
            let tls = self.tls_files(tls, "the [[notify]] webhook")?;
            hooks.extend(webhook.map(|url| NotifyHook::Webhook { url, tls }));
            hooks.extend(command.map(|command| NotifyHook::Command { command }));
        }
        Ok(hooks)
    }

    fn webhook(&self, value: &Spanned<DeValue<'_>>) -> Result<String, ConfigError> {
        let DeValue::String(url) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "webhook must be a string with an http:// or https:// URL, not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        crate::http_client::HttpUrl::parse(url)
            .map_err(|message| self.at(value.span(), message))?;
        Ok(url.to_string())
    }

    fn command(&self, value: &Spanned<DeValue<'_>>) -> Result<String, ConfigError> {
        let DeValue::String(command) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "command must be a string (run with sh -c), not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        if command.trim().is_empty() {
            return Err(self.at(value.span(), "command must not be empty"));
        }
        Ok(command.to_string())
    }

    fn tools(
        &self,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<BTreeMap<String, ToolConfig>, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "tools must be a table of tools, like [tools.check_docs], not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        let mut tools = BTreeMap::new();
        for (key, tool) in in_file_order(table) {
            let name = key.get_ref().as_ref();
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_alphanumeric() || c == '_');
            if !valid {
                return Err(self.at(
                    key.span(),
                    format!("`{name}` is not a tool name: use the name the .flow file declares"),
                ));
            }
            tools.insert(name.to_string(), self.tool(name, tool)?);
        }
        Ok(tools)
    }

    fn tool(&self, name: &str, value: &Spanned<DeValue<'_>>) -> Result<ToolConfig, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "tool `{name}` must be a table, like [tools.{name}] with base_url = \"http://…\", not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        let mut tool = ToolConfig::default();
        let mut tls = TlsKeys::default();
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "base_url" => tool.base_url = Some(self.base_url(value)?),
                "headers" => tool.headers = self.headers(name, value)?,
                "timeout" => tool.timeout_ms = Some(self.timeout(value)?),
                key @ ("ca_file" | "client_cert" | "client_key") => tls.set(self, key, value)?,
                _ => {
                    return Err(self.unknown_key(key, &format!("tool `{name}`"), TOOL_KEYS));
                }
            }
        }
        tool.tls = self.tls_files(tls, &format!("[tools.{name}]"))?;
        Ok(tool)
    }

    fn llm(&self, value: &Spanned<DeValue<'_>>) -> Result<LlmConfig, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "llm must be a table, like [llm] with base_url = \"http://…/v1\", not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        let mut llm = LlmConfig::default();
        let mut tls = TlsKeys::default();
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "base_url" => llm.base_url = Some(self.base_url(value)?),
                "api_key" => llm.api_key = Some(self.template("api_key", value)?),
                "timeout" => llm.timeout_ms = Some(self.timeout(value)?),
                key @ ("ca_file" | "client_cert" | "client_key") => tls.set(self, key, value)?,
                _ => return Err(self.unknown_key(key, "[llm]", LLM_KEYS)),
            }
        }
        llm.tls = self.tls_files(tls, "[llm]")?;
        Ok(llm)
    }

    fn exec(&self, value: &Spanned<DeValue<'_>>) -> Result<ExecConfig, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "exec must be a table, like [exec] with timeout = \"10m\", not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        let mut exec = ExecConfig::default();
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "timeout" => exec.timeout_ms = Some(self.timeout(value)?),
                _ => return Err(self.unknown_key(key, "[exec]", EXEC_KEYS)),
            }
        }
        Ok(exec)
    }

    fn base_url(&self, value: &Spanned<DeValue<'_>>) -> Result<String, ConfigError> {
        let DeValue::String(url) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "base_url must be a string with an http:// or https:// URL, not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        crate::http_client::HttpUrl::parse_as(url, "base_url")
            .map_err(|message| self.at(value.span(), message))?;
        if url.contains('?') || url.contains('#') {
            return Err(self.at(
                value.span(),
                format!("base_url `{url}` must not have a query or a fragment"),
            ));
        }
        Ok(url.trim_end_matches('/').to_string())
    }

    fn headers(
        &self,
        tool: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<Vec<(String, EnvTemplate)>, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "headers must be a table, like headers = {{ Authorization = \"Bearer ${{env:TOKEN}}\" }}, not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        let mut headers: Vec<(String, EnvTemplate)> = Vec::new();
        for (key, value) in in_file_order(table) {
            let name = key.get_ref().as_ref();
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(self.at(
                    key.span(),
                    format!("`{name}` is not a valid HTTP header name"),
                ));
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(self.at(
                    key.span(),
                    format!(
                        "tool `{tool}`: the {name} header is set by flowrt and cannot be configured"
                    ),
                ));
            }
            if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(self.at(key.span(), format!("header {name} is given twice")));
            }
            headers.push((name.to_string(), self.template(name, value)?));
        }
        Ok(headers)
    }

    /// A string that may reference environment variables; `what` names it in errors.
    fn template(
        &self,
        what: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<EnvTemplate, ConfigError> {
        let DeValue::String(text) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!("{what} must be a string, not {}", describe(value.get_ref())),
            ));
        };
        if text.contains(['\r', '\n']) {
            return Err(self.at(value.span(), format!("{what} must fit on one line")));
        }
        EnvTemplate::parse(text)
            .map_err(|message| self.at(value.span(), format!("{what}: {message}")))
    }

    /// The TLS files of a section, each read and checked now; a mistake is reported at the
    /// line of the key whose file it is, naming the section (`[tools.crm]`).
    fn tls_files(&self, keys: TlsKeys, section: &str) -> Result<TlsFiles, ConfigError> {
        let files = TlsFiles {
            ca_file: keys.ca_file.as_ref().map(|(path, _)| path.clone()),
            client_cert: keys.client_cert.as_ref().map(|(path, _)| path.clone()),
            client_key: keys.client_key.as_ref().map(|(path, _)| path.clone()),
        };
        crate::http_client::check_tls_files(&files).map_err(|e| {
            let span = match e.key {
                "ca_file" => keys.ca_file.map(|(_, span)| span),
                "client_cert" => keys.client_cert.map(|(_, span)| span),
                _ => keys.client_key.map(|(_, span)| span),
            };
            self.error(span, format!("{section} {}", e.message))
        })?;
        Ok(files)
    }

    /// A file path: relative ones are taken from the directory of `flow.toml`.
    fn path(&self, key: &str, value: &Spanned<DeValue<'_>>) -> Result<PathBuf, ConfigError> {
        let DeValue::String(text) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "{key} must be a string with the path of a PEM file, not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        if text.trim().is_empty() {
            return Err(self.at(value.span(), format!("{key} must not be empty")));
        }
        Ok(self.dir.join(text.as_ref()))
    }

    fn timeout(&self, value: &Spanned<DeValue<'_>>) -> Result<u64, ConfigError> {
        let DeValue::String(text) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "timeout must be a duration in quotes, like \"10s\", not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        match crate::vm::value::parse_duration(text) {
            Some(ms) if ms > 0 => Ok(ms as u64),
            Some(_) => Err(self.at(value.span(), "timeout must be longer than 0s")),
            None => Err(self.at(
                value.span(),
                format!("timeout `{text}` is not a duration: write a number with a unit (ms, s, m, h, d), like \"10s\""),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        match Config::parse(text, "flow.toml") {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e,
        }
    }

    const EXAMPLE: &str = r#"# the project's people
[users.alice]
roles = ["customs"]

[users.omar]
roles = ["ops_manager", "customs"]

[users.zoe]

[[notify]]
webhook = "http://127.0.0.1:9000/hook"
command = "sh notify.sh"

[[notify]]
command = "logger flow"
"#;

    #[test]
    fn parses_the_example() {
        let config = Config::parse(EXAMPLE, "flow.toml").expect("valid config");
        assert_eq!(config.origin, "flow.toml");
        assert_eq!(config.users.len(), 3);
        assert_eq!(
            config.user("omar").expect("omar").roles,
            vec!["ops_manager".to_string(), "customs".to_string()]
        );
        assert!(config.user("zoe").expect("zoe").roles.is_empty());
        assert!(config.has_role("alice", "customs"));
        assert!(!config.has_role("alice", "ops_manager"));
        assert!(!config.has_role("nobody", "customs"));
        assert_eq!(config.users_with_role("customs"), vec!["alice", "omar"]);
        assert_eq!(
            config.notify,
            vec![
                NotifyHook::Webhook {
                    url: "http://127.0.0.1:9000/hook".to_string(),
                    tls: TlsFiles::NONE,
                },
                NotifyHook::Command {
                    command: "sh notify.sh".to_string()
                },
                NotifyHook::Command {
                    command: "logger flow".to_string()
                },
            ]
        );
        assert_eq!(
            config.notify[0].to_string(),
            "webhook http://127.0.0.1:9000/hook"
        );
        assert_eq!(config.notify[1].to_string(), "command sh notify.sh");
    }

    #[test]
    fn empty_text_and_empty_config() {
        let config = Config::parse("", "flow.toml").expect("empty is valid");
        assert!(config.users.is_empty() && config.notify.is_empty());
        assert!(Config::empty().users.is_empty());
        assert!(!Config::empty().has_role("alice", "customs"));
    }

    #[test]
    fn inline_forms_are_accepted() {
        let config = Config::parse(
            "users = { bob = { roles = [\"a\", \"a\", \"b\"] } }\nnotify = [{ command = \"true\" }]\n",
            "x.toml",
        )
        .expect("valid");
        assert_eq!(config.user("bob").expect("bob").roles, vec!["a", "b"]);
        assert_eq!(config.notify.len(), 1);
    }

    #[test]
    fn display_names_file_line_and_column() {
        let e = err("[users.alice]\n\nroles = \"customs\"\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:3:9: roles must be a list of strings"
        );
        assert_eq!((e.line, e.column), (Some(3), Some(9)));
    }

    #[test]
    fn toml_syntax_error_names_the_line() {
        let e = err("[users.alice]\nroles = [\"customs\"\n\n[users.omar\n");
        assert!(e.line.is_some(), "{e}");
        assert!(e.message.starts_with("invalid TOML: "), "{e}");
        let e = err("[users.alice]\nroles = = 3\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().starts_with("flow.toml:2:"), "{e}");
    }

    #[test]
    fn duplicate_user_is_a_syntax_error() {
        let e = err("[users.alice]\nroles = []\n[users.alice]\nroles = []\n");
        assert_eq!(e.line, Some(3), "{e}");
    }

    #[test]
    fn unknown_top_level_keys_are_refused_with_a_hint() {
        let e = err("[user.alice]\nroles = [\"customs\"]\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:1:2: unknown key `user` in the configuration; did you mean `users`?"
        );
        let e = err("[users.alice]\nroles = []\n\n[[notifications]]\ncommand = \"x\"\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:4:3: unknown key `notifications` in the configuration; did you mean `notify`?"
        );
        let e = err("[[notfy]]\ncommand = \"x\"\n");
        assert!(e.message.contains("did you mean `notify`?"), "{e}");
        let e = err("database = \"runs.db\"\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:1:1: unknown key `database` in the configuration; expected one of `users`, `notify`, `tools`, `llm`, `exec`, `workflows`"
        );
    }

    #[test]
    fn starters_say_who_may_start_a_workflow() {
        let config = Config::parse(
            "[users.ines]\nroles = [\"clerk\"]\n[users.ana]\nroles = [\"customs\"]\n\n[workflows.cargo_release]\nstarters = [\"clerk\"]\n",
            "flow.toml",
        )
        .expect("parses");
        assert_eq!(config.may_start("ines", "cargo_release"), Ok(()));
        assert_eq!(
            config.may_start("ana", "cargo_release"),
            Err("ana may not start `cargo_release`: it needs role clerk".to_string())
        );
        // A workflow without starters: any configured user, and only them.
        assert_eq!(config.may_start("ana", "refund"), Ok(()));
        assert!(config.may_start("mallory", "refund").is_err());
        let e = err("[workflows.refund]\nstarter = [\"clerk\"]\n");
        assert!(
            e.to_string()
                .starts_with("flow.toml:2:1: unknown key `starter` in workflow `refund`"),
            "{e}"
        );
        let e = err("[workflows.refund]\nstarters = \"clerk\"\n");
        assert!(
            e.to_string().contains("roles must be a list of strings"),
            "{e}"
        );
    }

    #[test]
    fn readers_say_who_may_read_a_workflows_runs() {
        let config = Config::parse(
            "[users.cora]\nroles = [\"compliance\", \"clerk\"]\n[users.ana]\nroles = [\"customs\"]\n\n[workflows.cargo_release]\nstarters = [\"clerk\"]\nreaders = [\"compliance\"]\n",
            "flow.toml",
        )
        .expect("parses");
        assert_eq!(
            config.reader_role("cora", "cargo_release"),
            Some("compliance")
        );
        assert_eq!(config.reader_role("ana", "cargo_release"), None);
        assert_eq!(config.reader_role("cora", "refund"), None);
        assert_eq!(config.reader_role("mallory", "cargo_release"), None);
        assert_eq!(config.may_start("cora", "cargo_release"), Ok(()));
        let e = err("[workflows.refund]\nreader = [\"clerk\"]\n");
        assert!(
            e.to_string().starts_with(
                "flow.toml:2:1: unknown key `reader` in workflow `refund`; did you mean `readers`?"
            ),
            "{e}"
        );
        let e = err("[workflows.refund]\nreaders = [1]\n");
        assert!(e.to_string().starts_with("flow.toml:2:12:"), "{e}");
    }

    #[test]
    fn unknown_user_keys_are_refused() {
        let e = err("[users.alice]\nrole = [\"customs\"]\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:2:1: unknown key `role` in user `alice`; did you mean `roles`?"
        );
    }

    #[test]
    fn roles_must_be_a_list_of_strings() {
        let e = err("[users.alice]\nroles = [\"customs\", 3]\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:2:21: roles must be a list of strings; this is an integer"
        );
        let e = err("[users.alice]\nroles = 3\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:2:9: roles must be a list of strings"
        );
        let e = err("[users.alice]\nroles = [[\"a\"]]\n");
        assert!(e.message.contains("this is a list"), "{e}");
    }

    #[test]
    fn empty_user_name_or_role_is_refused() {
        let e = err("[users.\"\"]\nroles = [\"customs\"]\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:1:8: a user name must not be empty"
        );
        let e = err("[users.alice]\nroles = [\"customs\", \"\"]\n");
        assert_eq!(e.to_string(), "flow.toml:2:21: a role must not be empty");
        let e = err("[users.alice]\nroles = [\"  \"]\n");
        assert_eq!(e.message, "a role must not be empty");
        let e = err("[users.\" bob\"]\n");
        assert!(
            e.message.contains("must not start or end with spaces"),
            "{e}"
        );
    }

    #[test]
    fn no_user_name_is_a_system() {
        let error = Config::parse("[users.\"system:billing\"]\nroles = [\"x\"]\n", "flow.toml")
            .expect_err("refused");
        assert!(error.message.contains("names a system"), "{error}");
    }

    #[test]
    fn no_user_name_starts_with_an_at() {
        let error = Config::parse("[users.\"@scrape\"]\nroles = [\"x\"]\n", "flow.toml")
            .expect_err("refused");
        assert!(
            error.to_string().contains("must not start with `@`"),
            "{error}"
        );
    }

    #[test]
    fn users_and_user_must_be_tables() {
        let e = err("users = [\"alice\"]\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:1:9: users must be a table of users, like [users.alice], not a list"
        );
        let e = err("[users]\nalice = \"customs\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.starts_with("user `alice` must be a table"), "{e}");
    }

    #[test]
    fn notify_entry_needs_webhook_or_command() {
        let e = err("[users.alice]\nroles = []\n\n[[notify]]\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert_eq!(
            e.message,
            "a [[notify]] entry needs a webhook = \"http://…\" or a command = \"…\""
        );
        let e = err("notify = [{}]\n");
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.message.contains("needs a webhook"), "{e}");
    }

    #[test]
    fn notify_must_be_an_array_of_tables() {
        let e = err("[notify]\ncommand = \"x\"\n");
        assert!(e.message.contains("write [[notify]]"), "{e}");
        assert_eq!(e.line, Some(1), "{e}");
        let e = err("notify = [\"x\"]\n");
        assert!(e.message.contains("not a string"), "{e}");
        let e = err("[[notify]]\nurl = \"http://x/\"\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:2:1: unknown key `url` in a [[notify]] entry; did you mean `webhook`?"
        );
        let e = err("[[notify]]\ncomand = \"x\"\n");
        assert!(e.message.contains("did you mean `command`?"), "{e}");
    }

    #[test]
    fn webhook_must_be_http_or_https() {
        let config = Config::parse("[[notify]]\nwebhook = \"https://example.com/hook\"\n", "t")
            .expect("https is accepted");
        assert_eq!(
            config.notify[0].to_string(),
            "webhook https://example.com/hook"
        );
        let e = err("[[notify]]\nwebhook = \"ftp://example.com/\"\n");
        assert_eq!((e.line, e.column), (Some(2), Some(11)));
        assert!(e.message.contains("http:// or https://"), "{e}");
        let e = err("[[notify]]\nwebhook = \"http://:80/\"\n");
        assert!(e.message.contains("host"), "{e}");
        let e = err("[[notify]]\nwebhook = \"http://h:99999/\"\n");
        assert!(e.message.contains("port"), "{e}");
        let e = err("[[notify]]\nwebhook = 80\n");
        assert!(e.message.starts_with("webhook must be a string"), "{e}");
    }

    #[test]
    fn command_must_be_a_nonempty_string() {
        let e = err("[[notify]]\ncommand = \"  \"\n");
        assert_eq!(e.to_string(), "flow.toml:2:11: command must not be empty");
        let e = err("[[notify]]\ncommand = [\"notify-send\", \"x\"]\n");
        assert!(e.message.starts_with("command must be a string"), "{e}");
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_column("ab\ncdé f", 9), (2, 6));
        assert_eq!(line_column("ab", 100), (1, 3));
        assert_eq!(line_column("", 0), (1, 1));
    }

    #[test]
    fn load_and_load_optional() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("flow.toml");
        assert_eq!(
            Config::load_optional(&missing).expect("missing is fine"),
            None
        );
        let e = Config::load(&missing).expect_err("missing is an error for load");
        assert!(
            e.to_string().contains("cannot read the configuration"),
            "{e}"
        );
        assert_eq!(e.line, None);

        std::fs::write(&missing, EXAMPLE).expect("write");
        let config = Config::load_optional(&missing)
            .expect("valid")
            .expect("present");
        assert_eq!(config.origin, missing.display().to_string());
        assert!(config.has_role("omar", "ops_manager"));

        std::fs::write(&missing, "[users.a]\nroles = 1\n").expect("write");
        let e = Config::load_optional(&missing).expect_err("malformed");
        assert_eq!(
            e.to_string(),
            format!("{}:2:9: roles must be a list of strings", missing.display())
        );
    }

    const TOOLS: &str = r#"[tools.check_docs]
base_url = "http://127.0.0.1:8080/api/"
headers = { Authorization = "Bearer ${env:CUSTOMS_TOKEN}", X-Tenant = "eu-${env:REGION}-1" }
timeout = "10s"

[tools.lookup]
base_url = "http://127.0.0.1:8081"

[tools.lookup.headers]
Accept-Language = "fr"

[llm]
base_url = "http://127.0.0.1:9100/v1"
api_key = "${env:MISTRAL_API_KEY}"
timeout = "1m"
"#;

    #[test]
    fn parses_tools_and_llm() {
        let config = Config::parse(TOOLS, "flow.toml").expect("valid config");
        let check = &config.tools["check_docs"];
        assert_eq!(check.base_url.as_deref(), Some("http://127.0.0.1:8080/api"));
        assert_eq!(check.timeout_ms, Some(10_000));
        let names: Vec<&str> = check.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Authorization", "X-Tenant"]);
        let env = |name: &str| match name {
            "CUSTOMS_TOKEN" => Some("s3cret-token".to_string()),
            "REGION" => Some("west".to_string()),
            _ => None,
        };
        let auth = check.headers[0].1.resolve(env).expect("resolves");
        assert_eq!(auth.value, "Bearer s3cret-token");
        assert_eq!(auth.from_env, ["s3cret-token"]);
        assert_eq!(
            check.headers[1].1.resolve(env).expect("resolves").value,
            "eu-west-1"
        );
        let lookup = &config.tools["lookup"];
        assert_eq!(lookup.timeout_ms, None);
        assert_eq!(lookup.headers.len(), 1);
        let llm = config.llm.as_ref().expect("an [llm] section");
        assert_eq!(llm.base_url.as_deref(), Some("http://127.0.0.1:9100/v1"));
        assert_eq!(llm.timeout_ms, Some(60_000));
        let key = llm.api_key.as_ref().expect("an api key");
        assert_eq!(key.variables().collect::<Vec<_>>(), ["MISTRAL_API_KEY"]);
        assert_eq!(key.resolve(|_| None), Err("MISTRAL_API_KEY".to_string()));
    }

    #[test]
    fn debug_forms_do_not_show_secrets() {
        let config = Config::parse(
            "[tools.t]\nheaders = { Authorization = \"Bearer literal-secret\", X = \"${env:TOKEN}\" }\n",
            "flow.toml",
        )
        .expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("literal-secret"), "{shown}");
        assert!(shown.contains("TOKEN"), "{shown}");
        let resolved = config.tools["t"].headers[1]
            .1
            .resolve(|_| Some("from-env-secret".into()))
            .expect("resolves");
        assert!(!format!("{resolved:?}").contains("from-env-secret"));
    }

    #[test]
    fn env_templates() {
        let t = EnvTemplate::parse("a ${env:X} b ${env:_Y2}").expect("valid");
        assert_eq!(t.variables().collect::<Vec<_>>(), ["X", "_Y2"]);
        assert_eq!(
            t.resolve(|n| Some(n.to_lowercase()))
                .expect("resolves")
                .value,
            "a x b _y2"
        );
        assert_eq!(
            EnvTemplate::parse("plain")
                .expect("valid")
                .resolve(|_| None)
                .expect("no vars")
                .value,
            "plain"
        );
        assert!(EnvTemplate::parse("${env:X").is_err());
        assert!(
            EnvTemplate::parse("${X}")
                .expect_err("no env:")
                .contains("${env:NAME}")
        );
        assert!(EnvTemplate::parse("${env:1X}").is_err());
        assert!(EnvTemplate::parse("${env:}").is_err());
        assert!(EnvTemplate::parse("$X and $ {").is_ok());
    }

    #[test]
    fn tool_and_llm_errors_name_the_line() {
        let config = Config::parse("[tools.t]\nbase_url = \"https://api.example.com\"\n", "t")
            .expect("https is accepted");
        assert_eq!(
            config.tools["t"].base_url.as_deref(),
            Some("https://api.example.com")
        );
        let e = err("[tools.t]\nbase_url = \"ftp://api.example.com\"\n");
        assert_eq!((e.line, e.column), (Some(2), Some(12)), "{e}");
        assert!(
            e.message.contains("must be an http:// or https:// URL"),
            "{e}"
        );
        let e = err("[tools.t]\nbase_url = \"http://h:8080/x?y=1\"\n");
        assert!(e.message.contains("query"), "{e}");
        let e = err("[tools.t]\nbase_url = 8080\n");
        assert!(e.message.starts_with("base_url must be a string"), "{e}");
        let e = err("[tools.t]\nurl = \"http://h/\"\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:2:1: unknown key `url` in tool `t`; did you mean `base_url`?"
        );
        let e = err("[tools.t]\ntimeout = \"10 parsecs\"\n");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("is not a duration"), "{e}");
        let e = err("[tools.t]\ntimeout = 10\n");
        assert!(e.message.contains("a duration in quotes"), "{e}");
        let e = err("[tools.t]\ntimeout = \"0s\"\n");
        assert!(e.message.contains("longer than 0s"), "{e}");
        let e = err("[tools.t]\nheaders = { Authorization = \"Bearer ${CUSTOMS_TOKEN}\" }\n");
        assert_eq!(e.line, Some(2));
        assert!(e.message.starts_with("Authorization: "), "{e}");
        assert!(e.message.contains("${env:NAME}"), "{e}");
        let e = err("[tools.t]\nheaders = { \"Bad Name\" = \"x\" }\n");
        assert!(e.message.contains("not a valid HTTP header name"), "{e}");
        let e = err("[tools.t]\nheaders = { Idempotency-Key = \"x\" }\n");
        assert!(e.message.contains("set by flowrt"), "{e}");
        let e = err("[tools.t]\nheaders = { X = 1 }\n");
        assert!(e.message.contains("X must be a string"), "{e}");
        let e = err("[tools.t]\nheaders = [\"X: 1\"]\n");
        assert!(e.message.starts_with("headers must be a table"), "{e}");
        let e = err("[tools]\nt = \"http://h/\"\n");
        assert!(e.message.starts_with("tool `t` must be a table"), "{e}");
        let e = err("[tool.t]\nbase_url = \"http://h/\"\n");
        assert!(e.message.contains("did you mean `tools`?"), "{e}");
        let e = err("[llm]\napi-key = \"x\"\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:2:1: unknown key `api-key` in [llm]; did you mean `api_key`?"
        );
        let e = err("[llm]\nmodel = \"mistral-small\"\n");
        assert!(
            e.message
                .contains("expected one of `base_url`, `api_key`, `timeout`, `ca_file`"),
            "{e}"
        );
        let e = err("llm = \"http://h/v1\"\n");
        assert!(e.message.starts_with("llm must be a table"), "{e}");
        let e = err("[llm]\napi_key = \"${env:KEY\"\n");
        assert!(e.message.starts_with("api_key: "), "{e}");
    }

    /// A project directory with `flow.toml` and a CA, a client certificate and its key (and a
    /// key that belongs to another certificate) under `certs/`.
    fn tls_project(toml: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).expect("certs");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_string()]).expect("ca");
        let client =
            rcgen::generate_simple_self_signed(vec!["flowrt".to_string()]).expect("client");
        let other = rcgen::KeyPair::generate().expect("key");
        for (name, text) in [
            ("ca.pem", ca.cert.pem()),
            ("client.pem", client.cert.pem()),
            ("client.key", client.signing_key.serialize_pem()),
            ("other.key", other.serialize_pem()),
        ] {
            std::fs::write(certs.join(name), text).expect("write");
        }
        let path = dir.path().join("flow.toml");
        std::fs::write(&path, toml).expect("flow.toml");
        let loaded = Config::load(&path);
        (dir, loaded)
    }

    #[test]
    fn tls_files_are_relative_to_flow_toml_and_read_when_it_is_loaded() {
        let (dir, loaded) = tls_project(
            "[tools.crm]\nbase_url = \"https://crm.example.com\"\nca_file = \"certs/ca.pem\"\n\
             client_cert = \"certs/client.pem\"\nclient_key = \"certs/client.key\"\n\n\
             [llm]\nbase_url = \"https://llm.example.com/v1\"\nca_file = \"certs/ca.pem\"\n\n\
             [[notify]]\nwebhook = \"https://hooks.example.com/flow\"\nca_file = \"certs/ca.pem\"\n",
        );
        let config = loaded.expect("valid");
        let certs = dir.path().join("certs");
        let crm = &config.tools["crm"].tls;
        assert_eq!(crm.ca_file.as_deref(), Some(certs.join("ca.pem").as_path()));
        assert_eq!(
            crm.client_cert.as_deref(),
            Some(certs.join("client.pem").as_path())
        );
        assert_eq!(
            crm.client_key.as_deref(),
            Some(certs.join("client.key").as_path())
        );
        let llm = &config.llm.as_ref().expect("llm").tls;
        assert_eq!(llm.ca_file.as_deref(), Some(certs.join("ca.pem").as_path()));
        let NotifyHook::Webhook { tls, .. } = &config.notify[0] else {
            panic!("a webhook")
        };
        assert_eq!(tls.ca_file.as_deref(), Some(certs.join("ca.pem").as_path()));
    }

    #[test]
    fn bad_tls_files_name_the_section_the_file_and_the_line() {
        let cases: &[(&str, (usize, usize), &[&str])] = &[
            (
                "[tools.crm]\nca_file = \"certs/missing.pem\"\n",
                (2, 11),
                &["[tools.crm] ca_file `", "missing.pem`: cannot read it"],
            ),
            (
                "[tools.crm]\nca_file = \"certs/client.key\"\n",
                (2, 11),
                &["[tools.crm] ca_file `", "client.key`: holds no certificate"],
            ),
            (
                "[tools.crm]\nclient_cert = \"certs/client.pem\"\n",
                (2, 15),
                &[
                    "[tools.crm] client_cert `",
                    "needs its private key too (client_key)",
                ],
            ),
            (
                "[tools.crm]\nclient_key = \"certs/client.key\"\n",
                (2, 14),
                &[
                    "[tools.crm] client_key `",
                    "needs its certificate too (client_cert)",
                ],
            ),
            (
                "[tools.crm]\nclient_cert = \"certs/client.pem\"\nclient_key = \"certs/other.key\"\n",
                (3, 14),
                &[
                    "[tools.crm] client_key `",
                    "does not belong to the certificate of client_cert",
                ],
            ),
            (
                "[llm]\nca_file = \"certs/nope.pem\"\n",
                (2, 11),
                &["[llm] ca_file `", "cannot read it"],
            ),
            (
                "[[notify]]\nwebhook = \"https://h/\"\nclient_key = \"certs/client.key\"\n",
                (3, 14),
                &[
                    "the [[notify]] webhook client_key `",
                    "needs its certificate too",
                ],
            ),
            (
                "[[notify]]\ncommand = \"true\"\nca_file = \"certs/ca.pem\"\n",
                (3, 11),
                &["ca_file applies to a webhook, and this [[notify]] entry has none"],
            ),
            (
                "[tools.crm]\nca_file = 5\n",
                (2, 11),
                &["ca_file must be a string with the path of a PEM file, not an integer"],
            ),
            (
                "[tools.crm]\nca_file = \" \"\n",
                (2, 11),
                &["ca_file must not be empty"],
            ),
        ];
        for (toml, (line, column), says) in cases {
            let (_dir, loaded) = tls_project(toml);
            let e = loaded.expect_err(toml);
            assert_eq!(
                (e.line, e.column),
                (Some(*line), Some(*column)),
                "{toml}: {e}"
            );
            assert!(e.origin.ends_with("flow.toml"), "{e}");
            for part in *says {
                assert!(e.message.contains(part), "{toml}: {e}");
            }
        }
    }

    #[test]
    fn exec_time_limits_per_tool_and_for_all() {
        let config = Config::parse(
            "[exec]\ntimeout = \"10m\"\n\n[tools.build]\ntimeout = \"90s\"\n",
            "flow.toml",
        )
        .expect("valid config");
        assert_eq!(config.exec.timeout_ms, Some(600_000));
        assert_eq!(config.exec_timeout_ms("build"), Some(90_000));
        assert_eq!(config.exec_timeout_ms("other"), Some(600_000));
        assert_eq!(Config::empty().exec_timeout_ms("build"), None);

        let e = err("[exec]\ntimout = \"1m\"\n");
        assert_eq!(
            e.to_string(),
            "flow.toml:2:1: unknown key `timout` in [exec]; did you mean `timeout`?"
        );
        let e = err("[exec]\ntimeout = 30\n");
        assert!(
            e.message
                .starts_with("timeout must be a duration in quotes"),
            "{e}"
        );
        let e = err("exec = \"5m\"\n");
        assert!(e.message.starts_with("exec must be a table"), "{e}");
    }
}
