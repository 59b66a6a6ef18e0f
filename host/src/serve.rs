//! `oubli serve` and `oubli worker`: the API, the workers, the webhook sender and the
//! purge job, all in one process on the embedded SQLite database (with a demo setup on
//! first start), or split over any number of processes sharing one PostgreSQL database.

use crate::app::App;
use crate::auth::{self, Role};
use crate::config::Config;
use crate::controller::{self, Article15, NewController, NewSystem};
use crate::runtime::{Runtime, RuntimeSettings};
use crate::store::Store;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The service running in this process.
pub struct Running {
    pub app: Arc<App>,
    /// Where the API listens; `None` in a worker process.
    pub address: Option<std::net::SocketAddr>,
    /// The demo setup made on this start, if the database was new.
    pub demo: Option<DemoSetup>,
    /// The id this process's workers claim tasks under (in leases and the attempt log);
    /// `None` when it runs no workers.
    pub worker_id: Option<String>,
    stop: watch::Sender<bool>,
    /// The workers, the webhook sender, the purge job and the `LISTEN` task.
    background: Vec<tokio::task::JoinHandle<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Held while the service runs on SQLite; released by the system even on a crash.
    _lock: Option<std::fs::File>,
}

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `oubli serve`: the API and the workers with the webhook sender and the purge job.
    All,
    /// `oubli serve --no-workers`: the API only.
    Api,
    /// `oubli worker`: the workers with the webhook sender and the purge job.
    Worker,
}

impl Mode {
    fn serves_api(self) -> bool {
        self != Mode::Worker
    }

    fn runs_tasks(self) -> bool {
        self != Mode::Api
    }
}

/// Runs the service until SIGINT or SIGTERM.
///
/// # Errors
/// When the database, the runtime or the listening socket cannot be set up.
pub async fn serve(config: Config, mode: Mode) -> anyhow::Result<()> {
    let running = start(config, mode).await?;
    if let Some(demo) = &running.demo {
        println!("oubli: first start: created a demo setup (the tokens are shown only this once)");
        println!("  controller:        Demo Shop {}", demo.controller_id);
        println!(
            "  system:            crm, the demo CRM at {} ({} customers)",
            demo.crm.display(),
            running.app.config.demo_customers
        );
        println!("  admin token:       {}", demo.admin);
        println!("  dpo token:         {}", demo.dpo);
        println!("  controller token:  {}", demo.controller);
    }
    match running.address {
        Some(address) => {
            if running.demo.is_some() {
                println!(
                    "oubli: the console is at http://{address}/console (sign in with the DPO token printed above)"
                );
            }
            println!("oubli: listening on http://{address}");
            println!("oubli: the API is described at http://{address}/v1/openapi.json");
        }
        None => println!(
            "oubli: worker {} running {} tasks at once",
            running.worker_id.as_deref().unwrap_or_default(),
            running.app.config.workers
        ),
    }
    signal().await;
    println!("oubli: stopping: running tasks finish or hand their lease back");
    running.stop().await;
    println!("oubli: stopped");
    Ok(())
}

/// Opens the database, resumes interrupted tasks, makes the demo setup on a new database
/// (when configured), and starts the API, the workers and the webhook sender.
///
/// # Errors
/// When the database, the runtime or the listening socket cannot be set up.
pub async fn start(mut config: Config, mode: Mode) -> anyhow::Result<Running> {
    // Bound first, so that the links oubli gives out name the port it really listens on
    // when it was told to pick one (`listen = "127.0.0.1:0"`) and no `public_url` is set.
    let listener = if mode.serves_api() {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        if config.public_url.is_none() && config.listen.port() == 0 {
            config.public_url = Some(format!("http://{}", listener.local_addr()?));
        }
        Some(listener)
    } else {
        None
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let shared = crate::store::is_postgres(&config.database_location());
    if !shared && mode != Mode::All {
        anyhow::bail!(
            "database: running the API and the workers in separate processes needs a PostgreSQL database \
             (database = \"postgres://…\"); on the embedded SQLite file, `oubli serve` runs both"
        );
    }
    // One process per SQLite file: a second one would take the first one's tasks back.
    let lock = if shared {
        None
    } else {
        let lock_path = config.data_dir.join("oubli.lock");
        let lock = std::fs::File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            anyhow::bail!(
                "another oubli process is running on {} (it holds {}); stop it first",
                config.data_dir.display(),
                lock_path.display()
            );
        }
        Some(lock)
    };
    let store = Store::open(&config.database_location()).await?;
    let keys = crate::crypto::Keys::load_or_create(&config.data_dir.join("keys"))?;
    let runtime = Arc::new(Runtime::new(RuntimeSettings {
        cache_dir: Some(config.data_dir.join("cache")),
        pseudonym_key: keys.pseudonym,
        // No system may name oubli's own database as its own.
        reserved_databases: vec![config.database_location()],
        ..Default::default()
    })?);
    // Every process reads the subjects of open requests (the API shows them, workers send
    // them to plugins): one without a data key that sealed them would fail them.
    let keys_dir = config.data_dir.join("keys");
    let (open, closed) = crate::request::rows::missing_data_keys(&store, &keys.sealer).await?;
    anyhow::ensure!(
        open.is_empty(),
        "open requests are sealed with data key(s) {} that this process does not have: restore their key files (data-*.key) in {}",
        open.join(", "),
        keys_dir.display()
    );
    if !closed.is_empty() {
        tracing::warn!(
            keys = closed.join(", "),
            "closed requests are sealed with data keys this process does not have; their redaction waits until the key files are back in {}",
            keys_dir.display()
        );
    }
    if let Some(metrics) = crate::api::install_metrics() {
        // Histograms keep their samples until drained: drained here whether or not
        // anything scrapes.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                metrics.run_upkeep();
            }
        });
    }
    let app = App::new(config, store, runtime, keys);
    // One process owns an SQLite database: tasks still marked running were interrupted
    // when the last process stopped, and are queued again (after a wait that grows with
    // their interruptions). On PostgreSQL they may be another process's: their leases
    // expire instead.
    if !shared {
        let resumed =
            crate::queue::resume_interrupted(&app.store, &app.config.task_backoff()).await?;
        if resumed > 0 {
            tracing::info!(resumed, "resumed tasks interrupted by the last stop");
        }
    }
    register_builtins(&app).await?;
    // Uploads whose compilation a stop interrupted are compiled again, in the background
    // (on PostgreSQL, those another process has not been compiling for a while).
    for digest in controller::take_stale_compilations(&app.store, !shared).await? {
        let compiling = app.compile_in_background(&digest, None);
        tokio::spawn(async move {
            match compiling.await {
                Ok(Ok(_)) => {
                    tracing::info!(%digest, "compiled a plugin uploaded before the last stop")
                }
                Ok(Err(e)) => {
                    tracing::warn!(%digest, error = %e, "a plugin uploaded before the last stop could not be registered")
                }
                Err(e) => tracing::warn!(%digest, error = %e, "compiling a plugin stopped"),
            }
        });
    }
    let demo = if app.config.demo && mode.serves_api() {
        demo_setup(&app).await?
    } else {
        None
    };

    let (stop, stopped) = watch::channel(false);
    let mut background = Vec::new();
    let mut worker_id = None;
    if mode.runs_tasks() {
        // Leases carry this process's id; fencing works by a token unique to each claim.
        let owner = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
        worker_id = Some(owner.clone());
        background.push(tokio::spawn(crate::worker::run(
            app.clone(),
            owner,
            stopped.clone(),
        )));
        let links: crate::notify::LinkMaker = {
            let app = app.clone();
            std::sync::Arc::new(move |purpose: &str, id: &str| app.link_url(purpose, id))
        };
        let subjects: crate::notify::email::SubjectAddress = {
            let sealer = app.keys.sealer.clone();
            std::sync::Arc::new(move |id: &str, sealed: &str| {
                crate::request::rows::subject_email(&sealer, id, sealed)
            })
        };
        let processor: crate::notify::ProcessorSigner = {
            let app = app.clone();
            std::sync::Arc::new(move || app.processor())
        };
        background.push(tokio::spawn(crate::notify::run(
            app.store.clone(),
            app.config.clone(),
            links,
            subjects,
            processor,
            app.webhooks_ready.clone(),
            stopped.clone(),
        )));
        background.push(tokio::spawn(purge(app.clone(), stopped.clone())));
        background.push(tokio::spawn(crate::expiry::run_loop(
            app.clone(),
            stopped.clone(),
        )));
        if let Some(url) = app.store.postgres_url() {
            background.push(tokio::spawn(crate::worker::listen(
                app.clone(),
                url.to_owned(),
                stopped.clone(),
            )));
        }
    }
    let (address, server) = if let Some(listener) = listener {
        let address = listener.local_addr()?;
        let router = crate::api::router(app.clone()).layer(
            tower_http::timeout::RequestBodyTimeoutLayer::new(Duration::from_secs(
                app.config.http_body_timeout_secs,
            )),
        );
        let limits = HttpLimits {
            header_timeout: Duration::from_secs(app.config.http_header_timeout_secs),
            max_connections: connection_cap(app.config.max_connections),
        };
        let server = serve_http(listener, router, limits, stopped.clone());
        (Some(address), Some(tokio::spawn(server)))
    } else {
        (None, None)
    };
    Ok(Running {
        app,
        address,
        demo,
        worker_id,
        stop,
        background,
        server,
        _lock: lock,
    })
}

impl Running {
    /// Stops taking work: the API closes, each worker finishes its running task within
    /// the grace period or hands its lease back, and the database is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.background {
            let _ = task.await;
        }
        if let Some(server) = self.server {
            match tokio::time::timeout(Duration::from_secs(10), server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::error!(error = %e, "the HTTP server stopped with an error")
                }
                Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server task failed"),
                _ => tracing::warn!("open HTTP connections did not close within 10 s"),
            }
        }
        self.app.store.close().await;
    }
}

/// How the HTTP server bounds its clients.
struct HttpLimits {
    header_timeout: Duration,
    max_connections: usize,
}

/// Raises the soft open-file limit to the hard one, and returns how many connections to
/// serve at once: `wanted`, or half the open files allowed if that is fewer (the other
/// half is for the databases, plugins and files).
fn connection_cap(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current.is_some_and(|soft| soft < hard)
    {
        limit.current = Some(hard);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
    let allowed = getrlimit(Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    if allowed < wanted {
        tracing::warn!(
            wanted,
            allowed,
            "max_connections lowered to half the open files this process may have"
        );
    }
    wanted.min(allowed).max(1)
}

/// Serves HTTP/1.1 on `listener` until `stopped`: at most `max_connections`
/// at once (the next waits to be accepted), each closed when its client takes longer than
/// `header_timeout` to send a request's headers or stays idle that long; then waits for
/// the open connections to finish their requests.
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTP/1.1 only: telling HTTP/2 apart would first wait for bytes with no timeout.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a reset before accept: wait, go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What the demo setup created.
#[derive(Debug, Clone)]
pub struct DemoSetup {
    pub controller_id: String,
    pub crm: std::path::PathBuf,
    pub admin: String,
    pub dpo: String,
    pub controller: String,
}

/// Registers the embedded first-party plugins this database does not have yet, so that
/// `/v1/plugins` lists them and systems can be connected to them.
async fn register_builtins(app: &Arc<App>) -> anyhow::Result<()> {
    for builtin in crate::plugins::BUILTIN {
        let digest = crate::runtime::digest_of(builtin.bytes);
        if controller::get_plugin(&app.store, &digest).await?.is_none() {
            controller::register_builtin(&app.store, &app.runtime, builtin.name, "system").await?;
        }
    }
    Ok(())
}

async fn demo_setup(app: &Arc<App>) -> anyhow::Result<Option<DemoSetup>> {
    if controller::any_controller(&app.store).await? {
        return Ok(None);
    }
    let crm = app.config.data_dir.join("demo-crm.db");
    if !crm.exists() {
        crate::demo::create_crm(&crm, app.config.demo_customers)
            .await
            .context("writing the demo CRM")?;
    }
    let crm = crm.canonicalize()?;
    let sql = crate::plugins::builtin("sql").expect("the SQL connector is embedded");
    let plugin = controller::get_plugin(&app.store, &crate::runtime::digest_of(sql.bytes))
        .await?
        .context("the SQL connector is registered at start")?;
    let demo = crate::demo::crm_system("crm", &crm);
    let mut tx = app.store.begin().await?;
    let (shop, _secret) = controller::create_controller(
        &mut tx,
        &NewController {
            name: "Demo Shop".into(),
            webhook_url: None,
            auto_approve: false,
            contact_email: Some("controller@demo-shop.example".into()),
        },
    )
    .await?;
    controller::create_system(
        &mut tx,
        &shop.id,
        &NewSystem::from_config(
            demo,
            &plugin.digest,
            Article15 {
                purposes: vec![
                    "selling and delivering orders".into(),
                    "customer support".into(),
                    "accounting".into(),
                ],
                categories: vec![
                    "contact".into(),
                    "identity".into(),
                    "location".into(),
                    "purchases".into(),
                    "communications".into(),
                    "billing".into(),
                ],
                recipients: vec!["the carrier delivering the orders".into()],
                retention: "three years after the last order; invoices ten years".into(),
                source: "the customer".into(),
            },
        ),
    )
    .await?;
    let (_, admin) = auth::create(&mut tx, Role::Admin, None, "demo admin").await?;
    let (dpo_id, dpo) = auth::create(&mut tx, Role::Dpo, Some(&shop.id), "demo DPO").await?;
    auth::set_email(&mut tx, &dpo_id, "dpo@demo-shop.example").await?;
    let (_, controller) =
        auth::create(&mut tx, Role::Controller, Some(&shop.id), "demo controller").await?;
    crate::audit::append(
        &mut tx,
        "system",
        "demo.created",
        None,
        serde_json::json!({ "controller_id": shop.id }),
    );
    tx.commit().await?;
    Ok(Some(DemoSetup {
        controller_id: shop.id,
        crm,
        admin,
        dpo,
        controller,
    }))
}

/// Waits for SIGINT or SIGTERM.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or(());
}

/// Runs the purge jobs every `purge_interval_secs` until `stop` turns true.
async fn purge(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = std::time::Duration::from_secs(app.config.purge_interval_secs.max(1));
    loop {
        crate::evidence::retention::run_once(crate::api::evidence(&app)).await;
        metrics::counter!("oubli_purge_runs_total").increment(1);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
