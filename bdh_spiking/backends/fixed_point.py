"""Mode 'fixed-point' of the reference executor: Loihi 2 style integer semantics, token by token.

Every rule is ``semantics.fixed_point.IntegerLayerMath`` (shared with the Lava backend's
``fixed_pt`` ProcessModels, which must give EQUAL counts); this module only runs it over tokens
and layers and collects statistics. Values are torch int64; only the logits become float64 at the
very end (an exact power-of-two scaling of integers). The registry hands it a quantized network.

Saturations are counted per kind (``semantics.fixed_point.SAT_KEYS``), summed over layers, tokens
and sequences, in ``result.events['saturations']`` (with ``saturations_total``); per layer in
``result.settings['saturations_per_layer']``.
"""

from __future__ import annotations

import time

import torch
from ..progress import bar as tqdm

from ..semantics import Plasticity, SimSettings, accumulate_stats, new_stats
from ..semantics.fixed_point import IntegerLayerMath, Saturations, decay_int, oscillator_table
from .base import Recorder, SimulationResult, make_result

NAME = "reference"


class FixedPointExecutor:
    name = NAME

    def __init__(self, net, settings: SimSettings, device="cpu", plasticity: Plasticity | None = None,
                 record=(), progress: bool = False):
        self.net = net
        self.quant = net.quantization
        self.settings = settings
        self.plasticity = plasticity or Plasticity()
        self.record = tuple(record)
        self.progress = progress
        self.device = torch.device(device)
        tables = {k: torch.as_tensor(v, device=self.device) for k, v in self.quant.int_tables().items()}
        self.tables = tables  # q_W_x, q_W_y (L,H,D,N); their shifts, q_theta_x/y (L,H,N); embed, decoder, lm_head
        self.sat = Saturations(net.dims.L)
        self.math = IntegerLayerMath.of(self.quant, settings, net.gating, net.dims.D, self.sat)
        self.lam = decay_int(self.plasticity.decay, self.math.F)

    def population(self, J, sat, layer, pop):
        """T timesteps of the integer neurons of one population (kept for tests of the rule)."""
        m = IntegerLayerMath.of(self.quant, self.settings, self.net.gating, self.net.dims.D, sat)
        m.layer = layer
        return m.population(J, pop)

    def layer(self, x, S_layer, layer, t, cos, sin, rule):
        """One layer at token t: returns (x', S', (Px, Py, mx, my, a, q, g))."""
        m, tb = self.math, self.tables
        m.layer = layer
        Jx = m.current(torch.einsum("bd,hdn->bhn", x, tb["q_W_x"][layer]), tb["q_W_x_shift"][layer], "x")
        Px, mx = m.population(Jx, "x")
        a = m.decode(Px, tb["q_theta_x"][layer], "x")
        q = m.payload(a, cos, sin)  # B,H,N
        S_layer, u = m.plastic(S_layer, x, q, rule, self.lam)
        accy = torch.einsum("bhd,hdn->bhn", m.ln(u), tb["q_W_y"][layer])
        Py, my = m.population(m.y_current(accy, a, tb["q_W_y_shift"][layer]), "y")
        g = m.gate(m.decode(Py, tb["q_theta_y"][layer], "y"), a)
        x = m.residual(x, g.reshape(g.shape[0], -1) @ tb["q_decoder"])
        return x, S_layer, (Px, Py, mx, my, a, q, g)

    def run(self, ids: torch.Tensor) -> SimulationResult:
        started = time.perf_counter()
        ids = ids.to(self.device)
        batch, n_tokens = ids.shape
        d = self.net.dims
        m, F = self.math, self.math.F
        cos, sin = (torch.as_tensor(a, dtype=torch.int64, device=self.device)
                    for a in oscillator_table(self.net.arrays["freqs"], n_tokens, F))
        S = torch.zeros(d.L, batch, d.H, d.D, d.N, dtype=torch.int64, device=self.device)
        stats = new_stats(batch, n_tokens)
        rec = Recorder(self.record, batch, n_tokens, d)
        logits_int = torch.empty(batch, n_tokens, d.V, dtype=torch.int64)
        Th = float(m.Th)
        for t in tqdm(range(n_tokens), desc="reference (fixed-point)", disable=not self.progress, leave=False):
            m.layer = 0
            x = m.ln(self.tables["q_embed"][ids[:, t]])  # B,D
            rule = self.plasticity.at(t)
            for layer in range(d.L):
                x, S[layer], (Px, Py, mx, my, a, q, g) = self.layer(x, S[layer], layer, t, cos[t], sin[t], rule)
                cx, cy = Px.double() / Th, Py.double() / Th
                accumulate_stats(stats, (slice(None), t), self.settings, cx, cy, q, g)
                rec.put((slice(None), t), layer, cx, cy, mx, my, a.double() / 2.0 ** F, g.double() / 2.0 ** F)
            # floor, as Lava's bit-accurate Dense
            logits_int[:, t] = ((x @ self.tables["q_lm_head"]) >> self.quant.lm_shift).cpu()
        rec.final_state(S.double() / 2.0 ** F)
        logits = logits_int.double() * 2.0 ** self.quant.logit_scale_exp
        return self._result(logits, stats, rec.out, started)

    def _result(self, logits, stats, rec, started):
        result = make_result(self.name, self.net, self.settings, logits, stats, rec, started, "int64", self.device,
                             saturations_per_layer=self.sat.per_layer)
        totals = self.sat.totals()
        result.events["saturations"] = totals
        result.events["saturations_total"] = sum(totals.values())
        return result


def simulate(net, ids, settings, device="cpu", record=(), plasticity=None, dtype=torch.float64, progress=False):
    """Mode 'fixed-point' of the reference executor (always token by token; ``dtype`` is ignored, the
    arithmetic is int64). ``net`` carries its quantization (the registry made sure)."""
    return FixedPointExecutor(net, settings, device, plasticity, record, progress).run(ids)
