//! `VARIANTS.toml`: the aggregator variants `moa tune` compares. Each is the preset's last
//! aggregation with some settings replaced; what a variant does not set comes from the preset.
//!
//! ```toml
//! [[variant]]
//! name = "paper"                  # required, unique
//! [[variant]]
//! name = "terse"
//! prompt = "terse"                # a template name, or inline text using {query} {responses} {n}
//! model = "groq/llama-3.3-70b-versatile"
//! temperature = 0.2
//! max_tokens = 400
//! top_p = 0.9
//! ```

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, parse_toml};
use crate::engine::preset::{AgentSpec, Preset, Step};
use crate::engine::prompts::Templates;

/// One aggregator variant, resolved against the preset: the step it runs and how to name it.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub name: String,
    /// The template's name, `inline` for text written in the file, or `preset's` for the preset's
    /// own inline text.
    pub prompt_label: String,
    pub agent: AgentSpec,
    /// The prompt text (a template resolved).
    pub prompt: String,
    /// Changes when anything the variant runs with changes, so that results of an edited variant
    /// are not taken for its new ones on resume.
    pub fingerprint: String,
}

impl Variant {
    /// The preset step that runs this variant.
    pub fn step(&self) -> Step {
        Step::Aggregate {
            agent: self.agent.clone(),
            prompt: self.prompt.clone(),
        }
    }

    /// `terse (prompt terse, groq/llama-3.3-70b t=0.2)`: what the report shows beside the name.
    pub fn describe(&self) -> String {
        let t = self
            .agent
            .temperature
            .map(|t| format!(" t={t}"))
            .unwrap_or_default();
        format!("prompt {}, {}{t}", self.prompt_label, self.agent.model)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    variant: Vec<toml::Spanned<RawVariant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: toml::Spanned<String>,
    prompt: Option<String>,
    model: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    top_p: Option<f64>,
}

/// The preset's last aggregation: what variants start from. Tuning needs one, as the last step:
/// the proposers' answers are frozen at the step before it.
pub fn last_aggregation(preset: &Preset) -> Result<(AgentSpec, String), String> {
    match preset.steps.last() {
        Some(Step::Aggregate { agent, prompt }) => Ok((agent.clone(), prompt.clone())),
        _ => Err(format!(
            "preset {:?} does not end with an aggregate step: moa tune compares aggregator variants \
             on the answers of the steps before it (see moa presets show {})",
            preset.name, preset.name
        )),
    }
}

/// Read `VARIANTS.toml` text from `path` against `preset`. Errors name the file and line.
pub fn parse(
    path: &Path,
    text: &str,
    preset: &Preset,
    templates: &Templates,
) -> Result<Vec<Variant>, ConfigError> {
    let file: File = parse_toml(path, text)?;
    let (base_agent, base_prompt) =
        last_aggregation(preset).map_err(|m| ConfigError::at(path, text, None, m))?;
    if file.variant.is_empty() {
        return Err(ConfigError::at(
            path,
            text,
            None,
            "no variants: add [[variant]] tables, each with a name (and any of prompt, model, \
             temperature, max_tokens, top_p)"
                .into(),
        ));
    }
    let mut out: Vec<Variant> = Vec::new();
    for raw in &file.variant {
        let at = raw.span();
        let raw = raw.get_ref();
        let name = raw.name.get_ref().trim().to_string();
        let err = |msg: String| ConfigError::at(path, text, Some(at.clone()), msg);
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(ConfigError::at(
                path,
                text,
                Some(raw.name.span()),
                "a variant's name must be non-empty printable text".into(),
            ));
        }
        if out.iter().any(|v| v.name == name) {
            return Err(ConfigError::at(
                path,
                text,
                Some(raw.name.span()),
                format!("variant {name:?} is named twice: names must be unique"),
            ));
        }
        if let Some(t) = raw.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(err(format!(
                "variant {name:?}: temperature {t} is outside 0..=2"
            )));
        }
        if let Some(p) = raw.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(err(format!(
                "variant {name:?}: top_p {p} is outside (0, 1]"
            )));
        }
        if raw.max_tokens == Some(0) {
            return Err(err(format!(
                "variant {name:?}: max_tokens must be at least 1"
            )));
        }
        if let Some(m) = &raw.model
            && !m
                .split_once('/')
                .is_some_and(|(p, n)| !p.is_empty() && !n.is_empty())
        {
            return Err(err(format!(
                "variant {name:?}: model {m:?} must be written PROVIDER/MODEL"
            )));
        }
        let (prompt_label, prompt) = match &raw.prompt {
            // The preset's own template, named when it is one of the templates.
            None => (
                templates
                    .names()
                    .find(|n| templates.get(n) == Some(base_prompt.as_str()))
                    .unwrap_or("preset's")
                    .to_string(),
                base_prompt.clone(),
            ),
            Some(p) => {
                let text_of = templates
                    .resolve(p)
                    .map_err(|e| err(format!("variant {name:?}: {e}")))?;
                let label = if templates.get(p).is_some() {
                    p.clone()
                } else {
                    "inline".into()
                };
                (label, text_of)
            }
        };
        let agent = AgentSpec {
            model: raw
                .model
                .clone()
                .unwrap_or_else(|| base_agent.model.clone()),
            temperature: raw.temperature.or(base_agent.temperature),
            max_tokens: raw.max_tokens.or(base_agent.max_tokens),
            top_p: raw.top_p.or(base_agent.top_p),
            ..base_agent.clone()
        };
        let fingerprint = fingerprint(&agent, &prompt);
        out.push(Variant {
            name,
            prompt_label,
            agent,
            prompt,
            fingerprint,
        });
    }
    Ok(out)
}

fn fingerprint(agent: &AgentSpec, prompt: &str) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_string(agent).unwrap_or_default().as_bytes());
    h.update([0u8]);
    h.update(prompt.as_bytes());
    h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset() -> Preset {
        let templates = Templates::load(Path::new("/nonexistent"));
        crate::engine::preset::parse(
            Path::new("p.toml"),
            r#"name = "p"
description = ""
[[step]]
op = "propose"
agents = [{ model = "fake/a" }, { model = "fake/b" }]
[[step]]
op = "aggregate"
model = "fake/agg"
temperature = 0.3
max_tokens = 300
"#,
            &templates,
        )
        .unwrap()
    }

    #[test]
    fn variants_take_what_they_do_not_set_from_the_preset() {
        let t = Templates::load(Path::new("/nonexistent"));
        let v = parse(
            Path::new("v.toml"),
            "[[variant]]\nname = \"paper\"\n\n[[variant]]\nname = \"terse\"\nprompt = \"terse\"\ntemperature = 0.0\n\n[[variant]]\nname = \"own\"\nprompt = \"Combine {n} answers: {responses}\"\nmodel = \"fake/other\"\n",
            &preset(),
            &t,
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].prompt_label, "together");
        assert_eq!(v[0].agent.model, "fake/agg");
        assert_eq!(v[0].agent.temperature, Some(0.3));
        assert_eq!(v[1].prompt_label, "terse");
        assert_eq!(v[1].agent.temperature, Some(0.0));
        assert_eq!(v[1].agent.max_tokens, Some(300));
        assert_eq!(v[2].prompt_label, "inline");
        assert_eq!(v[2].agent.model, "fake/other");
        assert_ne!(v[0].fingerprint, v[1].fingerprint);
        let Step::Aggregate { prompt, .. } = &preset().steps[1] else {
            panic!()
        };
        assert_eq!(&v[0].prompt, prompt);
    }

    #[test]
    fn bad_files_are_reported_with_their_line() {
        let t = Templates::load(Path::new("/nonexistent"));
        let cases = [
            (
                "[[variant]]\nname = \"a\"\n[[variant]]\nname = \"a\"\n",
                "v.toml:4:",
                "named twice",
            ),
            (
                "[[variant]]\nname = \"a\"\ncolour = \"red\"\n",
                "v.toml:3:",
                "colour",
            ),
            ("[[variant]]\nprompt = \"terse\"\n", "v.toml:1:", "name"),
            (
                "[[variant]]\nname = \"a\"\nprompt = \"nosuchtemplate\"\n",
                "v.toml:1:",
                "unknown prompt template",
            ),
            (
                "[[variant]]\nname = \"a\"\ntemperature = 7\n",
                "v.toml:1:",
                "outside 0..=2",
            ),
            ("", "v.toml", "no variants"),
        ];
        for (text, at, what) in cases {
            let e = parse(Path::new("v.toml"), text, &preset(), &t)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(at), "{text:?}: {e}");
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }
}
