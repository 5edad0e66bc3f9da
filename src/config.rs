//! `config.toml`, the provider table (built-ins merged with the user's), prices, model facts and the
//! folders moa reads and writes (`MOA_HOME`, `MOA_MODELS_DIR`, else the platform folders).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem, located in its file. Displayed as `file:line:column: message`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{message}", location(path, *line_col))]
pub struct ConfigError {
    pub path: Option<PathBuf>,
    pub line_col: Option<(usize, usize)>,
    pub message: String,
}

fn location(path: &Option<PathBuf>, lc: Option<(usize, usize)>) -> String {
    match (path, lc) {
        (Some(p), Some((l, c))) => format!("{}:{l}:{c}: ", p.display()),
        (Some(p), None) => format!("{}: ", p.display()),
        (None, Some((l, c))) => format!("{l}:{c}: "),
        (None, None) => String::new(),
    }
}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            path: None,
            line_col: None,
            message: message.into(),
        }
    }
    pub fn at(path: &Path, text: &str, span: Option<std::ops::Range<usize>>, msg: String) -> Self {
        ConfigError {
            path: Some(path.to_path_buf()),
            line_col: span.map(|s| line_col(text, s.start)),
            message: msg,
        }
    }
}

/// A model name that does not lead to a provider (`Config::resolve`). Presets, the run
/// preflight and the provider registry all report it, so it is a type of its own rather than a
/// `ConfigError` (it has no file or line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelNameError {
    #[error("model {model:?} must be written PROVIDER/MODEL, e.g. groq/llama-3.3-70b-versatile")]
    NoProvider { model: String },
    #[error("model {model:?} has no model name after the '/'")]
    NoName { model: String },
    #[error(
        "unknown provider {provider:?} in {model:?}; known: {} (add one under [providers.{provider}] in config.toml)",
        .known.join(", ")
    )]
    UnknownProvider {
        provider: String,
        model: String,
        /// Every configured provider's name, sorted.
        known: Vec<String>,
    },
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parse TOML into `T`, turning errors into `file:line:col: message` with the offending key named.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    let value: T = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        ConfigError::at(path, text, e.span(), msg)
    })?;
    refuse_non_finite(path, text)?;
    Ok(value)
}

/// `inf` and `nan` are valid TOML but no temperature, rate or price: accepted, they reach the
/// run records, which JSON writes as null, and every session holding one becomes unreadable.
fn refuse_non_finite(path: &Path, text: &str) -> Result<(), ConfigError> {
    use toml::de::{DeTable, DeValue};
    fn walk(
        key: &str,
        v: &toml::Spanned<DeValue<'_>>,
        found: &mut Option<(String, std::ops::Range<usize>)>,
    ) {
        if found.is_some() {
            return;
        }
        match v.get_ref() {
            DeValue::Float(f) if !f.as_str().parse::<f64>().is_ok_and(f64::is_finite) => {
                *found = Some((key.to_string(), v.span()));
            }
            DeValue::Array(a) => a.iter().for_each(|x| walk(key, x, found)),
            DeValue::Table(t) => t.iter().for_each(|(k, x)| {
                let k = if key.is_empty() {
                    k.get_ref().to_string()
                } else {
                    format!("{key}.{}", k.get_ref())
                };
                walk(&k, x, found)
            }),
            _ => {}
        }
    }
    // Already parsed once without error; a second parse failing is left to the first's verdict.
    let Ok(table) = DeTable::parse(text) else {
        return Ok(());
    };
    let mut found = None;
    for (k, v) in table.get_ref() {
        walk(k.get_ref(), v, &mut found);
    }
    match found {
        Some((key, span)) => Err(ConfigError::at(
            path,
            text,
            Some(span),
            format!("{key}: numbers must be finite (not inf or nan)"),
        )),
        None => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Local,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    default_preset: Option<String>,
    /// The model `moa sessions judge`, the TUI's compare view and `moa eval` use when none is given.
    judge_model: Option<String>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderEntry>,
    #[serde(default)]
    prices: BTreeMap<String, Price>,
    #[serde(default)]
    models: BTreeMap<String, ModelFacts>,
    /// `moa serve`'s limits.
    #[serde(default)]
    serve: ServeEntry,
    #[serde(default)]
    cache: CacheEntry,
}

/// `[cache]`: the proposer/call cache (see `provider::cache`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheEntry {
    enabled: Option<bool>,
    ttl_s: Option<toml::Spanned<u64>>,
    max_mb: Option<toml::Spanned<u64>>,
    semantic_threshold: Option<toml::Spanned<f64>>,
    cache_url: Option<toml::Spanned<String>>,
}

/// The call cache as configured: where answers are kept, for how long, and whether near-identical
/// conversations may share them.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// On for `moa run` and `moa serve` (a preset's own `cache = ...` wins). `moa eval` and `moa
    /// tune` cache whatever this says, unless given --no-cache.
    pub enabled: bool,
    /// Answers older than this are misses (and are removed). None: kept until evicted.
    pub ttl: Option<Duration>,
    /// The disk store's size bound. Redis is bounded by its own `maxmemory` setting.
    pub max_bytes: u64,
    /// Cosine of the conversations' MiniLM embeddings at which another conversation's answer is
    /// given. None: only exact matches.
    pub semantic_threshold: Option<f32>,
    /// `redis://host:port[/db]`: answers shared by every moa using the same Redis. None: on disk.
    pub url: Option<String>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: false,
            ttl: None,
            max_bytes: 256 << 20,
            semantic_threshold: None,
            url: None,
        }
    }
}

/// `[serve]` as written: each limit optional, checked where it is (`ServeSettings`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeEntry {
    listen: Option<String>,
    max_concurrent_requests: Option<toml::Spanned<usize>>,
    request_timeout_ms: Option<toml::Spanned<u64>>,
    max_body_bytes: Option<toml::Spanned<usize>>,
    drain_timeout_ms: Option<toml::Spanned<u64>>,
}

/// `moa serve`'s limits (`[serve]` in config.toml). One process serves every request, so these
/// bound the whole server; the providers' own limits (`max_concurrency`, `requests_per_minute`)
/// are shared by all requests on top of them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeSettings {
    /// Where to listen when `--listen` is not given.
    pub listen: String,
    /// Chat completions running at once; one more is refused with 429 and `Retry-After`.
    pub max_concurrent_requests: usize,
    /// A request's deadline, from its arrival to its last byte (504 past it).
    pub request_timeout: Duration,
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// After SIGTERM/SIGINT, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: "127.0.0.1:8080".into(),
            max_concurrent_requests: 64,
            request_timeout: Duration::from_secs(300),
            max_body_bytes: 4 * 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeSettings {
    fn from_entry(e: ServeEntry, path: &Path, text: &str) -> Result<ServeSettings, ConfigError> {
        let mut s = ServeSettings::default();
        let positive = |name: &str, v: u64, span: std::ops::Range<usize>| {
            if v == 0 {
                Err(ConfigError::at(
                    path,
                    text,
                    Some(span),
                    format!("serve.{name} must be at least 1"),
                ))
            } else {
                Ok(())
            }
        };
        if let Some(l) = e.listen {
            s.listen = l;
        }
        if let Some(v) = e.max_concurrent_requests {
            positive("max_concurrent_requests", *v.get_ref() as u64, v.span())?;
            s.max_concurrent_requests = v.into_inner();
        }
        if let Some(v) = e.request_timeout_ms {
            positive("request_timeout_ms", *v.get_ref(), v.span())?;
            s.request_timeout = Duration::from_millis(v.into_inner());
        }
        if let Some(v) = e.max_body_bytes {
            positive("max_body_bytes", *v.get_ref() as u64, v.span())?;
            s.max_body_bytes = v.into_inner();
        }
        if let Some(v) = e.drain_timeout_ms {
            s.drain_timeout = Duration::from_millis(v.into_inner());
        }
        Ok(s)
    }
}

impl CacheEntry {
    fn resolve(self, path: &Path, text: &str) -> Result<CacheSettings, ConfigError> {
        let mut c = CacheSettings::default();
        if let Some(e) = self.enabled {
            c.enabled = e;
        }
        if let Some(t) = self.ttl_s {
            if *t.get_ref() == 0 {
                return Err(ConfigError::at(
                    path,
                    text,
                    Some(t.span()),
                    "cache.ttl_s must be at least 1 (leave it out to keep answers until the size bound evicts them)".into(),
                ));
            }
            c.ttl = Some(Duration::from_secs(t.into_inner()));
        }
        if let Some(m) = self.max_mb {
            if *m.get_ref() == 0 {
                return Err(ConfigError::at(
                    path,
                    text,
                    Some(m.span()),
                    "cache.max_mb must be at least 1 (set enabled = false to turn the cache off)"
                        .into(),
                ));
            }
            c.max_bytes = m.get_ref().saturating_mul(1 << 20);
        }
        if let Some(t) = self.semantic_threshold {
            let v = *t.get_ref();
            if !(v > 0.0 && v <= 1.0) {
                return Err(ConfigError::at(
                    path,
                    text,
                    Some(t.span()),
                    format!(
                        "cache.semantic_threshold must be above 0 and at most 1 (a cosine; 0.95 is a cautious start), not {v}"
                    ),
                ));
            }
            c.semantic_threshold = Some(v as f32);
        }
        if let Some(u) = self.cache_url {
            let url = u.get_ref();
            let problem = if !url.starts_with("redis://") {
                Some(format!(
                    "cache.cache_url {url:?} is not a redis:// address (leave it out to keep the cache on disk)"
                ))
            } else if url_has_credentials(url) {
                Some(
                    "cache.cache_url holds a user name or password (user:pass@host): remove it and export the password as MOA_REDIS_PASSWORD".into(),
                )
            } else {
                redis::IntoConnectionInfo::into_connection_info(url.as_str())
                    .err()
                    .map(|e| {
                        format!("cache.cache_url {url:?} is not a usable Redis address ({e}): write it as redis://HOST:PORT[/DB]")
                    })
            };
            if let Some(msg) = problem {
                return Err(ConfigError::at(path, text, Some(u.span()), msg));
            }
            c.url = Some(u.into_inner());
        }
        Ok(c)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    kind: Option<ProviderKind>,
    base_url: Option<toml::Spanned<String>>,
    api_key_env: Option<String>,
    /// Only here to refuse it with a helpful message: keys live in the environment.
    api_key: Option<toml::Spanned<toml::Value>>,
    max_concurrency: Option<usize>,
    requests_per_minute: Option<u32>,
    timeout_connect_ms: Option<u64>,
    timeout_first_token_ms: Option<u64>,
    timeout_idle_ms: Option<u64>,
    timeout_total_ms: Option<u64>,
    max_retries: Option<u32>,
    /// For `kind = "local"`: a GGUF file to load instead of the embedded model.
    model_path: Option<PathBuf>,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// What is known about a model that its provider may not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFacts {
    /// Context window in tokens; used to keep the aggregator's input from overflowing.
    pub context_window: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_token: Duration,
    pub idle: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_millis(10_000),
            first_token: Duration::from_millis(60_000),
            idle: Duration::from_millis(30_000),
            total: Duration::from_millis(600_000),
        }
    }
}

/// A provider as moa will use it: built-in defaults with the user's settings on top.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    /// The NAME of the environment variable holding the key; never the key.
    pub api_key_env: Option<String>,
    /// Cloud providers refuse requests without a key: say so before the run starts.
    pub key_required: bool,
    pub max_concurrency: usize,
    pub requests_per_minute: u32,
    pub timeouts: Timeouts,
    pub max_retries: u32,
    pub model_path: Option<PathBuf>,
}

impl ProviderSettings {
    fn builtin(name: &str, kind: ProviderKind, base_url: &str, key: Option<&str>) -> Self {
        ProviderSettings {
            name: name.to_string(),
            kind,
            base_url: base_url.to_string(),
            api_key_env: key.map(str::to_string),
            key_required: key.is_some(),
            // The local provider multiplexes calls on its own thread; 8 lets a step's samples batch.
            max_concurrency: if kind == ProviderKind::Local { 8 } else { 16 },
            requests_per_minute: 0,
            timeouts: Timeouts::default(),
            max_retries: 3,
            model_path: None,
        }
    }

    /// The key variable is set (and non-empty), or none is needed.
    pub fn key_available(&self) -> bool {
        match &self.api_key_env {
            Some(var) => {
                std::env::var_os(var).is_some_and(|v| !v.to_string_lossy().trim().is_empty())
            }
            None => true,
        }
    }
}

/// `scheme://user[:pass]@host...`
fn url_has_credentials(url: &str) -> bool {
    url.split_once("://").is_some_and(|(_, rest)| {
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        authority.contains('@')
    })
}

/// The providers moa knows without any configuration, with their usual base URLs and key variables.
pub fn builtin_providers() -> Vec<ProviderSettings> {
    use ProviderKind::*;
    let cloud = [
        ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        ("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        (
            "together",
            "https://api.together.xyz/v1",
            "TOGETHER_API_KEY",
        ),
        (
            "openrouter",
            "https://openrouter.ai/api/v1",
            "OPENROUTER_API_KEY",
        ),
        (
            "fireworks",
            "https://api.fireworks.ai/inference/v1",
            "FIREWORKS_API_KEY",
        ),
        (
            "deepinfra",
            "https://api.deepinfra.com/v1/openai",
            "DEEPINFRA_API_KEY",
        ),
        ("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    ];
    let mut v: Vec<ProviderSettings> = cloud
        .iter()
        .map(|(n, u, k)| ProviderSettings::builtin(n, Openai, u, Some(k)))
        .collect();
    v.push(ProviderSettings::builtin(
        "anthropic",
        Anthropic,
        "https://api.anthropic.com/v1",
        Some("ANTHROPIC_API_KEY"),
    ));
    // Local servers: no key needed; a key variable is still read when set (vLLM --api-key).
    for (n, u, k) in [
        ("ollama", "http://localhost:11434/v1", None),
        ("vllm", "http://localhost:8000/v1", Some("VLLM_API_KEY")),
        ("llamacpp", "http://localhost:8080/v1", None),
        ("lmstudio", "http://localhost:1234/v1", None),
    ] {
        let mut p = ProviderSettings::builtin(n, Openai, u, k);
        p.key_required = false;
        v.push(p);
    }
    v.push(ProviderSettings::builtin("local", Local, "", None));
    v
}

/// Context windows of models the shipped presets use, so overflow is caught without any config.
fn builtin_context_window(model: &str) -> Option<u64> {
    let table: &[(&str, u64)] = &[
        ("together/Qwen/Qwen1.5-110B-Chat", 32_768),
        ("together/Qwen/Qwen1.5-72B-Chat", 32_768),
        ("together/Qwen/Qwen2-72B-Instruct", 32_768),
        ("together/meta-llama/Llama-3-70b-chat-hf", 8_192),
        ("together/mistralai/Mixtral-8x22B-Instruct-v0.1", 65_536),
        ("together/databricks/dbrx-instruct", 32_768),
        ("groq/llama-3.3-70b-versatile", 131_072),
        ("groq/llama-3.1-8b-instant", 131_072),
        ("groq/gemma2-9b-it", 8_192),
        ("local/smollm2-135m", 8_192),
    ];
    table.iter().find(|(m, _)| *m == model).map(|(_, c)| *c)
}

/// Where moa keeps its files.
#[derive(Debug, Clone)]
pub struct Folders {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
}

impl Folders {
    /// `MOA_HOME` replaces both platform folders; `MOA_MODELS_DIR` overrides the models folder.
    pub fn from_env() -> Self {
        let (config_dir, data_dir) = match std::env::var_os("MOA_HOME").filter(|v| !v.is_empty()) {
            Some(home) => (PathBuf::from(&home), PathBuf::from(home)),
            None => match directories::ProjectDirs::from("", "", "moa") {
                Some(d) => (d.config_dir().to_path_buf(), d.data_dir().to_path_buf()),
                None => (PathBuf::from(".moa"), PathBuf::from(".moa")),
            },
        };
        let models_dir = std::env::var_os("MOA_MODELS_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("models"));
        Folders {
            config_dir,
            data_dir,
            models_dir,
        }
    }
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }
    pub fn presets_dir(&self) -> PathBuf {
        self.config_dir.join("presets")
    }
    pub fn sessions_dir(&self) -> PathBuf {
        self.data_dir.join("sessions")
    }
}

/// The whole configuration, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub folders: Folders,
    /// The file it came from, when there was one.
    pub source: Option<PathBuf>,
    pub default_preset: String,
    /// The judge for baseline comparisons, when the user set one.
    pub judge_model: Option<String>,
    pub providers: BTreeMap<String, ProviderSettings>,
    /// Providers the user configured (not only built in): `moa models` lists these first.
    pub user_providers: Vec<String>,
    pub prices: BTreeMap<String, Price>,
    pub models: BTreeMap<String, ModelFacts>,
    pub serve: ServeSettings,
    /// `[cache]`.
    pub cache: CacheSettings,
}

pub const DEFAULT_PRESET: &str = "local-self-moa";

impl Config {
    /// Load `--config FILE` when given (it must exist), else the config folder's `config.toml` when it
    /// exists, else built-in defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let folders = Folders::from_env();
        let path = match explicit {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError::new(format!(
                        "config file {} does not exist (check the path given to --config)",
                        p.display()
                    )));
                }
                Some(p.to_path_buf())
            }
            None => Some(folders.config_file()).filter(|p| p.exists()),
        };
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    ConfigError::new(format!("cannot read config file {}: {e}", p.display()))
                })?;
                Config::from_toml(folders, &p, &text)
            }
            None => Config::from_toml(folders, Path::new("config.toml"), "").map(|mut c| {
                c.source = None;
                c
            }),
        }
    }

    pub fn from_toml(folders: Folders, path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut file: ConfigFile = parse_toml(path, text)?;
        let cache = std::mem::take(&mut file.cache).resolve(path, text)?;
        let mut providers: BTreeMap<String, ProviderSettings> = builtin_providers()
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let mut user_providers = Vec::new();
        for (name, e) in file.providers {
            if let Some(k) = &e.api_key {
                return Err(ConfigError::at(
                    path,
                    text,
                    Some(k.span()),
                    format!(
                        "providers.{name}.api_key: moa does not read keys from files; remove it, export the key in an environment variable and name that variable with api_key_env = \"...\""
                    ),
                ));
            }
            if name.contains('/') || name.is_empty() {
                return Err(ConfigError::at(
                    path,
                    text,
                    None,
                    format!("provider name {name:?} must be non-empty and contain no '/'"),
                ));
            }
            let mut p = match providers.remove(&name) {
                Some(p) => p,
                None => {
                    let kind = e.kind.ok_or_else(|| {
                        ConfigError::at(
                            path,
                            text,
                            None,
                            format!(
                                "providers.{name}: a new provider needs kind = \"openai\", \"anthropic\" or \"local\""
                            ),
                        )
                    })?;
                    if kind != ProviderKind::Local && e.base_url.is_none() {
                        return Err(ConfigError::at(
                            path,
                            text,
                            None,
                            format!("providers.{name}: base_url is missing"),
                        ));
                    }
                    let mut p = ProviderSettings::builtin(&name, kind, "", None);
                    p.key_required = false;
                    p
                }
            };
            if let Some(k) = e.kind {
                p.kind = k;
            }
            if let Some(u) = e.base_url {
                // Refused rather than redacted wherever shown: like api_key, a password does not
                // belong in a file, and one missed place (an error, a listing) would print it.
                if url_has_credentials(u.get_ref()) {
                    return Err(ConfigError::at(
                        path,
                        text,
                        Some(u.span()),
                        format!(
                            "providers.{name}.base_url holds a user name or password (user:pass@host): remove it, export the key in an environment variable and name that variable with api_key_env = \"...\""
                        ),
                    ));
                }
                p.base_url = u.into_inner();
            }
            if let Some(k) = e.api_key_env {
                p.api_key_env = Some(k).filter(|k| !k.is_empty());
            }
            if let Some(c) = e.max_concurrency {
                if c == 0 {
                    return Err(ConfigError::at(
                        path,
                        text,
                        None,
                        format!("providers.{name}.max_concurrency must be at least 1"),
                    ));
                }
                p.max_concurrency = c;
            }
            if let Some(r) = e.requests_per_minute {
                p.requests_per_minute = r;
            }
            let ms = Duration::from_millis;
            if let Some(t) = e.timeout_connect_ms {
                p.timeouts.connect = ms(t);
            }
            if let Some(t) = e.timeout_first_token_ms {
                p.timeouts.first_token = ms(t);
            }
            if let Some(t) = e.timeout_idle_ms {
                p.timeouts.idle = ms(t);
            }
            if let Some(t) = e.timeout_total_ms {
                p.timeouts.total = ms(t);
            }
            if let Some(r) = e.max_retries {
                p.max_retries = r;
            }
            if e.model_path.is_some() {
                p.model_path = e.model_path;
            }
            user_providers.push(name.clone());
            providers.insert(name, p);
        }
        Ok(Config {
            folders,
            source: Some(path.to_path_buf()),
            default_preset: file
                .default_preset
                .unwrap_or_else(|| DEFAULT_PRESET.to_string()),
            judge_model: file.judge_model,
            providers,
            user_providers,
            prices: file.prices,
            models: file.models,
            serve: ServeSettings::from_entry(file.serve, path, text)?,
            cache,
        })
    }

    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).copied()
    }

    pub fn context_window(&self, model: &str) -> Option<u64> {
        self.models
            .get(model)
            .and_then(|m| m.context_window)
            .or_else(|| builtin_context_window(model))
    }

    /// Split `PROVIDER/MODEL` at the first `/` and find the provider.
    pub fn resolve<'a>(
        &'a self,
        model: &'a str,
    ) -> Result<(&'a ProviderSettings, &'a str), ModelNameError> {
        let Some((prov, name)) = model.split_once('/') else {
            return Err(ModelNameError::NoProvider {
                model: model.to_string(),
            });
        };
        if name.is_empty() {
            return Err(ModelNameError::NoName {
                model: model.to_string(),
            });
        }
        match self.providers.get(prov) {
            Some(p) => Ok((p, name)),
            None => Err(ModelNameError::UnknownProvider {
                provider: prov.to_string(),
                model: model.to_string(),
                known: self.providers.keys().cloned().collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folders() -> Folders {
        Folders {
            config_dir: "/tmp/x".into(),
            data_dir: "/tmp/x".into(),
            models_dir: "/tmp/x/models".into(),
        }
    }

    #[test]
    fn builtins_and_overrides() {
        let c = Config::from_toml(
            folders(),
            Path::new("c.toml"),
            r#"
[providers.groq]
max_concurrency = 2
[providers.fake]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "FAKE_KEY"
requests_per_minute = 30
[prices."groq/x"]
input_per_mtok = 1.0
output_per_mtok = 2.0
"#,
        )
        .unwrap();
        let g = &c.providers["groq"];
        assert_eq!(g.max_concurrency, 2);
        assert_eq!(g.base_url, "https://api.groq.com/openai/v1");
        assert_eq!(g.api_key_env.as_deref(), Some("GROQ_API_KEY"));
        let f = &c.providers["fake"];
        assert_eq!(f.requests_per_minute, 30);
        assert!(!f.key_required);
        assert_eq!(c.price("groq/x").unwrap().output_per_mtok, 2.0);
        assert_eq!(c.default_preset, DEFAULT_PRESET);
        let (p, m) = c.resolve("together/Qwen/Qwen1.5-110B-Chat").unwrap();
        assert_eq!((p.name.as_str(), m), ("together", "Qwen/Qwen1.5-110B-Chat"));
        assert!(
            c.resolve("nope/x")
                .unwrap_err()
                .to_string()
                .contains("unknown provider")
        );
    }

    #[test]
    fn model_name_errors_say_what_to_write() {
        let c = Config::from_toml(folders(), Path::new("c.toml"), "").unwrap();
        let e = c.resolve("gpt-4o").unwrap_err();
        assert_eq!(
            e.to_string(),
            "model \"gpt-4o\" must be written PROVIDER/MODEL, e.g. groq/llama-3.3-70b-versatile"
        );
        assert_eq!(
            c.resolve("groq/").unwrap_err(),
            ModelNameError::NoName {
                model: "groq/".into()
            }
        );
        assert_eq!(
            c.resolve("groq/").unwrap_err().to_string(),
            "model \"groq/\" has no model name after the '/'"
        );
        let e = c.resolve("nope/x").unwrap_err();
        let known = c.providers.keys().cloned().collect::<Vec<_>>().join(", ");
        assert!(known.contains("groq"), "{known}");
        assert_eq!(
            e.to_string(),
            format!(
                "unknown provider \"nope\" in \"nope/x\"; known: {known} (add one under [providers.nope] in config.toml)"
            )
        );
    }

    #[test]
    fn the_cache_table_is_read_and_checked_where_it_is_wrong() {
        let c = Config::from_toml(folders(), Path::new("c.toml"), "").unwrap();
        assert_eq!(c.cache, CacheSettings::default());
        assert!(!c.cache.enabled, "off unless asked for");
        let c = Config::from_toml(
            folders(),
            Path::new("c.toml"),
            "[cache]\nenabled = true\nttl_s = 3600\nmax_mb = 10\nsemantic_threshold = 0.9\ncache_url = \"redis://127.0.0.1:6379/2\"\n",
        )
        .unwrap();
        assert_eq!(
            c.cache,
            CacheSettings {
                enabled: true,
                ttl: Some(Duration::from_secs(3600)),
                max_bytes: 10 << 20,
                semantic_threshold: Some(0.9),
                url: Some("redis://127.0.0.1:6379/2".into()),
            }
        );
        let err = |text: &str| {
            Config::from_toml(folders(), Path::new("c.toml"), text)
                .unwrap_err()
                .to_string()
        };
        let e = err("[cache]\nenabeld = true\n");
        assert!(
            e.starts_with("c.toml:2:1: ") && e.contains("enabeld"),
            "{e}"
        );
        let e = err("[cache]\nsemantic_threshold = 1.5\n");
        assert!(
            e.starts_with("c.toml:2:22: cache.semantic_threshold must be above 0"),
            "{e}"
        );
        let e = err("[cache]\nttl_s = 0\n");
        assert!(
            e.starts_with("c.toml:2:9: cache.ttl_s must be at least 1"),
            "{e}"
        );
        let e = err("[cache]\nmax_mb = 0\n");
        assert!(e.starts_with("c.toml:2:10: cache.max_mb"), "{e}");
        let e = err("[cache]\ncache_url = \"memcached://x\"\n");
        assert!(
            e.starts_with("c.toml:2:13: cache.cache_url \"memcached://x\" is not a redis://"),
            "{e}"
        );
        let e = err("[cache]\ncache_url = \"redis://127.0.0.1:port\"\n");
        assert!(e.contains("is not a usable Redis address"), "{e}");
        let e = err("[cache]\ncache_url = \"redis://:hunter2@127.0.0.1\"\n");
        assert!(
            e.contains("MOA_REDIS_PASSWORD") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_located() {
        let e = Config::from_toml(
            folders(),
            Path::new("c.toml"),
            "default_preset = \"x\"\n[providers.groq]\nmax_concurency = 2\n",
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("c.toml:3:1: "), "{s}");
        assert!(s.contains("max_concurency"), "{s}");
    }

    #[test]
    fn inline_keys_are_refused_without_echoing_them() {
        let e = Config::from_toml(
            folders(),
            Path::new("c.toml"),
            "[providers.groq]\napi_key = \"gsk_SECRET123\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("api_key_env"), "{e}");
        assert!(!e.contains("SECRET123"), "{e}");
        assert!(e.starts_with("c.toml:2:"), "{e}");
    }

    #[test]
    fn serve_limits_are_read_and_checked_where_they_are() {
        let c = Config::from_toml(
            folders(),
            Path::new("c.toml"),
            "[serve]\nmax_concurrent_requests = 3\nrequest_timeout_ms = 2500\nmax_body_bytes = 100\ndrain_timeout_ms = 0\n",
        )
        .unwrap();
        assert_eq!(c.serve.max_concurrent_requests, 3);
        assert_eq!(c.serve.request_timeout, Duration::from_millis(2500));
        assert_eq!(c.serve.max_body_bytes, 100);
        assert_eq!(c.serve.drain_timeout, Duration::ZERO);
        assert_eq!(c.serve.listen, "127.0.0.1:8080");
        let e = Config::from_toml(
            folders(),
            Path::new("c.toml"),
            "[serve]\nmax_concurrent_requests = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "c.toml:2:27: serve.max_concurrent_requests must be at least 1"
        );
        let e = Config::from_toml(
            folders(),
            Path::new("c.toml"),
            "[serve]\nmax_requests = 2\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("c.toml:2:1: ") && e.contains("max_requests"),
            "{e}"
        );
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncdé\nf", 8), (3, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn non_finite_numbers_are_refused_where_they_are() {
        for (text, at) in [
            (
                "[prices.\"a/b\"]\ninput_per_mtok = inf\noutput_per_mtok = 1.0\n",
                "c.toml:2:18",
            ),
            (
                "[prices.\"a/b\"]\ninput_per_mtok = 1.0\noutput_per_mtok = nan\n",
                "c.toml:3:19",
            ),
            (
                "[prices.\"a/b\"]\ninput_per_mtok = -inf\noutput_per_mtok = 1.0\n",
                "c.toml:2:18",
            ),
        ] {
            let e = Config::from_toml(folders(), Path::new("c.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(at), "{e}");
            assert!(e.contains("finite"), "{e}");
        }
        assert!(
            Config::from_toml(
                folders(),
                Path::new("c.toml"),
                "[prices.\"a/b\"]\ninput_per_mtok = 1e300\noutput_per_mtok = 0.5\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn credentials_in_base_url_are_refused_without_echoing_them() {
        let e = Config::from_toml(
            folders(),
            Path::new("c.toml"),
            "[providers.x]\nkind = \"openai\"\nbase_url = \"https://me:hunter2@h.example/v1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("c.toml:3:12"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(!url_has_credentials("http://127.0.0.1:8000/v1?a=b@c"));
    }
}
