//! One chart per question the reports answer, each drawn from one report's rows.

use serde_json::{Map, Value};

use crate::chart::{Bars, Layout, Line, bar_chart, color, line_chart};
use crate::error::Result;

/// A report row as the page has it: column name → JSON value (numbers at full precision).
pub type Row = Map<String, Value>;

/// A chart of the page and what it is drawn from.
pub struct Section {
    /// Its anchor on the page.
    pub id: &'static str,
    /// The report (view) whose rows it draws; its SQL is linked under the chart.
    pub report: &'static str,
    pub title: &'static str,
    /// How to read it, in a sentence or two.
    pub lead: String,
    /// The chart (SVG), or `None` when there is nothing to draw.
    pub svg: Option<String>,
    /// The columns the table under the chart shows.
    pub columns: &'static [&'static str],
}

/// A chart's lead (how to read it) and its SVG (`None` when there is nothing to draw).
type Drawn = (String, Option<String>);

/// A chart's recipe: its section and the function that draws it from its report's rows.
pub struct Recipe {
    pub id: &'static str,
    pub report: &'static str,
    pub title: &'static str,
    pub columns: &'static [&'static str],
    draw: fn(&[Row]) -> Result<Drawn>,
}

impl Recipe {
    /// The section, drawn from `rows` (the report's rows under the page's filter).
    pub fn section(&self, rows: &[Row]) -> Result<Section> {
        let (lead, svg) = (self.draw)(rows)?;
        Ok(Section {
            id: self.id,
            report: self.report,
            title: self.title,
            lead,
            svg,
            columns: self.columns,
        })
    }
}

/// Every chart, in page order. The reports they draw from are run once each.
pub static RECIPES: [Recipe; 10] = [
    Recipe {
        id: "cost-per-outcome",
        report: "cost_per_outcome",
        title: "Cost per resolved outcome",
        columns: &[
            "workflow",
            "tenant",
            "work_items",
            "resolved",
            "first_try_rate",
            "spend_usd",
            "retry_share",
            "ai_cost_per_resolved_usd",
            "cost_per_resolved_usd",
            "effective_cost_usd",
        ],
        draw: cost_per_outcome,
    },
    Recipe {
        id: "first-try-curve",
        report: "cost_per_outcome",
        title: "What each point of first-try rate is worth (T/p)",
        columns: &["workflow", "tenant", "first_try_rate", "effective_cost_usd"],
        draw: first_try_curve,
    },
    Recipe {
        id: "retry-tail",
        report: "retry_tail",
        title: "The retry long tail",
        columns: &[
            "workflow",
            "work_items",
            "items_1_attempt",
            "items_2_attempts",
            "items_3_attempts",
            "items_4plus_attempts",
            "spend_share_attempt_1",
            "spend_share_attempt_2",
            "spend_share_attempt_3",
            "spend_share_attempt_4plus",
            "p50_item_cost_usd",
            "p90_item_cost_usd",
            "p99_item_cost_usd",
            "top_1pct_spend_share",
        ],
        draw: retry_tail,
    },
    Recipe {
        id: "context-growth",
        report: "context_growth",
        title: "Context growth per turn against the quadratic attention cost",
        columns: &[
            "workflow",
            "llm_calls",
            "p50_input_tokens",
            "p90_input_tokens",
            "avg_growth_per_turn",
            "avg_attention_vs_median",
            "spend_above_reference_usd",
            "overfetch_share",
        ],
        draw: context_growth,
    },
    Recipe {
        id: "routing-candidates",
        report: "routing_candidates",
        title: "Routing candidates: what a cheaper model would save",
        columns: &[
            "workflow",
            "model",
            "attempts",
            "success_rate",
            "cost_per_attempt_usd",
            "spend_usd",
            "cheaper_model",
            "cheaper_success_rate",
            "saving_usd",
        ],
        draw: routing_candidates,
    },
    Recipe {
        id: "bpo-comparison",
        report: "bpo_comparison",
        title: "AI against outsourcing (BPO) per unit",
        columns: &[
            "workflow",
            "resolved",
            "first_try_rate",
            "ai_cost_per_unit_usd",
            "bpo_unit_price_usd",
            "human_unit_cost_usd",
            "break_even_first_try_rate",
            "verdict",
            "saving_vs_bpo_usd",
        ],
        draw: bpo_comparison,
    },
    Recipe {
        id: "marginal-utility",
        report: "marginal_utility",
        title: "Value per extra dollar of inference",
        columns: &[
            "workflow",
            "model",
            "work_items",
            "avg_spend_usd",
            "avg_value_usd",
            "value_per_extra_dollar",
        ],
        draw: marginal_utility,
    },
    Recipe {
        id: "waste",
        report: "waste",
        title: "Waste: spend that bought nothing",
        columns: &[
            "workflow",
            "spend_usd",
            "failed_attempt_spend_usd",
            "failed_attempt_share",
            "unresolved_item_spend_usd",
            "overfetch_spend_usd",
            "overkill_spend_usd",
            "overkill_share",
        ],
        draw: waste,
    },
    Recipe {
        id: "cache-and-tiers",
        report: "cache_and_tier_savings",
        title: "What caching and batch rates save",
        columns: &[
            "workflow",
            "model",
            "cache_hit_rate",
            "cache_read_saving_usd",
            "cache_write_extra_usd",
            "net_cache_saving_usd",
            "caching_pays",
            "batch_spend_usd",
            "batch_saving_usd",
            "unpriced_calls",
        ],
        draw: cache_and_tiers,
    },
    Recipe {
        id: "allocation",
        report: "allocation",
        title: "The allocation decision per workflow",
        columns: &[
            "workflow",
            "decision",
            "cost_per_resolved_usd",
            "bpo_unit_price_usd",
            "human_unit_cost_usd",
            "first_try_rate",
            "retry_share",
            "routing_saving_share",
            "value_per_extra_dollar",
            "spend_usd",
        ],
        draw: allocation,
    },
];

fn num(row: &Row, column: &str) -> Option<f64> {
    row.get(column).and_then(Value::as_f64)
}

fn text(row: &Row, column: &str) -> String {
    match row.get(column) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn series(name: &str, rows: &[&Row], value: impl Fn(&Row) -> Option<f64>) -> Bars {
    Bars {
        name: name.to_string(),
        values: rows.iter().map(|r| value(r)).collect(),
    }
}

/// `cost_per_outcome`'s rows for all of a workflow's (visible) tenants.
fn workflow_totals(rows: &[Row]) -> Vec<&Row> {
    rows.iter()
        .filter(|r| r.get("all_tenants") == Some(&Value::Bool(true)))
        .collect()
}

const NOTHING: &str = "No rows under this filter.";

/// The rows with their workflows' names (most charts' categories); `None` when there are none.
fn by_workflow<'a>(rows: impl Iterator<Item = &'a Row>) -> Option<(Vec<&'a Row>, Vec<String>)> {
    let rows: Vec<&Row> = rows.collect();
    let names = rows.iter().map(|r| text(r, "workflow")).collect();
    (!rows.is_empty()).then_some((rows, names))
}

fn cost_per_outcome(rows: &[Row]) -> Result<Drawn> {
    let rows = workflow_totals(rows);
    if rows.is_empty() {
        return Ok((NOTHING.into(), None));
    }
    let names: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} (p={})",
                text(r, "workflow"),
                percent(num(r, "first_try_rate"))
            )
        })
        .collect();
    let svg = bar_chart(
        "USD per resolved work item",
        &names,
        &[
            series("AI + human corrections", &rows, |r| {
                num(r, "cost_per_resolved_usd")
            }),
            series("AI only", &rows, |r| num(r, "ai_cost_per_resolved_usd")),
            series("T/p at first-attempt cost", &rows, |r| {
                num(r, "effective_cost_usd")
            }),
        ],
        Layout::Grouped,
        None,
    )?;
    Ok((
        "What one resolved work item costs, failed attempts and retries included, for all tenants \
         shown; p is the first-try rate behind it."
            .into(),
        Some(svg),
    ))
}

/// T, the first attempt's spend per item, from a row's T/p and p.
fn first_attempt_cost(row: &Row) -> Option<(f64, f64)> {
    let p = num(row, "first_try_rate").filter(|p| *p > 0.0)?;
    let effective = num(row, "effective_cost_usd")?;
    Some((effective * p, p))
}

fn first_try_curve(rows: &[Row]) -> Result<Drawn> {
    let rows = workflow_totals(rows);
    let mut lines = Vec::new();
    let mut marks = Vec::new();
    let mut worth = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let Some((t, p)) = first_attempt_cost(row) else {
            continue;
        };
        let points = (40..=100)
            .map(|pct| (pct as f64, t / (pct as f64 / 100.0)))
            .collect();
        lines.push(Line {
            name: text(row, "workflow"),
            points,
            color: color(i),
            dashed: false,
        });
        marks.push((p * 100.0, t / p, color(i)));
        if p < 1.0 {
            let next = (p + 0.01).min(1.0);
            worth.push(format!(
                "{}: ${:.4} per resolved item",
                text(row, "workflow"),
                t / p - t / next
            ));
        }
    }
    if lines.is_empty() {
        return Ok((NOTHING.into(), None));
    }
    let svg = line_chart(
        "first-try rate p (%)",
        "USD per resolved item (T/p)",
        &lines,
        &marks,
    )?;
    Ok((
        format!(
            "Cost per resolved item is T/p: it rises faster than the success rate falls (90% → 70% \
             costs 28.6% more, not 20%). Dots are today. One more point of first-try rate saves {}.",
            worth.join("; ")
        ),
        Some(svg),
    ))
}

fn retry_tail(rows: &[Row]) -> Result<Drawn> {
    let Some((rows, names)) = by_workflow(rows.iter()) else {
        return Ok((NOTHING.into(), None));
    };
    let share = |column: &'static str| move |r: &Row| num(r, column).map(|v| v * 100.0);
    let svg = bar_chart(
        "share of AI spend (%)",
        &names,
        &[
            series("attempt 1", &rows, share("spend_share_attempt_1")),
            series("attempt 2", &rows, share("spend_share_attempt_2")),
            series("attempt 3", &rows, share("spend_share_attempt_3")),
            series("attempt 4+", &rows, share("spend_share_attempt_4plus")),
        ],
        Layout::Stacked,
        None,
    )?;
    let top: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                text(r, "workflow"),
                percent(num(r, "top_1pct_spend_share"))
            )
        })
        .collect();
    Ok((
        format!(
            "Where each workflow's AI spend goes by attempt: everything above attempt 1 is retries. \
             The costliest 1% of items take: {}.",
            top.join(", ")
        ),
        Some(svg),
    ))
}

fn context_growth(rows: &[Row]) -> Result<Drawn> {
    const TURNS: usize = 12;
    let mut lines = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let (Some(start), Some(growth)) = (
            num(row, "p50_input_tokens"),
            num(row, "avg_growth_per_turn"),
        ) else {
            continue;
        };
        if start <= 0.0 {
            continue;
        }
        let tokens = |turn: usize| start + growth * (turn - 1) as f64;
        lines.push(Line {
            name: format!("{} prompt tokens", text(row, "workflow")),
            points: (1..=TURNS).map(|k| (k as f64, tokens(k))).collect(),
            color: color(i),
            dashed: false,
        });
        // Attention compute grows with the square of the context: scaled to match turn 1.
        lines.push(Line {
            name: format!("{} attention cost", text(row, "workflow")),
            points: (1..=TURNS)
                .map(|k| (k as f64, tokens(k) * tokens(k) / start))
                .collect(),
            color: color(i),
            dashed: true,
        });
    }
    if lines.is_empty() {
        return Ok((NOTHING.into(), None));
    }
    let svg = line_chart(
        "turn",
        "tokens (attention: turn-1 equivalents)",
        &lines,
        &[],
    )?;
    Ok((
        "Prompt size per turn grows by the workflow's average growth from its median prompt (solid); \
         attention compute grows with its square (dashed, in turn-1 units)."
            .into(),
        Some(svg),
    ))
}

fn routing_candidates(rows: &[Row]) -> Result<Drawn> {
    let rows: Vec<&Row> = rows.iter().collect();
    if rows.is_empty() {
        return Ok((NOTHING.into(), None));
    }
    let names: Vec<String> = rows
        .iter()
        .map(|r| {
            let cheaper = text(r, "cheaper_model");
            let arrow = if cheaper.is_empty() {
                String::new()
            } else {
                format!(" → {cheaper}")
            };
            format!("{} · {}{arrow}", text(r, "workflow"), text(r, "model"))
        })
        .collect();
    let svg = bar_chart(
        "USD",
        &names,
        &[
            series("spend", &rows, |r| num(r, "spend_usd")),
            series("saving with the cheaper model", &rows, |r| {
                Some(num(r, "saving_usd").unwrap_or(0.0))
            }),
        ],
        Layout::GroupedLying,
        None,
    )?;
    let saving: f64 = rows.iter().filter_map(|r| num(r, "saving_usd")).sum();
    let lead = if rows.iter().any(|r| !text(r, "cheaper_model").is_empty()) {
        format!(
            "Each model's spend, and what moving its calls to the cheapest model that succeeds about \
             as often would save: ${saving:.2} in all."
        )
    } else {
        "Each model's spend. No cheaper model succeeds about as often as any of them (within the \
         success tolerance): nothing to reroute."
            .into()
    };
    Ok((lead, Some(svg)))
}

fn bpo_comparison(rows: &[Row]) -> Result<Drawn> {
    let Some((rows, names)) = by_workflow(rows.iter()) else {
        return Ok((NOTHING.into(), None));
    };
    let svg = bar_chart(
        "USD per completed unit",
        &names,
        &[
            series("AI (with human corrections)", &rows, |r| {
                num(r, "ai_cost_per_unit_usd")
            }),
            series("BPO price", &rows, |r| num(r, "bpo_unit_price_usd")),
            series("in-house human", &rows, |r| num(r, "human_unit_cost_usd")),
        ],
        Layout::Grouped,
        None,
    )?;
    let verdicts: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}: {} (break-even first-try rate {})",
                text(r, "workflow"),
                text(r, "verdict"),
                percent(num(r, "break_even_first_try_rate"))
            )
        })
        .collect();
    Ok((
        format!(
            "AI's cost per completed unit beside the BPO price; below the break-even first-try rate, \
             AI costs more than the BPO. {}.",
            verdicts.join("; ")
        ),
        Some(svg),
    ))
}

fn marginal_utility(rows: &[Row]) -> Result<Drawn> {
    // The rows over all of a workflow's items (model NULL); the tiers are in the table.
    let all_models = rows
        .iter()
        .filter(|r| r.get("model").is_none_or(Value::is_null));
    let Some((rows, names)) = by_workflow(all_models) else {
        return Ok((NOTHING.into(), None));
    };
    let svg = bar_chart(
        "USD of value per extra USD of inference",
        &names,
        &[series("value per extra dollar", &rows, |r| {
            num(r, "value_per_extra_dollar")
        })],
        Layout::Grouped,
        Some((1.0, "$1 back per $1")),
    )?;
    Ok((
        "Above the line, items that got more inference brought more than a dollar of value per \
         extra dollar; below it, more compute has not paid. Per model tier in the table."
            .into(),
        Some(svg),
    ))
}

fn waste(rows: &[Row]) -> Result<Drawn> {
    let Some((rows, names)) = by_workflow(rows.iter()) else {
        return Ok((NOTHING.into(), None));
    };
    let wasted = |r: &Row| {
        [
            "failed_attempt_spend_usd",
            "overfetch_spend_usd",
            "overkill_spend_usd",
        ]
        .iter()
        .filter_map(|c| num(r, c))
        .sum::<f64>()
    };
    let svg = bar_chart(
        "USD",
        &names,
        &[
            series("useful", &rows, |r| {
                num(r, "spend_usd").map(|s| (s - wasted(r)).max(0.0))
            }),
            series("failed attempts", &rows, |r| {
                num(r, "failed_attempt_spend_usd")
            }),
            series("retrieval over-fetch", &rows, |r| {
                num(r, "overfetch_spend_usd")
            }),
            series("overkill model", &rows, |r| num(r, "overkill_spend_usd")),
        ],
        Layout::Stacked,
        None,
    )?;
    let total: f64 = rows.iter().map(|r| wasted(r)).sum();
    Ok((
        format!(
            "Each workflow's spend, split into what bought something and what did not: ${total:.2} wasted in all."
        ),
        Some(svg),
    ))
}

fn cache_and_tiers(rows: &[Row]) -> Result<Drawn> {
    let rows: Vec<&Row> = rows.iter().collect();
    if rows.is_empty() {
        return Ok((NOTHING.into(), None));
    }
    let names: Vec<String> = rows
        .iter()
        .map(|r| format!("{} · {}", text(r, "workflow"), text(r, "model")))
        .collect();
    let svg = bar_chart(
        "USD",
        &names,
        &[
            series("saved by cache reads", &rows, |r| {
                num(r, "cache_read_saving_usd")
            }),
            series("paid extra for cache writes", &rows, |r| {
                num(r, "cache_write_extra_usd")
            }),
            series("batch rates would save", &rows, |r| {
                num(r, "batch_saving_usd")
            }),
        ],
        Layout::Grouped,
        None,
    )?;
    let total = |column: &str| rows.iter().filter_map(|r| num(r, column)).sum::<f64>();
    let not_paying: Vec<String> = rows
        .iter()
        .filter(|r| r.get("caching_pays") == Some(&Value::Bool(false)))
        .map(|r| format!("{} · {}", text(r, "workflow"), text(r, "model")))
        .collect();
    let mut lead = format!(
        "Per workflow and model: caching saved ${:.2} net (${:.2} on reads, ${:.2} paid extra for \
         writes); standard-tier calls would save ${:.2} at batch rates if their work can wait.",
        total("net_cache_saving_usd"),
        total("cache_read_saving_usd"),
        total("cache_write_extra_usd"),
        total("batch_saving_usd"),
    );
    if !not_paying.is_empty() {
        lead.push_str(&format!(
            " Caching does not pay for {}.",
            not_paying.join(", ")
        ));
    }
    Ok((lead, Some(svg)))
}

fn allocation(rows: &[Row]) -> Result<Drawn> {
    let Some((rows, names)) = by_workflow(rows.iter()) else {
        return Ok((NOTHING.into(), None));
    };
    let mut decisions: Vec<String> = rows.iter().map(|r| text(r, "decision")).collect();
    decisions.sort();
    decisions.dedup();
    // One series per decision, so the colour and the legend say which.
    let series: Vec<Bars> = decisions
        .iter()
        .map(|d| {
            series(d, &rows, |r| {
                (text(r, "decision") == *d)
                    .then(|| num(r, "spend_usd"))
                    .flatten()
            })
        })
        .collect();
    let svg = bar_chart("AI spend (USD)", &names, &series, Layout::Stacked, None)?;
    let said: Vec<String> = rows
        .iter()
        .map(|r| format!("{}: {}", text(r, "workflow"), text(r, "decision")))
        .collect();
    Ok((
        format!(
            "One spending decision per workflow, coloured by the decision, over its spend. {}.",
            said.join("; ")
        ),
        Some(svg),
    ))
}

/// 0.7921 → "79.2%"; missing → "–".
pub fn percent(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{:.1}%", v * 100.0))
}
