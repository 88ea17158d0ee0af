//! The report page: `tokenledger serve --http ADDR` answers a browser with the eight reports as
//! charts (drawn on the server as SVG), filters for days, workflow and tenant, and under each
//! chart a link to the one SQL statement that produced it. The page's queries run on the same
//! session as Flight SQL, with the same users and tenant rules.

mod auth;
mod chart;
mod error;
mod page;
mod sections;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::json::WriterBuilder;
use arrow::json::writer::JsonArray;
use axum::Router;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use futures::TryStreamExt;
use futures::future::try_join_all;
use tokenledger_engine::access::logins::LoginRefused;
use tokenledger_engine::access::tls::Incoming;
use tokenledger_engine::reports;
use tokenledger_engine::reports::filter::{ReportFilter, parse_date};
use tokenledger_engine::tokio_rustls::rustls::ServerConfig;
use tokenledger_engine::{Access, TenantScope, TraceSession};

pub use auth::PageAuth;

/// Waits for a page's turn under the server's query limits (Flight SQL's admission): the turn
/// is held until the returned value is dropped; an error is the refusal (server busy, waited
/// too long), shown on the page.
pub type Gate = Arc<
    dyn Fn(String) -> futures::future::BoxFuture<'static, Result<Box<dyn Send>, String>>
        + Send
        + Sync,
>;
pub use error::{Result, WebError};

use crate::auth::NoCaller;
use crate::page::{Frame, escape};
use crate::sections::{RECIPES, Row};

/// What the handlers share.
#[derive(Clone)]
struct PageState {
    session: Arc<TraceSession>,
    auth: PageAuth,
    gate: Option<Gate>,
}

/// Serves the page on `listener` until the task is dropped: `/` (the page) and
/// `/sql/{report}` (a chart's SQL as text), both taking the filter as URL parameters. Each page
/// load runs its reports in one turn of `gate` (none: no limit but the session's memory). With
/// `tls`, over HTTPS only.
pub async fn serve(
    listener: tokio::net::TcpListener,
    session: Arc<TraceSession>,
    auth: PageAuth,
    gate: Option<Gate>,
    tls: Option<Arc<ServerConfig>>,
) -> Result<()> {
    let app = Router::new()
        .route("/", get(page_handler))
        .route("/sql/{report}", get(sql_handler))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "no such page: the report page is at /",
            )
        })
        .with_state(PageState {
            session,
            auth,
            gate,
        })
        .layer(axum::middleware::map_response(with_security_headers));
    // The peer's address: failed logins lock out a user from one address, not everywhere.
    // (`tap_io` lets axum take the address of a listener of ours.)
    let listener = Incoming::new(listener, tls)?.tap_io(|_| ());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// What every response carries so a browser treats the page as the static document it is:
/// nothing runs (the page has no script; its JSON blocks are data), nothing loads from
/// elsewhere, forms post only back here, no other site may frame it, and content types are
/// taken as sent.
const SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
];

async fn with_security_headers(mut response: Response) -> Response {
    for (name, value) in SECURITY_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The answer to a request without an accepted caller: a Basic challenge when credentials are
/// missing or wrong (the browser asks again), 429 with `Retry-After` while the user is locked
/// out from this address, 503 while too many logins wait.
fn refused(no_caller: NoCaller) -> Response {
    match no_caller {
        NoCaller::SignIn | NoCaller::Refused(LoginRefused::WrongPassword) => sign_in(),
        NoCaller::Refused(refusal @ LoginRefused::LockedOut { retry_in_secs, .. }) => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, refusal.to_string()).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_in_secs));
            response
        }
        NoCaller::Refused(refusal @ LoginRefused::Busy) => {
            (StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()).into_response()
        }
    }
}

/// 401 with a Basic challenge: the browser asks for the user name and password.
fn sign_in() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Html("<!doctype html><title>Sign in</title><p>Sign in with your tokenledger user (the same as for Flight SQL).</p>"),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"tokenledger\", charset=\"UTF-8\""),
    );
    response
}

/// The URL's parameters as name, value pairs.
fn parameters(query: Option<&str>) -> Result<Vec<(String, String)>> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| WebError::BadRequest(format!("the URL's parameters cannot be read: {e}")))
}

/// The longest workflow or tenant name the page takes: far beyond any real name, short enough
/// that a hostile link cannot make every report carry megabytes of literal.
const LONGEST_NAME: usize = 1_000;

/// The filter the parameters ask for, checked against what `scope` may see.
fn parse_filter(parameters: &[(String, String)], scope: &TenantScope) -> Result<ReportFilter> {
    let mut filter = ReportFilter::default();
    for (name, value) in parameters {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let length = value.chars().count();
        if length > LONGEST_NAME {
            return Err(WebError::BadRequest(format!(
                "{name} is {length} characters long; the page takes at most {LONGEST_NAME}"
            )));
        }
        match name.as_str() {
            "from" => filter.from = Some(parse_date("from", value)?),
            "to" => filter.to = Some(parse_date("to", value)?),
            "workflow" => filter.workflow = Some(value.to_string()),
            "tenant" => {
                if let TenantScope::Only(mine) = scope
                    && !mine.contains(value)
                {
                    return Err(WebError::Forbidden(format!(
                        "tenant {value:?} is not one of yours ({scope})"
                    )));
                }
                filter.tenant = Some(value.to_string());
            }
            other => {
                return Err(WebError::BadRequest(format!(
                    "unknown parameter {other:?}: the page takes from, to, workflow and tenant"
                )));
            }
        }
    }
    filter.check()?;
    Ok(filter)
}

/// Runs `sql` on `session` and gives its rows as JSON objects (every column present, NULL as
/// null, numbers at full precision).
async fn rows(session: &TraceSession, sql: &str) -> Result<Vec<Row>> {
    let frame = session.plan_sql(sql, Access::ReadOnly).await?;
    let batches: Vec<RecordBatch> = session.execute(frame).await?.try_collect().await?;
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(Vec::new());
    writer.write_batches(&batches.iter().collect::<Vec<_>>())?;
    writer.finish()?;
    let json = writer.into_inner();
    if json.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&json).map_err(|e| WebError::Chart(format!("report rows as JSON: {e}")))
}

/// One column's distinct values (the filter menus' choices).
async fn choices(session: &TraceSession, column: &str) -> Result<Vec<String>> {
    let sql =
        format!("SELECT DISTINCT {column} FROM outcomes WHERE {column} IS NOT NULL ORDER BY 1");
    Ok(rows(session, &sql)
        .await?
        .into_iter()
        .filter_map(|row| row.get(column).and_then(|v| v.as_str()).map(str::to_string))
        .collect())
}

async fn page_handler(
    State(state): State<PageState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (user, scope) = match state.auth.caller(&headers, Some(peer.ip())).await {
        Ok(caller) => caller,
        Err(no_caller) => return refused(no_caller),
    };
    let started = Instant::now();
    // Every query of the page load runs within this turn, as one query of the user.
    let _turn = match turn(&state, &user).await {
        Ok(turn) => turn,
        Err(e) => return failure(&e),
    };
    let parsed = parameters(query.as_deref());
    let raw = parsed.as_ref().cloned().unwrap_or_default();
    let session = match state.session.for_scope(&scope).await {
        Ok(session) => session,
        Err(e) => return failure(&WebError::from(e)),
    };
    let (workflows, tenants) =
        match futures::try_join!(choices(&session, "workflow"), choices(&session, "tenant")) {
            Ok(menus) => menus,
            Err(e) => return failure(&e),
        };
    let filter = parsed.and_then(|p| parse_filter(&p, &scope));
    let frame_filter = filter.as_ref().cloned().unwrap_or_default();
    let location = state.session.location.to_string();
    let frame = Frame {
        location: &location,
        user: &user,
        scope: scope.to_string(),
        filter: &frame_filter,
        raw: &raw,
        workflows: &workflows,
        tenants: &tenants,
        query: query.as_deref().unwrap_or(""),
    };
    let outcome = match filter {
        Ok(filter) => charts(&session, &filter).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(sections) => {
            let millis = started.elapsed().as_millis();
            tracing::info!(%user, millis, "report page");
            Html(page::render(&frame, &sections, None, millis)).into_response()
        }
        Err(e) => {
            tracing::info!(%user, error = %e, "report page refused");
            let html = page::render(
                &frame,
                &[],
                Some(&e.to_string()),
                started.elapsed().as_millis(),
            );
            (e.status(), Html(html)).into_response()
        }
    }
}

/// The page's turn to run its reports (`None` without a gate).
async fn turn(state: &PageState, user: &str) -> Result<Option<Box<dyn Send>>> {
    match &state.gate {
        Some(gate) => gate(user.to_string())
            .await
            .map(Some)
            .map_err(WebError::Busy),
        None => Ok(None),
    }
}

/// Every chart under `filter`: each report run once (concurrently), then drawn.
async fn charts(
    session: &TraceSession,
    filter: &ReportFilter,
) -> Result<Vec<(sections::Section, Vec<Row>)>> {
    let mut names: Vec<&str> = RECIPES.iter().map(|r| r.report).collect();
    names.sort_unstable();
    names.dedup();
    let results = try_join_all(names.iter().map(|name| async move {
        let report = reports::view(name).expect("every chart draws a report");
        rows(session, &filter.sql(report))
            .await
            .map(|rows| (*name, rows))
    }))
    .await?;
    let by_report: HashMap<&str, Vec<Row>> = results.into_iter().collect();
    RECIPES
        .iter()
        .map(|recipe| {
            let rows = by_report[recipe.report].clone();
            Ok((recipe.section(&rows)?, rows))
        })
        .collect()
}

/// A failure before the page could be laid out: the message alone, never a trace.
fn failure(e: &WebError) -> Response {
    (
        e.status(),
        Html(format!(
            "<!doctype html><title>tokenledger</title><p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
            escape(&e.to_string())
        )),
    )
        .into_response()
}

async fn sql_handler(
    State(state): State<PageState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(report): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let (_, scope) = match state.auth.caller(&headers, Some(peer.ip())).await {
        Ok(caller) => caller,
        Err(no_caller) => return refused(no_caller),
    };
    let Some(view) = reports::reports().find(|r| r.name == report) else {
        let names: Vec<&str> = reports::reports().map(|r| r.name).collect();
        let e = WebError::NotFound(format!(
            "no report named {report:?}; reports are {}",
            names.join(", ")
        ));
        return (e.status(), e.to_string()).into_response();
    };
    match parameters(query.as_deref()).and_then(|p| parse_filter(&p, &scope)) {
        Ok(filter) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", filter.sql(view)),
        )
            .into_response(),
        Err(e) => (e.status(), e.to_string()).into_response(),
    }
}
