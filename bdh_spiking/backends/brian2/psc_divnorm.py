"""Rung divisive-norm (issue 16, rung 7): every LayerNorm of the psc network (the decoder PSC m and
the residual sum h per (layer, sequence), the read u per (layer, sequence, head)) is replaced by
inhibition from pooled populations with their own dynamics, one pool unit per group:

    subtractive pool:  tau_pool dM/dt = sm * sum_i z_i / D - M              (sm = subtract_mean: 1 or 0)
    divisive pool:     tau_pool dP/dt = sqrt(sum_i (z_i - M)^2 / D) - P     (a concave f-I curve of its input)
    unit i:            n_i = (z_i - M) / (norm_sigma + P)

The pools read the sums sum z and sum z^2 the norm units (rnorm, anorm) already receive through
summed synapses (sum (z - M)^2 = sum z^2 - 2 M sum z + D M^2); the residual and readout units read
their pool's M and P by linked variables. The subtractive pool's M is signed: each pool unit whose M
went negative is counted in negative_rates.
Specification: docs/spiking-semantics.md, "Rung 7, `divisive-norm`"."""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError
from .psc import NEG_FLAG

# the sums each LayerNorm of the psc network reads (s1 -> s2) and the pool that replaces it:
# (pool group, the pool's name, the norm group's summed variables for s1 and s2)
SITES = {"lm1": ("rpool", "m", "s_m1", "s_m2"), "lh1": ("rpool", "h", "s_h1", "s_h2"),
         "la1": ("apool", "u", "s_u1", "s_u2")}
POOL_MODEL = """
dM_{k}/dt = (sm * c1_{k} * inv_d - M_{k}) / tau_pool : 1
dP_{k}/dt = (sqrt(clip(c2_{k} * inv_d - 2 * M_{k} * c1_{k} * inv_d + M_{k}**2, 0, inf)) - P_{k}) / tau_pool : 1
c1_{k} : 1 (linked)
c2_{k} : 1 (linked)
neg_{k} : 1
"""


def check_divnorm_params(par: dict) -> None:
    """The [divnorm] parameters, one-line errors (rungs.DivisiveNorm.apply, before any work)."""
    if not par["norm_sigma"] > 0:
        raise ConfigError(f"rung divisive-norm: norm_sigma must be > 0, got {par['norm_sigma']:g}")
    if not par["tau_pool_ms"] >= par["graded_dt_ms"]:
        raise ConfigError(f"rung divisive-norm: tau_pool_ms ({par['tau_pool_ms']:g}) must be at least the graded "
                          f"clock's step graded_dt_ms ({par['graded_dt_ms']:g})")


class DivisiveNormPart:
    """Mixin of psc.PscNetwork: norm, res_model, attn_model, _graded_groups, _link, constraint_counts."""

    def namespace(self, ids):
        from brian2 import ms

        ns = super().namespace(ids)
        ns.update(norm_sigma=self.par["norm_sigma"], tau_pool=self.par["tau_pool_ms"] * ms,
                  sm=1.0 if self.par["subtract_mean"] else 0.0)
        return ns

    def norm(self, z: str, s1: str, s2: str) -> str:
        if s1 not in SITES:
            raise ConfigError(f"rung divisive-norm: no inhibitory pool for the normalisation of {z} (sums {s1}, {s2})")
        k = SITES[s1][1]
        return f"(({z}) - dn_M{k}) / (norm_sigma + dn_P{k})"

    @staticmethod
    def _pool_links(sites) -> str:
        return "".join(f"dn_M{SITES[s][1]} : 1 (linked)\ndn_P{SITES[s][1]} : 1 (linked)\n" for s in sites)

    def res_model(self) -> str:
        return super().res_model() + self._pool_links(("lm1", "lh1"))

    def attn_model(self) -> str:
        return super().attn_model() + self._pool_links(("la1",))

    def _graded_groups(self, ns: dict) -> dict:
        import brian2 as b2

        g = super()._graded_groups(ns)
        L, B, H = self.dims.L, self.B, self.dims.H
        # order within a graded step: the norm units' sums (rnorm -1, anorm 0), then the pool (-0.5,
        # 0.5), then the units it divides (res 0, attn 1): with tau_pool = graded_dt_ms a pool is the
        # steady state of the sums of this step (no lag beyond the psc network's own)
        for name, size, keys, order in (("rpool", L * B, ("m", "h"), -0.5), ("apool", L * B * H, ("u",), 0.5)):
            pool = b2.NeuronGroup(size, "".join(POOL_MODEL.format(k=k) for k in keys), name=f"bdh_psc_{name}",
                                  clock=self.graded, namespace=ns, method="euler", order=order)
            for k in keys:
                pool.run_regularly(NEG_FLAG.format(flag=f"neg_{k}", v=f"M_{k}"), when="end",
                                   name=f"bdh_psc_{name}_neg_{k}")
            g[name] = pool
        return g

    def _link(self, g: dict) -> None:
        from brian2 import linked_var

        super()._link(g)
        D, H = self.dims.D, self.dims.H
        for pool, k, v1, v2 in SITES.values():
            norm = g["rnorm" if pool == "rpool" else "anorm"]
            setattr(g[pool], f"c1_{k}", linked_var(norm, v1))
            setattr(g[pool], f"c2_{k}", linked_var(norm, v2))
            unit = g["res" if pool == "rpool" else "attn"]
            index = np.arange(len(unit)) // D  # res (l, b, d) -> (l, b); attn (l, b, h, d) -> (l, b, h)
            setattr(unit, f"dn_M{k}", linked_var(g[pool], f"M_{k}", index=index))
            setattr(unit, f"dn_P{k}", linked_var(g[pool], f"P_{k}", index=index))

    def constraint_counts(self) -> dict:
        out = super().constraint_counts()
        out["negative_rates"] += sum(int(np.asarray(getattr(self.groups[pool], f"neg_{k}")[:]).sum())
                                     for pool, k, _, _ in SITES.values())
        return out
