//! What the generator simulates: models with their prices, and workflows with their economics.
//! Prices are list prices of public models as of late 2025 (USD per million tokens), plus one
//! mid-period price cut so as-of pricing has something to do.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};

use tokenledger_udfs::{CallTokens, PricePeriod};

use tokenledger_engine::schema::{BASELINES, MODEL_PRICES, batch_by_name};

use crate::error::Result;

/// Model capability tiers: cheaper models fail more on hard inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Small = 0,
    Medium = 1,
    Large = 2,
}

impl Tier {
    /// The next tier up (retries may escalate).
    pub fn up(self) -> Tier {
        match self {
            Tier::Small => Tier::Medium,
            _ => Tier::Large,
        }
    }
}

/// One price period of a model.
#[derive(Debug, Clone, Copy)]
pub struct Price {
    /// Micros since the epoch from which the price applies.
    pub valid_from: i64,
    pub input: f64,
    pub cached_input: Option<f64>,
    pub output: f64,
    pub reasoning: Option<f64>,
}

impl Price {
    /// USD for one call, priced exactly as `token_cost` prices it (cached tokens inside `input`,
    /// reasoning inside `output`): the generator's `cost_usd` and a repricing agree.
    pub fn cost(&self, input: i64, cached: i64, output: i64, reasoning: i64) -> f64 {
        self.period()
            .cost(&CallTokens::new(input, cached, output, reasoning))
            .expect("the generator's token counts fit inside their totals")
    }

    /// This price as `token_cost` reads it from `model_prices`: a NULL cached or reasoning rate
    /// is the input or output rate (the generator writes no cache writes).
    fn period(&self) -> PricePeriod {
        PricePeriod {
            valid_from: self.valid_from,
            input: self.input,
            cached_input: self.cached_input.unwrap_or(self.input),
            cache_write: self.input,
            cache_write_1h: self.input,
            output: self.output,
            reasoning: self.reasoning.unwrap_or(self.output),
        }
    }
}

/// A model the simulated agents call.
#[derive(Debug)]
pub struct Model {
    pub provider: &'static str,
    pub name: &'static str,
    /// The OTel span name of a call: `{operation} {model}`.
    pub span_name: &'static str,
    pub tier: Tier,
    /// Probability of a correct answer on an input of difficulty 0.
    pub skill: f64,
    /// How much harder inputs hurt this model (bigger models degrade less).
    pub difficulty_sensitivity: f64,
    /// Milliseconds per output token.
    pub ms_per_output_token: f64,
    /// Median reasoning tokens per call (0 = not a reasoning model).
    pub reasoning_median: f64,
    /// Price periods, oldest first.
    pub prices: &'static [Price],
}

impl Model {
    /// The price valid at `at` (micros); the oldest one for earlier instants.
    pub fn price_at(&self, at: i64) -> &Price {
        self.prices
            .iter()
            .rev()
            .find(|p| p.valid_from <= at)
            .unwrap_or(&self.prices[0])
    }
}

/// 2025-01-01T00:00:00Z in micros.
const Y2025: i64 = 1_735_689_600_000_000;
/// 2026-02-01T00:00:00Z in micros: the simulated price cut.
const PRICE_CUT: i64 = 1_769_904_000_000_000;

const fn price(valid_from: i64, input: f64, cached: f64, output: f64) -> Price {
    Price {
        valid_from,
        input,
        cached_input: Some(cached),
        output,
        reasoning: None,
    }
}

/// The chat models, one per tier, in tier order.
pub static CHAT_MODELS: [Model; 3] = [
    Model {
        provider: "openai",
        name: "gpt-4.1-mini",
        span_name: "chat gpt-4.1-mini",
        tier: Tier::Small,
        skill: 0.84,
        difficulty_sensitivity: 1.3,
        ms_per_output_token: 6.0,
        reasoning_median: 0.0,
        prices: &[
            price(Y2025, 0.40, 0.10, 1.60),
            price(PRICE_CUT, 0.32, 0.08, 1.28),
        ],
    },
    Model {
        provider: "anthropic",
        name: "claude-sonnet-4-5",
        span_name: "chat claude-sonnet-4-5",
        tier: Tier::Medium,
        skill: 0.92,
        difficulty_sensitivity: 1.0,
        ms_per_output_token: 14.0,
        reasoning_median: 0.0,
        prices: &[price(Y2025, 3.00, 0.30, 15.00)],
    },
    Model {
        provider: "anthropic",
        name: "claude-opus-4-1",
        span_name: "chat claude-opus-4-1",
        tier: Tier::Large,
        skill: 0.97,
        difficulty_sensitivity: 0.6,
        ms_per_output_token: 22.0,
        reasoning_median: 900.0,
        prices: &[price(Y2025, 15.00, 1.50, 75.00)],
    },
];

/// The embedding model behind retrieval steps.
pub static EMBEDDING_MODEL: Model = Model {
    provider: "openai",
    name: "text-embedding-3-small",
    span_name: "embeddings text-embedding-3-small",
    tier: Tier::Small,
    skill: 1.0,
    difficulty_sensitivity: 0.0,
    ms_per_output_token: 0.0,
    reasoning_median: 0.0,
    prices: &[Price {
        valid_from: Y2025,
        input: 0.02,
        cached_input: None,
        output: 0.0,
        reasoning: None,
    }],
};

/// A business workflow run by an agent.
#[derive(Debug)]
pub struct Workflow {
    pub name: &'static str,
    /// Prefix of work item ids.
    pub id_prefix: &'static str,
    /// The agent's name (gen_ai.agent.name) and its root span name `invoke_agent {agent}`.
    pub agent: &'static str,
    pub agent_span: &'static str,
    /// Share of all work items.
    pub share: f64,
    /// Tenants that send this work, with weights.
    pub tenants: &'static [(&'static str, f64)],
    /// Probability of starting on each tier.
    pub tier_mix: [f64; 3],
    /// How much a hard input lowers the success rate.
    pub hardness: f64,
    /// LLM turns per attempt (inclusive range).
    pub turns: (i64, i64),
    /// Median prompt size before documents and tool output.
    pub base_context: f64,
    /// Retrieval index name and median documents fetched.
    pub index: &'static str,
    pub docs_fetched: f64,
    /// Tools called between turns: (tool name, span name `execute_tool {tool}`).
    pub tools: &'static [(&'static str, &'static str)],
    /// Median business value of a resolved item.
    pub value_usd: f64,
    /// What outsourcing charges per completed unit, and what in-house staff cost.
    pub bpo_unit_price_usd: f64,
    pub human_unit_cost_usd: f64,
}

/// The simulated workflows.
pub static WORKFLOWS: [Workflow; 4] = [
    Workflow {
        name: "support_ticket",
        id_prefix: "TKT",
        agent: "support-agent",
        agent_span: "invoke_agent support-agent",
        share: 0.40,
        tenants: &[("acme-retail", 0.6), ("hooli-devices", 0.4)],
        tier_mix: [0.60, 0.35, 0.05],
        hardness: 0.30,
        turns: (2, 4),
        base_context: 1_800.0,
        index: "kb-articles",
        docs_fetched: 12.0,
        tools: &[
            ("lookup_customer", "execute_tool lookup_customer"),
            ("search_orders", "execute_tool search_orders"),
            ("issue_refund", "execute_tool issue_refund"),
        ],
        value_usd: 9.0,
        bpo_unit_price_usd: 3.20,
        human_unit_cost_usd: 6.50,
    },
    Workflow {
        name: "insurance_claim",
        id_prefix: "CLM",
        agent: "claims-agent",
        agent_span: "invoke_agent claims-agent",
        share: 0.25,
        tenants: &[("globex-insurance", 0.7), ("acme-retail", 0.3)],
        tier_mix: [0.20, 0.60, 0.20],
        hardness: 0.40,
        turns: (3, 6),
        base_context: 6_000.0,
        index: "policy-docs",
        docs_fetched: 20.0,
        tools: &[
            ("fetch_policy", "execute_tool fetch_policy"),
            ("check_coverage", "execute_tool check_coverage"),
            ("fraud_score", "execute_tool fraud_score"),
        ],
        value_usd: 45.0,
        bpo_unit_price_usd: 14.00,
        human_unit_cost_usd: 28.00,
    },
    Workflow {
        name: "invoice",
        id_prefix: "INV",
        agent: "ap-agent",
        agent_span: "invoke_agent ap-agent",
        share: 0.25,
        tenants: &[("initech-finance", 0.8), ("hooli-devices", 0.2)],
        tier_mix: [0.80, 0.20, 0.0],
        hardness: 0.20,
        turns: (1, 3),
        base_context: 2_500.0,
        index: "vendor-master",
        docs_fetched: 8.0,
        tools: &[
            ("ocr_extract", "execute_tool ocr_extract"),
            ("match_po", "execute_tool match_po"),
            ("post_ledger", "execute_tool post_ledger"),
        ],
        value_usd: 3.50,
        bpo_unit_price_usd: 1.60,
        human_unit_cost_usd: 4.00,
    },
    Workflow {
        name: "contract_review",
        id_prefix: "CTR",
        agent: "legal-agent",
        agent_span: "invoke_agent legal-agent",
        share: 0.10,
        tenants: &[("umbrella-legal", 1.0)],
        tier_mix: [0.05, 0.45, 0.50],
        hardness: 0.50,
        turns: (4, 8),
        base_context: 20_000.0,
        index: "clause-playbook",
        docs_fetched: 30.0,
        tools: &[
            ("clause_extract", "execute_tool clause_extract"),
            ("compare_playbook", "execute_tool compare_playbook"),
            ("redline", "execute_tool redline"),
        ],
        value_usd: 160.0,
        bpo_unit_price_usd: 42.00,
        human_unit_cost_usd: 120.00,
    },
];

/// The `model_prices` table for every simulated model.
pub fn model_prices_batch() -> Result<RecordBatch> {
    let rows: Vec<(&Model, &Price)> = CHAT_MODELS
        .iter()
        .chain(std::iter::once(&EMBEDDING_MODEL))
        .flat_map(|m| m.prices.iter().map(move |p| (m, p)))
        .collect();
    let rates = |rate: fn(&Price) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(|(_, p)| rate(p))))
    };
    Ok(batch_by_name(&MODEL_PRICES, |name| {
        Some(match name {
            "provider" => Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(m, _)| m.provider),
            )),
            "model" => Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(m, _)| m.name),
            )),
            "valid_from" => utc_timestamps(rows.iter().map(|(_, p)| p.valid_from)),
            "input_usd_per_mtok" => rates(|p| Some(p.input)),
            "cached_input_usd_per_mtok" => rates(|p| p.cached_input),
            "output_usd_per_mtok" => rates(|p| Some(p.output)),
            "reasoning_usd_per_mtok" => rates(|p| p.reasoning),
            // The simulated models have one tier, no long-context rates and no cache writes.
            "service_tier" => {
                arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, rows.len())
            }
            "above_input_tokens" => {
                arrow::array::new_null_array(&arrow::datatypes::DataType::Int64, rows.len())
            }
            "cache_write_usd_per_mtok" | "cache_write_1h_usd_per_mtok" => rates(|_| None),
            _ => return None,
        })
    })?)
}

/// The `baselines` table: one row per workflow, valid for every tenant.
pub fn baselines_batch() -> Result<RecordBatch> {
    let values = |value: fn(&Workflow) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(WORKFLOWS.iter().map(value)))
    };
    Ok(batch_by_name(&BASELINES, |name| {
        Some(match name {
            "workflow" => Arc::new(StringArray::from_iter_values(
                WORKFLOWS.iter().map(|w| w.name),
            )),
            "tenant" => Arc::new(StringArray::new_null(WORKFLOWS.len())),
            "bpo_unit_price_usd" => values(|w| w.bpo_unit_price_usd),
            "human_unit_cost_usd" => values(|w| w.human_unit_cost_usd),
            "valid_from" => utc_timestamps(WORKFLOWS.iter().map(|_| Y2025)),
            _ => return None,
        })
    })?)
}

fn utc_timestamps(micros: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(micros).with_timezone("UTC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_one_and_tiers_are_ordered() {
        let total: f64 = WORKFLOWS.iter().map(|w| w.share).sum();
        assert!((total - 1.0).abs() < 1e-12);
        for (i, m) in CHAT_MODELS.iter().enumerate() {
            assert_eq!(m.tier as usize, i);
        }
    }

    #[test]
    fn cost_does_not_count_cached_or_reasoning_twice() {
        let p = Price {
            valid_from: 0,
            input: 2.0,
            cached_input: Some(0.5),
            output: 8.0,
            reasoning: Some(10.0),
        };
        // 1000 input of which 400 cached; 300 output of which 100 reasoning.
        let expected = (600.0 * 2.0 + 400.0 * 0.5 + 200.0 * 8.0 + 100.0 * 10.0) / 1e6;
        assert!((p.cost(1000, 400, 300, 100) - expected).abs() < 1e-15);
    }

    #[test]
    fn price_cut_applies_from_its_date() {
        let mini = &CHAT_MODELS[0];
        assert_eq!(mini.price_at(PRICE_CUT - 1).input, 0.40);
        assert_eq!(mini.price_at(PRICE_CUT).input, 0.32);
    }
}
