//! Who is asking: HTTP Basic credentials checked against the server's users file (the same
//! users and tenants as Flight SQL). Browsers ask for them on the first 401 and resend them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokenledger_engine::TenantScope;

/// Checks a user's password and gives the tenants they see (the users file's argon2 check:
/// slow on purpose).
pub type CheckUser = Arc<dyn Fn(&str, &str) -> Option<TenantScope> + Send + Sync>;

/// Credentials already checked, so the slow check runs once per browser, not per request.
const REMEMBERED: usize = 1024;

/// Who may see the page.
#[derive(Clone)]
pub enum PageAuth {
    /// No users file: everyone sees every tenant (the server listens on loopback only).
    Open,
    /// Users of the users file, each seeing their tenants.
    Users(Arc<Checked>),
}

/// The users file's check, with the credentials it has accepted.
pub struct Checked {
    check: CheckUser,
    accepted: Mutex<HashMap<String, (String, TenantScope)>>,
}

impl PageAuth {
    /// Users are checked with `check`.
    pub fn users(check: CheckUser) -> Self {
        PageAuth::Users(Arc::new(Checked {
            check,
            accepted: Mutex::new(HashMap::new()),
        }))
    }

    /// The caller's name and tenants, or `None` when they must (again) sign in.
    pub fn caller(&self, headers: &HeaderMap) -> Option<(String, TenantScope)> {
        let checked = match self {
            PageAuth::Open => return Some(("anonymous".into(), TenantScope::All)),
            PageAuth::Users(checked) => checked,
        };
        let header = headers.get(AUTHORIZATION)?.to_str().ok()?;
        if let Some(known) = checked.accepted.lock().expect("auth lock").get(header) {
            return Some(known.clone());
        }
        let (user, password) = basic_credentials(header)?;
        let scope = (checked.check)(&user, &password)?;
        let mut accepted = checked.accepted.lock().expect("auth lock");
        if accepted.len() >= REMEMBERED {
            accepted.clear();
        }
        accepted.insert(header.to_string(), (user.clone(), scope.clone()));
        Some((user, scope))
    }
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_the_right_password_passes() {
        let auth = PageAuth::users(Arc::new(|user, password| {
            (user == "ana" && password == "pw:with colon").then(|| TenantScope::only(["t1"]))
        }));
        let good = format!("Basic {}", STANDARD.encode("ana:pw:with colon"));
        let (user, scope) = auth.caller(&headers(&good)).unwrap();
        assert_eq!(user, "ana");
        assert_eq!(scope, TenantScope::only(["t1"]));
        for bad in [
            format!("Basic {}", STANDARD.encode("ana:wrong")),
            format!("Basic {}", STANDARD.encode("bob:pw:with colon")),
            format!("Bearer {}", STANDARD.encode("ana:pw:with colon")),
            "Basic not-base64!".to_string(),
        ] {
            assert!(auth.caller(&headers(&bad)).is_none(), "{bad}");
        }
        assert!(auth.caller(&HeaderMap::new()).is_none());
    }
}
