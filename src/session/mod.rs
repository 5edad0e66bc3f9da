//! Sessions (a conversation and every run made in it, saved as JSON), the single-model baseline
//! comparison, the LLM judge, and batch evaluation. No terminal code: the CLI and the TUI print.

pub mod compare;
pub mod eval;
pub mod exact;
pub mod export;
pub mod html;
pub mod judge;
pub mod recorder;
pub mod report;
pub mod stats;
pub mod store;
pub mod timeline;
pub mod variants;

use serde::{Deserialize, Serialize};

use crate::engine::preset::Preset;
use crate::engine::record::RunRecord;
use crate::provider::{Message, Role};

pub const SESSION_SCHEMA: &str = "moa.session/1";
/// The schema version this build reads and writes.
pub const SESSION_VERSION: u32 = 1;

/// One conversation with the workbench and every run made in it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub schema: String,
    /// Stable: the file name and what commands take. Made from the creation time, the first
    /// prompt and a random part (two runs of one prompt in one second are two sessions).
    /// Checked when a file is read (`store::valid_id`): it names a file.
    pub id: String,
    /// For people; made from the first prompt, the user may rename it.
    pub name: String,
    /// When the user last renamed it: of two copies written by two processes, the later rename
    /// wins (`store::merge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed: Option<String>,
    pub created: String,
    pub updated: String,
    /// The conversation so far: every user turn and the final answer that followed it.
    pub messages: Vec<Message>,
    pub runs: Vec<SessionRun>,
    /// A run that was under way when this file was written. Present after a crash or `kill -9`:
    /// it holds every call that had finished and the text the others had streamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<SessionRun>,
    /// The file this session was read from: where it is saved and what `rm` deletes. A copy of a
    /// session under another name keeps the original's id; acting on the id would touch the
    /// original.
    #[serde(skip)]
    pub file: Option<std::path::PathBuf>,
}

/// A run as the session keeps it: the record, the pipeline exactly as it ran, and judge verdicts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRun {
    /// The preset as it was for this run (models, temperatures, prompts; edits made in the TUI
    /// included), so the run can be read and re-run later even if the preset file changed.
    pub preset: Preset,
    pub record: RunRecord,
    #[serde(default)]
    pub kind: RunKind,
    /// The answers a re-aggregation was given (they come from an earlier run, maybe with some
    /// proposers re-run since), so the session shows what the aggregator saw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub given_responses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub judgements: Vec<judge::Judgement>,
    /// A re-aggregation's run: the run whose answers it aggregated (it is a variant of that run's
    /// aggregation; see `variants`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Which of the answers it was given this run's aggregation drew on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<variants::Attribution>,
    /// Verdicts between two of this run's variants (or one and the baseline), kept on the run
    /// whose variants they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pair_judgements: Vec<variants::PairJudgement>,
    /// This aggregation again without each proposer's answer, judged against it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leave_one_out: Vec<variants::LooEntry>,
    /// When each step and call started and ended and how the text arrived, for `moa replay`
    /// (absent in sessions saved before it was kept: those replay at an even pace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<timeline::Timeline>,
}

impl SessionRun {
    pub fn new(preset: Preset, record: RunRecord, kind: RunKind, given: Vec<String>) -> Self {
        SessionRun {
            preset,
            record,
            kind,
            given_responses: given,
            judgements: Vec::new(),
            parent: None,
            attribution: None,
            pair_judgements: Vec::new(),
            leave_one_out: Vec::new(),
            timeline: None,
        }
    }
}

/// What a saved run was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// The whole pipeline.
    #[default]
    Run,
    /// Only the aggregator, on an earlier run's answers (`given_responses`).
    Reaggregate,
    /// One proposer again (the workbench's "re-run this proposer").
    Rerun,
}

impl Session {
    /// A new session for a conversation that starts with `messages`.
    pub fn new(messages: &[Message]) -> Session {
        let now = time::OffsetDateTime::now_utc();
        let first = messages
            .iter()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or("");
        let stamp = now
            .format(time::macros::format_description!(
                "[year][month][day]-[hour][minute][second]"
            ))
            .unwrap_or_default();
        let slug = slug(first, 24);
        // 30 random bits: parallel runs of one prompt in one second still get their own files.
        let tail: String = {
            const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
            let mut r = rand::random::<u32>();
            (0..6)
                .map(|_| {
                    let c = DIGITS[(r & 31) as usize] as char;
                    r >>= 5;
                    c
                })
                .collect()
        };
        let id = if slug.is_empty() {
            format!("{stamp}-{tail}")
        } else {
            format!("{stamp}-{slug}-{tail}")
        };
        Session {
            schema: SESSION_SCHEMA.into(),
            id,
            name: title(first, 60),
            created: rfc3339(now),
            updated: rfc3339(now),
            messages: messages.to_vec(),
            runs: Vec::new(),
            in_progress: None,
            renamed: None,
            file: None,
        }
    }

    /// Give the session another name (the id stays).
    pub fn rename(&mut self, name: &str) {
        let now = rfc3339(time::OffsetDateTime::now_utc());
        self.name = name.trim().to_string();
        self.renamed = Some(now.clone());
        self.updated = now;
    }

    pub fn touch(&mut self) {
        self.updated = rfc3339(time::OffsetDateTime::now_utc());
    }

    /// The latest run that finished, if any.
    pub fn last_run(&self) -> Option<&SessionRun> {
        self.runs.last()
    }

    /// Add a finished run. A run that continues the conversation (its messages extend the session's)
    /// appends its final answer as the assistant's turn; a re-run of the same turn replaces that answer.
    pub fn push_run(&mut self, run: SessionRun) {
        let msgs = &run.record.messages;
        let mut conversation = msgs.clone();
        if let Some(f) = &run.record.final_answer {
            conversation.push(Message::assistant(f.text.clone()));
        }
        // The longest of the two wins: re-aggregating an old run must not cut later turns off.
        // A re-run proposer's answer is not the turn's reply.
        let replies = run.kind != RunKind::Rerun && run.record.final_answer.is_some();
        if replies
            && (conversation.len() >= self.messages.len() || !self.messages.starts_with(msgs))
        {
            self.messages = conversation;
        }
        self.in_progress = None;
        self.runs.push(run);
        self.touch();
    }
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A file-name-safe slug of the first words of `text`: lowercase ASCII letters, digits and dashes.
pub fn slug(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= max {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The first line of `text`, at most `max` characters, with an ellipsis when cut.
pub fn title(text: &str, max: usize) -> String {
    let line = text.trim().lines().next().unwrap_or("").trim();
    if line.chars().count() <= max {
        return line.to_string();
    }
    let mut s: String = line.chars().take(max - 1).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_come_from_the_first_prompt() {
        let s = Session::new(&[Message::user(
            "Explain B-trees vs. LSM-trees, please!\nMore",
        )]);
        let (stem, tail) = s.id.rsplit_once('-').unwrap();
        assert!(stem.ends_with("-explain-b-trees-vs-lsm-t"), "{}", s.id);
        assert_eq!(tail.len(), 6, "{}", s.id);
        assert!(store::valid_id(&s.id), "{}", s.id);
        assert!(s.id.len() <= 48, "fits the list's id column: {}", s.id);
        assert_eq!(s.name, "Explain B-trees vs. LSM-trees, please!");
        assert_eq!(slug("  ¿Qué?  ", 10), "qu");
        assert_eq!(title(&"x".repeat(100), 10).chars().count(), 10);
    }

    #[test]
    fn one_prompt_in_one_second_makes_distinct_ids() {
        let ids: std::collections::HashSet<String> = (0..200)
            .map(|_| Session::new(&[Message::user("same prompt")]).id)
            .collect();
        assert_eq!(ids.len(), 200);
        assert!(store::valid_id(&Session::new(&[]).id));
    }
}
