//! The store's conformance suite: the same scenarios on the embedded SQLite file and on
//! PostgreSQL (a database of its own on the server of `OUBLI_TEST_POSTGRES_URL`, skipped
//! with a note when it is unset): leases, fencing, retries and final failure, claims from
//! many workers at once, the audit chain under concurrent writers and after a purge of
//! the access log, and the subject's data sealed at rest and redacted after closure.

use oubli::controller::{self, Article15, NewController, NewSystem};
use oubli::crypto::Keys;
use oubli::queue::{self, RunOutcome};
use oubli::request::lifecycle;
use oubli::request::rows::{self as requests, ChangeInput, IdentityInput, NewRequest};
use oubli::request::{Kind, Transition};
use oubli::retry::Backoff;
use oubli::store::Store;
use oubli_tests::ServerDb;
use std::collections::HashSet;
use std::time::Duration;

/// Which backend a scenario runs on.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A new, empty store of that backend, with what must live as long as it.
struct Fixture {
    store: Store,
    keys: Keys,
    crm: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _server: Option<ServerDb>,
}

async fn open(backend: Backend) -> Option<Fixture> {
    let (dir, crm) = oubli_tests::demo_crm(3).await;
    let (store, server) = match backend {
        Backend::Sqlite => (
            Store::open_sqlite(&dir.path().join("oubli.db"))
                .await
                .unwrap(),
            None,
        ),
        Backend::Postgres => {
            let server = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await?;
            (Store::open(&server.url).await.unwrap(), Some(server))
        }
    };
    Some(Fixture {
        store,
        keys: Keys::load_or_create(&dir.path().join("keys")).unwrap(),
        crm,
        _dir: dir,
        _server: server,
    })
}

/// Runs each scenario on both backends: `sqlite::<name>` and `postgres::<name>`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $scenario() {
                super::$scenario(super::Backend::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $scenario() {
                super::$scenario(super::Backend::Postgres).await;
            })*
        }
    };
}

on_both_backends!(
    a_stale_worker_cannot_write_and_retries_stop_at_the_maximum,
    concurrent_workers_claim_each_task_once,
    concurrent_writers_keep_one_audit_chain,
    a_transaction_s_events_follow_what_another_process_wrote,
    a_cancellation_and_a_claim_at_once_never_both_win,
    the_subject_is_sealed_at_rest_and_redacted_after_closure,
    purged_access_log_events_leave_a_verifiable_chain,
    an_exports_pages_are_kept_only_for_the_run_that_succeeded,
);

/// A controller with `systems` systems on the demo CRM.
async fn controller_with_systems(fixture: &Fixture, systems: usize) -> String {
    let store = &fixture.store;
    let runtime = oubli_tests::runtime();
    let plugin = controller::register_builtin(store, &runtime, "sql", "test")
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    let new = NewController {
        name: "Queue".into(),
        webhook_url: None,
        auto_approve: false,
        contact_email: None,
    };
    let (owner, _) = controller::create_controller(&mut tx, &new).await.unwrap();
    for i in 0..systems {
        let demo = oubli::demo::crm_system(&format!("crm{i}"), &fixture.crm);
        let system = NewSystem::from_config(demo, &plugin.digest, Article15::default());
        controller::create_system(&mut tx, &owner.id, &system)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    owner.id
}

/// Records a successful run of `task` by `owner`; whether it was recorded.
async fn succeed(store: &Store, owner: &str, task: &queue::Claimed) -> bool {
    lifecycle::finish(
        store,
        owner,
        task,
        RunOutcome::Succeeded {
            result: "{}".into(),
            found: 0,
            unapplied: None,
        },
        Duration::ZERO,
    )
    .await
    .unwrap()
}

/// Moves a request along, as the API would.
async fn apply(tx: &mut oubli::store::Tx<'_>, request_id: &str, transition: Transition) {
    let request = requests::stage_in(tx, request_id).await.unwrap().unwrap();
    lifecycle::transition(tx, &request, transition, "test", serde_json::json!({}))
        .await
        .unwrap()
        .unwrap();
}

fn erasure(controller_id: &str, n: usize) -> NewRequest {
    NewRequest {
        controller_id: controller_id.to_owned(),
        kind: Kind::Erasure,
        identities: vec![IdentityInput {
            kind: "email".into(),
            value: format!("customer{n}@example.org"),
        }],
        changes: Vec::new(),
        external_ref: None,
        submitted_by: "test".into(),
        idempotency_key: None,
        not_before: None,
        suppression: None,
        system_id: None,
        retention_run_id: None,
        opendsr: None,
        deadline_from: None,
    }
}

async fn a_stale_worker_cannot_write_and_retries_stop_at_the_maximum(backend: Backend) {
    let Some(fixture) = open(backend).await else {
        return;
    };
    let store = &fixture.store;
    let owner_id = controller_with_systems(&fixture, 1).await;
    let new = erasure(&owner_id, 1);
    let mut tx = store.begin().await.unwrap();
    let request = requests::insert(&mut tx, &fixture.keys.sealer, &new, "test")
        .await
        .unwrap();
    assert_eq!(
        lifecycle::approve(&mut tx, &request.stage(), "test", 2)
            .await
            .unwrap(),
        Ok(1)
    );
    tx.commit().await.unwrap();

    // Worker A's lease runs out at once; worker B takes the task over.
    let a = queue::claim(store, "a", Duration::ZERO, &Backoff::NONE)
        .await
        .unwrap()
        .expect("a task is due");
    assert_eq!(a.attempt, 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = queue::claim(store, "b", Duration::from_secs(60), &Backoff::NONE)
        .await
        .unwrap()
        .expect("the expired lease is taken over");
    assert_eq!((b.id.as_str(), b.attempt), (a.id.as_str(), 2));
    assert_ne!(
        a.lease, b.lease,
        "each claim has a fencing token of its own"
    );
    assert!(
        !queue::heartbeat(store, &a, Duration::from_secs(60))
            .await
            .unwrap(),
        "A no longer holds the lease"
    );

    // A's late result is dropped. A's run was interrupted, which does not count against
    // the two attempts: B's retryable failure is the first run that ended, and B's next
    // the second and last.
    assert_eq!((b.interrupted, b.took_over), (1, true));
    let late = succeed(store, "a", &a).await;
    assert!(!late, "a stale worker's result is refused");
    let failure = RunOutcome::Failed {
        kind: "unavailable".into(),
        message: "busy".into(),
        retryable: true,
    };
    assert!(
        lifecycle::finish(store, "b", &b, failure.clone(), Duration::ZERO)
            .await
            .unwrap()
    );
    let tasks = queue::list(store, &request.id).await.unwrap();
    assert_eq!(tasks[0].status, queue::TaskStatus::Queued);
    assert_eq!((tasks[0].attempts, tasks[0].interrupted), (2, 1));
    // (Apart in time, for the attempt log's order.)
    tokio::time::sleep(Duration::from_millis(2)).await;
    let b = queue::claim(store, "b", Duration::from_secs(60), &Backoff::NONE)
        .await
        .unwrap()
        .expect("the retry is due");
    assert_eq!((b.attempt, b.interrupted, b.took_over), (3, 1, false));
    assert!(
        lifecycle::finish(store, "b", &b, failure, Duration::ZERO)
            .await
            .unwrap()
    );
    let tasks = queue::list(store, &request.id).await.unwrap();
    assert_eq!(tasks[0].status, queue::TaskStatus::Failed);
    assert_eq!(tasks[0].last_error_kind.as_deref(), Some("unavailable"));
    let failed = requests::get(store, &fixture.keys.sealer, &request.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, oubli::request::Status::Failed);
    assert!(
        queue::claim(store, "c", Duration::from_secs(60), &Backoff::NONE)
            .await
            .unwrap()
            .is_none(),
        "nothing is left to run"
    );

    // Re-queued, it runs again from its first attempt.
    let mut tx = store.begin().await.unwrap();
    apply(&mut tx, &request.id, Transition::Retry).await;
    assert_eq!(
        queue::requeue_failed(&mut tx, &request.id).await.unwrap(),
        1
    );
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let again = queue::claim(store, "c", Duration::from_secs(60), &Backoff::NONE)
        .await
        .unwrap()
        .expect("the task is due again");
    assert_eq!(again.attempt, 1);
    // Worker A's claim was attempt 1 too: its late result is still refused.
    let stale = succeed(store, "a", &a).await;
    assert!(
        !stale,
        "a reset attempt count must not let a stale worker write"
    );
    assert!(succeed(store, "c", &again).await);
    assert_eq!(
        requests::get(store, &fixture.keys.sealer, &request.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        oubli::request::Status::Completed
    );

    // A request cancelled after its approval: its queued tasks never run.
    let mut tx = store.begin().await.unwrap();
    let second = requests::insert(&mut tx, &fixture.keys.sealer, &new, "test")
        .await
        .unwrap();
    lifecycle::approve(&mut tx, &second.stage(), "test", 2)
        .await
        .unwrap()
        .unwrap();
    apply(&mut tx, &second.id, Transition::Cancel).await;
    assert_eq!(queue::cancel_queued(&mut tx, &second.id).await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert!(
        queue::claim(store, "c", Duration::from_secs(60), &Backoff::NONE)
            .await
            .unwrap()
            .is_none(),
        "a cancelled request's task is never claimed"
    );
    // A request whose task a worker took before the request started: it is being carried
    // out, so it can no longer be cancelled.
    let mut tx = store.begin().await.unwrap();
    let third = requests::insert(&mut tx, &fixture.keys.sealer, &new, "test")
        .await
        .unwrap();
    lifecycle::approve(&mut tx, &third.stage(), "test", 2)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    let taken = queue::claim(store, "d", Duration::from_secs(60), &Backoff::NONE)
        .await
        .unwrap()
        .expect("the approved request's task is claimed");
    assert_eq!(taken.request_id, third.id);
    let mut tx = store.begin().await.unwrap();
    let refused = lifecycle::cancel(&mut tx, &third.id, "test", None)
        .await
        .unwrap()
        .expect("the request exists");
    assert!(
        matches!(&refused, Err(lifecycle::Refusal::Illegal(reason)) if reason.contains("already carrying out")),
        "{refused:?}"
    );
    drop(tx);
    assert_eq!(
        requests::get(store, &fixture.keys.sealer, &third.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        oubli::request::Status::Approved
    );
    // The attempt log: every claim, who held it, and how it ended.
    let log: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT worker, lease, outcome FROM task_attempts WHERE task_id = $1 ORDER BY started_at, lease",
    )
    .bind(&a.id)
    .fetch_all(&store.read)
    .await
    .unwrap();
    let ended: Vec<(&str, Option<&str>)> = log
        .iter()
        .map(|(worker, _, outcome)| (worker.as_str(), outcome.as_deref()))
        .collect();
    assert_eq!(
        ended,
        [
            ("a", Some("lease-lost")),
            ("b", Some("retry")),
            ("b", Some("failed")),
            ("c", Some("succeeded"))
        ]
    );
    store.close().await;
}

/// Records how a run that stored pages ended.
async fn finish_paged(
    store: &Store,
    owner: &str,
    task: &queue::Claimed,
    outcome: RunOutcome,
) -> bool {
    let run = queue::Finished {
        task: task.clone(),
        outcome,
        backoff: Duration::ZERO,
        paged: true,
    };
    lifecycle::finish_many(store, owner, &[run]).await.unwrap()[0]
}

async fn an_exports_pages_are_kept_only_for_the_run_that_succeeded(backend: Backend) {
    let Some(fixture) = open(backend).await else {
        return;
    };
    let (store, sealer) = (&fixture.store, &fixture.keys.sealer);
    let owner_id = controller_with_systems(&fixture, 1).await;
    let mut tx = store.begin().await.unwrap();
    let request = requests::insert(&mut tx, sealer, &erasure(&owner_id, 1), "test")
        .await
        .unwrap();
    lifecycle::approve(&mut tx, &request.stage(), "test", 3)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    let page = |name: &str| sealer.seal_json(&serde_json::json!([{ "collection": name }]));
    let pages_stored = || async {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM task_pages")
            .fetch_one(&store.read)
            .await
            .unwrap();
        count
    };

    // Run A stores a page and loses its lease; its next page is refused.
    let a = queue::claim(store, "a", Duration::ZERO, &Backoff::NONE)
        .await
        .unwrap()
        .unwrap();
    assert!(queue::store_page(store, &a, 0, &page("a0")).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = queue::claim(store, "b", Duration::from_secs(60), &Backoff::NONE)
        .await
        .unwrap()
        .unwrap();
    assert!(!queue::store_page(store, &a, 1, &page("a1")).await.unwrap());
    // Run B stores a page and fails: its page goes, A's (a crashed run's) stays for now.
    assert!(queue::store_page(store, &b, 0, &page("b0")).await.unwrap());
    let busy = RunOutcome::Failed {
        kind: "unavailable".into(),
        message: "busy".into(),
        retryable: true,
    };
    assert!(finish_paged(store, "b", &b, busy).await);
    assert_eq!(pages_stored().await, 1);
    // Run C succeeds with two pages: only they are kept, and they are its results.
    let c = queue::claim(store, "c", Duration::from_secs(60), &Backoff::NONE)
        .await
        .unwrap()
        .unwrap();
    assert!(queue::store_page(store, &c, 0, &page("c0")).await.unwrap());
    assert!(queue::store_page(store, &c, 1, &page("c1")).await.unwrap());
    let result = sealer.seal_json(&serde_json::json!({ "pages_of": c.lease, "pages": 2 }));
    assert!(
        finish_paged(
            store,
            "c",
            &c,
            RunOutcome::Succeeded {
                result,
                found: 1,
                unapplied: None
            }
        )
        .await
    );
    assert_eq!(pages_stored().await, 2);
    let results = queue::results(store, sealer, &request.id).await.unwrap();
    assert_eq!(
        results[0].2,
        serde_json::json!({ "records": [{ "collection": "c0" }, { "collection": "c1" }] })
    );
    // A page gone (purged since) is never shown as fewer records, nor as none.
    sqlx::query("DELETE FROM task_pages WHERE page = 1")
        .execute(&store.write)
        .await
        .unwrap();
    let results = queue::results(store, sealer, &request.id).await.unwrap();
    assert_eq!(
        results[0].2,
        serde_json::json!({ "records": null, "records_deleted": true })
    );
    store.close().await;
}

/// `count` erasure requests of `owner`'s, approved; their ids.
async fn approved_erasures(fixture: &Fixture, owner: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut tx = fixture.store.begin().await.unwrap();
    for n in 0..count {
        let request = requests::insert(&mut tx, &fixture.keys.sealer, &erasure(owner, n), "test")
            .await
            .unwrap();
        lifecycle::approve(&mut tx, &request.stage(), "test", 3)
            .await
            .unwrap()
            .unwrap();
        ids.push(request.id);
    }
    tx.commit().await.unwrap();
    ids
}

/// `count` workers, each claiming up to `batch` tasks at a time until none is left; what
/// each claimed.
fn claiming_workers(
    store: &Store,
    count: usize,
    batch: usize,
) -> Vec<tokio::task::JoinHandle<Vec<queue::Claimed>>> {
    (0..count)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claimed = lifecycle::claim_many(
                        &store,
                        &format!("w{w}"),
                        Duration::from_secs(60),
                        &Backoff::NONE,
                        batch,
                    )
                    .await
                    .unwrap();
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(claimed);
                }
            })
        })
        .collect()
}

/// Four workers claim from 40 queued tasks at once, over and over: every task is claimed
/// exactly once.
async fn concurrent_workers_claim_each_task_once(backend: Backend) {
    let Some(fixture) = open(backend).await else {
        return;
    };
    let store = &fixture.store;
    let owner = controller_with_systems(&fixture, 4).await;
    approved_erasures(&fixture, &owner, 10).await;
    let workers = claiming_workers(store, 4, 3);
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut all = Vec::new();
    for worker in workers {
        for task in worker.await.unwrap() {
            total += 1;
            assert!(
                seen.insert(task.id.clone()),
                "task {} was claimed twice",
                task.id
            );
            all.push(task);
        }
    }
    assert_eq!(total, 40);
    let running: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE status = 'running'")
        .fetch_one(&store.read)
        .await
        .unwrap();
    assert_eq!(running, 10, "each request started once");
    // The four workers then record their runs at once, in batches: the last two tasks of
    // a request may end together, and each request is still completed, once.
    // Dealt round, so that each worker's batches hold tasks of several requests.
    let claimed: Vec<(usize, queue::Claimed)> = all.into_iter().enumerate().collect();
    let mut finishers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        let runs: Vec<queue::Finished> = claimed
            .iter()
            .filter(|(i, _)| i % 4 == w)
            .map(|(_, task)| queue::Finished {
                task: task.clone(),
                outcome: RunOutcome::Succeeded {
                    result: "{}".into(),
                    found: 0,
                    unapplied: None,
                },
                backoff: Duration::ZERO,
                paged: false,
            })
            .collect();
        finishers.push(tokio::spawn(async move {
            for batch in runs.chunks(2) {
                let owner = batch[0].task.lease.split(':').next().unwrap().to_owned();
                let recorded = lifecycle::finish_many(&store, &owner, batch).await.unwrap();
                assert!(recorded.iter().all(|r| *r));
            }
        }));
    }
    for finisher in finishers {
        finisher.await.unwrap();
    }
    let completed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE status = 'completed'")
            .fetch_one(&store.read)
            .await
            .unwrap();
    assert_eq!(
        completed, 10,
        "every request completed once its tasks ended"
    );
    let events = all_events(store).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == "request.completed")
            .count(),
        10
    );
    assert_eq!(oubli::audit::first_broken(&events, &[]), None);
    store.close().await;
}

/// Workers claim the tasks of approved requests while the DPO cancels each of them: a
/// request is either cancelled before any of its tasks was taken, or the cancellation is
/// refused; never a cancelled request with a task a worker took.
async fn a_cancellation_and_a_claim_at_once_never_both_win(backend: Backend) {
    let Some(fixture) = open(backend).await else {
        return;
    };
    let store = &fixture.store;
    let owner = controller_with_systems(&fixture, 2).await;
    let ids = approved_erasures(&fixture, &owner, 20).await;
    let workers = claiming_workers(store, 3, 1);
    let canceller = {
        let (store, ids) = (store.clone(), ids.clone());
        tokio::spawn(async move {
            let mut cancelled = Vec::new();
            for id in ids {
                let mut tx = store.begin().await.unwrap();
                match lifecycle::cancel(&mut tx, &id, "test", None).await {
                    Ok(Some(Ok(()))) => {
                        tx.commit().await.unwrap();
                        cancelled.push(id);
                    }
                    Ok(_) => {}
                    // PostgreSQL broke a deadlock with a claim: nothing was kept.
                    Err(e) if oubli::store::is_transient(&e) => {}
                    Err(e) => panic!("{e:#}"),
                }
            }
            cancelled
        })
    };
    for worker in workers {
        worker.await.unwrap();
    }
    let cancelled = canceller.await.unwrap();
    for id in &cancelled {
        let taken: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM task_attempts a JOIN tasks t ON t.id = a.task_id WHERE t.request_id = $1",
        )
        .bind(id)
        .fetch_one(&store.read)
        .await
        .unwrap();
        assert_eq!(
            taken, 0,
            "request {id} was cancelled after a worker took one of its tasks"
        );
    }
    // Every request is either cancelled or carried out.
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM requests ORDER BY id")
        .fetch_all(&store.read)
        .await
        .unwrap();
    assert!(
        statuses.iter().all(|s| s == "cancelled" || s == "running"),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "cancelled").count(),
        cancelled.len()
    );
    store.close().await;
}

/// Eight writers append to the audit trail at once, each in its own transactions: the
/// trail stays one unbroken chain.
async fn concurrent_writers_keep_one_audit_chain(backend: Backend) {
    let Some(fixture) = open(backend).await else {
        return;
    };
    let store = &fixture.store;
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..10 {
                let mut tx = store.begin().await.unwrap();
                for j in 0..3 {
                    oubli::audit::append(
                        &mut tx,
                        &format!("writer:{w}"),
                        "test.appended",
                        None,
                        serde_json::json!({ "i": i, "j": j }),
                    );
                }
                tx.commit().await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let events = all_events(store).await;
    assert_eq!(events.len(), 240);
    assert_eq!(oubli::audit::first_broken(&events, &[]), None);
    // A transaction's events stay together and in the order they were appended.
    for three in events.chunks(3) {
        let details: Vec<serde_json::Value> = three
            .iter()
            .map(|e| serde_json::from_str(&e.details).unwrap())
            .collect();
        assert!(three.iter().all(|e| e.actor == three[0].actor));
        assert_eq!(
            details.iter().map(|d| d["j"].as_i64()).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2)]
        );
        assert!(details.iter().all(|d| d["i"] == details[0]["i"]));
    }
    store.close().await;
}

/// Another process appends to the trail between two transactions of this one: the next
/// transaction's events, more than one insert holds, follow what it wrote, in order; one
/// rolled back leaves nothing.
async fn a_transaction_s_events_follow_what_another_process_wrote(backend: Backend) {
    let Some(fixture) = open(backend).await else {
        return;
    };
    let store = &fixture.store;
    let append = |tx: &mut oubli::store::Tx<'_>, n: usize| {
        oubli::audit::append(
            tx,
            "test",
            "test.appended",
            None,
            serde_json::json!({ "n": n }),
        );
    };
    let mut tx = store.begin().await.unwrap();
    append(&mut tx, 0);
    tx.commit().await.unwrap();
    // What another process would write: an event chained to the head it read.
    let (head,): (String,) =
        sqlx::query_as("SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_one(&store.write)
            .await
            .unwrap();
    let (at, details) = (oubli::store::now_ms(), r#"{"other":true}"#);
    let hash = oubli::store::trail::hash(&head, at, "other", "test.other", None, details);
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, request_id, details, prev_hash, hash) \
         VALUES ($1, 'other', 'test.other', NULL, $2, $3, $4)",
    )
    .bind(at)
    .bind(details)
    .bind(&head)
    .bind(&hash)
    .execute(&store.write)
    .await
    .unwrap();
    let mut tx = store.begin().await.unwrap();
    append(&mut tx, 999);
    tx.rollback().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    for n in 1..=450 {
        append(&mut tx, n);
    }
    tx.commit().await.unwrap();
    let events = all_events(store).await;
    assert_eq!(oubli::audit::first_broken(&events, &[]), None);
    assert_eq!(events.len(), 452);
    assert_eq!(events[1].action, "test.other");
    let order: Vec<i64> = events
        .iter()
        .filter(|e| e.action == "test.appended")
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.details).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(order, (0..=450).collect::<Vec<i64>>());
    store.close().await;
}

async fn all_events(store: &Store) -> Vec<oubli::audit::Event> {
    oubli::audit::all(store).await.unwrap()
}

/// A rectification's identities and new value are sealed in the database; once the
/// request is closed and past its retention they are replaced by keyed hashes, once.
async fn the_subject_is_sealed_at_rest_and_redacted_after_closure(backend: Backend) {
    let Some(fixture) = open(backend).await else {
        return;
    };
    let (store, keys) = (&fixture.store, &fixture.keys);
    let owner = controller_with_systems(&fixture, 1).await;
    let new = NewRequest {
        kind: Kind::Rectification,
        changes: vec![
            ChangeInput {
                collection: None,
                field: "phone".into(),
                value: serde_json::json!("+33 6 98 76 54 32"),
            },
            ChangeInput {
                collection: None,
                field: "newsletter".into(),
                value: serde_json::Value::Null,
            },
        ],
        ..erasure(&owner, 7)
    };
    let mut tx = store.begin().await.unwrap();
    let request = requests::insert(&mut tx, &keys.sealer, &new, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let stored = || async {
        let row: (String, String) =
            sqlx::query_as("SELECT identities, changes FROM requests WHERE id = $1")
                .bind(&request.id)
                .fetch_one(&store.read)
                .await
                .unwrap();
        format!("{} {}", row.0, row.1)
    };
    let at_rest = stored().await;
    assert!(at_rest.starts_with("sealed:v1:"), "{at_rest}");
    for secret in ["customer7@example.org", "98 76 54 32", "email", "phone"] {
        assert!(!at_rest.contains(secret), "{secret} is in clear: {at_rest}");
    }
    let read = requests::get(store, &keys.sealer, &request.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read.identities[0].value.as_deref(),
        Some("customer7@example.org")
    );
    assert_eq!(
        read.changes[0].value,
        Some(serde_json::json!("+33 6 98 76 54 32"))
    );
    assert_eq!(
        read.changes[1].value,
        Some(serde_json::Value::Null),
        "null is a new value"
    );
    assert_eq!(read.subject_error, None);

    // Sealed data is bound to its request: moved to another row, it does not open, and
    // that request reads with the reason instead of failing the whole list.
    let mut tx = store.begin().await.unwrap();
    let other = requests::insert(&mut tx, &keys.sealer, &erasure(&owner, 8), "test")
        .await
        .unwrap();
    sqlx::query("UPDATE requests SET identities = (SELECT identities FROM requests WHERE id = $1) WHERE id = $2")
        .bind(&request.id)
        .bind(&other.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let moved = requests::get(store, &keys.sealer, &other.id)
        .await
        .unwrap()
        .unwrap();
    assert!(moved.identities.is_empty());
    assert!(
        moved
            .subject_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot be opened")),
        "{moved:?}"
    );
    let everything = requests::Filter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        requests::list(store, &keys.sealer, &everything)
            .await
            .unwrap()
            .len(),
        2
    );

    // Open requests are never redacted, nor are closed ones still within retention.
    let hash = |label: &str, value: &str| keys.identity_hash(label, value);
    let mut tx = store.begin().await.unwrap();
    assert!(
        !requests::redact_subject(&mut tx, &keys.sealer, &request.id, hash)
            .await
            .unwrap()
    );
    apply(&mut tx, &request.id, Transition::Cancel).await;
    tx.commit().await.unwrap();
    // The list's filters, on both backends.
    let filter = requests::Filter {
        controller_id: Some(owner.clone()),
        status: Some(oubli::request::Status::Cancelled),
        kind: Some(Kind::Rectification),
        overdue: Some(false),
        after: None,
        limit: 10,
    };
    let listed = requests::list(store, &keys.sealer, &filter).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].identities[0].value.as_deref(),
        Some("customer7@example.org")
    );
    let day_ago = oubli::store::now_ms() - 86_400_000;
    assert!(
        requests::due_for_redaction(store, day_ago, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due = requests::due_for_redaction(store, oubli::store::now_ms() + 1, None, 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|(_, id)| id).collect::<Vec<_>>(),
        [&request.id]
    );
    assert!(
        requests::due_for_redaction(store, oubli::store::now_ms() + 1, due.last(), 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing after the last one"
    );

    let mut tx = store.begin().await.unwrap();
    assert!(
        requests::redact_subject(&mut tx, &keys.sealer, &request.id, hash)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(
        !requests::redact_subject(&mut tx, &keys.sealer, &request.id, hash)
            .await
            .unwrap(),
        "a redacted request is not redacted twice"
    );
    tx.commit().await.unwrap();
    let redacted = requests::get(store, &keys.sealer, &request.id)
        .await
        .unwrap()
        .unwrap();
    assert!(redacted.subject_redacted_at.is_some());
    assert_eq!(redacted.identities[0].value, None);
    assert_eq!(
        redacted.identities[0].hmac_sha256.as_deref(),
        Some(
            keys.identity_hash("email", "customer7@example.org")
                .as_str()
        ),
        "the same hash as the erasure certificate's"
    );
    assert_eq!(redacted.changes[0].value, None);
    assert_eq!(
        redacted.changes[1].hmac_sha256.as_deref(),
        Some(keys.identity_hash("newsletter", "null").as_str())
    );
    assert_eq!(
        redacted.changes[0].hmac_sha256.as_deref(),
        Some(
            keys.identity_hash("phone", "\"+33 6 98 76 54 32\"")
                .as_str()
        )
    );
    let after = stored().await;
    assert!(
        !after.contains("customer7") && !after.contains("98 76"),
        "{after}"
    );
    assert!(
        requests::due_for_redaction(store, oubli::store::now_ms() + 1, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let events = all_events(store).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == "request.subject_redacted")
            .count(),
        1
    );
    store.close().await;
}

/// Access-log events past their retention are deleted in batches, each leaving a signed
/// checkpoint: the chain still verifies, and removing a kept event is still found.
async fn purged_access_log_events_leave_a_verifiable_chain(backend: Backend) {
    let Some(fixture) = open(backend).await else {
        return;
    };
    let (store, keys) = (&fixture.store, &fixture.keys);
    let mut tx = store.begin().await.unwrap();
    for action in [
        "request.received",
        "request.read",
        "package.downloaded",
        "request.completed",
        "requests.listed",
    ] {
        oubli::audit::append(&mut tx, "test", action, None, serde_json::json!({}));
    }
    tx.commit().await.unwrap();
    let now = oubli::store::now_ms() + 1;
    assert_eq!(
        oubli::audit::check_before_purge(store, keys, now)
            .await
            .unwrap(),
        Ok(())
    );
    let mut purged = Vec::new();
    for _ in 0..3 {
        let mut tx = store.begin().await.unwrap();
        purged.push(
            oubli::audit::purge_access_log(&mut tx, keys, now, 2)
                .await
                .unwrap(),
        );
        tx.commit().await.unwrap();
    }
    assert_eq!(purged, [2, 1, 0], "two batches, then nothing left");
    let events = all_events(store).await;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "request.received",
            "request.completed",
            "audit.purged",
            "audit.purged"
        ]
    );
    let publics = keys.verifying_keys();
    assert_eq!(oubli::audit::first_broken(&events, &publics), None);

    sqlx::query("DELETE FROM audit_events WHERE action = 'request.completed'")
        .execute(&store.write)
        .await
        .unwrap();
    let broken = oubli::audit::first_broken(&all_events(store).await, &publics)
        .expect("a removed event is found");
    assert_eq!(broken.seq, events[2].seq);

    // An event edited to look like an old read is not purged (and so not vouched for):
    // the purge finds the edit and refuses.
    sqlx::query(
        "UPDATE audit_events SET action = 'request.read', at = 0 WHERE action = 'request.received'",
    )
    .execute(&store.write)
    .await
    .unwrap();
    let before = all_events(store).await.len();
    let edited = events[0].seq;
    let found = oubli::audit::check_before_purge(store, keys, now)
        .await
        .unwrap()
        .expect_err("the check before a purge finds the edit");
    assert_eq!(found.seq, edited, "{found:?}");
    let mut tx = store.begin().await.unwrap();
    let error = oubli::audit::purge_access_log(&mut tx, keys, now, 10)
        .await
        .expect_err("the purge itself refuses the edited event");
    drop(tx);
    assert!(
        error
            .to_string()
            .contains(&format!("at event {edited} (event {edited} was changed")),
        "{error}"
    );
    assert_eq!(all_events(store).await.len(), before, "nothing was purged");
    store.close().await;
}

/// The tables, columns and indexes of a migrated store, as `table.column` and
/// `index table.name` lines.
async fn schema(store: &Store, backend: Backend) -> std::collections::BTreeSet<String> {
    let (columns, indexes) = match backend {
        Backend::Sqlite => (
            "SELECT m.name || '.' || p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx%'",
            "SELECT 'index ' || tbl_name || '.' || name FROM sqlite_master \
             WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'",
        ),
        Backend::Postgres => (
            "SELECT table_name || '.' || column_name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name NOT LIKE '_sqlx%'",
            // Primary keys and UNIQUE constraints are indexes of their own on PostgreSQL
            // and automatic ones on SQLite: only the declared indexes are compared.
            "SELECT 'index ' || i.tablename || '.' || i.indexname FROM pg_indexes i \
             WHERE i.schemaname = current_schema() AND NOT EXISTS \
             (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        ),
    };
    let mut found = std::collections::BTreeSet::new();
    for statement in [columns, indexes] {
        let rows: Vec<String> = sqlx::query_scalar(statement)
            .fetch_all(&store.read)
            .await
            .unwrap();
        found.extend(rows);
    }
    found
}

/// Processes that open a new database at the same time (a first `oubli serve` and an
/// `oubli token create`) each find it migrated, on both backends: none fails on a table
/// another one is creating.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_opens_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oubli.db");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { Store::open_sqlite(&path).await })
        })
        .collect();
    for open in opens {
        let store = open.await.unwrap().expect("every SQLite open succeeds");
        store.close().await;
    }
    let Some(server) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = server.url.clone();
            tokio::spawn(async move { Store::open(&url).await })
        })
        .collect();
    for open in opens {
        let store = open.await.unwrap().expect("every PostgreSQL open succeeds");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sqlite_and_postgresql_schemas_agree() {
    let (Some(sqlite), Some(postgres)) =
        (open(Backend::Sqlite).await, open(Backend::Postgres).await)
    else {
        return;
    };
    let lite = schema(&sqlite.store, Backend::Sqlite).await;
    let pg = schema(&postgres.store, Backend::Postgres).await;
    assert!(lite.iter().any(|c| c == "task_pages.records"), "{lite:?}");
    assert_eq!(
        lite.difference(&pg).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "only on SQLite"
    );
    assert_eq!(
        pg.difference(&lite).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "only on PostgreSQL"
    );
    sqlite.store.close().await;
    postgres.store.close().await;
}

/// A row in `table` with `values`, every other column without a default filled in.
async fn insert_filled(pool: &sqlx::SqlitePool, table: &str, values: &[(&str, &str)]) {
    let columns: Vec<(String, String, i64, Option<String>)> =
        sqlx::query_as("SELECT name, type, \"notnull\", dflt_value FROM pragma_table_info(?)")
            .bind(table)
            .fetch_all(pool)
            .await
            .unwrap();
    let (mut names, mut given) = (Vec::new(), Vec::new());
    for (name, kind, not_null, default) in columns {
        if let Some((_, value)) = values.iter().find(|(n, _)| *n == name) {
            names.push(name);
            given.push(format!("'{value}'"));
        } else if not_null == 1 && default.is_none() {
            names.push(name);
            given.push(if kind.contains("INT") {
                "0".into()
            } else {
                "'x'".into()
            });
        }
    }
    sqlx::query(&format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        given.join(", ")
    ))
    .execute(pool)
    .await
    .unwrap_or_else(|e| panic!("{table}: {e}"));
}

/// A database made before the retention runs (migrations 1 to 14), holding webhooks and
/// e-mails with their attempts, is brought up to date (its SQLite tables rebuilt) with
/// every row and every reference kept, and foreign keys still enforced.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_sqlite_database_keeps_its_webhooks_and_e_mails_when_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oubli.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = sqlx::SqlitePool::connect_with(options.clone())
        .await
        .unwrap();
    let all = sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../host/migrations/sqlite"
    )))
    .await
    .unwrap();
    let before = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version < 15)
                .cloned()
                .collect(),
        ),
        ..all
    };
    before.run(&pool).await.unwrap();
    insert_filled(&pool, "controllers", &[("id", "c1")]).await;
    insert_filled(&pool, "requests", &[("id", "r1"), ("controller_id", "c1")]).await;
    insert_filled(
        &pool,
        "webhook_deliveries",
        &[
            ("id", "d1"),
            ("controller_id", "c1"),
            ("request_id", "r1"),
            ("event", "request.forwarded"),
        ],
    )
    .await;
    insert_filled(
        &pool,
        "webhook_attempts",
        &[("delivery_id", "d1"), ("attempt", "1")],
    )
    .await;
    insert_filled(
        &pool,
        "emails",
        &[
            ("id", "e1"),
            ("request_id", "r1"),
            ("event", "request.forwarded"),
            ("recipient", "controller"),
        ],
    )
    .await;
    insert_filled(
        &pool,
        "email_attempts",
        &[("email_id", "e1"), ("attempt", "1")],
    )
    .await;
    pool.close().await;

    let store = Store::open_sqlite(&path).await.unwrap();
    drop(store);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let kept: Vec<(String, Option<String>, String)> =
        sqlx::query_as("SELECT id, request_id, event FROM webhook_deliveries")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        kept,
        [(
            "d1".to_owned(),
            Some("r1".to_owned()),
            "request.forwarded".to_owned()
        )]
    );
    let mailed: Vec<(String, Option<String>)> = sqlx::query_as("SELECT id, request_id FROM emails")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(mailed, [("e1".to_owned(), Some("r1".to_owned()))]);
    let attempts: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM webhook_attempts) + (SELECT COUNT(*) FROM email_attempts)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 2);
    let broken: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(broken.is_empty(), "{broken:?}");
    let orphan = sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, at) VALUES ('nope', 1, 0)",
    )
    .execute(&pool)
    .await;
    assert!(orphan.is_err(), "foreign keys still hold");
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN ('webhook_deliveries', 'emails') AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let names: Vec<&str> = indexes.iter().map(|(n,)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "emails_due",
            "emails_run",
            "webhook_deliveries_due",
            "webhook_deliveries_request",
            "webhook_deliveries_run"
        ]
    );
}
