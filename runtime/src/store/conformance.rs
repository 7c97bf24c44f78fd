//! The store's behaviour, the same on both databases: every test here runs on an in-memory
//! SQLite store and, when `FLOW_TEST_POSTGRES` names a PostgreSQL server, on a fresh
//! PostgreSQL database of its own. What only one database has (SQLite's pragmas, file and
//! locks) is tested in its driver's file.

#![allow(clippy::unwrap_used)]

use super::postgres::PostgresStore;
use super::sql::{Conn, SqlStore, params, sql};
use super::sqlite::SqliteStore;
use super::{
    Checkpoint, EventKind, Gates, GroupCommit, History, Millis, NewEvent, NewRun, Notification,
    Outbox, OutboxChange, Refusal, RunRecord, RunStatus, Runs, StepCommit, StoreError, StoreResult,
    Tokens, Versions,
};
use crate::engine::cancel_event;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A store under test: either database.
pub(crate) trait TestStore: SqlStore + GroupCommit {}
impl<T: SqlStore + GroupCommit> TestStore for T {}

/// A fresh PostgreSQL database, dropped with the store.
struct PgTest {
    store: Option<PostgresStore>,
    admin: String,
    name: String,
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

impl PgTest {
    fn new(admin: &str) -> PgTest {
        let name = format!(
            "flow_u_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        let mut client = postgres::Client::connect(admin, postgres::NoTls).unwrap();
        // A database of a killed earlier run whose process id was the same.
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let base = &admin[..admin.rfind('/').unwrap()];
        let store = PostgresStore::connect(&format!("{base}/{name}")).unwrap();
        PgTest {
            store: Some(store),
            admin: admin.to_string(),
            name,
        }
    }
}

impl Drop for PgTest {
    fn drop(&mut self) {
        drop(self.store.take());
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

impl SqlStore for PgTest {
    fn conn(&mut self) -> StoreResult<&mut dyn Conn> {
        self.store.as_mut().unwrap().conn()
    }
}

impl GroupCommit for PgTest {
    fn begin_group(&mut self) -> StoreResult<()> {
        self.store.as_mut().unwrap().begin_group()
    }
    fn flush(&mut self) -> StoreResult<()> {
        self.store.as_mut().unwrap().flush()
    }
    fn end_group(&mut self) -> StoreResult<()> {
        self.store.as_mut().unwrap().end_group()
    }
}

/// Runs `test` on SQLite and, with `FLOW_TEST_POSTGRES` set, on PostgreSQL; `test` makes
/// each store it needs with the function it is given (a fresh database with version `v1`
/// deployed).
fn each_store(test: impl Fn(&dyn Fn() -> Box<dyn TestStore>)) {
    let with_v1 = |mut store: Box<dyn TestStore>| {
        store.deploy("v1", b"artifact", 1).unwrap();
        store
    };
    test(&|| with_v1(Box::new(SqliteStore::in_memory().unwrap())));
    if let Ok(admin) = std::env::var("FLOW_TEST_POSTGRES") {
        eprintln!("the same on PostgreSQL");
        test(&|| with_v1(Box::new(PgTest::new(&admin))));
    }
}

pub(crate) const OWNER: &str = "worker-a";
pub(crate) const OTHER: &str = "worker-b";

pub(crate) fn checkpoint(state: &[u8]) -> Checkpoint {
    Checkpoint {
        format_version: 1,
        program_hash: "prog".to_string(),
        state: state.to_vec(),
        calls: None,
    }
}

pub(crate) fn event(kind: EventKind, at: Millis) -> NewEvent {
    NewEvent {
        at,
        kind,
        step: Some("tool".to_string()),
        attempt: Some(1),
        line: Some(7),
        duration_ms: Some(3),
        data: "{}".to_string(),
    }
}

pub(crate) fn new_run(id: &str) -> NewRun {
    NewRun {
        id: id.to_string(),
        workflow: "ship".to_string(),
        version: "v1".to_string(),
        input: r#"{"n":1}"#.to_string(),
        started_by: "alice".to_string(),
        parent: None,
    }
}

pub(crate) fn create(store: &mut (impl Runs + ?Sized), id: &str, owner: Option<&str>, now: Millis) {
    store
        .create_run(
            &new_run(id),
            &checkpoint(b"s0"),
            &[event(EventKind::RunStarted, now)],
            owner,
            now + 1000,
            now,
        )
        .unwrap();
}

pub(crate) fn step(run: &str, owner: &str, status: RunStatus, now: Millis) -> StepCommit {
    StepCommit {
        run: run.to_string(),
        owner: owner.to_string(),
        checkpoint: Some(checkpoint(format!("at {now}").as_bytes())),
        events: vec![
            event(EventKind::StepStarted, now),
            event(EventKind::StepCompleted, now),
        ],
        status,
        output: None,
        error: None,
        waiting_on: None,
        wake_at: None,
        now,
        gate: None,
        outbox: Default::default(),
        takes_signal: None,
    }
}

/// Who holds the run's claim, read behind the store's back.
pub(crate) fn owner_of(store: &mut (impl SqlStore + ?Sized), run: &str) -> Option<String> {
    let conn = store.conn().unwrap();
    let sql = sql!(conn.dialect(), "SELECT owner FROM runs WHERE id = $1");
    conn.value::<Option<String>>("testing", sql, params![run])
        .unwrap()
        .flatten()
}

#[test]
fn deploy_is_idempotent() {
    each_store(|fresh| {
        let mut store = fresh();
        store.deploy("v1", b"artifact", 2).unwrap();
        assert_eq!(
            store.artifact("v1").unwrap().as_deref(),
            Some(&b"artifact"[..])
        );
        assert_eq!(store.artifact("v2").unwrap(), None);
        let conn = store.conn().unwrap();
        let count = conn
            .value::<i64>("testing", "SELECT COUNT(*) FROM versions", &[])
            .unwrap();
        assert_eq!(count, Some(1));
    });
}

#[test]
fn create_and_load_round_trip() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "r1", Some(OWNER), 10);
        let (record, cp) = store.load("r1").unwrap().unwrap();
        assert_eq!(cp, checkpoint(b"s0"));
        assert_eq!(
            record,
            RunRecord {
                id: "r1".to_string(),
                workflow: "ship".to_string(),
                version: "v1".to_string(),
                status: RunStatus::Runnable,
                input: r#"{"n":1}"#.to_string(),
                output: None,
                error: None,
                waiting_on: None,
                wake_at: None,
                started_by: "alice".to_string(),
                parent: None,
                created_at: 10,
                updated_at: 10,
                attention: None,
            }
        );
        assert_eq!(store.run("r1").unwrap(), Some(record));
        assert_eq!(store.load("nope").unwrap(), None);
        assert_eq!(store.run("nope").unwrap(), None);
        let history = store.history("r1").unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].seq, 1);
        assert_eq!(history[0].kind, EventKind::RunStarted);
        assert_eq!(owner_of(&mut *store, "r1").as_deref(), Some(OWNER));
    });
}

#[test]
fn create_refuses_unknown_version_duplicate_id_and_missing_parent() {
    each_store(|fresh| {
        let mut store = fresh();
        let mut run = new_run("r1");
        run.version = "v9".to_string();
        let err = store
            .create_run(&run, &checkpoint(b""), &[], None, 0, 1)
            .unwrap_err();
        assert!(err.to_string().contains("not deployed"), "{err}");
        create(&mut *store, "r1", None, 1);
        let err = store
            .create_run(&new_run("r1"), &checkpoint(b""), &[], None, 0, 1)
            .unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        let mut child = new_run("c1");
        child.parent = Some("ghost".to_string());
        assert!(matches!(
            store.create_run(&child, &checkpoint(b""), &[], None, 0, 1),
            Err(StoreError::NoSuchRun(p)) if p == "ghost"
        ));
        child.parent = Some("r1".to_string());
        store
            .create_run(&child, &checkpoint(b""), &[], None, 0, 1)
            .unwrap();
        assert_eq!(
            store.run("c1").unwrap().unwrap().parent.as_deref(),
            Some("r1")
        );
    });
}

#[test]
fn commit_appends_events_and_updates_status() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "r1", Some(OWNER), 10);
        store
            .commit(&[step("r1", OWNER, RunStatus::Runnable, 20)])
            .unwrap();
        let mut last = step("r1", OWNER, RunStatus::Completed, 30);
        last.output = Some("42".to_string());
        last.checkpoint = None;
        store.commit(&[last]).unwrap();
        let history = store.history("r1").unwrap();
        let seqs: Vec<i64> = history.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(history[1].kind, EventKind::StepStarted);
        assert_eq!(history[1].step.as_deref(), Some("tool"));
        assert_eq!(history[1].line, Some(7));
        let (record, cp) = store.load("r1").unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Completed);
        assert_eq!(record.output.as_deref(), Some("42"));
        assert_eq!(record.updated_at, 30);
        // A commit without a checkpoint keeps the previous one.
        assert_eq!(cp.state, b"at 20");
    });
}

#[test]
fn commit_sets_and_clears_timers() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "r1", Some(OWNER), 10);
        create(&mut *store, "r2", Some(OWNER), 11);
        assert_eq!(store.next_wake().unwrap(), None);
        let mut sleep1 = step("r1", OWNER, RunStatus::Waiting, 20);
        sleep1.waiting_on = Some("timer".to_string());
        sleep1.wake_at = Some(500);
        let mut sleep2 = sleep1.clone();
        sleep2.run = "r2".to_string();
        sleep2.wake_at = Some(300);
        store.commit(&[sleep1, sleep2]).unwrap();
        assert_eq!(store.next_wake().unwrap(), Some(300));
        let record = store.run("r1").unwrap().unwrap();
        assert_eq!(record.waiting_on.as_deref(), Some("timer"));
        assert_eq!(record.wake_at, Some(500));
        store
            .commit(&[step("r2", OWNER, RunStatus::Runnable, 400)])
            .unwrap();
        assert_eq!(store.next_wake().unwrap(), Some(500));
        assert_eq!(store.run("r2").unwrap().unwrap().wake_at, None);
    });
}

#[test]
fn commit_with_a_wrong_owner_changes_nothing() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "mine", Some(OWNER), 10);
        create(&mut *store, "theirs", Some(OTHER), 11);
        create(&mut *store, "free", None, 12);
        let before_mine = store.load("mine").unwrap();
        let before_theirs = store.load("theirs").unwrap();
        let result = store.commit(&[
            step("mine", OWNER, RunStatus::Completed, 20),
            step("theirs", OWNER, RunStatus::Completed, 20),
        ]);
        assert!(
            matches!(&result, Err(StoreError::NotOwner { run }) if run == "theirs"),
            "{result:?}"
        );
        assert_eq!(store.load("mine").unwrap(), before_mine);
        assert_eq!(store.load("theirs").unwrap(), before_theirs);
        assert_eq!(store.history("mine").unwrap().len(), 1);
        assert_eq!(store.history("theirs").unwrap().len(), 1);
        // An unclaimed run cannot be committed to either, nor a missing one.
        assert!(matches!(
            store.commit(&[step("free", OWNER, RunStatus::Completed, 20)]),
            Err(StoreError::NotOwner { .. })
        ));
        assert!(matches!(
            store.commit(&[step("ghost", OWNER, RunStatus::Completed, 20)]),
            Err(StoreError::NoSuchRun(r)) if r == "ghost"
        ));
        // The store is still usable after the rollback.
        store
            .commit(&[step("mine", OWNER, RunStatus::Completed, 30)])
            .unwrap();
        assert_eq!(store.history("mine").unwrap().len(), 3);
    });
}

#[test]
fn a_live_lease_blocks_another_owner_until_it_expires() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "r1", None, 10);
        assert!(store.claim("r1", OWNER, 100, 10).unwrap());
        // The same owner may renew.
        assert!(store.claim("r1", OWNER, 150, 20).unwrap());
        assert!(!store.claim("r1", OTHER, 200, 149).unwrap());
        assert!(!store.claim("r1", OTHER, 200, 150).unwrap());
        assert_eq!(owner_of(&mut *store, "r1").as_deref(), Some(OWNER));
        // Expired: taken over.
        assert!(store.claim("r1", OTHER, 300, 151).unwrap());
        assert_eq!(owner_of(&mut *store, "r1").as_deref(), Some(OTHER));
        // The former owner's commits are now refused.
        assert!(matches!(
            store.commit(&[step("r1", OWNER, RunStatus::Runnable, 160)]),
            Err(StoreError::NotOwner { .. })
        ));
        // Released: anyone may claim at once.
        store.release("r1", OWNER).unwrap(); // not the owner: no effect
        assert_eq!(owner_of(&mut *store, "r1").as_deref(), Some(OTHER));
        store.release("r1", OTHER).unwrap();
        assert_eq!(owner_of(&mut *store, "r1"), None);
        assert!(store.claim("r1", OWNER, 400, 170).unwrap());
        assert!(matches!(
            store.claim("ghost", OWNER, 400, 170),
            Err(StoreError::NoSuchRun(_))
        ));
        assert!(matches!(
            store.release("ghost", OWNER),
            Err(StoreError::NoSuchRun(_))
        ));
    });
}

#[test]
fn final_runs_are_never_claimed() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "r1", Some(OWNER), 10);
        store
            .commit(&[step("r1", OWNER, RunStatus::Completed, 20)])
            .unwrap();
        store.release("r1", OWNER).unwrap();
        assert!(!store.claim("r1", OWNER, 100, 30).unwrap());
        assert!(store.claim_ready(OWNER, 100, 30, 10).unwrap().is_empty());
    });
}

#[test]
fn runs_are_counted_by_workflow_and_status() {
    each_store(|fresh| {
        let mut store = fresh();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            create(&mut *store, id, Some(OWNER), 10 + i as i64);
        }
        let mut done = step("b", OWNER, RunStatus::Completed, 20);
        done.checkpoint = None;
        store.commit(&[done]).unwrap();
        let mut counts = store.count_runs().unwrap();
        counts.sort_by_key(|(_, status, _)| status.as_str());
        let workflow = new_run("a").workflow;
        assert_eq!(
            counts,
            vec![
                (workflow.clone(), RunStatus::Completed, 1),
                (workflow, RunStatus::Runnable, 2),
            ]
        );
    });
}

#[test]
fn claim_ready_returns_due_and_runnable_runs_only() {
    each_store(|fresh| {
        let mut store = fresh();
        // Created in this order; claim_ready returns them oldest first.
        for (i, id) in [
            "runnable", "due", "later", "approval", "done", "taken", "expired",
        ]
        .iter()
        .enumerate()
        {
            create(&mut *store, id, Some(OWNER), 10 + i as i64);
        }
        let mut due = step("due", OWNER, RunStatus::Waiting, 20);
        due.waiting_on = Some("timer".to_string());
        due.wake_at = Some(100);
        let mut later = due.clone();
        later.run = "later".to_string();
        later.wake_at = Some(101);
        let mut approval = step("approval", OWNER, RunStatus::Waiting, 20);
        approval.waiting_on = Some("approval gate".to_string());
        let done = step("done", OWNER, RunStatus::Failed, 20);
        store.commit(&[due, later, approval, done]).unwrap();
        for id in ["runnable", "due", "later", "approval", "done"] {
            store.release(id, OWNER).unwrap();
        }
        // "taken" is held by another live owner; "expired" by another whose lease ran out.
        store.release("taken", OWNER).unwrap();
        assert!(store.claim("taken", OTHER, 1000, 20).unwrap());
        store.release("expired", OWNER).unwrap();
        assert!(store.claim("expired", OTHER, 50, 20).unwrap());

        let claimed = store.claim_ready("me", 500, 100, 10).unwrap();
        assert_eq!(claimed, vec!["runnable", "due", "expired"]);
        for id in &claimed {
            assert_eq!(owner_of(&mut *store, id).as_deref(), Some("me"));
        }
        // Status is left for the driver to commit.
        assert_eq!(
            store.run("due").unwrap().unwrap().status,
            RunStatus::Waiting
        );
        // Another process finds nothing more while the leases live.
        assert!(store.claim_ready("you", 500, 100, 10).unwrap().is_empty());
        // The limit is honoured, oldest first.
        let mut store2 = fresh();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            create(&mut *store2, id, None, i as i64);
        }
        assert_eq!(store2.claim_ready("me", 10, 5, 2).unwrap(), vec!["a", "b"]);
        assert_eq!(store2.claim_ready("you", 10, 5, 2).unwrap(), vec!["c"]);
    });
}

#[test]
fn cancel_finishes_a_live_run_once() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "r1", Some(OWNER), 10);
        assert!(store.cancel("r1", &cancel_event("bob", 50)).unwrap());
        let record = store.run("r1").unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Cancelled);
        assert_eq!(record.updated_at, 50);
        assert_eq!(owner_of(&mut *store, "r1"), None);
        let history = store.history("r1").unwrap();
        let last = history.last().unwrap();
        assert_eq!((last.seq, last.kind), (2, EventKind::RunCancelled));
        let data: serde_json::Value = serde_json::from_str(&last.data).unwrap();
        assert_eq!(data, serde_json::json!({ "by": "bob" }));
        // Already final.
        assert!(!store.cancel("r1", &cancel_event("bob", 60)).unwrap());
        assert_eq!(store.history("r1").unwrap().len(), 2);
        // The driver that held it can no longer commit.
        assert!(matches!(
            store.commit(&[step("r1", OWNER, RunStatus::Runnable, 70)]),
            Err(StoreError::NotOwner { .. })
        ));
        assert!(matches!(
            store.cancel("ghost", &cancel_event("bob", 60)),
            Err(StoreError::NoSuchRun(_))
        ));
    });
}

#[test]
fn runs_are_listed_newest_first_and_filtered_by_status() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "old", Some(OWNER), 10);
        create(&mut *store, "mid", Some(OWNER), 20);
        create(&mut *store, "new", Some(OWNER), 20);
        store.cancel("mid", &cancel_event("bob", 30)).unwrap();
        let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.runs(None).unwrap()), vec!["new", "mid", "old"]);
        assert_eq!(
            ids(store.runs(Some(RunStatus::Runnable)).unwrap()),
            vec!["new", "old"]
        );
        assert_eq!(
            ids(store.runs(Some(RunStatus::Cancelled)).unwrap()),
            vec!["mid"]
        );
        assert!(store.runs(Some(RunStatus::Failed)).unwrap().is_empty());
    });
}

#[test]
fn repeated_refusals_are_counted_cut_and_the_log_is_capped() {
    each_store(|fresh| {
        use crate::store::{REFUSAL_LOG_ROWS, REFUSAL_TEXT_BYTES, REFUSAL_WINDOW_MS};
        let mut store = fresh();
        let long = format!("GET /{}", "x".repeat(60_000));
        let refusal = |at, client: &str, who: &str| {
            Refusal::new(at, client, who, &long, 401, "no token was given")
        };
        for at in 0..500 {
            store
                .record_refusal(&refusal(1_000 + at, "10.0.0.1", "no token"))
                .unwrap();
        }
        // Another client, another `who`, and the same client after the window: rows of their own.
        store
            .record_refusal(&refusal(2_000, "10.0.0.2", "no token"))
            .unwrap();
        store
            .record_refusal(&refusal(2_001, "10.0.0.1", "unknown token"))
            .unwrap();
        store
            .record_refusal(&refusal(1_000 + REFUSAL_WINDOW_MS, "10.0.0.1", "no token"))
            .unwrap();
        let rows = store.refusals(10).unwrap();
        assert_eq!(rows.len(), 4, "{rows:?}");
        let first = &rows[3];
        assert_eq!((first.count, first.at, first.last_at), (500, 1_000, 1_499));
        assert!(
            first.request.len() <= REFUSAL_TEXT_BYTES,
            "{}",
            first.request.len()
        );
        assert!(first.request.ends_with('…') && first.request.starts_with("GET /xxx"));
        assert_eq!(rows[0].count, 1);

        // Beyond the cap, the oldest rows go.
        for n in 0..REFUSAL_LOG_ROWS {
            store
                .record_refusal(&refusal(10_000_000 + n, &format!("c{n}"), "no token"))
                .unwrap();
        }
        let rows = store.refusals(usize::MAX >> 1).unwrap();
        assert_eq!(rows.len() as i64, REFUSAL_LOG_ROWS);
        assert!(
            rows.iter().all(|r| r.client.starts_with('c')),
            "the oldest went first"
        );
    });
}

fn notification(id: &str, run: &str, hooks: &[&str], at: Millis) -> Notification {
    Notification {
        id: id.into(),
        run: run.into(),
        gate: "g".into(),
        opened_at: at,
        what: EventKind::GateOpened,
        message: serde_json::json!({ "id": id, "run": run }),
        hooks: hooks.iter().map(|h| h.to_string()).collect(),
        created_at: at,
    }
}

/// A commit of `run` by [`OWNER`] that only changes the outbox.
fn outbox_step(run: &str, outbox: OutboxChange, now: Millis) -> StepCommit {
    StepCommit {
        checkpoint: None,
        events: vec![],
        outbox,
        takes_signal: None,
        ..step(run, OWNER, RunStatus::Runnable, now)
    }
}

fn adding(n: Notification) -> OutboxChange {
    OutboxChange {
        add: Some(n),
        done: vec![],
    }
}

#[test]
fn outbox_rows_are_claimed_once_retried_later_and_taken_over_after_the_lease() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "r1", Some(OWNER), 10);
        let n1 = notification("n1", "r1", &["command a", "webhook b"], 100);
        store.commit(&[outbox_step("r1", adding(n1), 100)]).unwrap();
        // Both rows are due at once; a claim counts the attempt.
        assert!(
            store
                .claim_notifications("w1", 1100, 99, 10, None)
                .unwrap()
                .is_empty()
        );
        let claimed = store
            .claim_notifications("w1", 1100, 100, 10, None)
            .unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(
            (
                claimed[0].hook.as_str(),
                claimed[0].slot,
                claimed[0].attempts,
                claimed[0].owner.as_deref(),
                claimed[0].lease_until
            ),
            ("command a", 0, 1, Some("w1"), Some(1100))
        );
        assert_eq!(
            claimed[1].message,
            serde_json::json!({ "id": "n1", "run": "r1" })
        );
        // Claimed rows are nobody else's until the lease runs out.
        assert!(
            store
                .claim_notifications("w2", 1200, 500, 10, None)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.next_notification(None).unwrap(), Some(1100));
        // A retry gives the row back, due later; only its owner can.
        store
            .retry_notification(&claimed[0].key(), "w2", 300)
            .unwrap();
        assert_eq!(store.next_notification(None).unwrap(), Some(1100));
        store
            .retry_notification(&claimed[0].key(), "w1", 300)
            .unwrap();
        assert!(
            store
                .claim_notifications("w2", 1200, 299, 10, None)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.next_notification(Some("n1")).unwrap(), Some(300));
        let again = store
            .claim_notifications("w2", 1300, 300, 10, None)
            .unwrap();
        assert_eq!((again.len(), again[0].slot, again[0].attempts), (1, 0, 2));
        // The other row's owner died: its row is taken over after the lease.
        let taken = store
            .claim_notifications("w2", 2200, 1100, 10, None)
            .unwrap();
        assert_eq!((taken.len(), taken[0].slot, taken[0].attempts), (1, 1, 2));
        // A delivery recorded by a commit deletes its row in that commit.
        let done = OutboxChange {
            add: None,
            done: vec![again[0].key()],
        };
        store.commit(&[outbox_step("r1", done, 1200)]).unwrap();
        assert_eq!(store.notifications(None).unwrap().len(), 1);
        store.drop_notification(&taken[0].key()).unwrap();
        assert!(store.notifications(None).unwrap().is_empty());
        assert_eq!(store.next_notification(None).unwrap(), None);
    });
}

#[test]
fn outbox_claims_can_be_narrowed_to_one_notification_and_come_oldest_first() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "r1", Some(OWNER), 1);
        for (id, at) in [("n2", 7), ("n1", 5), ("n3", 6)] {
            let n = notification(id, "r1", &["command a"], at);
            store.commit(&[outbox_step("r1", adding(n), at)]).unwrap();
        }
        let ids = |rows: Vec<super::OutboxRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.notifications(Some("n1")).unwrap()), ["n1"]);
        assert_eq!(ids(store.notifications(None).unwrap()), ["n1", "n3", "n2"]);
        assert_eq!(
            ids(store
                .claim_notifications("w", 50, 10, 10, Some("n2"))
                .unwrap()),
            ["n2"]
        );
        assert_eq!(
            ids(store.claim_notifications("w", 50, 10, 1, None).unwrap()),
            ["n1"]
        );
        assert_eq!(
            ids(store.claim_notifications("w", 50, 10, 10, None).unwrap()),
            ["n3"]
        );
    });
}

#[test]
fn an_outbox_change_is_part_of_its_commit() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "r1", Some(OWNER), 1);
        create(&mut *store, "r2", Some(OTHER), 1);
        // The second step of the commit is refused: the notification of the first is not
        // written either.
        let n = notification("n1", "r1", &["command a"], 5);
        let refused = store.commit(&[
            outbox_step("r1", adding(n.clone()), 5),
            step("r2", OWNER, RunStatus::Runnable, 5),
        ]);
        assert!(matches!(refused, Err(StoreError::NotOwner { .. })));
        assert!(store.notifications(None).unwrap().is_empty());
        // A notification written twice (the same id and hook) fails its commit.
        store
            .commit(&[outbox_step("r1", adding(n.clone()), 5)])
            .unwrap();
        let twice = store.commit(&[outbox_step("r1", adding(n), 6)]);
        assert!(twice.is_err());
        assert_eq!(store.notifications(None).unwrap().len(), 1);
    });
}

#[test]
fn a_corrupt_outbox_row_is_an_error_naming_it() {
    each_store(|fresh| {
        let mut store = fresh();
        create(&mut *store, "r1", Some(OWNER), 1);
        let n = notification("n1", "r1", &["command a"], 5);
        store.commit(&[outbox_step("r1", adding(n), 5)]).unwrap();
        let conn = store.conn().unwrap();
        conn.execute("testing", "UPDATE outbox SET what = 'run_started'", &[])
            .unwrap();
        let error = store.notifications(None).unwrap_err().to_string();
        assert!(
            error.contains("outbox row n1 (hook 0) of run r1, column what"),
            "{error}"
        );
    });
}

/// The running counts (`count_runs`, `gate_counts`) against a count of the rows themselves.
fn assert_counts_agree(store: &mut (impl TestStore + ?Sized), when: &str) {
    let mut counted: Vec<(String, String, i64)> = store
        .count_runs()
        .unwrap()
        .into_iter()
        .map(|(workflow, status, n)| (workflow, status.as_str().to_string(), n))
        .collect();
    counted.sort();
    let gates = store.gate_counts().unwrap();
    let conn = store.conn().unwrap();
    let rows: Vec<(String, String, i64)> = conn
        .query(
            "testing",
            "SELECT workflow, status, COUNT(*) FROM runs GROUP BY workflow, status
             ORDER BY workflow, status",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|mut r| (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap()))
        .collect();
    assert_eq!(counted, rows, "runs, {when}");
    let mut open = |kind: &str| {
        let sql = sql!(conn.dialect(), "SELECT COUNT(*) FROM gates WHERE kind = $1");
        conn.value::<i64>("testing", sql, params![kind])
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        (gates.approvals, gates.inputs),
        (open("approval"), open("input")),
        "gates, {when}"
    );
}

/// How many `gate_deciders` rows name a gate of `run`.
fn decider_rows(store: &mut (impl TestStore + ?Sized), run: &str) -> i64 {
    let conn = store.conn().unwrap();
    let sql = sql!(
        conn.dialect(),
        "SELECT COUNT(*) FROM gate_deciders WHERE run = $1"
    );
    conn.value::<i64>("testing", sql, params![run])
        .unwrap()
        .unwrap()
}

/// `run` waits at `gate` (opened at `now`) after this commit.
fn open_gate(run: &str, gate: super::gate_index::GateRow, now: Millis) -> StepCommit {
    let mut commit = step(run, OWNER, RunStatus::Waiting, now);
    commit.waiting_on = Some(crate::history::WaitingOn::gate(gate.kind, &gate.name).to_string());
    commit.gate = Some(super::gate_index::GateChange::Open(gate));
    commit
}

#[test]
fn the_running_counts_follow_every_write_of_runs_and_gates() {
    use super::gate_index::tests::row;
    each_store(|fresh| {
        let mut store = fresh();
        assert_counts_agree(&mut *store, "when empty");
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            create(&mut *store, id, Some(OWNER), 10 + i as i64);
        }
        let mut input = row("b", "details", 30);
        input.kind = crate::history::GateKind::Input;
        store
            .commit(&[
                open_gate("a", row("a", "g", 30), 30),
                open_gate("b", input, 30),
            ])
            .unwrap();
        store
            .commit(&[open_gate("e", row("e", "g", 31), 31)])
            .unwrap();
        assert_counts_agree(&mut *store, "after opening gates");
        assert_eq!(
            decider_rows(&mut *store, "a"),
            1,
            "role finance; ops once escalated"
        );

        // Decided and finished, cancelled, waiting again, deleted behind the store's back.
        store
            .commit(&[step("a", OWNER, RunStatus::Completed, 40)])
            .unwrap();
        assert_eq!(
            decider_rows(&mut *store, "a"),
            0,
            "a closed gate names no one"
        );
        store.cancel("c", &cancel_event("alice", 41)).unwrap();
        assert_counts_agree(&mut *store, "after a decision and a cancel");
        let conn = store.conn().unwrap();
        for (table, column) in [
            ("gates", "run"),
            ("gate_deciders", "run"),
            ("events", "run"),
            ("checkpoints", "run"),
            ("audit_heads", "run"),
            ("runs", "id"),
        ] {
            let sql = conn
                .dialect()
                .render(&format!("DELETE FROM {table} WHERE {column} = $1"));
            conn.execute("testing", &sql, params!["e"]).unwrap();
        }
        assert_counts_agree(&mut *store, "after deleting a waiting run by hand");
    });
}

#[test]
fn postgres_connections_count_apart_and_the_slots_of_closed_ones_are_folded() {
    let Ok(admin) = std::env::var("FLOW_TEST_POSTGRES") else {
        return;
    };
    let mut first = PgTest::new(&admin);
    first.deploy("v1", b"artifact", 1).unwrap();
    let url = format!("{}/{}", &admin[..admin.rfind('/').unwrap()], first.name);
    let slots = |store: &mut PgTest| {
        let conn = store.conn().unwrap();
        conn.value::<i64>(
            "testing",
            "SELECT COUNT(DISTINCT slot) FROM run_counts",
            &[],
        )
        .unwrap()
        .unwrap()
    };
    for round in 0..3 {
        // Another process writes under its own slot, then goes away.
        let mut other = PostgresStore::connect(&url).unwrap();
        for i in 0..3 {
            create(&mut other, &format!("o{round}{i}"), Some(OWNER), 10);
        }
        other
            .commit(&[step(&format!("o{round}0"), OWNER, RunStatus::Completed, 20)])
            .unwrap();
        create(&mut first, &format!("f{round}"), Some(OWNER), 10);
        assert_counts_agree(&mut first, "with two connections writing");
        drop(other);
    }
    // A new connection folds the slots of those that closed (once PostgreSQL has let their
    // backends go): the live ones and slot 0 stay.
    for _ in 0..100 {
        let conn = first.conn().unwrap();
        let sql = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()";
        if conn.value::<i64>("testing", sql, &[]).unwrap() == Some(1) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut again = PostgresStore::connect(&url).unwrap();
    create(&mut again, "late", Some(OWNER), 10);
    assert_counts_agree(&mut first, "after the others closed");
    assert!(
        slots(&mut first) <= 3,
        "slot 0, this connection's and the new one's"
    );
}
