//! Batch jobs over many files that any scheduler can split and restart: the inputs are a directory (its
//! files in name order) or a list file (one path per line, in its order), shard `I/N` takes every N-th of
//! them starting at I, each output is written to a temporary name in the output directory and renamed into
//! place when complete, and an output that exists is skipped. So a Kubernetes Indexed Job, a Slurm array or
//! a Ray map can run shard `$INDEX/N` on any machine, and a killed or restarted shard redoes only the files
//! it had not finished; no two shards write the same file.

use std::path::{Path, PathBuf};

use crate::IoError;

/// One shard of a job: every `count`-th input starting at `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based, below `count`.
    pub index: usize,
    /// How many shards the job is split into (at least 1).
    pub count: usize,
}

impl Shard {
    /// The whole job.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether the input at `position` in the job's order belongs to this shard.
    pub fn takes(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N` with 0 <= I < N (a Kubernetes Indexed Job's `$JOB_COMPLETION_INDEX/N`, a Slurm array's
    /// `$SLURM_ARRAY_TASK_ID/N` for arrays starting at 0).
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("shard `{s}` must be I/N with 0 <= I < N, such as 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// The largest list file read: a path per line, so millions of inputs fit well within it.
pub const MAX_LIST_BYTES: u64 = 256 << 20;

/// The job's inputs in its order: the files of a directory whose names `accept` takes, sorted by name
/// (hidden files, such as other runs' temporary outputs, left out), or the paths a list file names, one per
/// line, relative ones taken from the list's directory, blank lines and `#` comments skipped.
pub fn inputs(
    path: &Path,
    list: bool,
    accept: &dyn Fn(&Path) -> bool,
) -> Result<Vec<PathBuf>, IoError> {
    if list {
        let len = std::fs::metadata(path)
            .map_err(|e| IoError::new(path, e))?
            .len();
        if len > MAX_LIST_BYTES {
            return Err(IoError::new(
                path,
                format!("a list of {len} bytes is above the limit of {MAX_LIST_BYTES}"),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| IoError::new(path, e))?;
        let base = path.parent().unwrap_or(Path::new(""));
        return Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| base.join(l))
            .collect());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| IoError::new(path, e))? {
        let p = entry.map_err(|e| IoError::new(path, e))?.path();
        let hidden = p
            .file_name()
            .is_none_or(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && p.is_file() && accept(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// One input and where its output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The input file.
    pub input: PathBuf,
    /// Its output file.
    pub output: PathBuf,
}

/// The shard's items: each input's output is `out_dir/<stem>.<ext>`. Two inputs of the job (any shard)
/// that would share an output are an error, found before any work, so shards never race on a file.
pub fn plan(
    inputs: &[PathBuf],
    out_dir: &Path,
    ext: &str,
    shard: Shard,
) -> Result<Vec<Item>, IoError> {
    let mut seen = std::collections::HashMap::new();
    let mut items = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let stem = input
            .file_stem()
            .ok_or_else(|| IoError::new(input, "has no file name"))?;
        let mut name = stem.to_os_string();
        name.push(".");
        name.push(ext);
        let output = out_dir.join(name);
        if output == *input {
            return Err(IoError::new(
                input,
                "its output would replace it: choose another output directory",
            ));
        }
        if let Some(other) = seen.insert(output.clone(), input.clone()) {
            return Err(IoError::new(
                &output,
                format!(
                    "both {} and {} would write it",
                    other.display(),
                    input.display()
                ),
            ));
        }
        if shard.takes(i) {
            items.push(Item {
                input: input.clone(),
                output,
            });
        }
    }
    Ok(items)
}

/// A shard's work, ready to run: the job's inputs whose names end in one of `accept` (a directory, or a
/// list file when `list`), the output directory created, and the shard's items planned. Returns the job's
/// input count beside the items.
pub fn prepare(
    input: &Path,
    list: bool,
    out_dir: &Path,
    accept: &[&str],
    ext: &str,
    shard: Shard,
) -> Result<(usize, Vec<Item>), IoError> {
    let accepted = |p: &Path| {
        let name = p.to_string_lossy().to_ascii_lowercase();
        accept.iter().any(|a| name.ends_with(&format!(".{a}")))
    };
    let all = inputs(input, list, &accepted)?;
    std::fs::create_dir_all(out_dir).map_err(|e| IoError::new(out_dir, e))?;
    Ok((all.len(), plan(&all, out_dir, ext, shard)?))
}

/// What happened to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its output was written.
    Done,
    /// Its output already existed (an earlier run finished it).
    Skipped,
    /// The work failed with this message; nothing was left at the output.
    Failed(String),
}

/// The counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Inputs encoded in this run.
    pub done: usize,
    /// Inputs whose output already existed.
    pub skipped: usize,
    /// Each failed input and why.
    pub failed: Vec<(PathBuf, String)>,
}

/// The temporary name an output is written under: hidden, marked with the process id so two processes
/// never share one, and with the output's extension, since writers choose the format by it.
pub fn temporary(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let (stem, ext) = match name.split_once('.') {
        Some((s, e)) => (s.to_string(), format!(".{e}")),
        None => (name.clone(), String::new()),
    };
    output.with_file_name(format!(".{stem}.part-{}{ext}", std::process::id()))
}

/// Runs `work(item, temporary_path)` for each item whose output does not exist yet, renames the temporary
/// file into place when the work succeeds and removes it when it fails, and tells `report` each outcome.
/// A failure does not stop the run: a dataset job finishes what it can and lists the rest.
pub fn run<E: std::fmt::Display>(
    items: &[Item],
    mut work: impl FnMut(&Item, &Path) -> Result<(), E>,
    mut report: impl FnMut(&Item, &Outcome),
) -> Summary {
    let mut summary = Summary::default();
    for item in items {
        let outcome = if item.output.exists() {
            Outcome::Skipped
        } else {
            let tmp = temporary(&item.output);
            let result = work(item, &tmp)
                .map_err(|e| e.to_string())
                .and_then(|()| std::fs::rename(&tmp, &item.output).map_err(|e| e.to_string()));
            match result {
                Ok(()) => Outcome::Done,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Outcome::Failed(e)
                }
            }
        };
        match &outcome {
            Outcome::Done => summary.done += 1,
            Outcome::Skipped => summary.skipped += 1,
            Outcome::Failed(e) => summary.failed.push((item.input.clone(), e.clone())),
        }
        report(item, &outcome);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        assert_eq!("1/4".parse(), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1/0", "a/2", "1", "-1/2", "1/2/3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        for p in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.takes(p)).count(), 1);
        }
    }

    #[test]
    fn temporaries_keep_the_extension_and_hide() {
        let t = temporary(Path::new("/o/cat.codes.npy"));
        let name = t.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".cat.part-") && name.ends_with(".codes.npy"),
            "{name}"
        );
    }
}
