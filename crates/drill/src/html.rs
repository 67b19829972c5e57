//! The HTML report: one self-contained page (no scripts, fonts, images or
//! style sheets from elsewhere) that a compliance officer reads: pass or
//! fail at the top, the objectives against what was measured, the
//! snapshot and point in time used, each phase, every check, a chart of
//! the RTO across past drills of the playbook, and the site forecast.

use std::fmt::Write;

use crate::duration::{measured, Human};
use crate::forecast::Forecast;
use crate::report::{DrillReport, Outcome, RestoreReport};

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's style sheet (inlined); the compliance report builds on it.
pub const STYLE: &str = r#"
:root { --ok: #1b7f3b; --bad: #b3261e; --warn: #9a6700; --ink: #1f2328; --mute: #57606a; --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--ink); background: #fff; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 20px 48px; }
.banner { border-radius: 10px; padding: 18px 22px; color: #fff; margin-bottom: 20px; }
.banner.passed { background: var(--ok); }
.banner.failed { background: var(--bad); }
.banner.missed { background: var(--warn); }
.banner h1 { margin: 0; font-size: 28px; letter-spacing: .02em; }
.banner p { margin: 4px 0 0; opacity: .95; overflow-wrap: anywhere; }
h2 { font-size: 19px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 8px; overflow-wrap: anywhere; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
.facts dt { color: var(--mute); }
.facts dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.detail { overflow-wrap: anywhere; min-width: 14em; }
.pill { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 13px; font-weight: 600; color: #fff; white-space: nowrap; }
.pill.ok { background: var(--ok); } .pill.bad { background: var(--bad); }
.bar { height: 10px; background: #8250df; border-radius: 3px; min-width: 1px; }
.misses { border-left: 4px solid var(--bad); padding: 6px 12px; background: #fff5f5; margin: 10px 0; }
.misses p { margin: 2px 0; }
.chart { width: 100%; height: auto; max-width: 640px; display: block; }
.checks { border-top: 1px solid var(--line); margin: 6px 0 12px; }
.check { border-bottom: 1px solid var(--line); padding: 8px 4px; }
.check-head { display: flex; gap: 10px; align-items: baseline; }
.check-name { flex: 1; overflow-wrap: anywhere; }
.check-time { color: var(--mute); font-variant-numeric: tabular-nums; white-space: nowrap; }
.check-detail { margin: 3px 0 0 58px; color: #3d444d; overflow-wrap: anywhere; font-size: 14px; }
.legal { color: var(--mute); font-size: 13px; margin-top: 32px; }
@media (max-width: 600px) {
  main { padding: 14px 12px 32px; }
  .banner h1 { font-size: 22px; }
  .facts { grid-template-columns: 1fr; gap: 0 0; }
  .facts dd { margin-bottom: 6px; }
  th, td { padding: 5px 6px; }
  td.detail { min-width: 11em; }
  .check-detail { margin-left: 0; }
  .hide-narrow { display: none; }
}
"#;

fn pill(passed: bool, yes: &str, no: &str) -> String {
    if passed {
        format!("<span class=\"pill ok\">{yes}</span>")
    } else {
        format!("<span class=\"pill bad\">{no}</span>")
    }
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The page for `r`; `past` are the drills stored before (any playbook;
/// the chart uses those of the same playbook).
pub fn render(r: &DrillReport, past: &[DrillReport]) -> String {
    let mut h = String::new();
    let (class, word) = match r.outcome {
        Outcome::Passed => ("passed", "PASSED"),
        Outcome::TargetMissed => ("missed", "FAILED: target missed"),
        Outcome::CheckFailed => ("failed", "FAILED: check failed"),
        Outcome::Error => ("failed", "FAILED: did not complete"),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Restore drill {name}: {word}</title><style>{STYLE}</style></head><body><main>",
        name = esc(&r.playbook),
    );
    let _ = write!(
        h,
        "<section class=\"banner {class}\" id=\"outcome\" data-outcome=\"{o}\"><h1>{word}</h1>\
<p>Restore drill <strong>{name}</strong> · {started} · {dur}</p></section>",
        o = esc(r.outcome.as_str()),
        name = esc(&r.playbook),
        started = time(&r.started),
        dur = measured((r.finished - r.started).num_milliseconds() as f64 / 1000.0),
    );
    let misses = r.misses();
    if !misses.is_empty() || r.error.is_some() {
        h.push_str("<div class=\"misses\">");
        if let Some(e) = &r.error {
            let _ = write!(h, "<p>{}</p>", esc(e));
        }
        for m in &misses {
            let _ = write!(h, "<p>{}</p>", esc(m));
        }
        h.push_str("</div>");
    }
    // Objectives.
    h.push_str("<h2>Objectives</h2><div class=\"scroll\"><table id=\"objectives\"><thead><tr><th>Objective</th><th class=\"num\">Target</th><th class=\"num\">Measured</th><th>Result</th></tr></thead><tbody>");
    let _ = write!(
        h,
        "<tr><td>RTO (start to usable, checked data)</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
        Human(r.objectives.rto_seconds),
        measured(r.rto_seconds),
        pill(r.rto_met, "met", "missed")
    );
    let _ = write!(
        h,
        "<tr><td>RPO (age of the restored point)</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
        Human(r.objectives.rpo_seconds),
        r.rpo_seconds.map_or("-".into(), measured),
        pill(r.rpo_met, "met", "missed")
    );
    let _ = write!(
        h,
        "<tr><td>Timeout</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr></tbody></table></div>",
        Human(r.objectives.timeout_seconds),
        measured((r.finished - r.started).num_milliseconds() as f64 / 1000.0),
        pill(
            !r.error.as_deref().is_some_and(|e| e.starts_with("timed out")),
            "within",
            "exceeded"
        )
    );
    // The drill.
    h.push_str("<h2>Drill</h2><dl class=\"facts\">");
    let facts = [
        (
            "Drill id",
            if r.id.is_empty() {
                "not recorded".to_string()
            } else {
                r.id.clone()
            },
        ),
        ("Playbook", format!("{} ({})", r.playbook, r.playbook_file)),
        ("Host", r.host.clone()),
        ("Started", time(&r.started)),
        ("Finished", time(&r.finished)),
    ];
    for (k, v) in facts {
        let _ = write!(h, "<dt>{k}</dt><dd>{}</dd>", esc(&v));
    }
    if let Some(v) = &r.verification_record {
        let _ = write!(
            h,
            "<dt>Verification record</dt><dd>verified/{} (retention never purges the last verified snapshot)</dd>",
            esc(v)
        );
    }
    h.push_str("</dl>");
    for rs in &r.restores {
        restore_section(&mut h, rs);
    }
    h.push_str("<h2>RTO across drills</h2>");
    chart(&mut h, r, past);
    if let Some(f) = &r.forecast {
        forecast_section(&mut h, f);
    }
    h.push_str(
        "<p class=\"legal\">Evidence of contingency plan testing (HIPAA §164.308(a)(7)(ii)(D)): \
this drill restored backed-up data into a scratch environment, checked it and measured the recovery \
time and point against the objectives above. The drill record is stored, sealed, in the backup repository \
(<code>holdfast drill history</code>).</p></main></body></html>\n",
    );
    h
}

fn restore_section(h: &mut String, rs: &RestoreReport) {
    let _ = write!(
        h,
        "<h2>Restore: {}</h2><dl class=\"facts\">",
        esc(&rs.label)
    );
    let mut facts: Vec<(&str, String)> = vec![
        ("Source", format!("{} ({})", rs.source, rs.kind)),
        (
            "Snapshot",
            match (&rs.snapshot, &rs.snapshot_time) {
                (Some(id), Some(t)) => format!("{id} of {}", time(t)),
                _ => "none".into(),
            },
        ),
        (
            "Chosen by",
            match rs.seed {
                Some(s) => format!("{} (seed {s})", rs.pick),
                None => rs.pick.clone(),
            },
        ),
    ];
    if let Some(p) = &rs.requested_point {
        facts.push(("Requested point in time", time(p)));
    }
    if let Some(p) = &rs.restored_point {
        facts.push(("Restored point in time", time(p)));
    }
    facts.push(("Target", format!("{} {}", rs.target, rs.location)));
    facts.push((
        "Restored",
        format!("{} in {} files", size(rs.bytes), rs.files),
    ));
    if !rs.erasures_applied.is_empty() {
        facts.push(("Erasures re-applied", rs.erasures_applied.join(", ")));
    }
    for (k, v) in facts {
        let _ = write!(h, "<dt>{k}</dt><dd>{}</dd>", esc(&v));
    }
    h.push_str("</dl>");
    if let Some(e) = &rs.error {
        let _ = write!(h, "<div class=\"misses\"><p>{}</p></div>", esc(e));
    }
    if !rs.phases.is_empty() {
        let longest = rs.phases.iter().map(|p| p.seconds).fold(0.0, f64::max);
        h.push_str("<h3>Phases</h3><div class=\"scroll\"><table class=\"phases\"><thead><tr><th>Phase</th><th class=\"num\">Time</th><th class=\"hide-narrow\" style=\"width:40%\"></th><th class=\"hide-narrow\">How measured</th></tr></thead><tbody>");
        for p in &rs.phases {
            let pct = if longest > 0.0 {
                p.seconds / longest * 100.0
            } else {
                0.0
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"hide-narrow\"><div class=\"bar\" style=\"width:{pct:.1}%\"></div></td><td class=\"hide-narrow detail\">{}</td></tr>",
                esc(&p.name),
                measured(p.seconds),
                esc(p.note.as_deref().unwrap_or("stopwatch"))
            );
        }
        h.push_str("</tbody></table></div>");
    }
    h.push_str("<h3>Checks</h3><div class=\"checks\">");
    if rs.checks.is_empty() {
        h.push_str("<p class=\"check\">no check could run</p>");
    }
    for c in &rs.checks {
        let _ = write!(
            h,
            "<div class=\"check\" data-passed=\"{}\"><div class=\"check-head\">{}<span class=\"check-name\"><strong>{}</strong> {}</span><span class=\"check-time\">{}</span></div><div class=\"check-detail\">{}</div></div>",
            c.passed,
            pill(c.passed, "pass", "FAIL"),
            esc(&c.kind),
            esc(&c.name),
            measured(c.seconds),
            esc(&c.detail),
        );
    }
    h.push_str("</div>");
}

/// A bar per drill of this playbook (oldest left), coloured by outcome,
/// with the RTO target as a dashed line. When every drill took a small
/// part of the target, the scale follows the drills and the target is
/// named above the plot instead (bars of a few pixels would show nothing).
fn chart(h: &mut String, r: &DrillReport, past: &[DrillReport]) {
    let mut points: Vec<&DrillReport> = past
        .iter()
        .filter(|d| d.playbook == r.playbook && d.id != r.id)
        .collect();
    points.push(r);
    let skip = points.len().saturating_sub(30);
    let points = &points[skip..];
    let target = r.objectives.rto_seconds as f64;
    let longest = points.iter().map(|d| d.rto_seconds).fold(0.0, f64::max);
    let target_on_scale = target <= longest * 4.0;
    let top = if target_on_scale {
        target.max(longest)
    } else {
        longest
    }
    .max(0.001)
        * 1.2;
    let (w, hgt, left, bottom, topm) = (480.0, 230.0, 54.0, 26.0, 26.0);
    let plot_w = w - left - 8.0;
    let plot_h = hgt - bottom - topm;
    let y = |v: f64| topm + plot_h - v / top * plot_h;
    let _ = write!(
        h,
        "<svg class=\"chart\" id=\"rto-chart\" viewBox=\"0 0 {w} {hgt}\" role=\"img\" aria-label=\"RTO of the last {n} drills of {name} against the target of {t}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\">",
        n = points.len(),
        name = esc(&r.playbook),
        t = Human(r.objectives.rto_seconds)
    );
    for i in 0..=3 {
        let v = top * f64::from(i) / 3.0;
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d0d7de\" stroke-width=\"1\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\" fill=\"#57606a\">{}</text>",
            w - 8.0,
            left - 6.0,
            y(v) + 4.0,
            measured(v),
            y = y(v)
        );
    }
    let slot = plot_w / points.len().max(1) as f64;
    let bar_w = (slot * 0.6).clamp(2.0, 36.0);
    for (i, d) in points.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
        let colour = match d.outcome {
            Outcome::Passed => "#1b7f3b",
            Outcome::TargetMissed => "#9a6700",
            _ => "#b3261e",
        };
        let v = d.rto_seconds.min(top);
        let _ = write!(
            h,
            "<rect class=\"rto-bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{}: {} ({})</title></rect>",
            y(v),
            (topm + plot_h - y(v)).max(1.0),
            time(&d.started),
            measured(d.rto_seconds),
            d.outcome.as_str()
        );
    }
    if target_on_scale {
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"#b3261e\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/><line x1=\"{}\" x2=\"{}\" y1=\"12\" y2=\"12\" stroke=\"#b3261e\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"16\" font-size=\"12\" text-anchor=\"end\" fill=\"#b3261e\">RTO target {}</text>",
            w - 8.0,
            w - 150.0,
            w - 124.0,
            w - 8.0,
            Human(r.objectives.rto_seconds),
            ty = y(target)
        );
    } else {
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"16\" font-size=\"12\" text-anchor=\"end\" fill=\"#1b7f3b\">RTO target {} is far above every drill</text>",
            w - 8.0,
            Human(r.objectives.rto_seconds)
        );
    }
    let _ = write!(
        h,
        "<text x=\"{left}\" y=\"{}\" font-size=\"12\" fill=\"#57606a\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\" fill=\"#57606a\">this drill</text></svg>",
        hgt - 6.0,
        if points.len() > 1 { format!("{} drills ago", points.len() - 1) } else { String::new() },
        w - 8.0,
        hgt - 6.0
    );
}

fn forecast_section(h: &mut String, f: &Forecast) {
    h.push_str("<h2>Full-site RTO forecast</h2>");
    let verdict = match (f.site_rto_seconds, f.meets_site_rto) {
        (Some(t), Some(true)) => format!("Restoring everything now would take about {}: within the site RTO of {}.", measured(f.total_seconds), Human(t)),
        (Some(t), _) if !f.complete => format!("Restoring everything now would take at least {} (some sources were never drilled); the site RTO of {} is not shown to be met.", measured(f.total_seconds), Human(t)),
        (Some(t), _) => format!("Restoring everything now would take about {}: over the site RTO of {}.", measured(f.total_seconds), Human(t)),
        (None, _) => format!("Restoring everything now would take about {}{} (no site RTO in the playbook).", measured(f.total_seconds), if f.complete { "" } else { " at least" }),
    };
    let _ = write!(h, "<p id=\"forecast\">{}</p>", esc(&verdict));
    h.push_str("<div class=\"scroll\"><table><thead><tr><th>Source</th><th>Kind</th><th class=\"num\">Size</th><th class=\"num\">Forecast</th><th class=\"num hide-narrow\">Drills</th></tr></thead><tbody>");
    for s in &f.sources {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num hide-narrow\">{}</td></tr>",
            esc(&s.source),
            esc(&s.kind),
            size(s.bytes),
            s.seconds.map_or("never drilled".into(), measured),
            s.drills
        );
    }
    let _ = write!(
        h,
        "<tr><th>Total</th><th></th><th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"hide-narrow\"></th></tr></tbody></table></div>",
        size(f.sources.iter().map(|s| s.bytes).sum()),
        measured(f.total_seconds)
    );
}

fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
