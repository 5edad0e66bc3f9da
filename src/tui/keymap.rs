//! Every key of the workbench in one table: key handling looks actions up here, the help overlay
//! lists this table, and the status line's hints come from it. A key added here cannot be
//! forgotten in the help (atuin's `keybindings/` and codex's key hints work the same way).

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Where a binding applies. `Global` keys work everywhere but in text-taking overlays, which have
/// their own scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Global,
    /// The prompt has the focus.
    Input,
    /// A pane has the focus.
    Pane,
    Help,
    PromptEditor,
    Sessions,
    Compare,
    Agents,
    Picker,
    /// A replay is playing (`moa replay`).
    Replay,
}

impl Scope {
    pub fn title(self) -> &'static str {
        match self {
            Scope::Global => "everywhere",
            Scope::Input => "in the prompt",
            Scope::Pane => "in a focused pane",
            Scope::Help => "in this help",
            Scope::PromptEditor => "in the aggregator prompt editor (Ctrl+E)",
            Scope::Sessions => "in the sessions browser (Ctrl+O)",
            Scope::Compare => "in the compare view (F3)",
            Scope::Agents => "in the agents editor (F4)",
            Scope::Picker => "in the model picker (m in F4)",
            Scope::Replay => "while a replay plays (moa replay)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Cancel,
    FocusNext,
    FocusPrev,
    Maximize,
    Compare,
    Agents,
    Sessions,
    RunPrev,
    RunNext,
    LayerPrev,
    LayerNext,
    Rerun,
    Reaggregate,
    EditPrompt,
    ToggleBaseline,
    NewConversation,
    NextPreset,
    Send,
    Newline,
    HistoryPrev,
    HistoryNext,
    ScrollUp,
    ScrollDown,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Copy,
    RerunProposer,
    FocusInput,
    Close,
    Apply,
    NextTemplate,
    Open,
    Judge,
    TempUp,
    TempDown,
    TokensUp,
    TokensDown,
    AddAgent,
    RemoveAgent,
    PickModel,
    Choose,
    Up,
    Down,
    VariantPrev,
    VariantNext,
    LeaveOneOut,
    LeftSide,
    RightSide,
    Diff,
    ReplayPause,
    ReplayFaster,
    ReplaySlower,
    ReplayEnd,
}

#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

const fn k(code: KeyCode) -> Key {
    Key {
        code,
        mods: KeyModifiers::NONE,
    }
}
const fn c(ch: char) -> Key {
    Key {
        code: KeyCode::Char(ch),
        mods: KeyModifiers::CONTROL,
    }
}
const fn ch(ch: char) -> Key {
    k(KeyCode::Char(ch))
}
const fn with(code: KeyCode, mods: KeyModifiers) -> Key {
    Key { code, mods }
}

pub struct Binding {
    pub scope: Scope,
    pub keys: &'static [Key],
    /// How the keys are written in the help and the hints.
    pub label: &'static str,
    pub action: Action,
    pub help: &'static str,
    /// A short hint for the status line (lower `rank` shows first; 0: never a hint).
    pub hint: &'static str,
    pub rank: u8,
}

const fn b(
    scope: Scope,
    keys: &'static [Key],
    label: &'static str,
    action: Action,
    help: &'static str,
    hint: &'static str,
    rank: u8,
) -> Binding {
    Binding {
        scope,
        keys,
        label,
        action,
        help,
        hint,
        rank,
    }
}

use Action as A;
use KeyCode as K;
use Scope as S;

const ALT: KeyModifiers = KeyModifiers::ALT;
const CTRL: KeyModifiers = KeyModifiers::CONTROL;
const SHIFT: KeyModifiers = KeyModifiers::SHIFT;

pub static BINDINGS: &[Binding] = &[
    b(
        S::Global,
        &[c('c')],
        "Ctrl+C",
        A::Quit,
        "quit (the session is saved; the terminal is restored)",
        "quit",
        9,
    ),
    b(
        S::Global,
        &[k(K::F(1))],
        "F1",
        A::Help,
        "every key (this help)",
        "help",
        1,
    ),
    b(
        S::Global,
        &[k(K::Esc)],
        "Esc",
        A::Cancel,
        "cancel the running calls (what arrived is kept); un-maximize; back to the prompt",
        "cancel",
        2,
    ),
    b(
        S::Global,
        &[k(K::Tab)],
        "Tab",
        A::FocusNext,
        "focus the next pane (the prompt, proposers, aggregator, baseline)",
        "panes",
        3,
    ),
    b(
        S::Global,
        &[k(K::BackTab)],
        "Shift+Tab",
        A::FocusPrev,
        "focus the previous pane",
        "",
        0,
    ),
    b(
        S::Global,
        &[k(K::F(2))],
        "F2",
        A::Maximize,
        "maximize the focused pane (again to restore)",
        "maximize",
        6,
    ),
    b(
        S::Global,
        &[k(K::F(3))],
        "F3",
        A::Compare,
        "compare two answers side by side (variants, the baseline): differences, latency, tokens, cost; j judges",
        "compare",
        5,
    ),
    b(
        S::Global,
        &[k(K::F(4))],
        "F4",
        A::Agents,
        "agents: models, temperatures, max tokens; add or remove proposers",
        "agents",
        5,
    ),
    b(
        S::Global,
        &[c('o')],
        "Ctrl+O",
        A::Sessions,
        "sessions: search, open, continue a saved conversation",
        "sessions",
        7,
    ),
    b(
        S::Global,
        &[with(K::Left, ALT)],
        "Alt+←",
        A::RunPrev,
        "the session's previous run",
        "",
        0,
    ),
    b(
        S::Global,
        &[with(K::Right, ALT)],
        "Alt+→",
        A::RunNext,
        "the session's next run",
        "",
        0,
    ),
    b(
        S::Global,
        &[with(K::Left, CTRL)],
        "Ctrl+←",
        A::LayerPrev,
        "the previous layer of a multi-layer preset",
        "",
        0,
    ),
    b(
        S::Global,
        &[with(K::Right, CTRL)],
        "Ctrl+→",
        A::LayerNext,
        "the next layer",
        "",
        0,
    ),
    b(
        S::Global,
        &[c('r')],
        "Ctrl+R",
        A::Rerun,
        "run the last prompt again",
        "re-run",
        8,
    ),
    b(
        S::Global,
        &[c('a')],
        "Ctrl+A",
        A::Reaggregate,
        "re-run only the aggregator on the answers shown (prompt tuning)",
        "re-aggregate",
        4,
    ),
    b(
        S::Global,
        &[c('e')],
        "Ctrl+E",
        A::EditPrompt,
        "edit the aggregator prompt (templates, then re-aggregate)",
        "aggregator prompt",
        4,
    ),
    b(
        S::Global,
        &[k(K::F(5))],
        "F5",
        A::VariantPrev,
        "the previous aggregator variant (each re-aggregation is kept as a tab: A, B, …)",
        "",
        0,
    ),
    b(
        S::Global,
        &[k(K::F(6))],
        "F6",
        A::VariantNext,
        "the next aggregator variant",
        "",
        0,
    ),
    b(
        S::Global,
        &[k(K::F(7))],
        "F7",
        A::LeaveOneOut,
        "leave-one-out: the shown variant again without each proposer's answer, judged against it",
        "",
        0,
    ),
    b(
        S::Global,
        &[c('b')],
        "Ctrl+B",
        A::ToggleBaseline,
        "turn the single-model baseline on or off",
        "",
        0,
    ),
    b(
        S::Global,
        &[c('n')],
        "Ctrl+N",
        A::NewConversation,
        "a new conversation (a new session with its first run)",
        "",
        0,
    ),
    b(
        S::Global,
        &[c('p')],
        "Ctrl+P",
        A::NextPreset,
        "switch to the next preset",
        "",
        0,
    ),
    b(
        S::Input,
        &[k(K::Enter)],
        "Enter",
        A::Send,
        "send the prompt (a follow-up turn after the first); pasted text is never sent by its newlines",
        "send",
        0,
    ),
    b(
        S::Input,
        &[with(K::Enter, ALT), with(K::Enter, SHIFT), c('j')],
        "Alt+Enter, Ctrl+J",
        A::Newline,
        "a new line in the prompt",
        "",
        0,
    ),
    b(
        S::Input,
        &[with(K::Up, CTRL)],
        "Ctrl+↑",
        A::HistoryPrev,
        "the previous prompt (history)",
        "",
        0,
    ),
    b(
        S::Input,
        &[with(K::Down, CTRL)],
        "Ctrl+↓",
        A::HistoryNext,
        "the next prompt",
        "",
        0,
    ),
    b(
        S::Input,
        &[ch('?')],
        "?",
        A::Help,
        "this help, when the prompt is empty",
        "",
        0,
    ),
    b(
        S::Pane,
        &[k(K::Up), ch('k')],
        "↑, k",
        A::ScrollUp,
        "scroll up",
        "",
        0,
    ),
    b(
        S::Pane,
        &[k(K::Down), ch('j')],
        "↓, j",
        A::ScrollDown,
        "scroll down",
        "",
        0,
    ),
    b(
        S::Pane,
        &[k(K::PageUp)],
        "PgUp",
        A::PageUp,
        "scroll a page up (the mouse wheel scrolls the pane under it)",
        "",
        0,
    ),
    b(
        S::Pane,
        &[k(K::PageDown)],
        "PgDn",
        A::PageDown,
        "scroll a page down",
        "",
        0,
    ),
    b(
        S::Pane,
        &[k(K::Home), ch('g')],
        "Home, g",
        A::Top,
        "the top",
        "",
        0,
    ),
    b(
        S::Pane,
        &[k(K::End), ch('G')],
        "End, G",
        A::Bottom,
        "the end, following the tail again",
        "",
        0,
    ),
    b(
        S::Pane,
        &[ch('z'), k(K::Enter)],
        "z, Enter",
        A::Maximize,
        "maximize the pane (again to restore)",
        "",
        0,
    ),
    b(
        S::Pane,
        &[ch('[')],
        "[",
        A::LayerPrev,
        "the previous layer",
        "",
        0,
    ),
    b(
        S::Pane,
        &[ch(']')],
        "]",
        A::LayerNext,
        "the next layer",
        "",
        0,
    ),
    b(
        S::Pane,
        &[ch('y')],
        "y",
        A::Copy,
        "copy the pane's text to the clipboard (OSC 52)",
        "copy",
        3,
    ),
    b(
        S::Pane,
        &[ch('r')],
        "r",
        A::RerunProposer,
        "re-run this proposer alone (Ctrl+A then re-aggregates with it)",
        "re-run proposer",
        3,
    ),
    b(
        S::Pane,
        &[ch('i')],
        "i",
        A::FocusInput,
        "back to the prompt",
        "",
        0,
    ),
    b(S::Pane, &[ch('?')], "?", A::Help, "this help", "", 0),
    b(
        S::Help,
        &[k(K::Esc), k(K::F(1)), ch('q'), ch('?')],
        "Esc, F1, q",
        A::Close,
        "close the help",
        "close",
        1,
    ),
    b(
        S::Help,
        &[k(K::Up), k(K::PageUp)],
        "↑ PgUp",
        A::ScrollUp,
        "scroll up",
        "scroll",
        2,
    ),
    b(
        S::Help,
        &[k(K::Down), k(K::PageDown)],
        "↓ PgDn",
        A::ScrollDown,
        "scroll down",
        "",
        0,
    ),
    b(
        S::PromptEditor,
        &[c('s')],
        "Ctrl+S",
        A::Apply,
        "apply the prompt and re-aggregate the answers shown",
        "apply",
        1,
    ),
    b(
        S::PromptEditor,
        &[c('t')],
        "Ctrl+T",
        A::NextTemplate,
        "load the next template ({query} {responses} {n} are filled in)",
        "next template",
        2,
    ),
    b(
        S::PromptEditor,
        &[k(K::Esc)],
        "Esc",
        A::Close,
        "leave the prompt unchanged",
        "cancel",
        3,
    ),
    b(
        S::Sessions,
        &[k(K::Enter)],
        "Enter",
        A::Open,
        "open the session (its last run; typing continues it)",
        "open",
        1,
    ),
    b(
        S::Sessions,
        &[k(K::Up)],
        "↑",
        A::Up,
        "the previous session (type to search)",
        "",
        0,
    ),
    b(
        S::Sessions,
        &[k(K::Down)],
        "↓",
        A::Down,
        "the next session",
        "",
        0,
    ),
    b(
        S::Sessions,
        &[k(K::Esc)],
        "Esc",
        A::Close,
        "close",
        "close",
        2,
    ),
    b(
        S::Compare,
        &[ch('j')],
        "j",
        A::Judge,
        "judge the pair in both orders (judge_model in the config, else the aggregator's model)",
        "judge",
        1,
    ),
    b(
        S::Compare,
        &[ch('a')],
        "a",
        A::LeftSide,
        "the left side: the next variant, or the baseline",
        "left side",
        3,
    ),
    b(
        S::Compare,
        &[ch('b')],
        "b",
        A::RightSide,
        "the right side: the next variant, or the baseline",
        "right side",
        3,
    ),
    b(
        S::Compare,
        &[ch('d')],
        "d",
        A::Diff,
        "mark the words that differ (plain text), or back to rendered markdown",
        "differences",
        4,
    ),
    b(
        S::Compare,
        &[k(K::Esc), k(K::F(3)), ch('q')],
        "Esc, F3, q",
        A::Close,
        "close",
        "close",
        2,
    ),
    b(
        S::Agents,
        &[k(K::Up)],
        "↑",
        A::Up,
        "the previous agent",
        "",
        0,
    ),
    b(
        S::Agents,
        &[k(K::Down)],
        "↓",
        A::Down,
        "the next agent",
        "",
        0,
    ),
    b(
        S::Agents,
        &[ch('+'), ch('=')],
        "+",
        A::TempUp,
        "temperature +0.1",
        "temperature ±",
        1,
    ),
    b(
        S::Agents,
        &[ch('-')],
        "-",
        A::TempDown,
        "temperature -0.1",
        "",
        0,
    ),
    b(
        S::Agents,
        &[ch(']')],
        "]",
        A::TokensUp,
        "double max tokens",
        "max tokens",
        2,
    ),
    b(
        S::Agents,
        &[ch('[')],
        "[",
        A::TokensDown,
        "halve max tokens",
        "",
        0,
    ),
    b(
        S::Agents,
        &[ch('m'), k(K::Enter)],
        "m, Enter",
        A::PickModel,
        "pick the agent's model (configured, and what providers list)",
        "model",
        1,
    ),
    b(
        S::Agents,
        &[ch('a')],
        "a",
        A::AddAgent,
        "add a copy of the selected proposer",
        "add",
        3,
    ),
    b(
        S::Agents,
        &[ch('d'), k(K::Delete)],
        "d, Delete",
        A::RemoveAgent,
        "remove the selected proposer",
        "remove",
        3,
    ),
    b(
        S::Agents,
        &[k(K::Esc), k(K::F(4)), ch('q')],
        "Esc, F4, q",
        A::Close,
        "close (changes apply to the next run)",
        "close",
        4,
    ),
    b(
        S::Replay,
        &[ch(' ')],
        "Space",
        A::ReplayPause,
        "pause or resume the replay",
        "pause",
        1,
    ),
    b(
        S::Replay,
        &[ch('+'), ch('=')],
        "+",
        A::ReplayFaster,
        "replay faster (up to 32×)",
        "faster",
        2,
    ),
    b(
        S::Replay,
        &[ch('-')],
        "-",
        A::ReplaySlower,
        "replay slower (down to ¼×)",
        "slower",
        2,
    ),
    b(
        S::Replay,
        &[k(K::End), k(K::Esc)],
        "End, Esc",
        A::ReplayEnd,
        "jump to the end of the run (the session is then open as usual)",
        "finish",
        3,
    ),
    b(
        S::Picker,
        &[k(K::Enter)],
        "Enter",
        A::Choose,
        "use the model (or the PROVIDER/MODEL typed)",
        "choose",
        1,
    ),
    b(
        S::Picker,
        &[k(K::Up)],
        "↑",
        A::Up,
        "the previous model (type to filter)",
        "",
        0,
    ),
    b(
        S::Picker,
        &[k(K::Down)],
        "↓",
        A::Down,
        "the next model",
        "",
        0,
    ),
    b(
        S::Picker,
        &[k(K::Esc)],
        "Esc",
        A::Close,
        "back to the agents",
        "back",
        2,
    ),
];

fn matches(key: &Key, e: &KeyEvent) -> bool {
    if key.code != e.code {
        return false;
    }
    // Terminals report Shift with shifted characters ('?', 'G', '+') inconsistently.
    let mods = match e.code {
        KeyCode::Char(_) => e.modifiers - KeyModifiers::SHIFT,
        _ => e.modifiers,
    };
    let want = match key.code {
        KeyCode::Char(_) => key.mods - KeyModifiers::SHIFT,
        _ => key.mods,
    };
    mods == want
}

/// The action bound to `e` in `scope` (the scope's own keys first, then the global ones unless the
/// scope takes text: an editor or a search line must get every printable key).
pub fn lookup(e: &KeyEvent, scope: Scope) -> Option<Action> {
    let own = BINDINGS
        .iter()
        .filter(|b| b.scope == scope)
        .find(|b| b.keys.iter().any(|k| matches(k, e)))
        .map(|b| b.action);
    if own.is_some() || !matches!(scope, S::Input | S::Pane | S::Replay) {
        // Overlays have their own keys; Ctrl+C still quits everywhere.
        return own.or_else(|| {
            (e.code == KeyCode::Char('c') && e.modifiers.contains(CTRL)).then_some(A::Quit)
        });
    }
    BINDINGS
        .iter()
        .filter(|b| b.scope == S::Global)
        .find(|b| b.keys.iter().any(|k| matches(k, e)))
        .map(|b| b.action)
}

/// The bindings of `scope`, in the table's order (the help overlay).
pub fn bindings(scope: Scope) -> impl Iterator<Item = &'static Binding> {
    BINDINGS.iter().filter(move |b| b.scope == scope)
}

/// Hints for the status line in `scope`, most useful first: `("F1", "help")`.
pub fn hints(scope: Scope) -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<&Binding> = BINDINGS
        .iter()
        .filter(|b| {
            b.rank > 0
                && (b.scope == scope
                    || (b.scope == S::Global && matches!(scope, S::Input | S::Pane | S::Replay)))
        })
        .collect();
    v.sort_by_key(|b| (b.rank, b.scope != scope));
    v.into_iter()
        .map(|b| (b.label.split(',').next().unwrap_or(b.label), b.hint))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_is_bound_twice_in_one_scope() {
        for (i, a) in BINDINGS.iter().enumerate() {
            for b2 in &BINDINGS[i + 1..] {
                let clash = a.scope == b2.scope
                    && a.keys.iter().any(|x| {
                        b2.keys
                            .iter()
                            .any(|y| matches(x, &KeyEvent::new(y.code, y.mods)))
                    });
                assert!(!clash, "{} and {} in {:?}", a.label, b2.label, a.scope);
            }
        }
    }

    #[test]
    fn overlays_take_printable_keys() {
        let q = KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE);
        assert_eq!(lookup(&q, Scope::Sessions), None);
        assert_eq!(lookup(&q, Scope::Pane), Some(Action::Help));
        let cc = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(lookup(&cc, Scope::PromptEditor), Some(Action::Quit));
    }
}
