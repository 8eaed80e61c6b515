//! What the node answers when nothing is scripted: a tiny key/value store,
//! connection commands, and the cluster/info commands of a one-node cluster
//! that owns every slot.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::parse::{parse_int, Command};

/// The node's name and address, as it reports them in CLUSTER and INFO replies.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) port: u16,
    /// 40 lowercase hex digits, like a real node id.
    pub(crate) id: String,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

/// The in-memory store behind GET/SET/DEL; expiry is checked lazily on access.
#[derive(Debug, Default)]
pub(crate) struct Store {
    map: Mutex<HashMap<Vec<u8>, Entry>>,
}

impl Store {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Vec<u8>, Entry>) -> T) -> T {
        // A connection thread never panics while holding the lock, but if one
        // did the map is still consistent: every update is a single insert/remove.
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut map)
    }

    pub(crate) fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) {
        let entry = Entry {
            value: value.to_vec(),
            expires: ttl.and_then(|t| Instant::now().checked_add(t)),
        };
        self.with(|m| m.insert(key.to_vec(), entry));
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.with(|m| match m.get(key) {
            Some(e) if e.expires.is_some_and(|t| t <= Instant::now()) => {
                m.remove(key);
                None
            }
            Some(e) => Some(e.value.clone()),
            None => None,
        })
    }

    /// Removes a key; whether a live (unexpired) value was there.
    fn del(&self, key: &[u8]) -> bool {
        self.with(|m| {
            m.remove(key)
                .is_some_and(|e| e.expires.is_none_or(|t| t > Instant::now()))
        })
    }
}

/// What the connection does after a default reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum After {
    Continue,
    /// `QUIT`: flush the reply, then close.
    Close,
}

/// The upper-case command name, for dispatch and counters.
pub(crate) fn name(cmd: &Command) -> String {
    cmd.first()
        .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
        .unwrap_or_default()
}

/// Appends the default reply to `cmd` to `out`.
pub(crate) fn reply(me: &Identity, store: &Store, cmd: &Command, out: &mut Vec<u8>) -> After {
    let name = name(cmd);
    let args = cmd.get(1..).unwrap_or_default();
    match (name.as_str(), args) {
        ("PING", []) => simple(out, "PONG"),
        ("PING" | "ECHO", [msg]) => bulk(out, msg),
        ("GET", [key]) => match store.get(key) {
            Some(v) => bulk(out, &v),
            None => out.extend_from_slice(b"$-1\r\n"),
        },
        ("PING" | "ECHO" | "GET", _) => arity(out, &name),
        ("SET", [key, value, opts @ ..]) => match set_ttl(opts) {
            Ok(ttl) => {
                store.set(key, value, ttl);
                simple(out, "OK");
            }
            Err(msg) => error(out, msg),
        },
        ("DEL", keys) if !keys.is_empty() => {
            let n = keys.iter().filter(|k| store.del(k)).count();
            int(out, n as i64);
        }
        ("SET" | "DEL", _) => arity(out, &name),
        ("READONLY" | "READWRITE" | "ASKING" | "AUTH" | "CLIENT" | "SELECT", _) => {
            simple(out, "OK");
        }
        ("QUIT", _) => {
            simple(out, "OK");
            return After::Close;
        }
        ("ROLE", []) => {
            out.extend_from_slice(b"*3\r\n");
            bulk(out, b"master");
            int(out, 0);
            out.extend_from_slice(b"*0\r\n");
        }
        ("CLUSTER", [sub, ..]) => cluster(me, sub, out),
        ("INFO", []) => bulk(out, info(me, "all").as_bytes()),
        ("INFO", [section]) => {
            let section = String::from_utf8_lossy(section).to_ascii_lowercase();
            bulk(out, info(me, &section).as_bytes());
        }
        _ => unknown(out, cmd),
    }
    After::Continue
}

/// The expiry options of SET (`EX s`, `PX ms`); anything else is a syntax error.
fn set_ttl(opts: &[Vec<u8>]) -> Result<Option<Duration>, &'static str> {
    match opts {
        [] => Ok(None),
        [unit, n] => {
            let unit = unit.to_ascii_uppercase();
            let n = parse_int(n).ok_or("ERR value is not an integer or out of range")?;
            let n = u64::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or("ERR invalid expire time in 'set' command")?;
            match unit.as_slice() {
                b"EX" => Ok(Some(Duration::from_secs(n))),
                b"PX" => Ok(Some(Duration::from_millis(n))),
                _ => Err("ERR syntax error"),
            }
        }
        _ => Err("ERR syntax error"),
    }
}

fn cluster(me: &Identity, sub: &[u8], out: &mut Vec<u8>) {
    let port = i64::from(me.port);
    match sub.to_ascii_uppercase().as_slice() {
        b"SHARDS" => {
            // The shape of Redis 7.0's reply: one shard, its slot range as a
            // flat list of pairs, its nodes as flat field/value lists.
            out.extend_from_slice(b"*1\r\n*4\r\n");
            bulk(out, b"slots");
            out.extend_from_slice(b"*2\r\n");
            int(out, 0);
            int(out, 16383);
            bulk(out, b"nodes");
            out.extend_from_slice(b"*1\r\n*14\r\n");
            bulk(out, b"id");
            bulk(out, me.id.as_bytes());
            bulk(out, b"port");
            int(out, port);
            for (field, value) in [
                ("ip", "127.0.0.1"),
                ("endpoint", "127.0.0.1"),
                ("role", "master"),
            ] {
                bulk(out, field.as_bytes());
                bulk(out, value.as_bytes());
            }
            bulk(out, b"replication-offset");
            int(out, 0);
            bulk(out, b"health");
            bulk(out, b"online");
        }
        b"SLOTS" => {
            out.extend_from_slice(b"*1\r\n*3\r\n");
            int(out, 0);
            int(out, 16383);
            out.extend_from_slice(b"*3\r\n");
            bulk(out, b"127.0.0.1");
            int(out, port);
            bulk(out, me.id.as_bytes());
        }
        b"INFO" => bulk(
            out,
            b"cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n\
cluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
cluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:1\r\n\
cluster_my_epoch:1\r\n",
        ),
        b"NODES" => {
            // No cluster bus: the bus port is printed as 0.
            let line = format!(
                "{} 127.0.0.1:{}@0 myself,master - 0 0 1 connected 0-16383\n",
                me.id, me.port
            );
            bulk(out, line.as_bytes());
        }
        b"MYID" => bulk(out, me.id.as_bytes()),
        _ => error(
            out,
            &format!(
                "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
                String::from_utf8_lossy(sub)
            ),
        ),
    }
}

/// INFO text for one section (`all`/`everything`/`default` for all of them);
/// an unknown section gives an empty text, as in Redis.
fn info(me: &Identity, section: &str) -> String {
    let all = matches!(section, "all" | "everything" | "default");
    let mut text = String::new();
    if all || section == "server" {
        text.push_str(&format!(
            "# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\nrun_id:{}\r\ntcp_port:{}\r\n\r\n",
            me.id, me.port
        ));
    }
    if all || section == "replication" {
        text.push_str(
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n\r\n",
        );
    }
    if all || section == "cluster" {
        text.push_str("# Cluster\r\ncluster_enabled:1\r\n");
    }
    text
}

fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    // A CR or LF inside would end the error line early and desynchronise the client.
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

fn int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(format!(":{n}\r\n").as_bytes());
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn arity(out: &mut Vec<u8>, name: &str) {
    error(
        out,
        &format!(
            "ERR wrong number of arguments for '{}' command",
            name.to_ascii_lowercase()
        ),
    );
}

/// Redis's text: `ERR unknown command 'X', with args beginning with: 'a' 'b' `.
fn unknown(out: &mut Vec<u8>, cmd: &Command) {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        cmd.first()
            .map(|n| String::from_utf8_lossy(n))
            .unwrap_or_default()
    );
    for arg in cmd.iter().skip(1).take(8) {
        let arg: String = String::from_utf8_lossy(arg).chars().take(128).collect();
        msg.push_str(&format!("'{arg}' "));
    }
    error(out, &msg);
}
