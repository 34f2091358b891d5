//! Batch jobs split across machines (`wring encode|decode DIR --shard I/N`, `wring vq encode`): shards cover
//! every input exactly once, outputs appear only when complete, a rerun skips what is done and retries
//! only what failed, and inputs that would collide are refused before any work. The codec runs for real.

use std::path::{Path, PathBuf};

use wring::codec::Image;
use wring::io::batch::{self, Item, Outcome, Shard};

/// A fresh directory under the target's scratch space.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("batch-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn png(dir: &Path, name: &str, seed: u8) {
    let (w, h) = (24, 16);
    let pixels = (0..w * h * 3)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect();
    let img = Image {
        width: w,
        height: h,
        channels: 3,
        pixels,
    };
    wring::codec::io::write_image(&dir.join(name), &img).unwrap();
}

#[test]
fn shards_encode_every_image_once_and_a_rerun_skips_the_done_ones() {
    let input = scratch("in");
    let out = scratch("out");
    for (i, n) in ["a.png", "b.png", "c.png", "d.png", "e.png"]
        .iter()
        .enumerate()
    {
        png(&input, n, i as u8 + 3);
    }
    // Not an input: another extension, and another run's hidden temporary file.
    std::fs::write(input.join("notes.txt"), "x").unwrap();
    std::fs::write(input.join(".a.part-1.png"), "x").unwrap();
    let accept = |p: &Path| p.extension().is_some_and(|e| e == "png");
    let inputs = batch::inputs(&input, false, &accept).unwrap();
    assert_eq!(inputs.len(), 5);
    let ctx = wring::runtime::Context::new(Default::default()).unwrap();
    let opts = wring::codec::Options::default();
    let encode = |item: &Item, tmp: &Path| -> Result<(), wring::codec::CodecError> {
        let img = wring::codec::io::read_image(&item.input)?;
        let bytes = wring::codec::encode_image(&ctx, &img, &opts)?;
        std::fs::write(tmp, bytes).map_err(|e| wring::codec::CodecError::Io(e.to_string()))
    };
    let mut covered = Vec::new();
    for index in 0..3 {
        let shard = Shard { index, count: 3 };
        let items = batch::plan(&inputs, &out, "wrg", shard).unwrap();
        covered.extend(items.iter().map(|i| i.output.clone()));
        let s = batch::run(&items, encode, |_, _| {});
        assert_eq!((s.done, s.skipped, s.failed.len()), (items.len(), 0, 0));
    }
    covered.sort();
    covered.dedup();
    assert_eq!(covered.len(), 5, "the shards cover every input once");
    assert_eq!(names(&out), ["a.wrg", "b.wrg", "c.wrg", "d.wrg", "e.wrg"]);
    for n in names(&out) {
        let bytes = std::fs::read(out.join(&n)).unwrap();
        assert!(matches!(
            wring::codec::decode(&ctx, &bytes).unwrap(),
            wring::codec::Decoded::Image(_)
        ));
    }
    // The whole job again: everything is skipped, nothing rewritten.
    let items = batch::plan(&inputs, &out, "wrg", Shard::ALL).unwrap();
    let s = batch::run(
        &items,
        |_, _| -> Result<(), String> { panic!("redone") },
        |_, _| {},
    );
    assert_eq!((s.done, s.skipped), (0, 5));
}

#[test]
fn a_failed_input_leaves_nothing_and_is_retried_alone() {
    let dir = scratch("fail");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    // A list file, in its own order, with a comment and a blank line.
    std::fs::write(dir.join("one.wav"), "").unwrap();
    std::fs::write(dir.join("two.wav"), "").unwrap();
    std::fs::write(dir.join("jobs.txt"), "# inputs\ntwo.wav\n\none.wav\n").unwrap();
    let inputs = batch::inputs(&dir.join("jobs.txt"), true, &|_| true).unwrap();
    assert_eq!(inputs, [dir.join("two.wav"), dir.join("one.wav")]);
    let items = batch::plan(&inputs, &out, "wrg", Shard::ALL).unwrap();
    let mut seen = Vec::new();
    let s = batch::run(
        &items,
        |item, tmp| {
            // Each writes its temporary file; `two` then fails, as a crash mid-file would.
            std::fs::write(tmp, "partial").unwrap();
            if item.input.ends_with("two.wav") {
                Err("broken input")
            } else {
                Ok(())
            }
        },
        |item, o| seen.push((item.input.clone(), o.clone())),
    );
    assert_eq!(s.done, 1);
    assert_eq!(
        s.failed,
        [(dir.join("two.wav"), "broken input".to_string())]
    );
    assert!(matches!(seen[0].1, Outcome::Failed(_)));
    assert_eq!(
        names(&out),
        ["one.wrg"],
        "no partial or temporary file is left"
    );
    let s = batch::run(&items, |_, tmp| std::fs::write(tmp, "ok"), |_, _| {});
    assert_eq!((s.done, s.skipped), (1, 1));
    assert_eq!(names(&out), ["one.wrg", "two.wrg"]);
}

#[test]
fn colliding_outputs_and_bad_shards_are_refused_before_any_work() {
    let dir = scratch("collide");
    for n in ["x.png", "x.jpg"] {
        std::fs::write(dir.join(n), "").unwrap();
    }
    let inputs = batch::inputs(&dir, false, &|_| true).unwrap();
    let e = batch::plan(&inputs, &dir.join("out"), "wrg", Shard::ALL).unwrap_err();
    assert!(e.to_string().contains("would write it"), "{e}");
    // Writing into the input directory with the input's own name is refused too.
    let e = batch::plan(&inputs[..1], &dir, "jpg", Shard::ALL).unwrap_err();
    assert!(e.to_string().contains("replace it"), "{e}");
    for bad in ["2/2", "0/0", "1", "x/3"] {
        let e = bad.parse::<Shard>().unwrap_err();
        assert!(e.contains("I/N"), "{e}");
    }
    assert!(batch::inputs(&dir.join("missing"), false, &|_| true).is_err());
    assert!(batch::inputs(&dir.join("missing.txt"), true, &|_| true).is_err());
}
