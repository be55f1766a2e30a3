//! Runs every fuzz target body on stable Rust, without libFuzzer: each target gets its seeds, then a seeded
//! stream of random inputs and of seeds mutated the way libFuzzer's simplest mutators do (bit flips, byte
//! edits, insertions, deletions, truncations, splices, interesting values). A failed check panics, which
//! ends the run with a non-zero exit and the offending input in hex.
//!
//! `smoke [ITERATIONS_PER_TARGET] [SEED]` (defaults 20000 and 1); CI runs it as the fuzz smoke.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Instant;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b" ",
    b"\n",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"99999999999999999999",
    b"v1,",
    b"whsec_",
    b"=",
    b"\xff",
    b"\xc3\x28",
    b"accr_",
    b"event_type",
    b"ACCOUNTING_RECORD_READY_FOR_EXPORT",
    b"[[rule]]",
    b"[ifs]",
    b"\"\"\"",
    b"'",
    b"0.0000000000000000000000000001",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                input.drain(start..end);
            }
            4 => input.truncate(rng.below(len + 1)),
            5 => {
                let token = INTERESTING[rng.below(INTERESTING.len())];
                let i = rng.below(len + 1);
                input.splice(i..i, token.iter().copied());
            }
            6 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(64)).min(other.len());
                let at = rng.below(len + 1);
                input.splice(at..at, other[from..to].iter().copied());
            }
            _ if len > 1 => {
                // Duplicate a chunk: repeated structure is how nesting and long lists arise.
                let start = rng.below(len);
                let end = (start + 1 + rng.below(32)).min(len);
                let chunk = input[start..end].to_vec();
                input.splice(end..end, chunk);
            }
            _ => input.push(rng.next() as u8),
        }
    }
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok()).filter_map(|e| std::fs::read(e.path()).ok()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let iterations: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut total = 0usize;
    for (name, target) in connector_fuzz::TARGETS {
        let corpus = seeds(name);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let started = Instant::now();
        let mut pool: Vec<Vec<u8>> = corpus.clone();
        for i in 0..iterations + corpus.len() {
            let input = if i < corpus.len() {
                corpus[i].clone()
            } else if rng.below(8) == 0 || pool.is_empty() {
                (0..rng.below(256)).map(|_| rng.next() as u8).collect()
            } else {
                let mut input = pool[rng.below(pool.len())].clone();
                mutate(&mut rng, &mut input, &corpus);
                input
            };
            if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                eprintln!("{name}: failed on input #{i} ({} bytes): {}", input.len(), hex(&input));
                std::process::exit(1);
            }
            // Keep some mutants around so mutations compound (a crude stand-in for coverage feedback).
            if pool.len() < 4096 && rng.below(16) == 0 {
                pool.push(input);
            }
            total += 1;
        }
        println!("{name:<14} {:>9} inputs in {:>6.1?}, no failure", iterations + corpus.len(), started.elapsed());
    }
    println!("total          {total:>9} inputs");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
