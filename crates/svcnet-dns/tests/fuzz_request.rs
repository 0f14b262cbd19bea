//! The fuzz target's function on stable Rust: every input of the stored corpus
//! (`fuzz/corpus/request`, seeds plus what cargo-fuzz found), then mutations of them from a fixed
//! seed (`FUZZ_ITERATIONS`, default 20,000; `FUZZ_SEED` to vary). Any panic is a failure; the
//! failing input is printed as hex.

use std::path::Path;

use svcnet_dns::fuzzing;

/// xorshift64*: a deterministic generator, enough to mutate bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir).expect("corpus dir").map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    inputs.sort();
    assert!(inputs.len() >= 20, "the corpus in {} is missing", dir.display());
    inputs
}

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = [0, 0xff, 0x3f, 0x40, 0xc0, 0x29, 0x21][rng.below(7)];
            }
            2 => {
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.next() as u8);
            }
            3 if !out.is_empty() => {
                let i = rng.below(out.len());
                out.truncate(i);
            }
            4 => {
                // Splice in a piece of another input.
                let other = &corpus[rng.below(corpus.len())];
                let (a, b) = (rng.below(other.len()), rng.below(other.len()));
                let i = rng.below(out.len() + 1);
                out.splice(i..i, other[a.min(b)..a.max(b)].iter().copied());
            }
            _ if out.len() > 13 => {
                // Duplicate a run (long names, repeated records).
                let a = 12 + rng.below(out.len() - 12);
                let b = a + rng.below((out.len() - a).min(64));
                let piece: Vec<u8> = out[a..b].to_vec();
                out.splice(a..a, piece);
            }
            _ => {}
        }
    }
    out
}

fn run(snapshot: &svcnet_dns::Snapshot, input: &[u8]) {
    let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
    if std::panic::catch_unwind(|| fuzzing::request(snapshot, input)).is_err() {
        panic!("request path panicked on input {hex}");
    }
}

#[test]
fn corpus_and_mutations() {
    let snapshot = fuzzing::snapshot();
    let corpus = corpus();
    for input in &corpus {
        run(&snapshot, input);
    }
    let iterations: usize = std::env::var("FUZZ_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let mut rng = Rng(std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_d115));
    for _ in 0..iterations {
        let pick = rng.below(corpus.len());
        let input = mutate(&mut rng, &corpus[pick], &corpus);
        run(&snapshot, &input);
    }
}
