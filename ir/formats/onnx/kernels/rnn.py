"""LSTM, GRU and RNN: every direction, the activation lists, clip,
sequence_lens, initial states, peepholes, layout, and all three outputs.

Gate order in W / R / B: LSTM i, o, f, c; GRU z, r, h; RNN one gate.
With sequence_lens, batch entry b runs its first sequence_lens[b] steps only
(the reverse direction starts at its own last valid step); Y is zero past the
end and Y_h / Y_c hold the state after the last valid step.
Activations: one list per direction (forward first), LSTM f, g, h (default
Sigmoid, Tanh, Tanh), GRU f, g (Sigmoid, Tanh), RNN f (Tanh); activation_alpha
and activation_beta are consumed in order by those that take parameters.
"""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import arg, need


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


# name -> (number of parameters, default parameters, fn(x, alpha, beta))
RNN_ACTIVATIONS = {
    "relu": (0, (), lambda x, a, b: np.maximum(x, 0)),
    "tanh": (0, (), lambda x, a, b: np.tanh(x)),
    "sigmoid": (0, (), lambda x, a, b: _sigmoid(x)),
    "affine": (2, (1.0, 0.0), lambda x, a, b: a * x + b),
    "leakyrelu": (1, (0.01,), lambda x, a, b: np.where(x >= 0, x, a * x)),
    "thresholdedrelu": (1, (1.0,), lambda x, a, b: np.where(x > a, x, 0)),
    "scaledtanh": (2, (1.0, 1.0), lambda x, a, b: a * np.tanh(b * x)),
    "hardsigmoid": (2, (0.2, 0.5), lambda x, a, b: np.clip(a * x + b, 0, 1)),
    "elu": (1, (1.0,), lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0)))),
    "softsign": (0, (), lambda x, a, b: x / (1 + np.abs(x))),
    "softplus": (0, (), lambda x, a, b: np.logaddexp(0, x)),
}

# op -> (gates, default activations per direction)
SPECS = {"LSTM": (4, ("Sigmoid", "Tanh", "Tanh")), "GRU": (3, ("Sigmoid", "Tanh")), "RNN": (1, ("Tanh",))}


def _activations(attrs, op: str, num_dir: int) -> list:
    """One list of callables per direction."""
    per_dir = SPECS[op][1]
    names = list(attrs.get("activations") or per_dir * num_dir)
    if len(names) == len(per_dir) and num_dir == 2:
        names = names * 2
    if len(names) != len(per_dir) * num_dir:
        raise ValueError(f"{op}: {len(names)} activations, expected {len(per_dir) * num_dir}")
    alphas = list(attrs.get("activation_alpha", ()))
    betas = list(attrs.get("activation_beta", ()))
    fns = []
    for name in names:
        spec = RNN_ACTIVATIONS.get(name.lower())
        if spec is None:
            raise ValueError(f"{op}: unknown activation {name!r}")
        nparam, defaults, fn = spec
        a = alphas.pop(0) if nparam >= 1 and alphas else (defaults[0] if nparam >= 1 else 0.0)
        b = betas.pop(0) if nparam >= 2 and betas else (defaults[1] if nparam >= 2 else 0.0)
        fns.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    k = len(per_dir)
    return [fns[d * k:(d + 1) * k] for d in range(num_dir)]


def _lstm_step(x_t, h, c, w, r, wb, rb, p, acts, clip, input_forget):
    f, g, hact = acts
    gates = x_t @ w.T + h @ r.T + wb + rb
    if clip is not None:
        gates = np.clip(gates, -clip, clip)
    gi, go, gf, gc = np.split(gates, 4, axis=-1)
    pi, po, pf = np.split(p, 3) if p is not None else (0, 0, 0)
    i = f(gi + pi * c)
    ft = 1 - i if input_forget else f(gf + pf * c)
    c_new = ft * c + i * g(gc)
    o = f(go + po * c_new)
    return o * hact(c_new), c_new


def _gru_step(x_t, h, c, w, r, wb, rb, p, acts, clip, linear_before_reset):
    f, g = acts
    hs = h.shape[-1]
    xw = x_t @ w.T + wb
    wz, wr, wh = xw[:, :hs], xw[:, hs:2 * hs], xw[:, 2 * hs:]
    rz, rr, rh = r[:hs], r[hs:2 * hs], r[2 * hs:]
    bz, br, bh = rb[:hs], rb[hs:2 * hs], rb[2 * hs:]
    pre_z, pre_r = wz + h @ rz.T + bz, wr + h @ rr.T + br
    if clip is not None:
        pre_z, pre_r = np.clip(pre_z, -clip, clip), np.clip(pre_r, -clip, clip)
    z, rt = f(pre_z), f(pre_r)
    if linear_before_reset:
        pre_h = wh + rt * (h @ rh.T + bh)
    else:
        pre_h = wh + (rt * h) @ rh.T + bh
    if clip is not None:
        pre_h = np.clip(pre_h, -clip, clip)
    return (1 - z) * g(pre_h) + z * h, c


def _rnn_step(x_t, h, c, w, r, wb, rb, p, acts, clip, _):
    pre = x_t @ w.T + h @ r.T + wb + rb
    if clip is not None:
        pre = np.clip(pre, -clip, clip)
    return acts[0](pre), c


STEPS = {"LSTM": _lstm_step, "GRU": _gru_step, "RNN": _rnn_step}


def _recurrent(op: str):
    gates = SPECS[op][0]
    step = STEPS[op]

    def kernel(ins, attrs, node):
        x, w, r = need(ins, 0, "X"), need(ins, 1, "W"), need(ins, 2, "R")
        b, lens, h0 = arg(ins, 3), arg(ins, 4), arg(ins, 5)
        c0 = arg(ins, 6) if op == "LSTM" else None
        peep = arg(ins, 7) if op == "LSTM" else None
        dt = x.dtype
        cdt = np.float64 if dt == np.float64 else np.float32
        layout = int(attrs.get("layout", 0))
        xs = np.asarray(x, cdt)
        if layout:
            xs = xs.transpose(1, 0, 2)  # -> [seq, batch, input]
        seq, batch = xs.shape[:2]
        direction = attrs.get("direction", "forward")
        dirs = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}.get(direction)
        if dirs is None:
            raise ValueError(f"{op}: direction {direction!r} is not forward, reverse or bidirectional")
        nd = len(dirs)
        hs = int(attrs.get("hidden_size", r.shape[-1]))
        if w.shape[0] != nd or w.shape[1] != gates * hs:
            raise ValueError(f"{op}: W has shape {w.shape}, expected [{nd}, {gates * hs}, input]")
        clip = attrs.get("clip")
        clip = None if clip is None else float(clip)
        extra = int(attrs.get("input_forget", 0)) if op == "LSTM" else int(attrs.get("linear_before_reset", 0))
        acts = _activations(attrs, op, nd)
        lens = np.full(batch, seq, np.int64) if lens is None else np.asarray(lens, np.int64).reshape(-1)
        if layout and h0 is not None:
            h0 = np.asarray(h0).transpose(1, 0, 2)
        if layout and c0 is not None:
            c0 = np.asarray(c0).transpose(1, 0, 2)
        y = np.zeros((seq, nd, batch, hs), cdt)
        yh = np.zeros((nd, batch, hs), cdt)
        yc = np.zeros((nd, batch, hs), cdt)
        steps_t = np.arange(seq)
        for d, reverse in enumerate(dirs):
            wd, rd = np.asarray(w[d], cdt), np.asarray(r[d], cdt)
            bd = np.zeros(2 * gates * hs, cdt) if b is None else np.asarray(b[d], cdt)
            wb, rb = bd[:gates * hs], bd[gates * hs:]
            pd = None if peep is None else np.asarray(peep[d], cdt)
            h = np.zeros((batch, hs), cdt) if h0 is None else np.array(h0[d], cdt)
            c = np.zeros((batch, hs), cdt) if c0 is None else np.array(c0[d], cdt)
            for t in steps_t:
                # reverse: batch entry b reads step lens[b] - 1 - t
                src = (lens - 1 - t) if reverse else np.full(batch, t)
                live = (t < lens)
                if not live.any():
                    continue
                x_t = xs[np.clip(src, 0, seq - 1), np.arange(batch)]
                h_new, c_new = step(x_t, h, c, wd, rd, wb, rb, pd, acts[d], clip, extra)
                m = live[:, None]
                h = np.where(m, h_new, h)
                c = np.where(m, c_new, c)
                rows = np.nonzero(live)[0]
                y[src[rows], d, rows] = h[rows]
            yh[d], yc[d] = h, c
        if layout:
            y, yh, yc = y.transpose(2, 0, 1, 3), yh.transpose(1, 0, 2), yc.transpose(1, 0, 2)
        outs = [y.astype(dt), yh.astype(dt), yc.astype(dt)]
        return outs if op == "LSTM" else outs[:2]
    return kernel


KERNELS = {op: _recurrent(op) for op in SPECS}
