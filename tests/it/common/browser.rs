//! Debian's `chromium`, headless, for what a person sees: the page as the
//! browser parsed it (`--dump-dom`) and a screenshot kept as a test
//! artefact in `target/tmp/artefacts/` (CI keeps that directory).
//! scripts/deps installs chromium; a machine without it fails the test
//! rather than skipping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where screenshots and pages are kept after the run.
pub fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artefacts");
    std::fs::create_dir_all(&dir).expect("artefacts directory");
    dir
}

/// Runs chromium headless on `url` with `args`, at most `secs` seconds;
/// its stdout.
fn chromium(url: &str, args: &[&str], secs: u64) -> String {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let profile = std::env::temp_dir().join(format!(
        "tollgate-chromium-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            // Root (CI) cannot use chromium's sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium runs (scripts/deps installs Debian's chromium)");
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&profile);
            panic!("chromium did not finish {url} within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("chromium output");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The document chromium built from the file at `page`.
pub fn dom(page: &Path) -> String {
    chromium(&format!("file://{}", page.display()), &["--dump-dom"], 60)
}

/// A full-width screenshot of the file at `page`, written to `png`.
pub fn screenshot(page: &Path, png: &Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(png);
    chromium(
        &format!("file://{}", page.display()),
        &[
            &format!("--screenshot={}", png.display()),
            &format!("--window-size={width},{height}"),
        ],
        60,
    );
    let bytes = std::fs::read(png).expect("chromium wrote the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "{} is not a PNG of a rendered page ({} bytes)",
        png.display(),
        bytes.len()
    );
}
