//! The hostile corpus: inputs a stranger could hand wring (GGUF models, safetensors, `.wrg` streams, `.npy`
//! arrays, WAV and PNG files, chat templates, VQ codebooks and codes, command-line values), each generated
//! here, run through the library entry point a command would call, and held to four rules: the result is
//! the typed error the case names (matched on the error's variant and message), nothing panics, it takes
//! under a second, and the thread's peak allocation stays within a small multiple of the input's size (or
//! the documented cap of the command, where the command legitimately builds more, as a template's output).
//! A few valid controls run under the same rules and must succeed, so the harness is seen to pass good input.

mod alloc;
mod files;
mod gguf;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// What a case must end in.
pub enum Expect {
    /// An error whose `Debug: Display` text contains every one of these.
    Error(Vec<&'static str>),
    /// Success: a valid control.
    Ok,
}

/// One hostile input.
pub struct Case {
    /// Which file kind or argument it attacks.
    pub format: &'static str,
    /// What it is, in words.
    pub name: String,
    /// The input's size in bytes, for the allocation bound.
    pub bytes: usize,
    /// Peak allocation allowed, if not the default [`default_cap`] of the input's size.
    pub cap: Option<usize>,
    pub expect: Expect,
    /// Runs the input through the library; an error comes back as `{e:?}: {e}` of its typed error.
    pub run: Box<dyn Fn() -> Result<(), String>>,
}

impl Case {
    pub fn new(
        format: &'static str,
        name: impl Into<String>,
        bytes: usize,
        expect: &[&'static str],
        run: impl Fn() -> Result<(), String> + 'static,
    ) -> Case {
        Case {
            format,
            name: name.into(),
            bytes,
            cap: None,
            expect: Expect::Error(expect.to_vec()),
            run: Box::new(run),
        }
    }

    /// A valid input that must succeed.
    pub fn control(
        format: &'static str,
        name: impl Into<String>,
        bytes: usize,
        run: impl Fn() -> Result<(), String> + 'static,
    ) -> Case {
        Case {
            expect: Expect::Ok,
            ..Case::new(format, name, bytes, &[], run)
        }
    }

    pub fn with_cap(mut self, cap: usize) -> Case {
        self.cap = Some(cap);
        self
    }
}

/// Formats a typed error as the cases match it: variant and fields, then the message.
pub fn typed<E: std::fmt::Debug + std::fmt::Display>(e: E) -> String {
    format!("{e:?}: {e}")
}

/// The default peak-allocation bound: 16 times the input plus 2 MiB for the fixed costs of a parser
/// (error messages, small tables, a tokenizer's regexes).
pub fn default_cap(bytes: usize) -> usize {
    16 * bytes + (2 << 20)
}

/// The cases, from every generator.
fn corpus() -> Vec<Case> {
    let mut cases = gguf::cases();
    cases.extend(files::cases());
    cases.extend(plan_cases());
    cases.extend(jsonl_cases());
    cases
}

/// `wring generate --prompts` files (`wring::server::jsonl`): an input line over the limit is skipped to
/// its end without being held (its successor still reads), and an earlier output to resume from keeps
/// only whole answer lines with a line number, whatever else it holds. Controls: each run checks its own
/// outcome.
fn jsonl_cases() -> Vec<Case> {
    use wring::server::jsonl::{Line, MAX_LINE, kept_answers, read_line};
    let mut cases = Vec::new();
    let long = [
        vec![b'x'; 3 * MAX_LINE],
        b"\n{\"prompt\": \"hi\"}\n".to_vec(),
    ]
    .concat();
    let n = long.len();
    cases.push(
        Case::control(
            "JSONL requests",
            "a 3 MiB line, then a request",
            n,
            move || {
                let mut r = std::io::Cursor::new(&long);
                let first = read_line(&mut r, MAX_LINE).map_err(typed)?;
                let second = read_line(&mut r, MAX_LINE).map_err(typed)?;
                match (first, second) {
                    (Some(Line::TooLong(l)), Some(Line::Text(t)))
                        if l == 3 * MAX_LINE && t.len() == 16 =>
                    {
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
        // The line is read a limit's worth at a time, never whole.
        .with_cap(4 * MAX_LINE),
    );
    let mut add = |name: &str, text: String, keep: usize| {
        let n = text.len();
        cases.push(Case::control("JSONL answers", name, n, move || {
            let mut out = Vec::new();
            let done = kept_answers(&mut std::io::Cursor::new(text.as_bytes()), &mut out)
                .map_err(typed)?;
            (done.len() == keep)
                .then_some(())
                .ok_or_else(|| format!("kept {} answers, not {keep}", done.len()))
        }));
    };
    add(
        "10,000 error lines and a cut answer",
        format!(
            "{}{{\"line\": 3, \"response\": {{\"choi",
            "{\"line\": 1, \"error\": {}}\n".repeat(10_000)
        ),
        0,
    );
    add(
        "line numbers that are negative, fractional, huge, strings or missing",
        [
            r#"{"line": -1, "response": {}}"#,
            r#"{"line": 1.5, "response": {}}"#,
            r#"{"line": 1e300, "response": {}}"#,
            r#"{"line": "2", "response": {}}"#,
            r#"{"response": {}}"#,
            r#"{"line": 18446744073709551615, "response": {}}"#,
        ]
        .join("\n"),
        1,
    );
    add(
        "one answer repeated 1,000 times, binary noise between",
        r#"{"line": 4, "response": {"choices": []}}"#.to_string()
            + &"\n\u{0}\u{ff}\n{\"line\": 4, \"response\": 1}".repeat(1000),
        1,
    );
    cases
}

/// `WRING_PLAN` values (`PlanAs::parse`, what `Context::new` reads from the environment): the known names
/// in any case are controls; anything else is `UnknownPlan` naming the value, whatever its length or
/// characters.
fn plan_cases() -> Vec<Case> {
    use wring::runtime::PlanAs;
    let mut cases = Vec::new();
    let mut add = |name: &str, value: String, ok: bool| {
        let n = value.len();
        let run = move || PlanAs::parse(&value).map(drop).map_err(typed);
        cases.push(if ok {
            Case::control("WRING_PLAN", name, n, run)
        } else {
            Case::new(
                "WRING_PLAN",
                name,
                n,
                &["UnknownPlan", "is not one of gpu, cpu, auto"],
                run,
            )
        });
    };
    add("gpu (control)", "gpu".into(), true);
    add("CPU in capitals, padded (control)", "  CPU ".into(), true);
    add(
        "empty: the adapter's own plan (control)",
        String::new(),
        true,
    );
    add("an unknown word", "fast".into(), false);
    add("two plans", "gpu,cpu".into(), false);
    add("a NUL inside", "gpu\0".into(), false);
    add(
        "full-width letters",
        "\u{ff47}\u{ff50}\u{ff55}".into(),
        false,
    );
    add("a number", "-1".into(), false);
    add("a megabyte of letters", "g".repeat(1 << 20), false);
    cases
}

/// Every case under the four rules; all failures are listed together.
#[test]
fn the_hostile_corpus_is_refused_safely() {
    // The device is set up before measuring: its allocations belong to no case.
    let _ = crate::harness::ctx();
    let cases = corpus();
    // The valid controls run once beforehand: the first run of a GPU path compiles its pipelines (seconds
    // on a busy software adapter), a cost of the build, not of the input.
    for case in cases.iter().filter(|c| matches!(c.expect, Expect::Ok)) {
        let _ = (case.run)();
    }
    let mut failures = Vec::new();
    let mut per_format = std::collections::BTreeMap::<&str, usize>::new();
    let (mut slowest, mut heaviest) = ((0.0, String::new()), (0usize, String::new()));
    for case in &cases {
        *per_format.entry(case.format).or_default() += 1;
        let start = Instant::now();
        let (outcome, peak) = alloc::peak_of(|| catch_unwind(AssertUnwindSafe(|| (case.run)())));
        let took = start.elapsed();
        let cap = case.cap.unwrap_or_else(|| default_cap(case.bytes));
        let what = format!("{} / {}", case.format, case.name);
        match (&outcome, &case.expect) {
            (Err(_), _) => failures.push(format!("{what}: panicked")),
            (Ok(Ok(())), Expect::Error(_)) => failures.push(format!("{what}: accepted")),
            (Ok(Err(e)), Expect::Ok) => failures.push(format!("{what}: valid input refused: {e}")),
            (Ok(Err(e)), Expect::Error(needles)) => {
                if let Some(n) = needles.iter().find(|n| !e.contains(**n)) {
                    failures.push(format!("{what}: error lacks `{n}`: {e}"));
                }
            }
            (Ok(Ok(())), Expect::Ok) => {}
        }
        if took.as_secs_f64() > slowest.0 {
            slowest = (took.as_secs_f64(), what.clone());
        }
        if peak > heaviest.0 {
            heaviest = (peak, what.clone());
        }
        // Hostile input must be refused within a second. The valid controls do real work on the device,
        // whose queue they share with the kernel and model tests running beside them, so they may wait
        // behind seconds of others' work; their bound only catches a hang.
        let limit = if matches!(case.expect, Expect::Ok) {
            60.0
        } else {
            1.0
        };
        if took.as_secs_f64() >= limit {
            failures.push(format!("{what}: took {took:?}"));
        }
        if peak > cap {
            failures.push(format!(
                "{what}: peak allocation {peak} bytes for a {}-byte input (cap {cap})",
                case.bytes
            ));
        }
    }
    println!(
        "hostile corpus: {} cases {per_format:?}; slowest {:.3} s ({}); largest peak allocation {} bytes ({})",
        cases.len(),
        slowest.0,
        slowest.1,
        heaviest.0,
        heaviest.1
    );
    assert!(
        cases.len() >= 100,
        "the corpus shrank to {} cases",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
