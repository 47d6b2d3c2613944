"""The HTML report's page: a model-level view first, details after.

    render_page(title, changes, total_seconds, notes, allocations, output_errors) -> str

Top to bottom:
- headline cards: size before -> after, weights compressed, bits per weight, the worst
  weight SNR, the end-to-end output error (or why it was not measured);
- layers: one row per compressed weight in program order, bytes before (grey) and after
  (coloured by bits per weight), bits per weight and the weight's SNR as a second bar;
- the mixed-precision allocation, when a step chose one: its rate-distortion curve with
  the chosen point and the budget, and its table;
- the end-to-end output error per output, with each sample's cosine as a strip;
- the weight table, sortable by any column (a click on its header; or on load from the
  URL: ``report.html#sort=ratio`` / ``#sort=-ratio`` for descending, which is how the
  headless-browser check exercises it);
- the weights left as they were, folded away and grouped by the reason the stage gave;
- each compressed weight's histogram with its LUT or grid.

Everything is inline: SVG drawn here, one small script, no external resource (the page
opens offline and from a mail attachment). Figures come from pipeline.report (the same
WeightChange objects the text table uses), so page and table never disagree.
"""
from __future__ import annotations

import html
import math
import re
from collections import defaultdict

from pipeline import report as rep

esc = html.escape

# bits per weight (after / elements, overhead of LUTs and scales included) -> colour
BIT_COLOURS = ((2.5, "#b2182b", "\u22642 bits"), (3.5, "#e66101", "3 bits"), (4.75, "#d8a400", "4 bits"),
               (6.5, "#1a9641", "5-6 bits"), (8.75, "#2b83ba", "8 bits"), (16.75, "#7b3294", "16 bits"),
               (math.inf, "#8c8c8c", "more"))


def bits_colour(bpw: float) -> str:
    return next(c for limit, c, _ in BIT_COLOURS if bpw <= limit)


_CODE_BITS = re.compile(r"\(u?int(\d+)\)")


def nominal_bits(c) -> float:
    """The bits of the stored codes ("lut_to_dense(uint4)" -> 4, the outermost constexpr's),
    else the bits per weight on disk: what the colour says. (A file format without 6-bit
    types stores 6-bit indices in bytes: the b/w figure beside the bar says what it costs.)"""
    m = _CODE_BITS.search(c.after.compression) if c.after is not None else None
    return float(m.group(1)) if m else _bpw(c)


def _bpw(c) -> float:
    return c.after_bytes * 8 / c.before.size if c.before.size else 0.0


def compressed(changes) -> list:
    """The weights a stage changed: another stored form, dtype or stored size (the program's
    own figures, not the files': a plain weight written by another format is not compressed)."""
    return [c for c in changes if c.after is not None and
            (c.after.compression != c.before.compression or c.after.dtype != c.before.dtype
             or c.after.stored_bytes != c.before.stored_bytes)]


def left_alone(changes) -> list:
    keep = {id(c) for c in compressed(changes)}
    return [c for c in changes if id(c) not in keep]


# ---- headline -------------------------------------------------------------------------

def _card(label: str, value: str, sub: str = "", tone: str = "") -> str:
    return (f'<div class="card {tone}"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>'
            f'<div class="sub">{esc(sub)}</div></div>')


def _worst_snr(changes):
    snrs = [(c.snr, c.name) for c in compressed(changes) if c.snr is not None and not math.isnan(c.snr)]
    return min(snrs) if snrs else None


def _tone_snr(db: float) -> str:
    return "bad" if db < 10 else "warn" if db < 20 else "good"


def _tone_cos(cos: float) -> str:
    return "bad" if cos < 0.95 else "warn" if cos < 0.99 else "good"


def cards(changes, total_seconds, allocations, errors, error_note) -> str:
    before = sum(c.before_bytes for c in changes)
    after = sum(c.after_bytes for c in changes)
    done = compressed(changes)
    elements = sum(c.before.size for c in done)
    bpw = sum(c.after_bytes for c in done) * 8 / elements if elements else 0.0
    out = [_card("weights on disk", f"{rep.human_bytes(before)} \u2192 {rep.human_bytes(after)}",
                 f"{before / after:.2f}x smaller" if after else "")]
    out.append(_card("compressed", f"{len(done)} of {len(changes)} weights",
                     f"{bpw:.2f} bits per weight on average" if done else "nothing changed"))
    worst = _worst_snr(changes)
    if worst is not None:
        out.append(_card("worst weight SNR", rep.fmt_db(worst[0]), worst[1], _tone_snr(worst[0])))
    floats = [e for e in errors if e.min_cosine is not None]
    if floats:
        e = min(floats, key=lambda x: x.min_cosine)
        out.append(_card("output cosine (worst sample)", f"{e.min_cosine:.4f}",
                         f"{e.output}, mean {e.mean_cosine:.4f} over {e.samples} samples", _tone_cos(e.min_cosine)))
    else:
        out.append(_card("output error", "not measured", error_note, "muted"))
    for a in allocations:
        out.append(_card("mixed precision", f"{a['bpw']:.3f} bits/weight",
                         "optimal" if a["gap"] == 0 or a["proved"] else f"within {a['relative_gap']:.2%} of optimal"))
    if total_seconds is not None:
        out.append(_card("time", f"{total_seconds:.2f} s"))
    return '<div class="cards">' + "".join(out) + "</div>"


# ---- layers chart ------------------------------------------------------------------------

SNR_SCALE = 60.0  # dB at the end of the SNR bar (beyond: drawn full, labelled)


def layers_svg(changes, width: int = 960, bar: int = 14) -> str:
    """Per compressed weight: bytes before (grey) and after (coloured by bits per weight) on
    one linear scale, bits per weight, and the weight's SNR as a bar of its own."""
    rows = compressed(changes)
    label_w, size_w, gap, snr_w = 220, 400, 100, 170
    top, pitch = 34, bar + 6
    height = top + max(len(rows), 1) * pitch + 8
    peak = _bar_scale([c.before_bytes for c in rows])
    x_size, x_snr = label_w, label_w + size_w + gap
    p = [f'<svg xmlns="http://www.w3.org/2000/svg" class="layers" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
         f'<text x="{x_size}" y="14" font-weight="bold">bytes: before (grey), after (colour: bits of the codes); '
         'bits per weight on disk, ratio</text>',
         f'<text x="{x_snr}" y="14" font-weight="bold">weight SNR (0-{SNR_SCALE:.0f} dB)</text>',
         f'<line x1="{x_snr}" y1="{top - 6}" x2="{x_snr}" y2="{height - 6}" stroke="#bbb"/>']
    for tick in (20, 40):
        tx = x_snr + snr_w * tick / SNR_SCALE
        p.append(f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{height - 6}" stroke="#eee"/>'
                 f'<text x="{tx:.1f}" y="{top - 8}" text-anchor="middle" fill="#999" font-size="9">{tick}</text>')
    if not rows:
        p.append(f'<text x="{x_size}" y="{top + bar}">no weight was compressed</text>')
    for i, c in enumerate(rows):
        y = top + i * pitch
        bpw = _bpw(c)
        name = c.name if len(c.name) <= 34 else "\u2026" + c.name[-33:]
        cut = c.before_bytes > peak  # wider than the scale (one table that dwarfs the rest): drawn cut,
        # with its own before / after proportion, room left for its figures
        wb = 0.72 * size_w if cut else size_w * c.before_bytes / peak
        wa = max(wb * c.after_bytes / c.before_bytes if c.before_bytes else 0.0, 1.0)
        p.append(f'<g><title>{esc(c.name)}: {rep.human_bytes(c.before_bytes)} \u2192 {rep.human_bytes(c.after_bytes)}'
                 f', {bpw:.2f} bits/weight, {esc(c.after.compression)}, SNR {esc(rep.fmt_db(c.snr))}</title>'
                 f'<text x="{label_w - 6}" y="{y + bar - 3}" text-anchor="end">{esc(name)}</text>'
                 f'<rect x="{x_size}" y="{y}" width="{wb:.1f}" height="{bar}" fill="#e3e3e3"/>'
                 f'<rect class="after" x="{x_size}" y="{y + 2}" width="{wa:.1f}" height="{bar - 4}" '
                 f'fill="{bits_colour(nominal_bits(c))}"/>'
                 + (f'<path class="cut" d="M{x_size + wb - 14:.1f},{y + bar + 1} l6,{-bar - 2} m4,0 l-6,{bar + 2}" '
                    f'stroke="#fff" stroke-width="2.5"/>' if cut else "")
                 + f'<text x="{x_size + wb + 4:.1f}" y="{y + bar - 3}" fill="#444">{bpw:.2f} b/w, '
                 f'{c.ratio:.1f}x{f", {rep.human_bytes(c.before_bytes)}, cut" if cut else ""}</text>')
        snr = c.snr
        if snr is not None and not math.isnan(snr):
            frac = 1.0 if snr == math.inf else max(0.0, min(snr / SNR_SCALE, 1.0))
            tone = {"bad": "#d7191c", "warn": "#fdae61", "good": "#4dac26"}[_tone_snr(snr)]
            p.append(f'<rect class="snr" x="{x_snr}" y="{y + 2}" width="{max(snr_w * frac, 1):.1f}" height="{bar - 4}" '
                     f'fill="{tone}"/><text x="{x_snr + snr_w + 4}" y="{y + bar - 3}" fill="#444">'
                     f'{esc(rep.fmt_db(snr))}</text>')
        p.append("</g>")
    p.append("</svg>")
    return "".join(p)


CUT = 3  # a weight this many times bigger than every other is drawn cut (the scale follows the rest)


def _bar_scale(sizes) -> float:
    """The bytes that fill the bar width: the largest weight's, unless it is more than CUT times
    the second largest (a word-embedding table beside 384x384 matmuls): then 1.5 times the
    second, so the other rows stay readable and the giant one is drawn cut with its bytes."""
    ordered = sorted(sizes)
    if not ordered:
        return 1.0
    if len(ordered) > 1 and ordered[-2] and ordered[-1] > CUT * ordered[-2]:
        return 1.5 * ordered[-2]
    return float(ordered[-1]) or 1.0


def legend() -> str:
    items = "".join(f'<span><i style="background:{c}"></i>{esc(label)}</span>' for _, c, label in BIT_COLOURS)
    return f'<div class="legend">{items}</div>'


# ---- output error --------------------------------------------------------------------------

def cosine_strip_svg(e, width: int = 240, height: int = 40) -> str:
    """Each sample's cosine as a tick on a scale from the worst one (or 0.9) to 1."""
    lo = min(min(e.cosines), 0.99)
    lo = max(lo - 0.1 * (1 - lo), -1.0)
    sx = lambda v: 6 + (v - lo) / (1 - lo) * (width - 12) if lo < 1 else width - 6  # noqa: E731
    p = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
         f'font-family="sans-serif" font-size="9"><line x1="6" y1="20" x2="{width - 6}" y2="20" stroke="#999"/>']
    for v in e.cosines:
        colour = {"bad": "#d7191c", "warn": "#e08a00", "good": "#1a9641"}[_tone_cos(v)]
        p.append(f'<line x1="{sx(v):.1f}" y1="10" x2="{sx(v):.1f}" y2="30" stroke="{colour}" stroke-opacity="0.7"/>')
    p.append(f'<text x="6" y="39">{lo:.4g}</text><text x="{width - 6}" y="39" text-anchor="end">1</text></svg>')
    return "".join(p)


def output_error_section(errors, note: str) -> str:
    out = ["<h2 id='output-error'>End-to-end output error</h2>"]
    if not errors:
        return out[0] + f"<p class='muted'>{esc(note)}</p>"
    out.append(f"<p>{esc(note)}: both models run by {esc(errors[0].evaluator)} on the same samples, "
               "each output compared with the uncompressed model's.</p>")
    out.append("<table><thead><tr><th>output</th><th>samples</th><th>min cosine</th><th>mean cosine</th>"
               "<th>SNR</th><th>max abs err / max |ref|</th><th>per-sample cosine</th></tr></thead><tbody>")
    for e in errors:
        if e.equal is not None:
            out.append(f"<tr><td>{esc(e.output)}</td><td>{e.samples}</td><td colspan='4'>{e.equal:.2%} of the "
                       "values equal (integer output)</td><td></td></tr>")
            continue
        out.append(f"<tr><td>{esc(e.output)}</td><td>{e.samples}</td><td class='{_tone_cos(e.min_cosine)}'>"
                   f"{e.min_cosine:.5f}</td><td>{e.mean_cosine:.5f}</td><td>{esc(rep.fmt_db(e.snr_db))}</td>"
                   f"<td>{e.max_rel_error:.3g}</td><td>{cosine_strip_svg(e)}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


# ---- sortable weight table -----------------------------------------------------------------

def _cell(text, value=None, cls: str = "") -> str:
    v = "" if value is None else f' data-v="{_num(value)}"'
    c = f' class="{cls}"' if cls else ""
    return f"<td{v}{c}>{esc(str(text))}</td>"


def _num(x) -> str:
    x = float(x)
    return "Infinity" if x == math.inf else "-Infinity" if x == -math.inf else "NaN" if math.isnan(x) else repr(x)


def _distortions(allocations) -> dict:
    return {str(r["weight"]): float(r["distortion"]) for a in allocations for r in a["table"]}


def weight_table(changes, allocations) -> str:
    dist = _distortions(allocations)
    heads = ["weight", "shape", "before", "after", "ratio", "bits/weight", "SNR", "max abs err", "compression"]
    heads += ["distortion"] if dist else []
    heads += ["time"]
    keys = [h.split("/")[0].replace(" ", "_") for h in heads]
    out = ["<table class='sortable' id='weights'><thead><tr>" +
           "".join(f"<th data-key='{k}' title='sort by {esc(h)}'>{esc(h)}</th>" for h, k in zip(heads, keys)) +
           "</tr></thead><tbody>"]
    for c in compressed(changes):
        bpw, err = _bpw(c), c.max_abs_error
        d = dist.get(c.name, dist.get(c.name.split("/", 1)[-1]))
        row = [_cell(c.name), _cell("x".join(map(str, c.before.shape)), c.before.size),
               _cell(rep.human_bytes(c.before_bytes), c.before_bytes), _cell(rep.human_bytes(c.after_bytes),
                                                                             c.after_bytes),
               _cell(f"{c.ratio:.2f}x", c.ratio),
               f'<td data-v="{_num(bpw)}"><i class="dot" style="background:{bits_colour(nominal_bits(c))}"></i>'
               f'{bpw:.2f}</td>',
               _cell(rep.fmt_db(c.snr), -math.inf if c.snr is None else c.snr,
                     _tone_snr(c.snr) if c.snr is not None and not math.isnan(c.snr) else ""),
               _cell("" if err is None else f"{err:.3g}", -1 if err is None else err), _cell(c.after.compression)]
        if dist:
            row.append(_cell("" if d is None else f"{d:.4g}", -1 if d is None else d))
        row.append(_cell("" if c.seconds is None else f"{c.seconds:.3f} s", c.seconds or 0))
        out.append("<tr>" + "".join(row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def left_alone_section(changes) -> str:
    """The weights no stage changed, grouped by the reason given, folded away."""
    rest = left_alone(changes)
    if not rest:
        return ""
    groups = defaultdict(list)
    for c in rest:
        groups[_reason_group(c.note)].append(c)
    total = sum(c.before_bytes for c in rest)
    out = [f"<details id='left-alone'><summary>{len(rest)} weights left as they were "
           f"({rep.human_bytes(total)}, {total / max(sum(c.before_bytes for c in changes), 1):.1%} of the input)"
           "</summary>"]
    for reason, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        out.append(f"<h3>{esc(reason)} ({len(items)})</h3><table><thead><tr><th>weight</th><th>shape</th>"
                   "<th>bytes</th><th>reason</th></tr></thead><tbody>")
        out += [f"<tr><td>{esc(c.name)}</td><td>{'x'.join(map(str, c.before.shape))}</td>"
                f"<td>{rep.human_bytes(c.before_bytes)}</td><td>{esc(c.note or 'no stage selected it')}</td></tr>"
                for c in items]
        out.append("</tbody></table>")
    out.append("</details>")
    return "".join(out)


def _reason_group(note: str) -> str:
    """The reason without its figures ("below the size threshold: 128 elements, ..." ->
    "below the size threshold"): one group per kind of reason."""
    if not note:
        return "not selected by any stage"
    first = note.split(";")[0].split(": ")
    if len(first) > 1 and " " not in first[0]:  # "palettize_weights: below ...": the stage's name first
        first = first[1:]
    return first[0].strip()


# ---- the page ------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;background:#f6f7f9}
main{max-width:1000px;margin:0 auto;padding:24px 28px 60px;background:#fff;min-height:100vh}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:32px 0 8px;border-bottom:1px solid #eee;padding-bottom:4px}
h3{font-size:1em;margin:14px 0 4px}.notes{color:#666;font-size:.85em;margin:0 0 16px}.notes div{margin:2px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{flex:1 1 170px;border:1px solid #e4e6ea;border-radius:8px;padding:10px 12px;background:#fbfcfd}
.card .label{font-size:.75em;color:#666;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:1.35em;font-weight:600;margin:4px 0}.card .sub{font-size:.8em;color:#666}
.card.good{border-left:4px solid #1a9641}.card.warn{border-left:4px solid #e08a00}
.card.bad{border-left:4px solid #d7191c}.card.muted .value{color:#999}
.legend{font-size:.8em;color:#444;margin:4px 0 8px}.legend span{margin-right:12px;white-space:nowrap}
.legend i,i.dot{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
table{border-collapse:collapse;font-size:.85em;margin:6px 0}
td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}th{background:#f3f4f6;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{background:#e6e9ee}
th[data-dir=asc]::after{content:' \\25B2'}th[data-dir=desc]::after{content:' \\25BC'}
td.good{color:#1a7f37}td.warn{color:#b26b00}td.bad{color:#c0171b;font-weight:600}
details{margin:12px 0;border:1px solid #eee;border-radius:6px;padding:6px 10px}summary{cursor:pointer}
figure{display:inline-block;margin:6px;vertical-align:top}figcaption{font-size:.75em;color:#666;max-width:520px}
.muted{color:#777}.scroll{overflow-x:auto}
"""

# sorts a table.sortable by the clicked column (data-v: the number behind a cell, else its
# text); `#sort=KEY` or `#sort=-KEY` in the URL sorts the weight table on load
SCRIPT = """
(function () {
  function key(row, i) {
    var c = row.cells[i], v = c.getAttribute('data-v');
    return v === null ? c.textContent.trim().toLowerCase() : parseFloat(v);
  }
  function cmp(x, y) {
    if (typeof x === 'number' && typeof y === 'number') {
      if (isNaN(x)) return isNaN(y) ? 0 : -1;
      if (isNaN(y)) return 1;
      return x === y ? 0 : (x < y ? -1 : 1);
    }
    return String(x).localeCompare(String(y));
  }
  function sortBy(th, dir) {
    var t = th.closest('table'), body = t.tBodies[0];
    var i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) { var r = cmp(key(a, i), key(b, i)); return dir === 'asc' ? r : -r; });
    rows.forEach(function (r) { body.appendChild(r); });
    t.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-dir'); });
    th.setAttribute('data-dir', dir);
  }
  document.querySelectorAll('table.sortable th').forEach(function (th) {
    th.addEventListener('click', function () {
      sortBy(th, th.getAttribute('data-dir') === 'asc' ? 'desc' : 'asc');
    });
  });
  var m = /sort=(-?)(\\w+)/.exec(location.hash);
  if (m) {
    var th = document.querySelector("#weights th[data-key='" + m[2] + "']");
    if (th) sortBy(th, m[1] ? 'desc' : 'asc');
  }
})();
"""


def render_page(title, changes, total_seconds=None, notes=(), allocations=(), output_errors=(),
                output_note: str = "") -> str:
    """The whole HTML report (see the module docstring)."""
    if not output_note:
        output_note = ("no calibration samples were given (compress --calibration FILE.npz measures it)"
                       if not output_errors else "on the calibration samples")
    done = compressed(changes)
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{CSS}</style>"
           f"</head><body><main><h1>{esc(title)}</h1>",
           "<div class='notes'>" + "".join(f"<div>{esc(n)}</div>" for n in notes) + "</div>",
           cards(changes, total_seconds, allocations, output_errors, output_note),
           f"<h2 id='layers'>Layers ({len(done)} compressed)</h2>", legend(),
           f"<div class='scroll'>{layers_svg(changes)}</div>"]
    if allocations:
        out.append(rep.allocation_html(allocations))
    out.append(output_error_section(output_errors, output_note))
    out.append(f"<h2 id='weight-table'>Weights</h2><p class='muted'>Compressed weights; click a column to sort. "
               f"Bits per weight count everything stored (indices, LUT, scales).</p>"
               f"<div class='scroll'>{weight_table(changes, allocations)}</div>")
    out.append(left_alone_section(changes))
    headers, rows = rep.summary_rows(changes, total_seconds)
    out.append(f"<p class='muted'>{esc(rows[-1][0])}: {esc(rows[-1][2])} \u2192 {esc(rows[-1][3])} "
               f"({esc(rows[-1][4])})</p>")
    figs = [rep.weight_figure(c) for c in done]
    hist = "".join(f"<figure>{svg}<figcaption>{esc(cap)}</figcaption></figure>" for svg, cap in figs)
    out.append(f"<h2 id='histograms'>Histograms</h2><details{' open' if len(figs) <= 12 else ''}>"
               f"<summary>values of each compressed weight before compression, with the LUT or grid after "
               f"({len(figs)})</summary>{hist}</details>")
    out.append(f"<script>{SCRIPT}</script></main></body></html>")
    return "\n".join(out)
