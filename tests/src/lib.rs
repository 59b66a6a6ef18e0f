//! Helpers shared by oubli's end-to-end tests: the runtime with the test plugins, demo
//! CRM databases and small servers on loopback.
#![forbid(unsafe_code)]

pub mod browser;
pub mod company;

use oubli::runtime::{Grant, Identity, Plugin, Runtime, RuntimeSettings, Subject, SystemConfig};
use std::path::PathBuf;
use std::sync::Arc;

/// The path of a component built from `plugins/`, e.g. `oubli_testkit`.
pub fn plugin_path(name: &str) -> PathBuf {
    PathBuf::from(oubli::plugins::BUILD_DIR).join(format!("{name}.wasm"))
}

/// A runtime without a compile cache, with the default limits.
pub fn runtime() -> Arc<Runtime> {
    Arc::new(Runtime::new(RuntimeSettings::default()).expect("the runtime starts"))
}

/// Loads a component built from `plugins/`.
pub fn load(runtime: &Runtime, name: &str) -> Arc<Plugin> {
    let bytes =
        std::fs::read(plugin_path(name)).expect("the plugins workspace was built by host/build.rs");
    runtime.load(name, &bytes, None).expect("the plugin loads")
}

/// Validates a system configuration given as TOML.
pub fn system(runtime: &Runtime, toml: &str) -> Arc<Grant> {
    runtime
        .prepare(&SystemConfig::from_toml(toml).expect("valid TOML"))
        .expect("a valid system")
}

/// What `validate` says of a system configuration that must be refused (it panics if
/// the configuration is accepted).
pub async fn refusal(
    runtime: &Arc<Runtime>,
    plugin: &Arc<Plugin>,
    config: &SystemConfig,
) -> oubli::runtime::RuntimeError {
    let system = runtime.prepare(config).expect("a system the runtime takes");
    match runtime.validate(plugin, &system).await {
        Ok(()) => panic!("the configuration of {} was accepted", config.name),
        Err(error) => error,
    }
}

/// (collection, key) pairs written out, to compare with what a connector found.
pub fn places(pairs: &[(&str, &str)]) -> std::collections::BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(c, k)| ((*c).to_owned(), (*k).to_owned()))
        .collect()
}

/// The (collection, key) of each record.
pub fn places_of<'a>(
    records: impl Iterator<Item = (&'a String, &'a String)>,
) -> std::collections::BTreeSet<(String, String)> {
    records.map(|(c, k)| (c.clone(), k.clone())).collect()
}

/// A subject with the given identities.
pub fn subject(identities: &[(&str, &str)]) -> Subject {
    Subject {
        request_id: "test-request".into(),
        identities: identities
            .iter()
            .map(|(k, v)| Identity {
                kind: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
    }
}

/// A temporary folder holding a fresh demo CRM with `customers` customers, and the path of
/// its database.
pub async fn demo_crm(customers: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("crm.db");
    oubli::demo::create_crm(&path, customers)
        .await
        .expect("the demo CRM is written");
    (dir, path)
}

/// Counts the rows of `table` in a SQLite database matching `condition`.
pub async fn count(db: &std::path::Path, table: &str, condition: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open the database");
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {condition}"))
        .fetch_one(&mut conn)
        .await
        .expect("count rows");
    conn.close().await.ok();
    n
}

/// A HTTP server on 127.0.0.1 serving `router` until the returned handle is dropped, and
/// its address.
pub async fn serve(router: axum::Router) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let handle = tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("the test server runs");
    });
    (address, handle)
}

/// The `oubli` binary next to this test binary, built by `cargo test --workspace`.
pub fn oubli_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let binary = dir.join(format!("oubli{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        binary.display()
    );
    binary
}

/// Runs `oubli audit verify ARGS` on the service folder `data_dir` with the environment
/// `envs`; returns whether the trail verified, and the report it printed.
pub fn audit_verify(
    data_dir: &std::path::Path,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &str)],
) -> (bool, serde_json::Value) {
    let output = std::process::Command::new(oubli_binary())
        .args(["audit", "verify"])
        .args(args)
        .env("OUBLI_DATA_DIR", data_dir)
        .envs(envs.iter().copied())
        .output()
        .expect("oubli audit verify runs");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&output.stderr).into_owned())
    });
    (output.status.success(), report)
}

/// Runs one SQL statement with one bound integer on the service database in `data_dir`
/// (the service stopped), as someone with access to the file would.
pub async fn tamper(data_dir: &std::path::Path, statement: &str, value: i64) {
    use sqlx::Connection;
    let db = format!("sqlite://{}", data_dir.join("oubli.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&db)
        .await
        .expect("the database");
    sqlx::query(statement)
        .bind(value)
        .execute(&mut conn)
        .await
        .expect("the statement runs");
    conn.close().await.expect("closed");
}

/// The tokens and ids of a service's demo setup.
#[derive(Debug, Clone, Default)]
pub struct Demo {
    pub admin: String,
    pub dpo: String,
    pub controller: String,
    pub controller_id: String,
    pub crm: PathBuf,
}

/// A running oubli service on a random loopback port, with its data in a folder of its
/// own: `oubli serve` in a process of its own ([`Service::start`]), for tests that kill
/// it or read its logs, or the same service in the test's process ([`Service::spawn_app`]),
/// which starts faster. Dropping it kills the process or stops the in-process service.
pub struct Service {
    host: Host,
    pub url: String,
    /// A worker process's id, as in the attempt log; empty for `serve`.
    pub worker: String,
    pub data_dir: PathBuf,
    pub demo: Demo,
    pub http: reqwest::Client,
}

enum Host {
    Process {
        child: std::process::Child,
        output: Arc<std::sync::Mutex<String>>,
    },
    InProcess(Option<oubli::serve::Running>),
}

/// Appends every line to `into` on a thread of its own, also to this process's stderr
/// when `echo` (so a failing test shows the service's log).
fn collect(
    lines: impl Iterator<Item = std::io::Result<String>> + Send + 'static,
    into: Arc<std::sync::Mutex<String>>,
    echo: bool,
) {
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if echo {
                eprintln!("{line}");
            }
            let mut into = into.lock().expect("output");
            into.push_str(&line);
            into.push('\n');
        }
    });
}

impl Service {
    /// Starts the service on `data_dir` with extra `OUBLI_…` settings, and waits until it
    /// listens. On a new folder the demo setup's tokens are read from its output.
    pub fn start(data_dir: &std::path::Path, settings: &[(&str, &str)]) -> Service {
        Service::start_with(&["serve"], data_dir, settings)
    }

    /// Starts `oubli <args>` (`serve`, `serve --no-workers` or `worker`) like
    /// [`Service::start`]; a worker, which has no API, has an empty `url`.
    pub fn start_with(
        args: &[&str],
        data_dir: &std::path::Path,
        settings: &[(&str, &str)],
    ) -> Service {
        use std::io::BufRead;
        let mut command = std::process::Command::new(oubli_binary());
        command
            .args(args)
            .env("OUBLI_LISTEN", "127.0.0.1:0")
            .env("OUBLI_DATA_DIR", data_dir)
            .env("OUBLI_DEMO_CUSTOMERS", "60")
            .env("OUBLI_BACKOFF_BASE_MS", "100")
            .env("OUBLI_BACKOFF_CAP_MS", "1000")
            .env("OUBLI_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (key, value) in settings {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("oubli serve starts");
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        collect(
            std::io::BufReader::new(stderr).lines(),
            output.clone(),
            true,
        );
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut demo = Demo::default();
        let mut worker = String::new();
        let url = loop {
            let line = lines
                .next()
                .expect("oubli serve printed where it listens before exiting")
                .expect("readable output");
            let value = |prefix: &str| {
                line.trim()
                    .strip_prefix(prefix)
                    .map(|v| v.trim().to_owned())
            };
            if let Some(url) = value("oubli: listening on") {
                break url;
            }
            if let Some(rest) = value("oubli: worker") {
                worker = rest.split(' ').next().unwrap_or_default().to_owned();
                break String::new();
            }
            if let Some(token) = value("admin token:") {
                demo.admin = token;
            } else if let Some(token) = value("dpo token:") {
                demo.dpo = token;
            } else if let Some(token) = value("controller token:") {
                demo.controller = token;
            } else if let Some(rest) = value("controller:") {
                demo.controller_id = rest.rsplit(' ').next().unwrap_or_default().to_owned();
            }
        };
        // Keep draining the output so the service never blocks on a full pipe.
        collect(lines, output.clone(), false);
        demo.crm = data_dir.join("demo-crm.db");
        Service {
            host: Host::Process { child, output },
            url,
            worker,
            data_dir: data_dir.to_owned(),
            demo,
            http: reqwest::Client::new(),
        }
    }

    /// Starts the service of `oubli serve` in this process, on `data_dir` with the same
    /// settings as [`Service::start`] (`OUBLI_…` names, read from `settings` instead of
    /// the environment), on a random loopback port.
    pub async fn spawn_app(data_dir: &std::path::Path, settings: &[(&str, &str)]) -> Service {
        Service::spawn_app_with(data_dir, settings, |_| {}).await
    }

    /// [`Service::spawn_app`] with the configuration changed by `edit` (settings that
    /// have no `OUBLI_…` variable, such as `[smtp]`).
    pub async fn spawn_app_with(
        data_dir: &std::path::Path,
        settings: &[(&str, &str)],
        edit: impl FnOnce(&mut oubli::config::Config),
    ) -> Service {
        let defaults = [
            ("OUBLI_LISTEN", "127.0.0.1:0"),
            ("OUBLI_DEMO_CUSTOMERS", "60"),
            ("OUBLI_BACKOFF_BASE_MS", "100"),
            ("OUBLI_BACKOFF_CAP_MS", "1000"),
        ];
        let data = data_dir.to_string_lossy();
        let lookup = |var: &str| {
            settings
                .iter()
                .rev()
                .chain(defaults.iter())
                .chain([("OUBLI_DATA_DIR", data.as_ref())].iter())
                .find(|(key, _)| *key == var)
                .map(|(_, value)| (*value).to_owned())
        };
        let mut config =
            oubli::config::Config::load_with(None, lookup).expect("a valid configuration");
        edit(&mut config);
        let running = oubli::serve::start(config, oubli::serve::Mode::All)
            .await
            .expect("the service starts");
        let address = running.address.expect("the service listens");
        let mut demo = Demo {
            crm: data_dir.join("demo-crm.db"),
            ..Demo::default()
        };
        if let Some(setup) = &running.demo {
            demo.admin = setup.admin.clone();
            demo.dpo = setup.dpo.clone();
            demo.controller = setup.controller.clone();
            demo.controller_id = setup.controller_id.clone();
        }
        Service {
            url: format!("http://{address}"),
            worker: running.worker_id.clone().unwrap_or_default(),
            host: Host::InProcess(Some(running)),
            data_dir: data_dir.to_owned(),
            demo,
            http: reqwest::Client::new(),
        }
    }

    /// The service's shared context, for a service in this process.
    pub fn app(&self) -> &std::sync::Arc<oubli::app::App> {
        match &self.host {
            Host::InProcess(Some(running)) => &running.app,
            _ => panic!("only a service in this process shows its context"),
        }
    }

    fn child(&mut self) -> &mut std::process::Child {
        match &mut self.host {
            Host::Process { child, .. } => child,
            Host::InProcess(_) => {
                panic!("this needs a process of its own: start the service with Service::start")
            }
        }
    }

    /// Everything the process wrote to stdout and stderr after it started listening
    /// (stderr from the start), for checking its logs.
    pub fn output(&self) -> String {
        match &self.host {
            Host::Process { output, .. } => output.lock().expect("output").clone(),
            Host::InProcess(_) => {
                panic!("an in-process service has no output of its own: use Service::start")
            }
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        match &self.host {
            Host::Process { child, .. } => child.id(),
            Host::InProcess(_) => panic!("an in-process service has no process id of its own"),
        }
    }

    /// Kills the process at once, as a crash would.
    pub fn kill9(mut self) {
        let child = self.child();
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        let child = self.child();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        child.wait().expect("reap").success()
    }

    /// Sends a request with a bearer token and returns the status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// Creates a token with `role` for `controller_id` through the API as `admin`;
    /// returns the token.
    pub async fn token(&self, admin: &str, role: &str, controller_id: &str) -> String {
        let body = serde_json::json!({ "role": role, "controller_id": controller_id, "label": format!("test {role}") });
        let (status, token) = self.post("/v1/tokens", admin, body).await;
        assert_eq!(status, 201, "{token}");
        token["token"].as_str().expect("a token").to_owned()
    }

    /// The digest of the embedded first-party plugin `builtin:<name>`, as `/v1/plugins`
    /// lists it.
    pub async fn builtin_digest(&self, admin: &str, name: &str) -> String {
        let (_, plugins) = self.get("/v1/plugins", admin).await;
        plugins["items"]
            .as_array()
            .expect("a list of plugins")
            .iter()
            .find(|p| p["name"] == format!("builtin:{name}"))
            .expect("the first-party plugins are registered at start")["digest"]
            .as_str()
            .expect("a digest")
            .to_owned()
    }

    /// Uploads the testkit plugin under `name` with an admin token; returns the status
    /// and the JSON answer.
    pub async fn upload_testkit(&self, admin: &str, name: &str) -> (u16, serde_json::Value) {
        self.upload_plugin(admin, name, "oubli_testkit").await
    }

    /// Uploads the component built from `plugins/` as `file` (e.g. `oubli_evidencekit`)
    /// under `name` with an admin token; returns the status and the JSON answer.
    pub async fn upload_plugin(
        &self,
        admin: &str,
        name: &str,
        file: &str,
    ) -> (u16, serde_json::Value) {
        let bytes = std::fs::read(plugin_path(file)).expect("the plugins workspace is built");
        let response = self
            .http
            .post(format!("{}/v1/plugins", self.url))
            .query(&[("name", name)])
            .bearer_auth(admin)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .expect("the service answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    /// Submits a request for the demo controller as its DPO; returns its id.
    pub async fn submit(
        &self,
        kind: &str,
        identities: serde_json::Value,
        changes: Option<serde_json::Value>,
    ) -> String {
        let mut body = serde_json::json!({ "controller_id": self.demo.controller_id, "kind": kind, "identities": identities });
        if let Some(changes) = changes {
            body["changes"] = changes;
        }
        let (status, request) = self.post("/v1/requests", &self.demo.dpo, body).await;
        assert_eq!(status, 201, "{request}");
        request["id"].as_str().expect("an id").to_owned()
    }

    /// GETs `path` until `done` holds for its JSON body (or two minutes pass), and returns
    /// that body.
    pub async fn poll(
        &self,
        path: &str,
        token: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let (status, body) = self.get(path, token).await;
            assert_eq!(status, 200, "{path}: {body}");
            if done(&body) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} never reached the awaited state: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The actions of the events a page at `path` lists, in order.
    pub async fn actions(&self, path: &str, token: &str) -> Vec<String> {
        let (status, page) = self.get(path, token).await;
        assert_eq!(status, 200, "{path}: {page}");
        page["items"]
            .as_array()
            .expect("a page of events")
            .iter()
            .map(|e| e["action"].as_str().expect("an action").to_owned())
            .collect()
    }

    /// Waits for the purge job's first checkpoint of the access log, and returns its
    /// signed details.
    pub async fn checkpoint(&self) -> serde_json::Value {
        let page = self
            .poll("/v1/audit?action=audit.purged", &self.demo.admin, |page| {
                page["items"]
                    .as_array()
                    .is_some_and(|items| !items.is_empty())
            })
            .await;
        serde_json::from_str(page["items"][0]["details"].as_str().expect("details"))
            .expect("a checkpoint is JSON")
    }

    /// Waits until the request reaches a status that is not `running` or `approved`, and
    /// returns the request.
    pub async fn settled(&self, id: &str) -> serde_json::Value {
        self.settled_as(id, &self.demo.dpo).await
    }

    /// [`Service::settled`] with another DPO's token.
    pub async fn settled_as(&self, id: &str, token: &str) -> serde_json::Value {
        self.poll(&format!("/v1/requests/{id}"), token, |r| {
            !matches!(r["status"].as_str(), Some("running" | "approved"))
        })
        .await
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        match &mut self.host {
            Host::Process { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Stopped in the background; the test's runtime ends its tasks when it ends.
            Host::InProcess(running) => {
                if let Some(running) = running.take()
                    && let Ok(runtime) = tokio::runtime::Handle::try_current()
                {
                    runtime.spawn(running.stop());
                }
            }
        }
    }
}

/// A database of its own on a PostgreSQL or MySQL/MariaDB server, dropped when this value
/// is dropped.
pub struct ServerDb {
    /// The URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

impl ServerDb {
    /// Creates a database on the server named by the environment variable `var`
    /// (`OUBLI_TEST_POSTGRES_URL` or `OUBLI_TEST_MYSQL_URL`); `None`, with a note on
    /// stderr, when the variable is unset.
    pub async fn create(var: &str) -> Option<ServerDb> {
        let Ok(admin_url) = std::env::var(var) else {
            eprintln!("skipped: set {var} to run this test against a real server");
            return None;
        };
        let name = format!("oubli_test_{}", uuid_like());
        run_admin(&admin_url, &format!("CREATE DATABASE {name}")).await;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        Some(ServerDb {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        })
    }

    /// Runs statements (separated by `;`) in the database.
    pub async fn execute(&self, script: &str) {
        for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            run_admin(&self.url, statement).await;
        }
    }

    /// Counts the rows of `table` matching `condition`.
    pub async fn count(&self, table: &str, condition: &str) -> i64 {
        let pool = connect(&self.url).await;
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {condition}"))
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        n
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // The test's runtime may be shutting down: drop the database from a runtime of its own.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let force = if admin_url.starts_with("postgres") {
                " WITH (FORCE)"
            } else {
                ""
            };
            runtime.block_on(run_admin(
                &admin_url,
                &format!("DROP DATABASE IF EXISTS {name}{force}"),
            ));
        })
        .join()
        .ok();
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", nanos, std::process::id())
}

/// A pool on a PostgreSQL or MySQL/MariaDB server, whichever the URL names.
async fn connect(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

async fn run_admin(url: &str, statement: &str) {
    let pool = connect(url).await;
    sqlx::raw_sql(statement)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    pool.close().await;
}

/// The demo CRM's schema and `customers` customers, as SQL that PostgreSQL and MySQL
/// both run: the same shape and rows as [`oubli::demo::create_crm`] writes to SQLite.
pub fn server_crm_script(customers: u64) -> String {
    let mut sql = String::from(
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL UNIQUE, phone VARCHAR(64), \
           first_name VARCHAR(255) NOT NULL, last_name VARCHAR(255) NOT NULL, city VARCHAR(255), created_at VARCHAR(64) NOT NULL);\n\
         CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, placed_at VARCHAR(64) NOT NULL, \
           shipping_address VARCHAR(255) NOT NULL, total_cents BIGINT NOT NULL, FOREIGN KEY (customer_id) REFERENCES customers(id));\n\
         CREATE TABLE order_items (id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL, sku VARCHAR(64) NOT NULL, quantity BIGINT NOT NULL, \
           gift_message VARCHAR(255), FOREIGN KEY (order_id) REFERENCES orders(id));\n\
         CREATE TABLE support_tickets (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, subject VARCHAR(255) NOT NULL, \
           body VARCHAR(1024) NOT NULL, FOREIGN KEY (customer_id) REFERENCES customers(id));\n\
         CREATE TABLE invoices (id BIGINT PRIMARY KEY, customer_id BIGINT, number VARCHAR(64) NOT NULL UNIQUE, billing_email VARCHAR(255), \
           billing_name VARCHAR(255) NOT NULL, billing_address VARCHAR(255) NOT NULL, amount_cents BIGINT NOT NULL, issued_at VARCHAR(64) NOT NULL, \
           FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE SET NULL);\n",
    );
    let names = [
        "Camille", "Louis", "Inès", "Hugo", "Léa", "Jules", "Chloé", "Adam", "Manon", "Noah",
    ];
    let (mut order, mut item, mut ticket) = (0, 0, 0);
    for n in 1..=customers {
        let email = oubli::demo::customer_email(n);
        let first = names[(n as usize) % names.len()];
        sql.push_str(&format!(
            "INSERT INTO customers VALUES ({n}, '{email}', '+33 6 00 00 00 {:02}', '{first}', 'Martin', 'Lyon', '2024-01-01');\n",
            n % 100
        ));
        for _ in 0..(n % 3 + 1) {
            order += 1;
            sql.push_str(&format!("INSERT INTO orders VALUES ({order}, {n}, '2025-01-01', '1 rue de la Paix', 1000);\n"));
            for _ in 0..2 {
                item += 1;
                sql.push_str(&format!(
                    "INSERT INTO order_items VALUES ({item}, {order}, 'SKU-{item}', 1, NULL);\n"
                ));
            }
            sql.push_str(&format!(
                "INSERT INTO invoices VALUES ({order}, {n}, 'F-{order}', '{email}', '{first} Martin', '1 rue de la Paix', 1000, '2025-01-01');\n"
            ));
        }
        if n % 2 == 0 {
            ticket += 1;
            sql.push_str(&format!(
                "INSERT INTO support_tickets VALUES ({ticket}, {n}, 'Retard', 'Bonjour');\n"
            ));
        }
    }
    sql
}

/// json-server (from the npm registry, pinned in `tests/apps`), a third-party REST
/// application, serving `db` on a loopback port of its own until dropped. `None`, with a
/// note on stderr, when `OUBLI_TEST_JSON_SERVER` (the path of its `json-server` command)
/// is unset.
pub struct JsonServer {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl JsonServer {
    pub async fn start(db: &serde_json::Value) -> Option<JsonServer> {
        JsonServer::start_with(db, None).await
    }

    /// As [`JsonServer::start`], behind HTTP Basic authentication (express-basic-auth,
    /// from the npm registry) for the user `oubli` with `password`, when given.
    pub async fn start_with(db: &serde_json::Value, password: Option<&str>) -> Option<JsonServer> {
        let Ok(command) = std::env::var("OUBLI_TEST_JSON_SERVER") else {
            eprintln!(
                "skipped: set OUBLI_TEST_JSON_SERVER to tests/apps/node_modules/.bin/json-server (after `npm ci` in tests/apps) to run this test against json-server"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("a temporary folder");
        let file = dir.path().join("db.json");
        std::fs::write(&file, db.to_string()).expect("db.json is written");
        // A free port: taken from the kernel, then handed to the server.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // The file first: `--middlewares` takes every path that follows it.
        let mut server = std::process::Command::new(&command);
        server
            .arg(&file)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--quiet",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(password) = password {
            server
                .arg("--middlewares")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/apps/basic-auth.js"))
                .env("JSON_SERVER_PASSWORD", password);
        }
        let child = server
            .spawn()
            .unwrap_or_else(|e| panic!("{command} starts: {e}"));
        let address = format!("127.0.0.1:{port}");
        let server = JsonServer {
            child,
            url: format!("http://{address}"),
            address,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if reqwest::get(format!("{}/db", server.url)).await.is_ok() {
                return Some(server);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "json-server did not answer on {}",
                server.url
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The collection as the server holds it now.
    pub async fn records(&self, collection: &str) -> Vec<serde_json::Value> {
        reqwest::get(format!("{}/{collection}", self.url))
            .await
            .expect("json-server answers")
            .json()
            .await
            .expect("a JSON array")
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `webhook-signature` a Standard Webhooks receiver expects for a message, computed
/// from the convention (HMAC-SHA256 of `id.timestamp.body` under the base64 part of the
/// `whsec_` secret), not from oubli's code.
pub fn standard_webhooks_signature(secret: &str, id: &str, timestamp: &str, body: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("base64");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}
