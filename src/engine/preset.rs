//! Presets: an ordered list of steps over a list of responses, plus an optional baseline.
//!
//! Steps are parsed from a flat TOML table (`op` plus fields) rather than a serde-tagged enum, so that
//! errors keep their line and column and can say which field does not belong to which op.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, parse_toml};
use crate::engine::prompts::Templates;

/// One model call's settings. `n` repeats the agent (Self-MoA: one model sampled N times).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
}

impl AgentSpec {
    pub fn model(model: &str) -> Self {
        AgentSpec {
            model: model.to_string(),
            temperature: None,
            top_p: None,
            max_tokens: None,
            seed: None,
            top_k: None,
            repeat_penalty: None,
            system: None,
            n: None,
        }
    }
}

/// Serialized (tagged by `op`) into sessions, so that a saved run shows and can re-run exactly the
/// pipeline it ran, edits made in the workbench included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Every agent answers the conversation independently.
    Propose {
        agents: Vec<AgentSpec>,
        gate: Gate,
    },
    /// Every agent answers again, seeing all current responses (MoA layer >= 2).
    Synthesize {
        agents: Vec<AgentSpec>,
        prompt: String,
        gate: Gate,
    },
    /// One model turns the current responses into the final answer.
    Aggregate {
        agent: AgentSpec,
        prompt: String,
    },
    Shuffle {
        seed: Option<u64>,
    },
    Dropout {
        rate: f64,
        seed: Option<u64>,
    },
    /// A judge model keeps the best `n` responses.
    Rank {
        agent: AgentSpec,
        n: usize,
        prompt: String,
    },
    /// A judge model picks the consensus answer among the responses.
    Vote {
        agent: AgentSpec,
        prompt: String,
    },
    /// Each response is improved by the listed agents (round-robin over responses).
    Refine {
        agents: Vec<AgentSpec>,
        prompt: String,
        gate: Gate,
    },
    /// Sliding-window aggregation (Self-MoA-Seq, arXiv:2502.00674): the running best answer stays in
    /// every window and `window - 1` new responses join it each round.
    SelfMoaSeq {
        agent: AgentSpec,
        window: usize,
        /// When set, the step first samples the aggregator's model this many times (Self-MoA in one
        /// step); otherwise it aggregates the current responses.
        samples: Option<usize>,
        sample_temperature: Option<f64>,
        prompt: String,
    },
}

/// When a concurrent step may move on before every call finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub quorum: Option<usize>,
    pub deadline_ms: Option<u64>,
}

impl Step {
    pub fn op(&self) -> &'static str {
        match self {
            Step::Propose { .. } => "propose",
            Step::Synthesize { .. } => "synthesize",
            Step::Aggregate { .. } => "aggregate",
            Step::Shuffle { .. } => "shuffle",
            Step::Dropout { .. } => "dropout",
            Step::Rank { .. } => "rank",
            Step::Vote { .. } => "vote",
            Step::Refine { .. } => "refine",
            Step::SelfMoaSeq { .. } => "self_moa_seq",
        }
    }

    /// Every model this step may call.
    pub fn models(&self) -> Vec<&str> {
        match self {
            Step::Propose { agents, .. }
            | Step::Synthesize { agents, .. }
            | Step::Refine { agents, .. } => agents.iter().map(|a| a.model.as_str()).collect(),
            Step::Aggregate { agent, .. }
            | Step::Rank { agent, .. }
            | Step::Vote { agent, .. }
            | Step::SelfMoaSeq { agent, .. } => vec![agent.model.as_str()],
            Step::Shuffle { .. } | Step::Dropout { .. } => vec![],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Preset {
    pub name: String,
    pub description: String,
    pub steps: Vec<Step>,
    pub baseline: Option<AgentSpec>,
    /// Where it came from (`builtin` or a path) and its text, kept for sessions and `presets show`.
    pub origin: String,
    pub text: String,
    /// The preset's own `cache = true|false`: answer identical calls from the call cache, whatever
    /// `[cache] enabled` says. None: the config decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
}

impl Preset {
    /// One model answering the conversation on its own: the baseline of multi-turn evaluations, and
    /// judge calls (which then get retries, limits, usage and cost like every other call).
    pub fn single(name: &str, agent: AgentSpec) -> Preset {
        Preset {
            name: name.to_string(),
            description: format!("{} on its own", agent.model),
            steps: vec![Step::Propose {
                agents: vec![agent],
                gate: Gate::default(),
            }],
            baseline: None,
            origin: "builtin".into(),
            text: String::new(),
            cache: None,
        }
    }

    /// Every model the preset may call, baseline included, without repeats.
    pub fn models(&self, with_baseline: bool) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let base = self
            .baseline
            .iter()
            .filter(|_| with_baseline)
            .map(|b| b.model.as_str());
        for m in self.steps.iter().flat_map(|s| s.models()).chain(base) {
            if !out.iter().any(|o| o == m) {
                out.push(m.to_string());
            }
        }
        out
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreset {
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    step: Vec<toml::Spanned<RawStep>>,
    baseline: Option<AgentSpec>,
    cache: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStep {
    op: String,
    agents: Option<toml::Value>,
    quorum: Option<usize>,
    deadline_ms: Option<u64>,
    prompt: Option<String>,
    model: Option<String>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u32>,
    seed: Option<u64>,
    top_k: Option<u32>,
    repeat_penalty: Option<f64>,
    system: Option<String>,
    rate: Option<f64>,
    n: Option<usize>,
    window: Option<usize>,
    samples: Option<usize>,
    sample_temperature: Option<f64>,
}

impl RawStep {
    /// Names of the fields that are set, to refuse the ones an op does not use.
    fn set_fields(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! chk {
            ($($f:ident),*) => { $( if self.$f.is_some() { v.push(stringify!($f)); } )* };
        }
        chk!(
            agents,
            quorum,
            deadline_ms,
            prompt,
            model,
            temperature,
            top_p,
            max_tokens,
            seed,
            top_k,
            repeat_penalty,
            system,
            rate,
            n,
            window,
            samples,
            sample_temperature
        );
        v
    }

    fn single_agent(&self) -> Option<AgentSpec> {
        Some(AgentSpec {
            model: self.model.clone()?,
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
            seed: self.seed,
            top_k: self.top_k,
            repeat_penalty: self.repeat_penalty,
            system: self.system.clone(),
            n: None,
        })
    }
}

/// Shipped presets, compiled in so the binary works from anywhere.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "together-moa",
        include_str!("../../presets/together-moa.toml"),
    ),
    ("moa-lite", include_str!("../../presets/moa-lite.toml")),
    ("self-moa", include_str!("../../presets/self-moa.toml")),
    (
        "self-moa-seq",
        include_str!("../../presets/self-moa-seq.toml"),
    ),
    ("robust-moa", include_str!("../../presets/robust-moa.toml")),
    (
        "rank-aggregate",
        include_str!("../../presets/rank-aggregate.toml"),
    ),
    ("vote", include_str!("../../presets/vote.toml")),
    ("refine", include_str!("../../presets/refine.toml")),
    ("groq-moa", include_str!("../../presets/groq-moa.toml")),
    (
        "local-self-moa",
        include_str!("../../presets/local-self-moa.toml"),
    ),
];

/// Parse and validate a preset's text. `path` is only used in messages.
pub fn parse(path: &Path, text: &str, templates: &Templates) -> Result<Preset, ConfigError> {
    let raw: RawPreset = parse_toml(path, text)?;
    let fallback_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = raw.name.unwrap_or(fallback_name);
    if raw.step.is_empty() {
        return Err(ConfigError::at(
            path,
            text,
            None,
            "a preset needs at least one [[step]] (e.g. op = \"propose\")".into(),
        ));
    }
    let mut steps = Vec::new();
    let mut last_agents: Option<Vec<AgentSpec>> = None;
    for (i, spanned) in raw.step.iter().enumerate() {
        let span = spanned.span();
        let err = |msg: String| ConfigError::at(path, text, Some(span.clone()), msg);
        let s = spanned.get_ref();
        let allowed: &[&str] = match s.op.as_str() {
            "propose" => &["agents", "quorum", "deadline_ms"],
            "synthesize" | "refine" => &["agents", "quorum", "deadline_ms", "prompt"],
            "aggregate" | "vote" => &[
                "model",
                "temperature",
                "top_p",
                "max_tokens",
                "seed",
                "top_k",
                "repeat_penalty",
                "system",
                "prompt",
            ],
            "rank" => &[
                "model",
                "temperature",
                "top_p",
                "max_tokens",
                "seed",
                "top_k",
                "repeat_penalty",
                "system",
                "prompt",
                "n",
            ],
            "self_moa_seq" => &[
                "model",
                "temperature",
                "top_p",
                "max_tokens",
                "seed",
                "top_k",
                "repeat_penalty",
                "system",
                "prompt",
                "window",
                "samples",
                "sample_temperature",
            ],
            "shuffle" => &["seed"],
            "dropout" => &["seed", "rate"],
            other => {
                return Err(err(format!(
                    "step {}: unknown op {other:?}; ops are propose, synthesize, aggregate, shuffle, dropout, rank, vote, refine, self_moa_seq",
                    i + 1
                )));
            }
        };
        if let Some(bad) = s.set_fields().into_iter().find(|f| !allowed.contains(f)) {
            return Err(err(format!(
                "step {} (op = {:?}): field `{bad}` does not apply to this op; it takes {}",
                i + 1,
                s.op,
                allowed.join(", ")
            )));
        }
        let prompt = |default: &str| -> Result<String, ConfigError> {
            let p = s.prompt.as_deref().unwrap_or(default);
            templates
                .resolve(p)
                .map_err(|m| err(format!("step {}: {m}", i + 1)))
        };
        let agents = |required: bool| -> Result<Vec<AgentSpec>, ConfigError> {
            let list = match &s.agents {
                None if !required => last_agents.clone(),
                None => None,
                Some(toml::Value::String(p)) if p == "previous" => last_agents.clone(),
                Some(toml::Value::String(p)) => {
                    return Err(err(format!(
                        "step {}: agents = {p:?}: write \"previous\" or a list of {{ model = ... }}",
                        i + 1
                    )));
                }
                Some(v) => {
                    Some(Vec::<AgentSpec>::deserialize(v.clone()).map_err(|e| {
                        err(format!("step {}: agents: {}", i + 1, e.message().trim()))
                    })?)
                }
            };
            let list = list.ok_or_else(|| {
                err(format!(
                    "step {}: agents are missing (and there is no earlier step to take them from with \"previous\")",
                    i + 1
                ))
            })?;
            let calls: usize = list
                .iter()
                .map(|a| a.n.unwrap_or(1))
                .fold(0, usize::saturating_add);
            if calls > MAX_CALLS_PER_STEP {
                return Err(err(format!(
                    "step {}: {calls} calls (agents times their n); at most {MAX_CALLS_PER_STEP} a step",
                    i + 1
                )));
            }
            let expanded = expand(list);
            if expanded.is_empty() {
                return Err(err(format!("step {}: agents is empty", i + 1)));
            }
            Ok(expanded)
        };
        let one = || -> Result<AgentSpec, ConfigError> {
            s.single_agent().ok_or_else(|| {
                err(format!(
                    "step {} (op = {:?}) needs model = \"PROVIDER/MODEL\"",
                    i + 1,
                    s.op
                ))
            })
        };
        let gate = Gate {
            quorum: s.quorum,
            deadline_ms: s.deadline_ms,
        };
        if gate.quorum == Some(0) {
            return Err(err(format!("step {}: quorum must be at least 1", i + 1)));
        }
        let step = match s.op.as_str() {
            "propose" => Step::Propose {
                agents: agents(true)?,
                gate,
            },
            "synthesize" => Step::Synthesize {
                agents: agents(false)?,
                prompt: prompt("together")?,
                gate,
            },
            "refine" => Step::Refine {
                agents: agents(false)?,
                prompt: prompt("refine")?,
                gate,
            },
            "aggregate" => Step::Aggregate {
                agent: one()?,
                prompt: prompt("together")?,
            },
            "vote" => Step::Vote {
                agent: one()?,
                prompt: prompt("vote")?,
            },
            "rank" => Step::Rank {
                agent: one()?,
                n: s.n.unwrap_or(3).max(1),
                prompt: prompt("rank")?,
            },
            "self_moa_seq" => {
                let window = s.window.unwrap_or(3);
                if window < 2 {
                    return Err(err(format!(
                        "step {}: window must be at least 2 (the running answer plus one new response)",
                        i + 1
                    )));
                }
                if s.samples.is_some_and(|n| n > MAX_CALLS_PER_STEP) {
                    return Err(err(format!(
                        "step {}: samples = {}; at most {MAX_CALLS_PER_STEP}",
                        i + 1,
                        s.samples.unwrap_or(0)
                    )));
                }
                Step::SelfMoaSeq {
                    agent: one()?,
                    window,
                    samples: s.samples,
                    sample_temperature: s.sample_temperature,
                    prompt: prompt("self-moa-seq")?,
                }
            }
            "shuffle" => Step::Shuffle { seed: s.seed },
            "dropout" => {
                let rate = s.rate.unwrap_or(0.2);
                if !(0.0..1.0).contains(&rate) {
                    return Err(err(format!(
                        "step {}: rate = {rate} must be at least 0 and below 1",
                        i + 1
                    )));
                }
                Step::Dropout { rate, seed: s.seed }
            }
            _ => unreachable!("ops were checked above"),
        };
        if let Step::Propose { agents, .. }
        | Step::Synthesize { agents, .. }
        | Step::Refine { agents, .. } = &step
        {
            last_agents = Some(agents.clone());
        }
        steps.push(step);
    }
    let first_llm = steps
        .iter()
        .find(|s| !matches!(s, Step::Shuffle { .. } | Step::Dropout { .. }));
    let needs_responses = match first_llm {
        Some(Step::Propose { .. }) => false,
        Some(Step::SelfMoaSeq { samples, .. }) => samples.is_none(),
        _ => true,
    };
    if needs_responses {
        return Err(ConfigError::at(
            path,
            text,
            None,
            "the first model step must be `propose` (or `self_moa_seq` with `samples`): the other ops work on earlier responses".into(),
        ));
    }
    Ok(Preset {
        name,
        description: raw.description,
        steps,
        baseline: raw.baseline,
        origin: path.display().to_string(),
        text: text.to_string(),
        cache: raw.cache,
    })
}

/// More calls than this in one step is a typo (`n = 30000000`), not an experiment: refused before
/// anything is allocated for them (found by fuzzing the preset loader).
pub const MAX_CALLS_PER_STEP: usize = 256;

/// Repeat agents with `n = k` k times.
fn expand(list: Vec<AgentSpec>) -> Vec<AgentSpec> {
    list.into_iter()
        .flat_map(|a| {
            let k = a.n.unwrap_or(1);
            std::iter::repeat_n(AgentSpec { n: None, ..a }, k)
        })
        .collect()
}

/// Where a preset can be found: user presets shadow shipped ones of the same name.
#[derive(Debug, Clone)]
pub struct PresetEntry {
    pub name: String,
    pub origin: String,
    pub text: String,
    pub path: Option<PathBuf>,
}

pub fn catalogue(user_dir: &Path) -> Vec<PresetEntry> {
    let mut out: Vec<PresetEntry> = BUILTIN
        .iter()
        .map(|(n, t)| PresetEntry {
            name: n.to_string(),
            origin: "builtin".into(),
            text: t.to_string(),
            path: None,
        })
        .collect();
    if let Ok(rd) = std::fs::read_dir(user_dir) {
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for p in files {
            let Some(name) = p.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            out.retain(|e| e.name != name);
            out.push(PresetEntry {
                name,
                origin: p.display().to_string(),
                text,
                path: Some(p),
            });
        }
    }
    out
}

/// Find a preset by name (user folder first, then shipped) or by path.
pub fn load(
    name_or_path: &str,
    user_dir: &Path,
    templates: &Templates,
) -> Result<Preset, ConfigError> {
    let as_path = Path::new(name_or_path);
    let looks_like_path =
        name_or_path.ends_with(".toml") || name_or_path.contains(std::path::MAIN_SEPARATOR);
    if looks_like_path {
        let text = std::fs::read_to_string(as_path).map_err(|e| {
            ConfigError::new(format!(
                "cannot read preset file {}: {e}",
                as_path.display()
            ))
        })?;
        return parse(as_path, &text, templates);
    }
    let cat = catalogue(user_dir);
    match cat.iter().find(|e| e.name == name_or_path) {
        Some(e) => {
            let path = e
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("presets/{}.toml", e.name)));
            let mut p = parse(&path, &e.text, templates)?;
            p.origin = e.origin.clone();
            Ok(p)
        }
        None => Err(ConfigError::new(format!(
            "unknown preset {name_or_path:?}; available: {} (or give a path to a .toml file)",
            cat.iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Templates {
        Templates::builtin()
    }

    #[test]
    fn every_shipped_preset_parses() {
        for (name, text) in BUILTIN {
            let p = parse(Path::new(&format!("{name}.toml")), text, &t())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&p.name, name);
        }
    }

    #[test]
    fn a_preset_may_turn_the_call_cache_on_or_off() {
        let body = "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\" }]\n";
        let p = |head: &str| parse(Path::new("p.toml"), &format!("{head}{body}"), &t());
        assert_eq!(p("").unwrap().cache, None);
        assert_eq!(p("cache = true\n").unwrap().cache, Some(true));
        assert_eq!(p("cache = false\n").unwrap().cache, Some(false));
        let e = p("cache = \"yes\"\n").unwrap_err().to_string();
        assert!(e.starts_with("p.toml:1:9: "), "{e}");
    }

    #[test]
    fn together_moa_matches_the_paper() {
        let text = BUILTIN
            .iter()
            .find(|(n, _)| *n == "together-moa")
            .unwrap()
            .1;
        let p = parse(Path::new("together-moa.toml"), text, &t()).unwrap();
        assert_eq!(p.steps.len(), 3);
        let Step::Propose { agents, .. } = &p.steps[0] else {
            panic!()
        };
        assert_eq!(agents.len(), 6);
        assert!(
            agents
                .iter()
                .all(|a| a.temperature == Some(0.7) && a.max_tokens == Some(512))
        );
        let Step::Synthesize { agents: again, .. } = &p.steps[1] else {
            panic!()
        };
        assert_eq!(again, agents);
        let Step::Aggregate { agent, .. } = &p.steps[2] else {
            panic!()
        };
        assert_eq!(agent.model, "together/Qwen/Qwen1.5-110B-Chat");
    }

    #[test]
    fn errors_name_the_step_and_field() {
        let e = parse(
            Path::new("p.toml"),
            "[[step]]\nop = \"propose\"\nagents = [{ model = \"a/b\" }]\n\n[[step]]\nop = \"shuffle\"\nrate = 0.2\n",
            &t(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("p.toml:5:1: step 2"), "{e}");
        assert!(e.contains("`rate`"), "{e}");

        // Found by fuzzing: a huge `n` is refused before anything is allocated.
        for n in ["30000000", "9223372036854775807"] {
            let e = parse(
                Path::new("p.toml"),
                &format!("[[step]]\nop = \"propose\"\nagents = [{{ model = \"a/b\", n = {n} }}, {{ model = \"a/c\", n = {n} }}]\n"),
                &t(),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with("p.toml:1:1: step 1") && e.contains("at most 256"),
                "{e}"
            );
        }

        let e = parse(Path::new("p.toml"), "[[step]]\nop = \"blend\"\n", &t())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown op \"blend\""), "{e}");

        let e = parse(
            Path::new("p.toml"),
            "[[step]]\nop = \"propose\"\nagents = [{ model = \"a/b\", temprature = 1 }]\n",
            &t(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("temprature"), "{e}");

        let e = parse(
            Path::new("p.toml"),
            "[[step]]\nop = \"propose\"\nagents = [{ model = \"a/b\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"a/b\"\nprompt = \"nosuchtemplate\"\n",
            &t(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nosuchtemplate"), "{e}");
    }

    #[test]
    fn n_repeats_agents() {
        let p = parse(
            Path::new("p.toml"),
            "[[step]]\nop = \"propose\"\nagents = [{ model = \"a/b\", n = 3, temperature = 0.5 }]\n",
            &t(),
        )
        .unwrap();
        let Step::Propose { agents, .. } = &p.steps[0] else {
            panic!()
        };
        assert_eq!(agents.len(), 3);
        assert!(
            agents
                .iter()
                .all(|a| a.n.is_none() && a.temperature == Some(0.5))
        );
    }
}
