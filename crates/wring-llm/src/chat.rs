//! Chat prompts: the GGUF's own chat template (`tokenizer.chat_template`, Jinja) rendered with minijinja,
//! with the variables Hugging Face templates expect.

use crate::LlmError;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Renders `messages` with a chat template; `add_generation_prompt` appends the assistant's opening.
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos: &str,
    eos: &str,
) -> Result<String, LlmError> {
    let mut env = minijinja::Environment::new();
    // Templates call raise_exception to reject conversations they cannot format.
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| LlmError::Request(format!("chat template: {e}")))?;
    let t = env
        .get_template("chat")
        .map_err(|e| LlmError::Request(format!("chat template: {e}")))?;
    t.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos,
        eos_token => eos,
    })
    .map_err(|e| LlmError::Request(format!("chat template: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm2s_template() {
        let out = render(
            SMOLLM2,
            &[ChatMessage::new("user", "Hi")],
            true,
            "<|im_start|>",
            "<|im_end|>",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = render(
            SMOLLM2,
            &[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi"),
            ],
            false,
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn template_errors_are_reported() {
        assert!(
            render("{{ raise_exception('no') }}", &[], true, "", "")
                .unwrap_err()
                .to_string()
                .contains("no")
        );
        assert!(render("{% for %}", &[], true, "", "").is_err());
    }
}
