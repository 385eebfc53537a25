//! Console sessions: a random token in a cookie (`Secure`, `HttpOnly`, `SameSite=Strict`), a
//! CSRF token per session that every form carries, and an idle timeout. Kept in memory: a
//! restart logs everyone out (behind a load balancer, use sticky sessions).

use crate::ops::users::Role;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const COOKIE: &str = "ventanilla_session";
/// The login form's double-submit cookie (there is no session yet to hold its CSRF token).
pub const LOGIN_COOKIE: &str = "ventanilla_login";

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    last_seen: Instant,
}

pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    idle: Duration,
}

pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions { map: Mutex::new(HashMap::new()), idle }
    }

    /// A new session; returns its token.
    pub fn open(&self, user: &str, role: Role) -> String {
        let token = random_token();
        let session = Session { user: user.to_owned(), role, csrf: random_token(), last_seen: Instant::now() };
        if let Ok(mut map) = self.map.lock() {
            let idle = self.idle;
            map.retain(|_, s| s.last_seen.elapsed() < idle);
            map.insert(token.clone(), session);
        }
        token
    }

    /// The live session of `token`, touched.
    pub fn get(&self, token: &str) -> Option<Session> {
        let mut map = self.map.lock().ok()?;
        let session = map.get_mut(token)?;
        if session.last_seen.elapsed() >= self.idle {
            map.remove(token);
            return None;
        }
        session.last_seen = Instant::now();
        Some(session.clone())
    }

    pub fn close(&self, token: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(token);
        }
    }

    /// Ends every session of `user` (removed, or its role changed).
    pub fn close_user(&self, user: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, s| s.user != user);
        }
    }
}

/// The value of cookie `name` in a request's Cookie headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A Set-Cookie value: the attributes every console cookie has.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> String {
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict{age}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_close_per_user() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let a = sessions.open("ana", Role::Admin);
        let b = sessions.open("bo", Role::Viewer);
        assert_eq!(sessions.get(&a).unwrap().user, "ana");
        assert_ne!(sessions.get(&a).unwrap().csrf, sessions.get(&b).unwrap().csrf);
        sessions.close_user("bo");
        assert!(sessions.get(&b).is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(sessions.get(&a).is_none(), "idle too long");
        assert!(set_cookie(COOKIE, "x", None).contains("HttpOnly; Secure; SameSite=Strict"));
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, "a=1; ventanilla_session=tok; b=2".parse().unwrap());
        assert_eq!(cookie(&headers, COOKIE), Some("tok"));
    }
}
