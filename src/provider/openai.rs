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
                    let chunks = match parse_usual(data) {
                        Some(chunks) => chunks,
                        None => match serde_json::from_str::<Value>(data) {
                            Ok(v) => parse_chunk(&v, &st.provider),
                            Err(_) => {
                                st.malformed += 1;
                                continue;
                            }
                        },
                    };
                    for c in chunks {
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
            }
        }
    }))
}

/// What `parse_chunk` reads from a chunk, parsed straight from its text into the few fields moa
/// uses, strings borrowed where they have no escapes: parsing every streamed token into a
/// `serde_json::Value` (a map and an allocation per key, then a lookup per field) was a third of
/// the CPU `moa run` spent. None when the chunk is not of the usual shape (another type where an
/// object or array is expected, a key twice, an `error` field, not JSON at all): `parse_chunk` then
/// reads it from a `Value` with all its quirks. Whenever this gives an answer it is the one
/// `parse_chunk` gives (`the_usual_shape_reads_as_the_value_does` checks it on tricky chunks and
/// on the fuzzing corpus); the one difference is a number out of f64's range in a field moa does
/// not read, which makes the whole chunk malformed for `Value` and is skipped here.
fn parse_usual(data: &str) -> Option<Vec<Result<Chunk, ProviderError>>> {
    let Object(w) = serde_json::from_str::<Object<wire::Chunk<'_>>>(data).ok()?;
    if w.error.is_some() {
        return None;
    }
    let mut out = Vec::new();
    if let Some(Object(choice)) = w.choices.and_then(|c| c.into_iter().next()) {
        // `pointer("/delta/content")`, else `text`: a `content` that is there but not a string
        // (null included) means no text, without looking at `text`.
        let content = choice
            .delta
            .map_or(wire::Field::Absent, |Object(d)| d.content);
        let text = match content {
            wire::Field::Absent => choice.text.into_str(),
            other => other.into_str(),
        };
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            out.push(Ok(Chunk::Text(t.into_owned())));
        }
        if let Some(r) = choice.finish_reason.into_str().filter(|r| !r.is_empty()) {
            out.push(Ok(Chunk::Finish(r.into_owned())));
        }
    }
    let usage = match (w.usage, w.x_groq) {
        (Some(Object(u)), _) => Some(u),
        (None, Some(Object(g))) => g.usage.map(|Object(u)| u),
        (None, None) => None,
    };
    if let Some(u) = usage
        && let (Some(tokens_in), Some(tokens_out)) = (u.prompt_tokens.0, u.completion_tokens.0)
    {
        out.push(Ok(Chunk::Usage {
            tokens_in,
            tokens_out,
        }));
    }
    Some(out)
}

/// A JSON object deserialized into `T`, and nothing else: serde's derived structs also read a
/// JSON array, by position, which `Value::get` never does.
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Object<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The shape of a usual chunk. Unknown fields are skipped; a field given twice is an error (the
/// `Value` path then takes the last one, as it always did).
mod wire {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::Object;

    #[derive(Deserialize)]
    pub struct Chunk<'a> {
        #[serde(default, borrow)]
        pub choices: Option<Vec<Object<Choice<'a>>>>,
        #[serde(default)]
        pub usage: Option<Object<Usage>>,
        #[serde(default)]
        pub x_groq: Option<Object<Groq>>,
        /// Anything but null: the `Value` path reads the error.
        #[serde(default)]
        pub error: Option<IgnoredAny>,
    }

    #[derive(Deserialize)]
    pub struct Choice<'a> {
        #[serde(default, borrow)]
        pub delta: Option<Object<Delta<'a>>>,
        #[serde(default, borrow)]
        pub text: Field<'a>,
        #[serde(default, borrow)]
        pub finish_reason: Field<'a>,
    }

    #[derive(Deserialize)]
    pub struct Delta<'a> {
        #[serde(default, borrow)]
        pub content: Field<'a>,
    }

    #[derive(Deserialize)]
    pub struct Groq {
        #[serde(default)]
        pub usage: Option<Object<Usage>>,
    }

    #[derive(Deserialize)]
    pub struct Usage {
        #[serde(default)]
        pub prompt_tokens: Count,
        #[serde(default)]
        pub completion_tokens: Count,
    }

    /// A field that may be absent, null, a string or anything else, as `Value::get` tells them.
    #[derive(Default)]
    pub enum Field<'a> {
        #[default]
        Absent,
        Str(Cow<'a, str>),
        /// Null or any other type.
        NotStr,
    }

    impl<'a> Field<'a> {
        /// `Value::as_str`.
        pub fn into_str(self) -> Option<Cow<'a, str>> {
            match self {
                Field::Str(s) => Some(s),
                _ => None,
            }
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(FieldVisitor(std::marker::PhantomData))
        }
    }

    struct FieldVisitor<'a>(std::marker::PhantomData<&'a ()>);

    impl<'de: 'a, 'a> Visitor<'de> for FieldVisitor<'a> {
        type Value = Field<'a>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'a>, E> {
            Ok(Field::Str(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Field<'a>, E> {
            Ok(Field::Str(Cow::Owned(v.to_string())))
        }
        fn visit_string<E>(self, v: String) -> Result<Field<'a>, E> {
            Ok(Field::Str(Cow::Owned(v)))
        }
        fn visit_unit<E>(self) -> Result<Field<'a>, E> {
            Ok(Field::NotStr)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Field<'a>, E> {
            Ok(Field::NotStr)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Field<'a>, E> {
            Ok(Field::NotStr)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Field<'a>, E> {
            Ok(Field::NotStr)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Field<'a>, E> {
            Ok(Field::NotStr)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'a>, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Field::NotStr)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'a>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Field::NotStr)
        }
    }

    /// `Value::as_u64`: a non-negative integer, else None (absent, null, negative, a fraction, a
    /// string...).
    #[derive(Default)]
    pub struct Count(pub Option<u64>);

    impl<'de> Deserialize<'de> for Count {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Count;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_u64<E>(self, v: u64) -> Result<Count, E> {
                    Ok(Count(Some(v)))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Count, E> {
                    Ok(Count(u64::try_from(v).ok()))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Count, E> {
                    Ok(Count(None))
                }
                fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
                    Ok(Count(None))
                }
                fn visit_str<E>(self, _: &str) -> Result<Count, E> {
                    Ok(Count(None))
                }
                fn visit_unit<E>(self) -> Result<Count, E> {
                    Ok(Count(None))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Count(None))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(Count(None))
                }
            }
            d.deserialize_any(V)
        }
    }
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

    /// The usual-shape parser gives what `parse_chunk` gives on a `Value`, or leaves the chunk to
    /// it: on chunks made to tell the two apart, and on every `data:` line of the fuzzing corpus.
    #[test]
    fn the_usual_shape_reads_as_the_value_does() {
        let show = |r: Vec<Result<Chunk, ProviderError>>| -> Vec<String> {
            r.into_iter()
                .map(|c| match c {
                    Ok(c) => format!("{c:?}"),
                    Err(e) => format!("error {}: {e}", e.kind()),
                })
                .collect()
        };
        let mut usual = 0;
        let mut check = |data: &str| {
            let Some(fast) = parse_usual(data) else {
                return;
            };
            usual += 1;
            let v: Value = serde_json::from_str(data)
                .unwrap_or_else(|e| panic!("read as usual but not JSON ({e}): {data}"));
            assert_eq!(show(fast), show(parse_chunk(&v, "p")), "{data}");
        };
        let tricky = [
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"content":null},"text":"x"}]}"#,
            r#"{"choices":[{"delta":{},"text":"x"}]}"#,
            r#"{"choices":[{"delta":null,"text":"x"}]}"#,
            r#"{"choices":[{"delta":{"content":5},"text":"x"}]}"#,
            r#"{"choices":[{"delta":{"content":{"a":[1]}},"text":"x"}]}"#,
            r#"{"choices":[{"delta":{"content":"a"bé
"}}]}"#,
            r#"{"choices":[{"text":"legacy completion"}]}"#,
            r#"{"choices":[{"text":7}]}"#,
            r#"{"choices":[{"delta":{"content":""},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"delta":{"content":"x"},"finish_reason":""}]}"#,
            r#"{"choices":[{"delta":{"content":"x"},"finish_reason":3}]}"#,
            r#"{"choices":[{"delta":{"content":"x"}},5]}"#,
            r#"{"choices":[["x"]]}"#,
            r#"{"choices":{"0":{"delta":{"content":"x"}}}}"#,
            r#"{"choices":"x"}"#,
            r#"{"choices":null,"usage":null}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"choices":[],"choices":[{"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"delta":["x"]}]}"#,
            r#"[{"choices":[{"delta":{"content":"x"}}]}]"#,
            r#""x""#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
            r#"{"usage":{"prompt_tokens":-1,"completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":1.0,"completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":"1","completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":1}}"#,
            r#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":0}}"#,
            r#"{"usage":{"prompt_tokens":18446744073709551616,"completion_tokens":0}}"#,
            r#"{"usage":null,"x_groq":{"usage":{"prompt_tokens":1,"completion_tokens":2}}}"#,
            r#"{"usage":{},"x_groq":{"usage":{"prompt_tokens":1,"completion_tokens":2}}}"#,
            r#"{"x_groq":{"usage":null}}"#,
            r#"{"x_groq":[1]}"#,
            r#"{"usage":5}"#,
            r#"{"usage":[1,2]}"#,
            r#"{"error":null,"choices":[{"delta":{"content":"x"}}]}"#,
            r#"{"error":{"message":"boom"},"choices":[{"delta":{"content":"x"}}]}"#,
            r#"{"error":"plain"}"#,
            r#"{"choices":[{"delta":{"content":"escaped key"}}]}"#,
            r#"{"choices":[{"delta":{"content":"x"}}]} trailing"#,
            r#"{"choices":[{"delta":{"content":"x"}}]"#,
        ];
        for t in tricky {
            check(t);
        }
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sse");
        if let Ok(dir) = std::fs::read_dir(&corpus) {
            for f in dir.flatten() {
                let bytes = std::fs::read(f.path()).unwrap();
                let text = String::from_utf8_lossy(&bytes);
                for line in text.split(['\n', '\r']) {
                    if let Some(d) = line.strip_prefix("data:") {
                        check(d.trim());
                    }
                }
            }
        }
        // The usual chunks took the fast path (and the corpus added some).
        assert!(usual > 25, "{usual}");
        // A chunk of the usual shape is read without a Value.
        assert!(parse_usual(tricky[0]).is_some());
        assert!(parse_usual(r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#).is_none());
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
