//! Chat prompts: the GGUF's own chat template (`tokenizer.chat_template`, Jinja) rendered with minijinja,
//! with the variables Hugging Face templates expect.

use crate::LlmError;

/// Template instructions one render may execute: a conversation of thousands of turns through a real
/// template needs well under this, a template looping `range(100000)` twice runs out.
pub const FUEL: u64 = 5_000_000;

/// The most bytes a rendered prompt may have: far beyond any context window, far below what would hurt.
pub const MAX_OUTPUT: usize = 16 << 20;

/// A writer that refuses to grow past [`MAX_OUTPUT`] bytes, and remembers that it did (minijinja reports
/// a failed write without its message).
struct Capped(Vec<u8>, bool);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            self.1 = true;
            return Err(std::io::Error::other("the rendered prompt exceeds 16 MiB"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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
///
/// Templates come from model files, so rendering is bounded: at most [`FUEL`] template instructions, at
/// most [`MAX_OUTPUT`] bytes of output, and minijinja's own cap on a repeated string (100 MB); a template
/// past either limit is an error. (A template that doubles a string with `+` many times can still build one
/// large intermediate value within the fuel; minijinja offers no limit on that.)
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos: &str,
    eos: &str,
) -> Result<String, LlmError> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(FUEL));
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
    let mut out = Capped(Vec::new(), false);
    let rendered = t.render_captured_to(
        minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos,
            eos_token => eos,
        },
        &mut out,
    );
    if out.1 {
        return Err(LlmError::Request(format!(
            "chat template: the rendered prompt exceeds {} MiB",
            MAX_OUTPUT >> 20
        )));
    }
    rendered.map_err(|e| LlmError::Request(format!("chat template: {e}")))?;
    String::from_utf8(out.0)
        .map_err(|_| LlmError::Request("chat template: the output is not UTF-8".into()))
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

    /// Hostile templates end in an error, quickly and without exhausting memory: nested loops run out of
    /// fuel, a repeated string past minijinja's cap is refused, and output past 16 MiB is cut off.
    #[test]
    fn hostile_templates_are_bounded() {
        let msgs = [ChatMessage::new("user", "Hi")];
        for (template, what) in [
            (
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                "fuel",
            ),
            ("{{ 'x' * 13000000000 }}", "too large"),
            (
                "{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}",
                "16 MiB",
            ),
        ] {
            let start = std::time::Instant::now();
            let e = render(template, &msgs, true, "", "")
                .unwrap_err()
                .to_string();
            assert!(e.contains("chat template"), "{what}: {e}");
            assert!(
                start.elapsed().as_secs_f64() < 5.0,
                "{what} took {:?}",
                start.elapsed()
            );
        }
    }
}
