//! The guide under `docs/` is tested: every shell block marked `sh,test` runs with this package's `wring`
//! binary first on `PATH`, in a fresh directory that sees the repository's `models/` and `tests/`, within a
//! time bound; where the page shows the block's output (a `text,output` block right after it), each shown
//! line must appear in what the commands printed, in order, `[..]` standing for any text. Every link of the
//! guide and of README.md that points into the repository must resolve, anchors included, and every page
//! must be listed in SUMMARY.md.

// The blocks run in bash with the repository's directories linked in: a Unix test.
#![cfg(unix)]

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one block may run: the slowest loads the model twice and scores a chunk in the dev profile.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs/src"))
        .expect("docs/src exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages
}

/// A fenced block of a page: its info string, its text, and the line it starts on.
#[derive(Debug)]
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(page: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, Vec<&str>)> = None;
    for (i, line) in page.lines().enumerate() {
        match open.take() {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some((info.trim().to_string(), i + 1, Vec::new()));
                }
            }
            Some((info, start, mut body)) => {
                if line.trim_end() == "```" {
                    out.push(Block {
                        info,
                        text: body.join("\n"),
                        line: start,
                    });
                } else {
                    body.push(line);
                    open = Some((info, start, body));
                }
            }
        }
    }
    assert!(open.is_none(), "a fenced block is not closed");
    out
}

/// Whether `line` matches `pattern`, where `[..]` in the pattern matches any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern.trim_end() == line.trim_end();
    }
    let (first, last) = (parts[0], parts[parts.len() - 1].trim_end());
    let line = line.trim_end();
    if !line.starts_with(first) || line.len() < first.len() + last.len() || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The shown lines must appear in `actual` in order (other lines may come between).
fn output_matches(shown: &str, actual: &str) -> Result<(), String> {
    let mut lines = actual.lines();
    for want in shown.lines().filter(|l| !l.trim().is_empty()) {
        if !lines.any(|l| line_matches(want, l)) {
            return Err(format!(
                "no line (after the ones matched before it) matches {want:?}"
            ));
        }
    }
    Ok(())
}

/// Runs a block's script with bash in `dir`, stdout and stderr together, killing it at the time bound.
fn run(script: &str, dir: &Path, bin: &Path) -> Result<String, String> {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = dir.join(".block-output");
    let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\nexec 2>&1\n{script}"))
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(file)
        .spawn()
        .map_err(|e| format!("cannot start bash: {e}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > BLOCK_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("did not finish within {BLOCK_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    std::fs::File::open(&log)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(text)
    } else {
        Err(format!("exited with {status}:\n{text}"))
    }
}

#[test]
fn every_tested_shell_block_runs_and_prints_what_the_page_shows() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_wring"));
    let bin_dir = bin
        .parent()
        .expect("the binary has a directory")
        .to_path_buf();
    let model = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        model.exists(),
        "the test model is missing: run `bash .ci/fetch-model.sh`"
    );
    let only = std::env::var("WRING_BOOK_PAGE").ok();
    let mut ran = 0;
    let mut failures = Vec::new();
    for page in pages() {
        let name = page.file_name().unwrap().to_string_lossy().to_string();
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let text = std::fs::read_to_string(&page).unwrap();
        let blocks = blocks(&text);
        for (i, block) in blocks.iter().enumerate() {
            if block.info != "sh,test" {
                continue;
            }
            // Each block gets a directory of its own, so no block depends on another's files.
            let dir = std::env::temp_dir().join(format!(
                "wring-book-{}-{name}-{}",
                std::process::id(),
                block.line
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for shared in ["models", "tests", "README.md"] {
                std::os::unix::fs::symlink(root().join(shared), dir.join(shared)).unwrap();
            }
            let start = Instant::now();
            let result = run(&block.text, &dir, &bin_dir).and_then(|out| {
                match blocks.get(i + 1).filter(|b| b.info == "text,output") {
                    Some(shown) => output_matches(&shown.text, &out)
                        .map_err(|e| format!("{e}\n--- printed ---\n{out}")),
                    None => Ok(()),
                }
            });
            eprintln!(
                "{name}:{}: {} in {:.1} s",
                block.line,
                if result.is_ok() { "ok" } else { "FAILED" },
                start.elapsed().as_secs_f64()
            );
            match result {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(e) => failures.push(format!("{name}:{}: {e}", block.line)),
            }
            ran += 1;
        }
    }
    assert!(
        only.is_some() || ran >= 10,
        "only {ran} tested blocks found in docs/src"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The GitHub-style anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The lines of a page outside fenced code blocks (fence lines included, as they are no prose).
fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut in_block = false;
    text.lines().filter(move |line| {
        if line.starts_with("```") {
            in_block = !in_block;
            return false;
        }
        !in_block
    })
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose_lines(text)
        .filter(|line| line.starts_with('#'))
        .map(|line| slug(line.trim_start_matches('#')))
        .collect()
}

/// The targets of inline links `[text](target)` outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        // Code spans may hold text like `[a](b)` that is not a link.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            match tail.find(')') {
                Some(end) => {
                    out.push(tail[..end].to_string());
                    rest = &tail[end..];
                }
                None => break,
            }
        }
    }
    out
}

fn check_links(file: &Path, failures: &mut Vec<String>) {
    let text = std::fs::read_to_string(file).unwrap();
    for target in links(&text) {
        if target.starts_with("http://") || target.starts_with("https://") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else {
            file.parent().unwrap().join(path)
        };
        if !resolved.exists() {
            failures.push(format!("{}: {target}: no such file", file.display()));
            continue;
        }
        if let Some(anchor) = anchor {
            let body = std::fs::read_to_string(&resolved).unwrap_or_default();
            if !anchors(&body).contains(anchor) {
                failures.push(format!("{}: {target}: no such heading", file.display()));
            }
        }
    }
}

#[test]
fn every_link_resolves_and_every_page_is_in_the_summary() {
    let mut failures = Vec::new();
    for page in pages() {
        check_links(&page, &mut failures);
    }
    check_links(&root().join("README.md"), &mut failures);
    let summary = std::fs::read_to_string(root().join("docs/src/SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    for page in pages() {
        let name = page.file_name().unwrap().to_string_lossy().to_string();
        if name != "SUMMARY.md" && !listed.contains(&name) {
            failures.push(format!("docs/src/{name} is not listed in SUMMARY.md"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_capability_row_of_the_readme_links_to_its_page() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table = readme
        .split("## What wring does")
        .nth(1)
        .expect("README.md has a `## What wring does` table");
    let rows: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert!(
        rows.len() >= 8,
        "the capability table has {} rows",
        rows.len()
    );
    for row in rows {
        assert!(
            links(row).iter().any(|l| l.starts_with("docs/src/")),
            "a capability row links to no page of the guide: {row}"
        );
    }
}

#[test]
fn the_output_matcher_rejects_what_it_should() {
    assert!(line_matches("PPL = [..]", "PPL = 23.8"));
    assert!(line_matches(
        "[..]Paris[..]",
        "> The capital of France is Paris."
    ));
    assert!(!line_matches(
        "[..]Paris[..]",
        "> The capital of France is Lyon."
    ));
    assert!(line_matches("a[..]b[..]c", "a-x-b-y-c"));
    assert!(!line_matches("a[..]b[..]c", "a-x-c-y-b"));
    assert!(!line_matches("ab[..]ba", "aba"));
    assert!(output_matches("one\nthree", "one\ntwo\nthree").is_ok());
    assert!(output_matches("three\none", "one\ntwo\nthree").is_err());
    assert_eq!(
        slug("Measured: weights below 4 bits"),
        "measured-weights-below-4-bits"
    );
    assert_eq!(slug("`wring quantize`"), "wring-quantize");
}
