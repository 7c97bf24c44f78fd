//! The store: where deployed versions, runs, checkpoints, history and timers live.
//!
//! One trait, [`Store`], composed of one trait per concern ([`Versions`], [`Runs`],
//! [`History`], [`Gates`], [`Outbox`], [`Tokens`], [`Settings`], [`GroupCommit`]). Their SQL
//! is written once (`runs.rs`, `events.rs`, `gate_index.rs`, `outbox.rs`, `admin.rs`, the
//! schema in `schema.rs`) over the dialect layer of `sql.rs`, which SQLite
//! ([`sqlite::SqliteStore`], one file) and PostgreSQL ([`postgres::PostgresStore`], many
//! workers) implement. Every method that changes a run does it in one transaction, so a
//! crash at any instant leaves either all of a step's effects recorded or none. The store never makes up a history event: it appends
//! the ones it is given.
//!
//! Runs are driven by one process at a time: a process *claims* a run (owner + lease expiry)
//! before driving it, and every commit checks the claim, so two `flowrt` processes on the same
//! database never drive the same run at once. An expired lease may be taken over.

mod admin;
#[cfg(test)]
mod conformance;
mod counts;
mod events;
pub mod gate_index;
pub mod migrate;
pub mod outbox;
pub mod postgres;
mod runs;
pub mod schema;
pub mod signals;
pub mod sql;
pub mod sqlite;

pub use crate::history::EventKind;
pub use gate_index::{Approval, GateChange, GateCounts, GateRow};
pub use outbox::{Notification, OutboxChange, OutboxKey, OutboxRow};
use serde::{Deserialize, Serialize};
pub use signals::{Delivery, SignalRecord};
use std::fmt;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Ready to be driven (new, or woken up).
    Runnable,
    /// Waiting on a timer (`wake_at`), a person, or a child run.
    Waiting,
    Completed,
    Failed,
    Cancelled,
    /// Ended by `continue as`: its successor (see [`crate::engine::successor_of`]) goes on.
    Continued,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Runnable => "runnable",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Continued => "continued",
        }
    }

    pub const ALL: [RunStatus; 6] = [
        RunStatus::Runnable,
        RunStatus::Waiting,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Continued,
    ];

    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled | RunStatus::Continued
        )
    }
}

/// A serialized VM state. The format version and the program hash are kept outside the
/// blob so a runtime can refuse (or upgrade) a snapshot before decoding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub format_version: i64,
    pub program_hash: String,
    pub state: Vec<u8>,
    /// What the engine knows of the run's earlier tool calls at this checkpoint (attempts,
    /// keys of failed and started calls: `engine::CallMemory`, as JSON), so that a resume
    /// reads no history. `None` for a checkpoint written before it was kept.
    pub calls: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    pub id: String,
    pub workflow: String,
    /// The artifact hash of the deployed version the run is pinned to.
    pub version: String,
    /// The input, as JSON text.
    pub input: String,
    pub started_by: String,
    /// Set for child runs.
    pub parent: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub workflow: String,
    pub version: String,
    pub status: RunStatus,
    pub input: String,
    /// JSON text, when completed.
    pub output: Option<String>,
    /// A rendered error, when failed.
    pub error: Option<String>,
    /// What the run waits for, when waiting ("timer", "approval release_signoff", …).
    pub waiting_on: Option<String>,
    pub wake_at: Option<Millis>,
    pub started_by: String,
    pub parent: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Why an operator must look at the run, when one must: an undo block that failed
    /// (`compensation_failed`), until someone records it handled (`flowrt resolve`).
    pub attention: Option<String>,
}

impl RunRecord {
    /// What the run waits on, typed (`None` when it does not wait, or on text this `flowrt`
    /// does not know).
    pub fn waiting(&self) -> Option<crate::history::WaitingOn> {
        self.waiting_on
            .as_deref()
            .and_then(crate::history::WaitingOn::parse)
    }
}

/// One entry of a run's append-only history (its timeline).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 1, 2, 3, … within the run; assigned by the store.
    pub seq: i64,
    pub at: Millis,
    pub kind: EventKind,
    /// The tool, gate, event or child workflow concerned.
    pub step: Option<String>,
    pub attempt: Option<i64>,
    /// The `.flow` source line of the instruction.
    pub line: Option<i64>,
    pub duration_ms: Option<i64>,
    /// Details as JSON text (tool input and output, error, idempotency key, …).
    pub data: String,
    /// The hash of the record before this one in the run's trail (see [`crate::audit`]).
    pub prev_hash: String,
    /// The HMAC of this record and `prev_hash` under the audit key (SHA-256 for records
    /// written before the audit key).
    pub hash: String,
    /// For the record that left the run final: the final state it seals (see
    /// [`crate::audit::seal`]).
    pub seal: Option<String>,
}

/// The kind of a stored event, read back: a kind this `flowrt` does not know means the
/// database was written by a newer one (or by hand).
pub(crate) fn stored_kind(run: &str, seq: i64, text: &str) -> StoreResult<EventKind> {
    EventKind::parse(text).ok_or_else(|| {
        StoreError::Database(format!(
            "run {run}, event {seq}: unknown event kind `{text}` (written by a newer flowrt?)"
        ))
    })
}

/// An event to append; the store assigns `seq`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub at: Millis,
    pub kind: EventKind,
    pub step: Option<String>,
    pub attempt: Option<i64>,
    pub line: Option<i64>,
    pub duration_ms: Option<i64>,
    pub data: String,
}

/// Everything one step changes, committed atomically by [`Runs::commit`].
#[derive(Clone, Debug, PartialEq)]
pub struct StepCommit {
    pub run: String,
    /// The claim this commit is made under; the commit fails if another owner holds the run.
    pub owner: String,
    /// The new VM state (absent for final states that need none).
    pub checkpoint: Option<Checkpoint>,
    pub events: Vec<NewEvent>,
    pub status: RunStatus,
    pub output: Option<String>,
    pub error: Option<String>,
    pub waiting_on: Option<String>,
    pub wake_at: Option<Millis>,
    pub now: Millis,
    /// What the commit does to the gate index (see [`gate_index`]): besides this, a commit
    /// whose run does not wait at a gate afterwards deletes the run's rows.
    pub gate: Option<GateChange>,
    /// What the commit does to the notification outbox (see [`outbox`]): the notification of
    /// a gate it opens or escalates, the rows whose delivery it records.
    pub outbox: OutboxChange,
    /// The signal (by its number) that the step committed took (see [`signals`]).
    pub takes_signal: Option<i64>,
}

#[derive(Debug)]
pub enum StoreError {
    /// The database was written by a newer `flowrt` (its schema version is higher).
    NewerSchema {
        found: i64,
        supported: i64,
    },
    /// Another process holds the run's claim.
    NotOwner {
        run: String,
    },
    NoSuchRun(String),
    /// The database is locked by another process for longer than the busy timeout.
    Busy(String),
    Database(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NewerSchema { found, supported } => write!(
                f,
                "the database was written by a newer flowrt (schema version {found}; this flowrt knows up to {supported}); upgrade flowrt"
            ),
            StoreError::NotOwner { run } => {
                write!(f, "run {run} is being driven by another flowrt process")
            }
            StoreError::NoSuchRun(run) => write!(f, "no run with id {run}"),
            StoreError::Busy(why) => write!(f, "the database is busy: {why}"),
            StoreError::Database(why) => write!(f, "database error: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

/// An API token of `flowrt serve`, without the token itself (only its hash is stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub user: String,
    pub name: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// A refused request that concerns no run (those that do are in the run's history), or a
/// row of such refusals: repeats from the same client, by the same `who`, with the same
/// status, within [`REFUSAL_WINDOW_MS`] of the row's first, are counted in it instead of
/// written one by one (so that refused requests cannot be a way to fill the disk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// When the first of them was refused.
    pub at: Millis,
    /// The user, or what was presented instead (`no token`, `token t3…`).
    pub who: String,
    /// `METHOD /path` of the first.
    pub request: String,
    pub status: i64,
    pub reason: String,
    /// The client's IP address (empty for rows recorded before it was kept).
    pub client: String,
    /// How many refused requests the row stands for (1 when recorded; more once aggregated).
    pub count: i64,
    /// When the last of them was refused.
    pub last_at: Millis,
}

/// Refusals of one client, `who` and status within this long of a row's first are counted
/// in that row.
pub const REFUSAL_WINDOW_MS: Millis = 60_000;
/// The refusal log keeps this many rows; recording one more deletes the oldest.
pub const REFUSAL_LOG_ROWS: i64 = 10_000;
/// The most bytes of `who`, `request` and `client` kept (longer text is cut, marked `…`).
pub const REFUSAL_TEXT_BYTES: usize = 256;
/// The most bytes of `reason` kept.
pub const REFUSAL_REASON_BYTES: usize = 512;

impl Refusal {
    /// One refused request, now, with its texts cut to the log's bounds.
    pub fn new(
        at: Millis,
        client: &str,
        who: &str,
        request: &str,
        status: i64,
        reason: &str,
    ) -> Refusal {
        Refusal {
            at,
            who: cut(who, REFUSAL_TEXT_BYTES),
            request: cut(request, REFUSAL_TEXT_BYTES),
            status,
            reason: cut(reason, REFUSAL_REASON_BYTES),
            client: cut(client, REFUSAL_TEXT_BYTES),
            count: 1,
            last_at: at,
        }
    }

    /// The same refusal with every text within the log's bounds (what the stores write).
    pub fn bounded(&self) -> Refusal {
        Refusal {
            count: self.count.max(1),
            last_at: self.last_at.max(self.at),
            ..Refusal::new(
                self.at,
                &self.client,
                &self.who,
                &self.request,
                self.status,
                &self.reason,
            )
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mark = "…";
    let mut end = max.saturating_sub(mark.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &text[..end])
}

/// Opens the store a `--db` value names: `postgres://…` (or `postgresql://…`) for
/// PostgreSQL, `sqlite:PATH` or a plain path for SQLite.
pub fn open(spec: &str) -> StoreResult<Box<dyn Store>> {
    if postgres::is_postgres_url(spec) {
        return Ok(Box::new(postgres::PostgresStore::connect(spec)?));
    }
    let path = spec.strip_prefix("sqlite:").unwrap_or(spec);
    Ok(Box::new(sqlite::SqliteStore::open(std::path::Path::new(
        path,
    ))?))
}

/// Deployed versions.
pub trait Versions {
    /// Records a deployed version (idempotent: deploying the same hash again is a no-op).
    fn deploy(&mut self, hash: &str, artifact: &[u8], now: Millis) -> StoreResult<()>;
    fn artifact(&mut self, hash: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Every deployed version with when it was deployed, oldest first.
    fn versions(&mut self) -> StoreResult<Vec<(String, Millis)>>;
}

/// Runs, their checkpoints and their claims.
pub trait Runs {
    /// Creates a run with its first checkpoint and events, claimed by `owner` until
    /// `lease_until` (or unclaimed when `owner` is `None`).
    fn create_run(
        &mut self,
        run: &NewRun,
        checkpoint: &Checkpoint,
        events: &[NewEvent],
        owner: Option<&str>,
        lease_until: Millis,
        now: Millis,
    ) -> StoreResult<()>;

    /// Claims `run` for `owner` until `lease_until` if nobody else holds a live claim.
    /// Returns false when another owner's lease has not expired.
    fn claim(
        &mut self,
        run: &str,
        owner: &str,
        lease_until: Millis,
        now: Millis,
    ) -> StoreResult<bool>;

    /// Claims up to `limit` runs that can make progress now: runnable ones, waiting ones
    /// whose `wake_at` has passed, and runs in a tool call whose process is gone (its claim
    /// ran out). Returns their ids, oldest first.
    fn claim_ready(
        &mut self,
        owner: &str,
        lease_until: Millis,
        now: Millis,
        limit: usize,
    ) -> StoreResult<Vec<String>>;

    /// Gives up a claim (after committing), so another process may drive the run.
    fn release(&mut self, run: &str, owner: &str) -> StoreResult<()>;

    /// Extends every claim `owner` holds on a run that has not finished to `lease_until`
    /// (never shortening one): the heartbeat of a live process. Returns how many it extended.
    fn renew_claims(&mut self, owner: &str, lease_until: Millis) -> StoreResult<u64>;

    /// The run and its latest checkpoint.
    fn load(&mut self, run: &str) -> StoreResult<Option<(RunRecord, Checkpoint)>>;

    /// Commits several runs' steps in one transaction (group commit). Each commit must hold
    /// its run's claim; if any does not, nothing is committed.
    fn commit(&mut self, commits: &[StepCommit]) -> StoreResult<()>;

    /// Cancels a run that has not finished: status `cancelled` at `event.at`, `event` (a
    /// `run_cancelled`, made by the engine) appended, the claim dropped and its open gates
    /// taken out of the gate index. Returns false when the run had already finished.
    fn cancel(&mut self, run: &str, event: &NewEvent) -> StoreResult<bool>;

    fn run(&mut self, run: &str) -> StoreResult<Option<RunRecord>>;
    /// The runs `parent` started (its child workflows and the branches of its `parallel`s),
    /// in the order of their ids.
    fn children(&mut self, parent: &str) -> StoreResult<Vec<RunRecord>>;
    /// Runs, newest first, optionally only those with `status`.
    fn runs(&mut self, status: Option<RunStatus>) -> StoreResult<Vec<RunRecord>>;
    /// The runs an operator must look at (an undo block failed: [`RunRecord::attention`]),
    /// newest first.
    fn needing_attention(&mut self) -> StoreResult<Vec<RunRecord>>;
    /// How many runs need attention.
    fn count_needing_attention(&mut self) -> StoreResult<i64>;
    /// Records that what made `run` need attention was handled: its attention cleared and
    /// `event` (an `attention_resolved`) appended, in one transaction. Returns false, with
    /// nothing recorded, when the run needed none.
    fn resolve_attention(&mut self, run: &str, event: &NewEvent) -> StoreResult<bool>;
    /// How many runs each workflow has in each status (from the running counts of
    /// `store/counts.rs`: `/metrics` reads no run).
    fn count_runs(&mut self) -> StoreResult<Vec<(String, RunStatus, i64)>>;
    /// When the next waiting run's timer is due, if any.
    fn next_wake(&mut self) -> StoreResult<Option<Millis>>;

    /// The trace context of the run's root span (a W3C `traceparent`), if one was stored:
    /// every process that drives the run puts its spans into that trace.
    fn trace_of(&mut self, run: &str) -> StoreResult<Option<String>>;
    /// Stores the trace context of the run's root span.
    fn set_trace(&mut self, run: &str, trace: &str) -> StoreResult<()>;
}

/// Runs' histories and the audit trail that links them.
pub trait History {
    /// Appends one event to a run's history (and audit trail) outside any step: something
    /// that happened to the run, such as a refused request, without changing its state.
    fn note(&mut self, run: &str, event: &NewEvent) -> StoreResult<()>;
    fn history(&mut self, run: &str) -> StoreResult<Vec<Event>>;
    /// The run's head in the audit trail (none for a run begun before the audit key).
    fn audit_head(&mut self, run: &str) -> StoreResult<Option<crate::audit::Head>>;
    /// The installation head and every run head of the audit trail (see [`crate::audit`]),
    /// heads by number.
    fn audit_heads(
        &mut self,
    ) -> StoreResult<(Option<crate::audit::Installation>, Vec<crate::audit::Head>)>;
    /// How many history events of `kind` were recorded at or after `since` (all runs).
    fn count_events(&mut self, kind: EventKind, since: Millis) -> StoreResult<i64>;
}

/// Signals sent to runs (see [`signals`]).
pub trait Signals {
    /// Queues signal `name` with `value` (JSON) for `run` and records `event` (its
    /// `signal_received`) in the run's trail, in one transaction; wakes the run when it waits
    /// for a signal of this name. A finished run gets nothing.
    fn send_signal(
        &mut self,
        run: &str,
        name: &str,
        value: &str,
        sender: &str,
        event: &NewEvent,
    ) -> StoreResult<Delivery>;
    /// The oldest signal `name` the run has received and not taken.
    fn next_signal(&mut self, run: &str, name: &str) -> StoreResult<Option<SignalRecord>>;
    /// Every signal the run has received and not taken, oldest first.
    fn queued_signals(&mut self, run: &str) -> StoreResult<Vec<SignalRecord>>;
}

/// The gate index (see [`gate_index`]).
pub trait Gates {
    /// The open gates of the gate index, oldest first: every one, or `run`'s.
    fn gates(&mut self, run: Option<&str>) -> StoreResult<Vec<GateRow>>;
    /// The open gates whose approvers — or escalation, once it fired — name `user` or one of
    /// `roles`, oldest first: a superset of the gates the user may decide, read without
    /// decoding the others (who may decide is `gates::eligibility`'s to say).
    fn gates_for(&mut self, user: &str, roles: &[String]) -> StoreResult<Vec<GateRow>>;
    /// The open gate `name` of `run`, if it is open.
    fn gate(&mut self, run: &str, name: &str) -> StoreResult<Option<GateRow>>;
    /// How many gates are open, by kind, and when the oldest opened.
    fn gate_counts(&mut self) -> StoreResult<GateCounts>;
    /// Indexes a gate that opened before the index existed (the backfill of a database
    /// migrated from an older schema): writes `row` only if its run still waits at that gate
    /// and has no row for it yet. Returns whether it wrote the row.
    fn index_gate(&mut self, row: &GateRow) -> StoreResult<bool>;
}

/// API tokens of `flowrt serve` and the log of refused requests.
pub trait Tokens {
    fn create_token(&mut self, token: &TokenRecord, hash: &str) -> StoreResult<()>;
    fn token_by_hash(&mut self, hash: &str) -> StoreResult<Option<TokenRecord>>;
    fn tokens(&mut self) -> StoreResult<Vec<TokenRecord>>;
    /// Returns false when there is no such live token.
    fn revoke_token(&mut self, id: &str, now: Millis) -> StoreResult<bool>;
    /// Records a refused request within the log's bounds ([`Refusal::bounded`]): counted in
    /// the latest row of the same client, `who` and status when that row began less than
    /// [`REFUSAL_WINDOW_MS`] before, else as a new row, deleting the oldest beyond
    /// [`REFUSAL_LOG_ROWS`].
    fn record_refusal(&mut self, refusal: &Refusal) -> StoreResult<()>;
    /// The most recent refusals first.
    fn refusals(&mut self, limit: usize) -> StoreResult<Vec<Refusal>>;
}

/// The notification outbox (see [`outbox`]): rows are written and deleted by commits
/// ([`StepCommit::outbox`]); these calls claim, reschedule, drop and read them.
pub trait Outbox {
    /// Claims up to `limit` rows of the notification outbox that are due at `now` and not
    /// claimed by a live process (of notification `only`, when given), for `owner` until
    /// `lease_until`, counting the attempt each is claimed for. Another process never gets a
    /// row while the claim lasts. Oldest due first.
    fn claim_notifications(
        &mut self,
        owner: &str,
        lease_until: Millis,
        now: Millis,
        limit: usize,
        only: Option<&str>,
    ) -> StoreResult<Vec<OutboxRow>>;
    /// Gives a row `owner` claimed back, due again at `at` (a failed attempt, retried later).
    /// Does nothing when `owner` no longer holds it.
    fn retry_notification(&mut self, key: &OutboxKey, owner: &str, at: Millis) -> StoreResult<()>;
    /// Deletes a row (a delivery nobody needs any more: its gate is gone).
    fn drop_notification(&mut self, key: &OutboxKey) -> StoreResult<()>;
    /// The rows of the outbox (of notification `only`), oldest first.
    fn notifications(&mut self, only: Option<&str>) -> StoreResult<Vec<OutboxRow>>;
    /// When a row of the outbox (of notification `only`) can next be claimed: when it is
    /// due, or when the claim on it runs out. `None` when there is none.
    fn next_notification(&mut self, only: Option<&str>) -> StoreResult<Option<Millis>>;
}

/// Settings of the database itself (e.g. the test clock's offset).
pub trait Settings {
    fn setting(&mut self, key: &str) -> StoreResult<Option<String>>;
    fn set_setting(&mut self, key: &str, value: &str) -> StoreResult<()>;
}

/// Group commit across requests (`flowrt serve`), which each driver does its own way.
pub trait GroupCommit {
    /// Until [`GroupCommit::end_group`], commits need not reach the disk one by one. Whoever
    /// groups acknowledges nothing before `end_group` returns, and calls
    /// [`GroupCommit::flush`] before any effect outside the database (a tool call, a
    /// notification), so the durability contract is unchanged: what was acknowledged or
    /// acted upon is on disk.
    fn begin_group(&mut self) -> StoreResult<()>;
    /// Makes everything committed so far durable; grouping goes on.
    fn flush(&mut self) -> StoreResult<()>;
    /// Makes everything committed so far durable and ends the group.
    fn end_group(&mut self) -> StoreResult<()>;
}

/// The whole store, as the engine and the commands hold it (`Box<dyn Store>`): every concern
/// above. Implemented for every type that implements them all.
pub trait Store:
    Versions + Runs + History + Gates + Signals + Outbox + Tokens + Settings + GroupCommit
{
}

impl<
    T: Versions + Runs + History + Gates + Signals + Outbox + Tokens + Settings + GroupCommit + ?Sized,
> Store for T
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_text_and_marks_what_it_cuts() {
        assert_eq!(cut("GET /api/me", 20), "GET /api/me");
        let cut_text = cut(&"é".repeat(300), 256);
        assert!(
            cut_text.len() <= 256 && cut_text.ends_with('…'),
            "{cut_text}"
        );
        assert_eq!(cut("abcdef", 4), "a…");
        let r = Refusal::new(
            5,
            "1.2.3.4",
            &"w".repeat(1_000),
            "GET /x",
            401,
            &"r".repeat(9_000),
        );
        assert!(r.who.len() <= REFUSAL_TEXT_BYTES && r.reason.len() <= REFUSAL_REASON_BYTES);
        assert_eq!((r.count, r.last_at), (1, 5));
    }
}
