//! Exporters' credentials: what `OTEL_EXPORTER_OTLP_HEADERS` can carry, checked against the
//! server's users file. Basic (`Authorization=Basic base64(user:password)`, as Langfuse sends its
//! key pair) or Bearer (`Authorization=Bearer user:password`, plain or base64).

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use tokenledger_engine::TenantScope;
use tokenledger_engine::access::logins::{LoginRefused, Logins};

use crate::error::{IngestError, Result};

/// Who may export spans: the server's login policy (the users file, hashing, lockout), with
/// accepted credentials remembered as a digest so the slow check runs once per exporter.
pub struct ExporterAuth {
    logins: Arc<Logins>,
}

/// An exporter that has authenticated: its user and the tenants it may write.
#[derive(Debug, Clone, PartialEq)]
pub struct Exporter {
    /// The user name.
    pub user: String,
    /// The tenants its spans may name (`All` for an administrator, `*`).
    pub scope: TenantScope,
}

impl Exporter {
    /// Whoever exports to a receiver without users (it listens on loopback only): every
    /// tenant may be written, as an administrator may.
    pub fn anonymous() -> Self {
        Exporter {
            user: "anonymous".into(),
            scope: TenantScope::All,
        }
    }
}

impl ExporterAuth {
    /// Exporters are checked by `logins`.
    pub fn new(logins: Arc<Logins>) -> Self {
        ExporterAuth { logins }
    }

    /// The exporter an `Authorization` header value names, if its password is right, calling
    /// from `peer`.
    pub async fn authorize(&self, header: Option<&str>, peer: Option<IpAddr>) -> Result<Exporter> {
        let header = header.ok_or_else(|| {
            IngestError::Unauthenticated(
                "credentials required: set OTEL_EXPORTER_OTLP_HEADERS=Authorization=Basic%20<base64 user:password>"
                    .into(),
            )
        })?;
        let (user, password) = credentials(header)?;
        match self
            .logins
            .verify_remembered(header, &user, &password, peer)
            .await
        {
            Ok(scope) => Ok(Exporter { user, scope }),
            Err(LoginRefused::WrongPassword) => Err(IngestError::Unauthenticated(format!(
                "wrong user or password for {user:?}"
            ))),
            Err(refusal @ LoginRefused::LockedOut { retry_in_secs, .. }) => {
                Err(IngestError::LockedOut {
                    message: refusal.to_string(),
                    retry_in_secs,
                })
            }
            Err(LoginRefused::Busy) => Err(IngestError::Busy),
        }
    }
}

/// (user, password) from a Basic or Bearer header value.
fn credentials(header: &str) -> Result<(String, String)> {
    let bad = || {
        IngestError::Unauthenticated(
            "the Authorization header must be Basic base64(user:password) or Bearer user:password"
                .into(),
        )
    };
    let (scheme, value) = header.trim().split_once(' ').ok_or_else(bad)?;
    let value = value.trim();
    let decoded = || {
        STANDARD
            .decode(value)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let pair = if scheme.eq_ignore_ascii_case("basic") {
        decoded().ok_or_else(bad)?
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if value.contains(':') {
            value.to_string()
        } else {
            decoded().ok_or_else(bad)?
        }
    } else {
        return Err(bad());
    };
    let (user, password) = pair.split_once(':').ok_or_else(bad)?;
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokenledger_engine::access::users::{Grant, Users};

    use super::*;

    const HOME: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    fn auth(dir: &tempfile::TempDir) -> ExporterAuth {
        let path = dir.path().join("users");
        let grant = Grant::from_tenants(&["acme".into()]).unwrap();
        Users::add(&path, "alice", "s3cret:with colon", &grant).unwrap();
        ExporterAuth::new(Arc::new(Logins::new(Users::load(&path).unwrap())))
    }

    fn alice() -> Exporter {
        Exporter {
            user: "alice".into(),
            scope: TenantScope::only(["acme"]),
        }
    }

    #[tokio::test]
    async fn basic_and_bearer_are_accepted_and_forgeries_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let auth = auth(&dir);
        let basic = format!("Basic {}", STANDARD.encode("alice:s3cret:with colon"));
        assert_eq!(auth.authorize(Some(&basic), HOME).await.unwrap(), alice());
        assert_eq!(
            auth.authorize(Some("Bearer alice:s3cret:with colon"), HOME)
                .await
                .unwrap(),
            alice()
        );
        let bearer64 = format!("Bearer {}", STANDARD.encode("alice:s3cret:with colon"));
        assert_eq!(
            auth.authorize(Some(&bearer64), HOME).await.unwrap(),
            alice()
        );
        for forged in [
            None,
            Some("Bearer alice:wrong".to_string()),
            Some(format!(
                "Basic {}",
                STANDARD.encode("mallory:s3cret:with colon")
            )),
            Some("Basic !!!".to_string()),
            Some("Digest alice".to_string()),
            Some("alice:s3cret:with colon".to_string()),
        ] {
            let error = auth.authorize(forged.as_deref(), HOME).await.unwrap_err();
            assert!(
                matches!(error, IngestError::Unauthenticated(_)),
                "{forged:?}"
            );
        }
    }

    /// Twelve wrong passwords, then the right one: the right one is refused too, until the
    /// lockout ends, as on Flight SQL.
    #[tokio::test]
    async fn guessing_locks_the_exporter_out() {
        let dir = tempfile::tempdir().unwrap();
        let auth = auth(&dir);
        for _ in 0..12 {
            auth.authorize(Some("Bearer alice:guess"), HOME)
                .await
                .unwrap_err();
        }
        let error = auth
            .authorize(Some("Bearer alice:s3cret:with colon"), HOME)
            .await
            .unwrap_err();
        assert!(
            matches!(error, IngestError::LockedOut { retry_in_secs, .. } if retry_in_secs > 0),
            "{error:?}"
        );
        assert_eq!(error.answer().0, axum::http::StatusCode::TOO_MANY_REQUESTS);
    }
}
