//! Faults, bad input and secrets, end to end: the real `moa` binary against the scripted server.
//! For each fault: what the run record holds, what `moa run` prints, and what the workbench pane
//! shows (the record's calls drawn by the TUI's own view code).

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;

use moa_workbench::engine::preset;
use moa_workbench::engine::prompts::Templates;
use moa_workbench::engine::record::RunRecord;
use moa_workbench::session::{RunKind, SessionRun};
use moa_workbench::tui::state::{App, PaneId};
use moa_workbench::tui::view::view;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::Value;
use support::{Piece, Reply, Server, sse_chunk, sse_finish};

const KEY: &str = "sk-faults-test-SECRET-8d7c6b";

async fn moa(home: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    support::moa(home, args, stdin, KEY).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every fault as one proposer of one run, with a healthy proposer beside them.
const FAULTS: &[&str] = &[
    "cut", "r429", "r429bare", "e500", "e502", "e503", "down", "hang", "trickle", "runaway",
    "quirky", "auth401", "auth403", "quota",
];

fn preset_text() -> String {
    let mut agents: Vec<String> = FAULTS
        .iter()
        .map(|m| {
            if *m == "runaway" {
                format!("{{ model = \"fake/{m}\", max_tokens = 50 }}")
            } else {
                format!("{{ model = \"fake/{m}\" }}")
            }
        })
        .collect();
    agents.push("{ model = \"dead/x\" }".into());
    agents.push("{ model = \"nowhere/x\" }".into());
    agents.push("{ model = \"fake/ok\" }".into());
    format!(
        "name = \"faults\"\n[[step]]\nop = \"propose\"\nagents = [{}]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\nmax_tokens = 256\n",
        agents.join(", ")
    )
}

fn script_faults(s: &Server) {
    let busy = |code: u16| {
        vec![
            Reply::status(code, "busy"),
            Reply::text(&["recovered"], 1, 1),
        ]
    };
    s.script(
        "cut",
        vec![Reply::raw(vec![
            Piece::Bytes(1, sse_chunk("Half an ").into_bytes()),
            Piece::Bytes(1, sse_chunk("answer").into_bytes()),
            Piece::Disconnect(5),
        ])],
    );
    s.script(
        "r429",
        vec![
            Reply::status(429, r#"{"error":{"message":"slow down"}}"#).header("retry-after", "1"),
            Reply::text(&["after waiting"], 1, 1),
        ],
    );
    s.script("r429bare", busy(429));
    s.script("e500", busy(500));
    s.script("e502", busy(502));
    s.script("e503", busy(503));
    s.script("down", vec![Reply::status(503, "Service Unavailable")]);
    s.script("hang", vec![Reply::hang()]);
    s.script(
        "trickle",
        vec![Reply::raw(vec![
            Piece::Bytes(1, sse_chunk("t").into_bytes()),
            Piece::Bytes(1_000, sse_chunk("r").into_bytes()),
            Piece::Bytes(1_000, sse_chunk("ickle").into_bytes()),
        ])],
    );
    let big = "x".repeat(10_000);
    let parts: Vec<&str> = std::iter::repeat_n(big.as_str(), 50).collect();
    s.script("runaway", vec![Reply::text(&parts, 1, 0)]);
    let e = "é".as_bytes();
    s.script(
        "quirky",
        vec![Reply::raw(vec![
            Piece::Bytes(1, b": keep-alive\n\n".to_vec()),
            Piece::Bytes(
                1,
                b"data: {\"choices\":[{\"delta\":{\"content\":\"caf".to_vec(),
            ),
            Piece::Bytes(1, e[..1].to_vec()),
            Piece::Bytes(1, [&e[1..], b"\"}}]}\n\n"].concat()),
            Piece::Bytes(1, b"data: {not json at all\n\n".to_vec()),
            Piece::Bytes(1, b"event: ping\ndata: \n\n".to_vec()),
            Piece::Bytes(1, sse_finish().into_bytes()),
            Piece::Bytes(1, b"data: [DONE]\n\n".to_vec()),
        ])],
    );
    s.script(
        "auth401",
        vec![Reply::status(
            401,
            r#"{"error":{"message":"Incorrect API key provided"}}"#,
        )],
    );
    s.script(
        "auth403",
        vec![Reply::status(403, "forbidden for this project")],
    );
    s.script(
        "quota",
        vec![Reply::status(
            429,
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota"}}"#,
        )],
    );
    // Long enough, with the runaway answer, to overflow the aggregator's 1,024-token window.
    s.script("ok", vec![Reply::text(&[&"fine ".repeat(300)], 1, 1)]);
}

fn home_for(s: &Server) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let config = format!(
        "{}timeout_first_token_ms = 600\ntimeout_idle_ms = 600\n\n[providers.dead]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmax_retries = 1\n\n[providers.nowhere]\nkind = \"openai\"\nbase_url = \"http://no-such-host.invalid/v1\"\nmax_retries = 1\n\n[models.\"fake/agg\"]\ncontext_window = 1024\n",
        s.config("")
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(home.path().join("presets/faults.toml"), preset_text()).unwrap();
    home
}

/// The pane of call `slot`, maximized, as a person sees it.
fn pane_screen(record: &RunRecord, slot: usize) -> String {
    let p = preset::parse(
        Path::new("faults.toml"),
        &preset_text(),
        &Templates::builtin(),
    )
    .unwrap();
    let mut app = App::new(std::sync::Arc::new(p.clone()), vec![], false);
    let run = SessionRun::new(p, record.clone(), RunKind::Run, vec![]);
    app.run = Some(app.run_view_from(&run));
    app.maximized = Some(PaneId::Call(0, slot));
    let (w, h) = (110, 24);
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view(&app, f)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_is_survived_and_shown_where_it_happened() {
    let s = Server::start().await;
    script_faults(&s);
    let home = home_for(&s);
    let out = moa(
        home.path(),
        &["run", "--preset", "faults", "--json", "Q?"],
        None,
    )
    .await;
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the run goes on and answers: {err}"
    );
    let rec: RunRecord = serde_json::from_slice(&out.stdout).unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let calls = &rec.steps[0].calls;
    let by = |m: &str| {
        calls
            .iter()
            .find(|c| c.model.ends_with(&format!("/{m}")))
            .unwrap_or_else(|| panic!("no call for {m}"))
    };
    // (model, status, error kind, text kept, words in the error, words in the stderr line)
    struct Case {
        m: &'static str,
        status: &'static str,
        kind: Option<&'static str>,
        text: Option<&'static str>,
        error: &'static [&'static str],
    }
    let cases = [
        Case {
            m: "cut",
            status: "failed",
            kind: Some("disconnect"),
            text: Some("Half an answer"),
            error: &["broke mid-answer"],
        },
        Case {
            m: "r429",
            status: "ok",
            kind: None,
            text: Some("after waiting"),
            error: &[],
        },
        Case {
            m: "r429bare",
            status: "ok",
            kind: None,
            text: Some("recovered"),
            error: &[],
        },
        Case {
            m: "e500",
            status: "ok",
            kind: None,
            text: Some("recovered"),
            error: &[],
        },
        Case {
            m: "e502",
            status: "ok",
            kind: None,
            text: Some("recovered"),
            error: &[],
        },
        Case {
            m: "e503",
            status: "ok",
            kind: None,
            text: Some("recovered"),
            error: &[],
        },
        Case {
            m: "down",
            status: "failed",
            kind: Some("server_error"),
            text: Some(""),
            error: &["503", "Service Unavailable"],
        },
        Case {
            m: "hang",
            status: "timeout",
            kind: Some("first_token_timeout"),
            text: Some(""),
            error: &["no first token within 600 ms"],
        },
        Case {
            m: "trickle",
            status: "timeout",
            kind: Some("idle_timeout"),
            text: Some("t"),
            error: &["went silent for 600 ms"],
        },
        Case {
            m: "quirky",
            status: "ok",
            kind: None,
            text: Some("café"),
            error: &[],
        },
        Case {
            m: "auth401",
            status: "failed",
            kind: Some("auth"),
            text: Some(""),
            error: &["FAKE_API_KEY", "Incorrect API key"],
        },
        Case {
            m: "auth403",
            status: "failed",
            kind: Some("auth"),
            text: Some(""),
            error: &["FAKE_API_KEY", "403"],
        },
        Case {
            m: "quota",
            status: "failed",
            kind: Some("rate_limited"),
            text: Some(""),
            error: &["quota"],
        },
        Case {
            m: "x",
            status: "failed",
            kind: Some("connect"),
            text: Some(""),
            error: &[],
        },
    ];
    for c in &cases {
        if c.m == "x" {
            continue;
        }
        let call = by(c.m);
        let j = &v["steps"][0]["calls"][call.slot];
        assert_eq!(j["status"], c.status, "{}: {:?}", c.m, call.error);
        assert_eq!(
            call.error_kind.as_deref(),
            c.kind,
            "{}: {:?}",
            c.m,
            call.error
        );
        if let Some(t) = c.text {
            assert_eq!(call.text, t, "{}", c.m);
        }
        let e = call.error.clone().unwrap_or_default();
        for w in c.error {
            assert!(e.contains(w), "{}: error {e:?} lacks {w:?}", c.m);
        }
        if c.status != "ok" {
            // moa run: one line per call on stderr, with what happened and the text kept.
            let line = err
                .lines()
                .find(|l| l.contains(&format!("fake/{} ", c.m)))
                .unwrap_or_else(|| panic!("no stderr line for {}: {err}", c.m));
            assert!(
                line.contains('✗') && line.contains(&e[..e.len().min(30)]),
                "{line}"
            );
            // The workbench: the pane that failed says so, with the error and the partial text.
            let screen = pane_screen(&rec, call.slot);
            let icon = if c.status == "timeout" {
                "✗ timed out"
            } else {
                "✗ failed"
            };
            assert!(screen.contains(icon), "{}:\n{screen}", c.m);
            let first_words: String = e.chars().take(25).collect();
            assert!(
                screen.contains(&first_words),
                "{}: {first_words:?} not in\n{screen}",
                c.m
            );
            if let Some(t) = c.text.filter(|t| !t.is_empty()) {
                assert!(screen.contains(t), "{}:\n{screen}", c.m);
            }
        }
    }
    assert_eq!(by("r429").retries, 1);
    assert_eq!(by("down").retries, 2);
    assert_eq!(by("auth401").retries, 0, "401 is not retried");
    assert_eq!(by("quota").retries, 0, "insufficient_quota is not retried");
    let log = s.requests_for("r429");
    assert!(
        log[1].at - log[0].at >= std::time::Duration::from_millis(1000),
        "Retry-After honoured"
    );
    assert!(err.contains("↻") && err.contains("retry 1"), "{err}");
    // The runaway answer is cut at 64 bytes per allowed token (at least 4 KiB); memory stays bounded.
    let runaway = by("runaway");
    assert_eq!(runaway.finish_reason.as_deref(), Some("capped"));
    assert!(runaway.text.len() <= 4096, "{}", runaway.text.len());
    // Connection refused and a name that does not resolve.
    let dead = calls.iter().find(|c| c.model == "dead/x").unwrap();
    let nowhere = calls.iter().find(|c| c.model == "nowhere/x").unwrap();
    for c in [dead, nowhere] {
        assert_eq!(c.error_kind.as_deref(), Some("connect"), "{:?}", c.error);
        assert_eq!(c.retries, 1);
    }
    assert!(
        dead.error.as_ref().unwrap().contains("127.0.0.1:1"),
        "{:?}",
        dead.error
    );
    assert!(
        nowhere
            .error
            .as_ref()
            .unwrap()
            .contains("no-such-host.invalid"),
        "{:?}",
        nowhere.error
    );
    // The aggregator's input was shortened to fit its window, and the record says so.
    let sh = rec.steps[1].shortened.as_ref().expect("shortened");
    assert_eq!(sh.context_window, 1024);
    assert!(err.contains("overflow"), "{err}");
    assert_eq!(rec.final_answer.as_ref().unwrap().source, "aggregate");
    // The key was sent, and never shown.
    assert_eq!(
        s.requests_for("ok")[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_message_saying_what_and_where() {
    let s = Server::start().await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(h.join("config.toml"), s.config("")).unwrap();
    std::fs::create_dir_all(h.join("presets")).unwrap();
    let write =
        |name: &str, body: &str| std::fs::write(h.join("presets").join(name), body).unwrap();
    write(
        "unknown-key.toml",
        "name = \"u\"\n[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\" }]\ntemprature = 0.7\n",
    );
    write("bad-toml.toml", "name = \"b\"\n[[step]\nop = \"propose\"\n");
    write("bad-op.toml", "[[step]]\nop = \"blend\"\n");
    write(
        "bad-template.toml",
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\nprompt = \"no-such-template\"\n",
    );
    write(
        "bad-provider.toml",
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"nosuch/a\" }]\n",
    );
    write(
        "bad-local.toml",
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"local/not-a-model\" }]\n",
    );
    write(
        "ok.toml",
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n",
    );
    let cases: &[(&str, &[&str])] = &[
        ("unknown-key", &["unknown-key.toml:5:1", "temprature"]),
        ("bad-toml", &["bad-toml.toml:2:"]),
        ("bad-op", &["bad-op.toml:", "blend"]),
        ("bad-template", &["no-such-template"]),
        ("bad-provider", &["nosuch"]),
        ("bad-local", &["not-a-model"]),
    ];
    for (preset, words) in cases {
        let out = moa(h, &["run", "--preset", preset, "Q"], None).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{preset}: {err}");
        for w in *words {
            assert!(err.contains(w), "{preset}: {w:?} not in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    // Config: unknown key with file, line and column; malformed TOML.
    let bad = h.join("bad.toml");
    std::fs::write(&bad, format!("{}max_concurency = 2\n", s.config(""))).unwrap();
    let out = moa(
        h,
        &[
            "--config",
            bad.to_str().unwrap(),
            "run",
            "--preset",
            "ok",
            "Q",
        ],
        None,
    )
    .await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.toml:6:1") && err.contains("max_concurency"),
        "{err}"
    );
    // Empty prompt, binary junk on stdin, NUL bytes.
    let out = moa(h, &["run", "--preset", "ok"], Some(b"   \n")).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the prompt is empty"),
        "{}",
        text(&out.stderr)
    );
    let out = moa(
        h,
        &["run", "--preset", "ok"],
        Some(&[0xff, 0xfe, 0x00, 0x80, 0x81]),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not UTF-8"),
        "{}",
        text(&out.stderr)
    );
    let out = moa(h, &["run", "--preset", "ok"], Some(b"abc\0def")).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("NUL"), "{}", text(&out.stderr));
    // A 1 MB prompt goes through whole.
    let big = "a".repeat(1 << 20);
    let out = moa(
        h,
        &["run", "--preset", "ok", "--no-save"],
        Some(big.as_bytes()),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sent = s.requests_for("a").last().unwrap().body["messages"][0]["content"].clone();
    assert_eq!(sent.as_str().unwrap().len(), 1 << 20);
    // Unknown session, unknown preset, a prompts file that does not exist.
    let out = moa(h, &["sessions", "show", "nope"], None).await;
    assert_eq!(out.status.code(), Some(2));
    let out = moa(h, &["run", "--preset", "no-such-preset", "Q"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no-such-preset"),
        "{}",
        text(&out.stderr)
    );
    let out = moa(
        h,
        &["eval", "--preset", "ok", "--prompts", "/no/such.jsonl"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/no/such.jsonl"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_never_leaves_the_environment() {
    let s = Server::start().await;
    s.script("judge", vec![Reply::text(&["[[A]]"], 1, 1)]);
    s.script(
        "bad",
        vec![Reply::status(401, r#"{"error":{"message":"bad key"}}"#)],
    );
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(h.join("config.toml"), s.config("")).unwrap();
    std::fs::create_dir_all(h.join("presets")).unwrap();
    std::fs::write(
        h.join("presets/p.toml"),
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\" }, { model = \"fake/bad\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n[baseline]\nmodel = \"fake/base\"\n",
    )
    .unwrap();
    std::fs::write(
        h.join("presets/allbad.toml"),
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/bad\" }]\n",
    )
    .unwrap();
    let prompts = h.join("p.jsonl");
    std::fs::write(
        &prompts,
        "{\"prompt\": \"one\", \"reference\": \"a\"}\nbroken\n",
    )
    .unwrap();
    let inline = h.join("inline.toml");
    std::fs::write(&inline, format!("[providers.fake]\napi_key = \"{KEY}\"\n")).unwrap();
    let p = prompts.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["run", "--preset", "p", "Q"],
        vec!["run", "--preset", "p", "--json", "Q"],
        vec!["run", "--preset", "allbad", "--json", "Q"],
        vec!["sessions", "list", "--json"],
        vec!["sessions", "show", "Q", "--compare"],
        vec!["sessions", "export", "Q", "--format", "json"],
        vec!["sessions", "export", "Q"],
        vec![
            "sessions",
            "judge",
            "Q",
            "--model",
            "fake/judge",
            "--run",
            "1",
        ],
        vec![
            "eval",
            "--preset",
            "p",
            "--prompts",
            p,
            "--judge",
            "fake/judge",
            "--json",
        ],
        vec!["eval", "--preset", "allbad", "--prompts", p],
        vec!["presets", "list"],
        vec!["presets", "show", "p"],
        vec!["models"],
        vec![
            "--config",
            inline.to_str().unwrap(),
            "run",
            "--preset",
            "p",
            "Q",
        ],
    ];
    for c in &commands {
        // support::moa fails the test if the key appears on stdout or stderr.
        let out = moa(h, c, None).await;
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{c:?}: {}",
            text(&out.stderr)
        );
    }
    // The inline key was refused, with a message to use a variable (and without echoing it).
    let out = moa(
        h,
        &["--config", inline.to_str().unwrap(), "presets", "list"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("api_key_env"),
        "{}",
        text(&out.stderr)
    );
    // Nothing written under MOA_HOME holds it: sessions, eval results, reports.
    let mut files = 0;
    let mut stack = vec![h.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p != inline {
                files += 1;
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(KEY),
                    "the key leaked into {}",
                    p.display()
                );
            }
        }
    }
    assert!(files >= 8, "sessions and eval files were written ({files})");
    assert!(
        s.requests_for("a")
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {KEY}")))
    );
}
