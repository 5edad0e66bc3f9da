//! The routes and what each does: `GET /v1/models`, `POST /v1/chat/completions`, `GET /metrics`
//! (all behind the bearer key when one is set) and `GET /health` (open). Unknown routes get
//! OpenAI's 404 body.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::auth::{KEY_VAR, Keys};
use super::metrics::Metrics;
use super::run::ServedRun;
use super::stream::{SseState, complete};
use super::wire::{ApiError, ChatRequest};
use crate::config::ServeSettings;
use crate::engine::preset::{Preset, Step};
use crate::engine::{Engine, RunOptions};
use crate::session::recorder::Recorder;
use crate::session::store::Store;
use crate::session::{RunKind, Session};

/// A preset as served: ready, or why it cannot run (a missing key, a missing model file).
pub struct Served {
    pub preset: Arc<Preset>,
    pub problem: Option<String>,
    /// The engine its runs use: with the call cache when the preset or the config says so.
    pub engine: Engine,
}

pub struct AppState {
    /// By model id (`moa/<preset>`).
    pub presets: BTreeMap<String, Served>,
    pub keys: Keys,
    pub metrics: Arc<Metrics>,
    pub limit: Arc<Semaphore>,
    pub settings: ServeSettings,
    /// Where served runs are recorded (`--record`).
    pub store: Option<Store>,
    pub draining: AtomicBool,
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.settings.max_body_bytes;
    let protected = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(protected)
        .route("/health", get(health))
        .fallback(|uri: axum::http::Uri| async move { ApiError::not_found(uri.path()) })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn auth(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if s.keys.allows(given) {
        return next.run(req).await;
    }
    let msg = match given {
        None => format!(
            "this server needs a key: send it as \"Authorization: Bearer KEY\" (one of the keys in {KEY_VAR} where moa serve runs)"
        ),
        Some(_) => "the key sent is not one of this server's keys".to_string(),
    };
    ApiError::unauthorized(msg).into_response()
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    if s.draining.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

fn model_object(id: &str, served: &Served) -> serde_json::Value {
    json!({
        "id": id,
        "object": "model",
        "created": 0,
        "owned_by": "moa",
        "moa": {
            "description": served.preset.description,
            "ops": served.preset.steps.iter().map(Step::op).collect::<Vec<_>>(),
            "models": served.preset.models(false),
            "available": served.problem.is_none(),
            "problem": served.problem,
        },
    })
}

async fn models(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let data: Vec<_> = s
        .presets
        .iter()
        .map(|(id, p)| model_object(id, p))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn model(
    State(s): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match s.presets.get(&id) {
        Some(p) => Json(model_object(&id, p)).into_response(),
        None => ApiError::unknown_model(&id, &s.presets.keys().cloned().collect::<Vec<_>>())
            .into_response(),
    }
}

/// The preset with the request's sampling settings on its final aggregation (the last
/// `aggregate`, or the last `vote`/`self_moa_seq` of a pipeline without one); the proposers keep
/// the preset's settings, so that the pipeline runs as it was tuned.
pub fn for_request(p: &Preset, req: &ChatRequest) -> Preset {
    let mut p = p.clone();
    if req.temperature.is_none() && req.top_p.is_none() && req.max_tokens.is_none() {
        return p;
    }
    let last = p
        .steps
        .iter()
        .rposition(|s| matches!(s, Step::Aggregate { .. }))
        .or_else(|| {
            p.steps
                .iter()
                .rposition(|s| matches!(s, Step::Vote { .. } | Step::SelfMoaSeq { .. }))
        });
    if let Some(i) = last
        && let Step::Aggregate { agent, .. }
        | Step::Vote { agent, .. }
        | Step::SelfMoaSeq { agent, .. } = &mut p.steps[i]
    {
        if req.temperature.is_some() {
            agent.temperature = req.temperature;
        }
        if req.top_p.is_some() {
            agent.top_p = req.top_p;
        }
        if req.max_tokens.is_some() {
            agent.max_tokens = req.max_tokens;
        }
    }
    p
}

async fn chat(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let arrived = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::too_large(s.settings.max_body_bytes).into_response();
        }
        Err(e) => {
            let mut err = ApiError::invalid("", format!("cannot read the request body: {e}"));
            err.param = None;
            return err.into_response();
        }
    };
    let req = match ChatRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(served) = s.presets.get(&req.model).or_else(|| {
        s.presets
            .get(&format!("moa/{}", req.model))
            .filter(|_| !req.model.starts_with("moa/"))
    }) else {
        let known: Vec<String> = s.presets.keys().cloned().collect();
        return ApiError::unknown_model(&req.model, &known).into_response();
    };
    let model_id = format!("moa/{}", served.preset.name);
    if let Some(problem) = &served.problem {
        s.metrics.request(&served.preset.name, 503);
        return ApiError::unavailable(format!("{model_id} cannot run here: {problem}"))
            .into_response();
    }
    let Ok(permit) = s.limit.clone().try_acquire_owned() else {
        s.metrics.request(&served.preset.name, 429);
        return ApiError::saturated(s.settings.max_concurrent_requests).into_response();
    };
    let preset = Arc::new(for_request(&served.preset, &req));
    let recorder = s.store.as_ref().map(|store| {
        let mut r = Recorder::new(store.clone(), Session::new(&req.messages));
        r.begin(&preset, &req.messages, RunKind::Run, Vec::new());
        r
    });
    // Served runs never run the preset's baseline: it would cost a call nobody sees.
    let h = served.engine.start(
        preset,
        req.messages,
        RunOptions {
            baseline: false,
            ..Default::default()
        },
    );
    let run = ServedRun::new(
        h,
        s.metrics.clone(),
        served.preset.name.clone(),
        recorder,
        req.progress && req.stream,
        permit,
    );
    let timeout = s.settings.request_timeout;
    let deadline = arrived + timeout;
    if req.stream {
        SseState::new(run, model_id, req.include_usage, deadline, timeout)
            .respond()
            .await
    } else {
        match complete(run, &model_id, deadline, timeout).await {
            Ok(v) => Json(v).into_response(),
            Err(e) => e.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::prompts::Templates;

    #[test]
    fn request_settings_go_to_the_final_aggregation_only() {
        let p = crate::engine::preset::parse(
            std::path::Path::new("p.toml"),
            "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\", temperature = 0.7 }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\ntemperature = 0.3\n",
            &Templates::builtin(),
        )
        .unwrap();
        let req = ChatRequest::parse(
            br#"{"model":"moa/p","messages":[{"role":"user","content":"q"}],"temperature":1.5,"max_tokens":7}"#,
        )
        .unwrap();
        let q = for_request(&p, &req);
        match (&q.steps[0], &q.steps[1]) {
            (Step::Propose { agents, .. }, Step::Aggregate { agent, .. }) => {
                assert_eq!(agents[0].temperature, Some(0.7));
                assert_eq!(agents[0].max_tokens, None);
                assert_eq!(agent.temperature, Some(1.5));
                assert_eq!(agent.max_tokens, Some(7));
                assert_eq!(agent.top_p, None);
            }
            other => panic!("{other:?}"),
        }
    }
}
