//! Prompt templates (`assets/prompts/NAME.md`, or the user's under the config folder's `prompts/`) and
//! how messages are assembled for each kind of call.
//!
//! Synthesize, aggregate and self_moa_seq calls follow togethercomputer/MoA's
//! `inject_references_to_messages` byte for byte: the rendered template becomes a system block (appended
//! to an existing leading system message after "\n\n", else prepended as a new one) and user turns are
//! unchanged. Rank, vote and refine are judge-style calls: one user message made from the template.

use std::collections::BTreeMap;
use std::path::Path;

use crate::provider::{Message, Role};

pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    ("together", include_str!("../../assets/prompts/together.md")),
    ("terse", include_str!("../../assets/prompts/terse.md")),
    ("reasoned", include_str!("../../assets/prompts/reasoned.md")),
    ("rank", include_str!("../../assets/prompts/rank.md")),
    ("vote", include_str!("../../assets/prompts/vote.md")),
    ("refine", include_str!("../../assets/prompts/refine.md")),
    (
        "self-moa-seq",
        include_str!("../../assets/prompts/self-moa-seq.md"),
    ),
];

/// A lone word given as a prompt that names no template (`Templates::resolve`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown prompt template {name:?}; templates: {} (or write the prompt inline, using {{query}} {{responses}} {{n}})",
    .known.join(", ")
)]
pub struct UnknownTemplate {
    pub name: String,
    /// Every template's name, sorted.
    pub known: Vec<String>,
}

/// Named templates: shipped ones, shadowed by the user's.
#[derive(Clone, Debug)]
pub struct Templates {
    by_name: BTreeMap<String, String>,
}

impl Templates {
    pub fn builtin() -> Self {
        Templates {
            by_name: BUILTIN_TEMPLATES
                .iter()
                .map(|(n, t)| (n.to_string(), strip_final_newline(t)))
                .collect(),
        }
    }

    /// Shipped templates plus `*.md` files in `dir` (which win on a name clash).
    pub fn load(dir: &Path) -> Self {
        let mut t = Self::builtin();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "md")
                    && let (Some(stem), Ok(text)) = (p.file_stem(), std::fs::read_to_string(&p))
                {
                    t.by_name.insert(
                        stem.to_string_lossy().into_owned(),
                        strip_final_newline(&text),
                    );
                }
            }
        }
        t
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(String::as_str)
    }

    /// A template name gives its text; anything that reads like prose (spaces, newlines or
    /// placeholders) is taken as inline template text; a lone unknown word is an error.
    pub fn resolve(&self, name_or_text: &str) -> Result<String, UnknownTemplate> {
        if let Some(t) = self.get(name_or_text) {
            return Ok(t.to_string());
        }
        let is_word = !name_or_text.is_empty()
            && name_or_text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if is_word {
            return Err(UnknownTemplate {
                name: name_or_text.to_string(),
                known: self.names().map(str::to_string).collect(),
            });
        }
        Ok(name_or_text.to_string())
    }
}

fn strip_final_newline(t: &str) -> String {
    t.strip_suffix('\n').unwrap_or(t).to_string()
}

/// "\n1. first\n2. second": the reference list exactly as togethercomputer/MoA builds it.
pub fn numbered(responses: &[String]) -> String {
    let mut s = String::new();
    for (i, r) in responses.iter().enumerate() {
        s.push_str(&format!("\n{}. {}", i + 1, r));
    }
    s
}

/// Fill `{query}`, `{responses}`, `{n}` and `{response}` in one pass (so text inside a response is
/// never substituted again). Without a `{responses}` placeholder the numbered list follows the text.
pub fn render(template: &str, query: &str, responses: &[String], response: Option<&str>) -> String {
    let list = numbered(responses);
    let mut out = String::with_capacity(template.len() + list.len());
    let mut rest = template;
    let mut used_list = false;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let (token, value): (&str, Option<String>) = if after.starts_with("{query}") {
            ("{query}", Some(query.to_string()))
        } else if after.starts_with("{responses}") {
            used_list = true;
            ("{responses}", Some(list.clone()))
        } else if after.starts_with("{n}") {
            ("{n}", Some(responses.len().to_string()))
        } else if after.starts_with("{response}") {
            ("{response}", Some(response.unwrap_or_default().to_string()))
        } else {
            ("{", None)
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push('{'),
        }
        rest = &after[token.len()..];
    }
    out.push_str(rest);
    if !used_list && response.is_none() && !responses.is_empty() {
        out.push_str(&list);
    }
    out
}

/// The text of the last user turn: what `{query}` stands for.
pub fn last_user(messages: &[Message]) -> &str {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or("")
}

/// The conversation with an agent's own system prompt in front (merged into a leading system message).
pub fn with_agent_system(conversation: &[Message], system: Option<&str>) -> Vec<Message> {
    let mut msgs = conversation.to_vec();
    if let Some(sys) = system.filter(|s| !s.is_empty()) {
        match msgs.first_mut() {
            Some(m) if m.role == Role::System => m.content = format!("{sys}\n\n{}", m.content),
            _ => msgs.insert(0, Message::system(sys)),
        }
    }
    msgs
}

/// Together's `inject_references_to_messages`: the block goes into the leading system message.
pub fn inject_system_block(messages: Vec<Message>, block: String) -> Vec<Message> {
    let mut msgs = messages;
    match msgs.first_mut() {
        Some(m) if m.role == Role::System => {
            m.content.push_str("\n\n");
            m.content.push_str(&block);
        }
        _ => msgs.insert(0, Message::system(block)),
    }
    msgs
}

/// Messages for a call that synthesizes `responses` (synthesize, aggregate, self_moa_seq).
pub fn synthesis_messages(
    conversation: &[Message],
    system: Option<&str>,
    template: &str,
    responses: &[String],
) -> Vec<Message> {
    let block = render(template, last_user(conversation), responses, None);
    inject_system_block(with_agent_system(conversation, system), block)
}

/// Messages for a judge-style call (rank, vote, refine): one user turn made from the template.
pub fn judge_messages(
    conversation: &[Message],
    system: Option<&str>,
    template: &str,
    responses: &[String],
    response: Option<&str>,
) -> Vec<Message> {
    let text = render(template, last_user(conversation), responses, response);
    with_agent_system(&[Message::user(text)], system)
}

/// Rough token count (about four characters a token for English); used for context checks and
/// when a provider reports no usage (then flagged as estimated).
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

pub fn estimate_message_tokens(messages: &[Message]) -> u64 {
    messages
        .iter()
        .map(|m| estimate_tokens(&m.content) + 4)
        .sum()
}

/// Shorten responses so that they fit `budget_chars` together: the longest are cut to a common length
/// (short ones stay whole), so each loses as evenly as possible. Returns the cap, or None if all fit.
pub fn fit_responses(responses: &mut [String], budget_chars: usize) -> Option<usize> {
    let lens: Vec<usize> = responses.iter().map(|r| r.chars().count()).collect();
    if lens.iter().sum::<usize>() <= budget_chars {
        return None;
    }
    // Water-filling: the largest cap c with sum(min(len, c)) <= budget.
    let mut sorted = lens.clone();
    sorted.sort_unstable();
    let mut remaining = budget_chars;
    let mut cap = 0;
    for (i, &l) in sorted.iter().enumerate() {
        let left = sorted.len() - i;
        if l * left <= remaining {
            remaining -= l;
        } else {
            cap = remaining / left;
            break;
        }
    }
    const MARK: &str = " […shortened to fit the aggregator's context]";
    for r in responses.iter_mut() {
        if r.chars().count() > cap {
            let keep = cap.saturating_sub(MARK.chars().count());
            let cut: String = r.chars().take(keep).collect();
            *r = format!("{cut}{MARK}");
        }
    }
    Some(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOGETHER_PROMPT: &str = "You have been provided with a set of responses from various open-source models to the latest user query. Your task is to synthesize these responses into a single, high-quality response. It is crucial to critically evaluate the information provided in these responses, recognizing that some of it may be biased or incorrect. Your response should not simply replicate the given answers but should offer a refined, accurate, and comprehensive reply to the instruction. Ensure your response is well-structured, coherent, and adheres to the highest standards of accuracy and reliability.\n\nResponses from models:";

    #[test]
    fn together_assembly_is_byte_exact() {
        let t = Templates::builtin();
        let refs = vec!["Paris.".to_string(), "It is Paris".to_string()];
        let conv = vec![Message::user("Capital of France?")];
        let msgs = synthesis_messages(&conv, None, t.get("together").unwrap(), &refs);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].role, Role::System);
        assert_eq!(
            msgs[0].content,
            format!("{TOGETHER_PROMPT}\n1. Paris.\n2. It is Paris")
        );
        assert_eq!(msgs[1], conv[0]);

        let conv = vec![Message::system("Be brief."), Message::user("Q")];
        let msgs = synthesis_messages(&conv, None, t.get("together").unwrap(), &refs);
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[0].content,
            format!("Be brief.\n\n{TOGETHER_PROMPT}\n1. Paris.\n2. It is Paris")
        );
    }

    #[test]
    fn render_fills_placeholders_once() {
        let r = render(
            "Q: {query} ({n}){responses}\n{unknown}",
            "why {n}?",
            &["a {query}".into()],
            None,
        );
        assert_eq!(r, "Q: why {n}? (1)\n1. a {query}\n{unknown}");
    }

    #[test]
    fn fitting_cuts_the_longest_evenly() {
        let mut rs = vec!["a".repeat(10), "b".repeat(1000), "c".repeat(2000)];
        let cap = fit_responses(&mut rs, 1010).unwrap();
        assert_eq!(cap, 500);
        assert_eq!(rs[0].len(), 10);
        assert!(rs[1].chars().count() <= 500 && rs[2].chars().count() <= 500);
        assert!(rs[2].ends_with("context]"));
        let mut small = vec!["x".to_string()];
        assert_eq!(fit_responses(&mut small, 10), None);
    }

    #[test]
    fn inline_and_unknown_templates() {
        let t = Templates::builtin();
        assert!(t.resolve("nosuch").is_err());
        assert_eq!(
            t.resolve("Combine {n} answers").unwrap(),
            "Combine {n} answers"
        );
        assert!(t.resolve("terse").unwrap().len() > 20);
    }

    #[test]
    fn an_unknown_template_lists_the_templates() {
        let e = Templates::builtin().resolve("nosuch").unwrap_err();
        assert_eq!(e.name, "nosuch");
        assert_eq!(
            e.to_string(),
            "unknown prompt template \"nosuch\"; templates: rank, reasoned, refine, self-moa-seq, terse, together, vote (or write the prompt inline, using {query} {responses} {n})"
        );
    }
}
