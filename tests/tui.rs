//! The workbench without a terminal: `update` as unit logic, and every screen as a snapshot of a
//! TestBackend buffer (narrow and wide, streaming and finished, with a failed pane).

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use moa_workbench::engine::events::{CallTag, RunEvent, Stage};
use moa_workbench::engine::preset::{self, Preset};
use moa_workbench::engine::prompts::Templates;
use moa_workbench::engine::record::{CallRecord, CallStatus, FinalAnswer, RunRecord, Usage};
use moa_workbench::provider::Role;
use moa_workbench::tui::state::{App, Focus, Overlay, PaneId, PaneStatus, RunMode};
use moa_workbench::tui::update::{Effect, Msg, update};
use moa_workbench::tui::view::view;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

const PRESET: &str = r#"name = "demo"
description = "three proposers, an aggregator, a baseline"
[[step]]
op = "propose"
agents = [
  { model = "fake/alpha", temperature = 0.7 },
  { model = "fake/bravo", temperature = 0.9 },
  { model = "fake/charlie" },
]
[[step]]
op = "aggregate"
model = "fake/agg"
temperature = 0.3
[baseline]
model = "fake/base"
temperature = 0.7
"#;

fn preset() -> Arc<Preset> {
    Arc::new(preset::parse(Path::new("demo.toml"), PRESET, &Templates::builtin()).unwrap())
}

fn app() -> App {
    App::new(preset(), vec!["demo".into(), "other".into()], false)
}

/// `update` at the current time (the loop passes its clock the same way).
fn up(app: &mut App, msg: Msg) -> Vec<Effect> {
    update(app, msg, std::time::Instant::now())
}

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn key_mod(code: KeyCode, m: KeyModifiers) -> Msg {
    Msg::Key(KeyEvent::new(code, m))
}

fn type_text(app: &mut App, s: &str) {
    for c in s.chars() {
        up(app, key(KeyCode::Char(c)));
    }
}

fn tag(stage: Stage, slot: usize, model: &str) -> CallTag {
    CallTag {
        run: "01TEST".into(),
        stage,
        slot,
        model: model.into(),
    }
}

fn call(
    slot: usize,
    model: &str,
    text: &str,
    status: CallStatus,
    latency: u64,
    ttft: u64,
) -> CallRecord {
    CallRecord {
        slot,
        model: model.into(),
        temperature: Some(0.7),
        top_p: None,
        max_tokens: None,
        status,
        error: (status != CallStatus::Ok)
            .then(|| "fake answered HTTP 503: overloaded (retried 2 times)".to_string()),
        error_kind: None,
        text: text.into(),
        ttft_ms: Some(ttft),
        latency_ms: latency,
        start_ms: 0,
        tokens_in: 20,
        tokens_out: 40,
        usage_estimated: false,
        cost_usd: Some(0.0001),
        retries: 0,
        finish_reason: Some("stop".into()),
        cached: false,
    }
}

fn delta(app: &mut App, stage: Stage, slot: usize, model: &str, text: &str) {
    up(
        app,
        Msg::Run(Box::new(RunEvent::Delta {
            tag: tag(stage, slot, model),
            text: text.into(),
        })),
    );
}

const ALPHA: &str =
    "## Paris\nThe capital of France is **Paris**.\n\n```python\nprint(\"Paris\")\n```\n";
const BRAVO: &str = "It is Paris, on the Seine.\n- population ~2.1M\n- see [wiki](https://en.wikipedia.org/wiki/Paris)\n";

/// A run that is streaming: two proposers have text, one has failed.
fn streaming() -> App {
    let mut a = app();
    type_text(&mut a, "What is the capital of France?");
    let fx = up(&mut a, key(KeyCode::Enter));
    assert!(matches!(fx.as_slice(), [Effect::StartRun { .. }]));
    delta(&mut a, Stage::Step(0), 0, "fake/alpha", &ALPHA[..60]);
    delta(&mut a, Stage::Step(0), 1, "fake/bravo", BRAVO);
    up(
        &mut a,
        Msg::Run(Box::new(RunEvent::CallFailed {
            tag: tag(Stage::Step(0), 2, "fake/charlie"),
            record: call(
                2,
                "fake/charlie",
                "Partial answ",
                CallStatus::Failed,
                900,
                300,
            ),
        })),
    );
    delta(&mut a, Stage::Baseline, 0, "fake/base", "Paris.");
    a
}

fn finished() -> App {
    let mut a = streaming();
    delta(&mut a, Stage::Step(0), 0, "fake/alpha", &ALPHA[60..]);
    for (slot, model, text, lat) in [
        (0, "fake/alpha", ALPHA, 2100),
        (1, "fake/bravo", BRAVO, 3400),
    ] {
        up(
            &mut a,
            Msg::Run(Box::new(RunEvent::CallFinished {
                tag: tag(Stage::Step(0), slot, model),
                record: call(slot, model, text, CallStatus::Ok, lat, 400),
            })),
        );
    }
    up(
        &mut a,
        Msg::Run(Box::new(RunEvent::Agreement {
            run: "01TEST".into(),
            step: 0,
            value: 0.81,
            method: "minilm".into(),
            slots: vec![0, 1],
            matrix: vec![vec![1.0, 0.81], vec![0.81, 1.0]],
            live: false,
        })),
    );
    delta(
        &mut a,
        Stage::Step(1),
        0,
        "fake/agg",
        "The capital of France is **Paris**.",
    );
    let agg = call(
        0,
        "fake/agg",
        "The capital of France is **Paris**.",
        CallStatus::Ok,
        1200,
        200,
    );
    up(
        &mut a,
        Msg::Run(Box::new(RunEvent::CallFinished {
            tag: tag(Stage::Step(1), 0, "fake/agg"),
            record: agg.clone(),
        })),
    );
    let base = call(0, "fake/base", "Paris.", CallStatus::Ok, 1500, 250);
    up(
        &mut a,
        Msg::Run(Box::new(RunEvent::CallFinished {
            tag: tag(Stage::Baseline, 0, "fake/base"),
            record: base.clone(),
        })),
    );
    let record = RunRecord {
        schema: "moa.run/1".into(),
        id: "01TEST".into(),
        created: String::new(),
        preset: "demo".into(),
        messages: vec![],
        steps: vec![
            step(
                "propose",
                vec![
                    call(0, "fake/alpha", ALPHA, CallStatus::Ok, 2100, 400),
                    call(1, "fake/bravo", BRAVO, CallStatus::Ok, 3400, 400),
                ],
            ),
            step("aggregate", vec![agg.clone()]),
        ],
        final_answer: Some(FinalAnswer {
            text: agg.text.clone(),
            source: "aggregate".into(),
            status: CallStatus::Ok,
        }),
        baseline: Some(base),
        wall_ms: 4700,
        usage: Usage {
            tokens_in: 100,
            tokens_out: 160,
            cost_usd: 0.0004,
            cost_incomplete: false,
        },
        cancelled: false,
    };
    up(
        &mut a,
        Msg::Run(Box::new(RunEvent::RunDone {
            record: Box::new(record),
        })),
    );
    a
}

fn step(op: &str, calls: Vec<CallRecord>) -> moa_workbench::engine::record::StepRecord {
    moa_workbench::engine::record::StepRecord {
        op: op.into(),
        agreement: None,
        agreement_method: None,
        agreement_matrix: None,
        responses: (0..calls.len()).map(|k| [0, k]).collect(),
        calls,
        shortened: None,
        notes: vec![],
        wall_ms: 0,
    }
}

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view(app, f)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        let line: String = (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[test]
fn snapshots() {
    insta::assert_snapshot!("empty_wide", screen(&app(), 160, 45));
    insta::assert_snapshot!("streaming_wide", screen(&streaming(), 160, 45));
    insta::assert_snapshot!("streaming_narrow", screen(&streaming(), 80, 24));
    insta::assert_snapshot!("finished_wide", screen(&finished(), 160, 45));
    insta::assert_snapshot!("finished_narrow", screen(&finished(), 80, 24));
    let mut help = finished();
    up(&mut help, key(KeyCode::F(1)));
    insta::assert_snapshot!("help", screen(&help, 120, 30));
    insta::assert_snapshot!("too_small", screen(&app(), 50, 12));
}

#[test]
fn sending_a_prompt_and_multi_turn() {
    let mut a = finished();
    assert!(!a.running());
    assert_eq!(a.conversation.len(), 2);
    assert_eq!(a.conversation[1].role, Role::Assistant);
    assert_eq!(
        a.conversation[1].content,
        "The capital of France is **Paris**."
    );
    type_text(&mut a, "And of Italy?");
    let fx = up(&mut a, key(KeyCode::Enter));
    match fx.as_slice() {
        [
            Effect::StartRun {
                messages,
                baseline: true,
            },
        ] => {
            assert_eq!(messages.len(), 3, "the earlier turns go with the follow-up");
            assert_eq!(messages[2].content, "And of Italy?");
        }
        other => panic!("{other:?}"),
    }
    assert!(a.running());
    assert!(a.input.is_empty());
    // Enter while running does not start another run.
    type_text(&mut a, "x");
    assert!(up(&mut a, key(KeyCode::Enter)).is_empty());
    // Esc cancels.
    assert_eq!(up(&mut a, key(KeyCode::Esc)), vec![Effect::Cancel]);
}

#[test]
fn editing_keys() {
    let mut a = app();
    type_text(&mut a, "line one");
    up(&mut a, key_mod(KeyCode::Enter, KeyModifiers::ALT));
    type_text(&mut a, "two");
    up(&mut a, key_mod(KeyCode::Char('j'), KeyModifiers::CONTROL));
    type_text(&mut a, "three");
    assert_eq!(a.input.lines(), ["line one", "two", "three"]);
    let fx = up(&mut a, key(KeyCode::Enter));
    match fx.as_slice() {
        [Effect::StartRun { messages, .. }] => {
            assert_eq!(messages[0].content, "line one\ntwo\nthree")
        }
        other => panic!("{other:?}"),
    }
    // An empty prompt is not sent.
    let mut b = app();
    assert!(up(&mut b, key(KeyCode::Enter)).is_empty());
    assert!(b.status.contains("type a prompt"));
    // History.
    let mut c = finished();
    up(&mut c, key_mod(KeyCode::Up, KeyModifiers::CONTROL));
    assert_eq!(c.input.lines(), ["What is the capital of France?"]);
}

#[test]
fn help_focus_scroll_maximize_copy_quit() {
    let mut a = finished();
    up(&mut a, key(KeyCode::F(1)));
    assert_eq!(a.overlay, Overlay::Help);
    up(&mut a, key(KeyCode::Esc));
    assert_eq!(a.overlay, Overlay::None);
    up(&mut a, key(KeyCode::Char('?')));
    assert_eq!(
        a.overlay,
        Overlay::Help,
        "? opens help when the prompt is empty"
    );
    up(&mut a, key(KeyCode::Char('q')));
    up(&mut a, key(KeyCode::Tab));
    assert_eq!(a.focus, Focus::Pane(PaneId::Call(0, 0)));
    up(&mut a, key(KeyCode::Up));
    assert_eq!(a.pane(PaneId::Call(0, 0)).unwrap().scroll_from_end, Some(1));
    up(&mut a, key(KeyCode::End));
    assert_eq!(a.pane(PaneId::Call(0, 0)).unwrap().scroll_from_end, None);
    up(&mut a, key(KeyCode::Char('z')));
    assert_eq!(a.maximized, Some(PaneId::Call(0, 0)));
    let max = screen(&a, 100, 30);
    assert!(max.contains("print(\"Paris\")"), "{max}");
    up(&mut a, key(KeyCode::Esc));
    assert_eq!(a.maximized, None);
    match up(&mut a, key(KeyCode::Char('y'))).as_slice() {
        [Effect::Copy(t)] => assert_eq!(t, ALPHA),
        other => panic!("{other:?}"),
    }
    up(&mut a, key_mod(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(a.quit);
}

#[test]
fn failures_show_in_their_pane_and_the_run_goes_on() {
    let a = streaming();
    let p = a.pane(PaneId::Call(0, 2)).unwrap();
    assert_eq!(p.status, PaneStatus::Failed);
    assert_eq!(p.text, "Partial answ");
    let s = screen(&a, 160, 45);
    assert!(s.contains("✗ fake answered HTTP 503"), "{s}");
    assert!(s.contains("kept"), "{s}");
    assert!(a.running());
}

#[test]
fn reaggregation_with_an_edited_prompt() {
    let mut a = finished();
    // Ctrl+E opens the editor with the current aggregate prompt (Together's).
    up(&mut a, key_mod(KeyCode::Char('e'), KeyModifiers::CONTROL));
    assert_eq!(a.overlay, Overlay::PromptEditor);
    assert!(a.editor.content().contains("Responses from models:"));
    // Ctrl+T loads another template; Ctrl+S applies it and re-runs only the aggregator.
    up(&mut a, key_mod(KeyCode::Char('t'), KeyModifiers::CONTROL));
    let edited = a.editor.text.lines().join("\n");
    assert!(!edited.contains("Responses from models:"));
    let fx = up(&mut a, key_mod(KeyCode::Char('s'), KeyModifiers::CONTROL));
    match fx.as_slice() {
        [
            Effect::Reaggregate {
                messages,
                responses,
                prompt,
                parent,
            },
        ] => {
            assert_eq!(
                parent.as_deref(),
                Some("01TEST"),
                "a variant of the run shown"
            );
            assert_eq!(messages.len(), 1, "the turn's own prompt, not the answer");
            assert_eq!(
                responses,
                &vec![ALPHA.to_string(), BRAVO.to_string()],
                "only the proposers that succeeded"
            );
            assert_eq!(prompt.as_deref(), Some(edited.as_str()));
        }
        other => panic!("{other:?}"),
    }
    assert!(a.mode == RunMode::Reaggregating);
    assert_eq!(
        a.pane(PaneId::Final).unwrap().text,
        "",
        "the old answer is cleared"
    );
    // The one-step run's events land in the aggregator pane, not the proposers'.
    delta(&mut a, Stage::Step(0), 0, "fake/agg", "Rome? No: Paris.");
    assert_eq!(a.pane(PaneId::Final).unwrap().text, "Rome? No: Paris.");
    assert_eq!(a.pane(PaneId::Call(0, 0)).unwrap().text, ALPHA);
    let record = RunRecord {
        schema: "moa.run/1".into(),
        id: "02".into(),
        created: String::new(),
        preset: "demo (re-aggregate)".into(),
        messages: vec![],
        steps: vec![step(
            "aggregate",
            vec![call(
                0,
                "fake/agg",
                "Rome? No: Paris.",
                CallStatus::Ok,
                900,
                100,
            )],
        )],
        final_answer: Some(FinalAnswer {
            text: "Rome? No: Paris.".into(),
            source: "aggregate".into(),
            status: CallStatus::Ok,
        }),
        baseline: None,
        wall_ms: 900,
        usage: Usage::default(),
        cancelled: false,
    };
    up(
        &mut a,
        Msg::Run(Box::new(RunEvent::RunDone {
            record: Box::new(record),
        })),
    );
    assert!(!a.running());
    assert_eq!(a.conversation.len(), 2);
    assert_eq!(
        a.conversation[1].content, "Rome? No: Paris.",
        "the new answer is the turn's reply"
    );
    // The edited prompt stays for the next runs.
    assert_eq!(a.aggregate_prompt(), Some(edited.as_str()));
    // Both aggregations are kept: variant A (the run's own, Together's prompt) and B (edited),
    // B shown; its attribution is asked for off the UI thread.
    let run = a.run.as_ref().unwrap();
    assert_eq!(run.variants.len(), 2);
    assert_eq!(run.variant, 1);
    assert_eq!(run.variants[0].prompt_label, "together");
    assert_eq!(run.variants[1].run_id, "02");
    assert_eq!(
        run.variants[1].given,
        vec![(0, ALPHA.to_string()), (1, BRAVO.to_string())]
    );
    let s = screen(&a, 160, 45);
    assert!(s.contains(" A together 1.2s "), "{s}");
    assert!(s.contains(" B "), "{s}");
    // F5 shows A again, whole; F6 goes back to B.
    up(&mut a, key(KeyCode::F(5)));
    assert_eq!(
        a.pane(PaneId::Final).unwrap().text,
        "The capital of France is **Paris**."
    );
    assert!(a.status.contains("variant A"), "{}", a.status);
    up(&mut a, key(KeyCode::F(6)));
    assert_eq!(a.pane(PaneId::Final).unwrap().text, "Rome? No: Paris.");
    // Attribution arrives: shown under the answer, kept with the run; a copy is called out.
    let fx = up(
        &mut a,
        Msg::Attributed {
            run_id: "02".into(),
            attribution: moa_workbench::session::variants::Attribution {
                method: "minilm".into(),
                slots: vec![0, 1],
                similarity: vec![0.97, 0.41],
                copied: Some(0),
            },
        },
    );
    assert!(matches!(fx.as_slice(), [Effect::SaveRunData { run_id, .. }] if run_id == "02"));
    assert!(a.status.contains("copied proposer #1"), "{}", a.status);
    let s = screen(&a, 160, 45);
    assert!(s.contains("draws on #1 0.97  #2 0.41"), "{s}");
    assert!(s.contains("copies #1"), "{s}");
}

#[test]
fn compare_view_and_judge() {
    let mut a = finished();
    a.judge_model = Some("fake/judge".into());
    up(&mut a, key(KeyCode::F(3)));
    assert_eq!(a.overlay, Overlay::Compare);
    let s = screen(&a, 120, 30);
    assert!(
        s.contains("A · together · agg") && s.contains("baseline (fake/base)"),
        "{s}"
    );
    assert!(s.contains("A / baseline: latency 3.1x"), "{s}");
    let fx = up(&mut a, key(KeyCode::Char('j')));
    match fx.as_slice() {
        [
            Effect::JudgePair {
                run_id,
                model,
                a: left,
                b: right,
                ..
            },
        ] => {
            assert_eq!(run_id, "01TEST");
            assert_eq!(model, "fake/judge");
            assert_eq!(left.0, "01TEST");
            assert_eq!(left.1, "The capital of France is **Paris**.");
            assert_eq!(right, &("baseline".to_string(), "Paris.".to_string()));
        }
        other => panic!("{other:?}"),
    }
    assert!(a.compare.judging);
    // A second j while judging asks nothing.
    assert!(up(&mut a, key(KeyCode::Char('j'))).is_empty());
    let mut session = moa_workbench::session::Session::new(&[]);
    session.runs.push(moa_workbench::session::SessionRun::new(
        a.preset.as_ref().clone(),
        a.run.as_ref().unwrap().record.clone().unwrap(),
        Default::default(),
        vec![],
    ));
    a.session = Some(session);
    let (outcome, inconsistent) = moa_workbench::session::judge::combine(
        Some(moa_workbench::session::judge::Verdict::A),
        Some(moa_workbench::session::judge::Verdict::B),
    );
    let j = moa_workbench::session::judge::Judgement {
        judge_model: "fake/judge".into(),
        created: String::new(),
        outcome,
        inconsistent,
        orders: vec![],
    };
    let fx = up(
        &mut a,
        Msg::PairJudged {
            run_id: "01TEST".into(),
            pair: Box::new(moa_workbench::session::variants::PairJudgement {
                a: "01TEST".into(),
                b: "baseline".into(),
                judgement: j,
            }),
        },
    );
    // The run's answer against the baseline is also its MoA-vs-baseline verdict.
    assert!(
        matches!(
            fx.as_slice(),
            [Effect::StoreJudgement { .. }, Effect::SaveRunData { .. }]
        ),
        "{fx:?}"
    );
    assert!(!a.compare.judging);
    assert_eq!(a.session.as_ref().unwrap().runs[0].judgements.len(), 1);
    insta::assert_snapshot!("compare", screen(&a, 120, 30));
    // d marks the words that differ.
    up(&mut a, key(KeyCode::Char('d')));
    let s = screen(&a, 120, 30);
    assert!(s.contains("differing words marked"), "{s}");
    up(&mut a, key(KeyCode::Esc));
    assert_eq!(a.overlay, Overlay::None);
}

#[test]
fn agents_editor_and_model_picker() {
    let mut a = finished();
    up(&mut a, key(KeyCode::F(4)));
    assert_eq!(a.overlay, Overlay::Agents);
    // Row 0 is alpha: warmer, longer.
    up(&mut a, key(KeyCode::Char('+')));
    up(&mut a, key(KeyCode::Char(']')));
    let first = |a: &App| match &a.preset.steps[0] {
        moa_workbench::engine::preset::Step::Propose { agents, .. } => agents.clone(),
        _ => unreachable!(),
    };
    assert_eq!(first(&a)[0].temperature, Some(0.8));
    assert_eq!(first(&a)[0].max_tokens, Some(1024));
    // Row 2 (charlie, no temperature set) starts from 0.7.
    up(&mut a, key(KeyCode::Down));
    up(&mut a, key(KeyCode::Down));
    up(&mut a, key(KeyCode::Char('-')));
    assert_eq!(first(&a)[2].temperature, Some(0.6));
    // Add a copy, then remove it again.
    up(&mut a, key(KeyCode::Char('a')));
    assert_eq!(first(&a).len(), 4);
    up(&mut a, key(KeyCode::Char('d')));
    assert_eq!(first(&a).len(), 3);
    // The selection stays on the row: now the aggregator's; back up to charlie.
    up(&mut a, key(KeyCode::Up));
    insta::assert_snapshot!("agents", screen(&a, 120, 30));
    // The model picker: the preset's models at once, providers' lists as they come.
    let fx = up(&mut a, key(KeyCode::Char('m')));
    assert_eq!(fx, vec![Effect::ListModels]);
    assert_eq!(a.overlay, Overlay::ModelPicker);
    up(
        &mut a,
        Msg::ModelsListed {
            models: vec!["fake/zulu-70b".into(), "fake/alpha".into()],
            errors: vec!["groq: 401".into()],
            done: true,
        },
    );
    type_text(&mut a, "zulu");
    assert_eq!(a.picker.matches(), vec!["fake/zulu-70b"]);
    up(&mut a, key(KeyCode::Enter));
    assert_eq!(a.overlay, Overlay::Agents);
    assert_eq!(first(&a)[2].model, "fake/zulu-70b");
    // A model nobody listed can be typed whole.
    up(&mut a, key(KeyCode::Char('m')));
    type_text(&mut a, "other/custom-model");
    up(&mut a, key(KeyCode::Enter));
    assert_eq!(first(&a)[2].model, "other/custom-model");
    up(&mut a, key(KeyCode::Esc));
    assert_eq!(a.overlay, Overlay::None);
    // The next run uses the edited agents.
    up(&mut a, key_mod(KeyCode::Char('r'), KeyModifiers::CONTROL));
    let panes: Vec<String> = a.run.as_ref().unwrap().steps[0]
        .panes
        .iter()
        .map(|p| p.model.clone())
        .collect();
    assert_eq!(panes, ["fake/alpha", "fake/bravo", "other/custom-model"]);
}

#[test]
fn one_proposer_re_runs_into_its_own_pane() {
    let mut a = finished();
    // Focus bravo (Tab: input -> alpha -> bravo) and press r.
    up(&mut a, key(KeyCode::Tab));
    up(&mut a, key(KeyCode::Tab));
    assert_eq!(a.focus, Focus::Pane(PaneId::Call(0, 1)));
    let fx = up(&mut a, key(KeyCode::Char('r')));
    match fx.as_slice() {
        [Effect::RerunCall { agent, messages }] => {
            assert_eq!(agent.model, "fake/bravo");
            assert_eq!(agent.temperature, Some(0.9));
            assert_eq!(messages.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(a.running());
    assert_eq!(a.pane(PaneId::Call(0, 1)).unwrap().text, "");
    // The one-call run's step 0 / slot 0 is bravo's pane.
    delta(&mut a, Stage::Step(0), 0, "fake/bravo", "Paris, again.");
    assert_eq!(a.pane(PaneId::Call(0, 1)).unwrap().text, "Paris, again.");
    assert_eq!(a.pane(PaneId::Call(0, 0)).unwrap().text, ALPHA);
    let mut rec = call(0, "fake/bravo", "Paris, again.", CallStatus::Ok, 800, 100);
    up(
        &mut a,
        Msg::Run(Box::new(RunEvent::CallFinished {
            tag: tag(Stage::Step(0), 0, "fake/bravo"),
            record: rec.clone(),
        })),
    );
    rec.slot = 0;
    let record = RunRecord {
        schema: "moa.run/1".into(),
        id: "03".into(),
        created: String::new(),
        preset: "re-run".into(),
        messages: vec![],
        steps: vec![moa_workbench::engine::record::StepRecord {
            op: "propose".into(),
            agreement: None,
            agreement_method: None,
            agreement_matrix: None,
            calls: vec![rec],
            responses: vec![[0, 0]],
            shortened: None,
            notes: vec![],
            wall_ms: 800,
        }],
        final_answer: None,
        baseline: None,
        wall_ms: 800,
        usage: Usage::default(),
        cancelled: false,
    };
    up(
        &mut a,
        Msg::Run(Box::new(RunEvent::RunDone {
            record: Box::new(record),
        })),
    );
    assert!(!a.running());
    assert!(a.status.contains("Ctrl+A re-aggregates"), "{}", a.status);
    assert_eq!(
        a.conversation.len(),
        2,
        "a re-run proposer is not a new turn"
    );
    // Re-aggregating now uses the new answer.
    match up(&mut a, key_mod(KeyCode::Char('a'), KeyModifiers::CONTROL)).as_slice() {
        [Effect::Reaggregate { responses, .. }] => {
            assert_eq!(
                responses,
                &vec![ALPHA.to_string(), "Paris, again.".to_string()]
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sessions_browser_opens_a_saved_session_and_browses_its_runs() {
    use moa_workbench::session::{RunKind, Session, SessionRun};
    let done = finished();
    let record = done.run.as_ref().unwrap().record.clone().unwrap();
    let mut s = Session::new(&[moa_workbench::provider::Message::user(
        "What is the capital of France?",
    )]);
    s.name = "capital of France".into();
    let mut first = record.clone();
    first.id = "R1".into();
    first.messages = vec![moa_workbench::provider::Message::user(
        "What is the capital of France?",
    )];
    first.steps = vec![
        moa_workbench::engine::record::StepRecord {
            op: "propose".into(),
            agreement: Some(0.77),
            agreement_method: Some("minilm".into()),
            agreement_matrix: Some(vec![vec![1.0, 0.77], vec![0.77, 1.0]]),
            calls: vec![
                call(0, "fake/alpha", "Saved alpha.", CallStatus::Ok, 1000, 100),
                call(1, "fake/bravo", "Saved bravo.", CallStatus::Ok, 1100, 100),
            ],
            responses: vec![[0, 0], [0, 1]],
            shortened: None,
            notes: vec![],
            wall_ms: 1100,
        },
        moa_workbench::engine::record::StepRecord {
            op: "aggregate".into(),
            agreement: None,
            agreement_method: None,
            agreement_matrix: None,
            calls: vec![call(
                0,
                "fake/agg",
                "Saved final.",
                CallStatus::Ok,
                500,
                100,
            )],
            responses: vec![[1, 0]],
            shortened: None,
            notes: vec![],
            wall_ms: 500,
        },
    ];
    first.final_answer.as_mut().unwrap().text = "Saved final.".into();
    s.push_run(SessionRun::new(
        preset().as_ref().clone(),
        first.clone(),
        RunKind::Run,
        vec![],
    ));
    let mut second = first.clone();
    second.id = "R2".into();
    second.steps = vec![second.steps[1].clone()];
    second.steps[0].calls[0].text = "Re-aggregated final.".into();
    second.final_answer.as_mut().unwrap().text = "Re-aggregated final.".into();
    let mut reagg = SessionRun::new(
        preset().as_ref().clone(),
        second,
        RunKind::Reaggregate,
        vec!["Saved alpha.".into(), "Saved bravo.".into()],
    );
    reagg.parent = Some("R1".into());
    s.push_run(reagg);

    let mut a = app();
    let fx = up(&mut a, key_mod(KeyCode::Char('o'), KeyModifiers::CONTROL));
    assert_eq!(fx, vec![Effect::ListSessions]);
    assert_eq!(a.overlay, Overlay::Sessions);
    let summary = |id: &str, name: &str| moa_workbench::session::store::Summary {
        id: id.into(),
        name: name.into(),
        created: "2026-11-21T10:00:00Z".into(),
        updated: "2026-11-21T10:00:00Z".into(),
        runs: 2,
        turns: 1,
        preset: Some("demo".into()),
        interrupted: false,
        path: "x".into(),
    };
    up(
        &mut a,
        Msg::SessionsListed {
            sessions: vec![
                summary("S1", "capital of France"),
                summary("S2", "B-trees vs LSM"),
            ],
            skipped: vec!["broken.json: damaged session file".into()],
        },
    );
    insta::assert_snapshot!("sessions", screen(&a, 120, 30));
    type_text(&mut a, "lsm");
    assert_eq!(a.browser.matches().len(), 1);
    up(&mut a, key(KeyCode::Backspace));
    up(&mut a, key(KeyCode::Backspace));
    up(&mut a, key(KeyCode::Backspace));
    type_text(&mut a, "france");
    assert_eq!(
        up(&mut a, key(KeyCode::Enter)),
        vec![Effect::OpenSession("S1".into())]
    );
    up(&mut a, Msg::SessionOpened(Ok(Box::new(s))));
    assert_eq!(a.overlay, Overlay::None);
    assert_eq!(a.conversation.len(), 2);
    assert_eq!(a.conversation[1].content, "Re-aggregated final.");
    // The last run shows: a re-aggregation, with the answers it was given in the proposer panes.
    assert_eq!(a.shown_run, Some(1));
    assert_eq!(a.pane(PaneId::Final).unwrap().text, "Re-aggregated final.");
    assert_eq!(a.pane(PaneId::Call(0, 1)).unwrap().text, "Saved bravo.");
    // Alt+Left: the first run, with its agreement, and both of its aggregations as variants:
    // the re-aggregation (B, the newest) shown, A a key away.
    up(&mut a, key_mod(KeyCode::Left, KeyModifiers::ALT));
    assert_eq!(a.shown_run, Some(0));
    assert_eq!(a.run.as_ref().unwrap().variants.len(), 2);
    assert_eq!(a.pane(PaneId::Final).unwrap().text, "Re-aggregated final.");
    up(&mut a, key(KeyCode::F(5)));
    assert_eq!(a.pane(PaneId::Final).unwrap().text, "Saved final.");
    assert_eq!(a.pane(PaneId::Call(0, 0)).unwrap().status, PaneStatus::Done);
    assert_eq!(
        a.run.as_ref().unwrap().steps[0]
            .agreement
            .as_ref()
            .unwrap()
            .value,
        0.77
    );
    let s = screen(&a, 120, 30);
    assert!(s.contains("session: capital of France · run 1/2"), "{s}");
    // Continuing: a follow-up goes with the whole conversation.
    type_text(&mut a, "And Germany?");
    match up(&mut a, key(KeyCode::Enter)).as_slice() {
        [Effect::StartRun { messages, .. }] => assert_eq!(messages.len(), 3),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_paste_lands_in_the_prompt_and_sends_nothing() {
    let mut a = finished();
    a.conversation.clear();
    // Focus on a pane: a paste still goes to the prompt, and its `?`, `q`, `r` and control
    // characters act as no keys.
    up(&mut a, key(KeyCode::Tab));
    let pasted = "? why\r\ndef f():\r\n\treturn 1\r\nq r y \u{3} end";
    let effects = up(&mut a, Msg::Paste(pasted.into()));
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(a.overlay, Overlay::None);
    assert!(!a.quit);
    assert_eq!(a.focus, Focus::Input);
    let expected = "? why\ndef f():\n\treturn 1\nq r y \u{3} end";
    assert_eq!(a.input.lines().join("\n"), expected);
    assert!(a.status.contains("pasted 4 lines"), "{}", a.status);
    // Typing goes on after it; Enter sends it all as one prompt.
    type_text(&mut a, "!");
    match up(&mut a, key(KeyCode::Enter)).as_slice() {
        [Effect::StartRun { messages, .. }] => {
            assert_eq!(messages.last().unwrap().content, format!("{expected}!"))
        }
        other => panic!("{other:?}"),
    }
    // A paste into the aggregator prompt editor goes there, whole.
    let mut a = finished();
    up(&mut a, key_mod(KeyCode::Char('e'), KeyModifiers::CONTROL));
    up(&mut a, Msg::Paste("Extra\r\nrules".into()));
    assert!(a.editor.content().contains("Extra\nrules"));
    assert!(a.input.is_empty());
}

#[test]
fn saved_is_said_only_after_the_write() {
    use moa_workbench::session::recorder::{SaveError, SaveReport};
    use moa_workbench::tui::state::SaveState;
    let mut a = finished();
    let s = screen(&a, 160, 45);
    assert!(!s.contains("saved"), "nothing was written yet: {s}");
    up(
        &mut a,
        Msg::Saved(SaveReport {
            session: "2026-paris".into(),
            path: "/home/u/.local/share/moa/sessions/2026-paris.json".into(),
            result: Err(SaveError::write(
                "/home/u/.local/share/moa/sessions/2026-paris.json".into(),
                std::io::Error::from_raw_os_error(30),
            )),
        }),
    );
    assert!(matches!(a.save, SaveState::Failed { .. }));
    let s = screen(&a, 160, 45);
    assert!(
        s.contains(
            "✗ not saved: /home/u/.local/share/moa/sessions/2026-paris.json (Read-only file system"
        ),
        "{s}"
    );
    // A later write that succeeds clears it.
    up(
        &mut a,
        Msg::Saved(SaveReport {
            session: "2026-paris".into(),
            path: "/tmp/x.json".into(),
            result: Ok(()),
        }),
    );
    let s = screen(&a, 160, 45);
    assert!(s.contains("✓ saved ·") && !s.contains("not saved"), "{s}");
}

#[test]
fn the_status_line_never_cuts_a_word() {
    let mut a = finished();
    a.status =
        "a rather long message about what happened in this run that goes on and on past the edge"
            .into();
    for w in [60u16, 80, 120, 160] {
        let s = screen(&a, w, 30);
        let last = s.lines().last().unwrap().trim_end().to_string();
        // Whatever is shown is whole words of the message or whole hints.
        let msg_words: Vec<&str> = a.status.split(' ').collect();
        let shown = last.split(" │ ").next().unwrap().trim_end_matches('…');
        for word in shown.split(' ') {
            assert!(
                msg_words.contains(&word),
                "{w}: cut word {word:?} in {last:?}"
            );
        }
    }
}

#[test]
fn failures_reported_to_the_loop_are_said_as_before() {
    use moa_workbench::app::AppError;
    use moa_workbench::fetch::FetchError;
    use moa_workbench::session::store::StoreError;
    let mut a = app();
    a.mode = RunMode::Fetching;
    up(&mut a, Msg::FetchDone(Err(FetchError::NoPip)));
    assert_eq!(a.mode, RunMode::Idle);
    assert!(
        a.status
            .starts_with("cannot fetch the embedded model: python3 has no pip: install it"),
        "{}",
        a.status
    );
    up(
        &mut a,
        Msg::PresetLoaded(Err(AppError::usage("preset \"x\" cannot run:\n  why"))),
    );
    assert_eq!(a.status, "preset \"x\" cannot run:\n  why");
    up(
        &mut a,
        Msg::SessionOpened(Err(StoreError::NotFound("no session matches \"q\"".into()))),
    );
    assert_eq!(a.status, "no session matches \"q\"");
}
