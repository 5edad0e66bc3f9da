//! Anthropic's Messages API, streamed (`message_start` ... `message_stop`).

use std::collections::VecDeque;

use futures::StreamExt;
use serde_json::{Value, json};

use super::sse::{self, SseEvent};
use super::{
    BoxFuture, ChatRequest, Chunk, ChunkStream, ListedModel, Provider, ProviderError, Role,
};

pub const API_VERSION: &str = "2023-06-01";
/// Anthropic requires max_tokens; this is used only when the preset leaves it out.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

pub struct AnthropicProvider {
    pub name: String,
    pub base_url: String,
    pub key_var: Option<String>,
    pub client: reqwest::Client,
}

impl AnthropicProvider {
    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url.trim_end_matches('/'), path)
    }
    fn authorize(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let rb = rb.header("anthropic-version", API_VERSION);
        Ok(match super::auth_header(self.key_var.as_deref(), None)? {
            Some(v) => rb.header("x-api-key", v),
            None => rb,
        })
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

/// System messages become the top-level `system` string; consecutive turns of one role are merged,
/// since the API wants user and assistant to alternate.
pub fn request_body(req: &ChatRequest) -> Value {
    let system: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let mut turns: Vec<(Role, String)> = Vec::new();
    for m in req.messages.iter().filter(|m| m.role != Role::System) {
        match turns.last_mut() {
            Some((role, text)) if *role == m.role => {
                text.push_str("\n\n");
                text.push_str(&m.content);
            }
            _ => turns.push((m.role, m.content.clone())),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| {
            json!({"role": if role == Role::User {"user"} else {"assistant"}, "content": content})
        })
        .collect();
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages,
        "stream": true,
    });
    #[allow(
        clippy::expect_used,
        reason = "the body is built as an object literal just above"
    )]
    let obj = body.as_object_mut().expect("literal object");
    if !system.is_empty() {
        obj.insert("system".into(), json!(system.join("\n\n")));
    }
    if let Some(t) = req.temperature {
        obj.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        obj.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.top_k {
        obj.insert("top_k".into(), json!(k));
    }
    body
}

impl Provider for AnthropicProvider {
    fn open(&self, req: ChatRequest) -> BoxFuture<'_, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let rb = self
                .client
                .post(self.url("messages"))
                .json(&request_body(&req));
            let resp = self.send(rb, "messages").await?;
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
            let v = super::openai::read_model_list(resp, &self.name).await?;
            Ok(super::openai::parse_model_list(&v))
        })
    }
}

struct ParseState<S> {
    events: S,
    pending: VecDeque<Result<Chunk, ProviderError>>,
    done: bool,
    /// `message_stop`, or a `stop_reason` (the same fact, a moment earlier), arrived.
    finished: bool,
    tokens_in: u64,
    provider: String,
}

/// Turn Anthropic's event sequence into chunks: text from `content_block_delta`/`text_delta`, input
/// tokens from `message_start`, output tokens and stop reason from `message_delta`, `error` events as
/// errors. Unknown events (`ping`, thinking blocks, future types) are ignored.
pub fn chunk_stream<S>(events: S, provider: String) -> ChunkStream
where
    S: futures::Stream<Item = Result<SseEvent, ProviderError>> + Send + Unpin + 'static,
{
    let state = ParseState {
        events,
        pending: VecDeque::new(),
        done: false,
        finished: false,
        tokens_in: 0,
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
            let ev = match st.events.next().await {
                None => {
                    st.done = true;
                    if !st.finished {
                        st.pending.push_back(Err(super::closed_early(&st.provider)));
                    }
                    continue;
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.pending.push_back(Err(e));
                    continue;
                }
                Some(Ok(ev)) => ev,
            };
            let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                continue;
            };
            let kind = v
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or(&ev.event)
                .to_string();
            match kind.as_str() {
                "message_start" => {
                    st.tokens_in = v
                        .pointer("/message/usage/input_tokens")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                }
                "content_block_delta" => {
                    if let Some(t) = v
                        .pointer("/delta/text")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    {
                        st.pending.push_back(Ok(Chunk::Text(t.to_string())));
                    }
                }
                "message_delta" => {
                    if let Some(out) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                        st.pending.push_back(Ok(Chunk::Usage {
                            tokens_in: st.tokens_in,
                            tokens_out: out,
                        }));
                    }
                    if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                        st.finished = true;
                        st.pending.push_back(Ok(Chunk::Finish(r.to_string())));
                    }
                }
                "message_stop" => {
                    st.done = true;
                    st.finished = true;
                }
                "error" => {
                    let etype = v
                        .pointer("/error/type")
                        .and_then(Value::as_str)
                        .unwrap_or("error");
                    let msg = v
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    st.done = true;
                    st.pending.push_back(Err(ProviderError::Remote(format!(
                        "{} reported {}: {}",
                        st.provider,
                        super::shorten(etype, 100),
                        super::shorten(msg, super::MESSAGE_CAP)
                    ))));
                }
                _ => {}
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Message;

    #[test]
    fn body_moves_system_out_and_merges_turns() {
        let req = ChatRequest {
            model: "claude".into(),
            messages: vec![
                Message::system("be brief"),
                Message::user("a"),
                Message::user("b"),
                Message::assistant("c"),
            ],
            temperature: Some(0.7),
            ..Default::default()
        };
        let b = request_body(&req);
        assert_eq!(b["system"], "be brief");
        assert_eq!(b["messages"].as_array().unwrap().len(), 2);
        assert_eq!(b["messages"][0]["content"], "a\n\nb");
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(b["temperature"], 0.7);
    }
}
