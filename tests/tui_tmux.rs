//! The real `moa` binary in tmux against the scripted server: type, send, wait, read the screen as
//! a person would, cancel, quit. Needs tmux (CI installs it); skipped with a message elsewhere.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Reply, Server};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have_tmux() -> bool {
    if Command::new("tmux").arg("-V").output().is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("tmux is missing: CI must install it");
    }
    eprintln!("skipping: tmux is not installed");
    false
}

fn wait_for(session: &str, what: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        if screen.contains(what) {
            return screen;
        }
        if start.elapsed() > timeout {
            panic!("{what:?} did not appear within {timeout:?}; the screen:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_runs_moa_in_the_workbench() {
    if !have_tmux() {
        return;
    }
    let s = Server::start().await;
    s.script(
        "p1",
        vec![Reply::text(&["Paris ", "is the ", "capital."], 50, 30)],
    );
    s.script(
        "p2",
        vec![Reply::status(
            400,
            r#"{"error":{"message":"upstream overloaded"}}"#,
        )],
    );
    s.script("p3", vec![Reply::text(&["It is ", "**Paris**."], 80, 30)]);
    s.script(
        "agg",
        vec![Reply::text(
            &["Final: ", "the capital ", "is Paris."],
            50,
            30,
        )],
    );
    s.script("slow", vec![Reply::text(&["tok "; 400], 10, 50)]);
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), s.config("")).unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(
        home.path().join("presets/e2e.toml"),
        "name = \"e2e\"\n[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/p1\" }, { model = \"fake/p2\" }, { model = \"fake/p3\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n[baseline]\nmodel = \"fake/slow\"\n",
    )
    .unwrap();
    let session = format!("moa-e2e-{}", std::process::id());
    let cmd = format!(
        "MOA_HOME={} FAKE_API_KEY=k {} --preset e2e; echo EXITED=$?; sleep 30",
        home.path().display(),
        env!("CARGO_BIN_EXE_moa")
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "140",
        "-y",
        "40",
        &cmd,
    ]);
    wait_for(&session, "Ask something", Duration::from_secs(10));

    tmux(&[
        "send-keys",
        "-t",
        &session,
        "-l",
        "What is the capital of France?",
    ]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    let screen = wait_for(
        &session,
        "Final: the capital is Paris.",
        Duration::from_secs(15),
    );
    assert!(screen.contains("Paris is the capital."), "{screen}");
    assert!(
        screen.contains("It is Paris."),
        "markdown rendered, not raw: {screen}"
    );
    assert!(
        screen.contains("✗ fake answered HTTP 400: upstream"),
        "{screen}"
    );
    assert!(
        screen.contains("aggregator · together · agg"),
        "the aggregator's title names its prompt and model: {screen}"
    );

    // The slow baseline is still streaming: Esc cancels it and keeps its text.
    tmux(&["send-keys", "-t", &session, "Escape"]);
    let screen = wait_for(&session, "cancel", Duration::from_secs(5));
    assert!(screen.contains("tok tok"), "{screen}");

    // The run was saved: F3 compares it with the (cancelled) baseline; Ctrl+O lists the session.
    wait_for(&session, "✓ saved", Duration::from_secs(5));
    tmux(&["send-keys", "-t", &session, "F3"]);
    // Waits for the overlay's last lines: a capture can land while the terminal is mid-redraw.
    let screen = wait_for(&session, "A / baseline: latency", Duration::from_secs(5));
    let screen = if screen.contains("baseline (fake/slow) (failed)") {
        screen
    } else {
        wait_for(
            &session,
            "baseline (fake/slow) (failed)",
            Duration::from_secs(5),
        )
    };
    assert!(screen.contains(" compare "), "{screen}");
    tmux(&["send-keys", "-t", &session, "Escape"]);
    // A key right after Esc would read as Alt+key.
    std::thread::sleep(Duration::from_millis(300));
    tmux(&["send-keys", "-t", &session, "C-o"]);
    let screen = wait_for(&session, "1 of 1 shown", Duration::from_secs(5));
    assert!(screen.contains("1 run(s)  e2e"), "{screen}");
    tmux(&["send-keys", "-t", &session, "-l", "capital"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    let screen = wait_for(&session, "opened session", Duration::from_secs(5));
    assert!(screen.contains("Final: the capital is Paris."), "{screen}");
    assert!(screen.contains("run 1/1"), "{screen}");
    let files: Vec<_> = std::fs::read_dir(home.path().join("sessions"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(files.len(), 1);

    // Continuing the opened session adds the run to it (no second session).
    tmux(&["send-keys", "-t", &session, "C-b"]);
    tmux(&["send-keys", "-t", &session, "-l", "And Germany?"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    wait_for(&session, "done in", Duration::from_secs(15));
    wait_for(&session, "✓ saved", Duration::from_secs(5));
    let files: Vec<_> = std::fs::read_dir(home.path().join("sessions"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "{:?}",
        files.iter().map(|f| f.file_name()).collect::<Vec<_>>()
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(files[0].path()).unwrap()).unwrap();
    assert_eq!(saved["runs"].as_array().map(Vec::len), Some(2));

    // Help, then quit: the shell after moa shows its exit status.
    tmux(&["send-keys", "-t", &session, "F1"]);
    wait_for(&session, "every key (this help)", Duration::from_secs(5));
    tmux(&["send-keys", "-t", &session, "C-c"]);
    let screen = wait_for(&session, "EXITED=0", Duration::from_secs(5));
    assert!(
        !screen.contains("Ask something"),
        "the workbench is gone: {screen}"
    );
    tmux(&["kill-session", "-t", &session]);
}

/// What a person meets first: a long multi-line paste (with `?`, a tab and a control character)
/// lands in the prompt whole and sends nothing before Enter; code answers keep their indentation
/// and tabs; repeated models are told apart; a sessions folder that cannot be written is said on
/// screen, and quitting then exits non-zero.
#[tokio::test(flavor = "multi_thread")]
async fn paste_code_answers_and_a_failed_save() {
    if !have_tmux() {
        return;
    }
    let s = Server::start().await;
    s.script(
        "coder",
        vec![Reply::text(
            &[
                "Here:\n\n```python\ndef f(x):\n",
                "    if x:\n        return 1\n",
                "    return 0\n```\n",
            ],
            30,
            20,
        )],
    );
    s.script(
        "agg",
        vec![Reply::text(
            &[
                "```go\nfunc f() int {\n",
                "\tif ok {\n\t\treturn 1\n\t}\n",
                "\treturn 0\n}\n```\n",
            ],
            30,
            20,
        )],
    );
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), s.config("")).unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(
        home.path().join("presets/code.toml"),
        "name = \"code\"\n[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/coder\", temperature = 0.2 }, { model = \"fake/coder\", temperature = 0.9 }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n",
    )
    .unwrap();
    // A file where the sessions folder should be: every write fails (also as root, whom
    // permission bits do not stop).
    std::fs::write(home.path().join("sessions"), "not a folder").unwrap();

    let session = format!("moa-paste-{}", std::process::id());
    let cmd = format!(
        "MOA_HOME={} FAKE_API_KEY=k {} --preset code; echo EXITED=$?; sleep 30",
        home.path().display(),
        env!("CARGO_BIN_EXE_moa")
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "45",
        &cmd,
    ]);
    wait_for(&session, "Ask something", Duration::from_secs(10));

    // 200 lines with a question mark first (it would open the help as a key), a tab, and a
    // control character (it would act as a key).
    let mut prompt = String::from("? What does this code do?\n");
    for i in 1..200 {
        prompt.push_str(&format!("line {i}:\tvalue = {i} \u{1}\n"));
    }
    prompt.push_str("end of the pasted text");
    let file = home.path().join("paste.txt");
    std::fs::write(&file, &prompt).unwrap();
    let buffer = format!("moa-paste-buf-{}", std::process::id());
    tmux(&["load-buffer", "-b", &buffer, file.to_str().unwrap()]);
    tmux(&["paste-buffer", "-p", "-b", &buffer, "-t", &session]);
    let screen = wait_for(&session, "pasted 201 lines", Duration::from_secs(10));
    assert!(screen.contains("end of the pasted text"), "{screen}");
    assert!(
        !screen.contains("every key (this help)"),
        "? acted as a key: {screen}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.log().is_empty(), "nothing is sent before Enter");

    tmux(&["send-keys", "-t", &session, "Enter"]);
    let screen = wait_for(&session, "    return 0", Duration::from_secs(15));
    let reqs = s.requests_for("coder");
    assert_eq!(reqs.len(), 2, "one request per proposer, the paste whole");
    let sent = reqs[0].body["messages"][0]["content"]
        .as_str()
        .unwrap_or("");
    assert_eq!(sent, prompt, "the prompt as pasted, byte for byte");
    // Python indentation, and Go's tabs expanded to 4-column stops.
    assert!(screen.contains("        return 1"), "{screen}");
    assert!(screen.contains("def f(x):"), "{screen}");
    let screen = wait_for(&session, "    if ok {", Duration::from_secs(10));
    assert!(
        screen.contains("        return 1\n") || screen.contains("    }"),
        "{screen}"
    );
    // Two samples of one model: the titles say which is which.
    assert!(screen.contains("#1 coder t=0.2"), "{screen}");
    assert!(screen.contains("#2 coder t=0.9"), "{screen}");

    // The save failed, and the status line says where and why.
    let screen = wait_for(&session, "✗ not saved", Duration::from_secs(10));
    assert!(screen.contains("sessions"), "{screen}");
    assert!(!screen.contains("✓ saved"), "{screen}");
    tmux(&["send-keys", "-t", &session, "C-c"]);
    let screen = wait_for(&session, "EXITED=", Duration::from_secs(5));
    assert!(
        screen.contains("EXITED=1"),
        "quitting with an unsaved session fails: {screen}"
    );
    assert!(screen.contains("not on disk"), "{screen}");
    tmux(&["kill-session", "-t", &session]);
    tmux(&["delete-buffer", "-b", &buffer]);
}

/// Tuning the aggregator as a person does: Ctrl+A keeps the first answer as variant A and makes B;
/// F5/F6 switch; F3 compares B with A, marks the differences and judges the pair; F7 runs
/// leave-one-out; everything comes back when the session is opened in a new workbench.
#[tokio::test(flavor = "multi_thread")]
async fn aggregator_variants_compare_judge_leave_one_out_and_come_back() {
    if !have_tmux() {
        return;
    }
    let s = Server::start().await;
    s.script(
        "p1",
        vec![Reply::text(&["Paris is ", "the capital."], 20, 10)],
    );
    s.script("p2", vec![Reply::text(&["Lyon is ", "a city."], 20, 10)]);
    s.script(
        "agg",
        vec![
            Reply::text(&["First answer: ", "Paris."], 20, 10),
            Reply::text(&["Second answer: ", "Paris, surely."], 20, 10),
            Reply::text(&["Without one: ", "Paris."], 20, 10),
        ],
    );
    s.script("judge", vec![Reply::text(&["Hmm. [[A]]"], 10, 10)]);
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!("judge_model = \"fake/judge\"\n{}", s.config("")),
    )
    .unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(
        home.path().join("presets/tune.toml"),
        "name = \"tune\"\n[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/p1\" }, { model = \"fake/p2\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n",
    )
    .unwrap();
    let session = format!("moa-variants-{}", std::process::id());
    let cmd = format!(
        "MOA_HOME={} FAKE_API_KEY=k {} --preset tune; echo EXITED=$?; sleep 30",
        home.path().display(),
        env!("CARGO_BIN_EXE_moa")
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "150",
        "-y",
        "45",
        &cmd,
    ]);
    wait_for(&session, "Ask something", Duration::from_secs(10));
    tmux(&["send-keys", "-t", &session, "-l", "Capital of France?"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    wait_for(&session, "First answer: Paris.", Duration::from_secs(15));
    wait_for(&session, "draws on #1", Duration::from_secs(10));

    // Ctrl+A: a second variant; the first stays whole.
    tmux(&["send-keys", "-t", &session, "C-a"]);
    let screen = wait_for(
        &session,
        "Second answer: Paris, surely.",
        Duration::from_secs(15),
    );
    assert!(screen.contains(" A together "), "{screen}");
    assert!(screen.contains(" B together "), "{screen}");
    assert_eq!(
        s.requests_for("p1").len(),
        1,
        "proposers are not called again"
    );
    tmux(&["send-keys", "-t", &session, "F5"]);
    wait_for(&session, "First answer: Paris.", Duration::from_secs(5));
    tmux(&["send-keys", "-t", &session, "F6"]);
    wait_for(
        &session,
        "Second answer: Paris, surely.",
        Duration::from_secs(5),
    );

    // F3: B against the other variant (no baseline in this preset), differences, a verdict.
    tmux(&["send-keys", "-t", &session, "F3"]);
    let screen = wait_for(&session, "B / A: latency", Duration::from_secs(5));
    assert!(screen.contains("First answer: Paris."), "{screen}");
    tmux(&["send-keys", "-t", &session, "d"]);
    wait_for(&session, "differing words marked", Duration::from_secs(5));
    tmux(&["send-keys", "-t", &session, "j"]);
    let screen = wait_for(
        &session,
        "judge fake/judge: B tie against A",
        Duration::from_secs(10),
    );
    assert!(screen.contains("inconsistent"), "{screen}");
    assert_eq!(s.requests_for("judge").len(), 2, "both orders");
    tmux(&["send-keys", "-t", &session, "Escape"]);
    std::thread::sleep(Duration::from_millis(300));

    // F7: leave-one-out on B: one aggregation without each answer, each judged against B.
    let agg_before = s.requests_for("agg").len();
    tmux(&["send-keys", "-t", &session, "F7"]);
    wait_for(&session, "leave-one-out done", Duration::from_secs(15));
    assert_eq!(s.requests_for("agg").len(), agg_before + 2);
    assert_eq!(s.requests_for("judge").len(), 2 + 2 * 2);
    assert_eq!(s.requests_for("p1").len(), 1);
    tmux(&["send-keys", "-t", &session, "F3"]);
    // The table's last line, so that the lines above it are drawn too.
    let screen = wait_for(&session, "without #2", Duration::from_secs(5));
    assert!(screen.contains("leave-one-out on B"), "{screen}");
    assert!(screen.contains("without #1"), "{screen}");
    tmux(&["send-keys", "-t", &session, "Escape"]);
    std::thread::sleep(Duration::from_millis(300));
    wait_for(&session, "✓ saved", Duration::from_secs(5));
    tmux(&["send-keys", "-t", &session, "C-c"]);
    wait_for(&session, "EXITED=0", Duration::from_secs(5));
    tmux(&["kill-session", "-t", &session]);

    // The session file keeps the variant with its parent, and what was learnt.
    let file = std::fs::read_dir(home.path().join("sessions"))
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))
        .unwrap()
        .path();
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let runs = saved["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["kind"], "reaggregate");
    assert_eq!(runs[1]["parent"], runs[0]["record"]["id"]);
    assert!(
        runs[0]["attribution"]["similarity"].is_array(),
        "{}",
        runs[0]
    );
    assert!(
        runs[1]["attribution"]["similarity"].is_array(),
        "{}",
        runs[1]
    );
    assert_eq!(runs[0]["pair_judgements"].as_array().map(Vec::len), Some(1));
    assert_eq!(runs[1]["leave_one_out"].as_array().map(Vec::len), Some(2));
    // moa sessions show and the Markdown export say the same.
    let id = saved["id"].as_str().unwrap();
    for args in [
        vec!["sessions", "show", id],
        vec!["sessions", "export", id, "--format", "md"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_moa"))
            .args(&args)
            .env("MOA_HOME", home.path())
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {shown}");
        for want in [
            "aggregator variant A of 2",
            "aggregator variant B of 2",
            "judge fake/judge: B tie against A (the two orders disagreed)",
            "leave-one-out without #1 fake/p1",
            "draws on #1",
        ] {
            assert!(shown.contains(want), "{args:?} lacks {want:?}:\n{shown}");
        }
    }

    // A new workbench opens the session: both variants, the verdict and the table are back.
    let session = format!("moa-variants2-{}", std::process::id());
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "150",
        "-y",
        "45",
        &cmd,
    ]);
    wait_for(&session, "Ask something", Duration::from_secs(10));
    tmux(&["send-keys", "-t", &session, "C-o"]);
    wait_for(&session, "1 of 1 shown", Duration::from_secs(5));
    tmux(&["send-keys", "-t", &session, "Enter"]);
    let screen = wait_for(&session, "opened session", Duration::from_secs(5));
    assert!(screen.contains(" A together "), "{screen}");
    assert!(screen.contains("Second answer: Paris, surely."), "{screen}");
    tmux(&["send-keys", "-t", &session, "F3"]);
    let screen = wait_for(&session, "leave-one-out on B", Duration::from_secs(5));
    assert!(
        screen.contains("judge fake/judge: B tie against A"),
        "{screen}"
    );
    tmux(&["send-keys", "-t", &session, "Escape"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux(&["send-keys", "-t", &session, "C-c"]);
    wait_for(&session, "EXITED=0", Duration::from_secs(5));
    tmux(&["kill-session", "-t", &session]);
}

/// The lines of a screen between its header and its status line: what the panes show.
fn body(screen: &str) -> Vec<String> {
    let lines: Vec<String> = screen.lines().map(|l| l.trim_end().to_string()).collect();
    let n = lines.len();
    lines[1..n.saturating_sub(1)].to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_run_replays_at_its_recorded_pace_offline() {
    if !have_tmux() {
        return;
    }
    let s = Server::start().await;
    // Two proposers streaming word by word for about 2.5 s, an aggregator answering with code.
    let p1: Vec<String> = (1..=40).map(|i| format!("alpha{i} ")).collect();
    let p2: Vec<String> = (1..=30).map(|i| format!("beta{i} ")).collect();
    let r1: Vec<&str> = p1.iter().map(String::as_str).collect();
    let r2: Vec<&str> = p2.iter().map(String::as_str).collect();
    s.script("p1", vec![Reply::text(&r1, 300, 60)]);
    s.script("p2", vec![Reply::text(&r2, 500, 80)]);
    s.script(
        "agg",
        vec![Reply::text(
            &[
                "Both agree.\n\n",
                "```python\n",
                "def f(x):\n",
                "    return x + 1\n",
                "```\n",
                "Done.",
            ],
            200,
            150,
        )],
    );
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), s.config("")).unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(
        home.path().join("presets/demo.toml"),
        "name = \"demo\"\n[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/p1\" }, { model = \"fake/p2\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n",
    )
    .unwrap();
    let moa = env!("CARGO_BIN_EXE_moa");
    let home_s = home.path().display().to_string();

    // The live run, in the workbench.
    let live = format!("moa-live-{}", std::process::id());
    let cmd = format!("MOA_HOME={home_s} FAKE_API_KEY=k {moa} --preset demo; sleep 30");
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &live,
        "-x",
        "130",
        "-y",
        "36",
        &cmd,
    ]);
    wait_for(&live, "Ask something", Duration::from_secs(10));
    tmux(&["send-keys", "-t", &live, "-l", "Count with me"]);
    tmux(&["send-keys", "-t", &live, "Enter"]);
    wait_for(&live, "✓ saved", Duration::from_secs(20));
    wait_for(&live, "Done.", Duration::from_secs(5));
    // The attribution line comes last (computed after the run ended).
    let live_screen = wait_for(&live, "draws on #1", Duration::from_secs(5));
    assert!(live_screen.contains("alpha40"), "{live_screen}");
    tmux(&["send-keys", "-t", &live, "C-c"]);
    tmux(&["kill-session", "-t", &live]);
    let sent = s.log().len();
    assert_eq!(sent, 3);

    let out = Command::new(moa)
        .args(["sessions", "list", "--json"])
        .env("MOA_HOME", home.path())
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();

    // The replay: no key in the environment, and the provider must hear nothing.
    let rp = format!("moa-replay-{}", std::process::id());
    let cmd = format!("MOA_HOME={home_s} {moa} replay {id}; echo EXITED=$?; sleep 30");
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &rp,
        "-x",
        "130",
        "-y",
        "36",
        &cmd,
    ]);
    wait_for(&rp, "replay 1×", Duration::from_secs(10));
    // Partly filled mid-way: the first words are there, the last not yet.
    let mid = wait_for(&rp, "alpha5 ", Duration::from_secs(5));
    assert!(!mid.contains("alpha40"), "mid-replay, not done: {mid}");
    assert!(!mid.contains("Done."), "{mid}");

    // Space pauses: the panes stand still.
    tmux(&["send-keys", "-t", &rp, "Space"]);
    let a = wait_for(&rp, "⏸ replay", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(800));
    let b = tmux(&["capture-pane", "-p", "-t", &rp]);
    let words = |s: &str| s.matches("alpha").count() + s.matches("beta").count();
    assert_eq!(words(&a), words(&b), "paused:\n{a}\n---\n{b}");
    assert!(!b.contains("alpha40"), "{b}");
    // Space resumes; + doubles the speed.
    tmux(&["send-keys", "-t", &rp, "Space"]);
    tmux(&["send-keys", "-t", &rp, "+"]);
    wait_for(&rp, "▶ replay 2×", Duration::from_secs(5));

    // The end: the session is open on the replayed run, as the live run left it.
    let end = wait_for(&rp, "replayed run 1 of 1", Duration::from_secs(15));
    let end = if end.contains("Done.") {
        end
    } else {
        wait_for(&rp, "Done.", Duration::from_secs(5))
    };
    assert_eq!(
        body(&live_screen),
        body(&end),
        "the final screen differs from the live run's:\n{live_screen}\n---\n{end}"
    );
    assert_eq!(s.log().len(), sent, "replay sent nothing to the provider");
    tmux(&["send-keys", "-t", &rp, "C-c"]);
    wait_for(&rp, "EXITED=0", Duration::from_secs(5));
    tmux(&["kill-session", "-t", &rp]);
}
