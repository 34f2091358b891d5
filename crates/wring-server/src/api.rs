//! The OpenAI API's request bodies as the server reads them, and their checks. Unknown fields are ignored,
//! as OpenAI's own clients send many this server has no use for (`user`, `logit_bias`, ...); fields that
//! would change the answer and that wring cannot honour (`n` other than 1, `logprobs`) are refused.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A request body with the shared [`Params`].
pub trait Request: DeserializeOwned {
    /// Where the shared parameters go.
    fn params_mut(&mut self) -> &mut Params;
}

/// Parses a request body: JSON first, then the request's own fields and the shared parameters, each
/// through serde_path_to_error so a wrong type names its field (`temperature: invalid type: string`).
/// (serde's `flatten` would lose the path.)
pub fn from_slice<T: Request>(bytes: &[u8]) -> Result<T, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the body is not JSON: {e}"))?;
    from_value(&value)
}

/// [`from_slice`] on a body already parsed as JSON.
pub fn from_value<T: Request>(value: &serde_json::Value) -> Result<T, String> {
    let mut req: T = at_path(value)?;
    *req.params_mut() = at_path(value)?;
    Ok(req)
}

fn at_path<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}

/// Parameters shared by chat and text completions.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// The model name; one model per process, so any name is served by it (clients often fix one).
    pub model: Option<String>,
    /// Sampling temperature in [0, 2]; 0 is greedy. OpenAI's default is 1.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass in (0, 1].
    pub top_p: Option<f32>,
    /// Tokens to generate at most.
    pub max_tokens: Option<u64>,
    /// The chat API's newer name for `max_tokens`.
    pub max_completion_tokens: Option<u64>,
    /// One stop string or up to four.
    pub stop: Option<Stop>,
    /// Seed of the draw; without one each request draws differently.
    pub seed: Option<u64>,
    /// Server-sent events instead of one JSON body.
    pub stream: Option<bool>,
    /// `{"include_usage": true}` adds a last chunk with the token counts.
    pub stream_options: Option<StreamOptions>,
    /// Choices per request: only 1.
    pub n: Option<u64>,
    /// Log probabilities are not offered.
    pub logprobs: Option<serde_json::Value>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a usage chunk before `[DONE]`.
    pub include_usage: Option<bool>,
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// The rest (read by [`from_slice`]).
    #[serde(skip)]
    pub params: Params,
}

impl Request for ChatRequest {
    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }
}

/// One message of a chat request.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// Text, or a list of parts of which only text parts are accepted.
    pub content: Option<Content>,
}

/// A message's content.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (`{"type": "text", "text": ...}`).
    Parts(Vec<Part>),
}

/// A content part.
#[derive(Debug, Deserialize)]
pub struct Part {
    /// `text`; images and audio are refused.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    pub text: Option<String>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// The rest (read by [`from_slice`]).
    #[serde(skip)]
    pub params: Params,
}

impl Request for CompletionRequest {
    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }
}

/// A completion prompt: text, a list holding one text, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
    /// A batch of texts: only batches of one are served.
    Texts(Vec<String>),
}

/// The checked sampling and length settings of a request.
#[derive(Debug)]
pub struct Checked {
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Seed of the draw.
    pub seed: u64,
    /// Stop strings, at most four.
    pub stops: Vec<String>,
    /// What the request asked for, if it did; the handler fits the default to the context.
    pub max_tokens: Option<usize>,
    /// Whether to answer with server-sent events.
    pub stream: bool,
    /// Whether a streamed answer ends with a usage chunk.
    pub include_usage: bool,
}

/// Stop strings per request, as OpenAI allows.
const MAX_STOPS: usize = 4;
/// Bytes per stop string: each is searched for in the text after every token.
const MAX_STOP_BYTES: usize = 256;

impl Params {
    /// Checks the settings, with OpenAI's defaults for those not given.
    pub fn check(&self, max_tokens_limit: usize) -> Result<Checked, ApiError> {
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature must be in [0, 2], not {temperature}"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p must be in (0, 1], not {top_p}"),
            ));
        }
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::invalid(
                "n",
                format!("this server generates one choice per request, not n = {n}"),
            ));
        }
        if self
            .logprobs
            .as_ref()
            .is_some_and(|v| !v.is_null() && *v != serde_json::Value::Bool(false))
        {
            return Err(ApiError::invalid(
                "logprobs",
                "log probabilities are not offered by this server".into(),
            ));
        }
        let stops = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stops.len() > MAX_STOPS || stops.iter().any(|s| s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::invalid(
                "stop",
                format!("at most {MAX_STOPS} stop strings of at most {MAX_STOP_BYTES} bytes each"),
            ));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => None,
            Some(0) => {
                return Err(ApiError::invalid(
                    "max_tokens",
                    "max_tokens must be at least 1".into(),
                ));
            }
            Some(m) if m > max_tokens_limit as u64 => {
                return Err(ApiError::invalid(
                    "max_tokens",
                    format!("max_tokens = {m} is above this server's limit of {max_tokens_limit}"),
                ));
            }
            Some(m) => Some(m as usize),
        };
        Ok(Checked {
            temperature,
            top_p,
            seed: self.seed.unwrap_or_else(fresh_seed),
            stops,
            max_tokens,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}

/// A seed for a request that gave none: the clock's nanoseconds mixed with a counter, so two requests in the
/// same instant still draw differently.
fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ COUNTER
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Message {
    /// The role and text, checked: text parts only, and the roles a chat template knows.
    pub fn text(&self, index: usize) -> Result<wring_llm::chat::ChatMessage, ApiError> {
        let role = match self.role.as_str() {
            // OpenAI's newer name for the system role; templates know `system`.
            "developer" => "system",
            r @ ("system" | "user" | "assistant") => r,
            other => {
                return Err(ApiError::invalid(
                    "messages",
                    format!(
                        "messages[{index}]: role `{other}` is not served (system, developer, user, assistant)"
                    ),
                ));
            }
        };
        let content = match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut out = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => out.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                "messages",
                                format!(
                                    "messages[{index}]: content parts of type `{kind}` are not served; this model reads text"
                                ),
                            ));
                        }
                    }
                }
                out
            }
        };
        Ok(wring_llm::chat::ChatMessage::new(role, &content))
    }
}
