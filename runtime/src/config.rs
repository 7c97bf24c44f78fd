//! The project configuration file, `flow.toml`: who the users are, which roles they hold, and
//! where notifications go when a human step opens or escalates.
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
//! ```
//!
//! Every mistake in the file is a [`ConfigError`] that names the file, line and column
//! (`flow.toml:3:9: roles must be a list of strings`). Unknown keys are refused, with a
//! "did you mean" for near misses, so that a typo never silently disables a rule.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// The file name looked up in the current directory when no `--config` is given.
pub const DEFAULT_FILE: &str = "flow.toml";

/// A loaded project configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Notification hooks, in file order (a `[[notify]]` entry with both a webhook and a command
    /// gives two hooks: the webhook first).
    pub notify: Vec<NotifyHook>,
    /// Where the configuration came from (a path, or a label such as `<empty>`).
    pub origin: String,
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
    /// An HTTP POST of the JSON message to a `http://` URL.
    Webhook { url: String },
    /// `sh -c COMMAND` with the JSON message on standard input.
    Command { command: String },
}

impl fmt::Display for NotifyHook {
    /// `webhook http://…` or `command …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyHook::Webhook { url } => write!(f, "webhook {url}"),
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
            origin: "<empty>".to_string(),
        }
    }

    /// Loads and checks the file at `path`. A missing file is an error; see
    /// [`Config::load_optional`] for the default location, where a missing file is fine.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &origin),
            Err(e) => Err(ConfigError {
                origin,
                line: None,
                column: None,
                message: format!("cannot read the configuration: {e}"),
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

    /// Parses and checks configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let parser = Parser { text, origin };
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
        let distance = levenshtein(&word_l, c);
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

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
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
}

const TOP_KEYS: &[&str] = &["users", "notify"];
const USER_KEYS: &[&str] = &["roles"];
const NOTIFY_KEYS: &[&str] = &["webhook", "command"];

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
            origin: self.origin.to_string(),
        };
        for (key, value) in in_file_order(root.get_ref()) {
            match key.get_ref().as_ref() {
                "users" => config.users = self.users(value)?,
                "notify" => config.notify = self.notify(value)?,
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
            for (key, value) in in_file_order(table) {
                match key.get_ref().as_ref() {
                    "webhook" => webhook = Some(self.webhook(value)?),
                    "command" => command = Some(self.command(value)?),
                    _ => return Err(self.unknown_key(key, "a [[notify]] entry", NOTIFY_KEYS)),
                }
            }
            if webhook.is_none() && command.is_none() {
                return Err(self.at(
                    entry.span(),
                    "a [[notify]] entry needs a webhook = \"http://…\" or a command = \"…\"",
                ));
            }
            hooks.extend(webhook.map(|url| NotifyHook::Webhook { url }));
            hooks.extend(command.map(|command| NotifyHook::Command { command }));
        }
        Ok(hooks)
    }

    fn webhook(&self, value: &Spanned<DeValue<'_>>) -> Result<String, ConfigError> {
        let DeValue::String(url) = value.get_ref() else {
            return Err(self.at(
                value.span(),
                format!(
                    "webhook must be a string with an http:// URL, not {}",
                    describe(value.get_ref())
                ),
            ));
        };
        crate::notify::HttpUrl::parse(url).map_err(|message| self.at(value.span(), message))?;
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
                    url: "http://127.0.0.1:9000/hook".to_string()
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
            "flow.toml:1:1: unknown key `database` in the configuration; expected one of `users`, `notify`"
        );
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
    fn webhook_must_be_http() {
        let e = err("[[notify]]\nwebhook = \"https://example.com/hook\"\n");
        assert_eq!(e.line, Some(2));
        assert_eq!(e.column, Some(11));
        assert!(e.message.contains("https is not supported yet"), "{e}");
        let e = err("[[notify]]\nwebhook = \"ftp://example.com/\"\n");
        assert!(e.message.contains("http://"), "{e}");
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
}
