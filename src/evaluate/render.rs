//! The report as people read it: a text table, CSV (one row per origin) and one HTML file with no
//! external assets (inline SVG: a ranked bar chart per indicator across provinces, a delay
//! histogram per province, then the tables). Pure: a report in, text out.

use super::report::{Observed, OriginReport, Report};
use crate::record::Region;
use std::fmt::Write;

fn name(code: u32) -> String {
    Region::from_code(code)
        .map(|r| format!("{r} {}", r.name_en()))
        .unwrap_or_else(|_| code.to_string())
}

fn pct(ppm: u64) -> String {
    format!("{}.{:01}%", ppm / 10_000, (ppm % 10_000) / 1_000)
}

/// The indicators charted: (title, value — in ppm or a count, None when there is nothing to
/// judge —, ppm or not, higher is better).
type Indicator = (&'static str, fn(&OriginReport) -> Option<u64>, bool, bool);

const INDICATORS: [Indicator; 5] = [
    (
        "Timeliness: on time (7 working days)",
        |o| (o.timeliness.records > 0).then_some(o.timeliness.on_time_ppm),
        true,
        true,
    ),
    (
        "Repairs honoured everywhere in time",
        |o| (o.repairs.with_receivers > 0).then_some(o.repairs.honoured_ppm),
        true,
        true,
    ),
    (
        "Records shown past their publicity end",
        |o| Some(o.publicity.shown_past_end),
        false,
        false,
    ),
    (
        "Amendments per 1,000 records",
        |o| (o.quality.new_records > 0).then_some(o.quality.amendments_per_mille),
        false,
        false,
    ),
    (
        "Revocations per 1,000 records",
        |o| (o.quality.new_records > 0).then_some(o.quality.revocations_per_mille),
        false,
        false,
    ),
];

/// A share for tables: "-" when nothing was judged.
fn share(ppm: u64, judged: u64) -> String {
    if judged == 0 {
        "-".to_string()
    } else {
        pct(ppm)
    }
}

fn shown(v: u64, ppm: bool) -> String {
    if ppm {
        pct(v)
    } else {
        v.to_string()
    }
}

/// A fixed-width table, one line per origin.
pub fn table(r: &Report, observed: Option<&Observed>) -> String {
    let mut out = format!(
        "Evaluation {} .. {}, as of {}\n{:<8} {:>8} {:>9} {:>8} {:>9} {:>8} {:>8} {:>10} {:>9}\n",
        r.period.from,
        r.period.to,
        r.as_of
            .iter()
            .map(|(o, s)| format!("{o}:{s}"))
            .collect::<Vec<_>>()
            .join(" "),
        "origin",
        "licpen",
        "on_time",
        "repairs",
        "honoured",
        "overdue",
        "past_end",
        "off_rule",
        "amend‰"
    );
    for o in &r.origins {
        let _ = writeln!(
            out,
            "{:<8} {:>8} {:>9} {:>8} {:>9} {:>8} {:>8} {:>10} {:>9}",
            o.origin,
            o.timeliness.records,
            share(o.timeliness.on_time_ppm, o.timeliness.records),
            o.repairs.repairs,
            share(o.repairs.honoured_ppm, o.repairs.with_receivers),
            o.repairs.overdue,
            o.publicity.shown_past_end,
            o.publicity.shorter + o.publicity.longer,
            o.quality.amendments_per_mille
        );
    }
    for x in &r.overdue_receivers {
        let _ = writeln!(
            out,
            "overdue: node {} department {}: {} repairs overdue, {} late",
            x.node, x.department, x.overdue, x.late
        );
    }
    if let Some(obs) = observed {
        for d in &obs.sync_delay {
            let _ = writeln!(
                out,
                "sync delay to node {} from {}: {} arrivals, p50 {} ms, p95 {} ms",
                obs.node, d.origin, d.arrivals, d.p50_ms, d.p95_ms
            );
        }
    }
    out
}

/// CSV, one row per origin, with a header.
pub fn csv(r: &Report) -> String {
    let mut out = String::from("origin,licence_penalty_records,on_time,on_time_ppm,repairs,repairs_with_receivers,repairs_honoured,repairs_late,repairs_overdue,repairs_pending,honoured_ppm,publicity_ended,shown_past_end,periods_checked,periods_shorter,periods_longer,new_records,amendments,revocations,amendments_per_mille,revocations_per_mille,unreadable\n");
    for o in &r.origins {
        let (t, s, p, q) = (&o.timeliness, &o.repairs, &o.publicity, &o.quality);
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            o.origin,
            t.records,
            t.on_time,
            t.on_time_ppm,
            s.repairs,
            s.with_receivers,
            s.honoured,
            s.late,
            s.overdue,
            s.pending,
            s.honoured_ppm,
            p.ended,
            p.shown_past_end,
            p.periods_checked,
            p.shorter,
            p.longer,
            q.new_records,
            q.amendments,
            q.revocations,
            q.amendments_per_mille,
            q.revocations_per_mille,
            q.unreadable
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const BAR_W: u32 = 360;
const ROW_H: u32 = 22;

fn ranked_chart(r: &Report, (title, value, ppm, higher_better): Indicator) -> String {
    let mut rows: Vec<(u32, Option<u64>)> = r.origins.iter().map(|o| (o.origin, value(o))).collect();
    // Ranked best first; origins with nothing to judge last.
    rows.sort_by(|a, b| {
        let key = |v: Option<u64>| match v {
            None => (1, 0),
            Some(v) if higher_better => (0, u64::MAX - v),
            Some(v) => (0, v),
        };
        key(a.1).cmp(&key(b.1)).then(a.0.cmp(&b.0))
    });
    let max = rows
        .iter()
        .filter_map(|(_, v)| *v)
        .max()
        .unwrap_or(0)
        .max(if ppm { 1_000_000 } else { 1 });
    let h = ROW_H * rows.len() as u32 + 8;
    let mut svg = format!(
        "<figure class=\"chart\" data-indicator=\"{t}\"><figcaption>{t}</figcaption><svg width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{t}\">",
        t = esc(title),
        w = BAR_W + 260,
    );
    for (i, (code, v)) in rows.iter().enumerate() {
        let y = 4 + ROW_H * i as u32;
        let (v, label) = match v {
            Some(v) => (*v, shown(*v, ppm)),
            None => (0, "nothing to judge".to_string()),
        };
        let w = (u128::from(v) * u128::from(BAR_W) / u128::from(max)) as u32;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{ty}\" font-size=\"12\">{rank}. {n}</text><rect class=\"bar\" data-origin=\"{code}\" data-value=\"{v}\" x=\"150\" y=\"{y}\" width=\"{w}\" height=\"{bh}\" fill=\"{fill}\"/><text x=\"{tx}\" y=\"{ty}\" font-size=\"12\">{label}</text>",
            ty = y + 14,
            rank = i + 1,
            n = esc(&name(*code)),
            bh = ROW_H - 6,
            fill = if higher_better { "#2b7a4b" } else { "#b5462f" },
            tx = 156 + w,
        );
    }
    svg.push_str("</svg></figure>\n");
    svg
}

fn histogram(r: &Report, o: &OriginReport) -> String {
    let counts = &o.timeliness.delay_histogram;
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let (bw, hh) = (46u32, 90u32);
    let mut svg = format!(
        "<figure class=\"histogram\" data-origin=\"{}\"><figcaption>Delay from decision to the log, working days: {}</figcaption><svg width=\"{}\" height=\"{}\">",
        o.origin,
        esc(&name(o.origin)),
        bw * counts.len() as u32 + 10,
        hh + 34
    );
    for (i, c) in counts.iter().enumerate() {
        let h = (u128::from(*c) * u128::from(hh) / u128::from(max)) as u32;
        let x = 4 + bw * i as u32;
        let label = match r.delay_buckets.get(i) {
            Some(b) => format!("≤{b}"),
            None => format!(">{}", r.delay_buckets.last().copied().unwrap_or(0)),
        };
        let _ = write!(
            svg,
            "<rect class=\"bucket\" data-count=\"{c}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"#3b6ea8\"/><text x=\"{x}\" y=\"{ly}\" font-size=\"11\">{label}</text><text x=\"{x}\" y=\"{cy}\" font-size=\"10\">{c}</text>",
            y = 12 + hh - h,
            w = bw - 6,
            ly = hh + 26,
            cy = 10 + hh - h,
        );
    }
    svg.push_str("</svg></figure>\n");
    svg
}

/// One self-contained HTML page.
pub fn html(r: &Report, observed: Option<&Observed>, signer: &str) -> String {
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Credit evaluation {f} .. {t}</title><style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:12px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#eee}}td.l{{text-align:left}}figure{{display:inline-block;margin:8px 24px 8px 0;vertical-align:top}}figcaption{{font-weight:bold;margin-bottom:4px}}</style></head><body data-origins=\"{n}\">\n<h1>Regional performance evaluation, {f} .. {t}</h1>\n<p id=\"as-of\">As of {vv}. Signed by {s}. Working days: {cal}.</p>\n<h2>Ranked across provinces</h2>\n",
        f = esc(&r.period.from),
        t = esc(&r.period.to),
        n = r.origins.len(),
        vv = esc(&r.as_of.iter().map(|(o, s)| format!("{o}:{s}")).collect::<Vec<_>>().join(", ")),
        s = esc(signer),
        cal = esc(&r.calendar.iter().map(|(y, src)| format!("{y} ({src})")).collect::<Vec<_>>().join(", ")),
    );
    for ind in INDICATORS {
        out.push_str(&ranked_chart(r, ind));
    }
    out.push_str("<h2>Delay distribution per province</h2>\n");
    for o in &r.origins {
        out.push_str(&histogram(r, o));
    }
    out.push_str("<h2>Figures</h2>\n<table id=\"figures\"><tr><th>province</th><th>licences+penalties</th><th>on time</th><th>repairs</th><th>honoured in time</th><th>overdue</th><th>shown past end</th><th>off-rule periods</th><th>amendments ‰</th><th>revocations ‰</th></tr>\n");
    for o in &r.origins {
        let _ = writeln!(
            out,
            "<tr data-origin=\"{}\"><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            o.origin,
            esc(&name(o.origin)),
            o.timeliness.records,
            share(o.timeliness.on_time_ppm, o.timeliness.records),
            o.repairs.repairs,
            share(o.repairs.honoured_ppm, o.repairs.with_receivers),
            o.repairs.overdue,
            o.publicity.shown_past_end,
            o.publicity.shorter + o.publicity.longer,
            o.quality.amendments_per_mille,
            o.quality.revocations_per_mille
        );
    }
    out.push_str("</table>\n<h2>Late records</h2>\n<table id=\"late\"><tr><th>province</th><th>seq</th><th>record</th><th>authority</th><th>decided</th><th>appended</th><th>working days</th></tr>\n");
    for o in &r.origins {
        for l in &o.timeliness.late {
            let _ = writeln!(
                out,
                "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                o.origin,
                l.seq,
                esc(&l.record_id),
                esc(&l.authority),
                esc(&l.decision_date),
                esc(&l.appended_on),
                if l.delay_at_least { "≥" } else { "" },
                l.delay_working_days
            );
        }
    }
    out.push_str("</table>\n<h2>Overdue repairs by receiver</h2>\n<table id=\"overdue\"><tr><th>node</th><th>department</th><th>overdue</th><th>late</th></tr>\n");
    for x in &r.overdue_receivers {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td></tr>",
            x.node,
            esc(&x.department),
            x.overdue,
            x.late
        );
    }
    out.push_str("</table>\n");
    if let Some(obs) = observed {
        let _ = writeln!(out, "<h2>Observed at node {}</h2>\n<table id=\"sync\"><tr><th>origin</th><th>arrivals</th><th>p50 ms</th><th>p95 ms</th></tr>", obs.node);
        for d in &obs.sync_delay {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                d.origin, d.arrivals, d.p50_ms, d.p95_ms
            );
        }
        out.push_str("</table>\n");
    }
    // Counted by the browser from what it drew, so a test sees what a reader would.
    out.push_str("<p id=\"drawn\"></p><script>document.getElementById('drawn').textContent = 'drawn: ' + document.querySelectorAll('svg rect.bar').length + ' bars, ' + document.querySelectorAll('svg rect.bucket').length + ' buckets';</script>\n</body></html>\n");
    out
}
