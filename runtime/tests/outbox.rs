//! The notification outbox, on both stores: a notification is written with its gate's event
//! and survives the process that committed it. Through the real `flowrt`: a `flowrt worker`
//! killed (`kill -9`) in the middle of an attempt sends the notification again after a
//! restart, with the same `id`, and records it once; failures are retried durably across a
//! restart (the count of attempts is kept); a gate decided before its notification went out
//! has it dropped unsent, with nothing recorded on the run; two workers on PostgreSQL never
//! send the same row; and no secret — of the run or of the configuration — is stored in the
//! outbox or in a recorded failure, even one recorded after a restart. Through the store:
//! claims, leases, retries and `SKIP LOCKED`.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, Store, contains, for_each_store, of_kind};
use flow_runtime::store::{self, EventKind, Notification, OutboxChange, RunStatus, StepCommit};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const USERS: &str = "[users.alice]\nroles = [\"customs\"]\n\n[users.ines]\nroles = [\"clerk\"]\n";

/// The run's secret, and one the configuration reads from the environment.
const SECRET: &str = "hunter2-run-secret-0192837465";
const CONFIG_SECRET: &str = "cfg-pager-token-5647382910";

const PROGRAM: &str = r#"tool page(n: Int) -> Int via http post "/page"

workflow release(id: String, token: Secret) -> String {
  let d = await approval "signoff" {
    approvers: role("customs"),
    prompt: "Release ${id}?",
    context: { id: id },
  }
  if d.approved { "released ${id}" } else { "held ${id}" }
}
"#;

/// A hook that does, at its Nth call, what line N of `plan` says: `ok`, `fail` (saying the
/// run's and the configuration's secrets on stderr, as a careless script would), or `kill`
/// (kill -9 the worker whose pid is in `worker.pid`, in the middle of the attempt). Every
/// message it gets is kept as `msg-N.json`.
const HOOK: &str = r#"#!/bin/sh
n=$(( $(cat count 2>/dev/null || echo 0) + 1 ))
echo $n > count
cat > "msg-$n.json"
case "$(sed -n "${n}p" plan)" in
  kill)
    i=0
    while [ ! -s worker.pid ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done
    kill -9 "$(cat worker.pid)"
    sleep 2 ;;
  fail)
    echo "pager refused $HOOK_SECRET with $PAGER_TOKEN" >&2
    exit 1 ;;
  *) exit 0 ;;
esac
"#;

fn project(store: &Store, plan: &str) -> Project {
    let project = Project::new(store)
        .with_env("FLOW_LEASE_MS", "200")
        .with_env("HOOK_SECRET", SECRET)
        .with_env("PAGER_TOKEN", CONFIG_SECRET);
    project.write(
        "flow.toml",
        &format!(
            "{USERS}\n[tools.page]\nbase_url = \"http://127.0.0.1:9\"\nheaders = {{ Authorization = \"Bearer ${{env:PAGER_TOKEN}}\" }}\n\n[[notify]]\ncommand = \"sh hook.sh\"\n"
        ),
    );
    project.write("gate.flow", PROGRAM);
    project.write("hook.sh", HOOK);
    project.write("plan", plan);
    project
}

/// Starts a run (not driven: the worker drives it). Returns its id.
fn start(project: &Project) -> String {
    let input = format!(r#"{{"id": "S1", "token": "{SECRET}"}}"#);
    let out = project.flowrt(&[
        "start",
        "gate.flow",
        "--workflow",
        "release",
        "--as",
        "ines",
        "--input",
        &input,
        "--json",
    ]);
    out.expect_code(0);
    out.json()["id"].as_str().unwrap().to_string()
}

/// Starts `flowrt worker` and tells the hook its pid.
fn worker(project: &Project) -> Child {
    let child = project.command(&["worker"]).spawn().unwrap();
    let tmp = project.path().join("worker.pid.tmp");
    std::fs::write(&tmp, child.id().to_string()).unwrap();
    std::fs::rename(&tmp, project.path().join("worker.pid")).unwrap();
    child
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a worker the hook kills.
fn killed_by_the_hook(child: &mut Child) {
    wait_until("the hook to kill the worker", || {
        child.try_wait().unwrap().is_some()
    });
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn outbox_rows(project: &Project) -> i64 {
    project
        .db()
        .query_i64("SELECT COUNT(*) FROM outbox", &[])
        .unwrap()
}

fn outbox_attempts(project: &Project) -> i64 {
    project
        .db()
        .query_i64("SELECT attempts FROM outbox", &[])
        .unwrap()
}

fn message(project: &Project, n: usize) -> serde_json::Value {
    let text = std::fs::read_to_string(project.path().join(format!("msg-{n}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn calls(project: &Project) -> usize {
    std::fs::read_to_string(project.path().join("count"))
        .map(|t| t.trim().parse().unwrap())
        .unwrap_or(0)
}

fn recorded(project: &Project, run: &str, kind: &str) -> Vec<serde_json::Value> {
    of_kind(&project.history(run), kind)
        .into_iter()
        .cloned()
        .collect()
}

#[test]
fn a_notification_cut_short_by_a_kill_is_sent_again_with_the_same_id() {
    for_each_store(|store| {
        let project = project(store, "kill\nok\n");
        let run = start(&project);
        let mut first = worker(&project);
        killed_by_the_hook(&mut first);

        // The gate is open and the notification still to deliver, its attempt counted.
        assert_eq!(project.status(&run)["status"], "waiting");
        assert!(recorded(&project, &run, "notified").is_empty());
        assert_eq!(outbox_rows(&project), 1);
        assert_eq!(outbox_attempts(&project), 1);

        let mut second = worker(&project);
        wait_until("the delivery to be recorded", || {
            !recorded(&project, &run, "notified").is_empty()
        });
        stop(&mut second);

        assert_eq!(calls(&project), 2, "sent once more, not more");
        let (sent, resent) = (message(&project, 1), message(&project, 2));
        assert_eq!(sent, resent, "the same message, id included");
        let id = sent["id"].as_str().unwrap();
        assert!(id.starts_with('n') && id.len() > 16, "{id}");
        let notified = recorded(&project, &run, "notified");
        assert_eq!(notified.len(), 1, "{notified:?}");
        assert_eq!(notified[0]["data"]["id"], id);
        assert_eq!(notified[0]["data"]["attempts"], 2);
        assert_eq!(notified[0]["step"], "signoff");
        assert_eq!(outbox_rows(&project), 0);

        project
            .flowrt(&["approve", &run, "signoff", "--as", "alice"])
            .expect_code(0);
        assert_eq!(project.status(&run)["status"], "completed");
    });
}

#[test]
fn a_hook_that_fails_twice_then_succeeds_is_retried_across_a_restart() {
    for_each_store(|store| {
        let project = project(store, "fail\nkill\nok\n");
        let run = start(&project);
        let mut first = worker(&project);
        killed_by_the_hook(&mut first);
        // One failure recorded with the row (retried after the backoff), one attempt cut short.
        assert_eq!(calls(&project), 2);
        assert_eq!(outbox_attempts(&project), 2);
        assert!(recorded(&project, &run, "notify_failed").is_empty());

        let mut second = worker(&project);
        wait_until("the delivery to be recorded", || {
            !recorded(&project, &run, "notified").is_empty()
        });
        stop(&mut second);
        let notified = recorded(&project, &run, "notified");
        assert_eq!(notified.len(), 1);
        assert_eq!(notified[0]["data"]["attempts"], 3, "{:?}", notified[0]);
        assert!(recorded(&project, &run, "notify_failed").is_empty());
        assert_eq!(calls(&project), 3);
        let id = &message(&project, 1)["id"];
        assert!((2..=3).all(|n| &message(&project, n)["id"] == id));
        assert_eq!(outbox_rows(&project), 0);
    });
}

#[test]
fn a_failure_recorded_after_a_restart_is_redacted_and_no_secret_is_stored() {
    for_each_store(|store| {
        let project = project(store, "fail\nkill\nfail\n");
        let run = start(&project);
        let mut first = worker(&project);
        killed_by_the_hook(&mut first);
        // The row is pending: neither it nor anything else holds a secret in clear.
        assert_eq!(outbox_rows(&project), 1);
        for secret in [SECRET, CONFIG_SECRET] {
            assert_not_at_rest(&project, secret);
        }
        let sent = std::fs::read(project.path().join("msg-1.json")).unwrap();
        assert!(!contains(&sent, SECRET) && !contains(&sent, CONFIG_SECRET));

        // The last attempt's failure is recorded by another process, which has only the
        // run's checkpoint to know its secrets by.
        let mut second = worker(&project);
        wait_until("the failure to be recorded", || {
            !recorded(&project, &run, "notify_failed").is_empty()
        });
        stop(&mut second);
        let failed = recorded(&project, &run, "notify_failed");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["data"]["attempts"], 3);
        let error = failed[0]["data"]["error"].as_str().unwrap();
        assert_eq!(
            error,
            "exit status: 1; stderr: pager refused [redacted] with [redacted]"
        );
        assert!(recorded(&project, &run, "notified").is_empty());
        assert_eq!(outbox_rows(&project), 0);
        for secret in [SECRET, CONFIG_SECRET] {
            assert_not_at_rest(&project, secret);
            let history = project.output(&["history", &run, "--json"]);
            assert!(!contains(&history.stdout, secret));
        }
    });
}

#[test]
fn a_gate_decided_before_its_notification_is_sent_drops_it_unsent() {
    for_each_store(|store| {
        let project = project(store, "kill\nok\n");
        let run = start(&project);
        let mut first = worker(&project);
        killed_by_the_hook(&mut first);
        assert_eq!(outbox_rows(&project), 1);
        project
            .flowrt(&["approve", &run, "signoff", "--as", "alice"])
            .expect_code(0);
        assert_eq!(project.status(&run)["status"], "completed");

        // The next worker takes the row over once its claim ran out, and drops it.
        let mut second = worker(&project);
        wait_until("the row to be dropped", || outbox_rows(&project) == 0);
        stop(&mut second);
        assert_eq!(calls(&project), 1, "not sent again");
        assert!(recorded(&project, &run, "notified").is_empty());
        assert!(recorded(&project, &run, "notify_failed").is_empty());
    });
}

#[test]
fn two_workers_on_postgres_never_send_the_same_row() {
    let Some(store) = common::stores().into_iter().find(Store::is_postgres) else {
        eprintln!("FLOW_TEST_POSTGRES is not set: skipped");
        return;
    };
    let project = project(&store, "");
    // Slow enough that both workers are attempting at once.
    project.write(
        "hook.sh",
        "#!/bin/sh\nsleep 0.2\ncat > \"$(mktemp sent/m.XXXXXX)\"\n",
    );
    std::fs::create_dir(project.path().join("sent")).unwrap();
    const RUNS: usize = 16;
    let runs: Vec<String> = (0..RUNS).map(|_| start(&project)).collect();
    let mut workers: Vec<Child> = (0..2)
        .map(|_| {
            project
                .command(&["worker", "--tool-threads", "4"])
                .spawn()
                .unwrap()
        })
        .collect();
    let notified = || {
        project
            .db()
            .query_i64("SELECT COUNT(*) FROM events WHERE kind = 'notified'", &[])
            .unwrap()
    };
    wait_until("every notification to be recorded", || {
        notified() == RUNS as i64
    });
    for worker in &mut workers {
        stop(worker);
    }
    let mut ids: Vec<String> = std::fs::read_dir(project.path().join("sent"))
        .unwrap()
        .map(|entry| {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let message: serde_json::Value = serde_json::from_str(&text).unwrap();
            message["id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    let sent = ids.len();
    ids.dedup();
    assert_eq!((sent, ids.len()), (RUNS, RUNS), "each row sent once");
    for run in &runs {
        let notified = recorded(&project, run, "notified");
        assert_eq!(notified.len(), 1, "{run}");
        assert_eq!(notified[0]["data"]["attempts"], 1, "{run}");
    }
    assert_eq!(notified(), RUNS as i64);
}

/// Neither the SQLite file (and its WAL) nor any PostgreSQL table the secret could reach
/// holds it in clear.
fn assert_not_at_rest(project: &Project, secret: &str) {
    match project.db().sqlite_path() {
        Some(db) => {
            let name = db.file_name().unwrap().to_string_lossy().into_owned();
            for file in [name.clone(), format!("{name}-wal"), format!("{name}-shm")] {
                if let Ok(bytes) = std::fs::read(project.path().join(&file)) {
                    assert!(
                        !contains(&bytes, secret),
                        "the secret appears in clear in {file}"
                    );
                }
            }
        }
        None => {
            for (what, sql) in [
                (
                    "outbox",
                    "SELECT COUNT(*) FROM outbox WHERE strpos(concat_ws(' ', message, hook), $1) > 0",
                ),
                (
                    "events",
                    "SELECT COUNT(*) FROM events WHERE strpos(data, $1) > 0",
                ),
                (
                    "gates",
                    "SELECT COUNT(*) FROM gates WHERE strpos(concat_ws(' ', context, prompt), $1) > 0",
                ),
                (
                    "runs",
                    "SELECT COUNT(*) FROM runs WHERE strpos(concat_ws(' ', input, output, error), $1) > 0",
                ),
            ] {
                let found = project.db().query_i64(sql, &[secret]);
                assert_eq!(found, Some(0), "the secret appears in clear in {what}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

use common::STORE_OWNER as OWNER;

use common::create_claimed_run as create;

/// A commit of `run` that writes (or records the delivery of) notifications.
fn commit(run: &str, outbox: OutboxChange, now: i64) -> StepCommit {
    StepCommit {
        run: run.into(),
        owner: OWNER.into(),
        checkpoint: None,
        events: vec![],
        status: RunStatus::Runnable,
        output: None,
        error: None,
        waiting_on: None,
        wake_at: None,
        now,
        gate: None,
        outbox,
        takes_signal: None,
    }
}

fn notification(id: &str, run: &str, hooks: &[&str], at: i64) -> Notification {
    Notification {
        id: id.into(),
        run: run.into(),
        gate: "g".into(),
        opened_at: at,
        what: EventKind::GateOpened,
        message: serde_json::json!({ "id": id }),
        hooks: hooks.iter().map(|h| h.to_string()).collect(),
        created_at: at,
    }
}

fn adding(n: Notification) -> OutboxChange {
    OutboxChange {
        add: Some(n),
        done: vec![],
    }
}

#[test]
fn the_store_claims_each_row_once_until_its_lease_runs_out() {
    for_each_store(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let db = common::TestDb::create(kind, dir.path());
        let mut store = store::open(db.spec()).unwrap();
        store.deploy("v1", b"artifact", 0).unwrap();
        create(store.as_mut(), "r1");
        store
            .commit(&[commit(
                "r1",
                adding(notification("n1", "r1", &["command a", "command b"], 100)),
                100,
            )])
            .unwrap();
        assert_eq!(store.next_notification(None).unwrap(), Some(100));
        assert!(
            store
                .claim_notifications("w1", 1000, 99, 10, None)
                .unwrap()
                .is_empty()
        );

        let mine = store.claim_notifications("w1", 1000, 100, 1, None).unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!((mine[0].slot, mine[0].attempts), (0, 1));
        assert_eq!(mine[0].message, serde_json::json!({ "id": "n1" }));
        let theirs = store
            .claim_notifications("w2", 1000, 100, 10, None)
            .unwrap();
        assert_eq!(theirs.iter().map(|r| r.slot).collect::<Vec<_>>(), [1]);
        assert!(
            store
                .claim_notifications("w3", 2000, 500, 10, None)
                .unwrap()
                .is_empty()
        );

        // A retry is its owner's to make; the row is due again then.
        store.retry_notification(&mine[0].key(), "w2", 300).unwrap();
        assert!(
            store
                .claim_notifications("w3", 2000, 500, 10, None)
                .unwrap()
                .is_empty()
        );
        store.retry_notification(&mine[0].key(), "w1", 300).unwrap();
        let again = store
            .claim_notifications("w3", 2000, 500, 10, None)
            .unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 2));

        // w2 died: its row is taken over after the lease, the attempt counted again.
        let taken = store
            .claim_notifications("w3", 3000, 1000, 10, None)
            .unwrap();
        assert_eq!((taken[0].slot, taken[0].attempts), (1, 2));

        // The commit that records a delivery deletes its row.
        store
            .commit(&[commit(
                "r1",
                OutboxChange {
                    add: None,
                    done: vec![again[0].key()],
                },
                1000,
            )])
            .unwrap();
        assert_eq!(store.notifications(None).unwrap().len(), 1);
        store.drop_notification(&taken[0].key()).unwrap();
        assert!(store.notifications(None).unwrap().is_empty());
        assert_eq!(store.next_notification(None).unwrap(), None);
    });
}

#[test]
fn a_notification_is_written_only_with_its_commit() {
    for_each_store(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let db = common::TestDb::create(kind, dir.path());
        let mut store = store::open(db.spec()).unwrap();
        store.deploy("v1", b"artifact", 0).unwrap();
        create(store.as_mut(), "r1");
        // A commit under someone else's claim fails whole: no notification either.
        let mut foreign = commit("r1", adding(notification("n1", "r1", &["command a"], 5)), 5);
        foreign.owner = "someone else".into();
        assert!(store.commit(&[foreign]).is_err());
        assert!(store.notifications(None).unwrap().is_empty());
    });
}

#[test]
fn a_claim_skips_rows_another_worker_is_claiming_on_postgres() {
    let Some(kind) = common::stores().into_iter().find(Store::is_postgres) else {
        eprintln!("FLOW_TEST_POSTGRES is not set: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = common::TestDb::create(&kind, dir.path());
    let mut store = store::open(db.spec()).unwrap();
    store.deploy("v1", b"artifact", 0).unwrap();
    create(store.as_mut(), "r1");
    store
        .commit(&[commit(
            "r1",
            adding(notification("n1", "r1", &["command a", "command b"], 5)),
            5,
        )])
        .unwrap();
    // Another worker is in the middle of claiming slot 0: its row is locked.
    let mut other = postgres::Client::connect(db.spec(), postgres::NoTls).unwrap();
    let mut tx = other.transaction().unwrap();
    tx.query("SELECT 1 FROM outbox WHERE slot = 0 FOR UPDATE", &[])
        .unwrap();
    let (sender, answer) = std::sync::mpsc::channel();
    let spec = db.spec().to_string();
    std::thread::spawn(move || {
        let mut store = store::open(&spec).unwrap();
        let claimed = store.claim_notifications("w2", 1000, 10, 10, None).unwrap();
        let _ = sender.send(claimed.iter().map(|r| r.slot).collect::<Vec<_>>());
    });
    let claimed = answer
        .recv_timeout(Duration::from_secs(30))
        .expect("the claim skips the locked row instead of waiting for it");
    assert_eq!(claimed, [1]);
    tx.rollback().unwrap();
    let rest = store.claim_notifications("w1", 1000, 10, 10, None).unwrap();
    assert_eq!(rest.iter().map(|r| r.slot).collect::<Vec<_>>(), [0]);
}

/// The schema version the database records.
fn schema_version(db: &common::TestDb) -> Option<i64> {
    let sql = if db.is_postgres() {
        "SELECT version FROM flow_schema"
    } else {
        "PRAGMA user_version"
    };
    db.query_i64(sql, &[])
}

#[test]
fn a_database_at_schema_11_opens_unchanged_and_one_at_10_gains_the_outbox() {
    for_each_store(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let db = common::TestDb::create(kind, dir.path());
        let mut store = store::open(db.spec()).unwrap();
        store.deploy("v1", b"artifact", 0).unwrap();
        create(store.as_mut(), "r1");
        store
            .commit(&[commit(
                "r1",
                adding(notification("n1", "r1", &["command a"], 5)),
                5,
            )])
            .unwrap();
        drop(store);
        let newest = Some(flow_runtime::store::schema::MIGRATIONS.len() as i64);
        assert_eq!(schema_version(&db), newest);

        // At the newest version already: opening again migrates nothing and keeps the row due.
        let mut store = store::open(db.spec()).unwrap();
        assert_eq!(schema_version(&db), newest);
        let rows = store.notifications(None).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.id.as_str(), r.slot, r.attempts))
                .collect::<Vec<_>>(),
            [("n1", 0, 0)]
        );
        drop(store);

        // Taken back to 10, the schema before the outbox (and before the columns migrations 13
        // and 18 add to the gate index): opening it creates the table.
        db.execute("DROP TABLE outbox", &[]);
        db.execute("ALTER TABLE gates DROP COLUMN context_schema", &[]);
        db.drop_columns_added_after(10);
        if db.is_postgres() {
            db.execute("UPDATE flow_schema SET version = 10", &[]);
        } else {
            db.execute("PRAGMA user_version = 10", &[]);
        }
        let mut store = store::open(db.spec()).unwrap();
        assert_eq!(schema_version(&db), newest);
        assert!(store.notifications(None).unwrap().is_empty());
        store
            .commit(&[commit(
                "r1",
                adding(notification("n2", "r1", &["command a", "command b"], 6)),
                6,
            )])
            .unwrap();
        let claimed = store.claim_notifications("w", 100, 6, 10, None).unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(store.next_notification(None).unwrap(), Some(100));
    });
}
