//! Exporters' credentials: what `OTEL_EXPORTER_OTLP_HEADERS` can carry, checked against the
//! server's users file. Basic (`Authorization=Basic base64(user:password)`, as Langfuse sends its
//! key pair) or Bearer (`Authorization=Bearer user:password`, plain or base64).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::error::{IngestError, Result};

/// Checks a user's password (the users file's argon2 check: slow on purpose).
pub type CheckPassword = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Header values already verified, so the slow check runs once per exporter, not per request.
const REMEMBERED: usize = 1024;

/// Who may export spans.
pub struct ExporterAuth {
    check: CheckPassword,
    verified: Mutex<HashMap<String, String>>,
}

impl ExporterAuth {
    /// Exporters are checked with `check`.
    pub fn new(check: CheckPassword) -> Self {
        ExporterAuth {
            check,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The user an `Authorization` header value names, if its password is right.
    pub async fn authorize(&self, header: Option<&str>) -> Result<String> {
        let header = header.ok_or_else(|| {
            IngestError::Unauthenticated(
                "credentials required: set OTEL_EXPORTER_OTLP_HEADERS=Authorization=Basic%20<base64 user:password>"
                    .into(),
            )
        })?;
        if let Some(user) = self.remembered(header) {
            return Ok(user);
        }
        let (user, password) = credentials(header)?;
        let check = Arc::clone(&self.check);
        let (name, secret) = (user.clone(), password);
        let valid = tokio::task::spawn_blocking(move || check(&name, &secret))
            .await
            .unwrap_or(false);
        if !valid {
            return Err(IngestError::Unauthenticated(format!(
                "wrong user or password for {user:?}"
            )));
        }
        let mut verified = self.verified.lock().expect("verified credentials lock");
        if verified.len() >= REMEMBERED {
            verified.clear();
        }
        verified.insert(header.to_string(), user.clone());
        Ok(user)
    }

    fn remembered(&self, header: &str) -> Option<String> {
        self.verified
            .lock()
            .expect("verified credentials lock")
            .get(header)
            .cloned()
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
    use super::*;

    fn auth() -> ExporterAuth {
        ExporterAuth::new(Arc::new(|user, password| {
            user == "alice" && password == "s3cret:with colon"
        }))
    }

    #[tokio::test]
    async fn basic_and_bearer_are_accepted_and_forgeries_are_not() {
        let auth = auth();
        let basic = format!("Basic {}", STANDARD.encode("alice:s3cret:with colon"));
        assert_eq!(auth.authorize(Some(&basic)).await.unwrap(), "alice");
        assert_eq!(
            auth.authorize(Some("Bearer alice:s3cret:with colon"))
                .await
                .unwrap(),
            "alice"
        );
        let bearer64 = format!("Bearer {}", STANDARD.encode("alice:s3cret:with colon"));
        assert_eq!(auth.authorize(Some(&bearer64)).await.unwrap(), "alice");
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
            let error = auth.authorize(forged.as_deref()).await.unwrap_err();
            assert!(
                matches!(error, IngestError::Unauthenticated(_)),
                "{forged:?}"
            );
        }
    }
}
