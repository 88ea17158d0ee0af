//! Who is asking: HTTP Basic credentials checked by the server's login policy (the same users,
//! tenants, hashing and lockout as Flight SQL). Browsers ask for them on the first 401 and
//! resend them with every request; accepted credentials are remembered (as a digest) so the
//! slow check runs once per browser.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokenledger_engine::TenantScope;
use tokenledger_engine::access::logins::{LoginRefused, Logins};

/// Who may see the page.
#[derive(Clone)]
pub enum PageAuth {
    /// No users file: everyone sees every tenant (the server listens on loopback only).
    Open,
    /// Users of the users file, each seeing their tenants.
    Users(Arc<Logins>),
}

/// Why a request has no caller.
#[derive(Debug, PartialEq)]
pub enum NoCaller {
    /// No credentials, or credentials that are not Basic user:password: ask for them.
    SignIn,
    /// Credentials were checked and refused (wrong, locked out, too many logins at once).
    Refused(LoginRefused),
}

impl PageAuth {
    /// Users are checked by `logins`.
    pub fn users(logins: Arc<Logins>) -> Self {
        PageAuth::Users(logins)
    }

    /// The caller's name and tenants.
    pub async fn caller(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<(String, TenantScope), NoCaller> {
        let logins = match self {
            PageAuth::Open => return Ok(("anonymous".into(), TenantScope::All)),
            PageAuth::Users(logins) => logins,
        };
        let header = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(NoCaller::SignIn)?;
        let (user, password) = basic_credentials(header).ok_or(NoCaller::SignIn)?;
        let scope = logins
            .verify_remembered(header, &user, &password, peer)
            .await
            .map_err(NoCaller::Refused)?;
        Ok((user, scope))
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
    use std::net::Ipv4Addr;

    use axum::http::HeaderValue;
    use tokenledger_engine::access::logins::FAILURES_BEFORE_LOCKOUT;
    use tokenledger_engine::access::users::{Grant, Users};

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    fn ana(dir: &tempfile::TempDir) -> PageAuth {
        let path = dir.path().join("users");
        let grant = Grant::from_tenants(&["t1".into()]).unwrap();
        Users::add(&path, "ana", "pw:with colon", &grant).unwrap();
        PageAuth::users(Arc::new(Logins::new(Users::load(&path).unwrap())))
    }

    #[tokio::test]
    async fn only_the_right_password_passes() {
        let dir = tempfile::tempdir().unwrap();
        let auth = ana(&dir);
        let good = format!("Basic {}", STANDARD.encode("ana:pw:with colon"));
        let (user, scope) = auth.caller(&headers(&good), HOME).await.unwrap();
        assert_eq!(user, "ana");
        assert_eq!(scope, TenantScope::only(["t1"]));
        for (bad, expected) in [
            (
                format!("Basic {}", STANDARD.encode("ana:wrong")),
                NoCaller::Refused(LoginRefused::WrongPassword),
            ),
            (
                format!("Basic {}", STANDARD.encode("bob:pw:with colon")),
                NoCaller::Refused(LoginRefused::WrongPassword),
            ),
            (
                format!("Bearer {}", STANDARD.encode("ana:pw:with colon")),
                NoCaller::SignIn,
            ),
            ("Basic not-base64!".to_string(), NoCaller::SignIn),
        ] {
            assert_eq!(
                auth.caller(&headers(&bad), HOME).await.unwrap_err(),
                expected,
                "{bad}"
            );
        }
        assert_eq!(
            auth.caller(&HeaderMap::new(), HOME).await.unwrap_err(),
            NoCaller::SignIn
        );
    }

    #[tokio::test]
    async fn guessing_on_the_page_locks_out_as_on_flight_sql() {
        let dir = tempfile::tempdir().unwrap();
        let auth = ana(&dir);
        let guess = format!("Basic {}", STANDARD.encode("ana:guess"));
        for _ in 0..FAILURES_BEFORE_LOCKOUT {
            auth.caller(&headers(&guess), HOME).await.unwrap_err();
        }
        let good = format!("Basic {}", STANDARD.encode("ana:pw:with colon"));
        assert!(matches!(
            auth.caller(&headers(&good), HOME).await,
            Err(NoCaller::Refused(LoginRefused::LockedOut { .. }))
        ));
    }
}
