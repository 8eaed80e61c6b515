//! The thread that owns the SQLite connection.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

pub(crate) enum Command {
    Get(Bytes),
    Put(Bytes, Bytes),
    Delete(Bytes),
}

pub(crate) enum Reply {
    Value(Option<Bytes>),
    Done,
    Deleted(bool),
}

pub(crate) struct Job {
    pub(crate) command: Command,
    pub(crate) reply: oneshot::Sender<Result<Reply, StoreError>>,
}

pub(crate) fn open(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(StoreError::io)?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    // WAL: readers of other connections to the file are not blocked by our
    // writes; NORMAL sync is durable across application crashes.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    )?;
    Ok(conn)
}

/// Serve jobs until every sender is gone.
pub(crate) fn run(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.blocking_recv() {
        // A caller that gave up (deadline) dropped its receiver: skip the
        // query rather than run it for nobody.
        if job.reply.is_closed() {
            continue;
        }
        let out = execute(&conn, job.command);
        let _ = job.reply.send(out);
    }
}

fn execute(conn: &Connection, command: Command) -> Result<Reply, StoreError> {
    match command {
        Command::Get(key) => {
            let mut stmt = conn.prepare_cached("SELECT value FROM kv WHERE key = ?1")?;
            let value: Option<Vec<u8>> = stmt
                .query_row(params![key.as_ref()], |row| row.get(0))
                .optional()?;
            Ok(Reply::Value(value.map(Bytes::from)))
        }
        Command::Put(key, value) => {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO kv (key, value) VALUES (?1, ?2) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?;
            stmt.execute(params![key.as_ref(), value.as_ref()])?;
            Ok(Reply::Done)
        }
        Command::Delete(key) => {
            let mut stmt = conn.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
            let n = stmt.execute(params![key.as_ref()])?;
            Ok(Reply::Deleted(n > 0))
        }
    }
}
