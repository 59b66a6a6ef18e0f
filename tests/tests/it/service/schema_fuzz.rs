//! Schemathesis (from PyPI, pinned in `tests/apps/requirements.txt`) over the OpenAPI
//! document of the real binary, with every check, once per role: every answer must be
//! one the document lists, with the documented body and headers, and no input may give
//! a 5xx. `.ci/run` installs it and sets `OUBLI_TEST_SCHEMATHESIS` to its `st`; the time
//! per role is `OUBLI_TEST_SCHEMATHESIS_SECS` (30 by default).

use oubli_tests::Service;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_undocumented_for_any_role() {
    let Ok(st) = std::env::var("OUBLI_TEST_SCHEMATHESIS") else {
        eprintln!("skipped: OUBLI_TEST_SCHEMATHESIS is not set (see .ci/run)");
        return;
    };
    let seconds = std::env::var("OUBLI_TEST_SCHEMATHESIS_SECS").unwrap_or_else(|_| "30".into());
    let dir = tempfile::tempdir().unwrap();
    // Fuzzing sends many requests without a valid token: the throttle would answer them
    // 429 (documented, but hiding the 401 each should get).
    let service = Service::spawn_app(
        dir.path(),
        &[
            ("OUBLI_AUTH_FAILURE_LIMIT", "1000000000"),
            ("OUBLI_DEMO_CUSTOMERS", "20"),
        ],
    )
    .await;
    let demo = service.demo.clone();
    let (status, auditor) = service
        .post(
            "/v1/tokens",
            &demo.admin,
            json!({ "role": "auditor", "label": "schemathesis" }),
        )
        .await;
    assert_eq!(status, 201, "{auditor}");
    let auditor = auditor["token"].as_str().unwrap().to_owned();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/apps/schemathesis.toml");
    let work = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for (role, token) in [
        ("admin", &demo.admin),
        ("dpo", &demo.dpo),
        ("controller", &demo.controller),
        ("auditor", &auditor),
    ] {
        // One worker: with two, Hypothesis (inside Schemathesis) parses Python source in
        // two threads at once, and CPython 3.11 can then fail every later parse with "AST
        // constructor recursion depth mismatch" (its AST depth counter is shared, see
        // CPython gh-106905), which a CI run met twice in a row. The GIL made the second
        // worker worth little anyway.
        let run = || {
            tokio::process::Command::new(&st)
                .args(["--config-file", config, "run"])
                .arg(format!("{}/v1/openapi.json", service.url))
                .args(["--checks", "all", "--workers", "1", "--max-time", &seconds])
                .args(["--header", &format!("Authorization: Bearer {token}")])
                .current_dir(work.path())
                .output()
        };
        let mut output = run().await.expect("schemathesis runs");
        // A run with errors of Schemathesis's own (a Python traceback inside the tool)
        // and no failure of the API is run once more; failures never are.
        let tool_error = |out: &std::process::Output| {
            let text = String::from_utf8_lossy(&out.stdout);
            !text.contains("Failures:") && text.contains("Runtime Error")
        };
        if !output.status.success() && tool_error(&output) {
            eprintln!(
                "as {role}: Schemathesis failed inside itself, running it again:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
            output = run().await.expect("schemathesis runs");
        }
        if !output.status.success() {
            failed.push(format!(
                "as {role}:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
