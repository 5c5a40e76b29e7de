//! A fuzz driver that builds on stable Rust (no libFuzzer, no sanitizers).
//!
//! ```text
//! fuzz_stable run <target> [--seconds N] [--seed S] [--corpus DIR] [--seeds DIR]...
//!                          [--artifacts DIR] [--max-len BYTES] [--timeout SECONDS]
//!                          [--keep-going]
//! fuzz_stable replay <target> <file or dir>...
//! fuzz_stable cmin <target> <out dir> <in dir>...
//! fuzz_stable show <file>...
//! ```
//!
//! `run` mutates inputs (bit flips, interesting bytes and float bit patterns, inserts,
//! deletes, splices) starting from the seed directories, for a fixed wall-clock budget. It
//! has no coverage instrumentation; its feedback is the harness's feature list (error
//! variant, data type, kinds of `p` and bounds, reachability, Newton passes, safeguard): an
//! input showing a new feature joins the corpus (written to `--corpus`). A failing input
//! (broken invariant or panic) is written to `--artifacts` as `crash-<hash>` and the run
//! stops with status 1 (with `--keep-going` it goes on, saving every failure, and exits
//! with status 1 at the end); an input running longer than `--timeout` is written as
//! `timeout-<hash>` and the process exits with status 2.
//!
//! `replay` runs stored inputs once (status 1 if any fails); `cmin` copies to `<out dir>`
//! the smallest inputs that together show every feature of the inputs in the `<in dir>`s;
//! `show` prints the case an input decodes to.

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clipresc_fuzz::harness;

/// Float bit patterns worth planting in inputs (little-endian, as the decoder reads them).
const F64_PATTERNS: [u64; 12] = [
    0x7ff8_0000_0000_0000, // NaN
    0x7ff0_0000_0000_0000, // inf
    0xfff0_0000_0000_0000, // -inf
    0x8000_0000_0000_0000, // -0.0
    0x0000_0000_0000_0001, // smallest subnormal
    0x000f_ffff_ffff_ffff, // largest subnormal
    0x0010_0000_0000_0000, // smallest normal
    0x7fef_ffff_ffff_ffff, // largest
    0x3ff0_0000_0000_0000, // 1.0
    0xbff0_0000_0000_0000, // -1.0
    0x3fe0_0000_0000_0000, // 0.5
    0x3cb0_0000_0000_0000, // epsilon
];
const F32_PATTERNS: [u32; 8] = [
    0x7fc0_0000,
    0x7f80_0000,
    0xff80_0000,
    0x8000_0000,
    0x0000_0001,
    0x0080_0000,
    0x7f7f_ffff,
    0x3f80_0000,
];
const BYTES: [u8; 12] = [0, 1, 2, 3, 0x0f, 0x10, 0x7f, 0x80, 0xfe, 0xff, 250, 255];

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
    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
}

fn hash(data: &[u8]) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], max_len: usize) {
    let rounds = 1 + rng.below(6);
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.byte();
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = BYTES[rng.below(BYTES.len())];
            }
            3 if len > 0 => {
                let i = rng.below(len);
                data[i] = data[i].wrapping_add(rng.below(9) as u8).wrapping_sub(4);
            }
            4 => {
                let i = rng.below(len + 1);
                let k = 1 + rng.below(16);
                let fresh: Vec<u8> = (0..k).map(|_| rng.byte()).collect();
                data.splice(i..i, fresh);
            }
            5 if len > 1 => {
                let i = rng.below(len);
                let k = 1 + rng.below((len - i).min(16));
                data.drain(i..i + k);
            }
            6 if len > 0 => {
                let i = rng.below(len);
                let k = 1 + rng.below((len - i).min(32));
                let copy = data[i..i + k].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, copy);
            }
            7 => {
                let bytes = F64_PATTERNS[rng.below(F64_PATTERNS.len())].to_le_bytes();
                overwrite(rng, data, &bytes);
            }
            8 => {
                let bytes = F32_PATTERNS[rng.below(F32_PATTERNS.len())].to_le_bytes();
                overwrite(rng, data, &bytes);
            }
            9 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let cut = rng.below(len + 1);
                    let from = rng.below(other.len());
                    data.truncate(cut);
                    data.extend_from_slice(&other[from..]);
                }
            }
            _ if len > 1 => data.truncate(rng.below(len)),
            _ => data.push(rng.byte()),
        }
    }
    data.truncate(max_len);
}

fn overwrite(rng: &mut Rng, data: &mut Vec<u8>, bytes: &[u8]) {
    let at = rng.below(data.len() + 1);
    if data.len() < at + bytes.len() {
        data.resize(at + bytes.len(), 0);
    }
    data[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Runs one input, turning a panic into a report.
fn run_one(target: &str, data: &[u8]) -> Result<Vec<u32>, String> {
    match catch_unwind(AssertUnwindSafe(|| harness::run(target, data))) {
        Ok(r) => r,
        Err(panic) => Err(format!(
            "panic: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string payload)".into())
        )),
    }
}

fn read_inputs(paths: &[PathBuf]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = fs::read_dir(p)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            files.sort();
            // skip the reports written next to artifacts
            let inputs = files
                .into_iter()
                .filter(|f| f.is_file() && f.extension().is_none_or(|e| e != "txt"));
            for f in inputs {
                if let Ok(b) = fs::read(&f) {
                    out.push((f, b));
                }
            }
        } else if let Ok(b) = fs::read(p) {
            out.push((p.clone(), b));
        }
    }
    out
}

fn write_artifact(dir: &Path, kind: &str, data: &[u8], report: &str) -> PathBuf {
    let _ = fs::create_dir_all(dir);
    let path = dir.join(format!("{kind}-{}", hash(data)));
    let _ = fs::write(&path, data);
    let _ = fs::write(path.with_extension("txt"), report);
    path
}

struct RunArgs {
    target: String,
    seconds: f64,
    seed: u64,
    corpus: Option<PathBuf>,
    seeds: Vec<PathBuf>,
    artifacts: PathBuf,
    max_len: usize,
    timeout: f64,
    keep_going: bool,
}

fn parse_run(args: &[String]) -> Result<RunArgs, String> {
    let target = args.first().ok_or("missing target")?.clone();
    let mut ra = RunArgs {
        target,
        seconds: 60.0,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        corpus: None,
        seeds: Vec::new(),
        artifacts: PathBuf::from("fuzz-artifacts"),
        max_len: 4096,
        timeout: 20.0,
        keep_going: false,
    };
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        if flag == "--keep-going" {
            ra.keep_going = true;
            continue;
        }
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || val.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--seconds" => ra.seconds = num()?,
            "--seed" => ra.seed = val.parse().map_err(|e| format!("--seed: {e}"))?,
            "--corpus" => ra.corpus = Some(PathBuf::from(val)),
            "--seeds" => ra.seeds.push(PathBuf::from(val)),
            "--artifacts" => ra.artifacts = PathBuf::from(val),
            "--max-len" => ra.max_len = num()? as usize,
            "--timeout" => ra.timeout = num()?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(ra)
}

fn now_ms(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

fn cmd_run(a: RunArgs) -> ExitCode {
    if !harness::TARGETS.contains(&a.target.as_str()) {
        eprintln!(
            "unknown target {:?}; targets: {:?}",
            a.target,
            harness::TARGETS
        );
        return ExitCode::from(64);
    }
    let mut rng = Rng(a.seed | 1);
    let mut dirs = a.seeds.clone();
    dirs.extend(a.corpus.clone());
    let mut seen: HashSet<u32> = HashSet::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for (path, data) in read_inputs(&dirs) {
        match run_one(&a.target, &data) {
            Ok(f) => {
                seen.extend(f);
                pool.push(data);
            }
            Err(report) => {
                eprintln!("seed input {} fails:\n{report}", path.display());
                return ExitCode::from(1);
            }
        }
    }
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    if let Some(c) = &a.corpus {
        let _ = fs::create_dir_all(c);
    }
    // watchdog: an input running longer than the timeout is saved and the process exits
    let t0 = Instant::now();
    let started = Arc::new(AtomicU64::new(u64::MAX));
    let current: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let (started, current) = (Arc::clone(&started), Arc::clone(&current));
        let (timeout_ms, artifacts) = ((a.timeout * 1000.0) as u64, a.artifacts.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            let s = started.load(Ordering::Acquire);
            if s != u64::MAX && now_ms(t0).saturating_sub(s) > timeout_ms {
                let data = current.lock().map(|d| d.clone()).unwrap_or_default();
                let path = write_artifact(&artifacts, "timeout", &data, "timeout");
                eprintln!("input ran over the timeout; saved to {}", path.display());
                std::process::exit(2);
            }
        });
    }
    let budget = Duration::from_secs_f64(a.seconds);
    let (mut execs, mut added, mut failures) = (0u64, 0usize, 0usize);
    let mut last_report = Instant::now();
    println!(
        "fuzz_stable {}: seed {}, {} seed inputs, {} features, budget {:.0} s",
        a.target,
        a.seed,
        pool.len(),
        seen.len(),
        a.seconds
    );
    while t0.elapsed() < budget {
        let mut data = if rng.below(16) == 0 {
            (0..rng.below(256)).map(|_| rng.byte()).collect()
        } else {
            pool[rng.below(pool.len())].clone()
        };
        mutate(&mut rng, &mut data, &pool, a.max_len);
        if let Ok(mut cur) = current.lock() {
            cur.clone_from(&data);
        }
        started.store(now_ms(t0), Ordering::Release);
        let res = run_one(&a.target, &data);
        started.store(u64::MAX, Ordering::Release);
        execs += 1;
        match res {
            Ok(features) => {
                let new = features.iter().filter(|f| !seen.contains(f)).count();
                if new > 0 {
                    seen.extend(features);
                    if let Some(c) = &a.corpus {
                        let _ = fs::write(c.join(hash(&data)), &data);
                    }
                    pool.push(data);
                    added += 1;
                }
            }
            Err(report) => {
                let path = write_artifact(&a.artifacts, "crash", &data, &report);
                eprintln!(
                    "INVARIANT VIOLATED after {execs} runs; input saved to {}\n{report}",
                    path.display()
                );
                failures += 1;
                if !a.keep_going {
                    return ExitCode::from(1);
                }
            }
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "  {:>5.0} s: {execs} runs ({:.0}/s), corpus {}, features {}",
                t0.elapsed().as_secs_f64(),
                execs as f64 / t0.elapsed().as_secs_f64(),
                pool.len(),
                seen.len()
            );
            let _ = std::io::stdout().flush();
        }
    }
    println!(
        "fuzz_stable {}: done, {execs} runs in {:.1} s ({:.0}/s), corpus {} (+{added}), \
         {} features, {failures} failures",
        a.target,
        t0.elapsed().as_secs_f64(),
        execs as f64 / t0.elapsed().as_secs_f64(),
        pool.len(),
        seen.len()
    );
    if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn cmd_replay(target: &str, paths: &[PathBuf]) -> ExitCode {
    let inputs = read_inputs(paths);
    let mut failed = 0;
    for (path, data) in &inputs {
        if let Err(report) = run_one(target, data) {
            failed += 1;
            eprintln!("{}: {report}\n", path.display());
        }
    }
    println!(
        "{target}: replayed {} inputs, {failed} failed",
        inputs.len()
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn cmd_cmin(target: &str, out: &Path, paths: &[PathBuf]) -> ExitCode {
    let mut inputs = read_inputs(paths);
    inputs.sort_by_key(|(_, d)| d.len());
    let mut shown: Vec<(usize, HashSet<u32>)> = Vec::new();
    for (k, (path, data)) in inputs.iter().enumerate() {
        match run_one(target, data) {
            Ok(features) => shown.push((k, features.into_iter().collect())),
            Err(report) => eprintln!("skipping failing input {}: {report}", path.display()),
        }
    }
    // greedy set cover: repeatedly keep the input showing the most features not yet covered
    // (the shorter one on ties)
    let all: HashSet<u32> = shown.iter().flat_map(|(_, f)| f.iter().copied()).collect();
    let mut covered: HashSet<u32> = HashSet::new();
    let mut keep = Vec::new();
    while covered.len() < all.len() {
        let best = shown
            .iter()
            .enumerate()
            .max_by_key(|(i, (_, f))| (f.difference(&covered).count(), usize::MAX - i))
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let (k, f) = shown.swap_remove(i);
        covered.extend(f);
        keep.push(k);
        shown.sort_by_key(|(k, _)| *k);
    }
    let _ = fs::create_dir_all(out);
    for &k in &keep {
        let data = &inputs[k].1;
        let _ = fs::write(out.join(hash(data)), data);
    }
    println!(
        "{target}: kept {} of {} inputs ({} features)",
        keep.len(),
        inputs.len(),
        all.len()
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fuzz_stable run <target> [options] | replay <target> <path>... | \
                 cmin <target> <out dir> <in dir>...";
    let paths = |from: usize| args[from..].iter().map(PathBuf::from).collect::<Vec<_>>();
    match args.first().map(String::as_str) {
        Some("run") => match parse_run(&args[1..]) {
            Ok(a) => cmd_run(a),
            Err(e) => {
                eprintln!("{e}\n{usage}");
                ExitCode::from(64)
            }
        },
        Some("show") if args.len() >= 2 => {
            for (path, data) in read_inputs(&paths(1)) {
                println!("{}:\n{}", path.display(), harness::describe(&data));
            }
            ExitCode::SUCCESS
        }
        Some("replay") if args.len() >= 3 => cmd_replay(&args[1], &paths(2)),
        Some("cmin") if args.len() >= 4 => cmd_cmin(&args[1], Path::new(&args[2]), &paths(3)),
        _ => {
            eprintln!("{usage}");
            ExitCode::from(64)
        }
    }
}
