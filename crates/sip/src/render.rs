//! Producing the message to forward from a received message and its edits.

use std::cmp::Reverse;

use crate::edits::{Edits, Prio};
use crate::message::SipMessage;
use crate::names::names_equal;
use crate::parse::StartLine;

/// One change as the renderer sees it: raw `start..end` replaced by `text`.
struct Op<'a> {
    start: usize,
    end: usize,
    prio: Prio,
    text: &'a [u8],
}

/// Renders the message to forward: the start line (with the new R-URI for
/// a request), every received header that was not removed byte for byte in
/// its place, the insertions, a Content-Length that matches the body (kept
/// as received when the body is unchanged; added when missing so the
/// message can go over a stream transport), and the body.
pub fn render(msg: &SipMessage, edits: &Edits) -> Vec<u8> {
    let mut out = Vec::new();
    render_into(msg, edits, &mut out);
    out
}

/// Like [`render`] but appends to `out`, so a transport can reuse one
/// buffer; reserves the exact size once.
pub fn render_into(msg: &SipMessage, edits: &Edits, out: &mut Vec<u8>) {
    let raw = msg.raw();
    let layout = msg.layout();
    let slice = |a: usize, b: usize| raw.get(a..b).unwrap_or_default();
    let mut pieces: Vec<&[u8]> = Vec::with_capacity(2 * edits.lumps().len() + 8);

    match (&layout.start_line, edits.new_ruri()) {
        (StartLine::Request { uri, .. }, Some(new_ruri)) => {
            pieces.push(slice(layout.start, uri.start));
            pieces.push(new_ruri.as_bytes());
            pieces.push(slice(uri.end, layout.headers_start));
        }
        _ => pieces.push(slice(layout.start, layout.headers_start)),
    }

    let body_edit = edits.body_edit();
    let body: &[u8] = body_edit.map_or(msg.body(), |b| &b.body);
    let mut ops: Vec<Op<'_>> = edits
        .lumps()
        .iter()
        .map(|l| Op {
            start: l.start,
            end: l.end,
            prio: l.prio,
            text: l.text.as_bytes(),
        })
        .collect();

    // Body framing: Content-Type follows a replaced body, Content-Length is
    // regenerated when the body changed or no received one survives.
    let content_type_line = body_edit
        .filter(|b| !b.body.is_empty())
        .and_then(|b| b.content_type.as_deref())
        .map(|ct| format!("Content-Type: {ct}\r\n"));
    let drop_content_type =
        body_edit.is_some_and(|b| b.body.is_empty() || b.content_type.is_some());
    if drop_content_type {
        replace_named(
            msg,
            edits,
            "Content-Type",
            content_type_line.as_deref(),
            &mut ops,
        );
    }
    let live_length =
        msg.fields().iter().enumerate().any(|(i, h)| {
            !edits.is_removed(i) && names_equal(msg.name_bytes(h), b"Content-Length")
        });
    let length_line = (body_edit.is_some() || !live_length)
        .then(|| format!("Content-Length: {}\r\n", body.len()));
    if let Some(line) = &length_line {
        replace_named(msg, edits, "Content-Length", Some(line), &mut ops);
    }

    // Changes must lie inside the header section of this message.
    ops.retain(|o| {
        o.start <= o.end && o.start >= layout.headers_start && o.end <= layout.headers_end
    });
    // Insertions before a removal at the same offset; an enclosing
    // removal before the ranges it contains; then priority and call order
    // (the sort is stable).
    ops.sort_by_key(|o| (o.start, o.start != o.end, Reverse(o.end), o.prio));

    let mut cursor = layout.headers_start;
    for op in &ops {
        if op.start < cursor {
            // Inside a range already replaced: dropped.
            cursor = cursor.max(op.end);
            continue;
        }
        pieces.push(slice(cursor, op.start));
        pieces.push(op.text);
        cursor = op.end;
    }
    pieces.push(slice(cursor, layout.body.start));
    pieces.push(body);

    out.reserve(pieces.iter().map(|p| p.len()).sum());
    for p in pieces {
        out.extend_from_slice(p);
    }
}

/// Removes every received header named `name` and, when `line` is given,
/// puts it where the first such header was (or at the end of the headers).
fn replace_named<'a>(
    msg: &SipMessage,
    edits: &Edits,
    name: &str,
    line: Option<&'a str>,
    ops: &mut Vec<Op<'a>>,
) {
    let mut anchor = None;
    for (i, h) in msg.fields().iter().enumerate() {
        if !names_equal(msg.name_bytes(h), name.as_bytes()) {
            continue;
        }
        anchor.get_or_insert(h.line.start);
        if !edits.is_removed(i) {
            ops.push(Op {
                start: h.line.start,
                end: h.line.end,
                prio: Prio::Framing,
                text: b"",
            });
        }
    }
    if let Some(line) = line {
        let at = anchor.unwrap_or(msg.layout().headers_end);
        ops.push(Op {
            start: at,
            end: at,
            prio: Prio::Framing,
            text: line.as_bytes(),
        });
    }
}
