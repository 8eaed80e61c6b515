//! An example secondary store for slotguard's fallback layer: key → bytes
//! in a real SQLite database (compiled in through `rusqlite`'s `bundled`
//! build).
//!
//! SQLite calls block, so they never run on the async workers: one
//! dedicated thread owns the connection and serves a bounded queue of
//! requests; every call waits for its answer at most the store's timeout
//! (or the request's own deadline). A full queue is an
//! [`StoreError::Overloaded`] at once, not an unbounded backlog.
//!
//! [`SqliteStore`] implements `Service<SecondaryRequest, Response =
//! Option<Bytes>>`, the shape the fallback layer loads through.
//!
//! ```
//! use slotguard_core::SecondaryRequest;
//! use slotguard_store::SqliteStore;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), slotguard_store::StoreError> {
//! let dir = tempfile::tempdir().map_err(slotguard_store::StoreError::io)?;
//! let store = SqliteStore::open(dir.path().join("items.db"))?;
//! store.put("item:1", r#"{"name":"ada"}"#).await?;
//! let value = store.clone().oneshot(SecondaryRequest::load("item:1")).await?;
//! assert_eq!(value.as_deref(), Some(&br#"{"name":"ada"}"#[..]));
//! assert!(store.delete("item:1").await?);
//! assert_eq!(store.get("item:1").await?, None);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod worker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use slotguard_core::SecondaryRequest;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use worker::{Command, Job};

/// What went wrong in the store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    /// The database file or its folder could not be used.
    #[error("io: {0}")]
    Io(Arc<std::io::Error>),
    /// No answer within the deadline (the query may still run).
    #[error("store timed out")]
    Timeout,
    /// The request queue is full: nothing was queued.
    #[error("store is overloaded: request queue full")]
    Overloaded,
    /// The store's thread is gone.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// Wrap an I/O error.
    pub fn io(err: std::io::Error) -> Self {
        StoreError::Io(Arc::new(err))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(err))
    }
}

/// Settings of a [`SqliteStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Longest a call waits for its answer when the request has no sooner
    /// deadline. Default 1 s.
    pub timeout: Duration,
    /// Requests queued for the database thread at most. Default 1,024.
    pub queue: usize,
    /// How long SQLite waits on a lock held by another connection to the
    /// same file. Default 500 ms.
    pub busy_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            timeout: Duration::from_secs(1),
            queue: 1024,
            busy_timeout: Duration::from_millis(500),
        }
    }
}

impl StoreConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    slotguard_core::setters! {
        with_timeout => timeout: Duration,
        with_queue => queue: usize,
    }
}

/// Key → bytes in SQLite, served by one dedicated thread. Cheap to clone;
/// the thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    tx: mpsc::Sender<Job>,
    timeout: Duration,
    path: Arc<PathBuf>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (or create) the database at `path`, default settings.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, StoreConfig::default())
    }

    /// Open (or create) the database at `path`.
    ///
    /// Blocks while the file is opened and the table created (once, at
    /// start-up); every later call runs on the store's thread.
    pub fn open_with(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = worker::open(&path, config.busy_timeout)?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        std::thread::Builder::new()
            .name("slotguard-sqlite".into())
            .spawn(move || worker::run(conn, rx))
            .map_err(StoreError::io)?;
        Ok(SqliteStore {
            tx,
            timeout: config.timeout,
            path: Arc::new(path),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value stored for `key`, if any.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, StoreError> {
        match self.run(Command::Get(key.into()), None).await? {
            worker::Reply::Value(v) => Ok(v),
            _ => Err(StoreError::Closed),
        }
    }

    /// Store `value` for `key` (insert or replace).
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), StoreError> {
        self.run(Command::Put(key.into(), value.into()), None)
            .await
            .map(|_| ())
    }

    /// Remove `key`; whether it was there.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<bool, StoreError> {
        match self.run(Command::Delete(key.into()), None).await? {
            worker::Reply::Deleted(d) => Ok(d),
            _ => Err(StoreError::Closed),
        }
    }

    fn run(
        &self,
        command: Command,
        deadline: Option<Instant>,
    ) -> impl std::future::Future<Output = Result<worker::Reply, StoreError>> + Send + 'static {
        let cap = Instant::now() + self.timeout;
        let deadline = deadline.map_or(cap, |d| d.min(cap));
        let (reply, rx) = oneshot::channel();
        let expired = deadline <= Instant::now();
        // Queued (or refused) now, not when the future is first polled: a
        // full queue answers at once.
        let queued = if expired {
            Err(StoreError::Timeout)
        } else {
            self.tx
                .try_send(Job { command, reply })
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                    mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
                })
        };
        async move {
            queued?;
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => Err(StoreError::Closed),
                Err(_) => Err(StoreError::Timeout),
            }
        }
    }
}

impl tower::Service<SecondaryRequest> for SqliteStore {
    type Response = Option<Bytes>;
    type Error = StoreError;
    type Future = BoxFuture<'static, Result<Option<Bytes>, StoreError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        // Back-pressure is the bounded queue, checked in `call`: a full one
        // fails fast instead of leaving the caller pending.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: SecondaryRequest) -> Self::Future {
        let fut = self.run(Command::Get(req.key().clone()), req.deadline);
        Box::pin(async move {
            match fut.await? {
                worker::Reply::Value(v) => Ok(v),
                _ => Err(StoreError::Closed),
            }
        })
    }
}

#[cfg(test)]
mod tests;
