//! `slotguard demo --report FILE` end to end: a short demo run on a real
//! local cluster writes the HTML report, headless Chromium (Debian's
//! `chromium`; `make test` installs it) renders it to a PNG, and the PNG
//! shows the charts: not blank, and the goodput line's colour is on it.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::io::BufReader;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// A hang guard, not a speed check.
const DEMO_TIMEOUT: Duration = Duration::from_secs(600);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);
const CHROMIUM: &str = "/usr/bin/chromium";
/// The goodput line's colour in the charts (html.rs `GOODPUT`; no other
/// element of the page has it).
const GOODPUT: [u8; 3] = [31, 119, 180];

/// Chromium and every process it started (its own process group) die
/// with the test, also on panic.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// Render `html` to `png` (1200×2000) with headless Chromium.
fn screenshot(html: &Path, png: &Path, profile: &Path) {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} not found: the report test renders the page in headless Chromium; \
         install it with `make deps-chromium` (Debian's `chromium` package)"
    );
    let mut browser = Browser(
        Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1200,2000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", png.display()))
            .arg(format!("file://{}", html.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromium starts"),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = browser.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < BROWSER_TIMEOUT,
            "chromium did not finish within {BROWSER_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium exited with {status}");
}

/// Pixels of the PNG at `path` as RGB triples.
fn pixels(path: &Path) -> Vec<[u8; 3]> {
    let decoder = png::Decoder::new(BufReader::new(File::open(path).expect("the screenshot")));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a frame size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{info:?}");
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    buf[..info.buffer_size()]
        .chunks_exact(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect()
}

#[test]
fn the_html_report_renders_charts_in_a_browser() {
    let dir = tempfile::Builder::new()
        .prefix("slotguard-report-test")
        .tempdir()
        .unwrap();
    let html = dir.path().join("demo.html");
    let html_arg = html.to_str().unwrap();
    let out = common::run_json(
        &[
            "demo",
            "--json",
            "--phases",
            "primary-sigstop",
            "--seconds",
            "3",
            "--keys",
            "1000",
            "--report",
            html_arg,
        ],
        DEMO_TIMEOUT,
    );
    assert_eq!(out["phases"][0]["name"], "primary-sigstop", "{out}");

    // Self-contained: inline SVG, nothing to fetch, nothing to run.
    let page = std::fs::read_to_string(&html).expect("the report was written");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains("<h2 id=\"primary-sigstop\">"), "{page}");
    assert!(page.matches("<svg").count() >= 2, "a chart and a share bar");
    assert!(
        page.contains("goodput") && page.contains("fault at"),
        "{page}"
    );
    for banned in ["<script", "<link", "<img", "src=", "url(", "@import"] {
        assert!(!page.contains(banned), "the report contains {banned:?}");
    }

    let png = dir.path().join("demo.png");
    screenshot(&html, &png, &dir.path().join("profile"));
    let px = pixels(&png);
    assert_eq!(px.len(), 1200 * 2000);
    let non_white = px.iter().filter(|p| p.iter().any(|&c| c < 240)).count();
    assert!(
        non_white * 100 > px.len(),
        "the screenshot is nearly blank: {non_white} of {} pixels not white",
        px.len()
    );
    let goodput = px.iter().filter(|&&p| p == GOODPUT).count();
    assert!(
        goodput > 200,
        "the goodput line is not on the screenshot ({goodput} pixels of its colour)"
    );
}
