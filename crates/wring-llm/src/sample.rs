//! Choosing the next token from logits: greedy at temperature 0, otherwise temperature, top-k, top-p and
//! min-p filtering and a seeded draw, so a run can be repeated exactly.

/// Sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampler {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0: none).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of tokens already seen by this (1: off).
    pub repeat_penalty: f32,
    /// Seed of the draw.
    pub seed: u64,
    state: u64,
}

impl Sampler {
    /// A sampler with these settings, checked: the temperature finite and not negative, `top_p` in
    /// (0, 1], `min_p` in [0, 1], the repeat penalty finite and positive. These come from command lines and
    /// API requests, and a NaN among them would otherwise filter out every candidate or none.
    pub fn new(
        temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        seed: u64,
    ) -> Result<Sampler, crate::LlmError> {
        let bad = |what: &str, v: f32, want: &str| {
            Err(crate::LlmError::Request(format!(
                "sampling: {what} = {v} must be {want}"
            )))
        };
        if !(temperature.is_finite() && temperature >= 0.0) {
            return bad("temperature", temperature, "finite and at least 0");
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return bad("top_p", top_p, "in (0, 1]");
        }
        if !(0.0..=1.0).contains(&min_p) {
            return bad("min_p", min_p, "in [0, 1]");
        }
        if !(repeat_penalty.is_finite() && repeat_penalty > 0.0) {
            return bad("repeat_penalty", repeat_penalty, "finite and above 0");
        }
        Ok(Sampler {
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        })
    }

    /// Greedy decoding.
    pub fn greedy() -> Sampler {
        Sampler::new(0.0, 0, 1.0, 0.0, 1.0, 0).expect("greedy settings are valid")
    }

    fn uniform(&mut self) -> f64 {
        // xorshift64*: enough for sampling, and reproducible from the seed.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next token given the logits and the tokens seen so far. NaN and infinite logits are never
    /// chosen; when no logit is finite (or there are none) this is an error, not a panic.
    pub fn sample(&mut self, logits: &[f32], seen: &[u32]) -> Result<u32, crate::LlmError> {
        let mut l: Vec<f32> = logits.to_vec();
        if self.repeat_penalty != 1.0 {
            for &t in seen {
                if let Some(v) = l.get_mut(t as usize) {
                    *v = if *v > 0.0 {
                        *v / self.repeat_penalty
                    } else {
                        *v * self.repeat_penalty
                    };
                }
            }
        }
        let mut cand: Vec<(usize, f32)> = l
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .collect();
        if cand.is_empty() {
            return Err(crate::LlmError::NonFinite(format!(
                "none of the {} logits is finite",
                l.len()
            )));
        }
        if self.temperature <= 0.0 {
            // Greedy: the first of the largest finite logits, as llama.cpp's greedy sampler picks.
            let best = cand
                .iter()
                .fold(cand[0], |b, &c| if c.1 > b.1 { c } else { b });
            return Ok(best.0 as u32);
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.top_k > 0 {
            cand.truncate(self.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand
            .iter()
            .map(|&(_, v)| f64::from((v - max) / self.temperature).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        let mut keep = probs.len();
        if self.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= f64::from(self.top_p) {
                    keep = i + 1;
                    break;
                }
            }
        }
        if self.min_p > 0.0 {
            let floor = probs[0] * f64::from(self.min_p);
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        let total: f64 = probs[..keep].iter().sum();
        let mut r = self.uniform() * total;
        for i in 0..keep {
            r -= probs[i];
            if r <= 0.0 {
                return Ok(cand[i].0 as u32);
            }
        }
        Ok(cand[keep - 1].0 as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_first_maximum_and_sampling_repeats_with_the_seed() {
        assert_eq!(
            Sampler::greedy()
                .sample(&[0.1, 3.0, 3.0, -1.0], &[])
                .unwrap(),
            1
        );
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let draw = |seed| {
            let mut s = Sampler::new(0.8, 40, 0.95, 0.05, 1.1, seed).unwrap();
            (0..20)
                .map(|_| s.sample(&logits, &[3, 4]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // top_k = 1 is greedy whatever the temperature.
        let mut s = Sampler::new(1.5, 1, 1.0, 0.0, 1.0, 3).unwrap();
        let best = Sampler::greedy().sample(&logits, &[]).unwrap();
        assert!((0..10).all(|_| s.sample(&logits, &[]).unwrap() == best));
    }

    /// NaN and infinite logits are skipped; with none finite, or none at all, sampling is an error at any
    /// temperature, never a panic (NaN logits used to index an empty candidate list).
    #[test]
    fn non_finite_logits_are_errors_not_panics() {
        let nan = f32::NAN;
        for t in [0.0, 0.8] {
            let mut s = Sampler::new(t, 40, 0.95, 0.05, 1.1, 1).unwrap();
            assert_eq!(s.sample(&[nan, 1.0, f32::INFINITY, nan], &[0]).unwrap(), 1);
            for bad in [&[nan, nan][..], &[f32::INFINITY, f32::NEG_INFINITY], &[]] {
                let e = s.sample(bad, &[]).unwrap_err();
                assert!(matches!(e, crate::LlmError::NonFinite(_)), "{e}");
            }
        }
    }
}
