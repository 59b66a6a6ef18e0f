//! Durable commits on SQLite that share their flushes and do not hold the write
//! connection while the disk writes.
//!
//! In WAL mode, `synchronous = FULL` is `NORMAL` plus a flush (`fsync`) of the log after
//! each commit, made while the commit still holds SQLite's only write connection: every
//! transaction behind it waits for the disk too. Here a durable transaction commits at
//! `NORMAL` (its pages are written to the log, not yet flushed) and then waits until a
//! flush of the log that began after its commit has ended. One flush covers every commit
//! written before it began, so commits made together share one, and the next
//! transaction runs on the write connection meanwhile (the intake writes its next batch
//! while the last one's flush runs).
//!
//! Such a commit is visible to readers before it is on disk, so nothing leaves the
//! process on the strength of what may still be lost: every commit on the write
//! connection is numbered, and every answer of the API, every task's plugin calls and
//! every message sent first waits until every durable commit numbered so far is on disk
//! ([`Flusher::all_on_disk`]); evidence that is signed (a certificate, a destruction
//! report, the trail's head) waits for every commit, relaxed ones too
//! ([`Flusher::everything_on_disk`]), since it may attest what a relaxed commit recorded.
//!
//! The log is flushed through a descriptor of its own: a flush of a file writes every
//! page of it that any descriptor wrote. Its path is the one SQLite itself names (links
//! resolved). Before each flush the file at that path is compared with the one held
//! open; SQLite replaces a log only after a checkpoint has copied it into the database
//! and flushed that, so a log replaced since held nothing that is not on disk, and the
//! new one is opened and flushed with its folder (its name). The write connection is
//! never closed while the store is open, so the log is never missing; if it is, or a
//! flush fails, every durable commit fails from then on, since what the kernel failed to
//! write cannot be told (the caller gets an error, never a success) until oubli starts
//! again; readiness says so, and the workers claim nothing meanwhile.

use sqlx::AnyPool;
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How far the log is known to be on disk.
#[derive(Debug, Clone, Default)]
struct Flushed {
    /// Every commit numbered up to this one.
    upto: u64,
    /// Why a flush failed: every later durable commit fails with it.
    failed: Option<String>,
}

/// The flushes of one SQLite database's log (see the module's description).
#[derive(Debug)]
pub struct Flusher {
    log: PathBuf,
    /// The write connection's pool: a commit given up while it was being sent is known
    /// to be written once the connection has served a later statement.
    write: AnyPool,
    /// Commits on the write connection, numbered as they begin to commit.
    numbered: AtomicU64,
    /// The highest number a durable commit was given.
    durable: AtomicU64,
    /// The highest number whose `COMMIT` has returned. Commits run one at a time on the
    /// one write connection, so every lower number's has returned too.
    written: watch::Sender<u64>,
    flushed: watch::Sender<Flushed>,
    /// Whether a flush is under way (its caller leads it; the others wait for its end).
    flushing: AtomicBool,
    /// The log as last opened, with its device and inode.
    open: Mutex<Option<(File, (u64, u64))>>,
    /// Flushes made, for tests and measures.
    flushes: AtomicU64,
}

impl Flusher {
    /// The flusher of the SQLite database whose write connections `write` lends, the file
    /// at `database` as SQLite names it (its log is `<database>-wal`).
    ///
    /// # Errors
    /// When the log is not there (the database is not in WAL mode, or SQLite named
    /// another file).
    pub fn new(database: &Path, write: AnyPool) -> std::io::Result<Flusher> {
        let mut log = database.as_os_str().to_owned();
        log.push("-wal");
        let log = PathBuf::from(log);
        std::fs::metadata(&log).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("the database's log {}: {e}", log.display()),
            )
        })?;
        Ok(Flusher {
            log,
            write,
            numbered: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            written: watch::Sender::new(0),
            flushed: watch::Sender::new(Flushed::default()),
            flushing: AtomicBool::new(false),
            open: Mutex::new(None),
            flushes: AtomicU64::new(0),
        })
    }

    /// Numbers a commit about to be sent on the write connection (`durable` unless it is
    /// a relaxed one); [`Committing::written`] marks it written once its `COMMIT` returned.
    pub fn number(self: &Arc<Self>, durable: bool) -> Committing {
        let number = self.numbered.fetch_add(1, Ordering::SeqCst) + 1;
        if durable {
            self.durable.fetch_max(number, Ordering::SeqCst);
        }
        Committing {
            flusher: self.clone(),
            number,
            done: false,
        }
    }

    /// Waits until commit `number` is on disk, leading a flush if none that covers it is
    /// under way.
    ///
    /// # Errors
    /// When a flush failed (now or earlier: see the module's description).
    pub async fn on_disk(self: &Arc<Self>, number: u64) -> std::io::Result<()> {
        // (The sender is this flusher's own: the wait cannot end without the number.)
        let _ = self.written.subscribe().wait_for(|w| *w >= number).await;
        let mut flushed = self.flushed.subscribe();
        loop {
            {
                let state = flushed.borrow_and_update();
                if let Some(failed) = &state.failed {
                    return Err(std::io::Error::other(failed.clone()));
                }
                if state.upto >= number {
                    return Ok(());
                }
            }
            if self.flushing.swap(true, Ordering::SeqCst) {
                // Another caller's flush is under way: it ends with a change, and if it
                // began before this commit was written, this caller leads the next.
                let _ = flushed.changed().await;
                continue;
            }
            let leading = Leading(self);
            // Every commit numbered up to `upto` was written before this flush begins.
            let upto = *self.written.borrow();
            // The outcome is recorded by the flush itself, even if this caller gives up.
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.flush(upto)).await;
            drop(leading);
        }
    }

    /// Waits until every durable commit numbered so far, including those still being
    /// sent, is on disk: before anything leaves the process on the strength of what it
    /// read.
    ///
    /// # Errors
    /// As [`Flusher::on_disk`].
    pub async fn all_on_disk(self: &Arc<Self>) -> std::io::Result<()> {
        self.on_disk(self.durable.load(Ordering::SeqCst)).await
    }

    /// As [`Flusher::all_on_disk`], relaxed commits included: before signing evidence.
    ///
    /// # Errors
    /// As [`Flusher::on_disk`].
    pub async fn everything_on_disk(self: &Arc<Self>) -> std::io::Result<()> {
        self.on_disk(self.numbered.load(Ordering::SeqCst)).await
    }

    /// Why durable commits fail, once a flush failed.
    pub fn failed(&self) -> Option<String> {
        self.flushed.borrow().failed.clone()
    }

    /// Flushes made so far.
    #[cfg(test)]
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// The highest commit number known to be on disk.
    #[cfg(test)]
    pub fn flushed_upto(&self) -> u64 {
        self.flushed.borrow().upto
    }

    /// The highest commit number given.
    #[cfg(test)]
    pub fn numbered(&self) -> u64 {
        self.numbered.load(Ordering::SeqCst)
    }

    /// Flushes the log, then records that every commit up to `upto` is on disk, or why
    /// the flush failed; blocks. The outcome is recorded before another flush may begin
    /// (an error is reported once per descriptor: a flush after a failed one may succeed
    /// without having written what the failed one lost).
    fn flush(&self, upto: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.flush_log(&mut open);
        self.flushed.send_modify(|state| match result {
            Ok(()) => state.upto = state.upto.max(upto),
            Err(e) => {
                tracing::error!(log = %self.log.display(), error = %e, "flushing the service database's log to disk failed: durable writes fail until oubli is started again");
                state.failed.get_or_insert_with(|| {
                    format!("flushing the service database's log to disk failed ({e}); restart oubli")
                });
            }
        });
    }

    fn flush_log(&self, open: &mut Option<(File, (u64, u64))>) -> std::io::Result<()> {
        // Missing while the write connection is open, it was not where SQLite keeps it:
        // nothing can be said to be on disk.
        let meta = std::fs::metadata(&self.log)?;
        let at_path = (meta.dev(), meta.ino());
        match open.as_ref() {
            Some((file, id)) if *id == at_path => file.sync_data()?,
            _ => {
                // A log this flusher has not flushed yet: its name is made durable too.
                let file = File::open(&self.log)?;
                let meta = file.metadata()?;
                file.sync_all()?;
                if let Some(folder) = self.log.parent().filter(|p| !p.as_os_str().is_empty()) {
                    File::open(folder)?.sync_all()?;
                }
                *open = Some((file, (meta.dev(), meta.ino())));
            }
        }
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A commit being sent on the write connection, numbered.
#[derive(Debug)]
pub struct Committing {
    flusher: Arc<Flusher>,
    number: u64,
    done: bool,
}

impl Committing {
    /// Marks the commit written (its `COMMIT` returned, or failed); returns its number.
    pub fn written(mut self) -> u64 {
        self.done = true;
        mark_written(&self.flusher, self.number);
        self.number
    }
}

impl Drop for Committing {
    /// Given up while its `COMMIT` was being sent: the connection still runs it, so it is
    /// marked written only once the connection has served a statement after it.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (flusher, number) = (self.flusher.clone(), self.number);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = sqlx::query("SELECT 1").execute(&flusher.write).await;
                    mark_written(&flusher, number);
                });
            }
            // No runtime left to run anything on the connection: nothing waits either.
            Err(_) => mark_written(&flusher, number),
        }
    }
}

fn mark_written(flusher: &Flusher, number: u64) {
    flusher.written.send_if_modified(|written| {
        let later = number > *written;
        if later {
            *written = number;
        }
        later
    });
}

/// The caller leading a flush: when it ends (or is given up), the next may begin, and
/// those waiting look again.
struct Leading<'a>(&'a Flusher);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.flushing.store(false, Ordering::SeqCst);
        self.0.flushed.send_modify(|_| {});
    }
}
