//! Plans made at GetFlightInfo, kept for the DoGet that follows: a client's statement is then
//! planned once, not twice. A plan is handed out once, only to the same user with the same
//! tenants and the same SQL, and only for a few seconds; otherwise DoGet plans afresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use datafusion::prelude::DataFrame;
use tokenledger_engine::TenantScope;

/// How long a plan waits for its DoGet. Clients fetch at once; a ticket redeemed later (or
/// twice) is planned again.
const KEEP: Duration = Duration::from_secs(5);
/// Plans kept at most (clients that ask GetFlightInfo and never fetch leave theirs behind).
const CAPACITY: usize = 256;

/// Who planned what: the plan is valid for this user, these tenants and this SQL only.
type Key = (String, TenantScope, String);

/// Plans awaiting their DoGet.
#[derive(Default)]
pub struct Planned {
    plans: Mutex<HashMap<Key, (Instant, DataFrame)>>,
}

impl Planned {
    /// Keeps `frame`, planned for `user` with `scope` from `sql`.
    pub fn keep(&self, user: &str, scope: &TenantScope, sql: &str, frame: DataFrame) {
        let mut plans = self.plans.lock().expect("planned lock");
        if plans.len() >= CAPACITY {
            plans.retain(|_, (at, _)| at.elapsed() < KEEP);
            if plans.len() >= CAPACITY {
                plans.clear();
            }
        }
        let key = (user.to_string(), scope.clone(), sql.to_string());
        plans.insert(key, (Instant::now(), frame));
    }

    /// The plan kept for `user` with `scope` and `sql`, if it is still fresh (taken: a second
    /// DoGet of the same ticket plans again).
    pub fn take(&self, user: &str, scope: &TenantScope, sql: &str) -> Option<DataFrame> {
        let key = (user.to_string(), scope.clone(), sql.to_string());
        let (at, frame) = self.plans.lock().expect("planned lock").remove(&key)?;
        (at.elapsed() < KEEP).then_some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn a_plan_goes_once_to_the_same_user_tenants_and_sql() {
        let ctx = SessionContext::new();
        let frame = ctx.sql("SELECT 1").await.unwrap();
        let planned = Planned::default();
        let acme = TenantScope::only(["acme"]);
        planned.keep("ana", &acme, "SELECT 1", frame.clone());
        assert!(planned.take("bob", &acme, "SELECT 1").is_none());
        assert!(planned.take("ana", &TenantScope::All, "SELECT 1").is_none());
        assert!(planned.take("ana", &acme, "SELECT 2").is_none());
        assert!(planned.take("ana", &acme, "SELECT 1").is_some());
        assert!(
            planned.take("ana", &acme, "SELECT 1").is_none(),
            "handed out once"
        );
    }
}
