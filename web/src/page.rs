//! The page's HTML: the filter form, one section per chart (chart, lead, the numbers, a link
//! to the SQL, the rows as JSON), all in one document with no script and nothing to fetch.

use std::fmt::Write;

use serde_json::Value;
use tokenledger_engine::reports::filter::ReportFilter;

use crate::sections::{Row, Section, percent};

/// What the page shows besides the charts.
pub struct Frame<'a> {
    /// The data location, as the server names it.
    pub location: &'a str,
    /// Who is signed in, and the tenants they see (`*` = all).
    pub user: &'a str,
    pub scope: String,
    /// The filter as given (shown in the form, also when it was refused).
    pub filter: &'a ReportFilter,
    /// Raw form values, for redisplay when they did not parse.
    pub raw: &'a [(String, String)],
    /// The choices of the workflow and tenant menus.
    pub workflows: &'a [String],
    pub tenants: &'a [String],
    /// The URL query of the current filter, for the SQL links.
    pub query: &'a str,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}\
header{background:#1f2d3d;color:#fff;padding:12px 24px}header h1{margin:0;font-size:22px}\
header p{margin:4px 0 0;color:#c8d1dc;font-size:14px}\
form.filters{display:flex;flex-wrap:wrap;gap:12px;align-items:end;padding:12px 24px;background:#fff;border-bottom:1px solid #dde}\
form.filters label{display:flex;flex-direction:column;font-size:13px;gap:2px}\
.error{margin:16px 24px;padding:12px 16px;background:#fdecea;border:1px solid #e57373;color:#8a1c1c;border-radius:4px}\
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(660px,1fr));gap:16px;padding:16px 24px}\
section.chart{background:#fff;border:1px solid #dde;border-radius:6px;padding:12px 16px}\
section.chart h2{font-size:17px;margin:0 0 4px}.lead{font-size:14px;color:#444;margin:0 0 8px}\
figure{margin:0}figure svg{max-width:100%;height:auto}\
table{border-collapse:collapse;font-size:12px;margin-top:8px}td,th{border-bottom:1px solid #eee;padding:3px 6px;text-align:right}\
td:first-child,th:first-child{text-align:left}footer{padding:8px 24px 24px;color:#666;font-size:13px}";

/// The whole page; `error` replaces the charts with a message (bad parameters, a failed query).
pub fn render(
    frame: &Frame,
    sections: &[(Section, Vec<Row>)],
    error: Option<&str>,
    millis: u128,
) -> String {
    let mut html = String::with_capacity(256 * 1024);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\">\
         <title>tokenledger: what each token buys</title><style>{STYLE}</style></head><body>\
         <header><h1>tokenledger: what each token buys</h1><p>{} · signed in as {} · tenants: {}</p></header>",
        escape(frame.location),
        escape(frame.user),
        escape(if frame.scope == "*" {
            "all"
        } else {
            &frame.scope
        }),
    );
    form(&mut html, frame);
    if let Some(message) = error {
        let _ = write!(
            html,
            "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
            escape(message)
        );
    }
    html.push_str("<main>");
    for (section, rows) in sections {
        render_section(&mut html, section, rows, frame.query);
    }
    let _ = write!(
        html,
        "</main><footer>{} charts from the report views, queried in {millis} ms. Each chart's SQL \
         runs as it is over Arrow Flight SQL.</footer></body></html>",
        sections.len()
    );
    html
}

fn form(html: &mut String, frame: &Frame) {
    let raw = |name: &str| {
        frame
            .raw
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let _ = write!(
        html,
        "<form class=\"filters\" method=\"get\" action=\"/\">\
         <label>From <input type=\"date\" name=\"from\" value=\"{}\"></label>\
         <label>To <input type=\"date\" name=\"to\" value=\"{}\"></label>",
        escape(&raw("from")),
        escape(&raw("to"))
    );
    for (label, name, choices, chosen) in [
        (
            "Workflow",
            "workflow",
            frame.workflows,
            frame.filter.workflow.clone(),
        ),
        (
            "Tenant",
            "tenant",
            frame.tenants,
            frame.filter.tenant.clone(),
        ),
    ] {
        let _ = write!(
            html,
            "<label>{label} <select name=\"{name}\"><option value=\"\">all</option>"
        );
        for choice in choices {
            let selected = if chosen.as_deref() == Some(choice) {
                " selected"
            } else {
                ""
            };
            let _ = write!(html, "<option{selected}>{}</option>", escape(choice));
        }
        html.push_str("</select></label>");
    }
    html.push_str("<button type=\"submit\">Apply</button> <a href=\"/\">Clear</a></form>");
}

fn render_section(html: &mut String, section: &Section, rows: &[Row], query: &str) {
    let sql_link = if query.is_empty() {
        format!("/sql/{}", section.report)
    } else {
        format!("/sql/{}?{}", section.report, query)
    };
    let _ = write!(
        html,
        "<section class=\"chart\" id=\"{id}\" data-report=\"{report}\"><h2>{title}</h2>\
         <p class=\"lead\">{lead}</p><figure>{svg}</figure>\
         <p><a class=\"sql\" href=\"{link}\">SQL behind this chart ({report})</a></p>\
         <details><summary>The numbers</summary>",
        id = section.id,
        report = section.report,
        title = escape(section.title),
        lead = escape(&section.lead),
        svg = section
            .svg
            .as_deref()
            .unwrap_or("<p class=\"empty\">Nothing to draw.</p>"),
        link = escape(&sql_link),
    );
    table(html, section.columns, rows);
    // The rows the chart was drawn from, exactly as the report gave them.
    let json = serde_json::to_string(rows).unwrap_or_else(|_| "[]".into());
    let _ = write!(
        html,
        "</details><script type=\"application/json\" class=\"chart-data\">{}</script></section>",
        json.replace('<', "\\u003c")
    );
}

fn table(html: &mut String, columns: &[&str], rows: &[Row]) {
    html.push_str("<table><thead><tr>");
    for column in columns {
        let _ = write!(html, "<th>{}</th>", escape(column));
    }
    html.push_str("</tr></thead><tbody>");
    for row in rows {
        html.push_str("<tr>");
        for column in columns {
            let _ = write!(html, "<td>{}</td>", escape(&cell(column, row.get(*column))));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
}

/// A value as a person reads it: rates as percentages, dollars to the cent (or four places
/// below a dollar), counts whole.
fn cell(column: &str, value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "–".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_f64() => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if column.ends_with("_rate") || column.ends_with("_share") {
                percent(Some(v))
            } else if column.ends_with("_usd") {
                if v.abs() >= 1.0 {
                    format!("${v:.2}")
                } else {
                    format!("${v:.4}")
                }
            } else {
                format!("{v:.2}")
            }
        }
        Some(other) => other.to_string(),
    }
}

/// Text made safe inside HTML elements and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cannot_open_a_tag() {
        assert_eq!(
            escape("<script>\"x\" & 'y'"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn cells_read_as_money_rates_and_counts() {
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(cell("first_try_rate", Some(&v("0.792"))), "79.2%");
        assert_eq!(cell("spend_usd", Some(&v("686.44622"))), "$686.45");
        assert_eq!(cell("p50_item_cost_usd", Some(&v("0.0043"))), "$0.0043");
        assert_eq!(cell("work_items", Some(&v("500"))), "500");
        assert_eq!(cell("cheaper_model", Some(&Value::Null)), "–");
    }
}
