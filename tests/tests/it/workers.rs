//! Many processes on one PostgreSQL database: an API-only `oubli serve --no-workers` and
//! three `oubli worker`s, one of them killed with kill -9 while tasks run. Skipped, with a
//! note, when `OUBLI_TEST_POSTGRES_URL` is unset.

use oubli_tests::{ServerDb, Service, count};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const REQUESTS: u64 = 500;
const LEASE_MS: i64 = 3_000;

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_and_an_api_on_postgres_lose_nothing_when_one_is_killed() {
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("OUBLI_DATABASE", db.url.as_str()),
        ("OUBLI_LEASE_SECS", "3"),
        ("OUBLI_WORKERS", "2"),
        ("OUBLI_MAX_ATTEMPTS", "10"),
    ];
    let api = Service::start_with(&["serve", "--no-workers"], dir.path(), &settings);
    let admin = api.demo.admin.clone();

    // A controller that approves its DPO's requests, with three systems, each a CRM of
    // its own.
    let (status, created) = api
        .post(
            "/v1/controllers",
            &admin,
            json!({ "name": "Many", "auto_approve": true }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let controller = created["controller"]["id"].as_str().unwrap().to_owned();
    let digest = api.builtin_digest(&admin, "sql").await;
    let mut crms = Vec::new();
    for i in 0..3 {
        let crm = dir.path().join(format!("crm{i}.db"));
        oubli::demo::create_crm(&crm, REQUESTS).await.unwrap();
        let system = oubli::demo::crm_system(&format!("crm{i}"), &crm);
        let (status, body) = api
            .post(
                &format!("/v1/controllers/{controller}/systems"),
                &admin,
                json!({ "name": format!("crm{i}"), "plugin": digest, "capabilities": system.capabilities, "config": system.config }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        crms.push(crm);
    }
    let dpo = api.token(&admin, "dpo", &controller).await;

    let mut workers: Vec<Service> = (0..3)
        .map(|_| Service::start_with(&["worker"], dir.path(), &settings))
        .collect();

    // Submit everything, 16 at a time.
    let api = std::sync::Arc::new(api);
    let mut submitters = Vec::new();
    for lane in 0..16u64 {
        let (api, dpo, controller) = (api.clone(), dpo.clone(), controller.clone());
        submitters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (1..=REQUESTS).filter(|n| n % 16 == lane) {
                let body = json!({ "controller_id": controller, "kind": "erasure",
                    "identities": [{ "kind": "email", "value": format!("customer{n}@example.org") }] });
                let (status, request) = api.post("/v1/requests", &dpo, body).await;
                assert_eq!(status, 201, "{request}");
                ids.push(request["id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for submitter in submitters {
        ids.extend(submitter.await.unwrap());
    }
    assert_eq!(ids.len() as u64, REQUESTS);

    // Kill one worker while it runs tasks, once the first requests completed.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let completed = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM requests WHERE status = 'completed'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let victim = workers[0].worker.clone();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &workers[0].pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
        if completed().await < 50 {
            continue;
        }
        // Frozen, the worker finishes nothing more: what it runs now, it runs when killed.
        signal("-STOP");
        let running: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM task_attempts WHERE worker = $1 AND finished_at IS NULL",
        )
        .bind(&victim)
        .fetch_one(&pool)
        .await
        .unwrap();
        if running > 0 {
            break;
        }
        signal("-CONT");
    }
    workers.remove(0).kill9();

    loop {
        let settled: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM requests WHERE status NOT IN ('approved', 'running')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if settled as u64 == REQUESTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{settled} of {REQUESTS} requests settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every accepted request completed, and every person is gone from every system.
    assert_eq!(completed().await as u64, REQUESTS);
    for id in &ids {
        let (status, request) = api.get(&format!("/v1/requests/{id}"), &dpo).await;
        assert_eq!(
            (status, request["status"].as_str()),
            (200, Some("completed"))
        );
    }
    for crm in &crms {
        assert_eq!(count(crm, "customers", "1 = 1").await, 0);
    }
    // Filtered lists and the audit trail's filters work on PostgreSQL too.
    let (status, page) = api
        .get(
            "/v1/requests?status=completed&kind=erasure&overdue=false&limit=7",
            &dpo,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 7, "{page}");
    let (status, page) = api
        .get(
            &format!("/v1/audit?action=request.completed&request_id={}", ids[0]),
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");

    // The attempt log: no task ran in two places at once. A run ends when it finished,
    // or, for the killed worker's runs (closed as interrupted when taken over), when the
    // lease it last renewed ran out.
    // (task, worker, started, last renewed, finished, outcome)
    type Attempt = (String, String, i64, i64, Option<i64>, Option<String>);
    let attempts: Vec<Attempt> = sqlx::query_as(
        "SELECT task_id, worker, started_at, renewed_at, finished_at, outcome FROM task_attempts ORDER BY task_id, started_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut by_task: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    for attempt in &attempts {
        by_task.entry(&attempt.0).or_default().push(attempt);
    }
    assert_eq!(
        by_task.len() as u64,
        REQUESTS * 3,
        "one task per request and system"
    );
    for (task, runs) in &by_task {
        for pair in runs.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            let ended = match before.5.as_deref() {
                Some("interrupted") | None => before.3 + LEASE_MS,
                Some(_) => before.4.unwrap(),
            };
            assert!(
                after.2 >= ended,
                "task {task} was run by {} from {} while {}'s run lasted until {ended}",
                after.1,
                after.2,
                before.1
            );
        }
    }
    let workers_seen: std::collections::BTreeSet<&str> =
        attempts.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(workers_seen.len(), 3, "all three workers ran tasks");
    let interrupted: Vec<&str> = attempts
        .iter()
        .filter(|a| a.5.as_deref() == Some("interrupted"))
        .map(|a| a.1.as_str())
        .collect();
    let mut outcomes: BTreeMap<(&str, Option<&str>), usize> = BTreeMap::new();
    for attempt in &attempts {
        *outcomes
            .entry((attempt.1.as_str(), attempt.5.as_deref()))
            .or_default() += 1;
    }
    assert!(
        !interrupted.is_empty(),
        "the killed worker was running tasks when it died: {outcomes:?}"
    );
    assert!(
        interrupted.iter().all(|w| *w == victim),
        "only the killed worker's runs were interrupted: {outcomes:?}"
    );
    pool.close().await;
    for worker in workers {
        assert!(worker.terminate(), "a SIGTERM stops a worker cleanly");
    }
    let api = std::sync::Arc::into_inner(api).expect("the submitters are done");
    assert!(api.terminate(), "a SIGTERM stops the API cleanly");
}
