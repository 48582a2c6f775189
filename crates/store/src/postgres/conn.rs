//! Connections: the URL's settings, the pool, errors and which of them are
//! worth retrying, and migrations.

use super::*;

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        let transient = Fail::transient_code(&e) || e.is_closed();
        Error::Db { message: describe(&e), transient, source: Some(Box::new(e)) }
    }
}

/// The error with its causes: tokio-postgres's own message is only the kind
/// ("db error"), the server's message is in the source.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            s.push_str(&format!("; {detail}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

/// An error inside the engine, keeping PostgreSQL's code so that the
/// transient ones (deadlock, serialisation failure) can be retried.
#[derive(Debug)]
pub(super) enum Fail {
    Pg(tokio_postgres::Error),
    Store(Error),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Store(e)
    }
}

impl From<Fail> for Error {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Pg(e) => e.into(),
            Fail::Store(e) => e,
        }
    }
}

impl Fail {
    /// Worth running again at once, on the same connection or another.
    pub(super) fn is_transient(&self) -> bool {
        matches!(self, Fail::Pg(e) if Fail::transient_code(e))
    }

    pub(super) fn transient_code(e: &tokio_postgres::Error) -> bool {
        matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
    }
}

pub(super) type PgResult<T> = std::result::Result<T, Fail>;

/// Runs `op` again while it fails with a transient error.
pub(super) async fn retrying<T, Fut>(mut op: impl FnMut() -> Fut) -> Result<T>
where
    Fut: Future<Output = PgResult<T>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(f) if tries < RETRIES && f.is_transient() => {
                tries += 1;
                tracing::debug!(tries, error = ?f, "retrying a PostgreSQL write");
                tokio::time::sleep(Duration::from_millis(2 * u64::from(tries))).await;
            }
            r => return r.map_err(Error::from),
        }
    }
}

pub(super) fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// What `open` makes of the URL.
pub(super) struct Settings {
    pub(super) config: Config,
    pub(super) schema: Option<String>,
    pub(super) pool_size: usize,
    /// The URL without its password, for messages.
    pub(super) shown: String,
}

impl Settings {
    pub(super) fn parse(url: &str) -> Result<Settings> {
        let shown = stratus_core::url::redact(url);
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(Error::UnsupportedUrl(shown));
        }
        let invalid = |reason: String| Error::InvalidUrl { url: shown.clone(), reason };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut schema, mut pool_size, mut rest) = (None, DEFAULT_POOL_SIZE, Vec::new());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", v)) if valid_schema(v) => schema = Some(v.to_string()),
                Some(("schema", v)) => {
                    return Err(invalid(format!(
                        "schema '{v}' is not a plain name (lowercase letters, digits and '_', at most 63)"
                    )));
                }
                Some(("pool_size", v)) => {
                    pool_size = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| invalid(format!("pool_size '{v}' is not a number from 1 to 1024")))?;
                }
                _ => rest.push(pair),
            }
        }
        let pg_url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
        let mut config: Config = pg_url.parse().map_err(|e: tokio_postgres::Error| invalid(describe(&e)))?;
        if config.get_application_name().is_none() {
            config.application_name("stratus");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if let Some(s) = &schema {
            // Set at connection start, so every statement of every pooled
            // connection resolves the unqualified table names in the schema.
            let options = match config.get_options() {
                Some(o) if !o.is_empty() => format!("{o} -c search_path={s}"),
                _ => format!("-c search_path={s}"),
            };
            config.options(options);
        }
        Ok(Settings { config, schema, pool_size, shown })
    }
}

/// A connection with its prepared statements.
pub(super) struct PgConn {
    pub(super) client: Client,
    pub(super) statements: HashMap<String, Statement>,
}

impl PgConn {
    /// The statement for `sql`, prepared once per connection.
    pub(super) async fn stmt(&mut self, sql: &str) -> PgResult<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// A small pool: at most `pool_size` connections, opened on demand and kept
/// while healthy. (A pool crate would add more than it saves here.)
pub(super) struct Pool {
    pub(super) config: Config,
    pub(super) shown: String,
    pub(super) idle: Mutex<Vec<PgConn>>,
    pub(super) permits: Semaphore,
}

/// A connection taken from the pool; it goes back when dropped, unless it broke.
pub(super) struct Lease<'a> {
    pub(super) conn: Option<PgConn>,
    pub(super) pool: &'a Pool,
    pub(super) _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        self.conn.as_ref().expect("a lease holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConn {
        self.conn.as_mut().expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // A transaction or copy cut short by a cancelled future has already
        // queued its ROLLBACK / CopyFail on the connection, ahead of whatever
        // the next user sends.
        if let Some(c) = self.conn.take().filter(|c| !c.client.is_closed()) {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(c);
        }
    }
}

impl Pool {
    pub(super) async fn get(&self) -> PgResult<Lease<'_>> {
        let permit = self.permits.acquire().await.expect("the pool's semaphore is never closed");
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.client.is_closed());
            idle.pop()
        };
        let conn = match idle {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Lease { conn: Some(conn), pool: self, _permit: permit })
    }

    pub(super) async fn connect(&self) -> PgResult<PgConn> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| Error::Db {
            message: format!("cannot connect to PostgreSQL at {}: {}", self.shown, describe(&e)),
            transient: true,
            source: Some(Box::new(e)),
        })?;
        // The connection's IO task ends when its client is dropped (or the
        // server goes away), so the pool owns it through the client.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection lost");
            }
        });
        Ok(PgConn { client, statements: HashMap::new() })
    }
}

/// Applies the pending `migrations` in one transaction that holds an advisory
/// lock, so servers starting together apply each one once. Returns the
/// schema version now in force.
pub(super) async fn migrate(
    client: &mut Client,
    schema: Option<&str>,
    migrations: &[(u32, &str)],
) -> Result<SchemaVersion> {
    let tx = client.transaction().await?;
    match apply_migrations(&tx, schema, migrations).await {
        Ok(version) => {
            tx.commit().await?;
            Ok(version)
        }
        Err(e) => {
            // Release the lock now rather than whenever the connection task
            // next runs; the error says what went wrong.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

pub(super) async fn apply_migrations(
    tx: &Transaction<'_>,
    schema: Option<&str>,
    migrations: &[(u32, &str)],
) -> Result<SchemaVersion> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(COALESCE($2::text, current_schema()::text, '')))",
        &[&MIGRATION_LOCK, &schema],
    )
    .await?;
    if let Some(s) = schema {
        // Created only when missing: CREATE SCHEMA IF NOT EXISTS would demand
        // the CREATE privilege on the database even when it exists.
        if tx.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&s]).await?.is_none() {
            tx.batch_execute(&format!("CREATE SCHEMA \"{s}\"")).await?;
        }
        tx.batch_execute(&format!("SET LOCAL search_path TO \"{s}\"")).await?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS stratus_schema (
            version    integer     PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let current: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM stratus_schema", &[]).await?.get(0);
    let current = u32::try_from(current).map_err(|_| Error::Corrupt(format!("schema version {current}")))?;
    let known = migrations.last().map(|m| m.0).unwrap_or(0);
    if current > known {
        return Err(Error::TooNew { found: current, known });
    }
    for (version, sql) in migrations.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await.map_err(|e| Error::Migrate { version: *version, message: describe(&e) })?;
        tx.execute("INSERT INTO stratus_schema (version) VALUES ($1)", &[&(*version as i32)]).await?;
        tracing::info!(version, "applied state store migration");
    }
    Ok(SchemaVersion { found: current, now: known.max(current) })
}
