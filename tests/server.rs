//! `wring serve` through a real HTTP client (ureq) against a server started on a loopback port: answers
//! equal to the library's greedy run, streams equal to whole answers, OpenAI's shapes, clear 400s for bad
//! requests, the API key, a full queue answering 429, and a dropped stream cancelling its generation.

use std::io::{BufRead as _, BufReader};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wring::llm::chat::{ChatMessage, render};
use wring::llm::{Cancel, GgufTokenizer, Llama, Sampler, TextStream};
use wring::runtime::{Context, ContextOptions};
use wring::server::{Engine, Loaded, Running, ServeOptions};

const KEY: &str = "test-key";

/// Starts a server over the test model with a cache of `context` positions and `queue` waiting slots;
/// with `parallel`, the cache is paged (f32, `context` positions in blocks of 16) and that many requests
/// are batched, else requests run one at a time.
fn start(
    context: usize,
    queue: usize,
    parallel: Option<usize>,
    opts: impl FnOnce(&mut ServeOptions),
) -> Running {
    let engine = Engine::start(queue, move || {
        let g = crate::llm::model();
        let ctx = Context::new(ContextOptions::default())?;
        let mut model = Llama::load(&ctx, &g, context, |_, _| {})?;
        if parallel.is_some() {
            model.set_paged(&ctx, wring::llm::KvMode::F32, context / 16, 16)?;
        }
        let tokenizer = GgufTokenizer::from_gguf(&g)?;
        Ok(Loaded {
            ctx,
            model,
            tokenizer,
            parallel: parallel.unwrap_or(1),
        })
    })
    .unwrap();
    let mut o = ServeOptions::new("smollm2-test");
    o.api_key = Some(KEY.into());
    opts(&mut o);
    wring::server::spawn("127.0.0.1:0".parse().unwrap(), engine, o).unwrap()
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .build()
}

/// A request's status and body (JSON where it parses, else a string).
fn call(method: &str, url: &str, key: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut req = agent().request(method, url);
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let res = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    call(
        "POST",
        &format!("{base}{path}"),
        Some(KEY),
        Some(&body.to_string()),
    )
}

/// The `data:` payloads of a server-sent event stream, read to its end.
fn stream(base: &str, path: &str, body: &Value) -> Vec<String> {
    let resp = agent()
        .post(&format!("{base}{path}"))
        .set("Authorization", &format!("Bearer {KEY}"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap();
    assert_eq!(resp.header("Content-Type"), Some("text/event-stream"));
    BufReader::new(resp.into_reader())
        .lines()
        .map(Result::unwrap)
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

/// The library's own greedy continuation of `ids`: the text (stopping where a stop string begins) and the
/// number of tokens generated.
fn library_greedy(ids: &[u32], max_tokens: usize) -> (String, usize, Vec<u32>) {
    let g = crate::llm::model();
    let tok = GgufTokenizer::from_gguf(&g).unwrap();
    let ctx = Context::new(ContextOptions::default()).unwrap();
    let mut m = Llama::load(&ctx, &g, 256, |_, _| {}).unwrap();
    let out: Vec<u32> = m
        .generate(
            &ctx,
            ids,
            Sampler::greedy(),
            &tok.stop_tokens,
            max_tokens,
            Cancel::new(),
        )
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut s = TextStream::new(&tok);
    let mut text: String = out.iter().map(|&t| s.push(t).unwrap()).collect();
    text += &s.finish();
    (text, out.len(), out)
}

/// One value of the server's `/metrics`.
fn metric(base: &str, name: &str) -> f64 {
    let (_, m) = call("GET", &format!("{base}/metrics"), None, None);
    m.as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

fn error_type(v: &Value) -> &str {
    v["error"]["type"].as_str().unwrap_or("")
}

#[test]
fn server_answers_as_the_library_does_in_openais_shapes_and_refuses_bad_requests() {
    // A small body limit, so the oversized body below still fits in the socket's buffers: a server that
    // answers before reading all of it would otherwise break the pipe under the client.
    let server = start(256, 4, None, |o| o.max_body_bytes = 16 << 10);
    let base = format!("http://{}", server.addr);
    let g = crate::llm::model();
    let tok = GgufTokenizer::from_gguf(&g).unwrap();

    let (s, v) = call("GET", &format!("{base}/health"), None, None);
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v) = call("GET", &format!("{base}/v1/models"), None, None);
    assert_eq!(s, 401, "{v}");
    let (s, v) = call("GET", &format!("{base}/v1/models"), Some("wrong"), None);
    assert_eq!(s, 401, "{v}");
    let (s, v) = call("GET", &format!("{base}/v1/models"), Some(KEY), None);
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["id"], "smollm2-test");

    // Text completion, greedy: the library's text and counts, whole and streamed.
    let prompt = "The capital of France is";
    let ids = tok.encode(prompt).unwrap();
    let (want, n, _) = library_greedy(&ids, 12);
    let req = json!({"model": "any", "prompt": prompt, "max_tokens": 12, "temperature": 0});
    let (s, v) = post(&base, "/v1/completions", &req);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "smollm2-test");
    assert_eq!(v["choices"][0]["text"], want.as_str());
    assert_eq!(v["usage"]["prompt_tokens"], ids.len());
    assert_eq!(v["usage"]["completion_tokens"], n);
    assert_eq!(v["usage"]["total_tokens"], ids.len() + n);
    let finish = if n == 12 { "length" } else { "stop" };
    assert_eq!(v["choices"][0]["finish_reason"], finish);
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let events = stream(&base, "/v1/completions", &sreq);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(streamed, want);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        finish
    );
    // Token ids as the prompt give the same answer.
    let (s, v) = post(
        &base,
        "/v1/completions",
        &json!({"prompt": ids, "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(
        (s, v["choices"][0]["text"].as_str()),
        (200, Some(want.as_str()))
    );

    // A stop string taken from inside the answer ends the text before it.
    let cut = want.char_indices().nth(want.chars().count() / 2).unwrap().0;
    let stop: String = want[cut..].chars().take(3).collect();
    let before = &want[..want.find(&stop).unwrap()];
    let (s, v) = post(
        &base,
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 12, "temperature": 0, "stop": [stop]}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], before);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // Chat: the model's template, greedy, whole and streamed with usage.
    let template = tok.chat_template.clone().unwrap();
    let piece = |id: Option<u32>| id.map(|i| tok.decode(&[i]).unwrap()).unwrap_or_default();
    let rendered = render(
        &template,
        &[ChatMessage::new("user", "What is the capital of France?")],
        true,
        &piece(tok.bos),
        &piece(tok.eos),
    )
    .unwrap();
    let chat_ids = tok.encode(&rendered).unwrap();
    let (want_chat, n_chat, _) = library_greedy(&chat_ids, 10);
    let creq = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}],
        "max_tokens": 10, "temperature": 0});
    let (s, v) = post(&base, "/v1/chat/completions", &creq);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], want_chat.as_str());
    assert_eq!(v["usage"]["prompt_tokens"], chat_ids.len());
    assert_eq!(v["usage"]["completion_tokens"], n_chat);
    let mut creq_s = creq.clone();
    creq_s["stream"] = json!(true);
    creq_s["stream_options"] = json!({"include_usage": true});
    let events = stream(&base, "/v1/chat/completions", &creq_s);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, want_chat);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], n_chat);
    assert_eq!(usage["prompt_tokens"], chat_ids.len());

    // What the official `openai` Python client got from `wring serve` (tools/fixtures/openai_client.py:
    // whole and streamed chat, a text completion, a refusal) is what the server answers now.
    let fx: Value = crate::fixture::json("openai_client.json");
    let question = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let (s, v) = post(
        &base,
        "/v1/chat/completions",
        &json!({"model": "any", "messages": question, "max_tokens": 16, "temperature": 0}),
    );
    assert_eq!(s, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["content"], fx["chat"]["content"]);
    assert_eq!(fx["chat_stream"]["content"], fx["chat"]["content"]);
    assert_eq!(choice["finish_reason"], fx["chat"]["finish_reason"]);
    assert_eq!(v["usage"]["prompt_tokens"], fx["chat"]["prompt_tokens"]);
    assert_eq!(
        v["usage"]["completion_tokens"],
        fx["chat"]["completion_tokens"]
    );
    let (s, v) = post(
        &base,
        "/v1/completions",
        &json!({"model": "any", "prompt": prompt, "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], fx["completion"]["text"]);
    assert_eq!(fx["refused"]["status"], 400);

    // Sampling with a seed repeats.
    let sampled =
        json!({"prompt": prompt, "max_tokens": 8, "temperature": 0.9, "top_p": 0.95, "seed": 5});
    let a = post(&base, "/v1/completions", &sampled);
    let b = post(&base, "/v1/completions", &sampled);
    assert_eq!(a.0, 200);
    assert_eq!(a.1["choices"], b.1["choices"]);

    // Bad requests: a 400 with OpenAI's error object naming the problem, and the server keeps serving.
    let long_prompt = "word ".repeat(300);
    let big_body = json!({"prompt": "x".repeat(20 << 10)});
    let bad: Vec<(&str, Value, &str)> = vec![
        ("/v1/completions", json!({"max_tokens": 4}), "prompt"),
        (
            "/v1/completions",
            json!({"prompt": prompt, "max_tokens": 0}),
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "max_tokens": 100000}),
            "limit",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "max_tokens": 252}),
            "context",
        ),
        ("/v1/completions", json!({"prompt": long_prompt}), "context"),
        ("/v1/completions", json!({"prompt": ""}), "no tokens"),
        (
            "/v1/completions",
            json!({"prompt": prompt, "temperature": 3}),
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "temperature": "hot"}),
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "top_p": 0}),
            "top_p",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "n": 2}),
            "n = 2",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "logprobs": 3}),
            "log probabilities",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "stop": ["a", "b", "c", "d", "e"]}),
            "stop",
        ),
        (
            "/v1/completions",
            json!({"prompt": ["a", "b"]}),
            "one prompt",
        ),
        (
            "/v1/completions",
            json!({"prompt": [1, 99999999]}),
            "vocabulary",
        ),
        ("/v1/completions", big_body, "length limit"),
        ("/v1/chat/completions", json!({"messages": []}), "empty"),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "tool",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "image_url",
        ),
        ("/v1/embeddings", json!({"input": "x"}), "no embeddings"),
    ];
    for (path, body, says) in bad {
        let (s, v) = post(&base, path, &body);
        assert_eq!(s, 400, "{path} {body:.200}: {v}");
        assert_eq!(error_type(&v), "invalid_request_error", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{path}: {msg:?} does not say {says:?}");
    }
    let (s, v) = call(
        "POST",
        &format!("{base}/v1/completions"),
        Some(KEY),
        Some("{\"prompt\": "),
    );
    assert_eq!((s, error_type(&v)), (400, "invalid_request_error"), "{v}");
    let (s, _) = call("GET", &format!("{base}/v2/nothing"), None, None);
    assert_eq!(s, 404);

    // The counters saw it all, in Prometheus' format.
    let (s, m) = call("GET", &format!("{base}/metrics"), None, None);
    assert_eq!(s, 200);
    let m = m.as_str().unwrap().to_string();
    let metric = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{m}"))
    };
    assert_eq!(metric("wring_requests_total"), 10.0);
    assert_eq!(metric("wring_queue_depth"), 0.0);
    assert_eq!(metric("wring_time_to_first_token_seconds_count"), 10.0);
    assert!(metric("wring_generated_tokens_total") >= (2 * n + 2 * n_chat) as f64);
    assert!(metric("wring_decode_tokens_per_second") > 0.0);
    server.stop().unwrap();
}

#[test]
fn a_full_queue_answers_429_and_a_dropped_stream_cancels_its_generation() {
    // The batched engine with one request at a time: the second waits in the batch, which counts as the
    // queue.
    let server = start(512, 1, Some(1), |_| {});
    let base = format!("http://{}", server.addr);
    let metric = |name: &str| metric(&base, name);
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !ok() {
            assert!(t.elapsed() < Duration::from_secs(120), "waited for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // A long generation, running: its first chunk has arrived. (Counting goes on without an end-of-text
    // token for longer than the test waits.)
    let long = json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": 480, "temperature": 0, "stream": true});
    let resp = agent()
        .post(&format!("{base}/v1/completions"))
        .set("Authorization", &format!("Bearer {KEY}"))
        .send_string(&long.to_string())
        .unwrap();
    let mut reader = BufReader::new(resp.into_reader());
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    // A second request takes the one queue slot...
    let b = base.clone();
    let queued = std::thread::spawn(move || {
        post(
            &b,
            "/v1/completions",
            &json!({"prompt": "Hello", "max_tokens": 3, "temperature": 0}),
        )
    });
    wait_for("a request in the queue", &|| {
        metric("wring_queue_depth") == 1.0
    });
    // ... so a third is refused at once, with a hint to retry.
    let resp = agent()
        .post(&format!("{base}/v1/completions"))
        .set("Authorization", &format!("Bearer {KEY}"))
        .send_string(&json!({"prompt": "Hi", "max_tokens": 3}).to_string());
    match resp {
        Err(ureq::Error::Status(429, r)) => {
            assert_eq!(r.header("Retry-After"), Some("1"));
            let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
            assert_eq!(error_type(&v), "server_busy");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    assert_eq!(metric("wring_requests_rejected_total"), 1.0);
    // Hanging up on the stream cancels it; the queued request then runs.
    drop(reader);
    wait_for("the dropped stream to be cancelled", &|| {
        metric("wring_requests_cancelled_total") == 1.0
    });
    let (s, v) = queued.join().unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(
        metric("wring_generated_tokens_total") < 480.0,
        "the cancelled generation ran to its end"
    );
    server.stop().unwrap();
}

/// Four clients at once on the batched engine (`--parallel 4`): each gets the library's own greedy answer,
/// the batch runs several of them in one step (`wring_batch_running` seen above 1 while they run), two
/// prompts sharing a long system prompt find its blocks in the prefix index, and every block is given
/// back at the end.
#[test]
fn concurrent_requests_are_batched_and_each_answers_as_alone() {
    let server = start(512, 4, Some(4), |_| {});
    let base = format!("http://{}", server.addr);
    let g = crate::llm::model();
    let tok = GgufTokenizer::from_gguf(&g).unwrap();
    let system =
        "You are a helpful assistant who answers in one short sentence and never uses lists. ";
    let prompts = [
        "The capital of France is".to_string(),
        "def fibonacci(n):".to_string(),
        format!("{system}Question: what is the tallest mountain? Answer:"),
        format!("{system}Question: what colour is the sky? Answer:"),
    ];
    let want: Vec<String> = prompts
        .iter()
        .map(|p| library_greedy(&tok.encode(p).unwrap(), 16).0)
        .collect();
    let metric = |name: &str| metric(&base, name);
    assert_eq!(metric("wring_batch_parallel"), 4.0);
    let clients: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (b, p) = (base.clone(), p.clone());
            std::thread::spawn(move || {
                post(
                    &b,
                    "/v1/completions",
                    &json!({"prompt": p, "max_tokens": 16, "temperature": 0}),
                )
            })
        })
        .collect();
    let mut widest = 0.0f64;
    while !clients.iter().all(|c| c.is_finished()) {
        widest = widest.max(metric("wring_batch_running"));
        std::thread::sleep(Duration::from_millis(10));
    }
    for (c, w) in clients.into_iter().zip(&want) {
        let (s, v) = c.join().unwrap();
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["choices"][0]["text"].as_str(), Some(w.as_str()));
    }
    assert!(
        widest > 1.0,
        "requests ran together: at most {widest} at once"
    );
    assert!(metric("wring_prefix_cache_hit_rate") > 0.0);
    assert_eq!(metric("wring_kv_blocks"), 32.0);
    assert_eq!(metric("wring_kv_blocks_used"), 0.0);
    server.stop().unwrap();
}
