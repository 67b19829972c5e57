//! The status page at `/`: one self-contained HTML document (inline CSS,
//! no script, no external asset) rendered from a [`StatusView`].
//!
//! What needs attention comes first: a failed config reload, then alerts
//! firing, then sources (an RPO breach stands out in colour and words, so
//! it reads in monochrome too), jobs with their next run, last result and
//! progress of running ones, the last drill per playbook with its RTO
//! against target, and repositories. Every text from the view is escaped.
//! Tables turn into stacked cards on narrow screens, so nothing scrolls
//! sideways on a phone. The page refreshes itself every 30 seconds.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::alerts::{human_seconds, kind_name};
use crate::view::{RunOutcome, StatusView};

/// Text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
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

fn time(t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => format!(
            "<time datetime=\"{}\">{}</time>",
            t.to_rfc3339(),
            t.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => "<span class=\"muted\">never</span>".into(),
    }
}

/// "in 3h 5m" / "12m 3s ago" relative to the page's time.
fn relative(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(t) = t else { return String::new() };
    let d = (t - now).num_seconds() as f64;
    if d >= 0.0 {
        format!("in {}", human_seconds(d))
    } else {
        format!("{} ago", human_seconds(-d))
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn outcome_word(o: RunOutcome) -> &'static str {
    match o {
        RunOutcome::Success => "success",
        RunOutcome::Failed => "failed",
        RunOutcome::TimedOut => "timed-out",
        RunOutcome::Interrupted => "interrupted",
        RunOutcome::Skipped => "skipped",
    }
}

const CSS: &str = r#"
:root{--bg:#f6f7f9;--card:#fff;--fg:#1d2330;--muted:#667085;--line:#e3e6eb;--ok:#1a7f37;--bad:#c62828;--warn:#b26a00;--accent:#2f5bd3}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;background:var(--bg);color:var(--fg)}
header{background:#1d2330;color:#fff;padding:14px 20px}
header h1{margin:0;font-size:20px;font-weight:600}
header p{margin:4px 0 0;color:#c9cfdb;font-size:13px;overflow-wrap:anywhere}
main{max-width:1180px;margin:0 auto;padding:16px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;margin:0 0 16px;padding:12px 16px}
h2{font-size:16px;margin:0 0 8px}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:7px 8px;border-top:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
th{font-size:12px;text-transform:uppercase;letter-spacing:.03em;color:var(--muted);border-top:0}
.muted{color:var(--muted)}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.ok{background:#e6f4ea;color:var(--ok)}
.bad{background:#fdecea;color:var(--bad)}
.warn{background:#fff4e0;color:var(--warn)}
.idle{background:#eef1f5;color:var(--muted)}
tr.breach td{background:#fff6f6}
tr.breach td:first-child{box-shadow:inset 4px 0 0 var(--bad)}
.banner{border-color:#f3b8b8;background:#fff6f6}
.banner h2{color:var(--bad)}
.alerts li{margin:4px 0;overflow-wrap:anywhere}
.progress{height:8px;background:#e8ebf0;border-radius:4px;overflow:hidden;margin-top:4px;max-width:220px}
.progress span{display:block;height:100%;background:var(--accent)}
.rto{height:8px;background:#e8ebf0;border-radius:4px;position:relative;margin-top:4px;max-width:220px}
.rto span{display:block;height:100%;border-radius:4px;background:var(--ok)}
.rto.over span{background:var(--bad)}
.err{color:var(--bad);font-size:13px;overflow-wrap:anywhere}
footer{color:var(--muted);font-size:12px;text-align:center;padding:0 16px 20px}
@media (max-width:720px){
 main{padding:10px}
 section{padding:10px 12px}
 table,tbody,tr,td{display:block;width:100%}
 thead{display:none}
 tr{border-top:1px solid var(--line);padding:6px 0}
 tr:first-child{border-top:0}
 td{border:0;padding:3px 0 3px 42%;position:relative;min-height:1.4em}
 td::before{content:attr(data-label);position:absolute;left:0;width:40%;color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.03em;padding-top:2px}
 tr.breach td:first-child{box-shadow:none}
 tr.breach{box-shadow:inset 4px 0 0 var(--bad);padding-left:8px}
}
"#;

/// A table row of labelled cells (labels show on narrow screens).
fn row(out: &mut String, class: &str, attrs: &str, cells: &[(&str, String)]) {
    let _ = write!(out, "<tr class=\"{class}\"{attrs}>");
    for (label, html) in cells {
        let _ = write!(out, "<td data-label=\"{}\">{html}</td>", escape(label));
    }
    out.push_str("</tr>\n");
}

fn head(out: &mut String, labels: &[&str]) {
    out.push_str("<table><thead><tr>");
    for l in labels {
        let _ = write!(out, "<th>{}</th>", escape(l));
    }
    out.push_str("</tr></thead><tbody>\n");
}

/// The whole page.
pub fn render(view: &StatusView) -> String {
    let now = view.generated_at.unwrap_or_else(Utc::now);
    let d = &view.daemon;
    let mut o = String::new();
    let title = if d.host.is_empty() {
        "Holdfast".to_string()
    } else {
        format!("Holdfast on {}", d.host)
    };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"30\">\
         <title>{}</title><style>{CSS}</style></head><body>\n",
        escape(&title)
    );
    let state = if view.alerts.is_empty() {
        "<span class=\"badge ok\">all good</span>".to_string()
    } else {
        format!(
            "<span class=\"badge bad\">{} alert{} firing</span>",
            view.alerts.len(),
            if view.alerts.len() == 1 { "" } else { "s" }
        )
    };
    let _ = write!(
        o,
        "<header><h1>{} {state}</h1><p>holdfast {} · pid {} · started {} · config {} · as of {}{}</p></header>\n<main>\n",
        escape(&title),
        escape(&d.program_version),
        d.pid,
        time(d.started_at),
        escape(&d.config_file),
        time(Some(now)),
        if d.stopping { " · <strong>stopping</strong>" } else { "" }
    );

    if let Some(e) = &d.config_error {
        let _ = writeln!(
            o,
            "<section class=\"banner\" id=\"config-error\"><h2>Configuration reload failed</h2>\
             <p>The previous configuration (loaded {}) stays in force.</p><pre class=\"err\" style=\"white-space:pre-wrap\">{}</pre></section>",
            time(d.config_loaded_at),
            escape(e)
        );
    }

    // Alerts.
    let _ = write!(
        o,
        "<section id=\"alerts\"{}><h2>Alerts firing ({})</h2>",
        if view.alerts.is_empty() {
            ""
        } else {
            " class=\"banner\""
        },
        view.alerts.len()
    );
    if view.alerts.is_empty() {
        o.push_str("<p class=\"muted\">None.</p>");
    } else {
        o.push_str("<ul class=\"alerts\">");
        for a in &view.alerts {
            let _ = write!(
                o,
                "<li class=\"alert\" data-kind=\"{}\"><span class=\"badge bad\">{}</span> <strong>{}</strong>: {} <span class=\"muted\">since {}</span></li>",
                kind_name(a.kind),
                kind_name(a.kind),
                escape(&a.subject),
                escape(&a.message),
                time(Some(a.since))
            );
        }
        o.push_str("</ul>");
    }
    o.push_str("</section>\n");

    // Sources.
    o.push_str("<section id=\"sources\"><h2>Sources</h2>");
    if view.sources.is_empty() {
        o.push_str("<p class=\"muted\">No sources configured.</p>");
    } else {
        head(
            &mut o,
            &["Source", "Last backup", "RPO age", "RPO", "State"],
        );
        for s in &view.sources {
            let age = s
                .rpo_age_seconds
                .map(human_seconds)
                .unwrap_or_else(|| "—".into());
            let state = if s.rpo_breached {
                "<span class=\"badge bad\">RPO breached</span>".to_string()
            } else if s.rpo_seconds.is_some() {
                "<span class=\"badge ok\">within RPO</span>".to_string()
            } else {
                "<span class=\"badge idle\">no RPO set</span>".to_string()
            };
            let anomaly = match &s.anomaly {
                Some(a) => format!(
                    "<br><span class=\"badge bad\">mass change</span> <span class=\"err\">{}</span>{}",
                    escape(&a.reason),
                    match (&a.held_snapshot, &a.hold) {
                        (Some(snap), Some(h)) => format!(
                            " <span class=\"muted\">hold {} on {}</span>",
                            escape(h),
                            escape(&snap.chars().take(8).collect::<String>())
                        ),
                        _ => String::new(),
                    }
                ),
                None => String::new(),
            };
            row(
                &mut o,
                if s.rpo_breached {
                    "source breach"
                } else {
                    "source"
                },
                &format!(
                    " data-source=\"{}\" data-breached=\"{}\"",
                    escape(&s.name),
                    s.rpo_breached
                ),
                &[
                    (
                        "Source",
                        format!(
                            "<strong>{}</strong> <span class=\"muted\">{}</span>",
                            escape(&s.name),
                            escape(&s.kind)
                        ),
                    ),
                    (
                        "Last backup",
                        format!(
                            "{}{}",
                            time(s.last_backup_at),
                            s.last_snapshot
                                .as_ref()
                                .map(|id| format!(
                                    " <span class=\"muted\">{}</span>",
                                    escape(&id.chars().take(8).collect::<String>())
                                ))
                                .unwrap_or_default()
                        ),
                    ),
                    (
                        "RPO age",
                        format!("<span class=\"rpo-age\">{}</span>", escape(&age)),
                    ),
                    (
                        "RPO",
                        s.rpo_seconds
                            .map(human_seconds)
                            .unwrap_or_else(|| "—".into()),
                    ),
                    ("State", format!("{state}{anomaly}")),
                ],
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>\n");

    // Jobs.
    o.push_str("<section id=\"jobs\"><h2>Jobs</h2>");
    if view.jobs.is_empty() {
        o.push_str("<p class=\"muted\">No jobs configured.</p>");
    } else {
        head(
            &mut o,
            &["Job", "Schedule", "Next run", "Last result", "Now"],
        );
        for j in &view.jobs {
            let (word, class) = match &j.last {
                Some(r) => (
                    outcome_word(r.outcome),
                    match r.outcome {
                        RunOutcome::Success => "ok",
                        RunOutcome::Failed | RunOutcome::TimedOut => "bad",
                        _ => "warn",
                    },
                ),
                None => ("not run yet", "idle"),
            };
            let mut last = format!("<span class=\"badge {class}\">{word}</span>");
            if let Some(r) = &j.last {
                let _ = write!(
                    last,
                    " {} <span class=\"muted\">({}, {} attempt{})</span>",
                    time(Some(r.finished_at)),
                    human_seconds(r.duration_seconds),
                    r.attempts,
                    if r.attempts == 1 { "" } else { "s" }
                );
                if let Some(s) = &r.summary {
                    let _ = write!(last, "<br><span class=\"muted\">{}</span>", escape(s));
                }
                if let Some(e) = &r.error {
                    let _ = write!(last, "<div class=\"err\">{}</div>", escape(e));
                }
            }
            let now_cell = match &j.running {
                Some(r) => {
                    let mut s = format!(
                        "<span class=\"badge warn\">running</span> {} <span class=\"muted\">attempt {}, since {}</span>",
                        escape(&r.phase),
                        r.attempt,
                        escape(&relative(r.started_at, now))
                    );
                    if r.bytes_total > 0 {
                        let p = (r.bytes_done as f64 / r.bytes_total as f64).clamp(0.0, 1.0);
                        let _ = write!(
                            s,
                            "<div class=\"progress\" role=\"progressbar\" aria-valuenow=\"{:.0}\" aria-valuemin=\"0\" aria-valuemax=\"100\"><span style=\"width:{:.1}%\"></span></div><span class=\"muted\">{} of {}</span>",
                            p * 100.0,
                            p * 100.0,
                            bytes(r.bytes_done),
                            bytes(r.bytes_total)
                        );
                    } else if r.bytes_done > 0 {
                        let _ = write!(
                            s,
                            " <span class=\"muted\">{} so far</span>",
                            bytes(r.bytes_done)
                        );
                    }
                    s
                }
                None => "<span class=\"muted\">idle</span>".into(),
            };
            let what = match (&j.source, &j.playbook) {
                (Some(s), _) => format!("{} of {}", j.kind, s),
                (None, Some(p)) => format!("{} of {}", j.kind, p),
                _ => j.kind.clone(),
            };
            row(
                &mut o,
                "job",
                &format!(
                    " data-job=\"{}\" data-last=\"{}\" data-running=\"{}\"",
                    escape(&j.name),
                    word,
                    j.running.is_some()
                ),
                &[
                    (
                        "Job",
                        format!(
                            "<strong>{}</strong><br><span class=\"muted\">{} → {}</span>",
                            escape(&j.name),
                            escape(&what),
                            escape(&j.repository)
                        ),
                    ),
                    (
                        "Schedule",
                        format!(
                            "<code>{}</code> <span class=\"muted\">{}</span>",
                            escape(&j.schedule),
                            escape(&j.timezone)
                        ),
                    ),
                    (
                        "Next run",
                        format!(
                            "{}<br><span class=\"muted\">{}</span>",
                            time(j.next_run),
                            escape(&relative(j.next_run, now))
                        ),
                    ),
                    ("Last result", last),
                    ("Now", now_cell),
                ],
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>\n");

    // Drills.
    if !view.drills.is_empty() {
        o.push_str("<section id=\"drills\"><h2>Recovery drills</h2>");
        head(&mut o, &["Playbook", "Last drill", "Result", "RTO", "RPO"]);
        for dr in &view.drills {
            let rto = match (dr.rto_seconds, dr.rto_target_seconds) {
                (Some(v), Some(t)) if t > 0.0 => {
                    let over = v > t;
                    format!(
                        "{} of {} target<div class=\"rto{}\"><span style=\"width:{:.1}%\"></span></div>",
                        human_seconds(v),
                        human_seconds(t),
                        if over { " over" } else { "" },
                        (v / t * 100.0).clamp(0.0, 100.0)
                    )
                }
                (Some(v), _) => human_seconds(v),
                _ => "—".into(),
            };
            let rpo = match (dr.rpo_seconds, dr.rpo_target_seconds) {
                (Some(v), Some(t)) => {
                    format!("{} of {} target", human_seconds(v), human_seconds(t))
                }
                (Some(v), None) => human_seconds(v),
                _ => "—".into(),
            };
            row(
                &mut o,
                "drill",
                &format!(
                    " data-playbook=\"{}\" data-passed=\"{}\"",
                    escape(&dr.playbook),
                    dr.passed
                ),
                &[
                    (
                        "Playbook",
                        format!(
                            "<strong>{}</strong>{}",
                            escape(&dr.playbook),
                            dr.drill_id
                                .as_ref()
                                .map(|i| format!(" <span class=\"muted\">{}</span>", escape(i)))
                                .unwrap_or_default()
                        ),
                    ),
                    ("Last drill", time(dr.at)),
                    (
                        "Result",
                        format!(
                            "<span class=\"badge {}\">{}</span>",
                            if dr.passed { "ok" } else { "bad" },
                            escape(&dr.outcome)
                        ),
                    ),
                    ("RTO", rto),
                    ("RPO", rpo),
                ],
            );
        }
        o.push_str("</tbody></table></section>\n");
    }

    // Repositories.
    if !view.repositories.is_empty() {
        o.push_str("<section id=\"repositories\"><h2>Repositories</h2>");
        head(
            &mut o,
            &[
                "Repository",
                "Stored",
                "Logical",
                "Dedup ratio",
                "Snapshots",
            ],
        );
        for r in &view.repositories {
            row(
                &mut o,
                "repository",
                "",
                &[
                    (
                        "Repository",
                        format!(
                            "<strong>{}</strong><br><span class=\"muted\">{}</span>",
                            escape(&r.name),
                            escape(&r.url)
                        ),
                    ),
                    (
                        "Stored",
                        r.stored_bytes.map(bytes).unwrap_or_else(|| "—".into()),
                    ),
                    (
                        "Logical",
                        r.logical_bytes.map(bytes).unwrap_or_else(|| "—".into()),
                    ),
                    (
                        "Dedup ratio",
                        r.dedup_ratio()
                            .map(|x| format!("{x:.2}×"))
                            .unwrap_or_else(|| "—".into()),
                    ),
                    (
                        "Snapshots",
                        r.snapshots
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "—".into()),
                    ),
                ],
            );
        }
        o.push_str("</tbody></table></section>\n");
    }
    o.push_str("</main>\n<footer>Also: <code>/metrics</code> (Prometheus) · <code>/status</code> (JSON) · <code>holdfast status</code></footer>\n</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::view as sample;

    #[test]
    fn escapes_everything_and_has_no_external_assets() {
        let mut v = sample();
        v.jobs[0].name = "<script>alert(1)</script>".into();
        v.daemon.config_error = Some("line 3: bad \"key\" <x>".into());
        let html = render(&v);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("id=\"config-error\""));
        assert!(html.contains("bad &quot;key&quot; &lt;x&gt;"));
        for bad in ["<script", "<link", " src=", "url(", "@import"] {
            assert!(!html.contains(bad), "{bad}");
        }
    }

    #[test]
    fn breach_running_and_drill_are_shown() {
        let html = render(&sample());
        assert!(
            html.contains("class=\"source breach\" data-source=\"docs\" data-breached=\"true\"")
        );
        assert!(html.contains("data-source=\"ehr-db\" data-breached=\"false\""));
        assert!(html.contains("data-running=\"true\""));
        assert!(html.contains("aria-valuenow=\"38\""), "3 of 8 MB done");
        assert!(html.contains("class=\"rto over\""), "RTO over target");
        assert!(html.contains("data-kind=\"rpo-breach\""));
    }
}
