//! The sandbox: plugins that loop, hoard memory, panic, reach for the network, the
//! filesystem, the environment or a secret are stopped with the right error, and the
//! host goes on serving other calls.

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use oubli::runtime::{RuntimeError, digest_of};
use oubli_tests::{load, plugin_path, runtime, serve, subject, system};
use std::sync::{Arc, Mutex};

const SECRET: &str = "s3cr3t-token-value";

/// Asserts that a plain call still works on this runtime.
async fn still_serves(rt: &Arc<oubli::runtime::Runtime>) {
    let plugin = load(rt, "oubli_testkit");
    let sys = system(rt, "name = \"plain\"\n");
    let found = rt
        .locate(&plugin, &sys, &subject(&[("behaviour", "ok")]))
        .await
        .expect("an ordinary call succeeds");
    assert_eq!(found.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_is_stopped_at_its_deadline() {
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let sys = system(&rt, "name = \"looping\"\n[limits]\ntimeout_ms = 300\n");
    let error = rt
        .locate(&plugin, &sys, &subject(&[("behaviour", "loop")]))
        .await
        .unwrap_err();
    assert_eq!(error, RuntimeError::Timeout(300));
    assert!(error.is_retryable(), "a timeout is retried");
    still_serves(&rt).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unbounded_allocation_is_stopped_at_the_memory_cap() {
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let sys = system(&rt, "name = \"hoarding\"\n[limits]\nmemory_mb = 32\n");
    let error = rt
        .locate(&plugin, &sys, &subject(&[("behaviour", "alloc")]))
        .await
        .unwrap_err();
    assert_eq!(error, RuntimeError::OutOfMemory(32));
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("32 MiB"), "{error}");
    still_serves(&rt).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_fails_the_call_with_the_panic_message() {
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let sys = system(&rt, "name = \"panicking\"\n");
    let error = rt
        .locate(&plugin, &sys, &subject(&[("behaviour", "panic")]))
        .await
        .unwrap_err();
    match &error {
        RuntimeError::Trap(message) => assert!(
            message.contains("the testkit panics on purpose"),
            "{message}"
        ),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(!error.is_retryable());
    still_serves(&rt).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_error_keeps_its_kind() {
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let sys = system(&rt, "name = \"busy\"\n");
    let error = rt
        .locate(&plugin, &sys, &subject(&[("behaviour", "unavailable")]))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        RuntimeError::Unavailable("the testkit says the system is busy".into())
    );
    assert!(error.is_retryable());
}

/// What a [`counting_server`] saw of one request: its method and its `Content-Length`
/// and `Transfer-Encoding` headers.
type Seen = (String, Option<String>, Option<String>);

/// A server on loopback that answers `hello` to any request at `/` and records each.
async fn counting_server() -> (
    std::net::SocketAddr,
    Arc<Mutex<Vec<Seen>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let (address, server) = serve(Router::new().route(
        "/",
        axum::routing::any(move |method: axum::http::Method, headers: HeaderMap| {
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|v| v.to_str().unwrap_or_default().to_owned())
            };
            log.lock().unwrap().push((
                method.to_string(),
                header("content-length"),
                header("transfer-encoding"),
            ));
            async { "hello" }
        }),
    ))
    .await;
    (address, seen, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn http_is_denied_unless_granted_and_allow_listed() {
    let (address, hits, _server) = counting_server().await;
    let url = format!("http://{address}/");
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let call = |toml: &str| {
        let sys = system(&rt, toml);
        let (rt, plugin, url) = (rt.clone(), plugin.clone(), url.clone());
        async move {
            rt.locate(
                &plugin,
                &sys,
                &subject(&[("behaviour", "http"), ("url", &url)]),
            )
            .await
        }
    };

    let error = call("name = \"no-http\"\n").await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Denied(m) if m.contains("capability `http` is not granted")),
        "{error:?}"
    );

    let error = call("name = \"elsewhere\"\n[capabilities.http]\nallow = [\"api.example.org\"]\n")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Denied(m) if m.contains("not on the allow-list")),
        "{error:?}"
    );

    let listed = format!(
        "name = \"loopback\"\n[capabilities.http]\nallow = [\"127.0.0.1:{}\"]\n",
        address.port()
    );
    let error = call(&listed).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Denied(m) if m.contains("loopback or private")),
        "{error:?}"
    );
    assert_eq!(
        hits.lock().unwrap().len(),
        0,
        "no refused request reached the server"
    );

    let allowed = format!("{listed}allow_private = true\n");
    let found = call(&allowed)
        .await
        .expect("an allowed request goes through");
    assert_eq!(found[0].key, "200");
    assert_eq!(found[2].key, "hello");
    assert_eq!(hits.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_over_the_size_cap_is_refused() {
    let (address, _server) =
        serve(Router::new().route("/big", get(|| async { "x".repeat(4 << 20) }))).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let sys = system(
        &rt,
        "name = \"capped\"\n[capabilities.http]\nallow = [\"127.0.0.1\"]\nallow_private = true\nmax_response_bytes = 65536\n",
    );
    let url = format!("http://{address}/big");
    let error = rt
        .locate(
            &plugin,
            &sys,
            &subject(&[("behaviour", "http"), ("url", &url)]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Failed(m) if m.contains("size cap")),
        "{error:?}"
    );
    still_serves(&rt).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_filled_in_on_the_way_out_and_never_reach_the_guest() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let (address, _server) = serve(Router::new().route(
        "/",
        get(move |headers: HeaderMap| {
            let value = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            log.lock().unwrap().push(value.clone());
            async move { "ok" }
        }),
    ))
    .await;
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), format!("{SECRET}\n")).unwrap();
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let toml = |hosts: &str| {
        format!(
            "name = \"with-secret\"\n[capabilities]\nhost = true\n[capabilities.http]\nallow = [\"127.0.0.1\", \"localhost\"]\nallow_private = true\n[secrets.API_TOKEN]\nfile = \"{}\"\nhosts = [{hosts}]\n",
            secret_file.path().display()
        )
    };
    let sys = system(&rt, &toml("\"127.0.0.1\""));
    let url = format!("http://{address}/");
    let found = rt
        .locate(
            &plugin,
            &sys,
            &subject(&[
                ("behaviour", "http"),
                ("url", &url),
                ("authorization", "Bearer {{secret:API_TOKEN}}"),
            ]),
        )
        .await
        .expect("the request is sent");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [format!("Bearer {SECRET}")],
        "the server got the real credential"
    );
    assert_eq!(found[0].key, "200");

    // The same secret, bound to another host, is not sent to this one.
    let sys = system(&rt, &toml("\"api.example.org\""));
    let url = format!("http://localhost:{}/", address.port());
    let error = rt
        .locate(
            &plugin,
            &sys,
            &subject(&[
                ("behaviour", "http"),
                ("url", &url),
                ("authorization", "Bearer {{secret:API_TOKEN}}"),
            ]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Denied(m) if m.contains("API_TOKEN")),
        "{error:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    // Reading it back through config or the environment finds nothing.
    let sys = system(&rt, &toml(""));
    let found = rt
        .locate(&plugin, &sys, &subject(&[("behaviour", "secret")]))
        .await
        .expect("the call runs");
    assert!(found.is_empty(), "the secret leaked: {found:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_environment_and_arguments_are_out_of_reach() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "private content").unwrap();
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let sys = system(&rt, "name = \"isolated\"\n");
    let path = file.path().display().to_string();
    let error = rt
        .locate(
            &plugin,
            &sys,
            &subject(&[("behaviour", "file"), ("path", &path)]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Failed(m) if m.contains("cannot read") && !m.contains("private content")),
        "{error:?}"
    );

    let found = rt
        .locate(&plugin, &sys, &subject(&[("behaviour", "env")]))
        .await
        .expect("the call runs");
    assert!(found.is_empty(), "the guest saw the host: {found:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_and_sql_capabilities_are_denied_unless_granted() {
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let sys = system(&rt, "name = \"bare\"\n");
    let error = rt
        .locate(&plugin, &sys, &subject(&[("behaviour", "log")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Denied(m) if m.contains("`host`")),
        "{error:?}"
    );
    let error = rt
        .locate(
            &plugin,
            &sys,
            &subject(&[("behaviour", "sql"), ("statement", "SELECT 1")]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Denied(m) if m.contains("`sql`")),
        "{error:?}"
    );

    let sys = system(
        &rt,
        "name = \"granted\"\n[capabilities]\nhost = true\nsql = { url = \"sqlite::memory:\" }\n",
    );
    let found = rt
        .locate(&plugin, &sys, &subject(&[("behaviour", "log")]))
        .await
        .expect("log is granted");
    assert_eq!(found[0].collection, "logged");
    let found = rt
        .locate(
            &plugin,
            &sys,
            &subject(&[("behaviour", "sql"), ("statement", "SELECT 41 + 1")]),
        )
        .await
        .expect("sql is granted");
    assert_eq!(found[0].key, "42");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_whose_digest_changed_is_refused() {
    let rt = runtime();
    let bytes = std::fs::read(plugin_path("oubli_testkit")).unwrap();
    let pinned = digest_of(&bytes);
    rt.load("testkit", &bytes, Some(&pinned))
        .expect("the pinned digest matches");
    let mut changed = bytes.clone();
    changed.extend_from_slice(b"\0");
    let error = rt.load("testkit", &changed, Some(&pinned)).unwrap_err();
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.contains("the file changed")),
        "{error:?}"
    );
    let error = rt.load("garbage", b"not wasm", None).unwrap_err();
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.contains("not a valid WebAssembly component")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_calls_in_parallel_leave_ordinary_calls_working() {
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let sys = system(
        &rt,
        "name = \"mixed\"\n[limits]\ntimeout_ms = 500\nmemory_mb = 16\n",
    );
    let mut calls = Vec::new();
    for i in 0..24 {
        let behaviour = ["loop", "alloc", "panic", "ok"][i % 4];
        let (rt, plugin, sys) = (rt.clone(), plugin.clone(), sys.clone());
        calls.push(tokio::spawn(async move {
            (
                behaviour,
                rt.locate(&plugin, &sys, &subject(&[("behaviour", behaviour)]))
                    .await,
            )
        }));
    }
    for call in calls {
        let (behaviour, result) = call.await.unwrap();
        match behaviour {
            "ok" => assert!(result.is_ok(), "{result:?}"),
            "loop" => assert_eq!(result.unwrap_err(), RuntimeError::Timeout(500)),
            "alloc" => assert_eq!(result.unwrap_err(), RuntimeError::OutOfMemory(16)),
            _ => assert!(matches!(result, Err(RuntimeError::Trap(_)))),
        }
    }
    still_serves(&rt).await;
}

/// Runs one testkit `locate` and returns its result and how long it took.
async fn timed(
    rt: &Arc<oubli::runtime::Runtime>,
    sys: &Arc<oubli::runtime::Grant>,
    identities: &[(&str, &str)],
) -> (
    Result<Vec<oubli::runtime::RecordRef>, RuntimeError>,
    std::time::Duration,
) {
    let plugin = load(rt, "oubli_testkit");
    let started = std::time::Instant::now();
    let result = rt.locate(&plugin, sys, &subject(identities)).await;
    (result, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_waiting_inside_the_host_is_stopped_at_its_deadline() {
    let rt = runtime();
    let sys = system(&rt, "name = \"sleeping\"\n[limits]\ntimeout_ms = 400\n");
    // Four sleepers at once, and an ordinary call meanwhile.
    let sleepers: Vec<_> = (0..4)
        .map(|_| {
            let (rt, sys) = (rt.clone(), sys.clone());
            tokio::spawn(async move { timed(&rt, &sys, &[("behaviour", "sleep")]).await })
        })
        .collect();
    still_serves(&rt).await;
    for sleeper in sleepers {
        let (result, took) = sleeper.await.unwrap();
        assert_eq!(result.unwrap_err(), RuntimeError::Timeout(400));
        assert!(
            took < std::time::Duration::from_millis(400 + 1_500),
            "the sleeper ran {took:?} against a deadline of 400 ms"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_reaches_only_its_own_sqlite_database_and_reads_only_when_it_locates() {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("own.db");
    let other = dir.path().join("other.db");
    for (path, table) in [(&own, "people"), (&other, "tokens")] {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
        sqlx::query(&format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(&format!("INSERT INTO {table} (v) VALUES ('kept')"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let rt = runtime();
    let sys = system(
        &rt,
        &format!(
            "name = \"own-db\"\n[capabilities]\nsql = {{ url = \"sqlite://{}\" }}\n",
            own.display()
        ),
    );
    let copy = dir.path().join("copy.db");
    let attach = format!("ATTACH DATABASE '{}' AS o", other.display());
    let vacuum = format!("VACUUM INTO '{}'", copy.display());
    for (behaviour, statement) in [
        ("sql", attach.as_str()),
        ("sql", vacuum.as_str()),
        ("sql", "SELECT 1; DELETE FROM people"),
        ("sql", "DELETE FROM people"),
        ("sql", "PRAGMA query_only = 0"),
        ("sql", "SELECT fts3_tokenizer('simple')"),
        ("sql", "SELECT changes()"),
        ("sql-write", "DELETE FROM people"),
        ("sql-write", "CREATE TABLE stolen (x)"),
    ] {
        let (result, _) = timed(
            &rt,
            &sys,
            &[("behaviour", behaviour), ("statement", statement)],
        )
        .await;
        let error = result.expect_err(statement);
        assert!(
            matches!(
                &error,
                RuntimeError::Denied(_) | RuntimeError::InvalidConfig(_)
            ),
            "{statement}: {error:?}"
        );
    }
    assert!(!copy.exists(), "VACUUM INTO wrote a file");
    // Nor can an erasure leave anything on the connection for the next call to find.
    let plugin = load(&rt, "oubli_testkit");
    for statement in [
        "CREATE TEMP TABLE leftover (x INTEGER)",
        "CREATE TEMP TRIGGER spy AFTER DELETE ON people BEGIN SELECT 1; END",
        "PRAGMA temp_store = MEMORY",
    ] {
        let error = rt
            .erase(
                &plugin,
                &sys,
                &subject(&[("behaviour", "sql-write"), ("statement", statement)]),
            )
            .await
            .expect_err(statement);
        assert!(
            matches!(&error, RuntimeError::Denied(_)),
            "{statement}: {error:?}"
        );
    }
    let (found, _) = timed(
        &rt,
        &sys,
        &[("behaviour", "sql"), ("statement", "SELECT v FROM people")],
    )
    .await;
    assert_eq!(found.unwrap()[0].key, "kept", "the row is still there");

    // A locate right after an erasure cannot write, neither with the statement the
    // erasure ran nor with one of its own, and an erasure after a locate writes again.
    let append = "UPDATE people SET v = v || '!'";
    for (i, statement) in [
        append,
        "DELETE FROM people",
        "INSERT INTO people (v) VALUES ('x')",
    ]
    .into_iter()
    .enumerate()
    {
        rt.erase(
            &plugin,
            &sys,
            &subject(&[("behaviour", "sql-write"), ("statement", append)]),
        )
        .await
        .expect("an erasure writes");
        let (result, _) = timed(&rt, &sys, &[("behaviour", "sql"), ("statement", statement)]).await;
        let error = result.expect_err(statement);
        assert!(
            matches!(&error, RuntimeError::Denied(_)),
            "{statement}: {error:?}"
        );
        // A read between them, which the next erasure follows.
        let (found, _) = timed(
            &rt,
            &sys,
            &[("behaviour", "sql"), ("statement", "SELECT v FROM people")],
        )
        .await;
        assert_eq!(found.unwrap()[0].key, format!("kept{}", "!".repeat(i + 1)));
    }
    let (found, _) = timed(
        &rt,
        &sys,
        &[
            ("behaviour", "sql"),
            ("statement", "SELECT group_concat(v) FROM people"),
        ],
    )
    .await;
    assert_eq!(
        found.unwrap()[0].key,
        "kept!!!",
        "three erasures wrote, no locate did"
    );

    // A file replaced since the last call (a restored backup) is the one reached.
    let replacement = dir.path().join("replacement.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", replacement.display()))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE people (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO people (v) VALUES ('restored')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    std::fs::rename(&replacement, &own).unwrap();
    let (found, _) = timed(
        &rt,
        &sys,
        &[("behaviour", "sql"), ("statement", "SELECT v FROM people")],
    )
    .await;
    assert_eq!(found.unwrap()[0].key, "restored");

    // oubli's own database cannot be a system's database.
    let reserved = Arc::new(
        oubli::runtime::Runtime::new(oubli::runtime::RuntimeSettings {
            reserved_databases: vec![own.display().to_string()],
            ..Default::default()
        })
        .unwrap(),
    );
    let config = oubli::runtime::SystemConfig::from_toml(&format!(
        "name = \"sneaky\"\n[capabilities]\nsql = {{ url = \"sqlite://{}/./own.db\" }}\n",
        dir.path().display()
    ))
    .unwrap();
    let error = reserved.prepare(&config).unwrap_err();
    assert!(
        error.to_string().contains("oubli's own database"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runaway_sqlite_statement_stops_at_the_deadline() {
    let rt = runtime();
    let sys = system(
        &rt,
        "name = \"runaway\"\n[limits]\ntimeout_ms = 400\n[capabilities]\nsql = { url = \"sqlite::memory:\" }\n",
    );
    let endless =
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
    let (result, took) = timed(&rt, &sys, &[("behaviour", "sql"), ("statement", endless)]).await;
    let error = result.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(
        took < std::time::Duration::from_millis(400 + 1_500),
        "{took:?}"
    );
    // Text functions whose work grows with the text times the pattern run in one step
    // no interrupt reaches: oubli's versions are linear, well inside a 5 s deadline
    // (SQLite's own `instr` here runs for about an hour).
    let roomy = system(
        &rt,
        "name = \"roomy\"\n[limits]\ntimeout_ms = 5000\n[capabilities]\nsql = { url = \"sqlite::memory:\" }\n",
    );
    for statement in [
        "SELECT instr(hex(zeroblob(8000000)), hex(zeroblob(4000000)) || '1')",
        "SELECT length(replace(hex(zeroblob(8000000)), hex(zeroblob(4000000)) || '1', 'x'))",
        "SELECT length(trim(replace(hex(zeroblob(8000000)), '0', 'y'), hex(zeroblob(4000000)) || 'y'))",
    ] {
        let (result, _) = timed(
            &rt,
            &roomy,
            &[("behaviour", "sql"), ("statement", statement)],
        )
        .await;
        assert!(result.is_ok(), "{statement}: {result:?}");
    }
    let long_pattern = format!("SELECT 'a' LIKE '{}'", "%a".repeat(200));
    let (result, _) = timed(
        &rt,
        &sys,
        &[("behaviour", "sql"), ("statement", &long_pattern)],
    )
    .await;
    assert!(result.is_err(), "a LIKE pattern over the limit is refused");
    let huge = "SELECT zeroblob(200000000)";
    let (result, _) = timed(&rt, &sys, &[("behaviour", "sql"), ("statement", huge)]).await;
    assert!(
        matches!(&result, Err(RuntimeError::Failed(m)) if m.contains("MiB")),
        "{result:?}"
    );
    // Statement texts are cached per connection: a long one is refused before that.
    let padded = format!("SELECT 1 /* {} */", "x".repeat(70_000));
    let (result, _) = timed(&rt, &sys, &[("behaviour", "sql"), ("statement", &padded)]).await;
    assert!(
        matches!(&result, Err(RuntimeError::Failed(m)) if m.contains("64 KiB")),
        "{result:?}"
    );
    still_serves(&rt).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_echoed_by_the_server_never_reaches_the_guest() {
    use base64::Engine;
    let (address, _server) = serve(Router::new().route(
        "/echo",
        get(|headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(&auth);
            (
                [("x-echo", encoded.clone())],
                format!("you sent {auth} ({encoded})"),
            )
        }),
    ))
    .await;
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), SECRET).unwrap();
    let rt = runtime();
    let sys = system(
        &rt,
        &format!(
            "name = \"echo\"\n[capabilities.http]\nallow = [\"127.0.0.1\"]\nallow_private = true\n[secrets.API_TOKEN]\nfile = \"{}\"\n",
            secret_file.path().display()
        ),
    );
    let url = format!("http://{address}/echo");
    let (found, _) = timed(
        &rt,
        &sys,
        &[
            ("behaviour", "http"),
            ("url", &url),
            ("authorization", "Bearer {{secret:API_TOKEN}}"),
        ],
    )
    .await;
    let found = found.expect("the call runs");
    let body = &found[2].key;
    assert!(body.contains("redacted by oubli"), "{body}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET);
    assert!(
        !body.contains(SECRET) && !body.contains(&encoded[..12]),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_per_call_are_capped_and_non_global_addresses_refused() {
    let (address, hits, _server) = counting_server().await;
    let rt = runtime();
    let sys = system(
        &rt,
        "name = \"chatty\"\n[capabilities.http]\nallow = [\"127.0.0.1\"]\nallow_private = true\nmax_requests = 5\n",
    );
    let url = format!("http://{address}/");
    let (result, _) = timed(
        &rt,
        &sys,
        &[("behaviour", "http-many"), ("url", &url), ("count", "50")],
    )
    .await;
    assert!(
        matches!(&result, Err(RuntimeError::Denied(m)) if m.contains("max_requests")),
        "{result:?}"
    );
    assert_eq!(hits.lock().unwrap().len(), 5);

    for host in ["[::127.0.0.1]", "[64:ff9b::7f00:1]", "[::ffff:127.0.0.1]"] {
        let sys = system(
            &rt,
            &format!("name = \"sly\"\n[capabilities.http]\nallow = [\"{host}\"]\n"),
        );
        let url = format!("http://{host}:{}/", address.port());
        let (result, _) = timed(&rt, &sys, &[("behaviour", "http"), ("url", &url)]).await;
        assert!(
            matches!(&result, Err(RuntimeError::Denied(m)) if m.contains("non-global")),
            "{host}: {result:?}"
        );
    }
    assert_eq!(hits.lock().unwrap().len(), 5, "no refused request arrived");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_report_and_an_export_are_checked() {
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let sys = system(&rt, "name = \"liar\"\n");
    let error = rt
        .erase(&plugin, &sys, &subject(&[("behaviour", "blank-basis")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Failed(m) if m.contains("legal basis")),
        "{error:?}"
    );
    let error = rt
        .access(&plugin, &sys, &subject(&[("behaviour", "bad-value")]), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Failed(m) if m.contains("not JSON")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_are_sent_with_their_length() {
    let (address, seen, _server) = counting_server().await;
    let rt = runtime();
    let sys = system(
        &rt,
        "name = \"lengths\"\n[capabilities.http]\nallow = [\"127.0.0.1\"]\nallow_private = true\n",
    );
    let url = format!("http://{address}/");
    for (method, body) in [("post", Some("{\"a\":1}")), ("delete", None)] {
        let mut identities = vec![
            ("behaviour", "http"),
            ("url", url.as_str()),
            ("method", method),
        ];
        if let Some(body) = body {
            identities.push(("body", body));
        }
        let (found, _) = timed(&rt, &sys, &identities).await;
        assert_eq!(found.expect("the request is sent")[0].key, "200");
    }
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            ("POST".to_owned(), Some("7".to_owned()), None),
            ("DELETE".to_owned(), Some("0".to_owned()), None),
        ],
        "no body is sent chunked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_found_in_the_data_or_a_compressed_answer_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keys.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE api_keys (token TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO api_keys VALUES (?1)")
        .bind(SECRET)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (address, _server) = serve(Router::new().route(
        "/",
        get(|| async { ([("content-encoding", "gzip")], "compressed, maybe an echo") }),
    ))
    .await;
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), SECRET).unwrap();
    let rt = runtime();
    let sys = system(
        &rt,
        &format!(
            "name = \"keeper\"\n[capabilities]\nsql = {{ url = \"sqlite://{}\" }}\n[capabilities.http]\nallow = [\"127.0.0.1\"]\nallow_private = true\n[secrets.API_TOKEN]\nfile = \"{}\"\n",
            db.display(),
            secret_file.path().display()
        ),
    );
    // The data holds the secret: the result is refused.
    let (result, _) = timed(
        &rt,
        &sys,
        &[
            ("behaviour", "sql"),
            ("statement", "SELECT token FROM api_keys"),
        ],
    )
    .await;
    assert!(
        matches!(&result, Err(RuntimeError::Denied(m)) if m.contains("holds a secret")),
        "{result:?}"
    );
    // A database error that quotes it: the message is cleared of it.
    let (result, _) = timed(
        &rt,
        &sys,
        &[
            ("behaviour", "sql"),
            ("statement", &format!("SELECT * FROM [{SECRET}]")),
        ],
    )
    .await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("no such table") && !message.contains(SECRET),
        "{message}"
    );
    // A compressed answer cannot be checked: refused.
    let url = format!("http://{address}/");
    let (result, _) = timed(&rt, &sys, &[("behaviour", "http"), ("url", &url)]).await;
    assert!(
        matches!(&result, Err(RuntimeError::Denied(m)) if m.contains("encoded")),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_server_without_a_trusted_certificate_is_refused() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A TLS server on loopback with a certificate no public authority signed.
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (connections, handshakes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (seen, done) = (connections.clone(), handshakes.clone());
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            if acceptor.accept(stream).await.is_ok() {
                done.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let rt = runtime();
    let sys = system(
        &rt,
        &format!(
            "name = \"tls\"\n[capabilities.http]\nallow = [\"localhost:{port}\"]\nallow_private = true\n"
        ),
    );
    let url = format!("https://localhost:{port}/");
    let (result, _) = timed(&rt, &sys, &[("behaviour", "http"), ("url", &url)]).await;
    let error = result.unwrap_err();
    // The handshake was tried and failed (not a plain request to a TLS port).
    assert!(
        matches!(&error, RuntimeError::Unavailable(m) if m.contains("Tls")),
        "{error:?}"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the host connected once"
    );
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "no TLS session was established with an untrusted certificate"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_whose_strings_alias_one_buffer_is_refused_while_it_is_copied() {
    let rt = runtime();
    let sys = system(&rt, "name = \"aliasing\"\n[limits]\nmemory_mb = 32\n");
    // 4,096 names over the same 1 MiB of guest memory: 4 GiB if the host copied it all.
    let (result, _) = timed(&rt, &sys, &[("behaviour", "alias"), ("count", "4096")]).await;
    let error = result.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Failed(m) if m.contains("more than 32 MiB at once")),
        "{error:?}"
    );
    // A reply that fits is copied (and then refused for its 1 MiB names, as any is).
    let (result, _) = timed(&rt, &sys, &[("behaviour", "alias"), ("count", "2")]).await;
    assert!(
        matches!(&result, Err(RuntimeError::Failed(m)) if m.contains("collection")),
        "{result:?}"
    );
    still_serves(&rt).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_built_and_held_cannot_hoard_host_memory() {
    let rt = runtime();
    let sys = system(
        &rt,
        "name = \"hoarding-requests\"\n[capabilities.http]\nallow = [\"api.example.org\"]\n",
    );
    // 100 unsent requests whose methods are 1 MiB each: each method is refused.
    let (result, _) = timed(
        &rt,
        &sys,
        &[("behaviour", "method-hoard"), ("count", "100")],
    )
    .await;
    let keys: Vec<(String, String)> = result
        .unwrap()
        .into_iter()
        .map(|r| (r.collection, r.key))
        .collect();
    assert_eq!(
        keys,
        [
            ("held".into(), "100".into()),
            ("refused".into(), "100".into())
        ]
    );
    // A resource per request: past the call's limit, the call fails.
    let (result, _) = timed(
        &rt,
        &sys,
        &[
            ("behaviour", "method-hoard"),
            ("count", "5000"),
            ("bytes", "3"),
        ],
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    // Without the grant, WASI's HTTP is not there at all.
    let bare = system(&rt, "name = \"no-http\"\n");
    let (result, _) = timed(&rt, &bare, &[("behaviour", "method-hoard")]).await;
    assert!(
        matches!(&result, Err(RuntimeError::Denied(m)) if m.contains("capability `http` is not granted")),
        "{result:?}"
    );
    still_serves(&rt).await;
}
