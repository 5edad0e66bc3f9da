//! What the workbench shows: the conversation, the panes of the current run, the editor, overlays.
//! Pure data; `update` changes it and `view` draws it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ratatui_textarea::TextArea;

use crate::engine::events::Stage;
use crate::engine::preset::{AgentSpec, Preset, Step};
use crate::engine::record::{CallRecord, CallStatus, RunRecord};
use crate::provider::Message;
use crate::session::RunKind;
use crate::session::variants::{Attribution, LooEntry, PairJudgement};

use super::markdown::Markdown;
pub use super::overlay::Overlay;
use super::overlay::{
    agents::AgentsState, compare::CompareState, help::HelpState, picker::Picker,
    prompt::PromptEditor, sessions::Browser,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaneStatus {
    Waiting,
    Streaming,
    Retrying,
    Done,
    Failed,
    TimedOut,
    Cancelled,
    Late,
}

/// One call's answer on screen.
pub struct Pane {
    /// The call's slot in its step (0-based; shown as #1, #2...).
    pub slot: usize,
    pub model: String,
    pub temperature: Option<f64>,
    pub status: PaneStatus,
    pub text: String,
    pub error: Option<String>,
    pub ttft_ms: Option<u64>,
    pub latency_ms: Option<u64>,
    pub start_ms: u64,
    /// When the call started and sent its first token, on this process's clock (live bars).
    pub started_at: Option<std::time::Instant>,
    pub first_token_at: Option<std::time::Instant>,
    pub tokens_out: u64,
    pub retries: u32,
    /// Lines scrolled up from the bottom; None follows the tail while streaming.
    pub scroll_from_end: Option<usize>,
    pub md: std::cell::RefCell<Markdown>,
}

impl Pane {
    pub fn new(slot: usize, model: &str, temperature: Option<f64>, color: bool) -> Pane {
        Pane {
            slot,
            model: model.to_string(),
            temperature,
            status: PaneStatus::Waiting,
            text: String::new(),
            error: None,
            ttft_ms: None,
            latency_ms: None,
            start_ms: 0,
            started_at: None,
            first_token_at: None,
            tokens_out: 0,
            retries: 0,
            scroll_from_end: None,
            md: std::cell::RefCell::new(Markdown::new(color)),
        }
    }

    /// Back to waiting, empty, for the call to run again (re-aggregation, a re-run proposer).
    pub fn reset(&mut self) {
        self.text.clear();
        self.error = None;
        self.status = PaneStatus::Waiting;
        self.latency_ms = None;
        self.ttft_ms = None;
        self.started_at = None;
        self.first_token_at = None;
        self.scroll_from_end = None;
        self.md.borrow_mut().clear();
    }

    pub fn finish(&mut self, r: &CallRecord) {
        self.status = match r.status {
            CallStatus::Ok | CallStatus::Dropped => PaneStatus::Done,
            CallStatus::Late => PaneStatus::Late,
            CallStatus::Failed => PaneStatus::Failed,
            CallStatus::Timeout => PaneStatus::TimedOut,
            CallStatus::Cancelled => PaneStatus::Cancelled,
        };
        // The record's text is authoritative (it holds everything, also for failed calls).
        if r.text.len() >= self.text.len() {
            self.text = r.text.clone();
        }
        self.error = r.error.clone().filter(|_| r.status != CallStatus::Ok);
        self.ttft_ms = r.ttft_ms;
        self.latency_ms = Some(r.latency_ms);
        self.start_ms = r.start_ms;
        self.tokens_out = r.tokens_out;
        self.retries = r.retries;
    }
}

pub fn agent_in(p: &Preset, r: AgentRef) -> Option<&AgentSpec> {
    match r {
        AgentRef::Baseline => p.baseline.as_ref(),
        AgentRef::Many(i, k) => match p.steps.get(i)? {
            Step::Propose { agents, .. }
            | Step::Synthesize { agents, .. }
            | Step::Refine { agents, .. } => agents.get(k),
            _ => None,
        },
        AgentRef::One(i) => match p.steps.get(i)? {
            Step::Aggregate { agent, .. }
            | Step::Rank { agent, .. }
            | Step::Vote { agent, .. }
            | Step::SelfMoaSeq { agent, .. } => Some(agent),
            _ => None,
        },
    }
}

pub fn agent_in_mut(p: &mut Preset, r: AgentRef) -> Option<&mut AgentSpec> {
    match r {
        AgentRef::Baseline => p.baseline.as_mut(),
        AgentRef::Many(i, k) => match p.steps.get_mut(i)? {
            Step::Propose { agents, .. }
            | Step::Synthesize { agents, .. }
            | Step::Refine { agents, .. } => agents.get_mut(k),
            _ => None,
        },
        AgentRef::One(i) => match p.steps.get_mut(i)? {
            Step::Aggregate { agent, .. }
            | Step::Rank { agent, .. }
            | Step::Vote { agent, .. }
            | Step::SelfMoaSeq { agent, .. } => Some(agent),
            _ => None,
        },
    }
}

/// Agreement of a step's answers, as last computed.
#[derive(Clone, Debug, PartialEq)]
pub struct AgreementView {
    pub value: f64,
    pub method: String,
    pub slots: Vec<usize>,
    pub matrix: Vec<Vec<f64>>,
    pub live: bool,
}

pub struct StepView {
    pub op: &'static str,
    pub panes: Vec<Pane>,
    pub agreement: Option<AgreementView>,
}

/// Which pane has the focus (for scrolling, copying, maximizing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaneId {
    Call(usize, usize),
    Final,
    Baseline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Input,
    Pane(PaneId),
}

/// One editable agent of the preset: where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentRef {
    /// Agent `k` of step `i` (proposers, synthesizers, refiners).
    Many(usize, usize),
    /// The one agent of step `i` (aggregator, ranker, voter, self-moa-seq).
    One(usize),
    Baseline,
}

/// One aggregation of a run's answers: the run's own (A) or a re-aggregation (B, C, …) with
/// another prompt, model or temperature. Each is kept whole; the aggregator pane shows the one
/// selected.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantView {
    /// The run that made it: the run itself for A, the re-aggregation's run for the others.
    pub run_id: String,
    /// A template's name, or "edited".
    pub prompt_label: String,
    /// What it ran with (leave-one-out runs it again without one answer).
    pub agent: AgentSpec,
    pub prompt: String,
    pub call: CallRecord,
    /// The answers it aggregated, by proposer slot.
    pub given: Vec<(usize, String)>,
    pub attribution: Option<Attribution>,
    pub loo: Vec<LooEntry>,
}

pub use crate::session::variants::letter as variant_letter;

/// Variant `i`, whole, in the view's aggregator pane.
fn show_variant(view: &mut RunView, i: usize, color: bool) {
    let Some(v) = view.variants.get(i).cloned() else {
        return;
    };
    view.variant = i;
    view.aggregator_prompt = Some(v.prompt_label.clone());
    if let Some(fs) = view.final_step
        && let Some(p) = view.steps.get_mut(fs).and_then(|s| s.panes.last_mut())
    {
        *p = Pane::new(0, &v.call.model, v.call.temperature, color);
        p.finish(&v.call);
    }
}

/// One side of the compare view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Variant `i` of the run.
    Variant(usize),
    /// The run's final answer, for pipelines that do not end with an aggregation.
    Final,
    Baseline,
}

/// One run on screen.
pub struct RunView {
    pub id: String,
    pub steps: Vec<StepView>,
    /// The step whose call writes the final answer (shown in the aggregator pane), if any.
    pub final_step: Option<usize>,
    pub baseline: Option<Pane>,
    pub record: Option<RunRecord>,
    pub started: std::time::Instant,
    /// The aggregator prompt the final answer was made with: a template's name, or "edited".
    pub aggregator_prompt: Option<String>,
    /// Every aggregation of this run's answers, in the order made; `variant` is the one shown.
    pub variants: Vec<VariantView>,
    pub variant: usize,
    /// Verdicts between two of the variants, or one and the baseline.
    pub pair_judgements: Vec<PairJudgement>,
    /// Leave-one-out is running for this variant's run id.
    pub loo_running: Option<String>,
}

impl RunView {
    /// The variant shown in the aggregator pane.
    pub fn shown_variant(&self) -> Option<&VariantView> {
        self.variants.get(self.variant)
    }

    /// The id the compare view and the saved verdicts name a side by.
    pub fn side_id(&self, side: Side) -> Option<String> {
        match side {
            Side::Variant(i) => self.variants.get(i).map(|v| v.run_id.clone()),
            Side::Final => self.record.as_ref().map(|r| r.id.clone()),
            Side::Baseline => self
                .record
                .as_ref()
                .and_then(|r| r.baseline.as_ref())
                .map(|_| crate::session::variants::BASELINE.to_string()),
        }
    }

    /// The sides the compare view can show, in order: the variants (or the final answer), then
    /// the baseline.
    pub fn sides(&self) -> Vec<Side> {
        let mut v: Vec<Side> = if self.variants.is_empty() {
            self.record
                .as_ref()
                .filter(|r| r.final_answer.is_some())
                .map(|_| vec![Side::Final])
                .unwrap_or_default()
        } else {
            (0..self.variants.len()).map(Side::Variant).collect()
        };
        if self.record.as_ref().is_some_and(|r| r.baseline.is_some()) {
            v.push(Side::Baseline);
        }
        v
    }
}

/// What the workbench is doing. One value, so that no two run kinds can be under way at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    Idle,
    /// Fetching the embedded models (first use).
    Fetching,
    /// A run of the preset.
    Running,
    /// Only the aggregator again, on the answers shown: the one-step run's step 0 is the view's
    /// final step.
    Reaggregating,
    /// One proposer again: the one-call run's events go to this pane (step, slot).
    RerunProposer {
        step: usize,
        slot: usize,
    },
    /// A saved run played back (`moa replay`): its events come from the session, not a provider.
    Replaying,
}

impl RunMode {
    pub fn busy(self) -> bool {
        self != RunMode::Idle
    }

    pub fn label(self) -> &'static str {
        match self {
            RunMode::Idle => "idle",
            RunMode::Fetching => "fetching models",
            RunMode::Running => "running",
            RunMode::Reaggregating => "re-aggregating",
            RunMode::RerunProposer { .. } => "re-running a proposer",
            RunMode::Replaying => "replaying",
        }
    }
}

/// The session file, as the writer last reported it. "saved" is said only once a write succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveState {
    /// Nothing to save yet (no run in this conversation).
    Nothing,
    /// A write was asked for and has not been reported yet.
    Pending,
    Saved {
        id: String,
        path: PathBuf,
    },
    /// The last write failed; the next snapshot tries again, and quitting says so.
    Failed {
        path: PathBuf,
        reason: String,
    },
}

pub struct App {
    pub preset: Arc<Preset>,
    pub presets: Vec<String>,
    pub conversation: Vec<Message>,
    pub input: TextArea<'static>,
    pub history: Vec<String>,
    pub history_pos: Option<usize>,
    pub run: Option<RunView>,
    /// What the workbench is doing: idle, fetching models, or which kind of run is under way.
    pub mode: RunMode,
    /// The clock as of the last message (`update` is given it; the view draws live bars with it).
    pub now: Instant,
    /// Where the session file stands: saved, being written, or failing (shown in the status line).
    pub save: SaveState,
    /// The prompt of the run in progress (added to the conversation with the answer).
    pub pending_prompt: Option<String>,
    pub focus: Focus,
    pub maximized: Option<PaneId>,
    pub overlay: Overlay,
    /// Which layer (step) of proposers is shown; None follows the latest.
    pub layer: Option<usize>,
    pub baseline_on: bool,
    pub status: String,
    pub color: bool,
    pub quit: bool,
    /// Set when something on screen changed since the last frame.
    pub dirty: bool,
    /// The messages the current run was given (re-aggregation reuses them).
    pub last_messages: Vec<Message>,
    /// Prompt templates by name, for the aggregator prompt editor.
    pub templates: Vec<(String, String)>,
    pub editor: PromptEditor,
    /// The session this conversation is saved in (a copy of what is on disk).
    pub session: Option<crate::session::Session>,
    /// Which of the session's runs is shown, when browsing an opened session.
    pub shown_run: Option<usize>,
    pub browser: Browser,
    pub picker: Picker,
    pub help: HelpState,
    pub agents: AgentsState,
    pub compare: CompareState,
    /// The judge for the compare view (config `judge_model`, else the aggregator's model).
    pub judge_model: Option<String>,
    /// What the re-aggregation under way runs with: it becomes a variant when it ends.
    pub pending_variant: Option<super::variants::Pending>,
    /// Where each pane was drawn in the last frame (for the mouse wheel).
    pub areas: std::cell::RefCell<Vec<(PaneId, ratatui::layout::Rect)>>,
    /// A replay under way (`moa replay`).
    pub replay: Option<super::replay::ReplayView>,
}

impl App {
    pub fn new(preset: Arc<Preset>, presets: Vec<String>, color: bool) -> App {
        let mut input = TextArea::default();
        input.set_placeholder_text(
            "Ask something. Enter sends, Alt+Enter or Ctrl+J adds a line, F1 lists every key.",
        );
        App {
            preset,
            presets,
            conversation: Vec::new(),
            input,
            history: Vec::new(),
            history_pos: None,
            run: None,
            mode: RunMode::Idle,
            now: Instant::now(),
            save: SaveState::Nothing,
            pending_prompt: None,
            focus: Focus::Input,
            maximized: None,
            overlay: Overlay::None,
            layer: None,
            baseline_on: true,
            status: String::new(),
            color,
            quit: false,
            dirty: true,
            last_messages: Vec::new(),
            templates: crate::engine::prompts::BUILTIN_TEMPLATES
                .iter()
                .map(|(n, t)| (n.to_string(), t.trim_end_matches('\n').to_string()))
                .collect(),
            editor: PromptEditor::default(),
            session: None,
            shown_run: None,
            browser: Browser::default(),
            picker: Picker::default(),
            help: HelpState::default(),
            agents: AgentsState::default(),
            compare: CompareState::default(),
            judge_model: None,
            pending_variant: None,
            areas: Default::default(),
            replay: None,
        }
    }

    /// Whether a run (of any kind) or the first-use fetch is under way.
    pub fn running(&self) -> bool {
        self.mode.busy()
    }

    /// The name of the aggregator prompt `prompt` (or the preset's): a template's, else "edited".
    pub fn aggregate_prompt_label(&self, prompt: Option<&str>) -> Option<String> {
        let p = prompt.or_else(|| self.aggregate_prompt())?;
        let p = p.trim_end_matches('\n');
        Some(
            self.templates
                .iter()
                .find(|(_, t)| t == p)
                .map_or_else(|| "edited".to_string(), |(n, _)| n.clone()),
        )
    }

    /// The prompt of the preset's last aggregate step.
    pub fn aggregate_prompt(&self) -> Option<&str> {
        self.preset.steps.iter().rev().find_map(|s| match s {
            Step::Aggregate { prompt, .. } => Some(prompt.as_str()),
            _ => None,
        })
    }

    /// The answers the aggregator works on: the last proposer-style step's successful ones.
    pub fn answers_to_aggregate(&self) -> Vec<String> {
        let Some(run) = &self.run else {
            return Vec::new();
        };
        let layers = self.layer_steps();
        let Some(&last) = layers.last() else {
            return Vec::new();
        };
        run.steps[last]
            .panes
            .iter()
            .filter(|p| p.status == PaneStatus::Done && !p.text.is_empty())
            .map(|p| p.text.clone())
            .collect()
    }

    /// The answers the aggregator works on, with the slot of the proposer that gave each.
    pub fn answers_with_slots(&self) -> Vec<(usize, String)> {
        let Some(run) = &self.run else {
            return Vec::new();
        };
        let Some(&last) = self.layer_steps().last() else {
            return Vec::new();
        };
        run.steps[last]
            .panes
            .iter()
            .filter(|p| p.status == PaneStatus::Done && !p.text.is_empty())
            .map(|p| (p.slot, p.text.clone()))
            .collect()
    }

    /// The preset's last aggregation: its agent and prompt.
    pub fn aggregation(&self) -> Option<(AgentSpec, String)> {
        self.preset.steps.iter().rev().find_map(|s| match s {
            Step::Aggregate { agent, prompt } => Some((agent.clone(), prompt.clone())),
            _ => None,
        })
    }

    /// Show variant `i` in the aggregator pane.
    pub fn select_variant(&mut self, i: usize) {
        let color = self.color;
        if let Some(run) = self.run.as_mut() {
            show_variant(run, i, color);
        }
    }

    /// A fresh view for a run of the current preset: one pane per call known in advance.
    pub fn new_run_view(&self, id: String) -> RunView {
        let steps = self
            .preset
            .steps
            .iter()
            .map(|s| StepView {
                op: s.op(),
                panes: match s {
                    Step::Propose { agents, .. }
                    | Step::Synthesize { agents, .. }
                    | Step::Refine { agents, .. } => agents
                        .iter()
                        .enumerate()
                        .map(|(k, a)| Pane::new(k, &a.model, a.temperature, self.color))
                        .collect(),
                    Step::Aggregate { agent, .. }
                    | Step::Rank { agent, .. }
                    | Step::Vote { agent, .. } => {
                        vec![Pane::new(0, &agent.model, agent.temperature, self.color)]
                    }
                    Step::SelfMoaSeq { .. } | Step::Shuffle { .. } | Step::Dropout { .. } => {
                        Vec::new()
                    }
                },
                agreement: None,
            })
            .collect();
        let final_step = self.preset.steps.iter().rposition(|s| {
            matches!(
                s,
                Step::Aggregate { .. } | Step::SelfMoaSeq { .. } | Step::Vote { .. }
            )
        });
        RunView {
            id,
            steps,
            final_step,
            baseline: self
                .preset
                .baseline
                .as_ref()
                .filter(|_| self.baseline_on)
                .map(|b| Pane::new(0, &b.model, b.temperature, self.color)),
            record: None,
            aggregator_prompt: self.aggregate_prompt_label(None),
            started: self.now,
            variants: Vec::new(),
            variant: 0,
            pair_judgements: Vec::new(),
            loo_running: None,
        }
    }

    /// Every agent of the preset, in the order the agents overlay lists them.
    pub fn agent_refs(&self) -> Vec<AgentRef> {
        let mut v = Vec::new();
        for (i, s) in self.preset.steps.iter().enumerate() {
            match s {
                Step::Propose { agents, .. }
                | Step::Synthesize { agents, .. }
                | Step::Refine { agents, .. } => {
                    v.extend((0..agents.len()).map(|k| AgentRef::Many(i, k)))
                }
                Step::Aggregate { .. }
                | Step::Rank { .. }
                | Step::Vote { .. }
                | Step::SelfMoaSeq { .. } => v.push(AgentRef::One(i)),
                Step::Shuffle { .. } | Step::Dropout { .. } => {}
            }
        }
        if self.preset.baseline.is_some() {
            v.push(AgentRef::Baseline);
        }
        v
    }

    pub fn agent(&self, r: AgentRef) -> Option<&AgentSpec> {
        agent_in(&self.preset, r)
    }

    /// The view of a saved run: panes filled from its record.
    pub fn run_view_from(&self, run: &crate::session::SessionRun) -> RunView {
        // A re-aggregation is one of its parent run's variants: shown there, selected.
        if run.kind == RunKind::Reaggregate
            && let Some(parent) = self.session.as_ref().and_then(|s| {
                s.runs
                    .iter()
                    .find(|r| r.kind == RunKind::Run && Some(&r.record.id) == run.parent.as_ref())
            })
        {
            let mut view = self.run_view_from(parent);
            if let Some(i) = view.variants.iter().position(|v| v.run_id == run.record.id) {
                show_variant(&mut view, i, self.color);
            }
            return view;
        }
        let record = &run.record;
        let mut view = self.new_run_view(record.id.clone());
        view.baseline = record
            .baseline
            .as_ref()
            .map(|b| Pane::new(0, &b.model, b.temperature, self.color));
        // A re-aggregation's one step is the final step; its given answers fill the last layer.
        let offset = |i: usize| match (run.kind, view.final_step) {
            (RunKind::Reaggregate, Some(fs)) => fs,
            _ => i,
        };
        if run.kind == RunKind::Reaggregate
            && let Some(layer) = (0..view.steps.len())
                .rev()
                .find(|i| Some(*i) != view.final_step && !view.steps[*i].panes.is_empty())
        {
            for (k, text) in run.given_responses.iter().enumerate() {
                if let Some(p) = view.steps[layer].panes.get_mut(k) {
                    p.text = text.clone();
                    p.status = PaneStatus::Done;
                }
            }
        }
        for (i, step) in record.steps.iter().enumerate() {
            let Some(sv) = view.steps.get_mut(offset(i)) else {
                continue;
            };
            for c in &step.calls {
                while sv.panes.len() <= c.slot {
                    let k = sv.panes.len();
                    sv.panes
                        .push(Pane::new(k, &c.model, c.temperature, self.color));
                }
                let p = &mut sv.panes[c.slot];
                p.model = c.model.clone();
                p.temperature = c.temperature;
                p.finish(c);
            }
            if let (Some(value), Some(method)) = (step.agreement, &step.agreement_method) {
                let slots: Vec<usize> = step
                    .calls
                    .iter()
                    .filter(|c| c.status == CallStatus::Ok)
                    .map(|c| c.slot)
                    .collect();
                sv.agreement = Some(AgreementView {
                    value,
                    method: method.clone(),
                    matrix: step.agreement_matrix.clone().unwrap_or_default(),
                    slots,
                    live: false,
                });
            }
        }
        if let (Some(p), Some(b)) = (view.baseline.as_mut(), &record.baseline) {
            p.finish(b);
        }
        view.record = Some(record.clone());
        if run.kind == RunKind::Run {
            self.restore_variants(&mut view, run);
        }
        view
    }

    /// A saved run's variants (its aggregation and the re-aggregations of its answers), with
    /// what was learnt about them; the newest is shown.
    fn restore_variants(&self, view: &mut RunView, run: &crate::session::SessionRun) {
        let Some(session) = &self.session else { return };
        let layer = (0..view.steps.len())
            .rev()
            .find(|i| Some(*i) != view.final_step && !view.steps[*i].panes.is_empty());
        let slots: Vec<(usize, String)> = layer
            .map(|l| {
                view.steps[l]
                    .panes
                    .iter()
                    .filter(|p| p.status == PaneStatus::Done && !p.text.is_empty())
                    .map(|p| (p.slot, p.text.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (i, r) in session.variants(&run.record.id).into_iter().enumerate() {
            let call = if i == 0 {
                r.aggregated().cloned()
            } else {
                r.record
                    .steps
                    .first()
                    .and_then(|s| s.calls.first())
                    .cloned()
            };
            let Some(call) = call else { continue };
            let given: Vec<(usize, String)> = if r.given_responses.is_empty() {
                slots.clone()
            } else {
                // A re-aggregation keeps the texts it was given: find each one's proposer.
                r.given_responses
                    .iter()
                    .enumerate()
                    .map(|(k, t)| {
                        let slot = slots.iter().find(|(_, x)| x == t).map_or(k, |(s, _)| *s);
                        (slot, t.clone())
                    })
                    .collect()
            };
            let (agent, prompt) = r
                .preset
                .steps
                .iter()
                .rev()
                .find_map(|s| match s {
                    Step::Aggregate { agent, prompt } => Some((agent.clone(), prompt.clone())),
                    _ => None,
                })
                .unwrap_or_else(|| (AgentSpec::model(&call.model), String::new()));
            view.variants.push(VariantView {
                run_id: r.record.id.clone(),
                prompt_label: self
                    .aggregate_prompt_label(Some(&prompt))
                    .unwrap_or_else(|| "edited".into()),
                agent,
                prompt,
                call,
                given,
                attribution: r.attribution.clone(),
                loo: r.leave_one_out.clone(),
            });
        }
        view.pair_judgements = run.pair_judgements.clone();
        if let Some(last) = view.variants.len().checked_sub(1) {
            show_variant(view, last, self.color);
        }
    }

    /// The steps that show proposer-style panes (several calls side by side).
    pub fn layer_steps(&self) -> Vec<usize> {
        let Some(run) = &self.run else {
            return Vec::new();
        };
        run.steps
            .iter()
            .enumerate()
            .filter(|(i, s)| Some(*i) != run.final_step && !s.panes.is_empty())
            .map(|(i, _)| i)
            .collect()
    }

    /// The layer shown: the chosen one, else the latest that has started.
    pub fn shown_layer(&self) -> Option<usize> {
        let layers = self.layer_steps();
        if let Some(l) = self.layer.filter(|l| layers.contains(l)) {
            return Some(l);
        }
        let run = self.run.as_ref()?;
        layers
            .iter()
            .rev()
            .find(|&&i| {
                run.steps[i]
                    .panes
                    .iter()
                    .any(|p| p.status != PaneStatus::Waiting)
            })
            .or(layers.first())
            .copied()
    }

    pub fn pane_mut(&mut self, stage: Stage, slot: usize) -> Option<&mut Pane> {
        let run = self.run.as_mut()?;
        match stage {
            Stage::Baseline => run.baseline.as_mut(),
            Stage::Step(i) => {
                let step = run.steps.get_mut(i)?;
                // Steps whose calls are not known in advance (self_moa_seq) grow as calls start.
                while step.panes.len() <= slot {
                    let k = step.panes.len();
                    step.panes.push(Pane::new(k, "", None, self.color));
                }
                step.panes.get_mut(slot)
            }
        }
    }

    pub fn pane(&self, id: PaneId) -> Option<&Pane> {
        let run = self.run.as_ref()?;
        match id {
            PaneId::Call(s, k) => run.steps.get(s)?.panes.get(k),
            PaneId::Baseline => run.baseline.as_ref(),
            PaneId::Final => {
                let s = run.final_step?;
                run.steps.get(s)?.panes.last()
            }
        }
    }

    pub fn pane_by_id_mut(&mut self, id: PaneId) -> Option<&mut Pane> {
        let run = self.run.as_mut()?;
        match id {
            PaneId::Call(s, k) => run.steps.get_mut(s)?.panes.get_mut(k),
            PaneId::Baseline => run.baseline.as_mut(),
            PaneId::Final => {
                let s = run.final_step?;
                run.steps.get_mut(s)?.panes.last_mut()
            }
        }
    }

    /// Panes in focus order: the shown layer's, the final answer, the baseline.
    pub fn focusable(&self) -> Vec<PaneId> {
        let mut v = Vec::new();
        if let (Some(l), Some(run)) = (self.shown_layer(), &self.run) {
            v.extend((0..run.steps[l].panes.len()).map(|k| PaneId::Call(l, k)));
        }
        if self.run.as_ref().is_some_and(|r| r.final_step.is_some()) {
            v.push(PaneId::Final);
        }
        if self.run.as_ref().is_some_and(|r| r.baseline.is_some()) {
            v.push(PaneId::Baseline);
        }
        v
    }
}
