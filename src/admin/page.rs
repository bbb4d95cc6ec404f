//! The status page: one HTML document, no external assets and no script, that reloads itself.
//! At the top, what an operator must act on; then the federation matrix (origins × this node and
//! its peers: the head each holds, coloured by state), the peers, the merged view, the parts of
//! the node, forks and certificates. Every state is written as a word as well as a colour, and
//! carried in a `data-state` attribute (what the browser test reads).

use crate::record::Region;
use crate::rpc::pb;
use std::fmt::Write;

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
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

fn region(code: u32) -> String {
    Region::code_text(code)
}

/// The state of an origin at this node, as a word (also the CSS class).
pub fn origin_state(o: &pb::OriginStatus) -> &'static str {
    if o.forked {
        "forked"
    } else if o.stalled {
        "stalled"
    } else if o.lag_entries > 0 {
        "lagging"
    } else {
        "in-sync"
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d232a;background:#fafbfc}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
.sub{color:#57606a;margin-bottom:1em}\
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002}\
th,td{padding:.3em .7em;border:1px solid #d0d7de;text-align:right;white-space:nowrap}\
th{background:#f1f3f5;text-align:center}td.l,th.l{text-align:left}\
.in-sync{background:#dafbe1}.lagging{background:#fff8c5}.stalled{background:#ffd8b5;font-weight:600}\
.forked{background:#ff818266;font-weight:700}.down{background:#ffd7d5;font-weight:600}.up{background:#dafbe1}\
.unknown{background:#eaeef2;color:#57606a}.warn{background:#fff8c5}.expired{background:#ffd7d5;font-weight:600}\
.alarms{border:2px solid #cf222e;background:#fff5f5;padding:.5em 1em;margin:1em 0}\
.ok{border:2px solid #1a7f37;background:#f0fff4;padding:.5em 1em;margin:1em 0}\
.legend span{display:inline-block;padding:.1em .6em;margin-right:.4em;border:1px solid #d0d7de}\
small{color:#57606a}";

/// Renders the page for `s` at `now_ms` (unix milliseconds), reloading every `refresh` seconds.
pub fn render(s: &pb::SyncStatusResponse, now_ms: i64, refresh: u32) -> String {
    let now = now_ms.div_euclid(1000);
    let at = time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    let me = region(s.region);
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>cxnode {me}: federation status</title><style>{STYLE}</style></head><body>"
    );
    let ready = if s.ready { "ready" } else { "NOT READY" };
    let _ = write!(
        h,
        "<h1>cxnode {me}</h1><div class=\"sub\">node <b id=\"ready\" data-ready=\"{}\">{ready}</b> · journal {} bytes · {} feed subscribers · as of {at}, refreshed every {refresh} s</div>",
        s.ready, s.journal_bytes, s.feed_subscribers
    );
    if s.alarms.is_empty() {
        h.push_str("<div class=\"ok\" id=\"alarms\" data-count=\"0\">No alarms.</div>");
    } else {
        let _ = write!(
            h,
            "<div class=\"alarms\" id=\"alarms\" data-count=\"{}\"><b>Alarms</b><ul>",
            s.alarms.len()
        );
        for a in &s.alarms {
            let _ = write!(h, "<li>{}</li>", esc(a));
        }
        h.push_str("</ul></div>");
    }
    matrix(&mut h, s);
    peers(&mut h, s, now_ms);
    parts(&mut h, s);
    forks(&mut h, s);
    certificates(&mut h, s, now);
    h.push_str("</body></html>\n");
    h
}

/// Origins × (this node, each peer): the head each holds. This node's cells are coloured by the
/// origin's state here; a peer's show the head it last announced (grey when its link is down:
/// what it last said, not what it holds now).
fn matrix(h: &mut String, s: &pb::SyncStatusResponse) {
    h.push_str("<h2>Federation matrix</h2><div class=\"legend\"><span class=\"in-sync\">in sync</span><span class=\"lagging\">lagging</span><span class=\"stalled\">stalled</span><span class=\"forked\">forked</span><span class=\"unknown\">disconnected / unknown</span></div><small>State is this node's; a peer's column is the head it last announced.</small><br>");
    h.push_str("<table id=\"matrix\"><tr><th class=\"l\">origin</th><th>state here</th><th>lag (entries)</th><th>lag (s)</th><th>this node</th>");
    for p in &s.peers {
        let link = if p.connected { "up" } else { "down" };
        let _ = write!(
            h,
            "<th class=\"{link}\" data-peer=\"{}\" data-link=\"{link}\">{}<br><small>{} · link {link}</small></th>",
            esc(&p.address),
            esc(&p.identity),
            esc(&p.address)
        );
    }
    h.push_str("<th class=\"l\">fed by</th></tr>");
    for o in &s.origins {
        let state = origin_state(o);
        let code = region(o.origin);
        let mine = if o.origin == s.region { " (this node)" } else { "" };
        let _ = write!(
            h,
            "<tr data-origin=\"{code}\" data-state=\"{state}\"><td class=\"l\">{code}{mine}</td><td class=\"{state}\">{}</td><td>{}</td><td>{:.1}</td><td class=\"{state}\">{}</td>",
            state.replace('-', " "),
            o.lag_entries,
            o.lag_seconds,
            o.local_head
        );
        // A peer's head as it last announced it (heartbeats, every sync.heartbeat_ms): under load
        // it trails by up to one interval, which is not a lag of anyone's.
        for p in &s.peers {
            let head = p.origins.iter().find(|x| x.origin == o.origin).map(|x| x.head);
            let (class, text) = match head {
                _ if !p.connected => ("unknown", head.map_or("-".to_string(), |v| v.to_string())),
                None | Some(0) => ("unknown", "-".to_string()),
                Some(v) => ("announced", v.to_string()),
            };
            let _ = write!(h, "<td class=\"{class}\">{text}</td>");
        }
        let feeder = if o.origin == s.region || o.feeder.is_empty() {
            "-".to_string()
        } else {
            esc(&o.feeder)
        };
        let _ = write!(h, "<td class=\"l\">{feeder}</td></tr>");
    }
    h.push_str("</table>");
}

fn peers(h: &mut String, s: &pb::SyncStatusResponse, now_ms: i64) {
    h.push_str("<h2>Peers</h2><table id=\"peers\"><tr><th class=\"l\">peer</th><th class=\"l\">identity</th><th>link</th><th>last contact</th><th>errors</th><th>entries received</th><th>duplicates</th><th class=\"l\">last error</th></tr>");
    for p in &s.peers {
        let link = if p.connected { "up" } else { "down" };
        let contact = if p.last_contact_unix_millis > 0 {
            format!(
                "{:.1} s ago",
                (now_ms - p.last_contact_unix_millis).max(0) as f64 / 1000.0
            )
        } else {
            "never".to_string()
        };
        // The last error of a link that is up again is history: said as such.
        let error = match (p.connected, p.last_error.is_empty()) {
            (_, true) => String::new(),
            (true, false) => format!("<small>before it came up: {}</small>", esc(&p.last_error)),
            (false, false) => esc(&p.last_error),
        };
        let _ = write!(
            h,
            "<tr data-peer=\"{}\" data-link=\"{link}\"><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"{link}\">{link}</td><td>{contact}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            esc(&p.address),
            esc(&p.address),
            esc(&p.identity),
            p.errors_total,
            p.entries_received,
            p.duplicates_dropped,
            error
        );
    }
    h.push_str("</table>");
}

fn parts(h: &mut String, s: &pb::SyncStatusResponse) {
    h.push_str(
        "<h2>Node</h2><table id=\"health\"><tr><th class=\"l\">part</th><th>state</th><th class=\"l\">why</th></tr>",
    );
    for p in &s.health {
        let state = if p.up { "up" } else { "down" };
        let _ = write!(
            h,
            "<tr data-part=\"{}\" data-state=\"{state}\"><td class=\"l\">{}</td><td class=\"{state}\">{state}</td><td class=\"l\">{}</td></tr>",
            esc(&p.component),
            esc(&p.component),
            esc(&p.reason)
        );
    }
    if let Some(i) = &s.index {
        let _ = write!(
            h,
            "<tr><td class=\"l\">merged view</td><td class=\"{}\">{} behind</td><td class=\"l\">{:.1} s; backpressure past {} entries; {} undecodable</td></tr>",
            if i.lag_entries > 0 { "lagging" } else { "up" },
            i.lag_entries,
            i.lag_seconds,
            i.lag_entries_max,
            i.undecodable_entries
        );
    }
    h.push_str("</table>");
}

fn forks(h: &mut String, s: &pb::SyncStatusResponse) {
    if s.forks.is_empty() {
        return;
    }
    h.push_str("<h2>Forks</h2><table id=\"forks\"><tr><th class=\"l\">origin</th><th>first seq</th><th>conflicting seq</th></tr>");
    for f in &s.forks {
        let seq = |c: &Option<pb::Checkpoint>| c.as_ref().map_or("-".to_string(), |c| c.seq.to_string());
        let _ = write!(
            h,
            "<tr class=\"forked\"><td class=\"l\">{}</td><td>{}</td><td>{}</td></tr>",
            region(f.origin),
            seq(&f.first),
            seq(&f.second)
        );
    }
    h.push_str("</table>");
}

fn certificates(h: &mut String, s: &pb::SyncStatusResponse, now: i64) {
    h.push_str("<h2>Certificates</h2><table id=\"certificates\"><tr><th class=\"l\">identity</th><th>role</th><th>expires in</th></tr>");
    let mut rows: Vec<(String, String, i64)> = s
        .certificates
        .iter()
        .map(|c| (c.identity.clone(), c.role.clone(), c.not_after_unix_seconds))
        .collect();
    if s.revocation_on && s.crl_next_update_unix_seconds > 0 {
        rows.push((
            "revocation list (nextUpdate)".to_string(),
            "crl".to_string(),
            s.crl_next_update_unix_seconds,
        ));
    }
    for (identity, role, at) in rows {
        let left = at - now;
        let class = if left <= 0 {
            "expired"
        } else if left <= s.expiry_warning_seconds && role != "crl" {
            "warn"
        } else {
            "up"
        };
        let _ = write!(
            h,
            "<tr data-identity=\"{}\" data-state=\"{class}\"><td class=\"l\">{}</td><td>{}</td><td class=\"{class}\">{:.1} days</td></tr>",
            esc(&identity),
            esc(&identity),
            esc(&role),
            left as f64 / 86_400.0
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_words_and_attributes_and_text_is_escaped() {
        let s = pb::SyncStatusResponse {
            region: 330000,
            peers: vec![pb::PeerStatus {
                address: "b:7443".into(),
                identity: "cx://node/320000".into(),
                connected: false,
                last_error: "<script>x</script>".into(),
                origins: vec![pb::PeerOriginStatus {
                    origin: 320000,
                    head: 9,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            origins: vec![
                pb::OriginStatus {
                    origin: 330000,
                    local_head: 5,
                    ..Default::default()
                },
                pb::OriginStatus {
                    origin: 320000,
                    local_head: 3,
                    best_peer_head: 9,
                    lag_entries: 6,
                    stalled: true,
                    ..Default::default()
                },
            ],
            alarms: vec!["the node certificate of cx://node/330000 expires in 3 days".into()],
            ..Default::default()
        };
        let page = render(&s, 1_000_000, 2);
        assert!(
            page.contains("<tr data-origin=\"320000\" data-state=\"stalled\">"),
            "{page}"
        );
        assert!(
            page.contains("<tr data-origin=\"330000\" data-state=\"in-sync\">"),
            "{page}"
        );
        assert!(page.contains("data-link=\"down\""), "{page}");
        assert!(page.contains("data-count=\"1\""), "{page}");
        assert!(!page.contains("<script>"), "peer text is escaped: {page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(page.contains("http-equiv=\"refresh\" content=\"2\""), "{page}");
    }
}
