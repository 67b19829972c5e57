//! The status page in headless Chromium: the DOM the browser builds shows
//! the breach, the running job's progress, the drill over its target and
//! the alerts; text is escaped; nothing overflows sideways at phone (390
//! px) or desktop (1280 px) width; the screenshots are not blank.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use holdfast_daemon::{alerts, example, page};

/// Run headless Chromium with `args` and a profile of its own.
fn chromium(profile: &Path, args: &[&str]) -> Output {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("chromium is needed for the status page test: apt-get install chromium (scripts/test.sh does)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn png_width(png: &[u8]) -> u32 {
    assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]), "not a PNG");
    let w = png.get(16..20).expect("IHDR");
    u32::from_be_bytes([w[0], w[1], w[2], w[3]])
}

/// Render `html` to a file and check it in Chromium; returns the DOM.
pub fn check_in_chromium(dir: &Path, html: &str) -> String {
    for bad in ["<script", "<link", " src=", "url(", "@import"] {
        assert!(!html.contains(bad), "the page contains {bad:?}");
    }
    let file = dir.join("status.html");
    fs::write(&file, html).unwrap();
    let profile = dir.join("chromium-profile");
    let url = format!("file://{}", file.display());
    let dom =
        String::from_utf8_lossy(&chromium(&profile, &["--dump-dom", &url]).stdout).to_string();
    for width in [390, 1280] {
        let wrap = dir.join(format!("wrap{width}.html"));
        fs::write(
            &wrap,
            format!(
                "<html><body><iframe id=\"f\" src=\"{url}\" style=\"width:{width}px;height:900px;border:0\"></iframe>\
                 <script>document.getElementById('f').onload=function(){{var e=this.contentDocument.documentElement;\
                 document.body.setAttribute('data-overflow',e.scrollWidth-e.clientWidth);}};</script></body></html>"
            ),
        )
        .unwrap();
        let out = chromium(
            &profile,
            &[
                "--allow-file-access-from-files",
                "--virtual-time-budget=5000",
                "--dump-dom",
                &format!("file://{}", wrap.display()),
            ],
        );
        let d = String::from_utf8_lossy(&out.stdout);
        assert!(
            d.contains("data-overflow=\"0\""),
            "the page is wider than {width}px: {}",
            d.lines()
                .find(|l| l.contains("data-overflow"))
                .unwrap_or("(not measured)")
        );
    }
    let blank = dir.join("blank.html");
    fs::write(&blank, "<html><body></body></html>").unwrap();
    for width in [390u32, 1280] {
        let shot = |page: &Path, name: &str| -> Vec<u8> {
            let png = dir.join(name);
            chromium(
                &profile,
                &[
                    &format!("--window-size={width},1600"),
                    &format!("--screenshot={}", png.display()),
                    &format!("file://{}", page.display()),
                ],
            );
            fs::read(&png).unwrap()
        };
        let status = shot(&file, &format!("status{width}.png"));
        let empty = shot(&blank, &format!("blank{width}.png"));
        assert_eq!(png_width(&status), width);
        assert!(
            status.len() > 4 * empty.len(),
            "the {width}px screenshot looks blank ({} bytes; a blank page is {})",
            status.len(),
            empty.len()
        );
    }
    dom
}

#[test]
fn status_page_renders_in_chromium() {
    let mut v = example::view();
    v.jobs[0].name = "<script>alert(1)</script>".into();
    v.daemon.config_error = Some("holdfast.toml:12:9: unknown key \"rpoo\"".into());
    v.alerts = alerts::evaluate(&v, v.generated_at.unwrap());
    let dir = tempfile::tempdir().unwrap();
    if let Ok(keep) = std::env::var("HOLDFAST_KEEP_PAGE") {
        // For looking at the screenshots by hand.
        fs::write(Path::new(&keep), page::render(&v)).unwrap();
    }
    let dom = check_in_chromium(dir.path(), &page::render(&v));
    assert!(
        dom.contains("data-source=\"docs\" data-breached=\"true\""),
        "{dom}"
    );
    assert!(dom.contains("data-source=\"ehr-db\" data-breached=\"false\""));
    assert!(dom.contains("RPO breached"));
    assert!(dom.contains("data-running=\"true\""));
    assert!(dom.contains("role=\"progressbar\" aria-valuenow=\"38\""));
    assert!(dom.contains("data-playbook=\"ehr\" data-passed=\"false\""));
    assert!(dom.contains("class=\"rto over\""));
    assert!(dom.contains("id=\"config-error\""));
    assert_eq!(
        dom.matches("class=\"alert\"").count(),
        v.alerts.len(),
        "one line per alert"
    );
    assert!(dom.contains("data-kind=\"check-failed\""));
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "escaped"
    );
    assert!(!dom.contains("<script>alert(1)"));
}
