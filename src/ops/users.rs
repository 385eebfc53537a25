//! Console users: roles, argon2id password hashes, lock-out after repeated failures, and the
//! audit log every change goes to.

use crate::store::{AuditEntry, MessageStore, StoreError, User, format_ms, now_ms};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// What a user may do. Each role can do what the ones below it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Also resends messages and tests connections.
    Operator,
    /// Also manages users.
    Admin,
}

impl Role {
    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn hash_password(password: &str) -> Result<String, UserError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| UserError::Invalid(format!("cannot make a salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Invalid(format!("cannot hash the password: {e}")))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
}

/// Creates or replaces a user (`ventanilla user add`, the console's Users page).
pub async fn put(
    store: &dyn MessageStore,
    actor: &str,
    name: &str,
    role: Role,
    password: &str,
) -> Result<(), UserError> {
    if !valid_name(name) {
        return Err(UserError::Invalid(format!(
            "user name '{name}': use 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )));
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(UserError::Invalid(format!("the password must have at least {MIN_PASSWORD} characters")));
    }
    let existed = store.user(name).await?.is_some();
    let password_hash = hash_password(password)?;
    store
        .put_user(&User {
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            password_hash,
            failures: 0,
            locked_until_ms: None,
            created_ms: now_ms(),
        })
        .await?;
    let action = if existed { "user_changed" } else { "user_added" };
    audit(store, actor, action, name, &format!("role {}", role.as_str())).await;
    Ok(())
}

pub async fn remove(store: &dyn MessageStore, actor: &str, name: &str) -> Result<bool, UserError> {
    let removed = store.delete_user(name).await?;
    if removed {
        audit(store, actor, "user_removed", name, "").await;
    }
    Ok(removed)
}

/// The outcome of a login.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    Ok(Role),
    /// Wrong name or password (the same answer for both).
    Refused,
    /// Too many failures; locked until then.
    LockedOut(String),
}

/// Checks a login; counts failures and locks the user out after `max_failures` in a row.
/// An unknown name costs the same hashing work as a known one.
pub async fn login(
    store: &dyn MessageStore,
    name: &str,
    password: &str,
    max_failures: u32,
    lockout: std::time::Duration,
) -> Result<Login, StoreError> {
    let now = now_ms();
    let Some(mut user) = store.user(name).await? else {
        let _ = verify(password, DUMMY_HASH);
        return Ok(Login::Refused);
    };
    if let Some(until) = user.locked_until_ms.filter(|u| *u > now) {
        return Ok(Login::LockedOut(format_ms(until)));
    }
    let hash = user.password_hash.clone();
    let password = password.to_owned();
    let good = crate::blocking::spawn(move || verify(&password, &hash)).await.unwrap_or(false);
    let role = Role::parse(&user.role);
    match (good, role) {
        (true, Some(role)) => {
            if user.failures > 0 || user.locked_until_ms.is_some() {
                user.failures = 0;
                user.locked_until_ms = None;
                store.put_user(&user).await?;
            }
            audit(store, name, "login", name, "").await;
            Ok(Login::Ok(role))
        }
        _ => {
            user.failures += 1;
            let locked = user.failures >= max_failures;
            if locked {
                user.locked_until_ms = Some(now + lockout.as_millis() as i64);
                user.failures = 0;
            }
            store.put_user(&user).await?;
            let detail = if locked { "wrong password; locked out" } else { "wrong password" };
            audit(store, name, "login_failed", name, detail).await;
            Ok(if locked { Login::LockedOut(format_ms(now + lockout.as_millis() as i64)) } else { Login::Refused })
        }
    }
}

/// A hash of a random password, verified against when the user does not exist.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1qE0WlNfmPD6Xnc7eS5yoy3iwWNN/dTSwn6cq3D+gHE";

fn verify(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Appends to the audit log; a failure is logged (the change itself has happened).
pub async fn audit(store: &dyn MessageStore, actor: &str, action: &str, target: &str, detail: &str) {
    let at_ms = now_ms();
    let entry = AuditEntry {
        id: 0,
        at: format_ms(at_ms),
        at_ms,
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail: detail.to_owned(),
    };
    tracing::info!(actor, action, target, detail, "audit");
    if let Err(e) = store.append_audit(&entry).await {
        tracing::error!(error = %e, actor, action, target, "cannot write the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn passwords_are_argon2id_and_repeated_failures_lock_the_user_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        assert!(put(&store, "cli", "ana", Role::Operator, "short").await.is_err());
        put(&store, "cli", "ana", Role::Operator, "correct horse battery").await.unwrap();
        let stored = store.user("ana").await.unwrap().unwrap();
        assert!(stored.password_hash.starts_with("$argon2id$"), "{}", stored.password_hash);
        let lockout = std::time::Duration::from_secs(60);
        assert_eq!(login(&store, "ana", "correct horse battery", 3, lockout).await.unwrap(), Login::Ok(Role::Operator));
        assert_eq!(login(&store, "nobody", "x", 3, lockout).await.unwrap(), Login::Refused);
        for _ in 0..2 {
            assert_eq!(login(&store, "ana", "wrong", 3, lockout).await.unwrap(), Login::Refused);
        }
        assert!(matches!(login(&store, "ana", "wrong", 3, lockout).await.unwrap(), Login::LockedOut(_)));
        assert!(
            matches!(login(&store, "ana", "correct horse battery", 3, lockout).await.unwrap(), Login::LockedOut(_)),
            "locked out even with the right password"
        );
        let actions: Vec<String> = store.audit_log(None, 20).await.unwrap().into_iter().map(|e| e.action).collect();
        assert_eq!(actions, ["login_failed", "login_failed", "login_failed", "login", "user_added"]);
        assert!(DUMMY_HASH.starts_with("$argon2id$") && PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
