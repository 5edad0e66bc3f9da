//! `moa pull hf:OWNER/REPO/FILE.gguf` against a local server that answers the two calls of the
//! Hugging Face hub's API moa makes (the hub is not reachable from these machines; `HF_ENDPOINT`
//! points moa at the stand-in, as it points huggingface_hub at a mirror): the file listing with
//! sizes and sha256, and the download, which the server cuts once half-way so that moa must resume
//! it with a Range request. Also a wrong checksum, an unknown file and a gated repository.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

#[derive(Clone)]
struct Hub {
    file: Arc<Vec<u8>>,
    /// The sha256 the listing gives (the file's own unless a test lies).
    listed_sha: String,
    /// Cut the next full download half-way.
    cut: Arc<Mutex<bool>>,
    /// Each download request's Range header ("" when none).
    ranges: Arc<Mutex<Vec<String>>>,
    gated: bool,
}

async fn listing(
    State(h): State<Hub>,
    Path((owner, repo, rev)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if h.gated && headers.get("authorization").is_none() {
        return (StatusCode::UNAUTHORIZED, "gated").into_response();
    }
    if owner != "tiny" || repo != "llama-GGUF" {
        return (StatusCode::NOT_FOUND, "no repo").into_response();
    }
    let body = serde_json::json!({
        "id": "tiny/llama-GGUF",
        "sha": format!("c0ffee{rev}"),
        "siblings": [
            {"rfilename": "README.md", "size": 10},
            {"rfilename": "tiny-Q8_0.gguf", "size": h.file.len(),
             "lfs": {"sha256": h.listed_sha, "size": h.file.len()}},
            {"rfilename": "tiny-Q4_K_M.gguf", "size": 5, "lfs": {"sha256": "00", "size": 5}},
        ]
    });
    axum::Json(body).into_response()
}

async fn resolve(
    State(h): State<Hub>,
    Path((_o, _r, rev, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    assert_eq!(rev, "c0ffeemain", "the file comes from the listed commit");
    assert_eq!(file, "tiny-Q8_0.gguf");
    let range = headers
        .get("range")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    h.ranges.lock().unwrap().push(range.clone());
    if let Some(from) = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
    {
        let from: usize = from.parse().unwrap();
        let rest = h.file[from..].to_vec();
        return Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                "content-range",
                format!("bytes {from}-{}/{}", h.file.len() - 1, h.file.len()),
            )
            .body(Body::from(rest))
            .unwrap();
    }
    let cut = std::mem::replace(&mut *h.cut.lock().unwrap(), false);
    if cut {
        // Half the file, then the connection breaks.
        let half = h.file[..h.file.len() / 2].to_vec();
        let stream = futures::stream::iter(vec![
            Ok::<_, std::io::Error>(bytes::Bytes::from(half)),
            Err(std::io::Error::other("cut")),
        ]);
        return Response::builder()
            .header("content-length", h.file.len())
            .body(Body::from_stream(stream))
            .unwrap();
    }
    Body::from(h.file.to_vec()).into_response()
}

async fn start(h: Hub) -> String {
    let app = Router::new()
        .route("/api/models/{owner}/{repo}/revision/{rev}", get(listing))
        .route("/{owner}/{repo}/resolve/{rev}/{*file}", get(resolve))
        .with_state(h);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn hub(file: Vec<u8>) -> Hub {
    let sha: String = Sha256::digest(&file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Hub {
        file: Arc::new(file),
        listed_sha: sha,
        cut: Arc::new(Mutex::new(true)),
        ranges: Arc::default(),
        gated: false,
    }
}

async fn pull(
    endpoint: &str,
    models: &std::path::Path,
    spec: &str,
    token: Option<&str>,
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_moa"));
    cmd.args(["pull", spec])
        .env("HF_ENDPOINT", endpoint)
        .env("MOA_MODELS_DIR", models)
        .env("MOA_HOME", models.join("home"))
        .env_remove("HF_TOKEN");
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    cmd.output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_download_resumes_and_is_verified() {
    let file: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let h = hub(file.clone());
    let ranges = h.ranges.clone();
    let url = start(h).await;
    let dir = tempfile::tempdir().unwrap();
    let out = pull(&url, dir.path(), "hf:tiny/llama-GGUF/tiny-Q8_0.gguf", None).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("tiny-Q8_0.gguf")).unwrap(),
        file
    );
    assert!(err.contains("use it as the model local/tiny-Q8_0"), "{err}");
    // The first request broke half-way; the second asked for the rest only.
    let ranges = ranges.lock().unwrap().clone();
    assert_eq!(ranges, vec!["".to_string(), "bytes=1500000-".to_string()]);
    assert!(!dir.path().join(".tiny-Q8_0.gguf.partial").exists());

    // Pulled again: verified in place, nothing downloaded.
    let out = pull(&url, dir.path(), "hf:tiny/llama-GGUF/tiny-Q8_0.gguf", None).await;
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_checksum_an_unknown_file_and_a_gated_repo_say_what_to_do() {
    let mut h = hub(b"GGUF not really".to_vec());
    *h.cut.lock().unwrap() = false;
    h.listed_sha = "ab".repeat(32);
    let url = start(h).await;
    let dir = tempfile::tempdir().unwrap();
    let out = pull(&url, dir.path(), "hf:tiny/llama-GGUF/tiny-Q8_0.gguf", None).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!dir.path().join("tiny-Q8_0.gguf").exists());
    assert!(!dir.path().join(".tiny-Q8_0.gguf.partial").exists());

    let out = pull(&url, dir.path(), "hf:tiny/llama-GGUF/tiny-Q5.gguf", None).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no file \"tiny-Q5.gguf\""), "{err}");
    assert!(err.contains("tiny-Q8_0.gguf, tiny-Q4_K_M.gguf"), "{err}");

    let out = pull(&url, dir.path(), "hf:nobody/none/x.gguf", None).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no repository nobody/none"));

    let out = pull(&url, dir.path(), "tiny/llama-GGUF/x.gguf", None).await;
    assert_eq!(out.status.code(), Some(2));

    let mut g = hub(b"x".to_vec());
    g.gated = true;
    let gated = start(g).await;
    let out = pull(
        &gated,
        dir.path(),
        "hf:tiny/llama-GGUF/tiny-Q8_0.gguf",
        None,
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs HF_TOKEN"), "{err}");
    let out = pull(
        &gated,
        dir.path(),
        "hf:tiny/llama-GGUF/tiny-Q8_0.gguf",
        Some("hf_secret_token"),
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("hf_secret_token"));
}
