//! The `oubli` binary's plugin commands, run as a plugin author would.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `oubli ARGS` in `dir`, with compiled plugins cached in `dir/cache`.
fn oubli(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oubli"))
        .args(args)
        .current_dir(dir)
        .env("OUBLI_CACHE_DIR", dir.join("cache"))
        .output()
        .expect("the binary runs")
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The JSON report of a command that must succeed.
fn report_of(args: &[&str], dir: &Path) -> serde_json::Value {
    let output = oubli(args, dir);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    json(&output)
}

#[test]
fn inspect_prints_digest_contract_and_description() {
    let dir = tempfile::tempdir().unwrap();
    let output = oubli(&["plugin", "inspect", "builtin:sql"], dir.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json(&output);
    assert_eq!(report["contract"], "oubli:connector@0.2.0");
    assert!(report["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(report["describe"]["name"], "sql");
    // The compiled plugin is kept for the next run.
    let cached = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "cache.key")
        .count();
    assert!(cached >= 1, "the compiled plugin is cached");

    let output = oubli(&["plugin", "inspect", "missing.wasm"], dir.path());
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read plugin missing.wasm"));
}

#[test]
fn call_runs_each_action_against_the_demo_crm() {
    let dir = tempfile::tempdir().unwrap();
    let made = oubli(
        &["demo", "crm", "--dir", ".", "--customers", "20"],
        dir.path(),
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let call = |action: &str, extra: &[&str]| {
        let mut args = vec![
            "plugin",
            "call",
            "builtin:sql",
            "--system",
            "crm-system.toml",
            "--action",
            action,
        ];
        args.extend_from_slice(&["--identity", "email=customer7@example.org"]);
        args.extend_from_slice(extra);
        oubli(&args, dir.path())
    };

    let located = json(&call("locate", &[]));
    assert_eq!(located["system"], "crm");
    // Customer 7: the account, two orders of two items, two invoices; odd customers have no ticket.
    assert_eq!(
        located["result"]["records"].as_array().unwrap().len(),
        1 + 2 + 4 + 2
    );

    let exported = json(&call("access", &[]));
    assert_eq!(exported["result"]["records"].as_array().unwrap().len(), 9);

    let rectified = json(&call("rectify", &["--change", "customers.city=Brest"]));
    assert_eq!(rectified["result"]["changed"][0]["key"], "7");

    let erased = call("erase", &[]);
    assert!(erased.status.success());
    let erased = json(&erased);
    let outcomes: Vec<&str> = erased["result"]["erased"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "deleted").count(),
        7,
        "{erased}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "retained").count(),
        2,
        "{erased}"
    );
    let left = json(&call("locate", &[]));
    assert!(
        left["result"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["collection"] == "invoices")
    );
}

#[test]
fn a_changed_plugin_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        oubli(
            &["demo", "crm", "--dir", ".", "--customers", "2"],
            dir.path()
        )
        .status
        .success()
    );
    let system = dir.path().join("crm-system.toml");
    let text = std::fs::read_to_string(&system).unwrap();
    let pinned = format!("digest = \"sha256:{}\"\n{text}", "0".repeat(64));
    std::fs::write(&system, pinned).unwrap();
    let output = oubli(
        &[
            "plugin",
            "call",
            "builtin:sql",
            "--system",
            "crm-system.toml",
            "--action",
            "locate",
            "--identity",
            "email=a@example.org",
        ],
        dir.path(),
    );
    assert!(!output.status.success());
    let report = json(&output);
    assert_eq!(report["error"], "invalid-config");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("the file changed"),
        "{report}"
    );
}

#[test]
fn the_example_system_configuration_works_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        oubli(
            &["demo", "crm", "--dir", "demo", "--customers", "10"],
            dir.path()
        )
        .status
        .success()
    );
    std::fs::create_dir(dir.path().join("examples")).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/crm-system.toml");
    std::fs::copy(example, dir.path().join("examples/crm-system.toml")).unwrap();
    let output = oubli(
        &[
            "plugin",
            "call",
            "builtin:sql",
            "--system",
            "examples/crm-system.toml",
            "--action",
            "locate",
            "--identity",
            "email=customer7@example.org",
        ],
        dir.path(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(
        json(&output)["result"]["records"].as_array().unwrap().len(),
        9
    );
}

#[test]
fn the_rest_example_works_against_the_demo_api() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut api = Command::new(env!("CARGO_BIN_EXE_oubli"))
        .args(["demo", "api", "--listen", "127.0.0.1:0", "--people", "5"])
        .env("OUBLI_DEMO_API_TOKEN", "cli-test-token")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the demo API starts");
    // The first JSON document it prints ends with a line holding only "}".
    let mut announced = String::new();
    let mut lines = BufReader::new(api.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        announced.push_str(&line);
        if line == "}" {
            break;
        }
    }
    let announced: serde_json::Value = serde_json::from_str(&announced).unwrap();
    let address = announced["listening"].as_str().unwrap().to_owned();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rest-system.toml"),
    )
    .unwrap();
    let system = dir.path().join("rest-system.toml");
    std::fs::write(&system, example.replace("127.0.0.1:8089", &address)).unwrap();
    let call = |action: &str| {
        Command::new(env!("CARGO_BIN_EXE_oubli"))
            .args(["plugin", "call", "builtin:rest", "--system"])
            .arg(&system)
            .args([
                "--action",
                action,
                "--identity",
                "email=person2@example.org",
            ])
            .env("OUBLI_DEMO_API_TOKEN", "cli-test-token")
            .env("OUBLI_CACHE_DIR", dir.path().join("cache"))
            .output()
            .expect("the binary runs")
    };
    let validated = call("validate");
    assert!(validated.status.success(), "{}", json(&validated));
    let located = call("locate");
    let result = json(&located);
    api.kill().unwrap();
    api.wait().unwrap();
    assert!(located.status.success(), "{result}");
    // Person 2: one contact, 2 % 3 + 1 = 3 orders, five events, three consents, and the
    // contact's two notes.
    assert_eq!(
        result["result"]["records"].as_array().unwrap().len(),
        14,
        "{result}"
    );
}

/// Output piped into a reader that stops early (`oubli openapi | head -1`) ends the
/// command quietly, without a panic.
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_oubli"))
        .arg("openapi")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's reading end is closed here, before the rest is written.
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{stderr}");
}

#[test]
fn a_token_is_not_made_where_there_is_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_oubli"))
        .args(["token", "create", "--role", "admin", "--label", "ops"])
        .env("OUBLI_DATA_DIR", dir.path().join("nowhere"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no oubli database at"), "{stderr}");
    assert!(!dir.path().join("nowhere").join("oubli.db").exists());
}

#[test]
fn bench_e2e_counts_the_service_s_statements_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let report = report_of(
        &[
            "bench",
            "e2e",
            "--requests",
            "10",
            "--systems",
            "1",
            "--json",
        ],
        dir.path(),
    );
    let kinds = report["store_statements"].as_array().unwrap();
    let per_kind = |summary: &str| {
        kinds
            .iter()
            .find(|k| k["summary"].as_str().unwrap().starts_with(summary))
            .map(|k| k["per_request"].as_f64().unwrap())
    };
    // Every request inserts itself and appends to the audit trail.
    assert_eq!(per_kind("INSERT INTO requests"), Some(1.0), "{report}");
    assert!(
        per_kind("INSERT INTO audit_events").unwrap() >= 1.0,
        "{report}"
    );
    // The benchmark's own progress reads are not the service's.
    assert_eq!(per_kind("SELECT COUNT(*) FROM requests"), None, "{report}");
    let total: f64 = kinds
        .iter()
        .map(|k| k["per_request"].as_f64().unwrap())
        .sum();
    let printed = report["store_statements_per_request"].as_f64().unwrap();
    assert!((total - printed).abs() < 1e-9, "{report}");
    // Settling reads the request once (`settling_in`), not its tasks, controller,
    // recipients and notices apart; the claim starts the request without reading it
    // again; the auto-approval does not read back what the intake wrote.
    for gone in [
        "SELECT status, COUNT(*)",
        "SELECT unapplied FROM tasks",
        "SELECT controller_id, kind, suppression_hashes",
        "SELECT controller_id, kind, completed_at",
        "SELECT n.events FROM subject_notices",
        "SELECT id, controller_id, status",
        "SELECT kind, not_before, system_id",
        "SELECT p.info FROM systems",
    ] {
        assert_eq!(per_kind(gone), None, "{gone}: {report}");
    }
    // One erasure in one system: 19.7 statements over 300 requests; 10 requests share
    // fewer claims and audit appends, hence the margin. The e-mail sender's statements
    // (it records the DPO e-mails skipped, no SMTP being set) are not the erasure's.
    let sender = [
        "INSERT INTO email_attempts",
        "UPDATE emails",
        "UPDATE webhook_deliveries",
        "SELECT r.kind, r.status, r.received_at",
    ];
    let erasure: f64 = kinds
        .iter()
        .filter(|k| {
            !sender
                .iter()
                .any(|s| k["summary"].as_str().unwrap().starts_with(s))
        })
        .map(|k| k["per_request"].as_f64().unwrap())
        .sum();
    assert!(
        erasure <= 22.0,
        "{erasure} statements per erasure: {report}"
    );
}

/// `bench connectors` replays natively exactly what the plugin sent: on SQLite its locate
/// query, then the erase's query and transaction, with no catalogue read to leave out.
#[test]
fn bench_connectors_replays_the_plugin_s_statements() {
    let dir = tempfile::tempdir().unwrap();
    let report = report_of(
        &[
            "bench",
            "connectors",
            "--customers",
            "200",
            "--subjects",
            "10",
            "--case-insensitive",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(report["plugin_statements"].as_f64(), Some(3.0), "{report}");
    assert_eq!(report["native_statements"].as_f64(), Some(3.0), "{report}");
}

/// `bench api` on SQLite, and on PostgreSQL where the suite has a server: every request is
/// submitted, approved and completed by an `oubli serve` process, whose CPU time and
/// memory are measured apart from the clients'.
#[test]
fn bench_api_runs_the_whole_path_through_a_service_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = vec![Vec::new()];
    if let Ok(url) = std::env::var("OUBLI_TEST_POSTGRES_URL") {
        runs.push(vec![
            "--database".to_owned(),
            url.clone(),
            "--customers-database".to_owned(),
            url,
        ]);
    }
    for extra in runs {
        let mut args = ["bench", "api", "--requests", "10", "--clients", "2"]
            .map(str::to_owned)
            .to_vec();
        args.extend(["--customers", "60", "--json"].map(str::to_owned));
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let report = report_of(&args, dir.path());
        let number = |path: &[&str]| {
            path.iter()
                .fold(&report, |value, key| &value[key])
                .as_f64()
                .unwrap_or_else(|| panic!("{path:?} in {report}"))
        };
        // The benchmark fails unless every request it submitted completed; what it then
        // reports are times the service and the clients measured.
        assert!(number(&["completion", "p50_ms"]) > 0.0, "{report}");
        assert!(number(&["submission", "p50_ms"]) > 0.0, "{report}");
        assert!(number(&["approval", "p50_ms"]) > 0.0, "{report}");
        // The service process's own figures: it compiled a plugin and served requests.
        assert!(number(&["cpu_seconds"]) > 0.0, "{report}");
        assert!(number(&["peak_memory_mib"]) > 10.0, "{report}");
        assert!(number(&["start_memory_mib"]) > 10.0, "{report}");
        // Measured from the first request: the peak of the start is reset.
        assert_eq!(report["peak_since_start"], false, "{report}");
        let plain = number(&["plain_sql_per_second"]);
        let one_client = number(&["plain_sql_per_second_one_client"]);
        assert!(plain > 0.0 && one_client > 0.0, "{report}");
        let ratio = plain.max(one_client) / number(&["per_second"]);
        assert!((ratio - number(&["ratio"])).abs() < 1e-9, "{report}");
    }
}
