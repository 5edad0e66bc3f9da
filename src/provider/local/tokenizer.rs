//! The tokenizer and chat template of a GGUF model, built from the file's own metadata.
//!
//! candle's `TokenizerFromGguf` gets SmolLM2's ids wrong (it treats `pre = smollm` as GPT-2 with a
//! prefix space). A `tokenizers` BPE built from `tokenizer.ggml.tokens/merges` with a
//! Digits(individual) + ByteLevel(no prefix space) pre-tokenizer, and the control tokens added as
//! special tokens, matches llama.cpp exactly (tests/local_tokenizer.rs checks the shared vectors).

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use super::LocalModelError;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_CONTROL: i32 = 3;

pub struct GgufTokenizer {
    inner: Tokenizer,
    /// Bytes of every token, for streaming decode (control tokens decode to nothing).
    token_bytes: Vec<Vec<u8>>,
    /// Tokens that end a turn: eos, `<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`...
    pub stop_ids: Vec<u32>,
    pub bos: Option<String>,
    pub eos: Option<String>,
}

fn meta<'a>(ct: &'a Content, key: &str) -> Result<&'a Value, LocalModelError> {
    ct.metadata
        .get(key)
        .ok_or_else(|| LocalModelError::MissingTokenizerKey {
            key: key.to_string(),
        })
}

fn strings(v: &Value) -> Result<Vec<String>, LocalModelError> {
    let arr = v.to_vec().map_err(LocalModelError::Metadata)?;
    arr.iter()
        .map(|x| {
            x.to_string()
                .map(|s| s.to_string())
                .map_err(LocalModelError::Metadata)
        })
        .collect()
}

/// GPT-2's byte-to-unicode table: the character ByteLevel writes for each byte, in byte order.
pub fn gpt2_byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut pairs: Vec<(u32, u32)> = bs.into_iter().zip(cs).collect();
    pairs.sort_unstable();
    pairs
        .into_iter()
        // GPT-2's byte table maps into printable code points below 0x200: always valid chars.
        .filter_map(|(_, c)| char::from_u32(c))
        .collect()
}

/// The table inverted: ByteLevel token strings back to bytes.
fn unicode_to_byte() -> HashMap<char, u8> {
    gpt2_byte_chars()
        .into_iter()
        .enumerate()
        .map(|(b, c)| (c, b as u8))
        .collect()
}

impl GgufTokenizer {
    pub fn from_gguf(ct: &Content) -> Result<Self, LocalModelError> {
        let model = meta(ct, "tokenizer.ggml.model")?
            .to_string()
            .map_err(LocalModelError::Metadata)?
            .clone();
        if model != "gpt2" {
            return Err(LocalModelError::UnsupportedTokenizer { model });
        }
        let tokens = strings(meta(ct, "tokenizer.ggml.tokens")?)?;
        let merges = strings(meta(ct, "tokenizer.ggml.merges")?)?;
        let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(LocalModelError::Metadata)?
                .iter()
                .map(|x| x.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(LocalModelError::BuildTokenizer)?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner.with_decoder(Some(ByteLevel::default()));
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == TOKEN_CONTROL)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner
            .add_special_tokens(control)
            .map_err(LocalModelError::ControlTokens)?;

        let table = unicode_to_byte();
        let token_bytes = tokens
            .iter()
            .zip(&types)
            .map(|(s, t)| {
                if *t == TOKEN_CONTROL {
                    Vec::new()
                } else {
                    s.chars()
                        .map(|c| table.get(&c).copied())
                        .collect::<Option<Vec<u8>>>()
                        .unwrap_or_else(|| s.as_bytes().to_vec())
                }
            })
            .collect();
        let id = |key: &str| ct.metadata.get(key).and_then(|v| v.to_u32().ok());
        let name = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).cloned());
        let eos_id = id("tokenizer.ggml.eos_token_id");
        let mut stop_ids: Vec<u32> = eos_id.into_iter().collect();
        for s in [
            "<|im_end|>",
            "<|endoftext|>",
            "<|eot_id|>",
            "<|end_of_text|>",
        ] {
            if let Some(i) = tokens.iter().position(|t| t == s)
                && !stop_ids.contains(&(i as u32))
            {
                stop_ids.push(i as u32);
            }
        }
        Ok(GgufTokenizer {
            inner,
            token_bytes,
            stop_ids,
            bos: name(id("tokenizer.ggml.bos_token_id")),
            eos: name(eos_id),
        })
    }

    /// Token ids of `text`, control tokens written in it recognised (as llama.cpp's parse_special).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LocalModelError> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(LocalModelError::Tokenize)
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }
}

/// Turns token bytes into text pieces that never split a UTF-8 character: bytes wait until the
/// character they start is complete.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let out = s.to_string();
                self.pending.clear();
                out
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // A broken sequence (not merely incomplete) can never become valid: replace it.
                if e.error_len().is_some() {
                    let out = String::from_utf8_lossy(&self.pending).into_owned();
                    self.pending.clear();
                    return out;
                }
                let out = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
                self.pending.drain(..valid);
                out
            }
        }
    }

    /// Whatever is left at the end (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// The model's chat template (`tokenizer.chat_template`), rendered with minijinja.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
}

/// ChatML, for GGUF files that carry no template.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

impl ChatTemplate {
    pub fn from_gguf(ct: &Content) -> Result<Self, LocalModelError> {
        let source = ct
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_else(|| CHATML.to_string());
        Self::new(source)
    }

    pub fn new(source: String) -> Result<Self, LocalModelError> {
        let mut env = minijinja::Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source)
            .map_err(LocalModelError::TemplateParse)?;
        Ok(ChatTemplate { env })
    }

    pub fn render(
        &self,
        messages: &[crate::provider::Message],
        bos: Option<&str>,
        eos: Option<&str>,
    ) -> Result<String, LocalModelError> {
        let t = self
            .env
            .get_template("chat")
            .map_err(LocalModelError::Template)?;
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    crate::provider::Role::System => "system",
                    crate::provider::Role::User => "user",
                    crate::provider::Role::Assistant => "assistant",
                };
                minijinja::Value::from(std::collections::BTreeMap::from([
                    ("role", minijinja::Value::from(role)),
                    ("content", minijinja::Value::from(m.content.as_str())),
                ]))
            })
            .collect();
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => bos.unwrap_or(""),
            eos_token => eos.unwrap_or(""),
        })
        .map_err(LocalModelError::TemplateRender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_pieces_are_whole_characters() {
        let mut s = Utf8Stream::default();
        let bytes = "é🙂".as_bytes();
        assert_eq!(s.push(&bytes[..1]), "");
        assert_eq!(s.push(&bytes[1..3]), "é");
        assert_eq!(s.push(&bytes[3..5]), "");
        assert_eq!(s.push(&bytes[5..]), "🙂");
        assert_eq!(s.push(&[0xff, b'a']), "\u{fffd}a");
        assert_eq!(s.push(&[0xe6]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }

    #[test]
    fn byte_table_inverts_gpt2() {
        let t = unicode_to_byte();
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'Ċ'], b'\n');
        assert_eq!(t[&'a'], b'a');
        assert_eq!(t.len(), 256);
    }

    #[test]
    fn chatml_template_renders() {
        let t = ChatTemplate::new(CHATML.to_string()).unwrap();
        let s = t
            .render(&[crate::provider::Message::user("Hi")], None, None)
            .unwrap();
        assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }
}
