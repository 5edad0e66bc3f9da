//! The call cache's Redis store, for answers shared by several moa processes (`moa serve` replicas
//! behind a load balancer): `moa:call:<key>` holds the answer's JSON, set with `EX` when a TTL is
//! configured; `moa:sem:<family>` is a list of semantic index entries, trimmed to
//! `semantic::PER_FAMILY`. The memory bound is Redis' own (`maxmemory` with an LRU policy).
//!
//! A dead or slow Redis must not slow calls down: every operation has a short deadline, and after
//! a failure Redis is left alone for `RETRY_AFTER` (calls go uncached meanwhile) before one
//! connection attempt, so it is used again soon after it comes back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};

use super::StoreError;
use super::semantic;

/// Loopback or a LAN answers in well under a millisecond; this only bounds a Redis that hangs.
const OP_TIMEOUT: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long calls skip Redis after it failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Answers larger than this are not shared (a server ignoring max_tokens can send megabytes).
const MAX_ENTRY_BYTES: usize = 1 << 20;

pub struct RedisStore {
    client: Client,
    /// The address for messages: no credentials (the password comes from the environment).
    shown: String,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Set after a failure: Redis is not asked before then.
    retry_at: Mutex<Option<Instant>>,
    /// Whether the last attempt failed, to say once when Redis answers again.
    was_down: Mutex<bool>,
}

impl RedisStore {
    pub fn new(url: &str) -> Result<RedisStore, StoreError> {
        let shown = match url.split_once("://") {
            Some((scheme, rest)) => format!(
                "{scheme}://{}",
                rest.rsplit_once('@').map_or(rest, |(_, host)| host)
            ),
            None => url.to_string(),
        };
        let bad = |e: redis::RedisError| {
            StoreError(format!(
                "cache_url {shown:?} is not a usable Redis address ({e}): write it as redis://HOST:PORT[/DB]"
            ))
        };
        let mut info = url.into_connection_info().map_err(bad)?;
        if let Ok(p) = std::env::var("MOA_REDIS_PASSWORD")
            && !p.is_empty()
        {
            let settings = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(settings);
        }
        Ok(RedisStore {
            client: Client::open(info).map_err(bad)?,
            shown,
            conn: tokio::sync::Mutex::new(None),
            retry_at: Mutex::new(None),
            was_down: Mutex::new(false),
        })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn down(&self, why: String) -> StoreError {
        *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + RETRY_AFTER);
        *self.was_down.lock().unwrap_or_else(|e| e.into_inner()) = true;
        StoreError(format!("Redis at {}: {why}", self.shown))
    }

    fn resting(&self) -> Option<StoreError> {
        let at = *self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        at.filter(|t| Instant::now() < *t).map(|_| {
            StoreError(format!(
                "Redis at {} failed a moment ago (tried again every {} s)",
                self.shown,
                RETRY_AFTER.as_secs()
            ))
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        if let Some(e) = self.resting() {
            return Err(e);
        }
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        // Others waited for this lock while one connection attempt failed: they skip too.
        if let Some(e) = self.resting() {
            return Err(e);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT));
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT + OP_TIMEOUT,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let c = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.down(format!("cannot connect ({e})"))),
            Err(_) => {
                return Err(self.down(format!(
                    "no connection within {} ms",
                    (CONNECT_TIMEOUT + OP_TIMEOUT).as_millis()
                )));
            }
        };
        let mut was_down = self.was_down.lock().unwrap_or_else(|e| e.into_inner());
        if *was_down {
            *was_down = false;
            crate::safe_eprintln!("moa: call cache: Redis at {} answers again", self.shown);
        }
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Run `req`; on failure or past the deadline drop the connection (the next call after
    /// `RETRY_AFTER` connects anew).
    async fn run<T: redis::FromRedisValue>(&self, what: &str, req: Req) -> Result<T, StoreError> {
        let mut c = self.connection().await?;
        let sent = async {
            match &req {
                Req::One(cmd) => cmd.query_async(&mut c).await,
                Req::Many(pipe) => pipe.query_async(&mut c).await,
            }
        };
        let why = match tokio::time::timeout(OP_TIMEOUT, sent).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => format!("{what} failed ({e})"),
            Err(_) => format!("{what} got no answer within {} ms", OP_TIMEOUT.as_millis()),
        };
        *self.conn.lock().await = None;
        Err(self.down(why))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(format!("moa:call:{key}"));
        self.run("GET", Req::One(cmd)).await
    }

    pub async fn put(
        &self,
        key: &str,
        bytes: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Ok(());
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("moa:call:{key}")).arg(bytes);
        if let Some(t) = ttl {
            cmd.arg("EX").arg(t.as_secs().max(1));
        }
        self.run("SET", Req::One(cmd)).await
    }

    /// The family's index entries, oldest first, as one byte string.
    pub async fn index(&self, family: &str) -> Result<Vec<u8>, StoreError> {
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(format!("moa:sem:{family}")).arg(0).arg(-1);
        let parts: Vec<Vec<u8>> = self.run("LRANGE", Req::One(cmd)).await?;
        Ok(parts.concat())
    }

    /// Append one entry and trim the list to the newest `PER_FAMILY`, in one transaction; the
    /// list expires with the answers' TTL (refreshed by each entry).
    pub async fn index_add(
        &self,
        family: &str,
        entry: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let k = format!("moa:sem:{family}");
        let mut p = redis::pipe();
        p.atomic()
            .cmd("RPUSH")
            .arg(&k)
            .arg(entry)
            .ignore()
            .cmd("LTRIM")
            .arg(&k)
            .arg(-(semantic::PER_FAMILY as i64))
            .arg(-1)
            .ignore();
        if let Some(t) = ttl {
            p.cmd("EXPIRE").arg(&k).arg(t.as_secs().max(1)).ignore();
        }
        self.run("RPUSH", Req::Many(p)).await
    }
}

enum Req {
    One(redis::Cmd),
    Many(redis::Pipeline),
}
