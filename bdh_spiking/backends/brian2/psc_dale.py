"""Rung ``dale`` (issue 16) on the psc network: every static projection split so that each unit's
outgoing synapses have one sign (Dale's law).

Positive weights stay direct. The negative weights of a projection go through an inhibitory relay
population: one interneuron per presynaptic unit that has negative outgoing weights in it, driven
one-to-one by an excitatory synapse (weight 1) from that unit, and projecting |w| with inhibitory
sign onto the same targets. The relays of the graded projections (E: residual -> x dendrites, E_v:
readout -> y dendrites; from onoff on also the layer-to-layer stream) are rate units like the units
they relay (tau_g dv/dt = input - v, one graded step of delay). The relays of the spiking decoder D
(y -> residual PSC) are LIF interneurons with the membrane of x and y (tau_m, t_ref, their own
membrane noise sigma), no tonic bias (silent unless driven) and a one-to-one "detonator" synapse from
their y neuron (each y spike fires its interneuron one step later); under product gating they carry
their own copy of the x -> y gate (the x neuron also synapses onto its y neuron's interneuron).
The exact split changes only the network's dynamics (the relays' delay), not its function.
Specification: docs/spiking-semantics.md, "Rung 4, dale"."""

from __future__ import annotations

import dataclasses

import numpy as np

from .topology import connectivity, projection_weights

DETONATOR_W = 2.0  # y -> its interneuron: a spike lifts the relay's membrane (rest 0, threshold 1) past threshold
RELAY_GRADED = "dvr/dt = (rin - vr) / tau_g : 1\nrin : 1\nr = {rate} : 1\nneg : 1"
RELAY_LIF = "dv/dt = -v / tau_m{noise} : 1 (unless refractory)\ncnt : 1\n{gate}"


@dataclasses.dataclass
class GradedProjection:
    """A static projection of graded (rate) units onto a summed input of other units."""

    name: str  # E, E_v (onoff: E_on, E_off, E_v_on, E_v_off, next_on, next_off)
    pre: str  # group key of the presynaptic units
    var: str  # their rate variable the synapses read
    label: str  # the presynaptic population in the counts (res, attn; onoff: res_on, res_off, ...)
    post: str  # group key of the targets
    target: str  # the targets' input (a subexpression summing the parts this projection writes)
    i: np.ndarray
    j: np.ndarray
    w: np.ndarray
    serves: str  # what the projection is, for the report

    def direct(self) -> tuple:
        keep = self.w > 0
        return self.i[keep], self.j[keep], self.w[keep]

    def relayed(self) -> tuple:
        """(presynaptic units that get a relay, relay index of each negative synapse, post, weight)."""
        neg = self.w < 0
        units = np.unique(self.i[neg])
        return units, np.searchsorted(units, self.i[neg]), self.j[neg], self.w[neg]

    def parts(self) -> list:
        """The summed variables this projection writes into its targets (direct, through the relays)."""
        return [p for p, has in ((f"{self.target}_{self.name}", (self.w > 0).any()),
                                 (f"{self.target}_{self.name}_i", (self.w < 0).any())) if has]


class DaleSplit:
    """The dale rung's mixin of psc.PscNetwork (see the module doc)."""

    relay_rate = "vr"  # a graded relay's rate: linear at this rung (the units it relays are still signed)

    # -- what is split ---------------------------------------------------------------------------
    def graded_static(self) -> list:
        """The static projections of graded units (psc's E and E_v); onoff replaces them by pairs."""
        L, B, H, D, N = self.dims.L, self.B, self.dims.H, self.dims.D, self.dims.N
        conn, wts = connectivity(L, B, H, D, N), projection_weights(self.w, L, B, H, D, N)
        return [GradedProjection("E", "res", "xin", "res_in", "den", "Jx", *conn["E"], wts["E"],
                                 "E: the layer's input xin -> x dendrites"),
                GradedProjection("E_v", "attn", "un", "attn", "den", "Jv", *conn["E_v"], wts["E_v"],
                                 "E_v: attention readout un -> y dendrites")]

    def plan(self) -> list:
        if getattr(self, "_plan", None) is None:
            self._plan = self.graded_static()
        return self._plan

    def input_model(self, post: str, targets) -> str:
        """Equations of the inputs ``targets`` of group ``post``: each the sum of its projections' parts."""
        lines = []
        for target in targets:
            parts = [p for proj in self.plan() if proj.post == post and proj.target == target for p in proj.parts()]
            lines.append(f"{target} = {' + '.join(parts) or '0'} : 1")
            lines += [f"{p} : 1" for p in parts]
        return "\n".join(lines)

    # -- hooks of the psc network ---------------------------------------------------------------
    def den_model(self) -> str:
        return self.input_model("den", ("Jx", "Jv"))

    def rate_units(self) -> dict:
        units = dict(super().rate_units())
        for proj in self.plan():
            if (proj.w < 0).any():
                units[f"{proj.name}_inh"] = {"r": "neg"}  # the graded relays stand for rates too
        return units

    def graded_projections(self, g: dict, ns: dict, conn: dict, wts: dict) -> dict:
        import brian2 as b2

        graded = dict(clock=self.graded, namespace=ns)
        syn = {}
        for p in self.plan():
            if (p.w > 0).any():
                i, j, w = p.direct()
                s = b2.Synapses(g[p.pre], g[p.post], f"w : 1 (constant)\n{p.target}_{p.name}_post = w * {p.var}_pre "
                                ": 1 (summed)", name=f"bdh_dale_{p.name}", **graded)
                s.connect(i=i, j=j)
                s.w = w
                syn[p.name] = s
            if (p.w < 0).any():
                syn.update(self._graded_relay(p, g, graded))
        return syn

    def _graded_relay(self, p: GradedProjection, g: dict, graded: dict) -> dict:
        import brian2 as b2

        units, k, j, w = p.relayed()
        key = f"{p.name}_inh"
        relay = b2.NeuronGroup(len(units), RELAY_GRADED.format(rate=self.relay_rate), method="euler",
                               name=f"bdh_dale_{key}", **graded)
        relay.run_regularly(self.neg_flags(key), when="end", name=f"bdh_dale_{key}_neg")
        g[key] = relay
        into = b2.Synapses(g[p.pre], relay, f"w : 1 (constant)\nrin_post = w * {p.var}_pre : 1 (summed)",
                           name=f"bdh_dale_{key}_in", **graded)
        into.connect(i=units, j=np.arange(len(units)))
        into.w = 1.0
        out = b2.Synapses(relay, g[p.post], f"w : 1 (constant)\n{p.target}_{p.name}_i_post = w * r_pre : 1 (summed)",
                          name=f"bdh_dale_{key}_out", **graded)
        out.connect(i=k, j=j)
        out.w = w
        return {f"{key}_in": into, f"{key}_out": out}

    def decoder_split(self, i: np.ndarray, j: np.ndarray, w: np.ndarray) -> tuple:
        i, j, w = super().decoder_split(i, j, w)
        neg = w < 0
        self._decoder_negative = (i[neg], j[neg], w[neg])
        return i[w > 0], j[w > 0], w[w > 0]

    def _synapses(self, g: dict, ns: dict) -> dict:
        syn = super()._synapses(g, ns)
        syn.update(self._decoder_relay(g, ns))
        return syn

    def _decoder_relay(self, g: dict, ns: dict) -> dict:
        """The D projection's inhibitory interneurons: LIF, one per y neuron with negative decoder weights."""
        import brian2 as b2
        from brian2 import ms

        i, j, w = self._decoder_negative
        if not len(i):
            return {}
        units = np.unique(i)
        product = self.net.gating != "gain"
        noise = " + sigma * sqrt(2 / tau_m) * xi" if self.par["noise"] > 0 else ""
        gate = "dgx/dt = -gx / tau_gate : 1" if product else ""
        fine = dict(clock=self.fine, namespace=ns)
        relay = b2.NeuronGroup(len(units), RELAY_LIF.format(noise=noise, gate=gate), threshold="v > 1",
                               reset="v = 0\ncnt += 1", refractory=self.par["t_ref_ms"] * ms, method="euler",
                               name="bdh_dale_D_inh", **fine)
        g["D_inh"] = relay
        syn = {"D_inh_in": b2.Synapses(g["y"], relay, "w : 1 (constant)", on_pre="v_post += w",
                                       name="bdh_dale_D_inh_in", **fine),
               "D_inh_out": b2.Synapses(relay, g["res"], "w : 1 (constant)", on_pre=self.decoder_on_pre(),
                                        name="bdh_dale_D_inh_out", **fine)}
        syn["D_inh_in"].connect(i=units, j=np.arange(len(units)))
        syn["D_inh_in"].w = DETONATOR_W
        syn["D_inh_out"].connect(i=np.searchsorted(units, i), j=j)
        syn["D_inh_out"].w = w
        if product:  # the x neuron gates its y neuron's interneuron as it gates the y neuron
            syn["gate_inh"] = b2.Synapses(g["x"], relay, on_pre="gx_post += kg_pre", name="bdh_dale_gate_inh", **fine)
            syn["gate_inh"].connect(i=units, j=np.arange(len(units)))
        return syn

    # -- the count on the built network ---------------------------------------------------------------
    def linked_projections(self) -> list:
        """Connections made by linked variables (weight +1 by their equations): the layer-to-layer
        residual stream xo(l-1) -> xin(l) (psc's link; onoff makes it synapses)."""
        B, D = self.B, self.dims.D
        idx = np.arange(B * D, self.dims.L * B * D)
        return [("res", idx - B * D, np.ones(len(idx)))]

    def static_projections(self) -> list:
        """Every static projection of the built network, interneurons included: (presynaptic
        population, presynaptic unit of each synapse, its signed weight)."""
        s = self.syn

        def rows(label, key, weight="w"):
            obj = s[key]
            i = np.asarray(obj.i[:])
            w = np.ones(len(i)) if weight is None else np.asarray(getattr(obj, weight)[:], dtype=np.float64)
            return label, i, w

        out = []
        for p in self.plan():
            if p.name in s:
                out.append(rows(p.label, p.name))
            if f"{p.name}_inh_in" in s:
                out += [rows(p.label, f"{p.name}_inh_in"), rows(f"{p.name}_inh", f"{p.name}_inh_out")]
        out += [rows("y", "D"), rows("x", "gate", "kg_pre")]
        if "D_inh_in" in s:
            out += [rows("y", "D_inh_in"), rows("D_inh", "D_inh_out")]
        if "gate_inh" in s:
            out.append(rows("x", "gate_inh", "kg_pre"))
        # the norm units' sums (weight 1 by their equations) and the linked connections
        out += [rows("res", "rnorm", None), rows("attn", "anorm", None), *self.linked_projections()]
        return out

    def inhibitory_populations(self) -> list:
        """name, number of units, the projection each serves, and what the interneurons are."""
        pops = []
        for p in self.plan():
            key = f"{p.name}_inh"
            if key in self.groups:
                pops.append({"name": key, "units": int(self.groups[key].N), "serves": p.serves,
                             "kind": "rate", "synapses_out": int(len(self.syn[f"{key}_out"].i[:]))})
        if "D_inh" in self.groups:
            relay, units = self.groups["D_inh"], np.asarray(self.syn["D_inh_in"].i[:])
            pops.append({"name": "D_inh", "units": int(relay.N), "serves": "D: y spikes -> residual PSC m (decoder)",
                         "kind": "lif", "synapses_out": int(len(self.syn["D_inh_out"].i[:])),
                         "spikes": int(np.asarray(relay.cnt[:]).sum()),
                         "presynaptic_spikes": int(np.asarray(self.groups["y"].cnt[:])[units].sum())})
        return pops

    def read(self) -> dict:
        out = super().read()
        out.setdefault("rung_settings", {})["inhibitory_populations"] = self.inhibitory_populations()
        return out
