//! Bearer tokens: random secrets shown once, stored only as SHA-256 hashes, each with a
//! role and, for controllers and scoped DPOs, the controller it is limited to.

use crate::store::{Store, Tx, now_ms};
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including controllers, systems, plugins and tokens.
    Admin,
    /// Submits and follows requests (of one controller when scoped).
    Dpo,
    /// Decides on the requests forwarded to its controller.
    Controller,
    /// Reads requests and the audit trail.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dpo => "dpo",
            Role::Controller => "controller",
            Role::Auditor => "auditor",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        [Role::Admin, Role::Dpo, Role::Controller, Role::Auditor]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub role: Role,
    /// The controller the token is limited to.
    pub controller_id: Option<String>,
}

impl Caller {
    /// The actor written to the audit trail.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }

    /// Whether the caller may see the controller's requests and systems.
    pub fn sees(&self, controller_id: &str) -> bool {
        self.controller_id
            .as_deref()
            .is_none_or(|c| c == controller_id)
    }
}

/// The hash under which a token is stored.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new token secret: `oubli_` and 32 random bytes.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "oubli_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Creates a token and returns its id and secret; the secret is not stored.
///
/// # Errors
/// When the database write fails (e.g. an unknown controller).
pub async fn create(
    tx: &mut Tx<'_>,
    role: Role,
    controller_id: Option<&str>,
    label: &str,
) -> sqlx::Result<(String, String)> {
    let id = uuid::Uuid::now_v7().to_string();
    let secret = generate();
    sqlx::query("INSERT INTO tokens (id, hash, role, controller_id, label, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&id)
        .bind(hash(&secret))
        .bind(role.as_str())
        .bind(controller_id)
        .bind(label)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok((id, secret))
}

/// The caller a token's row (id, role, controller) makes; `None` for an unknown role.
fn caller_of((token_id, role, controller_id): (String, String, Option<String>)) -> Option<Caller> {
    Some(Caller {
        token_id,
        role: Role::parse(&role)?,
        controller_id,
    })
}

/// Opens a console session for the token: returns the cookie's secret, stored only as its
/// SHA-256 hash, which works for `hours`.
///
/// # Errors
/// When the database write fails.
pub async fn open_session(store: &Store, token_id: &str, hours: u64) -> sqlx::Result<String> {
    let secret = generate();
    let now = now_ms();
    let mut tx = store.begin().await?;
    // Sessions that ended are forgotten as new ones open.
    sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO console_sessions (hash, token_id, expires_at, created_at) VALUES ($1, $2, $3, $4)")
        .bind(hash(&secret))
        .bind(token_id)
        .bind(now + i64::try_from(hours).unwrap_or(24) * 3_600_000)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(secret)
}

/// The caller behind a console session's cookie, while the session lasts and its token is
/// not revoked.
///
/// # Errors
/// When the database cannot be read.
pub async fn session_caller(store: &Store, secret: &str) -> sqlx::Result<Option<Caller>> {
    let row: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT t.id, t.role, t.controller_id FROM console_sessions s JOIN tokens t ON t.id = s.token_id \
         WHERE s.hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL",
    )
    .bind(hash(secret))
    .bind(now_ms())
    .fetch_optional(&store.read)
    .await?;
    Ok(row.and_then(caller_of))
}

/// Ends a console session.
///
/// # Errors
/// When the database write fails.
pub async fn close_session(store: &Store, secret: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE hash = $1")
        .bind(hash(secret))
        .execute(&store.write)
        .await?;
    Ok(())
}

/// The tokens, newest first: id, role, controller, label, e-mail, created, revoked (no
/// secret, no hash).
///
/// # Errors
/// When the database cannot be read.
pub async fn list(store: &Store) -> sqlx::Result<Vec<TokenInfo>> {
    sqlx::query_as(
        "SELECT id, role, controller_id, label, email, created_at, revoked_at FROM tokens ORDER BY created_at DESC",
    )
    .fetch_all(&store.read)
    .await
}

/// A token as the console lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: String,
    pub role: String,
    pub controller_id: Option<String>,
    pub label: String,
    pub email: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// Sets the e-mail address where oubli tells the token's holder how the requests it filed
/// went.
///
/// # Errors
/// When the database write fails.
pub async fn set_email(tx: &mut Tx<'_>, id: &str, email: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE tokens SET email = $1 WHERE id = $2")
        .bind(email)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Revokes an active token in the caller's transaction; `false` when no active token
/// has that id.
///
/// # Errors
/// When the database write fails.
pub async fn revoke(tx: &mut Tx<'_>, id: &str) -> sqlx::Result<bool> {
    let done =
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Looks a presented token up.
///
/// # Errors
/// When the database cannot be read.
pub async fn authenticate(store: &Store, token: &str) -> sqlx::Result<Option<Caller>> {
    let row: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, role, controller_id FROM tokens WHERE hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash(token))
    .fetch_optional(&store.read)
    .await?;
    Ok(row.and_then(caller_of))
}

/// Counts failed authentications per client address and refuses a client that failed
/// too often within the window.
#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    limit: u32,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    pub fn new(limit: u32, window: Duration) -> Self {
        Throttle {
            window,
            limit,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long the client must wait before trying again, if it is throttled.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().expect("throttle lock");
        let (since, count) = failures.get(&ip)?;
        let elapsed = since.elapsed();
        (*count >= self.limit && elapsed < self.window).then(|| self.window - elapsed)
    }

    /// Records a failed authentication; returns the failures in the current window.
    pub fn fail(&self, ip: IpAddr) -> u32 {
        let mut failures = self.failures.lock().expect("throttle lock");
        if failures.len() > 10_000 {
            failures.retain(|_, (since, _)| since.elapsed() < self.window);
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with("oubli_") && a.len() > 40);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn a_client_that_fails_too_often_is_throttled() {
        let throttle = Throttle::new(3, Duration::from_secs(60));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(throttle.blocked(ip).is_none());
            throttle.fail(ip);
        }
        assert!(throttle.blocked(ip).is_some());
        assert!(throttle.blocked("127.0.0.2".parse().unwrap()).is_none());
    }
}
