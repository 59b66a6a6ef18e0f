//! The task queue driven step by step: leases, fencing, retries and final failure.

use oubli::audit::Chain;
use oubli::controller::{self, Article15, NewController, NewSystem};
use oubli::queue::{self, Outcome};
use oubli::request::Kind;
use oubli::request::store::{self as requests, IdentityInput, NewRequest};
use oubli::store::Store;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_worker_cannot_write_and_retries_stop_at_the_maximum() {
    let (dir, crm) = oubli_tests::demo_crm(3).await;
    let store = Store::open(&dir.path().join("oubli.db")).await.unwrap();
    let runtime = oubli_tests::runtime();
    let plugin = controller::register_builtin(&store, &runtime, "sql", "test")
        .await
        .unwrap();

    let mut tx = store.begin().await.unwrap();
    let new = NewController {
        name: "Queue".into(),
        webhook_url: None,
        auto_approve: false,
    };
    let (owner, _) = controller::create_controller(&mut tx, &new).await.unwrap();
    let demo = oubli::demo::crm_system("crm", &crm);
    let system = NewSystem::from_config(demo, &plugin.digest, Article15::default());
    controller::create_system(&mut tx, &owner.id, &system)
        .await
        .unwrap();
    let new = NewRequest {
        controller_id: owner.id.clone(),
        kind: Kind::Erasure,
        identities: vec![IdentityInput {
            kind: "email".into(),
            value: "customer1@example.org".into(),
        }],
        changes: Vec::new(),
        external_ref: None,
        submitted_by: "test".into(),
        idempotency_key: None,
    };
    let mut chain = Chain::load(&mut tx).await.unwrap();
    let request = requests::insert(&mut tx, &mut chain, &new, "test")
        .await
        .unwrap();
    assert_eq!(
        queue::approve(&mut tx, &request, "test", 2).await.unwrap(),
        Ok(1)
    );
    tx.commit().await.unwrap();

    // Worker A's lease runs out at once; worker B takes the task over.
    let a = queue::claim(&store, "a", Duration::ZERO)
        .await
        .unwrap()
        .expect("a task is due");
    assert_eq!(a.attempt, 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = queue::claim(&store, "b", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the expired lease is taken over");
    assert_eq!((b.id.as_str(), b.attempt), (a.id.as_str(), 2));
    assert!(
        !queue::heartbeat(&store, &a, Duration::from_secs(60))
            .await
            .unwrap(),
        "A no longer holds the lease"
    );

    // A's late result is dropped; B's retryable failure is the second and last attempt.
    let late = queue::finish(
        &store,
        "a",
        &a,
        Outcome::Succeeded("{}".into()),
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert!(!late, "a stale worker's result is refused");
    let failure = Outcome::Failed {
        kind: "unavailable".into(),
        message: "busy".into(),
        retryable: true,
    };
    assert!(
        queue::finish(&store, "b", &b, failure, Duration::ZERO)
            .await
            .unwrap()
    );
    let tasks = queue::list(&store, &request.id).await.unwrap();
    assert_eq!(tasks[0].status, queue::TaskStatus::Failed);
    assert_eq!(tasks[0].last_error_kind.as_deref(), Some("unavailable"));
    let failed = requests::get(&store, &request.id).await.unwrap().unwrap();
    assert_eq!(failed.status, oubli::request::Status::Failed);
    assert!(
        queue::claim(&store, "c", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "nothing is left to run"
    );

    // Re-queued, it runs again from its first attempt.
    let mut tx = store.begin().await.unwrap();
    let failed = requests::get_in(&mut tx, &request.id)
        .await
        .unwrap()
        .unwrap();
    requests::transition(
        &mut tx,
        &failed,
        oubli::request::Transition::Retry,
        "test",
        serde_json::json!({}),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        queue::requeue_failed(&mut tx, &request.id).await.unwrap(),
        1
    );
    tx.commit().await.unwrap();
    let again = queue::claim(&store, "c", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the task is due again");
    assert_eq!(again.attempt, 1);
    // Worker A's claim was attempt 1 too: its late result is still refused.
    let stale = queue::finish(
        &store,
        "a",
        &a,
        Outcome::Succeeded("{}".into()),
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert!(
        !stale,
        "a reset attempt count must not let a stale worker write"
    );
    assert!(
        queue::finish(
            &store,
            "c",
            &again,
            Outcome::Succeeded("{}".into()),
            Duration::ZERO
        )
        .await
        .unwrap()
    );
    assert_eq!(
        requests::get(&store, &request.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        oubli::request::Status::Completed
    );

    // A request cancelled after its approval: its queued tasks never run.
    let mut tx = store.begin().await.unwrap();
    let mut chain = Chain::load(&mut tx).await.unwrap();
    let second = requests::insert(&mut tx, &mut chain, &new, "test")
        .await
        .unwrap();
    queue::approve(&mut tx, &second, "test", 2)
        .await
        .unwrap()
        .unwrap();
    let approved = requests::get_in(&mut tx, &second.id)
        .await
        .unwrap()
        .unwrap();
    requests::transition(
        &mut tx,
        &approved,
        oubli::request::Transition::Cancel,
        "test",
        serde_json::json!({}),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(queue::cancel_queued(&mut tx, &second.id).await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert!(
        queue::claim(&store, "c", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "a cancelled request's task is never claimed"
    );
    store.close().await;
}
