//! The HTML report: one self-contained page an auditor reads (no
//! scripts, fonts, images or style sheets from elsewhere; the drill
//! report's style sheet, inlined, with a few additions): the overall
//! verdict, a summary line per control, then each control with its
//! clauses, finding, facts, inline SVG charts (backups per source
//! against the RPO, drill RTO against the target) and evidence tables.
//!
//! Every control is a `<section data-control="ID" data-status="...">`,
//! so a browser test (and a reader's tooling) finds each one and its
//! verdict in the DOM.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use holdfast_drill::duration::{measured, Human};
use holdfast_drill::html::{esc, STYLE};

use crate::{time, BackupLane, Chart, Control, DrillSeries, Report, Status, Table};

const EXTRA_STYLE: &str = r#"
.banner.attention { background: var(--warn); }
.summary { list-style: none; padding: 0; margin: 0 0 8px; border-top: 1px solid var(--line); }
.summary li { display: flex; gap: 10px; align-items: baseline; padding: 7px 4px; border-bottom: 1px solid var(--line); }
.summary a { color: var(--ink); text-decoration: none; flex: 1; min-width: 0; overflow-wrap: anywhere; }
.summary .refs { color: var(--mute); font-size: 13px; }
.pill.warn { background: var(--warn); }
.control { margin-top: 30px; }
.control h2 { display: flex; gap: 10px; align-items: baseline; }
.control h2 span:last-child { min-width: 0; overflow-wrap: anywhere; }
.legal, .control .refs, .criteria, h3 { overflow-wrap: anywhere; }
.control .refs { color: var(--mute); font-size: 13px; margin: -4px 0 8px; }
.finding { border-left: 4px solid var(--line); padding: 6px 12px; background: var(--bg); margin: 8px 0 12px; overflow-wrap: anywhere; }
.finding.pass { border-color: var(--ok); }
.finding.attention { border-color: var(--warn); background: #fff8e5; }
.finding.fail { border-color: var(--bad); background: #fff5f5; }
.criteria { color: var(--mute); font-size: 13px; margin: 6px 0 0; }
td { overflow-wrap: break-word; }
td.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
.empty { color: var(--mute); margin: 4px 0 12px; }
"#;

fn pill(s: Status) -> String {
    let (class, word) = match s {
        Status::Pass => ("ok", "PASS"),
        Status::Attention => ("warn", "ATTENTION"),
        Status::Fail => ("bad", "FAIL"),
    };
    format!(
        "<span class=\"pill {class}\" data-pill=\"{}\">{word}</span>",
        s.as_str()
    )
}

/// The page for `r`.
pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let word = match r.status {
        Status::Pass => "Every control passes",
        Status::Attention => "No control fails; some need attention",
        Status::Fail => "Controls FAIL",
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Compliance evidence: {word}</title><style>{STYLE}{EXTRA_STYLE}</style></head><body><main>"
    );
    let _ = write!(
        h,
        "<section class=\"banner {}\" id=\"overall\" data-status=\"{}\"><h1>{word}</h1>\
<p>Compliance evidence report · {} pass · {} attention · {} fail</p>\
<p>Repository <strong>{}</strong> · evaluated at {} · made {} on {}</p></section>",
        match r.status {
            Status::Pass => "passed",
            Status::Attention => "attention",
            Status::Fail => "failed",
        },
        r.status.as_str(),
        r.summary.pass,
        r.summary.attention,
        r.summary.fail,
        esc(&r.repository),
        time(&r.at),
        time(&r.generated_at),
        esc(&r.host),
    );
    if !r.warnings.is_empty() {
        h.push_str("<div class=\"misses\">");
        for w in &r.warnings {
            let _ = write!(h, "<p>{}</p>", esc(w));
        }
        h.push_str("</div>");
    }
    h.push_str("<h2>Controls</h2><ul class=\"summary\" id=\"summary\">");
    for c in &r.controls {
        let _ = write!(
            h,
            "<li data-summary=\"{id}\">{}<a href=\"#control-{id}\">{}<br><span class=\"refs\">{}</span></a></li>",
            pill(c.status),
            esc(&c.title),
            esc(&c.refs.join(" · ")),
            id = esc(&c.id),
        );
    }
    h.push_str("</ul>");
    for c in &r.controls {
        control(&mut h, c);
    }
    let _ = writeln!(
        h,
        "<p class=\"legal\">Every fact above was read from the backup repository {} (id {}) and the \
configuration, policy and playbook files given, at {}; records made after that instant were left \
out. The same report as JSON: <code>holdfast compliance report --report-json FILE</code> (schema version {}).</p>\
</main></body></html>",
        esc(&r.repository),
        esc(&r.repository_id),
        time(&r.at),
        r.version
    );
    h
}

fn control(h: &mut String, c: &Control) {
    let _ = write!(
        h,
        "<section class=\"control\" id=\"control-{id}\" data-control=\"{id}\" data-status=\"{st}\">\
<h2>{}<span>{}</span></h2><p class=\"refs\">{}</p><p class=\"finding {st}\">{}</p>",
        pill(c.status),
        esc(&c.title),
        esc(&c.refs.join(" · ")),
        esc(&c.finding),
        id = esc(&c.id),
        st = c.status.as_str(),
    );
    if !c.facts.is_empty() {
        h.push_str("<dl class=\"facts\">");
        for f in &c.facts {
            let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(&f.label), esc(&f.value));
        }
        h.push_str("</dl>");
    }
    for chart in &c.charts {
        match chart {
            Chart::Backups { from, to, sources } => backup_chart(h, *from, *to, sources),
            Chart::Drills { playbooks } => {
                for s in playbooks {
                    drill_chart(h, s);
                }
            }
        }
    }
    for t in &c.tables {
        table(h, t);
    }
    let _ = write!(
        h,
        "<p class=\"criteria\">Criteria: {}</p></section>",
        esc(&c.criteria)
    );
}

fn table(h: &mut String, t: &Table) {
    let _ = write!(h, "<h3>{}</h3>", esc(&t.title));
    if t.rows.is_empty() {
        let _ = write!(h, "<p class=\"empty\">{}</p>", esc(&t.empty));
        return;
    }
    let judged = t.rows.iter().any(|r| r.status.is_some());
    h.push_str("<div class=\"scroll\"><table><thead><tr>");
    if judged {
        h.push_str("<th></th>");
    }
    for c in &t.columns {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr></thead><tbody>");
    for r in &t.rows {
        match r.status {
            Some(s) => {
                let _ = write!(h, "<tr data-status=\"{}\"><td>{}</td>", s.as_str(), pill(s));
            }
            None if judged => h.push_str("<tr><td></td>"),
            None => h.push_str("<tr>"),
        }
        for cell in &r.cells {
            let _ = write!(h, "<td>{}</td>", esc(cell));
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></div>");
}

const GREEN: &str = "#1b7f3b";
const AMBER: &str = "#9a6700";
const RED: &str = "#b3261e";
const MUTE: &str = "#57606a";

fn colour(s: Status) -> &'static str {
    match s {
        Status::Pass => GREEN,
        Status::Attention => AMBER,
        Status::Fail => RED,
    }
}

/// A lane per source: a tick per backup, the stretches longer than the
/// source's RPO without a backup shaded red (up to the report's time).
fn backup_chart(h: &mut String, from: DateTime<Utc>, to: DateTime<Utc>, lanes: &[BackupLane]) {
    let (w, left, right, lane_h, top) = (480.0, 100.0, 8.0, 30.0, 10.0);
    let plot_w = w - left - right;
    let height = top + lane_h * lanes.len() as f64 + 34.0;
    let span = ((to - from).num_milliseconds() as f64).max(1.0);
    let x = |t: DateTime<Utc>| {
        left + ((t - from).num_milliseconds() as f64 / span).clamp(0.0, 1.0) * plot_w
    };
    let _ = write!(
        h,
        "<h3>Backups per source against the RPO</h3><svg class=\"chart\" id=\"backup-chart\" viewBox=\"0 0 {w} {height}\" role=\"img\" \
aria-label=\"Backups of {n} source(s) from {} to {}; red: longer than the RPO without a backup\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\">",
        time(&from),
        time(&to),
        n = lanes.len()
    );
    for (i, lane) in lanes.iter().enumerate() {
        let y = top + lane_h * i as f64;
        let mid = y + lane_h / 2.0;
        let name: String = if lane.source.chars().count() > 12 {
            format!("{}…", lane.source.chars().take(11).collect::<String>())
        } else {
            lane.source.clone()
        };
        let _ = write!(
            h,
            "<g class=\"backup-lane\" data-source=\"{src}\" data-status=\"{st}\"><title>{src}: {n} backup(s) in view; RPO {rpo}</title>\
<text x=\"{}\" y=\"{:.1}\" font-size=\"14\" text-anchor=\"end\" fill=\"{}\">{}</text>\
<line x1=\"{left}\" x2=\"{}\" y1=\"{mid:.1}\" y2=\"{mid:.1}\" stroke=\"#d0d7de\" stroke-width=\"1\"/>",
            left - 8.0,
            mid + 4.0,
            colour(lane.status),
            esc(&name),
            w - right,
            src = esc(&lane.source),
            st = lane.status.as_str(),
            n = lane.backups.len(),
            rpo = lane
                .rpo_seconds
                .map_or("none".to_string(), |r| Human(r).to_string()),
        );
        // Stretches over the RPO: from the window's start (or a backup)
        // to the next backup (or the report's time).
        if let Some(rpo) = lane.rpo_seconds {
            let rpo = chrono::Duration::seconds(rpo as i64);
            let mut prev: Option<DateTime<Utc>> = None;
            for t in lane.backups.iter().copied().chain(std::iter::once(to)) {
                let start = prev.unwrap_or(from);
                if t - start > rpo && (prev.is_some() || t == to) {
                    // Before the first backup in view nothing is known of
                    // what came earlier, so only later gaps are shaded
                    // (and the whole lane when there is no backup at all).
                    let late = start + rpo;
                    let _ = write!(
                        h,
                        "<rect class=\"rpo-gap\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{RED}\" fill-opacity=\"0.22\"/>",
                        x(late),
                        y + 5.0,
                        (x(t) - x(late)).max(1.0),
                        lane_h - 10.0
                    );
                }
                prev = Some(t);
            }
        }
        for t in &lane.backups {
            let _ = write!(
                h,
                "<rect class=\"backup-tick\" x=\"{:.1}\" y=\"{:.1}\" width=\"2\" height=\"{:.1}\" fill=\"{GREEN}\"/>",
                x(*t) - 1.0,
                y + 7.0,
                lane_h - 14.0
            );
        }
        h.push_str("</g>");
    }
    let base = top + lane_h * lanes.len() as f64;
    let _ = write!(
        h,
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{base:.1}\" y2=\"{base:.1}\" stroke=\"{MUTE}\" stroke-width=\"1\"/>\
<text x=\"{left}\" y=\"{:.1}\" font-size=\"12\" fill=\"{MUTE}\">{}</text>\
<text x=\"{}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\" fill=\"{MUTE}\">{} (report time)</text>\
<rect x=\"{left}\" y=\"{:.1}\" width=\"2\" height=\"10\" fill=\"{GREEN}\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"12\" fill=\"{MUTE}\">backup</text>\
<rect x=\"{}\" y=\"{:.1}\" width=\"14\" height=\"10\" fill=\"{RED}\" fill-opacity=\"0.22\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"12\" fill=\"{MUTE}\">no backup for longer than the RPO</text></svg>",
        w - right,
        base + 14.0,
        from.format("%Y-%m-%d %H:%M"),
        w - right,
        base + 14.0,
        to.format("%Y-%m-%d %H:%M"),
        base + 20.0,
        left + 6.0,
        base + 29.0,
        left + 70.0,
        base + 20.0,
        left + 88.0,
        base + 29.0,
    );
}

/// One playbook's drills: a bar per drill (oldest left) coloured by
/// outcome, the RTO target dashed (named above the plot when every
/// drill took a small part of it, as in the drill report).
fn drill_chart(h: &mut String, s: &DrillSeries) {
    let _ = write!(h, "<h3>RTO of the drills of {}</h3>", esc(&s.playbook));
    if s.drills.is_empty() {
        h.push_str("<p class=\"empty\">never drilled</p>");
        return;
    }
    let target = s.rto_target_seconds as f64;
    let longest = s.drills.iter().map(|d| d.rto_seconds).fold(0.0, f64::max);
    let target_on_scale = target <= longest * 4.0;
    let top = if target_on_scale {
        target.max(longest)
    } else {
        longest
    }
    .max(0.001)
        * 1.2;
    let (w, hgt, left, bottom, topm) = (480.0, 200.0, 54.0, 22.0, 24.0);
    let plot_w = w - left - 8.0;
    let plot_h = hgt - bottom - topm;
    let y = |v: f64| topm + plot_h - v / top * plot_h;
    let _ = write!(
        h,
        "<svg class=\"chart drill-chart\" data-playbook=\"{name}\" viewBox=\"0 0 {w} {hgt}\" role=\"img\" aria-label=\"RTO of {n} drill(s) of {name} against the target of {t}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\">",
        n = s.drills.len(),
        name = esc(&s.playbook),
        t = Human(s.rto_target_seconds)
    );
    for i in 0..=3 {
        let v = top * f64::from(i) / 3.0;
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#d0d7de\" stroke-width=\"1\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\" fill=\"{MUTE}\">{}</text>",
            w - 8.0,
            left - 6.0,
            y(v) + 4.0,
            measured(v),
            yy = y(v)
        );
    }
    let slot = plot_w / s.drills.len() as f64;
    let bar_w = (slot * 0.6).clamp(2.0, 36.0);
    for (i, d) in s.drills.iter().enumerate() {
        let bx = left + slot * i as f64 + (slot - bar_w) / 2.0;
        let c = match d.outcome.as_str() {
            "passed" => GREEN,
            // `Outcome::as_str` (a space), or the JSON form.
            "target missed" | "target-missed" => AMBER,
            _ => RED,
        };
        let v = d.rto_seconds.min(top);
        let _ = write!(
            h,
            "<rect class=\"rto-bar\" x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\" fill=\"{c}\"><title>{} {}: {} ({})</title></rect>",
            y(v),
            (topm + plot_h - y(v)).max(1.0),
            esc(&d.id),
            time(&d.started),
            measured(d.rto_seconds),
            esc(&d.outcome)
        );
    }
    if target_on_scale {
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"{RED}\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"14\" font-size=\"12\" text-anchor=\"end\" fill=\"{RED}\">RTO target {}</text>",
            w - 8.0,
            w - 8.0,
            Human(s.rto_target_seconds),
            ty = y(target)
        );
    } else {
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"14\" font-size=\"12\" text-anchor=\"end\" fill=\"{GREEN}\">RTO target {} is far above every drill</text>",
            w - 8.0,
            Human(s.rto_target_seconds)
        );
    }
    let _ = write!(
        h,
        "<text x=\"{left}\" y=\"{}\" font-size=\"12\" fill=\"{MUTE}\">oldest</text><text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\" fill=\"{MUTE}\">latest</text></svg>",
        hgt - 5.0,
        w - 8.0,
        hgt - 5.0
    );
}
