"""The compress report, looked at in a real browser: build it on a real model, take a headless
Chromium screenshot, and check what a person would see.

    python benchmarks/report_screenshot.py [--model bert_tiny|all_minilm_l6_v2|...] [--out DIR]
                                           [--window 1200x2600] [--pipeline-args "--target-bpw 4.5"]

Steps:
1. `weightpress compress MODEL -o OUT --report report.html` with calibration samples made
   for the model (corpus inputs: benchmarks/corpus/models.py), so the page has its
   end-to-end output error; by default `--target-bpw 4.5`, so it has the rate-distortion
   curve too;
2. `chromium --headless --screenshot` of the page (Debian's chromium; PNG decoded here with
   zlib, no imaging library);
3. checks, each printed and all required:
   - the screenshot is not blank: grey-level standard deviation and the share of non-white
     pixels above a floor;
   - the layer chart is drawn: every bar colour the page's layer chart uses (its SVG fills)
     covers a run of pixels in the screenshot;
   - the sort works after the page's script ran: `chromium --dump-dom` of
     report.html#sort=-ratio gives the weight table's rows in descending ratio order (the
     numbers behind the cells, data-v), and the header carries the sort mark.

Exit status 0 when every check passes. tests/cli/test_report_browser.py runs the same
checks on the small demo model when chromium is installed.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    """The browser's path, or None when none is installed."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


# ---- PNG ----------------------------------------------------------------------------------

def _unfilter(raw: bytes, width: int, height: int, bpp: int) -> np.ndarray:
    stride = width * bpp
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    pos = 0
    for y in range(height):
        kind, line = raw[pos], np.frombuffer(raw, np.uint8, stride, pos + 1).astype(np.int32)
        pos += stride + 1
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 255
        else:  # sub / average / paeth depend on the pixel to the left: byte by byte
            cur = np.zeros(stride, np.int32)
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur[x] = (line[x] + pred) & 255
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp)


def read_png(path) -> np.ndarray:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) as an HxWx3 uint8 array."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += length + 12
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"{path}: PNG depth {depth} colour type {colour} interlace {interlace} not read here")
    bpp = 3 if colour == 2 else 4
    pixels = _unfilter(zlib.decompress(b"".join(idat)), width, height, bpp)
    return pixels[..., :3]


# ---- the browser ------------------------------------------------------------------------------

def _browser(args: list, timeout: float) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        raise RuntimeError("no chromium installed")
    with tempfile.TemporaryDirectory(prefix="wp-chromium-") as profile:  # one profile per run: no lock clash
        return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def screenshot(html_path, png_path, width: int = 1200, height: int = 2600, timeout: float = 120) -> Path:
    png_path = Path(png_path)
    proc = _browser([f"--screenshot={png_path}", f"--window-size={width},{height}",
                     Path(html_path).resolve().as_uri()], timeout)
    if not png_path.exists():
        raise RuntimeError(f"chromium wrote no screenshot: {proc.stderr.strip()[-300:]}")
    return png_path


def dump_dom(html_path, fragment: str = "", timeout: float = 120) -> str:
    """The DOM after the page's script ran (the URL's #fragment included)."""
    proc = _browser(["--dump-dom", Path(html_path).resolve().as_uri() + fragment], timeout)
    if "<html" not in proc.stdout:
        raise RuntimeError(f"chromium dumped no DOM: {proc.stderr.strip()[-300:]}")
    return proc.stdout


# ---- checks ----------------------------------------------------------------------------------

def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], np.int16)


def layer_colours(page: str) -> list:
    """The bar colours the page's layer chart uses (fills of its after bars), in order of use."""
    chart = re.search(r'<svg[^>]*class="layers".*?</svg>', page, re.S).group(0)
    fills = re.findall(r'<rect class="after" [^>]*fill="(#[0-9a-f]{6})"', chart)
    return list(dict.fromkeys(fills))


def blank_figures(pixels: np.ndarray) -> dict:
    grey = pixels.astype(np.float64).mean(axis=2)
    return {"grey_std": float(grey.std()), "non_white": float(np.mean(grey < 245))}


def colour_pixels(pixels: np.ndarray, colours, tolerance: int = 6) -> dict:
    """colour -> how many screenshot pixels have it (within `tolerance` per channel)."""
    flat = pixels.reshape(-1, 3).astype(np.int16)
    return {c: int(np.sum(np.all(np.abs(flat - _rgb(c)) <= tolerance, axis=1))) for c in colours}


def sorted_ratios(dom: str) -> tuple:
    """(ratios of the weight table's rows in DOM order, the header's sort mark on 'ratio')."""
    table = re.search(r"<table class=[\"']sortable[\"'] id=[\"']weights[\"']>.*?</table>", dom, re.S).group(0)
    heads = re.findall(r"<th([^>]*)>(.*?)</th>", table)
    col = [h for _, h in heads].index("ratio")
    mark = re.search(r"data-dir=[\"'](\w+)", heads[col][0])
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1], re.S)
    ratios = [float(re.findall(r'<td[^>]*?data-v="([^"]+)"|<td[^>]*>', r)[col] or "nan") for r in rows]
    return ratios, mark.group(1) if mark else None


def check(html_path, png_path, dom: str, min_std: float = 20.0, min_non_white: float = 0.03,
          min_pixels: int = 30) -> list:
    """[(what, passed, detail)] for the screenshot and the sorted DOM (see the module docstring)."""
    page = Path(html_path).read_text()
    pixels = read_png(png_path)
    blank = blank_figures(pixels)
    results = [("screenshot is not blank", blank["grey_std"] >= min_std and blank["non_white"] >= min_non_white,
                f"{pixels.shape[1]}x{pixels.shape[0]} px, grey std {blank['grey_std']:.1f}, "
                f"{blank['non_white']:.1%} non-white")]
    colours = layer_colours(page)
    counts = colour_pixels(pixels, colours)
    results.append(("layer chart bars are drawn in each colour they use",
                    bool(colours) and all(n >= min_pixels for n in counts.values()),
                    ", ".join(f"{c}: {n} px" for c, n in counts.items()) or "no bars"))
    ratios, mark = sorted_ratios(dom)
    original, _ = sorted_ratios(page)
    results.append(("#sort=-ratio sorts the weight table after the script ran",
                    len(ratios) == len(original) and ratios == sorted(original, reverse=True) and mark == "desc",
                    f"{len(ratios)} rows, ratios {', '.join(f'{r:.2f}' for r in ratios[:6])}"
                    f"{' ...' if len(ratios) > 6 else ''}; page order {'differs' if ratios != original else 'same'};"
                    f" header mark {mark}"))
    return results


# ---- building the report ---------------------------------------------------------------------

def calibration_file(model_name: str, path, batches: int = 4) -> Path:
    """Calibration samples for a corpus model (its own input generator), leading axis = samples."""
    from benchmarks.corpus import models

    model = models.get(model_name)
    cases = [c for seed in range(batches) for c in model.inputs(seed)]
    names = [k for k, v in cases[0].items() if np.ndim(v) >= 1]
    np.savez(path, **{k: np.concatenate(_padded([c[k] for c in cases])) for k in names})
    return Path(path)


def _padded(arrays) -> list:
    """Arrays padded with zeros to the largest of each axis after the first (token batches of
    different lengths: a zero attention mask makes the padding inert)."""
    shape = np.max([a.shape[1:] for a in arrays], axis=0)
    return [np.pad(a, [(0, 0)] + [(0, int(m - n)) for m, n in zip(shape, a.shape[1:])]) for a in arrays]


def build_report(model_path, out_dir, calibration=None, how=("--target-bpw", "4.5"), timeout: float = 600) -> Path:
    """`weightpress compress` with --report into out_dir; returns the report's path."""
    out_dir = Path(out_dir)
    report = out_dir / "report.html"
    cmd = [sys.executable, "-m", "pipeline.cli", "compress", str(model_path), "-o",
           str(out_dir / ("out" + Path(model_path).suffix)), *how, "--report", str(report), "--no-progress", "-q"]
    if calibration is not None:
        cmd += ["--calibration", str(calibration)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"compress failed: {proc.stderr.strip()[-500:]}")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="bert_tiny", help="a corpus model (benchmarks/corpus/models.py)")
    ap.add_argument("--out", default=None, help="directory for the report and the screenshot (default: a temp dir)")
    ap.add_argument("--window", default="1200x2600")
    ap.add_argument("--pipeline-args", default="--target-bpw 4.5", help="what compress does")
    ap.add_argument("--batches", type=int, default=4, help="corpus input batches as calibration samples")
    args = ap.parse_args(argv)
    if chromium() is None:
        print("no chromium installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    from benchmarks.corpus import models

    out = Path(args.out or tempfile.mkdtemp(prefix="wp-report-"))
    out.mkdir(parents=True, exist_ok=True)
    model_path = models.locate(models.get(args.model))
    calibration = calibration_file(args.model, out / "calibration.npz", args.batches)
    report = build_report(model_path, out, calibration, tuple(args.pipeline_args.split()))
    width, height = map(int, args.window.split("x"))
    png = screenshot(report, out / "report.png", width, height)
    dom = dump_dom(report, "#sort=-ratio")
    results = check(report, png, dom)
    print(f"model {args.model}: {model_path}\nreport {report}\nscreenshot {png}")
    for what, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
