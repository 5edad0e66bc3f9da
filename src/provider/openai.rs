//! Any OpenAI-compatible chat completions endpoint (OpenAI, Groq, Together, OpenRouter, vLLM,
//! llama.cpp, Ollama, LM Studio...), streamed over SSE.

use std::collections::VecDeque;

use futures::StreamExt;
use serde_json::{Value, json};

use super::sse::{self, SseEvent};
use super::{BoxFuture, ChatRequest, Chunk, ChunkStream, ListedModel, Provider, ProviderError};

pub struct OpenAiProvider {
    pub name: String,
    pub base_url: String,
    pub key_var: Option<String>,
    pub client: reqwest::Client,
}

impl OpenAiProvider {
    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url.trim_end_matches('/'), path)
    }

    fn authorize(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(
            match super::auth_header(self.key_var.as_deref(), Some("Bearer"))? {
                Some(v) => rb.header(reqwest::header::AUTHORIZATION, v),
                None => rb,
            },
        )
    }

    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<reqwest::Response, ProviderError> {
        super::send(
            self.authorize(rb)?,
            &self.name,
            &self.base_url,
            path,
            self.key_var.as_deref(),
        )
        .await
    }
}

/// The JSON body sent for a request. Parameters go out exactly as the user wrote them.
pub fn request_body(req: &ChatRequest) -> Value {
    let mut body = json!({
        "model": req.model,
        "messages": req.messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    #[allow(
        clippy::expect_used,
        reason = "the body is built as an object literal just above"
    )]
    let obj = body.as_object_mut().expect("literal object");
    if let Some(t) = req.temperature {
        obj.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        obj.insert("top_p".into(), json!(p));
    }
    if let Some(m) = req.max_tokens {
        obj.insert("max_tokens".into(), json!(m));
    }
    if let Some(s) = req.seed {
        obj.insert("seed".into(), json!(s));
    }
    if let Some(k) = req.top_k {
        obj.insert("top_k".into(), json!(k));
    }
    if let Some(r) = req.repeat_penalty {
        obj.insert("repetition_penalty".into(), json!(r));
    }
    body
}

impl Provider for OpenAiProvider {
    fn open(&self, req: ChatRequest) -> BoxFuture<'_, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let path = "chat/completions";
            let rb = self
                .client
                .post(self.url(path))
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .json(&request_body(&req));
            let resp = self.send(rb, path).await?;
            Ok(chunk_stream(
                sse::events(resp, self.name.clone()),
                self.name.clone(),
            ))
        })
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<ListedModel>, ProviderError>> {
        Box::pin(async move {
            let resp = self
                .send(self.client.get(self.url("models")), "models")
                .await?;
            Ok(parse_model_list(&read_model_list(resp, &self.name).await?))
        })
    }
}

/// A `/v1/models` body as JSON, read up to [`super::MODEL_LIST_CAP`] and no further.
pub(crate) async fn read_model_list(
    mut resp: reqwest::Response,
    provider: &str,
) -> Result<Value, ProviderError> {
    let (bytes, cut) = super::read_capped(&mut resp, super::MODEL_LIST_CAP)
        .await
        .map_err(|e| {
            ProviderError::Stream(format!(
                "the connection to {provider} broke while reading its model list: {e}"
            ))
        })?;
    if cut {
        return Err(ProviderError::Protocol(format!(
            "{provider} sent a model list over 16 MiB; moa stopped reading it (name the models in presets instead)"
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ProviderError::Protocol(format!("{provider} sent an unreadable model list: {e}"))
    })
}

/// `{"data": [{"id": ..., "context_length"|"context_window"|"max_model_len": N}]}`; Ollama's native
/// `{"models": [{"name": ...}]}` is accepted too.
pub fn parse_model_list(v: &Value) -> Vec<ListedModel> {
    let items = v
        .get("data")
        .or_else(|| v.get("models"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|m| {
            let id = m.get("id").or_else(|| m.get("name"))?.as_str()?.to_string();
            let context_window = ["context_length", "context_window", "max_model_len"]
                .iter()
                .find_map(|k| m.get(*k).and_then(Value::as_u64));
            Some(ListedModel { id, context_window })
        })
        .collect()
}

struct ParseState<S> {
    events: S,
    pending: VecDeque<Result<Chunk, ProviderError>>,
    done: bool,
    saw_text: bool,
    /// `[DONE]` or a `finish_reason` arrived: the answer is complete. Some servers close right after
    /// the finish_reason, without `[DONE]`.
    finished: bool,
    malformed: usize,
    provider: String,
}

/// Turn SSE events into chunks. Tolerates what real providers send: unknown fields, `finish_reason: ""`
/// on middle chunks, a last chunk with `delta: {}`, a usage-only chunk with empty `choices`, Groq's
/// `x_groq.usage`, and occasional malformed lines (skipped; an answer made only of them is an error).
pub fn chunk_stream<S>(events: S, provider: String) -> ChunkStream
where
    S: futures::Stream<Item = Result<SseEvent, ProviderError>> + Send + Unpin + 'static,
{
    let state = ParseState {
        events,
        pending: VecDeque::new(),
        done: false,
        saw_text: false,
        finished: false,
        malformed: 0,
        provider,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.pending.pop_front() {
                return Some((item, st));
            }
            if st.done {
                return None;
            }
            match st.events.next().await {
                None => {
                    st.done = true;
                    if !st.saw_text && st.malformed > 0 {
                        st.pending.push_back(Err(ProviderError::Protocol(format!(
                            "{} sent {} malformed event(s) and no text",
                            st.provider, st.malformed
                        ))));
                    } else if !st.finished {
                        st.pending.push_back(Err(super::closed_early(&st.provider)));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.pending.push_back(Err(e));
                }
                Some(Ok(ev)) => {
                    let data = ev.data.trim();
                    if data.is_empty() {
                        continue;
                    }
                    if data == "[DONE]" {
                        st.done = true;
                        st.finished = true;
                        continue;
                    }
                    match serde_json::from_str::<Value>(data) {
                        Ok(v) => {
                            for c in parse_chunk(&v, &st.provider) {
                                match c {
                                    Ok(Chunk::Text(_)) => st.saw_text = true,
                                    Ok(Chunk::Finish(_)) => st.finished = true,
                                    _ => {}
                                }
                                if c.is_err() {
                                    st.done = true;
                                }
                                st.pending.push_back(c);
                            }
                        }
                        Err(_) => st.malformed += 1,
                    }
                }
            }
        }
    }))
}

fn parse_chunk(v: &Value, provider: &str) -> Vec<Result<Chunk, ProviderError>> {
    let mut out = Vec::new();
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .map(|m| super::shorten(m, super::MESSAGE_CAP))
            .unwrap_or_else(|| super::shorten(&err.to_string(), super::MESSAGE_CAP));
        out.push(Err(ProviderError::Remote(format!(
            "{provider} reported an error mid-stream: {msg}"
        ))));
        return out;
    }
    if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
        let text = choice
            .pointer("/delta/content")
            .or_else(|| choice.get("text"))
            .and_then(Value::as_str);
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            out.push(Ok(Chunk::Text(t.to_string())));
        }
        if let Some(reason) = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            out.push(Ok(Chunk::Finish(reason.to_string())));
        }
    }
    let usage = v
        .get("usage")
        .filter(|u| !u.is_null())
        .or_else(|| v.pointer("/x_groq/usage"));
    if let Some(u) = usage {
        let tokens_in = u.get("prompt_tokens").and_then(Value::as_u64);
        let tokens_out = u.get("completion_tokens").and_then(Value::as_u64);
        if let (Some(tokens_in), Some(tokens_out)) = (tokens_in, tokens_out) {
            out.push(Ok(Chunk::Usage {
                tokens_in,
                tokens_out,
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Message;

    fn parse(v: &str) -> Vec<Chunk> {
        parse_chunk(&serde_json::from_str(v).unwrap(), "p")
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn body_passes_parameters_through() {
        let req = ChatRequest {
            model: "m".into(),
            messages: vec![Message::user("hi")],
            temperature: Some(0.7),
            top_p: Some(0.9),
            max_tokens: Some(512),
            seed: Some(42),
            ..Default::default()
        };
        let body = request_body(&req).to_string();
        assert!(body.contains(r#""temperature":0.7"#), "{body}");
        assert!(body.contains(r#""top_p":0.9"#));
        assert!(body.contains(r#""max_tokens":512"#));
        assert!(body.contains(r#""include_usage":true"#));
        assert!(body.contains(r#""seed":42"#));
        let bare = request_body(&ChatRequest {
            model: "m".into(),
            ..Default::default()
        });
        assert!(bare.get("temperature").is_none());
    }

    #[test]
    fn chunk_quirks() {
        assert_eq!(
            parse(r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":""}],"foo":1}"#),
            vec![Chunk::Text("Hi".into())]
        );
        assert_eq!(
            parse(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#),
            vec![Chunk::Finish("stop".into())]
        );
        assert_eq!(
            parse(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}"#),
            vec![Chunk::Usage {
                tokens_in: 3,
                tokens_out: 5
            }]
        );
        assert_eq!(
            parse(
                r#"{"choices":[{"delta":{}}],"x_groq":{"usage":{"prompt_tokens":1,"completion_tokens":2}}}"#
            ),
            vec![Chunk::Usage {
                tokens_in: 1,
                tokens_out: 2
            }]
        );
        assert!(parse(r#"{"choices":[{"delta":{"content":null}}],"usage":null}"#).is_empty());
    }

    #[test]
    fn model_lists() {
        let v = serde_json::json!({"object":"list","data":[{"id":"a","context_window":8192},{"id":"b"}]});
        assert_eq!(
            parse_model_list(&v),
            vec![
                ListedModel {
                    id: "a".into(),
                    context_window: Some(8192)
                },
                ListedModel {
                    id: "b".into(),
                    context_window: None
                }
            ]
        );
    }
}
